/*
 * The inventory's periodic work (inventory/sweeper.c) on a temp SQLite file,
 * one pass at a time with the clock as a parameter: tombstones expire
 * through a pass and are counted; without an Orders client no reservation
 * is ever released; with a real Orders RPC client whose order service is
 * not running (an ipc:// address nobody listens on) the sweep asks, gets no
 * answer, and releases nothing. The release itself, against a real order
 * service, is tests/e2e/test_orphans.py.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "catalog_seed.h"
#include "outbox.h"
#include "rpc_client.h"
#include "schema.h"
#include "stock.h"
#include "sweeper.h"

static char test_dir[256];
static char test_db[300];
static ws_metrics *test_metrics;

static void test_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(test_dir, sizeof(test_dir), "%s/ws-inv-sweep-XXXXXX", tmp ? tmp : "/tmp");
    cr_assert_not_null(mkdtemp(test_dir));
    snprintf(test_db, sizeof(test_db), "%s/inventory.db", test_dir);
    test_metrics = ws_metrics_new();
    cr_assert_not_null(test_metrics);
}

static void test_teardown(void)
{
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[320];
        snprintf(p, sizeof(p), "%s%s", test_db, suffix[i]);
        unlink(p);
    }
    ws_metrics_free(test_metrics);
    cr_assert_eq(rmdir(test_dir), 0, "temp dir not empty");
}

TestSuite(inventory_sweeper, .init = test_setup, .fini = test_teardown, .timeout = 60);

static ws_store *test_store_open(void)
{
    size_t n;
    const ws_migration *m = inv_schema_migrations(&n);
    ws_store_opts o = {.path = test_db, .busy_timeout_ms = 10000};
    ws_store *s = NULL;
    cr_assert_eq(ws_store_open(&o, m, n, &s), WS_OK);
    return s;
}

static int64_t test_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_reserve(ws_store *s, const char *id, int32_t count)
{
    Webshop__V1__OrderItem item = WEBSHOP__V1__ORDER_ITEM__INIT;
    item.inventory_id = 1;
    item.count = count;
    Webshop__V1__OrderItem *items[] = {&item};
    Webshop__V1__OrderSent ev = WEBSHOP__V1__ORDER_SENT__INIT;
    ev.order_id = (char *)id;
    ev.n_items = 1;
    ev.items = items;
    inv_order_outcome out;
    cr_assert_eq(inv_stock_order_sent(s, &ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
}

static void test_tombstone(ws_store *s, const char *id)
{
    Webshop__V1__OrderCanceled c = WEBSHOP__V1__ORDER_CANCELED__INIT;
    c.order_id = (char *)id;
    inv_cancel_outcome out;
    cr_assert_eq(inv_stock_order_canceled(s, &c, &out), WS_OK);
    cr_assert_eq(out.action, INV_CANCEL_TOMBSTONED);
}

static Webshop__V1__ReservationStatus test_status(ws_store *s, const char *id)
{
    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(s, id, &r), WS_OK);
    Webshop__V1__ReservationStatus st = r->status;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return st;
}

static uint64_t test_counter(const char *name, const char *labels)
{
    return ws_counter_value(ws_counter_get(test_metrics, name, "", labels));
}

#define ID_A "00000000-0000-4000-8000-0000000000a1"
#define ID_B "00000000-0000-4000-8000-0000000000b2"
#define TTL  (24LL * 3600 * 1000)

Test(inventory_sweeper, pass_expires_tombstones_and_never_releases_without_orders)
{
    ws_store *s = test_store_open();
    cr_assert_eq(inv_catalog_seed_default(s, NULL), WS_OK);
    test_tombstone(s, ID_A);
    test_reserve(s, ID_B, 4);

    inv_sweeper_opts o = {.store = test_store_open(),
                          .tombstone_ttl_ms = TTL,
                          .orphan_after_ms = 1000,
                          .metrics = test_metrics};
    inv_sweeper *w = NULL;
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_OK);
    int64_t now = test_wall_ms();
    inv_sweep_stats st;
    cr_assert_eq(inv_sweeper_pass(w, now, &st), WS_OK);
    cr_assert_eq(st.expired, 0);
    cr_assert_eq(test_status(s, ID_A), WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED);

    cr_assert_eq(inv_sweeper_pass(w, now + TTL + 1000, &st), WS_OK);
    cr_assert_eq(st.expired, 1);
    cr_assert_eq(st.released + st.checked + st.failed, 0, "no orders client: no sweep");
    cr_assert_eq(test_status(s, ID_A),
                 WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN);
    cr_assert_eq(test_status(s, ID_B), WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
    cr_assert_eq(test_counter("webshop_inventory_tombstones_expired_total", NULL), 1);
    cr_assert_eq(test_counter("webshop_inventory_orphans_released_total", NULL), 0);
    inv_sweeper_close(w);
    ws_store_close(s);
}

Test(inventory_sweeper, order_service_down_releases_nothing)
{
    ws_store *s = test_store_open();
    cr_assert_eq(inv_catalog_seed_default(s, NULL), WS_OK);
    test_reserve(s, ID_A, 3);
    test_reserve(s, ID_B, 2);

    char url[400];
    snprintf(url, sizeof(url), "ipc://%s/orders.ipc", test_dir);
    const char *urls[] = {url};
    ws_rpc_client_opts co = {.urls = urls, .n_urls = 1, .metrics = test_metrics};
    ws_rpc_client *orders = NULL;
    cr_assert_eq(ws_rpc_client_open(&co, &orders), WS_OK);
    inv_sweeper_opts o = {.store = test_store_open(),
                          .orders = orders,
                          .orders_deadline_ms = 200,
                          .tombstone_ttl_ms = TTL,
                          .orphan_after_ms = 1000,
                          .metrics = test_metrics};
    inv_sweeper *w = NULL;
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_OK);
    inv_sweep_stats st;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(inv_sweeper_pass(w, test_wall_ms() + 5000, &st), WS_OK);
        cr_assert_eq(st.released, 0);
        cr_assert_eq(st.checked, 0);
        cr_assert_eq(st.failed, 2, "one call fails, the other waits for the next pass");
    }
    cr_assert_eq(
        test_counter("webshop_inventory_orphan_checks_total", "result=\"failed\""), 2,
        "one call per pass while the order service is down");
    cr_assert_eq(test_status(s, ID_A), WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
    cr_assert_eq(test_status(s, ID_B), WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
    int64_t balance, held, added;
    cr_assert_eq(inv_stock_levels(s, 1, &balance, &held, &added), WS_OK);
    cr_assert_eq(balance + held, added);
    cr_assert_eq(held, 5);
    inv_sweeper_close(w);
    ws_rpc_client_close(orders);
    ws_store_close(s);
}

Test(inventory_sweeper, open_refuses_bounds_out_of_range)
{
    ws_store *s = test_store_open();
    char url[400];
    snprintf(url, sizeof(url), "ipc://%s/orders.ipc", test_dir);
    const char *urls[] = {url};
    ws_rpc_client_opts co = {.urls = urls, .n_urls = 1, .metrics = test_metrics};
    ws_rpc_client *orders = NULL;
    cr_assert_eq(ws_rpc_client_open(&co, &orders), WS_OK);
    inv_sweeper *w = NULL;
    inv_sweeper_opts o = {.store = s, .tombstone_ttl_ms = 0};
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_EINVAL);
    o.tombstone_ttl_ms = TTL;
    o.interval_ms = -1;
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_EINVAL);
    o.interval_ms = 0;
    o.orders = orders;
    o.orphan_after_ms = 0; /* an orphan bound is required with an Orders client */
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_EINVAL);
    o.store = NULL;
    o.orphan_after_ms = 1000;
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_EINVAL);
    cr_assert_null(w);
    inv_sweeper_close(NULL);
    ws_rpc_client_close(orders);
    ws_store_close(s); /* still the caller's after a refused open */
}
