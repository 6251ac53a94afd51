/*
 * The MQTT event bus over libmosquitto (MQTT v5). One ws_bus is one client
 * connection with a fixed client id and a persistent session (clean start
 * off, session expiry set), so subscriptions and queued QoS 1 messages
 * survive a restart of the service. It reconnects by itself with backoff and
 * subscribes everything again on every CONNACK, session present or not
 * (Mosquitto 2.0.11 does not restore shared subscriptions after a broker
 * restart). A subscription can be shared (MQTT v5 "$share/<group>/<topic>"):
 * replicas of one service, each with its own client id, join one group and
 * the broker hands each message to one of them. Subscriptions are typed:
 * each topic has a message descriptor, and payloads are decoded as protobuf
 * or, when the first non-blank byte is '{', as proto3 JSON. Undecodable
 * payloads are logged, counted and dropped. Publishing encodes in the
 * configured format, sets the MQTT v5 content-type property, and can wait
 * for the broker's PUBACK. With a CA in the options the connection is TLS
 * 1.2+ with the broker's certificate and name verified, and the client
 * presents its own certificate (the broker then takes its identity as the
 * user, tools/broker_clientid.c).
 *
 * Trace context (lib/trace.h): a publish from a thread that works for a
 * trace (ws_trace_current()) carries a child span of it as the MQTT v5 user
 * property "traceparent" (WS_TRACEPARENT_NAME). Every handler runs with the
 * message's trace as the network thread's current trace (so its log lines
 * carry trace_id=): the one its traceparent names, or a new trace when it
 * has none or one that does not parse; it is cleared after the handler. A
 * held message's retries and a failed group's replay run under the same
 * trace as the first call; each message of a group under its own.
 *
 * Metrics (in opts->metrics): webshop_bus_published_total{topic},
 * webshop_bus_acked_total, webshop_bus_publish_refused_total,
 * webshop_bus_received_total{topic}, webshop_bus_undecodable_total{topic},
 * webshop_bus_handler_failed_total{topic} (topic = the subscription filter),
 * webshop_bus_redelivered_total, webshop_bus_reconnects_total, the
 * histogram webshop_event_age_seconds{topic} (per subscription, of every
 * delivered message that carries its creation time: the MQTT v5 user
 * property "created-ms", Unix milliseconds, which every publish here sets,
 * to now or to the time given to ws_bus_publish_async_at), with
 * grouping on webshop_bus_batches_total and webshop_bus_batched_messages_total
 * (their ratio is the mean group size), with retries (ws_bus_set_retry) on
 * webshop_bus_handler_retries_total and the gauge webshop_bus_held_messages,
 * and the gauge webshop_bus_connected.
 *
 * Threads: the bus's own network thread (a loop around mosquitto_loop(),
 * which gives millisecond reconnect backoff and re-sends the CONNECT
 * properties on every reconnect) runs the subscription handlers and the
 * async publish callbacks, one at a time.
 */
#ifndef WS_BUS_H
#define WS_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "err.h"
#include "metrics.h"

typedef struct ws_bus ws_bus;

typedef enum ws_bus_format {
    WS_BUS_PROTOBUF = 0, /* content type application/x-protobuf */
    WS_BUS_JSON = 1,     /* proto3 JSON, lowerCamelCase; application/json */
} ws_bus_format;

typedef struct ws_bus_opts {
    const char *host;        /* broker host; NULL = "127.0.0.1" */
    int port;                /* broker port; 0 = 1883 */
    const char *client_id;   /* fixed id; required for a persistent session */
    bool clean_start;        /* true = forget the session (tools); default false */
    uint32_t session_expiry; /* seconds the broker keeps the session; 0 = 1 day,
                                or 0 = none when clean_start */
    const char *username;    /* NULL = anonymous */
    const char *password;
    /* TLS to the broker (TLS 1.2 or later): with tls_ca set the bus speaks
     * TLS, verifies the broker's certificate against tls_ca and its name
     * against host (a DNS or IP subjectAltName), and presents tls_cert
     * (PEM, the leaf then its chain) with tls_key when given. Unreadable
     * files: WS_EINVAL from ws_bus_open. NULL = plain TCP. */
    const char *tls_ca;
    const char *tls_cert;
    const char *tls_key;
    ws_bus_format format;    /* how this client publishes */
    int keepalive;           /* seconds; 0 = 30; at least 5 (libmosquitto's floor) */
    size_t max_payload;      /* larger incoming payloads are dropped; 0 = 256 KiB */
    int max_inflight;        /* QoS 1 publishes in flight; 0 = 1000 */
    const char *share_group; /* NULL = none; else every ws_bus_subscribe of
                                this bus joins this share group (copied; no
                                '/', '+', '#'; WS_EINVAL otherwise): one name
                                per service, the same for all its replicas */
    ws_metrics *metrics;     /* NULL = default registry */
} ws_bus_opts;

/* Facts about one delivered message. */
typedef struct ws_bus_msg_info {
    const char *topic;
    bool json;        /* payload was JSON */
    bool redelivered; /* a redelivery: libmosquitto does not expose the DUP
                         flag, so this means "same packet id and same topic
                         and payload as a message received on an earlier
                         connection" (the broker resends only after a
                         reconnect) */
    unsigned attempt; /* 0 on delivery; n on the nth retry of a held
                         message (ws_bus_set_retry): log its failure once */
} ws_bus_msg_info;

/* Subscription handler: msg is decoded, owned by the bus, valid only during
 * the call. Runs on the network thread, with the message's trace as the
 * thread's current trace (ws_trace_current(); never NULL there). WS_OK: handled. An error cannot
 * cause a redelivery (libmosquitto has already acknowledged the message):
 * without ws_bus_set_retry it is counted (webshop_bus_handler_failed_total)
 * and the message dropped; with it, an error the retry policy calls
 * transient keeps the message and retries it (see ws_bus_set_retry), and
 * any other error (WS_EINVAL for an invalid message, say) drops it. */
typedef ws_err (*ws_bus_handler_fn)(void *ctx, const ProtobufCMessage *msg,
                                    const ws_bus_msg_info *info);

/* Called once per async publish from the network thread: WS_OK when the
 * broker acknowledged it, WS_ECLOSED if the bus closed first. */
typedef void (*ws_bus_publish_cb)(void *ctx, ws_err result);

/* Create a bus client; nothing connects until ws_bus_start(). */
ws_err ws_bus_open(const ws_bus_opts *opts, ws_bus **out /* OUT */);

/* Subscribe at QoS 1 to topic (MQTT filter syntax allowed), decoding each
 * payload as desc; in opts->share_group when set (see
 * ws_bus_subscribe_shared). topic may also be "$share/<group>/<filter>",
 * which is the same as ws_bus_subscribe_shared(bus, group, filter, ...).
 * Before or after start; subscriptions are renewed on every reconnect, and
 * readiness (ws_bus_wait_connected, ws_bus_ready_epoch) waits for their
 * SUBACKs each time. desc must outlive the bus. WS_EINVAL for a malformed
 * filter or share name. */
ws_err ws_bus_subscribe(ws_bus *bus, const char *topic,
                        const ProtobufCMessageDescriptor *desc, ws_bus_handler_fn fn,
                        void *ctx);

/* The same as a member of share group group (NULL = unshared, whatever
 * opts->share_group says): the bus subscribes "$share/<group>/<topic>",
 * and of the clients (distinct client ids) in that group the broker gives
 * each message to one, round robin. Messages arrive with their original
 * topic; the handler's info->topic and the metrics' topic label are the
 * plain topic. Mosquitto 2.0.11 facts: a member's share is queued for it
 * even while it is offline (its persistent session), an in-flight message
 * is not moved to another member, and a broker restart forgets the share
 * (the bus subscribes again on the next CONNACK). Do not subscribe one bus
 * to overlapping shared and unshared filters: each copy the broker sends is
 * handed to every subscription of this bus whose filter matches. */
ws_err ws_bus_subscribe_shared(ws_bus *bus, const char *group, const char *topic,
                               const ProtobufCMessageDescriptor *desc,
                               ws_bus_handler_fn fn, void *ctx);

/* Group commit around the handlers. begin(ctx) is called on the network
 * thread before the first handler of a group; the handlers of every message
 * that arrives back to back (read without waiting) then run, up to max_msgs
 * messages or max_us microseconds after the first; then end(ctx) is called.
 * A service opens one store transaction in begin and commits it in end
 * (ws_db_group_begin/_end), so what arrived together costs one commit.
 * libmosquitto has acknowledged every message before its handler runs, so
 * keep the group short: a crash loses the uncommitted group (the recovery
 * loops heal it). If begin fails, that message is handled outside a group.
 * If end fails, every message of the group is decoded again and handed to
 * its handlers once more, outside any group (handlers are idempotent; their
 * log lines and counters of the failed group stay). Call before
 * ws_bus_start; batch NULL turns grouping off. WS_EINVAL once started. */
typedef struct ws_bus_batch {
    ws_err (*begin)(void *ctx);
    ws_err (*end)(void *ctx);
    void *ctx;
    int max_msgs; /* 0 = 64 */
    int max_us;   /* 0 = 1000 */
} ws_bus_batch;
ws_err ws_bus_set_batch(ws_bus *bus, const ws_bus_batch *batch);

/* Hold and retry. libmosquitto acknowledges a QoS 1 message before its
 * handler runs, so a handler that cannot apply it now (its database cannot
 * commit: disk full, read-only file, I/O error, ...) must not lose it. With
 * a retry policy set, a handler error for which retryable(err) is true
 * (NULL: ws_bus_err_transient) makes the bus keep that message, stop
 * reading from the broker (what the broker has not handed over stays
 * there, unacknowledged or queued for the persistent session; the few
 * messages libmosquitto already read in the same pass are kept behind it,
 * in order), and call the handler again with info->attempt > 0, outside
 * any group, after min_ms doubling to max_ms, until it returns WS_OK or a
 * non-retryable error (then the message is dropped and counted). Then the
 * held messages behind it are applied in order, and reading resumes: no
 * later message is handled before a held one. While holding, the network
 * thread still writes (PUBACKs, keepalive pings, publishes from other
 * threads) but reads nothing, so PUBACKs of this client's own publishes
 * wait too; after about two keepalive periods libmosquitto gives the
 * connection up, and the bus reconnects only once nothing is held (the
 * broker then redelivers what it had sent unacknowledged; a redelivery of a
 * held message whose PUBACK never left is handled as a duplicate). At
 * close, messages still held are lost (logged bus_closed_holding; the
 * publishers' recovery loops heal them). Call before ws_bus_start; NULL
 * turns it off (the default). WS_EINVAL once started. */
typedef struct ws_bus_retry {
    bool (*retryable)(ws_err err); /* NULL = ws_bus_err_transient */
    int min_ms;                    /* first backoff; 0 = 50 */
    int max_ms;                    /* cap of the doubling; 0 = 2000 */
} ws_bus_retry;
ws_err ws_bus_set_retry(ws_bus *bus, const ws_bus_retry *retry);

/* Call fn(ctx) on the network thread once per turn of its loop: about every
 * 100 ms while connected and idle, after each pass that handled messages,
 * each retry step while holding, and each reconnect attempt (at most 5 s
 * apart, plus the time a TCP connect to an unreachable broker takes). A
 * handler that never returns stops the calls, which is the point: the
 * service's watchdog heartbeat goes here (ws_notify_loop_hook), so it stops
 * when the consumer is stuck. fn must be quick and must not call into the
 * bus. Call before ws_bus_start; NULL turns it off. WS_EINVAL once started.
 * With fault points compiled in, WEBSHOP_FAULT=bus_loop_stall=FILE wedges
 * the loop, before the hook, while FILE exists (lib/fault.h). */
ws_err ws_bus_set_loop_hook(ws_bus *bus, void (*fn)(void *ctx), void *ctx);

/* The default retry policy: true for the errors that say "not now" rather
 * than "never": WS_EIO (storage cannot be written), WS_EBUSY, WS_EUNAVAIL,
 * WS_ESTORE (a database error: kept rather than lost, even if it is one
 * that never clears), WS_ENOMEM, WS_ETIMEDOUT. False for WS_EINVAL,
 * WS_EPARSE, WS_ERANGE, WS_ENOTFOUND, WS_EEXIST, ... */
bool ws_bus_err_transient(ws_err err);

/* What a holding bus holds; see ws_bus_holding. */
typedef struct ws_bus_hold {
    size_t held;       /* messages kept, the oldest first */
    unsigned attempts; /* handler calls of the oldest so far */
    uint64_t held_ms;  /* since the hold began */
    ws_err error;      /* what the oldest's handler said last */
    char topic[128];   /* the oldest's topic */
} ws_bus_hold;

/* True while messages are held for a retry (nothing is read from the broker
 * meanwhile); then *out (may be NULL) describes them. Any thread. */
bool ws_bus_holding(ws_bus *bus, ws_bus_hold *out /* OUT, may be NULL */);

/* Start the network thread: connect, and keep reconnecting with backoff
 * (100 ms doubling to 5 s) whenever the connection drops. Returns at once. */
ws_err ws_bus_start(ws_bus *bus);

/* True while connected to the broker (CONNACK received). Any thread. */
bool ws_bus_connected(const ws_bus *bus);

/* Block until ready or timeout_ms passes: connected and every subscription
 * made so far acknowledged (SUBACK) on this connection, so a message
 * published after it returns WS_OK reaches the handlers. WS_OK,
 * WS_ETIMEDOUT, WS_EAUTH as soon as the broker refuses the credentials
 * (the bus keeps retrying in the background), or WS_ECLOSED while closing. */
ws_err ws_bus_wait_connected(ws_bus *bus, uint32_t timeout_ms);

/* Nonzero while connected with every subscription acknowledged, and the same
 * value for as long as that connection lasts: a new connection gives a new
 * value. 0 when not ready. A cache kept fresh by events is valid only while
 * this stays the same nonzero value (events in a gap between connections may
 * be lost). Any thread. */
uint64_t ws_bus_ready_epoch(ws_bus *bus);

/* Publish msg at QoS 1 on topic and wait for the PUBACK. WS_OK when the
 * broker acknowledged; WS_EUNAVAIL when not connected; WS_ETIMEDOUT when
 * deadline_ms passed first (the message may still be delivered: QoS 1 is at
 * least once; a connection lost meanwhile is resumed and the message resent
 * by libmosquitto); WS_ECLOSED when the bus closed first; WS_EAUTH,
 * WS_EBUSY, WS_ETOOBIG or WS_EPROTO when the broker's PUBACK carries an
 * error reason code. Any thread except the network thread (WS_EINVAL). */
ws_err ws_bus_publish(ws_bus *bus, const char *topic, const ProtobufCMessage *msg,
                      uint32_t deadline_ms);

/* The same with an already-encoded payload (sent as-is; content type
 * application/json when its first non-blank byte is '{'). */
ws_err ws_bus_publish_raw(ws_bus *bus, const char *topic, const void *payload, size_t len,
                          uint32_t deadline_ms);

/* Publish without waiting: cb(ctx, result) is called exactly once, later, if
 * this returns WS_OK; never if it returns an error (WS_EUNAVAIL when not
 * connected, WS_EBUSY when max_inflight publishes are outstanding). */
ws_err ws_bus_publish_async(ws_bus *bus, const char *topic, const ProtobufCMessage *msg,
                            ws_bus_publish_cb cb, void *ctx);

/* The same for an event made earlier than now (an outbox row): created_ms
 * (Unix ms, wall clock; 0 = now; negative: WS_EINVAL) goes out as the
 * created-ms user property, from which consumers measure
 * webshop_event_age_seconds. */
ws_err ws_bus_publish_async_at(ws_bus *bus, const char *topic, const ProtobufCMessage *msg,
                               int64_t created_ms, ws_bus_publish_cb cb, void *ctx);

/* Disconnect, stop the network thread, fail pending publishes with
 * WS_ECLOSED (sync waiters wake up and are waited for; async callbacks run
 * on the closing thread), free. A retry in progress is not waited for
 * beyond the handler call running (the backoff sleep wakes at once); held
 * messages are logged and dropped (see ws_bus_set_retry). bus may be NULL.
 * Not from the network thread. */
void ws_bus_close(ws_bus *bus);

#endif
