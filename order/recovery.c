/*
 * Recovery passes over the orders table and the thread that runs them. The
 * OrderSent pass reads and writes in one transaction (it touches only the
 * database); the cancel pass asks the inventory first, outside any
 * transaction (an RPC may take up to its deadline and must not hold the
 * write lock), then settles each order in a short transaction that
 * re-checks the row, since a CancelOrder may have been applied meanwhile.
 * The outcome-check pass works the same way (lookup first, then
 * orders_settle in its own transaction), and the tombstone pass is one
 * DELETE.
 */
#include "recovery.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "outbox.h"

typedef struct recovery_due {
    char id[37];
    int attempts;
    bool gave_up;
} recovery_due;

/* ---- PENDING orders: re-send OrderSent ---------------------------------- */

/* With more outbox rows than this waiting, the relay is behind: a re-send
 * would only queue behind them, so the pass waits. */
#define RECOVERY_OUTBOX_BEHIND 1000

typedef struct recovery_resend {
    const orders_policy *p;
    int64_t now_ms;
    size_t limit;
    recovery_due *due; /* limit entries */
    size_t n;          /* reset at every run */
    size_t deferred;   /* due, but the outcome stream has not passed them */
    int64_t backlog;   /* outbox rows waiting when the pass looked */
} recovery_resend;

/* Outbox rows waiting (ids are increasing, so the ends give the span). */
static ws_err recovery_outbox_backlog(ws_store *s, int64_t *n)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "SELECT coalesce((SELECT max(id) FROM outbox) -"
                               " (SELECT min(id) FROM outbox) + 1, 0)",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *n = sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? WS_OK : ws_err_from_sqlite(rc);
}

/* Queue OrderSent for one order, rebuilt from its stored items. */
static ws_err recovery_sent_queue(ws_store *s, const char *id)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "SELECT inventory_id, count FROM order_items WHERE order_id = ?1 ORDER BY line",
        &st);
    if (err != WS_OK) {
        return err;
    }
    Webshop__V1__OrderItem *items = calloc(WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS, sizeof *items);
    Webshop__V1__OrderItem **ptrs = calloc(WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS, sizeof *ptrs);
    if (items == NULL || ptrs == NULL) {
        free(items);
        free(ptrs);
        return WS_ENOMEM;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS) {
        webshop__v1__order_item__init(&items[n]);
        items[n].inventory_id = sqlite3_column_int(st, 0);
        items[n].count = sqlite3_column_int(st, 1);
        ptrs[n] = &items[n];
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        err = ws_err_from_sqlite(rc);
    } else {
        Webshop__V1__OrderSent m = WEBSHOP__V1__ORDER_SENT__INIT;
        m.order_id = (char *)id;
        m.n_items = n;
        m.items = ptrs;
        err = ws_outbox_put(s, WEBSHOP_V1_ORDER_SENT_TOPIC, &m.base);
    }
    free(items);
    free(ptrs);
    return err;
}

/* Run an UPDATE of one order: ?1 its id, ?2 a deadline, or NULL when next
 * is negative. */
static ws_err recovery_row_update(ws_store *s, const char *sql, const char *id,
                                  int64_t next)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s, sql, &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (next >= 0) {
        sqlite3_bind_int64(st, 2, next);
    } else {
        sqlite3_bind_null(st, 2);
    }
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        return WS_OK;
    }
    err = ws_err_from_sqlite(rc);
    return err != WS_OK ? err : WS_ESTORE;
}

static ws_err recovery_resend_run(ws_store *s, void *ctx)
{
    recovery_resend *r = ctx;
    r->n = 0;
    r->deferred = 0;
    r->backlog = 0;
    ws_err err = recovery_outbox_backlog(s, &r->backlog);
    if (err != WS_OK) {
        return err;
    }
    if (r->backlog > RECOVERY_OUTBOX_BEHIND) {
        return WS_OK; /* the relay is behind: re-sending adds to its queue */
    }
    /* An order is re-sent only when the outcome stream has passed it (an
     * outcome came for an order created no earlier) or has been quiet for
     * a whole resend period; otherwise its outcome is most likely queued
     * behind a backlog, and a re-send would only feed the backlog. */
    int64_t passed_ms, seen_ms;
    orders_progress_read(r->p->progress, &passed_ms, &seen_ms);
    bool quiet = r->now_ms - seen_ms >= r->p->resend_after_ms;
    sqlite3_stmt *st;
    err = ws_store_stmt(s,
                        "SELECT id, attempts, created_ms FROM orders WHERE status = ?1"
                        " AND next_resend_ms <= ?2"
                        " AND EXISTS (SELECT 1 FROM order_items WHERE order_id = id)"
                        " ORDER BY next_resend_ms LIMIT ?3",
                        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int(st, 1, WEBSHOP__V1__ORDER_STATUS__PENDING);
    sqlite3_bind_int64(st, 2, r->now_ms);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)r->limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && r->n < r->limit) {
        if (!quiet && sqlite3_column_int64(st, 2) > passed_ms) {
            r->deferred++;
            continue;
        }
        recovery_due *d = &r->due[r->n++];
        const unsigned char *id = sqlite3_column_text(st, 0);
        snprintf(d->id, sizeof d->id, "%s", id != NULL ? (const char *)id : "");
        d->attempts = sqlite3_column_int(st, 1);
        d->gave_up = d->attempts >= r->p->max_attempts;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        return ws_err_from_sqlite(rc);
    }
    for (size_t i = 0; i < r->n; i++) {
        recovery_due *d = &r->due[i];
        if (d->gave_up) {
            err = recovery_row_update(
                s, "UPDATE orders SET next_resend_ms = ?2 WHERE id = ?1", d->id, -1);
        } else {
            int64_t next = r->now_ms + orders_policy_delay(r->p, d->attempts + 1);
            err = recovery_sent_queue(s, d->id);
            if (err == WS_OK) {
                err = recovery_row_update(s,
                                          "UPDATE orders SET attempts = attempts + 1,"
                                          " next_resend_ms = ?2 WHERE id = ?1",
                                          d->id, next);
            }
        }
        if (err != WS_OK) {
            return err;
        }
    }
    return WS_OK;
}

ws_err order_recovery_resend_pending(ws_store *s, const orders_policy *p, int64_t now_ms,
                                     size_t limit, order_recovery_stats *stats)
{
    if (limit == 0) {
        return WS_OK;
    }
    recovery_resend r = {.p = p, .now_ms = now_ms, .limit = limit};
    r.due = calloc(limit, sizeof *r.due);
    if (r.due == NULL) {
        return WS_ENOMEM;
    }
    ws_err err = ws_store_txn(s, recovery_resend_run, &r);
    if (err != WS_OK) {
        ws_log_error("order_resend_failed", "err=%s", ws_errname(err));
        free(r.due);
        return err;
    }
    if (r.backlog > RECOVERY_OUTBOX_BEHIND || r.deferred > 0) {
        ws_log_debug("order_resend_deferred", "outbox=%lld deferred=%zu",
                     (long long)r.backlog, r.deferred);
    }
    for (size_t i = 0; i < r.n; i++) {
        recovery_due *d = &r.due[i];
        if (d->gave_up) {
            ws_log_warn("order_resend_gave_up", "order_id=%s attempts=%d", d->id,
                        d->attempts);
            stats->resend_gave_up++;
        } else {
            ws_log_info("order_resent", "order_id=%s attempt=%d", d->id, d->attempts + 1);
            stats->resent++;
        }
    }
    free(r.due);
    return WS_OK;
}

/* ---- CANCELED orders: confirm or re-send OrderCanceled ------------------ */

typedef enum recovery_outcome {
    RECOVERY_NONE,      /* row no longer due: nothing done */
    RECOVERY_CONFIRMED, /* inventory holds nothing: cancel confirmed */
    RECOVERY_RESENT,    /* OrderCanceled re-queued */
    RECOVERY_GAVE_UP,   /* max attempts reached: left */
} recovery_outcome;

typedef struct recovery_cancel {
    const orders_policy *p;
    int64_t now_ms;
    const char *id;
    bool settled;             /* the inventory holds nothing and never will */
    recovery_outcome outcome; /* reset at every run */
    int attempts;
} recovery_cancel;

static ws_err recovery_cancel_run(ws_store *s, void *ctx)
{
    recovery_cancel *c = ctx;
    c->outcome = RECOVERY_NONE;
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "SELECT cancel_attempts FROM orders WHERE id = ?1"
                               " AND status = ?2 AND cancel_confirmed = 0"
                               " AND next_resend_ms IS NOT NULL",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, WEBSHOP__V1__ORDER_STATUS__CANCELED);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        c->attempts = sqlite3_column_int(st, 0);
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        return WS_OK;
    }
    if (rc != SQLITE_ROW) {
        return ws_err_from_sqlite(rc);
    }
    if (c->settled) {
        c->outcome = RECOVERY_CONFIRMED;
        return recovery_row_update(s,
                                   "UPDATE orders SET cancel_confirmed = 1,"
                                   " next_resend_ms = ?2 WHERE id = ?1",
                                   c->id, -1);
    }
    if (c->attempts >= c->p->max_attempts) {
        c->outcome = RECOVERY_GAVE_UP;
        return recovery_row_update(
            s, "UPDATE orders SET next_resend_ms = ?2 WHERE id = ?1", c->id, -1);
    }
    Webshop__V1__OrderCanceled m = WEBSHOP__V1__ORDER_CANCELED__INIT;
    m.order_id = (char *)c->id;
    if ((err = ws_outbox_put(s, WEBSHOP_V1_ORDER_CANCELED_TOPIC, &m.base)) != WS_OK) {
        return err;
    }
    c->outcome = RECOVERY_RESENT;
    return recovery_row_update(s,
                               "UPDATE orders SET cancel_attempts = cancel_attempts + 1,"
                               " next_resend_ms = ?2 WHERE id = ?1",
                               c->id,
                               c->now_ms + orders_policy_delay(c->p, c->attempts + 1));
}

static const char *recovery_reservation_name(Webshop__V1__ReservationStatus st)
{
    const char *name = st != WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN
                           ? webshop_v1_reservation_status_name(st)
                           : NULL;
    return name != NULL ? name : "UNKNOWN";
}

static ws_err recovery_due_ids(ws_store *s, const char *sql, int64_t now_ms, size_t limit,
                               char (*ids)[37], size_t *n);

ws_err order_recovery_check_cancels(ws_store *s, const orders_policy *p,
                                    order_recovery_lookup_fn lookup, void *lookup_ctx,
                                    int64_t now_ms, size_t limit,
                                    order_recovery_stats *stats)
{
    if (limit == 0) {
        return WS_OK;
    }
    char(*ids)[37] = calloc(limit, sizeof *ids);
    if (ids == NULL) {
        return WS_ENOMEM;
    }
    /* recovery_due_ids binds ?1 = now and ?2 = the limit; the status is
     * spelled in the SQL (checked against the contract's enum below). */
    _Static_assert(WEBSHOP__V1__ORDER_STATUS__CANCELED == 4, "CANCELED is 4 in the SQL");
    size_t n;
    ws_err err = recovery_due_ids(s,
                                  "SELECT id FROM orders WHERE status = 4"
                                  " AND next_resend_ms <= ?1 ORDER BY next_resend_ms LIMIT ?2",
                                  now_ms, limit, ids, &n);
    bool inventory_down = false;
    for (size_t i = 0; err == WS_OK && i < n; i++) {
        Webshop__V1__ReservationStatus rs =
            WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN;
        ws_err lerr = WS_EUNAVAIL;
        if (!inventory_down) {
            Webshop__V1__GetReservationResponse *resp = NULL;
            lerr = lookup(lookup_ctx, ids[i], &resp);
            inventory_down = lerr != WS_OK;
            if (lerr == WS_OK) {
                rs = resp->status;
                webshop__v1__get_reservation_response__free_unpacked(resp, NULL);
            }
        }
        recovery_cancel c = {.p = p, .now_ms = now_ms, .id = ids[i]};
        if (lerr != WS_OK) {
            stats->lookups_failed++;
        } else {
            c.settled = rs == WEBSHOP__V1__RESERVATION_STATUS__RELEASED ||
                        rs == WEBSHOP__V1__RESERVATION_STATUS__REJECTED ||
                        rs == WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED;
        }
        err = ws_store_txn(s, recovery_cancel_run, &c);
        if (err != WS_OK) {
            break;
        }
        const char *seen =
            lerr == WS_OK ? recovery_reservation_name(rs) : ws_errname(lerr);
        switch (c.outcome) {
        case RECOVERY_CONFIRMED:
            ws_log_info("order_cancel_confirmed", "order_id=%s reservation=%s", ids[i],
                        seen);
            stats->cancels_confirmed++;
            break;
        case RECOVERY_RESENT:
            ws_log_info("order_cancel_resent", "order_id=%s reservation=%s attempt=%d",
                        ids[i], seen, c.attempts + 1);
            stats->cancels_resent++;
            break;
        case RECOVERY_GAVE_UP:
            ws_log_warn("order_cancel_gave_up", "order_id=%s reservation=%s attempts=%d",
                        ids[i], seen, c.attempts);
            stats->cancel_gave_up++;
            break;
        case RECOVERY_NONE:
            break;
        }
    }
    if (err != WS_OK) {
        ws_log_error("order_cancel_check_failed", "err=%s", ws_errname(err));
    }
    free(ids);
    return err;
}

/* ---- lines of orders whose OrderSent was lost -------------------------------- */

typedef struct recovery_items {
    const orders_policy *p;
    int64_t now_ms;
    const char *id;
    int done;     /* attempts before this one */
    int attempts; /* after this one */
    bool gave_up;
} recovery_items;

/* Nothing learned: count the attempt and re-arm, or give up. */
static ws_err recovery_items_rearm(ws_store *s, void *ctx)
{
    recovery_items *c = ctx;
    sqlite3_stmt *st;
    ws_err err =
        ws_store_stmt(s,
                      "UPDATE orders SET items_attempts = items_attempts + 1,"
                      " items_due_ms = CASE WHEN items_attempts + 1 >= ?3 THEN NULL"
                      " ELSE ?2 + ?4 END WHERE id = ?1 AND items_due_ms IS NOT NULL"
                      " RETURNING items_attempts",
                      &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, c->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, c->now_ms);
    sqlite3_bind_int(st, 3, c->p->max_attempts);
    sqlite3_bind_int64(st, 4, orders_policy_delay(c->p, c->done + 1));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        c->attempts = sqlite3_column_int(st, 0);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return ws_err_from_sqlite(rc);
    }
    c->gave_up = rc == SQLITE_ROW && c->attempts >= c->p->max_attempts;
    return WS_OK;
}

ws_err order_recovery_fill_items(ws_store *s, const orders_policy *p,
                                 order_recovery_lookup_fn lookup, void *lookup_ctx,
                                 int64_t now_ms, size_t limit,
                                 order_recovery_stats *stats)
{
    if (limit == 0) {
        return WS_OK;
    }
    char(*ids)[37] = calloc(limit, sizeof *ids);
    int *tries = calloc(limit, sizeof *tries);
    if (ids == NULL || tries == NULL) {
        free(ids);
        free(tries);
        return WS_ENOMEM;
    }
    sqlite3_stmt *st;
    ws_err err =
        ws_store_stmt(s,
                      "SELECT id, items_attempts FROM orders WHERE items_due_ms <= ?1"
                      " ORDER BY items_due_ms LIMIT ?2",
                      &st);
    size_t n = 0;
    if (err == WS_OK) {
        sqlite3_bind_int64(st, 1, now_ms);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW && n < limit) {
            const unsigned char *id = sqlite3_column_text(st, 0);
            snprintf(ids[n], sizeof ids[0], "%s", id != NULL ? (const char *)id : "");
            tries[n++] = sqlite3_column_int(st, 1);
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
            err = ws_err_from_sqlite(rc);
        }
    }
    for (size_t i = 0; err == WS_OK && i < n; i++) {
        Webshop__V1__GetReservationResponse *resp = NULL;
        if (lookup(lookup_ctx, ids[i], &resp) != WS_OK) {
            stats->lookups_failed += n - i; /* inventory down: try next pass */
            break;
        }
        if (resp->n_items > 0) {
            /* Exactly what a late OrderSent does: fill the lines, keep the
             * status (PENDING ranks below any status the row can have). */
            Webshop__V1__OrderSent ev = WEBSHOP__V1__ORDER_SENT__INIT;
            ev.order_id = ids[i];
            ev.n_items = resp->n_items;
            ev.items = resp->items;
            orders_effect eff;
            err = orders_apply_sent(s, p, &ev, now_ms, &eff);
            if (err == WS_OK) {
                stats->items_filled++;
                ws_log_info("order_items_recovered", "order_id=%s items=%zu filled=%d",
                            ids[i], resp->n_items, eff.items_filled);
            } else if (err == WS_EINVAL) {
                ws_log_warn("order_items_invalid", "order_id=%s field=%s", ids[i],
                            eff.invalid != NULL ? eff.invalid : "?");
                err = WS_OK; /* fall through to re-arm below */
                resp->n_items = 0;
            }
        }
        if (err == WS_OK && resp->n_items == 0) {
            recovery_items c = {.p = p, .now_ms = now_ms, .id = ids[i], .done = tries[i]};
            err = ws_store_txn(s, recovery_items_rearm, &c);
            if (err == WS_OK && c.gave_up) {
                stats->items_gave_up++;
                ws_log_warn("order_items_gave_up", "order_id=%s attempts=%d", ids[i],
                            c.attempts);
            }
        }
        webshop__v1__get_reservation_response__free_unpacked(resp, NULL);
    }
    if (err != WS_OK) {
        ws_log_error("order_items_check_failed", "err=%s", ws_errname(err));
    }
    free(tries);
    free(ids);
    return err;
}

/* ---- outcome checks -------------------------------------------------------- */

/* The ids of up to limit orders due by `sql` (?1 now_ms, ?2 limit), oldest
 * deadline first, into ids[0..*n). */
static ws_err recovery_due_ids(ws_store *s, const char *sql, int64_t now_ms, size_t limit,
                               char (*ids)[37], size_t *n)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s, sql, &st);
    *n = 0;
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int64(st, 1, now_ms);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && *n < limit) {
        const unsigned char *id = sqlite3_column_text(st, 0);
        snprintf(ids[(*n)++], sizeof ids[0], "%s", id != NULL ? (const char *)id : "");
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? WS_OK : ws_err_from_sqlite(rc);
}

/* Count and log what settling one order did. */
static void recovery_check_note(const char *id, Webshop__V1__ReservationStatus rs,
                                const orders_effect *eff, order_recovery_stats *stats)
{
    stats->checks_by_record[(unsigned)rs < 5 ? (unsigned)rs : 0]++;
    const char *rec = recovery_reservation_name(rs);
    if (!eff->settled && eff->check) {
        stats->checks_unknown++;
        ws_log_info("order_outcome_check_unknown", "order_id=%s reservation=%s", id, rec);
    } else if (eff->settled &&
               rs == WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN) {
        stats->checks_gave_up++;
        ws_log_warn("order_outcome_check_gave_up", "order_id=%s status=%s", id,
                    orders_status_name(eff->new_status));
    } else if (eff->settled) {
        stats->checks_settled++;
        stats->checks_moved += eff->old_status != eff->new_status || eff->queued > 0;
        ws_log_info("order_outcome_checked",
                    "order_id=%s reservation=%s from=%s to=%s items_filled=%d queued=%u",
                    id, rec, orders_status_name(eff->old_status),
                    orders_status_name(eff->new_status), eff->items_filled, eff->queued);
    }
}

ws_err order_recovery_check_outcomes(ws_store *s, const orders_policy *p,
                                     order_recovery_lookup_fn lookup, void *lookup_ctx,
                                     int64_t now_ms, size_t limit,
                                     order_recovery_stats *stats)
{
    if (limit == 0) {
        return WS_OK;
    }
    char(*ids)[37] = calloc(limit, sizeof *ids);
    if (ids == NULL) {
        return WS_ENOMEM;
    }
    size_t n;
    ws_err err = recovery_due_ids(s,
                                  "SELECT id FROM orders WHERE check_due_ms <= ?1"
                                  " ORDER BY check_due_ms LIMIT ?2",
                                  now_ms, limit, ids, &n);
    for (size_t i = 0; err == WS_OK && i < n; i++) {
        Webshop__V1__GetReservationResponse *resp = NULL;
        if (lookup(lookup_ctx, ids[i], &resp) != WS_OK) {
            stats->lookups_failed += n - i; /* inventory down: still due next pass */
            break;
        }
        orders_effect eff;
        err = orders_settle(s, p, ids[i], resp, now_ms, &eff);
        if (err == WS_OK) {
            recovery_check_note(ids[i], resp->status, &eff, stats);
        }
        webshop__v1__get_reservation_response__free_unpacked(resp, NULL);
    }
    if (err != WS_OK) {
        ws_log_error("order_outcome_check_failed", "err=%s", ws_errname(err));
    }
    free(ids);
    return err;
}

/* ---- tombstones ------------------------------------------------------------ */

typedef struct recovery_expire {
    int64_t before_ms;
    size_t limit;
    size_t deleted; /* reset at every run */
} recovery_expire;

static ws_err recovery_expire_run(ws_store *s, void *ctx)
{
    recovery_expire *e = ctx;
    e->deleted = 0;
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE tombstone = 1"
        " AND created_ms <= ?1 AND items_due_ms IS NULL"
        " AND (cancel_confirmed = 1 OR next_resend_ms IS NULL)"
        " ORDER BY created_ms LIMIT ?2) RETURNING id",
        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int64(st, 1, e->before_ms);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)e->limit);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        e->deleted++;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? WS_OK : ws_err_from_sqlite(rc);
}

ws_err order_recovery_expire_tombstones(ws_store *s, int64_t ttl_ms, int64_t now_ms,
                                        size_t limit, order_recovery_stats *stats)
{
    if (ttl_ms <= 0) {
        return WS_EINVAL;
    }
    if (limit == 0) {
        return WS_OK;
    }
    recovery_expire e = {.before_ms = now_ms - ttl_ms, .limit = limit};
    ws_err err = ws_store_txn(s, recovery_expire_run, &e);
    if (err != WS_OK) {
        ws_log_error("order_tombstone_expiry_failed", "err=%s", ws_errname(err));
        return err;
    }
    if (e.deleted > 0) {
        ws_log_info("order_tombstones_expired", "count=%zu ttl_ms=%lld", e.deleted,
                    (long long)ttl_ms);
    }
    stats->tombstones_expired += e.deleted;
    return WS_OK;
}

/* ---- the loop thread ----------------------------------------------------- */

/* The loop's counters, registered at open; updated by the loop thread. */
typedef struct recovery_metrics {
    ws_counter *checks[6]; /* by record 0..4, [5] lookup failed */
    ws_counter *tombstones_expired;
} recovery_metrics;

struct order_recovery {
    order_recovery_opts opts; /* store owned */
    recovery_metrics m;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu; /* guards stop */
    pthread_cond_t cv;
    bool stop;
};

static int64_t recovery_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void recovery_metrics_init(recovery_metrics *m, ws_metrics *reg)
{
    static const char *const names[6] = {"unknown",  "reserved",   "rejected",
                                         "released", "tombstoned", "lookup_failed"};
    static const char *const help =
        "Outcome checks of the order service, by the inventory's answer";
    for (int i = 0; i < 6; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "answer=\"%s\"", names[i]);
        m->checks[i] =
            ws_counter_get(reg, "webshop_order_outcome_checks_total", help, labels);
    }
    m->tombstones_expired = ws_counter_get(
        reg, "webshop_order_tombstones_expired_total",
        "Tombstones (rows only a cancel created) deleted after the TTL", "");
}

/* Add one round's stats to the counters; check_failures: checks whose
 * lookup failed in this round. */
static void recovery_metrics_add(recovery_metrics *m, const order_recovery_stats *st,
                                 size_t check_failures)
{
    for (int i = 0; i < 5; i++) {
        ws_counter_add(m->checks[i], st->checks_by_record[i]);
    }
    ws_counter_add(m->checks[5], check_failures);
    ws_counter_add(m->tombstones_expired, st->tombstones_expired);
}

static void *recovery_thread_main(void *arg)
{
    order_recovery *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        order_recovery_stats st = {0};
        int64_t now = recovery_wall_ms();
        (void)order_recovery_resend_pending(r->opts.store, &r->opts.policy, now,
                                            r->opts.batch, &st);
        (void)order_recovery_check_cancels(r->opts.store, &r->opts.policy, r->opts.lookup,
                                           r->opts.lookup_ctx, now, r->opts.batch, &st);
        (void)order_recovery_fill_items(r->opts.store, &r->opts.policy, r->opts.lookup,
                                        r->opts.lookup_ctx, now, r->opts.batch, &st);
        size_t failed_before = st.lookups_failed;
        (void)order_recovery_check_outcomes(r->opts.store, &r->opts.policy,
                                            r->opts.lookup, r->opts.lookup_ctx, now,
                                            r->opts.batch, &st);
        (void)order_recovery_expire_tombstones(r->opts.store, r->opts.tombstone_ttl_ms,
                                               now, r->opts.batch, &st);
        recovery_metrics_add(&r->m, &st, st.lookups_failed - failed_before);
        bool queued =
            st.resent || st.cancels_resent || st.items_filled || st.checks_moved;
        if (queued && r->opts.queued != NULL) {
            r->opts.queued(r->opts.queued_ctx);
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += r->opts.interval_ms / 1000;
        until.tv_nsec += (long)(r->opts.interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&r->mu);
        while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

ws_err order_recovery_open(const order_recovery_opts *opts, order_recovery **out)
{
    if (opts == NULL || opts->store == NULL || opts->lookup == NULL ||
        opts->interval_ms < 0 || opts->tombstone_ttl_ms < 0) {
        return WS_EINVAL;
    }
    order_recovery *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return WS_ENOMEM;
    }
    r->opts = *opts;
    if (r->opts.interval_ms == 0) {
        r->opts.interval_ms = 250;
    }
    if (r->opts.batch == 0) {
        r->opts.batch = 100;
    }
    if (r->opts.tombstone_ttl_ms == 0) {
        r->opts.tombstone_ttl_ms = ORDER_RECOVERY_TOMBSTONE_TTL_MS;
    }
    recovery_metrics_init(&r->m,
                          opts->metrics != NULL ? opts->metrics : ws_metrics_default());
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        pthread_condattr_destroy(&ca);
        free(r);
        return WS_ENOMEM;
    }
    if (pthread_cond_init(&r->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return WS_ENOMEM;
    }
    pthread_condattr_destroy(&ca);
    *out = r;
    return WS_OK;
}

ws_err order_recovery_start(order_recovery *r)
{
    if (r->started) {
        return WS_EINVAL;
    }
    if (pthread_create(&r->thread, NULL, recovery_thread_main, r) != 0) {
        return WS_ENOMEM;
    }
    r->started = true;
    return WS_OK;
}

void order_recovery_close(order_recovery *r)
{
    if (r == NULL) {
        return;
    }
    if (r->started) {
        pthread_mutex_lock(&r->mu);
        r->stop = true;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    ws_store_close(r->opts.store);
    free(r);
}
