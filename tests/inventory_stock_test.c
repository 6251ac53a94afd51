/*
 * The inventory's domain (inventory/stock.c, schema.c, catalog_seed.c) on a
 * temp SQLite file, without a broker: reservations all or nothing, duplicate
 * and out-of-order events, the invariant balance + held = stock added under
 * eight competing threads, and seeding that never overwrites moved stock.
 * Outcomes are checked in the outbox rows the operations queue.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog_seed.h"
#include "outbox.h"
#include "schema.h"
#include "stock.h"

static char test_dir[256];
static char test_db[300];

static void test_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(test_dir, sizeof(test_dir), "%s/ws-inv-stock-XXXXXX", tmp ? tmp : "/tmp");
    cr_assert_not_null(mkdtemp(test_dir));
    snprintf(test_db, sizeof(test_db), "%s/inventory.db", test_dir);
}

static void test_teardown(void)
{
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[320];
        snprintf(p, sizeof(p), "%s%s", test_db, suffix[i]);
        unlink(p);
    }
    cr_assert_eq(rmdir(test_dir), 0, "temp dir not empty");
}

TestSuite(inventory_stock, .init = test_setup, .fini = test_teardown);

static ws_store *test_store_open(void)
{
    size_t n;
    const ws_migration *m = inv_schema_migrations(&n);
    ws_store_opts o = {.path = test_db, .busy_timeout_ms = 10000, .txn_retries = 100};
    ws_store *s = NULL;
    cr_assert_eq(ws_store_open(&o, m, n, &s), WS_OK);
    return s;
}

static ws_store *test_store_seeded(void)
{
    ws_store *s = test_store_open();
    size_t inserted = 0;
    cr_assert_eq(inv_catalog_seed_default(s, &inserted), WS_OK);
    cr_assert_eq(inserted, 2);
    return s;
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
static void test_events_take(ws_store *s, test_events *es)
{
    memset(es, 0, sizeof(*es));
    cr_assert_eq(ws_outbox_scan(s, 0, TEST_MAX_EVENTS, test_event_collect, es, NULL),
                 WS_OK);
    cr_assert_eq(ws_store_exec(s, "DELETE FROM outbox"), WS_OK);
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

static ws_err test_cancel(ws_store *s, const char *order_id, inv_cancel_outcome *out)
{
    Webshop__V1__OrderCanceled c = WEBSHOP__V1__ORDER_CANCELED__INIT;
    c.order_id = (char *)order_id;
    return inv_stock_order_canceled(s, &c, out);
}

static void test_assert_levels(ws_store *s, int32_t id, int64_t balance, int64_t held,
                               int64_t added)
{
    int64_t b, h, a;
    cr_assert_eq(inv_stock_levels(s, id, &b, &h, &a), WS_OK);
    cr_assert_eq(b, balance, "product %d balance %lld, want %lld", id, (long long)b,
                 (long long)balance);
    cr_assert_eq(h, held, "product %d held %lld, want %lld", id, (long long)h,
                 (long long)held);
    cr_assert_eq(a, added, "product %d added %lld, want %lld", id, (long long)a,
                 (long long)added);
}

/* ---- tests ------------------------------------------------------------- */

Test(inventory_stock, order_reserves_every_item_and_queues_in_stock)
{
    ws_store *s = test_store_seeded();
    test_order o;
    test_order_init(&o, 1, 2, (int32_t[]){1, 2}, (int32_t[]){3, 5});
    inv_order_outcome out;
    cr_assert_eq(inv_stock_order_sent(s, &o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
    test_assert_levels(s, 1, 197, 3, 200);
    test_assert_levels(s, 2, 195, 5, 200);

    test_events es;
    test_events_take(s, &es);
    cr_assert_eq(es.n, 3);
    cr_assert_str_eq(es.ev[0].topic, INV_TOPIC_IN_STOCK);
    cr_assert_str_eq(((Webshop__V1__InStock *)es.ev[0].msg)->order_id, o.id);
    cr_assert_eq(test_events_count(&es, INV_TOPIC_STOCK_CHANGED), 2);
    const Webshop__V1__StockChanged *sc = (const Webshop__V1__StockChanged *)es.ev[1].msg;
    cr_assert_eq(sc->product_id, 1);
    cr_assert_eq(sc->balance, 197);
    test_events_free(&es);

    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(s, o.id, &r), WS_OK);
    cr_assert_eq(r->status, WEBSHOP__V1__RESERVATION_STATUS__RESERVED);
    cr_assert_eq(r->n_items, 2);
    cr_assert_eq(r->items[1]->inventory_id, 2);
    cr_assert_eq(r->items[1]->count, 5);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ws_store_close(s);
}

Test(inventory_stock, out_of_stock_rejects_whole_order_with_nothing_reserved)
{
    ws_store *s = test_store_seeded();
    test_order o;
    test_order_init(&o, 2, 2, (int32_t[]){1, 2}, (int32_t[]){10, 201});
    inv_order_outcome out;
    cr_assert_eq(inv_stock_order_sent(s, &o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_REJECTED);
    cr_assert_str_eq(out.reason, "not enough stock for product 2");
    test_assert_levels(s, 1, 200, 0, 200);
    test_assert_levels(s, 2, 200, 0, 200);

    test_events es;
    test_events_take(s, &es);
    cr_assert_eq(es.n, 1);
    const Webshop__V1__OutOfStock *oos = (const Webshop__V1__OutOfStock *)es.ev[0].msg;
    cr_assert_str_eq(es.ev[0].topic, INV_TOPIC_OUT_OF_STOCK);
    cr_assert_str_eq(oos->order_id, o.id);
    cr_assert_str_eq(oos->reason, "not enough stock for product 2");
    test_events_free(&es);

    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(s, o.id, &r), WS_OK);
    cr_assert_eq(r->status, WEBSHOP__V1__RESERVATION_STATUS__REJECTED);
    cr_assert_str_eq(r->reason, "not enough stock for product 2");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ws_store_close(s);
}

Test(inventory_stock, invalid_orders_are_rejected_with_their_reason)
{
    ws_store *s = test_store_seeded();
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
        cr_assert_eq(inv_stock_order_sent(s, &o.ev, &out), WS_OK);
        cr_assert_eq(out.action, INV_ORDER_REJECTED, "case %u", i);
        cr_assert_str_eq(out.reason, cases[i].reason);
    }
    test_assert_levels(s, 1, 200, 0, 200);
    test_assert_levels(s, 2, 200, 0, 200);

    /* A bad order id records nothing. */
    test_order o;
    test_order_init(&o, 200, 1, (int32_t[]){1}, (int32_t[]){1});
    o.ev.order_id = "not-a-uuid";
    inv_order_outcome out;
    cr_assert_eq(inv_stock_order_sent(s, &o.ev, &out), WS_EINVAL);
    cr_assert_eq(out.action, INV_ORDER_BAD_ID);
    test_assert_levels(s, 1, 200, 0, 200);
    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(s, "not-a-uuid", &r), WS_EINVAL);

    test_events es;
    test_events_take(s, &es);
    cr_assert_eq(es.n, 6);
    cr_assert_eq(test_events_count(&es, INV_TOPIC_OUT_OF_STOCK), 6);
    const Webshop__V1__OutOfStock *last = (const Webshop__V1__OutOfStock *)es.ev[5].msg;
    cr_assert_str_eq(last->order_id, "not-a-uuid");
    cr_assert_str_eq(last->reason, "bad order id");
    test_events_free(&es);
    ws_store_close(s);
}

Test(inventory_stock, duplicate_order_sent_reserves_once_and_requeues_outcome)
{
    ws_store *s = test_store_seeded();
    test_order o;
    test_order_init(&o, 3, 1, (int32_t[]){1}, (int32_t[]){4});
    inv_order_outcome out;
    cr_assert_eq(inv_stock_order_sent(s, &o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
    test_events es;
    test_events_take(s, &es);
    test_events_free(&es);

    for (int i = 0; i < 4; i++) {
        cr_assert_eq(inv_stock_order_sent(s, &o.ev, &out), WS_OK);
        cr_assert_eq(out.action, INV_ORDER_DUPLICATE);
        cr_assert_eq(out.n_queued, 1);
    }
    test_assert_levels(s, 1, 196, 4, 200);
    test_events_take(s, &es);
    cr_assert_eq(es.n, 4);
    cr_assert_eq(test_events_count(&es, INV_TOPIC_IN_STOCK), 4);
    test_events_free(&es);

    /* A rejected order's duplicate re-queues the same reason. */
    test_order big;
    test_order_init(&big, 4, 1, (int32_t[]){2}, (int32_t[]){1000});
    cr_assert_eq(inv_stock_order_sent(s, &big.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_REJECTED);
    big.items[0].count = 1; /* the same id with a now satisfiable count */
    cr_assert_eq(inv_stock_order_sent(s, &big.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_DUPLICATE);
    test_assert_levels(s, 2, 200, 0, 200);
    test_events_take(s, &es);
    cr_assert_eq(es.n, 2);
    const Webshop__V1__OutOfStock *oos = (const Webshop__V1__OutOfStock *)es.ev[1].msg;
    cr_assert_str_eq(oos->reason, "not enough stock for product 2");
    test_events_free(&es);
    ws_store_close(s);
}

Test(inventory_stock, cancel_before_order_never_reserves)
{
    ws_store *s = test_store_seeded();
    test_order o;
    test_order_init(&o, 5, 1, (int32_t[]){1}, (int32_t[]){2});
    inv_cancel_outcome c;
    cr_assert_eq(test_cancel(s, o.id, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_TOMBSTONED);
    cr_assert_eq(c.n_queued, 0);

    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(s, o.id, &r), WS_OK);
    cr_assert_eq(r->status, WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    for (int i = 0; i < 2; i++) {
        inv_order_outcome out;
        cr_assert_eq(inv_stock_order_sent(s, &o.ev, &out), WS_OK);
        cr_assert_eq(out.action, INV_ORDER_TOMBSTONED);
    }
    test_assert_levels(s, 1, 200, 0, 200);
    test_events es;
    test_events_take(s, &es);
    cr_assert_eq(es.n, 2);
    const Webshop__V1__OutOfStock *oos = (const Webshop__V1__OutOfStock *)es.ev[0].msg;
    cr_assert_str_eq(es.ev[0].topic, INV_TOPIC_OUT_OF_STOCK);
    cr_assert_str_eq(oos->reason, "canceled");
    test_events_free(&es);

    /* A second cancel changes nothing. */
    cr_assert_eq(test_cancel(s, o.id, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_NOOP);
    ws_store_close(s);
}

Test(inventory_stock, cancel_releases_exactly_once_and_restores_balance)
{
    ws_store *s = test_store_seeded();
    test_order o;
    test_order_init(&o, 6, 3, (int32_t[]){1, 2, 1}, (int32_t[]){2, 3, 4});
    inv_order_outcome out;
    cr_assert_eq(inv_stock_order_sent(s, &o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_RESERVED);
    test_assert_levels(s, 1, 194, 6, 200);
    test_events es;
    test_events_take(s, &es);
    cr_assert_eq(test_events_count(&es, INV_TOPIC_STOCK_CHANGED), 2);
    test_events_free(&es);

    inv_cancel_outcome c;
    cr_assert_eq(test_cancel(s, o.id, &c), WS_OK);
    cr_assert_eq(c.action, INV_CANCEL_RELEASED);
    test_assert_levels(s, 1, 200, 0, 200);
    test_assert_levels(s, 2, 200, 0, 200);
    test_events_take(s, &es);
    cr_assert_eq(es.n, 2);
    const test_event *e = test_events_find(&es, INV_TOPIC_STOCK_CHANGED);
    cr_assert_eq(((const Webshop__V1__StockChanged *)e->msg)->balance, 200);
    test_events_free(&es);

    for (int i = 0; i < 3; i++) {
        cr_assert_eq(test_cancel(s, o.id, &c), WS_OK);
        cr_assert_eq(c.action, INV_CANCEL_NOOP);
    }
    /* The order re-sent after its release is not reserved again. */
    cr_assert_eq(inv_stock_order_sent(s, &o.ev, &out), WS_OK);
    cr_assert_eq(out.action, INV_ORDER_DUPLICATE);
    test_assert_levels(s, 1, 200, 0, 200);
    cr_assert_eq(test_cancel(s, "bogus", &c), WS_EINVAL);

    Webshop__V1__GetReservationResponse *r = NULL;
    cr_assert_eq(inv_stock_reservation(s, o.id, &r), WS_OK);
    cr_assert_eq(r->status, WEBSHOP__V1__RESERVATION_STATUS__RELEASED);
    cr_assert_eq(r->n_items, 3);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    ws_store_close(s);
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
    size_t n;
    const ws_migration *m = inv_schema_migrations(&n);
    ws_store_opts o = {.path = test_db, .busy_timeout_ms = 10000, .txn_retries = 1000};
    ws_store *s = NULL;
    if (ws_store_open(&o, m, n, &s) != WS_OK) {
        a->failed = RACE_ORDERS;
        return NULL;
    }
    for (unsigned i = 0; i < RACE_ORDERS; i++) {
        test_order ord;
        test_order_init(&ord, a->thread * 100000 + i, 1, (int32_t[]){RACE_PRODUCT},
                        (int32_t[]){1});
        inv_order_outcome out;
        if (inv_stock_order_sent(s, &ord.ev, &out) != WS_OK) {
            a->failed++;
        } else if (out.action == INV_ORDER_RESERVED) {
            a->reserved++;
        } else {
            a->rejected++;
        }
    }
    ws_store_close(s);
    return NULL;
}

Test(inventory_stock, eight_threads_competing_reserve_exactly_the_stock, .timeout = 120)
{
    ws_store *s = test_store_seeded();
    Webshop__V1__Product p = WEBSHOP__V1__PRODUCT__INIT;
    p.id = RACE_PRODUCT;
    p.name = "scarce";
    p.price = 1;
    p.balance = RACE_UNITS;
    const Webshop__V1__Product *const ps[] = {&p};
    cr_assert_eq(inv_catalog_seed(s, ps, 1, NULL), WS_OK);

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
    test_assert_levels(s, RACE_PRODUCT, 0, RACE_UNITS, RACE_UNITS);
    test_assert_levels(s, 1, 200, 0, 200);

    int64_t queued = 0;
    cr_assert_eq(ws_outbox_count(s, &queued), WS_OK);
    /* One outcome per order plus one StockChanged per reservation. */
    cr_assert_eq(queued, RACE_THREADS * RACE_ORDERS + RACE_UNITS);
    ws_store_close(s);
}

/* ---- seeding ------------------------------------------------------------ */

Test(inventory_stock, reseed_does_not_overwrite_moved_stock)
{
    ws_store *s = test_store_seeded();
    test_order o;
    test_order_init(&o, 7, 1, (int32_t[]){1}, (int32_t[]){5});
    inv_order_outcome out;
    cr_assert_eq(inv_stock_order_sent(s, &o.ev, &out), WS_OK);

    size_t inserted = 99;
    cr_assert_eq(inv_catalog_seed_default(s, &inserted), WS_OK);
    cr_assert_eq(inserted, 0);
    test_assert_levels(s, 1, 195, 5, 200);

    char path[320];
    snprintf(path, sizeof(path), "%s/catalog.json", test_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("[{\"id\": 1, \"name\": \"Renamed\", \"price\": 1500, \"balance\": 999},\n"
          " {\"id\": 3, \"name\": \"Third\", \"price\": 300, \"balance\": 7}]\n",
          f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(inv_catalog_seed_file(s, path, &inserted), WS_OK);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(inserted, 1);
    test_assert_levels(s, 1, 195, 5, 200);
    test_assert_levels(s, 3, 7, 0, 7);

    Webshop__V1__Product *p = NULL;
    cr_assert_eq(inv_stock_product(s, 1, &p), WS_OK);
    cr_assert_str_eq(p->name, "Renamed");
    cr_assert_eq(p->price, 1500);
    cr_assert_eq(p->balance, 195);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    cr_assert_eq(inv_stock_product(s, 42, &p), WS_ENOTFOUND);

    Webshop__V1__GetCatalogResponse *cat = NULL;
    cr_assert_eq(inv_stock_catalog(s, &cat), WS_OK);
    cr_assert_eq(cat->n_products, 3);
    cr_assert_str_eq(cat->products[1]->name, "One Leg Web Shop Prototype v 2.0");
    cr_assert_eq(cat->products[1]->price, 2000);
    cr_assert_eq(cat->products[2]->id, 3);
    protobuf_c_message_free_unpacked(&cat->base, NULL);
    ws_store_close(s);
}

Test(inventory_stock, seed_refuses_invalid_products_and_writes_nothing)
{
    ws_store *s = test_store_open();
    Webshop__V1__Product a = WEBSHOP__V1__PRODUCT__INIT;
    Webshop__V1__Product b = WEBSHOP__V1__PRODUCT__INIT;
    a.id = 1;
    a.name = "ok";
    b.id = 1;
    b.name = "same id";
    const Webshop__V1__Product *const dup[] = {&a, &b};
    cr_assert_eq(inv_catalog_seed(s, dup, 2, NULL), WS_EINVAL);
    b.id = 2;
    b.balance = -1;
    cr_assert_eq(inv_catalog_seed(s, dup, 2, NULL), WS_EINVAL);

    char path[320];
    snprintf(path, sizeof(path), "%s/bad.json", test_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("[{\"id\": 1, \"nme\": \"typo\"}]", f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(inv_catalog_seed_file(s, path, NULL), WS_EPARSE);
    cr_assert_eq(unlink(path), 0);
    cr_assert_eq(inv_catalog_seed_file(s, path, NULL), WS_EIO);

    Webshop__V1__GetCatalogResponse *cat = NULL;
    cr_assert_eq(inv_stock_catalog(s, &cat), WS_OK);
    cr_assert_eq(cat->n_products, 0);
    protobuf_c_message_free_unpacked(&cat->base, NULL);
    ws_store_close(s);
}
