/*
 * libFuzzer target for the RPC envelope and dispatch (lib/rpc_server.c):
 * the input is taken as the bytes of one RpcRequest and served by
 * ws__rpc_server_dispatch(), the path every request from nng takes, on a
 * server with the real services registered: the built-in Reflection, the
 * inventory's read API and the order service's API, each over a small
 * SQLite database in a temp dir (a seeded catalog, one reservation, one
 * order). Checks: an answer always comes back; it is a valid RpcResponse
 * that echoes the request id when the envelope parsed; its status is a
 * known code; every string in it is valid UTF-8 (any protobuf peer rejects
 * the message otherwise); an OK answer carries a payload that is a valid
 * message of the method's output type and encodes to JSON (what the front
 * does with it).
 */
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "json.h"
#include "json_int.h"
#include "rpc_server_int.h"
#include "webshop/v1/order.rpc.h"
#include "webshop/v1/rpc.pb-c.h"

#include "inventory/catalog_seed.h"
#include "inventory/read_api.h"
#include "inventory/schema.h"
#include "inventory/stock.h"
#include "order/api.h"
#include "order/orders.h"
#include "order/schema.h"

#define FUZZ_RPC_ORDER_ID "0b0c5e6e-8f3a-4d5c-9a2b-1c2d3e4f5a6b"

static char fuzz_rpc_dir[64];
static char fuzz_rpc_inv_path[128];
static char fuzz_rpc_ord_path[128];
static ws_rpc_server *fuzz_rpc_srv;
static inv_read_api *fuzz_rpc_inv;
static order_api *fuzz_rpc_ord;
static ws_db *fuzz_rpc_ord_db; /* the order service's pool */
static ws_db *fuzz_rpc_inv_db; /* the inventory's pool */
static const ProtobufCServiceDescriptor *const fuzz_rpc_services[] = {
    &webshop__v1__reflection__descriptor,
    &webshop__v1__inventory__descriptor,
    &webshop__v1__orders__descriptor,
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_rpc_cleanup(void)
{
    char path[160];

    ws_rpc_server_close(fuzz_rpc_srv);
    inv_read_api_close(fuzz_rpc_inv);
    order_api_close(fuzz_rpc_ord);
    ws_db_close(fuzz_rpc_ord_db);
    ws_db_close(fuzz_rpc_inv_db);
    static const char *const files[] = {"inventory.db",     "inventory.db-wal",
                                        "inventory.db-shm", "order.db",
                                        "order.db-wal",     "order.db-shm"};
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", fuzz_rpc_dir, files[i]);
        unlink(path);
    }
    rmdir(fuzz_rpc_dir);
}

/* The inventory database: default catalog, one reservation. */
static void fuzz_rpc_seed_inventory(void)
{
    ws_db_opts o = {.url = fuzz_rpc_inv_path, .pool_size = 2};
    o.migrations = inv_schema_migrations(&o.n_migrations);
    FUZZ_CHECK(ws_db_open(&o, &fuzz_rpc_inv_db) == WS_OK, "inventory db");
    FUZZ_CHECK(inv_catalog_seed_default(fuzz_rpc_inv_db, NULL) == WS_OK, "catalog seed");
    ws_db_conn *s = NULL;
    FUZZ_CHECK(ws_db_acquire(fuzz_rpc_inv_db, &s) == WS_OK, "inventory connection");
    Webshop__V1__OrderItem item = WEBSHOP__V1__ORDER_ITEM__INIT;
    Webshop__V1__OrderItem *items[] = {&item};
    Webshop__V1__OrderSent ev = WEBSHOP__V1__ORDER_SENT__INIT;
    item.inventory_id = 1;
    item.count = 1;
    ev.order_id = (char *)FUZZ_RPC_ORDER_ID;
    ev.n_items = 1;
    ev.items = items;
    inv_order_outcome out;
    FUZZ_CHECK(inv_stock_order_sent(s, &ev, &out) == WS_OK, "reservation");
    ws_db_release(s);
}

/* The order database: one order, successful. */
static void fuzz_rpc_seed_orders(void)
{
    ws_db_conn *s = NULL;
    orders_policy p = orders_policy_default();
    size_t n_mig;
    const ws_db_migration *mig = order_schema_migrations(&n_mig);
    ws_db_opts dbo = {
        .url = fuzz_rpc_ord_path, .pool_size = 1, .migrations = mig, .n_migrations = n_mig};

    FUZZ_CHECK(ws_db_open(&dbo, &fuzz_rpc_ord_db) == WS_OK, "order db");
    FUZZ_CHECK(ws_db_acquire(fuzz_rpc_ord_db, &s) == WS_OK, "order connection");
    Webshop__V1__OrderItem item = WEBSHOP__V1__ORDER_ITEM__INIT;
    Webshop__V1__OrderItem *items[] = {&item};
    Webshop__V1__OrderSent ev = WEBSHOP__V1__ORDER_SENT__INIT;
    Webshop__V1__InStock in = WEBSHOP__V1__IN_STOCK__INIT;
    item.inventory_id = 1;
    item.count = 1;
    ev.order_id = (char *)FUZZ_RPC_ORDER_ID;
    ev.n_items = 1;
    ev.items = items;
    in.order_id = (char *)FUZZ_RPC_ORDER_ID;
    FUZZ_CHECK(orders_apply_sent(s, &p, &ev, 1000, NULL) == WS_OK, "order sent");
    FUZZ_CHECK(orders_apply_in_stock(s, &p, &in, 2000, NULL) == WS_OK, "in stock");
    ws_db_release(s);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logs();
    snprintf(fuzz_rpc_dir, sizeof(fuzz_rpc_dir), "/tmp/webshop-fuzz-rpc-XXXXXX");
    FUZZ_CHECK(mkdtemp(fuzz_rpc_dir) != NULL, "mkdtemp");
    snprintf(fuzz_rpc_inv_path, sizeof(fuzz_rpc_inv_path), "%s/inventory.db",
             fuzz_rpc_dir);
    snprintf(fuzz_rpc_ord_path, sizeof(fuzz_rpc_ord_path), "%s/order.db", fuzz_rpc_dir);
    fuzz_rpc_seed_inventory();
    fuzz_rpc_seed_orders();

    FUZZ_CHECK(inv_read_api_open(fuzz_rpc_inv_db, &fuzz_rpc_inv) == WS_OK, "inventory api");
    FUZZ_CHECK(order_api_open(fuzz_rpc_ord_db, &fuzz_rpc_ord) == WS_OK, "order api");
    ws_rpc_server_opts ro = {.url = "inproc://fuzz", .max_msg = 64 * 1024};
    FUZZ_CHECK(ws_rpc_server_open(&ro, &fuzz_rpc_srv) == WS_OK, "server");
    FUZZ_CHECK(inv_read_api_register(fuzz_rpc_inv, fuzz_rpc_srv) == WS_OK,
               "register inv");
    FUZZ_CHECK(webshop_v1_orders_register(fuzz_rpc_srv,
                                          order_api_binding(fuzz_rpc_ord)) == WS_OK,
               "register orders");
    atexit(fuzz_rpc_cleanup);
    return 0;
}

/* The method the request names, as the server would find it; NULL if none. */
static const ProtobufCMethodDescriptor *fuzz_rpc_method(const char *name)
{
    if (name == NULL || name[0] != '/') {
        return NULL;
    }
    const char *slash = strchr(name + 1, '/');
    if (slash == NULL) {
        return NULL;
    }
    size_t svc_len = (size_t)(slash - (name + 1));
    for (size_t i = 0; i < sizeof(fuzz_rpc_services) / sizeof(fuzz_rpc_services[0]);
         i++) {
        const ProtobufCServiceDescriptor *d = fuzz_rpc_services[i];
        if (strlen(d->name) == svc_len && memcmp(d->name, name + 1, svc_len) == 0) {
            return protobuf_c_service_descriptor_get_method_by_name(d, slash + 1);
        }
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *resp = NULL;
    size_t resp_len = 0;

    ws_err err = ws__rpc_server_dispatch(fuzz_rpc_srv, data, size, &resp, &resp_len);
    FUZZ_CHECK(err == WS_OK, "dispatch: %s", ws_errname(err));

    Webshop__V1__RpcResponse *r = webshop__v1__rpc_response__unpack(NULL, resp_len, resp);
    FUZZ_CHECK(r != NULL, "the answer is not an RpcResponse");
    FUZZ_CHECK((unsigned)r->status <= 16, "status %d", (int)r->status);
    FUZZ_CHECK(ws__json_utf8_valid(r->message, strlen(r->message)),
               "status message is not UTF-8: %s", r->message);
    FUZZ_CHECK(r->status != WEBSHOP__V1__STATUS_CODE__OK || r->message[0] == '\0',
               "message with OK");
    FUZZ_CHECK(r->status == WEBSHOP__V1__STATUS_CODE__OK || r->payload.len == 0,
               "payload with status %d", (int)r->status);

    Webshop__V1__RpcRequest *req = webshop__v1__rpc_request__unpack(NULL, size, data);
    if (req != NULL) {
        FUZZ_CHECK(r->request_id == req->request_id, "request id not echoed");
    }
    if (r->status == WEBSHOP__V1__STATUS_CODE__OK) {
        FUZZ_CHECK(req != NULL, "OK for a malformed envelope");
        const ProtobufCMethodDescriptor *md = fuzz_rpc_method(req->method);
        FUZZ_CHECK(md != NULL, "OK for unknown method %s", req->method);
        ProtobufCMessage *out =
            protobuf_c_message_unpack(md->output, NULL, r->payload.len, r->payload.data);
        FUZZ_CHECK(out != NULL, "payload of %s is not a %s", req->method,
                   md->output->name);
        ws_buf json;
        ws_buf_init(&json, 0);
        err = ws_json_encode(out, 0, &json);
        FUZZ_CHECK(err == WS_OK, "answer of %s does not encode to JSON: %s", req->method,
                   ws_errname(err));
        ws_buf_fini(&json);
        protobuf_c_message_free_unpacked(out, NULL);
    }
    if (req != NULL) {
        webshop__v1__rpc_request__free_unpacked(req, NULL);
    }
    webshop__v1__rpc_response__free_unpacked(r, NULL);
    free(resp);
    return 0;
}
