/*
 * Group commit around the handlers (ws_bus_set_batch). Every message that
 * arrives back to back joins the open group, up to max_msgs messages or
 * max_us after the first; the group is opened by batch.begin before its
 * first handler and closed by batch.end. Each message handled in the group
 * is kept (topic and payload copied) until end succeeds: if end fails, the
 * messages are handed to their handlers again, one by one, outside any
 * group, each under its own trace as the first time. Network thread only.
 */
#include "bus_int.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"

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

static int64_t bus_batch_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static ws_err bus_batch_reserve(void **p, size_t *cap, size_t need, size_t elem)
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

/* Open a group when none is open; false when begin fails. */
static bool bus_batch_open(ws_bus *bus)
{
    if (bus->batch_open) {
        return true;
    }
    if (bus->batch.begin(bus->batch.ctx) != WS_OK) {
        return false;
    }
    bus->batch_open = true;
    bus->batch_first = bus->batch_seen;
    bus->n_held = 0;
    bus->n_data = 0;
    bus->batch_t0_us = bus_batch_now_us();
    return true;
}

/* A message that cannot be kept (no memory) ends the group first and runs
 * outside one. */
bool ws__bus_batch_enter(ws_bus *bus, const bus_in *in)
{
    if (!bus->batch_on || !bus_batch_open(bus)) {
        return false;
    }
    size_t tlen = strlen(in->topic) + 1;
    if (bus_batch_reserve((void **)&bus->held, &bus->cap_held, bus->n_held + 1,
                          sizeof(*bus->held)) != WS_OK ||
        bus_batch_reserve((void **)&bus->held_data, &bus->cap_data,
                          bus->n_data + tlen + in->len, 1) != WS_OK) {
        ws__bus_batch_close(bus);
        return false;
    }
    bus_held *h = &bus->held[bus->n_held++];
    h->sub = in->sub;
    h->topic_off = bus->n_data;
    memcpy(bus->held_data + bus->n_data, in->topic, tlen);
    bus->n_data += tlen;
    h->payload_off = bus->n_data;
    if (in->len > 0) {
        memcpy(bus->held_data + bus->n_data, in->payload, in->len);
    }
    bus->n_data += in->len;
    h->len = in->len;
    h->json = in->json;
    h->redelivered = in->redelivered;
    h->trace = in->trace;
    bus->batch_seen++;
    return true;
}

/* Its handler failed and its savepoint was rolled back. */
void ws__bus_batch_forget_last(ws_bus *bus)
{
    if (bus->n_held == 0) {
        return;
    }
    bus->n_held--;
    bus->n_data = bus->held[bus->n_held].topic_off;
    bus->batch_seen--;
}

/* A failed group: hand its messages to their handlers again one by one,
 * outside any group (a retryable failure there holds that message and
 * queues the rest behind it). */
static void bus_batch_replay(ws_bus *bus)
{
    /* The copies stay valid: nothing below enters a group. */
    size_t n = bus->n_held;
    bus->n_held = 0;
    for (size_t i = 0; i < n; i++) {
        const bus_held *h = &bus->held[i];
        bus_in in = {.sub = h->sub,
                     .topic = (const char *)bus->held_data + h->topic_off,
                     .payload = bus->held_data + h->payload_off,
                     .len = h->len,
                     .json = h->json,
                     .redelivered = h->redelivered,
                     .trace = h->trace};
        ws__bus_deliver(bus, &in, false);
    }
    bus->n_data = 0;
}

void ws__bus_batch_close(ws_bus *bus)
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
    bus_batch_replay(bus);
}

void ws__bus_batch_after_loop(ws_bus *bus, uint64_t seen_before, bool failed)
{
    if (!bus->batch_open) {
        return;
    }
    bool more = !failed && bus->batch_seen != seen_before &&
                bus->batch_seen - bus->batch_first < (uint64_t)bus->batch.max_msgs;
    if (more) {
        more = bus_batch_now_us() - bus->batch_t0_us < bus->batch.max_us;
    }
    if (!more) {
        ws__bus_batch_close(bus);
    }
}

void ws__bus_batch_free(ws_bus *bus)
{
    free(bus->held);
    free(bus->held_data);
    bus->held = NULL;
    bus->held_data = NULL;
}
