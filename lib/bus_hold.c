/*
 * Hold and retry (ws_bus_set_retry). Since the PUBACK has gone out before a
 * handler runs, a message whose handler cannot apply it now (its store
 * cannot commit) is kept here, in a queue of held messages, and the network
 * thread stops reading from the socket: what the broker sends meanwhile
 * stays unacknowledged in the socket buffer or queued in the broker for the
 * persistent session. One read pass of libmosquitto may hand over a few more
 * messages after the one that failed (all acknowledged already); they join
 * the queue behind it, in order. While anything is held the thread only
 * writes (the PUBACKs already queued, PINGREQs, our publishes) and retries
 * the oldest held message with backoff, each try in its own transaction and
 * under the message's own trace. Not reading means no PINGRESP is seen, so
 * after about two keepalive periods libmosquitto drops the connection; the
 * thread then keeps retrying unconnected and reconnects only once the queue
 * is empty, so the broker's redeliveries arrive after the held messages are
 * applied. The queue is the network thread's; what ws_bus_holding reports
 * is copied under mu.
 */
#include "bus_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"

#define BUS_RETRY_MIN_MS 50
#define BUS_RETRY_MAX_MS 2000

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
        int64_t ms = ws_clock_mono_ms() - bus->hold_since_ms;
        out->held_ms = ms > 0 ? (uint64_t)ms : 0;
        snprintf(out->topic, sizeof(out->topic), "%s", bus->hold_topic);
    }
    pthread_mutex_unlock(&bus->mu);
    return holding;
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

bool ws__bus_holding(const ws_bus *bus)
{
    return bus->pend_head < bus->pend_n;
}

bool ws__bus_retryable(const ws_bus *bus, ws_err err)
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

/* Room for one more entry at the tail of the queue. */
static ws_err bus_pend_reserve(ws_bus *bus)
{
    if (bus->pend_head > 0 && bus->pend_n == bus->pend_cap) {
        size_t live = bus->pend_n - bus->pend_head;
        memmove(bus->pend, bus->pend + bus->pend_head, live * sizeof(*bus->pend));
        bus->pend_head = 0;
        bus->pend_n = live;
    }
    if (bus->pend_n < bus->pend_cap) {
        return WS_OK;
    }
    size_t n = bus->pend_cap ? bus->pend_cap * 2 : 16;
    bus_pend *q = realloc(bus->pend, n * sizeof(*q));
    if (q == NULL) {
        return WS_ENOMEM;
    }
    bus->pend = q;
    bus->pend_cap = n;
    return WS_OK;
}

/* Keep a copy of in behind the ones already held. False (logged: the
 * message is lost, as before holds existed) when there is no memory. */
static bool bus_pend_push(ws_bus *bus, const bus_in *in, unsigned attempts)
{
    size_t tlen = strlen(in->topic) + 1;
    char *data = malloc(tlen + in->len + 1);
    if (data == NULL || bus_pend_reserve(bus) != WS_OK) {
        free(data);
        ws_log_error("bus_dropped", "topic=%s error=WS_ENOMEM held=%zu", in->topic,
                     bus->pend_n - bus->pend_head);
        return false;
    }
    memcpy(data, in->topic, tlen);
    if (in->len > 0) {
        memcpy(data + tlen, in->payload, in->len);
    }
    bus->pend[bus->pend_n++] = (bus_pend){.sub = in->sub,
                                          .data = data,
                                          .len = in->len,
                                          .json = in->json,
                                          .redelivered = in->redelivered,
                                          .trace = in->trace,
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

void ws__bus_hold_queue(ws_bus *bus, const bus_in *in)
{
    if (!bus_pend_push(bus, in, 0)) {
        ws_counter_inc(in->sub->failed);
    }
    bus_hold_publish(bus);
}

void ws__bus_hold_begin(ws_bus *bus, const bus_in *in, ws_err err)
{
    bool was = ws__bus_holding(bus);
    ws_counter_inc(bus->retries);
    if (!bus_pend_push(bus, in, 1)) {
        ws_counter_inc(in->sub->failed);
        return;
    }
    if (!was) {
        int64_t now = ws_clock_mono_ms();
        pthread_mutex_lock(&bus->mu);
        bus->hold_since_ms = now;
        bus->hold_err = err;
        pthread_mutex_unlock(&bus->mu);
        bus->hold_log_ms = now;
        bus->hold_applied = 0;
        bus->retry_delay_ms = bus->retry.min_ms;
        ws_log_warn("bus_handler_holding", "topic=%s error=%s retry_ms=%d note=%s",
                    in->topic, ws_errname(err), bus->retry.min_ms,
                    "kept and retried; nothing is read from the broker meanwhile");
    }
    bus_hold_publish(bus);
}

typedef enum bus_drain_result {
    BUS_DRAINED,
    BUS_PROGRESS,
    BUS_STILL_FAILING
} bus_drain_result;

/* Run the oldest held message's handler once more (in: its view of p), on
 * the thread's current trace. True when it is done with (applied,
 * undecodable or refused for good: popped). */
static bool bus_hold_retry_run(ws_bus *bus, bus_pend *p, const bus_in *in)
{
    ws_err err = WS_OK;
    if (!ws__bus_handle(bus, in, p->attempts, &err)) {
        bus_pend_pop(bus); /* undecodable: counted */
        return true;
    }
    p->attempts++;
    if (err == WS_OK) {
        bus->hold_applied++;
    } else if (!ws__bus_retryable(bus, err)) {
        ws_counter_inc(p->sub->failed);
        ws_log_warn("bus_handler_failed", "topic=%s error=%s dropped=1 attempts=%u",
                    p->data, ws_errname(err), p->attempts);
    } else {
        ws_counter_inc(bus->retries);
        pthread_mutex_lock(&bus->mu);
        bus->hold_err = err;
        pthread_mutex_unlock(&bus->mu);
        bus_hold_publish(bus);
        return false;
    }
    bus_pend_pop(bus);
    bus->retry_delay_ms = bus->retry.min_ms;
    return true;
}

/* The same under the message's own trace, cleared after. */
static bool bus_hold_retry_oldest(ws_bus *bus)
{
    bus_pend *p = &bus->pend[bus->pend_head];
    bus_in in = {.sub = p->sub,
                 .topic = p->data,
                 .payload = p->data + strlen(p->data) + 1,
                 .len = p->len,
                 .json = p->json,
                 .redelivered = p->redelivered,
                 .trace = p->trace};
    ws_trace_set_current(&in.trace);
    bool done = bus_hold_retry_run(bus, p, &in);
    ws_trace_set_current(NULL);
    return done;
}

/* Try the held messages again, oldest first, each in its own transaction
 * (no group), stopping at the first that still fails; at most a bounded
 * number per call so the caller keeps servicing the connection. */
static bus_drain_result bus_hold_drain(ws_bus *bus)
{
    for (int budget = 64; ws__bus_holding(bus) && budget > 0; budget--) {
        if (atomic_load(&bus->closing) || !bus_hold_retry_oldest(bus)) {
            return BUS_STILL_FAILING;
        }
    }
    bus_hold_publish(bus);
    return ws__bus_holding(bus) ? BUS_PROGRESS : BUS_DRAINED;
}

/* Still failing: say so every 30 s, and sleep the backoff (50 ms doubling
 * to 2 s by default; close wakes it). */
static void bus_hold_backoff(ws_bus *bus, int64_t since_log_ms)
{
    if (since_log_ms >= 30000) {
        bus->hold_log_ms = ws_clock_mono_ms();
        ws_log_warn("bus_handler_still_holding", "held=%zu attempts=%u topic=%s",
                    bus->pend_n - bus->pend_head, bus->pend[bus->pend_head].attempts,
                    bus->pend[bus->pend_head].data);
    }
    ws__bus_backoff_sleep(bus, bus->retry_delay_ms);
    bus->retry_delay_ms = bus->retry_delay_ms * 2 > bus->retry.max_ms
                              ? bus->retry.max_ms
                              : bus->retry_delay_ms * 2;
}

/* Flush what libmosquitto has to write (the PUBACKs of what it read,
 * PINGREQs, our publishes) and run its keepalive, without reading; then
 * retry. Returns libmosquitto's status of the connection (not SUCCESS once
 * it is lost; MOSQ_ERR_SUCCESS when not connected to begin with). */
int ws__bus_hold_step(ws_bus *bus, bool connected)
{
    int rc = MOSQ_ERR_SUCCESS;
    if (connected) {
        rc = mosquitto_loop_write(bus->mosq, 64);
        if (rc == MOSQ_ERR_SUCCESS) {
            rc = mosquitto_loop_misc(bus->mosq);
        }
    }
    int64_t since_log_ms = ws_clock_mono_ms() - bus->hold_log_ms;
    pthread_mutex_lock(&bus->mu);
    int64_t since = bus->hold_since_ms;
    pthread_mutex_unlock(&bus->mu);
    bus_drain_result r = bus_hold_drain(bus);
    if (r == BUS_DRAINED) {
        ws_log_info("bus_handler_resumed", "held_ms=%lld applied=%llu connected=%d",
                    (long long)(ws_clock_mono_ms() - since),
                    (unsigned long long)bus->hold_applied, connected && rc == 0);
        bus_hold_publish(bus);
        return rc;
    }
    if (r == BUS_STILL_FAILING && !atomic_load(&bus->closing)) {
        bus_hold_backoff(bus, since_log_ms);
    }
    return rc;
}

/* What is still held is lost here (the broker has its PUBACK): say so, one
 * line per message, and free the queue. */
void ws__bus_hold_abandon(ws_bus *bus)
{
    size_t n = bus->pend_n - bus->pend_head;
    while (ws__bus_holding(bus)) {
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
