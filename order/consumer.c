/*
 * Bus handlers of the order service. Each decodes nothing itself (the bus
 * hands a decoded message of the subscribed type), applies the event, and
 * writes one log line: order_event with what changed, order_event_invalid
 * for a message that fails validation (dropped), or order_event_failed for
 * a database error. A database error is returned to the bus, whose retry policy
 * (ws_bus_set_retry) keeps the event and stops consuming until a retry
 * commits: a full disk or a read-only file loses no event. The failure is
 * logged on the first attempt only; the bus logs the hold.
 *
 * Group commit: the bus opens a group around what arrived back to back
 * (ws_bus_set_batch). The bus network thread then holds one connection of
 * the pool from the group's begin to its end (ws_db_group_begin/_end):
 * each event's transaction is a savepoint of one transaction, and the
 * relay is told once, after the group commits. Outside a group each event
 * takes a connection for its own transaction and gives it back.
 *
 * Inside a group the status events are owed, not queued at once
 * (orders_policy.defer_status): the group keeps the last status of each
 * order it touched and queues those just before it commits, so an order
 * whose OrderSent and outcome meet in one group publishes its final status
 * only (counted in webshop_order_statuses_coalesced_total). The front's
 * wait for the commit takes any status of the order, so it still gets its
 * answer, after the same commit. When that queue fails, the group is
 * rolled back (released uncommitted) and its end fails: the bus hands its
 * events to their handlers again, one by one outside a group, where each
 * queues its own status.
 *
 * Outcomes before their order (replicas: a share group). The broker hands
 * an order's OrderSent to one replica and the inventory's outcome, a few
 * milliseconds later, to whichever it picks; when that is another replica
 * and the first has not committed the order yet, the outcome would create
 * the row itself, due for an outcome check (a GetReservation RPC), and its
 * INSERT would wait on, or deadlock with, the first replica's. Measured:
 * about 4 % of orders with two replicas. So an outcome whose order is not
 * recorded yet (a read that takes no lock) goes to the outcome park
 * (outcome_park.h), which hands it back after OUTCOME_PARK_MS to be applied
 * as it comes, in its own transaction.
 */
#include "consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fault.h"
#include "log.h"
#include "outcome_park.h"
#include "uuid_text.h"

typedef enum consumer_kind {
    KIND_SENT,
    KIND_CANCEL,
    KIND_IN,
    KIND_OUT,
    KIND__N
} consumer_kind;

static const char *const consumer_topics[KIND__N] = {
    WEBSHOP_V1_ORDER_SENT_TOPIC, WEBSHOP_V1_CANCEL_ORDER_TOPIC, WEBSHOP_V1_IN_STOCK_TOPIC,
    WEBSHOP_V1_OUT_OF_STOCK_TOPIC};

typedef struct consumer_sub {
    order_consumer *c;
    consumer_kind kind;
    ws_counter *ok, *duplicate, *invalid, *failed;
    ws_counter *checks; /* outcomes that marked the order for a check */
} consumer_sub;

/* Orders whose status one group may owe at once; past that the owed ones
 * are queued at once, inside the group. */
#define CONSUMER_OWED_MAX 128
struct order_consumer {
    order_consumer_opts opts; /* db not owned */
    consumer_sub subs[KIND__N];
    ws_db_conn *group; /* held while a group is open (bus network thread) */
    bool kick_owed;    /* rows were queued inside the open group */
    orders_owed *owed; /* [CONSUMER_OWED_MAX]: the open group's owed statuses
                          (bus network thread) */
    size_t n_owed;
    ws_counter *coalesced; /* statuses replaced by a later one in a group */
    outcome_park *park;    /* outcomes before their order (replicas) */
};

/* Queue the owed statuses on conn, the group's connection. */
static ws_err consumer_owed_queue(order_consumer *c, ws_db_conn *conn)
{
    unsigned queued = 0;
    ws_err err = orders_queue_owed(conn, c->owed, c->n_owed, &queued);
    if (err == WS_OK) {
        c->n_owed = 0;
        c->kick_owed = c->kick_owed || queued > 0;
    }
    return err;
}

/* Note o as owed: it replaces an earlier status of the same order. */
static ws_err consumer_owed_add(order_consumer *c, const orders_owed *o)
{
    for (size_t i = 0; i < c->n_owed; i++) {
        if (strcmp(c->owed[i].id, o->id) == 0) {
            c->owed[i] = *o;
            ws_counter_inc(c->coalesced);
            return WS_OK;
        }
    }
    if (c->n_owed == CONSUMER_OWED_MAX) {
        ws_err err = consumer_owed_queue(c, c->group);
        if (err != WS_OK) {
            return err;
        }
    }
    c->owed[c->n_owed++] = *o;
    return WS_OK;
}

static ws_err consumer_group_begin(void *ctx)
{
    order_consumer *c = ctx;
    c->kick_owed = false;
    c->n_owed = 0;
    ws_db_conn *conn = NULL;
    ws_err err = ws_db_acquire(c->opts.db, &conn);
    if (err == WS_OK && (err = ws_db_group_begin(conn)) != WS_OK) {
        ws_db_release(conn);
    }
    if (err == WS_OK) {
        c->group = conn;
    }
    return err;
}

static ws_err consumer_group_end(void *ctx)
{
    order_consumer *c = ctx;
    ws_db_conn *conn = c->group;
    c->group = NULL;
    if (conn == NULL) {
        return WS_EINVAL;
    }
    ws_err err = consumer_owed_queue(c, conn);
    c->n_owed = 0;
    if (err != WS_OK) {
        ws_db_release(conn); /* rolls the group back */
        c->kick_owed = false;
        return err;
    }
    err = ws_db_group_end(conn);
    ws_db_release(conn);
    if (err == WS_OK && c->kick_owed && c->opts.queued != NULL) {
        c->opts.queued(c->opts.queued_ctx);
    }
    c->kick_owed = false;
    return err;
}

/* Apply msg, of the subscription's kind, on conn. */
static ws_err consumer_apply(consumer_sub *sub, ws_db_conn *conn, bool in_group,
                             const ProtobufCMessage *msg, orders_effect *eff,
                             const char **id)
{
    orders_policy pol = sub->c->opts.policy;
    pol.defer_status = in_group;
    const orders_policy *p = &pol;
    int64_t now = ws_clock_wall_ms();
    switch (sub->kind) {
    case KIND_SENT:
        *id = ((const Webshop__V1__OrderSent *)msg)->order_id;
        return orders_apply_sent(conn, p, (const Webshop__V1__OrderSent *)msg, now, eff);
    case KIND_CANCEL:
        *id = ((const Webshop__V1__CancelOrder *)msg)->order_id;
        return orders_apply_cancel(conn, p, (const Webshop__V1__CancelOrder *)msg, now,
                                   eff);
    case KIND_IN:
        *id = ((const Webshop__V1__InStock *)msg)->order_id;
        return orders_apply_in_stock(conn, p, (const Webshop__V1__InStock *)msg, now,
                                     eff);
    default:
        *id = ((const Webshop__V1__OutOfStock *)msg)->order_id;
        return orders_apply_out_of_stock(conn, p, (const Webshop__V1__OutOfStock *)msg,
                                         now, eff);
    }
}

/* Fault point crash_before_status_commit: die holding an inventory
 * outcome (InStock, OutOfStock) that libmosquitto has acknowledged, before
 * the status it sets commits. Inside a group that is after the apply (its
 * savepoint is released, the group's transaction is not committed);
 * outside one, before the apply (its own transaction would commit at once). */
static void consumer_fault_before_commit(const consumer_sub *sub, const ws_db_conn *group,
                                         bool applied)
{
    if ((sub->kind != KIND_IN && sub->kind != KIND_OUT) ||
        !WS_FAULT_POINT("crash_before_status_commit") || applied != (group != NULL)) {
        return;
    }
    ws_log_warn("fault_point_hit", "name=crash_before_status_commit topic=%s group=%d",
                consumer_topics[sub->kind], group != NULL);
    ws_fault_crash("crash_before_status_commit");
}

static bool consumer_park_try(consumer_sub *sub, ws_db_conn *group,
                              const ProtobufCMessage *msg, const ws_bus_msg_info *info);

/* Handle msg on the group's connection (group non-NULL: the bus network
 * thread inside a group) or on one of its own; may_park: an outcome whose
 * order is not recorded yet may be parked. */
static ws_err consumer_handle_on(consumer_sub *sub, ws_db_conn *group,
                                 const ProtobufCMessage *msg, const ws_bus_msg_info *info,
                                 bool may_park)
{
    order_consumer *c = sub->c;
    orders_effect eff = {0};
    const char *id = NULL;
    if (may_park && consumer_park_try(sub, group, msg, info)) {
        return WS_OK;
    }
    ws_db_conn *conn = group;
    consumer_fault_before_commit(sub, group, false);
    ws_err err = conn != NULL ? WS_OK : ws_db_acquire(c->opts.db, &conn);
    if (err == WS_OK) {
        err = consumer_apply(sub, conn, group != NULL, msg, &eff, &id);
        if (group == NULL) {
            ws_db_release(conn);
        } else if (err == WS_OK && eff.owes &&
                   (err = consumer_owed_add(c, &eff.owed)) != WS_OK) {
            /* Its status cannot be owed: roll the group back (its end
             * fails, the bus replays the group outside one). */
            ws_db_release(conn);
            c->group = group = NULL;
        }
    }
    if (err == WS_OK) {
        consumer_fault_before_commit(sub, group, true);
    }
    if (err == WS_EINVAL) {
        ws_counter_inc(sub->invalid);
        ws_log_warn("order_event_invalid", "topic=%s order_id=%s field=%s json=%d",
                    info->topic, id != NULL ? id : "",
                    eff.invalid != NULL ? eff.invalid : "?", info->json);
        return err;
    }
    if (err != WS_OK) {
        if (info->attempt == 0) {
            ws_counter_inc(sub->failed);
            ws_log_error("order_event_failed", "topic=%s order_id=%s error=%s held=%d",
                         info->topic, id != NULL ? id : "", ws_errname(err),
                         ws_bus_err_transient(err));
        }
        return err;
    }
    bool changed = eff.created || eff.items_filled || eff.revealed ||
                   eff.old_status != eff.new_status;
    ws_counter_inc(changed ? sub->ok : sub->duplicate);
    if (eff.check) {
        ws_counter_inc(sub->checks); /* NULL (ignored) but for outcomes */
    }
    char norm[WS_UUID_TEXT_LEN];
    ws_log_info("order_event",
                "topic=%s order_id=%s from=%s to=%s created=%d tombstone=%d revealed=%d "
                "items_filled=%d conflict=%d check=%d queued=%u json=%d redelivered=%d",
                info->topic, ws_uuid_normalize(id, norm) ? norm : id,
                eff.created ? "NONE" : orders_status_name(eff.old_status),
                orders_status_name(eff.new_status), eff.created, eff.tombstone,
                eff.revealed, eff.items_filled, eff.conflict, eff.check, eff.queued,
                info->json, info->redelivered);
    if (eff.queued > 0 && c->opts.queued != NULL) {
        if (group != NULL) {
            c->kick_owed = true;
        } else {
            c->opts.queued(c->opts.queued_ctx);
        }
    }
    return WS_OK;
}

static ws_err consumer_handle(void *ctx, const ProtobufCMessage *msg,
                              const ws_bus_msg_info *info)
{
    consumer_sub *sub = ctx;
    return consumer_handle_on(sub, sub->c->group, msg, info, info->attempt == 0);
}

/* ---- the park ----------------------------------------------------------- */

/* Park msg (an outcome of the bus's first attempt) when its order is not
 * recorded and the park has room: true when parked (logged, counted). */
static bool consumer_park_try(consumer_sub *sub, ws_db_conn *group,
                              const ProtobufCMessage *msg, const ws_bus_msg_info *info)
{
    order_consumer *c = sub->c;
    if (!outcome_park_running(c->park) || (sub->kind != KIND_IN && sub->kind != KIND_OUT)) {
        return false;
    }
    const char *id = sub->kind == KIND_IN
                         ? ((const Webshop__V1__InStock *)msg)->order_id
                         : ((const Webshop__V1__OutOfStock *)msg)->order_id;
    const char *reason =
        sub->kind == KIND_OUT ? ((const Webshop__V1__OutOfStock *)msg)->reason : NULL;
    outcome_parked e = {.in_stock = sub->kind == KIND_IN, .json = info->json};
    if (!ws_uuid_normalize(id, e.id)) {
        return false; /* refused by the apply, as it comes */
    }
    snprintf(e.reason, sizeof e.reason, "%s", reason != NULL ? reason : "");
    const ws_trace *tr = ws_trace_current();
    if (tr != NULL) {
        e.trace = *tr;
    } else {
        ws_trace_new(&e.trace);
    }
    ws_db_conn *conn = group;
    bool known = true;
    if ((conn != NULL || ws_db_acquire(c->opts.db, &conn) == WS_OK) &&
        orders_known(conn, e.id, &known) != WS_OK) {
        known = true; /* cannot tell: as it comes */
    }
    if (conn != group) {
        ws_db_release(conn);
    }
    if (known || !outcome_park_put(c->park, &e)) {
        return false;
    }
    ws_log_debug("order_outcome_parked", "topic=%s order_id=%s wait_ms=%d",
                 consumer_topics[sub->kind], e.id, OUTCOME_PARK_MS);
    return true;
}

/* The park's apply: the outcome as it comes, in its own transaction. */
static ws_err consumer_park_apply(void *ctx, const outcome_parked *e)
{
    order_consumer *c = ctx;
    consumer_kind kind = e->in_stock ? KIND_IN : KIND_OUT;
    Webshop__V1__InStock in = WEBSHOP__V1__IN_STOCK__INIT;
    Webshop__V1__OutOfStock out = WEBSHOP__V1__OUT_OF_STOCK__INIT;
    char id[WS_UUID_TEXT_LEN], reason[ORDERS_MAX_REASON + 1];
    memcpy(id, e->id, sizeof id);
    memcpy(reason, e->reason, sizeof reason);
    in.order_id = out.order_id = id;
    out.reason = reason;
    const ProtobufCMessage *msg = e->in_stock ? &in.base : &out.base;
    ws_bus_msg_info info = {.topic = consumer_topics[kind], .json = e->json};
    return consumer_handle_on(&c->subs[kind], NULL, msg, &info, false);
}

ws_err order_consumer_open(const order_consumer_opts *opts, order_consumer **out)
{
    if (opts == NULL || opts->db == NULL) {
        return WS_EINVAL;
    }
    order_consumer *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return WS_ENOMEM;
    }
    c->opts = *opts;
    c->owed = malloc(CONSUMER_OWED_MAX * sizeof *c->owed);
    ws_metrics *m = opts->metrics != NULL ? opts->metrics : ws_metrics_default();
    ws_err err = c->owed != NULL ? outcome_park_open(m, consumer_park_apply, c, &c->park)
                                 : WS_ENOMEM;
    if (err != WS_OK) {
        free(c->owed);
        free(c);
        return err;
    }
    c->coalesced = ws_counter_get(
        m, "webshop_order_statuses_coalesced_total",
        "Status events not published because a later status of the same order "
        "was committed in the same group",
        NULL);
    static const char *const help =
        "Events the order service handled, by topic and result";
    for (int k = 0; k < KIND__N; k++) {
        consumer_sub *s = &c->subs[k];
        char labels[160];
        s->c = c;
        s->kind = (consumer_kind)k;
        snprintf(labels, sizeof labels, "topic=\"%s\",result=\"applied\"",
                 consumer_topics[k]);
        s->ok = ws_counter_get(m, "webshop_order_events_total", help, labels);
        snprintf(labels, sizeof labels, "topic=\"%s\",result=\"duplicate\"",
                 consumer_topics[k]);
        s->duplicate = ws_counter_get(m, "webshop_order_events_total", help, labels);
        snprintf(labels, sizeof labels, "topic=\"%s\",result=\"invalid\"",
                 consumer_topics[k]);
        s->invalid = ws_counter_get(m, "webshop_order_events_total", help, labels);
        snprintf(labels, sizeof labels, "topic=\"%s\",result=\"failed\"",
                 consumer_topics[k]);
        s->failed = ws_counter_get(m, "webshop_order_events_total", help, labels);
        if (k == KIND_IN || k == KIND_OUT) {
            snprintf(labels, sizeof labels, "topic=\"%s\"", consumer_topics[k]);
            s->checks = ws_counter_get(
                m, "webshop_order_outcome_checks_due_total",
                "Outcomes applied to an order due for an outcome check (a conflicting "
                "outcome, or one before the order's items)",
                labels);
        }
    }
    /* Logs fault_point_armed at start when WEBSHOP_FAULT arms it. */
    (void)WS_FAULT_POINT("crash_before_status_commit");
    *out = c;
    return WS_OK;
}

ws_err order_consumer_subscribe(order_consumer *c, ws_bus *bus, const char *share_group)
{
    static const ProtobufCMessageDescriptor *const descs[KIND__N] = {
        &webshop__v1__order_sent__descriptor, &webshop__v1__cancel_order__descriptor,
        &webshop__v1__in_stock__descriptor, &webshop__v1__out_of_stock__descriptor};
    ws_bus_batch batch = {
        .begin = consumer_group_begin, .end = consumer_group_end, .ctx = c};
    ws_bus_retry retry = {.retryable = ws_bus_err_transient};
    ws_err err = ws_bus_set_batch(bus, &batch);
    if (err == WS_OK) {
        err = ws_bus_set_retry(bus, &retry);
    }
    if (err != WS_OK) {
        return err;
    }
    if (share_group != NULL && share_group[0] != '\0') {
        outcome_park_start(c->park);
    }
    for (int k = 0; k < KIND__N; k++) {
        err = ws_bus_subscribe_shared(bus, share_group, consumer_topics[k], descs[k],
                                      consumer_handle, &c->subs[k]);
        if (err != WS_OK) {
            return err;
        }
    }
    return WS_OK;
}

void order_consumer_close(order_consumer *c)
{
    if (c == NULL) {
        return;
    }
    outcome_park_close(c->park);
    free(c->owed);
    free(c);
}
