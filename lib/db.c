/*
 * lib/db's neutral layer (see db.h): the pool, the per-connection statement
 * cache, transactions with bounded jittered retry, reconnect backoff,
 * migrations, and the dispatch of the statement API to the engine in
 * lib/db/ (db_sqlite.c, db_pg.c: a module loaded on first use, see
 * db_module.c) through its ops table (db/db_int.h). The
 * rules that both engines must agree on live here once: the placeholder
 * form, "a failed statement fails its transaction", what is retried, and
 * how a lost connection is found again.
 */
#include "db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "clock.h"
#include "db/db_int.h"
#include "log.h"
#include "metrics.h"

#define DB_DEFAULT_POOL       4
#define DB_DEFAULT_ACQUIRE_MS 5000
#define DB_DEFAULT_RETRIES    10
#define DB_DEFAULT_BUSY_MS    5000
#define DB_DEFAULT_CONNECT_S  5
#define DB_BACKOFF_MIN_US     100
#define DB_BACKOFF_MAX_US     20000
#define DB_RESET_MIN_MS       50
#define DB_RESET_MAX_MS       2000
#define DB_CACHE_MIN          32

/* The pool whose ws_db_txn is running fn on this thread, to refuse a
 * nested ws_db_txn that could wait for a connection this thread holds. */
static _Thread_local const ws_db *db_txn_owner;

static const char *const db_sync_names[] = {"OFF", "NORMAL", "FULL", "EXTRA"};

long long ws__db_now_ms(void)
{
    return ws_clock_mono_ms();
}

const char *ws_db_engine_name(ws_db_engine engine)
{
    switch (engine) {
    case WS_DB_SQLITE:
        return "sqlite";
    case WS_DB_POSTGRES:
        return "postgresql";
    default:
        return "?";
    }
}

void ws__db_error_set(ws_db_error *e, ws_db_engine engine, ws_err err, int sqlite_code,
                      const char *sqlstate, const char *msg)
{
    if (e == NULL) {
        return;
    }
    e->err = err;
    e->engine = engine;
    e->sqlite_code = sqlite_code;
    snprintf(e->sqlstate, sizeof(e->sqlstate), "%s", sqlstate ? sqlstate : "");
    snprintf(e->message, sizeof(e->message), "%s", msg ? msg : ws_strerror(err));
    /* Drivers end messages with a newline; a log field need not. */
    size_t n = strlen(e->message);
    while (n > 0 && (e->message[n - 1] == '\n' || e->message[n - 1] == ' ')) {
        e->message[--n] = '\0';
    }
}

ws_err ws__db_fail(ws_db_conn *c, ws_err err, int sqlite_code, const char *sqlstate,
                   const char *msg)
{
    ws__db_error_set(&c->err, c->pool->ops->engine, err, sqlite_code, sqlstate, msg);
    if (c->in_txn && c->txn_err == WS_OK) {
        c->txn_err = err;
    }
    if (err == WS_EUNAVAIL) {
        /* Only a connection that was current when it failed announces a
         * loss: the failures of stale ones (being revived) do not, so one
         * outage is one epoch and a revived connection stays current. */
        unsigned long mine = c->epoch;
        atomic_compare_exchange_strong(&c->pool->epoch, &mine, mine + 1);
    }
    return err;
}

static void db_log_error(const char *event, const ws_db_conn *c)
{
    const ws_db_error *e = &c->err;
    ws_log_error(event, "engine=%s url=%s err=%s code=%d sqlstate=%s msg=%s",
                 ws_db_engine_name(e->engine), c->pool->url_safe, ws_errname(e->err),
                 e->sqlite_code, e->sqlstate, e->message);
}

/* ---- statement cache ------------------------------------------------------ */

/* FNV-1a over the SQL text. */
static uint32_t db_sql_hash(const char *sql)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}

static ws_err db_cache_grow(ws_db_conn *c)
{
    size_t n = c->nbuckets ? c->nbuckets * 2 : DB_CACHE_MIN;
    ws_db_stmt **b = calloc(n, sizeof(*b));
    if (b == NULL) {
        return WS_ENOMEM;
    }
    for (size_t i = 0; i < c->nbuckets; i++) {
        ws_db_stmt *s = c->buckets[i];
        while (s != NULL) {
            ws_db_stmt *next = s->next;
            s->next = b[s->hash & (n - 1)];
            b[s->hash & (n - 1)] = s;
            s = next;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->nbuckets = n;
    return WS_OK;
}

/* Reset every statement that has run, dropping results (PostgreSQL) and
 * read snapshots (SQLite): at the end of a transaction and at release. */
static void db_cache_reset_all(ws_db_conn *c)
{
    for (size_t i = 0; i < c->nbuckets; i++) {
        for (ws_db_stmt *s = c->buckets[i]; s != NULL; s = s->next) {
            if (s->state != WS__DB_IDLE) {
                c->pool->ops->stmt_reset(s);
                s->state = WS__DB_IDLE;
            }
        }
    }
}

static void db_cache_free(ws_db_conn *c)
{
    for (size_t i = 0; i < c->nbuckets; i++) {
        ws_db_stmt *s = c->buckets[i];
        while (s != NULL) {
            ws_db_stmt *next = s->next;
            char *sql = s->sql;
            c->pool->ops->stmt_free(s);
            free(sql);
            s = next;
        }
    }
    free(c->buckets);
    c->buckets = NULL;
    c->nbuckets = 0;
    c->nentries = 0;
}

static ws_db_stmt *db_cache_find(ws_db_conn *c, const char *sql, uint32_t h)
{
    if (c->nbuckets == 0) {
        return NULL;
    }
    for (ws_db_stmt *s = c->buckets[h & (c->nbuckets - 1)]; s != NULL; s = s->next) {
        if (s->hash == h && strcmp(s->sql, sql) == 0) {
            return s;
        }
    }
    return NULL;
}

/* Refuse what would not mean the same on both engines. */
static ws_err db_sql_check(ws_db_conn *c, const char *sql, int *nparams)
{
    ws__db_sql_info info;
    ws__db_sql_scan(sql, &info, NULL);
    const char *why = NULL;
    if (info.unterminated) {
        why = "unterminated literal, identifier or comment";
    } else if (info.statements != 1) {
        why = "not exactly one statement";
    } else if (info.qmarks > 0) {
        why = "bare '?' placeholder: write $1, $2 ...";
    } else if (info.bad_param) {
        why = "placeholder out of range ($1 .. $65535)";
    }
    if (why != NULL) {
        ws__db_fail(c, WS_EINVAL, 0, NULL, why);
        ws_log_error("db_prepare_refused", "url=%s msg=%s sql=%s", c->pool->url_safe, why,
                     sql);
        return WS_EINVAL;
    }
    *nparams = info.max_param;
    return WS_OK;
}

ws_err ws_db_prepare(ws_db_conn *c, const char *sql, ws_db_stmt **out /* OUT */)
{
    if (c == NULL || sql == NULL || out == NULL) {
        return WS_EINVAL;
    }
    uint32_t h = db_sql_hash(sql);
    ws_db_stmt *s = db_cache_find(c, sql, h);
    if (s != NULL) {
        ws_db_reset(s);
        *out = s;
        return WS_OK;
    }
    int nparams = 0;
    ws_err err = db_sql_check(c, sql, &nparams);
    if (err != WS_OK) {
        return err;
    }
    if (c->nentries >= c->nbuckets && db_cache_grow(c) != WS_OK) {
        return ws__db_fail(c, WS_ENOMEM, 0, NULL, NULL);
    }
    char *copy = strdup(sql);
    if (copy == NULL) {
        return ws__db_fail(c, WS_ENOMEM, 0, NULL, NULL);
    }
    err = c->pool->ops->prepare(c, sql, nparams, &s);
    if (err != WS_OK) {
        free(copy);
        if (err != WS_EBUSY && err != WS_EUNAVAIL) {
            db_log_error("db_prepare_failed", c);
        }
        return err;
    }
    atomic_fetch_add_explicit(&c->pool->st_prepares, 1, memory_order_relaxed);
    s->conn = c;
    s->hash = h;
    s->sql = copy;
    s->nparams = nparams;
    s->state = WS__DB_IDLE;
    s->next = c->buckets[h & (c->nbuckets - 1)];
    c->buckets[h & (c->nbuckets - 1)] = s;
    c->nentries++;
    *out = s;
    return WS_OK;
}

/* ---- statements ----------------------------------------------------------- */

static ws_err db_bind_check(ws_db_stmt *s, int pos)
{
    if (s == NULL) {
        return WS_EINVAL;
    }
    if (pos < 1 || pos > s->nparams) {
        return ws__db_fail(s->conn, WS_ERANGE, 0, NULL, "no such parameter");
    }
    if (s->state != WS__DB_IDLE) {
        return ws__db_fail(s->conn, WS_EINVAL, 0, NULL, "bind after run without reset");
    }
    return WS_OK;
}

ws_err ws_db_bind_int64(ws_db_stmt *s, int pos, int64_t v)
{
    ws_err err = db_bind_check(s, pos);
    return err != WS_OK ? err : s->conn->pool->ops->bind_int64(s, pos, v);
}

ws_err ws_db_bind_text(ws_db_stmt *s, int pos, const char *text)
{
    ws_err err = db_bind_check(s, pos);
    if (err != WS_OK) {
        return err;
    }
    const ws__db_ops *ops = s->conn->pool->ops;
    return text == NULL ? ops->bind_null(s, pos) : ops->bind_text(s, pos, text);
}

ws_err ws_db_bind_null(ws_db_stmt *s, int pos)
{
    ws_err err = db_bind_check(s, pos);
    return err != WS_OK ? err : s->conn->pool->ops->bind_null(s, pos);
}

ws_err ws_db_bind_blob(ws_db_stmt *s, int pos, const void *data, size_t len)
{
    ws_err err = db_bind_check(s, pos);
    if (err == WS_OK && data == NULL && len > 0) {
        err = ws__db_fail(s->conn, WS_EINVAL, 0, NULL, "NULL blob with a length");
    }
    return err != WS_OK ? err : s->conn->pool->ops->bind_blob(s, pos, data, len);
}

ws_err ws_db_step(ws_db_stmt *s, bool *row /* OUT */)
{
    if (s == NULL || row == NULL) {
        return WS_EINVAL;
    }
    if (s->state == WS__DB_DONE) {
        *row = false;
        return WS_OK;
    }
    bool r = false;
    ws_err err = s->conn->pool->ops->step(s, &r);
    if (err != WS_OK) {
        s->conn->pool->ops->stmt_reset(s);
        s->state = WS__DB_IDLE;
        return err;
    }
    s->state = r ? WS__DB_ROWS : WS__DB_DONE;
    *row = r;
    return WS_OK;
}

ws_err ws_db_run(ws_db_stmt *s, int64_t *changes /* OUT */)
{
    bool row = true;
    while (row) {
        ws_err err = ws_db_step(s, &row);
        if (err != WS_OK) {
            return err;
        }
    }
    if (changes != NULL) {
        *changes = ws_db_changes(s);
    }
    return WS_OK;
}

void ws_db_reset(ws_db_stmt *s)
{
    if (s == NULL) {
        return;
    }
    s->conn->pool->ops->stmt_reset(s);
    s->state = WS__DB_IDLE;
}

int ws_db_column_count(ws_db_stmt *s)
{
    return s && s->state == WS__DB_ROWS ? s->conn->pool->ops->column_count(s) : 0;
}

static int db_col_ok(ws_db_stmt *s, int col)
{
    return s != NULL && s->state == WS__DB_ROWS && col >= 0 &&
           col < s->conn->pool->ops->column_count(s);
}

int64_t ws_db_column_int64(ws_db_stmt *s, int col)
{
    return db_col_ok(s, col) ? s->conn->pool->ops->column_int64(s, col) : 0;
}

const char *ws_db_column_text(ws_db_stmt *s, int col)
{
    return db_col_ok(s, col) ? s->conn->pool->ops->column_text(s, col) : NULL;
}

bool ws_db_column_is_null(ws_db_stmt *s, int col)
{
    return db_col_ok(s, col) ? s->conn->pool->ops->column_is_null(s, col) : true;
}

const void *ws_db_column_blob(ws_db_stmt *s, int col, size_t *len /* OUT */)
{
    size_t n = 0;
    const void *p =
        db_col_ok(s, col) ? s->conn->pool->ops->column_blob(s, col, &n) : NULL;
    if (len != NULL) {
        *len = n;
    }
    return p;
}

int64_t ws_db_changes(ws_db_stmt *s)
{
    return s && s->state == WS__DB_DONE ? s->conn->pool->ops->changes(s) : 0;
}

ws_err ws_db_exec(ws_db_conn *c, const char *sql)
{
    if (c == NULL || sql == NULL) {
        return WS_EINVAL;
    }
    ws_err err = c->pool->ops->exec(c, sql);
    if (err != WS_OK && err != WS_EBUSY && err != WS_EUNAVAIL) {
        db_log_error("db_exec_failed", c);
    }
    return err;
}

const ws_db_error *ws_db_last_error(const ws_db_conn *c)
{
    return c ? &c->err : NULL;
}

ws_db_engine ws_db_conn_engine(const ws_db_conn *c)
{
    return c ? c->pool->ops->engine : 0;
}

bool ws_db_has(const ws_db_conn *c, ws_db_feature f)
{
    return c != NULL && c->pool->ops->has(f);
}

const char *ws_db_dialect(const ws_db_conn *c, const char *sqlite_sql, const char *pg_sql)
{
    return ws_db_conn_engine(c) == WS_DB_POSTGRES ? pg_sql : sqlite_sql;
}

/* ---- pool ----------------------------------------------------------------- */

/* Sleep a random time in [base/2, base], base doubling per attempt from
 * 100 us to 20 ms, so two writers that collided do not collide again in
 * step. */
static void db_backoff(ws_db_conn *c, int attempt)
{
    long base = DB_BACKOFF_MIN_US;
    for (int i = 0; i < attempt && base < DB_BACKOFF_MAX_US; i++) {
        base *= 2;
    }
    if (base > DB_BACKOFF_MAX_US) {
        base = DB_BACKOFF_MAX_US;
    }
    long us = base / 2 + (long)(rand_r(&c->seed) % (unsigned)(base / 2 + 1));
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* Reconnect c if it is broken or older than the last connection loss the
 * pool saw, no sooner than the pool's backoff allows. Called with c held
 * and the pool unlocked. */
static ws_err db_conn_revive(ws_db *db, ws_db_conn *c)
{
    unsigned long epoch = atomic_load(&db->epoch);
    if (c->epoch == epoch && db->ops->conn_ok(c)) {
        return WS_OK;
    }
    pthread_mutex_lock(&db->mu);
    int wait = ws__db_now_ms() < db->next_reset_ms;
    pthread_mutex_unlock(&db->mu);
    if (wait) {
        return ws__db_fail(c, WS_EUNAVAIL, 0, NULL, "reconnect backing off");
    }
    db_cache_free(c);
    ws_err err = db->ops->conn_reset(c);
    pthread_mutex_lock(&db->mu);
    if (err == WS_OK) {
        db->reset_backoff_ms = 0;
        db->next_reset_ms = 0;
    } else {
        int b = db->reset_backoff_ms ? db->reset_backoff_ms * 2 : DB_RESET_MIN_MS;
        db->reset_backoff_ms = b > DB_RESET_MAX_MS ? DB_RESET_MAX_MS : b;
        b = db->reset_backoff_ms;
        db->next_reset_ms =
            ws__db_now_ms() + b / 2 + rand_r(&c->seed) % (unsigned)(b / 2 + 1);
    }
    int backoff = db->reset_backoff_ms;
    pthread_mutex_unlock(&db->mu);
    if (err == WS_OK) {
        c->epoch = epoch;
        atomic_fetch_add(&db->st_reconnects, 1);
        ws_log_info("db_reconnected", "engine=%s url=%s",
                    ws_db_engine_name(db->ops->engine), db->url_safe);
        return WS_OK;
    }
    atomic_fetch_add(&db->st_reconnect_failures, 1);
    ws_log_warn("db_reconnect_failed", "engine=%s url=%s backoff_ms=%d msg=%s",
                ws_db_engine_name(db->ops->engine), db->url_safe, backoff,
                c->err.message);
    return err == WS_EAUTH ? err : WS_EUNAVAIL;
}

static void db_idle_push(ws_db *db, ws_db_conn *c)
{
    pthread_mutex_lock(&db->mu);
    db->idle[db->nidle++] = c;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

/* ws_db_acquire, also saying why it failed in *why (may be NULL). */
static ws_err db_acquire(ws_db *db, ws_db_conn **out, ws_db_error *why)
{
    if (db == NULL || out == NULL) {
        return WS_EINVAL;
    }
    /* Monotonic (the cv is set to CLOCK_MONOTONIC): a wall-clock jump
     * neither stretches the wait nor ends it at once. */
    struct timespec deadline = ws_clock_mono_after(db->acquire_timeout_ms);
    pthread_mutex_lock(&db->mu);
    while (db->nidle == 0) {
        if (pthread_cond_timedwait(&db->cv, &db->mu, &deadline) != 0 && db->nidle == 0) {
            pthread_mutex_unlock(&db->mu);
            ws_log_warn("db_pool_exhausted", "url=%s size=%d waited_ms=%d", db->url_safe,
                        db->nconns, db->acquire_timeout_ms);
            ws__db_error_set(why, db->ops->engine, WS_ETIMEDOUT, 0, NULL,
                             "no free connection in the pool");
            return WS_ETIMEDOUT;
        }
    }
    ws_db_conn *c = db->idle[--db->nidle];
    pthread_mutex_unlock(&db->mu);
    ws__db_error_set(&c->err, db->ops->engine, WS_OK, 0, NULL, "");
    ws_err err = db_conn_revive(db, c);
    if (err != WS_OK) {
        if (why != NULL) {
            *why = c->err;
        }
        db_idle_push(db, c);
        return err;
    }
    *out = c;
    return WS_OK;
}

ws_err ws_db_acquire(ws_db *db, ws_db_conn **out /* OUT */)
{
    return db_acquire(db, out, NULL);
}

void ws_db_release(ws_db_conn *c)
{
    if (c == NULL) {
        return;
    }
    db_cache_reset_all(c);
    c->pool->ops->conn_cleanup(c);
    if (c->in_group && db_txn_owner == c->pool) {
        db_txn_owner = NULL;
    }
    c->in_txn = 0;
    c->in_group = 0;
    c->sp_unreleased = 0;
    db_idle_push(c->pool, c);
}

ws_err ws_db_check(ws_db *db, ws_db_error *why /* OUT */)
{
    ws_db_conn *c = NULL;
    ws_err err = db_acquire(db, &c, why);
    if (err != WS_OK) {
        return err;
    }
    err = db->ops->exec(c, "SELECT 1");
    if (err != WS_OK && why != NULL) {
        *why = c->err;
    }
    ws_db_release(c);
    return err;
}

/* ---- fault memory --------------------------------------------------------- */

/* The gauge is looked up at each change of state (rare), not kept: a test
 * may free the default registry while a pool is open. */
static void db_fault_gauge(double delta)
{
    ws_gauge_add(ws_gauge_get(ws_metrics_default(), "webshop_db_commit_failing",
                              "Database connections whose last write failed for the "
                              "storage (disk full, read-only, I/O error, server gone)",
                              NULL),
                 delta);
}

/* A write transaction of c failed with err: remember it when the storage
 * (not the program) is at fault. */
static void db_fault_note(ws_db_conn *c, ws_err err)
{
    if (err == WS_OK || c->txn_read_only || c->err.err != err ||
        (err != WS_EIO && err != WS_EUNAVAIL && err != WS_ESTORE && err != WS_ENOMEM)) {
        return;
    }
    const char *why = c->pool->ops->fault_text(&c->err);
    if (why == NULL && err == WS_EUNAVAIL) {
        why = "database unavailable";
    }
    if (why == NULL) {
        return;
    }
    if (atomic_load(&c->failing)) {
        return;
    }
    snprintf(c->fail_why, sizeof(c->fail_why), "%s", why);
    c->fail_since_ms = ws__db_now_ms();
    atomic_store(&c->failing, 1);
    db_fault_gauge(1);
    ws_log_warn("db_commit_failing", "url=%s reason=%s code=%d sqlstate=%s msg=%s",
                c->pool->url_safe, why, c->err.sqlite_code, c->err.sqlstate,
                c->err.message);
}

static void db_fault_clear(ws_db_conn *c)
{
    if (c->txn_read_only || !atomic_load_explicit(&c->failing, memory_order_relaxed)) {
        return;
    }
    atomic_store(&c->failing, 0);
    db_fault_gauge(-1);
    ws_log_info("db_commit_recovered", "url=%s failed_ms=%lld", c->pool->url_safe,
                ws__db_now_ms() - c->fail_since_ms);
}

bool ws_db_failing(const ws_db *db, char *why, size_t cap)
{
    if (db == NULL) {
        return false;
    }
    ws_db *d = (ws_db *)db;
    bool failing = false;
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->nconns && !failing; i++) {
        if (atomic_load(&d->conns[i]->failing)) {
            failing = true;
            if (why != NULL && cap > 0) {
                snprintf(why, cap, "%s", d->conns[i]->fail_why);
            }
        }
    }
    pthread_mutex_unlock(&d->mu);
    return failing;
}

/* ---- transactions --------------------------------------------------------- */

/* fn on c as the body of a transaction, of a group's savepoint or of a
 * one-statement read: c->in_txn while it runs, and a statement that failed
 * inside fails it even when fn returned WS_OK (*went_on then true, may be
 * NULL); the statements are reset after. */
static ws_err db_txn_body(ws_db_conn *c, ws_db_txn_fn fn, void *ctx, bool *went_on)
{
    c->in_txn = 1;
    c->txn_err = WS_OK;
    ws_err err = fn(c, ctx);
    c->in_txn = 0;
    bool late = err == WS_OK && c->txn_err != WS_OK;
    if (late) {
        err = c->txn_err;
    }
    if (went_on != NULL) {
        *went_on = late;
    }
    c->txn_err = WS_OK;
    db_cache_reset_all(c);
    return err;
}

/* One attempt of a one-statement read (ws_db_txn_opts.one_statement): fn
 * outside any transaction, its statement in autocommit. */
static ws_err db_txn_once_bare(ws_db_conn *c, ws_db_txn_fn fn, void *ctx)
{
    c->txn_read_only = 1;
    const ws_db *outer = db_txn_owner;
    db_txn_owner = c->pool;
    ws_err err = db_txn_body(c, fn, ctx, NULL);
    db_txn_owner = outer;
    if (err != WS_OK) {
        db_fault_note(c, err);
    }
    return err;
}

/* One attempt: BEGIN, fn, COMMIT or ROLLBACK. */
static ws_err db_txn_once(ws_db_conn *c, const ws_db_txn_opts *o, ws_db_txn_fn fn,
                          void *ctx)
{
    if (o->one_statement && o->read_only) {
        return db_txn_once_bare(c, fn, ctx);
    }
    const ws__db_ops *ops = c->pool->ops;
    c->txn_read_only = o->read_only;
    ws_err err = ops->begin(c, o);
    if (err != WS_OK) {
        db_fault_note(c, err);
        return err;
    }
    const ws_db *outer = db_txn_owner;
    db_txn_owner = c->pool;
    bool went_on = false;
    err = db_txn_body(c, fn, ctx, &went_on);
    db_txn_owner = outer;
    if (went_on) {
        /* fn went on after a failed statement: PostgreSQL has aborted the
         * transaction already; fail it on SQLite too. */
        ws_log_warn("db_txn_statement_failed", "url=%s err=%s msg=%s", c->pool->url_safe,
                    ws_errname(err), c->err.message);
    }
    if (err != WS_OK) {
        db_fault_note(c, err);
        ops->rollback(c);
        return err;
    }
    err = ops->commit(c);
    if (err != WS_OK) {
        db_fault_note(c, err);
        ops->rollback(c);
    } else {
        db_fault_clear(c);
    }
    return err;
}

/* Inside a group: fn as a SAVEPOINT of the group's transaction. The
 * previous message's savepoint, when it succeeded, is released in the same
 * exec as this one's SAVEPOINT (db_int.h). */
static ws_err db_txn_savepoint(ws_db_conn *c, ws_db_txn_fn fn, void *ctx)
{
    const ws__db_ops *ops = c->pool->ops;
    if (!ops->txn_open(c)) {
        /* The engine rolled the group back (SQLite after FULL/IOERR): a
         * SAVEPOINT now would start a transaction of its own. */
        return c->err.err != WS_OK ? c->err.err : WS_ESTORE;
    }
    ws_err err = ops->exec(c, c->sp_unreleased ? WS__DB_SQL_RELEASE_SAVEPOINT
                                               : WS__DB_SQL_SAVEPOINT);
    c->sp_unreleased = 0;
    if (err != WS_OK) {
        db_fault_note(c, err);
        return err;
    }
    err = db_txn_body(c, fn, ctx, NULL);
    if (err != WS_OK) {
        db_fault_note(c, err);
        if (ops->txn_open(c)) {
            ops->exec(c, WS__DB_SQL_ROLLBACK_TO);
        }
        return err;
    }
    c->sp_unreleased = 1;
    return WS_OK;
}

ws_err ws_db_group_begin(ws_db_conn *c)
{
    if (c == NULL || c->in_txn || c->in_group) {
        return WS_EINVAL;
    }
    static const ws_db_txn_opts defaults = {0};
    ws_err err = WS_OK;
    for (int attempt = 0;; attempt++) {
        c->txn_read_only = 0;
        err = c->pool->ops->begin(c, &defaults);
        if (err != WS_EBUSY || attempt >= c->pool->txn_retries) {
            break;
        }
        atomic_fetch_add_explicit(&c->pool->st_retries, 1, memory_order_relaxed);
        db_backoff(c, attempt);
    }
    if (err != WS_OK) {
        db_fault_note(c, err);
        return err;
    }
    c->in_group = 1;
    c->sp_unreleased = 0;
    db_txn_owner = c->pool;
    return WS_OK;
}

ws_err ws_db_group_end(ws_db_conn *c)
{
    if (c == NULL || !c->in_group || c->in_txn) {
        return WS_EINVAL;
    }
    const ws__db_ops *ops = c->pool->ops;
    c->in_group = 0;
    c->sp_unreleased = 0; /* COMMIT releases it */
    if (db_txn_owner == c->pool) {
        db_txn_owner = NULL;
    }
    db_cache_reset_all(c);
    ws_err err = ops->commit(c);
    if (err != WS_OK) {
        db_fault_note(c, err);
        ops->rollback(c);
        ws_log_warn("db_group_failed", "url=%s err=%s code=%d sqlstate=%s msg=%s",
                    c->pool->url_safe, ws_errname(err), c->err.sqlite_code,
                    c->err.sqlstate, c->err.message);
    } else {
        db_fault_clear(c);
    }
    return err;
}

bool ws_db_in_group(const ws_db_conn *c)
{
    return c != NULL && c->in_group;
}

ws_err ws_db_conn_txn(ws_db_conn *c, const ws_db_txn_opts *opts, ws_db_txn_fn fn,
                      void *ctx)
{
    if (c == NULL || fn == NULL) {
        return WS_EINVAL;
    }
    if (c->in_txn) {
        ws_log_error("db_txn_nested", "url=%s", c->pool->url_safe);
        return WS_EINVAL;
    }
    if (c->in_group) {
        return db_txn_savepoint(c, fn, ctx);
    }
    static const ws_db_txn_opts defaults = {0};
    const ws_db_txn_opts *o = opts ? opts : &defaults;
    int retries = o->retries > 0 ? o->retries : o->retries < 0 ? 0 : c->pool->txn_retries;
    ws_err err;
    for (int attempt = 0;; attempt++) {
        err = db_txn_once(c, o, fn, ctx);
        if (err != WS_EBUSY) {
            break;
        }
        if (attempt >= retries) {
            ws_log_error("db_txn_conflict",
                         "url=%s attempts=%d code=%d sqlstate=%s msg=%s",
                         c->pool->url_safe, attempt + 1, c->err.sqlite_code,
                         c->err.sqlstate, c->err.message);
            break;
        }
        atomic_fetch_add_explicit(&c->pool->st_retries, 1, memory_order_relaxed);
        ws_log_debug("db_txn_retry", "url=%s attempt=%d sqlstate=%s", c->pool->url_safe,
                     attempt + 1, c->err.sqlstate);
        db_backoff(c, attempt);
    }
    if (err != WS_OK && o->error != NULL) {
        *o->error = c->err;
        if (o->error->err == WS_OK) {
            o->error->err = err; /* fn's own error, not a driver's */
        }
    }
    return err;
}

ws_err ws_db_txn_with(ws_db *db, const ws_db_txn_opts *opts, ws_db_txn_fn fn, void *ctx)
{
    if (db == NULL || fn == NULL) {
        return WS_EINVAL;
    }
    if (db_txn_owner == db) {
        ws_log_error("db_txn_nested", "url=%s", db->url_safe);
        return WS_EINVAL;
    }
    ws_db_conn *c = NULL;
    ws_err err = db_acquire(db, &c, opts ? opts->error : NULL);
    if (err != WS_OK) {
        return err;
    }
    err = ws_db_conn_txn(c, opts, fn, ctx);
    ws_db_release(c);
    return err;
}

ws_err ws_db_txn(ws_db *db, ws_db_txn_fn fn, void *ctx)
{
    return ws_db_txn_with(db, NULL, fn, ctx);
}

/* ---- migrations ----------------------------------------------------------- */

typedef struct db_migrate_ctx {
    const ws_db_migration *m;
    size_t n;
    int from; /* OUT: the version found under the lock */
} db_migrate_ctx;

static ws_err db_migrations_check(const ws_db_migration *m, size_t n)
{
    if (n > 0 && m == NULL) {
        return WS_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (m[i].version != (int)i + 1 ||
            (m[i].sqlite_sql == NULL && m[i].pg_sql == NULL)) {
            ws_log_error("db_migrations_invalid", "index=%zu version=%d expected=%zu", i,
                         m[i].version, i + 1);
            return WS_EINVAL;
        }
    }
    return WS_OK;
}

static ws_err db_schema_too_new(ws_db_conn *c, int found, int code)
{
    char msg[128];
    snprintf(msg, sizeof(msg), "database schema version %d is newer than the code's %d",
             found, code);
    ws__db_fail(c, WS_ESTORE, 0, NULL, msg);
    ws_log_error("db_schema_too_new", "url=%s version=%d code_version=%d",
                 c->pool->url_safe, found, code);
    return WS_ESTORE;
}

/* The migration transaction's body: take the engine's migration lock,
 * re-read the version (another replica may have migrated meanwhile), apply
 * what is missing and record the new version. */
static ws_err db_migrate_fn(ws_db_conn *c, void *arg)
{
    db_migrate_ctx *m = arg;
    const ws__db_ops *ops = c->pool->ops;
    int last = m->m[m->n - 1].version;
    ws_err err = ops->migrate_begin(c);
    int cur = 0;
    if (err == WS_OK) {
        err = ops->schema_version(c, &cur);
    }
    if (err != WS_OK) {
        return err;
    }
    if (cur > last) {
        return db_schema_too_new(c, cur, last);
    }
    m->from = cur;
    for (size_t i = (size_t)cur; i < m->n; i++) {
        const char *sql =
            ops->engine == WS_DB_POSTGRES ? m->m[i].pg_sql : m->m[i].sqlite_sql;
        if (sql == NULL) {
            continue;
        }
        err = ops->exec(c, sql);
        if (err != WS_OK) {
            ws_log_error("db_migration_failed",
                         "url=%s version=%d from=%d code=%d "
                         "sqlstate=%s msg=%s",
                         c->pool->url_safe, m->m[i].version, cur, c->err.sqlite_code,
                         c->err.sqlstate, c->err.message);
            return err;
        }
    }
    return cur < last ? ops->schema_version_set(c, cur, last) : WS_OK;
}

/* Check the version at open and bring it to the last migration. */
static ws_err db_migrate(ws_db *db, const ws_db_migration *m, size_t n, ws_db_error *eout)
{
    if (n == 0) {
        return WS_OK;
    }
    ws_db_conn *c = NULL;
    ws_err err = ws_db_acquire(db, &c);
    if (err != WS_OK) {
        return err;
    }
    int last = m[n - 1].version;
    int cur = -1;
    err = db->ops->schema_version(c, &cur);
    if (err == WS_OK && cur > last) {
        err = db_schema_too_new(c, cur, last);
    } else if (err == WS_OK && cur < last) {
        db_migrate_ctx ctx = {m, n, cur};
        err = ws_db_conn_txn(c, NULL, db_migrate_fn, &ctx);
        if (err == WS_OK && ctx.from < last) {
            ws_log_info("db_migrated", "engine=%s url=%s from=%d to=%d",
                        ws_db_engine_name(db->ops->engine), db->url_safe, ctx.from, last);
        }
    } else if (err != WS_OK) {
        db_log_error("db_schema_version_failed", c);
    }
    if (err == WS_OK) {
        db->schema_version = last;
    } else if (eout != NULL) {
        *eout = c->err;
    }
    ws_db_release(c);
    return err;
}

/* ---- open / close --------------------------------------------------------- */

static int db_sync_parse(const char *name)
{
    if (name == NULL) {
        return 1;
    }
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, db_sync_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static ws_err db_refuse(const ws_db_opts *o, const char *why)
{
    char safe[512];
    ws_log_error("db_open_refused", "url=%s msg=%s",
                 ws_db_url_redact(o->url, safe, sizeof(safe)), why);
    ws__db_error_set(o->error, 0, WS_EINVAL, 0, NULL, why);
    return WS_EINVAL;
}

/* The engine for a URL of kind; NULL (error filled, logged by the loader)
 * when the PostgreSQL module cannot be loaded: not retried, a program
 * without its engine does not get one by waiting. */
static const ws__db_ops *db_engine_ops(ws__db_url_kind kind, ws_db_error *error)
{
    if (kind != WS__DB_URL_PG) {
        return &ws__db_sqlite_ops;
    }
    const char *why = NULL;
    const ws__db_ops *ops = ws__db_pg_ops_load(&why);
    if (ops == NULL) {
        char text[sizeof(error->message)];
        snprintf(text, sizeof(text), "PostgreSQL engine unavailable: %s",
                 why ? why : "not loaded");
        ws__db_error_set(error, WS_DB_POSTGRES, WS_ENOTFOUND, 0, NULL, text);
    }
    return ops;
}

/* Parse the URL and options into a fresh, unconnected pool. */
static ws_err db_pool_new(const ws_db_opts *o, ws_db **out)
{
    const char *path = NULL;
    const char *why = NULL;
    ws__db_url_kind kind = ws__db_url_classify(o->url, &path, &why);
    if (kind == WS__DB_URL_BAD) {
        return db_refuse(o, why);
    }
    int sync = db_sync_parse(o->synchronous);
    if (sync < 0 || o->pool_size < 0 || o->acquire_timeout_ms < 0) {
        return db_refuse(o, "bad option (synchronous, pool_size or acquire_timeout_ms)");
    }
    const ws__db_ops *ops = db_engine_ops(kind, o->error);
    if (ops == NULL) {
        return WS_ENOTFOUND;
    }
    int size = o->pool_size ? o->pool_size : DB_DEFAULT_POOL;
    if (kind == WS__DB_URL_SQLITE && strcmp(path, ":memory:") == 0 && size != 1) {
        return db_refuse(
            o, "sqlite::memory: is one database per connection: use pool_size 1");
    }
    ws_db *db = calloc(1, sizeof(*db));
    char safe[1024];
    if (db == NULL) {
        return WS_ENOMEM;
    }
    pthread_mutex_init(&db->mu, NULL);
    ws_clock_cond_init(&db->cv);
    db->ops = ops;
    db->target = strdup(kind == WS__DB_URL_PG ? o->url : path);
    db->url_safe = strdup(ws_db_url_redact(o->url, safe, sizeof(safe)));
    db->app_name = strdup(o->app_name ? o->app_name : "webshop");
    db->conns = calloc((size_t)size, sizeof(*db->conns));
    db->idle = calloc((size_t)size, sizeof(*db->idle));
    if (!db->target || !db->url_safe || !db->app_name || !db->conns || !db->idle) {
        ws_db_close(db);
        return WS_ENOMEM;
    }
    db->pool_size = size;
    db->acquire_timeout_ms =
        o->acquire_timeout_ms ? o->acquire_timeout_ms : DB_DEFAULT_ACQUIRE_MS;
    db->txn_retries =
        o->txn_retries ? (o->txn_retries < 0 ? 0 : o->txn_retries) : DB_DEFAULT_RETRIES;
    db->busy_timeout_ms = o->busy_timeout_ms
                              ? (o->busy_timeout_ms < 0 ? 0 : o->busy_timeout_ms)
                              : DB_DEFAULT_BUSY_MS;
    db->synchronous = sync;
    db->wal_autocheckpoint = o->wal_autocheckpoint
                                 ? (o->wal_autocheckpoint < 0 ? 0 : o->wal_autocheckpoint)
                                 : 256;
    db->journal_size_limit =
        o->journal_size_limit ? (o->journal_size_limit < 0 ? -1 : o->journal_size_limit)
                              : 1048576;
    db->connect_timeout_s =
        o->connect_timeout_s > 0 ? o->connect_timeout_s : DB_DEFAULT_CONNECT_S;
    *out = db;
    return WS_OK;
}

ws_err ws_db_open(const ws_db_opts *opts, ws_db **out /* OUT */)
{
    if (opts == NULL || out == NULL) {
        return WS_EINVAL;
    }
    ws_db *db = NULL;
    ws_err err = db_pool_new(opts, &db);
    if (err == WS_OK) {
        err = db_migrations_check(opts->migrations, opts->n_migrations);
        if (err != WS_OK) {
            ws__db_error_set(opts->error, db->ops->engine, err, 0, NULL,
                             "bad migration list");
        }
    }
    for (int i = 0; err == WS_OK && i < db->pool_size; i++) {
        ws_db_conn *c = NULL;
        ws_db_error e = {0};
        err = db->ops->conn_open(db, &c, &e);
        if (err != WS_OK) {
            ws_log_error("db_connect_failed", "engine=%s url=%s err=%s code=%d msg=%s",
                         ws_db_engine_name(db->ops->engine), db->url_safe,
                         ws_errname(err), e.sqlite_code, e.message);
            if (opts->error != NULL) {
                *opts->error = e;
            }
            break;
        }
        c->pool = db;
        c->seed = (unsigned)ws__db_now_ms() ^ (unsigned)(uintptr_t)c;
        db->conns[db->nconns++] = c;
        db->idle[db->nidle++] = c;
    }
    if (err == WS_OK) {
        err = db_migrate(db, opts->migrations, opts->n_migrations, opts->error);
    }
    if (err != WS_OK) {
        ws_db_close(db);
        return err;
    }
    ws_log_info("db_opened", "engine=%s url=%s pool=%d schema_version=%d",
                ws_db_engine_name(db->ops->engine), db->url_safe, db->nconns,
                db->schema_version);
    *out = db;
    return WS_OK;
}

void ws_db_close(ws_db *db)
{
    if (db == NULL) {
        return;
    }
    if (db->nidle != db->nconns) {
        ws_log_error("db_close_busy", "url=%s held=%d", db->url_safe,
                     db->nconns - db->nidle);
    }
    for (int i = 0; i < db->nconns; i++) {
        if (atomic_load(&db->conns[i]->failing)) {
            db_fault_gauge(-1); /* a failing connection that closes no longer counts */
        }
        db_cache_free(db->conns[i]);
        db->ops->conn_close(db->conns[i]);
    }
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->cv);
    free(db->conns);
    free(db->idle);
    free(db->target);
    free(db->url_safe);
    free(db->app_name);
    free(db);
}

ws_db_engine ws_db_engine_of(const ws_db *db)
{
    return db ? db->ops->engine : 0;
}

const char *ws_db_url(const ws_db *db)
{
    return db ? db->url_safe : "";
}

int ws_db_schema_version(const ws_db *db)
{
    return db ? db->schema_version : 0;
}

void ws_db_stats_get(const ws_db *db, ws_db_stats *out /* OUT */)
{
    if (db == NULL || out == NULL) {
        return;
    }
    ws_db *d = (ws_db *)db;
    out->txn_retries = atomic_load(&d->st_retries);
    out->reconnects = atomic_load(&d->st_reconnects);
    out->reconnect_failures = atomic_load(&d->st_reconnect_failures);
    out->prepares = atomic_load(&d->st_prepares);
}

/* ---- checkpoint and the check before start -------------------------------- */

ws_err ws_db_checkpoint(ws_db *db, bool truncate)
{
    if (db == NULL) {
        return WS_EINVAL;
    }
    if (db->ops->checkpoint == NULL) {
        return WS_OK;
    }
    ws_db_conn *c = NULL;
    ws_err err = ws_db_acquire(db, &c);
    if (err != WS_OK) {
        return err;
    }
    int frames = -1, done = -1;
    err = db->ops->checkpoint(c, truncate, &frames, &done);
    ws_log(err == WS_OK ? WS_LOG_INFO : WS_LOG_WARN, "db_checkpoint",
           "url=%s mode=%s wal_frames=%d checkpointed=%d result=%s", db->url_safe,
           truncate ? "truncate" : "passive", frames, done, ws_errname(err));
    ws_db_release(c);
    return err;
}

void ws__db_detail_append(char *detail, size_t cap, const char *text)
{
    if (detail == NULL || cap == 0 || text == NULL) {
        return;
    }
    size_t n = strlen(detail);
    if (n > 0 && n + 2 < cap) {
        detail[n++] = ';';
        detail[n++] = ' ';
    }
    for (const char *p = text; *p != '\0' && n + 1 < cap; p++) {
        if (*p == '\n' || *p == '\r') {
            if (p[1] != '\0' && n + 2 < cap) {
                detail[n++] = ';';
                detail[n++] = ' ';
            }
        } else {
            detail[n++] = *p == '"' ? '\'' : *p;
        }
    }
    detail[n] = '\0';
}

/* PostgreSQL: the server must answer and its schema version be known. */
static ws_err db_check_pg(ws_db *db, int want, char *detail, size_t cap)
{
    ws_db_conn *c = NULL;
    ws_db_error e = {0};
    ws_err err = db->ops->conn_open(db, &c, &e);
    if (err != WS_OK) {
        ws__db_detail_append(detail, cap, e.message);
        return err;
    }
    c->pool = db;
    int v = 0;
    err = db->ops->schema_version(c, &v);
    if (err != WS_OK) {
        ws__db_detail_append(detail, cap, c->err.message);
    } else if (want >= 0 && v > want) {
        char text[96];
        snprintf(text, sizeof(text), "schema version %d is newer than this program's %d",
                 v, want);
        ws__db_detail_append(detail, cap, text);
        err = WS_ESTORE;
    }
    db->ops->conn_close(c);
    return err;
}

ws_err ws_db_check_url(const char *url, int want_version, uint32_t budget_ms,
                       char *detail, size_t cap)
{
    if (detail != NULL && cap > 0) {
        detail[0] = '\0';
    }
    if (url == NULL) {
        return WS_EINVAL;
    }
    ws_db_error why = {0};
    ws_db_opts o = {.url = url, .pool_size = 1, .error = &why};
    ws_db *db = NULL;
    ws_err err = db_pool_new(&o, &db);
    if (err != WS_OK) {
        ws__db_detail_append(detail, cap,
                             err == WS_ENOTFOUND ? why.message : "URL refused");
        return err;
    }
    if (db->ops->check != NULL) {
        err = db->ops->check(db->target, want_version, budget_ms, detail, cap);
    } else {
        err = db_check_pg(db, want_version, detail, cap);
    }
    ws_db_close(db);
    return err;
}
