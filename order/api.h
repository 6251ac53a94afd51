/*
 * The Orders RPC service (GetOrder, ListOrders) of the order service: the
 * generated server binding (webshop/v1/order.rpc.h) filled with handlers
 * that answer from a small pool of read connections to the order database,
 * so concurrent calls read in parallel beside the writer (WAL).
 */
#ifndef ORDER_API_H
#define ORDER_API_H

#include "err.h"
#include "webshop/v1/order.rpc.h"

typedef struct order_api order_api;

/* Open readers connections to the database at path (already migrated by the
 * writer; 0 = 4). On success *out owns them. */
ws_err order_api_open(const char *path, int readers, order_api **out /* OUT */);

/* The binding to pass to webshop_v1_orders_register(); valid until
 * order_api_close(). */
const webshop_v1_orders_server *order_api_binding(order_api *a);

/* Close the connections and free; a may be NULL. Close the RPC server
 * first: no handler may be running. */
void order_api_close(order_api *a);

#endif
