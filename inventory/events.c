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
};

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
    ev->group = NULL;
    if (c == NULL) {
        return WS_OK; /* no group was opened */
    }
    ws_err err = ws_db_group_end(c);
    ws_db_release(c);
    if (err == WS_OK && ev->kick_owed) {
        ws_outbox_relay_kick(ev->relay);
    }
    ev->kick_owed = false;
    return err;
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
    ws_err err = events_conn_take(ev, &c);
    bool decided = false; /* out says what happened (WS_EINVAL: a bad id) */
    if (err == WS_OK) {
        err = inv_stock_order_sent(c, o, &out);
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
    ws_err err = events_conn_take(ev, &conn);
    if (err == WS_OK) {
        err = inv_stock_order_canceled(conn, c, &out);
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
