/*
 * From a received message to its handlers (libmosquitto's on_message, on
 * the network thread). The matching subscriptions are collected under mu
 * and served without it (their nodes live as long as the bus). Each message
 * is handled under a trace: the one its traceparent user property names,
 * or a new one when it has none or a malformed one, so the consumer's log
 * lines about it are grouped either way. That trace is the thread's
 * current trace while the handler runs (and the bus's own log lines about
 * the message are written), and is cleared after; a message that is held
 * or kept for a group's replay keeps its trace for the later runs.
 */
#include "bus_int.h"

#include <stdlib.h>

#include "clock.h"
#include "log.h"

/* webshop_event_age_seconds: now minus the creation time, 0 when the
 * publisher's clock is ahead of ours. */
static void bus_age_observe(bus_sub *s, int64_t created_ms, int64_t now_ms)
{
    if (created_ms > 0) {
        int64_t age = now_ms > created_ms ? now_ms - created_ms : 0;
        ws_histogram_observe(s->age, (double)age / 1000.0);
    }
}

/* in's payload decoded for its subscription, or NULL (counted, logged). */
static ProtobufCMessage *bus_in_decode(ws_bus *bus, const bus_in *in)
{
    bus_sub *s = in->sub;
    ProtobufCMessage *msg = ws__bus_decode(s->desc, s->topic, in->payload, in->len,
                                           in->json, bus->max_payload);
    if (msg == NULL) {
        ws_counter_inc(s->undecodable);
    }
    return msg;
}

/* Run in's handler on msg, and free msg. */
static ws_err bus_in_run(const bus_in *in, ProtobufCMessage *msg, unsigned attempt)
{
    ws_bus_msg_info info = {.topic = in->topic,
                            .json = in->json,
                            .redelivered = in->redelivered,
                            .attempt = attempt};
    ws_err err = in->sub->fn(in->sub->ctx, msg, &info);
    protobuf_c_message_free_unpacked(msg, NULL);
    return err;
}

bool ws__bus_handle(ws_bus *bus, const bus_in *in, unsigned attempt, ws_err *err)
{
    ProtobufCMessage *msg = bus_in_decode(bus, in);
    if (msg == NULL) {
        return false;
    }
    *err = bus_in_run(in, msg, attempt);
    return true;
}

/* ws__bus_deliver on the thread's current trace (in->trace). */
static void bus_deliver_traced(ws_bus *bus, const bus_in *in, bool group)
{
    ProtobufCMessage *msg = bus_in_decode(bus, in);
    if (msg == NULL) {
        return;
    }
    bool grouped = group && ws__bus_batch_enter(bus, in);
    ws_err err = bus_in_run(in, msg, 0);
    if (err == WS_OK) {
        return;
    }
    if (!ws__bus_retryable(bus, err)) {
        ws_counter_inc(in->sub->failed);
        ws_log_warn("bus_handler_failed", "topic=%s error=%s dropped=1", in->topic,
                    ws_errname(err));
        return;
    }
    if (grouped) {
        /* Its savepoint was rolled back: the group commits without it (or,
         * if that fails, replays its other messages first, each under its
         * own trace). */
        ws__bus_batch_forget_last(bus);
        ws__bus_batch_close(bus);
        ws_trace_set_current(&in->trace);
    }
    ws__bus_hold_begin(bus, in, err);
}

void ws__bus_deliver(ws_bus *bus, const bus_in *in, bool group)
{
    if (ws__bus_holding(bus)) {
        ws__bus_hold_queue(bus, in);
        return;
    }
    ws_trace_set_current(&in->trace);
    bus_deliver_traced(bus, in, group);
    ws_trace_set_current(NULL);
}

/* Count, measure and deliver m to each matching subscription. */
static void bus_message_dispatch(ws_bus *bus, bus_sub **match, size_t n_match, bus_in *in,
                                 int64_t created_ms)
{
    int64_t now_ms = created_ms > 0 ? ws_clock_wall_ms() : 0;
    for (size_t i = 0; i < n_match; i++) {
        bus_sub *s = match[i];
        ws_counter_inc(s->received);
        bus_age_observe(s, created_ms, now_ms);
        if (in->len > bus->max_payload) {
            ws_counter_inc(s->undecodable);
            ws_log_warn("bus_payload_too_large", "topic=%s len=%zu max=%zu", in->topic,
                        in->len, bus->max_payload);
            continue;
        }
        in->sub = s;
        ws__bus_deliver(bus, in, true);
    }
}

void ws__bus_on_message(struct mosquitto *mosq, void *obj,
                        const struct mosquitto_message *m,
                        const mosquitto_property *props)
{
    (void)mosq;
    ws_bus *bus = obj;
    size_t len = m->payloadlen > 0 ? (size_t)m->payloadlen : 0;
    bus_sub *small[16];
    bus_sub **match = small;
    size_t cap = 16;
    size_t n_subs = 0;
    uint64_t gen = 0;
    size_t n_match = ws__bus_match(bus, m->topic, match, cap, &n_subs, &gen);
    while (n_subs > cap) { /* more subscriptions than fit: all of them fit */
        if (match != small) {
            free(match);
        }
        cap = n_subs;
        match = malloc(cap * sizeof(*match));
        if (match == NULL) {
            ws_log_error("bus_dropped", "topic=%s error=WS_ENOMEM", m->topic);
            return;
        }
        n_match = ws__bus_match(bus, m->topic, match, cap, &n_subs, &gen);
    }
    bus_in in = {.topic = m->topic,
                 .payload = m->payload,
                 .len = len,
                 .json = ws__bus_is_json(m->payload, len)};
    if (m->qos > 0) {
        in.redelivered = ws__bus_redelivered(bus, m->mid, m->topic, m->payload, len, gen);
        if (in.redelivered) {
            ws_counter_inc(bus->redelivered);
        }
    }
    ws__bus_msg_trace(props, &in.trace, NULL);
    bus_message_dispatch(bus, match, n_match, &in, ws__bus_created_ms(props));
    if (match != small) {
        free(match);
    }
    if (n_match == 0) {
        ws_log_debug("bus_unmatched", "topic=%s", m->topic);
    }
}
