/*
 * The outcome park of the order service's consumer (consumer.c): with
 * replicas, an inventory outcome (InStock, OutOfStock) that comes before its
 * order is recorded is held here in memory for OUTCOME_PARK_MS and then
 * handed back, by the park's own thread, to the apply callback, in the order
 * the outcomes came. By then the replica that got the order's OrderSent has
 * normally committed it, so the outcome moves the order as in order instead
 * of racing that replica's insert. An apply that fails on the database is
 * parked again (OUTCOME_PARK_RETRY_MS later) unless the park is stopping.
 * At most OUTCOME_PARK_MAX outcomes wait at once; past that outcome_park_put
 * refuses and the caller applies the outcome as it comes.
 *
 * A crash loses what is parked, as it loses an event inside a handler
 * (libmosquitto has acknowledged it): the order's re-send brings the outcome
 * again. Thread-safe: put from any thread; open, start and close from one.
 */
#ifndef ORDER_OUTCOME_PARK_H
#define ORDER_OUTCOME_PARK_H

#include <stdbool.h>

#include "err.h"
#include "metrics.h"
#include "orders.h"
#include "trace.h"
#include "uuid_text.h"

#define OUTCOME_PARK_MS       50
#define OUTCOME_PARK_MAX      512
#define OUTCOME_PARK_RETRY_MS 200

/* One parked outcome: the event's fields, its trace and wire format. */
typedef struct outcome_parked {
    bool in_stock; /* InStock; else OutOfStock with reason */
    char id[WS_UUID_TEXT_LEN];
    char reason[ORDERS_MAX_REASON + 1];
    ws_trace trace;
    bool json;
} outcome_parked;

/* Applies e (on the park's thread, e's trace current): WS_OK or WS_EINVAL
 * end it; another error parks it again unless the park is stopping. */
typedef ws_err (*outcome_park_apply_fn)(void *ctx, const outcome_parked *e);

typedef struct outcome_park outcome_park;

/* A stopped park; counts in webshop_order_outcomes_parked_total of m (NULL:
 * the default registry). */
ws_err outcome_park_open(ws_metrics *m, outcome_park_apply_fn apply, void *ctx,
                         outcome_park **out /* OUT */);

/* Start its thread; until then (or when that fails) it takes nothing. */
void outcome_park_start(outcome_park *pk);

/* Park e for OUTCOME_PARK_MS: true when it was taken (counted), false when
 * the park is not running or full. */
bool outcome_park_put(outcome_park *pk, const outcome_parked *e);

/* Whether the thread runs (outcomes may be parked). */
bool outcome_park_running(const outcome_park *pk);

/* Apply what is parked, stop the thread and free. NULL is a no-op. */
void outcome_park_close(outcome_park *pk);

#endif
