/*
 * lib/db on both engines. Every DB_TEST runs twice: as sqlite::NAME on a
 * file in a fresh temp dir, and as pg::NAME in a fresh schema of the
 * throwaway PostgreSQL cluster that tests/support/with_pg starts for the
 * run (WS_TEST_PG_URL); the connection-loss test starts a private cluster
 * of its own, since it stops and restarts it. Where the engines differ by
 * design (SQLite has one writer and no server), the test says what the
 * SQLite counterpart shows. The seam test at the end checks that no driver
 * call leaks out of lib/db into the rest of lib/.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "metrics.h"
#include "harness.h"
#include "pg_cluster.h"

/* ---- per-test environment ------------------------------------------------- */

static struct {
    ws_db_engine engine;
    char *dir;       /* temp dir of this test */
    char url[1024];  /* this test's own database */
    char schema[64]; /* PostgreSQL: the schema that is this test's database */
    const char *pg_base;
    ws_db *admin;    /* PostgreSQL: the base database, for schema and lock views */
    pg_cluster *own; /* a private cluster of this test, destroyed in fini
                        even when the test fails */
} E;

static ws_err pool_try(const char *url, const ws_db_migration *m, size_t n, int size,
                       ws_db **out, ws_db_error *e)
{
    ws_db_opts o = {
        .url = url, .pool_size = size, .migrations = m, .n_migrations = n, .error = e};
    return ws_db_open(&o, out);
}

static ws_db *pool_open(const char *url, const ws_db_migration *m, size_t n, int size)
{
    ws_db *db = NULL;
    ws_db_error e = {0};
    ws_err err = pool_try(url, m, n, size, &db, &e);
    cr_assert_eq(err, WS_OK, "open %s: %s: %s", url, ws_errname(err), e.message);
    return db;
}

static void sql_exec(ws_db *db, const char *sql)
{
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    ws_err err = ws_db_exec(c, sql);
    cr_assert_eq(err, WS_OK, "%s: %s: %s", sql, ws_errname(err),
                 ws_db_last_error(c)->message);
    ws_db_release(c);
}

/* The first column of the first row of sql, with up to one int parameter. */
static int64_t conn_int(ws_db_conn *c, const char *sql, int nparam, int64_t p1)
{
    ws_db_stmt *s = NULL;
    ws_err err = ws_db_prepare(c, sql, &s);
    cr_assert_eq(err, WS_OK, "%s: %s: %s", sql, ws_errname(err),
                 ws_db_last_error(c)->message);
    if (nparam > 0) {
        cr_assert_eq(ws_db_bind_int64(s, 1, p1), WS_OK);
    }
    bool row = false;
    err = ws_db_step(s, &row);
    cr_assert_eq(err, WS_OK, "%s: %s: %s", sql, ws_errname(err),
                 ws_db_last_error(c)->message);
    cr_assert(row, "%s: no row", sql);
    int64_t v = ws_db_column_int64(s, 0);
    ws_db_reset(s);
    return v;
}

static int64_t sql_int(ws_db *db, const char *sql)
{
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    int64_t v = conn_int(c, sql, 0, 0);
    ws_db_release(c);
    return v;
}

/* Run one statement with up to two parameters (int, text); its changes. */
static ws_err conn_run(ws_db_conn *c, const char *sql, int64_t i1, const char *t2,
                       int64_t *changes)
{
    ws_db_stmt *s = NULL;
    ws_err err = ws_db_prepare(c, sql, &s);
    if (err == WS_OK && strstr(sql, "$1") != NULL) {
        err = ws_db_bind_int64(s, 1, i1);
    }
    if (err == WS_OK && strstr(sql, "$2") != NULL) {
        err = ws_db_bind_text(s, 2, t2);
    }
    return err == WS_OK ? ws_db_run(s, changes) : err;
}

static void env_init_sqlite(void)
{
    memset(&E, 0, sizeof(E));
    E.engine = WS_DB_SQLITE;
    E.dir = harness_tmpdir_new("db");
    cr_assert_not_null(E.dir);
    snprintf(E.url, sizeof(E.url), "sqlite:%s/test.db", E.dir);
}

static void env_init_pg(void)
{
    memset(&E, 0, sizeof(E));
    E.engine = WS_DB_POSTGRES;
    E.dir = harness_tmpdir_new("db");
    cr_assert_not_null(E.dir);
    E.pg_base = getenv("WS_TEST_PG_URL");
    cr_assert(E.pg_base != NULL && E.pg_base[0] != '\0',
              "WS_TEST_PG_URL is not set: run db_test under tests/support/with_pg "
              "(meson test db does)");
    E.admin = pool_open(E.pg_base, NULL, 0, 1);
    snprintf(E.schema, sizeof(E.schema), "t_%d_%ld", (int)getpid(),
             (long)time(NULL) % 100000);
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", E.schema);
    sql_exec(E.admin, sql);
    snprintf(E.url, sizeof(E.url), "%s options='-csearch_path=%s'", E.pg_base, E.schema);
}

static void env_fini(void)
{
    if (E.own != NULL) {
        pg_cluster_destroy(E.own);
        free(E.own);
        E.own = NULL;
    }
    if (E.admin != NULL) {
        char sql[128];
        snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", E.schema);
        sql_exec(E.admin, sql);
        ws_db_close(E.admin);
        E.admin = NULL;
    }
    harness_tmpdir_free(E.dir);
    E.dir = NULL;
}

static int is_pg(void)
{
    return E.engine == WS_DB_POSTGRES;
}

/* Poll cond(ctx) until true or ms pass (never a bare sleep). */
static bool wait_for(bool (*cond)(void *), void *ctx, int ms)
{
    return harness_wait_until(cond, ctx, ms);
}

#define DB_TEST(name)                                                                    \
    static void name##_body(void);                                                       \
    Test(sqlite, name, .init = env_init_sqlite, .fini = env_fini, .timeout = 60)         \
    {                                                                                    \
        name##_body();                                                                   \
    }                                                                                    \
    Test(pg, name, .init = env_init_pg, .fini = env_fini, .timeout = 60)                 \
    {                                                                                    \
        name##_body();                                                                   \
    }                                                                                    \
    static void name##_body(void)

/* ---- opening ---------------------------------------------------------------- */

DB_TEST(opens_by_every_url_form)
{
    ws_db *a = pool_open(E.url, NULL, 0, 2);
    cr_assert_eq(ws_db_engine_of(a), E.engine);
    cr_assert_str_eq(ws_db_url(a), E.url);
    cr_assert_eq(ws_db_check(a, NULL), WS_OK);
    sql_exec(a, "CREATE TABLE f (x INTEGER NOT NULL)");
    sql_exec(a, "INSERT INTO f VALUES (7)");

    char forms[2][1200];
    if (is_pg()) {
        const char *host = getenv("WS_TEST_PG_DIR");
        cr_assert_not_null(host);
        snprintf(
            forms[0], sizeof(forms[0]),
            "postgresql:///postgres?host=%s&user=webshop&options=-csearch_path%%3D%s",
            host, E.schema);
        snprintf(forms[1], sizeof(forms[1]),
                 "postgres://webshop@/postgres?host=%s&options=-csearch_path%%3D%s", host,
                 E.schema);
    } else {
        snprintf(forms[0], sizeof(forms[0]), "%s/test.db", E.dir); /* plain path */
        snprintf(forms[1], sizeof(forms[1]), "sqlite://%s/test.db",
                 E.dir); /* sqlite:///abs */
        cr_assert_eq(strncmp(forms[1], "sqlite:///", 10), 0);
    }
    for (int i = 0; i < 2; i++) {
        ws_db *b = pool_open(forms[i], NULL, 0, 1);
        cr_assert_eq(ws_db_engine_of(b), E.engine, "%s", forms[i]);
        cr_assert_eq(sql_int(b, "SELECT x FROM f"), 7, "%s", forms[i]);
        ws_db_close(b);
    }
    ws_db_close(a);
}

DB_TEST(unreachable_database_is_reported)
{
    char url[600];
    ws_db *db = NULL;
    ws_db_error e = {0};
    if (is_pg()) {
        snprintf(url, sizeof(url), "host=%s/no-such-dir dbname=postgres user=webshop",
                 E.dir);
        cr_assert_eq(pool_try(url, NULL, 0, 1, &db, &e), WS_EUNAVAIL);
        cr_assert_eq(e.engine, WS_DB_POSTGRES);
    } else {
        snprintf(url, sizeof(url), "sqlite:%s/no-such-dir/x.db", E.dir);
        cr_assert_eq(pool_try(url, NULL, 0, 1, &db, &e), WS_EIO);
        cr_assert_eq(e.sqlite_code & 0xff, SQLITE_CANTOPEN);
    }
    cr_assert_null(db);
    cr_assert_gt(strlen(e.message), 0);
}

Test(db, bad_urls_and_options_are_refused, .init = env_init_sqlite, .fini = env_fini)
{
    const char *bad[] = {
        "",
        "   ",
        "mysql://localhost/shop",
        "http://localhost/x",
        "file:x.db",
        "sqlite:",
        "sqlite://host/x.db",
        "host=/tmp nosuchoption=1",
        "postgresql://localhost/shop?nosuchparam=1",
        "postgresql://[::1/shop",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ws_db *db = NULL;
        ws_db_error e = {0};
        cr_assert_eq(pool_try(bad[i], NULL, 0, 1, &db, &e), WS_EINVAL, "url '%s'",
                     bad[i]);
        cr_assert_null(db);
        cr_assert_gt(strlen(e.message), 0, "url '%s' has no message", bad[i]);
    }
    ws_db *db = NULL;
    ws_db_opts o = {.url = E.url, .synchronous = "SOMETIMES"};
    cr_assert_eq(ws_db_open(&o, &db), WS_EINVAL);
    o = (ws_db_opts){.url = E.url, .pool_size = -1};
    cr_assert_eq(ws_db_open(&o, &db), WS_EINVAL);
    cr_assert_eq(ws_db_open(NULL, &db), WS_EINVAL);
    /* :memory: is one database per connection. */
    cr_assert_eq(pool_try("sqlite::memory:", NULL, 0, 4, &db, NULL), WS_EINVAL);
    cr_assert_eq(pool_try("sqlite::memory:", NULL, 0, 1, &db, NULL), WS_OK);
    ws_db_close(db);
    ws_db_close(NULL);
}

Test(db, passwords_are_never_logged, .init = env_init_sqlite, .fini = env_fini)
{
    char out[256];
    cr_assert_str_eq(
        ws_db_url_redact("postgresql://u:pw1@h:5/db?password=pw2&x=1", out, sizeof(out)),
        "postgresql://u:***@h:5/db?password=***&x=1");
    cr_assert_str_eq(
        ws_db_url_redact("host=a password = 'p w\\'x' user=b", out, sizeof(out)),
        "host=a password=*** user=b");
    cr_assert_str_eq(ws_db_url_redact("postgres://u@h/db", out, sizeof(out)),
                     "postgres://u@h/db");
    cr_assert_str_eq(ws_db_url_redact("sqlite:/x/y.db", out, sizeof(out)),
                     "sqlite:/x/y.db");

    /* Capture everything lib/db logs while it fails on URLs with secrets. */
    char logpath[600];
    snprintf(logpath, sizeof(logpath), "%s/stderr.log", E.dir);
    fflush(stderr);
    int saved = dup(2);
    FILE *logf = fopen(logpath, "w");
    cr_assert_not_null(logf);
    dup2(fileno(logf), 2);
    char urls[4][600];
    snprintf(urls[0], 600, "postgresql://u:s3cr3tpw@/db?host=%s/none", E.dir);
    snprintf(urls[1], 600, "host=%s/none user=u password=s3cr3tpw dbname=x", E.dir);
    snprintf(urls[2], 600, "host=/x password='s3cr3tpw x' bogus=1");
    snprintf(urls[3], 600, "postgresql://u@/db?password=s3cr3tpw&bogus=1");
    ws_err got[4];
    ws_db_error errs[4];
    for (int i = 0; i < 4; i++) {
        ws_db *db = NULL;
        memset(&errs[i], 0, sizeof(errs[i]));
        got[i] = pool_try(urls[i], NULL, 0, 1, &db, &errs[i]);
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(logf);
    cr_assert_eq(got[0], WS_EUNAVAIL);
    cr_assert_eq(got[1], WS_EUNAVAIL);
    cr_assert_eq(got[2], WS_EINVAL);
    cr_assert_eq(got[3], WS_EINVAL);
    FILE *f = fopen(logpath, "r");
    cr_assert_not_null(f);
    char line[2048];
    int lines = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lines++;
        cr_assert_null(strstr(line, "s3cr3tpw"), "password logged: %s", line);
    }
    fclose(f);
    cr_assert_geq(lines, 4, "the failures were not logged");
    for (int i = 0; i < 4; i++) {
        cr_assert_null(strstr(errs[i].message, "s3cr3tpw"), "password in error: %s",
                       errs[i].message);
    }
}

/* ---- migrations -------------------------------------------------------------- */

static const ws_db_migration migs[] = {
    {1, "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
     "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL)"},
    {2, "CREATE TABLE log (n INTEGER NOT NULL); INSERT INTO log VALUES (2)",
     "CREATE TABLE log (n integer NOT NULL); INSERT INTO log VALUES (2)"},
    {3, "INSERT INTO log VALUES (3)", "INSERT INTO log VALUES (3)"},
    /* Nothing to do on SQLite. */
    {4, NULL, "ALTER TABLE log ALTER COLUMN n SET DEFAULT 0"},
};
#define NMIGS (sizeof(migs) / sizeof(migs[0]))

static int64_t stored_version(ws_db *db)
{
    return is_pg()
               ? sql_int(db, "SELECT coalesce(max(version), 0) FROM schema_migrations")
               : sql_int(db, "PRAGMA user_version");
}

DB_TEST(migrations_apply_once_and_repeat_as_noop)
{
    ws_db *db = pool_open(E.url, migs, NMIGS, 2);
    cr_assert_eq(ws_db_schema_version(db), 4);
    cr_assert_eq(stored_version(db), 4);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM log"), 2);
    if (is_pg()) {
        cr_assert_eq(sql_int(db, "SELECT count(*) FROM schema_migrations"), 4);
    }
    ws_db_close(db);

    db = pool_open(E.url, migs, NMIGS, 2);
    cr_assert_eq(ws_db_schema_version(db), 4);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM log"), 2, "a migration ran twice");
    ws_db_close(db);
}

DB_TEST(migrations_upgrade_applies_only_the_new_steps)
{
    ws_db *db = pool_open(E.url, migs, 2, 1);
    cr_assert_eq(stored_version(db), 2);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM log"), 1);
    ws_db_close(db);
    db = pool_open(E.url, migs, NMIGS, 1);
    cr_assert_eq(stored_version(db), 4);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM log"), 2);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM log WHERE n = 3"), 1);
    ws_db_close(db);
}

DB_TEST(migrations_refuse_a_database_newer_than_the_code)
{
    ws_db *db = pool_open(E.url, migs, NMIGS, 1);
    ws_db_close(db);
    db = NULL;
    ws_db_error e = {0};
    cr_assert_eq(pool_try(E.url, migs, 2, 1, &db, &e), WS_ESTORE);
    cr_assert_null(db);
    cr_assert_not_null(strstr(e.message, "newer"), "%s", e.message);
    db = pool_open(E.url, migs, NMIGS, 1); /* still fine for the right code */
    ws_db_close(db);
}

DB_TEST(migrations_failure_rolls_back_every_step)
{
    const ws_db_migration bad[] = {
        migs[0],
        {2, "CREATE TABLE zz (a INTEGER); INSERT INTO no_such_table VALUES (1)",
         "CREATE TABLE zz (a integer); INSERT INTO no_such_table VALUES (1)"},
    };
    ws_db *db = NULL;
    ws_db_error e = {0};
    cr_assert_eq(pool_try(E.url, bad, 2, 1, &db, &e), WS_ESTORE);
    cr_assert_gt(strlen(e.message), 0);
    if (is_pg()) {
        cr_assert_str_eq(e.sqlstate, "42P01"); /* undefined_table */
    } else {
        cr_assert_eq(e.sqlite_code, SQLITE_ERROR);
    }
    /* Step 1 ran in the same transaction: nothing of it stayed. */
    db = pool_open(E.url, NULL, 0, 1);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    ws_db_stmt *s = NULL;
    ws_err err = ws_db_prepare(c, "SELECT count(*) FROM items", &s);
    if (err == WS_OK) {
        bool row;
        err = ws_db_step(s, &row);
    }
    cr_assert_eq(err, WS_ESTORE, "table items survived a failed migration");
    ws_db_release(c);
    ws_db_close(db);
    db = pool_open(E.url, migs, 1, 1);
    cr_assert_eq(stored_version(db), 1);
    ws_db_close(db);
}

DB_TEST(migrations_refuse_a_list_out_of_order)
{
    const ws_db_migration gap[] = {{1, "SELECT 1", "SELECT 1"},
                                   {3, "SELECT 1", "SELECT 1"}};
    const ws_db_migration empty[] = {{1, NULL, NULL}};
    ws_db *db = NULL;
    cr_assert_eq(pool_try(E.url, gap, 2, 1, &db, NULL), WS_EINVAL);
    cr_assert_eq(pool_try(E.url, empty, 1, 1, &db, NULL), WS_EINVAL);
    cr_assert_eq(pool_try(E.url, NULL, 1, 1, &db, NULL), WS_EINVAL);
}

typedef struct opener {
    pthread_barrier_t *go;
    ws_err err;
    int version;
} opener;

static void *opener_main(void *arg)
{
    opener *o = arg;
    pthread_barrier_wait(o->go);
    ws_db *db = NULL;
    o->err = pool_try(E.url, migs, NMIGS, 2, &db, NULL);
    o->version = ws_db_schema_version(db);
    ws_db_close(db);
    return NULL;
}

/* Two replicas starting at once: the PostgreSQL advisory lock (SQLite: the
 * write lock of BEGIN IMMEDIATE) lets one migrate and the other see it. */
DB_TEST(migrations_two_openers_at_once_migrate_once)
{
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 3);
    opener o[3] = {{&go, WS_OK, 0}, {&go, WS_OK, 0}, {&go, WS_OK, 0}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(pthread_create(&t[i], NULL, opener_main, &o[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(o[i].err, WS_OK, "opener %d: %s", i, ws_errname(o[i].err));
        cr_assert_eq(o[i].version, 4);
    }
    pthread_barrier_destroy(&go);
    ws_db *db = pool_open(E.url, migs, NMIGS, 1);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM log"), 2, "migrated more than once");
    ws_db_close(db);
}

/* ---- transactions ------------------------------------------------------------ */

static const ws_db_migration counter_migs[] = {
    {1,
     "CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
     "INSERT INTO counter VALUES (1, 0); INSERT INTO counter VALUES (2, 0);"
     "CREATE TABLE kv (k TEXT PRIMARY KEY NOT NULL, v INTEGER NOT NULL CHECK (v >= 0))",
     "CREATE TABLE counter (id integer PRIMARY KEY, n bigint NOT NULL);"
     "INSERT INTO counter VALUES (1, 0); INSERT INTO counter VALUES (2, 0);"
     "CREATE TABLE kv (k text PRIMARY KEY, v integer NOT NULL CHECK (v >= 0))"},
};

typedef struct txn_ctx {
    const char *key;
    int64_t v;
    ws_err ret;     /* what fn returns after its writes */
    int ignore_err; /* fn swallows a statement error */
    int calls;
} txn_ctx;

static ws_err put_fn(ws_db_conn *c, void *arg)
{
    txn_ctx *t = arg;
    t->calls++;
    ws_err err = conn_run(c, "INSERT INTO kv (v, k) VALUES ($1, $2)", t->v, t->key, NULL);
    if (err != WS_OK && !t->ignore_err) {
        return err;
    }
    return t->ret;
}

DB_TEST(txn_commits_and_rolls_back)
{
    ws_db *db = pool_open(E.url, counter_migs, 1, 2);
    txn_ctx t = {.key = "a", .v = 1, .ret = WS_OK};
    cr_assert_eq(ws_db_txn(db, put_fn, &t), WS_OK);
    cr_assert_eq(t.calls, 1);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM kv WHERE k = 'a'"), 1);

    ws_db_error e = {0};
    ws_db_txn_opts o = {.error = &e};
    t = (txn_ctx){.key = "b", .v = 2, .ret = WS_ENOTFOUND};
    cr_assert_eq(ws_db_txn_with(db, &o, put_fn, &t), WS_ENOTFOUND);
    cr_assert_eq(t.calls, 1, "a non-conflict error was retried");
    cr_assert_eq(e.err, WS_ENOTFOUND);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM kv WHERE k = 'b'"), 0);
    ws_db_close(db);
}

/* PostgreSQL aborts a transaction at its first error; lib/db fails it on
 * SQLite too, so code that swallows an error behaves the same on both. */
DB_TEST(txn_with_a_failed_statement_never_commits)
{
    ws_db *db = pool_open(E.url, counter_migs, 1, 1);
    txn_ctx t = {.key = "a", .v = 1, .ret = WS_OK};
    cr_assert_eq(ws_db_txn(db, put_fn, &t), WS_OK);

    ws_db_error e = {0};
    ws_db_txn_opts o = {.error = &e};
    t = (txn_ctx){.key = "a", .v = 5, .ret = WS_OK, .ignore_err = 1};
    cr_assert_eq(ws_db_txn_with(db, &o, put_fn, &t), WS_EEXIST);
    if (is_pg()) {
        cr_assert_str_eq(e.sqlstate, "23505");
    } else {
        cr_assert_eq(e.sqlite_code, SQLITE_CONSTRAINT_PRIMARYKEY);
    }
    cr_assert_gt(strlen(e.message), 0);
    cr_assert_eq(sql_int(db, "SELECT v FROM kv WHERE k = 'a'"), 1);
    ws_db_close(db);
}

static ws_err nested_fn(ws_db_conn *c, void *arg)
{
    ws_db *db = arg;
    txn_ctx t = {.key = "n", .v = 1};
    cr_assert_eq(ws_db_txn(db, put_fn, &t), WS_EINVAL);
    cr_assert_eq(ws_db_conn_txn(c, NULL, put_fn, &t), WS_EINVAL);
    cr_assert_eq(t.calls, 0);
    return WS_OK;
}

DB_TEST(txn_nested_on_the_same_pool_is_refused)
{
    ws_db *db = pool_open(E.url, counter_migs, 1, 2);
    cr_assert_eq(ws_db_txn(db, nested_fn, db), WS_OK);
    ws_db_close(db);
}

/* ---- conflicts and retry ----------------------------------------------------- */

typedef struct bumper {
    ws_db *db;
    int64_t add;
    ws_db_txn_opts opts;
    ws_db_error error;
    atomic_int calls;
    ws_err result;
} bumper;

static ws_err bump_fn(ws_db_conn *c, void *arg)
{
    bumper *b = arg;
    atomic_fetch_add(&b->calls, 1);
    return conn_run(c, "UPDATE counter SET n = n + $1 WHERE id = 1", b->add, NULL, NULL);
}

static void *bumper_main(void *arg)
{
    bumper *b = arg;
    b->opts.error = &b->error;
    b->result = ws_db_txn_with(b->db, &b->opts, bump_fn, b);
    return NULL;
}

static bool bumper_retried(void *arg)
{
    bumper *b = arg;
    ws_db_stats st;
    ws_db_stats_get(b->db, &st);
    return st.txn_retries > 0;
}

static bool pg_someone_waits_on_a_lock(void *arg)
{
    (void)arg;
    return sql_int(E.admin, "SELECT count(*) FROM pg_stat_activity "
                            "WHERE wait_event_type = 'Lock'") > 0;
}

typedef struct holder {
    bumper *other;
    pthread_t thread;
} holder;

/* Holds the row (and on SQLite the write lock) until the other writer has
 * met the conflict: on SQLite BUSY at its BEGIN, on PostgreSQL a wait on
 * the row lock that becomes 40001 when we commit. */
static ws_err hold_fn(ws_db_conn *c, void *arg)
{
    holder *h = arg;
    ws_err err = conn_run(c, "UPDATE counter SET n = n + 1 WHERE id = 1", 0, NULL, NULL);
    cr_assert_eq(err, WS_OK);
    cr_assert_eq(pthread_create(&h->thread, NULL, bumper_main, h->other), 0);
    bool met = is_pg() ? wait_for(pg_someone_waits_on_a_lock, NULL, 10000)
                       : wait_for(bumper_retried, h->other, 10000);
    cr_assert(met, "the other writer never met the conflict");
    return WS_OK;
}

DB_TEST(txn_retries_on_conflict_with_another_writer)
{
    ws_db *a = pool_open(E.url, counter_migs, 1, 1);
    ws_db_opts bo = {
        .url = E.url, .pool_size = 1, .busy_timeout_ms = -1, .txn_retries = 200};
    ws_db *b = NULL;
    cr_assert_eq(ws_db_open(&bo, &b), WS_OK);
    bumper other = {.db = b, .add = 10, .opts = {.isolation = WS_DB_SERIALIZABLE}};
    holder h = {.other = &other};
    cr_assert_eq(ws_db_txn(a, hold_fn, &h), WS_OK);
    pthread_join(h.thread, NULL);
    cr_assert_eq(other.result, WS_OK, "%s: %s", ws_errname(other.result),
                 other.error.message);
    cr_assert_eq(sql_int(a, "SELECT n FROM counter WHERE id = 1"), 11);
    ws_db_stats st;
    ws_db_stats_get(b, &st);
    cr_assert_geq(st.txn_retries, 1);
    if (is_pg()) {
        /* The serialization failure came after fn ran: it ran again. */
        cr_assert_eq(atomic_load(&other.calls), 2);
        cr_assert_eq(st.txn_retries, 1);
    } else {
        /* BUSY came at BEGIN IMMEDIATE, before fn. */
        cr_assert_eq(atomic_load(&other.calls), 1);
    }
    ws_db_close(b);
    ws_db_close(a);
}

typedef struct conflicter {
    ws_db *db;
    int conflicts; /* make the first N attempts conflict */
    int calls;
} conflicter;

/* PostgreSQL, SERIALIZABLE: read, let a second connection commit an update
 * of the same row, then update it: 40001 every time, in one thread. */
static ws_err conflict_fn(ws_db_conn *c, void *arg)
{
    conflicter *k = arg;
    k->calls++;
    (void)conn_int(c, "SELECT n FROM counter WHERE id = 1", 0, 0);
    if (k->calls <= k->conflicts) {
        ws_db_conn *c2 = NULL;
        cr_assert_eq(ws_db_acquire(k->db, &c2), WS_OK);
        cr_assert_eq(
            conn_run(c2, "UPDATE counter SET n = n + 100 WHERE id = 1", 0, NULL, NULL),
            WS_OK);
        ws_db_release(c2);
    }
    return conn_run(c, "UPDATE counter SET n = n + 1 WHERE id = 1", 0, NULL, NULL);
}

/* SQLite: another pool holds the write lock during the whole call. */
static ws_err sqlite_hold_then_try_fn(ws_db_conn *c, void *arg)
{
    conflicter *k = arg;
    cr_assert_eq(conn_run(c, "UPDATE counter SET n = n + 1 WHERE id = 1", 0, NULL, NULL),
                 WS_OK);
    ws_db_error e = {0};
    ws_db_txn_opts o = {.retries = 3, .error = &e};
    bumper bb = {.db = k->db, .add = 5};
    cr_assert_eq(ws_db_txn_with(k->db, &o, bump_fn, &bb), WS_EBUSY);
    cr_assert_eq(e.sqlite_code & 0xff, SQLITE_BUSY);
    cr_assert_eq(atomic_load(&bb.calls), 0);
    return WS_OK;
}

DB_TEST(txn_retry_is_bounded)
{
    ws_db_opts oo = {.url = E.url,
                     .pool_size = 2,
                     .busy_timeout_ms = -1,
                     .migrations = counter_migs,
                     .n_migrations = 1};
    ws_db *db = NULL;
    cr_assert_eq(ws_db_open(&oo, &db), WS_OK);
    ws_db_stats st;
    if (is_pg()) {
        conflicter k = {.db = db, .conflicts = 1};
        ws_db_txn_opts o = {.isolation = WS_DB_SERIALIZABLE};
        cr_assert_eq(ws_db_txn_with(db, &o, conflict_fn, &k), WS_OK);
        cr_assert_eq(k.calls, 2);
        cr_assert_eq(sql_int(db, "SELECT n FROM counter WHERE id = 1"), 101);

        ws_db_error e = {0};
        k = (conflicter){.db = db, .conflicts = 1000};
        o = (ws_db_txn_opts){.isolation = WS_DB_SERIALIZABLE, .retries = 3, .error = &e};
        cr_assert_eq(ws_db_txn_with(db, &o, conflict_fn, &k), WS_EBUSY);
        cr_assert_eq(k.calls, 4, "3 retries = 4 attempts");
        cr_assert_str_eq(e.sqlstate, "40001");
        cr_assert_eq(sql_int(db, "SELECT n FROM counter WHERE id = 1"), 501);
        ws_db_stats_get(db, &st);
        cr_assert_eq(st.txn_retries, 4);

        /* READ COMMITTED (the default) re-reads the row instead. */
        k = (conflicter){.db = db, .conflicts = 1};
        cr_assert_eq(ws_db_txn(db, conflict_fn, &k), WS_OK);
        cr_assert_eq(k.calls, 1);
    } else {
        ws_db_opts bo = {.url = E.url, .pool_size = 1, .busy_timeout_ms = -1};
        ws_db *b = NULL;
        cr_assert_eq(ws_db_open(&bo, &b), WS_OK);
        conflicter k = {.db = b};
        cr_assert_eq(ws_db_txn(db, sqlite_hold_then_try_fn, &k), WS_OK);
        ws_db_stats_get(b, &st);
        cr_assert_eq(st.txn_retries, 3);
        ws_db_close(b);
    }
    ws_db_close(db);
}

typedef struct crosser {
    ws_db *db;
    int first, second;         /* row ids in this order */
    atomic_int *mine, *theirs; /* "I hold my first row" flags */
    int calls;
    ws_err result;
} crosser;

static bool flag_set(void *arg)
{
    return atomic_load((atomic_int *)arg) != 0;
}

static ws_err cross_fn(ws_db_conn *c, void *arg)
{
    crosser *x = arg;
    x->calls++;
    if (ws_db_conn_engine(c) == WS_DB_POSTGRES) {
        ws_err err = ws_db_exec(c, "SET LOCAL deadlock_timeout = '20ms'");
        if (err != WS_OK) {
            return err;
        }
    }
    ws_err err =
        conn_run(c, "UPDATE counter SET n = n + 1 WHERE id = $1", x->first, NULL, NULL);
    if (err != WS_OK) {
        return err;
    }
    atomic_store(x->mine, 1);
    if (ws_db_conn_engine(c) == WS_DB_POSTGRES && x->calls == 1) {
        /* Both hold their first row before either asks for its second. */
        (void)wait_for(flag_set, x->theirs, 5000);
    }
    return conn_run(c, "UPDATE counter SET n = n + 1 WHERE id = $1", x->second, NULL,
                    NULL);
}

static void *crosser_main(void *arg)
{
    crosser *x = arg;
    x->result = ws_db_txn(x->db, cross_fn, x);
    return NULL;
}

/* Two writers taking two rows in opposite orders: PostgreSQL picks one as
 * the deadlock victim (40P01) and ws_db_txn retries it; on SQLite the
 * second writer waits at BEGIN IMMEDIATE, so no deadlock can form. */
DB_TEST(txn_retries_a_deadlock_victim)
{
    ws_db *db = pool_open(E.url, counter_migs, 1, 2);
    atomic_int f1 = 0, f2 = 0;
    crosser x1 = {.db = db, .first = 1, .second = 2, .mine = &f1, .theirs = &f2};
    crosser x2 = {.db = db, .first = 2, .second = 1, .mine = &f2, .theirs = &f1};
    pthread_t t1, t2;
    cr_assert_eq(pthread_create(&t1, NULL, crosser_main, &x1), 0);
    cr_assert_eq(pthread_create(&t2, NULL, crosser_main, &x2), 0);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    cr_assert_eq(x1.result, WS_OK, "%s", ws_errname(x1.result));
    cr_assert_eq(x2.result, WS_OK, "%s", ws_errname(x2.result));
    cr_assert_eq(sql_int(db, "SELECT n FROM counter WHERE id = 1"), 2);
    cr_assert_eq(sql_int(db, "SELECT n FROM counter WHERE id = 2"), 2);
    if (is_pg()) {
        ws_db_stats st;
        ws_db_stats_get(db, &st);
        cr_assert_geq(st.txn_retries, 1, "no deadlock victim was retried");
        cr_assert_eq(x1.calls + x2.calls, 2 + (int)st.txn_retries);
    }
    ws_db_close(db);
}

/* ---- statements that say "someone else was first" ----------------------------- */

static const ws_db_migration rule_migs[] = {
    {1,
     "CREATE TABLE orders (id TEXT PRIMARY KEY, rank INTEGER NOT NULL);"
     "CREATE TABLE firsts (k TEXT PRIMARY KEY, at INTEGER NOT NULL);"
     "CREATE TABLE jobs (id INTEGER PRIMARY KEY, owner TEXT)",
     "CREATE TABLE orders (id text PRIMARY KEY, rank integer NOT NULL);"
     "CREATE TABLE firsts (k text PRIMARY KEY, at bigint NOT NULL);"
     "CREATE TABLE jobs (id integer PRIMARY KEY, owner text)"},
};

DB_TEST(conditional_statement_reports_zero_rows_changed)
{
    ws_db *db = pool_open(E.url, rule_migs, 1, 1);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    int64_t n = -1;
    const char *move = "UPDATE orders SET rank = $1 WHERE id = $2 AND rank < $1";
    cr_assert_eq(
        conn_run(c, "INSERT INTO orders (rank, id) VALUES ($1, $2)", 1, "o1", &n), WS_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(conn_run(c, move, 3, "o1", &n), WS_OK);
    cr_assert_eq(n, 1, "an upward move changed nothing");
    cr_assert_eq(conn_run(c, move, 2, "o1", &n), WS_OK);
    cr_assert_eq(n, 0, "a downward move changed a row");
    cr_assert_eq(conn_run(c, move, 9, "no-such-order", &n), WS_OK);
    cr_assert_eq(n, 0);
    cr_assert_eq(conn_run(c, "SELECT rank FROM orders WHERE rank > $1", 0, NULL, &n),
                 WS_OK);
    cr_assert_eq(n, 0, "a read reported changes");
    cr_assert_eq(conn_run(c, "DELETE FROM orders WHERE rank >= $1", 0, NULL, &n), WS_OK);
    cr_assert_eq(n, 1);
    ws_db_release(c);
    ws_db_close(db);
}

DB_TEST(on_conflict_do_nothing_says_who_was_first)
{
    ws_db *db = pool_open(E.url, rule_migs, 1, 1);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    cr_assert(ws_db_has(c, WS_DB_ON_CONFLICT));
    cr_assert(ws_db_has(c, WS_DB_RETURNING));
    int64_t n = -1;
    const char *first =
        "INSERT INTO firsts (at, k) VALUES ($1, $2) ON CONFLICT DO NOTHING";
    cr_assert_eq(conn_run(c, first, 1, "e1", &n), WS_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(conn_run(c, first, 2, "e1", &n), WS_OK);
    cr_assert_eq(n, 0, "the second insert was not a no-op");
    cr_assert_eq(conn_int(c, "SELECT at FROM firsts WHERE k = 'e1'", 0, 0), 1);

    /* With RETURNING: a row for the first, none for the second. */
    ws_db_stmt *s = NULL;
    const char *ret =
        "INSERT INTO firsts (k, at) VALUES ($2, $1) ON CONFLICT (k) DO NOTHING "
        "RETURNING at";
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(ws_db_prepare(c, ret, &s), WS_OK);
        cr_assert_eq(ws_db_bind_int64(s, 1, 7), WS_OK);
        cr_assert_eq(ws_db_bind_text(s, 2, "e2"), WS_OK);
        bool row = false;
        cr_assert_eq(ws_db_step(s, &row), WS_OK);
        cr_assert_eq(row, i == 0);
        if (row) {
            cr_assert_eq(ws_db_column_int64(s, 0), 7);
            cr_assert_eq(ws_db_step(s, &row), WS_OK);
            cr_assert(!row);
        }
        cr_assert_eq(ws_db_changes(s), i == 0 ? 1 : 0);
    }
    ws_db_release(c);
    ws_db_close(db);
}

typedef struct claim {
    const char *who;
    int64_t ids[8];
    int n;
    ws_db_conn *other; /* claims inside this claim's transaction */
    struct claim *next;
    ws_err other_result;
} claim;

static ws_err claim_fn(ws_db_conn *c, void *arg)
{
    claim *k = arg;
    const char *sql =
        ws_db_dialect(c, "SELECT id FROM jobs WHERE owner IS NULL ORDER BY id LIMIT 3",
                      "SELECT id FROM jobs WHERE owner IS NULL ORDER BY id LIMIT 3 FOR "
                      "UPDATE SKIP LOCKED");
    ws_db_stmt *s = NULL;
    ws_err err = ws_db_prepare(c, sql, &s);
    bool row = true;
    k->n = 0;
    while (err == WS_OK && (err = ws_db_step(s, &row)) == WS_OK && row) {
        k->ids[k->n++] = ws_db_column_int64(s, 0);
    }
    if (err != WS_OK) {
        return err;
    }
    if (k->other != NULL) {
        ws_db_txn_opts o = {.retries = -1};
        k->other_result = ws_db_conn_txn(k->other, &o, claim_fn, k->next);
    }
    for (int i = 0; err == WS_OK && i < k->n; i++) {
        err = conn_run(c, "UPDATE jobs SET owner = $2 WHERE id = $1", k->ids[i], k->who,
                       NULL);
    }
    return err;
}

/* Two claimers at once. PostgreSQL: FOR UPDATE SKIP LOCKED hands them
 * disjoint rows. SQLite has no SKIP LOCKED (ws_db_has says so): the second
 * claimer cannot even begin while the first holds the write lock, and
 * claims the rest after it. */
DB_TEST(skip_locked_claims_disjoint_rows)
{
    ws_db_opts oo = {.url = E.url,
                     .pool_size = 2,
                     .busy_timeout_ms = -1,
                     .migrations = rule_migs,
                     .n_migrations = 1};
    ws_db *db = NULL;
    cr_assert_eq(ws_db_open(&oo, &db), WS_OK);
    sql_exec(db, "INSERT INTO jobs (id) VALUES (1), (2), (3), (4), (5), (6)");
    ws_db_conn *c1 = NULL, *c2 = NULL;
    cr_assert_eq(ws_db_acquire(db, &c1), WS_OK);
    cr_assert_eq(ws_db_acquire(db, &c2), WS_OK);
    cr_assert_eq(ws_db_has(c1, WS_DB_SKIP_LOCKED), is_pg());
    cr_assert_eq(ws_db_has(c1, WS_DB_ADVISORY_LOCKS), is_pg());
    claim b = {.who = "B"};
    claim a = {.who = "A", .other = c2, .next = &b};
    cr_assert_eq(ws_db_conn_txn(c1, NULL, claim_fn, &a), WS_OK);
    cr_assert_eq(a.n, 3);
    cr_assert_eq(a.ids[0], 1);
    if (is_pg()) {
        cr_assert_eq(a.other_result, WS_OK);
    } else {
        cr_assert_eq(a.other_result, WS_EBUSY);
        cr_assert_eq(b.n, 0);
        cr_assert_eq(ws_db_conn_txn(c2, NULL, claim_fn, &b), WS_OK);
    }
    cr_assert_eq(b.n, 3);
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) {
            cr_assert_neq(a.ids[i], b.ids[j], "row %lld claimed twice",
                          (long long)a.ids[i]);
        }
    }
    ws_db_release(c2);
    ws_db_release(c1);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM jobs WHERE owner = 'A'"), 3);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM jobs WHERE owner = 'B'"), 3);
    ws_db_close(db);
}

/* ---- the statement API ------------------------------------------------------- */

static const ws_db_migration val_migs[] = {
    {1, "CREATE TABLE vals (i INTEGER, t TEXT, u TEXT)",
     "CREATE TABLE vals (i bigint, t text, u text)"},
};

DB_TEST(statements_bind_by_position_and_read_columns)
{
    ws_db *db = pool_open(E.url, val_migs, 1, 1);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    cr_assert_eq(ws_db_conn_engine(c), E.engine);
    ws_db_stmt *s = NULL;
    /* $2 before $1, and a literal that looks like a placeholder. */
    const char *ins =
        "INSERT INTO vals (t, i, u) VALUES ($2, $1, '$1 is not a parameter')";
    const int64_t nums[] = {INT64_MIN, -1, 0, INT64_MAX};
    for (int k = 0; k < 4; k++) {
        cr_assert_eq(ws_db_prepare(c, ins, &s), WS_OK);
        cr_assert_eq(ws_db_bind_int64(s, 1, nums[k]), WS_OK);
        cr_assert_eq(ws_db_bind_text(s, 2, k == 0 ? NULL : "it's \"quoted\" \xc3\xa9"),
                     WS_OK);
        cr_assert_eq(ws_db_run(s, NULL), WS_OK);
        cr_assert_eq(ws_db_changes(s), 1);
    }
    ws_db_stats st;
    ws_db_stats_get(db, &st);
    unsigned long prepares = st.prepares;
    cr_assert_eq(ws_db_prepare(c, ins, &s), WS_OK); /* cached */
    ws_db_stats_get(db, &st);
    cr_assert_eq(st.prepares, prepares, "the cache compiled the text again");
    cr_assert_eq(ws_db_bind_int64(s, 3, 1), WS_ERANGE);
    cr_assert_eq(ws_db_bind_int64(s, 0, 1), WS_ERANGE);
    ws_db_reset(s);

    /* $1 used twice; rows in order; NULL and text columns. */
    cr_assert_eq(ws_db_prepare(c,
                               "SELECT i, t, u, i > $1 FROM vals WHERE i >= $1 OR i < $1 "
                               "ORDER BY i",
                               &s),
                 WS_OK);
    cr_assert_eq(ws_db_bind_int64(s, 1, 0), WS_OK);
    bool row = false;
    for (int k = 0; k < 4; k++) {
        cr_assert_eq(ws_db_step(s, &row), WS_OK);
        cr_assert(row);
        cr_assert_eq(ws_db_column_count(s), 4);
        cr_assert_eq(ws_db_column_int64(s, 0), nums[k]);
        cr_assert_eq(ws_db_column_is_null(s, 1), k == 0);
        if (k == 0) {
            cr_assert_null(ws_db_column_text(s, 1));
        } else {
            cr_assert_str_eq(ws_db_column_text(s, 1), "it's \"quoted\" \xc3\xa9");
        }
        cr_assert_str_eq(ws_db_column_text(s, 2), "$1 is not a parameter");
        cr_assert_eq(ws_db_column_int64(s, 3), nums[k] > 0, "boolean column");
        /* Out of range columns. */
        cr_assert_eq(ws_db_column_int64(s, 9), 0);
        cr_assert_null(ws_db_column_text(s, -1));
        cr_assert(ws_db_column_is_null(s, 4));
    }
    cr_assert_eq(ws_db_step(s, &row), WS_OK);
    cr_assert(!row);
    cr_assert_eq(ws_db_step(s, &row), WS_OK);
    cr_assert(!row, "done is sticky until reset");
    cr_assert_eq(ws_db_bind_int64(s, 1, 0), WS_EINVAL, "bind after run without reset");
    ws_db_release(c);
    ws_db_close(db);
}

DB_TEST(statements_that_differ_between_engines_are_refused)
{
    ws_db *db = pool_open(E.url, val_migs, 1, 1);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    ws_db_stmt *s = NULL;
    cr_assert_eq(ws_db_prepare(c, "SELECT i FROM vals WHERE i = ?", &s), WS_EINVAL);
    cr_assert_eq(ws_db_prepare(c, "SELECT 1; SELECT 2", &s), WS_EINVAL);
    cr_assert_eq(ws_db_prepare(c, "SELECT 'unterminated", &s), WS_EINVAL);
    cr_assert_eq(ws_db_prepare(c, "SELECT i FROM vals WHERE i = $0", &s), WS_EINVAL);
    cr_assert_gt(strlen(ws_db_last_error(c)->message), 0);
    /* What is allowed: '?' in a literal, a trailing ';', comments. */
    cr_assert_eq(ws_db_prepare(c, "SELECT '?' -- a ? here\n /* and ; here */ ;", &s),
                 WS_OK);
    cr_assert_eq(
        ws_db_prepare(c, "SELECT \"i\" FROM vals WHERE t = 'a;b' AND i = $1", &s), WS_OK);

    /* The driver's error, code and message kept. */
    cr_assert_eq(ws_db_prepare(c, "SELEC 1", &s), WS_ESTORE);
    const ws_db_error *e = ws_db_last_error(c);
    cr_assert_eq(e->engine, E.engine);
    if (is_pg()) {
        cr_assert_str_eq(e->sqlstate, "42601"); /* syntax_error */
    } else {
        cr_assert_eq(e->sqlite_code, SQLITE_ERROR);
    }
    cr_assert_not_null(strstr(e->message, "SELEC"), "%s", e->message);
    cr_assert_eq(ws_db_prepare(c, "SELECT nope FROM vals", &s), WS_ESTORE);
    ws_db_release(c);
    ws_db_close(db);
}

DB_TEST(constraint_errors_keep_the_driver_code)
{
    ws_db *db = pool_open(E.url, counter_migs, 1, 1);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    const char *put = "INSERT INTO kv (v, k) VALUES ($1, $2)";
    cr_assert_eq(conn_run(c, put, 1, "k", NULL), WS_OK);
    cr_assert_eq(conn_run(c, put, 1, "k", NULL), WS_EEXIST);
    const ws_db_error *e = ws_db_last_error(c);
    cr_assert_eq(e->err, WS_EEXIST);
    if (is_pg()) {
        cr_assert_str_eq(e->sqlstate, "23505");
    } else {
        cr_assert_eq(e->sqlite_code, SQLITE_CONSTRAINT_PRIMARYKEY);
    }
    cr_assert_eq(conn_run(c, put, -1, "neg", NULL), WS_ESTORE, "CHECK is not 'exists'");
    if (is_pg()) {
        cr_assert_str_eq(e->sqlstate, "23514");
    } else {
        cr_assert_eq(e->sqlite_code, SQLITE_CONSTRAINT_CHECK);
    }
    cr_assert_eq(conn_run(c, put, 1, NULL, NULL), WS_ESTORE, "NOT NULL");
    ws_db_release(c);
    ws_db_close(db);
}

/* ---- storage faults ---------------------------------------------------------- */

/* A database that cannot be written gives WS_EIO (the bus keeps the event
 * and retries), with the driver's code; once the fault clears the same
 * connection writes again. SQLite: query_only (SQLITE_READONLY) and a page
 * limit (SQLITE_FULL, what a full disk returns); PostgreSQL: a read-only
 * session (25006, what a standby or a read-only database returns). */
DB_TEST(unwritable_storage_is_eio_until_it_clears)
{
    ws_db *db = pool_open(E.url, val_migs, 1, 1);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    const char *ins = "INSERT INTO vals (i, t) VALUES ($1, $2)";
    cr_assert_eq(ws_db_exec(c, ws_db_dialect(c, "PRAGMA query_only = ON",
                                             "SET default_transaction_read_only = on")),
                 WS_OK);
    cr_assert_eq(conn_run(c, ins, 1, "x", NULL), WS_EIO);
    if (is_pg()) {
        cr_assert_str_eq(ws_db_last_error(c)->sqlstate, "25006");
    } else {
        cr_assert_eq(ws_db_last_error(c)->sqlite_code & 0xff, SQLITE_READONLY);
    }
    cr_assert_eq(ws_db_exec(c, ws_db_dialect(c, "PRAGMA query_only = OFF",
                                             "SET default_transaction_read_only = off")),
                 WS_OK);
    cr_assert_eq(conn_run(c, ins, 1, "x", NULL), WS_OK);

    if (!is_pg()) {
        char big[8192];
        memset(big, 'b', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        int64_t pages = conn_int(c, "PRAGMA page_count", 0, 0);
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld", (long long)pages + 2);
        cr_assert_eq(ws_db_exec(c, sql), WS_OK);
        ws_err err = WS_OK;
        for (int i = 0; i < 100 && err == WS_OK; i++) {
            err = conn_run(c, ins, i, big, NULL);
        }
        cr_assert_eq(err, WS_EIO);
        cr_assert_eq(ws_db_last_error(c)->sqlite_code & 0xff, SQLITE_FULL);
        cr_assert_eq(ws_db_exec(c, "PRAGMA max_page_count = 1000000"), WS_OK);
        cr_assert_eq(conn_run(c, ins, 1, big, NULL), WS_OK);
    }
    ws_db_release(c);
    ws_db_close(db);
}

static ws_err read_fn(ws_db_conn *c, void *arg)
{
    *(int64_t *)arg = conn_int(c, "SELECT count(*) FROM counter", 0, 0);
    return WS_OK;
}

static ws_err write_in_read_fn(ws_db_conn *c, void *arg)
{
    (void)arg;
    return conn_run(c, "UPDATE counter SET n = 5", 0, NULL, NULL);
}

typedef struct reader_ctx {
    ws_db *other;
    bool one_statement; /* the read runs as ws_db_txn_opts.one_statement */
    ws_err result;
    int64_t rows;
} reader_ctx;

/* Inside a writing transaction: a read-only read on r->other. */
static ws_err hold_and_read_fn(ws_db_conn *c, void *arg)
{
    reader_ctx *r = arg;
    cr_assert_eq(conn_run(c, "UPDATE counter SET n = 9 WHERE id = 1", 0, NULL, NULL),
                 WS_OK);
    ws_db_txn_opts o = {
        .read_only = true, .one_statement = r->one_statement, .retries = -1};
    r->result = ws_db_txn_with(r->other, &o, read_fn, &r->rows);
    return WS_OK;
}

/* A read-only transaction takes no write lock (SQLite readers do not queue
 * behind a writer), and a write inside it is refused as a bug (WS_EINVAL)
 * on both engines. */
DB_TEST(read_only_txn_reads_beside_a_writer_and_cannot_write)
{
    ws_db *a = pool_open(E.url, counter_migs, 1, 1);
    ws_db_opts bo = {.url = E.url, .pool_size = 1, .busy_timeout_ms = -1};
    ws_db *b = NULL;
    cr_assert_eq(ws_db_open(&bo, &b), WS_OK);
    reader_ctx r = {.other = b, .rows = -1};
    cr_assert_eq(ws_db_txn(a, hold_and_read_fn, &r), WS_OK);
    cr_assert_eq(r.result, WS_OK, "the reader waited for the writer: %s",
                 ws_errname(r.result));
    cr_assert_eq(r.rows, 2);

    ws_db_txn_opts o = {.read_only = true};
    cr_assert_eq(ws_db_txn_with(b, &o, write_in_read_fn, NULL), WS_EINVAL);
    cr_assert_eq(sql_int(a, "SELECT n FROM counter WHERE id = 2"), 0);
    /* The connection is a normal writer again afterwards. */
    cr_assert_eq(ws_db_txn(b, write_in_read_fn, NULL), WS_OK);
    cr_assert_eq(sql_int(b, "SELECT n FROM counter WHERE id = 2"), 5);
    ws_db_close(b);
    ws_db_close(a);
}

static ws_err bad_read_fn(ws_db_conn *c, void *arg)
{
    (void)arg;
    return conn_run(c, "SELECT nope FROM counter", 0, NULL, NULL);
}

/* A one-statement read (no BEGIN, no COMMIT) reads beside a writer and
 * sees the last commit; a failing statement fails it, and the connection
 * works afterwards, for a transaction and for another bare read. */
DB_TEST(one_statement_read_runs_outside_a_transaction)
{
    ws_db *a = pool_open(E.url, counter_migs, 1, 1);
    ws_db_opts bo = {.url = E.url, .pool_size = 1, .busy_timeout_ms = -1};
    ws_db *b = NULL;
    cr_assert_eq(ws_db_open(&bo, &b), WS_OK);
    reader_ctx r = {.other = b, .one_statement = true, .rows = -1};
    cr_assert_eq(ws_db_txn(a, hold_and_read_fn, &r), WS_OK);
    cr_assert_eq(r.result, WS_OK, "the bare reader failed: %s", ws_errname(r.result));
    cr_assert_eq(r.rows, 2);

    ws_db_txn_opts o = {.read_only = true, .one_statement = true};
    cr_assert_neq(ws_db_txn_with(b, &o, bad_read_fn, NULL), WS_OK);
    int64_t rows = -1;
    cr_assert_eq(ws_db_txn_with(b, &o, read_fn, &rows), WS_OK);
    cr_assert_eq(rows, 2);
    cr_assert_eq(ws_db_txn(b, write_in_read_fn, NULL), WS_OK);
    cr_assert_eq(sql_int(a, "SELECT n FROM counter WHERE id = 2"), 5);
    ws_db_close(b);
    ws_db_close(a);
}

typedef struct loss_ctx {
    pg_cluster *cluster;
    int calls;
} loss_ctx;

/* The server dies in the middle of the transaction. */
static ws_err die_midway_fn(ws_db_conn *c, void *arg)
{
    loss_ctx *l = arg;
    l->calls++;
    cr_assert_eq(conn_run(c, "INSERT INTO kv (v, k) VALUES ($1, $2)", 2, "lost", NULL),
                 WS_OK);
    cr_assert_eq(pg_cluster_stop(l->cluster, 1), 0);
    return conn_run(c, "INSERT INTO kv (v, k) VALUES ($1, $2)", 3, "lost2", NULL);
}

static bool db_ready(void *arg)
{
    return ws_db_check(arg, NULL) == WS_OK;
}

/* PostgreSQL: the cluster is stopped with an immediate shutdown (what
 * `pg_ctl -m immediate` sends) in the middle of a transaction; lib/db says
 * WS_EUNAVAIL (txn, check, acquire) while it is down, and once it is back
 * every connection of the same pool works again, without reopening it.
 * SQLite has no server: its counterpart is the page-limit fault above, run
 * here through ws_db_txn. */
static void pg_connection_loss(void)
{
    E.own = calloc(1, sizeof(*E.own));
    cr_assert_not_null(E.own);
    pg_cluster *cl = E.own;
    long long t0 = harness_now_ms();
    cr_assert_eq(pg_cluster_up(cl), 0);
    cr_log_info("private cluster: initdb %lld ms, start %lld ms (total %lld ms)",
                cl->init_ms, cl->start_ms, harness_now_ms() - t0);
    ws_db *db = pool_open(cl->url, counter_migs, 1, 3);
    txn_ctx t = {.key = "before", .v = 1};
    cr_assert_eq(ws_db_txn(db, put_fn, &t), WS_OK);

    loss_ctx l = {.cluster = cl};
    ws_db_error e = {0};
    ws_db_txn_opts o = {.error = &e};
    ws_err err = ws_db_txn_with(db, &o, die_midway_fn, &l);
    cr_assert_eq(err, WS_EUNAVAIL, "%s: %s %s", ws_errname(err), e.sqlstate, e.message);
    cr_assert_eq(l.calls, 1, "a lost connection was retried blindly");
    cr_assert_eq(e.err, WS_EUNAVAIL);
    cr_log_info("immediate stop: %lld ms; lost: %s", cl->stop_ms, e.message);
    for (int i = 0; i < 5; i++) {
        ws_db_error why = {0};
        cr_assert_eq(ws_db_check(db, &why), WS_EUNAVAIL);
        cr_assert_eq(why.err, WS_EUNAVAIL);
        cr_assert_gt(strlen(why.message), 0);
        e = (ws_db_error){0};
        cr_assert_eq(ws_db_txn_with(db, &o, put_fn, &t), WS_EUNAVAIL);
        cr_assert_eq(e.err, WS_EUNAVAIL);
    }
    long long t1 = harness_now_ms();
    cr_assert_eq(pg_cluster_start(cl), 0);
    cr_assert(wait_for(db_ready, db, 15000), "the pool did not recover");
    cr_log_info("restart %lld ms; pool ready %lld ms after the start began", cl->start_ms,
                harness_now_ms() - t1);
    /* Every connection, not just one. */
    ws_db_conn *c[3];
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(ws_db_acquire(db, &c[i]), WS_OK);
        cr_assert_eq(conn_int(c[i], "SELECT count(*) FROM kv", 0, 0), 1);
    }
    for (int i = 0; i < 3; i++) {
        ws_db_release(c[i]);
    }
    t = (txn_ctx){.key = "after", .v = 1};
    cr_assert_eq(ws_db_txn(db, put_fn, &t), WS_OK);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM kv WHERE k LIKE 'lost%'"), 0);
    ws_db_stats st;
    ws_db_stats_get(db, &st);
    cr_assert_geq(st.reconnects, 3);
    ws_db_close(db);
    /* env_fini stops and removes the cluster, also when an assert failed. */
}

static ws_err fill_fn(ws_db_conn *c, void *arg)
{
    const char *big = arg;
    ws_err err = WS_OK;
    for (int i = 0; i < 100 && err == WS_OK; i++) {
        err = conn_run(c, "INSERT INTO vals (i, t) VALUES ($1, $2)", i, big, NULL);
    }
    return err;
}

static void sqlite_full_then_freed(void)
{
    ws_db *db = pool_open(E.url, val_migs, 1, 1);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    int64_t pages = conn_int(c, "PRAGMA page_count", 0, 0);
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %lld", (long long)pages + 4);
    cr_assert_eq(ws_db_exec(c, sql), WS_OK);
    ws_db_release(c);
    static char big[8192];
    memset(big, 'b', sizeof(big) - 1);
    ws_db_error e = {0};
    ws_db_txn_opts o = {.error = &e};
    cr_assert_eq(ws_db_txn_with(db, &o, fill_fn, big), WS_EIO);
    cr_assert_eq(e.sqlite_code & 0xff, SQLITE_FULL);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM vals"), 0, "a failed txn left rows");
    sql_exec(db, "PRAGMA max_page_count = 1000000");
    cr_assert_eq(ws_db_txn(db, fill_fn, big), WS_OK);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM vals"), 100);
    ws_db_close(db);
}

DB_TEST(storage_lost_then_back_without_reopening_the_pool)
{
    if (is_pg()) {
        pg_connection_loss();
    } else {
        sqlite_full_then_freed();
    }
}

/* ---- the pool ---------------------------------------------------------------- */

DB_TEST(pool_hands_each_connection_to_one_holder)
{
    ws_db_opts o = {.url = E.url, .pool_size = 2, .acquire_timeout_ms = 50};
    ws_db *db = NULL;
    cr_assert_eq(ws_db_open(&o, &db), WS_OK);
    ws_db_conn *c1 = NULL, *c2 = NULL, *c3 = NULL;
    cr_assert_eq(ws_db_acquire(db, &c1), WS_OK);
    cr_assert_eq(ws_db_acquire(db, &c2), WS_OK);
    cr_assert_neq(c1, c2);
    long long t0 = harness_now_ms();
    cr_assert_eq(ws_db_acquire(db, &c3), WS_ETIMEDOUT);
    cr_assert_geq(harness_now_ms() - t0, 40);
    cr_assert_eq(ws_db_txn(db, write_in_read_fn, NULL), WS_ETIMEDOUT);
    ws_db_release(c2);
    cr_assert_eq(ws_db_acquire(db, &c3), WS_OK);
    cr_assert_eq(c3, c2);
    ws_db_release(c3);
    ws_db_release(c1);
    ws_db_release(NULL);
    ws_db_close(db);
}

typedef struct worker {
    ws_db *db;
    int n;
    int failures;
    ws_err last;
} worker;

static ws_err incr_fn(ws_db_conn *c, void *arg)
{
    (void)arg;
    return conn_run(c, "UPDATE counter SET n = n + 1 WHERE id = 1", 0, NULL, NULL);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (int i = 0; i < w->n; i++) {
        ws_err err = ws_db_txn(w->db, incr_fn, NULL);
        if (err != WS_OK) {
            w->failures++;
            w->last = err;
        }
    }
    return NULL;
}

/* Four threads on a pool of two: every increment lands exactly once. */
DB_TEST(pool_serves_many_threads)
{
    ws_db *db = pool_open(E.url, counter_migs, 1, 2);
    worker w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){.db = db, .n = 50};
        cr_assert_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(w[i].failures, 0, "thread %d: %s", i, ws_errname(w[i].last));
    }
    cr_assert_eq(sql_int(db, "SELECT n FROM counter WHERE id = 1"), 200);
    ws_db_close(db);
}

/* ---- blobs, groups, faults, checkpoint, the check before start ----------- */

static const ws_db_migration blob_migs[] = {
    {1, "CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB);",
     "CREATE TABLE b(id BIGINT PRIMARY KEY, v BYTEA);"},
};

DB_TEST(blobs_round_trip_every_byte)
{
    ws_db *db = pool_open(E.url, blob_migs, 1, 1);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    unsigned char all[256];
    for (int i = 0; i < 256; i++) {
        all[i] = (unsigned char)(255 - i);
    }
    ws_db_stmt *s = NULL;
    for (int id = 1; id <= 3; id++) {
        cr_assert_eq(ws_db_prepare(c, "INSERT INTO b(id, v) VALUES ($1, $2)", &s), WS_OK);
        cr_assert_eq(ws_db_bind_int64(s, 1, id), WS_OK);
        if (id == 3) {
            cr_assert_eq(ws_db_bind_null(s, 2), WS_OK);
        } else {
            cr_assert_eq(ws_db_bind_blob(s, 2, all, id == 1 ? sizeof(all) : 0), WS_OK);
        }
        cr_assert_eq(ws_db_run(s, NULL), WS_OK, "%s", ws_db_last_error(c)->message);
    }
    cr_assert_eq(ws_db_prepare(c, "SELECT v, v FROM b ORDER BY id", &s), WS_OK);
    bool row = false;
    size_t len = 99, len2 = 99;
    cr_assert_eq(ws_db_step(s, &row), WS_OK);
    cr_assert(row);
    const void *v = ws_db_column_blob(s, 0, &len);
    const void *v2 = ws_db_column_blob(s, 1, &len2);
    cr_assert_eq(len, sizeof(all));
    cr_assert_eq(len2, sizeof(all));
    cr_assert(memcmp(v, all, sizeof(all)) == 0 && memcmp(v2, all, sizeof(all)) == 0);
    cr_assert_eq(ws_db_step(s, &row), WS_OK);
    v = ws_db_column_blob(s, 0, &len);
    cr_assert(v != NULL && len == 0, "an empty blob is not NULL");
    cr_assert_eq(ws_db_step(s, &row), WS_OK);
    cr_assert_null(ws_db_column_blob(s, 0, &len));
    cr_assert_eq(len, 0);
    ws_db_reset(s);
    ws_db_release(c);
    ws_db_close(db);
}

static const ws_db_migration kv_migs[] = {
    {1, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER NOT NULL CHECK (v >= 0));",
     "CREATE TABLE kv(k BIGINT PRIMARY KEY, v BIGINT NOT NULL CHECK (v >= 0));"},
};

typedef struct kv_put {
    int64_t k, v;
} kv_put;

static ws_err kv_put_fn(ws_db_conn *c, void *arg)
{
    kv_put *p = arg;
    ws_db_stmt *s = NULL;
    ws_err err = ws_db_prepare(c, "INSERT INTO kv(k, v) VALUES ($1, $2)", &s);
    if (err == WS_OK) {
        err = ws_db_bind_int64(s, 1, p->k);
    }
    if (err == WS_OK) {
        err = ws_db_bind_int64(s, 2, p->v);
    }
    return err == WS_OK ? ws_db_run(s, NULL) : err;
}

DB_TEST(group_commits_its_savepoints_and_skips_the_failed_one)
{
    ws_db *db = pool_open(E.url, kv_migs, 1, 2);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    cr_assert_eq(ws_db_group_end(c), WS_EINVAL);
    cr_assert_eq(ws_db_group_begin(c), WS_OK);
    cr_assert(ws_db_in_group(c));
    cr_assert_eq(ws_db_group_begin(c), WS_EINVAL);
    kv_put a = {1, 10}, bad = {2, -1}, dup = {1, 11}, b = {3, 30};
    cr_assert_eq(ws_db_conn_txn(c, NULL, kv_put_fn, &a), WS_OK);
    cr_assert_neq(ws_db_conn_txn(c, NULL, kv_put_fn, &bad), WS_OK);
    cr_assert_eq(ws_db_conn_txn(c, NULL, kv_put_fn, &dup), WS_EEXIST);
    cr_assert_eq(ws_db_conn_txn(c, NULL, kv_put_fn, &b), WS_OK);
    /* Another transaction on the same pool from inside the group would
     * wait for the group's own lock: refused. */
    cr_assert_eq(ws_db_txn(db, kv_put_fn, &b), WS_EINVAL);
    cr_assert_eq(ws_db_group_end(c), WS_OK);
    cr_assert(!ws_db_in_group(c));
    cr_assert_eq(conn_int(c, "SELECT count(*) FROM kv", 0, 0), 2);
    cr_assert_eq(conn_int(c, "SELECT v FROM kv WHERE k = $1", 1, 1), 10);
    /* A group left open at release is rolled back. */
    kv_put d = {4, 40};
    cr_assert_eq(ws_db_group_begin(c), WS_OK);
    cr_assert_eq(ws_db_conn_txn(c, NULL, kv_put_fn, &d), WS_OK);
    ws_db_release(c);
    cr_assert_eq(sql_int(db, "SELECT count(*) FROM kv"), 2);
    cr_assert_eq(ws_db_txn(db, kv_put_fn, &d), WS_OK,
                 "the thread may use the pool again");
    ws_db_close(db);
}

DB_TEST(check_url_reads_the_version_and_refuses_a_newer_one)
{
    char detail[256];
    ws_db *db = pool_open(E.url, kv_migs, 1, 1);
    ws_db_close(db);
    cr_assert_eq(ws_db_check_url(E.url, 1, 1000, detail, sizeof(detail)), WS_OK, "%s",
                 detail);
    cr_assert_eq(ws_db_check_url(E.url, -1, 0, detail, sizeof(detail)), WS_OK);
    cr_assert_eq(ws_db_check_url(E.url, 0, 1000, detail, sizeof(detail)), WS_ESTORE);
    cr_assert(strstr(detail, "newer") != NULL, "%s", detail);
    cr_assert_eq(ws_db_check_url("nosuch:x", 1, 0, detail, sizeof(detail)), WS_EINVAL);
}

Test(sqlite, check_url_refuses_a_damaged_file, .init = env_init_sqlite, .fini = env_fini)
{
    char detail[256], path[1100];
    ws_db *db = pool_open(E.url, kv_migs, 1, 1);
    for (int i = 0; i < 2000; i++) {
        kv_put p = {i, i};
        cr_assert_eq(ws_db_txn(db, kv_put_fn, &p), WS_OK);
    }
    cr_assert_eq(ws_db_checkpoint(db, true), WS_OK);
    ws_db_close(db);
    snprintf(path, sizeof(path), "%s/test.db", E.dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(truncate(path, st.st_size / 2), 0);
    ws_err err = ws_db_check_url(E.url, 1, 5000, detail, sizeof(detail));
    cr_assert_eq(err, WS_ESTORE, "%s: %s", ws_errname(err), detail);
    cr_assert(detail[0] != '\0');
}

Test(sqlite, checkpoint_truncates_the_wal, .init = env_init_sqlite, .fini = env_fini)
{
    char wal[1100];
    ws_db *db = pool_open(E.url, kv_migs, 1, 2);
    for (int i = 0; i < 200; i++) {
        kv_put p = {i, i};
        cr_assert_eq(ws_db_txn(db, kv_put_fn, &p), WS_OK);
    }
    snprintf(wal, sizeof(wal), "%s/test.db-wal", E.dir);
    struct stat st;
    cr_assert_eq(stat(wal, &st), 0);
    cr_assert_gt(st.st_size, 0);
    cr_assert_eq(ws_db_checkpoint(db, true), WS_OK);
    cr_assert_eq(stat(wal, &st), 0);
    cr_assert_eq(st.st_size, 0, "WAL is %lld bytes", (long long)st.st_size);
    ws_db_close(db);
}

static double failing_gauge(void)
{
    return ws_gauge_value(
        ws_gauge_get(ws_metrics_default(), "webshop_db_commit_failing", "", NULL));
}

static ws_err kv_put_expect_err(ws_db_conn *c, void *arg)
{
    ws_err err = kv_put_fn(c, arg);
    return err == WS_OK ? WS_EINVAL : err;
}

/* A write the database refuses (query_only stands in for a read-only file:
 * both give SQLITE_READONLY) marks the pool failing, with the reason, until
 * a transaction of that connection commits again; a constraint does not. */
Test(sqlite, failing_says_why_until_a_commit_succeeds, .init = env_init_sqlite,
     .fini = env_fini)
{
    ws_db *db = pool_open(E.url, kv_migs, 1, 1);
    char why[128] = "";
    double g0 = failing_gauge();
    cr_assert(!ws_db_failing(db, why, sizeof(why)));
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    cr_assert_eq(ws_db_exec(c, "PRAGMA query_only = 1"), WS_OK);
    kv_put p = {1, 1};
    cr_assert_eq(ws_db_conn_txn(c, NULL, kv_put_expect_err, &p), WS_EIO);
    cr_assert(ws_db_failing(db, why, sizeof(why)));
    cr_expect_str_eq(why, "database is read-only");
    cr_expect_eq(failing_gauge(), g0 + 1);
    cr_assert_eq(ws_db_exec(c, "PRAGMA query_only = 0"), WS_OK);
    cr_assert_eq(ws_db_conn_txn(c, NULL, kv_put_fn, &p), WS_OK);
    cr_expect(!ws_db_failing(db, NULL, 0));
    cr_expect_eq(failing_gauge(), g0);
    /* A constraint is the program's business, not a fault of the storage. */
    cr_assert_eq(ws_db_conn_txn(c, NULL, kv_put_expect_err, &p), WS_EEXIST);
    cr_expect(!ws_db_failing(db, NULL, 0));
    /* In a group: the group cannot commit what it holds. */
    cr_assert_eq(ws_db_group_begin(c), WS_OK);
    cr_assert_eq(ws_db_exec(c, "PRAGMA query_only = 1"), WS_OK);
    kv_put q = {2, 2};
    cr_assert_eq(ws_db_conn_txn(c, NULL, kv_put_expect_err, &q), WS_EIO);
    cr_assert(ws_db_failing(db, why, sizeof(why)));
    cr_assert_eq(ws_db_group_end(c), WS_OK, "an empty group commits");
    cr_assert_eq(ws_db_conn_txn(c, NULL, kv_put_expect_err, &q), WS_EIO);
    cr_expect_eq(failing_gauge(), g0 + 1);
    ws_db_release(c);
    /* A failing connection that closes no longer counts. */
    ws_db_close(db);
    cr_expect_eq(failing_gauge(), g0);
    cr_expect(!ws_db_failing(NULL, NULL, 0));
}

Test(sqlite, check_passes_a_missing_file_and_gives_no_verdict_out_of_budget,
     .init = env_init_sqlite, .fini = env_fini)
{
    char detail[256];
    cr_assert_eq(ws_db_check_url(E.url, 1, 1000, detail, sizeof(detail)), WS_OK, "%s",
                 detail);
    ws_db *db = pool_open(E.url, kv_migs, 1, 1);
    ws_db_conn *c = NULL;
    cr_assert_eq(ws_db_acquire(db, &c), WS_OK);
    cr_assert_eq(ws_db_exec(c, "CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);"
                               "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
                               "FROM n WHERE i < 20000) INSERT INTO big(b) SELECT "
                               "randomblob(1000) FROM n"),
                 WS_OK);
    ws_db_release(c);
    ws_db_close(db);
    ws_err err = ws_db_check_url(E.url, 1, 1, detail, sizeof(detail));
    cr_expect_eq(err, WS_ETIMEDOUT, "%s: %s", ws_errname(err), detail);
}

Test(pg, check_of_an_unreachable_server_says_unavailable, .init = env_init_pg,
     .fini = env_fini)
{
    char detail[256], url[1200];
    snprintf(url, sizeof(url), "host=%s/nosuch dbname=x connect_timeout=2", E.dir);
    ws_err err = ws_db_check_url(url, 1, 0, detail, sizeof(detail));
    cr_assert_eq(err, WS_EUNAVAIL, "%s: %s", ws_errname(err), detail);
    cr_assert(detail[0] != '\0');
}

/* ---- the seam ---------------------------------------------------------------- */

/* A driver call: "sqlite3_" or "PQ" + a lower-case letter, not inside a
 * longer identifier. */
static int has_driver_call(const char *text)
{
    for (const char *p = text; *p; p++) {
        int start = p == text ||
                    !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z') ||
                      (p[-1] >= 'A' && p[-1] <= 'Z') || (p[-1] >= '0' && p[-1] <= '9'));
        if (start && (strncmp(p, "sqlite3_", 8) == 0 ||
                      (p[0] == 'P' && p[1] == 'Q' && p[2] >= 'a' && p[2] <= 'z'))) {
            return 1;
        }
    }
    return 0;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Check every .c/.h under root/rel (recursively, lib/db/ skipped); the
 * number of files checked. */
static int seam_check_dir(const char *root, const char *rel)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    struct dirent *de;
    int checked = 0;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        char sub[1024], path[2100];
        snprintf(sub, sizeof(sub), "%s%s%s", rel, rel[0] ? "/" : "", name);
        snprintf(path, sizeof(path), "%s/%s", root, sub);
        struct stat st;
        if (name[0] == '.' || stat(path, &st) != 0) {
            continue;
        }
        if (S_ISDIR(st.st_mode)) {
            checked += strcmp(sub, "db") == 0 ? 0 : seam_check_dir(root, sub);
            continue;
        }
        size_t len = strlen(name);
        if (len < 3 ||
            (strcmp(name + len - 2, ".c") != 0 && strcmp(name + len - 2, ".h") != 0) ||
            strcmp(sub, "db.c") == 0 || strcmp(sub, "db.h") == 0) {
            continue;
        }
        char *text = slurp(path);
        cr_expect(!has_driver_call(text), "%s/%s calls sqlite3_* or PQ* outside lib/db",
                  root, sub);
        free(text);
        checked++;
    }
    closedir(d);
    return checked;
}

/* The seam: no sqlite3_* or PQ* call anywhere in the runtime, the services
 * or the tools, except lib/db itself (db.c, db.h, db/). The services reach
 * their databases through their ports only (order_seam and inventory's own
 * check keep the SQL inside the adapters). */
Test(seam, no_driver_calls_outside_lib_db)
{
    cr_assert(has_driver_call("x = PQexec(c);"));
    cr_assert(has_driver_call("sqlite3_step(s)"));
    cr_assert(!has_driver_call("MY_PQexec mysqlite3_x WS_PQ"));
    cr_assert_gt(seam_check_dir(WS_SOURCE_ROOT "/lib", ""), 20);
    cr_assert_gt(seam_check_dir(WS_SOURCE_ROOT "/inventory", ""), 10);
    cr_assert_gt(seam_check_dir(WS_SOURCE_ROOT "/order", ""), 10);
    cr_assert_gt(seam_check_dir(WS_SOURCE_ROOT "/front", ""), 10);
    cr_assert_gt(seam_check_dir(WS_SOURCE_ROOT "/tools", ""), 10);
}
