/*
 * The Inventory RPC handlers (see read_api.h): borrow a connection from the
 * pool, ask the domain module (stock.c), and translate its errors into RPC
 * status codes. No business rule lives here.
 */
#include "read_api.h"

#include <pthread.h>
#include <stdlib.h>

#include "schema.h"
#include "stock.h"
#include "uuid_text.h"
#include "webshop/v1/inventory.rpc.h"

struct inv_read_api {
    pthread_mutex_t mu;
    pthread_cond_t freed;
    ws_store **stores; /* owned; [0, n_free) are free, guarded by mu */
    int n_stores;
    int n_free;
    webshop_v1_inventory_server impl;
};

static ws_store *read_api_store_take(inv_read_api *a)
{
    pthread_mutex_lock(&a->mu);
    while (a->n_free == 0) {
        pthread_cond_wait(&a->freed, &a->mu);
    }
    ws_store *s = a->stores[--a->n_free];
    pthread_mutex_unlock(&a->mu);
    return s;
}

static void read_api_store_give(inv_read_api *a, ws_store *s)
{
    pthread_mutex_lock(&a->mu);
    a->stores[a->n_free++] = s;
    pthread_cond_signal(&a->freed);
    pthread_mutex_unlock(&a->mu);
}

static ws_rpc_code read_api_code(ws_err err, ws_rpc_call *call)
{
    switch (err) {
    case WS_OK:
        return WS_RPC_OK;
    case WS_ENOTFOUND:
        return WS_RPC_NOT_FOUND;
    case WS_EINVAL:
        return WS_RPC_INVALID_ARGUMENT;
    case WS_EBUSY:
        ws_rpc_call_set_message(call, "database busy");
        return WS_RPC_UNAVAILABLE;
    default:
        ws_rpc_call_set_message(call, "%s", ws_strerror(err));
        return WS_RPC_INTERNAL;
    }
}

static ws_rpc_code read_api_get_catalog(void *ctx,
                                        const Webshop__V1__GetCatalogRequest *req,
                                        Webshop__V1__GetCatalogResponse **resp,
                                        ws_rpc_call *call)
{
    (void)req;
    inv_read_api *a = ctx;
    ws_store *s = read_api_store_take(a);
    ws_err err = inv_stock_catalog(s, resp);
    read_api_store_give(a, s);
    return read_api_code(err, call);
}

static ws_rpc_code read_api_get_product(void *ctx,
                                        const Webshop__V1__GetProductRequest *req,
                                        Webshop__V1__GetProductResponse **resp,
                                        ws_rpc_call *call)
{
    inv_read_api *a = ctx;
    if (req->id <= 0) {
        ws_rpc_call_set_message(call, "id: must be positive");
        return WS_RPC_INVALID_ARGUMENT;
    }
    Webshop__V1__GetProductResponse *r = malloc(sizeof(*r));
    if (r == NULL) {
        return read_api_code(WS_ENOMEM, call);
    }
    webshop__v1__get_product_response__init(r);
    ws_store *s = read_api_store_take(a);
    ws_err err = inv_stock_product(s, req->id, &r->product);
    read_api_store_give(a, s);
    if (err != WS_OK) {
        free(r);
        if (err == WS_ENOTFOUND) {
            ws_rpc_call_set_message(call, "no product %d", req->id);
        }
        return read_api_code(err, call);
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
    if (!ws_uuid_valid(req->order_id)) {
        ws_rpc_call_set_message(call, "order_id: expected a UUID");
        return WS_RPC_INVALID_ARGUMENT;
    }
    ws_store *s = read_api_store_take(a);
    ws_err err = inv_stock_reservation(s, req->order_id, resp);
    read_api_store_give(a, s);
    return read_api_code(err, call);
}

ws_err inv_read_api_open(const ws_store_opts *store_opts, int n_stores,
                         inv_read_api **out)
{
    if (store_opts == NULL || out == NULL || n_stores < 1) {
        return WS_EINVAL;
    }
    inv_read_api *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return WS_ENOMEM;
    }
    a->stores = calloc((size_t)n_stores, sizeof(*a->stores));
    if (a->stores == NULL) {
        free(a);
        return WS_ENOMEM;
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->freed, NULL);
    size_t n_mig;
    const ws_migration *mig = inv_schema_migrations(&n_mig);
    for (int i = 0; i < n_stores; i++) {
        ws_err err = ws_store_open(store_opts, mig, n_mig, &a->stores[i]);
        if (err != WS_OK) {
            inv_read_api_close(a);
            return err;
        }
        a->n_stores++;
        a->n_free++;
    }
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
    if (api == NULL) {
        return;
    }
    for (int i = 0; i < api->n_stores; i++) {
        ws_store_close(api->stores[i]);
    }
    free(api->stores);
    pthread_cond_destroy(&api->freed);
    pthread_mutex_destroy(&api->mu);
    free(api);
}
