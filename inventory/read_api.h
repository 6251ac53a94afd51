/*
 * The Inventory RPC service (webshop.v1.Inventory: GetCatalog, GetProduct,
 * GetReservation) over the generated server bindings. RPC workers run
 * handlers concurrently, and a ws_store is one connection for one thread at
 * a time, so the read API keeps a small pool of store connections; a handler
 * borrows one for the length of the call. WAL lets these readers run beside
 * the event handler's writes.
 */
#ifndef INV_READ_API_H
#define INV_READ_API_H

#include "rpc_server.h"
#include "store.h"

typedef struct inv_read_api inv_read_api;

/* Open n_stores connections (at least 1) to the database of store_opts,
 * with the inventory schema. */
ws_err inv_read_api_open(const ws_store_opts *store_opts, int n_stores,
                         inv_read_api **out /* OUT */);

/* Register webshop.v1.Inventory on srv (before it starts). The API must
 * outlive the server: close the server first. */
ws_err inv_read_api_register(inv_read_api *api, ws_rpc_server *srv);

/* Close the connections, free; api may be NULL. No call may be running. */
void inv_read_api_close(inv_read_api *api);

#endif
