/*
 * The Orders RPC service (GetOrder, ListOrders) of the order service: the
 * generated server binding (webshop/v1/order.rpc.h) filled with handlers
 * that answer from read-only transactions on the service's database pool,
 * so concurrent calls read in parallel beside the writers.
 */
#ifndef ORDER_API_H
#define ORDER_API_H

#include "db.h"
#include "err.h"
#include "webshop/v1/order.rpc.h"

typedef struct order_api order_api;

/* Handlers on db (the service's pool, already migrated; not owned, must
 * outlive the api). */
ws_err order_api_open(ws_db *db, order_api **out /* OUT */);

/* The binding to pass to webshop_v1_orders_register(); valid until
 * order_api_close(). */
const webshop_v1_orders_server *order_api_binding(order_api *a);

/* Free; a may be NULL. Close the RPC server first: no handler may be
 * running. */
void order_api_close(order_api *a);

#endif
