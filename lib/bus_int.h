/*
 * Private to the bus: the ws_bus struct and the entry points its files share
 * (ws__bus_*), and how a received payload becomes a message without a broker
 * (ws__bus_is_json, ws__bus_decode: the fuzz target's entry points). Nothing
 * here is public.
 *
 * The files, one job each:
 *   bus.c            the session: open, close, the network thread, connect
 *                    and disconnect, readiness
 *   bus_subscribe.c  subscriptions (plain and shared), resubscribe on every
 *                    CONNACK, SUBACKs, matching a topic to its subscriptions
 *   bus_decode.c     payload format and decoding, the message's properties
 *                    (created-ms, traceparent)
 *   bus_redelivery.c recognising a redelivered message
 *   bus_deliver.c    on_message: from a received message to its handlers,
 *                    each run under the message's trace
 *   bus_group.c      group commit around the handlers, and the replay
 *   bus_hold.c       hold and retry
 *   bus_publish.c    publishing, PUBACK waits (one wake-up per waiter)
 *
 * Locks: bus->mu guards the subscription list, the publish waiters and the
 * connection state; it is never held across mosquitto_publish_v5 or a log
 * call (a SUBSCRIBE still goes out under it, so that its SUBACK finds the
 * subscription's mid). bus->send_mu orders a publish with the registration
 * of its waiter (see bus_publish.c); lock order send_mu, then mu.
 */
#ifndef WS_BUS_INT_H
#define WS_BUS_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <mosquitto.h>
#include <protobuf-c/protobuf-c.h>

#include "bus.h"
#include "metrics.h"
#include "trace.h"

#define BUS_RECENT                256
#define BUS_WAITER_BUCKETS        256 /* power of two; waiters hashed by mid */
#define BUS_CONTENT_TYPE_PROTOBUF "application/x-protobuf"
#define BUS_CONTENT_TYPE_JSON     "application/json"
/* MQTT v5 user property with the event's creation time, Unix ms. */
#define BUS_PROP_CREATED "created-ms"

/* One subscription; never freed before the bus. */
typedef struct bus_sub {
    char *topic; /* the filter messages are matched against (no $share/) */
    char *wire;  /* what SUBSCRIBE carries: "$share/<group>/<topic>" for a
                    shared subscription, else topic itself (not owned) */
    const ProtobufCMessageDescriptor *desc;
    ws_bus_handler_fn fn;
    void *ctx;
    int mid;            /* of the SUBSCRIBE that carries it; -1 none (mu) */
    uint64_t acked_gen; /* connection generation of its SUBACK (mu) */
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

/* A publish waiting for its PUBACK, in the bucket of its mid. Sync waiters
 * live on the publisher's stack and sleep on their own cond; async ones are
 * malloc'ed and freed by whoever completes them. */
typedef struct bus_waiter {
    int mid;
    bool done;            /* (mu) */
    ws_err result;        /* (mu) */
    ws_bus_publish_cb cb; /* NULL for a sync waiter */
    void *ctx;
    pthread_cond_t cond; /* sync only: signalled when done */
    struct bus_waiter *next;
} bus_waiter;

/* A received message as the handlers see it, and as a hold or a group keeps
 * it (then topic and payload point into the keeper's copy). */
typedef struct bus_in {
    bus_sub *sub;
    const char *topic;
    const void *payload;
    size_t len;
    bool json;
    bool redelivered;
    ws_trace trace; /* from its traceparent, or a new one */
} bus_in;

/* One held message (hold and retry): topic and payload copied into data
 * (topic NUL-terminated, then the payload). */
typedef struct bus_pend {
    bus_sub *sub;
    char *data; /* owned */
    size_t len; /* payload bytes after the topic */
    bool json;
    bool redelivered;
    ws_trace trace;
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
    ws_trace trace;
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
    bool tls; /* --broker-tls-ca given */
    ws_bus_format format;
    size_t max_payload;
    int max_inflight;
    mosquitto_property *connect_props; /* owned; sent on every connect */

    pthread_t thread;
    bool thread_started;
    atomic_bool closing;
    atomic_bool connected;

    pthread_mutex_t mu;
    pthread_cond_t cond;       /* connection, SUBACK and close events (mu) */
    uint64_t gen;              /* ++ on each CONNACK success (mu) */
    bool ever_connected;       /* (mu) */
    int last_refusal;          /* CONNACK reason of the last refused connect, 0 (mu) */
    bus_sub *subs;             /* (mu) append only */
    bus_topic_counter *topics; /* (mu) */

    /* Publishing (bus_publish.c). */
    pthread_mutex_t send_mu;                 /* see bus_publish.c */
    bus_waiter *waiters[BUS_WAITER_BUCKETS]; /* (mu) by mid */
    int n_async;                             /* async waiters outstanding (mu) */
    int n_sync;                              /* threads inside a sync publish (mu) */
    int sending;                             /* publishers holding send_mu (mu) */

    bus_recent recent[BUS_RECENT]; /* network thread only */
    size_t recent_next;

    /* Group commit (set before start; the rest network thread only). */
    ws_bus_batch batch;
    bool batch_on;
    bool batch_open;
    int64_t batch_t0_us;  /* CLOCK_MONOTONIC when the open group began */
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

/* ---- bus.c --------------------------------------------------------------- */

/* libmosquitto's MOSQ_ERR_* as ws_err. */
ws_err ws__bus_err_from_mosq(int rc);

/* Sleep ms or until close (network thread); true if closing. */
bool ws__bus_backoff_sleep(ws_bus *bus, int ms);

/* ---- bus_subscribe.c ----------------------------------------------------- */

/* topic="<escaped>" for a Prometheus label set; malloc'ed, NULL on ENOMEM. */
char *ws__bus_topic_label(const char *topic);

/* The counter name{topic="..."} in the bus's registry (NULL on ENOMEM). */
ws_counter *ws__bus_topic_counter_get(ws_bus *bus, const char *name, const char *help,
                                      const char *topic);

/* A share name as MQTT v5 allows it (len bytes at name). */
bool ws__bus_share_name_valid(const char *name, size_t len);

/* Subscribe every subscription again in one SUBSCRIBE (on CONNACK, mu
 * held; logs nothing). Returns libmosquitto's result (SUCCESS when there is
 * nothing to subscribe). */
int ws__bus_resubscribe_locked(ws_bus *bus);

/* libmosquitto's SUBACK callback. */
void ws__bus_on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
                          const int *granted_qos, const mosquitto_property *props);

/* Connected and every subscription acknowledged on this connection (mu). */
bool ws__bus_ready_locked(ws_bus *bus);

/* The subscriptions whose filter matches topic, into match (cap entries;
 * *n_subs is set to the number of subscriptions when that is more than cap
 * and nothing is matched). Returns the count matched. Takes mu. */
size_t ws__bus_match(ws_bus *bus, const char *topic, bus_sub **match, size_t cap,
                     size_t *n_subs /* OUT */, uint64_t *gen /* OUT */);

/* Free every subscription (at close). */
void ws__bus_subs_free(ws_bus *bus);

/* ---- bus_decode.c -------------------------------------------------------- */

/* True when payload (len bytes) is to be read as JSON: its first byte that
 * is not a space, tab, CR or LF is '{'. */
bool ws__bus_is_json(const void *payload, size_t len);

/* Decode payload (len bytes) as a message of type desc: proto3 JSON when
 * json is true (at most max_payload bytes, default nesting limit), else
 * protobuf binary. Returns a message freed with
 * protobuf_c_message_free_unpacked(msg, NULL), or NULL when undecodable
 * (logged at warn with topic, which is only used for the log line). */
ProtobufCMessage *ws__bus_decode(const ProtobufCMessageDescriptor *desc,
                                 const char *topic, const void *payload, size_t len,
                                 bool json, size_t max_payload);

/* The created-ms user property of a message, Unix ms; 0 when it has none
 * or it is not a number. */
int64_t ws__bus_created_ms(const mosquitto_property *props);

/* The trace a received message is handled under: its traceparent user
 * property when that parses, else a new trace. *had says which (0 none,
 * 1 parsed, -1 present but malformed). */
void ws__bus_msg_trace(const mosquitto_property *props, ws_trace *out /* OUT */,
                       int *had /* OUT, may be NULL */);

/* ---- bus_redelivery.c ---------------------------------------------------- */

/* True when (mid, topic, payload) was received on an earlier connection
 * than gen; records it either way (network thread only). */
bool ws__bus_redelivered(ws_bus *bus, int mid, const char *topic, const void *payload,
                         size_t len, uint64_t gen);

/* ---- bus_deliver.c ------------------------------------------------------- */

/* libmosquitto's message callback. */
void ws__bus_on_message(struct mosquitto *mosq, void *obj,
                        const struct mosquitto_message *m,
                        const mosquitto_property *props);

/* Decode and hand one message to its handler (attempt 0), or queue it
 * behind the held ones. With group, the call joins the open group (one is
 * opened if needed). A retryable failure holds the message; any other is
 * counted and the message dropped. */
void ws__bus_deliver(ws_bus *bus, const bus_in *in, bool group);

/* Decode in and run its handler (attempt as info->attempt). The caller has
 * made in->trace the thread's current trace and clears it after. False
 * when undecodable (counted and logged; the handler did not run); else
 * true with the handler's result in *err. */
bool ws__bus_handle(ws_bus *bus, const bus_in *in, unsigned attempt,
                    ws_err *err /* OUT */);

/* ---- bus_group.c --------------------------------------------------------- */

/* Before a handler runs: open a group if grouping is on and none is open,
 * and keep a copy of the message for a replay. True when it is in the
 * group. */
bool ws__bus_batch_enter(ws_bus *bus, const bus_in *in);

/* The last message entered did not stay in the group: drop its copy. */
void ws__bus_batch_forget_last(ws_bus *bus);

/* End the open group; replay its messages outside a group on failure. */
void ws__bus_batch_close(ws_bus *bus);

/* After one pass of the network loop: end the group unless more messages
 * came back to back and it is still under its bounds. */
void ws__bus_batch_after_loop(ws_bus *bus, uint64_t seen_before, bool failed);

/* Free the group's buffers (at close). */
void ws__bus_batch_free(ws_bus *bus);

/* ---- bus_hold.c ---------------------------------------------------------- */

/* True while messages are held (network thread). */
bool ws__bus_holding(const ws_bus *bus);

/* True when the handler's err asks for the message to be kept. */
bool ws__bus_retryable(const ws_bus *bus, ws_err err);

/* Queue in behind the held messages (attempt 0). */
void ws__bus_hold_queue(ws_bus *bus, const bus_in *in);

/* The first retryable failure of in: hold it and stop reading. */
void ws__bus_hold_begin(ws_bus *bus, const bus_in *in, ws_err err);

/* One step while messages are held; see bus_hold.c. Returns libmosquitto's
 * status of the connection. */
int ws__bus_hold_step(ws_bus *bus, bool connected);

/* At close: log and free what is still held. */
void ws__bus_hold_abandon(ws_bus *bus);

/* ---- bus_publish.c ------------------------------------------------------- */

/* libmosquitto's PUBACK callback. */
void ws__bus_on_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
                        const mosquitto_property *props);

/* At close, after the network thread ended: fail every waiter with
 * WS_ECLOSED (sync ones are woken and waited for; async callbacks run
 * here), and free the publish counters. */
void ws__bus_publish_fini(ws_bus *bus);

#endif
