/*
 * Recovery passes over the orders, through the ports of order_db.h (no SQL
 * here), and the thread that runs them. The OrderSent pass reads and writes
 * in one transaction (it touches only the database; on PostgreSQL the due
 * rows are locked SKIP LOCKED, so replicas share the work). The passes that
 * ask the inventory first claim their due rows in a short transaction (the
 * deadline moves to a lease, ORDER_RECOVERY_LEASE_MS ahead), then ask,
 * outside any transaction (an RPC may take up to its deadline and must not
 * hold a lock), then settle each order in a short transaction that
 * re-checks the row, since an event may have been applied meanwhile. A row
 * whose question could not be asked is given back (its deadline as it
 * was). The tombstone pass is one DELETE. The loop thread reads the wall
 * clock once per round through a ws_clock_watch (clock.h) and waits on the
 * monotonic clock between rounds. Tombstone ages are wall time: after a
 * forward jump the TTL is judged as TTL + jump until a TTL has passed on
 * the monotonic clock (no young tombstone expires early); after a backward
 * jump, and at the first round, tombstones stamped in the future are
 * stamped now (their TTL does not wait for the whole jump).
 *
 * Tracing: no request starts this work, so each order a pass acts on gets
 * a new trace (trace.h) of its own, current while the pass works on it: the
 * lines logged about it, the GetReservation it asks (the inventory logs
 * under the same trace_id) and the events it queues (outbox rows keep the
 * trace) all carry one trace_id per order and pass.
 */
#include "recovery.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "order_db.h"
#include "outbox.h"
#include "trace.h"

typedef struct recovery_due {
    char id[37];
    int attempts;
    bool gave_up;
    ws_trace trace; /* of the re-send, for its log line */
} recovery_due;

/* ---- one trace per order --------------------------------------------------- */

/* Make t (NULL: a new trace) the thread's current trace for the work on one
 * order; what it had is saved in *s, given back by ws_trace_restore. */
static void recovery_trace_begin(ws_trace_saved *s, const ws_trace *t)
{
    ws_trace_save(s);
    ws_trace fresh;
    if (t == NULL) {
        ws_trace_new(&fresh);
        t = &fresh;
    }
    ws_trace_set_current(t);
}

/* ---- claims ---------------------------------------------------------------- */

/* The rows of one pass of a kind, claimed until lease_until_ms. */
typedef struct recovery_claim {
    order_db_due_kind kind;
    int64_t now_ms;
    int64_t lease_until_ms;
    size_t cap;
    order_db_due *rows; /* cap entries */
    size_t n;
    size_t from; /* recovery_unclaim: give back rows[from..n) */
} recovery_claim;

static ws_err recovery_claim_run(ws_db_conn *c, void *ctx)
{
    recovery_claim *cl = ctx;
    cl->n = 0;
    return order_db_claim_due(c, cl->kind, cl->now_ms, cl->lease_until_ms, cl->cap,
                              cl->rows, &cl->n);
}

static ws_err recovery_unclaim_run(ws_db_conn *c, void *ctx)
{
    recovery_claim *cl = ctx;
    ws_err err = WS_OK;
    for (size_t i = cl->from; err == WS_OK && i < cl->n; i++) {
        err = order_db_unclaim(c, cl->kind, cl->rows[i].id, cl->lease_until_ms,
                               cl->rows[i].due_ms);
    }
    return err;
}

/* Claim up to limit due rows of kind (cl->rows allocated here; free it). */
static ws_err recovery_claim_open(ws_db_conn *c, order_db_due_kind kind, int64_t now_ms,
                                  size_t limit, recovery_claim *cl)
{
    *cl = (recovery_claim){.kind = kind,
                           .now_ms = now_ms,
                           .lease_until_ms = now_ms + ORDER_RECOVERY_LEASE_MS,
                           .cap = limit};
    cl->rows = calloc(limit, sizeof *cl->rows);
    if (cl->rows == NULL) {
        return WS_ENOMEM;
    }
    return ws_db_conn_txn(c, NULL, recovery_claim_run, cl);
}

/* Give back the rows from `from` on (not asked about), free the claim. */
static void recovery_claim_close(ws_db_conn *c, recovery_claim *cl, size_t from)
{
    if (from < cl->n) {
        cl->from = from;
        ws_err err = ws_db_conn_txn(c, NULL, recovery_unclaim_run, cl);
        if (err != WS_OK) {
            ws_log_warn("order_recovery_unclaim_failed", "rows=%zu error=%s", cl->n - from,
                        ws_errname(err)); /* due again when the lease ends */
        }
    }
    free(cl->rows);
    cl->rows = NULL;
}

/* ---- PENDING orders: re-send OrderSent ---------------------------------- */

/* With more outbox rows than this waiting, the relay is behind: a re-send
 * would only queue behind them, so the pass waits. */
#define RECOVERY_OUTBOX_BEHIND 1000

typedef struct recovery_resend {
    const orders_policy *p;
    int64_t now_ms;
    size_t limit;
    order_db_due *rows; /* limit entries: the due rows */
    recovery_due *due;  /* limit entries: what was done */
    size_t n;           /* reset at every run */
    size_t deferred;    /* due, but the outcome stream has not passed them */
    int64_t backlog;    /* outbox rows waiting when the pass looked */
} recovery_resend;

/* Queue OrderSent for one order, rebuilt from its stored items. */
static ws_err recovery_sent_queue(ws_db_conn *c, const char *id)
{
    Webshop__V1__OrderItem *items =
        calloc(WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS, sizeof *items);
    Webshop__V1__OrderItem **ptrs = calloc(WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS, sizeof *ptrs);
    size_t n = 0;
    ws_err err = items != NULL && ptrs != NULL ? WS_OK : WS_ENOMEM;
    if (err == WS_OK) {
        err = order_db_items_read(c, id, items, WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS, &n);
    }
    if (err == WS_OK) {
        for (size_t i = 0; i < n; i++) {
            ptrs[i] = &items[i];
        }
        Webshop__V1__OrderSent m = WEBSHOP__V1__ORDER_SENT__INIT;
        m.order_id = (char *)id;
        m.n_items = n;
        m.items = ptrs;
        err = ws_outbox_put(c, WEBSHOP_V1_ORDER_SENT_TOPIC, &m.base);
    }
    free(items);
    free(ptrs);
    return err;
}

/* One due order: count the re-send and queue OrderSent, or give up. An
 * order no longer PENDING (an event was first) is left alone. Runs under
 * the order's new trace (recovery_resend_traced). */
static ws_err recovery_resend_one(ws_db_conn *c, recovery_resend *r,
                                  const order_db_due *d)
{
    bool gave_up = d->attempts >= r->p->max_attempts;
    int64_t next = gave_up ? -1 : r->now_ms + orders_policy_delay(r->p, d->attempts + 1);
    bool moved = false;
    ws_err err = order_db_resend_next(c, d->id, !gave_up, next, &moved);
    if (err != WS_OK || !moved) {
        return err;
    }
    if (!gave_up && (err = recovery_sent_queue(c, d->id)) != WS_OK) {
        return err;
    }
    recovery_due *out = &r->due[r->n++];
    snprintf(out->id, sizeof out->id, "%s", d->id);
    out->attempts = d->attempts;
    out->gave_up = gave_up;
    out->trace = *ws_trace_current();
    return WS_OK;
}

/* recovery_resend_one under a new trace: the re-sent OrderSent starts one. */
static ws_err recovery_resend_traced(ws_db_conn *c, recovery_resend *r,
                                     const order_db_due *d)
{
    ws_trace_saved tr;
    recovery_trace_begin(&tr, NULL);
    ws_err err = recovery_resend_one(c, r, d);
    ws_trace_restore(&tr);
    return err;
}

static ws_err recovery_resend_run(ws_db_conn *c, void *ctx)
{
    recovery_resend *r = ctx;
    r->n = 0;
    r->deferred = 0;
    r->backlog = 0;
    ws_err err = order_db_outbox_backlog(c, &r->backlog);
    if (err != WS_OK || r->backlog > RECOVERY_OUTBOX_BEHIND) {
        return err; /* the relay is behind: re-sending adds to its queue */
    }
    /* An order is re-sent only when the outcome stream has passed it (an
     * outcome came for an order created no earlier) or has been quiet for
     * a whole resend period; otherwise its outcome is most likely queued
     * behind a backlog, and a re-send would only feed the backlog. */
    int64_t passed_ms, seen_ms;
    orders_progress_read(r->p->progress, &passed_ms, &seen_ms);
    /* An outcome seen further ahead than a resend period was stamped by a
     * clock ahead of ours (ours jumped back; the maximum then sticks until
     * our clock catches up): progress cannot be judged, so do not wait. */
    bool quiet = r->now_ms - seen_ms >= r->p->resend_after_ms ||
                 seen_ms - r->now_ms > r->p->resend_after_ms;
    size_t k = 0;
    if ((err = order_db_resend_due(c, r->now_ms, r->limit, r->rows, &k)) != WS_OK) {
        return err;
    }
    for (size_t i = 0; err == WS_OK && i < k; i++) {
        if (!quiet && r->rows[i].created_ms > passed_ms) {
            r->deferred++;
            continue;
        }
        err = recovery_resend_traced(c, r, &r->rows[i]);
    }
    return err;
}

ws_err order_recovery_resend_pending(ws_db_conn *c, const orders_policy *p,
                                     int64_t now_ms, size_t limit,
                                     order_recovery_stats *stats)
{
    if (limit == 0) {
        return WS_OK;
    }
    recovery_resend r = {.p = p, .now_ms = now_ms, .limit = limit};
    r.due = calloc(limit, sizeof *r.due);
    r.rows = calloc(limit, sizeof *r.rows);
    ws_err err = r.due != NULL && r.rows != NULL
                     ? ws_db_conn_txn(c, NULL, recovery_resend_run, &r)
                     : WS_ENOMEM;
    if (err != WS_OK) {
        ws_log_error("order_resend_failed", "error=%s", ws_errname(err));
        free(r.due);
        free(r.rows);
        return err;
    }
    if (r.backlog > RECOVERY_OUTBOX_BEHIND || r.deferred > 0) {
        ws_log_debug("order_resend_deferred", "outbox=%lld deferred=%zu",
                     (long long)r.backlog, r.deferred);
    }
    for (size_t i = 0; i < r.n; i++) {
        recovery_due *d = &r.due[i];
        ws_trace_saved tr;
        recovery_trace_begin(&tr, &d->trace);
        if (d->gave_up) {
            ws_log_warn("order_resend_gave_up", "order_id=%s attempts=%d", d->id,
                        d->attempts);
            stats->resend_gave_up++;
        } else {
            ws_log_info("order_resent", "order_id=%s attempt=%d", d->id, d->attempts + 1);
            stats->resent++;
        }
        ws_trace_restore(&tr);
    }
    free(r.due);
    free(r.rows);
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

static ws_err recovery_cancel_run(ws_db_conn *c, void *ctx)
{
    recovery_cancel *rc = ctx;
    rc->outcome = RECOVERY_NONE;
    ws_err err = order_db_cancel_due(c, rc->id, &rc->attempts);
    if (err == WS_ENOTFOUND) {
        return WS_OK;
    }
    bool moved = false;
    if (err == WS_OK && rc->settled) {
        err = order_db_cancel_confirm(c, rc->id, &moved);
        rc->outcome = moved ? RECOVERY_CONFIRMED : RECOVERY_NONE;
        return err;
    }
    if (err == WS_OK && rc->attempts >= rc->p->max_attempts) {
        err = order_db_cancel_next(c, rc->id, false, -1, &moved);
        rc->outcome = moved ? RECOVERY_GAVE_UP : RECOVERY_NONE;
        return err;
    }
    if (err == WS_OK) {
        err = order_db_cancel_next(
            c, rc->id, true, rc->now_ms + orders_policy_delay(rc->p, rc->attempts + 1),
            &moved);
    }
    if (err != WS_OK || !moved) {
        return err;
    }
    Webshop__V1__OrderCanceled m = WEBSHOP__V1__ORDER_CANCELED__INIT;
    m.order_id = (char *)rc->id;
    rc->outcome = RECOVERY_RESENT;
    return ws_outbox_put(c, WEBSHOP_V1_ORDER_CANCELED_TOPIC, &m.base);
}

static const char *recovery_reservation_name(Webshop__V1__ReservationStatus st)
{
    const char *name = st != WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN
                           ? webshop_v1_reservation_status_name(st)
                           : NULL;
    return name != NULL ? name : "UNKNOWN";
}

static void recovery_cancel_note(const recovery_cancel *rc, const char *seen,
                                 order_recovery_stats *stats)
{
    switch (rc->outcome) {
    case RECOVERY_CONFIRMED:
        ws_log_info("order_cancel_confirmed", "order_id=%s reservation=%s", rc->id, seen);
        stats->cancels_confirmed++;
        break;
    case RECOVERY_RESENT:
        ws_log_info("order_cancel_resent", "order_id=%s reservation=%s attempt=%d",
                    rc->id, seen, rc->attempts + 1);
        stats->cancels_resent++;
        break;
    case RECOVERY_GAVE_UP:
        ws_log_warn("order_cancel_gave_up", "order_id=%s reservation=%s attempts=%d",
                    rc->id, seen, rc->attempts);
        stats->cancel_gave_up++;
        break;
    case RECOVERY_NONE:
        break;
    }
}

/* One claimed CANCELED order: ask the inventory (unless it was found down
 * earlier in the pass: *inventory_down), then confirm, re-send or give up.
 * Runs under the order's trace. */
static ws_err recovery_cancel_order(ws_db_conn *c, const orders_policy *p,
                                    order_recovery_lookup_fn lookup, void *lookup_ctx,
                                    int64_t now_ms, const char *id, bool *inventory_down,
                                    order_recovery_stats *stats)
{
    Webshop__V1__ReservationStatus rs =
        WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN;
    ws_err lerr = WS_EUNAVAIL;
    if (!*inventory_down) {
        Webshop__V1__GetReservationResponse *resp = NULL;
        lerr = lookup(lookup_ctx, id, &resp);
        *inventory_down = lerr != WS_OK;
        if (lerr == WS_OK) {
            rs = resp->status;
            webshop__v1__get_reservation_response__free_unpacked(resp, NULL);
        }
    }
    recovery_cancel rc = {.p = p, .now_ms = now_ms, .id = id};
    if (lerr != WS_OK) {
        stats->lookups_failed++;
    } else {
        rc.settled = rs == WEBSHOP__V1__RESERVATION_STATUS__RELEASED ||
                     rs == WEBSHOP__V1__RESERVATION_STATUS__REJECTED ||
                     rs == WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED;
    }
    ws_err err = ws_db_conn_txn(c, NULL, recovery_cancel_run, &rc);
    if (err == WS_OK) {
        recovery_cancel_note(
            &rc, lerr == WS_OK ? recovery_reservation_name(rs) : ws_errname(lerr), stats);
    }
    return err;
}

ws_err order_recovery_check_cancels(ws_db_conn *c, const orders_policy *p,
                                    order_recovery_lookup_fn lookup, void *lookup_ctx,
                                    int64_t now_ms, size_t limit,
                                    order_recovery_stats *stats)
{
    if (limit == 0) {
        return WS_OK;
    }
    recovery_claim cl;
    ws_err err = recovery_claim_open(c, ORDER_DB_DUE_CANCEL, now_ms, limit, &cl);
    bool inventory_down = false;
    size_t i = 0;
    for (; err == WS_OK && i < cl.n; i++) {
        ws_trace_saved tr;
        recovery_trace_begin(&tr, NULL);
        err = recovery_cancel_order(c, p, lookup, lookup_ctx, now_ms, cl.rows[i].id,
                                    &inventory_down, stats);
        ws_trace_restore(&tr);
        if (err != WS_OK) {
            break;
        }
    }
    recovery_claim_close(c, &cl, i);
    if (err != WS_OK) {
        ws_log_error("order_cancel_check_failed", "error=%s", ws_errname(err));
    }
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
static ws_err recovery_items_rearm(ws_db_conn *c, void *ctx)
{
    recovery_items *ri = ctx;
    bool found = false;
    ws_err err = order_db_items_rearm(
        c, ri->id, ri->now_ms + orders_policy_delay(ri->p, ri->done + 1),
        ri->p->max_attempts, &found, &ri->attempts);
    ri->gave_up = err == WS_OK && found && ri->attempts >= ri->p->max_attempts;
    return err;
}

/* Fill the lines of one order from the inventory's answer, exactly as a
 * late OrderSent does (the status stays: PENDING ranks below any status the
 * row can have), or re-arm / give up when the answer has none (or invalid
 * ones). */
static ws_err recovery_items_one(ws_db_conn *c, const orders_policy *p, int64_t now_ms,
                                 const order_db_due *d,
                                 Webshop__V1__GetReservationResponse *resp,
                                 order_recovery_stats *stats)
{
    ws_err err = WS_OK;
    size_t n_items = resp->n_items;
    if (n_items > 0) {
        Webshop__V1__OrderSent ev = WEBSHOP__V1__ORDER_SENT__INIT;
        ev.order_id = (char *)d->id;
        ev.n_items = resp->n_items;
        ev.items = resp->items;
        orders_effect eff;
        err = orders_apply_sent(c, p, &ev, now_ms, &eff);
        if (err == WS_OK) {
            stats->items_filled++;
            ws_log_info("order_items_recovered", "order_id=%s items=%zu filled=%d", d->id,
                        n_items, eff.items_filled);
        } else if (err == WS_EINVAL) {
            ws_log_warn("order_items_invalid", "order_id=%s field=%s", d->id,
                        eff.invalid != NULL ? eff.invalid : "?");
            err = WS_OK; /* re-arm below */
            n_items = 0;
        }
    }
    if (err == WS_OK && n_items == 0) {
        recovery_items ri = {.p = p, .now_ms = now_ms, .id = d->id, .done = d->attempts};
        err = ws_db_conn_txn(c, NULL, recovery_items_rearm, &ri);
        if (err == WS_OK && ri.gave_up) {
            stats->items_gave_up++;
            ws_log_warn("order_items_gave_up", "order_id=%s attempts=%d", d->id,
                        ri.attempts);
        }
    }
    return err;
}

ws_err order_recovery_fill_items(ws_db_conn *c, const orders_policy *p,
                                 order_recovery_lookup_fn lookup, void *lookup_ctx,
                                 int64_t now_ms, size_t limit,
                                 order_recovery_stats *stats)
{
    if (limit == 0) {
        return WS_OK;
    }
    recovery_claim cl;
    ws_err err = recovery_claim_open(c, ORDER_DB_DUE_ITEMS, now_ms, limit, &cl);
    size_t i = 0;
    for (; err == WS_OK && i < cl.n; i++) {
        Webshop__V1__GetReservationResponse *resp = NULL;
        ws_trace_saved tr;
        recovery_trace_begin(&tr, NULL);
        bool down = lookup(lookup_ctx, cl.rows[i].id, &resp) != WS_OK;
        if (!down) {
            err = recovery_items_one(c, p, now_ms, &cl.rows[i], resp, stats);
            webshop__v1__get_reservation_response__free_unpacked(resp, NULL);
        }
        ws_trace_restore(&tr);
        if (down) {
            stats->lookups_failed += cl.n - i; /* inventory down: try next pass */
            break;
        }
        if (err != WS_OK) {
            break;
        }
    }
    recovery_claim_close(c, &cl, i);
    if (err != WS_OK) {
        ws_log_error("order_items_check_failed", "error=%s", ws_errname(err));
    }
    return err;
}

/* ---- outcome checks -------------------------------------------------------- */

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

ws_err order_recovery_check_outcomes(ws_db_conn *c, const orders_policy *p,
                                     order_recovery_lookup_fn lookup, void *lookup_ctx,
                                     int64_t now_ms, size_t limit,
                                     order_recovery_stats *stats)
{
    if (limit == 0) {
        return WS_OK;
    }
    recovery_claim cl;
    ws_err err = recovery_claim_open(c, ORDER_DB_DUE_CHECK, now_ms, limit, &cl);
    size_t i = 0;
    for (; err == WS_OK && i < cl.n; i++) {
        const char *id = cl.rows[i].id;
        Webshop__V1__GetReservationResponse *resp = NULL;
        ws_trace_saved tr;
        recovery_trace_begin(&tr, NULL);
        bool down = lookup(lookup_ctx, id, &resp) != WS_OK;
        if (!down) {
            orders_effect eff;
            err = orders_settle(c, p, id, resp, now_ms, &eff);
            if (err == WS_OK) {
                recovery_check_note(id, resp->status, &eff, stats);
            }
            webshop__v1__get_reservation_response__free_unpacked(resp, NULL);
        }
        ws_trace_restore(&tr);
        if (down) {
            stats->lookups_failed += cl.n - i; /* inventory down: still due next pass */
            break;
        }
        if (err != WS_OK) {
            break;
        }
    }
    recovery_claim_close(c, &cl, i);
    if (err != WS_OK) {
        ws_log_error("order_outcome_check_failed", "error=%s", ws_errname(err));
    }
    return err;
}

/* ---- tombstones ------------------------------------------------------------ */

typedef struct recovery_expire {
    int64_t before_ms;
    size_t limit;
    size_t deleted; /* reset at every run */
} recovery_expire;

static ws_err recovery_expire_run(ws_db_conn *c, void *ctx)
{
    recovery_expire *e = ctx;
    e->deleted = 0;
    return order_db_tombstones_expire(c, e->before_ms, e->limit, &e->deleted);
}

ws_err order_recovery_expire_tombstones(ws_db_conn *c, int64_t ttl_ms, int64_t now_ms,
                                        size_t limit, order_recovery_stats *stats)
{
    if (ttl_ms <= 0) {
        return WS_EINVAL;
    }
    if (limit == 0) {
        return WS_OK;
    }
    recovery_expire e = {.before_ms = now_ms - ttl_ms, .limit = limit};
    ws_err err = ws_db_conn_txn(c, NULL, recovery_expire_run, &e);
    if (err != WS_OK) {
        ws_log_error("order_tombstone_expiry_failed", "error=%s", ws_errname(err));
        return err;
    }
    if (e.deleted > 0) {
        ws_log_info("order_tombstones_expired", "count=%zu ttl_ms=%lld", e.deleted,
                    (long long)ttl_ms);
    }
    stats->tombstones_expired += e.deleted;
    return WS_OK;
}

typedef struct recovery_restamp {
    int64_t now_ms;
    size_t n; /* reset at every run */
} recovery_restamp;

static ws_err recovery_restamp_run(ws_db_conn *c, void *ctx)
{
    recovery_restamp *x = ctx;
    x->n = 0;
    return order_db_tombstones_restamp(c, x->now_ms + WS_CLOCK_JUMP_MS, x->now_ms, &x->n);
}

/* Tombstones stamped in the future (the wall clock stepped back, or was
 * ahead when they were written) are stamped now: their TTL counts from now
 * instead of after the whole jump. */
static ws_err recovery_restamp_tombstones(ws_db_conn *c, int64_t now_ms)
{
    recovery_restamp x = {.now_ms = now_ms};
    ws_err err = ws_db_conn_txn(c, NULL, recovery_restamp_run, &x);
    if (err != WS_OK) {
        ws_log_error("order_restamp_failed", "error=%s", ws_errname(err));
    } else if (x.n > 0) {
        ws_log_warn("clock_restamped", "loop=order_recovery count=%zu", x.n);
    }
    return err;
}

/* ---- a backward wall-clock jump: reschedule ------------------------------ */

int64_t order_recovery_horizon_ms(const orders_policy *p)
{
    int64_t d =
        p->backoff_cap_ms > p->resend_after_ms ? p->backoff_cap_ms : p->resend_after_ms;
    return d + ORDER_RECOVERY_LEASE_MS;
}

typedef struct recovery_resched {
    const orders_policy *p;
    int64_t now_ms;
    int64_t back_ms;
    size_t cap;
    order_db_due *rows; /* cap entries */
    size_t seen;        /* reset at every run: rows looked at */
    size_t moved;       /* reset at every run: deadlines moved */
} recovery_resched;

/* Where a deadline due_ms goes: a deadline beyond the horizon was written
 * by a clock back_ms ahead of ours, and moves back by that much (not before
 * now); any other stays (< 0: stays). */
static int64_t recovery_resched_target(const recovery_resched *x, int64_t due_ms)
{
    if (due_ms <= x->now_ms + order_recovery_horizon_ms(x->p)) {
        return -1;
    }
    int64_t to = due_ms - x->back_ms;
    return to > x->now_ms ? to : x->now_ms;
}

static ws_err recovery_resched_resend(ws_db_conn *c, void *ctx)
{
    recovery_resched *x = ctx;
    x->seen = x->moved = 0;
    int64_t upto = x->now_ms + x->back_ms + order_recovery_horizon_ms(x->p);
    ws_err err = order_db_resend_due(c, upto, x->cap, x->rows, &x->seen);
    for (size_t i = 0; err == WS_OK && i < x->seen; i++) {
        int64_t to = recovery_resched_target(x, x->rows[i].due_ms);
        bool moved = false;
        if (to >= 0) {
            err = order_db_resend_next(c, x->rows[i].id, false, to, &moved);
        }
        x->moved += moved;
    }
    return err;
}

/* The claim kinds: claim the rows up to the shifted deadline and give each
 * back in the same transaction, at its new deadline or its old one. */
typedef struct recovery_resched_kind {
    recovery_resched *x;
    order_db_due_kind kind;
} recovery_resched_kind;

static ws_err recovery_resched_claimed(ws_db_conn *c, void *ctx)
{
    recovery_resched_kind *k = ctx;
    recovery_resched *x = k->x;
    x->seen = x->moved = 0;
    int64_t upto = x->now_ms + x->back_ms + order_recovery_horizon_ms(x->p);
    int64_t lease = upto + 1;
    ws_err err = order_db_claim_due(c, k->kind, upto, lease, x->cap, x->rows, &x->seen);
    for (size_t i = 0; err == WS_OK && i < x->seen; i++) {
        int64_t to = recovery_resched_target(x, x->rows[i].due_ms);
        x->moved += to >= 0;
        err = order_db_unclaim(c, k->kind, x->rows[i].id, lease,
                               to >= 0 ? to : x->rows[i].due_ms);
    }
    return err;
}

ws_err order_recovery_reschedule(ws_db_conn *c, const orders_policy *p, int64_t now_ms,
                                 int64_t back_ms, size_t limit, size_t *moved, bool *more)
{
    if (back_ms <= 0 || limit == 0) {
        *more = false;
        return back_ms < 0 ? WS_EINVAL : WS_OK;
    }
    recovery_resched x = {.p = p, .now_ms = now_ms, .back_ms = back_ms, .cap = limit};
    x.rows = calloc(limit, sizeof *x.rows);
    if (x.rows == NULL) {
        return WS_ENOMEM;
    }
    size_t total = 0;
    bool full = false;
    ws_err err = ws_db_conn_txn(c, NULL, recovery_resched_resend, &x);
    total += err == WS_OK ? x.moved : 0;
    full = err == WS_OK && x.seen == limit;
    static const order_db_due_kind kinds[3] = {ORDER_DB_DUE_CANCEL, ORDER_DB_DUE_ITEMS,
                                               ORDER_DB_DUE_CHECK};
    for (int i = 0; err == WS_OK && i < 3; i++) {
        recovery_resched_kind k = {.x = &x, .kind = kinds[i]};
        err = ws_db_conn_txn(c, NULL, recovery_resched_claimed, &k);
        total += err == WS_OK ? x.moved : 0;
        full = full || (err == WS_OK && x.seen == limit);
    }
    free(x.rows);
    if (err != WS_OK) {
        ws_log_error("order_reschedule_failed", "error=%s", ws_errname(err));
        return err;
    }
    if (total > 0) {
        ws_log_info("order_deadlines_rescheduled", "count=%zu back_ms=%lld", total,
                    (long long)back_ms);
    }
    *moved += total;
    *more = full;
    return WS_OK;
}

/* ---- the loop thread ----------------------------------------------------- */

/* A catch-up pass looks at this many batches of rows per kind. */
#define RECOVERY_CATCHUP_FACTOR 10

/* Statuses the webshop_orders gauge can show (Webshop__V1__OrderStatus
 * values below this; the enum has 5). */
#define RECOVERY_STATUS_SLOTS 16
/* webshop_orders is counted at most this often (a read of every order). */
#define RECOVERY_COUNT_MS 1000

/* The loop's counters, registered at open; updated by the loop thread. */
typedef struct recovery_metrics {
    ws_counter *checks[6]; /* by record 0..4, [5] lookup failed */
    ws_counter *tombstones_expired;
    ws_gauge *orders[RECOVERY_STATUS_SLOTS]; /* by status value; NULL: none */
    int64_t counted_ms;                      /* monotonic, of the last count */
} recovery_metrics;

struct order_recovery {
    order_recovery_opts opts; /* db not owned */
    recovery_metrics m;
    pthread_t thread;
    bool started;
    pthread_mutex_t mu; /* guards stop */
    pthread_cond_t cv;  /* CLOCK_MONOTONIC (ws_clock_cond_init) */
    bool stop;
    ws_clock_watch watch;     /* loop thread only (set at start) */
    int64_t back_ms;          /* backward jump still to reschedule; loop thread */
    int64_t fwd_ms;           /* forward jump held against tombstone ages; loop */
    int64_t fwd_mono_ms;      /* monotonic time of the last one; loop thread */
    bool restamp_owed;        /* first round, or after a backward jump; loop */
    int64_t catchup_until_ms; /* monotonic end of that; loop thread */
};

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
    /* One series per status of the state machine (the enum, less its
     * unspecified 0), so that an empty status shows 0 rather than nothing. */
    const ProtobufCEnumDescriptor *d = &webshop__v1__order_status__descriptor;
    for (unsigned i = 0; i < d->n_values; i++) {
        int v = d->values[i].value;
        if (v <= 0 || v >= RECOVERY_STATUS_SLOTS) {
            continue;
        }
        char labels[64];
        snprintf(labels, sizeof labels, "status=\"%s\"", orders_status_name(v));
        m->orders[v] =
            ws_gauge_get(reg, "webshop_orders",
                         "Orders in the order database by status: PENDING waits for the"
                         " inventory's outcome (re-sent by recovery), SUCCESSFUL and"
                         " UNSUCCESSFUL are settled, CANCELED was canceled; tombstones (a"
                         " cancel for an order never seen) are not orders. Counted by the"
                         " recovery loop, at most once a second",
                         labels);
    }
}

static ws_err recovery_count_run(ws_db_conn *c, void *ctx)
{
    return order_db_count_by_status(c, ctx, RECOVERY_STATUS_SLOTS);
}

/* Refresh webshop_orders when RECOVERY_COUNT_MS have passed since the last
 * count; a failed count leaves the gauges as they were. */
static void recovery_metrics_count(recovery_metrics *m, ws_db_conn *c)
{
    int64_t mono = ws_clock_mono_ms();
    if (m->counted_ms != 0 && mono - m->counted_ms < RECOVERY_COUNT_MS) {
        return;
    }
    m->counted_ms = mono;
    int64_t counts[RECOVERY_STATUS_SLOTS];
    ws_db_txn_opts ro = {.read_only = true};
    ws_err err = ws_db_conn_txn(c, &ro, recovery_count_run, counts);
    if (err != WS_OK) {
        ws_log_debug("order_count_failed", "error=%s", ws_errname(err));
        return;
    }
    for (int s = 0; s < RECOVERY_STATUS_SLOTS; s++) {
        ws_gauge_set(m->orders[s], (double)counts[s]);
    }
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

/* The wall clock for this round, noting a jump. A forward one needs
 * nothing for the deadlines (each pass acts on at most batch rows, and
 * rounds are paced on the monotonic clock), but would make young
 * tombstones look old: it is added to the TTL until a TTL has passed on
 * the monotonic clock (recovery_ttl_ms). A backward one leaves deadlines
 * written before it too far ahead, which recovery_catch_up moves back, and
 * tombstones stamped in the future, which are stamped now. */
static int64_t recovery_clock(order_recovery *r)
{
    int64_t now;
    int64_t skew = ws_clock_watch_step(&r->watch, &now);
    int64_t mono = ws_clock_mono_ms();
    if (r->fwd_ms > 0 && mono - r->fwd_mono_ms >= r->opts.tombstone_ttl_ms) {
        r->fwd_ms = 0;
    }
    if (skew > WS_CLOCK_JUMP_MS || skew < -WS_CLOCK_JUMP_MS) {
        ws_log_warn("clock_jump", "loop=order_recovery jump_ms=%lld", (long long)skew);
        r->fwd_ms = r->fwd_ms + skew > 0 ? r->fwd_ms + skew : 0;
        if (skew > 0) {
            r->fwd_mono_ms = mono;
        } else {
            r->restamp_owed = true;
        }
        r->back_ms -= skew;
        if (r->back_ms < 0) {
            r->back_ms = 0;
        }
        r->catchup_until_ms =
            ws_clock_mono_ms() + r->back_ms + order_recovery_horizon_ms(&r->opts.policy);
    }
    return now;
}

/* The tombstone TTL for this round: plus a forward jump seen less than a
 * TTL ago on the monotonic clock. */
static int64_t recovery_ttl_ms(const order_recovery *r)
{
    int64_t ttl = r->opts.tombstone_ttl_ms;
    return r->fwd_ms > 0 && ws_clock_mono_ms() - r->fwd_mono_ms < ttl ? ttl + r->fwd_ms
                                                                      : ttl;
}

/* Reschedule after a backward jump until no deadline beyond the horizon is
 * left, or until the wall clock has passed every deadline the old clock
 * could have written. */
static void recovery_catch_up(order_recovery *r, ws_db_conn *c, int64_t now)
{
    size_t moved = 0;
    bool more = false;
    ws_err err =
        order_recovery_reschedule(c, &r->opts.policy, now, r->back_ms,
                                  RECOVERY_CATCHUP_FACTOR * r->opts.batch, &moved, &more);
    if ((err == WS_OK && !more) || ws_clock_mono_ms() >= r->catchup_until_ms) {
        r->back_ms = 0;
    }
}

/* One round of the five passes on a connection of the pool. */
static void recovery_round(order_recovery *r)
{
    const order_recovery_opts *o = &r->opts;
    ws_db_conn *c = NULL;
    ws_err err = ws_db_acquire(o->db, &c);
    if (err != WS_OK) {
        ws_log_debug("order_recovery_skipped", "error=%s", ws_errname(err));
        return;
    }
    order_recovery_stats st = {0};
    int64_t now = recovery_clock(r);
    if (r->back_ms > 0) {
        recovery_catch_up(r, c, now);
    }
    (void)order_recovery_resend_pending(c, &o->policy, now, o->batch, &st);
    (void)order_recovery_check_cancels(c, &o->policy, o->lookup, o->lookup_ctx, now,
                                       o->batch, &st);
    (void)order_recovery_fill_items(c, &o->policy, o->lookup, o->lookup_ctx, now,
                                    o->batch, &st);
    size_t failed_before = st.lookups_failed;
    (void)order_recovery_check_outcomes(c, &o->policy, o->lookup, o->lookup_ctx, now,
                                        o->batch, &st);
    if (r->restamp_owed && recovery_restamp_tombstones(c, now) == WS_OK) {
        r->restamp_owed = false;
    }
    (void)order_recovery_expire_tombstones(c, recovery_ttl_ms(r), now, o->batch, &st);
    recovery_metrics_count(&r->m, c);
    ws_db_release(c);
    recovery_metrics_add(&r->m, &st, st.lookups_failed - failed_before);
    bool queued = st.resent || st.cancels_resent || st.items_filled || st.checks_moved;
    if (queued && o->queued != NULL) {
        o->queued(o->queued_ctx);
    }
}

static void *recovery_thread_main(void *arg)
{
    order_recovery *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        pthread_mutex_unlock(&r->mu);
        recovery_round(r);
        struct timespec until = ws_clock_mono_after(r->opts.interval_ms);
        pthread_mutex_lock(&r->mu);
        while (!r->stop && pthread_cond_timedwait(&r->cv, &r->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

ws_err order_recovery_open(const order_recovery_opts *opts, order_recovery **out)
{
    if (opts == NULL || opts->db == NULL || opts->lookup == NULL ||
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
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        free(r);
        return WS_ENOMEM;
    }
    if (ws_clock_cond_init(&r->cv) != 0) {
        pthread_mutex_destroy(&r->mu);
        free(r);
        return WS_ENOMEM;
    }
    *out = r;
    return WS_OK;
}

ws_err order_recovery_start(order_recovery *r)
{
    if (r->started) {
        return WS_EINVAL;
    }
    (void)ws_clock_watch_step(&r->watch, NULL); /* a jump from here on is seen */
    r->restamp_owed = true;                     /* a jump while the service was down */
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
    free(r);
}
