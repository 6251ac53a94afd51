/*
 * Private to the stock module (stock.c, stock_sweep.c): the statement
 * helpers and the release step that a cancel and an orphan release share,
 * so that both restore balances and queue StockChanged the same way. Every
 * function runs inside the caller's transaction on the caller's store.
 */
#ifndef INV_STOCK_INT_H
#define INV_STOCK_INT_H

#include <stddef.h>
#include <stdint.h>

#include "stock.h"

/* Wall clock in milliseconds: created_ms / updated_ms of reservations. */
int64_t inv__stock_now_ms(void);

/* Step a statement that returns no row, then reset it. */
ws_err inv__stock_stmt_run(sqlite3_stmt *st);

/* Release the held reservation of order_id (lower case, status reserved):
 * put its items back, set status released with release kind kind
 * ("canceled" or "orphan") and reason (NULL = ""), updated at now_ms, and
 * queue one StockChanged per product touched. *n_items and *n_queued (OUT)
 * count the items restored and the events queued. WS_ESTORE when the
 * record is not a held reservation (the caller checks first). */
ws_err inv__stock_release(ws_store *s, const char *order_id, const char *kind,
                          const char *reason, int64_t now_ms, size_t *n_items /* OUT */,
                          size_t *n_queued /* OUT */);

#endif
