/*
 * Orders RPC handlers. Each call borrows one reader connection from the
 * pool (a ws_store is used by one thread at a time), runs the query of
 * orders.c and maps its ws_err to a gRPC status: WS_EINVAL is
 * INVALID_ARGUMENT, WS_ENOTFOUND NOT_FOUND, WS_EBUSY UNAVAILABLE (the caller
 * may retry), anything else INTERNAL.
 */
#include "api.h"

#include <pthread.h>
#include <stdlib.h>

#include "log.h"
#include "orders.h"
#include "schema.h"

typedef struct api_reader {
    pthread_mutex_t mu; /* held while a call uses store */
    ws_store *store;
} api_reader;

struct order_api {
    webshop_v1_orders_server binding;
    api_reader *readers;
    int n;
    unsigned next; /* round-robin start; atomic */
};

static api_reader *api_reader_take(order_api *a)
{
    unsigned start = __atomic_fetch_add(&a->next, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < a->n; i++) {
        api_reader *r = &a->readers[(start + (unsigned)i) % (unsigned)a->n];
        if (pthread_mutex_trylock(&r->mu) == 0) {
            return r;
        }
    }
    api_reader *r = &a->readers[start % (unsigned)a->n];
    pthread_mutex_lock(&r->mu);
    return r;
}

static void api_reader_give(api_reader *r)
{
    pthread_mutex_unlock(&r->mu);
}

static ws_rpc_code api_code(ws_err err, ws_rpc_call *call, const char *what)
{
    switch (err) {
    case WS_OK:
        return WS_RPC_OK;
    case WS_EINVAL:
        ws_rpc_call_set_message(call, "%s", what);
        return WS_RPC_INVALID_ARGUMENT;
    case WS_ENOTFOUND:
        ws_rpc_call_set_message(call, "%s", what);
        return WS_RPC_NOT_FOUND;
    case WS_EBUSY:
        ws_rpc_call_set_message(call, "database busy");
        return WS_RPC_UNAVAILABLE;
    default:
        ws_log_error("order_rpc_failed", "err=%s", ws_errname(err));
        ws_rpc_call_set_message(call, "%s", ws_strerror(err));
        return WS_RPC_INTERNAL;
    }
}

static ws_rpc_code api_get_order(void *ctx, const Webshop__V1__GetOrderRequest *req,
                                 Webshop__V1__GetOrderResponse **resp, ws_rpc_call *call)
{
    order_api *a = ctx;
    Webshop__V1__Order *o = NULL;
    api_reader *r = api_reader_take(a);
    ws_err err = orders_get(r->store, req->id, &o);
    api_reader_give(r);
    if (err != WS_OK) {
        return api_code(err, call,
                        err == WS_EINVAL ? "id: expected a UUID (8-4-4-4-12 hex digits)"
                                         : "order not found");
    }
    Webshop__V1__GetOrderResponse *out = malloc(sizeof *out);
    if (out == NULL) {
        protobuf_c_message_free_unpacked(&o->base, NULL);
        return api_code(WS_ENOMEM, call, NULL);
    }
    webshop__v1__get_order_response__init(out);
    out->order = o;
    *resp = out;
    return WS_RPC_OK;
}

static ws_rpc_code api_list_orders(void *ctx, const Webshop__V1__ListOrdersRequest *req,
                                   Webshop__V1__ListOrdersResponse **resp,
                                   ws_rpc_call *call)
{
    order_api *a = ctx;
    api_reader *r = api_reader_take(a);
    ws_err err = orders_list(r->store, req->page_size, req->page_token, resp);
    api_reader_give(r);
    return api_code(err, call,
                    "page_size must be >= 0 and page_token one this service gave");
}

ws_err order_api_open(const char *path, int readers, order_api **out)
{
    if (readers < 0) {
        return WS_EINVAL;
    }
    order_api *a = calloc(1, sizeof *a);
    if (a == NULL) {
        return WS_ENOMEM;
    }
    a->n = readers > 0 ? readers : 4;
    a->readers = calloc((size_t)a->n, sizeof *a->readers);
    if (a->readers == NULL) {
        free(a);
        return WS_ENOMEM;
    }
    ws_err err = WS_OK;
    int i;
    for (i = 0; i < a->n; i++) {
        /* Read-only: a handler cannot write by mistake, and the schema must
         * already be the one this build knows (the writer migrated it). */
        ws_store_opts so = {.path = path, .readonly = 1};
        size_t n_mig;
        const ws_migration *mig = order_schema_migrations(&n_mig);
        if ((err = ws_store_open(&so, mig, n_mig, &a->readers[i].store)) != WS_OK) {
            break;
        }
        pthread_mutex_init(&a->readers[i].mu, NULL);
    }
    if (err != WS_OK) {
        a->n = i;
        order_api_close(a);
        return err;
    }
    a->binding.ctx = a;
    a->binding.get_order = api_get_order;
    a->binding.list_orders = api_list_orders;
    *out = a;
    return WS_OK;
}

const webshop_v1_orders_server *order_api_binding(order_api *a)
{
    return &a->binding;
}

void order_api_close(order_api *a)
{
    if (a == NULL) {
        return;
    }
    for (int i = 0; i < a->n; i++) {
        ws_store_close(a->readers[i].store);
        pthread_mutex_destroy(&a->readers[i].mu);
    }
    free(a->readers);
    free(a);
}
