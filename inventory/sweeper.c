/*
 * The sweeper thread (see sweeper.h): a pass, then a wait on a condition
 * variable for the interval or for close. The orphan step reads its
 * candidates, then for each one asks Orders.GetOrder with no transaction
 * open and no connection held (the call may take up to its deadline and
 * must not hold the write lock the bus handlers need, nor a connection of
 * the pool) and settles it in a short transaction of its own
 * (stock_sweep.c re-checks the record there).
 *
 * Tracing: no request starts a sweep, so each candidate gets a new trace
 * (trace.h) of its own, current from its GetOrder (the order service logs
 * under the same trace_id) to the lines about its outcome and the events
 * its release queues (outbox rows keep the trace).
 *
 * Clocks (clock.h): ages are wall time (created_ms, updated_ms are stored
 * and compared across replicas), checked against a ws_clock_watch at every
 * pass. After a forward jump of J ms, a row's wall age overstates its true
 * age by up to J: until the bound (orphan_after_ms, tombstone_ttl_ms) has
 * passed on the monotonic clock since the jump, that bound is judged as
 * bound + J, so no young reservation is released and no young tombstone
 * expires early (a row stamped after the jump waits at most one bound
 * more). After a backward jump, and at the first pass (a jump while the
 * service was down), rows stamped in the future are stamped now
 * (inv_stock_restamp_future): their age counts from now, instead of
 * staying negative for as long as the jump was.
 */
#include "sweeper.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "clock.h"
#include "log.h"
#include "stock.h"
#include "trace.h"
#include "webshop/v1/order.rpc.h"

#define SWEEPER_DEFAULT_BATCH    100
#define SWEEPER_DEFAULT_DEADLINE 2000

struct inv_sweeper {
    inv_sweeper_opts opts;            /* thread only once started */
    inv_orphan_candidate *candidates; /* opts.batch entries; thread only */
    ws_counter *released;             /* webshop_inventory_orphans_released_total */
    ws_counter *checks[3];            /* by inv_order_lookup */
    ws_counter *expired;              /* webshop_inventory_tombstones_expired_total */
    ws_counter *errors;               /* webshop_inventory_sweep_errors_total */
    ws_clock_watch watch;             /* pass only (inv_sweeper_pass) */
    int64_t fwd_ms;                   /* forward jumps still held against ages */
    int64_t fwd_mono_ms;              /* monotonic time of the last one */
    bool restamp_owed;                /* first pass, or after a backward jump */
    int64_t orphan_after_ms;          /* this pass's bound (opts + held jump) */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu; /* guards stop */
    pthread_cond_t cv;
    bool stop;
};

static const char *const sweeper_lookup_names[] = {
    [INV_LOOKUP_FOUND] = "found",
    [INV_LOOKUP_NOT_FOUND] = "not_found",
    [INV_LOOKUP_FAILED] = "failed",
};

static bool sweeper_stopping(inv_sweeper *w)
{
    pthread_mutex_lock(&w->mu);
    bool stop = w->stop;
    pthread_mutex_unlock(&w->mu);
    return stop;
}

/* Ask the order service about order_id. *code (OUT) is the RPC status. */
static inv_order_lookup sweeper_lookup(inv_sweeper *w, const char *order_id,
                                       ws_rpc_code *code)
{
    Webshop__V1__GetOrderRequest req = WEBSHOP__V1__GET_ORDER_REQUEST__INIT;
    Webshop__V1__GetOrderResponse *resp = NULL;
    char msg[WS_RPC_MSG_LEN] = "";
    req.id = (char *)order_id;
    *code = webshop_v1_orders_get_order_ex(w->opts.orders, &req, &resp,
                                           w->opts.orders_deadline_ms, msg, sizeof(msg));
    if (*code == WS_RPC_NOT_FOUND) {
        return INV_LOOKUP_NOT_FOUND;
    }
    if (*code != WS_RPC_OK) {
        ws_log_debug("orphan_lookup_failed", "order_id=%s code=%s message=%s", order_id,
                     ws_rpc_code_name(*code), msg);
        return INV_LOOKUP_FAILED;
    }
    bool has_order = resp->order != NULL;
    webshop__v1__get_order_response__free_unpacked(resp, NULL);
    if (!has_order) {
        *code = WS_RPC_INTERNAL; /* an OK without the order answers nothing */
        return INV_LOOKUP_FAILED;
    }
    return INV_LOOKUP_FOUND;
}

/* True for the codes that say the order service is not answering at all. */
static bool sweeper_service_down(ws_rpc_code code)
{
    return code == WS_RPC_UNAVAILABLE || code == WS_RPC_DEADLINE_EXCEEDED ||
           code == WS_RPC_CANCELLED;
}

/* Settle one candidate with what the order service answered. */
static ws_err sweeper_settle(inv_sweeper *w, const inv_orphan_candidate *c,
                             inv_order_lookup found, int64_t now_ms, inv_sweep_stats *st)
{
    inv_orphan_outcome out;
    ws_err err = inv_stock_orphan_settle(w->opts.db, c->order_id, found, now_ms,
                                         w->orphan_after_ms, &out);
    if (err != WS_OK) {
        return err;
    }
    switch (out.action) {
    case INV_ORPHAN_CONFIRMED:
        st->confirmed++;
        ws_log_info("reservation_confirmed", "order_id=%s age_ms=%lld", c->order_id,
                    (long long)(now_ms - c->created_ms));
        break;
    case INV_ORPHAN_RELEASED:
        st->released++;
        ws_counter_inc(w->released);
        ws_outbox_relay_kick(w->opts.relay);
        ws_log_warn("orphan_released",
                    "order_id=%s age_ms=%lld items=%zu queued=%zu reason=%s", c->order_id,
                    (long long)(now_ms - c->created_ms), out.n_items, out.n_queued,
                    out.reason);
        break;
    case INV_ORPHAN_LEFT:
    case INV_ORPHAN_SKIPPED:
        break;
    }
    return WS_OK;
}

/* Ask about one candidate and settle it, under a new trace. *found (OUT)
 * and *code (OUT): the lookup's answer, as sweeper_lookup gives it; nothing
 * is settled when it failed. */
static ws_err sweeper_orphan_one(inv_sweeper *w, const inv_orphan_candidate *c,
                                 int64_t now_ms, inv_sweep_stats *st,
                                 inv_order_lookup *found, ws_rpc_code *code)
{
    ws_trace trace;
    ws_trace_new(&trace);
    ws_trace_set_current(&trace);
    *found = sweeper_lookup(w, c->order_id, code);
    ws_counter_inc(w->checks[*found]);
    ws_err err = WS_OK;
    if (*found != INV_LOOKUP_FAILED) {
        st->checked++;
        err = sweeper_settle(w, c, *found, now_ms, st);
    }
    ws_trace_set_current(NULL);
    return err;
}

/* Ask about and settle one batch of candidates. *more (OUT): every one got
 * an answer and the batch was full, so another batch may be due. */
static ws_err sweeper_orphan_batch(inv_sweeper *w, int64_t now_ms, inv_sweep_stats *st,
                                   bool *more)
{
    size_t n = 0;
    *more = false;
    ws_err err = inv_stock_orphan_candidates(w->opts.db, now_ms, w->orphan_after_ms,
                                             w->candidates, w->opts.batch, &n);
    size_t answered = 0;
    for (size_t i = 0; err == WS_OK && i < n; i++) {
        if (sweeper_stopping(w)) {
            return WS_OK;
        }
        ws_rpc_code code;
        inv_order_lookup found;
        err = sweeper_orphan_one(w, &w->candidates[i], now_ms, st, &found, &code);
        if (found == INV_LOOKUP_FAILED) {
            st->failed++;
            if (sweeper_service_down(code)) {
                st->failed += n - i - 1; /* the rest waits for the next pass */
                ws_log_debug("orphan_sweep_deferred", "code=%s left=%zu",
                             ws_rpc_code_name(code), n - i);
                return WS_OK;
            }
            continue;
        }
        answered++;
    }
    *more = err == WS_OK && n == w->opts.batch && answered == n;
    return err;
}

/* The orphan step of a pass: batches while they come full and answered,
 * for at most one interval, so a backlog (a burst of orders reaching the
 * bound together) drains faster than one batch per interval. */
static ws_err sweeper_orphans(inv_sweeper *w, int64_t now_ms, inv_sweep_stats *st)
{
    int64_t until = ws_clock_mono_ms() + w->opts.interval_ms;
    bool more = true;
    ws_err err = WS_OK;
    while (err == WS_OK && more) {
        err = sweeper_orphan_batch(w, now_ms, st, &more);
        more = more && ws_clock_mono_ms() < until;
    }
    return err;
}

/* Read the watch: note a forward jump (held against ages for a bound of
 * monotonic time), owe a re-stamp after a backward one. */
static void sweeper_clock_step(inv_sweeper *w)
{
    int64_t skew = ws_clock_watch_step(&w->watch, NULL);
    int64_t mono = ws_clock_mono_ms();
    int64_t hold = w->opts.tombstone_ttl_ms > w->opts.orphan_after_ms
                       ? w->opts.tombstone_ttl_ms
                       : w->opts.orphan_after_ms;
    if (w->fwd_ms > 0 && mono - w->fwd_mono_ms >= hold) {
        w->fwd_ms = 0;
    }
    if (skew > WS_CLOCK_JUMP_MS || skew < -WS_CLOCK_JUMP_MS) {
        ws_log_warn("clock_jump", "loop=inventory_sweeper jump_ms=%lld", (long long)skew);
        w->fwd_ms = w->fwd_ms + skew > 0 ? w->fwd_ms + skew : 0;
        if (skew > 0) {
            w->fwd_mono_ms = mono;
        } else {
            w->restamp_owed = true;
        }
    }
}

/* What a forward jump adds to bound_ms in this pass: the jump while less
 * than bound_ms has passed on the monotonic clock since it, else 0. */
static int64_t sweeper_held_ms(const inv_sweeper *w, int64_t bound_ms)
{
    return w->fwd_ms > 0 && ws_clock_mono_ms() - w->fwd_mono_ms < bound_ms ? w->fwd_ms
                                                                           : 0;
}

/* Rows stamped in the future (a backward jump) are stamped now. */
static ws_err sweeper_restamp(inv_sweeper *w, int64_t now_ms)
{
    size_t n = 0;
    ws_err err = inv_stock_restamp_future(w->opts.db, now_ms, &n);
    if (err == WS_OK) {
        w->restamp_owed = false;
        if (n > 0) {
            ws_log_warn("clock_restamped", "loop=inventory_sweeper count=%zu", n);
        }
    }
    return err;
}

ws_err inv_sweeper_pass(inv_sweeper *w, int64_t now_ms, inv_sweep_stats *stats)
{
    inv_sweep_stats st = {0};
    sweeper_clock_step(w);
    ws_err err = w->restamp_owed ? sweeper_restamp(w, now_ms) : WS_OK;
    int64_t ttl = w->opts.tombstone_ttl_ms;
    if (err == WS_OK) {
        err =
            inv_stock_tombstones_expire(w->opts.db, now_ms, ttl + sweeper_held_ms(w, ttl),
                                        w->opts.batch, &st.expired);
    }
    w->orphan_after_ms =
        w->opts.orphan_after_ms + sweeper_held_ms(w, w->opts.orphan_after_ms);
    if (err == WS_OK && st.expired > 0) {
        ws_counter_add(w->expired, st.expired);
        ws_log_info("tombstones_expired", "count=%zu ttl_ms=%lld", st.expired,
                    (long long)w->opts.tombstone_ttl_ms);
    }
    if (err == WS_OK && w->opts.orders != NULL) {
        err = sweeper_orphans(w, now_ms, &st);
    }
    if (err != WS_OK) {
        ws_counter_inc(w->errors);
        ws_log_error("sweep_failed", "error=%s", ws_errname(err));
    }
    if (stats != NULL) {
        *stats = st;
    }
    return err;
}

static void *sweeper_thread_main(void *arg)
{
    inv_sweeper *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        pthread_mutex_unlock(&w->mu);
        (void)inv_sweeper_pass(w, ws_clock_wall_ms(), NULL);
        struct timespec until = ws_clock_mono_after(w->opts.interval_ms);
        pthread_mutex_lock(&w->mu);
        while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0) {
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Defaults filled in; false for a bound out of range. */
static bool sweeper_opts_fill(inv_sweeper_opts *o)
{
    if (o->db == NULL || o->tombstone_ttl_ms <= 0 || o->interval_ms < 0 ||
        (o->orders != NULL && o->orphan_after_ms <= 0)) {
        return false;
    }
    if (o->batch == 0) {
        o->batch = SWEEPER_DEFAULT_BATCH;
    }
    if (o->orders_deadline_ms == 0) {
        o->orders_deadline_ms = SWEEPER_DEFAULT_DEADLINE;
    }
    if (o->interval_ms == 0) {
        int64_t iv = o->orders != NULL ? o->orphan_after_ms / 4 : 1000;
        o->interval_ms = (int)(iv < 50 ? 50 : iv > 1000 ? 1000 : iv);
    }
    return true;
}

static void sweeper_metrics_init(inv_sweeper *w)
{
    ws_metrics *m = w->opts.metrics ? w->opts.metrics : ws_metrics_default();
    w->released = ws_counter_get(m, "webshop_inventory_orphans_released_total",
                                 "Reservations released because the order service did"
                                 " not know the order",
                                 NULL);
    for (int i = 0; i < 3; i++) {
        char labels[32];
        snprintf(labels, sizeof(labels), "result=\"%s\"", sweeper_lookup_names[i]);
        w->checks[i] = ws_counter_get(m, "webshop_inventory_orphan_checks_total",
                                      "Orders.GetOrder calls of the orphan sweep, by"
                                      " answer",
                                      labels);
    }
    w->expired = ws_counter_get(m, "webshop_inventory_tombstones_expired_total",
                                "Cancel-before-order tombstones deleted after"
                                " --tombstone-ttl",
                                NULL);
    w->errors = ws_counter_get(m, "webshop_inventory_sweep_errors_total",
                               "Sweeper passes that met a database error", NULL);
}

ws_err inv_sweeper_open(const inv_sweeper_opts *opts, inv_sweeper **out)
{
    if (opts == NULL || out == NULL) {
        return WS_EINVAL;
    }
    inv_sweeper_opts o = *opts;
    if (!sweeper_opts_fill(&o)) {
        return WS_EINVAL;
    }
    inv_sweeper *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return WS_ENOMEM;
    }
    w->candidates = calloc(o.batch, sizeof(*w->candidates));
    bool ok = w->candidates != NULL && ws_clock_cond_init(&w->cv) == 0;
    if (ok && pthread_mutex_init(&w->mu, NULL) != 0) {
        pthread_cond_destroy(&w->cv);
        ok = false;
    }
    if (!ok) {
        free(w->candidates);
        free(w);
        return WS_ENOMEM;
    }
    w->opts = o;
    w->restamp_owed = true;
    (void)ws_clock_watch_step(&w->watch, NULL); /* a jump from here on is seen */
    sweeper_metrics_init(w);
    if (o.orders == NULL) {
        ws_log_info("orphan_release_off", "reason=%s", "no --orders-url given");
    }
    *out = w;
    return WS_OK;
}

ws_err inv_sweeper_start(inv_sweeper *w)
{
    if (w == NULL || w->started) {
        return WS_EINVAL;
    }
    if (pthread_create(&w->thread, NULL, sweeper_thread_main, w) != 0) {
        return WS_ENOMEM;
    }
    w->started = true;
    return WS_OK;
}

void inv_sweeper_close(inv_sweeper *w)
{
    if (w == NULL) {
        return;
    }
    if (w->started) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL);
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->candidates);
    free(w);
}
