/*
 * Applying events to orders and reading them back, on SQLite through
 * ws_store. Each event runs in one ws_store_txn: read the row, decide with
 * the precedence rules of orders.h, write the row and its items, and queue
 * the resulting events in the outbox, all or nothing. The transaction
 * function may run more than once (busy retry), so it keeps its findings in
 * the context and resets them at every start.
 */
#include "orders.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* An order row as a transaction finds it. */
typedef struct orders_row {
    int status;
    bool confirmed; /* the inventory confirmed the cancel */
    bool tombstone;
    bool check_due;
    int check_attempts;
    bool has_items;
    int64_t created_ms;
} orders_row;

/* Step a statement that returns no row. */
static ws_err orders_step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        sqlite3_reset(st);
        ws_err err = ws_err_from_sqlite(rc);
        return err == WS_OK ? WS_ESTORE : err;
    }
    return WS_OK;
}

/* Step a statement with RETURNING: *hit true when it returned a row. */
static ws_err orders_step_hit(sqlite3_stmt *st, bool *hit)
{
    int rc = sqlite3_step(st);
    *hit = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW) {
        rc = sqlite3_step(st); /* one row at most: runs the statement to its end */
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ws_err err = ws_err_from_sqlite(rc);
        return err == WS_OK ? WS_ESTORE : err;
    }
    return WS_OK;
}

/* Run "UPDATE ... WHERE id = ?1" with ?2 = now_ms when the SQL uses it. */
static ws_err orders_row_exec(ws_store *s, const orders_txn *t, const char *sql)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s, sql, &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    if (sqlite3_bind_parameter_count(st) >= 2) {
        sqlite3_bind_int64(st, 2, t->now_ms);
    }
    return orders_step_done(st);
}

/* Read the row of id into *row: WS_OK, WS_ENOTFOUND, or a store error. */
static ws_err orders_row_read(ws_store *s, const char *id, orders_row *row)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "SELECT status, cancel_confirmed, tombstone, check_due_ms IS NOT NULL,"
        " check_attempts, created_ms,"
        " EXISTS (SELECT 1 FROM order_items WHERE order_id = ?1)"
        " FROM orders WHERE id = ?1",
        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        row->status = sqlite3_column_int(st, 0);
        row->confirmed = sqlite3_column_int(st, 1) != 0;
        row->tombstone = sqlite3_column_int(st, 2) != 0;
        row->check_due = sqlite3_column_int(st, 3) != 0;
        row->check_attempts = sqlite3_column_int(st, 4);
        row->created_ms = sqlite3_column_int64(st, 5);
        row->has_items = sqlite3_column_int(st, 6) != 0;
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        return WS_ENOTFOUND;
    }
    return rc == SQLITE_ROW ? WS_OK : ws_err_from_sqlite(rc);
}

static ws_err orders_queue_status(ws_store *s, orders_txn *t, int status,
                                  const char *reason, size_t reason_len)
{
    char rbuf[ORDERS_MAX_REASON + 1];
    memcpy(rbuf, reason, reason_len);
    rbuf[reason_len] = '\0';
    Webshop__V1__OrderStatusChanged m = WEBSHOP__V1__ORDER_STATUS_CHANGED__INIT;
    m.order_id = (char *)t->id;
    m.status = (order_status)status;
    m.reason = rbuf;
    ws_err err = ws_outbox_put(s, WEBSHOP_V1_ORDER_STATUS_CHANGED_TOPIC, &m.base);
    if (err == WS_OK) {
        t->eff.queued++;
    }
    return err;
}

static ws_err orders_queue_canceled(ws_store *s, orders_txn *t)
{
    Webshop__V1__OrderCanceled m = WEBSHOP__V1__ORDER_CANCELED__INIT;
    m.order_id = (char *)t->id;
    ws_err err = ws_outbox_put(s, WEBSHOP_V1_ORDER_CANCELED_TOPIC, &m.base);
    if (err == WS_OK) {
        t->eff.queued++;
    }
    return err;
}

static ws_err orders_items_insert(ws_store *s, orders_txn *t)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "INSERT INTO order_items(order_id, line, inventory_id, "
                               "count) VALUES (?1, ?2, ?3, ?4)",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    for (size_t i = 0; i < t->sent->n_items; i++) {
        sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
        sqlite3_bind_int(st, 3, t->sent->items[i]->inventory_id);
        sqlite3_bind_int(st, 4, t->sent->items[i]->count);
        if ((err = orders_step_done(st)) != WS_OK) {
            return err;
        }
        sqlite3_reset(st);
    }
    t->eff.items_filled = true;
    return WS_OK;
}

/* Compare the stored items with the event's: *same true if equal. *empty
 * true if none are stored. */
static ws_err orders_items_compare(ws_store *s, orders_txn *t, bool *empty, bool *same)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "SELECT inventory_id, count FROM order_items WHERE order_id = ?1 ORDER BY line",
        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    size_t n = 0;
    bool eq = true;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n >= t->sent->n_items ||
            sqlite3_column_int(st, 0) != t->sent->items[n]->inventory_id ||
            sqlite3_column_int(st, 1) != t->sent->items[n]->count) {
            eq = false;
        }
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        return ws_err_from_sqlite(rc);
    }
    *empty = n == 0;
    *same = eq && n == t->sent->n_items;
    return WS_OK;
}

/* Store the items of t->sent in a row that has none: the lines, then the
 * bookkeeping of a late OrderSent (no items to ask the inventory for any
 * more; a PENDING order without a re-send deadline, one created by an
 * outcome, gets its first, since now it has an OrderSent to re-send). */
static ws_err orders_items_fill(ws_store *s, orders_txn *t)
{
    ws_err err = orders_items_insert(s, t);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_stmt *st;
    err =
        ws_store_stmt(s,
                      "UPDATE orders SET updated_ms = ?2, items_due_ms = NULL,"
                      " next_resend_ms = CASE WHEN status = ?3 AND next_resend_ms IS NULL"
                      " THEN ?4 ELSE next_resend_ms END WHERE id = ?1",
                      &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, t->now_ms);
    sqlite3_bind_int(st, 3, ST_PENDING);
    sqlite3_bind_int64(st, 4, t->now_ms + orders_policy_delay(t->p, 0));
    return orders_step_done(st);
}

/* The deadline of the first recovery step for an order entering status. */
static void orders_bind_due(sqlite3_stmt *st, int idx, const orders_txn *t, int status)
{
    if (status == ST_PENDING || status == ST_CANCELED) {
        sqlite3_bind_int64(st, idx, t->now_ms + orders_policy_delay(t->p, 0));
    } else {
        sqlite3_bind_null(st, idx);
    }
}

/* The first event for an id creates its row. An OrderSent: a PENDING order
 * with its items, due for a re-send. An outcome: a PENDING order without
 * items, due for an outcome check at once (the check brings the items too).
 * A cancel: a tombstone, due for a cancel check and an items check, which
 * queues OrderCanceled but no status (it is not an order). */
static ws_err orders_txn_insert(ws_store *s, orders_txn *t)
{
    bool cancel = t->ev_status == ST_CANCELED;
    bool outcome = !cancel && t->sent == NULL;
    int status = cancel ? ST_CANCELED : ST_PENDING;
    int64_t first = t->now_ms + orders_policy_delay(t->p, 0);
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "INSERT INTO orders(id, status, reason, created_ms, updated_ms, next_resend_ms,"
        " items_due_ms, check_due_ms, tombstone) VALUES (?1, ?2, '', ?3, ?3, ?4, ?5, ?6, "
        "?7)",
        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, status);
    sqlite3_bind_int64(st, 3, t->now_ms);
    outcome ? sqlite3_bind_null(st, 4) : sqlite3_bind_int64(st, 4, first);
    cancel ? sqlite3_bind_int64(st, 5, first) : sqlite3_bind_null(st, 5);
    outcome ? sqlite3_bind_int64(st, 6, t->now_ms) : sqlite3_bind_null(st, 6);
    sqlite3_bind_int(st, 7, cancel);
    if ((err = orders_step_done(st)) != WS_OK) {
        return err;
    }
    t->eff.created = true;
    t->eff.tombstone = cancel;
    t->eff.check = outcome;
    t->eff.new_status = status;
    if (t->sent != NULL && (err = orders_items_insert(s, t)) != WS_OK) {
        return err;
    }
    if (cancel) {
        return orders_queue_canceled(s, t);
    }
    return orders_queue_status(s, t, status, "", 0);
}

/* Move the order to t->ev_status (a higher rank than it has) and queue the
 * status, plus OrderCanceled when it becomes CANCELED. */
static ws_err orders_txn_raise(ws_store *s, orders_txn *t)
{
    sqlite3_stmt *st;
    ws_err err =
        ws_store_stmt(s,
                      "UPDATE orders SET status = ?2, reason = ?3, updated_ms = ?4,"
                      " next_resend_ms = ?5 WHERE id = ?1",
                      &st);
    if (err != WS_OK) {
        return err;
    }
    size_t rlen = t->ev_status == ST_UNSUCCESSFUL ? t->reason_len : 0;
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, t->ev_status);
    sqlite3_bind_text(st, 3, t->reason, (int)rlen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, t->now_ms);
    orders_bind_due(st, 5, t, t->ev_status);
    if ((err = orders_step_done(st)) != WS_OK) {
        return err;
    }
    t->eff.new_status = t->ev_status;
    if ((err = orders_queue_status(s, t, t->ev_status, t->reason, rlen)) != WS_OK) {
        return err;
    }
    if (t->ev_status == ST_CANCELED) {
        return orders_queue_canceled(s, t);
    }
    return WS_OK;
}

/* Mark the order for an outcome check at once, unless one is already due. */
static ws_err orders_check_arm(ws_store *s, orders_txn *t)
{
    t->eff.check = true;
    return orders_row_exec(s, t,
                           "UPDATE orders SET check_due_ms = ?2, check_attempts = 0"
                           " WHERE id = ?1 AND check_due_ms IS NULL");
}

/* An outcome for an existing order (see the file comment of orders.h). */
static ws_err orders_txn_outcome(ws_store *s, orders_txn *t, const orders_row *row)
{
    int rank_ev = webshop_v1_order_status_rank(t->ev_status);
    int rank_cur = webshop_v1_order_status_rank(row->status);
    if (rank_ev < rank_cur) {
        return WS_OK; /* CANCELED is never left */
    }
    if (rank_ev > rank_cur) {
        /* PENDING. Items known: the normal flow, the outcome of our
         * OrderSent. Unknown: only the inventory's record can say. */
        return row->has_items ? orders_txn_raise(s, t) : orders_check_arm(s, t);
    }
    if (row->status == t->ev_status) {
        return WS_OK; /* a duplicate */
    }
    t->eff.conflict = true; /* the other outcome: the record decides */
    return orders_check_arm(s, t);
}

static ws_err orders_txn_run(ws_store *s, void *ctx)
{
    orders_txn *t = ctx;
    memset(&t->eff, 0, sizeof t->eff);
    bool outcome = t->ev_status == ST_SUCCESSFUL || t->ev_status == ST_UNSUCCESSFUL;
    orders_row row;
    ws_err err = orders_row_read(s, t->id, &row);
    if (err == WS_ENOTFOUND) {
        if (outcome) {
            orders_progress_note(t->p->progress, t->now_ms, t->now_ms);
        }
        return orders_txn_insert(s, t);
    }
    if (err != WS_OK) {
        return err;
    }
    if (outcome) {
        orders_progress_note(t->p->progress, row.created_ms, t->now_ms);
    }
    t->eff.old_status = t->eff.new_status = row.status;
    t->eff.tombstone = row.tombstone;
    t->eff.check = row.check_due;

    if (t->sent != NULL) {
        bool empty = false, same = true;
        if ((err = orders_items_compare(s, t, &empty, &same)) != WS_OK) {
            return err;
        }
        if (empty) {
            if ((err = orders_items_fill(s, t)) != WS_OK) {
                return err;
            }
            row.has_items = true;
        } else if (!same) {
            t->eff.conflict = true;
        }
    }
    if (row.tombstone && t->ev_status != ST_CANCELED) {
        /* Its OrderSent or an outcome came: the tombstone is an order now. */
        if ((err = orders_row_exec(s, t,
                                   "UPDATE orders SET tombstone = 0, updated_ms = ?2"
                                   " WHERE id = ?1")) != WS_OK ||
            (err = orders_queue_status(s, t, row.status, "", 0)) != WS_OK) {
            return err;
        }
        t->eff.tombstone = false;
        t->eff.revealed = true;
    }
    if (t->ev_status == ST_CANCELED) {
        if (webshop_v1_order_status_rank(t->ev_status) > webshop_v1_order_status_rank(row.status)) {
            return orders_txn_raise(s, t);
        }
        return row.confirmed ? WS_OK : orders_queue_canceled(s, t);
    }
    return outcome ? orders_txn_outcome(s, t, &row) : WS_OK;
}

static ws_err orders_apply(ws_store *s, orders_txn *t, orders_effect *out)
{
    ws_err err = ws_store_txn(s, orders_txn_run, t);
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

ws_err orders_apply_sent(ws_store *s, const orders_policy *p,
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
    return orders_apply(s, &t, out);
}

ws_err orders_apply_in_stock(ws_store *s, const orders_policy *p,
                             const Webshop__V1__InStock *ev, int64_t now_ms,
                             orders_effect *out)
{
    char id[WS_UUID_TEXT_LEN];
    if (!ws_uuid_normalize(ev->order_id, id)) {
        return orders_invalid(out, "order_id");
    }
    orders_txn t = {
        .p = p, .id = id, .ev_status = ST_SUCCESSFUL, .reason = "", .now_ms = now_ms};
    return orders_apply(s, &t, out);
}

ws_err orders_apply_out_of_stock(ws_store *s, const orders_policy *p,
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
    return orders_apply(s, &t, out);
}

ws_err orders_apply_cancel(ws_store *s, const orders_policy *p,
                           const Webshop__V1__CancelOrder *ev, int64_t now_ms,
                           orders_effect *out)
{
    char id[WS_UUID_TEXT_LEN];
    if (!ws_uuid_normalize(ev->order_id, id)) {
        return orders_invalid(out, "order_id");
    }
    orders_txn t = {
        .p = p, .id = id, .ev_status = ST_CANCELED, .reason = "", .now_ms = now_ms};
    return orders_apply(s, &t, out);
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
static ws_err orders_check_rearm(ws_store *s, orders_txn *t, const orders_row *row)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "UPDATE orders SET check_attempts = check_attempts + 1,"
        " check_due_ms = CASE WHEN check_attempts + 1 >= ?3 THEN NULL ELSE ?2 END"
        " WHERE id = ?1 AND check_due_ms IS NOT NULL RETURNING check_attempts",
        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, t->now_ms + orders_policy_delay(t->p, row->check_attempts));
    sqlite3_bind_int(st, 3, t->p->max_attempts);
    int rc = sqlite3_step(st);
    bool dropped = rc == SQLITE_ROW && sqlite3_column_int(st, 0) >= t->p->max_attempts;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return ws_err_from_sqlite(rc);
    }
    t->eff.check = !dropped;
    t->eff.settled = dropped;
    return WS_OK;
}

/* Take the record's status (rank-guarded: never out of CANCELED) and clear
 * the check; queue the status if it changed (a new reason counts). */
static ws_err orders_settle_move(ws_store *s, orders_txn *t, int target)
{
    size_t rlen = target == ST_UNSUCCESSFUL ? t->reason_len : 0;
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "UPDATE orders SET status = ?2, reason = ?3, updated_ms = ?4,"
        " next_resend_ms = NULL, check_due_ms = NULL WHERE id = ?1 AND status <> ?5"
        " AND NOT (status = ?2 AND reason = ?3) RETURNING 1",
        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, target);
    sqlite3_bind_text(st, 3, t->reason, (int)rlen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, t->now_ms);
    sqlite3_bind_int(st, 5, ST_CANCELED);
    bool moved;
    if ((err = orders_step_hit(st, &moved)) != WS_OK) {
        return err;
    }
    t->eff.settled = true;
    if (!moved) {
        return orders_row_exec(s, t,
                               "UPDATE orders SET check_due_ms = NULL WHERE id = ?1");
    }
    t->eff.new_status = target;
    return orders_queue_status(s, t, target, t->reason, rlen);
}

static ws_err orders_settle_run(ws_store *s, void *ctx)
{
    orders_txn *t = ctx;
    memset(&t->eff, 0, sizeof t->eff);
    orders_row row;
    ws_err err = orders_row_read(s, t->id, &row);
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
        return orders_check_rearm(s, t, &row);
    }
    if (!row.has_items && t->sent != NULL && (err = orders_items_fill(s, t)) != WS_OK) {
        return err;
    }
    t->reason = reason;
    t->reason_len = orders_reason_len(reason, ORDERS_MAX_REASON);
    return orders_settle_move(s, t, target);
}

ws_err orders_settle(ws_store *s, const orders_policy *p, const char *id,
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
    ws_err err = ws_store_txn(s, orders_settle_run, &t);
    if (err == WS_OK && out != NULL) {
        *out = t.eff;
    }
    return err;
}

/* ---- queries ------------------------------------------------------------ */

#define ORDERS_COLUMNS "id, status, reason, created_ms, updated_ms, attempts"

static char *orders_column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    return strdup(v != NULL ? (const char *)v : "");
}

static ws_err orders_items_load(ws_store *s, Webshop__V1__Order *o)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "SELECT inventory_id, count FROM order_items WHERE order_id = ?1 ORDER BY line",
        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
    int rc;
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (o->n_items == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            Webshop__V1__OrderItem **ni = realloc(o->items, ncap * sizeof *ni);
            if (ni == NULL) {
                sqlite3_reset(st);
                return WS_ENOMEM;
            }
            o->items = ni;
            cap = ncap;
        }
        Webshop__V1__OrderItem *it = malloc(sizeof *it);
        if (it == NULL) {
            sqlite3_reset(st);
            return WS_ENOMEM;
        }
        webshop__v1__order_item__init(it);
        it->inventory_id = sqlite3_column_int(st, 0);
        it->count = sqlite3_column_int(st, 1);
        o->items[o->n_items++] = it;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? WS_OK : ws_err_from_sqlite(rc);
}

/* Build an Order from the current row of st (ORDERS_COLUMNS) and its items. */
static ws_err orders_row_load(sqlite3_stmt *st, Webshop__V1__Order **out)
{
    Webshop__V1__Order *o = malloc(sizeof *o);
    if (o == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__order__init(o);
    o->id = orders_column_dup(st, 0);
    o->reason = orders_column_dup(st, 2);
    if (o->id == NULL || o->reason == NULL) {
        protobuf_c_message_free_unpacked(&o->base, NULL);
        return WS_ENOMEM;
    }
    o->status = (order_status)sqlite3_column_int(st, 1);
    o->created_ms = sqlite3_column_int64(st, 3);
    o->updated_ms = sqlite3_column_int64(st, 4);
    o->attempts = sqlite3_column_int(st, 5);
    *out = o;
    return WS_OK;
}

ws_err orders_get(ws_store *s, const char *id_in, Webshop__V1__Order **out)
{
    char id[WS_UUID_TEXT_LEN];
    if (!ws_uuid_normalize(id_in, id)) {
        return WS_EINVAL;
    }
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s, "SELECT " ORDERS_COLUMNS " FROM orders WHERE id = ?1 AND tombstone = 0", &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? WS_ENOTFOUND : ws_err_from_sqlite(rc);
    }
    Webshop__V1__Order *o;
    err = orders_row_load(st, &o);
    sqlite3_reset(st);
    if (err != WS_OK) {
        return err;
    }
    if ((err = orders_items_load(s, o)) != WS_OK) {
        protobuf_c_message_free_unpacked(&o->base, NULL);
        return err;
    }
    *out = o;
    return WS_OK;
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

ws_err orders_list(ws_store *s, int32_t page_size, const char *page_token,
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

    sqlite3_stmt *st;
    ws_err err = first ? ws_store_stmt(s,
                                       "SELECT " ORDERS_COLUMNS " FROM orders"
                                       " WHERE tombstone = 0"
                                       " ORDER BY created_ms DESC, id DESC LIMIT ?3",
                                       &st)
                       : ws_store_stmt(s,
                                       "SELECT " ORDERS_COLUMNS " FROM orders"
                                       " WHERE (created_ms, id) < (?1, ?2)"
                                       " AND tombstone = 0"
                                       " ORDER BY created_ms DESC, id DESC LIMIT ?3",
                                       &st);
    if (err != WS_OK) {
        return err;
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
    if (!first) {
        sqlite3_bind_int64(st, 1, after_ms);
        sqlite3_bind_text(st, 2, after_id, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 3,
                       (sqlite3_int64)limit + 1); /* one more: is there a next page? */
    int rc;
    bool more = false;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (r->n_orders == limit) {
            more = true;
            break;
        }
        if ((err = orders_row_load(st, &r->orders[r->n_orders])) != WS_OK) {
            break;
        }
        r->n_orders++;
    }
    sqlite3_reset(st);
    if (err == WS_OK && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        err = ws_err_from_sqlite(rc);
    }
    for (size_t i = 0; err == WS_OK && i < r->n_orders; i++) {
        err = orders_items_load(s, r->orders[i]);
    }
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
