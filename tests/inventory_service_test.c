/*
 * webshop-inventory as a process, against a real mosquitto (harness) and a
 * fresh database of the run's engine given with --db-url (test_db.h:
 * SQLite, or PostgreSQL when registered through with_pg): the
 * RPC read side through the generated client stubs, an OrderSent published
 * on the bus coming back as InStock, a clean exit 0 on SIGTERM, and the
 * crash fault point -- killed right after a reservation commits and before
 * its outcome is published, the restarted service publishes it from the
 * outbox, and the stock is reserved once.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus.h"
#include "harness.h"
#include "rpc_client.h"
#include "test_db.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/inventory.rpc.h"

#define WAIT_MS  15000
#define ORDER_ID "5b0c9f3e-7a41-4d2b-9c55-0123456789ab"

static char *tmpdir;
static char db_url[512];
static harness_broker broker;
static int rpc_port;
static int http_port;
static char rpc_url[64];
static harness_proc inv;
static ws_metrics *metrics;
static ws_bus *bus; /* the test's own client: publishes and subscribes */
static ws_rpc_client *rpc;

/* What the test's subscriber saw on inventory/on-stock. */
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static int seen_in_stock;
static int seen_probes;

static ws_err in_stock_handler(void *ctx, const ProtobufCMessage *msg,
                               const ws_bus_msg_info *info)
{
    (void)ctx;
    (void)info;
    const char *id = ((const Webshop__V1__InStock *)msg)->order_id;
    pthread_mutex_lock(&seen_mu);
    if (strcmp(id, ORDER_ID) == 0) {
        seen_in_stock++;
    } else if (strcmp(id, "probe") == 0) {
        seen_probes++;
    }
    pthread_mutex_unlock(&seen_mu);
    return WS_OK;
}

static bool in_stock_seen(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&seen_mu);
    bool ok = seen_in_stock > 0;
    pthread_mutex_unlock(&seen_mu);
    return ok;
}

static bool probe_seen(void *ctx)
{
    (void)ctx;
    pthread_mutex_lock(&seen_mu);
    bool ok = seen_probes > 0;
    pthread_mutex_unlock(&seen_mu);
    return ok;
}

static bool bus_up(void *ctx)
{
    (void)ctx;
    return ws_bus_connected(bus);
}

static void inv_start(const char *fault)
{
    char log[4200], port[32], hport[16];
    snprintf(log, sizeof(log), "%s/inventory.log", tmpdir);
    snprintf(port, sizeof(port), "127.0.0.1:%d", broker.port);
    snprintf(hport, sizeof(hport), "%d", http_port);
    char *const argv[] = {
        INVENTORY_EXE, "--db-url",    db_url,           "--broker",
        port,          "--rpc-url",   rpc_url,          "--http-port",
        hport,         "--client-id", "inventory-test", "--shutdown-timeout",
        "5s",          "--rpc-plaintext", NULL};
    if (fault != NULL) {
        setenv("WEBSHOP_FAULT", fault, 1);
    }
    int rc = harness_proc_spawn(&inv, argv, log);
    unsetenv("WEBSHOP_FAULT");
    cr_assert_eq(rc, 0);
}

static bool rpc_ready(void *ctx)
{
    (void)ctx;
    Webshop__V1__GetCatalogRequest req = WEBSHOP__V1__GET_CATALOG_REQUEST__INIT;
    Webshop__V1__GetCatalogResponse *resp = NULL;
    if (webshop_v1_inventory_get_catalog(rpc, &req, &resp, 500) != WS_RPC_OK) {
        return false;
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return true;
}

static void setup(void)
{
    tmpdir = harness_tmpdir_new("inventory-svc");
    cr_assert_not_null(tmpdir);
    cr_assert_eq(test_db_fresh(db_url, sizeof(db_url)), 0);
    cr_assert_eq(harness_broker_start(&broker, tmpdir, NULL), 0);
    rpc_port = harness_port_reserve(); /* kept across the restart below */
    http_port = harness_port_reserve();
    cr_assert_gt(rpc_port, 0);
    cr_assert_gt(http_port, 0);
    snprintf(rpc_url, sizeof(rpc_url), "tcp://127.0.0.1:%d", rpc_port);

    metrics = ws_metrics_new();
    ws_bus_opts bo = {.host = "127.0.0.1",
                      .port = broker.port,
                      .client_id = "inventory-test-client",
                      .clean_start = false,
                      .metrics = metrics};
    cr_assert_eq(ws_bus_open(&bo, &bus), WS_OK);
    cr_assert_eq(ws_bus_subscribe(bus, "inventory/on-stock",
                                  &webshop__v1__in_stock__descriptor, in_stock_handler,
                                  NULL),
                 WS_OK);
    cr_assert_eq(ws_bus_start(bus), WS_OK);
    cr_assert(harness_wait_until(bus_up, NULL, WAIT_MS));
    /* The subscription is live once a probe comes back. */
    Webshop__V1__InStock probe = WEBSHOP__V1__IN_STOCK__INIT;
    probe.order_id = "probe";
    long long deadline = harness_now_ms() + WAIT_MS;
    while (!probe_seen(NULL)) {
        cr_assert_lt(harness_now_ms(), deadline);
        cr_assert_eq(ws_bus_publish(bus, "inventory/on-stock", &probe.base, 2000), WS_OK);
        harness_wait_until(probe_seen, NULL, 200);
    }

    const char *urls[] = {rpc_url};
    ws_rpc_client_opts ro = {.urls = urls, .n_urls = 1, .metrics = metrics};
    cr_assert_eq(ws_rpc_client_open(&ro, &rpc), WS_OK);
}

static void teardown(void)
{
    harness_proc_stop(&inv, SIGKILL, 1000);
    ws_rpc_client_close(rpc);
    ws_bus_close(bus);
    ws_metrics_free(metrics);
    cr_expect_eq(harness_broker_stop(&broker, SIGTERM), 0);
    test_db_cleanup(db_url);
    harness_tmpdir_free(tmpdir);
}

TestSuite(inventory_service, .init = setup, .fini = teardown, .timeout = 90);


static void publish_order(void)
{
    Webshop__V1__OrderItem item = WEBSHOP__V1__ORDER_ITEM__INIT;
    item.inventory_id = 1;
    item.count = 10;
    Webshop__V1__OrderItem *items[] = {&item};
    Webshop__V1__OrderSent o = WEBSHOP__V1__ORDER_SENT__INIT;
    o.order_id = ORDER_ID;
    o.n_items = 1;
    o.items = items;
    cr_assert_eq(ws_bus_publish(bus, "public-front/order-send", &o.base, 5000), WS_OK);
}

/* Publish the order until cond holds, within WAIT_MS. The inventory's
 * consumer may not have subscribed yet when its RPC answers (a message
 * published before the first subscription of a fresh session is dropped by
 * the broker); duplicates are harmless, the handler is idempotent. */
static bool publish_until(bool (*cond)(void *ctx))
{
    long long deadline = harness_now_ms() + WAIT_MS;
    while (harness_now_ms() < deadline) {
        publish_order();
        if (harness_wait_until(cond, NULL, 500)) {
            return true;
        }
    }
    return false;
}

static void assert_reserved_once(void)
{
    Webshop__V1__GetReservationRequest rq = WEBSHOP__V1__GET_RESERVATION_REQUEST__INIT;
    rq.order_id = ORDER_ID;
    Webshop__V1__GetReservationResponse *rr = NULL;
    cr_assert_eq(webshop_v1_inventory_get_reservation(rpc, &rq, &rr, 2000), WS_RPC_OK);
    cr_assert_eq(rr->status, WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
    cr_assert_eq(rr->n_items, 1);
    protobuf_c_message_free_unpacked(&rr->base, NULL);

    Webshop__V1__GetProductRequest pq = WEBSHOP__V1__GET_PRODUCT_REQUEST__INIT;
    pq.id = 1;
    Webshop__V1__GetProductResponse *pr = NULL;
    cr_assert_eq(webshop_v1_inventory_get_product(rpc, &pq, &pr, 2000), WS_RPC_OK);
    cr_assert_eq(pr->product->balance, 190);
    protobuf_c_message_free_unpacked(&pr->base, NULL);
}

Test(inventory_service, serves_catalog_reserves_an_order_and_stops_cleanly)
{
    inv_start(NULL);
    cr_assert(harness_wait_until(rpc_ready, NULL, WAIT_MS));

    Webshop__V1__GetCatalogRequest cq = WEBSHOP__V1__GET_CATALOG_REQUEST__INIT;
    Webshop__V1__GetCatalogResponse *cat = NULL;
    cr_assert_eq(webshop_v1_inventory_get_catalog(rpc, &cq, &cat, 2000), WS_RPC_OK);
    cr_assert_eq(cat->n_products, 2);
    cr_assert_str_eq(cat->products[0]->name, "One Leg Web Shop Prototype");
    cr_assert_eq(cat->products[1]->price, 2000);
    protobuf_c_message_free_unpacked(&cat->base, NULL);

    Webshop__V1__GetProductRequest pq = WEBSHOP__V1__GET_PRODUCT_REQUEST__INIT;
    pq.id = 99;
    Webshop__V1__GetProductResponse *pr = NULL;
    cr_assert_eq(webshop_v1_inventory_get_product(rpc, &pq, &pr, 2000), WS_RPC_NOT_FOUND);
    Webshop__V1__GetReservationRequest rq = WEBSHOP__V1__GET_RESERVATION_REQUEST__INIT;
    rq.order_id = "nope";
    Webshop__V1__GetReservationResponse *rr = NULL;
    cr_assert_eq(webshop_v1_inventory_get_reservation(rpc, &rq, &rr, 2000),
                 WS_RPC_INVALID_ARGUMENT);

    cr_assert(publish_until(in_stock_seen));
    assert_reserved_once();

    cr_assert_eq(harness_proc_stop(&inv, SIGTERM, 10000), 0);
    cr_assert(WIFEXITED(inv.status), "inventory did not exit by itself");
    cr_assert_eq(WEXITSTATUS(inv.status), 0);
    if (!test_db_is_pg()) { /* a clean stop leaves no WAL behind */
        char wal[600];
        struct stat st;
        snprintf(wal, sizeof(wal), "%s-wal", db_url + strlen("sqlite:"));
        cr_assert(stat(wal, &st) != 0 || st.st_size == 0, "%s: %lld bytes", wal,
                  (long long)st.st_size);
    }
}

#ifdef WS_FAULT_POINTS
static bool inv_exited(void *ctx)
{
    (void)ctx;
    return !harness_proc_alive(&inv);
}

Test(inventory_service, crash_after_reserve_commit_publishes_outcome_after_restart)
{
    inv_start("crash_after_reserve_commit");
    cr_assert(harness_wait_until(rpc_ready, NULL, WAIT_MS));
    cr_assert(publish_until(inv_exited), "the fault point never fired");
    cr_assert(WIFEXITED(inv.status));
    cr_assert_eq(WEXITSTATUS(inv.status), 9);

    inv_start(NULL);
    cr_assert(harness_wait_until(in_stock_seen, NULL, WAIT_MS));
    cr_assert(harness_wait_until(rpc_ready, NULL, WAIT_MS));
    assert_reserved_once();
    cr_assert_eq(harness_proc_stop(&inv, SIGTERM, 10000), 0);
    cr_assert_eq(WEXITSTATUS(inv.status), 0);
}
#endif
