/*
 * The MQTT event bus over libmosquitto (MQTT v5). One ws_bus is one client
 * connection with a fixed client id and a persistent session (clean start
 * off, session expiry set), so subscriptions and queued QoS 1 messages
 * survive a restart of the service. It reconnects by itself with backoff and
 * resubscribes. Subscriptions are typed: each topic has a message
 * descriptor, and payloads are decoded as protobuf or, when the first
 * non-blank byte is '{', as proto3 JSON. Undecodable payloads are logged,
 * counted and dropped. Publishing encodes in the configured format, sets the
 * MQTT v5 content-type property, and can wait for the broker's PUBACK.
 *
 * Threads: libmosquitto's network thread (mosquitto_loop_start) runs the
 * subscription handlers and the async publish callbacks, one at a time.
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
    uint32_t session_expiry; /* seconds the broker keeps the session; 0 = 1 day */
    const char *username;    /* NULL = anonymous */
    const char *password;
    ws_bus_format format;    /* how this client publishes */
    int keepalive;           /* seconds; 0 = 30 */
    size_t max_payload;      /* larger incoming payloads are dropped; 0 = 256 KiB */
    int max_inflight;        /* QoS 1 publishes in flight; 0 = 1000 */
    ws_metrics *metrics;     /* NULL = default registry */
} ws_bus_opts;

/* Facts about one delivered message. */
typedef struct ws_bus_msg_info {
    const char *topic;
    bool json;        /* payload was JSON */
    bool redelivered; /* MQTT DUP flag set */
} ws_bus_msg_info;

/* Subscription handler: msg is decoded, owned by the bus, valid only during
 * the call. Runs on the network thread. The return value is counted in
 * metrics (WS_OK handled, anything else failed); it cannot cause a
 * redelivery (libmosquitto has already acknowledged the message). */
typedef ws_err (*ws_bus_handler_fn)(void *ctx, const ProtobufCMessage *msg,
                                    const ws_bus_msg_info *info);

/* Called once per async publish from the network thread: WS_OK when the
 * broker acknowledged it, WS_ECLOSED if the bus closed first. */
typedef void (*ws_bus_publish_cb)(void *ctx, ws_err result);

/* Create a bus client; nothing connects until ws_bus_start(). */
ws_err ws_bus_open(const ws_bus_opts *opts, ws_bus **out /* OUT */);

/* Subscribe at QoS 1 to topic (MQTT filter syntax allowed), decoding each
 * payload as desc. Before or after start; subscriptions are renewed on every
 * reconnect. desc must outlive the bus. */
ws_err ws_bus_subscribe(ws_bus *bus, const char *topic, const ProtobufCMessageDescriptor *desc,
                        ws_bus_handler_fn fn, void *ctx);

/* Start the network thread: connect, and keep reconnecting with backoff
 * (100 ms doubling to 5 s) whenever the connection drops. Returns at once. */
ws_err ws_bus_start(ws_bus *bus);

/* True while connected to the broker (CONNACK received). Any thread. */
bool ws_bus_connected(const ws_bus *bus);

/* Block until connected or timeout_ms passes: WS_OK or WS_ETIMEDOUT. */
ws_err ws_bus_wait_connected(ws_bus *bus, uint32_t timeout_ms);

/* Publish msg at QoS 1 on topic and wait for the PUBACK. WS_OK when the
 * broker acknowledged; WS_EUNAVAIL when not connected; WS_ETIMEDOUT when
 * deadline_ms passed first (the message may still be delivered: QoS 1 is at
 * least once). Any thread except the network thread. */
ws_err ws_bus_publish(ws_bus *bus, const char *topic, const ProtobufCMessage *msg,
                      uint32_t deadline_ms);

/* The same with an already-encoded payload (sent as-is). */
ws_err ws_bus_publish_raw(ws_bus *bus, const char *topic, const void *payload, size_t len,
                          uint32_t deadline_ms);

/* Publish without waiting: cb(ctx, result) is called exactly once, later, if
 * this returns WS_OK; never if it returns an error (WS_EUNAVAIL when not
 * connected, WS_EBUSY when max_inflight publishes are outstanding). */
ws_err ws_bus_publish_async(ws_bus *bus, const char *topic, const ProtobufCMessage *msg,
                            ws_bus_publish_cb cb, void *ctx);

/* Disconnect, stop the network thread, fail pending async publishes with
 * WS_ECLOSED, free. bus may be NULL. Not from the network thread. */
void ws_bus_close(ws_bus *bus);

#endif
