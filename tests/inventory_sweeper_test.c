/*
 * The inventory's periodic work (inventory/sweeper.c) on a fresh database of
 * the run's engine (tests/support/test_db.h),
 * one pass at a time with the clock as a parameter: tombstones expire
 * through a pass and are counted; without an Orders client no reservation
 * is ever released; with a real Orders RPC client whose order service is
 * not running (an ipc:// address nobody listens on) the sweep asks, gets no
 * answer, and releases nothing. The release itself, against a real order
 * service, is tests/e2e/test_orphans.py. Wall-clock jumps (ws_clock_test_offset)
 * against an in-process order service that knows no order: a forward one
 * releases no young reservation and expires no young tombstone (they wait
 * at most their bound), a backward one keeps neither for the jump.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "catalog_seed.h"
#include "clock.h"
#include "db.h"
#include "outbox.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "schema.h"
#include "stock.h"
#include "sweeper.h"
#include "test_db.h"
#include "webshop/v1/order.rpc.h"

static char test_dir[256]; /* for the ipc:// address nobody listens on */
static char test_url[512];
static ws_db *test_pool;
static ws_metrics *test_metrics;

static void test_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(test_dir, sizeof(test_dir), "%s/ws-inv-sweep-XXXXXX", tmp ? tmp : "/tmp");
    cr_assert_not_null(mkdtemp(test_dir));
    cr_assert_eq(test_db_fresh(test_url, sizeof(test_url)), 0);
    size_t n;
    const ws_db_migration *m = inv_schema_migrations(&n);
    ws_db_opts o = {.url = test_url, .pool_size = 4, .migrations = m, .n_migrations = n};
    cr_assert_eq(ws_db_open(&o, &test_pool), WS_OK, "open %s", test_url);
    test_metrics = ws_metrics_new();
    cr_assert_not_null(test_metrics);
}

static void test_teardown(void)
{
    ws_clock_test_offset(0);
    ws_db_close(test_pool);
    test_pool = NULL;
    test_db_cleanup(test_url);
    ws_metrics_free(test_metrics);
    cr_assert_eq(rmdir(test_dir), 0, "temp dir not empty");
}

TestSuite(inventory_sweeper, .init = test_setup, .fini = test_teardown, .timeout = 60);

static void test_order_sent(const Webshop__V1__OrderSent *ev, inv_order_outcome *out)
{
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(test_pool, &c), WS_OK);
    ws_err err = inv_stock_order_sent(c, ev, out);
    ws_db_release(c);
    cr_assert_eq(err, WS_OK);
}

static void test_reserve(const char *id, int32_t count)
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
    test_order_sent(&ev, &out);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
}

static void test_tombstone(const char *id)
{
    Webshop__V1__OrderCanceled c = WEBSHOP__V1__ORDER_CANCELED__INIT;
    c.order_id = (char *)id;
    inv_cancel_outcome out;
    ws_db_conn *conn = NULL;
    cr_assert_eq(ws_db_acquire(test_pool, &conn), WS_OK);
    ws_err err = inv_stock_order_canceled(conn, &c, &out);
    ws_db_release(conn);
    cr_assert_eq(err, WS_OK);
    cr_assert_eq(out.action, INV_CANCEL_TOMBSTONED);
}

static Webshop__V1__ReservationStatus test_status(const char *id)
{
    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(test_pool, id, &r), WS_OK);
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
    cr_assert_eq(inv_catalog_seed_default(test_pool, NULL), WS_OK);
    test_tombstone(ID_A);
    test_reserve(ID_B, 4);

    inv_sweeper_opts o = {.db = test_pool,
                          .tombstone_ttl_ms = TTL,
                          .orphan_after_ms = 1000,
                          .metrics = test_metrics};
    inv_sweeper *w = NULL;
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_OK);
    int64_t now = ws_clock_wall_ms();
    inv_sweep_stats st;
    cr_assert_eq(inv_sweeper_pass(w, now, &st), WS_OK);
    cr_assert_eq(st.expired, 0);
    cr_assert_eq(test_status(ID_A), WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED);

    cr_assert_eq(inv_sweeper_pass(w, now + TTL + 1000, &st), WS_OK);
    cr_assert_eq(st.expired, 1);
    cr_assert_eq(st.released + st.checked + st.failed, 0, "no orders client: no sweep");
    cr_assert_eq(test_status(ID_A), WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN);
    cr_assert_eq(test_status(ID_B), WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
    cr_assert_eq(test_counter("webshop_inventory_tombstones_expired_total", NULL), 1);
    cr_assert_eq(test_counter("webshop_inventory_orphans_released_total", NULL), 0);
    inv_sweeper_close(w);
}

Test(inventory_sweeper, order_service_down_releases_nothing)
{
    cr_assert_eq(inv_catalog_seed_default(test_pool, NULL), WS_OK);
    test_reserve(ID_A, 3);
    test_reserve(ID_B, 2);

    char url[400];
    snprintf(url, sizeof(url), "ipc://%s/orders.ipc", test_dir);
    const char *urls[] = {url};
    ws_rpc_client_opts co = {.urls = urls, .n_urls = 1, .metrics = test_metrics};
    ws_rpc_client *orders = NULL;
    cr_assert_eq(ws_rpc_client_open(&co, &orders), WS_OK);
    inv_sweeper_opts o = {.db = test_pool,
                          .orders = orders,
                          .orders_deadline_ms = 200,
                          .tombstone_ttl_ms = TTL,
                          .orphan_after_ms = 1000,
                          .metrics = test_metrics};
    inv_sweeper *w = NULL;
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_OK);
    inv_sweep_stats st;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(inv_sweeper_pass(w, ws_clock_wall_ms() + 5000, &st), WS_OK);
        cr_assert_eq(st.released, 0);
        cr_assert_eq(st.checked, 0);
        cr_assert_eq(st.failed, 2, "one call fails, the other waits for the next pass");
    }
    cr_assert_eq(
        test_counter("webshop_inventory_orphan_checks_total", "result=\"failed\""), 2,
        "one call per pass while the order service is down");
    cr_assert_eq(test_status(ID_A), WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
    cr_assert_eq(test_status(ID_B), WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
    int64_t balance, held, added;
    cr_assert_eq(inv_stock_levels(test_pool, 1, &balance, &held, &added), WS_OK);
    cr_assert_eq(balance + held, added);
    cr_assert_eq(held, 5);
    inv_sweeper_close(w);
    ws_rpc_client_close(orders);
}

Test(inventory_sweeper, open_refuses_bounds_out_of_range)
{
    char url[400];
    snprintf(url, sizeof(url), "ipc://%s/orders.ipc", test_dir);
    const char *urls[] = {url};
    ws_rpc_client_opts co = {.urls = urls, .n_urls = 1, .metrics = test_metrics};
    ws_rpc_client *orders = NULL;
    cr_assert_eq(ws_rpc_client_open(&co, &orders), WS_OK);
    inv_sweeper *w = NULL;
    inv_sweeper_opts o = {.db = test_pool, .tombstone_ttl_ms = 0};
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_EINVAL);
    o.tombstone_ttl_ms = TTL;
    o.interval_ms = -1;
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_EINVAL);
    o.interval_ms = 0;
    o.orders = orders;
    o.orphan_after_ms = 0; /* an orphan bound is required with an Orders client */
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_EINVAL);
    o.db = NULL;
    o.orphan_after_ms = 1000;
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_EINVAL);
    cr_assert_null(w);
    inv_sweeper_close(NULL);
    ws_rpc_client_close(orders);
}

/* ---- wall-clock jumps (ws_clock_test_offset) ------------------------------ */

/* An order service that knows no order: every GetOrder is NOT_FOUND. */
static int test_lookups;

static ws_rpc_code test_get_order_not_found(void *ctx,
                                            const Webshop__V1__GetOrderRequest *req,
                                            Webshop__V1__GetOrderResponse **resp,
                                            ws_rpc_call *call)
{
    (void)ctx, (void)req, (void)resp, (void)call;
    __atomic_add_fetch(&test_lookups, 1, __ATOMIC_SEQ_CST);
    return WS_RPC_NOT_FOUND;
}

typedef struct test_orders {
    ws_rpc_server *srv;
    ws_rpc_client *client;
} test_orders;

static webshop_v1_orders_server test_orders_impl = {.get_order =
                                                        test_get_order_not_found};

static test_orders test_orders_start(void)
{
    static int seq;
    char url[128];
    snprintf(url, sizeof(url), "inproc://ws-inv-sweep-%d-%d", (int)getpid(), seq++);
    test_orders t = {0};
    ws_rpc_server_opts so = {.url = url, .metrics = test_metrics};
    cr_assert_eq(ws_rpc_server_open(&so, &t.srv), WS_OK);
    cr_assert_eq(webshop_v1_orders_register(t.srv, &test_orders_impl), WS_OK);
    cr_assert_eq(ws_rpc_server_start(t.srv), WS_OK);
    const char *urls[] = {url};
    ws_rpc_client_opts co = {.urls = urls, .n_urls = 1, .metrics = test_metrics};
    cr_assert_eq(ws_rpc_client_open(&co, &t.client), WS_OK);
    test_lookups = 0;
    return t;
}

static void test_orders_stop(test_orders *t)
{
    ws_rpc_client_close(t->client);
    ws_rpc_server_close(t->srv);
}

#define JUMP_MS  (3600 * 1000LL)
#define BOUND_MS 500 /* orphan_after_ms */
#define TTL_MS   800 /* tombstone_ttl_ms */

static inv_sweeper *test_jump_sweeper(test_orders *t)
{
    inv_sweeper_opts o = {.db = test_pool,
                          .orders = t->client,
                          .orders_deadline_ms = 2000,
                          .tombstone_ttl_ms = TTL_MS,
                          .orphan_after_ms = BOUND_MS,
                          .metrics = test_metrics};
    inv_sweeper *w = NULL;
    cr_assert_eq(inv_sweeper_open(&o, &w), WS_OK);
    return w;
}

/* Pass (at the wall clock) until ID_A is released and ID_B's tombstone is
 * gone, at most 10 s of monotonic time; returns how long it took. */
static int64_t test_pass_until_settled(inv_sweeper *w)
{
    int64_t t0 = ws_clock_mono_ms();
    inv_sweep_stats st;
    while (ws_clock_mono_ms() - t0 < 10000 &&
           (test_status(ID_A) != WEBSHOP__V1__RESERVATION_STATUS__RELEASED ||
            test_status(ID_B) != WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN)) {
        cr_assert_eq(inv_sweeper_pass(w, ws_clock_wall_ms(), &st), WS_OK);
        struct timespec d = {0, 10 * 1000000};
        nanosleep(&d, NULL);
    }
    cr_assert_eq(test_status(ID_A), WEBSHOP__V1__RESERVATION_STATUS__RELEASED,
                 "the orphan is released within 10 s");
    cr_assert_eq(test_status(ID_B), WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN,
                 "the tombstone expires within 10 s");
    return ws_clock_mono_ms() - t0;
}

Test(inventory_sweeper, forward_wall_clock_jump_releases_no_young_reservation)
{
    cr_assert_eq(inv_catalog_seed_default(test_pool, NULL), WS_OK);
    test_orders t = test_orders_start();
    inv_sweeper *w = test_jump_sweeper(&t);
    int64_t born = ws_clock_mono_ms();
    test_reserve(ID_A, 2);
    test_tombstone(ID_B);
    inv_sweep_stats st;
    cr_assert_eq(inv_sweeper_pass(w, ws_clock_wall_ms(), &st), WS_OK);
    ws_clock_test_offset(JUMP_MS); /* both rows now look an hour old */
    cr_assert_eq(inv_sweeper_pass(w, ws_clock_wall_ms(), &st), WS_OK);
    cr_assert_eq(st.released + st.checked + st.expired, 0, "young rows left alone");
    cr_assert_eq(test_lookups, 0, "not even asked about");
    cr_assert_eq(test_status(ID_A), WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
    cr_assert_eq(test_status(ID_B), WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED);
    /* The jump delays them by at most their bound of monotonic time. */
    test_pass_until_settled(w);
    cr_assert_geq(ws_clock_mono_ms() - born, BOUND_MS, "released before its bound");
    int64_t balance, held, added;
    cr_assert_eq(inv_stock_levels(test_pool, 1, &balance, &held, &added), WS_OK);
    cr_assert_eq(held, 0);
    cr_assert_eq(balance, added);
    inv_sweeper_close(w);
    test_orders_stop(&t);
    ws_clock_test_offset(0);
}

Test(inventory_sweeper, backward_wall_clock_jump_does_not_keep_orphans_for_the_jump)
{
    cr_assert_eq(inv_catalog_seed_default(test_pool, NULL), WS_OK);
    test_orders t = test_orders_start();
    inv_sweeper *w = test_jump_sweeper(&t);
    test_reserve(ID_A, 2);
    test_tombstone(ID_B);
    ws_clock_test_offset(-JUMP_MS); /* both rows now look an hour in the future */
    int64_t took = test_pass_until_settled(w);
    cr_assert_lt(took, 10000, "settled in %lld ms, not after the hour", (long long)took);
    inv_sweeper_close(w);
    test_orders_stop(&t);
    ws_clock_test_offset(0);
}
