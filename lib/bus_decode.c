/*
 * What a received message carries, read without a broker: its payload's
 * format (JSON when the first non-blank byte is '{', else protobuf binary),
 * the payload decoded into its subscription's message type, and the MQTT v5
 * user properties the bus's publishers set: created-ms (the event's
 * creation time) and traceparent (the trace it belongs to). The fuzz
 * target drives ws__bus_decode exactly as a delivery does.
 */
#include "bus_int.h"

#include <mqtt_protocol.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"

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

/* Call fn(ctx, name, value) for each user property until it returns true. */
static void
bus_user_props_each(const mosquitto_property *props,
                    bool (*fn)(void *ctx, const char *name, const char *value), void *ctx)
{
    bool skip = false;
    bool stop = false;
    for (const mosquitto_property *p = props; !stop;) {
        char *name = NULL;
        char *value = NULL;
        p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value,
                                                skip);
        if (p == NULL) {
            break;
        }
        skip = true;
        stop = fn(ctx, name, value);
        free(name);
        free(value);
    }
}

static bool bus_created_prop(void *ctx, const char *name, const char *value)
{
    if (strcmp(name, BUS_PROP_CREATED) != 0) {
        return false;
    }
    char *end = NULL;
    long long v = strtoll(value, &end, 10);
    *(int64_t *)ctx = end != value && *end == '\0' && v > 0 ? (int64_t)v : 0;
    return true;
}

int64_t ws__bus_created_ms(const mosquitto_property *props)
{
    int64_t created = 0;
    bus_user_props_each(props, bus_created_prop, &created);
    return created;
}

typedef struct bus_trace_find {
    ws_trace *out;
    int had;
} bus_trace_find;

static bool bus_trace_prop(void *ctx, const char *name, const char *value)
{
    bus_trace_find *f = ctx;
    if (strcmp(name, WS_TRACEPARENT_NAME) != 0) {
        return false;
    }
    f->had = ws_trace_parse(value, strlen(value), f->out) ? 1 : -1;
    return true;
}

void ws__bus_msg_trace(const mosquitto_property *props, ws_trace *out, int *had)
{
    ws_trace t;
    bus_trace_find f = {.out = &t, .had = 0};
    bus_user_props_each(props, bus_trace_prop, &f);
    if (f.had != 1) {
        ws_trace_new(&t); /* so the consumer's log lines are still grouped */
    }
    *out = t;
    if (had != NULL) {
        *had = f.had;
    }
}
