/*
 * ws_store on real SQLite files in a fresh temp directory per test:
 * migrations (once, upgrade, failure rollback, too-new refusal, list
 * validation), the statement cache, the transaction helper (rollback,
 * bounded busy retry, two writers on one file), the connection pragmas
 * read back from SQLite, the fault memory behind /readyz, the check at
 * start (truncated file, unknown schema version, budget) and the WAL's
 * size.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "store.h"

static char test_dir[256];
static char test_db[300];

static void store_test_setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(test_dir, sizeof(test_dir), "%s/ws_store_XXXXXX",
             tmp && tmp[0] ? tmp : "/tmp");
    cr_assert_not_null(mkdtemp(test_dir));
    snprintf(test_db, sizeof(test_db), "%s/test.db", test_dir);
}

static void store_test_teardown(void)
{
    DIR *d = opendir(test_dir);
    cr_assert_not_null(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        char p[600];
        snprintf(p, sizeof(p), "%s/%s", test_dir, de->d_name);
        cr_expect_eq(unlink(p), 0, "unlink %s", p);
    }
    closedir(d);
    cr_expect_eq(rmdir(test_dir), 0);
}

TestSuite(store, .init = store_test_setup, .fini = store_test_teardown);

static const ws_migration migs[] = {
    {1, "CREATE TABLE t(x INTEGER NOT NULL);"},
    {2, "INSERT INTO t VALUES (1);"},
    {3, "INSERT INTO t VALUES (2); CREATE TABLE u(y);"},
};

static ws_store *open_db(const ws_migration *m, size_t n)
{
    ws_store_opts o = {.path = test_db};
    ws_store *s = NULL;
    cr_assert_eq(ws_store_open(&o, m, n, &s), WS_OK);
    cr_assert_not_null(s);
    return s;
}

static int query_int(ws_store *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    cr_assert_eq(ws_store_stmt(s, sql, &st), WS_OK, "%s", sql);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW, "%s", sql);
    int v = sqlite3_column_int(st, 0);
    sqlite3_reset(st);
    return v;
}

static int table_exists(ws_store *s, const char *name)
{
    sqlite3_stmt *st = NULL;
    cr_assert_eq(
        ws_store_stmt(
            s, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name=?", &st),
        WS_OK);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int v = sqlite3_column_int(st, 0);
    sqlite3_reset(st);
    return v;
}

Test(store, migrations_apply_once_and_reopen_reruns_nothing)
{
    ws_store *s = open_db(migs, 2);
    cr_assert_eq(ws_store_version(s), 2);
    cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 1);
    ws_store_close(s);

    for (int i = 0; i < 3; i++) {
        s = open_db(migs, 2);
        cr_assert_eq(ws_store_version(s), 2);
        /* migration 2 inserts a row: re-running it would show 2 */
        cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 1);
        ws_store_close(s);
    }
}

Test(store, new_migration_upgrades_old_version)
{
    ws_store *s = open_db(migs, 2);
    cr_assert_eq(ws_store_version(s), 2);
    ws_store_close(s);

    s = open_db(migs, 3);
    cr_assert_eq(ws_store_version(s), 3);
    cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 2);
    cr_assert_eq(query_int(s, "SELECT sum(x) FROM t"), 3);
    cr_assert(table_exists(s, "u"));
    ws_store_close(s);
}

Test(store, failed_migration_leaves_old_version_and_no_partial_step)
{
    ws_store *s = open_db(migs, 1);
    cr_assert_eq(ws_store_version(s), 1);
    ws_store_close(s);

    const ws_migration bad[] = {
        migs[0],
        {2, "CREATE TABLE v(z); INSERT INTO t VALUES (7);"},
        {3, "INSERT INTO t VALUES (8); THIS IS NOT SQL;"},
    };
    ws_store_opts o = {.path = test_db};
    ws_store *sentinel = (ws_store *)&o;
    ws_store *out = sentinel;
    cr_assert_eq(ws_store_open(&o, bad, 3, &out), WS_ESTORE);
    cr_assert_eq(out, sentinel, "out written on failure");

    s = open_db(migs, 1);
    cr_assert_eq(ws_store_version(s), 1);
    cr_assert_not(table_exists(s, "v"), "step 2 was applied");
    cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 0, "steps 2-3 rows applied");
    ws_store_close(s);
}

Test(store, database_newer_than_code_is_refused)
{
    ws_store *s = open_db(migs, 3);
    ws_store_close(s);

    ws_store_opts o = {.path = test_db};
    ws_store *out = NULL;
    cr_assert_eq(ws_store_open(&o, migs, 2, &out), WS_ESTORE);
    cr_assert_null(out);
    o.readonly = 1;
    cr_assert_eq(ws_store_open(&o, migs, 2, &out), WS_ESTORE);
    cr_assert_null(out);

    s = open_db(migs, 3);
    cr_assert_eq(ws_store_version(s), 3);
    cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 2);
    ws_store_close(s);
}

Test(store, migration_list_not_1_to_n_is_rejected)
{
    const ws_migration gap[] = {{1, "CREATE TABLE a(x);"}, {3, "CREATE TABLE b(x);"}};
    const ws_migration from2[] = {{2, "CREATE TABLE a(x);"}};
    const ws_migration nosql[] = {{1, NULL}};
    const ws_migration swapped[] = {{2, "SELECT 1;"}, {1, "SELECT 1;"}};
    ws_store_opts o = {.path = test_db};
    ws_store *out = NULL;
    cr_assert_eq(ws_store_open(&o, gap, 2, &out), WS_EINVAL);
    cr_assert_eq(ws_store_open(&o, from2, 1, &out), WS_EINVAL);
    cr_assert_eq(ws_store_open(&o, nosql, 1, &out), WS_EINVAL);
    cr_assert_eq(ws_store_open(&o, swapped, 2, &out), WS_EINVAL);
    cr_assert_eq(ws_store_open(&o, NULL, 1, &out), WS_EINVAL);
    cr_assert_eq(ws_store_open(NULL, migs, 1, &out), WS_EINVAL);
    cr_assert_null(out);
}

Test(store, bad_synchronous_value_is_rejected)
{
    ws_store_opts o = {.path = test_db, .synchronous = "fast"};
    ws_store *out = NULL;
    cr_assert_eq(ws_store_open(&o, migs, 1, &out), WS_EINVAL);
    o.synchronous = "";
    cr_assert_eq(ws_store_open(&o, migs, 1, &out), WS_EINVAL);
    cr_assert_null(out);
}

Test(store, wal_foreign_keys_and_synchronous_are_really_on)
{
    static const struct {
        const char *name;
        int value;
    } levels[] = {{NULL, 1}, {"OFF", 0}, {"normal", 1}, {"FULL", 2}, {"Extra", 3}};
    const ws_migration fk[] = {
        {1, "CREATE TABLE p(id INTEGER PRIMARY KEY);"
            "CREATE TABLE c(pid INTEGER NOT NULL REFERENCES p(id));"},
    };
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        ws_store_opts o = {.path = test_db, .synchronous = levels[i].name};
        ws_store *s = NULL;
        cr_assert_eq(ws_store_open(&o, fk, 1, &s), WS_OK);
        cr_assert_eq(query_int(s, "PRAGMA synchronous"), levels[i].value, "level %zu", i);
        cr_assert_eq(query_int(s, "PRAGMA foreign_keys"), 1);

        sqlite3_stmt *st = NULL;
        cr_assert_eq(ws_store_stmt(s, "PRAGMA journal_mode", &st), WS_OK);
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
        cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
        sqlite3_reset(st);

        /* enforced, not just reported */
        cr_assert_eq(ws_store_stmt(s, "INSERT INTO c(pid) VALUES (42)", &st), WS_OK);
        int rc = sqlite3_step(st);
        cr_assert_eq(rc & 0xff, SQLITE_CONSTRAINT);
        cr_assert_eq(ws_err_from_sqlite(sqlite3_extended_errcode(ws_store_db(s))),
                     WS_EEXIST);
        ws_store_close(s);
    }
}

Test(store, memory_database_opens_and_migrates)
{
    ws_store_opts o = {.path = ":memory:"};
    ws_store *s = NULL;
    cr_assert_eq(ws_store_open(&o, migs, 3, &s), WS_OK);
    cr_assert_eq(ws_store_version(s), 3);
    cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 2);
    cr_assert_eq(query_int(s, "PRAGMA foreign_keys"), 1);
    ws_store_close(s);
    ws_store_close(NULL);
}

Test(store, readonly_open_reads_and_refuses_writes_and_old_schema)
{
    ws_store *w = open_db(migs, 2);
    ws_store_close(w);

    ws_store_opts o = {.path = test_db, .readonly = 1};
    ws_store *s = NULL;
    cr_assert_eq(ws_store_open(&o, migs, 3, &s), WS_ESTORE, "readonly cannot migrate");
    cr_assert_null(s);
    cr_assert_eq(ws_store_open(&o, migs, 2, &s), WS_OK);
    cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 1);
    cr_assert_neq(ws_store_exec(s, "INSERT INTO t VALUES (9)"), WS_OK);
    ws_store_close(s);
}

Test(store, stmt_cache_returns_same_statement_reset_and_unbound)
{
    ws_store *s = open_db(migs, 3);
    const char *sql = "SELECT x FROM t WHERE x >= ? ORDER BY x";
    sqlite3_stmt *a = NULL, *b = NULL, *c = NULL;
    cr_assert_eq(ws_store_stmt(s, sql, &a), WS_OK);
    cr_assert_eq(sqlite3_bind_int(a, 1, 1), SQLITE_OK);
    cr_assert_eq(sqlite3_step(a), SQLITE_ROW); /* left between rows */
    cr_assert(sqlite3_stmt_busy(a));

    char copy[64];
    snprintf(copy, sizeof(copy), "%s", sql); /* keyed by text, not pointer */
    cr_assert_eq(ws_store_stmt(s, copy, &b), WS_OK);
    cr_assert_eq(a, b);
    cr_assert_not(sqlite3_stmt_busy(b), "not reset");
    /* bindings cleared: x >= NULL matches nothing */
    cr_assert_eq(sqlite3_step(b), SQLITE_DONE, "bindings not cleared");

    cr_assert_eq(ws_store_stmt(s, "SELECT x FROM t WHERE x <= ?", &c), WS_OK);
    cr_assert_neq(c, a);

    /* enough distinct statements to grow the table; each still found */
    sqlite3_stmt *many[100];
    for (int i = 0; i < 100; i++) {
        char q[64];
        snprintf(q, sizeof(q), "SELECT %d", i);
        cr_assert_eq(ws_store_stmt(s, q, &many[i]), WS_OK);
    }
    for (int i = 0; i < 100; i++) {
        char q[64];
        snprintf(q, sizeof(q), "SELECT %d", i);
        sqlite3_stmt *again = NULL;
        cr_assert_eq(ws_store_stmt(s, q, &again), WS_OK);
        cr_assert_eq(again, many[i]);
        cr_assert_eq(sqlite3_step(again), SQLITE_ROW);
        cr_assert_eq(sqlite3_column_int(again, 0), i);
        sqlite3_reset(again);
    }
    ws_store_close(s);
}

Test(store, stmt_rejects_bad_sql_and_multiple_statements)
{
    ws_store *s = open_db(migs, 1);
    sqlite3_stmt *st = NULL;
    cr_assert_eq(ws_store_stmt(s, "SELEC nonsense", &st), WS_ESTORE);
    cr_assert_eq(ws_store_stmt(s, "SELECT * FROM nosuchtable", &st), WS_ESTORE);
    cr_assert_eq(ws_store_stmt(s, "SELECT 1; SELECT 2", &st), WS_EINVAL);
    cr_assert_eq(ws_store_stmt(s, "  ", &st), WS_EINVAL);
    cr_assert_null(st);
    cr_assert_eq(ws_store_stmt(s, "SELECT 1;  \n", &st), WS_OK);
    ws_store_close(s);
}

static ws_err insert_then_fail(ws_store *s, void *ctx)
{
    (void)ctx;
    cr_assert_eq(ws_store_exec(s, "INSERT INTO t VALUES (100)"), WS_OK);
    cr_assert_eq(ws_store_exec(s, "CREATE TABLE w(z)"), WS_OK);
    return WS_ENOTFOUND;
}

Test(store, txn_rolls_back_when_fn_fails)
{
    ws_store *s = open_db(migs, 1);
    cr_assert_eq(ws_store_txn(s, insert_then_fail, NULL), WS_ENOTFOUND);
    cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 0);
    cr_assert_not(table_exists(s, "w"));
    cr_assert(sqlite3_get_autocommit(ws_store_db(s)), "transaction left open");
    cr_assert_eq(ws_store_busy_retries(s), 0);
    ws_store_close(s);
}

typedef struct {
    int calls;
    int busy_first; /* return WS_EBUSY on this many first calls */
} busy_ctx;

static ws_err insert_busy_first(ws_store *s, void *arg)
{
    busy_ctx *c = arg;
    c->calls++;
    cr_assert_eq(ws_store_exec(s, "INSERT INTO t VALUES (1)"), WS_OK);
    return c->calls <= c->busy_first ? WS_EBUSY : WS_OK;
}

Test(store, txn_retries_whole_body_when_fn_meets_busy)
{
    ws_store *s = open_db(migs, 1);
    busy_ctx c = {.busy_first = 2};
    cr_assert_eq(ws_store_txn(s, insert_busy_first, &c), WS_OK);
    cr_assert_eq(c.calls, 3);
    cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 1, "a busy attempt committed");
    cr_assert_eq(ws_store_busy_retries(s), 2);
    ws_store_close(s);
}

Test(store, txn_busy_retries_are_bounded)
{
    ws_store_opts o = {.path = test_db, .busy_timeout_ms = -1, .txn_retries = 3};
    ws_store *s = NULL;
    cr_assert_eq(ws_store_open(&o, migs, 1, &s), WS_OK);

    /* another connection holds the write lock for the whole attempt */
    sqlite3 *other = NULL;
    cr_assert_eq(sqlite3_open(test_db, &other), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    busy_ctx c = {0};
    cr_assert_eq(ws_store_txn(s, insert_busy_first, &c), WS_EBUSY);
    cr_assert_eq(c.calls, 0, "fn ran without the write lock");
    cr_assert_eq(ws_store_busy_retries(s), 3);

    /* fn keeps meeting busy: also bounded */
    c.busy_first = 1000;
    cr_assert_eq(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    cr_assert_eq(ws_store_txn(s, insert_busy_first, &c), WS_EBUSY);
    cr_assert_eq(c.calls, 4);
    cr_assert_eq(ws_store_busy_retries(s), 6);
    cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 0);

    c.busy_first = 0;
    cr_assert_eq(ws_store_txn(s, insert_busy_first, &c), WS_OK);
    cr_assert_eq(query_int(s, "SELECT count(*) FROM t"), 1);
    cr_assert_eq(sqlite3_close(other), SQLITE_OK);
    ws_store_close(s);
}

static ws_err leave_statement_open(ws_store *s, void *ctx)
{
    (void)ctx;
    sqlite3_stmt *st = NULL;
    cr_assert_eq(ws_store_stmt(s, "SELECT x FROM t", &st), WS_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_eq(ws_store_stmt(s, "UPDATE t SET x = x + 1 RETURNING x", &st), WS_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW); /* a write left mid-rows */
    return WS_OK;
}

static ws_err nested_txn(ws_store *s, void *ctx)
{
    *(ws_err *)ctx = ws_store_txn(s, leave_statement_open, NULL);
    return WS_OK;
}

Test(store, txn_commits_despite_statements_left_mid_rows_and_refuses_nesting)
{
    ws_store *s = open_db(migs, 3);
    cr_assert_eq(ws_store_txn(s, leave_statement_open, NULL), WS_OK);
    cr_assert_eq(query_int(s, "SELECT sum(x) FROM t"), 5);
    ws_err inner = WS_OK;
    cr_assert_eq(ws_store_txn(s, nested_txn, &inner), WS_OK);
    cr_assert_eq(inner, WS_EINVAL);
    cr_assert_eq(ws_store_busy_retries(s), 0);
    ws_store_close(s);
}

/* ---- two writers ---- */

#define WRITER_N 500

static const ws_migration counter_migs[] = {
    {1, "CREATE TABLE counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
        "INSERT INTO counter VALUES (1, 0);"},
};

typedef struct {
    ws_store *s;
    pthread_barrier_t *start;
    int failures;
} writer_arg;

/* Read then write, so that a transaction that was not really exclusive
 * would lose increments. */
static ws_err counter_increment(ws_store *s, void *ctx)
{
    (void)ctx;
    sqlite3_stmt *st = NULL;
    ws_err err = ws_store_stmt(s, "SELECT n FROM counter WHERE id = 1", &st);
    if (err != WS_OK) {
        return err;
    }
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        return ws_err_from_sqlite(rc) == WS_OK ? WS_ESTORE : ws_err_from_sqlite(rc);
    }
    int n = sqlite3_column_int(st, 0);
    sqlite3_reset(st);
    if ((err = ws_store_stmt(s, "UPDATE counter SET n = ? WHERE id = 1", &st)) != WS_OK) {
        return err;
    }
    sqlite3_bind_int(st, 1, n + 1);
    rc = sqlite3_step(st);
    return rc == SQLITE_DONE ? WS_OK : ws_err_from_sqlite(rc);
}

static void *writer_main(void *p)
{
    writer_arg *a = p;
    pthread_barrier_wait(a->start);
    for (int i = 0; i < WRITER_N; i++) {
        if (ws_store_txn(a->s, counter_increment, NULL) != WS_OK) {
            a->failures++;
        }
    }
    return NULL;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

Test(store, two_writers_on_one_file_lose_no_increment, .timeout = 60)
{
    /* never wait in SQLite: every collision goes through the txn retry */
    ws_store_opts o = {.path = test_db, .busy_timeout_ms = -1, .txn_retries = 100000};
    ws_store *s1 = NULL, *s2 = NULL;
    cr_assert_eq(ws_store_open(&o, counter_migs, 1, &s1), WS_OK);
    cr_assert_eq(ws_store_open(&o, counter_migs, 1, &s2), WS_OK);

    /* A third connection holds the write lock until both writers have
     * retried at least once, so the retry path is exercised for certain;
     * after that the two writers contend freely. */
    sqlite3 *gate = NULL;
    cr_assert_eq(sqlite3_open(test_db, &gate), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(gate, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    writer_arg a1 = {s1, &start, 0}, a2 = {s2, &start, 0};
    pthread_t t1, t2;
    cr_assert_eq(pthread_create(&t1, NULL, writer_main, &a1), 0);
    cr_assert_eq(pthread_create(&t2, NULL, writer_main, &a2), 0);

    long deadline = now_ms() + 10000;
    while ((ws_store_busy_retries(s1) == 0 || ws_store_busy_retries(s2) == 0) &&
           now_ms() < deadline) {
        sched_yield();
    }
    unsigned long gated1 = ws_store_busy_retries(s1), gated2 = ws_store_busy_retries(s2);
    cr_assert_eq(sqlite3_exec(gate, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    pthread_barrier_destroy(&start);
    cr_assert_eq(sqlite3_close(gate), SQLITE_OK);

    cr_assert_gt(gated1, 0, "writer 1 never retried while the lock was held");
    cr_assert_gt(gated2, 0, "writer 2 never retried while the lock was held");
    cr_assert_eq(a1.failures + a2.failures, 0);
    cr_assert_eq(query_int(s1, "SELECT n FROM counter WHERE id = 1"), 2 * WRITER_N);
    cr_log_info("busy retries: %lu + %lu (%lu + %lu while gated)",
                ws_store_busy_retries(s1), ws_store_busy_retries(s2), gated1, gated2);
    ws_store_close(s1);
    ws_store_close(s2);
}

typedef struct {
    pthread_barrier_t *start;
    ws_store *s;
    ws_err err;
} opener_arg;

static void *opener_main(void *p)
{
    opener_arg *a = p;
    ws_store_opts o = {.path = test_db};
    pthread_barrier_wait(a->start);
    a->err = ws_store_open(&o, migs, 3, &a->s);
    return NULL;
}

Test(store, concurrent_opens_of_a_fresh_file_migrate_once, .timeout = 60)
{
    for (int round = 0; round < 5; round++) {
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        opener_arg a[2] = {{&start, NULL, WS_EINTERNAL}, {&start, NULL, WS_EINTERNAL}};
        pthread_t t[2];
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(pthread_create(&t[i], NULL, opener_main, &a[i]), 0);
        }
        for (int i = 0; i < 2; i++) {
            pthread_join(t[i], NULL);
        }
        pthread_barrier_destroy(&start);
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(a[i].err, WS_OK, "round %d opener %d", round, i);
            cr_assert_eq(ws_store_version(a[i].s), 3);
            /* migrations 2 and 3 insert one row each */
            cr_assert_eq(query_int(a[i].s, "SELECT count(*) FROM t"), 2);
        }
        ws_store_close(a[0].s);
        ws_store_close(a[1].s);
        char p[400];
        const char *suffix[] = {"", "-wal", "-shm"};
        for (int i = 0; i < 3; i++) {
            snprintf(p, sizeof(p), "%s%s", test_db, suffix[i]);
            unlink(p);
        }
    }
}

Test(store, sqlite_codes_translate)
{
    cr_assert_eq(ws_err_from_sqlite(SQLITE_OK), WS_OK);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_ROW), WS_OK);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_DONE), WS_OK);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_BUSY), WS_EBUSY);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_BUSY_SNAPSHOT), WS_EBUSY);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_LOCKED), WS_EBUSY);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_NOMEM), WS_ENOMEM);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_CONSTRAINT), WS_EEXIST);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_CONSTRAINT_FOREIGNKEY), WS_EEXIST);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_TOOBIG), WS_ETOOBIG);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_CORRUPT), WS_ESTORE);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_IOERR_FSYNC), WS_EIO);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_FULL), WS_EIO);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_READONLY_DBMOVED), WS_EIO);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_CANTOPEN), WS_EIO);
    cr_assert_eq(ws_err_from_sqlite(SQLITE_NOTADB), WS_ESTORE);
}

static ws_err insert_value(ws_store *s, void *arg)
{
    sqlite3_stmt *st = NULL;
    cr_assert_eq(ws_store_stmt(s, "INSERT INTO t VALUES (?)", &st), WS_OK);
    sqlite3_bind_int(st, 1, *(const int *)arg);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? WS_OK : WS_ESTORE;
}

/* Insert *arg and return what the statement gave (the test expects an
 * error). */
static ws_err insert_value_expect_err(ws_store *s, void *arg)
{
    sqlite3_stmt *st = NULL;
    cr_assert_eq(ws_store_stmt(s, "INSERT INTO t VALUES (?)", &st), WS_OK);
    sqlite3_bind_int(st, 1, *(const int *)arg);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return ws_err_from_sqlite(rc);
}

static ws_err insert_value_then_fail(ws_store *s, void *arg)
{
    cr_assert_eq(insert_value(s, arg), WS_OK);
    return WS_ENOTFOUND;
}

Test(store, group_commits_its_txns_once_and_a_failed_one_alone_rolls_back)
{
    ws_store *s = open_db(migs, 1);
    ws_store *other = open_db(migs, 1);
    cr_assert_eq(ws_store_group_begin(s), WS_OK);
    cr_assert_eq(ws_store_group_begin(s), WS_EINVAL, "groups do not nest");
    int one = 1, two = 2, three = 3;
    cr_assert_eq(ws_store_txn(s, insert_value, &one), WS_OK);
    cr_assert_eq(ws_store_txn(s, insert_value_then_fail, &two), WS_ENOTFOUND);
    cr_assert_eq(ws_store_txn(s, insert_value, &three), WS_OK);
    /* Nothing is visible to another connection before the group ends. */
    cr_assert_eq(query_int(other, "SELECT count(*) FROM t"), 0);
    cr_assert_eq(ws_store_group_end(s), WS_OK);
    cr_assert_eq(ws_store_group_end(s), WS_EINVAL, "no group open");
    cr_assert_eq(query_int(other, "SELECT count(*) FROM t"), 2);
    cr_assert_eq(query_int(other, "SELECT sum(x) FROM t"), 4);
    cr_assert(sqlite3_get_autocommit(ws_store_db(s)), "transaction left open");
    /* Outside a group ws_store_txn is its own transaction again. */
    cr_assert_eq(ws_store_txn(s, insert_value, &two), WS_OK);
    cr_assert_eq(query_int(other, "SELECT count(*) FROM t"), 3);
    ws_store_close(other);
    ws_store_close(s);
}

Test(store, group_begin_inside_a_txn_is_refused)
{
    ws_store *s = open_db(migs, 1);
    cr_assert_eq(ws_store_exec(s, "BEGIN"), WS_OK);
    cr_assert_eq(ws_store_group_begin(s), WS_EINVAL);
    cr_assert_eq(ws_store_exec(s, "ROLLBACK"), WS_OK);
    ws_store_close(s);
}

/* ---- faults, checks at start, the WAL ----------------------------------- */

static double failing_gauge(void)
{
    return ws_gauge_value(
        ws_gauge_get(ws_metrics_default(), "webshop_store_commit_failing", "", NULL));
}

/* A write the database refuses (query_only stands in for a read-only file:
 * both give SQLITE_READONLY) marks the connection failing, with the reason,
 * until a transaction commits again; constraint errors do not. */
Test(store, a_refused_write_marks_the_store_failing_until_a_commit)
{
    ws_store *s = open_db(migs, 1);
    char why[64] = "";
    double g0 = failing_gauge();
    cr_assert_not(ws_store_failing(s, why, sizeof(why)));
    cr_assert_eq(ws_store_exec(s, "PRAGMA query_only = 1"), WS_OK);
    int one = 1;
    cr_assert_eq(ws_store_txn(s, insert_value_expect_err, &one), WS_EIO);
    cr_assert(ws_store_failing(s, why, sizeof(why)));
    cr_expect_str_eq(why, "database is read-only");
    cr_expect_eq(failing_gauge(), g0 + 1);
    /* In a group too: the group cannot commit what it holds. */
    cr_assert_eq(ws_store_exec(s, "PRAGMA query_only = 0"), WS_OK);
    cr_assert_eq(ws_store_txn(s, insert_value, &one), WS_OK);
    cr_expect_not(ws_store_failing(s, NULL, 0));
    cr_expect_eq(failing_gauge(), g0);
    /* A constraint is the program's business, not a fault of the store. */
    cr_assert_eq(ws_store_exec(s, "CREATE UNIQUE INDEX tx ON t(x)"), WS_OK);
    cr_assert_eq(ws_store_txn(s, insert_value_expect_err, &one), WS_EEXIST);
    cr_expect_not(ws_store_failing(s, NULL, 0));
    /* A failing connection that closes no longer counts. */
    cr_assert_eq(ws_store_exec(s, "PRAGMA query_only = 1"), WS_OK);
    int two = 2;
    cr_assert_eq(ws_store_txn(s, insert_value_expect_err, &two), WS_EIO);
    cr_expect_eq(failing_gauge(), g0 + 1);
    ws_store_close(s);
    cr_expect_eq(failing_gauge(), g0);
    cr_expect_not(ws_store_failing(NULL, NULL, 0));
}

Test(store, a_group_that_cannot_commit_marks_the_store_failing)
{
    ws_store *s = open_db(migs, 1);
    cr_assert_eq(ws_store_group_begin(s), WS_OK);
    cr_assert_eq(ws_store_exec(s, "PRAGMA query_only = 1"), WS_OK);
    int one = 1;
    cr_assert_eq(ws_store_txn(s, insert_value_expect_err, &one), WS_EIO);
    cr_assert_eq(ws_store_group_end(s), WS_OK, "an empty group commits");
    /* ...and that commit cleared the fault: the next write shows it again. */
    cr_assert_eq(ws_store_txn(s, insert_value_expect_err, &one), WS_EIO);
    char why[64];
    cr_assert(ws_store_failing(s, why, sizeof(why)));
    cr_expect_str_eq(why, "database is read-only");
    ws_store_close(s);
}

/* A file of n rows of about 1 KiB, closed cleanly (no WAL left). */
static void fill_rows(int n)
{
    ws_store *s = open_db(migs, 1);
    cr_assert_eq(ws_store_exec(s, "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)"),
                 WS_OK);
    char sql[256];
    snprintf(
        sql, sizeof(sql),
        "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < %d)"
        " INSERT INTO big(b) SELECT randomblob(1000) FROM c",
        n);
    cr_assert_eq(ws_store_exec(s, sql), WS_OK);
    ws_store_close(s);
}

static long file_size(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

Test(store, check_passes_a_sound_database_and_a_missing_one)
{
    char detail[256];
    cr_assert_eq(ws_store_check_path(test_db, 1, 1000, detail, sizeof(detail)), WS_OK,
                 "a fresh file: %s", detail);
    fill_rows(2000);
    cr_assert_eq(ws_store_check_path(test_db, 1, 10000, detail, sizeof(detail)), WS_OK,
                 "%s", detail);
    cr_expect_str_eq(detail, "");
}

/* The experiment of issue 13: half the file cut off after a clean stop. */
Test(store, check_refuses_a_database_truncated_to_half)
{
    fill_rows(2000);
    long n = file_size(test_db);
    cr_assert_gt(n, 1000000);
    cr_assert_eq(truncate(test_db, n / 2), 0);
    char detail[256];
    cr_assert_eq(ws_store_check_path(test_db, 1, 10000, detail, sizeof(detail)),
                 WS_ESTORE);
    cr_expect_neq(detail[0], '\0', "no detail given");
    cr_expect_null(strchr(detail, '\n'), "detail is one line");
}

Test(store, check_refuses_an_unknown_schema_version)
{
    ws_store *s = open_db(migs, 3);
    ws_store_close(s);
    char detail[256];
    cr_assert_eq(ws_store_check_path(test_db, 2, 1000, detail, sizeof(detail)),
                 WS_ESTORE);
    cr_expect(strstr(detail, "newer") != NULL, "%s", detail);
    cr_assert_eq(ws_store_check_path(test_db, 3, 1000, detail, sizeof(detail)), WS_OK);
    /* Version 0 with tables: some other program's file. */
    s = open_db(migs, 0);
    ws_store_close(s);
    cr_assert_eq(ws_store_check_path(test_db, -1, 1000, detail, sizeof(detail)), WS_OK);
    s = open_db(migs, 3);
    cr_assert_eq(ws_store_exec(s, "PRAGMA user_version = 0"), WS_OK);
    ws_store_close(s);
    cr_assert_eq(ws_store_check_path(test_db, 3, 1000, detail, sizeof(detail)),
                 WS_ESTORE);
    cr_expect(strstr(detail, "version 0") != NULL, "%s", detail);
}

Test(store, check_that_runs_out_of_budget_gives_no_verdict)
{
    fill_rows(20000); /* ~20 MB: its quick_check takes well over 1 ms */
    char detail[256];
    ws_err err = ws_store_check_path(test_db, 1, 1, detail, sizeof(detail));
    cr_expect_eq(err, WS_ETIMEDOUT, "%s", detail);
}

/* The WAL stays near journal_size_limit while writes go on (a reader keeps
 * a connection open), and a TRUNCATE checkpoint leaves it empty. */
Test(store, wal_stays_small_and_a_truncate_checkpoint_empties_it)
{
    ws_store *s = open_db(migs, 1);
    ws_store *reader = open_db(migs, 1);
    cr_expect_eq(query_int(s, "PRAGMA wal_autocheckpoint"), 256);
    cr_expect_eq(query_int(s, "PRAGMA journal_size_limit"), 1024 * 1024);
    cr_assert_eq(ws_store_exec(s, "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)"),
                 WS_OK);
    char wal[320];
    snprintf(wal, sizeof(wal), "%s-wal", test_db);
    long biggest = 0;
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(ws_store_exec(s, "INSERT INTO big(b) SELECT randomblob(50000)"),
                     WS_OK);
        cr_assert_eq(query_int(reader, "SELECT count(*) FROM big"), i + 1);
        long n = file_size(wal);
        biggest = n > biggest ? n : biggest;
    }
    /* 10 MB written; the WAL never held much more than the 1 MiB limit
     * plus one transaction. */
    cr_expect_lt(biggest, 1300 * 1024, "the WAL grew to %ld bytes", biggest);
    cr_assert_eq(ws_store_checkpoint(s, false), WS_OK);
    cr_assert_eq(ws_store_checkpoint(s, true), WS_OK);
    cr_expect_eq(file_size(wal), 0);
    ws_store_close(reader);
    ws_store_close(s);
}
