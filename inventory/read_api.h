/*
 * The Inventory RPC service (webshop.v1.Inventory: GetCatalog, GetProduct,
 * GetReservation) over the generated server bindings. RPC workers run
 * handlers concurrently; each call reads in a read-only transaction on a
 * connection of the service's pool (stock.h's read side), so no handler
 * waits for the consumer's writes (WAL on SQLite, MVCC on PostgreSQL).
 */
#ifndef INV_READ_API_H
#define INV_READ_API_H

#include "db.h"
#include "rpc_server.h"

typedef struct inv_read_api inv_read_api;

/* Create the API on db (the service's pool, migrated; not owned, must
 * outlive the API). */
ws_err inv_read_api_open(ws_db *db, inv_read_api **out /* OUT */);

/* Register webshop.v1.Inventory on srv (before it starts). The API must
 * outlive the server: close the server first. */
ws_err inv_read_api_register(inv_read_api *api, ws_rpc_server *srv);

/* Free; api may be NULL. No call may be running. */
void inv_read_api_close(inv_read_api *api);

#endif
