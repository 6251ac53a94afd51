/*
 * Bus handlers of the inventory (see events.h): decode is done by the bus,
 * the decision by stock.c; this file only calls it, kicks the relay, logs
 * and counts. A handler's failure cannot cause a redelivery (libmosquitto
 * acknowledged the message before the callback), so a database error is
 * returned to the bus, whose retry policy (ws_bus_set_retry) keeps the event
 * and stops consuming until a retry commits; the failure is logged and
 * counted on the first attempt only. An invalid event is dropped.
 *
 * Group commit: the bus opens a group around what arrived back to back
 * (ws_bus_set_batch); the group's begin takes a connection of the pool and
 * opens one transaction on it (ws_db_group_begin), each handler's
 * transaction is then a savepoint of it, and the end commits and gives the
 * connection back; the relay is kicked once, after the group commits
 * (kicking earlier would make it scan before the rows are visible). A
 * handler outside a group (a retry, or after a group failed) takes a
 * connection for its own transaction. The connection is used only on the
 * bus network thread that took it.
 *
 * Inside a group, StockChanged is owed per product, not per event: the
 * handlers note the products whose balance moved, and the group's end
 * queues one StockChanged per product, with the balance the group leaves,
 * just before it commits. When that queue fails, the group is rolled back
 * (released uncommitted) and its end fails: the bus hands its events to
 * their handlers again, one by one outside a group, where each queues its
 * own StockChanged.
 *
 * Lock order across groups (replicas on PostgreSQL): a group's
 * transaction holds every product row it moved until it commits, so two
 * replicas whose groups take the same products in opposite order deadlock
 * until lock_timeout fails one (measured: 142 lock timeouts, each a 20 ms
 * stall and a held event, in a 2-replica bench on 2 products). So with a
 * share group a group takes product rows in ascending id order only: an
 * event whose lowest product is below the highest one the group already
 * holds first commits the group and opens a new one on the same connection
 * (counted as webshop_inventory_group_splits_total); every lock wait is
 * then on a higher id than any lock held, and no cycle can form. A cancel
 * (whose products are known only inside) splits a group that holds any
 * product. If a later end of the same bus group fails, the bus hands every
 * event of it to its handler again, those before the split included: they
 * are duplicates then, handled as such.
 */
#include "events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fault.h"
#include "log.h"
#include "stock.h"

#define EVENTS_METRIC "webshop_inventory_events_total"
/* Products whose StockChanged a group may owe at once; past that the
 * owed ones are queued at once, inside the group. */
#define EVENTS_OWED_MAX 256
#define EVENTS_HELP   "Events handled by the inventory, by event and result"

struct inv_events {
    ws_db *db;                             /* not owned */
    ws_db_conn *group;                     /* held while a group is open (bus
                                              network thread only), else NULL */
    ws_outbox_relay *relay;                /* not owned */
    ws_counter *sent[INV_ORDER_N_ACTIONS]; /* by inv_order_action */
    ws_counter *sent_failed;
    ws_counter *canceled[INV_CANCEL_N_ACTIONS]; /* by inv_cancel_action */
    ws_counter *canceled_failed;
    bool kick_owed; /* rows were queued inside the open group */
    /* The fields below are the bus network thread's. */
    bool ordered_locks;            /* replicas share the database (a share group) */
    int32_t group_top;             /* highest product the group's transaction may hold
                                      locked; 0 when none */
    ws_err split_err;              /* a split's commit failed: the group's end says so */
    int32_t owed[EVENTS_OWED_MAX]; /* StockChanged owed: ascending, distinct */
    size_t n_owed;
    ws_counter *splits;
};

/* Add the products ids[0..n) (ascending, distinct) to the owed set. */
static bool events_owed_add(inv_events *ev, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < ev->n_owed && ev->owed[k] < ids[i]) {
            k++;
        }
        if (k < ev->n_owed && ev->owed[k] == ids[i]) {
            continue;
        }
        if (ev->n_owed == EVENTS_OWED_MAX) {
            return false;
        }
        memmove(ev->owed + k + 1, ev->owed + k, (ev->n_owed - k) * sizeof(ev->owed[0]));
        ev->owed[k] = ids[i];
        ev->n_owed++;
    }
    return true;
}

/* Queue the owed StockChanged on c, inside its open transaction. */
static ws_err events_owed_queue(inv_events *ev, ws_db_conn *c)
{
    if (ev->n_owed == 0) {
        return WS_OK;
    }
    size_t queued = 0;
    ws_err err = inv_stock_changed_queue(c, ev->owed, ev->n_owed, &queued);
    if (err == WS_OK) {
        ev->n_owed = 0;
        ev->kick_owed = ev->kick_owed || queued > 0;
    }
    return err;
}

/* Rows were queued: kick now, or after the group commits. */
static void events_kick(inv_events *ev)
{
    if (ev->group != NULL) {
        ev->kick_owed = true;
    } else {
        ws_outbox_relay_kick(ev->relay);
    }
}

/* Take a connection of the pool and open a group on it. On failure no
 * connection is held and the bus handles the message outside a group. */
static ws_err events_group_begin(void *ctx)
{
    inv_events *ev = ctx;
    ev->kick_owed = false;
    ev->group_top = 0;
    ev->split_err = WS_OK;
    ev->n_owed = 0;
    ws_db_conn *c = NULL;
    ws_err err = ws_db_acquire(ev->db, &c);
    if (err == WS_OK) {
        err = ws_db_group_begin(c);
        if (err != WS_OK) {
            ws_db_release(c);
            c = NULL;
        }
    }
    ev->group = c;
    return err;
}

/* Commit the group and give its connection back. */
static ws_err events_group_end(void *ctx)
{
    inv_events *ev = ctx;
    ws_db_conn *c = ev->group;
    ws_err split_err = ev->split_err;
    ev->group = NULL;
    ev->split_err = WS_OK;
    if (c == NULL) {
        return split_err; /* no group open (none, or a split lost it) */
    }
    ws_err err = events_owed_queue(ev, c);
    if (err != WS_OK) {
        ev->n_owed = 0;
        ws_db_release(c); /* rolls the group back */
        return err;
    }
    err = ws_db_group_end(c);
    ws_db_release(c);
    if (err == WS_OK) {
        err = split_err;
    }
    if (err == WS_OK && ev->kick_owed) {
        ws_outbox_relay_kick(ev->relay);
    }
    ev->kick_owed = false;
    return err;
}

/* Commit the open group and open a new one on its connection (see the file
 * comment). When the commit fails, the end reports it (the bus replays the
 * group); when the new begin fails, the event runs outside a group. */
static void events_group_split(inv_events *ev)
{
    ws_db_conn *c = ev->group;
    ws_counter_inc(ev->splits);
    ws_err err = events_owed_queue(ev, c);
    if (err != WS_OK) {
        ev->n_owed = 0;
        ev->split_err = err;
        ev->group = NULL;
        ws_db_release(c); /* rolls the group back; its end fails */
        return;
    }
    err = ws_db_group_end(c);
    if (err == WS_OK && ev->kick_owed) {
        ws_outbox_relay_kick(ev->relay);
        ev->kick_owed = false;
    }
    if (err != WS_OK) {
        ev->split_err = err;
    }
    ev->group_top = 0;
    if ((err = ws_db_group_begin(c)) != WS_OK) {
        ws_db_release(c);
        ev->group = NULL;
    }
}

/* Before an event that takes product rows from lowest (0: unknown, any):
 * split the group if that would take a row below one it holds. Only with
 * several writers: replicas (a share group) on PostgreSQL; SQLite has one
 * writer at a time, and a service without --replica is the only one. */
static void events_lock_order(inv_events *ev, int32_t lowest)
{
    if (!ev->ordered_locks || ev->group == NULL || ev->group_top == 0 ||
        ws_db_conn_engine(ev->group) != WS_DB_POSTGRES ||
        (lowest != 0 && lowest >= ev->group_top)) {
        return;
    }
    events_group_split(ev);
}

/* After an event inside a group: the products it moved are owed a
 * StockChanged, and the group may hold their rows up to top. */
static ws_err events_moved_note(inv_events *ev, ws_db_conn *c, const int32_t *moved,
                                size_t n, int32_t top)
{
    if (c != ev->group) {
        return WS_OK;
    }
    if (top > ev->group_top) {
        ev->group_top = top;
    }
    if (events_owed_add(ev, moved, n)) {
        return WS_OK;
    }
    ws_err err = events_owed_queue(ev, c);
    if (err == WS_OK && !events_owed_add(ev, moved, n)) {
        err = WS_EINTERNAL; /* more than EVENTS_OWED_MAX products in one event */
    }
    return err;
}

/* The lowest and highest product of o's items (0, 0 when none). */
static void events_sent_span(const Webshop__V1__OrderSent *o, int32_t *lo, int32_t *hi)
{
    *lo = *hi = 0;
    for (size_t i = 0; i < o->n_items; i++) {
        int32_t id = o->items[i] != NULL ? o->items[i]->inventory_id : 0;
        if (id > 0 && (*lo == 0 || id < *lo)) {
            *lo = id;
        }
        if (id > *hi) {
            *hi = id;
        }
    }
}

/* The connection for one event: the group's, or one of its own. */
static ws_err events_conn_take(inv_events *ev, ws_db_conn **c)
{
    if (ev->group != NULL) {
        *c = ev->group;
        return WS_OK;
    }
    return ws_db_acquire(ev->db, c);
}

static void events_conn_give(inv_events *ev, ws_db_conn *c)
{
    if (c != ev->group) {
        ws_db_release(c);
    }
}

/* Metric label and log word of each inv_order_action. A duplicate after a
 * cancel released the order publishes nothing; it has its own result so it
 * can be counted and seen in the log. */
static const char *const events_order_results[INV_ORDER_N_ACTIONS] = {
    [INV_ORDER_RESERVED] = "reserved",
    [INV_ORDER_REJECTED] = "rejected",
    [INV_ORDER_DUPLICATE] = "duplicate",
    [INV_ORDER_TOMBSTONED] = "tombstoned",
    [INV_ORDER_BAD_ID] = "bad_order_id",
    [INV_ORDER_DUPLICATE_CANCELED] = "duplicate_after_cancel",
    [INV_ORDER_DUPLICATE_ORPHAN] = "duplicate_after_orphan_release",
};

static const char *const events_cancel_results[INV_CANCEL_N_ACTIONS] = {
    [INV_CANCEL_RELEASED] = "released",
    [INV_CANCEL_TOMBSTONED] = "tombstoned",
    [INV_CANCEL_NOOP] = "noop",
};

static ws_counter *events_counter(ws_metrics *m, const char *event, const char *result)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "event=\"%s\",result=\"%s\"", event, result);
    return ws_counter_get(m, EVENTS_METRIC, EVENTS_HELP, labels);
}

/* Fault point crash_before_reserve_commit: die holding an OrderSent that
 * libmosquitto has acknowledged, before its reservation commits. Inside a
 * group that is after the decision (its savepoint is released, the group's
 * transaction is not committed); outside one, before the decision (its own
 * transaction would commit at once). */
static void events_fault_before_commit(const inv_events *ev, const char *order_id,
                                       bool decided)
{
    if (!WS_FAULT_POINT("crash_before_reserve_commit") ||
        decided != (ev->group != NULL)) {
        return;
    }
    ws_log_warn("fault_point_hit",
                "name=crash_before_reserve_commit order_id=%s group=%d", order_id,
                ev->group != NULL);
    ws_fault_crash("crash_before_reserve_commit");
}

static ws_err events_order_sent_handle(void *ctx, const ProtobufCMessage *msg,
                                       const ws_bus_msg_info *info)
{
    inv_events *ev = ctx;
    const Webshop__V1__OrderSent *o = (const Webshop__V1__OrderSent *)msg;
    inv_order_outcome out = {0};
    ws_db_conn *c = NULL;
    events_fault_before_commit(ev, o->order_id, false);
    int32_t lo = 0, hi = 0;
    events_sent_span(o, &lo, &hi);
    events_lock_order(ev, lo);
    ws_err err = events_conn_take(ev, &c);
    bool decided = false; /* out says what happened (WS_EINVAL: a bad id) */
    if (err == WS_OK) {
        inv_stock_opts so = {.defer_changed = c == ev->group};
        err = inv_stock_order_sent_with(c, o, &so, &out);
        if (err == WS_OK) {
            err = events_moved_note(ev, c, out.moved, out.n_moved, hi);
        }
        events_conn_give(ev, c);
        decided = err == WS_OK || err == WS_EINVAL;
    }
    if (decided && out.action == INV_ORDER_RESERVED) {
        events_fault_before_commit(ev, o->order_id, true);
    }
    if (!decided) {
        if (info->attempt == 0) {
            ws_counter_inc(ev->sent_failed);
            ws_log_error("order_sent_failed", "order_id=%s error=%s held=%d", o->order_id,
                         ws_errname(err), ws_bus_err_transient(err));
        }
        return err;
    }
    ws_counter_inc(ev->sent[out.action]);
    if (WS_FAULT_POINT("crash_after_reserve_commit") && out.action == INV_ORDER_RESERVED) {
        if (ev->group != NULL) {
            (void)events_group_end(ev); /* the fault is "after the commit" */
        }
        ws_log_warn("fault_point_hit", "name=crash_after_reserve_commit order_id=%s",
                    o->order_id);
        ws_fault_crash("crash_after_reserve_commit");
    }
    events_kick(ev);
    ws_log(err == WS_OK ? WS_LOG_INFO : WS_LOG_WARN, "order_sent",
           "order_id=%s result=%s reason=%s items=%zu queued=%zu json=%d redelivered=%d",
           err == WS_OK ? out.order_id : o->order_id, events_order_results[out.action],
           out.reason, out.n_items, out.n_queued, info->json, info->redelivered);
    return err;
}

static ws_err events_order_canceled_handle(void *ctx, const ProtobufCMessage *msg,
                                           const ws_bus_msg_info *info)
{
    inv_events *ev = ctx;
    const Webshop__V1__OrderCanceled *c = (const Webshop__V1__OrderCanceled *)msg;
    inv_cancel_outcome out;
    ws_db_conn *conn = NULL;
    events_lock_order(ev, 0);
    ws_err err = events_conn_take(ev, &conn);
    if (err == WS_OK) {
        inv_stock_opts so = {.defer_changed = conn == ev->group};
        err = inv_stock_order_canceled_with(conn, c, &so, &out);
        if (err == WS_OK && out.n_moved > 0) {
            err = events_moved_note(ev, conn, out.moved, out.n_moved,
                                    out.moved[out.n_moved - 1]);
        }
        events_conn_give(ev, conn);
    }
    if (err != WS_OK) {
        if (info->attempt == 0) {
            ws_counter_inc(ev->canceled_failed);
            ws_log(err == WS_EINVAL ? WS_LOG_WARN : WS_LOG_ERROR, "order_canceled_failed",
                   "order_id=%s error=%s held=%d", c->order_id, ws_errname(err),
                   ws_bus_err_transient(err));
        }
        return err;
    }
    ws_counter_inc(ev->canceled[out.action]);
    if (out.n_queued > 0) {
        events_kick(ev);
    }
    ws_log_info("order_canceled",
                "order_id=%s result=%s queued=%zu json=%d redelivered=%d", out.order_id,
                events_cancel_results[out.action], out.n_queued, info->json,
                info->redelivered);
    return WS_OK;
}

ws_err inv_events_open(const inv_events_opts *opts, inv_events **out)
{
    if (opts == NULL || opts->db == NULL || out == NULL) {
        return WS_EINVAL;
    }
    inv_events *ev = calloc(1, sizeof(*ev));
    if (ev == NULL) {
        return WS_ENOMEM;
    }
    ws_metrics *m = opts->metrics ? opts->metrics : ws_metrics_default();
    for (int i = 0; i < INV_ORDER_N_ACTIONS; i++) {
        ev->sent[i] = events_counter(m, "order_sent", events_order_results[i]);
    }
    ev->sent_failed = events_counter(m, "order_sent", "failed");
    for (int i = 0; i < INV_CANCEL_N_ACTIONS; i++) {
        ev->canceled[i] = events_counter(m, "order_canceled", events_cancel_results[i]);
    }
    ev->canceled_failed = events_counter(m, "order_canceled", "failed");
    ev->splits = ws_counter_get(m, "webshop_inventory_group_splits_total",
                                "Groups of events committed early so that a group takes "
                                "product rows in ascending id order only",
                                NULL);
    /* Logs fault_point_armed at start when WEBSHOP_FAULT arms it. */
    (void)WS_FAULT_POINT("crash_after_reserve_commit");
    (void)WS_FAULT_POINT("crash_before_reserve_commit");
    ev->db = opts->db;
    ev->relay = opts->relay;
    *out = ev;
    return WS_OK;
}

ws_err inv_events_subscribe(inv_events *ev, ws_bus *bus, const char *share_group)
{
    ws_bus_batch batch = {
        .begin = events_group_begin, .end = events_group_end, .ctx = ev};
    ws_bus_retry retry = {.retryable = ws_bus_err_transient};
    ev->ordered_locks = share_group != NULL && share_group[0] != '\0';
    ws_err err = ws_bus_set_batch(bus, &batch);
    if (err == WS_OK) {
        err = ws_bus_set_retry(bus, &retry);
    }
    if (err != WS_OK) {
        return err;
    }
    err = ws_bus_subscribe_shared(bus, share_group, WEBSHOP_V1_ORDER_SENT_TOPIC,
                                  &webshop__v1__order_sent__descriptor,
                                  events_order_sent_handle, ev);
    if (err != WS_OK) {
        return err;
    }
    return ws_bus_subscribe_shared(bus, share_group, WEBSHOP_V1_ORDER_CANCELED_TOPIC,
                                   &webshop__v1__order_canceled__descriptor,
                                   events_order_canceled_handle, ev);
}

void inv_events_close(inv_events *ev)
{
    if (ev == NULL) {
        return;
    }
    free(ev);
}
