/* A minimal real RPC service for the transport tests; see rpc_fixture.h. */
#include "rpc_fixture.h"

#include <stdlib.h>

static ws_rpc_code fixture_get_catalog(void *ctx,
                                       const Webshop__V1__GetCatalogRequest *req,
                                       Webshop__V1__GetCatalogResponse **resp,
                                       ws_rpc_call *call)
{
    (void)ctx, (void)req, (void)call;
    if ((*resp = malloc(sizeof(**resp))) == NULL) {
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    webshop__v1__get_catalog_response__init(*resp);
    return WS_RPC_OK;
}

const webshop_v1_inventory_server rpc_fixture_inventory = {.get_catalog =
                                                               fixture_get_catalog};

ws_rpc_code rpc_fixture_get_catalog(ws_rpc_client *c, uint32_t deadline_ms)
{
    Webshop__V1__GetCatalogRequest req = WEBSHOP__V1__GET_CATALOG_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    ws_rpc_code code = ws_rpc_client_call(
        c, WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD, &req.base,
        &webshop__v1__get_catalog_response__descriptor, &resp, deadline_ms, NULL, 0);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}
