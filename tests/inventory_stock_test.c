/*
 * The inventory's domain (inventory/stock.c, stock_read.c, stock_sweep.c,
 * schema.c, catalog_seed.c, and the ports of stock_db.c under them) on a
 * fresh database of the run's engine (tests/support/test_db.h: SQLite, or
 * PostgreSQL under with_pg), without a broker: reservations all or nothing,
 * duplicate and out-of-order events, the invariant balance + held = stock
 * added under eight competing threads, and seeding that never overwrites
 * moved stock. Outcomes are checked in the outbox rows the operations
 * queue. Also the id rule (any case, stored lower case), what a duplicate
 * OrderSent re-publishes after each kind of release, the sweep's domain
 * steps (orphan candidates and settling, tombstone expiry) with the clock
 * and the order service's answer as parameters, and the rules that must
 * hold with two writers at the same moment, each on its own connection:
 * two reservations for the last unit, and the same OrderSent twice.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog_seed.h"
#include "clock.h"
#include "db.h"
#include "outbox.h"
#include "schema.h"
#include "stock.h"
#include "test_db.h"

#define TEST_POOL 12 /* the race's threads, the test's own, and readers */

static char test_dir[256]; /* for catalog files */
static char test_url[512];
static ws_db *test_pool;      /* the test's database */
static ws_db_conn *test_conn; /* held by the test's thread for the events */

static void test_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(test_dir, sizeof(test_dir), "%s/ws-inv-stock-XXXXXX", tmp ? tmp : "/tmp");
    cr_assert_not_null(mkdtemp(test_dir));
    cr_assert_eq(test_db_fresh(test_url, sizeof(test_url)), 0);
}

static void test_teardown(void)
{
    ws_db_release(test_conn);
    test_conn = NULL;
    ws_db_close(test_pool);
    test_pool = NULL;
    test_db_cleanup(test_url);
    cr_assert_eq(rmdir(test_dir), 0, "temp dir not empty");
}

TestSuite(inventory_stock, .init = test_setup, .fini = test_teardown, .timeout = 120);

/* Open the pool with the first n_mig migrations (0: all of them). */
static ws_db *test_pool_open(size_t n_mig)
{
    size_t n;
    const ws_db_migration *m = inv_schema_migrations(&n);
    ws_db_opts o = {.url = test_url,
                    .pool_size = TEST_POOL,
                    .busy_timeout_ms = 10000,
                    .txn_retries = 1000,
                    .migrations = m,
                    .n_migrations = n_mig ? n_mig : n};
    ws_db *db = NULL;
    cr_assert_eq(ws_db_open(&o, &db), WS_OK, "open %s", test_url);
    return db;
}

/* The test's pool and its thread's connection. */
static void test_open(void)
{
    test_pool = test_pool_open(0);
    cr_assert_eq(ws_db_acquire(test_pool, &test_conn), WS_OK);
}

static void test_open_seeded(void)
{
    test_open();
    size_t inserted = 0;
    cr_assert_eq(inv_catalog_seed_default(test_pool, &inserted), WS_OK);
    cr_assert_eq(inserted, 2);
}

/* ---- reading the outbox ------------------------------------------------ */

#define TEST_MAX_EVENTS 64

typedef struct test_event {
    char topic[64];
    ProtobufCMessage *msg;
} test_event;

typedef struct test_events {
    test_event ev[TEST_MAX_EVENTS];
    size_t n;
} test_events;

static ws_err test_event_collect(void *ctx, const ws_outbox_row *row)
{
    test_events *es = ctx;
    cr_assert_lt(es->n, TEST_MAX_EVENTS);
    test_event *e = &es->ev[es->n++];
    snprintf(e->topic, sizeof(e->topic), "%s", row->topic);
    cr_assert_eq(ws_outbox_row_unpack(row, inv_outbox_types, inv_outbox_n_types, &e->msg),
                 WS_OK);
    return WS_OK;
}

/* Take every queued event out of the outbox (reads, then deletes). */
static void test_events_take(test_events *es)
{
    memset(es, 0, sizeof(*es));
    cr_assert_eq(
        ws_outbox_scan(test_conn, 0, TEST_MAX_EVENTS, test_event_collect, es, NULL),
        WS_OK);
    cr_assert_eq(ws_db_exec(test_conn, "DELETE FROM outbox"), WS_OK);
}

static void test_events_free(test_events *es)
{
    for (size_t i = 0; i < es->n; i++) {
        protobuf_c_message_free_unpacked(es->ev[i].msg, NULL);
    }
    es->n = 0;
}

static size_t test_events_count(const test_events *es, const char *topic)
{
    size_t n = 0;
    for (size_t i = 0; i < es->n; i++) {
        n += strcmp(es->ev[i].topic, topic) == 0;
    }
    return n;
}

static const test_event *test_events_find(const test_events *es, const char *topic)
{
    for (size_t i = 0; i < es->n; i++) {
        if (strcmp(es->ev[i].topic, topic) == 0) {
            return &es->ev[i];
        }
    }
    cr_assert_fail("no event on %s", topic);
    return NULL;
}

/* ---- building events ----------------------------------------------------- */

typedef struct test_order {
    Webshop__V1__OrderSent ev;
    Webshop__V1__OrderItem items[4];
    Webshop__V1__OrderItem *ptrs[4];
    char id[40];
} test_order;

static void test_order_init(test_order *o, unsigned seq, size_t n, const int32_t *ids,
                            const int32_t *counts)
{
    webshop__v1__order_sent__init(&o->ev);
    snprintf(o->id, sizeof(o->id), "00000000-0000-4000-8000-%012x", seq);
    o->ev.order_id = o->id;
    for (size_t i = 0; i < n; i++) {
        webshop__v1__order_item__init(&o->items[i]);
        o->items[i].inventory_id = ids[i];
        o->items[i].count = counts[i];
        o->ptrs[i] = &o->items[i];
    }
    o->ev.n_items = n;
    o->ev.items = o->ptrs;
}

static ws_err test_cancel(const char *order_id, inv_cancel_outcome *out)
{
    Webshop__V1__OrderCanceled c = WEBSHOP__V1__ORDER_CANCELED__INIT;
    c.order_id = (char *)order_id;
    return inv_stock_order_canceled(test_conn, &c, out);
}

static ws_err test_sent(const Webshop__V1__OrderSent *ev, inv_order_outcome *out)
{
    return inv_stock_order_sent(test_conn, ev, out);
}

static void test_assert_levels(int32_t id, int64_t balance, int64_t held, int64_t added)
{
    int64_t b, h, a;
    cr_assert_eq(inv_stock_levels(test_pool, id, &b, &h, &a), WS_OK);
    cr_assert_eq(b, balance, "product %d balance %lld, want %lld", id, (long long)b,
                 (long long)balance);
    cr_assert_eq(h, held, "product %d held %lld, want %lld", id, (long long)h,
                 (long long)held);
    cr_assert_eq(a, added, "product %d added %lld, want %lld", id, (long long)a,
                 (long long)added);
}

/* ---- tests ------------------------------------------------------------- */

Test(inventory_stock, deferred_stock_changed_is_one_per_product_for_a_whole_group)
{
    test_open_seeded();
    test_order a, b, c;
    test_order_init(&a, 1, 2, (int32_t[]){2, 1}, (int32_t[]){3, 5});
    test_order_init(&b, 2, 1, (int32_t[]){1}, (int32_t[]){1});
    test_order_init(&c, 3, 1, (int32_t[]){1}, (int32_t[]){500}); /* rejected */
    inv_stock_opts defer = {.defer_changed = true};
    inv_order_outcome out;
    cr_assert_eq(ws_db_group_begin(test_conn), WS_OK);
    cr_assert_eq(inv_stock_order_sent_with(test_conn, &a.ev, &defer, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
    cr_assert_eq(out.n_queued, 1, "InStock only");
    cr_assert_eq(out.n_moved, 2);
    cr_assert_eq(out.moved[0], 1);
    cr_assert_eq(out.moved[1], 2);
    cr_assert_eq(inv_stock_order_sent_with(test_conn, &b.ev, &defer, &out), WS_OK);
    cr_assert_eq(out.n_moved, 1);
    cr_assert_eq(inv_stock_order_sent_with(test_conn, &c.ev, &defer, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_REJECTED);
    cr_assert_eq(out.n_moved, 0, "a rejection moves no balance");
    inv_cancel_outcome co;
    Webshop__V1__OrderCanceled cancel = WEBSHOP__V1__ORDER_CANCELED__INIT;
    cancel.order_id = b.id;
    cr_assert_eq(inv_stock_order_canceled_with(test_conn, &cancel, &defer, &co), WS_OK);
    cr_assert_eq(co.action, INV_CANCEL_RELEASED);
    cr_assert_eq(co.n_queued, 0);
    cr_assert_eq(co.n_moved, 1);
    cr_assert_eq(co.moved[0], 1);
    size_t queued = 0;
    cr_assert_eq(inv_stock_changed_queue(test_conn, (int32_t[]){1, 2}, 2, &queued),
                 WS_OK);
    cr_assert_eq(queued, 2);
    cr_assert_eq(ws_db_group_end(test_conn), WS_OK);
    test_assert_levels(1, 195, 5, 200);
    test_assert_levels(2, 197, 3, 200);

    test_events es;
    test_events_take(&es);
    cr_assert_eq(test_events_count(&es, WEBSHOP_V1_IN_STOCK_TOPIC), 2);
    cr_assert_eq(test_events_count(&es, WEBSHOP_V1_OUT_OF_STOCK_TOPIC), 1);
    cr_assert_eq(test_events_count(&es, WEBSHOP_V1_STOCK_CHANGED_TOPIC), 2);
    for (size_t i = 0; i < es.n; i++) {
        if (strcmp(es.ev[i].topic, WEBSHOP_V1_STOCK_CHANGED_TOPIC) == 0) {
            const Webshop__V1__StockChanged *sc =
                (const Webshop__V1__StockChanged *)es.ev[i].msg;
            cr_assert_eq(sc->balance, sc->product_id == 1 ? 195 : 197,
                         "the balance the group left");
        }
    }
    test_events_free(&es);
}

Test(inventory_stock, order_reserves_every_item_and_queues_in_stock)
{
    test_open_seeded();
    test_order o;
    test_order_init(&o, 1, 2, (int32_t[]){1, 2}, (int32_t[]){3, 5});
    inv_order_outcome out;
    cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
    test_assert_levels(1, 197, 3, 200);
    test_assert_levels(2, 195, 5, 200);

    test_events es;
    test_events_take(&es);
    cr_assert_eq(es.n, 3);
    cr_assert_str_eq(es.ev[0].topic, WEBSHOP_V1_IN_STOCK_TOPIC);
    cr_assert_str_eq(((Webshop__V1__InStock *)es.ev[0].msg)->order_id, o.id);
    cr_assert_eq(test_events_count(&es, WEBSHOP_V1_STOCK_CHANGED_TOPIC), 2);
    const Webshop__V1__StockChanged *sc = (const Webshop__V1__StockChanged *)es.ev[1].msg;
    cr_assert_eq(sc->product_id, 1);
    cr_assert_eq(sc->balance, 197);
    test_events_free(&es);

    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(test_pool, o.id, &r), WS_OK);
    cr_assert_eq(r->status, WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
    cr_assert_eq(r->n_items, 2);
    cr_assert_eq(r->items[1]->inventory_id, 2);
    cr_assert_eq(r->items[1]->count, 5);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(inventory_stock, out_of_stock_rejects_whole_order_with_nothing_reserved)
{
    test_open_seeded();
    test_order o;
    test_order_init(&o, 2, 2, (int32_t[]){1, 2}, (int32_t[]){10, 201});
    inv_order_outcome out;
    cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_REJECTED);
    cr_assert_str_eq(out.reason, "not enough stock for product 2");
    test_assert_levels(1, 200, 0, 200);
    test_assert_levels(2, 200, 0, 200);

    test_events es;
    test_events_take(&es);
    cr_assert_eq(es.n, 1);
    const Webshop__V1__OutOfStock *oos = (const Webshop__V1__OutOfStock *)es.ev[0].msg;
    cr_assert_str_eq(es.ev[0].topic, WEBSHOP_V1_OUT_OF_STOCK_TOPIC);
    cr_assert_str_eq(oos->order_id, o.id);
    cr_assert_str_eq(oos->reason, "not enough stock for product 2");
    test_events_free(&es);

    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(test_pool, o.id, &r), WS_OK);
    cr_assert_eq(r->status, WEBSHOP__V1__RESERVATION_STATUS__REJECTED);
    cr_assert_str_eq(r->reason, "not enough stock for product 2");
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(inventory_stock, invalid_orders_are_rejected_with_their_reason)
{
    test_open_seeded();
    struct {
        size_t n;
        int32_t ids[2];
        int32_t counts[2];
        const char *reason;
    } cases[] = {
        {1, {7}, {1}, "unknown product 7"},
        {1, {-3}, {1}, "unknown product -3"},
        {1, {1}, {0}, "invalid count for product 1"},
        {2, {1, 2}, {1, -5}, "invalid count for product 2"},
        {0, {0}, {0}, "no items"},
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        test_order o;
        test_order_init(&o, 100 + i, cases[i].n, cases[i].ids, cases[i].counts);
        inv_order_outcome out;
        cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
        cr_assert_eq(out.action, INV_ORDER_REJECTED, "case %u", i);
        cr_assert_str_eq(out.reason, cases[i].reason);
    }
    test_assert_levels(1, 200, 0, 200);
    test_assert_levels(2, 200, 0, 200);

    /* A bad order id records nothing. */
    test_order o;
    test_order_init(&o, 200, 1, (int32_t[]){1}, (int32_t[]){1});
    o.ev.order_id = "not-a-uuid";
    inv_order_outcome out;
    cr_assert_eq(test_sent(&o.ev, &out), WS_EINVAL);
    cr_assert_eq(out.action, INV_ORDER_BAD_ID);
    test_assert_levels(1, 200, 0, 200);
    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(test_pool, "not-a-uuid", &r), WS_EINVAL);

    test_events es;
    test_events_take(&es);
    cr_assert_eq(es.n, 6);
    cr_assert_eq(test_events_count(&es, WEBSHOP_V1_OUT_OF_STOCK_TOPIC), 6);
    const Webshop__V1__OutOfStock *last = (const Webshop__V1__OutOfStock *)es.ev[5].msg;
    cr_assert_str_eq(last->order_id, "not-a-uuid");
    cr_assert_str_eq(last->reason, "bad order id");
    test_events_free(&es);
}

Test(inventory_stock, duplicate_order_sent_reserves_once_and_requeues_outcome)
{
    test_open_seeded();
    test_order o;
    test_order_init(&o, 3, 1, (int32_t[]){1}, (int32_t[]){4});
    inv_order_outcome out;
    cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
    test_events es;
    test_events_take(&es);
    test_events_free(&es);

    for (int i = 0; i < 4; i++) {
        cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
        cr_assert_eq(out.action, INV_ORDER_DUPLICATE);
        cr_assert_eq(out.n_queued, 1);
    }
    test_assert_levels(1, 196, 4, 200);
    test_events_take(&es);
    cr_assert_eq(es.n, 4);
    cr_assert_eq(test_events_count(&es, WEBSHOP_V1_IN_STOCK_TOPIC), 4);
    test_events_free(&es);

    /* A rejected order's duplicate re-queues the same reason. */
    test_order big;
    test_order_init(&big, 4, 1, (int32_t[]){2}, (int32_t[]){1000});
    cr_assert_eq(test_sent(&big.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_REJECTED);
    big.items[0].count = 1; /* the same id with a now satisfiable count */
    cr_assert_eq(test_sent(&big.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_DUPLICATE);
    test_assert_levels(2, 200, 0, 200);
    test_events_take(&es);
    cr_assert_eq(es.n, 2);
    const Webshop__V1__OutOfStock *oos = (const Webshop__V1__OutOfStock *)es.ev[1].msg;
    cr_assert_str_eq(oos->reason, "not enough stock for product 2");
    test_events_free(&es);
}

Test(inventory_stock, cancel_before_order_never_reserves)
{
    test_open_seeded();
    test_order o;
    test_order_init(&o, 5, 1, (int32_t[]){1}, (int32_t[]){2});
    inv_cancel_outcome c;
    cr_assert_eq(test_cancel(o.id, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_TOMBSTONED);
    cr_assert_eq(c.n_queued, 0);

    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(test_pool, o.id, &r), WS_OK);
    cr_assert_eq(r->status, WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    for (int i = 0; i < 2; i++) {
        inv_order_outcome out;
        cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
        cr_assert_eq(out.action, INV_ORDER_TOMBSTONED);
    }
    test_assert_levels(1, 200, 0, 200);
    test_events es;
    test_events_take(&es);
    cr_assert_eq(es.n, 2);
    const Webshop__V1__OutOfStock *oos = (const Webshop__V1__OutOfStock *)es.ev[0].msg;
    cr_assert_str_eq(es.ev[0].topic, WEBSHOP_V1_OUT_OF_STOCK_TOPIC);
    cr_assert_str_eq(oos->reason, "canceled");
    test_events_free(&es);

    /* A second cancel changes nothing. */
    cr_assert_eq(test_cancel(o.id, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_NOOP);
}

Test(inventory_stock, cancel_releases_exactly_once_and_restores_balance)
{
    test_open_seeded();
    test_order o;
    test_order_init(&o, 6, 3, (int32_t[]){1, 2, 1}, (int32_t[]){2, 3, 4});
    inv_order_outcome out;
    cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
    test_assert_levels(1, 194, 6, 200);
    test_events es;
    test_events_take(&es);
    cr_assert_eq(test_events_count(&es, WEBSHOP_V1_STOCK_CHANGED_TOPIC), 2);
    test_events_free(&es);

    inv_cancel_outcome c;
    cr_assert_eq(test_cancel(o.id, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_RELEASED);
    test_assert_levels(1, 200, 0, 200);
    test_assert_levels(2, 200, 0, 200);
    test_events_take(&es);
    cr_assert_eq(es.n, 2);
    const test_event *e = test_events_find(&es, WEBSHOP_V1_STOCK_CHANGED_TOPIC);
    cr_assert_eq(((const Webshop__V1__StockChanged *)e->msg)->balance, 200);
    test_events_free(&es);

    for (int i = 0; i < 3; i++) {
        cr_assert_eq(test_cancel(o.id, &c), WS_OK);
        cr_assert_eq(c.action, INV_CANCEL_NOOP);
    }
    /* The order re-sent after its release is not reserved again, and
     * nothing is published for it (issue 11.4: never "in stock"). */
    cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_DUPLICATE_CANCELED);
    cr_assert_eq(out.n_queued, 0);
    test_assert_levels(1, 200, 0, 200);
    test_events_take(&es);
    cr_assert_eq(es.n, 0);
    cr_assert_eq(test_cancel("bogus", &c), WS_EINVAL);

    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(test_pool, o.id, &r), WS_OK);
    cr_assert_eq(r->status, WEBSHOP__V1__RESERVATION_STATUS__RELEASED);
    cr_assert_eq(r->n_items, 3);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* ---- concurrency ------------------------------------------------------ */

#define RACE_THREADS 8
#define RACE_ORDERS  500
#define RACE_UNITS   100
#define RACE_PRODUCT 3

typedef struct race_arg {
    unsigned thread;
    int reserved;
    int rejected;
    int failed;
} race_arg;

static void *race_main(void *p)
{
    race_arg *a = p;
    ws_db_conn *c = NULL;
    if (ws_db_acquire(test_pool, &c) != WS_OK) {
        a->failed = RACE_ORDERS;
        return NULL;
    }
    for (unsigned i = 0; i < RACE_ORDERS; i++) {
        test_order ord;
        test_order_init(&ord, a->thread * 100000 + i, 1, (int32_t[]){RACE_PRODUCT},
                        (int32_t[]){1});
        inv_order_outcome out;
        if (inv_stock_order_sent(c, &ord.ev, &out) != WS_OK) {
            a->failed++;
        } else if (out.action == INV_ORDER_RESERVED) {
            a->reserved++;
        } else {
            a->rejected++;
        }
    }
    ws_db_release(c);
    return NULL;
}

Test(inventory_stock, eight_threads_competing_reserve_exactly_the_stock, .timeout = 120)
{
    test_open_seeded();
    Webshop__V1__Product p = WEBSHOP__V1__PRODUCT__INIT;
    p.id = RACE_PRODUCT;
    p.name = "scarce";
    p.price = 1;
    p.balance = RACE_UNITS;
    const Webshop__V1__Product *const ps[] = {&p};
    cr_assert_eq(inv_catalog_seed(test_pool, ps, 1, NULL), WS_OK);

    pthread_t th[RACE_THREADS];
    race_arg args[RACE_THREADS];
    for (unsigned i = 0; i < RACE_THREADS; i++) {
        args[i] = (race_arg){.thread = i + 1};
        cr_assert_eq(pthread_create(&th[i], NULL, race_main, &args[i]), 0);
    }
    int reserved = 0, rejected = 0, failed = 0;
    for (unsigned i = 0; i < RACE_THREADS; i++) {
        cr_assert_eq(pthread_join(th[i], NULL), 0);
        reserved += args[i].reserved;
        rejected += args[i].rejected;
        failed += args[i].failed;
    }
    cr_assert_eq(failed, 0);
    cr_assert_eq(reserved, RACE_UNITS);
    cr_assert_eq(rejected, RACE_THREADS * RACE_ORDERS - RACE_UNITS);
    test_assert_levels(RACE_PRODUCT, 0, RACE_UNITS, RACE_UNITS);
    test_assert_levels(1, 200, 0, 200);

    int64_t queued = 0;
    cr_assert_eq(ws_outbox_count(test_conn, &queued), WS_OK);
    /* One outcome per order plus one StockChanged per reservation. */
    cr_assert_eq(queued, RACE_THREADS * RACE_ORDERS + RACE_UNITS);
}

/* ---- two writers at the same moment (both engines) ---------------------- */

#define DUEL_ROUNDS 50

typedef struct duel_side {
    pthread_barrier_t *start;
    ws_db_conn *conn;
    const Webshop__V1__OrderSent *ev;
    inv_order_outcome out;
    ws_err err;
} duel_side;

static void *duel_main(void *p)
{
    duel_side *d = p;
    pthread_barrier_wait(d->start);
    d->err = inv_stock_order_sent(d->conn, d->ev, &d->out);
    return NULL;
}

/* Apply a on ca and b on cb from two threads released together. */
static void duel_run(ws_db_conn *const conns[2], const Webshop__V1__OrderSent *a,
                     const Webshop__V1__OrderSent *b, inv_order_outcome out[2])
{
    pthread_barrier_t start;
    cr_assert_eq(pthread_barrier_init(&start, NULL, 2), 0);
    duel_side sides[2] = {{.start = &start, .conn = conns[0], .ev = a},
                          {.start = &start, .conn = conns[1], .ev = b}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(pthread_create(&th[i], NULL, duel_main, &sides[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(pthread_join(th[i], NULL), 0);
    }
    pthread_barrier_destroy(&start);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(sides[i].err, WS_OK, "side %d: %s", i, ws_errname(sides[i].err));
        out[i] = sides[i].out;
    }
}

static void duel_conns(ws_db_conn *conns[2])
{
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ws_db_acquire(test_pool, &conns[i]), WS_OK);
    }
}

static void test_product_add(int32_t id, int32_t balance)
{
    Webshop__V1__Product p = WEBSHOP__V1__PRODUCT__INIT;
    p.id = id;
    p.name = "last units";
    p.price = 1;
    p.balance = balance;
    const Webshop__V1__Product *const ps[] = {&p};
    size_t inserted = 0;
    cr_assert_eq(inv_catalog_seed(test_pool, ps, 1, &inserted), WS_OK);
    cr_assert_eq(inserted, 1);
}

Test(inventory_stock, two_reservations_for_the_last_unit_at_once_exactly_one_wins)
{
    test_open();
    ws_db_conn *conns[2];
    duel_conns(conns);
    for (unsigned r = 0; r < DUEL_ROUNDS; r++) {
        int32_t pid = 100 + (int32_t)r;
        test_product_add(pid, 1);
        test_order a, b;
        test_order_init(&a, 1000 + 2 * r, 1, (int32_t[]){pid}, (int32_t[]){1});
        test_order_init(&b, 1001 + 2 * r, 1, (int32_t[]){pid}, (int32_t[]){1});
        inv_order_outcome out[2];
        duel_run(conns, &a.ev, &b.ev, out);
        int won =
            (out[0].action == INV_ORDER_RESERVED) + (out[1].action == INV_ORDER_RESERVED);
        cr_assert_eq(won, 1, "round %u: %d reservations of the last unit", r, won);
        const inv_order_outcome *lost =
            out[0].action == INV_ORDER_RESERVED ? &out[1] : &out[0];
        cr_assert_eq(lost->action, INV_ORDER_REJECTED, "round %u", r);
        char want[64];
        snprintf(want, sizeof(want), "not enough stock for product %d", pid);
        cr_assert_str_eq(lost->reason, want);
        test_assert_levels(pid, 0, 1, 1);

        test_events es;
        test_events_take(&es);
        cr_assert_eq(test_events_count(&es, WEBSHOP_V1_IN_STOCK_TOPIC), 1, "round %u", r);
        cr_assert_eq(test_events_count(&es, WEBSHOP_V1_OUT_OF_STOCK_TOPIC), 1);
        const test_event *e = test_events_find(&es, WEBSHOP_V1_STOCK_CHANGED_TOPIC);
        cr_assert_eq(((const Webshop__V1__StockChanged *)e->msg)->balance, 0);
        test_events_free(&es);
    }
    for (int i = 0; i < 2; i++) {
        ws_db_release(conns[i]);
    }
}

/* Two orders for the same two last units, lines in opposite order: one
 * gets both, the other nothing (all or nothing), and neither deadlocks. */
Test(inventory_stock, two_multi_line_orders_at_once_are_all_or_nothing)
{
    test_open();
    ws_db_conn *conns[2];
    duel_conns(conns);
    for (unsigned r = 0; r < DUEL_ROUNDS / 2; r++) {
        int32_t p1 = 200 + 2 * (int32_t)r, p2 = p1 + 1;
        test_product_add(p1, 1);
        test_product_add(p2, 1);
        test_order a, b;
        test_order_init(&a, 3000 + 2 * r, 2, (int32_t[]){p1, p2}, (int32_t[]){1, 1});
        test_order_init(&b, 3001 + 2 * r, 2, (int32_t[]){p2, p1}, (int32_t[]){1, 1});
        inv_order_outcome out[2];
        duel_run(conns, &a.ev, &b.ev, out);
        int won =
            (out[0].action == INV_ORDER_RESERVED) + (out[1].action == INV_ORDER_RESERVED);
        cr_assert_eq(won, 1, "round %u: %d orders reserved", r, won);
        test_assert_levels(p1, 0, 1, 1);
        test_assert_levels(p2, 0, 1, 1);
        test_events es;
        test_events_take(&es);
        test_events_free(&es);
    }
    for (int i = 0; i < 2; i++) {
        ws_db_release(conns[i]);
    }
}

Test(inventory_stock, same_order_sent_twice_at_once_reserves_once_and_both_say_so)
{
    test_open_seeded();
    ws_db_conn *conns[2];
    duel_conns(conns);
    for (unsigned r = 0; r < DUEL_ROUNDS; r++) {
        test_order o;
        test_order_init(&o, 5000 + r, 1, (int32_t[]){1}, (int32_t[]){1});
        inv_order_outcome out[2];
        duel_run(conns, &o.ev, &o.ev, out);
        int first =
            (out[0].action == INV_ORDER_RESERVED) + (out[1].action == INV_ORDER_RESERVED);
        cr_assert_eq(first, 1, "round %u: reserved %d times", r, first);
        const inv_order_outcome *dup =
            out[0].action == INV_ORDER_RESERVED ? &out[1] : &out[0];
        cr_assert_eq(dup->action, INV_ORDER_DUPLICATE, "round %u", r);
        cr_assert_eq(dup->status, WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
        test_assert_levels(1, 200 - (int64_t)r - 1, (int64_t)r + 1, 200);

        /* Both events describe the one record: in stock, for this id. */
        test_events es;
        test_events_take(&es);
        cr_assert_eq(es.n, 3, "round %u: %zu events", r, es.n);
        cr_assert_eq(test_events_count(&es, WEBSHOP_V1_IN_STOCK_TOPIC), 2);
        cr_assert_eq(test_events_count(&es, WEBSHOP_V1_STOCK_CHANGED_TOPIC), 1);
        for (size_t i = 0; i < es.n; i++) {
            if (strcmp(es.ev[i].topic, WEBSHOP_V1_IN_STOCK_TOPIC) == 0) {
                cr_assert_str_eq(((const Webshop__V1__InStock *)es.ev[i].msg)->order_id,
                                 o.id);
            }
        }
        test_events_free(&es);
    }
    for (int i = 0; i < 2; i++) {
        ws_db_release(conns[i]);
    }
}

typedef struct duel_cancel {
    pthread_barrier_t *start;
    ws_db_conn *conn;
    const char *order_id;
    inv_cancel_outcome out;
    ws_err err;
} duel_cancel;

static void *duel_cancel_main(void *p)
{
    duel_cancel *d = p;
    Webshop__V1__OrderCanceled c = WEBSHOP__V1__ORDER_CANCELED__INIT;
    c.order_id = (char *)d->order_id;
    pthread_barrier_wait(d->start);
    d->err = inv_stock_order_canceled(d->conn, &c, &d->out);
    return NULL;
}

/* An OrderSent and its OrderCanceled at the same moment: either the order
 * was reserved and the cancel released it, or the cancel left a tombstone
 * and the order was never reserved; nothing stays held either way. */
Test(inventory_stock, order_sent_and_its_cancel_at_once_leave_nothing_held)
{
    test_open_seeded();
    ws_db_conn *conns[2];
    duel_conns(conns);
    for (unsigned r = 0; r < DUEL_ROUNDS; r++) {
        test_order o;
        test_order_init(&o, 7000 + r, 1, (int32_t[]){2}, (int32_t[]){3});
        pthread_barrier_t start;
        cr_assert_eq(pthread_barrier_init(&start, NULL, 2), 0);
        duel_side sent = {.start = &start, .conn = conns[0], .ev = &o.ev};
        duel_cancel cancel = {.start = &start, .conn = conns[1], .order_id = o.id};
        pthread_t th[2];
        cr_assert_eq(pthread_create(&th[0], NULL, duel_main, &sent), 0);
        cr_assert_eq(pthread_create(&th[1], NULL, duel_cancel_main, &cancel), 0);
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(pthread_join(th[i], NULL), 0);
        }
        pthread_barrier_destroy(&start);
        cr_assert_eq(sent.err, WS_OK);
        cr_assert_eq(cancel.err, WS_OK);
        if (sent.out.action == INV_ORDER_RESERVED) {
            cr_assert_eq(cancel.out.action, INV_CANCEL_RELEASED, "round %u", r);
        } else {
            cr_assert_eq(sent.out.action, INV_ORDER_TOMBSTONED, "round %u", r);
            cr_assert_eq(cancel.out.action, INV_CANCEL_TOMBSTONED, "round %u", r);
        }
        test_assert_levels(2, 200, 0, 200);
        test_events es;
        test_events_take(&es);
        test_events_free(&es);
    }
    for (int i = 0; i < 2; i++) {
        ws_db_release(conns[i]);
    }
}

/* ---- seeding ------------------------------------------------------------ */

Test(inventory_stock, reseed_does_not_overwrite_moved_stock)
{
    test_open_seeded();
    test_order o;
    test_order_init(&o, 7, 1, (int32_t[]){1}, (int32_t[]){5});
    inv_order_outcome out;
    cr_assert_eq(test_sent(&o.ev, &out), WS_OK);

    size_t inserted = 99;
    cr_assert_eq(inv_catalog_seed_default(test_pool, &inserted), WS_OK);
    cr_assert_eq(inserted, 0);
    test_assert_levels(1, 195, 5, 200);

    char path[320];
    snprintf(path, sizeof(path), "%s/catalog.json", test_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("[{\"id\": 1, \"name\": \"Renamed\", \"price\": 1500, \"balance\": 999},\n"
          " {\"id\": 3, \"name\": \"Third\", \"price\": 300, \"balance\": 7}]\n",
          f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(inv_catalog_seed_file(test_pool, path, &inserted), WS_OK);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(inserted, 1);
    test_assert_levels(1, 195, 5, 200);
    test_assert_levels(3, 7, 0, 7);

    Webshop__V1__Product *p = NULL;
    cr_assert_eq(inv_stock_product(test_pool, 1, &p), WS_OK);
    cr_assert_str_eq(p->name, "Renamed");
    cr_assert_eq(p->price, 1500);
    cr_assert_eq(p->balance, 195);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    cr_assert_eq(inv_stock_product(test_pool, 42, &p), WS_ENOTFOUND);

    Webshop__V1__GetCatalogResponse *cat = NULL;
    cr_assert_eq(inv_stock_catalog(test_pool, &cat), WS_OK);
    cr_assert_eq(cat->n_products, 3);
    cr_assert_str_eq(cat->products[1]->name, "One Leg Web Shop Prototype v 2.0");
    cr_assert_eq(cat->products[1]->price, 2000);
    cr_assert_eq(cat->products[2]->id, 3);
    protobuf_c_message_free_unpacked(&cat->base, NULL);
}

Test(inventory_stock, seed_refuses_invalid_products_and_writes_nothing)
{
    test_open();
    Webshop__V1__Product a = WEBSHOP__V1__PRODUCT__INIT;
    Webshop__V1__Product b = WEBSHOP__V1__PRODUCT__INIT;
    a.id = 1;
    a.name = "ok";
    b.id = 1;
    b.name = "same id";
    const Webshop__V1__Product *const dup[] = {&a, &b};
    cr_assert_eq(inv_catalog_seed(test_pool, dup, 2, NULL), WS_EINVAL);
    b.id = 2;
    b.balance = -1;
    cr_assert_eq(inv_catalog_seed(test_pool, dup, 2, NULL), WS_EINVAL);

    char path[320];
    snprintf(path, sizeof(path), "%s/bad.json", test_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("[{\"id\": 1, \"nme\": \"typo\"}]", f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(inv_catalog_seed_file(test_pool, path, NULL), WS_EPARSE);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(inv_catalog_seed_file(test_pool, path, NULL), WS_EIO);

    Webshop__V1__GetCatalogResponse *cat = NULL;
    cr_assert_eq(inv_stock_catalog(test_pool, &cat), WS_OK);
    cr_assert_eq(cat->n_products, 0);
    protobuf_c_message_free_unpacked(&cat->base, NULL);
}

/* ---- order ids: any case, stored lower case (issue 11.1) ----------------- */

#define MIXED_ID "5B0C9F3E-7a41-4D2B-9c55-0123456789AB"
#define LOWER_ID "5b0c9f3e-7a41-4d2b-9c55-0123456789ab"

Test(inventory_stock, mixed_case_order_sent_and_lower_case_cancel_are_one_order)
{
    test_open_seeded();
    test_order o;
    test_order_init(&o, 0, 1, (int32_t[]){1}, (int32_t[]){7});
    o.ev.order_id = MIXED_ID;
    inv_order_outcome out;
    cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
    cr_assert_str_eq(out.order_id, LOWER_ID);
    test_events es;
    test_events_take(&es);
    const test_event *e = test_events_find(&es, WEBSHOP_V1_IN_STOCK_TOPIC);
    cr_assert_str_eq(((const Webshop__V1__InStock *)e->msg)->order_id, LOWER_ID);
    test_events_free(&es);

    /* The same id in lower case is a duplicate, not a second order. */
    o.ev.order_id = LOWER_ID;
    cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_DUPLICATE);
    test_assert_levels(1, 193, 7, 200);

    /* Read in any case; answered in lower case. */
    const char *spellings[] = {MIXED_ID, LOWER_ID,
                               "5B0C9F3E-7A41-4D2B-9C55-0123456789AB"};
    for (size_t i = 0; i < 3; i++) {
        Webshop__V1__GetReservationResponse *r = NULL;
        cr_assert_eq(inv_stock_reservation(test_pool, spellings[i], &r), WS_OK);
        cr_assert_eq(r->status, WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
        cr_assert_str_eq(r->order_id, LOWER_ID);
        cr_assert_eq(r->n_items, 1);
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }

    inv_cancel_outcome c;
    cr_assert_eq(test_cancel(LOWER_ID, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_RELEASED);
    cr_assert_str_eq(c.order_id, LOWER_ID);
    test_assert_levels(1, 200, 0, 200);
    cr_assert_eq(test_cancel(MIXED_ID, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_NOOP);

    /* Exactly one record, under the lower-case id. */
    ws_db_stmt *st;
    bool row = false;
    cr_assert_eq(
        ws_db_prepare(test_conn, "SELECT count(*), max(order_id) FROM reservations", &st),
        WS_OK);
    cr_assert_eq(ws_db_step(st, &row), WS_OK);
    cr_assert(row);
    cr_assert_eq(ws_db_column_int64(st, 0), 1);
    cr_assert_str_eq(ws_db_column_text(st, 1), LOWER_ID);
    ws_db_reset(st);
    test_events_take(&es);
    test_events_free(&es);
}

Test(inventory_stock, upper_case_cancel_tombstones_the_lower_case_order)
{
    test_open_seeded();
    inv_cancel_outcome c;
    cr_assert_eq(test_cancel(MIXED_ID, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_TOMBSTONED);
    test_order o;
    test_order_init(&o, 0, 1, (int32_t[]){2}, (int32_t[]){3});
    o.ev.order_id = LOWER_ID;
    for (int i = 0; i < 2; i++) {
        inv_order_outcome out;
        cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
        cr_assert_eq(out.action, INV_ORDER_TOMBSTONED);
        o.ev.order_id = MIXED_ID;
    }
    test_assert_levels(2, 200, 0, 200);
    test_events es;
    test_events_take(&es);
    cr_assert_eq(es.n, 2);
    cr_assert_eq(test_events_count(&es, WEBSHOP_V1_IN_STOCK_TOPIC), 0);
    for (size_t i = 0; i < es.n; i++) {
        const Webshop__V1__OutOfStock *oos =
            (const Webshop__V1__OutOfStock *)es.ev[i].msg;
        cr_assert_str_eq(oos->order_id, LOWER_ID);
        cr_assert_str_eq(oos->reason, "canceled");
    }
    test_events_free(&es);
}

/* ---- the sweep's domain steps (issue 12, issue 11.6) ---------------------- */

#define ORPHAN_AFTER_MS 120000
#define ORPHAN_REASON                                                                    \
    "reservation released: the order service did not know the order within 120 s"

/* The candidates at now_ms, as a count; ids[0] (if any) into first. */
static size_t test_candidates(int64_t now_ms, char *first)
{
    inv_orphan_candidate c[16];
    size_t n = 99;
    cr_assert_eq(
        inv_stock_orphan_candidates(test_pool, now_ms, ORPHAN_AFTER_MS, c, 16, &n),
        WS_OK);
    if (first != NULL) {
        snprintf(first, WS_UUID_TEXT_LEN, "%s", n > 0 ? c[0].order_id : "");
    }
    return n;
}

static void test_reserve(test_order *o, unsigned seq, int32_t product, int32_t count)
{
    test_order_init(o, seq, 1, (int32_t[]){product}, (int32_t[]){count});
    inv_order_outcome out;
    cr_assert_eq(test_sent(&o->ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
}

Test(inventory_stock, orphan_candidates_are_held_unconfirmed_and_older_than_the_bound)
{
    test_open_seeded();
    test_order held, rejected, canceled;
    test_reserve(&held, 20, 1, 2);
    test_order_init(&rejected, 21, 1, (int32_t[]){1}, (int32_t[]){5000});
    inv_order_outcome out;
    cr_assert_eq(test_sent(&rejected.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_REJECTED);
    test_reserve(&canceled, 22, 2, 1);
    inv_cancel_outcome c;
    cr_assert_eq(test_cancel(canceled.id, &c), WS_OK);
    cr_assert_eq(test_cancel("00000000-0000-4000-8000-0000000000ff", &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_TOMBSTONED);

    int64_t now = ws_clock_wall_ms();
    char first[WS_UUID_TEXT_LEN];
    cr_assert_eq(test_candidates(now, first), 0, "younger than the bound");
    cr_assert_eq(test_candidates(now + ORPHAN_AFTER_MS + 1000, first), 1);
    cr_assert_str_eq(first, held.id);

    /* The answer is a parameter: no answer leaves it as it is. */
    int64_t later = now + ORPHAN_AFTER_MS + 1000;
    inv_orphan_outcome o;
    cr_assert_eq(inv_stock_orphan_settle(test_pool, held.id, INV_LOOKUP_FAILED, later,
                                         ORPHAN_AFTER_MS, &o),
                 WS_OK);
    cr_assert_eq(o.action, INV_ORPHAN_LEFT);
    cr_assert_eq(test_candidates(later, NULL), 1);
    /* Too young for the clock given: skipped, whatever the answer. */
    cr_assert_eq(inv_stock_orphan_settle(test_pool, held.id, INV_LOOKUP_NOT_FOUND, now,
                                         ORPHAN_AFTER_MS, &o),
                 WS_OK);
    cr_assert_eq(o.action, INV_ORPHAN_SKIPPED);
    /* Found: confirmed, never a candidate again, never released. */
    cr_assert_eq(inv_stock_orphan_settle(test_pool, held.id, INV_LOOKUP_FOUND, later,
                                         ORPHAN_AFTER_MS, &o),
                 WS_OK);
    cr_assert_eq(o.action, INV_ORPHAN_CONFIRMED);
    cr_assert_eq(test_candidates(later + 86400000, NULL), 0);
    cr_assert_eq(inv_stock_orphan_settle(test_pool, held.id, INV_LOOKUP_NOT_FOUND, later,
                                         ORPHAN_AFTER_MS, &o),
                 WS_OK);
    cr_assert_eq(o.action, INV_ORPHAN_SKIPPED);
    /* Records that hold nothing are never released. */
    const char *others[] = {rejected.id, canceled.id,
                            "00000000-0000-4000-8000-0000000000ff",
                            "00000000-0000-4000-8000-0000000000fe"};
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(inv_stock_orphan_settle(test_pool, others[i], INV_LOOKUP_NOT_FOUND,
                                             later, ORPHAN_AFTER_MS, &o),
                     WS_OK);
        cr_assert_eq(o.action, INV_ORPHAN_SKIPPED, "%s", others[i]);
    }
    test_assert_levels(1, 198, 2, 200);
    test_assert_levels(2, 200, 0, 200);
    cr_assert_eq(inv_stock_orphan_settle(test_pool, "bogus", INV_LOOKUP_NOT_FOUND, later,
                                         ORPHAN_AFTER_MS, &o),
                 WS_EINVAL);
    cr_assert_eq(inv_stock_orphan_candidates(test_pool, later, -1, NULL, 0, &(size_t){0}),
                 WS_EINVAL);
}

Test(inventory_stock, orphan_not_found_is_released_once_and_keeps_the_invariant)
{
    test_open_seeded();
    test_order o;
    test_order_init(&o, 30, 3, (int32_t[]){1, 2, 1}, (int32_t[]){4, 6, 1});
    o.ev.order_id = "00000000-0000-4000-8000-00000000001E"; /* upper-case hex */
    inv_order_outcome out;
    cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
    test_order other;
    test_reserve(&other, 31, 1, 10);
    test_assert_levels(1, 185, 15, 200);
    test_events es;
    test_events_take(&es);
    test_events_free(&es);

    int64_t later = ws_clock_wall_ms() + ORPHAN_AFTER_MS + 1000;
    inv_orphan_outcome r;
    cr_assert_eq(inv_stock_orphan_settle(test_pool, o.id, INV_LOOKUP_NOT_FOUND, later,
                                         ORPHAN_AFTER_MS, &r),
                 WS_OK);
    cr_assert_eq(r.action, INV_ORPHAN_RELEASED);
    cr_assert_eq(r.n_items, 3);
    cr_assert_eq(r.n_queued, 2);
    cr_assert_str_eq(r.reason, ORPHAN_REASON);
    test_assert_levels(1, 190, 10, 200);
    test_assert_levels(2, 200, 0, 200);
    test_events_take(&es);
    cr_assert_eq(es.n, 2);
    cr_assert_eq(test_events_count(&es, WEBSHOP_V1_STOCK_CHANGED_TOPIC), 2);
    const test_event *e = test_events_find(&es, WEBSHOP_V1_STOCK_CHANGED_TOPIC);
    cr_assert_eq(((const Webshop__V1__StockChanged *)e->msg)->balance, 190);
    test_events_free(&es);

    /* Once: a second NOT_FOUND, a cancel, and the other order are untouched. */
    cr_assert_eq(inv_stock_orphan_settle(test_pool, o.id, INV_LOOKUP_NOT_FOUND, later,
                                         ORPHAN_AFTER_MS, &r),
                 WS_OK);
    cr_assert_eq(r.action, INV_ORPHAN_SKIPPED);
    inv_cancel_outcome c;
    cr_assert_eq(test_cancel(o.id, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_NOOP);
    test_assert_levels(1, 190, 10, 200);
    char first[WS_UUID_TEXT_LEN];
    cr_assert_eq(test_candidates(later, first), 1);
    cr_assert_str_eq(first, other.id);

    Webshop__V1__GetReservationResponse *g = NULL;
    cr_assert_eq(inv_stock_reservation(test_pool, o.id, &g), WS_OK);
    cr_assert_eq(g->status, WEBSHOP__V1__RESERVATION_STATUS__RELEASED);
    cr_assert_str_eq(g->reason, ORPHAN_REASON);
    cr_assert_eq(g->n_items, 3);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    test_events_take(&es);
    cr_assert_eq(es.n, 0);
}

/* Issue 11.4: a duplicate OrderSent re-publishes the record's current state. */
Test(inventory_stock, duplicate_order_sent_after_each_release_never_says_in_stock)
{
    test_open_seeded();
    test_order canceled, orphan;
    test_reserve(&canceled, 40, 1, 3);
    test_reserve(&orphan, 41, 2, 3);
    inv_cancel_outcome c;
    cr_assert_eq(test_cancel(canceled.id, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_RELEASED);
    inv_orphan_outcome r;
    cr_assert_eq(inv_stock_orphan_settle(test_pool, orphan.id, INV_LOOKUP_NOT_FOUND,
                                         ws_clock_wall_ms() + ORPHAN_AFTER_MS + 1000,
                                         ORPHAN_AFTER_MS, &r),
                 WS_OK);
    cr_assert_eq(r.action, INV_ORPHAN_RELEASED);
    test_events es;
    test_events_take(&es);
    test_events_free(&es);

    for (int i = 0; i < 3; i++) {
        inv_order_outcome out;
        cr_assert_eq(test_sent(&canceled.ev, &out), WS_OK);
        cr_assert_eq(out.action, INV_ORDER_DUPLICATE_CANCELED);
        cr_assert_eq(out.n_queued, 0);
        cr_assert_eq(test_sent(&orphan.ev, &out), WS_OK);
        cr_assert_eq(out.action, INV_ORDER_DUPLICATE_ORPHAN);
        cr_assert_eq(out.n_queued, 1);
        cr_assert_str_eq(out.reason, ORPHAN_REASON);
    }
    test_assert_levels(1, 200, 0, 200);
    test_assert_levels(2, 200, 0, 200);
    test_events_take(&es);
    cr_assert_eq(es.n, 3);
    cr_assert_eq(test_events_count(&es, WEBSHOP_V1_IN_STOCK_TOPIC), 0);
    for (size_t i = 0; i < es.n; i++) {
        cr_assert_str_eq(es.ev[i].topic, WEBSHOP_V1_OUT_OF_STOCK_TOPIC);
        const Webshop__V1__OutOfStock *oos =
            (const Webshop__V1__OutOfStock *)es.ev[i].msg;
        cr_assert_str_eq(oos->order_id, orphan.id);
        cr_assert_str_eq(oos->reason, ORPHAN_REASON);
    }
    test_events_free(&es);
}

Test(inventory_stock, tombstones_expire_after_the_ttl_and_are_then_forgotten)
{
    test_open_seeded();
    const int64_t ttl = 24LL * 3600 * 1000;
    char ids[5][40];
    for (int i = 0; i < 5; i++) {
        snprintf(ids[i], sizeof(ids[i]), "00000000-0000-4000-8000-%012x", 50 + i);
        inv_cancel_outcome c;
        cr_assert_eq(test_cancel(ids[i], &c), WS_OK);
        cr_assert_eq(c.action, INV_CANCEL_TOMBSTONED);
    }
    /* Records that are not tombstones never expire. */
    test_order held, released;
    test_reserve(&held, 60, 1, 1);
    test_reserve(&released, 61, 1, 1);
    inv_cancel_outcome c;
    cr_assert_eq(test_cancel(released.id, &c), WS_OK);

    int64_t now = ws_clock_wall_ms();
    size_t n = 99;
    cr_assert_eq(inv_stock_tombstones_expire(test_pool, now, ttl, 100, &n), WS_OK);
    cr_assert_eq(n, 0, "younger than the ttl");
    cr_assert_eq(inv_stock_tombstones_expire(test_pool, now + ttl + 1000, ttl, 2, &n),
                 WS_OK);
    cr_assert_eq(n, 2, "at most limit per call");
    cr_assert_eq(inv_stock_tombstones_expire(test_pool, now + ttl + 1000, ttl, 100, &n),
                 WS_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(inv_stock_tombstones_expire(test_pool, now + 10 * ttl, ttl, 100, &n),
                 WS_OK);
    cr_assert_eq(n, 0);
    cr_assert_eq(inv_stock_tombstones_expire(test_pool, now, -1, 100, &n), WS_EINVAL);

    Webshop__V1__GetReservationResponse *g = NULL;
    cr_assert_eq(inv_stock_reservation(test_pool, ids[0], &g), WS_OK);
    cr_assert_eq(g->status, WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    cr_assert_eq(inv_stock_reservation(test_pool, released.id, &g), WS_OK);
    cr_assert_eq(g->status, WEBSHOP__V1__RESERVATION_STATUS__RELEASED);
    protobuf_c_message_free_unpacked(&g->base, NULL);
    test_assert_levels(1, 199, 1, 200);

    /* The documented consequence: a forgotten cancel's order, arriving
     * after the ttl, is reserved like a new one. */
    test_order late;
    test_order_init(&late, 50, 1, (int32_t[]){2}, (int32_t[]){1});
    inv_order_outcome out;
    cr_assert_eq(test_sent(&late.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
}

/* A database of schema version 1 (before release kinds and the id rule):
 * its released reservations were released by cancels and stay so; a record
 * stored under an upper-case id is renamed to lower case with its items,
 * unless another record holds the same UUID (both then stay, and the sweep
 * still finds the held one by its stored id). */
Test(inventory_stock, upgrade_from_version_1_keeps_releases_and_lowers_ids)
{
    if (test_db_is_pg()) {
        cr_skip_test("no PostgreSQL database of version 1 was ever made");
    }
    size_t n;
    (void)inv_schema_migrations(&n);
    cr_assert_geq(n, 3);
    test_pool = test_pool_open(1);
    cr_assert_eq(inv_catalog_seed_default(test_pool, NULL), WS_OK);
    cr_assert_eq(ws_db_acquire(test_pool, &test_conn), WS_OK);
    cr_assert_eq(
        ws_db_exec(
            test_conn,
            "INSERT INTO reservations(order_id, status, reason, created_ms, updated_ms)"
            " VALUES ('00000000-0000-4000-8000-000000000070', 'released', '', 1, 1),"
            " ('00000000-0000-4000-8000-0000000000AA', 'reserved', '', 1, 1),"
            " ('00000000-0000-4000-8000-0000000000BB', 'reserved', '', 1, 1),"
            " ('00000000-0000-4000-8000-0000000000bb', 'tombstoned', '', 1, 1);"
            "INSERT INTO reservation_items(order_id, idx, product_id, count) VALUES"
            " ('00000000-0000-4000-8000-0000000000AA', 0, 1, 2),"
            " ('00000000-0000-4000-8000-0000000000BB', 0, 2, 3);"
            "UPDATE products SET balance = balance - 2 WHERE id = 1;"
            "UPDATE products SET balance = balance - 3 WHERE id = 2;"),
        WS_OK);
    ws_db_release(test_conn);
    ws_db_close(test_pool);
    test_open();
    cr_assert_eq(ws_db_schema_version(test_pool), (int)n);
    test_order o;
    test_order_init(&o, 0x70, 1, (int32_t[]){1}, (int32_t[]){1});
    inv_order_outcome out;
    cr_assert_eq(test_sent(&o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_DUPLICATE_CANCELED);
    cr_assert_eq(out.n_queued, 0);

    /* Renamed with its items: a lower-case cancel releases it. */
    inv_cancel_outcome c;
    cr_assert_eq(test_cancel("00000000-0000-4000-8000-0000000000aa", &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_RELEASED);
    test_assert_levels(1, 200, 0, 200);

    /* The colliding pair stays; the held one is a candidate by its stored id. */
    test_assert_levels(2, 197, 3, 200);
    inv_orphan_candidate cand[4];
    size_t k = 0;
    int64_t later = ws_clock_wall_ms();
    cr_assert_eq(inv_stock_orphan_candidates(test_pool, later, 1000, cand, 4, &k), WS_OK);
    cr_assert_eq(k, 1);
    cr_assert_str_eq(cand[0].order_id, "00000000-0000-4000-8000-0000000000BB");
    inv_orphan_outcome r;
    cr_assert_eq(inv_stock_orphan_settle(test_pool, cand[0].order_id,
                                         INV_LOOKUP_NOT_FOUND, later, 1000, &r),
                 WS_OK);
    cr_assert_eq(r.action, INV_ORPHAN_RELEASED);
    test_assert_levels(2, 200, 0, 200);
    test_events es;
    test_events_take(&es);
    test_events_free(&es);
}
