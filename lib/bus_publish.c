/*
 * Publishing at QoS 1 and waiting for the PUBACK. Each publish that waits
 * is a waiter in a bucket of bus->waiters chosen by its message id; the
 * PUBACK callback takes exactly that waiter out and wakes only it (a sync
 * waiter sleeps on its own condition variable, an async one gets its
 * callback on the network thread).
 *
 * libmosquitto assigns the message id inside mosquitto_publish_v5, and its
 * network thread may read the PUBACK before the publisher has registered
 * the waiter. bus->mu is not held across the call (it would stall every
 * callback and every reader of the bus behind the publish); instead the
 * publisher holds bus->send_mu from before mosquitto_publish_v5 until its
 * waiter is linked, and counts itself in bus->sending. A PUBACK that finds
 * no waiter while a publisher is sending waits for send_mu once and looks
 * again; one that still finds none belongs to a publish that timed out.
 * Nothing here logs with a lock held.
 */
#include "bus_int.h"

#include <errno.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "clock.h"
#include "json.h"
#include "log.h"

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

static bus_waiter **bus_bucket(ws_bus *bus, int mid)
{
    return &bus->waiters[(unsigned)mid & (BUS_WAITER_BUCKETS - 1)];
}

/* Remove w from its bucket (mu held); false if it is not there. */
static bool bus_waiter_unlink(ws_bus *bus, bus_waiter *w)
{
    for (bus_waiter **pp = bus_bucket(bus, w->mid); *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            return true;
        }
    }
    return false;
}

/* Take the waiter of mid out of its bucket (mu held); NULL if none. */
static bus_waiter *bus_waiter_take(ws_bus *bus, int mid)
{
    for (bus_waiter **pp = bus_bucket(bus, mid); *pp != NULL; pp = &(*pp)->next) {
        bus_waiter *w = *pp;
        if (w->mid == mid) {
            *pp = w->next;
            return w;
        }
    }
    return NULL;
}

/* The waiter of mid, taken out; when none is there yet but a publisher is
 * between mosquitto_publish_v5 and linking its waiter, wait for it once.
 * Returns with mu held. */
static bus_waiter *bus_waiter_find_acked(ws_bus *bus, int mid)
{
    pthread_mutex_lock(&bus->mu);
    bus_waiter *w = bus_waiter_take(bus, mid);
    if (w == NULL && bus->sending > 0) {
        pthread_mutex_unlock(&bus->mu);
        pthread_mutex_lock(&bus->send_mu); /* lock order: send_mu, mu */
        pthread_mutex_lock(&bus->mu);
        pthread_mutex_unlock(&bus->send_mu);
        w = bus_waiter_take(bus, mid);
    }
    return w;
}

void ws__bus_on_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
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
    bus_waiter *w = bus_waiter_find_acked(bus, mid);
    bus_waiter *async = NULL;
    if (w != NULL && w->cb != NULL) {
        async = w;
        bus->n_async--;
    } else if (w != NULL) {
        w->done = true;
        w->result = result;
        pthread_cond_signal(&w->cond); /* this publisher only */
    }
    pthread_mutex_unlock(&bus->mu);
    if (async != NULL) {
        async->cb(async->ctx, result);
        free(async);
    }
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
    t->published = ws__bus_topic_counter_get(
        bus, "webshop_bus_published_total", "QoS 1 messages handed to the broker", topic);
    t->next = bus->topics;
    bus->topics = t;
    return t->published;
}

/* The PUBLISH properties: content type, the creation time (created_ms, or
 * now when 0) as the created-ms user property, and, when the calling
 * thread works for a trace, a child span of it as the traceparent user
 * property. Built before any lock is taken. */
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
    const ws_trace *cur = ws_trace_current();
    if (rc == MOSQ_ERR_SUCCESS && cur != NULL) {
        ws_trace child;
        char tp[WS_TRACEPARENT_SIZE];
        ws_trace_child(cur, &child);
        ws_trace_format(&child, tp);
        rc = mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY,
                                                WS_TRACEPARENT_NAME, tp);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_property_free_all(&props);
        return ws__bus_err_from_mosq(rc);
    }
    *out = props;
    return WS_OK;
}

/* May w be sent now (send_mu and mu held)? Reserves its async slot. */
static ws_err bus_send_admit(ws_bus *bus, const bus_waiter *w)
{
    if (atomic_load(&bus->closing)) {
        return WS_ECLOSED;
    }
    if (!atomic_load(&bus->connected)) {
        return WS_EUNAVAIL;
    }
    if (w->cb != NULL) {
        if (bus->n_async >= bus->max_inflight) {
            return WS_EBUSY;
        }
        bus->n_async++;
    }
    bus->sending++;
    return WS_OK;
}

/* Hand payload to libmosquitto at QoS 1 (without mu) and register w under
 * its message id (send_mu held throughout, so a PUBACK that comes first
 * waits for the registration; see the top of the file). */
static ws_err bus_send(ws_bus *bus, const char *topic, const void *payload, size_t len,
                       const mosquitto_property *props, bus_waiter *w)
{
    if (len > (size_t)INT32_MAX) {
        return WS_ETOOBIG;
    }
    pthread_mutex_lock(&bus->send_mu);
    pthread_mutex_lock(&bus->mu);
    ws_err err = bus_send_admit(bus, w);
    ws_counter *published = err == WS_OK ? bus_published_counter(bus, topic) : NULL;
    pthread_mutex_unlock(&bus->mu);
    if (err != WS_OK) {
        pthread_mutex_unlock(&bus->send_mu);
        return err;
    }
    int mid = 0;
    int rc =
        mosquitto_publish_v5(bus->mosq, &mid, topic, (int)len, payload, 1, false, props);
    err = ws__bus_err_from_mosq(rc);
    pthread_mutex_lock(&bus->mu);
    bus->sending--;
    if (err == WS_OK && atomic_load(&bus->closing)) {
        err = WS_ECLOSED; /* the close's sweep may be past: do not link */
    }
    if (err == WS_OK) {
        w->mid = mid;
        w->next = *bus_bucket(bus, mid);
        *bus_bucket(bus, mid) = w;
        bus->n_sync += w->cb == NULL;
    } else if (w->cb != NULL) {
        bus->n_async--;
    }
    pthread_mutex_unlock(&bus->mu);
    pthread_mutex_unlock(&bus->send_mu);
    if (rc == MOSQ_ERR_SUCCESS) {
        ws_counter_inc(published);
    }
    return err;
}

/* Wait for w's PUBACK until ts (w registered by bus_send). */
static ws_err bus_wait_acked(ws_bus *bus, bus_waiter *w, const struct timespec *ts)
{
    ws_err err;
    pthread_mutex_lock(&bus->mu);
    while (!w->done) {
        if (pthread_cond_timedwait(&w->cond, &bus->mu, ts) == ETIMEDOUT) {
            break;
        }
    }
    if (w->done) {
        err = w->result;
    } else {
        bus_waiter_unlink(bus, w);
        err = WS_ETIMEDOUT;
    }
    bus->n_sync--;
    if (atomic_load(&bus->closing)) {
        pthread_cond_broadcast(&bus->cond); /* close waits for n_sync == 0 */
    }
    pthread_mutex_unlock(&bus->mu);
    return err;
}

static ws_err bus_publish_wait(ws_bus *bus, const char *topic, const void *payload,
                               size_t len, bool json, int64_t created_ms,
                               uint32_t deadline_ms)
{
    if (bus->thread_started && pthread_equal(pthread_self(), bus->thread)) {
        return WS_EINVAL; /* the PUBACK would wait for this very thread */
    }
    struct timespec ts = ws_clock_mono_after(deadline_ms);
    mosquitto_property *props = NULL;
    ws_err err = bus_publish_props(json, created_ms, &props);
    if (err != WS_OK) {
        return err;
    }
    bus_waiter w = {.mid = -1};
    if (ws_clock_cond_init(&w.cond) != 0) {
        mosquitto_property_free_all(&props);
        return WS_ENOMEM;
    }
    err = bus_send(bus, topic, payload, len, props, &w);
    mosquitto_property_free_all(&props);
    if (err == WS_OK) {
        err = bus_wait_acked(bus, &w, &ts);
    }
    pthread_cond_destroy(&w.cond);
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

ws_err ws_bus_publish_async_at(ws_bus *bus, const char *topic,
                               const ProtobufCMessage *msg, int64_t created_ms,
                               ws_bus_publish_cb cb, void *ctx)
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
        if (err == WS_OK) {
            err = bus_send(bus, topic, payload, len, props, w);
            mosquitto_property_free_all(&props);
        }
        free(payload);
    }
    if (err != WS_OK) {
        free(w);
    }
    return err;
}

/* Take every waiter out (mu held): sync ones are marked closed and woken,
 * async ones returned as a list. */
static bus_waiter *bus_waiters_fail_locked(ws_bus *bus)
{
    bus_waiter *async = NULL;
    for (size_t b = 0; b < BUS_WAITER_BUCKETS; b++) {
        while (bus->waiters[b] != NULL) {
            bus_waiter *w = bus->waiters[b];
            bus->waiters[b] = w->next;
            if (w->cb != NULL) {
                w->next = async;
                async = w;
            } else {
                w->done = true;
                w->result = WS_ECLOSED;
                pthread_cond_signal(&w->cond);
            }
        }
    }
    bus->n_async = 0;
    return async;
}

void ws__bus_publish_fini(ws_bus *bus)
{
    /* send_mu first: no publisher is inside libmosquitto after this, and
     * any later one sees closing and links nothing. */
    pthread_mutex_lock(&bus->send_mu);
    pthread_mutex_lock(&bus->mu);
    bus_waiter *async = bus_waiters_fail_locked(bus);
    while (bus->n_sync > 0) { /* their waiters live on their stacks */
        pthread_cond_wait(&bus->cond, &bus->mu);
    }
    pthread_mutex_unlock(&bus->mu);
    pthread_mutex_unlock(&bus->send_mu);
    while (async != NULL) {
        bus_waiter *w = async;
        async = w->next;
        w->cb(w->ctx, WS_ECLOSED);
        free(w);
    }
    while (bus->topics != NULL) {
        bus_topic_counter *t = bus->topics;
        bus->topics = t->next;
        free(t->topic);
        free(t);
    }
}
