/*
 * A minimal real RPC service for the transport tests (rpc_listener_test,
 * rpc_dialer_test): the Inventory service whose GetCatalog answers an empty
 * catalog, and one typed call of it.
 */
#ifndef WS_TEST_RPC_FIXTURE_H
#define WS_TEST_RPC_FIXTURE_H

#include <stdint.h>

#include "rpc_client.h"
#include "webshop/v1/inventory.rpc.h"

/* GetCatalog only: an empty catalog, on any thread. */
extern const webshop_v1_inventory_server rpc_fixture_inventory;

/* One GetCatalog on c within deadline_ms; the response is freed. */
ws_rpc_code rpc_fixture_get_catalog(ws_rpc_client *c, uint32_t deadline_ms);

#endif
