/*
 * The order service's recovery loops ("nothing stuck", DESIGN.md):
 *
 * - an order still PENDING when its next_resend_ms passes gets its OrderSent
 *   re-published (rebuilt from the stored items), with the delay doubling
 *   after every attempt up to the policy's cap; after max_attempts it is left
 *   alone and logged. A re-sent OrderSent makes the inventory re-publish the
 *   outcome it recorded (or reserve, if it never saw the order). Under a
 *   backlog re-sending would feed the load it waits on, so a due order is
 *   deferred (not counted as an attempt) while the outbox holds more than
 *   1,000 rows or while outcomes keep arriving for orders older than it
 *   (orders_progress_read): it goes out once the outcome stream has passed it or
 *   has been quiet for resend_after_ms.
 * - a CANCELED order whose cancel is not yet confirmed is checked when its
 *   next_resend_ms passes: the inventory's GetReservation answering RELEASED,
 *   REJECTED or TOMBSTONED confirms it (nothing is held, and nothing will
 *   be); RESERVED means our OrderCanceled has not been applied yet and
 *   RESERVATION_UNKNOWN that the inventory saw neither the order nor the
 *   cancel (a re-sent OrderCanceled makes it leave a tombstone): both, and a
 *   failed lookup, re-queue OrderCanceled, with the same backoff and bound.
 * - an order that reached a status without its OrderSent (the event was lost
 *   at this service only: the row was created by an outcome or a cancel) has
 *   no lines; when its items_due_ms passes, the inventory's GetReservation is
 *   asked for the items it saw, and they are filled in exactly as a late
 *   OrderSent would. With nothing to learn (the inventory never saw the
 *   order either) it is asked again with the same backoff and bound.
 *   Since an outcome for an order without items is checked (below), this
 *   pass serves the rows a cancel created (tombstones): lines found make the
 *   tombstone a real CANCELED order, exactly as a late OrderSent would.
 * - an order marked for an outcome check (orders.h: a conflicting outcome,
 *   or an outcome before the items) is checked when its check_due_ms passes
 *   (at once, then with the same backoff and bound): GetReservation is
 *   asked and orders_settle applies the inventory's record. Bus handlers
 *   only mark the order; every RPC is made here, on the recovery thread.
 * - tombstones (rows only a CancelOrder created, orders.h) older than
 *   tombstone_ttl_ms are deleted once recovery has nothing left to do for
 *   them (the cancel confirmed or given up, no items check due).
 *
 * Everything re-published goes through the outbox in a transaction with the
 * bookkeeping (attempts, next deadline): recovery never publishes itself.
 * The pass functions take now_ms so that tests drive the clock; the loop
 * thread calls them with the wall clock.
 *
 * Clocks (lib/clock.h). Deadlines in rows are wall-clock times (they
 * survive a restart and every replica compares them); everything in the
 * process is on the monotonic clock: the wait between rounds, the lookup
 * deadlines. A wall-clock jump is handled so:
 * - forward: rows look due early. Each pass acts on at most batch rows of
 *   its kind, oldest deadline first, and rounds are interval_ms apart on
 *   the monotonic clock, so a jump costs at most batch early re-sends per
 *   kind and round (as a backlog would: re-sends are idempotent), never a
 *   storm; the outbox-backlog guard still defers re-sends.
 * - backward by B: deadlines written before the jump lie B too far ahead,
 *   and would stall for B. No deadline is ever written more than
 *   order_recovery_horizon_ms ahead of its writer's clock, so a deadline
 *   beyond now + horizon was written by a clock ahead of ours: the loop
 *   sees the jump (a ws_clock_watch: wall progress minus monotonic
 *   progress below -WS_CLOCK_JUMP_MS between rounds) and, at the start of
 *   each round until none is left (or B + horizon has passed on the
 *   monotonic clock), moves such deadlines back by B, not before now
 *   (order_recovery_reschedule). A deadline within the horizon is left: it
 *   waits at most the horizon. An outcome seen "in the future" (the
 *   progress stamp of the old clock) counts as quiet, so the backlog guard
 *   does not hold re-sends for B either.
 *
 * Several replicas (one PostgreSQL database) run these loops at once: each
 * pass claims the rows it works (order_db.h: FOR UPDATE SKIP LOCKED on
 * PostgreSQL, then the deadline moved to a lease of
 * ORDER_RECOVERY_LEASE_MS), so no row is worked by two replicas at once,
 * and the rows of a replica that died mid-pass are due again when the
 * lease ends. A pass runs on the caller's connection (held, no
 * transaction open); it opens its own short transactions on it.
 */
#ifndef ORDER_RECOVERY_H
#define ORDER_RECOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "metrics.h"
#include "orders.h"
#include "db.h"
#include "webshop/v1/inventory.pb-c.h"

/* Ask the inventory what it decided for order_id. WS_OK with *resp, the
 * answer (any ReservationStatus, RESERVATION_UNKNOWN included, and the items
 * it saw), owned by the caller (free_unpacked); any other value means the
 * question could not be answered (unavailable, deadline) and *resp is
 * untouched. Called on the recovery thread, outside any transaction. */
typedef ws_err (*order_recovery_lookup_fn)(
    void *ctx, const char *order_id,
    Webshop__V1__GetReservationResponse **resp /* OUT */);

/* What one pass did; the pass functions add to it. */
typedef struct order_recovery_stats {
    size_t resent;              /* OrderSent re-queued */
    size_t resend_gave_up;      /* PENDING orders left after max_attempts */
    size_t cancels_resent;      /* OrderCanceled re-queued */
    size_t cancels_confirmed;   /* cancels the inventory confirmed */
    size_t cancel_gave_up;      /* CANCELED orders left unconfirmed after max_attempts */
    size_t lookups_failed;      /* GetReservation calls that failed or were skipped */
    size_t items_filled;        /* orders whose lines came back from the inventory */
    size_t items_gave_up;       /* orders left without lines after max_attempts */
    size_t checks_settled;      /* outcome checks settled by the inventory's record */
    size_t checks_moved;        /* ... that changed the status (status queued) */
    size_t checks_unknown;      /* the record said nothing: asked again later */
    size_t checks_gave_up;      /* checks dropped after max_attempts */
    size_t checks_by_record[5]; /* answers by Webshop__V1__ReservationStatus 0..4 */
    size_t tombstones_expired;  /* tombstone rows deleted */
} order_recovery_stats;

/* Re-queue OrderSent for up to limit PENDING orders due at now_ms (oldest
 * deadline first), in one transaction, and log each. WS_OK or a database error
 * (then nothing is written and stats are unchanged). */
ws_err order_recovery_resend_pending(ws_db_conn *c, const orders_policy *p,
                                     int64_t now_ms, size_t limit,
                                     order_recovery_stats *stats /* OUT */);

/* Check up to limit unconfirmed CANCELED orders due at now_ms with lookup
 * (one call per order; after the first failed call the rest of the pass is
 * not looked up but treated as failed, so a down inventory costs one
 * deadline per pass), then confirm or re-queue each in its own transaction,
 * and log each. WS_OK or the first database error. */
ws_err order_recovery_check_cancels(ws_db_conn *c, const orders_policy *p,
                                    order_recovery_lookup_fn lookup, void *lookup_ctx,
                                    int64_t now_ms, size_t limit,
                                    order_recovery_stats *stats /* OUT */);

/* Ask the inventory for the lines of up to limit orders whose items_due_ms
 * passed at now_ms (lookup as for cancels: one failed call skips the rest
 * of the pass), fill them in where it knows them, else re-arm or give up.
 * WS_OK or the first database error. */
ws_err order_recovery_fill_items(ws_db_conn *c, const orders_policy *p,
                                 order_recovery_lookup_fn lookup, void *lookup_ctx,
                                 int64_t now_ms, size_t limit,
                                 order_recovery_stats *stats /* OUT */);

/* Settle up to limit orders whose check_due_ms passed at now_ms: ask
 * lookup for each (one failed call skips the rest of the pass, counted in
 * lookups_failed; they stay due), then orders_settle with the answer, and
 * log each. WS_OK or the first database error. */
ws_err order_recovery_check_outcomes(ws_db_conn *c, const orders_policy *p,
                                     order_recovery_lookup_fn lookup, void *lookup_ctx,
                                     int64_t now_ms, size_t limit,
                                     order_recovery_stats *stats /* OUT */);

/* Delete up to limit tombstones created at or before now_ms - ttl_ms for
 * which nothing is left to do (cancel confirmed or given up, no items check
 * due), in one transaction. WS_EINVAL for ttl_ms <= 0; WS_OK or a database
 * error (nothing deleted). */
ws_err order_recovery_expire_tombstones(ws_db_conn *c, int64_t ttl_ms, int64_t now_ms,
                                        size_t limit,
                                        order_recovery_stats *stats /* OUT */);

/* How far ahead of its writer's clock a deadline can be: the longest delay
 * of p plus the lease. */
int64_t order_recovery_horizon_ms(const orders_policy *p);

/* After the wall clock went back by back_ms (> 0): move every deadline
 * (re-send, cancel check, items check, outcome check; leases included)
 * that lies beyond now_ms + order_recovery_horizon_ms back by back_ms, but
 * not before now_ms, looking at up to limit rows of each kind (oldest
 * deadline first), one transaction per kind; nothing is counted as an
 * attempt. *moved is added to; *more (OUT) is true when a kind had limit
 * rows or more in range (call again). WS_EINVAL for back_ms < 0; WS_OK or
 * a database error (that kind unchanged). */
ws_err order_recovery_reschedule(ws_db_conn *c, const orders_policy *p, int64_t now_ms,
                                 int64_t back_ms, size_t limit, size_t *moved,
                                 bool *more /* OUT */);

/* How long a pass holds the rows it claimed (longer than a pass of
 * GetReservation calls takes: a batch stops at the first failed call). */
#define ORDER_RECOVERY_LEASE_MS 60000

/* Default tombstone lifetime: long past any bus race (a cancel overtaking
 * its OrderSent by more than a day is not a race), short enough that stray
 * cancels do not pile up. */
#define ORDER_RECOVERY_TOMBSTONE_TTL_MS (24 * 3600 * 1000LL)

/* The loop: a thread that runs the five passes every interval_ms, each
 * order it works on under a new trace of its own (trace.h), and refreshes
 * the gauge webshop_orders{status} (orders by status, order_db_count_by_status)
 * at most once a second. */
typedef struct order_recovery order_recovery;

typedef struct order_recovery_opts {
    ws_db *db; /* the service's pool (not owned): a connection per round */
    orders_policy policy;
    order_recovery_lookup_fn lookup; /* required */
    void *lookup_ctx;
    void (*queued)(
        void *ctx); /* called after a pass queued rows (kick the relay); may be NULL */
    void *queued_ctx;
    int interval_ms;          /* 0 = 250 */
    size_t batch;             /* orders per pass and kind; 0 = 100 */
    int64_t tombstone_ttl_ms; /* 0 = ORDER_RECOVERY_TOMBSTONE_TTL_MS */
    ws_metrics *metrics;      /* NULL = default registry */
} order_recovery_opts;

/* Create the loop (not running). */
ws_err order_recovery_open(const order_recovery_opts *opts,
                           order_recovery **out /* OUT */);

/* Start the thread. WS_EINVAL if already started. */
ws_err order_recovery_start(order_recovery *r);

/* Stop the thread (waiting for the pass in progress, which is bounded by one
 * lookup deadline), free. r may be NULL. */
void order_recovery_close(order_recovery *r);

#endif
