/*
 * The Inventory RPC handlers (see read_api.h): check the request, ask the
 * domain module (stock.h, which reads in a read-only transaction on the
 * pool), and answer its errors with ws_rpc_status_of (a database that is
 * busy, gone or failing answers UNAVAILABLE). No business rule lives here.
 */
#include "read_api.h"

#include <stdio.h>
#include <stdlib.h>

#include "stock.h"
#include "uuid_text.h"
#include "webshop/v1/inventory.rpc.h"

struct inv_read_api {
    ws_db *db; /* not owned */
    webshop_v1_inventory_server impl;
};

static ws_rpc_code read_api_get_catalog(void *ctx,
                                        const Webshop__V1__GetCatalogRequest *req,
                                        Webshop__V1__GetCatalogResponse **resp,
                                        ws_rpc_call *call)
{
    (void)req;
    inv_read_api *a = ctx;
    ws_err err = inv_stock_catalog(a->db, resp);
    return ws_rpc_status_of(err, call, "GetCatalog", NULL);
}

static ws_rpc_code read_api_get_product(void *ctx,
                                        const Webshop__V1__GetProductRequest *req,
                                        Webshop__V1__GetProductResponse **resp,
                                        ws_rpc_call *call)
{
    inv_read_api *a = ctx;
    if (req->id <= 0) {
        return ws_rpc_status_of(WS_EINVAL, call, "GetProduct", "id: must be positive");
    }
    Webshop__V1__GetProductResponse *r = malloc(sizeof(*r));
    if (r == NULL) {
        return ws_rpc_status_of(WS_ENOMEM, call, "GetProduct", NULL);
    }
    webshop__v1__get_product_response__init(r);
    ws_err err = inv_stock_product(a->db, req->id, &r->product);
    if (err != WS_OK) {
        free(r);
        char what[48];
        snprintf(what, sizeof(what), "no product %d", req->id);
        return ws_rpc_status_of(err, call, "GetProduct", what);
    }
    *resp = r;
    return WS_RPC_OK;
}

static ws_rpc_code read_api_get_reservation(void *ctx,
                                            const Webshop__V1__GetReservationRequest *req,
                                            Webshop__V1__GetReservationResponse **resp,
                                            ws_rpc_call *call)
{
    inv_read_api *a = ctx;
    const char *what = "order_id: expected a UUID";
    ws_err err = ws_uuid_valid(req->order_id)
                     ? inv_stock_reservation(a->db, req->order_id, resp)
                     : WS_EINVAL;
    return ws_rpc_status_of(err, call, "GetReservation", what);
}

ws_err inv_read_api_open(ws_db *db, inv_read_api **out)
{
    if (db == NULL || out == NULL) {
        return WS_EINVAL;
    }
    inv_read_api *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return WS_ENOMEM;
    }
    a->db = db;
    a->impl = (webshop_v1_inventory_server){
        .ctx = a,
        .get_catalog = read_api_get_catalog,
        .get_product = read_api_get_product,
        .get_reservation = read_api_get_reservation,
    };
    *out = a;
    return WS_OK;
}

ws_err inv_read_api_register(inv_read_api *api, ws_rpc_server *srv)
{
    return webshop_v1_inventory_register(srv, &api->impl);
}

void inv_read_api_close(inv_read_api *api)
{
    free(api);
}
