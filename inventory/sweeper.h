/*
 * The inventory's periodic work, on a thread of its own that takes
 * connections of the service's pool for its short transactions (never on
 * the bus network thread, which must not wait on an RPC; and never holding
 * a connection across an RPC). Every pass:
 *
 * - expires tombstones older than tombstone_ttl_ms (at most batch per pass;
 *   see stock.h for the rule and what forgetting a tombstone means);
 * - when an Orders RPC client is given (--orders-url), releases orphan
 *   reservations: the held, unconfirmed reservations older than
 *   orphan_after_ms (oldest first, in batches of batch; another batch in the
 *   same pass only while the last one was full and fully answered, and for
 *   at most one interval) are looked up with Orders.GetOrder, one call at
 *   a time with a deadline of orders_deadline_ms, outside any transaction;
 *   each answer is applied by inv_stock_orphan_settle: found -> confirmed,
 *   NOT_FOUND -> released as an orphan (StockChanged through the outbox,
 *   relay kicked), no answer -> left. UNAVAILABLE, DEADLINE_EXCEEDED or
 *   CANCELLED end the pass (the order service is down: one deadline per
 *   pass is what that costs); any other error leaves that one reservation
 *   and goes on with the next.
 *
 * Without an Orders client there is no orphan release (logged once at open).
 *
 * Metrics (default registry unless opts.metrics):
 *   webshop_inventory_orphans_released_total            counter
 *   webshop_inventory_orphan_checks_total{result=...}   counter: found,
 *       not_found, failed (GetOrder answers)
 *   webshop_inventory_tombstones_expired_total          counter
 *   webshop_inventory_sweep_errors_total                counter: database errors
 */
#ifndef INV_SWEEPER_H
#define INV_SWEEPER_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "outbox.h"
#include "rpc_client.h"
#include "db.h"

typedef struct inv_sweeper inv_sweeper;

typedef struct inv_sweeper_opts {
    ws_db *db;                   /* the service's pool; not owned, must outlive it */
    ws_outbox_relay *relay;      /* kicked after a release; not owned; may be NULL */
    ws_rpc_client *orders;       /* Orders RPC; not owned, must outlive the
                                    sweeper; NULL = no orphan release */
    uint32_t orders_deadline_ms; /* one GetOrder call; 0 = 2000 */
    int64_t orphan_after_ms;     /* > 0 when orders is set */
    int64_t tombstone_ttl_ms;    /* > 0 */
    int interval_ms;             /* between passes; 0 = orphan_after_ms / 4
                                    clamped to 50..1000 */
    size_t batch;                /* reservations and tombstones per pass; 0 = 100 */
    ws_metrics *metrics;         /* NULL = default registry */
} inv_sweeper_opts;

/* What one pass did. */
typedef struct inv_sweep_stats {
    size_t checked;   /* GetOrder calls answered (found or NOT_FOUND) */
    size_t confirmed; /* reservations the order service knows */
    size_t released;  /* orphans released */
    size_t failed;    /* calls without an answer, or skipped after one */
    size_t expired;   /* tombstones deleted */
} inv_sweep_stats;

/* Create the sweeper (not running). WS_EINVAL for a missing pool or a
 * bound out of range. */
ws_err inv_sweeper_open(const inv_sweeper_opts *opts, inv_sweeper **out /* OUT */);

/* Start the thread. WS_EINVAL if already started. */
ws_err inv_sweeper_start(inv_sweeper *w);

/* One pass at now_ms (wall clock, ms), on the caller's thread; the thread
 * calls this. Not while the thread runs. *stats (OUT) may be NULL. WS_OK or
 * the first database error (logged and counted). */
ws_err inv_sweeper_pass(inv_sweeper *w, int64_t now_ms, inv_sweep_stats *stats /* OUT */);

/* Stop the thread (waiting for the pass in progress, bounded by one
 * GetOrder deadline), free. w may be NULL. */
void inv_sweeper_close(inv_sweeper *w);

#endif
