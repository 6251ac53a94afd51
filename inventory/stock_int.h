/*
 * Private to the stock module (stock.c, stock_read.c, stock_sweep.c): the
 * outbox helpers and the release step that a cancel and an orphan release
 * share, so that both restore balances and queue StockChanged the same way.
 * Every function runs inside the caller's transaction on the caller's
 * connection.
 */
#ifndef INV_STOCK_INT_H
#define INV_STOCK_INT_H

#include <stddef.h>
#include <stdint.h>

#include "stock.h"
#include "stock_db.h"

/* Queue one StockChanged, with the balance this transaction sees, for each
 * distinct product among ids[0..n); *n_queued is incremented per event. */
ws_err inv__stock_queue_changed(ws_db_conn *c, const int32_t *ids, size_t n,
                                size_t *n_queued);

/* The items of order_id, whose status this transaction has just moved to
 * released (so no one else restores them), go back to stock in product-id
 * order (the order every writer locks products in), and one StockChanged
 * per product touched is queued -- or, with moved non-NULL, the products
 * touched are listed in moved[0..*n_moved) (room for
 * WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS) instead. *n_items (OUT) the items
 * restored; *n_queued is incremented per event. */
ws_err inv__stock_restore(ws_db_conn *c, const char *order_id, size_t *n_items /* OUT */,
                          size_t *n_queued, int32_t *moved, size_t *n_moved /* OUT */);

/* The balances of the products ids[0..n) (sorted) moved in this
 * transaction: queue one StockChanged per product (inv__stock_queue_changed,
 * *n_queued incremented per event) -- or, with moved non-NULL
 * (inv_stock_opts.defer_changed), list the distinct ids in
 * moved[0..*n_moved) for the caller to queue. */
ws_err inv__stock_moved(ws_db_conn *c, const int32_t *ids, size_t n, size_t *n_queued,
                        int32_t *moved, size_t *n_moved /* OUT */);

/* Sort lines[0..n) by product id, keeping the order of equal ids: the
 * order in which every writer takes or restocks products. */
void inv__stock_lines_sort(inv_db_line *lines, size_t n);

#endif
