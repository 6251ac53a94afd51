/*
 * Applying events to orders and reading them back, through the ports of
 * order_db.h (no SQL here). Each event runs in one transaction on the
 * caller's connection: insert the row if this is the first event for the
 * id, else read it, decide with the precedence rules of orders.h, make
 * each move with one conditional port (re-reading and deciding again when
 * another writer was first), and queue the resulting events in the outbox,
 * all or nothing. The transaction function may run more than once (busy
 * retry), so it keeps its findings in the context and resets them at every
 * start.
 */
#include "orders.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "order_db.h"
#include "outbox.h"
#include "uuid_text.h"

typedef Webshop__V1__OrderStatus order_status;

#define ST_PENDING      WEBSHOP__V1__ORDER_STATUS__PENDING
#define ST_SUCCESSFUL   WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL
#define ST_UNSUCCESSFUL WEBSHOP__V1__ORDER_STATUS__UNSUCCESSFUL
#define ST_CANCELED     WEBSHOP__V1__ORDER_STATUS__CANCELED

orders_policy orders_policy_default(void)
{
    orders_policy p = {
        .resend_after_ms = 5000, .backoff_cap_ms = 60000, .max_attempts = 20};
    return p;
}

int64_t orders_policy_delay(const orders_policy *p, int done)
{
    int64_t d = p->resend_after_ms > 0 ? p->resend_after_ms : 1;
    int64_t cap = p->backoff_cap_ms > d ? p->backoff_cap_ms : d;
    for (int i = 0; i < done && d < cap; i++) {
        d *= 2;
    }
    return d < cap ? d : cap;
}

const char *orders_status_name(int status)
{
    const char *name = webshop_v1_order_status_name(status);
    return name != NULL ? name : "UNSPECIFIED";
}

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t orders_reason_len(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max) {
        return n;
    }
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
        n--;
    }
    return n;
}

/* ---- outcome progress --------------------------------------------------- */

static void orders_progress_max(_Atomic int64_t *v, int64_t x)
{
    int64_t cur = atomic_load_explicit(v, memory_order_relaxed);
    while (x > cur && !atomic_compare_exchange_weak_explicit(
                          v, &cur, x, memory_order_relaxed, memory_order_relaxed)) {
    }
}

static void orders_progress_note(orders_progress *p, int64_t created_ms, int64_t now_ms)
{
    if (p != NULL) {
        orders_progress_max(&p->outcome_created_ms, created_ms);
        orders_progress_max(&p->outcome_seen_ms, now_ms);
    }
}

void orders_progress_read(orders_progress *p, int64_t *outcome_created_ms,
                          int64_t *outcome_seen_ms)
{
    if (p == NULL) {
        *outcome_created_ms = *outcome_seen_ms = 0;
        return;
    }
    *outcome_created_ms =
        atomic_load_explicit(&p->outcome_created_ms, memory_order_relaxed);
    *outcome_seen_ms = atomic_load_explicit(&p->outcome_seen_ms, memory_order_relaxed);
}

/* ---- applying events ---------------------------------------------------- */

typedef struct orders_txn {
    const orders_policy *p;
    const char *id; /* lower case (ws_uuid_normalize) */
    int ev_status;  /* the status the event brings */
    const char *reason;
    size_t reason_len;
    const Webshop__V1__OrderSent *sent; /* items: of an OrderSent, or of a record */
    const Webshop__V1__GetReservationResponse *rec; /* orders_settle only */
    int64_t now_ms;
    orders_effect eff; /* reset at every run */
} orders_txn;

/* The deadline of the first recovery step after now. */
static int64_t orders_first_due(const orders_txn *t)
{
    return t->now_ms + orders_policy_delay(t->p, 0);
}

static ws_err orders_put_status(ws_db_conn *c, const char *id, int status,
                                const char *reason)
{
    Webshop__V1__OrderStatusChanged m = WEBSHOP__V1__ORDER_STATUS_CHANGED__INIT;
    m.order_id = (char *)id;
    m.status = (order_status)status;
    m.reason = (char *)reason;
    return ws_outbox_put(c, WEBSHOP_V1_ORDER_STATUS_CHANGED_TOPIC, &m.base);
}

/* Queue the status (or, with defer_status, note it as owed: a later one in
 * the same event replaces it, ranks only go up). */
static ws_err orders_queue_status(ws_db_conn *c, orders_txn *t, int status,
                                  const char *reason, size_t reason_len)
{
    char rbuf[ORDERS_MAX_REASON + 1];
    memcpy(rbuf, reason, reason_len);
    rbuf[reason_len] = '\0';
    if (t->p->defer_status) {
        orders_owed *o = &t->eff.owed;
        snprintf(o->id, sizeof o->id, "%s", t->id);
        o->status = status;
        memcpy(o->reason, rbuf, reason_len + 1);
        ws_trace_save(&o->trace);
        t->eff.owes = true;
        return WS_OK;
    }
    ws_err err = orders_put_status(c, t->id, status, rbuf);
    if (err == WS_OK) {
        t->eff.queued++;
    }
    return err;
}

typedef struct orders_owed_txn {
    const orders_owed *owed;
    size_t n;
    unsigned queued; /* rewritten on every attempt */
} orders_owed_txn;

static ws_err orders_owed_run(ws_db_conn *c, void *ctx)
{
    orders_owed_txn *x = ctx;
    x->queued = 0;
    ws_trace_saved saved;
    ws_trace_save(&saved);
    ws_err err = WS_OK;
    for (size_t i = 0; i < x->n && err == WS_OK; i++) {
        const orders_owed *o = &x->owed[i];
        ws_trace_restore(&o->trace);
        err = orders_put_status(c, o->id, o->status, o->reason);
        x->queued += err == WS_OK;
    }
    ws_trace_restore(&saved);
    return err;
}

ws_err orders_queue_owed(ws_db_conn *c, const orders_owed *owed, size_t n,
                         unsigned *queued)
{
    if (c == NULL || (owed == NULL && n > 0) || queued == NULL) {
        return WS_EINVAL;
    }
    orders_owed_txn x = {.owed = owed, .n = n};
    ws_err err = n > 0 ? ws_db_conn_txn(c, NULL, orders_owed_run, &x) : WS_OK;
    if (err == WS_OK) {
        *queued = x.queued;
    }
    return err;
}

static ws_err orders_queue_canceled(ws_db_conn *c, orders_txn *t)
{
    Webshop__V1__OrderCanceled m = WEBSHOP__V1__ORDER_CANCELED__INIT;
    m.order_id = (char *)t->id;
    ws_err err = ws_outbox_put(c, WEBSHOP_V1_ORDER_CANCELED_TOPIC, &m.base);
    if (err == WS_OK) {
        t->eff.queued++;
    }
    return err;
}

/* Read the row again after a conditional write changed nothing (someone
 * else was first). A row gone meanwhile (an expired tombstone) makes the
 * whole event run again. */
static ws_err orders_reread(ws_db_conn *c, orders_txn *t, order_db_row *row)
{
    ws_err err = order_db_read(c, t->id, row);
    if (err == WS_ENOTFOUND) {
        return WS_EBUSY;
    }
    if (err == WS_OK) {
        t->eff.old_status = t->eff.new_status = row->status;
        t->eff.check = row->check_due;
    }
    return err;
}

/* The lines of t->sent for an order that has none: stored when this event
 * is the first to claim them (with the bookkeeping of a late OrderSent: no
 * items check any more; a PENDING order created by an outcome gets its
 * first re-send deadline). Lines already stored are kept; with compare,
 * other lines than the event's are a conflict. */
static ws_err orders_items_take(ws_db_conn *c, orders_txn *t, order_db_row *row,
                                bool compare)
{
    bool claimed = false, same = true;
    ws_err err = order_db_items_claim(c, t->id, t->now_ms, orders_first_due(t), &claimed);
    if (err == WS_OK && claimed) {
        err = order_db_items_put(c, t->id, t->sent->n_items, t->sent->items);
        t->eff.items_filled = err == WS_OK;
    } else if (err == WS_OK && compare) {
        err = order_db_items_same(c, t->id, t->sent->n_items, t->sent->items, &same);
        t->eff.conflict = t->eff.conflict || !same;
    }
    if (err == WS_OK) {
        row->has_items = true;
    }
    return err;
}

/* The first event for an id creates its row (*created), unless another one
 * was first. An OrderSent: a PENDING order with its items, due for a
 * re-send. An outcome: a PENDING order without items, due for an outcome
 * check at once (the check brings the items too). A cancel: a tombstone,
 * due for a cancel check and an items check, which queues OrderCanceled
 * but no status (it is not an order). */
static ws_err orders_txn_insert(ws_db_conn *c, orders_txn *t, bool *created)
{
    bool cancel = t->ev_status == ST_CANCELED;
    bool outcome = !cancel && t->sent == NULL;
    int64_t first = orders_first_due(t);
    order_db_new o = {.id = t->id,
                      .status = cancel ? ST_CANCELED : ST_PENDING,
                      .tombstone = cancel,
                      .has_items = t->sent != NULL,
                      .now_ms = t->now_ms,
                      .next_resend_ms = outcome ? -1 : first,
                      .items_due_ms = cancel ? first : -1,
                      .check_due_ms = outcome ? t->now_ms : -1};
    ws_err err = order_db_insert(c, &o, created);
    if (err != WS_OK || !*created) {
        return err;
    }
    t->eff.created = true;
    t->eff.tombstone = cancel;
    t->eff.check = outcome;
    t->eff.new_status = o.status;
    if (t->sent != NULL) {
        err = order_db_items_put(c, t->id, t->sent->n_items, t->sent->items);
        if (err != WS_OK) {
            return err;
        }
        t->eff.items_filled = true;
    }
    if (cancel) {
        return orders_queue_canceled(c, t);
    }
    return orders_queue_status(c, t, o.status, "", 0);
}

/* Move the order up to t->ev_status (rank-guarded in the statement) and
 * queue the status, plus OrderCanceled when it becomes CANCELED. *moved
 * false: the order already ranks as high (or has no lines, with
 * need_items): nothing written, nothing queued. */
static ws_err orders_txn_raise(ws_db_conn *c, orders_txn *t, bool need_items, bool *moved)
{
    int st = t->ev_status;
    size_t rlen = st == ST_UNSUCCESSFUL ? t->reason_len : 0;
    order_db_move m = {.id = t->id,
                       .status = st,
                       .reason = t->reason,
                       .reason_len = rlen,
                       .now_ms = t->now_ms,
                       .next_resend_ms = st == ST_PENDING || st == ST_CANCELED
                                             ? orders_first_due(t)
                                             : -1,
                       .need_items = need_items};
    ws_err err = order_db_status_raise(c, &m, moved);
    if (err != WS_OK || !*moved) {
        return err;
    }
    t->eff.new_status = st;
    if ((err = orders_queue_status(c, t, st, t->reason, rlen)) != WS_OK) {
        return err;
    }
    return st == ST_CANCELED ? orders_queue_canceled(c, t) : WS_OK;
}

/* Its OrderSent or an outcome came: a tombstone is an order now. */
static ws_err orders_txn_reveal(ws_db_conn *c, orders_txn *t)
{
    bool revealed = false;
    int status = 0;
    ws_err err = order_db_reveal(c, t->id, t->now_ms, &revealed, &status);
    if (err != WS_OK || !revealed) {
        return err;
    }
    t->eff.tombstone = false;
    t->eff.revealed = true;
    return orders_queue_status(c, t, status, "", 0);
}

/* Mark the order for an outcome check at once, unless one is already due. */
static ws_err orders_check_arm(ws_db_conn *c, orders_txn *t)
{
    t->eff.check = true;
    return order_db_check_arm(c, t->id, t->now_ms);
}

/* A CancelOrder for an existing order: CANCELED from any status; already
 * CANCELED (a duplicate, or a cancel applied a moment ago by another
 * writer), OrderCanceled is queued again while the inventory has not
 * confirmed. */
static ws_err orders_txn_cancel(ws_db_conn *c, orders_txn *t, order_db_row *row)
{
    bool moved = false;
    ws_err err = orders_txn_raise(c, t, false, &moved);
    if (err != WS_OK || moved) {
        return err;
    }
    if (row->status != ST_CANCELED && (err = orders_reread(c, t, row)) != WS_OK) {
        return err;
    }
    return row->confirmed ? WS_OK : orders_queue_canceled(c, t);
}

/* An outcome for an existing order (see the file comment of orders.h),
 * decided on row and re-decided on a fresh read when the move finds that
 * another writer was first. Ranks only go up, so this ends in a few
 * rounds. */
static ws_err orders_txn_outcome(ws_db_conn *c, orders_txn *t, order_db_row *row)
{
    int rank_ev = webshop_v1_order_status_rank(t->ev_status);
    for (int round = 0; round < 4; round++) {
        int rank_cur = webshop_v1_order_status_rank(row->status);
        if (rank_ev < rank_cur) {
            return WS_OK; /* CANCELED is never left */
        }
        if (rank_ev == rank_cur) {
            if (row->status == t->ev_status) {
                return WS_OK; /* a duplicate */
            }
            t->eff.conflict = true; /* the other outcome: the record decides */
            return orders_check_arm(c, t);
        }
        /* PENDING. Items known: the normal flow, the outcome of our
         * OrderSent. Unknown: only the inventory's record can say. */
        if (!row->has_items) {
            return orders_check_arm(c, t);
        }
        bool moved = false;
        ws_err err = orders_txn_raise(c, t, true, &moved);
        if (err != WS_OK || moved) {
            return err;
        }
        if ((err = orders_reread(c, t, row)) != WS_OK) {
            return err;
        }
    }
    return WS_EBUSY;
}

static ws_err orders_txn_run(ws_db_conn *c, void *ctx)
{
    orders_txn *t = ctx;
    memset(&t->eff, 0, sizeof t->eff);
    bool outcome = t->ev_status == ST_SUCCESSFUL || t->ev_status == ST_UNSUCCESSFUL;
    bool created = false;
    ws_err err = orders_txn_insert(c, t, &created);
    if (err != WS_OK || created) {
        if (err == WS_OK && outcome) {
            orders_progress_note(t->p->progress, t->now_ms, t->now_ms);
        }
        return err;
    }
    order_db_row row;
    if ((err = orders_reread(c, t, &row)) != WS_OK) {
        return err;
    }
    if (outcome) {
        orders_progress_note(t->p->progress, row.created_ms, t->now_ms);
    }
    t->eff.tombstone = row.tombstone;
    if (t->sent != NULL && (err = orders_items_take(c, t, &row, true)) != WS_OK) {
        return err;
    }
    if (row.tombstone && t->ev_status != ST_CANCELED &&
        (err = orders_txn_reveal(c, t)) != WS_OK) {
        return err;
    }
    if (t->ev_status == ST_CANCELED) {
        return orders_txn_cancel(c, t, &row);
    }
    return outcome ? orders_txn_outcome(c, t, &row) : WS_OK;
}

static ws_err orders_apply(ws_db_conn *c, orders_txn *t, orders_effect *out)
{
    ws_err err = ws_db_conn_txn(c, NULL, orders_txn_run, t);
    if (err == WS_OK && out != NULL) {
        *out = t->eff;
    }
    return err;
}

static ws_err orders_invalid(orders_effect *out, const char *what)
{
    if (out != NULL) {
        memset(out, 0, sizeof *out);
        out->invalid = what;
    }
    return WS_EINVAL;
}

/* NULL when items[0..n) are a valid list of order lines, else the field. */
static const char *orders_items_check(size_t n, Webshop__V1__OrderItem *const *items)
{
    if (n == 0 || n > WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS) {
        return "items";
    }
    for (size_t i = 0; i < n; i++) {
        if (items[i] == NULL || items[i]->inventory_id <= 0) {
            return "items.inventory_id";
        }
        if (items[i]->count <= 0 || items[i]->count > WEBSHOP_V1_ORDER_ITEM_COUNT_MAX) {
            return "items.count";
        }
    }
    return NULL;
}

ws_err orders_apply_sent(ws_db_conn *c, const orders_policy *p,
                         const Webshop__V1__OrderSent *ev, int64_t now_ms,
                         orders_effect *out)
{
    char id[WS_UUID_TEXT_LEN];
    if (!ws_uuid_normalize(ev->order_id, id)) {
        return orders_invalid(out, "order_id");
    }
    const char *bad = orders_items_check(ev->n_items, ev->items);
    if (bad != NULL) {
        return orders_invalid(out, bad);
    }
    orders_txn t = {.p = p,
                    .id = id,
                    .ev_status = ST_PENDING,
                    .reason = "",
                    .sent = ev,
                    .now_ms = now_ms};
    return orders_apply(c, &t, out);
}

ws_err orders_apply_in_stock(ws_db_conn *c, const orders_policy *p,
                             const Webshop__V1__InStock *ev, int64_t now_ms,
                             orders_effect *out)
{
    char id[WS_UUID_TEXT_LEN];
    if (!ws_uuid_normalize(ev->order_id, id)) {
        return orders_invalid(out, "order_id");
    }
    orders_txn t = {
        .p = p, .id = id, .ev_status = ST_SUCCESSFUL, .reason = "", .now_ms = now_ms};
    return orders_apply(c, &t, out);
}

ws_err orders_apply_out_of_stock(ws_db_conn *c, const orders_policy *p,
                                 const Webshop__V1__OutOfStock *ev, int64_t now_ms,
                                 orders_effect *out)
{
    char id[WS_UUID_TEXT_LEN];
    if (!ws_uuid_normalize(ev->order_id, id)) {
        return orders_invalid(out, "order_id");
    }
    const char *reason = ev->reason != NULL ? ev->reason : "";
    orders_txn t = {.p = p,
                    .id = id,
                    .ev_status = ST_UNSUCCESSFUL,
                    .reason = reason,
                    .reason_len = orders_reason_len(reason, ORDERS_MAX_REASON),
                    .now_ms = now_ms};
    return orders_apply(c, &t, out);
}

ws_err orders_apply_cancel(ws_db_conn *c, const orders_policy *p,
                           const Webshop__V1__CancelOrder *ev, int64_t now_ms,
                           orders_effect *out)
{
    char id[WS_UUID_TEXT_LEN];
    if (!ws_uuid_normalize(ev->order_id, id)) {
        return orders_invalid(out, "order_id");
    }
    orders_txn t = {
        .p = p, .id = id, .ev_status = ST_CANCELED, .reason = "", .now_ms = now_ms};
    return orders_apply(c, &t, out);
}

typedef struct orders_known_txn {
    const char *id;
    bool known;
} orders_known_txn;

static ws_err orders_known_run(ws_db_conn *c, void *ctx)
{
    orders_known_txn *x = ctx;
    order_db_row row;
    ws_err err = order_db_read(c, x->id, &row);
    x->known = err == WS_OK;
    return err == WS_ENOTFOUND ? WS_OK : err;
}

ws_err orders_known(ws_db_conn *c, const char *id_in, bool *known)
{
    char id[WS_UUID_TEXT_LEN];
    if (c == NULL || known == NULL || !ws_uuid_normalize(id_in, id)) {
        return WS_EINVAL;
    }
    orders_known_txn x = {.id = id};
    ws_err err = ws_db_conn_txn(c, NULL, orders_known_run, &x);
    if (err == WS_OK) {
        *known = x.known;
    }
    return err;
}

/* ---- settling an outcome check ------------------------------------------ */

/* The status the inventory's record stands for, and its reason: false for
 * a record that decides nothing (RESERVATION_UNKNOWN, or a value this build
 * does not know). */
static bool orders_record_target(const Webshop__V1__GetReservationResponse *rec,
                                 int *status, const char **reason)
{
    switch (rec->status) {
    case WEBSHOP__V1__RESERVATION_STATUS__RESERVED:
        *status = ST_SUCCESSFUL;
        *reason = "";
        return true;
    case WEBSHOP__V1__RESERVATION_STATUS__REJECTED:
        *status = ST_UNSUCCESSFUL;
        *reason = rec->reason != NULL && rec->reason[0] != '\0' ? rec->reason
                                                                : ORDERS_REASON_REJECTED;
        return true;
    case WEBSHOP__V1__RESERVATION_STATUS__RELEASED:
    case WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED:
        /* A release not caused by a cancel (an orphan) says why. */
        *status = ST_UNSUCCESSFUL;
        *reason = rec->reason != NULL && rec->reason[0] != '\0' ? rec->reason
                                                                : ORDERS_REASON_RELEASED;
        return true;
    default:
        return false;
    }
}

/* Nothing decided: ask again after the policy's backoff, or drop the check
 * after max_attempts. */
static ws_err orders_check_rearm(ws_db_conn *c, orders_txn *t, const order_db_row *row)
{
    bool found = false, dropped = false;
    ws_err err = order_db_check_rearm(
        c, t->id, t->now_ms + orders_policy_delay(t->p, row->check_attempts),
        t->p->max_attempts, &found, &dropped);
    if (err != WS_OK) {
        return err;
    }
    t->eff.check = !dropped;
    t->eff.settled = dropped;
    return WS_OK;
}

/* Take the record's status (rank-guarded: never out of CANCELED) and clear
 * the check; queue the status if it changed (a new reason counts). */
static ws_err orders_settle_move(ws_db_conn *c, orders_txn *t, int target)
{
    size_t rlen = target == ST_UNSUCCESSFUL ? t->reason_len : 0;
    order_db_move m = {.id = t->id,
                       .status = target,
                       .reason = t->reason,
                       .reason_len = rlen,
                       .now_ms = t->now_ms,
                       .next_resend_ms = -1};
    bool moved = false;
    ws_err err = order_db_status_settle(c, &m, &moved);
    if (err != WS_OK) {
        return err;
    }
    t->eff.settled = true;
    if (!moved) {
        return order_db_check_clear(c, t->id);
    }
    t->eff.new_status = target;
    return orders_queue_status(c, t, target, t->reason, rlen);
}

static ws_err orders_settle_run(ws_db_conn *c, void *ctx)
{
    orders_txn *t = ctx;
    memset(&t->eff, 0, sizeof t->eff);
    t->reason = "";
    t->reason_len = 0;
    order_db_row row;
    ws_err err = order_db_read(c, t->id, &row);
    if (err == WS_ENOTFOUND) {
        return WS_OK;
    }
    if (err != WS_OK) {
        return err;
    }
    t->eff.old_status = t->eff.new_status = row.status;
    t->eff.tombstone = row.tombstone;
    if (!row.check_due) {
        return WS_OK; /* settled meanwhile */
    }
    int target;
    const char *reason;
    if (!orders_record_target(t->rec, &target, &reason)) {
        return orders_check_rearm(c, t, &row);
    }
    if (!row.has_items && t->sent != NULL &&
        (err = orders_items_take(c, t, &row, false)) != WS_OK) {
        return err;
    }
    t->reason = reason;
    t->reason_len = orders_reason_len(reason, ORDERS_MAX_REASON);
    return orders_settle_move(c, t, target);
}

ws_err orders_settle(ws_db_conn *c, const orders_policy *p, const char *id,
                     const Webshop__V1__GetReservationResponse *rec, int64_t now_ms,
                     orders_effect *out)
{
    char nid[WS_UUID_TEXT_LEN];
    if (rec == NULL || !ws_uuid_normalize(id, nid)) {
        return orders_invalid(out, "order_id");
    }
    /* The record's items, as a late OrderSent would bring them (valid only). */
    Webshop__V1__OrderSent view = WEBSHOP__V1__ORDER_SENT__INIT;
    view.order_id = nid;
    view.n_items = rec->n_items;
    view.items = rec->items;
    bool items_ok = orders_items_check(rec->n_items, rec->items) == NULL;
    orders_txn t = {.p = p,
                    .id = nid,
                    .reason = "",
                    .sent = items_ok ? &view : NULL,
                    .rec = rec,
                    .now_ms = now_ms};
    ws_err err = ws_db_conn_txn(c, NULL, orders_settle_run, &t);
    if (err == WS_OK && out != NULL) {
        *out = t.eff;
    }
    return err;
}

/* ---- queries ------------------------------------------------------------ */

ws_err orders_get(ws_db_conn *c, const char *id_in, Webshop__V1__Order **out)
{
    char id[WS_UUID_TEXT_LEN];
    if (!ws_uuid_normalize(id_in, id)) {
        return WS_EINVAL;
    }
    return order_db_get(c, id, out);
}

static const char orders_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding of src[0..n) into dst (room for 4*ceil(n/3)+1). */
static void orders_b64_encode(const unsigned char *src, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)src[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= src[i + 2];
        }
        dst[o++] = orders_b64[(v >> 18) & 63];
        dst[o++] = orders_b64[(v >> 12) & 63];
        if (i + 1 < n) {
            dst[o++] = orders_b64[(v >> 6) & 63];
        }
        if (i + 2 < n) {
            dst[o++] = orders_b64[v & 63];
        }
    }
    dst[o] = '\0';
}

/* Decode base64url without padding; -1 on a bad character, a bad length or
 * output longer than cap, else the decoded length. */
static long orders_b64_decode(const char *src, unsigned char *dst, size_t cap)
{
    size_t n = strlen(src);
    if (n % 4 == 1) {
        return -1;
    }
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = src[i] != '\0' ? strchr(orders_b64, src[i]) : NULL;
        if (p == NULL) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)(p - orders_b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap) {
                return -1;
            }
            dst[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) {
        return -1; /* non-canonical trailing bits */
    }
    return (long)o;
}

/* Parse a page token into its key (created_ms, id[37], lower case). */
static bool orders_token_parse(const char *token, int64_t *created_ms, char *id)
{
    unsigned char raw[80];
    long n = orders_b64_decode(token, raw, sizeof raw - 1);
    if (n <= 0) {
        return false;
    }
    raw[n] = '\0';
    if (memchr(raw, '\0', (size_t)n) != NULL) {
        return false;
    }
    char *colon = strchr((char *)raw, ':');
    if (colon == NULL || colon == (char *)raw) {
        return false;
    }
    *colon = '\0';
    char *end;
    errno = 0;
    long long v = strtoll((char *)raw, &end, 10);
    if (*end != '\0' || errno != 0 || v < 0) {
        return false;
    }
    /* Ours are lower case; any case means the same key (the id rule). */
    if (!ws_uuid_normalize(colon + 1, id)) {
        return false;
    }
    *created_ms = v;
    return true;
}

static ws_err orders_token_make(const Webshop__V1__Order *o, char **out)
{
    char raw[80];
    int n = snprintf(raw, sizeof raw, "%" PRId64 ":%s", o->created_ms, o->id);
    char *tok = malloc(4 * ((size_t)n / 3 + 1) + 1);
    if (tok == NULL) {
        return WS_ENOMEM;
    }
    orders_b64_encode((const unsigned char *)raw, (size_t)n, tok);
    *out = tok;
    return WS_OK;
}

ws_err orders_list(ws_db_conn *c, int32_t page_size, const char *page_token,
                   Webshop__V1__ListOrdersResponse **out)
{
    if (page_size < 0) {
        return WS_EINVAL;
    }
    size_t limit = page_size == 0                ? ORDERS_PAGE_DEFAULT
                   : page_size > ORDERS_PAGE_MAX ? ORDERS_PAGE_MAX
                                                 : (size_t)page_size;
    int64_t after_ms = 0;
    char after_id[37] = "";
    bool first = page_token == NULL || page_token[0] == '\0';
    if (!first && !orders_token_parse(page_token, &after_ms, after_id)) {
        return WS_EINVAL;
    }
    Webshop__V1__ListOrdersResponse *r = malloc(sizeof *r);
    if (r == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__list_orders_response__init(r);
    r->orders = calloc(limit, sizeof *r->orders);
    if (r->orders == NULL) {
        free(r);
        return WS_ENOMEM;
    }
    bool more = false;
    ws_err err = order_db_list(c, after_ms, first ? NULL : after_id, limit, r->orders,
                               &r->n_orders, &more);
    if (err == WS_OK) {
        err = more ? orders_token_make(r->orders[r->n_orders - 1], &r->next_page_token)
                   : ((r->next_page_token = strdup("")) == NULL ? WS_ENOMEM : WS_OK);
    }
    if (err != WS_OK) {
        protobuf_c_message_free_unpacked(&r->base, NULL);
        return err;
    }
    *out = r;
    return WS_OK;
}
