/*
 * The sweep's domain steps (see stock.h, "Orphan reservations" and
 * "Tombstones"): listing the held reservations the order service has not
 * been seen to know, settling one with the answer the caller got, and
 * expiring old tombstones. No RPC here: the sweeper (sweeper.c) asks the
 * order service between inv_stock_orphan_candidates and
 * inv_stock_orphan_settle, outside any transaction, and the settle step's
 * statements re-check the record because a cancel, or another replica's
 * sweeper, may have moved it meanwhile: the confirm and the release are
 * each one statement conditional on the record still being due, and only
 * the one whose statement moved it restores the stock.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stock.h"
#include "stock_db.h"
#include "stock_int.h"

typedef struct sweep_candidates_ctx {
    int64_t cutoff_ms;
    inv_orphan_candidate *out;
    size_t limit;
    size_t n;
} sweep_candidates_ctx;

static ws_err sweep_candidates_txn(ws_db_conn *c, void *arg)
{
    sweep_candidates_ctx *x = arg;
    return inv_db_orphan_candidates(c, x->cutoff_ms, x->out, x->limit, &x->n);
}

ws_err inv_stock_orphan_candidates(ws_db *db, int64_t now_ms, int64_t orphan_after_ms,
                                   inv_orphan_candidate *out, size_t limit, size_t *n)
{
    if (db == NULL || (out == NULL && limit > 0) || n == NULL || orphan_after_ms < 0) {
        return WS_EINVAL;
    }
    sweep_candidates_ctx x = {
        .cutoff_ms = now_ms - orphan_after_ms, .out = out, .limit = limit};
    static const ws_db_txn_opts ro = {.read_only = true};
    ws_err err = limit == 0 ? WS_OK : ws_db_txn_with(db, &ro, sweep_candidates_txn, &x);
    if (err == WS_OK) {
        *n = x.n;
    }
    return err;
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

static ws_err sweep_settle_txn(ws_db_conn *c, void *arg)
{
    sweep_settle_ctx *x = arg;
    inv_orphan_outcome *out = x->out;
    memset(out, 0, sizeof(*out));
    int64_t cutoff = x->now_ms - x->orphan_after_ms;
    bool moved = false;
    ws_err err;
    switch (x->found) {
    case INV_LOOKUP_FAILED:
        err = inv_db_orphan_due(c, x->order_id, cutoff, &moved);
        out->action = moved ? INV_ORPHAN_LEFT : INV_ORPHAN_SKIPPED;
        return err;
    case INV_LOOKUP_FOUND:
        err = inv_db_orphan_confirm(c, x->order_id, cutoff, &moved);
        out->action = moved ? INV_ORPHAN_CONFIRMED : INV_ORPHAN_SKIPPED;
        return err;
    case INV_LOOKUP_NOT_FOUND:
    default:
        break;
    }
    char reason[INV_REASON_LEN];
    sweep_orphan_reason(x->orphan_after_ms, reason, sizeof(reason));
    err = inv_db_orphan_release(c, x->order_id, reason, x->now_ms, cutoff, &moved);
    if (err != WS_OK || !moved) {
        out->action = INV_ORPHAN_SKIPPED;
        return err;
    }
    out->action = INV_ORPHAN_RELEASED;
    snprintf(out->reason, sizeof(out->reason), "%s", reason);
    return inv__stock_restore(c, x->order_id, &out->n_items, &out->n_queued, NULL, NULL);
}

ws_err inv_stock_orphan_settle(ws_db *db, const char *order_id, inv_order_lookup found,
                               int64_t now_ms, int64_t orphan_after_ms,
                               inv_orphan_outcome *out)
{
    if (db == NULL || out == NULL || orphan_after_ms < 0 ||
        (found != INV_LOOKUP_FOUND && found != INV_LOOKUP_NOT_FOUND &&
         found != INV_LOOKUP_FAILED) ||
        !ws_uuid_valid(order_id)) {
        return WS_EINVAL;
    }
    inv_orphan_outcome o;
    sweep_settle_ctx x = {.order_id = order_id,
                          .found = found,
                          .now_ms = now_ms,
                          .orphan_after_ms = orphan_after_ms,
                          .out = &o};
    static const ws_db_txn_opts ro = {.read_only = true};
    ws_err err =
        ws_db_txn_with(db, found == INV_LOOKUP_FAILED ? &ro : NULL, sweep_settle_txn, &x);
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

static ws_err sweep_expire_txn(ws_db_conn *c, void *arg)
{
    sweep_expire_ctx *x = arg;
    x->n = 0;
    return inv_db_tombstones_expire(c, x->cutoff_ms, x->limit, &x->n);
}

ws_err inv_stock_tombstones_expire(ws_db *db, int64_t now_ms, int64_t ttl_ms,
                                   size_t limit, size_t *n_expired)
{
    if (db == NULL || n_expired == NULL || ttl_ms < 0) {
        return WS_EINVAL;
    }
    if (limit == 0) {
        *n_expired = 0;
        return WS_OK;
    }
    sweep_expire_ctx x = {.cutoff_ms = now_ms - ttl_ms, .limit = limit};
    ws_err err = ws_db_txn(db, sweep_expire_txn, &x);
    if (err == WS_OK) {
        *n_expired = x.n;
    }
    return err;
}
