/*
 * SQLite storage helpers (see store.h). One ws_store wraps one connection
 * opened without SQLite's own mutex (a connection belongs to one thread), set
 * to WAL, a busy timeout, foreign keys on and the chosen `synchronous`, each
 * read back so that a setting SQLite silently ignored is an error, not a
 * surprise. Migrations run through the same BEGIN IMMEDIATE transaction
 * helper services use, so two processes opening one file at once serialise
 * on the write lock and the second sees the first one's version. Prepared
 * statements are cached in a small chained hash table keyed by their text.
 *
 * Fault memory: every path that ends a write transaction (BEGIN, the body,
 * COMMIT, a group's savepoints and its COMMIT) notes the SQLite code of a
 * failure that is the database's or its file's (store_fault_note), and a
 * COMMIT that succeeds clears it (store_fault_clear). The code lives in an
 * atomic, so /readyz can read it from any thread; each change of state is
 * logged once and moves the gauge webshop_store_commit_failing.
 */
#include "store.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

#define STORE_DEFAULT_BUSY_MS 5000
#define STORE_DEFAULT_WAL_PAGES     256
#define STORE_DEFAULT_JOURNAL_LIMIT (1024 * 1024)
#define STORE_DEFAULT_RETRIES 10
#define STORE_BACKOFF_MIN_US  100
#define STORE_BACKOFF_MAX_US  20000
#define STORE_CACHE_MIN       32

typedef struct store_entry {
    struct store_entry *next; /* chain in the bucket */
    uint32_t hash;
    char *sql;          /* owned copy of the key */
    sqlite3_stmt *stmt; /* owned; finalized on close */
} store_entry;

/* The transaction-control statements, prepared once at open and stepped by
 * ws_store_txn and the group helpers instead of sqlite3_exec()'ing their
 * text (which parses and prepares every time). */
enum {
    STORE_BEGIN,
    STORE_COMMIT,
    STORE_ROLLBACK,
    STORE_SAVEPOINT,
    STORE_RELEASE,
    STORE_ROLLBACK_TO,
    STORE_CTL_N
};

static const char *const store_ctl_sql[STORE_CTL_N] = {
    "BEGIN IMMEDIATE",  "COMMIT",         "ROLLBACK",
    "SAVEPOINT ws_txn", "RELEASE ws_txn", "ROLLBACK TO ws_txn",
};

struct ws_store {
    sqlite3 *db;                    /* owned */
    char *path;                     /* owned copy, for log lines */
    int retries;                    /* extra attempts in ws_store_txn */
    int busy_ms;                    /* busy timeout of the busy handler */
    struct timespec busy_t0;        /* when the current busy wait began */
    sqlite3_stmt *ctl[STORE_CTL_N]; /* owned; prepared lazily */
    int group;                      /* a group transaction is open */
    int in_txn;                     /* inside ws_store_txn's fn */
    unsigned seed;                  /* backoff jitter (rand_r) */
    atomic_ulong busy_retries;      /* read from any thread */
    atomic_int fault_rc;            /* SQLite code of the last failed write, 0 none */
    atomic_llong fault_since_ms;    /* CLOCK_MONOTONIC ms when fault_rc was set */
    store_entry **buckets;          /* owned; nbuckets is a power of two */
    size_t nbuckets;
    size_t nentries;
};

static const char *const store_sync_names[] = {"OFF", "NORMAL", "FULL", "EXTRA"};

ws_err ws_err_from_sqlite(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return WS_OK;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return WS_EBUSY;
    case SQLITE_NOMEM:
        return WS_ENOMEM;
    case SQLITE_CONSTRAINT:
        return WS_EEXIST;
    case SQLITE_TOOBIG:
        return WS_ETOOBIG;
    case SQLITE_FULL:
    case SQLITE_READONLY:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
        return WS_EIO;
    default:
        return WS_ESTORE;
    }
}

/* ---- fault memory ------------------------------------------------------- */

static int64_t store_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The short reason /readyz shows for an SQLite code. */
static const char *store_fault_text(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return "disk full";
    case SQLITE_READONLY:
        return "database is read-only";
    case SQLITE_IOERR:
        return "disk I/O error";
    case SQLITE_CANTOPEN:
        return "cannot open the database file";
    case SQLITE_PERM:
        return "permission denied";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return "database damaged";
    case SQLITE_NOMEM:
        return "out of memory";
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return "database locked";
    case SQLITE_ABORT:
        return "transaction rolled back by the database";
    default:
        return sqlite3_errstr(rc);
    }
}

/* The gauge is looked up at each change of state (rare), not kept: a test
 * may free the default registry while a store is open. */
static void store_fault_gauge(double delta)
{
    ws_gauge_add(ws_gauge_get(ws_metrics_default(), "webshop_store_commit_failing",
                              "Database connections whose last write failed", NULL),
                 delta);
}

/* True for the codes that say the database or its file cannot take a
 * write now; not for a constraint, bad SQL or misuse (the program's). */
static bool store_rc_is_fault(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_NOMEM:
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_PROTOCOL:
    case SQLITE_NOLFS:
    case SQLITE_ABORT:
        return true;
    default:
        return false;
    }
}

/* A write failed with rc: remember it when it is the database's fault. */
static void store_fault_note(ws_store *s, int rc)
{
    if (!store_rc_is_fault(rc)) {
        return;
    }
    int old = atomic_exchange(&s->fault_rc, rc);
    if (old == 0) {
        atomic_store(&s->fault_since_ms, store_mono_ms());
        store_fault_gauge(1);
        ws_log_warn("store_commit_failing", "path=%s rc=%d reason=%s", s->path, rc,
                    store_fault_text(rc));
    }
}

/* fn failed with err: note the connection's last code when err says the
 * store failed (a domain error leaves the code undefined). */
static void store_fault_note_err(ws_store *s, ws_err err)
{
    if (err == WS_ESTORE || err == WS_EIO || err == WS_ENOMEM) {
        store_fault_note(s, sqlite3_extended_errcode(s->db));
    }
}

static void store_fault_clear(ws_store *s)
{
    if (atomic_load_explicit(&s->fault_rc, memory_order_relaxed) == 0) {
        return;
    }
    int old = atomic_exchange(&s->fault_rc, 0);
    if (old != 0) {
        store_fault_gauge(-1);
        ws_log_info("store_commit_recovered", "path=%s failed_ms=%lld", s->path,
                    (long long)(store_mono_ms() - atomic_load(&s->fault_since_ms)));
    }
}

bool ws_store_failing(const ws_store *s, char *why, size_t cap)
{
    if (s == NULL) {
        return false;
    }
    int rc = atomic_load(&((ws_store *)s)->fault_rc);
    if (rc == 0) {
        return false;
    }
    if (why != NULL && cap > 0) {
        snprintf(why, cap, "%s", store_fault_text(rc));
    }
    return true;
}

const char *ws_store_path(const ws_store *s)
{
    return s != NULL ? s->path : NULL;
}

static int store_rc_is_busy(int rc)
{
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

/* FNV-1a; the table is small and keys are short SQL strings. */
static uint32_t store_sql_hash(const char *sql)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h;
}

static ws_err store_cache_grow(ws_store *s)
{
    size_t n = s->nbuckets ? s->nbuckets * 2 : STORE_CACHE_MIN;
    store_entry **b = calloc(n, sizeof(*b));
    if (b == NULL) {
        return WS_ENOMEM;
    }
    for (size_t i = 0; i < s->nbuckets; i++) {
        store_entry *e = s->buckets[i];
        while (e != NULL) {
            store_entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
    return WS_OK;
}

/* Reset every cached statement still between rows, so COMMIT does not fail
 * on a pending write and no read snapshot outlives the transaction. */
static void store_cache_reset_busy(ws_store *s)
{
    for (size_t i = 0; i < s->nbuckets; i++) {
        for (store_entry *e = s->buckets[i]; e != NULL; e = e->next) {
            if (sqlite3_stmt_busy(e->stmt)) {
                sqlite3_reset(e->stmt);
            }
        }
    }
}

/* Step one transaction-control statement (prepared on first use) and
 * reset it; an SQLite result code. */
static int store_ctl_run(ws_store *s, int which)
{
    if (s->ctl[which] == NULL) {
        int rc = sqlite3_prepare_v3(s->db, store_ctl_sql[which], -1,
                                    SQLITE_PREPARE_PERSISTENT, &s->ctl[which], NULL);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }
    int rc = sqlite3_step(s->ctl[which]);
    sqlite3_reset(s->ctl[which]);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static void store_cache_free(ws_store *s)
{
    for (int i = 0; i < STORE_CTL_N; i++) {
        sqlite3_finalize(s->ctl[i]);
        s->ctl[i] = NULL;
    }
    for (size_t i = 0; i < s->nbuckets; i++) {
        store_entry *e = s->buckets[i];
        while (e != NULL) {
            store_entry *next = e->next;
            sqlite3_finalize(e->stmt);
            free(e->sql);
            free(e);
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = NULL;
    s->nbuckets = 0;
    s->nentries = 0;
}

static int store_only_space(const char *p)
{
    for (; *p; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != ';') {
            return 0;
        }
    }
    return 1;
}

ws_err ws_store_stmt(ws_store *s, const char *sql, sqlite3_stmt **out /* OUT */)
{
    if (s == NULL || sql == NULL || out == NULL) {
        return WS_EINVAL;
    }
    uint32_t h = store_sql_hash(sql);
    if (s->nbuckets > 0) {
        for (store_entry *e = s->buckets[h & (s->nbuckets - 1)]; e != NULL; e = e->next) {
            if (e->hash == h && strcmp(e->sql, sql) == 0) {
                sqlite3_reset(e->stmt);
                sqlite3_clear_bindings(e->stmt);
                *out = e->stmt;
                return WS_OK;
            }
        }
    }
    if (s->nentries >= s->nbuckets && store_cache_grow(s) != WS_OK) {
        return WS_ENOMEM;
    }

    sqlite3_stmt *stmt = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, &tail);
    if (rc != SQLITE_OK) {
        ws_log_error("store_prepare_failed", "path=%s rc=%d msg=%s sql=%s", s->path, rc,
                     sqlite3_errmsg(s->db), sql);
        ws_err err = ws_err_from_sqlite(rc);
        return err == WS_ENOMEM || err == WS_EBUSY ? err : WS_ESTORE;
    }
    if (stmt == NULL || (tail != NULL && !store_only_space(tail))) {
        sqlite3_finalize(stmt);
        ws_log_error("store_prepare_failed", "path=%s msg=%s sql=%s", s->path,
                     "not exactly one statement", sql);
        return WS_EINVAL;
    }
    store_entry *e = calloc(1, sizeof(*e));
    char *copy = strdup(sql);
    if (e == NULL || copy == NULL) {
        free(e);
        free(copy);
        sqlite3_finalize(stmt);
        return WS_ENOMEM;
    }
    e->hash = h;
    e->sql = copy;
    e->stmt = stmt;
    e->next = s->buckets[h & (s->nbuckets - 1)];
    s->buckets[h & (s->nbuckets - 1)] = e;
    s->nentries++;
    *out = stmt;
    return WS_OK;
}

ws_err ws_store_exec(ws_store *s, const char *sql)
{
    if (s == NULL || sql == NULL) {
        return WS_EINVAL;
    }
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        /* BUSY is expected under contention and handled by the caller's
         * retry; everything else is worth a line. */
        if (!store_rc_is_busy(rc)) {
            ws_log_error("store_exec_failed", "path=%s rc=%d msg=%s sql=%s", s->path, rc,
                         msg ? msg : sqlite3_errstr(rc), sql);
        }
        sqlite3_free(msg);
        return ws_err_from_sqlite(rc);
    }
    return WS_OK;
}

/* Run a one-row PRAGMA (or SELECT) and copy column 0 as text and/or int.
 * SQLITE_NOTFOUND when there is no row; BUSY is returned unlogged. */
static int store_query_one(ws_store *s, const char *sql, char *text, size_t textlen,
                           int *ival)
{
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            if (text != NULL && textlen > 0) {
                const unsigned char *t = sqlite3_column_text(stmt, 0);
                snprintf(text, textlen, "%s", t ? (const char *)t : "");
            }
            if (ival != NULL) {
                *ival = sqlite3_column_int(stmt, 0);
            }
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = SQLITE_NOTFOUND;
        }
    }
    if (rc != SQLITE_OK && !store_rc_is_busy(rc)) {
        ws_log_error("store_query_failed", "path=%s rc=%d msg=%s sql=%s", s->path, rc,
                     sqlite3_errmsg(s->db), sql);
    }
    sqlite3_finalize(stmt);
    return rc;
}

int ws_store_version(ws_store *s)
{
    int v = -1;
    if (s == NULL) {
        return -1;
    }
    int rc = store_query_one(s, "PRAGMA user_version", NULL, 0, &v);
    if (rc != SQLITE_OK) {
        if (store_rc_is_busy(rc)) {
            ws_log_error("store_version_busy", "path=%s", s->path);
        }
        return -1;
    }
    return v;
}

sqlite3 *ws_store_db(ws_store *s)
{
    return s ? s->db : NULL;
}

unsigned long ws_store_busy_retries(const ws_store *s)
{
    return s ? atomic_load_explicit(&s->busy_retries, memory_order_relaxed) : 0;
}

/* SQLite's own busy handler sleeps 1, 2, 5, 10 ... ms between attempts: far
 * too coarse when the other writer (a relay deleting acknowledged rows, say)
 * holds the lock for a few tens of microseconds. Poll from 20 us doubling to
 * 1 ms instead, up to the busy timeout. */
static int store_busy_handler(void *arg, int count)
{
    ws_store *s = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (count == 0) {
        s->busy_t0 = now;
    }
    long long waited_us = (long long)(now.tv_sec - s->busy_t0.tv_sec) * 1000000LL +
                          (now.tv_nsec - s->busy_t0.tv_nsec) / 1000;
    if (waited_us >= (long long)s->busy_ms * 1000LL) {
        return 0;
    }
    long us = 20L << (count < 6 ? count : 6);
    if (us > 1000) {
        us = 1000;
    }
    struct timespec ts = {.tv_sec = 0, .tv_nsec = us * 1000L};
    nanosleep(&ts, NULL);
    return 1;
}

/* Randomised exponential backoff: [base/2, base], base doubling from 100 us
 * to 20 ms, so two writers that collided do not collide again in step. */
static void store_backoff(ws_store *s, int attempt)
{
    long base = STORE_BACKOFF_MIN_US;
    for (int i = 0; i < attempt && base < STORE_BACKOFF_MAX_US; i++) {
        base *= 2;
    }
    if (base > STORE_BACKOFF_MAX_US) {
        base = STORE_BACKOFF_MAX_US;
    }
    long us = base / 2 + (long)(rand_r(&s->seed) % (unsigned)(base / 2 + 1));
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void store_txn_rollback(ws_store *s)
{
    store_cache_reset_busy(s);
    /* Some errors (IOERR, FULL, NOMEM) already rolled back for us. */
    if (!sqlite3_get_autocommit(s->db)) {
        int rc = store_ctl_run(s, STORE_ROLLBACK);
        if (rc != SQLITE_OK) {
            ws_log_error("store_rollback_failed", "path=%s rc=%d msg=%s", s->path, rc,
                         sqlite3_errmsg(s->db));
        }
    }
}

/* Inside an open group: fn runs in a savepoint of the group's transaction;
 * its failure rolls back to the savepoint only. No retry here: the group
 * holds the write lock, and a group that broke is re-run by its owner. */
static ws_err store_txn_in_group(ws_store *s, ws_store_txn_fn fn, void *ctx)
{
    int rc = store_ctl_run(s, STORE_SAVEPOINT);
    if (rc != SQLITE_OK) {
        ws_log_error("store_savepoint_failed", "path=%s rc=%d msg=%s", s->path, rc,
                     sqlite3_errmsg(s->db));
        store_fault_note(s, sqlite3_extended_errcode(s->db));
        return ws_err_from_sqlite(rc) == WS_OK ? WS_ESTORE : ws_err_from_sqlite(rc);
    }
    s->in_txn = 1;
    ws_err err = fn(s, ctx);
    s->in_txn = 0;
    store_cache_reset_busy(s);
    if (err != WS_OK) {
        store_fault_note_err(s, err);
        if (!sqlite3_get_autocommit(s->db)) {
            rc = store_ctl_run(s, STORE_ROLLBACK_TO);
            if (rc == SQLITE_OK) {
                rc = store_ctl_run(s, STORE_RELEASE);
            }
            if (rc != SQLITE_OK) {
                ws_log_error("store_savepoint_rollback_failed", "path=%s rc=%d msg=%s",
                             s->path, rc, sqlite3_errmsg(s->db));
            }
        }
        return err;
    }
    rc = store_ctl_run(s, STORE_RELEASE);
    if (rc != SQLITE_OK) {
        ws_log_error("store_release_failed", "path=%s rc=%d msg=%s", s->path, rc,
                     sqlite3_errmsg(s->db));
        store_fault_note(s, sqlite3_extended_errcode(s->db));
        return ws_err_from_sqlite(rc) == WS_OK ? WS_ESTORE : ws_err_from_sqlite(rc);
    }
    return WS_OK;
}

/* BEGIN IMMEDIATE with the bounded busy retry; "where" names the failure. */
static ws_err store_begin_retry(ws_store *s)
{
    for (int attempt = 0;; attempt++) {
        int rc = store_ctl_run(s, STORE_BEGIN);
        if (rc == SQLITE_OK) {
            return WS_OK;
        }
        if (!store_rc_is_busy(rc)) {
            ws_log_error("store_begin_failed", "path=%s rc=%d msg=%s", s->path, rc,
                         sqlite3_errmsg(s->db));
            store_fault_note(s, sqlite3_extended_errcode(s->db));
            return ws_err_from_sqlite(rc);
        }
        if (attempt >= s->retries) {
            ws_log_error("store_txn_busy", "path=%s attempts=%d at=%s", s->path,
                         attempt + 1, "begin");
            store_fault_note(s, SQLITE_BUSY);
            return WS_EBUSY;
        }
        atomic_fetch_add_explicit(&s->busy_retries, 1, memory_order_relaxed);
        store_backoff(s, attempt);
    }
}

ws_err ws_store_group_begin(ws_store *s)
{
    if (s == NULL) {
        return WS_EINVAL;
    }
    if (s->group || s->in_txn || !sqlite3_get_autocommit(s->db)) {
        ws_log_error("store_group_nested", "path=%s", s->path);
        return WS_EINVAL;
    }
    ws_err err = store_begin_retry(s);
    if (err == WS_OK) {
        s->group = 1;
    }
    return err;
}

ws_err ws_store_group_end(ws_store *s)
{
    if (s == NULL || !s->group) {
        return WS_EINVAL;
    }
    s->group = 0;
    if (sqlite3_get_autocommit(s->db)) {
        /* An error inside (IOERR, FULL, NOMEM) rolled everything back. */
        ws_log_error("store_group_lost", "path=%s", s->path);
        store_fault_note(s, atomic_load(&s->fault_rc) != 0 ? atomic_load(&s->fault_rc)
                                                           : SQLITE_ABORT);
        return WS_ESTORE;
    }
    store_cache_reset_busy(s);
    int rc = store_ctl_run(s, STORE_COMMIT);
    if (rc == SQLITE_OK) {
        store_fault_clear(s);
        return WS_OK;
    }
    ws_log_error("store_group_commit_failed", "path=%s rc=%d msg=%s", s->path, rc,
                 sqlite3_errmsg(s->db));
    store_fault_note(s, rc);
    store_txn_rollback(s);
    ws_err err = ws_err_from_sqlite(rc);
    return err == WS_OK ? WS_ESTORE : err;
}

ws_err ws_store_txn(ws_store *s, ws_store_txn_fn fn, void *ctx)
{
    if (s == NULL || fn == NULL) {
        return WS_EINVAL;
    }
    if (s->in_txn) {
        ws_log_error("store_txn_nested", "path=%s", s->path);
        return WS_EINVAL;
    }
    if (s->group && !sqlite3_get_autocommit(s->db)) {
        return store_txn_in_group(s, fn, ctx);
    }
    if (!sqlite3_get_autocommit(s->db)) {
        ws_log_error("store_txn_nested", "path=%s", s->path);
        return WS_EINVAL;
    }
    for (int attempt = 0;; attempt++) {
        const char *where;
        int rc = store_ctl_run(s, STORE_BEGIN);
        if (rc != SQLITE_OK) {
            if (!store_rc_is_busy(rc)) {
                ws_log_error("store_begin_failed", "path=%s rc=%d msg=%s", s->path, rc,
                             sqlite3_errmsg(s->db));
                store_fault_note(s, rc);
                return ws_err_from_sqlite(rc);
            }
            where = "begin";
        } else {
            s->in_txn = 1;
            ws_err err = fn(s, ctx);
            s->in_txn = 0;
            if (err != WS_OK) {
                store_fault_note_err(s, err);
                store_txn_rollback(s);
                if (err != WS_EBUSY) {
                    return err;
                }
                where = "body";
            } else {
                store_cache_reset_busy(s);
                rc = store_ctl_run(s, STORE_COMMIT);
                if (rc == SQLITE_OK) {
                    store_fault_clear(s);
                    return WS_OK;
                }
                store_txn_rollback(s);
                if (!store_rc_is_busy(rc)) {
                    ws_log_error("store_commit_failed", "path=%s rc=%d msg=%s", s->path,
                                 rc, sqlite3_errstr(rc));
                    store_fault_note(s, rc);
                    return ws_err_from_sqlite(rc);
                }
                where = "commit";
            }
        }
        if (attempt >= s->retries) {
            ws_log_error("store_txn_busy", "path=%s attempts=%d at=%s", s->path,
                         attempt + 1, where);
            store_fault_note(s, SQLITE_BUSY);
            return WS_EBUSY;
        }
        atomic_fetch_add_explicit(&s->busy_retries, 1, memory_order_relaxed);
        ws_log_debug("store_txn_retry", "path=%s attempt=%d at=%s", s->path, attempt + 1,
                     where);
        store_backoff(s, attempt);
    }
}

static int store_sync_parse(const char *name)
{
    if (name == NULL) {
        return 1; /* NORMAL */
    }
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, store_sync_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

static ws_err store_migrations_check(const ws_migration *m, size_t n)
{
    if (n > 0 && m == NULL) {
        return WS_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (m[i].version != (int)i + 1 || m[i].sql == NULL) {
            ws_log_error("store_migrations_invalid", "index=%zu version=%d expected=%zu",
                         i, m[i].version, i + 1);
            return WS_EINVAL;
        }
    }
    return WS_OK;
}

typedef struct store_migrate_ctx {
    const ws_migration *m;
    size_t n;
} store_migrate_ctx;

/* The body of the migration transaction. It re-reads the version under the
 * write lock: another process may have migrated since we looked. */
static ws_err store_migrate_fn(ws_store *s, void *arg)
{
    const store_migrate_ctx *c = arg;
    int last = c->m[c->n - 1].version;
    int cur = 0;
    int rc = store_query_one(s, "PRAGMA user_version", NULL, 0, &cur);
    if (rc != SQLITE_OK) {
        return store_rc_is_busy(rc) ? WS_EBUSY : WS_ESTORE;
    }
    if (cur > last) {
        ws_log_error("store_schema_too_new", "path=%s version=%d code_version=%d",
                     s->path, cur, last);
        return WS_ESTORE;
    }
    for (size_t i = (size_t)cur; i < c->n; i++) {
        char *msg = NULL;
        rc = sqlite3_exec(s->db, c->m[i].sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
            ws_log_error("store_migration_failed",
                         "path=%s version=%d from=%d rc=%d msg=%s", s->path,
                         c->m[i].version, cur, rc, msg ? msg : sqlite3_errstr(rc));
            sqlite3_free(msg);
            return store_rc_is_busy(rc) ? WS_EBUSY : WS_ESTORE;
        }
    }
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", last);
    if (ws_store_exec(s, sql) != WS_OK) {
        return WS_ESTORE;
    }
    if (cur < last) {
        ws_log_info("store_migrated", "path=%s from=%d to=%d", s->path, cur, last);
    }
    return WS_OK;
}

static ws_err store_migrate(ws_store *s, const ws_migration *m, size_t n, int readonly)
{
    if (n == 0) {
        return WS_OK;
    }
    int last = m[n - 1].version;
    int cur = -1;
    int rc = store_query_one(s, "PRAGMA user_version", NULL, 0, &cur);
    if (rc != SQLITE_OK && !(store_rc_is_busy(rc) && !readonly)) {
        if (store_rc_is_busy(rc)) {
            ws_log_error("store_version_busy", "path=%s", s->path);
        }
        return WS_ESTORE;
    }
    /* On BUSY (cur < 0) the transaction below reads it under the lock. */
    if (cur > last) {
        ws_log_error("store_schema_too_new", "path=%s version=%d code_version=%d",
                     s->path, cur, last);
        return WS_ESTORE;
    }
    if (cur == last) {
        return WS_OK;
    }
    if (readonly) {
        ws_log_error("store_schema_too_old", "path=%s version=%d code_version=%d",
                     s->path, cur, last);
        return WS_ESTORE;
    }
    store_migrate_ctx c = {m, n};
    ws_err err = ws_store_txn(s, store_migrate_fn, &c);
    if (err == WS_EBUSY) {
        return WS_ESTORE;
    }
    return err;
}

/* Set and read back the connection pragmas. */
/* Keep the WAL small: checkpoint every wal_pages pages, and cut the WAL
 * file back to limit bytes whenever a checkpoint resets it (without a
 * limit SQLite reuses the file at its largest size, ~4 MB by default). */
static ws_err store_wal_limits(ws_store *s, const ws_store_opts *o)
{
    int pages = o->wal_autocheckpoint == 0  ? STORE_DEFAULT_WAL_PAGES
                : o->wal_autocheckpoint < 0 ? 0
                                            : o->wal_autocheckpoint;
    int64_t limit = o->journal_size_limit == 0  ? STORE_DEFAULT_JOURNAL_LIMIT
                    : o->journal_size_limit < 0 ? -1
                                                : o->journal_size_limit;
    if (sqlite3_wal_autocheckpoint(s->db, pages) != SQLITE_OK) {
        return WS_ESTORE;
    }
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %lld", (long long)limit);
    int64_t got = 0;
    char text[32];
    if (store_query_one(s, sql, text, sizeof(text), NULL) != SQLITE_OK) {
        return WS_ESTORE;
    }
    got = strtoll(text, NULL, 10);
    if (got != limit) {
        ws_log_error("store_journal_limit_refused", "path=%s want=%lld got=%lld", s->path,
                     (long long)limit, (long long)got);
        return WS_ESTORE;
    }
    return WS_OK;
}

static ws_err store_configure(ws_store *s, int sync, const ws_store_opts *o)
{
    int readonly = o->readonly;
    char text[32];
    int v = -1;
    const char *file = sqlite3_db_filename(s->db, "main");
    if (!readonly && file != NULL && file[0] != '\0') {
        /* Switching a fresh file to WAL needs an exclusive lock, and SQLite
         * returns BUSY at once, without the busy handler, when another
         * connection is switching it too (waiting could deadlock). */
        int bound =
            s->retries > STORE_DEFAULT_RETRIES ? s->retries : STORE_DEFAULT_RETRIES;
        int rc;
        for (int attempt = 0;; attempt++) {
            rc =
                store_query_one(s, "PRAGMA journal_mode = WAL", text, sizeof(text), NULL);
            if (!store_rc_is_busy(rc) || attempt >= bound) {
                break;
            }
            store_backoff(s, attempt);
        }
        if (rc != SQLITE_OK) {
            if (store_rc_is_busy(rc)) {
                ws_log_error("store_wal_busy", "path=%s attempts=%d", s->path, bound + 1);
            }
            return ws_err_from_sqlite(rc) == WS_EBUSY ? WS_EBUSY : WS_ESTORE;
        }
        if (strcasecmp(text, "wal") != 0) {
            ws_log_error("store_wal_refused", "path=%s journal_mode=%s", s->path, text);
            return WS_ESTORE;
        }
        if (store_wal_limits(s, o) != WS_OK) {
            return WS_ESTORE;
        }
    }
    if (ws_store_exec(s, "PRAGMA foreign_keys = ON") != WS_OK) {
        return WS_ESTORE;
    }
    if (store_query_one(s, "PRAGMA foreign_keys", NULL, 0, &v) != SQLITE_OK || v != 1) {
        ws_log_error("store_foreign_keys_refused", "path=%s value=%d", s->path, v);
        return WS_ESTORE;
    }
    char sql[48];
    snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s", store_sync_names[sync]);
    if (ws_store_exec(s, sql) != WS_OK) {
        return WS_ESTORE;
    }
    if (store_query_one(s, "PRAGMA synchronous", NULL, 0, &v) != SQLITE_OK || v != sync) {
        ws_log_error("store_synchronous_refused", "path=%s want=%s got=%d", s->path,
                     store_sync_names[sync], v);
        return WS_ESTORE;
    }
    return WS_OK;
}

ws_err ws_store_open(const ws_store_opts *opts, const ws_migration *migrations, size_t n,
                     ws_store **out /* OUT */)
{
    if (opts == NULL || opts->path == NULL || out == NULL) {
        return WS_EINVAL;
    }
    int sync = store_sync_parse(opts->synchronous);
    if (sync < 0) {
        ws_log_error("store_bad_synchronous", "path=%s value=%s expected=%s", opts->path,
                     opts->synchronous, "OFF|NORMAL|FULL|EXTRA");
        return WS_EINVAL;
    }
    ws_err err = store_migrations_check(migrations, n);
    if (err != WS_OK) {
        return err;
    }

    ws_store *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return WS_ENOMEM;
    }
    s->path = strdup(opts->path);
    if (s->path == NULL) {
        free(s);
        return WS_ENOMEM;
    }
    s->retries = opts->txn_retries == 0  ? STORE_DEFAULT_RETRIES
                 : opts->txn_retries < 0 ? 0
                                         : opts->txn_retries;
    s->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)s;

    int flags = SQLITE_OPEN_NOMUTEX |
                (opts->readonly ? SQLITE_OPEN_READONLY
                                : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    int rc = sqlite3_open_v2(opts->path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        ws_log_error("store_open_failed", "path=%s rc=%d msg=%s", s->path, rc,
                     s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        err = ws_err_from_sqlite(rc);
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    int busy = opts->busy_timeout_ms == 0  ? STORE_DEFAULT_BUSY_MS
               : opts->busy_timeout_ms < 0 ? 0
                                           : opts->busy_timeout_ms;
    s->busy_ms = busy;
    if (busy > 0) {
        sqlite3_busy_handler(s->db, store_busy_handler, s);
    } else {
        sqlite3_busy_timeout(s->db, 0);
    }

    store_fault_gauge(0); /* the gauge shows 0 from the first open on */
    err = store_configure(s, sync, opts);
    if (err != WS_OK) {
        goto fail;
    }
    err = store_migrate(s, migrations, n, opts->readonly);
    if (err != WS_OK) {
        goto fail;
    }
    *out = s;
    return WS_OK;

fail:
    ws_store_close(s);
    return err == WS_OK ? WS_ESTORE : err;
}

void ws_store_close(ws_store *s)
{
    if (s == NULL) {
        return;
    }
    if (atomic_load(&s->fault_rc) != 0) {
        store_fault_gauge(-1); /* this connection no longer counts */
    }
    store_cache_free(s);
    if (s->db != NULL) {
        int rc = sqlite3_close(s->db);
        if (rc != SQLITE_OK) {
            /* Statements the caller prepared itself are still alive: say so,
             * and let SQLite free the handle once they are finalized. */
            ws_log_error("store_close_busy", "path=%s rc=%d msg=%s", s->path, rc,
                         sqlite3_errmsg(s->db));
            sqlite3_close_v2(s->db);
        }
    }
    free(s->path);
    free(s);
}

/* ---- checks at start and checkpoints ------------------------------------ */

typedef struct store_check_clock {
    int64_t deadline_ms;
    int expired;
} store_check_clock;

/* Progress handler of the quick_check: interrupt it past its budget. */
static int store_check_progress(void *arg)
{
    store_check_clock *c = arg;
    if (store_mono_ms() > c->deadline_ms) {
        c->expired = 1;
        return 1;
    }
    return 0;
}

/* Append text to detail as one line: newlines become "; ". */
static void store_detail_append(char *detail, size_t cap, const char *text)
{
    if (detail == NULL || cap == 0) {
        return;
    }
    size_t n = strlen(detail);
    if (n > 0 && n + 2 < cap) {
        detail[n++] = ';';
        detail[n++] = ' ';
    }
    for (const char *p = text; *p != '\0' && n + 1 < cap; p++) {
        if (*p == '\n' || *p == '\r') {
            if (n + 2 < cap) {
                detail[n++] = ';';
                detail[n++] = ' ';
            }
        } else {
            detail[n++] = *p == '"' ? '\'' : *p;
        }
    }
    detail[n] = '\0';
}

/* The schema version must be one this program knows, and a version 0 file
 * must be empty. */
static ws_err store_check_version(ws_store *s, int want, char *detail, size_t cap)
{
    int v = -1;
    char text[96];
    if (store_query_one(s, "PRAGMA user_version", NULL, 0, &v) != SQLITE_OK) {
        store_detail_append(detail, cap, sqlite3_errmsg(s->db));
        return WS_ESTORE;
    }
    if (want >= 0 && v > want) {
        snprintf(text, sizeof(text), "schema version %d is newer than this program's %d",
                 v, want);
        store_detail_append(detail, cap, text);
        return WS_ESTORE;
    }
    int tables = 0;
    if (store_query_one(s,
                        "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
                        " AND name NOT LIKE 'sqlite_%'",
                        NULL, 0, &tables) != SQLITE_OK) {
        store_detail_append(detail, cap, sqlite3_errmsg(s->db));
        return WS_ESTORE;
    }
    if (v == 0 && tables > 0) {
        snprintf(text, sizeof(text), "schema version 0 but %d tables", tables);
        store_detail_append(detail, cap, text);
        return WS_ESTORE;
    }
    return WS_OK;
}

/* PRAGMA quick_check within budget_ms; the first few problems in detail. */
static ws_err store_quick_check(ws_store *s, uint32_t budget_ms, char *detail, size_t cap)
{
    store_check_clock clock = {.deadline_ms = store_mono_ms() + budget_ms};
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA quick_check(8)", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        store_detail_append(detail, cap, sqlite3_errmsg(s->db));
        return WS_ESTORE;
    }
    sqlite3_progress_handler(s->db, 1000, store_check_progress, &clock);
    ws_err err = WS_OK;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *row = (const char *)sqlite3_column_text(st, 0);
        if (row != NULL && strcmp(row, "ok") != 0) {
            store_detail_append(detail, cap, row);
            err = WS_ESTORE;
        }
    }
    if (rc != SQLITE_DONE) {
        if (clock.expired) {
            char text[96];
            snprintf(text, sizeof(text), "quick_check did not finish within %u ms",
                     budget_ms);
            store_detail_append(detail, cap, text);
            err = err == WS_OK ? WS_ETIMEDOUT : err;
        } else {
            store_detail_append(detail, cap, sqlite3_errmsg(s->db));
            err = WS_ESTORE;
        }
    }
    sqlite3_progress_handler(s->db, 0, NULL, NULL);
    sqlite3_finalize(st);
    return err;
}

ws_err ws_store_check(ws_store *s, int want_version, uint32_t budget_ms, char *detail,
                      size_t cap)
{
    if (s == NULL) {
        return WS_EINVAL;
    }
    if (detail != NULL && cap > 0) {
        detail[0] = '\0';
    }
    ws_err err = store_check_version(s, want_version, detail, cap);
    if (err == WS_OK && budget_ms > 0) {
        err = store_quick_check(s, budget_ms, detail, cap);
    }
    return err;
}

ws_err ws_store_checkpoint(ws_store *s, bool truncate)
{
    if (s == NULL) {
        return WS_EINVAL;
    }
    const char *file = sqlite3_db_filename(s->db, "main");
    if (file == NULL || file[0] == '\0') {
        return WS_OK;
    }
    int frames = -1, done = -1;
    int rc = sqlite3_wal_checkpoint_v2(
        s->db, "main", truncate ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE,
        &frames, &done);
    ws_err err = ws_err_from_sqlite(rc);
    if (err == WS_OK && truncate && frames > 0 && done < frames) {
        err = WS_EBUSY;
    }
    ws_log(err == WS_OK ? WS_LOG_INFO : WS_LOG_WARN, "store_checkpoint",
           "path=%s mode=%s wal_frames=%d checkpointed=%d result=%s", s->path,
           truncate ? "truncate" : "passive", frames, done, ws_errname(err));
    return err;
}

ws_err ws_store_check_path(const char *path, int want_version, uint32_t budget_ms,
                           char *detail, size_t cap)
{
    if (path == NULL) {
        return WS_EINVAL;
    }
    if (detail != NULL && cap > 0) {
        detail[0] = '\0';
    }
    /* A bare connection: no pragma is set, no migration runs, nothing is
     * written to a file that may be damaged. */
    ws_store s = {.path = (char *)path};
    int rc = sqlite3_open_v2(
        path, &s.db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
        NULL);
    ws_err err;
    if (rc != SQLITE_OK) {
        store_detail_append(detail, cap,
                            s.db != NULL ? sqlite3_errmsg(s.db) : sqlite3_errstr(rc));
        err = ws_err_from_sqlite(rc) == WS_EIO ? WS_EIO : WS_ESTORE;
    } else {
        sqlite3_extended_result_codes(s.db, 1);
        sqlite3_busy_timeout(s.db, STORE_DEFAULT_BUSY_MS);
        err = ws_store_check(&s, want_version, budget_ms, detail, cap);
    }
    sqlite3_close(s.db);
    return err;
}
