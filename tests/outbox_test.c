/*
 * The transactional outbox (lib/outbox.c). Suite outbox: the table helpers
 * on a temp SQLite file, without a broker -- put inside a transaction, scan
 * in id order, delete, unpack by type name, rollback taking the row with
 * it. Suite outbox_relay: the relay against a real mosquitto started by the
 * harness -- every row published in id order and deleted on its PUBACK, rows
 * left by an earlier run published on start without a kick, rows queued
 * while the broker is down published when it returns, and flush timing out
 * rather than hanging when nothing can be published.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus.h"
#include "harness.h"
#include "outbox.h"
#include "store.h"
#include "webshop/v1/events.pb-c.h"

#define WAIT_MS 15000
#define TOPIC   "test/outbox"

static const ws_migration test_migrations[] = {
    {1, "CREATE TABLE state(k TEXT PRIMARY KEY, v INTEGER);" WS_OUTBOX_SCHEMA_SQL},
};

static const ProtobufCMessageDescriptor *const test_types[] = {
    &webshop__v1__in_stock__descriptor,
};

static char *tmpdir;
static char db_path[4200];

static ws_store *test_store_open(void)
{
    ws_store_opts o = {.path = db_path};
    ws_store *s = NULL;
    cr_assert_eq(ws_store_open(&o, test_migrations, 1, &s), WS_OK);
    return s;
}

/* ---- table helpers, no broker ------------------------------------------- */

static void table_setup(void)
{
    tmpdir = harness_tmpdir_new("outbox");
    cr_assert_not_null(tmpdir);
    snprintf(db_path, sizeof(db_path), "%s/outbox.db", tmpdir);
}

static void table_teardown(void)
{
    harness_tmpdir_free(tmpdir);
    tmpdir = NULL;
}

TestSuite(outbox, .init = table_setup, .fini = table_teardown, .timeout = 30);

typedef struct put_ctx {
    int first;
    int n;
    ws_err fail_with; /* returned after the puts; WS_OK commits */
} put_ctx;

static ws_err put_txn(ws_store *s, void *arg)
{
    put_ctx *c = arg;
    for (int i = 0; i < c->n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "m-%06d", c->first + i);
        Webshop__V1__InStock m = WEBSHOP__V1__IN_STOCK__INIT;
        m.order_id = id;
        ws_err err = ws_outbox_put(s, TOPIC, &m.base);
        if (err != WS_OK) {
            return err;
        }
    }
    return c->fail_with;
}

static void put_rows(ws_store *s, int first, int n)
{
    put_ctx c = {.first = first, .n = n, .fail_with = WS_OK};
    cr_assert_eq(ws_store_txn(s, put_txn, &c), WS_OK);
}

typedef struct scan_seen {
    int n;
    int64_t last_id;
    char first_order[32];
    char last_order[32];
    bool in_order;
} scan_seen;

static ws_err scan_collect(void *ctx, const ws_outbox_row *row)
{
    scan_seen *s = ctx;
    ProtobufCMessage *m = NULL;
    cr_assert_eq(ws_outbox_row_unpack(row, test_types, 1, &m), WS_OK);
    cr_assert_str_eq(row->topic, TOPIC);
    cr_assert_str_eq(row->type, "webshop.v1.InStock");
    cr_assert_gt(row->created_ms, 0);
    const char *id = ((Webshop__V1__InStock *)m)->order_id;
    if (s->n == 0) {
        snprintf(s->first_order, sizeof(s->first_order), "%s", id);
        s->in_order = true;
    }
    s->in_order = s->in_order && row->id > s->last_id;
    snprintf(s->last_order, sizeof(s->last_order), "%s", id);
    s->last_id = row->id;
    s->n++;
    protobuf_c_message_free_unpacked(m, NULL);
    return WS_OK;
}

Test(outbox, put_then_scan_returns_rows_in_id_order)
{
    ws_store *s = test_store_open();
    put_rows(s, 0, 10);
    put_rows(s, 10, 5);
    int64_t n = 0;
    cr_assert_eq(ws_outbox_count(s, &n), WS_OK);
    cr_assert_eq(n, 15);

    scan_seen seen = {0};
    size_t visited = 0;
    cr_assert_eq(ws_outbox_scan(s, 0, 100, scan_collect, &seen, &visited), WS_OK);
    cr_assert_eq(visited, 15);
    cr_assert(seen.in_order);
    cr_assert_str_eq(seen.first_order, "m-000000");
    cr_assert_str_eq(seen.last_order, "m-000014");

    /* A limit and a cursor page through the table. */
    scan_seen page = {0};
    cr_assert_eq(ws_outbox_scan(s, 3, 4, scan_collect, &page, &visited), WS_OK);
    cr_assert_eq(visited, 4);
    cr_assert_str_eq(page.first_order, "m-000003");
    cr_assert_str_eq(page.last_order, "m-000006");
    ws_store_close(s);
}

Test(outbox, delete_removes_only_that_row)
{
    ws_store *s = test_store_open();
    put_rows(s, 0, 3);
    cr_assert_eq(ws_outbox_delete(s, 2), WS_OK);
    cr_assert_eq(ws_outbox_delete(s, 2), WS_OK); /* already gone: fine */
    int64_t n = 0;
    cr_assert_eq(ws_outbox_count(s, &n), WS_OK);
    cr_assert_eq(n, 2);
    scan_seen seen = {0};
    cr_assert_eq(ws_outbox_scan(s, 0, 10, scan_collect, &seen, NULL), WS_OK);
    cr_assert_str_eq(seen.first_order, "m-000000");
    cr_assert_str_eq(seen.last_order, "m-000002");
    ws_store_close(s);
}

Test(outbox, put_rolls_back_with_its_transaction)
{
    ws_store *s = test_store_open();
    put_ctx c = {.first = 0, .n = 4, .fail_with = WS_EINVAL};
    cr_assert_eq(ws_store_txn(s, put_txn, &c), WS_EINVAL);
    int64_t n = -1;
    cr_assert_eq(ws_outbox_count(s, &n), WS_OK);
    cr_assert_eq(n, 0);
    ws_store_close(s);
}

static ws_err scan_stop_at_second(void *ctx, const ws_outbox_row *row)
{
    (void)row;
    int *calls = ctx;
    return ++*calls == 2 ? WS_EBUSY : WS_OK;
}

Test(outbox, scan_stops_when_the_visitor_says_so)
{
    ws_store *s = test_store_open();
    put_rows(s, 0, 5);
    int calls = 0;
    size_t visited = 0;
    cr_assert_eq(ws_outbox_scan(s, 0, 10, scan_stop_at_second, &calls, &visited),
                 WS_EBUSY);
    cr_assert_eq(visited, 2);
    ws_store_close(s);
}

Test(outbox, unpack_refuses_unknown_type_and_bad_payload)
{
    ws_outbox_row row = {
        .id = 1, .topic = TOPIC, .type = "webshop.v1.Nope", .payload = "", .len = 0};
    ProtobufCMessage *m = NULL;
    cr_assert_eq(ws_outbox_row_unpack(&row, test_types, 1, &m), WS_ENOTFOUND);
    row.type = "webshop.v1.InStock";
    row.payload = "\x0a\x7f"; /* field 1, length 127, nothing after */
    row.len = 2;
    cr_assert_eq(ws_outbox_row_unpack(&row, test_types, 1, &m), WS_EPARSE);
    cr_assert_null(m);
}

Test(outbox, put_and_relay_open_refuse_bad_arguments)
{
    ws_store *s = test_store_open();
    Webshop__V1__InStock m = WEBSHOP__V1__IN_STOCK__INIT;
    cr_assert_eq(ws_outbox_put(s, "", &m.base), WS_EINVAL);
    cr_assert_eq(ws_outbox_put(s, TOPIC, NULL), WS_EINVAL);
    ws_outbox_relay_opts o = {.store = s, .bus = NULL};
    ws_outbox_relay *r = NULL;
    cr_assert_eq(ws_outbox_relay_open(&o, &r), WS_EINVAL);
    cr_assert_null(r);
    ws_outbox_relay_close(NULL);
    ws_store_close(s);
}

/* ---- the relay against a real broker ----------------------------------- */

static harness_broker broker;

static void relay_setup(void)
{
    table_setup();
    cr_assert_eq(harness_broker_start(&broker, tmpdir, NULL), 0);
}

static void relay_teardown(void)
{
    cr_expect_eq(harness_broker_stop(&broker, SIGTERM), 0);
    table_teardown();
}

TestSuite(outbox_relay, .init = relay_setup, .fini = relay_teardown, .timeout = 90);

/* A subscriber that checks the messages arrive in the order queued. */
typedef struct received {
    pthread_mutex_t mu;
    int n;        /* m-* messages received, duplicates included */
    int next;     /* the next index expected in order */
    int reorders; /* messages that came before one queued earlier */
    int probes;
} received;

static ws_err received_handler(void *ctx, const ProtobufCMessage *msg,
                               const ws_bus_msg_info *info)
{
    (void)info;
    received *r = ctx;
    const char *id = ((const Webshop__V1__InStock *)msg)->order_id;
    pthread_mutex_lock(&r->mu);
    if (strcmp(id, "probe") == 0) {
        r->probes++;
    } else {
        int i = atoi(id + 2);
        r->n++;
        if (i == r->next) {
            r->next++;
        } else if (i > r->next) {
            r->reorders++;
            r->next = i + 1;
        } /* i < next: a QoS 1 duplicate, allowed */
    }
    pthread_mutex_unlock(&r->mu);
    return WS_OK;
}

typedef struct wait_n {
    received *r;
    int n;
} wait_n;

static bool received_all(void *ctx)
{
    wait_n *w = ctx;
    pthread_mutex_lock(&w->r->mu);
    bool ok = w->r->next >= w->n;
    pthread_mutex_unlock(&w->r->mu);
    return ok;
}

static bool received_probe(void *ctx)
{
    received *r = ctx;
    pthread_mutex_lock(&r->mu);
    bool ok = r->probes > 0;
    pthread_mutex_unlock(&r->mu);
    return ok;
}

static bool bus_is_connected(void *ctx)
{
    return ws_bus_connected(ctx);
}

static ws_bus *bus_new(const char *client_id, ws_metrics *m)
{
    ws_bus_opts o = {.host = "127.0.0.1",
                     .port = broker.port,
                     .client_id = client_id,
                     .clean_start = true,
                     .metrics = m};
    ws_bus *bus = NULL;
    cr_assert_eq(ws_bus_open(&o, &bus), WS_OK);
    cr_assert_eq(ws_bus_start(bus), WS_OK);
    return bus;
}

/* A subscriber on TOPIC whose subscription is known to be live: a probe
 * published by pub has come back. */
static ws_bus *subscriber_new(received *r, ws_bus *pub, ws_metrics *m)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->mu, NULL);
    ws_bus_opts o = {.host = "127.0.0.1",
                     .port = broker.port,
                     .client_id = "outbox-test-sub",
                     .clean_start = false, /* survives a broker restart */
                     .metrics = m};
    ws_bus *bus = NULL;
    cr_assert_eq(ws_bus_open(&o, &bus), WS_OK);
    cr_assert_eq(ws_bus_subscribe(bus, TOPIC, &webshop__v1__in_stock__descriptor,
                                  received_handler, r),
                 WS_OK);
    cr_assert_eq(ws_bus_start(bus), WS_OK);
    cr_assert(harness_wait_until(bus_is_connected, bus, WAIT_MS));
    cr_assert(harness_wait_until(bus_is_connected, pub, WAIT_MS));
    Webshop__V1__InStock probe = WEBSHOP__V1__IN_STOCK__INIT;
    probe.order_id = "probe";
    long long deadline = harness_now_ms() + WAIT_MS;
    while (!received_probe(r)) {
        cr_assert_lt(harness_now_ms(), deadline, "subscription never became live");
        cr_assert_eq(ws_bus_publish(pub, TOPIC, &probe.base, 2000), WS_OK);
        harness_wait_until(received_probe, r, 200);
    }
    return bus;
}

static ws_outbox_relay *relay_new(ws_bus *bus, ws_metrics *m)
{
    ws_outbox_relay_opts o = {.store = test_store_open(),
                              .bus = bus,
                              .types = test_types,
                              .n_types = 1,
                              .window = 32,
                              .poll_ms = 100,
                              .metrics = m};
    ws_outbox_relay *r = NULL;
    cr_assert_eq(ws_outbox_relay_open(&o, &r), WS_OK);
    cr_assert_eq(ws_outbox_relay_start(r), WS_OK);
    return r;
}

static bool table_empty(void *ctx)
{
    int64_t n = -1;
    return ws_outbox_count(ctx, &n) == WS_OK && n == 0;
}

Test(outbox_relay, publishes_every_row_in_order_and_deletes_on_puback)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = bus_new("outbox-test-pub", m);
    received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_store *s = test_store_open();
    ws_outbox_relay *relay = relay_new(pub, m);

    /* Rows committed in several transactions, each followed by a kick. */
    const int total = 1000;
    for (int i = 0; i < total; i += 100) {
        put_rows(s, i, 100);
        ws_outbox_relay_kick(relay);
    }
    cr_assert_eq(ws_outbox_relay_flush(relay, WAIT_MS), WS_OK);
    cr_assert(table_empty(s));
    wait_n w = {&got, total};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));
    pthread_mutex_lock(&got.mu);
    cr_expect_eq(got.reorders, 0);
    pthread_mutex_unlock(&got.mu);
    ws_counter *published = ws_counter_get(m, "webshop_outbox_published_total", "", NULL);
    cr_assert_eq(ws_counter_value(published), (uint64_t)total);

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_store_close(s);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}

Test(outbox_relay, resumes_rows_left_by_an_earlier_run_without_a_kick)
{
    ws_metrics *m = ws_metrics_new();
    ws_store *s = test_store_open();
    put_rows(s, 0, 50); /* as if the process died before publishing */

    ws_bus *pub = bus_new("outbox-test-pub", m);
    received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_outbox_relay *relay = relay_new(pub, m);
    cr_assert(harness_wait_until(table_empty, s, WAIT_MS));
    wait_n w = {&got, 50};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_store_close(s);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}

Test(outbox_relay, rows_queued_while_broker_is_down_go_out_when_it_returns)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = bus_new("outbox-test-pub", m);
    received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_store *s = test_store_open();
    ws_outbox_relay *relay = relay_new(pub, m);

    cr_assert_eq(harness_broker_stop(&broker, SIGTERM), 0);
    put_rows(s, 0, 200);
    ws_outbox_relay_kick(relay);
    /* Nothing can be published: flush reports the timeout, does not hang. */
    cr_assert_eq(ws_outbox_relay_flush(relay, 300), WS_ETIMEDOUT);
    int64_t n = 0;
    cr_assert_eq(ws_outbox_count(s, &n), WS_OK);
    cr_assert_eq(n, 200);

    cr_assert_eq(harness_broker_restart(&broker), 0);
    cr_assert_eq(ws_outbox_relay_flush(relay, WAIT_MS), WS_OK);
    cr_assert(table_empty(s));
    wait_n w = {&got, 200};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_store_close(s);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}

static uint64_t relay_counter(ws_metrics *m, const char *name)
{
    return ws_counter_value(ws_counter_get(m, name, "", NULL));
}

typedef struct fails_at_least {
    ws_metrics *m;
    uint64_t n;
} fails_at_least;

static bool delete_failures_reached(void *ctx)
{
    fails_at_least *f = ctx;
    return relay_counter(f->m, "webshop_outbox_delete_failures_total") >= f->n;
}

/* A delete that keeps failing (here a trigger refuses it; in production a
 * full disk) is retried with backoff, 50 ms doubling, not in a loop, and
 * the rows go once the fault clears. */
Test(outbox_relay, a_delete_that_keeps_failing_backs_off_and_heals)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = bus_new("outbox-test-pub", m);
    received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_store *s = test_store_open();
    cr_assert_eq(ws_store_exec(s, "CREATE TRIGGER outbox_keep BEFORE DELETE ON outbox"
                                  " BEGIN SELECT RAISE(ABORT, 'kept'); END"),
                 WS_OK);
    ws_outbox_relay *relay = relay_new(pub, m);
    put_rows(s, 0, 20);
    ws_outbox_relay_kick(relay);
    wait_n w = {&got, 20};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));

    fails_at_least one = {m, 1}, five = {m, 5};
    cr_assert(harness_wait_until(delete_failures_reached, &one, WAIT_MS));
    long long t1 = harness_now_ms();
    cr_assert(harness_wait_until(delete_failures_reached, &five, WAIT_MS));
    long long t5 = harness_now_ms();
    /* Tries 2..5 come after 50 + 100 + 200 + 400 ms; a loop would have
     * made them within a few tens of milliseconds. */
    cr_expect_geq(t5 - t1, 600, "4 retries in %lld ms: no backoff", t5 - t1);
    ws_gauge *failing = ws_gauge_get(m, "webshop_outbox_store_failing", "", NULL);
    cr_expect_eq(ws_gauge_value(failing), 1);
    cr_expect_eq(ws_outbox_relay_flush(relay, 200), WS_ETIMEDOUT, "flush with rows kept");
    int64_t n = 0;
    cr_assert_eq(ws_outbox_count(s, &n), WS_OK);
    cr_expect_eq(n, 20);

    cr_assert_eq(ws_store_exec(s, "DROP TRIGGER outbox_keep"), WS_OK);
    cr_assert(harness_wait_until(table_empty, s, WAIT_MS));
    cr_expect_eq(ws_gauge_value(failing), 0);
    cr_expect_eq(ws_outbox_relay_flush(relay, WAIT_MS), WS_OK);

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_store_close(s);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}
