/*
 * The MQTT v5 event bus over libmosquitto 2.0 (see bus.h for the contract).
 *
 * The bus runs its own network thread around mosquitto_loop() instead of
 * mosquitto_loop_start(), for three reasons: libmosquitto's built-in
 * reconnect delay has a granularity of whole seconds (the contract is
 * 100 ms doubling to 5 s); every (re)connect goes through
 * mosquitto_connect_bind_v5() with our CONNECT properties, so the session
 * expiry interval is sent on every reconnect whatever the library version
 * (eclipse/mosquitto #1846); and close can wake the backoff sleep at once.
 *
 * Locking: bus->mu guards the subscription list, the publish waiters and the
 * connection state. It is taken inside libmosquitto callbacks (which hold
 * only libmosquitto's callback mutex) and held by publishers across
 * mosquitto_publish_v5() so that the PUBACK callback can never look for a
 * message id before its waiter is registered. User handlers and async
 * publish callbacks always run with bus->mu released.
 *
 * libmosquitto sends a QoS 1 PUBACK before calling on_message, and its
 * public message struct does not carry the DUP flag, so redeliveries are
 * recognised by their packet id and payload: a message whose (id, hash of
 * topic and payload) matches one received on an earlier connection is a
 * redelivery (the broker may only resend after a reconnect).
 *
 * Hold and retry (ws_bus_set_retry). Since the PUBACK has gone out before a
 * handler runs, a message whose handler cannot apply it now (its store
 * cannot commit) is kept here, in a queue of held messages, and the network
 * thread stops reading from the socket: what the broker sends meanwhile
 * stays unacknowledged in the socket buffer or queued in the broker for the
 * persistent session. One read pass of libmosquitto may hand over a few more
 * messages after the one that failed (all acknowledged already); they join
 * the queue behind it, in order. While anything is held the thread only
 * writes (the PUBACKs already queued, PINGREQs, our publishes) and retries
 * the oldest held message with backoff, each try in its own transaction.
 * Not reading means no PINGRESP is seen, so after about two keepalive
 * periods libmosquitto drops the connection; the thread then keeps retrying
 * unconnected and reconnects only once the queue is empty, so the broker's
 * redeliveries arrive after the held messages are applied.
 */
#include "bus.h"
#include "bus_int.h"

#include <errno.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "clock.h"
#include "fault.h"
#include "json.h"
#include "log.h"

#define BUS_DEFAULT_HOST          "127.0.0.1"
#define BUS_DEFAULT_PORT          1883
#define BUS_DEFAULT_KEEPALIVE     30
#define BUS_DEFAULT_EXPIRY        86400u
#define BUS_DEFAULT_MAX_PAYLOAD   (256u * 1024u)
#define BUS_DEFAULT_MAX_INFLIGHT  1000
#define BUS_BACKOFF_MIN_MS        100
#define BUS_BACKOFF_MAX_MS        5000
#define BUS_RETRY_MIN_MS          50
#define BUS_RETRY_MAX_MS          2000
#define BUS_LOOP_TIMEOUT_MS       100
#define BUS_RECENT                256
#define BUS_CONTENT_TYPE_PROTOBUF "application/x-protobuf"
#define BUS_CONTENT_TYPE_JSON     "application/json"
/* MQTT v5 user property with the event's creation time, Unix ms. */
#define BUS_PROP_CREATED          "created-ms"
#define BUS_AGE_METRIC            "webshop_event_age_seconds"

/* One subscription; never freed before the bus. */
typedef struct bus_sub {
    char *topic; /* the filter messages are matched against (no $share/) */
    char *wire;  /* what SUBSCRIBE carries: "$share/<group>/<topic>" for a
                    shared subscription, else topic itself (not owned) */
    const ProtobufCMessageDescriptor *desc;
    ws_bus_handler_fn fn;
    void *ctx;
    int mid;            /* of the SUBSCRIBE that carries it; -1 none */
    uint64_t acked_gen; /* connection generation of its SUBACK */
    ws_counter *received;
    ws_counter *undecodable;
    ws_counter *failed;
    ws_histogram *age; /* webshop_event_age_seconds{topic} */
    struct bus_sub *next;
} bus_sub;

/* Per-topic publish counter, looked up once. */
typedef struct bus_topic_counter {
    char *topic;
    ws_counter *published;
    struct bus_topic_counter *next;
} bus_topic_counter;

/* A publish waiting for its PUBACK. Sync waiters live on the publisher's
 * stack; async ones are malloc'ed and freed by whoever completes them. */
typedef struct bus_waiter {
    int mid;
    bool done;
    ws_err result;
    ws_bus_publish_cb cb; /* NULL for a sync waiter */
    void *ctx;
    struct bus_waiter *next;
} bus_waiter;

/* One held message (hold and retry): topic and payload copied into data
 * (topic NUL-terminated, then the payload). */
typedef struct bus_pend {
    bus_sub *sub;
    char *data; /* owned */
    size_t len; /* payload bytes after the topic */
    bool json;
    bool redelivered;
    unsigned attempts; /* handler calls so far */
} bus_pend;

/* One message handled inside the open group, kept (topic and payload
 * copied into held_data) until the group's end succeeds, for the replay. */
typedef struct bus_held {
    bus_sub *sub;
    size_t topic_off; /* in held_data, NUL-terminated */
    size_t payload_off;
    size_t len;
    bool json;
    bool redelivered;
} bus_held;

typedef struct bus_recent {
    int mid;
    uint64_t hash;
    uint64_t gen;
} bus_recent;

struct ws_bus {
    struct mosquitto *mosq;
    char *host;
    char *share_group; /* opts->share_group copied; NULL = none */
    int port;
    int keepalive;
    ws_bus_format format;
    size_t max_payload;
    int max_inflight;
    mosquitto_property *connect_props; /* owned; sent on every connect */

    pthread_t thread;
    bool thread_started;
    atomic_bool closing;
    atomic_bool connected;

    pthread_mutex_t mu;
    pthread_cond_t cond;           /* connection, SUBACK, PUBACK and close events */
    uint64_t gen;                  /* ++ on each CONNACK success (mu) */
    bool ever_connected;           /* (mu) */
    int last_refusal;              /* CONNACK reason of the last refused connect, 0 (mu) */
    bus_sub *subs;                 /* (mu) append only */
    bus_waiter *waiters;           /* (mu) */
    int n_async;                   /* async waiters outstanding (mu) */
    int n_sync;                    /* threads inside a sync publish (mu) */
    bus_topic_counter *topics;     /* (mu) */
    bus_recent recent[BUS_RECENT]; /* network thread only */
    size_t recent_next;

    /* Group commit (set before start; the rest network thread only). */
    ws_bus_batch batch;
    bool batch_on;
    bool batch_open;
    struct timespec batch_t0;
    uint64_t batch_seen;  /* messages handled in groups, ever (monotonic) */
    uint64_t batch_first; /* batch_seen when the open group began */
    bus_held *held;
    size_t n_held, cap_held;
    unsigned char *held_data;
    size_t n_data, cap_data;

    /* Hold and retry: settings set before start; the queue [pend_head,
     * pend_n) network thread only; the summary fields under mu. */
    ws_bus_retry retry;
    bool retry_on;
    bus_pend *pend;
    size_t pend_head, pend_n, pend_cap;
    int retry_delay_ms;     /* next backoff */
    int64_t hold_log_ms;    /* when the hold was last logged */
    int64_t hold_since_ms;  /* (mu) CLOCK_MONOTONIC ms; 0 = not holding */
    size_t hold_n;          /* (mu) messages held */
    unsigned hold_attempts; /* (mu) handler calls of the oldest */
    ws_err hold_err;        /* (mu) what its handler said last */
    char hold_topic[128];   /* (mu) its topic */
    uint64_t hold_applied;  /* held messages applied in this hold */
    ws_counter *retries;
    ws_gauge *held_gauge;

    /* Called on the network thread once per turn of its loop (set before
     * start): the watchdog's heartbeat comes from here. */
    void (*loop_hook)(void *ctx);
    void *loop_hook_ctx;

    ws_metrics *metrics;
    ws_counter *acked;
    ws_counter *redelivered;
    ws_counter *reconnects;
    ws_counter *publish_failed;
    ws_counter *batches;
    ws_counter *batched;
    ws_gauge *connected_gauge;
};

/* ---- helpers ------------------------------------------------------------ */

/* Event age buckets, seconds: from a relay hop on loopback (ms) to a
 * consumer that was down for an hour. */
static const double bus_age_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25,  0.5,    1,     2.5,  5,     10,   30,
                                        60,    300,    900,   3600};

static pthread_once_t bus_lib_once = PTHREAD_ONCE_INIT;

static void bus_lib_init_once(void)
{
    mosquitto_lib_init();
}

static ws_err bus_err_from_mosq(int rc)
{
    switch (rc) {
    case MOSQ_ERR_SUCCESS:
        return WS_OK;
    case MOSQ_ERR_NOMEM:
        return WS_ENOMEM;
    case MOSQ_ERR_INVAL:
    case MOSQ_ERR_MALFORMED_UTF8:
    case MOSQ_ERR_DUPLICATE_PROPERTY:
    case MOSQ_ERR_QOS_NOT_SUPPORTED:
        return WS_EINVAL;
    case MOSQ_ERR_NO_CONN:
    case MOSQ_ERR_CONN_LOST:
    case MOSQ_ERR_CONN_REFUSED:
        return WS_EUNAVAIL;
    case MOSQ_ERR_PAYLOAD_SIZE:
    case MOSQ_ERR_OVERSIZE_PACKET:
        return WS_ETOOBIG;
    case MOSQ_ERR_AUTH:
    case MOSQ_ERR_ACL_DENIED:
        return WS_EAUTH;
    case MOSQ_ERR_ERRNO:
        return ws_err_from_errno(errno);
    case MOSQ_ERR_PROTOCOL:
    case MOSQ_ERR_MALFORMED_PACKET:
        return WS_EPROTO;
    default:
        return WS_EINTERNAL;
    }
}

/* An MQTT v5 PUBACK reason code as ws_err; codes below 0x80 are success
 * (0x10 "no matching subscribers" included). */
static ws_err bus_err_from_reason(int reason)
{
    if (reason < 0x80) {
        return WS_OK;
    }
    switch (reason) {
    case 0x87: /* not authorized */
        return WS_EAUTH;
    case 0x97: /* quota exceeded */
        return WS_EBUSY;
    case 0x95: /* packet too large */
        return WS_ETOOBIG;
    case 0x90: /* topic name invalid */
    case 0x99: /* payload format invalid */
        return WS_EINVAL;
    default:
        return WS_EPROTO;
    }
}

static char *bus_strdup(const char *s)
{
    return s != NULL ? strdup(s) : NULL;
}

/* topic="<escaped>" for a Prometheus label set. */
static char *bus_topic_label(const char *topic)
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

static ws_counter *bus_topic_counter_get(ws_bus *bus, const char *name, const char *help,
                                         const char *topic)
{
    char *labels = bus_topic_label(topic);
    if (labels == NULL) {
        return NULL;
    }
    ws_counter *c = ws_counter_get(bus->metrics, name, help, labels);
    free(labels);
    return c;
}

static uint64_t bus_hash(const char *topic, const void *payload, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)topic; *p != '\0'; p++) {
        h = (h ^ *p) * 1099511628211ull;
    }
    h = (h ^ 0xff) * 1099511628211ull;
    const unsigned char *q = payload;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ q[i]) * 1099511628211ull;
    }
    return h;
}

bool ws__bus_is_json(const void *payload, size_t len)
{
    const unsigned char *p = payload;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n') {
            continue;
        }
        return p[i] == '{';
    }
    return false;
}

static void bus_deadline(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Remove w from the waiter list (mu held); false if it is not there. */
static bool bus_waiter_unlink(ws_bus *bus, bus_waiter *w)
{
    for (bus_waiter **pp = &bus->waiters; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            return true;
        }
    }
    return false;
}

/* ---- libmosquitto callbacks (network thread) ---------------------------- */

static void bus_on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                           const mosquitto_property *props)
{
    (void)props;
    ws_bus *bus = obj;
    if (rc != 0) {
        pthread_mutex_lock(&bus->mu);
        bus->last_refusal = rc;
        pthread_cond_broadcast(&bus->cond); /* ws_bus_wait_connected says why */
        pthread_mutex_unlock(&bus->mu);
        ws_log_warn("bus_connect_refused", "reason=%d text=%s", rc,
                    mosquitto_reason_string(rc));
        return;
    }
    pthread_mutex_lock(&bus->mu);
    bus->gen++;
    bus->last_refusal = 0;
    if (bus->ever_connected) {
        ws_counter_inc(bus->reconnects);
    }
    bus->ever_connected = true;
    /* Renew every subscription, even when the broker kept the session. */
    int n = 0;
    for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
        n++;
    }
    if (n > 0) {
        char **topics = calloc((size_t)n, sizeof(*topics));
        int mid = -1;
        int src = MOSQ_ERR_NOMEM;
        if (topics != NULL) {
            int i = 0;
            for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
                topics[i++] = s->wire;
            }
            src = mosquitto_subscribe_multiple(mosq, &mid, n, topics, 1, 0, NULL);
            free(topics);
        }
        if (src != MOSQ_ERR_SUCCESS) {
            ws_log_error("bus_resubscribe_failed", "error=%s", mosquitto_strerror(src));
            mid = -1;
        }
        for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
            s->mid = mid;
        }
    }
    atomic_store(&bus->connected, true);
    ws_gauge_set(bus->connected_gauge, 1);
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
    ws_log_info("bus_connected", "host=%s port=%d session_present=%d", bus->host,
                bus->port, (flags & 1) != 0);
}

static void bus_on_disconnect(struct mosquitto *mosq, void *obj, int rc,
                              const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    ws_bus *bus = obj;
    pthread_mutex_lock(&bus->mu);
    bool was = atomic_exchange(&bus->connected, false);
    ws_gauge_set(bus->connected_gauge, 0);
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
    if (was && !atomic_load(&bus->closing)) {
        ws_log_warn("bus_disconnected", "reason=%d", rc);
    }
}

static void bus_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                             const int *granted_qos, const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    ws_bus *bus = obj;
    pthread_mutex_lock(&bus->mu);
    int i = 0;
    for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
        if (s->mid != mid) {
            continue;
        }
        /* The granted QoS list is in the order of the SUBSCRIBE's topics;
         * a resubscribe carries every sub in list order. */
        int granted = i < qos_count ? granted_qos[i] : 1;
        if (granted >= 0x80) {
            ws_log_error("bus_subscribe_refused", "topic=%s reason=%d", s->wire, granted);
        }
        s->acked_gen = bus->gen;
        s->mid = -1;
        i++;
    }
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
}

static void bus_on_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
                           const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    ws_bus *bus = obj;
    ws_err result = bus_err_from_reason(reason);
    if (result == WS_OK) {
        ws_counter_inc(bus->acked);
    } else {
        ws_counter_inc(bus->publish_failed);
        ws_log_warn("bus_publish_refused", "mid=%d reason=%d", mid, reason);
    }
    bus_waiter *async = NULL;
    pthread_mutex_lock(&bus->mu);
    for (bus_waiter *w = bus->waiters; w != NULL; w = w->next) {
        if (w->mid != mid) {
            continue;
        }
        bus_waiter_unlink(bus, w);
        if (w->cb != NULL) {
            async = w;
            bus->n_async--;
        } else {
            w->done = true;
            w->result = result;
            pthread_cond_broadcast(&bus->cond);
        }
        break;
    }
    pthread_mutex_unlock(&bus->mu);
    if (async != NULL) {
        async->cb(async->ctx, result);
        free(async);
    }
}

/* ---- group commit (network thread) -------------------------------------- */

static void bus_batch_close(ws_bus *bus);
static void bus_deliver(ws_bus *bus, bus_sub *s, const char *topic, const void *payload,
                        size_t len, bool json, bool redelivered, bool group);

static ws_err bus_held_reserve(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) {
        return WS_OK;
    }
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        n *= 2;
    }
    void *q = realloc(*p, n * elem);
    if (q == NULL) {
        return WS_ENOMEM;
    }
    *p = q;
    *cap = n;
    return WS_OK;
}

/* Before a handler runs: open a group if grouping is on and none is open,
 * and keep a copy of the message for a replay. True when the message is in
 * the group. A message that cannot be kept (no memory) ends the group first
 * and runs outside one. */
static bool bus_batch_enter(ws_bus *bus, bus_sub *s, const char *topic,
                            const void *payload, size_t len, const ws_bus_msg_info *info)
{
    if (!bus->batch_on) {
        return false;
    }
    if (!bus->batch_open) {
        if (bus->batch.begin(bus->batch.ctx) != WS_OK) {
            return false;
        }
        bus->batch_open = true;
        bus->batch_first = bus->batch_seen;
        bus->n_held = 0;
        bus->n_data = 0;
        clock_gettime(CLOCK_MONOTONIC, &bus->batch_t0);
    }
    size_t tlen = strlen(topic) + 1;
    if (bus_held_reserve((void **)&bus->held, &bus->cap_held, bus->n_held + 1,
                         sizeof(*bus->held)) != WS_OK ||
        bus_held_reserve((void **)&bus->held_data, &bus->cap_data,
                         bus->n_data + tlen + len, 1) != WS_OK) {
        bus_batch_close(bus);
        return false;
    }
    bus_held *h = &bus->held[bus->n_held++];
    h->sub = s;
    h->topic_off = bus->n_data;
    memcpy(bus->held_data + bus->n_data, topic, tlen);
    bus->n_data += tlen;
    h->payload_off = bus->n_data;
    if (len > 0) {
        memcpy(bus->held_data + bus->n_data, payload, len);
    }
    bus->n_data += len;
    h->len = len;
    h->json = info->json;
    h->redelivered = info->redelivered;
    bus->batch_seen++;
    return true;
}

/* The last message entered did not stay in the group (its handler failed
 * and its savepoint was rolled back): drop its replay copy. */
static void bus_batch_forget_last(ws_bus *bus)
{
    if (bus->n_held == 0) {
        return;
    }
    bus->n_held--;
    bus->n_data = bus->held[bus->n_held].topic_off;
    bus->batch_seen--;
}

/* End the open group; on failure hand its messages to their handlers again
 * one by one, outside any group (a retryable failure there holds that
 * message and queues the rest behind it). */
static void bus_batch_close(ws_bus *bus)
{
    if (!bus->batch_open) {
        return;
    }
    bus->batch_open = false;
    ws_counter_inc(bus->batches);
    ws_counter_add(bus->batched, bus->batch_seen - bus->batch_first);
    ws_err err = bus->batch.end(bus->batch.ctx);
    if (err == WS_OK || bus->n_held == 0) {
        bus->n_held = 0;
        bus->n_data = 0;
        return;
    }
    ws_log_warn("bus_batch_failed", "messages=%zu error=%s replay=1", bus->n_held,
                ws_errname(err));
    /* The copies stay valid: nothing below enters a group. */
    size_t n = bus->n_held;
    bus->n_held = 0;
    for (size_t i = 0; i < n; i++) {
        const bus_held *h = &bus->held[i];
        bus_deliver(bus, h->sub, (const char *)bus->held_data + h->topic_off,
                    bus->held_data + h->payload_off, h->len, h->json, h->redelivered,
                    false);
    }
    bus->n_data = 0;
}

/* After one pass of the network loop: end the group unless more messages
 * came back to back and it is still under its bounds. */
static void bus_batch_after_loop(ws_bus *bus, uint64_t seen_before, bool failed)
{
    if (!bus->batch_open) {
        return;
    }
    bool more = !failed && bus->batch_seen != seen_before &&
                bus->batch_seen - bus->batch_first < (uint64_t)bus->batch.max_msgs;
    if (more) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long us = (long long)(now.tv_sec - bus->batch_t0.tv_sec) * 1000000LL +
                       (now.tv_nsec - bus->batch_t0.tv_nsec) / 1000;
        more = us < bus->batch.max_us;
    }
    if (!more) {
        bus_batch_close(bus);
    }
}

/* ---- hold and retry (network thread) ------------------------------------ */

static int64_t bus_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool bus_holding(const ws_bus *bus)
{
    return bus->pend_head < bus->pend_n;
}

bool ws_bus_err_transient(ws_err err)
{
    switch (err) {
    case WS_EIO:
    case WS_EBUSY:
    case WS_EUNAVAIL:
    case WS_ESTORE:
    case WS_ENOMEM:
    case WS_ETIMEDOUT:
        return true;
    default:
        return false;
    }
}

/* True when the handler's err asks for the message to be kept. */
static bool bus_retryable(const ws_bus *bus, ws_err err)
{
    if (!bus->retry_on || err == WS_OK) {
        return false;
    }
    return bus->retry.retryable != NULL ? bus->retry.retryable(err)
                                        : ws_bus_err_transient(err);
}

/* Copy the hold's state where other threads read it (ws_bus_holding). */
static void bus_hold_publish(ws_bus *bus)
{
    size_t n = bus->pend_n - bus->pend_head;
    pthread_mutex_lock(&bus->mu);
    bus->hold_n = n;
    if (n > 0) {
        const bus_pend *p = &bus->pend[bus->pend_head];
        bus->hold_attempts = p->attempts;
        snprintf(bus->hold_topic, sizeof(bus->hold_topic), "%s", p->data);
    } else {
        bus->hold_since_ms = 0;
        bus->hold_attempts = 0;
        bus->hold_topic[0] = '\0';
    }
    pthread_mutex_unlock(&bus->mu);
    ws_gauge_set(bus->held_gauge, (double)n);
}

/* Keep a copy of a message whose handler cannot apply it now, behind the
 * ones already held. False (logged: the message is lost, as before holds
 * existed) when there is no memory for it. */
static bool bus_pend_push(ws_bus *bus, bus_sub *s, const char *topic, const void *payload,
                          size_t len, bool json, bool redelivered, unsigned attempts)
{
    if (bus->pend_head > 0 && bus->pend_n == bus->pend_cap) {
        size_t live = bus->pend_n - bus->pend_head;
        memmove(bus->pend, bus->pend + bus->pend_head, live * sizeof(*bus->pend));
        bus->pend_head = 0;
        bus->pend_n = live;
    }
    size_t tlen = strlen(topic) + 1;
    char *data = malloc(tlen + len + 1);
    if (data == NULL || bus_held_reserve((void **)&bus->pend, &bus->pend_cap,
                                         bus->pend_n + 1, sizeof(*bus->pend)) != WS_OK) {
        free(data);
        ws_log_error("bus_dropped", "topic=%s error=WS_ENOMEM held=%zu", topic,
                     bus->pend_n - bus->pend_head);
        return false;
    }
    memcpy(data, topic, tlen);
    if (len > 0) {
        memcpy(data + tlen, payload, len);
    }
    bus->pend[bus->pend_n++] = (bus_pend){.sub = s,
                                          .data = data,
                                          .len = len,
                                          .json = json,
                                          .redelivered = redelivered,
                                          .attempts = attempts};
    return true;
}

static void bus_pend_pop(ws_bus *bus)
{
    free(bus->pend[bus->pend_head].data);
    bus->pend_head++;
    if (bus->pend_head == bus->pend_n) {
        bus->pend_head = bus->pend_n = 0;
    }
}

/* The first retryable failure: hold the message and stop reading. */
static void bus_hold_begin(ws_bus *bus, bus_sub *s, const char *topic,
                           const void *payload, size_t len, const ws_bus_msg_info *info,
                           ws_err err)
{
    bool was = bus_holding(bus);
    ws_counter_inc(bus->retries);
    if (!bus_pend_push(bus, s, topic, payload, len, info->json, info->redelivered, 1)) {
        ws_counter_inc(s->failed);
        return;
    }
    if (!was) {
        int64_t now = bus_mono_ms();
        pthread_mutex_lock(&bus->mu);
        bus->hold_since_ms = now;
        bus->hold_err = err;
        pthread_mutex_unlock(&bus->mu);
        bus->hold_log_ms = now;
        bus->hold_applied = 0;
        bus->retry_delay_ms = bus->retry.min_ms;
        ws_log_warn("bus_handler_holding", "topic=%s error=%s retry_ms=%d note=%s", topic,
                    ws_errname(err), bus->retry.min_ms,
                    "kept and retried; nothing is read from the broker meanwhile");
    }
    bus_hold_publish(bus);
}

/* Decode and hand one message to its handler (attempt 0), or queue it
 * behind the held ones. With group, the call joins the open group (one is
 * opened if needed). A retryable failure holds the message; any other is
 * counted and the message dropped. */
static void bus_deliver(ws_bus *bus, bus_sub *s, const char *topic, const void *payload,
                        size_t len, bool json, bool redelivered, bool group)
{
    if (bus_holding(bus)) {
        if (!bus_pend_push(bus, s, topic, payload, len, json, redelivered, 0)) {
            ws_counter_inc(s->failed);
        }
        bus_hold_publish(bus);
        return;
    }
    ProtobufCMessage *msg =
        ws__bus_decode(s->desc, s->topic, payload, len, json, bus->max_payload);
    if (msg == NULL) {
        ws_counter_inc(s->undecodable);
        return;
    }
    ws_bus_msg_info info = {.topic = topic, .json = json, .redelivered = redelivered};
    bool grouped = group && bus_batch_enter(bus, s, topic, payload, len, &info);
    ws_err err = s->fn(s->ctx, msg, &info);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (err == WS_OK) {
        return;
    }
    if (!bus_retryable(bus, err)) {
        ws_counter_inc(s->failed);
        ws_log_warn("bus_handler_failed", "topic=%s error=%s dropped=1", topic,
                    ws_errname(err));
        return;
    }
    if (grouped) {
        /* Its savepoint was rolled back: the group commits without it (or,
         * if that fails, replays its other messages first). */
        bus_batch_forget_last(bus);
        bus_batch_close(bus);
    }
    bus_hold_begin(bus, s, topic, payload, len, &info, err);
}

typedef enum bus_drain_result {
    BUS_DRAINED,
    BUS_PROGRESS,
    BUS_STILL_FAILING
} bus_drain_result;

/* Try the held messages again, oldest first, each in its own transaction
 * (no group), stopping at the first that still fails; at most a bounded
 * number per call so the caller keeps servicing the connection. */
static bus_drain_result bus_hold_drain(ws_bus *bus)
{
    for (int budget = 64; bus_holding(bus) && budget > 0; budget--) {
        if (atomic_load(&bus->closing)) {
            return BUS_STILL_FAILING;
        }
        bus_pend *p = &bus->pend[bus->pend_head];
        bus_sub *s = p->sub;
        const char *topic = p->data;
        const void *payload = p->data + strlen(topic) + 1;
        ProtobufCMessage *msg =
            ws__bus_decode(s->desc, s->topic, payload, p->len, p->json, bus->max_payload);
        if (msg == NULL) {
            ws_counter_inc(s->undecodable);
            bus_pend_pop(bus);
            continue;
        }
        ws_bus_msg_info info = {.topic = topic,
                                .json = p->json,
                                .redelivered = p->redelivered,
                                .attempt = p->attempts};
        ws_err err = s->fn(s->ctx, msg, &info);
        protobuf_c_message_free_unpacked(msg, NULL);
        p->attempts++;
        if (err == WS_OK) {
            bus->hold_applied++;
        } else if (!bus_retryable(bus, err)) {
            ws_counter_inc(s->failed);
            ws_log_warn("bus_handler_failed", "topic=%s error=%s dropped=1 attempts=%u",
                        topic, ws_errname(err), p->attempts);
        } else {
            ws_counter_inc(bus->retries);
            pthread_mutex_lock(&bus->mu);
            bus->hold_err = err;
            pthread_mutex_unlock(&bus->mu);
            bus_hold_publish(bus);
            return BUS_STILL_FAILING;
        }
        bus_pend_pop(bus);
        bus->retry_delay_ms = bus->retry.min_ms;
    }
    bus_hold_publish(bus);
    return bus_holding(bus) ? BUS_PROGRESS : BUS_DRAINED;
}

static bool bus_backoff_sleep(ws_bus *bus, int ms);

/* One step while messages are held: flush what libmosquitto has to write
 * (the PUBACKs of what it read, PINGREQs, our publishes) and run its
 * keepalive, without reading; then retry, sleeping the backoff (50 ms
 * doubling to 2 s by default; close wakes it) when the oldest still fails.
 * Returns libmosquitto's status of the connection (not SUCCESS once it is
 * lost; MOSQ_ERR_SUCCESS when not connected to begin with). */
static int bus_hold_step(ws_bus *bus, bool connected)
{
    int rc = MOSQ_ERR_SUCCESS;
    if (connected) {
        rc = mosquitto_loop_write(bus->mosq, 64);
        if (rc == MOSQ_ERR_SUCCESS) {
            rc = mosquitto_loop_misc(bus->mosq);
        }
    }
    int64_t since_log_ms = bus_mono_ms() - bus->hold_log_ms;
    int64_t since;
    pthread_mutex_lock(&bus->mu);
    since = bus->hold_since_ms;
    pthread_mutex_unlock(&bus->mu);
    bus_drain_result r = bus_hold_drain(bus);
    if (r == BUS_DRAINED) {
        ws_log_info("bus_handler_resumed", "held_ms=%lld applied=%llu connected=%d",
                    (long long)(bus_mono_ms() - since),
                    (unsigned long long)bus->hold_applied, connected && rc == 0);
        bus_hold_publish(bus);
        return rc;
    }
    if (r == BUS_STILL_FAILING && !atomic_load(&bus->closing)) {
        if (since_log_ms >= 30000) {
            bus->hold_log_ms = bus_mono_ms();
            ws_log_warn("bus_handler_still_holding", "held=%zu attempts=%u topic=%s",
                        bus->pend_n - bus->pend_head, bus->pend[bus->pend_head].attempts,
                        bus->pend[bus->pend_head].data);
        }
        bus_backoff_sleep(bus, bus->retry_delay_ms);
        bus->retry_delay_ms = bus->retry_delay_ms * 2 > bus->retry.max_ms
                                  ? bus->retry.max_ms
                                  : bus->retry_delay_ms * 2;
    }
    return rc;
}

/* At close: what is still held is lost here (the broker has its PUBACK);
 * say so, one line per message, and free the queue. */
static void bus_hold_abandon(ws_bus *bus)
{
    size_t n = bus->pend_n - bus->pend_head;
    while (bus_holding(bus)) {
        const bus_pend *p = &bus->pend[bus->pend_head];
        ws_log_warn("bus_closed_holding", "topic=%s attempts=%u held=%zu note=%s",
                    p->data, p->attempts, n,
                    "acknowledged to the broker before it could be applied: lost here, "
                    "the recovery loops heal it");
        bus_pend_pop(bus);
    }
    free(bus->pend);
    bus->pend = NULL;
    bus->pend_cap = 0;
    bus_hold_publish(bus);
}

ProtobufCMessage *ws__bus_decode(const ProtobufCMessageDescriptor *desc,
                                 const char *topic, const void *payload, size_t len,
                                 bool json, size_t max_payload)
{
    if (json) {
        ws_json_limits limits = {.max_bytes = max_payload, .max_depth = 0};
        ws_json_error jerr = {{0}};
        ProtobufCMessage *msg = NULL;
        ws_err err = ws_json_decode(desc, payload, len, &limits, &msg, &jerr);
        if (err != WS_OK) {
            ws_log_warn("bus_undecodable", "topic=%s format=json error=%s detail=%s",
                        topic, ws_errname(err), jerr.text);
            return NULL;
        }
        return msg;
    }
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, len, payload);
    if (msg == NULL) {
        ws_log_warn("bus_undecodable", "topic=%s format=protobuf len=%zu", topic, len);
    }
    return msg;
}

/* Redelivery test and bookkeeping (network thread only). */
static bool bus_recent_seen(ws_bus *bus, int mid, uint64_t hash, uint64_t gen)
{
    bool dup = false;
    for (size_t i = 0; i < BUS_RECENT; i++) {
        const bus_recent *r = &bus->recent[i];
        if (r->gen != 0 && r->gen < gen && r->mid == mid && r->hash == hash) {
            dup = true;
            break;
        }
    }
    bus->recent[bus->recent_next] = (bus_recent){.mid = mid, .hash = hash, .gen = gen};
    bus->recent_next = (bus->recent_next + 1) % BUS_RECENT;
    return dup;
}

/* The created-ms user property of a message, Unix ms; 0 when it has none
 * or it is not a number. */
static int64_t bus_created_ms(const mosquitto_property *props)
{
    int64_t created = 0;
    bool skip = false;
    for (const mosquitto_property *p = props; created == 0;) {
        char *name = NULL;
        char *value = NULL;
        p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value,
                                                skip);
        if (p == NULL) {
            break;
        }
        skip = true;
        if (strcmp(name, BUS_PROP_CREATED) == 0) {
            char *end = NULL;
            long long v = strtoll(value, &end, 10);
            created = end != value && *end == '\0' && v > 0 ? (int64_t)v : 0;
        }
        free(name);
        free(value);
    }
    return created;
}

/* webshop_event_age_seconds: now minus the creation time, 0 when the
 * publisher's clock is ahead of ours. */
static void bus_age_observe(bus_sub *s, int64_t created_ms, int64_t now_ms)
{
    if (created_ms > 0) {
        int64_t age = now_ms > created_ms ? now_ms - created_ms : 0;
        ws_histogram_observe(s->age, (double)age / 1000.0);
    }
}

static void bus_on_message(struct mosquitto *mosq, void *obj,
                           const struct mosquitto_message *m,
                           const mosquitto_property *props)
{
    (void)mosq;
    ws_bus *bus = obj;
    int64_t created_ms = bus_created_ms(props);
    int64_t now_ms = created_ms > 0 ? ws_clock_wall_ms() : 0;
    size_t len = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
    bool json = ws__bus_is_json(m->payload, len);

    /* Collect the matching subscriptions under the lock, dispatch without
     * it (nodes live as long as the bus). */
    bus_sub *small[16];
    bus_sub **match = small;
    size_t n_match = 0;
    pthread_mutex_lock(&bus->mu);
    uint64_t gen = bus->gen;
    size_t n_subs = 0;
    for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
        n_subs++;
    }
    if (n_subs > sizeof(small) / sizeof(small[0])) {
        match = malloc(n_subs * sizeof(*match));
    }
    if (match != NULL) {
        for (bus_sub *s = bus->subs; s != NULL; s = s->next) {
            bool hit = false;
            if (mosquitto_topic_matches_sub(s->topic, m->topic, &hit) ==
                    MOSQ_ERR_SUCCESS &&
                hit) {
                match[n_match++] = s;
            }
        }
    }
    pthread_mutex_unlock(&bus->mu);
    if (match == NULL) {
        ws_log_error("bus_dropped", "topic=%s error=WS_ENOMEM", m->topic);
        return;
    }

    bool redelivered = false;
    if (m->qos > 0) {
        redelivered =
            bus_recent_seen(bus, m->mid, bus_hash(m->topic, m->payload, len), gen);
        if (redelivered) {
            ws_counter_inc(bus->redelivered);
        }
    }

    for (size_t i = 0; i < n_match; i++) {
        bus_sub *s = match[i];
        ws_counter_inc(s->received);
        bus_age_observe(s, created_ms, now_ms);
        if (len > bus->max_payload) {
            ws_counter_inc(s->undecodable);
            ws_log_warn("bus_payload_too_large", "topic=%s len=%zu max=%zu", m->topic,
                        len, bus->max_payload);
            continue;
        }
        bus_deliver(bus, s, m->topic, m->payload, len, json, redelivered, true);
    }
    if (match != small) {
        free(match);
    }
    if (n_match == 0) {
        ws_log_debug("bus_unmatched", "topic=%s", m->topic);
    }
}

static void bus_on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
    (void)mosq;
    (void)obj;
    if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) {
        ws_log_warn("bus_mosquitto", "text=%s", str);
    }
}

/* ---- network thread ----------------------------------------------------- */

/* Sleep ms or until close; true if closing. */
static bool bus_backoff_sleep(ws_bus *bus, int ms)
{
    struct timespec ts;
    bus_deadline(&ts, (uint32_t)ms);
    pthread_mutex_lock(&bus->mu);
    while (!atomic_load(&bus->closing)) {
        if (pthread_cond_timedwait(&bus->cond, &bus->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&bus->mu);
    return atomic_load(&bus->closing);
}

/* Once per turn of the network loop, connected or not: the loop hook (the
 * watchdog's heartbeat), after the stall fault point that wedges the loop
 * for the watchdog tests. */
static void bus_loop_turn(ws_bus *bus)
{
    WS_FAULT_STALL("bus_loop_stall");
    if (bus->loop_hook != NULL) {
        bus->loop_hook(bus->loop_hook_ctx);
    }
}

/* One connection: the loop until it drops or the bus closes. While
 * messages are held it does not read (bus_hold_step). */
static int bus_connection_run(ws_bus *bus)
{
    int rc = MOSQ_ERR_SUCCESS;
    while (!atomic_load(&bus->closing)) {
        bus_loop_turn(bus);
        if (bus_holding(bus)) {
            rc = bus_hold_step(bus, true);
        } else {
            /* With a group open, wait at most a millisecond for more:
             * what arrives meanwhile shares the commit. */
            uint64_t seen = bus->batch_seen;
            rc = mosquitto_loop(bus->mosq, bus->batch_open ? 1 : BUS_LOOP_TIMEOUT_MS, 1);
            bus_batch_after_loop(bus, seen, rc != MOSQ_ERR_SUCCESS);
        }
        if (rc != MOSQ_ERR_SUCCESS) {
            break;
        }
    }
    bus_batch_close(bus);
    return rc;
}

/* Say goodbye properly so the broker keeps the session without a will and
 * logs a clean disconnect; bounded. With messages held, nothing more is
 * read (a message read now would be acknowledged and then lost). */
static void bus_goodbye(ws_bus *bus)
{
    if (!atomic_load(&bus->connected)) {
        return;
    }
    if (mosquitto_disconnect_v5(bus->mosq, 0, NULL) != MOSQ_ERR_SUCCESS) {
        return;
    }
    for (int i = 0; i < 20; i++) {
        int rc = bus_holding(bus) ? mosquitto_loop_write(bus->mosq, 64)
                                  : mosquitto_loop(bus->mosq, 50, 1);
        if (rc != MOSQ_ERR_SUCCESS ||
            (bus_holding(bus) && !mosquitto_want_write(bus->mosq))) {
            break;
        }
    }
}

static void *bus_thread_main(void *arg)
{
    ws_bus *bus = arg;
    int backoff = BUS_BACKOFF_MIN_MS;
    while (!atomic_load(&bus->closing)) {
        bus_loop_turn(bus);
        if (bus_holding(bus)) {
            /* Disconnected with messages held: apply them before the broker
             * may redeliver anything. */
            bus_hold_step(bus, false);
            continue;
        }
        pthread_mutex_lock(&bus->mu);
        uint64_t gen_before = bus->gen;
        pthread_mutex_unlock(&bus->mu);

        int rc = mosquitto_connect_bind_v5(bus->mosq, bus->host, bus->port,
                                           bus->keepalive, NULL, bus->connect_props);
        if (rc == MOSQ_ERR_SUCCESS) {
            rc = bus_connection_run(bus);
        }
        if (atomic_load(&bus->closing)) {
            break;
        }
        /* A connection that got as far as CONNACK restarts the backoff. */
        pthread_mutex_lock(&bus->mu);
        bool got_connack = bus->gen != gen_before;
        pthread_mutex_unlock(&bus->mu);
        if (got_connack) {
            backoff = BUS_BACKOFF_MIN_MS;
        }
        if (bus_holding(bus)) {
            continue; /* the hold has its own backoff */
        }
        ws_log_debug("bus_connect_retry", "error=%s delay_ms=%d", mosquitto_strerror(rc),
                     backoff);
        if (bus_backoff_sleep(bus, backoff)) {
            break;
        }
        backoff = backoff * 2 > BUS_BACKOFF_MAX_MS ? BUS_BACKOFF_MAX_MS : backoff * 2;
    }
    bus_goodbye(bus);
    bus_hold_abandon(bus);
    atomic_store(&bus->connected, false);
    ws_gauge_set(bus->connected_gauge, 0);
    return NULL;
}

/* ---- public API --------------------------------------------------------- */

/* A share name as MQTT v5 allows it (len bytes at name): not empty, no
 * '/', '+' or '#'. */
static bool bus_share_name_valid(const char *name, size_t len)
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

ws_err ws_bus_open(const ws_bus_opts *opts, ws_bus **out)
{
    if (opts == NULL || out == NULL) {
        return WS_EINVAL;
    }
    if (!opts->clean_start && (opts->client_id == NULL || opts->client_id[0] == '\0')) {
        return WS_EINVAL; /* a persistent session needs a fixed id */
    }
    if (opts->format != WS_BUS_PROTOBUF && opts->format != WS_BUS_JSON) {
        return WS_EINVAL;
    }
    if (opts->share_group != NULL &&
        !bus_share_name_valid(opts->share_group, strlen(opts->share_group))) {
        return WS_EINVAL;
    }
    pthread_once(&bus_lib_once, bus_lib_init_once);

    ws_bus *bus = calloc(1, sizeof(*bus));
    if (bus == NULL) {
        return WS_ENOMEM;
    }
    ws_err err = WS_ENOMEM;
    bus->host = bus_strdup(opts->host != NULL ? opts->host : BUS_DEFAULT_HOST);
    if (bus->host == NULL) {
        goto fail_bus;
    }
    if (opts->share_group != NULL) {
        bus->share_group = bus_strdup(opts->share_group);
        if (bus->share_group == NULL) {
            goto fail_host;
        }
    }
    bus->port = opts->port > 0 ? opts->port : BUS_DEFAULT_PORT;
    bus->keepalive = opts->keepalive > 0 ? opts->keepalive : BUS_DEFAULT_KEEPALIVE;
    if (bus->keepalive < 5) {
        bus->keepalive = 5; /* libmosquitto refuses less */
    }
    bus->format = opts->format;
    bus->max_payload =
        opts->max_payload > 0 ? opts->max_payload : BUS_DEFAULT_MAX_PAYLOAD;
    bus->max_inflight =
        opts->max_inflight > 0 ? opts->max_inflight : BUS_DEFAULT_MAX_INFLIGHT;
    if (bus->max_inflight > 65535) {
        bus->max_inflight = 65535;
    }
    bus->metrics = opts->metrics != NULL ? opts->metrics : ws_metrics_default();
    atomic_init(&bus->closing, false);
    atomic_init(&bus->connected, false);

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int prc = pthread_cond_init(&bus->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (prc != 0) {
        goto fail_host;
    }
    if (pthread_mutex_init(&bus->mu, NULL) != 0) {
        goto fail_cond;
    }

    uint32_t expiry =
        opts->session_expiry > 0 ? opts->session_expiry : BUS_DEFAULT_EXPIRY;
    if (mosquitto_property_add_int32(
            &bus->connect_props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
            opts->clean_start && opts->session_expiry == 0 ? 0 : expiry) !=
        MOSQ_ERR_SUCCESS) {
        goto fail_mu;
    }
    /* Ask the broker not to send more than we accept (headroom for the
     * topic and properties); the payload check in on_message stays. */
    size_t max_packet = bus->max_payload + 65536 + 1024;
    if (max_packet > 268435455u) {
        max_packet = 268435455u;
    }
    if (mosquitto_property_add_int32(&bus->connect_props, MQTT_PROP_MAXIMUM_PACKET_SIZE,
                                     (uint32_t)max_packet) != MOSQ_ERR_SUCCESS) {
        goto fail_props;
    }

    bus->mosq = mosquitto_new(opts->client_id, opts->clean_start, bus);
    if (bus->mosq == NULL) {
        err = errno == EINVAL ? WS_EINVAL : WS_ENOMEM;
        goto fail_props;
    }
    mosquitto_int_option(bus->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(bus->mosq, MOSQ_OPT_SEND_MAXIMUM, bus->max_inflight);
    mosquitto_int_option(bus->mosq, MOSQ_OPT_RECEIVE_MAXIMUM, bus->max_inflight);
    mosquitto_int_option(bus->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_threaded_set(bus->mosq, true);
    if (opts->username != NULL) {
        int rc = mosquitto_username_pw_set(bus->mosq, opts->username, opts->password);
        if (rc != MOSQ_ERR_SUCCESS) {
            err = bus_err_from_mosq(rc);
            goto fail_mosq;
        }
    }
    mosquitto_connect_v5_callback_set(bus->mosq, bus_on_connect);
    mosquitto_disconnect_v5_callback_set(bus->mosq, bus_on_disconnect);
    mosquitto_subscribe_v5_callback_set(bus->mosq, bus_on_subscribe);
    mosquitto_publish_v5_callback_set(bus->mosq, bus_on_publish);
    mosquitto_message_v5_callback_set(bus->mosq, bus_on_message);
    mosquitto_log_callback_set(bus->mosq, bus_on_log);

    bus->acked = ws_counter_get(bus->metrics, "webshop_bus_acked_total",
                                "QoS 1 publishes acknowledged by the broker", NULL);
    bus->redelivered = ws_counter_get(bus->metrics, "webshop_bus_redelivered_total",
                                      "Messages received again after a reconnect", NULL);
    bus->reconnects = ws_counter_get(bus->metrics, "webshop_bus_reconnects_total",
                                     "Connections to the broker after the first", NULL);
    bus->publish_failed =
        ws_counter_get(bus->metrics, "webshop_bus_publish_refused_total",
                       "Publishes the broker refused with an error reason code", NULL);
    bus->connected_gauge = ws_gauge_get(bus->metrics, "webshop_bus_connected",
                                        "1 while connected to the broker", NULL);
    ws_gauge_set(bus->connected_gauge, 0);
    *out = bus;
    return WS_OK;

fail_mosq:
    mosquitto_destroy(bus->mosq);
fail_props:
    mosquitto_property_free_all(&bus->connect_props);
fail_mu:
    pthread_mutex_destroy(&bus->mu);
fail_cond:
    pthread_cond_destroy(&bus->cond);
fail_host:
    free(bus->share_group);
    free(bus->host);
fail_bus:
    free(bus);
    return err;
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
    if (sh != NULL && !bus_share_name_valid(sh, sh_len)) {
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
    /* Labelled with the plain filter: the same series with or without a
     * share, whatever the replica count. */
    s->received = bus_topic_counter_get(bus, "webshop_bus_received_total",
                                        "Messages received per subscription", filter);
    s->undecodable = bus_topic_counter_get(bus, "webshop_bus_undecodable_total",
                                           "Messages dropped as undecodable", filter);
    s->failed = bus_topic_counter_get(bus, "webshop_bus_handler_failed_total",
                                      "Messages whose handler returned an error", filter);
    char *labels = bus_topic_label(filter);
    s->age = labels == NULL ? NULL
                            : ws_histogram_get(bus->metrics, BUS_AGE_METRIC,
                                               "Age of consumed events at delivery, from "
                                               "their creation time (seconds)",
                                               labels, bus_age_bounds,
                                               sizeof(bus_age_bounds) /
                                                   sizeof(bus_age_bounds[0]));
    free(labels);
    *out = s;
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
            err = bus_err_from_mosq(rc);
        }
        /* NO_CONN: the next on_connect subscribes it. */
    }
    if (err == WS_OK) {
        *tail = s;
    }
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

ws_err ws_bus_set_batch(ws_bus *bus, const ws_bus_batch *batch)
{
    if (bus == NULL || bus->thread_started ||
        (batch != NULL && (batch->begin == NULL || batch->end == NULL ||
                           batch->max_msgs < 0 || batch->max_us < 0))) {
        return WS_EINVAL;
    }
    if (batch == NULL) {
        bus->batch_on = false;
        return WS_OK;
    }
    bus->batch = *batch;
    bus->batch.max_msgs = batch->max_msgs > 0 ? batch->max_msgs : 64;
    bus->batch.max_us = batch->max_us > 0 ? batch->max_us : 1000;
    bus->batches = ws_counter_get(bus->metrics, "webshop_bus_batches_total",
                                  "Groups of messages handled in one commit", NULL);
    bus->batched = ws_counter_get(bus->metrics, "webshop_bus_batched_messages_total",
                                  "Messages handled inside a group", NULL);
    bus->batch_on = true;
    return WS_OK;
}

ws_err ws_bus_set_loop_hook(ws_bus *bus, void (*fn)(void *ctx), void *ctx)
{
    if (bus == NULL || bus->thread_started) {
        return WS_EINVAL;
    }
    bus->loop_hook = fn;
    bus->loop_hook_ctx = ctx;
    return WS_OK;
}

ws_err ws_bus_set_retry(ws_bus *bus, const ws_bus_retry *retry)
{
    if (bus == NULL || bus->thread_started ||
        (retry != NULL && (retry->min_ms < 0 || retry->max_ms < 0))) {
        return WS_EINVAL;
    }
    if (retry == NULL) {
        bus->retry_on = false;
        return WS_OK;
    }
    bus->retry = *retry;
    bus->retry.min_ms = retry->min_ms > 0 ? retry->min_ms : BUS_RETRY_MIN_MS;
    bus->retry.max_ms = retry->max_ms > 0 ? retry->max_ms : BUS_RETRY_MAX_MS;
    if (bus->retry.max_ms < bus->retry.min_ms) {
        bus->retry.max_ms = bus->retry.min_ms;
    }
    bus->retries = ws_counter_get(bus->metrics, "webshop_bus_handler_retries_total",
                                  "Handler calls that asked for their message to be kept "
                                  "and retried",
                                  NULL);
    bus->held_gauge = ws_gauge_get(bus->metrics, "webshop_bus_held_messages",
                                   "Messages kept for a retry; nothing is read from the "
                                   "broker while this is above 0",
                                   NULL);
    ws_gauge_set(bus->held_gauge, 0);
    bus->retry_on = true;
    return WS_OK;
}

bool ws_bus_holding(ws_bus *bus, ws_bus_hold *out)
{
    if (bus == NULL) {
        return false;
    }
    pthread_mutex_lock(&bus->mu);
    bool holding = bus->hold_n > 0;
    if (holding && out != NULL) {
        out->held = bus->hold_n;
        out->attempts = bus->hold_attempts;
        out->error = bus->hold_err;
        int64_t ms = bus_mono_ms() - bus->hold_since_ms;
        out->held_ms = ms > 0 ? (uint64_t)ms : 0;
        snprintf(out->topic, sizeof(out->topic), "%s", bus->hold_topic);
    }
    pthread_mutex_unlock(&bus->mu);
    return holding;
}

ws_err ws_bus_start(ws_bus *bus)
{
    if (bus == NULL) {
        return WS_EINVAL;
    }
    if (bus->thread_started) {
        return WS_EINVAL;
    }
    int rc = pthread_create(&bus->thread, NULL, bus_thread_main, bus);
    if (rc != 0) {
        return ws_err_from_errno(rc);
    }
    bus->thread_started = true;
    return WS_OK;
}

bool ws_bus_connected(const ws_bus *bus)
{
    return bus != NULL && atomic_load(&((ws_bus *)bus)->connected);
}

/* Connected and every subscription acknowledged on this connection (mu). */
static bool bus_ready_locked(ws_bus *bus)
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

ws_err ws_bus_wait_connected(ws_bus *bus, uint32_t timeout_ms)
{
    if (bus == NULL) {
        return WS_EINVAL;
    }
    struct timespec ts;
    bus_deadline(&ts, timeout_ms);
    ws_err err = WS_OK;
    pthread_mutex_lock(&bus->mu);
    while (!bus_ready_locked(bus)) {
        if (atomic_load(&bus->closing)) {
            err = WS_ECLOSED;
            break;
        }
        /* MQTT v5 reasons 134 (bad user name or password) and 135 (not
         * authorized): the same credentials will not do better by waiting.
         * The bus still retries in the background. */
        if (bus->last_refusal == 134 || bus->last_refusal == 135) {
            err = WS_EAUTH;
            break;
        }
        if (pthread_cond_timedwait(&bus->cond, &bus->mu, &ts) == ETIMEDOUT) {
            err = bus_ready_locked(bus) ? WS_OK : WS_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&bus->mu);
    return err;
}

uint64_t ws_bus_ready_epoch(ws_bus *bus)
{
    if (bus == NULL) {
        return 0;
    }
    pthread_mutex_lock(&bus->mu);
    uint64_t epoch = bus_ready_locked(bus) ? bus->gen : 0;
    pthread_mutex_unlock(&bus->mu);
    return epoch;
}

/* Encode msg in the bus's format into a malloc'ed payload. */
static ws_err bus_encode(ws_bus *bus, const ProtobufCMessage *msg, void **out,
                         size_t *len)
{
    if (bus->format == WS_BUS_JSON) {
        ws_buf b;
        ws_buf_init(&b, 0);
        ws_err err = ws_json_encode(msg, WS_JSON_CAMEL, &b);
        if (err != WS_OK) {
            ws_buf_fini(&b);
            return err;
        }
        *out = ws_buf_steal(&b, len);
        return *out != NULL ? WS_OK : WS_ENOMEM;
    }
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *p = malloc(n > 0 ? n : 1);
    if (p == NULL) {
        return WS_ENOMEM;
    }
    protobuf_c_message_pack(msg, p);
    *out = p;
    *len = n;
    return WS_OK;
}

/* The publish counter for topic (looked up once per topic; mu held). */
static ws_counter *bus_published_counter(ws_bus *bus, const char *topic)
{
    for (bus_topic_counter *t = bus->topics; t != NULL; t = t->next) {
        if (strcmp(t->topic, topic) == 0) {
            return t->published;
        }
    }
    bus_topic_counter *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    t->topic = strdup(topic);
    if (t->topic == NULL) {
        free(t);
        return NULL;
    }
    t->published = bus_topic_counter_get(bus, "webshop_bus_published_total",
                                         "QoS 1 messages handed to the broker", topic);
    t->next = bus->topics;
    bus->topics = t;
    return t->published;
}

/* Hand payload to libmosquitto at QoS 1 and register w under its message
 * id, all under mu so the PUBACK cannot overtake the registration. */
/* The PUBLISH properties: content type, and the creation time
 * (created_ms, or now when 0) as the created-ms user property. Built
 * before mu is taken. */
static ws_err bus_publish_props(bool json, int64_t created_ms, mosquitto_property **out)
{
    mosquitto_property *props = NULL;
    char created[24];
    snprintf(created, sizeof(created), "%lld",
             (long long)(created_ms > 0 ? created_ms : ws_clock_wall_ms()));
    int rc = mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE,
                                           json ? BUS_CONTENT_TYPE_JSON
                                                : BUS_CONTENT_TYPE_PROTOBUF);
    if (rc == MOSQ_ERR_SUCCESS) {
        rc = mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY,
                                                BUS_PROP_CREATED, created);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_property_free_all(&props);
        return bus_err_from_mosq(rc);
    }
    *out = props;
    return WS_OK;
}

static ws_err bus_send_locked(ws_bus *bus, const char *topic, const void *payload,
                              size_t len, const mosquitto_property *props, bus_waiter *w)
{
    if (atomic_load(&bus->closing)) {
        return WS_ECLOSED;
    }
    if (!atomic_load(&bus->connected)) {
        return WS_EUNAVAIL;
    }
    if (len > (size_t)INT32_MAX) {
        return WS_ETOOBIG;
    }
    int mid = 0;
    int rc =
        mosquitto_publish_v5(bus->mosq, &mid, topic, (int)len, payload, 1, false, props);
    if (rc != MOSQ_ERR_SUCCESS) {
        return bus_err_from_mosq(rc);
    }
    ws_counter_inc(bus_published_counter(bus, topic));
    w->mid = mid;
    w->next = bus->waiters;
    bus->waiters = w;
    return WS_OK;
}

static ws_err bus_publish_wait(ws_bus *bus, const char *topic, const void *payload,
                               size_t len, bool json, int64_t created_ms,
                               uint32_t deadline_ms)
{
    if (bus->thread_started && pthread_equal(pthread_self(), bus->thread)) {
        return WS_EINVAL; /* the PUBACK would wait for this very thread */
    }
    struct timespec ts;
    bus_deadline(&ts, deadline_ms);
    bus_waiter w = {.mid = -1};
    mosquitto_property *props = NULL;
    ws_err err = bus_publish_props(json, created_ms, &props);
    if (err != WS_OK) {
        return err;
    }
    pthread_mutex_lock(&bus->mu);
    err = bus_send_locked(bus, topic, payload, len, props, &w);
    if (err != WS_OK) {
        pthread_mutex_unlock(&bus->mu);
        mosquitto_property_free_all(&props);
        return err;
    }
    bus->n_sync++;
    while (!w.done) {
        if (pthread_cond_timedwait(&bus->cond, &bus->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    if (w.done) {
        err = w.result;
    } else {
        bus_waiter_unlink(bus, &w);
        err = WS_ETIMEDOUT;
    }
    bus->n_sync--;
    pthread_cond_broadcast(&bus->cond); /* close may wait for n_sync == 0 */
    pthread_mutex_unlock(&bus->mu);
    mosquitto_property_free_all(&props);
    return err;
}

ws_err ws_bus_publish(ws_bus *bus, const char *topic, const ProtobufCMessage *msg,
                      uint32_t deadline_ms)
{
    if (bus == NULL || topic == NULL || msg == NULL) {
        return WS_EINVAL;
    }
    if (!atomic_load(&bus->connected)) {
        return WS_EUNAVAIL;
    }
    void *payload = NULL;
    size_t len = 0;
    ws_err err = bus_encode(bus, msg, &payload, &len);
    if (err != WS_OK) {
        return err;
    }
    err = bus_publish_wait(bus, topic, payload, len, bus->format == WS_BUS_JSON, 0,
                           deadline_ms);
    free(payload);
    return err;
}

ws_err ws_bus_publish_raw(ws_bus *bus, const char *topic, const void *payload, size_t len,
                          uint32_t deadline_ms)
{
    if (bus == NULL || topic == NULL || (payload == NULL && len > 0)) {
        return WS_EINVAL;
    }
    return bus_publish_wait(bus, topic, payload, len, ws__bus_is_json(payload, len), 0,
                            deadline_ms);
}

ws_err ws_bus_publish_async(ws_bus *bus, const char *topic, const ProtobufCMessage *msg,
                            ws_bus_publish_cb cb, void *ctx)
{
    return ws_bus_publish_async_at(bus, topic, msg, 0, cb, ctx);
}

ws_err ws_bus_publish_async_at(ws_bus *bus, const char *topic, const ProtobufCMessage *msg,
                               int64_t created_ms, ws_bus_publish_cb cb, void *ctx)
{
    if (bus == NULL || topic == NULL || msg == NULL || cb == NULL || created_ms < 0) {
        return WS_EINVAL;
    }
    if (!atomic_load(&bus->connected)) {
        return WS_EUNAVAIL;
    }
    bus_waiter *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return WS_ENOMEM;
    }
    w->cb = cb;
    w->ctx = ctx;
    void *payload = NULL;
    size_t len = 0;
    mosquitto_property *props = NULL;
    ws_err err = bus_encode(bus, msg, &payload, &len);
    if (err == WS_OK) {
        err = bus_publish_props(bus->format == WS_BUS_JSON, created_ms, &props);
        if (err != WS_OK) {
            free(payload);
        }
    }
    if (err != WS_OK) {
        free(w);
        return err;
    }
    pthread_mutex_lock(&bus->mu);
    if (bus->n_async >= bus->max_inflight) {
        err = WS_EBUSY;
    } else {
        err = bus_send_locked(bus, topic, payload, len, props, w);
        if (err == WS_OK) {
            bus->n_async++;
        }
    }
    pthread_mutex_unlock(&bus->mu);
    mosquitto_property_free_all(&props);
    free(payload);
    if (err != WS_OK) {
        free(w);
    }
    return err;
}

void ws_bus_close(ws_bus *bus)
{
    if (bus == NULL) {
        return;
    }
    pthread_mutex_lock(&bus->mu);
    atomic_store(&bus->closing, true);
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
    if (bus->thread_started) {
        pthread_join(bus->thread, NULL);
    }

    /* No callback runs any more. Fail what still waits for a PUBACK: sync
     * publishers wake with WS_ECLOSED (and are waited for, since their
     * waiters live on their stacks), async ones get their callback here. */
    pthread_mutex_lock(&bus->mu);
    bus_waiter *async = NULL;
    while (bus->waiters != NULL) {
        bus_waiter *w = bus->waiters;
        bus->waiters = w->next;
        if (w->cb != NULL) {
            w->next = async;
            async = w;
        } else {
            w->done = true;
            w->result = WS_ECLOSED;
        }
    }
    bus->n_async = 0;
    pthread_cond_broadcast(&bus->cond);
    while (bus->n_sync > 0) {
        pthread_cond_wait(&bus->cond, &bus->mu);
    }
    pthread_mutex_unlock(&bus->mu);
    while (async != NULL) {
        bus_waiter *w = async;
        async = w->next;
        w->cb(w->ctx, WS_ECLOSED);
        free(w);
    }

    mosquitto_destroy(bus->mosq);
    mosquitto_property_free_all(&bus->connect_props);
    while (bus->subs != NULL) {
        bus_sub *s = bus->subs;
        bus->subs = s->next;
        bus_sub_free(s);
    }
    while (bus->topics != NULL) {
        bus_topic_counter *t = bus->topics;
        bus->topics = t->next;
        free(t->topic);
        free(t);
    }
    ws_gauge_set(bus->connected_gauge, 0);
    free(bus->held);
    free(bus->held_data);
    free(bus->pend);
    pthread_mutex_destroy(&bus->mu);
    pthread_cond_destroy(&bus->cond);
    free(bus->share_group);
    free(bus->host);
    free(bus);
}
