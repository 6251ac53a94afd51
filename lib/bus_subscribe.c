/*
 * Subscriptions: plain and shared ("$share/<group>/<topic>"), each typed by
 * a message descriptor, append-only and freed with the bus. Every CONNACK
 * subscribes all of them again in one SUBACK round (session present or not:
 * Mosquitto 2.0.11 forgets shared subscriptions on a broker restart), and
 * readiness waits for that SUBACK on the current connection. A shared
 * subscription is matched by its plain filter: the broker delivers its
 * messages with their original topic. Also the per-topic metrics helpers.
 */
#include "bus_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"

#define BUS_AGE_METRIC "webshop_event_age_seconds"

/* Event age buckets, seconds: from a relay hop on loopback (ms) to a
 * consumer that was down for an hour. */
static const double bus_age_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,   0.25,   0.5,   1,    2.5,   5,
                                        10,    30,     60,    300,  900,   3600};

char *ws__bus_topic_label(const char *topic)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    ws_err err = ws_buf_puts(&b, "topic=\"");
    for (const char *p = topic; err == WS_OK && *p != '\0'; p++) {
        if (*p == '\\' || *p == '"') {
            err = ws_buf_putc(&b, '\\');
            if (err == WS_OK) {
                err = ws_buf_putc(&b, *p);
            }
        } else if (*p == '\n') {
            err = ws_buf_puts(&b, "\\n");
        } else {
            err = ws_buf_putc(&b, *p);
        }
    }
    if (err == WS_OK) {
        err = ws_buf_putc(&b, '"');
    }
    if (err != WS_OK) {
        ws_buf_fini(&b);
        return NULL;
    }
    return ws_buf_steal(&b, NULL);
}

ws_counter *ws__bus_topic_counter_get(ws_bus *bus, const char *name, const char *help,
                                      const char *topic)
{
    char *labels = ws__bus_topic_label(topic);
    if (labels == NULL) {
        return NULL;
    }
    ws_counter *c = ws_counter_get(bus->metrics, name, help, labels);
    free(labels);
    return c;
}

bool ws__bus_share_name_valid(const char *name, size_t len)
{
    return len > 0 && len < 256 && memchr(name, '/', len) == NULL &&
           memchr(name, '+', len) == NULL && memchr(name, '#', len) == NULL;
}

static void bus_sub_free(bus_sub *s)
{
    if (s->wire != s->topic) {
        free(s->wire);
    }
    free(s->topic);
    free(s);
}

void ws__bus_subs_free(ws_bus *bus)
{
    while (bus->subs != NULL) {
        bus_sub *s = bus->subs;
        bus->subs = s->next;
        bus_sub_free(s);
    }
}

/* Split "$share/<group>/<filter>" (group NULL) or take group and topic as
 * given; *share (not NUL-terminated, share_len bytes) is NULL when
 * unshared. Validates both parts. */
static ws_err bus_sub_parse(const char *group, const char *topic,
                            const char **share /* OUT */, size_t *share_len /* OUT */,
                            const char **filter /* OUT */)
{
    const char *sh = group;
    size_t sh_len = group != NULL ? strlen(group) : 0;
    if (strncmp(topic, "$share/", 7) == 0) {
        const char *slash = strchr(topic + 7, '/');
        if (group != NULL || slash == NULL) {
            return WS_EINVAL;
        }
        sh = topic + 7;
        sh_len = (size_t)(slash - sh);
        topic = slash + 1;
    }
    if (sh != NULL && !ws__bus_share_name_valid(sh, sh_len)) {
        return WS_EINVAL;
    }
    if (topic[0] == '\0' || mosquitto_sub_topic_check(topic) != MOSQ_ERR_SUCCESS ||
        strncmp(topic, "$share/", 7) == 0) {
        return WS_EINVAL;
    }
    *share = sh;
    *share_len = sh_len;
    *filter = topic;
    return WS_OK;
}

/* Its per-topic metrics, labelled with the plain filter: the same series
 * with or without a share, whatever the replica count. */
static void bus_sub_metrics(ws_bus *bus, bus_sub *s)
{
    const char *filter = s->topic;
    s->received = ws__bus_topic_counter_get(bus, "webshop_bus_received_total",
                                            "Messages received per subscription", filter);
    s->undecodable = ws__bus_topic_counter_get(bus, "webshop_bus_undecodable_total",
                                               "Messages dropped as undecodable", filter);
    s->failed =
        ws__bus_topic_counter_get(bus, "webshop_bus_handler_failed_total",
                                  "Messages whose handler returned an error", filter);
    char *labels = ws__bus_topic_label(filter);
    s->age = labels == NULL
                 ? NULL
                 : ws_histogram_get(bus->metrics, BUS_AGE_METRIC,
                                    "Age of consumed events at delivery, from "
                                    "their creation time (seconds)",
                                    labels, bus_age_bounds,
                                    sizeof(bus_age_bounds) / sizeof(bus_age_bounds[0]));
    free(labels);
}

/* A new subscription node, names and metrics set, not linked. The filter is
 * kept apart from the share: the broker delivers a shared subscription's
 * messages with their original topic, and that is what is matched. */
static ws_err bus_sub_new(ws_bus *bus, const char *group, const char *topic,
                          bus_sub **out /* OUT */)
{
    const char *share = NULL;
    size_t share_len = 0;
    const char *filter = NULL;
    ws_err err = bus_sub_parse(group, topic, &share, &share_len, &filter);
    if (err != WS_OK) {
        return err;
    }
    bus_sub *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return WS_ENOMEM;
    }
    s->topic = strdup(filter);
    if (s->topic == NULL) {
        free(s);
        return WS_ENOMEM;
    }
    s->wire = s->topic;
    if (share != NULL) {
        size_t n = 7 + share_len + 1 + strlen(filter) + 1;
        s->wire = malloc(n);
        if (s->wire == NULL) {
            free(s->topic);
            free(s);
            return WS_ENOMEM;
        }
        snprintf(s->wire, n, "$share/%.*s/%s", (int)share_len, share, filter);
    }
    s->mid = -1;
    bus_sub_metrics(bus, s);
    *out = s;
    return WS_OK;
}

/* Link s at the tail, subscribing it now when connected (mu held): the
 * SUBSCRIBE goes out under mu so its SUBACK cannot overtake s->mid. */
static ws_err bus_sub_link_locked(ws_bus *bus, bus_sub *s)
{
    bus_sub **tail = &bus->subs;
    while (*tail != NULL) {
        tail = &(*tail)->next;
    }
    if (atomic_load(&bus->connected)) {
        int mid = -1;
        int rc = mosquitto_subscribe_v5(bus->mosq, &mid, s->wire, 1, 0, NULL);
        if (rc == MOSQ_ERR_SUCCESS) {
            s->mid = mid;
        } else if (rc != MOSQ_ERR_NO_CONN) {
            return ws__bus_err_from_mosq(rc);
        }
        /* NO_CONN: the next on_connect subscribes it. */
    }
    *tail = s;
    return WS_OK;
}

ws_err ws_bus_subscribe_shared(ws_bus *bus, const char *group, const char *topic,
                               const ProtobufCMessageDescriptor *desc,
                               ws_bus_handler_fn fn, void *ctx)
{
    if (bus == NULL || topic == NULL || desc == NULL || fn == NULL) {
        return WS_EINVAL;
    }
    bus_sub *s = NULL;
    ws_err err = bus_sub_new(bus, group, topic, &s);
    if (err != WS_OK) {
        return err;
    }
    s->desc = desc;
    s->fn = fn;
    s->ctx = ctx;
    pthread_mutex_lock(&bus->mu);
    err = bus_sub_link_locked(bus, s);
    pthread_mutex_unlock(&bus->mu);
    if (err != WS_OK) {
        bus_sub_free(s);
    }
    return err;
}

ws_err ws_bus_subscribe(ws_bus *bus, const char *topic,
                        const ProtobufCMessageDescriptor *desc, ws_bus_handler_fn fn,
                        void *ctx)
{
    if (bus == NULL || topic == NULL) {
        return WS_EINVAL;
    }
    const char *group = strncmp(topic, "$share/", 7) == 0 ? NULL : bus->share_group;
    return ws_bus_subscribe_shared(bus, group, topic, desc, fn, ctx);
}

int ws__bus_resubscribe_locked(ws_bus *bus)
{
    int n = 0;
    for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
        n++;
    }
    if (n == 0) {
        return MOSQ_ERR_SUCCESS;
    }
    char **topics = calloc((size_t)n, sizeof(*topics));
    int mid = -1;
    int rc = MOSQ_ERR_NOMEM;
    if (topics != NULL) {
        int i = 0;
        for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
            topics[i++] = s->wire;
        }
        rc = mosquitto_subscribe_multiple(bus->mosq, &mid, n, topics, 1, 0, NULL);
        free(topics);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        mid = -1;
    }
    for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
        s->mid = mid;
    }
    return rc;
}

#define BUS_REFUSALS_LOGGED 16

void ws__bus_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                          const int *granted_qos, const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    ws_bus *bus = obj;
    bus_sub *refused[BUS_REFUSALS_LOGGED];
    int reason[BUS_REFUSALS_LOGGED];
    int n_refused = 0;
    pthread_mutex_lock(&bus->mu);
    int i = 0;
    for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
        if (s->mid != mid) {
            continue;
        }
        /* The granted QoS list is in the order of the SUBSCRIBE's topics;
         * a resubscribe carries every sub in list order. */
        int granted = i < qos_count ? granted_qos[i] : 1;
        if (granted >= 0x80 && n_refused < BUS_REFUSALS_LOGGED) {
            refused[n_refused] = s; /* nodes live as long as the bus */
            reason[n_refused++] = granted;
        }
        s->acked_gen = bus->gen;
        s->mid = -1;
        i++;
    }
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
    for (int k = 0; k < n_refused; k++) {
        ws_log_error("bus_subscribe_refused", "topic=%s reason=%d", refused[k]->wire,
                     reason[k]);
    }
}

bool ws__bus_ready_locked(ws_bus *bus)
{
    if (!atomic_load(&bus->connected)) {
        return false;
    }
    for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
        if (s->acked_gen != bus->gen) {
            return false;
        }
    }
    return true;
}

size_t ws__bus_match(ws_bus *bus, const char *topic, bus_sub **match, size_t cap,
                     size_t *n_subs, uint64_t *gen)
{
    size_t n = 0;
    size_t all = 0;
    pthread_mutex_lock(&bus->mu);
    *gen = bus->gen;
    for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
        all++;
    }
    if (all <= cap) {
        for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
            bool hit = false;
            if (mosquitto_topic_matches_sub(s->topic, topic, &hit) == MOSQ_ERR_SUCCESS &&
                hit) {
                match[n++] = s;
            }
        }
    }
    pthread_mutex_unlock(&bus->mu);
    *n_subs = all;
    return n;
}
