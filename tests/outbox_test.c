/*
 * The transactional outbox (lib/outbox.c), on the run's engine (SQLite, or
 * PostgreSQL under tests/support/with_pg: test outbox_pg). Suite outbox:
 * the table helpers on a fresh database, without a broker -- put inside a
 * transaction, scan in id order, delete, unpack by type name, rollback
 * taking the row with it, an empty payload, a SQLite file made before the
 * lease column. Suite outbox_relay: the relay against a real mosquitto
 * started by the harness -- every row published in id order and deleted on
 * its PUBACK, rows left by an earlier run published on start without a
 * kick, rows queued while the broker is down published when it returns,
 * flush timing out rather than hanging when nothing can be published, the
 * row gauges, a row of an unknown type dropped, claimed rows the bus
 * refused given back at once, a delete or a release that keeps failing
 * backing off, two relays sharing one table (each row published once), and
 * a relay that stopped mid-way whose rows another relay takes over when
 * their lease runs out. The trace of a row: put stores the putting thread's
 * traceparent (a database from before the column gets it by a migration),
 * and the relay publishes (and logs about) each row under it.
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bus.h"
#include "db.h"
#include "harness.h"
#include "outbox.h"
#include "test_db.h"
#include "trace.h"
#include "webshop/v1/events.pb-c.h"

#define WAIT_MS 15000
#define TOPIC   "test/outbox"

static const ws_db_migration test_migrations[] = {
    {1, "CREATE TABLE state(k TEXT PRIMARY KEY, v INTEGER);" WS_OUTBOX_SCHEMA_SQLITE,
     "CREATE TABLE state(k TEXT PRIMARY KEY, v BIGINT);" WS_OUTBOX_SCHEMA_PG},
};

static const ProtobufCMessageDescriptor *const test_types[] = {
    &webshop__v1__in_stock__descriptor,
};

static char *tmpdir;
static char db_url[4200];

static ws_db *test_db_open_with(const ws_db_migration *m, size_t n)
{
    ws_db_opts o = {.url = db_url, .pool_size = 2, .migrations = m, .n_migrations = n};
    ws_db *db = NULL;
    cr_assert_eq(ws_db_open(&o, &db), WS_OK, "open %s", db_url);
    return db;
}

static ws_db *test_db_open(void)
{
    return test_db_open_with(test_migrations, 1);
}

static ws_db_conn *conn_of(ws_db *db)
{
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    return c;
}

static void db_exec(ws_db *db, const char *sqlite_sql, const char *pg_sql)
{
    ws_db_conn *c = conn_of(db);
    const char *sql = ws_db_dialect(c, sqlite_sql, pg_sql);
    cr_assert_eq(ws_db_exec(c, sql), WS_OK, "%s: %s", sql, ws_db_last_error(c)->message);
    ws_db_release(c);
}

static int64_t db_count(ws_db *db)
{
    ws_db_conn *c = NULL;
    int64_t n = -1;
    if (ws_db_acquire(db, &c) == WS_OK) {
        if (ws_outbox_count(c, &n) != WS_OK) {
            n = -1;
        }
        ws_db_release(c);
    }
    return n;
}

/* ---- table helpers, no broker ------------------------------------------- */

static void table_setup(void)
{
    tmpdir = harness_tmpdir_new("outbox");
    cr_assert_not_null(tmpdir);
    cr_assert_eq(test_db_fresh(db_url, sizeof(db_url)), 0);
}

static void table_teardown(void)
{
    test_db_cleanup(db_url);
    db_url[0] = '\0';
    harness_tmpdir_free(tmpdir);
    tmpdir = NULL;
}

TestSuite(outbox, .init = table_setup, .fini = table_teardown, .timeout = 30);

typedef struct put_ctx {
    int first;
    int n;
    ws_err fail_with; /* returned after the puts; WS_OK commits */
} put_ctx;

static ws_err put_txn(ws_db_conn *c, void *arg)
{
    put_ctx *p = arg;
    for (int i = 0; i < p->n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "m-%06d", p->first + i);
        Webshop__V1__InStock m = WEBSHOP__V1__IN_STOCK__INIT;
        m.order_id = id;
        ws_err err = ws_outbox_put(c, TOPIC, &m.base);
        if (err != WS_OK) {
            return err;
        }
    }
    return p->fail_with;
}

static void put_rows(ws_db *db, int first, int n)
{
    put_ctx p = {.first = first, .n = n, .fail_with = WS_OK};
    cr_assert_eq(ws_db_txn(db, put_txn, &p), WS_OK);
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
    ws_db *db = test_db_open();
    put_rows(db, 0, 10);
    put_rows(db, 10, 5);
    ws_db_conn *c = conn_of(db);
    int64_t n = 0;
    cr_assert_eq(ws_outbox_count(c, &n), WS_OK);
    cr_assert_eq(n, 15);

    scan_seen seen = {0};
    size_t visited = 0;
    cr_assert_eq(ws_outbox_scan(c, 0, 100, scan_collect, &seen, &visited), WS_OK);
    cr_assert_eq(visited, 15);
    cr_assert(seen.in_order);
    cr_assert_str_eq(seen.first_order, "m-000000");
    cr_assert_str_eq(seen.last_order, "m-000014");

    /* A limit and a cursor page through the table. */
    scan_seen page = {0};
    cr_assert_eq(ws_outbox_scan(c, 3, 4, scan_collect, &page, &visited), WS_OK);
    cr_assert_eq(visited, 4);
    cr_assert_str_eq(page.first_order, "m-000003");
    cr_assert_str_eq(page.last_order, "m-000006");
    ws_db_release(c);
    ws_db_close(db);
}

Test(outbox, delete_removes_only_that_row)
{
    ws_db *db = test_db_open();
    put_rows(db, 0, 3);
    ws_db_conn *c = conn_of(db);
    cr_assert_eq(ws_outbox_delete(c, 2), WS_OK);
    cr_assert_eq(ws_outbox_delete(c, 2), WS_OK); /* already gone: fine */
    int64_t n = 0;
    cr_assert_eq(ws_outbox_count(c, &n), WS_OK);
    cr_assert_eq(n, 2);
    scan_seen seen = {0};
    cr_assert_eq(ws_outbox_scan(c, 0, 10, scan_collect, &seen, NULL), WS_OK);
    cr_assert_str_eq(seen.first_order, "m-000000");
    cr_assert_str_eq(seen.last_order, "m-000002");
    ws_db_release(c);
    ws_db_close(db);
}

Test(outbox, put_rolls_back_with_its_transaction)
{
    ws_db *db = test_db_open();
    put_ctx p = {.first = 0, .n = 4, .fail_with = WS_EINVAL};
    cr_assert_eq(ws_db_txn(db, put_txn, &p), WS_EINVAL);
    cr_assert_eq(db_count(db), 0);
    ws_db_close(db);
}

static ws_err scan_stop_at_second(void *ctx, const ws_outbox_row *row)
{
    (void)row;
    int *calls = ctx;
    return ++*calls == 2 ? WS_EBUSY : WS_OK;
}

Test(outbox, scan_stops_when_the_visitor_says_so)
{
    ws_db *db = test_db_open();
    put_rows(db, 0, 5);
    ws_db_conn *c = conn_of(db);
    int calls = 0;
    size_t visited = 0;
    cr_assert_eq(ws_outbox_scan(c, 0, 10, scan_stop_at_second, &calls, &visited),
                 WS_EBUSY);
    cr_assert_eq(visited, 2);
    /* The statement stopped between rows is usable again at once. */
    scan_seen seen = {0};
    cr_assert_eq(ws_outbox_scan(c, 0, 10, scan_collect, &seen, &visited), WS_OK);
    cr_assert_eq(visited, 5);
    ws_db_release(c);
    ws_db_close(db);
}

Test(outbox, an_empty_payload_stays_an_empty_blob)
{
    ws_db *db = test_db_open();
    ws_db_conn *c = conn_of(db);
    Webshop__V1__InStock m = WEBSHOP__V1__IN_STOCK__INIT; /* packs to 0 bytes */
    cr_assert_eq(protobuf_c_message_get_packed_size(&m.base), 0);
    cr_assert_eq(ws_outbox_put(c, TOPIC, &m.base), WS_OK);
    scan_seen seen = {0};
    size_t visited = 0;
    cr_assert_eq(ws_outbox_scan(c, 0, 10, scan_collect, &seen, &visited), WS_OK);
    cr_assert_eq(visited, 1);
    cr_assert_str_eq(seen.first_order, "");
    ws_db_release(c);
    ws_db_close(db);
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
    ws_db *db = test_db_open();
    ws_db_conn *c = conn_of(db);
    Webshop__V1__InStock m = WEBSHOP__V1__IN_STOCK__INIT;
    cr_assert_eq(ws_outbox_put(c, "", &m.base), WS_EINVAL);
    cr_assert_eq(ws_outbox_put(c, TOPIC, NULL), WS_EINVAL);
    cr_assert_eq(ws_outbox_put(NULL, TOPIC, &m.base), WS_EINVAL);
    ws_db_release(c);
    ws_outbox_relay_opts o = {.db = db, .bus = NULL};
    ws_outbox_relay *r = NULL;
    cr_assert_eq(ws_outbox_relay_open(&o, &r), WS_EINVAL);
    cr_assert_null(r);
    ws_outbox_relay_close(NULL);
    ws_db_close(db);
}

/* A SQLite file made before the lease column (the old schema) gets it from
 * WS_OUTBOX_LEASE_SQLITE in a later migration, and its rows are free. */
Test(outbox, a_sqlite_file_from_before_the_lease_gets_the_column)
{
    if (test_db_is_pg()) {
        cr_skip_test("SQLite only: PostgreSQL tables are made with the lease");
    }
    static const ws_db_migration old[] = {
        {1,
         "CREATE TABLE outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
         " type TEXT NOT NULL, payload BLOB NOT NULL, created_ms INTEGER NOT NULL);",
         NULL},
        {2, WS_OUTBOX_LEASE_SQLITE, NULL},
    };
    ws_db *db = test_db_open_with(old, 1);
    for (int i = 0; i < 3; i++) { /* rows as that release put them */
        db_exec(db,
                "INSERT INTO outbox(topic, type, payload, created_ms)"
                " VALUES ('" TOPIC "', 'webshop.v1.InStock', x'', 5);",
                NULL);
    }
    ws_db_close(db);
    db = test_db_open_with(old, 2);
    cr_assert_eq(ws_db_schema_version(db), 2);
    ws_db_conn *c = conn_of(db);
    ws_db_stmt *st = NULL;
    cr_assert_eq(
        ws_db_prepare(c, "SELECT count(*) FROM outbox WHERE lease_until_ms = 0", &st),
        WS_OK);
    bool row = false;
    cr_assert_eq(ws_db_step(st, &row), WS_OK);
    cr_assert(row);
    cr_assert_eq(ws_db_column_int64(st, 0), 3);
    ws_db_reset(st);
    ws_db_release(c);
    ws_db_close(db);
}

/* ---- the trace of a row ----------------------------------------------- */

typedef struct trace_rows {
    int n;
    char tp[4][WS_TRACEPARENT_SIZE]; /* "" for a row without one */
} trace_rows;

static ws_err trace_rows_collect(void *ctx, const ws_outbox_row *row)
{
    trace_rows *t = ctx;
    cr_assert_lt(t->n, 4);
    snprintf(t->tp[t->n++], WS_TRACEPARENT_SIZE, "%s",
             row->traceparent != NULL ? row->traceparent : "");
    return WS_OK;
}

static trace_rows trace_rows_read(ws_db *db)
{
    trace_rows t = {0};
    ws_db_conn *c = conn_of(db);
    cr_assert_eq(ws_outbox_scan(c, 0, 4, trace_rows_collect, &t, NULL), WS_OK);
    ws_db_release(c);
    return t;
}

/* One row put under trace (NULL: with no current trace); the thread's trace
 * is none again after. */
static void put_traced(ws_db *db, int index, const ws_trace *trace)
{
    ws_trace_set_current(trace);
    put_rows(db, index, 1);
    ws_trace_set_current(NULL);
}

/* A row keeps the trace of the thread that put it; a row put without one
 * has none (NULL, not an empty text). */
Test(outbox, put_stores_the_putting_threads_traceparent)
{
    ws_db *db = test_db_open();
    ws_trace t;
    ws_trace_new(&t);
    char want[WS_TRACEPARENT_SIZE];
    ws_trace_format(&t, want);
    put_traced(db, 0, &t);
    put_traced(db, 1, NULL);
    trace_rows got = trace_rows_read(db);
    cr_assert_eq(got.n, 2);
    cr_assert_str_eq(got.tp[0], want);
    cr_assert_str_eq(got.tp[1], "");
    ws_db_conn *c = conn_of(db);
    ws_db_stmt *st = NULL;
    cr_assert_eq(
        ws_db_prepare(c, "SELECT count(*) FROM outbox WHERE traceparent IS NULL", &st),
        WS_OK);
    bool row = false;
    cr_assert_eq(ws_db_step(st, &row), WS_OK);
    cr_assert(row);
    cr_assert_eq(ws_db_column_int64(st, 0), 1);
    ws_db_reset(st);
    ws_db_release(c);
    ws_db_close(db);
}

/* A database whose outbox was made before the traceparent column (either
 * engine) gets it from WS_OUTBOX_TRACE_* in a later migration: its rows have
 * none, new rows keep theirs. On PostgreSQL the same step is a no-op on a
 * table made with the column (a service whose version 1 is the current
 * WS_OUTBOX_SCHEMA_PG). */
Test(outbox, a_database_from_before_the_trace_column_gets_it)
{
    static const ws_db_migration old[] = {
        {1,
         "CREATE TABLE outbox(id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
         " type TEXT NOT NULL, payload BLOB NOT NULL, created_ms INTEGER NOT NULL,"
         " lease_until_ms INTEGER NOT NULL DEFAULT 0);",
         "CREATE TABLE outbox(id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
         " topic TEXT NOT NULL, type TEXT NOT NULL, payload BYTEA NOT NULL,"
         " created_ms BIGINT NOT NULL, lease_until_ms BIGINT NOT NULL DEFAULT 0);"},
        {2, WS_OUTBOX_TRACE_SQLITE, WS_OUTBOX_TRACE_PG},
    };
    ws_db *db = test_db_open_with(old, 1);
    db_exec(db,
            "INSERT INTO outbox(topic, type, payload, created_ms)"
            " VALUES ('" TOPIC "', 'webshop.v1.InStock', x'', 5);",
            "INSERT INTO outbox(topic, type, payload, created_ms)"
            " VALUES ('" TOPIC "', 'webshop.v1.InStock', '', 5);");
    ws_db_close(db);
    db = test_db_open_with(old, 2);
    cr_assert_eq(ws_db_schema_version(db), 2);
    ws_trace t;
    ws_trace_new(&t);
    char want[WS_TRACEPARENT_SIZE];
    ws_trace_format(&t, want);
    put_traced(db, 1, &t);
    trace_rows got = trace_rows_read(db);
    cr_assert_eq(got.n, 2);
    cr_assert_str_eq(got.tp[0], "", "a row from before has no trace");
    cr_assert_str_eq(got.tp[1], want);
    ws_db_close(db);

    if (test_db_is_pg()) {
        static const ws_db_migration fresh[] = {
            {1, NULL, WS_OUTBOX_SCHEMA_PG},
            {2, NULL, WS_OUTBOX_TRACE_PG},
        };
        test_db_cleanup(db_url);
        cr_assert_eq(test_db_fresh(db_url, sizeof(db_url)), 0);
        db = test_db_open_with(fresh, 2);
        cr_assert_eq(ws_db_schema_version(db), 2);
        put_traced(db, 0, &t);
        got = trace_rows_read(db);
        cr_assert_str_eq(got.tp[0], want);
        ws_db_close(db);
    }
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

#define MAX_ROWS 4000

/* A subscriber that checks the messages arrive in the order queued, and
 * counts each message (m-NNNNNN) it receives. */
typedef struct received {
    pthread_mutex_t mu;
    int n;        /* m-* messages received, duplicates included */
    int next;     /* the next index expected in order */
    int reorders; /* messages that came before one queued earlier */
    int probes;
    int distinct;              /* indexes received at least once */
    int count[MAX_ROWS];       /* times each index was received */
    long long first[MAX_ROWS]; /* harness_now_ms() of its first receipt */
    char trace_id[8][33];      /* of the delivery of each index < 8 ("": none) */
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
        if (i >= 0 && i < MAX_ROWS && r->count[i]++ == 0) {
            r->first[i] = harness_now_ms();
            r->distinct++;
        }
        if (i >= 0 && i < 8) {
            const ws_trace *t = ws_trace_current();
            snprintf(r->trace_id[i], sizeof r->trace_id[i], "%s", t ? t->trace_id : "");
        }
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

/* Every index below n received, in whatever order. */
static bool received_each(void *ctx)
{
    wait_n *w = ctx;
    pthread_mutex_lock(&w->r->mu);
    bool ok = w->r->distinct >= w->n;
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

/* A publisher; max_inflight 0: the bus's default. */
static ws_bus *bus_new_at(int port, const char *client_id, ws_metrics *m,
                          int max_inflight)
{
    ws_bus_opts o = {.host = "127.0.0.1",
                     .port = port,
                     .client_id = client_id,
                     .clean_start = true,
                     .max_inflight = max_inflight,
                     .metrics = m};
    ws_bus *bus = NULL;
    cr_assert_eq(ws_bus_open(&o, &bus), WS_OK);
    cr_assert_eq(ws_bus_start(bus), WS_OK);
    return bus;
}

static ws_bus *bus_new(const char *client_id, ws_metrics *m)
{
    return bus_new_at(broker.port, client_id, m, 0);
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

static ws_outbox_relay *relay_new_lease(ws_db *db, ws_bus *bus, ws_metrics *m,
                                        int lease_ms)
{
    ws_outbox_relay_opts o = {.db = db,
                              .bus = bus,
                              .types = test_types,
                              .n_types = 1,
                              .window = 32,
                              .poll_ms = 100,
                              .lease_ms = lease_ms,
                              .metrics = m};
    ws_outbox_relay *r = NULL;
    cr_assert_eq(ws_outbox_relay_open(&o, &r), WS_OK);
    cr_assert_eq(ws_outbox_relay_start(r), WS_OK);
    return r;
}

static ws_outbox_relay *relay_new(ws_db *db, ws_bus *bus, ws_metrics *m)
{
    return relay_new_lease(db, bus, m, 0);
}

static bool table_empty(void *ctx)
{
    return db_count(ctx) == 0;
}

static uint64_t relay_counter(ws_metrics *m, const char *name)
{
    return ws_counter_value(ws_counter_get(m, name, "", NULL));
}

static double relay_gauge(ws_metrics *m, const char *name)
{
    return ws_gauge_value(ws_gauge_get(m, name, "", NULL));
}

Test(outbox_relay, publishes_every_row_in_order_and_deletes_on_puback)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = bus_new("outbox-test-pub", m);
    static received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_db *db = test_db_open();
    ws_db *relay_db = test_db_open();
    ws_outbox_relay *relay = relay_new(relay_db, pub, m);

    /* Rows committed in several transactions, each followed by a kick. */
    const int total = 1000;
    for (int i = 0; i < total; i += 100) {
        put_rows(db, i, 100);
        ws_outbox_relay_kick(relay);
    }
    cr_assert_eq(ws_outbox_relay_flush(relay, WAIT_MS), WS_OK);
    cr_assert(table_empty(db));
    wait_n w = {&got, total};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));
    pthread_mutex_lock(&got.mu);
    cr_expect_eq(got.reorders, 0);
    pthread_mutex_unlock(&got.mu);
    cr_assert_eq(relay_counter(m, "webshop_outbox_published_total"), (uint64_t)total);
    /* The last look at the table, the one that found it drained. */
    cr_expect_eq(relay_gauge(m, "webshop_outbox_rows"), 0);
    cr_expect_eq(relay_gauge(m, "webshop_outbox_oldest_age_seconds"), 0);

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_db_close(relay_db);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}

Test(outbox_relay, resumes_rows_left_by_an_earlier_run_without_a_kick)
{
    ws_metrics *m = ws_metrics_new();
    ws_db *db = test_db_open();
    put_rows(db, 0, 50); /* as if the process died before publishing */

    ws_bus *pub = bus_new("outbox-test-pub", m);
    static received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_outbox_relay *relay = relay_new(db, pub, m); /* the relay shares the pool */
    cr_assert(harness_wait_until(table_empty, db, WAIT_MS));
    wait_n w = {&got, 50};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}

typedef struct gauge_at {
    ws_metrics *m;
    const char *name;
    double v;
} gauge_at;

static bool gauge_reached(void *ctx)
{
    gauge_at *g = ctx;
    return relay_gauge(g->m, g->name) == g->v;
}

Test(outbox_relay, rows_queued_while_broker_is_down_go_out_when_it_returns)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = bus_new("outbox-test-pub", m);
    static received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_db *db = test_db_open();
    ws_outbox_relay *relay = relay_new(db, pub, m);

    cr_assert_eq(harness_broker_stop(&broker, SIGTERM), 0);
    put_rows(db, 0, 200);
    ws_outbox_relay_kick(relay);
    /* Nothing can be published: flush reports the timeout, does not hang. */
    cr_assert_eq(ws_outbox_relay_flush(relay, 300), WS_ETIMEDOUT);
    cr_assert_eq(db_count(db), 200);
    /* The relay still looks at the table: the gauges say what waits. */
    gauge_at rows = {m, "webshop_outbox_rows", 200};
    cr_assert(harness_wait_until(gauge_reached, &rows, WAIT_MS));
    cr_expect_geq(relay_gauge(m, "webshop_outbox_oldest_age_seconds"), 0);

    cr_assert_eq(harness_broker_restart(&broker), 0);
    cr_assert_eq(ws_outbox_relay_flush(relay, WAIT_MS), WS_OK);
    cr_assert(table_empty(db));
    wait_n w = {&got, 200};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));
    cr_expect_eq(relay_gauge(m, "webshop_outbox_rows"), 0);

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}

/* A publish the bus refuses (here: its in-flight limit, 4, is below the
 * relay's window, 32) gives the rest of the claim back at once: the rows go
 * out in order within the flush, not a lease (30 s) later. */
Test(outbox_relay, rows_claimed_but_not_published_are_given_back_at_once)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = bus_new_at(broker.port, "outbox-test-pub", m, 4);
    static received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_db *db = test_db_open();
    put_rows(db, 0, 300);
    ws_outbox_relay *relay = relay_new(db, pub, m);
    cr_assert_eq(ws_outbox_relay_flush(relay, WAIT_MS), WS_OK);
    cr_assert(table_empty(db));
    wait_n w = {&got, 300};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));
    pthread_mutex_lock(&got.mu);
    cr_expect_eq(got.reorders, 0);
    cr_expect_eq(got.n, 300);
    pthread_mutex_unlock(&got.mu);

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}

typedef struct rows_left {
    ws_db *db;
    int64_t n;
} rows_left;

static bool rows_left_reached(void *ctx)
{
    rows_left *l = ctx;
    return db_count(l->db) == l->n;
}

/* A release that fails (a trigger refuses it; in production a full disk)
 * holds the relay back: it claims nothing more while the rows it gives back
 * are still its own, retries with backoff, and goes on in order once the
 * fault clears. */
Test(outbox_relay, a_release_that_fails_holds_the_claims_back_until_it_heals)
{
    enum { ROWS = 1000 };
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = bus_new_at(broker.port, "outbox-test-pub", m, 4);
    static received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_db *db = test_db_open();
    db_exec(db,
            "CREATE TRIGGER outbox_hold BEFORE UPDATE ON outbox"
            " WHEN NEW.lease_until_ms = 0 BEGIN SELECT RAISE(ABORT, 'held'); END",
            "CREATE FUNCTION outbox_hold() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN IF NEW.lease_until_ms = 0 THEN RAISE EXCEPTION 'held'; END IF;"
            " RETURN NEW; END $$;"
            " CREATE TRIGGER outbox_hold BEFORE UPDATE ON outbox"
            " FOR EACH ROW EXECUTE FUNCTION outbox_hold()");
    put_rows(db, 0, ROWS);
    ws_outbox_relay *relay = relay_new(db, pub, m);
    gauge_at failing = {m, "webshop_outbox_store_failing", 1};
    cr_assert(harness_wait_until(gauge_reached, &failing, WAIT_MS));
    gauge_at landed = {m, "webshop_outbox_inflight", 0};
    cr_assert(harness_wait_until(gauge_reached, &landed, WAIT_MS));
    /* What the first claim got out before the bus said "busy"; the rest is
     * held: nothing more goes out while the release fails. */
    uint64_t sent = relay_counter(m, "webshop_outbox_published_total");
    cr_assert_lt(sent, ROWS);
    rows_left left = {db, ROWS - (int64_t)sent};
    cr_assert(harness_wait_until(rows_left_reached, &left, WAIT_MS));
    cr_expect_eq(ws_outbox_relay_flush(relay, 300), WS_ETIMEDOUT);
    cr_expect_eq(relay_counter(m, "webshop_outbox_published_total"), sent);
    cr_expect_eq(db_count(db), ROWS - (int64_t)sent);

    db_exec(db, "DROP TRIGGER outbox_hold", "DROP TRIGGER outbox_hold ON outbox");
    cr_assert_eq(ws_outbox_relay_flush(relay, WAIT_MS), WS_OK);
    cr_assert(table_empty(db));
    cr_expect_eq(relay_gauge(m, "webshop_outbox_store_failing"), 0);
    wait_n w = {&got, ROWS};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));
    pthread_mutex_lock(&got.mu);
    cr_expect_eq(got.reorders, 0);
    cr_expect_eq(got.n, ROWS);
    pthread_mutex_unlock(&got.mu);

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}

static ws_err put_foreign_txn(ws_db_conn *c, void *arg)
{
    (void)arg;
    Webshop__V1__CancelOrder m = WEBSHOP__V1__CANCEL_ORDER__INIT;
    return ws_outbox_put(c, TOPIC, &m.base);
}

/* A row of a type the relay was not told about can never be published: it
 * is logged, counted as dropped and deleted, and the rows after it go. */
Test(outbox_relay, a_row_of_an_unknown_type_is_dropped_and_the_rest_go)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = bus_new("outbox-test-pub", m);
    static received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_db *db = test_db_open();
    put_rows(db, 0, 5);
    cr_assert_eq(ws_db_txn(db, put_foreign_txn, NULL), WS_OK);
    put_rows(db, 5, 5);
    ws_outbox_relay *relay = relay_new(db, pub, m);
    cr_assert_eq(ws_outbox_relay_flush(relay, WAIT_MS), WS_OK);
    cr_assert(table_empty(db));
    wait_n w = {&got, 10};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));
    cr_expect_eq(relay_counter(m, "webshop_outbox_dropped_total"), 1);
    cr_expect_eq(relay_counter(m, "webshop_outbox_published_total"), 10);

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}

/* stderr into a temporary file while a test looks at the lines logged. */
static int stderr_capture_begin(int *saved)
{
    char path[] = "/tmp/outbox_test_log_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    fflush(stderr);
    *saved = dup(STDERR_FILENO);
    cr_assert_geq(*saved, 0);
    cr_assert_geq(dup2(fd, STDERR_FILENO), 0);
    return fd;
}

/* Restore stderr; the line holding event (NUL-terminated into line). */
static bool stderr_capture_line(int fd, int saved, const char *event, char *line,
                                size_t cap)
{
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    static char text[1 << 16];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    text[n > 0 ? n : 0] = '\0';
    const char *at = strstr(text, event);
    if (at == NULL) {
        return false;
    }
    while (at > text && at[-1] != '\n') {
        at--;
    }
    size_t len = strcspn(at, "\n");
    snprintf(line, cap, "%.*s", (int)len, at);
    return true;
}

/* The relay works on a row under the row's trace: the line about a row it
 * drops carries the trace_id of the work that put it. */
Test(outbox_relay, a_dropped_row_is_logged_under_the_trace_that_put_it)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = bus_new("outbox-test-pub", m);
    ws_db *db = test_db_open();
    ws_trace t;
    ws_trace_new(&t);
    ws_trace_set_current(&t);
    cr_assert_eq(ws_db_txn(db, put_foreign_txn, NULL), WS_OK);
    ws_trace_set_current(NULL);
    cr_assert(harness_wait_until(bus_is_connected, pub, WAIT_MS));

    int saved;
    int fd = stderr_capture_begin(&saved);
    ws_outbox_relay *relay = relay_new(db, pub, m);
    ws_err flushed = ws_outbox_relay_flush(relay, WAIT_MS);
    char line[1024] = "";
    bool found =
        stderr_capture_line(fd, saved, "event=outbox_row_dropped", line, sizeof line);
    cr_assert_eq(flushed, WS_OK);
    cr_assert(found, "no outbox_row_dropped line");
    char want[64];
    snprintf(want, sizeof want, " trace_id=%s ", t.trace_id);
    cr_assert_not_null(strstr(line, want), "%s not in: %s", want, line);

    ws_outbox_relay_close(relay);
    ws_bus_close(pub);
    ws_db_close(db);
    ws_metrics_free(m);
}

/* Each row goes out under the trace that put it (the bus carries the
 * publishing thread's trace and sets it around the handler): the
 * subscriber's handler sees it, one trace per row; a row put without one
 * is not delivered under another row's trace. */
Test(outbox_relay, each_row_is_published_under_the_trace_that_put_it)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = bus_new("outbox-test-pub", m);
    static received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_db *db = test_db_open();
    ws_trace t1, t2;
    ws_trace_new(&t1);
    ws_trace_new(&t2);
    put_traced(db, 0, &t1);
    put_traced(db, 1, &t2);
    put_traced(db, 2, NULL);
    put_traced(db, 3, &t1);
    ws_outbox_relay *relay = relay_new(db, pub, m);
    cr_assert_eq(ws_outbox_relay_flush(relay, WAIT_MS), WS_OK);
    wait_n w = {&got, 4};
    cr_assert(harness_wait_until(received_all, &w, WAIT_MS));
    pthread_mutex_lock(&got.mu);
    cr_expect_str_eq(got.trace_id[0], t1.trace_id);
    cr_expect_str_eq(got.trace_id[1], t2.trace_id);
    cr_expect_str_neq(got.trace_id[2], t1.trace_id);
    cr_expect_str_neq(got.trace_id[2], t2.trace_id);
    cr_expect_str_eq(got.trace_id[3], t1.trace_id);
    pthread_mutex_unlock(&got.mu);

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
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
    static received got;
    ws_bus *sub = subscriber_new(&got, pub, m);
    ws_db *db = test_db_open();
    db_exec(db,
            "CREATE TRIGGER outbox_keep BEFORE DELETE ON outbox"
            " BEGIN SELECT RAISE(ABORT, 'kept'); END",
            "CREATE FUNCTION outbox_keep() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'kept'; END $$;"
            " CREATE TRIGGER outbox_keep BEFORE DELETE ON outbox"
            " FOR EACH ROW EXECUTE FUNCTION outbox_keep()");
    ws_outbox_relay *relay = relay_new(db, pub, m);
    put_rows(db, 0, 20);
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
    cr_expect_eq(relay_gauge(m, "webshop_outbox_store_failing"), 1);
    cr_expect_eq(ws_outbox_relay_flush(relay, 200), WS_ETIMEDOUT, "flush with rows kept");
    cr_expect_eq(db_count(db), 20);

    db_exec(db, "DROP TRIGGER outbox_keep", "DROP TRIGGER outbox_keep ON outbox");
    cr_assert(harness_wait_until(table_empty, db, WAIT_MS));
    cr_expect_eq(relay_gauge(m, "webshop_outbox_store_failing"), 0);
    cr_expect_eq(ws_outbox_relay_flush(relay, WAIT_MS), WS_OK);
    /* The rows were published once: the lease kept them from going again. */
    cr_expect_eq(relay_counter(m, "webshop_outbox_published_total"), 20);

    ws_outbox_relay_close(relay);
    ws_bus_close(sub);
    ws_bus_close(pub);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(m);
}

/* Two replicas on one database: two relays, each with its own pool and its
 * own bus, claim from the same table while rows keep coming. Every row is
 * published, by one relay only (the claims never overlap while a lease
 * holds: each row reaches the subscriber exactly once), both take part, and
 * the table is empty at the end. On PostgreSQL the claims race for real
 * (FOR UPDATE SKIP LOCKED); on SQLite they take turns at the write lock. */
Test(outbox_relay, two_relays_on_one_table_publish_each_row_once)
{
    ws_metrics *ma = ws_metrics_new(), *mb = ws_metrics_new();
    ws_bus *pub_a = bus_new("outbox-test-pub-a", ma);
    ws_bus *pub_b = bus_new("outbox-test-pub-b", mb);
    static received got;
    ws_bus *sub = subscriber_new(&got, pub_a, ma);
    cr_assert(harness_wait_until(bus_is_connected, pub_b, WAIT_MS));
    ws_db *db = test_db_open(), *db_a = test_db_open(), *db_b = test_db_open();

    const int total = 3000;
    put_rows(db, 0, 1000); /* a backlog both find at start */
    ws_outbox_relay *ra = relay_new(db_a, pub_a, ma);
    ws_outbox_relay *rb = relay_new(db_b, pub_b, mb);
    for (int i = 1000; i < total; i += 100) {
        put_rows(db, i, 100);
        ws_outbox_relay_kick(ra);
        ws_outbox_relay_kick(rb);
    }
    wait_n w = {&got, total};
    cr_assert(harness_wait_until(received_each, &w, 4 * WAIT_MS));
    cr_assert_eq(ws_outbox_relay_flush(ra, WAIT_MS), WS_OK);
    cr_assert_eq(ws_outbox_relay_flush(rb, WAIT_MS), WS_OK);
    cr_assert(table_empty(db));

    uint64_t na = relay_counter(ma, "webshop_outbox_published_total");
    uint64_t nb = relay_counter(mb, "webshop_outbox_published_total");
    cr_expect_eq(na + nb, (uint64_t)total, "a %llu + b %llu", (unsigned long long)na,
                 (unsigned long long)nb);
    cr_log_info("%s: relay a published %llu rows, relay b %llu", test_db_engine(),
                (unsigned long long)na, (unsigned long long)nb);
    cr_expect_gt(na, 0, "relay a published nothing");
    cr_expect_gt(nb, 0, "relay b published nothing");
    pthread_mutex_lock(&got.mu);
    int twice = 0;
    for (int i = 0; i < total; i++) {
        twice += got.count[i] > 1;
    }
    cr_expect_eq(twice, 0, "%d rows published more than once", twice);
    cr_expect_eq(got.n, total);
    pthread_mutex_unlock(&got.mu);

    ws_outbox_relay_close(ra);
    ws_outbox_relay_close(rb);
    ws_bus_close(sub);
    ws_bus_close(pub_a);
    ws_bus_close(pub_b);
    ws_db_close(db_b);
    ws_db_close(db_a);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(mb);
    ws_metrics_free(ma);
}

static bool gauge_is(void *ctx)
{
    gauge_at *g = ctx;
    return relay_gauge(g->m, g->name) >= g->v;
}

/* A relay stops mid-way (its broker hangs, then it is closed: the rows it
 * claimed are neither acknowledged nor deleted, as after a crash). A second
 * relay publishes the rows nobody holds at once, and the first relay's rows
 * once their lease (1 s) has run out: not before, and each row once. */
Test(outbox_relay, a_relay_that_stopped_mid_way_is_taken_over_when_its_lease_ends)
{
    enum { LEASE_MS = 1000, WINDOW = 32, ROWS = 100 };
    ws_metrics *ma = ws_metrics_new(), *mb = ws_metrics_new();
    char dir2[4200];
    snprintf(dir2, sizeof(dir2), "%s/broker2", tmpdir);
    cr_assert_eq(mkdir(dir2, 0700), 0);
    harness_broker hung;
    cr_assert_eq(harness_broker_start(&hung, dir2, NULL), 0);
    ws_bus *pub_a = bus_new_at(hung.port, "outbox-test-pub-a", ma, 0);
    cr_assert(harness_wait_until(bus_is_connected, pub_a, WAIT_MS));
    cr_assert_eq(kill(hung.proc.pid, SIGSTOP), 0); /* no PUBACK will come */

    ws_bus *pub_b = bus_new("outbox-test-pub-b", mb);
    static received got;
    ws_bus *sub = subscriber_new(&got, pub_b, mb);
    ws_db *db = test_db_open();
    put_rows(db, 0, ROWS);

    long long t0 = harness_now_ms();
    ws_outbox_relay *ra = relay_new_lease(db, pub_a, ma, LEASE_MS);
    gauge_at flying = {ma, "webshop_outbox_inflight", WINDOW};
    cr_assert(harness_wait_until(gauge_is, &flying, WAIT_MS));
    ws_outbox_relay_close(ra); /* the first WINDOW rows stay claimed */
    cr_assert_eq(db_count(db), ROWS);

    ws_outbox_relay *rb = relay_new(db, pub_b, mb);
    wait_n w = {&got, ROWS};
    cr_assert(harness_wait_until(received_each, &w, WAIT_MS));
    cr_assert_eq(ws_outbox_relay_flush(rb, WAIT_MS), WS_OK);
    cr_assert(table_empty(db));
    cr_expect_eq(relay_counter(mb, "webshop_outbox_published_total"), ROWS);
    pthread_mutex_lock(&got.mu);
    cr_expect_eq(got.n, ROWS, "every row once");
    for (int i = 0; i < WINDOW; i++) {
        cr_expect_geq(got.first[i] - t0, LEASE_MS, "row %d taken after %lld ms", i,
                      got.first[i] - t0);
    }
    pthread_mutex_unlock(&got.mu);

    ws_outbox_relay_close(rb);
    cr_assert_eq(kill(hung.proc.pid, SIGCONT), 0);
    ws_bus_close(pub_a); /* what relay a left in flight is answered or failed */
    cr_expect_eq(harness_broker_stop(&hung, SIGTERM), 0);
    ws_bus_close(sub);
    ws_bus_close(pub_b);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(mb);
    ws_metrics_free(ma);
}

/* A sole relay (a service alone on its SQLite file) that starts after a
 * killed run does not wait for that run's leases: what it had claimed goes
 * out at once. */
Test(outbox_relay, a_sole_relay_drops_the_leases_of_an_earlier_run)
{
    enum { LEASE_MS = 60000, WINDOW = 32, ROWS = 100 };
    ws_metrics *ma = ws_metrics_new(), *mb = ws_metrics_new();
    char dir2[4200];
    snprintf(dir2, sizeof(dir2), "%s/broker2", tmpdir);
    cr_assert_eq(mkdir(dir2, 0700), 0);
    harness_broker hung;
    cr_assert_eq(harness_broker_start(&hung, dir2, NULL), 0);
    ws_bus *pub_a = bus_new_at(hung.port, "outbox-test-pub-a", ma, 0);
    cr_assert(harness_wait_until(bus_is_connected, pub_a, WAIT_MS));
    cr_assert_eq(kill(hung.proc.pid, SIGSTOP), 0); /* no PUBACK will come */

    ws_bus *pub_b = bus_new("outbox-test-pub-b", mb);
    static received got;
    ws_bus *sub = subscriber_new(&got, pub_b, mb);
    ws_db *db = test_db_open();
    put_rows(db, 0, ROWS);

    ws_outbox_relay *ra = relay_new_lease(db, pub_a, ma, LEASE_MS);
    gauge_at flying = {ma, "webshop_outbox_inflight", WINDOW};
    cr_assert(harness_wait_until(gauge_is, &flying, WAIT_MS));
    ws_outbox_relay_close(ra); /* the first WINDOW rows stay claimed for 60 s */

    ws_outbox_relay_opts o = {.db = db,
                              .bus = pub_b,
                              .types = test_types,
                              .n_types = 1,
                              .window = WINDOW,
                              .poll_ms = 100,
                              .lease_ms = LEASE_MS,
                              .sole_relay = true,
                              .metrics = mb};
    ws_outbox_relay *rb = NULL;
    cr_assert_eq(ws_outbox_relay_open(&o, &rb), WS_OK);
    cr_assert_eq(ws_outbox_relay_start(rb), WS_OK);
    wait_n w = {&got, ROWS};
    cr_assert(harness_wait_until(received_each, &w, WAIT_MS),
              "well before the lease ends");
    cr_assert_eq(ws_outbox_relay_flush(rb, WAIT_MS), WS_OK);
    cr_assert(table_empty(db));

    ws_outbox_relay_close(rb);
    cr_assert_eq(kill(hung.proc.pid, SIGCONT), 0);
    ws_bus_close(pub_a);
    cr_expect_eq(harness_broker_stop(&hung, SIGTERM), 0);
    ws_bus_close(sub);
    ws_bus_close(pub_b);
    ws_db_close(db);
    pthread_mutex_destroy(&got.mu);
    ws_metrics_free(mb);
    ws_metrics_free(ma);
}
