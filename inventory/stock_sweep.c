/*
 * The sweep's domain steps (see stock.h, "Orphan reservations" and
 * "Tombstones"): listing the held reservations the order service has not
 * been seen to know, settling one with the answer the caller got, and
 * expiring old tombstones. No RPC here: the sweeper (sweeper.c) asks the
 * order service between inv_stock_orphan_candidates and
 * inv_stock_orphan_settle, outside any transaction, and the settle step
 * re-checks the record because a cancel may have released it meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stock.h"
#include "stock_int.h"

ws_err inv_stock_orphan_candidates(ws_store *s, int64_t now_ms, int64_t orphan_after_ms,
                                   inv_orphan_candidate *out, size_t limit, size_t *n)
{
    if (s == NULL || (out == NULL && limit > 0) || n == NULL || orphan_after_ms < 0) {
        return WS_EINVAL;
    }
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "SELECT order_id, created_ms FROM reservations"
                               " WHERE status = 'reserved' AND confirmed = 0"
                               " AND created_ms <= ?1 ORDER BY created_ms LIMIT ?2",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int64(st, 1, now_ms - orphan_after_ms);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
    size_t k = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && k < limit) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        snprintf(out[k].order_id, sizeof(out[k].order_id), "%s", id ? id : "");
        out[k].created_ms = sqlite3_column_int64(st, 1);
        k++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        return ws_err_from_sqlite(rc);
    }
    *n = k;
    return WS_OK;
}

typedef struct sweep_settle_ctx {
    const char *order_id; /* as stored */
    inv_order_lookup found;
    int64_t now_ms;
    int64_t orphan_after_ms;
    inv_orphan_outcome *out;
} sweep_settle_ctx;

/* The reason recorded on an orphan release. */
static void sweep_orphan_reason(int64_t after_ms, char *reason, size_t len)
{
    if (after_ms % 1000 == 0) {
        snprintf(reason, len,
                 "reservation released: the order service did not know the order"
                 " within %lld s",
                 (long long)(after_ms / 1000));
    } else {
        snprintf(reason, len,
                 "reservation released: the order service did not know the order"
                 " within %lld ms",
                 (long long)after_ms);
    }
}

/* True (in *due) when order_id is still held, unconfirmed and old enough. */
static ws_err sweep_still_due(ws_store *s, const sweep_settle_ctx *c, bool *due)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "SELECT 1 FROM reservations WHERE order_id = ?1"
                               " AND status = 'reserved' AND confirmed = 0"
                               " AND created_ms <= ?2",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, c->order_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, c->now_ms - c->orphan_after_ms);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        return ws_err_from_sqlite(rc);
    }
    *due = rc == SQLITE_ROW;
    return WS_OK;
}

static ws_err sweep_settle_txn(ws_store *s, void *arg)
{
    sweep_settle_ctx *c = arg;
    inv_orphan_outcome *out = c->out;
    memset(out, 0, sizeof(*out));
    bool due = false;
    ws_err err = sweep_still_due(s, c, &due);
    if (err != WS_OK) {
        return err;
    }
    if (!due) {
        out->action = INV_ORPHAN_SKIPPED;
        return WS_OK;
    }
    if (c->found == INV_LOOKUP_FAILED) {
        out->action = INV_ORPHAN_LEFT;
        return WS_OK;
    }
    if (c->found == INV_LOOKUP_FOUND) {
        sqlite3_stmt *st;
        err = ws_store_stmt(
            s, "UPDATE reservations SET confirmed = 1 WHERE order_id = ?1", &st);
        if (err != WS_OK) {
            return err;
        }
        sqlite3_bind_text(st, 1, c->order_id, -1, SQLITE_STATIC);
        err = inv__stock_stmt_run(st);
        out->action = INV_ORPHAN_CONFIRMED;
        return err;
    }
    sweep_orphan_reason(c->orphan_after_ms, out->reason, sizeof(out->reason));
    out->action = INV_ORPHAN_RELEASED;
    return inv__stock_release(s, c->order_id, "orphan", out->reason, c->now_ms,
                              &out->n_items, &out->n_queued);
}

ws_err inv_stock_orphan_settle(ws_store *s, const char *order_id, inv_order_lookup found,
                               int64_t now_ms, int64_t orphan_after_ms,
                               inv_orphan_outcome *out)
{
    if (s == NULL || out == NULL || orphan_after_ms < 0 ||
        (found != INV_LOOKUP_FOUND && found != INV_LOOKUP_NOT_FOUND &&
         found != INV_LOOKUP_FAILED) ||
        !ws_uuid_valid(order_id)) {
        return WS_EINVAL;
    }
    inv_orphan_outcome o;
    sweep_settle_ctx c = {.order_id = order_id,
                          .found = found,
                          .now_ms = now_ms,
                          .orphan_after_ms = orphan_after_ms,
                          .out = &o};
    ws_err err = ws_store_txn(s, sweep_settle_txn, &c);
    if (err == WS_OK) {
        *out = o;
    }
    return err;
}

typedef struct sweep_expire_ctx {
    int64_t cutoff_ms;
    size_t limit;
    size_t n; /* rewritten on every attempt */
} sweep_expire_ctx;

static ws_err sweep_expire_txn(ws_store *s, void *arg)
{
    sweep_expire_ctx *c = arg;
    c->n = 0;
    /* Tombstones never have items (a cancel records none), so deleting the
     * reservation row is the whole of it. */
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "DELETE FROM reservations WHERE order_id IN"
                               " (SELECT order_id FROM reservations"
                               "  WHERE status = 'tombstoned' AND updated_ms <= ?1"
                               "  ORDER BY updated_ms LIMIT ?2)",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int64(st, 1, c->cutoff_ms);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)c->limit);
    err = inv__stock_stmt_run(st);
    if (err == WS_OK) {
        c->n = (size_t)sqlite3_changes(ws_store_db(s));
    }
    return err;
}

ws_err inv_stock_tombstones_expire(ws_store *s, int64_t now_ms, int64_t ttl_ms,
                                   size_t limit, size_t *n_expired)
{
    if (s == NULL || n_expired == NULL || ttl_ms < 0) {
        return WS_EINVAL;
    }
    if (limit == 0) {
        *n_expired = 0;
        return WS_OK;
    }
    sweep_expire_ctx c = {.cutoff_ms = now_ms - ttl_ms, .limit = limit};
    ws_err err = ws_store_txn(s, sweep_expire_txn, &c);
    if (err == WS_OK) {
        *n_expired = c.n;
    }
    return err;
}
