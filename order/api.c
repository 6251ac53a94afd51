/*
 * Orders RPC handlers. Each call runs the query of orders.c in one
 * read-only transaction on a connection of the pool (SQLite: a deferred
 * transaction that takes no write lock; PostgreSQL: READ ONLY, READ
 * COMMITTED) and maps its ws_err with ws_rpc_status_of, the same map in
 * every service: WS_EINVAL INVALID_ARGUMENT, WS_ENOTFOUND NOT_FOUND, a
 * busy, gone or unwritable database UNAVAILABLE (the caller may retry),
 * anything else INTERNAL.
 */
#include "api.h"

#include <stdlib.h>

#include "orders.h"
#include "rpc_server.h"

struct order_api {
    webshop_v1_orders_server binding;
    ws_db *db; /* not owned */
};

static const ws_db_txn_opts api_read_only = {.read_only = true};
/* GetOrder's read is one statement (order_db_get): no transaction. */
static const ws_db_txn_opts api_one_read = {.read_only = true, .one_statement = true};

typedef struct api_get {
    const char *id;
    Webshop__V1__Order *order; /* set by the last successful attempt */
} api_get;

static ws_err api_get_run(ws_db_conn *c, void *ctx)
{
    api_get *g = ctx;
    if (g->order != NULL) { /* an earlier attempt's answer: the retry reads again */
        protobuf_c_message_free_unpacked(&g->order->base, NULL);
        g->order = NULL;
    }
    return orders_get(c, g->id, &g->order);
}

static ws_rpc_code api_get_order(void *ctx, const Webshop__V1__GetOrderRequest *req,
                                 Webshop__V1__GetOrderResponse **resp, ws_rpc_call *call)
{
    order_api *a = ctx;
    api_get g = {.id = req->id};
    ws_err err = ws_db_txn_with(a->db, &api_one_read, api_get_run, &g);
    if (err != WS_OK) {
        if (g.order != NULL) {
            protobuf_c_message_free_unpacked(&g.order->base, NULL);
        }
        return ws_rpc_status_of(err, call, "GetOrder",
                                err == WS_EINVAL
                                    ? "id: expected a UUID (8-4-4-4-12 hex digits)"
                                    : "order not found");
    }
    Webshop__V1__GetOrderResponse *out = malloc(sizeof *out);
    if (out == NULL) {
        protobuf_c_message_free_unpacked(&g.order->base, NULL);
        return ws_rpc_status_of(WS_ENOMEM, call, "GetOrder", NULL);
    }
    webshop__v1__get_order_response__init(out);
    out->order = g.order;
    *resp = out;
    return WS_RPC_OK;
}

typedef struct api_list {
    const Webshop__V1__ListOrdersRequest *req;
    Webshop__V1__ListOrdersResponse *page; /* set by the last successful attempt */
} api_list;

static ws_err api_list_run(ws_db_conn *c, void *ctx)
{
    api_list *l = ctx;
    if (l->page != NULL) {
        protobuf_c_message_free_unpacked(&l->page->base, NULL);
        l->page = NULL;
    }
    return orders_list(c, l->req->page_size, l->req->page_token, &l->page);
}

static ws_rpc_code api_list_orders(void *ctx, const Webshop__V1__ListOrdersRequest *req,
                                   Webshop__V1__ListOrdersResponse **resp,
                                   ws_rpc_call *call)
{
    order_api *a = ctx;
    api_list l = {.req = req};
    ws_err err = ws_db_txn_with(a->db, &api_read_only, api_list_run, &l);
    if (err != WS_OK) {
        if (l.page != NULL) {
            protobuf_c_message_free_unpacked(&l.page->base, NULL);
        }
        return ws_rpc_status_of(err, call, "ListOrders",
                                "page_size must be >= 0 and page_token one this service "
                                "gave");
    }
    *resp = l.page;
    return WS_RPC_OK;
}

ws_err order_api_open(ws_db *db, order_api **out)
{
    if (db == NULL) {
        return WS_EINVAL;
    }
    order_api *a = calloc(1, sizeof *a);
    if (a == NULL) {
        return WS_ENOMEM;
    }
    a->db = db;
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
    free(a);
}
