/* webshop_clientid: a Mosquitto 2.0 plugin that binds MQTT client ids to
 * broker users, so that no user can take over another's session.
 *
 * Mosquitto lets any authenticated user connect with any client id, and a
 * CONNECT with an id already connected disconnects the holder (and, with
 * clean start off, hands the newcomer the holder's subscriptions and queued
 * messages). With this plugin a client id belongs to the broker user whose
 * name is its longest prefix ending at the id's end or at a '-': in a
 * password file with webshop-inventory-0 and webshop-inventory,
 * "webshop-inventory-0" and "webshop-inventory-0-outbox" belong to
 * webshop-inventory-0, "webshop-inventory" and "webshop-inventory-outbox"
 * to webshop-inventory. A CONNECT whose id belongs to another user than its
 * own is refused (CONNACK "not authorized") before the broker looks the id
 * up, so the holder keeps its connection and its session. An id that
 * belongs to nobody is allowed only to the users named in any_id (the
 * operator's tools, which pick random ids) and to anonymous clients (whom
 * allow_anonymous governs). Everything else goes on to the password file:
 * the plugin only ever refuses or defers, it never admits.
 *
 * mosquitto.conf:
 *   plugin /path/webshop_clientid.so
 *   plugin_opt_password_file /path/mosquitto.passwd  (the users: its names)
 *   plugin_opt_any_id webshop-admin                  (space-separated users)
 * The password file is read again on every CONNECT (a few dozen lines), so
 * a reload (SIGHUP) with new users needs nothing of the plugin.
 */
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLIENTID_NAME_MAX 256

typedef struct clientid_cfg {
    mosquitto_plugin_id_t *pid;
    char *password_file; /* owned */
    char *any_id;        /* owned; space-separated user names, or NULL */
} clientid_cfg;

/* True when id is name or begins with name followed by '-'. */
static bool clientid_in_namespace(const char *id, const char *name, size_t n)
{
    return n > 0 && strncmp(id, name, n) == 0 && (id[n] == '\0' || id[n] == '-');
}

/* The owner of id among the password file's users, into owner (empty: none).
 * Returns false when the file cannot be read. */
static bool clientid_owner(const char *path, const char *id,
                           char owner[CLIENTID_NAME_MAX])
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return false;
    }
    char line[1024];
    size_t best = 0;
    owner[0] = '\0';
    while (fgets(line, sizeof(line), f) != NULL) {
        char *colon = strchr(line, ':');
        if (colon == NULL || line[0] == '#') {
            continue;
        }
        size_t n = (size_t)(colon - line);
        if (n > best && n < CLIENTID_NAME_MAX && clientid_in_namespace(id, line, n)) {
            memcpy(owner, line, n);
            owner[n] = '\0';
            best = n;
        }
    }
    fclose(f);
    return true;
}

/* True when user is one of the space-separated names in list. */
static bool clientid_listed(const char *list, const char *user)
{
    size_t n = strlen(user);
    const char *p = list;
    while (p != NULL && *p != '\0') {
        while (*p == ' ') {
            p++;
        }
        const char *end = strchr(p, ' ');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && n > 0 && strncmp(p, user, n) == 0) {
            return true;
        }
        p = end;
    }
    return false;
}

static int clientid_on_basic_auth(int event, void *event_data, void *userdata)
{
    (void)event;
    const struct mosquitto_evt_basic_auth *ed = event_data;
    const clientid_cfg *cfg = userdata;
    const char *id = mosquitto_client_id(ed->client);
    const char *user = ed->username;
    char owner[CLIENTID_NAME_MAX];
    if (id == NULL) {
        return MOSQ_ERR_AUTH;
    }
    if (!clientid_owner(cfg->password_file, id, owner)) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "webshop_clientid: cannot read %s; refusing %s",
                             cfg->password_file, id);
        return MOSQ_ERR_AUTH;
    }
    bool ok;
    if (owner[0] != '\0') {
        ok = user != NULL && strcmp(user, owner) == 0;
    } else {
        ok = user == NULL || (cfg->any_id != NULL && clientid_listed(cfg->any_id, user));
    }
    if (!ok) {
        mosquitto_log_printf(
            MOSQ_LOG_WARNING, "webshop_clientid: refused client id %s for user %s (%s%s)",
            id, user ? user : "(anonymous)", owner[0] ? "it belongs to " : "",
            owner[0] ? owner : "it belongs to no user");
        return MOSQ_ERR_AUTH;
    }
    return MOSQ_ERR_PLUGIN_DEFER;
}

static void clientid_cfg_free(clientid_cfg *cfg)
{
    if (cfg == NULL) {
        return;
    }
    free(cfg->password_file);
    free(cfg->any_id);
    free(cfg);
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++) {
        if (supported_versions[i] == 5) {
            return 5;
        }
    }
    return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
                          struct mosquitto_opt *options, int option_count)
{
    clientid_cfg *cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        return MOSQ_ERR_NOMEM;
    }
    cfg->pid = identifier;
    for (int i = 0; i < option_count; i++) {
        char **slot = NULL;
        if (strcmp(options[i].key, "password_file") == 0) {
            slot = &cfg->password_file;
        } else if (strcmp(options[i].key, "any_id") == 0) {
            slot = &cfg->any_id;
        }
        if (slot != NULL) {
            free(*slot);
            *slot = strdup(options[i].value);
            if (*slot == NULL) {
                clientid_cfg_free(cfg);
                return MOSQ_ERR_NOMEM;
            }
        }
    }
    if (cfg->password_file == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "webshop_clientid: plugin_opt_password_file is required");
        clientid_cfg_free(cfg);
        return MOSQ_ERR_INVAL;
    }
    int rc = mosquitto_callback_register(identifier, MOSQ_EVT_BASIC_AUTH,
                                         clientid_on_basic_auth, NULL, cfg);
    if (rc != MOSQ_ERR_SUCCESS) {
        clientid_cfg_free(cfg);
        return rc;
    }
    *userdata = cfg;
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options,
                             int option_count)
{
    (void)options;
    (void)option_count;
    clientid_cfg *cfg = userdata;
    if (cfg != NULL) {
        mosquitto_callback_unregister(cfg->pid, MOSQ_EVT_BASIC_AUTH,
                                      clientid_on_basic_auth, NULL);
    }
    clientid_cfg_free(cfg);
    return MOSQ_ERR_SUCCESS;
}
