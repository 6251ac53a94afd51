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
 */
#include "consumer.h"

#include <stdio.h>
#include <stdlib.h>

#include "clock.h"
#include "fault.h"
#include "log.h"
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

struct order_consumer {
    order_consumer_opts opts; /* db not owned */
    consumer_sub subs[KIND__N];
    ws_db_conn *group; /* held while a group is open (bus network thread) */
    bool kick_owed;    /* rows were queued inside the open group */
};

static ws_err consumer_group_begin(void *ctx)
{
    order_consumer *c = ctx;
    c->kick_owed = false;
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
    ws_err err = ws_db_group_end(conn);
    ws_db_release(conn);
    if (err == WS_OK && c->kick_owed && c->opts.queued != NULL) {
        c->opts.queued(c->opts.queued_ctx);
    }
    c->kick_owed = false;
    return err;
}

/* Apply msg, of the subscription's kind, on conn. */
static ws_err consumer_apply(consumer_sub *sub, ws_db_conn *conn,
                             const ProtobufCMessage *msg, orders_effect *eff,
                             const char **id)
{
    const orders_policy *p = &sub->c->opts.policy;
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
static void consumer_fault_before_commit(const consumer_sub *sub, bool applied)
{
    if ((sub->kind != KIND_IN && sub->kind != KIND_OUT) ||
        !WS_FAULT_POINT("crash_before_status_commit") ||
        applied != (sub->c->group != NULL)) {
        return;
    }
    ws_log_warn("fault_point_hit", "name=crash_before_status_commit topic=%s group=%d",
                consumer_topics[sub->kind], sub->c->group != NULL);
    ws_fault_crash("crash_before_status_commit");
}

static ws_err consumer_handle(void *ctx, const ProtobufCMessage *msg,
                              const ws_bus_msg_info *info)
{
    consumer_sub *sub = ctx;
    order_consumer *c = sub->c;
    orders_effect eff = {0};
    const char *id = NULL;
    ws_db_conn *conn = c->group;
    consumer_fault_before_commit(sub, false);
    ws_err err = conn != NULL ? WS_OK : ws_db_acquire(c->opts.db, &conn);
    if (err == WS_OK) {
        err = consumer_apply(sub, conn, msg, &eff, &id);
        if (conn != c->group) {
            ws_db_release(conn);
        }
    }
    if (err == WS_OK) {
        consumer_fault_before_commit(sub, true);
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
        if (c->group != NULL) {
            c->kick_owed = true;
        } else {
            c->opts.queued(c->opts.queued_ctx);
        }
    }
    return WS_OK;
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
    ws_metrics *m = opts->metrics != NULL ? opts->metrics : ws_metrics_default();
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
    free(c);
}
