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
 *
 * Identity mode, for a TLS listener with require_certificate (the bus over
 * TLS, tools/webshop up --tls): the user is the client certificate's
 * identity, its subject CN, whatever the CONNECT says (a CONNECT naming
 * another user is refused), and the users are the `user NAME` lines of the
 * ACL file (there is no password file):
 *   plugin_opt_identity cn
 *   plugin_opt_acl_file /path/mosquitto.acl          (instead of password_file)
 * The plugin sets the user name (mosquitto_set_username, so the ACL's user
 * sections apply to the identity), binds the client id as above, and admits
 * the client: the TLS handshake has already checked the certificate.
 * Mosquitto's own use_identity_as_username cannot be used for this: with it
 * Mosquitto 2.0 skips every basic-auth plugin ("authentication assumed to be
 * cleared", src/handle_connect.c), so nothing could refuse a client id, and
 * use_username_as_clientid would give a service's relay (<id>-outbox) its
 * consumer's id.
 */
#include <openssl/x509.h>

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
    char *password_file; /* owned; the users are its names, or NULL */
    char *acl_file;      /* owned; the users are its `user` lines, or NULL */
    char *any_id;        /* owned; space-separated user names, or NULL */
    bool identity_cn;    /* the user is the certificate's CN */
} clientid_cfg;

/* True when id is name or begins with name followed by '-'. */
static bool clientid_in_namespace(const char *id, const char *name, size_t n)
{
    return n > 0 && strncmp(id, name, n) == 0 && (id[n] == '\0' || id[n] == '-');
}

/* The user a line of the users file names, as (start, length); false when it
 * names none. A password file's "name:hash", or an ACL file's "user name". */
static bool clientid_line_user(char *line, bool acl, const char **name, size_t *n)
{
    if (line[0] == '#') {
        return false;
    }
    if (acl) {
        if (strncmp(line, "user ", 5) != 0) {
            return false;
        }
        *name = line + 5;
        *n = strcspn(*name, " \t\r\n");
        return *n > 0;
    }
    char *colon = strchr(line, ':');
    *name = line;
    *n = colon != NULL ? (size_t)(colon - line) : 0;
    return colon != NULL;
}

/* The owner of id among the users file's users, into owner (empty: none).
 * Returns false when the file cannot be read. */
static bool clientid_owner(const char *path, bool acl, const char *id,
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
        const char *name;
        size_t n;
        if (!clientid_line_user(line, acl, &name, &n)) {
            continue;
        }
        if (n > best && n < CLIENTID_NAME_MAX && clientid_in_namespace(id, name, n)) {
            memcpy(owner, name, n);
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

/* Identity mode: the CN of the client's certificate into cn; false (and a
 * log line) when there is none, or the CONNECT names another user. */
static bool clientid_identity(struct mosquitto *client, const char *claimed,
                              char cn[CLIENTID_NAME_MAX])
{
    X509 *cert = mosquitto_client_certificate(client);
    int len = -1;
    if (cert != NULL) {
        len = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn,
                                        CLIENTID_NAME_MAX);
        X509_free(cert);
    }
    if (len <= 0 || (size_t)len != strlen(cn)) {
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "webshop_clientid: refused %s: no certificate with a CN",
                             mosquitto_client_address(client));
        return false;
    }
    if (claimed != NULL && strcmp(claimed, cn) != 0) {
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             "webshop_clientid: refused user %s for certificate %s",
                             claimed, cn);
        return false;
    }
    return true;
}

static int clientid_on_basic_auth(int event, void *event_data, void *userdata)
{
    (void)event;
    const struct mosquitto_evt_basic_auth *ed = event_data;
    const clientid_cfg *cfg = userdata;
    const char *id = mosquitto_client_id(ed->client);
    const char *user = ed->username;
    const char *users_file = cfg->acl_file != NULL ? cfg->acl_file : cfg->password_file;
    char owner[CLIENTID_NAME_MAX];
    char cn[CLIENTID_NAME_MAX];
    if (id == NULL) {
        return MOSQ_ERR_AUTH;
    }
    if (cfg->identity_cn) {
        if (!clientid_identity(ed->client, user, cn)) {
            return MOSQ_ERR_AUTH;
        }
        user = cn;
    }
    if (!clientid_owner(users_file, cfg->acl_file != NULL, id, owner)) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "webshop_clientid: cannot read %s; refusing %s", users_file,
                             id);
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
    if (cfg->identity_cn) {
        /* ed->username is the client's own string: set ours after using it. */
        return mosquitto_set_username(ed->client, cn) == MOSQ_ERR_SUCCESS
                   ? MOSQ_ERR_SUCCESS
                   : MOSQ_ERR_AUTH;
    }
    return MOSQ_ERR_PLUGIN_DEFER;
}

static void clientid_cfg_free(clientid_cfg *cfg)
{
    if (cfg == NULL) {
        return;
    }
    free(cfg->password_file);
    free(cfg->acl_file);
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
        } else if (strcmp(options[i].key, "acl_file") == 0) {
            slot = &cfg->acl_file;
        } else if (strcmp(options[i].key, "any_id") == 0) {
            slot = &cfg->any_id;
        } else if (strcmp(options[i].key, "identity") == 0) {
            cfg->identity_cn = strcmp(options[i].value, "cn") == 0;
            if (!cfg->identity_cn) {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     "webshop_clientid: plugin_opt_identity "
                                     "takes only cn");
                clientid_cfg_free(cfg);
                return MOSQ_ERR_INVAL;
            }
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
    if (cfg->password_file == NULL && cfg->acl_file == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             "webshop_clientid: plugin_opt_password_file or "
                             "plugin_opt_acl_file is required");
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
