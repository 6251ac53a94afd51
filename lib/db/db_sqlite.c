/*
 * The SQLite engine of lib/db. One connection is one sqlite3 handle opened
 * without SQLite's own mutex (lib/db hands a connection to one thread at a
 * time), in WAL mode with the pool's `synchronous`, foreign keys on, and a
 * busy handler that polls finely up to the busy timeout; every setting is
 * read back. Transactions are BEGIN IMMEDIATE (the write lock is taken at
 * BEGIN, so a conflict shows there, before fn runs) or BEGIN DEFERRED for a
 * read-only one, in which a statement that would write is refused before it
 * runs (sqlite3_stmt_readonly; not PRAGMA query_only, whose every change
 * expires all prepared statements, so that each cached statement would be
 * compiled again in the next transaction). $N placeholders are rewritten
 * ?N, which SQLite binds by the same position. Result codes are extended
 * ones; the translation is the table in sqlite_err().
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "db_int.h"

typedef struct sqlite_conn {
    ws_db_conn base;
    sqlite3 *db;
    sqlite3_stmt *ctl[7];    /* sqlite_ctl_sql, prepared on first use */
    int read_txn;            /* in a read-only transaction: writes are refused */
    struct timespec busy_t0; /* when the current busy wait began */
} sqlite_conn;

typedef struct sqlite_stmt {
    ws_db_stmt base;
    sqlite3_stmt *st;
    int readonly;
    int64_t changes;
} sqlite_stmt;

enum {
    CTL_BEGIN_IMMEDIATE,
    CTL_BEGIN,
    CTL_COMMIT,
    CTL_ROLLBACK,
    CTL_SAVEPOINT, /* lib/db's group commit: one per message of a group */
    CTL_RELEASE,
    CTL_ROLLBACK_TO,
    CTL_N
};
static const char *const sqlite_ctl_sql[CTL_N] = {
    "BEGIN IMMEDIATE",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    WS__DB_SQL_SAVEPOINT,
    "RELEASE SAVEPOINT ws_db_group",
    "ROLLBACK TO SAVEPOINT ws_db_group",
};
static const char *const sqlite_sync_names[4] = {"OFF", "NORMAL", "FULL", "EXTRA"};

static sqlite_conn *sqlite_of(ws_db_conn *c)
{
    return (sqlite_conn *)c;
}

static sqlite_stmt *sqlite_stmt_of(ws_db_stmt *s)
{
    return (sqlite_stmt *)s;
}

/* The translation of an extended result code. */
static ws_err sqlite_err(int rc)
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
        return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY
                   ? WS_EEXIST
                   : WS_ESTORE;
    case SQLITE_TOOBIG:
        return WS_ETOOBIG;
    case SQLITE_RANGE:
        return WS_ERANGE;
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

/* Record rc (with the handle's message) on c; returns the translation. */
static ws_err sqlite_fail(sqlite_conn *sc, int rc, const char *msg)
{
    ws_err err = sqlite_err(rc);
    if (err == WS_OK) {
        err = WS_ESTORE; /* a success code where a failure was expected */
    }
    if ((rc & 0xff) == SQLITE_READONLY && sc->read_txn) {
        err = WS_EINVAL; /* a write in a read-only transaction: the caller's bug */
    }
    return ws__db_fail(&sc->base, err, rc, NULL, msg ? msg : sqlite3_errmsg(sc->db));
}

/* SQLite's own busy handler sleeps 1, 2, 5, 10 ... ms: too coarse when the
 * other writer holds the lock for tens of microseconds. Poll from 20 us
 * doubling to 1 ms instead, up to the busy timeout. */
static int sqlite_busy_handler(void *arg, int count)
{
    sqlite_conn *sc = arg;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (count == 0) {
        sc->busy_t0 = now;
    }
    long long waited_us = (long long)(now.tv_sec - sc->busy_t0.tv_sec) * 1000000LL +
                          (now.tv_nsec - sc->busy_t0.tv_nsec) / 1000;
    if (waited_us >= (long long)sc->base.pool->busy_timeout_ms * 1000LL) {
        return 0;
    }
    long us = 20L << (count < 6 ? count : 6);
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (us > 1000 ? 1000 : us) * 1000L};
    nanosleep(&ts, NULL);
    return 1;
}

/* Run a one-row PRAGMA and return column 0 as text and int. */
static int sqlite_pragma(sqlite_conn *sc, const char *sql, char *text, size_t len,
                         int *ival)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(sc->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            const unsigned char *t = sqlite3_column_text(st, 0);
            if (text != NULL) {
                snprintf(text, len, "%s", t ? (const char *)t : "");
            }
            if (ival != NULL) {
                *ival = sqlite3_column_int(st, 0);
            }
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            rc = text || ival ? SQLITE_NOTFOUND : SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* WAL (retrying: a concurrent switch returns BUSY without waiting), foreign
 * keys and synchronous, each read back. */
static ws_err sqlite_configure(sqlite_conn *sc)
{
    char text[32] = "";
    int v = -1;
    int rc = SQLITE_OK;
    if (strcmp(sc->base.pool->target, ":memory:") != 0) {
        for (int attempt = 0; attempt < 50; attempt++) {
            rc = sqlite_pragma(sc, "PRAGMA journal_mode = WAL", text, sizeof(text), NULL);
            if (sqlite_err(rc) != WS_EBUSY) {
                break;
            }
            struct timespec ts = {0, 1000000L * (attempt + 1)};
            nanosleep(&ts, NULL);
        }
        if (rc != SQLITE_OK) {
            return sqlite_fail(sc, rc, NULL);
        }
        if (strcasecmp(text, "wal") != 0) {
            return sqlite_fail(sc, SQLITE_ERROR, "journal_mode WAL refused");
        }
    }
    rc = sqlite_pragma(sc, "PRAGMA foreign_keys = ON", NULL, 0, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite_pragma(sc, "PRAGMA foreign_keys", NULL, 0, &v);
    }
    if (rc != SQLITE_OK || v != 1) {
        return sqlite_fail(sc, rc != SQLITE_OK ? rc : SQLITE_ERROR,
                           "foreign_keys refused");
    }
    char sql[64];
    snprintf(sql, sizeof(sql), "PRAGMA wal_autocheckpoint = %d",
             sc->base.pool->wal_autocheckpoint);
    rc = sqlite_pragma(sc, sql, NULL, 0, NULL);
    if (rc == SQLITE_OK) {
        snprintf(sql, sizeof(sql), "PRAGMA journal_size_limit = %lld",
                 sc->base.pool->journal_size_limit);
        rc = sqlite_pragma(sc, sql, NULL, 0, NULL);
    }
    if (rc != SQLITE_OK) {
        return sqlite_fail(sc, rc, "WAL limits refused");
    }
    int sync = sc->base.pool->synchronous;
    snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s", sqlite_sync_names[sync]);
    rc = sqlite_pragma(sc, sql, NULL, 0, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite_pragma(sc, "PRAGMA synchronous", NULL, 0, &v);
    }
    if (rc != SQLITE_OK || v != sync) {
        return sqlite_fail(sc, rc != SQLITE_OK ? rc : SQLITE_ERROR,
                           "synchronous refused");
    }
    return WS_OK;
}

static void sqlite_conn_close(ws_db_conn *c)
{
    sqlite_conn *sc = sqlite_of(c);
    if (sc == NULL) {
        return;
    }
    for (int i = 0; i < CTL_N; i++) {
        sqlite3_finalize(sc->ctl[i]);
    }
    sqlite3_close(sc->db);
    free(sc);
}

static ws_err sqlite_conn_open(ws_db *db, ws_db_conn **out, ws_db_error *err)
{
    sqlite_conn *sc = calloc(1, sizeof(*sc));
    if (sc == NULL) {
        ws__db_error_set(err, WS_DB_SQLITE, WS_ENOMEM, SQLITE_NOMEM, NULL, NULL);
        return WS_ENOMEM;
    }
    sc->base.pool = db;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(db->target, &sc->db, flags, NULL);
    ws_err e = WS_OK;
    if (rc != SQLITE_OK) {
        e = sqlite_fail(sc, sc->db ? sqlite3_extended_errcode(sc->db) : rc, NULL);
    } else {
        sqlite3_extended_result_codes(sc->db, 1);
        sqlite3_busy_handler(sc->db, db->busy_timeout_ms > 0 ? sqlite_busy_handler : NULL,
                             sc);
        e = sqlite_configure(sc);
    }
    if (e != WS_OK) {
        *err = sc->base.err;
        sqlite_conn_close(&sc->base);
        return e;
    }
    *out = &sc->base;
    return WS_OK;
}

static bool sqlite_conn_ok(ws_db_conn *c)
{
    (void)c;
    return true;
}

static ws_err sqlite_conn_reset(ws_db_conn *c)
{
    (void)c;
    return WS_OK;
}

static int sqlite_ctl(sqlite_conn *sc, int which)
{
    if (sc->ctl[which] == NULL) {
        int rc = sqlite3_prepare_v3(sc->db, sqlite_ctl_sql[which], -1,
                                    SQLITE_PREPARE_PERSISTENT, &sc->ctl[which], NULL);
        if (rc != SQLITE_OK) {
            return rc;
        }
    }
    int rc = sqlite3_step(sc->ctl[which]);
    sqlite3_reset(sc->ctl[which]);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* A write inside a read-only transaction: refused before it runs, with
 * SQLITE_READONLY as PostgreSQL's READ ONLY refuses it (WS_EINVAL). */
static ws_err sqlite_refuse_write(sqlite_conn *sc)
{
    return sqlite_fail(sc, SQLITE_READONLY,
                       "attempt to write in a read-only transaction");
}

static void sqlite_rollback(ws_db_conn *c)
{
    sqlite_conn *sc = sqlite_of(c);
    /* Some errors (IOERR, FULL, NOMEM) rolled back already. */
    if (!sqlite3_get_autocommit(sc->db)) {
        sqlite_ctl(sc, CTL_ROLLBACK);
    }
    sc->read_txn = 0;
}

static void sqlite_conn_cleanup(ws_db_conn *c)
{
    sqlite_rollback(c);
}

static ws_err sqlite_begin(ws_db_conn *c, const ws_db_txn_opts *o)
{
    sqlite_conn *sc = sqlite_of(c);
    int rc = sqlite_ctl(sc, o->read_only ? CTL_BEGIN : CTL_BEGIN_IMMEDIATE);
    sc->read_txn = rc == SQLITE_OK && o->read_only;
    return rc == SQLITE_OK ? WS_OK : sqlite_fail(sc, rc, NULL);
}

static ws_err sqlite_commit(ws_db_conn *c)
{
    sqlite_conn *sc = sqlite_of(c);
    if (sqlite3_get_autocommit(sc->db)) {
        /* An error inside (IOERR, FULL) already rolled the whole thing back. */
        return ws__db_fail(c, c->err.err != WS_OK ? c->err.err : WS_ESTORE,
                           c->err.sqlite_code, NULL,
                           "transaction was rolled back by an earlier error");
    }
    int rc = sqlite_ctl(sc, CTL_COMMIT);
    if (rc == SQLITE_OK) {
        sc->read_txn = 0;
    }
    return rc == SQLITE_OK ? WS_OK : sqlite_fail(sc, rc, NULL);
}

/* sql's statements one by one, each refused if it would write. */
static ws_err sqlite_exec_read_only(sqlite_conn *sc, const char *sql)
{
    while (sql != NULL && *sql != '\0') {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(sc->db, sql, -1, &st, &sql);
        if (rc != SQLITE_OK) {
            return sqlite_fail(sc, rc, NULL);
        }
        if (st == NULL) { /* whitespace or a comment */
            continue;
        }
        if (!sqlite3_stmt_readonly(st)) {
            sqlite3_finalize(st);
            return sqlite_refuse_write(sc);
        }
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        }
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) {
            return sqlite_fail(sc, rc, NULL);
        }
    }
    return WS_OK;
}

static ws_err sqlite_exec(ws_db_conn *c, const char *sql)
{
    sqlite_conn *sc = sqlite_of(c);
    /* The savepoints of a group run once per message: kept prepared
     * rather than compiled by sqlite3_exec every time. */
    for (int i = CTL_SAVEPOINT; i < CTL_N; i++) {
        if (strcmp(sql, sqlite_ctl_sql[i]) == 0) {
            int rc = sqlite_ctl(sc, i);
            return rc == SQLITE_OK ? WS_OK : sqlite_fail(sc, rc, NULL);
        }
    }
    /* lib/db's pairs (db_int.h), as two of the prepared statements. */
    int pair[2] = {-1, -1};
    if (strcmp(sql, WS__DB_SQL_RELEASE_SAVEPOINT) == 0) {
        pair[0] = CTL_RELEASE, pair[1] = CTL_SAVEPOINT;
    } else if (strcmp(sql, WS__DB_SQL_ROLLBACK_TO) == 0) {
        pair[0] = CTL_ROLLBACK_TO, pair[1] = CTL_RELEASE;
    }
    if (pair[0] >= 0) {
        for (int i = 0; i < 2; i++) {
            int rc = sqlite_ctl(sc, pair[i]);
            if (rc != SQLITE_OK) {
                return sqlite_fail(sc, rc, NULL);
            }
        }
        return WS_OK;
    }
    if (sc->read_txn) {
        return sqlite_exec_read_only(sc, sql);
    }
    char *msg = NULL;
    int rc = sqlite3_exec(sc->db, sql, NULL, NULL, &msg);
    ws_err err = WS_OK;
    if (rc != SQLITE_OK) {
        err = sqlite_fail(sc, rc, msg);
    }
    sqlite3_free(msg);
    return err;
}

/* ---- statements ----------------------------------------------------------- */

static ws_err sqlite_prepare(ws_db_conn *c, const char *sql, int nparams,
                             ws_db_stmt **out)
{
    sqlite_conn *sc = sqlite_of(c);
    size_t len = strlen(sql);
    char *q = malloc(len + 1);
    sqlite_stmt *ss = calloc(1, sizeof(*ss));
    if (q == NULL || ss == NULL) {
        free(q);
        free(ss);
        return ws__db_fail(c, WS_ENOMEM, SQLITE_NOMEM, NULL, NULL);
    }
    ws__db_sql_info info;
    ws__db_sql_scan(sql, &info, q);
    int rc = sqlite3_prepare_v3(sc->db, q, (int)len + 1, SQLITE_PREPARE_PERSISTENT,
                                &ss->st, NULL);
    free(q);
    if (rc != SQLITE_OK || ss->st == NULL) {
        sqlite3_finalize(ss->st);
        free(ss);
        return sqlite_fail(sc, rc != SQLITE_OK ? rc : SQLITE_ERROR, NULL);
    }
    if (sqlite3_bind_parameter_count(ss->st) > nparams) {
        sqlite3_finalize(ss->st);
        free(ss);
        return ws__db_fail(c, WS_EINVAL, 0, NULL,
                           "named parameters are not portable: use $N");
    }
    ss->readonly = sqlite3_stmt_readonly(ss->st);
    *out = &ss->base;
    return WS_OK;
}

static void sqlite_stmt_free(ws_db_stmt *s)
{
    sqlite_stmt *ss = sqlite_stmt_of(s);
    sqlite3_finalize(ss->st);
    free(ss);
}

static void sqlite_stmt_reset(ws_db_stmt *s)
{
    sqlite_stmt *ss = sqlite_stmt_of(s);
    sqlite3_reset(ss->st);
    sqlite3_clear_bindings(ss->st);
    ss->changes = 0;
}

static ws_err sqlite_bind_rc(ws_db_stmt *s, int rc)
{
    return rc == SQLITE_OK ? WS_OK : sqlite_fail(sqlite_of(s->conn), rc, NULL);
}

static ws_err sqlite_bind_int64(ws_db_stmt *s, int pos, int64_t v)
{
    return sqlite_bind_rc(s, sqlite3_bind_int64(sqlite_stmt_of(s)->st, pos, v));
}

static ws_err sqlite_bind_text(ws_db_stmt *s, int pos, const char *v)
{
    return sqlite_bind_rc(
        s, sqlite3_bind_text(sqlite_stmt_of(s)->st, pos, v, -1, SQLITE_TRANSIENT));
}

static ws_err sqlite_bind_null(ws_db_stmt *s, int pos)
{
    return sqlite_bind_rc(s, sqlite3_bind_null(sqlite_stmt_of(s)->st, pos));
}

static ws_err sqlite_bind_blob(ws_db_stmt *s, int pos, const void *data, size_t len)
{
    if (len > (size_t)INT32_MAX) {
        return ws__db_fail(s->conn, WS_ETOOBIG, SQLITE_TOOBIG, NULL, "blob too big");
    }
    /* A zero-length blob must still be a blob, not NULL. */
    return sqlite_bind_rc(s, sqlite3_bind_blob(sqlite_stmt_of(s)->st, pos,
                                               len ? data : (const void *)"", (int)len,
                                               SQLITE_TRANSIENT));
}

static ws_err sqlite_step(ws_db_stmt *s, bool *row)
{
    sqlite_stmt *ss = sqlite_stmt_of(s);
    if (!ss->readonly && sqlite_of(s->conn)->read_txn) {
        return sqlite_refuse_write(sqlite_of(s->conn));
    }
    int rc = sqlite3_step(ss->st);
    if (rc == SQLITE_ROW) {
        *row = true;
        return WS_OK;
    }
    if (rc == SQLITE_DONE) {
        sqlite3 *db = sqlite_of(s->conn)->db;
        ss->changes = ss->readonly ? 0 : sqlite3_changes64(db);
        *row = false;
        return WS_OK;
    }
    return sqlite_fail(sqlite_of(s->conn), rc, NULL);
}

static int sqlite_column_count(ws_db_stmt *s)
{
    return sqlite3_data_count(sqlite_stmt_of(s)->st);
}

static int64_t sqlite_column_int64(ws_db_stmt *s, int col)
{
    return sqlite3_column_int64(sqlite_stmt_of(s)->st, col);
}

static const char *sqlite_column_text(ws_db_stmt *s, int col)
{
    return (const char *)sqlite3_column_text(sqlite_stmt_of(s)->st, col);
}

static const void *sqlite_column_blob(ws_db_stmt *s, int col, size_t *len)
{
    sqlite3_stmt *st = sqlite_stmt_of(s)->st;
    if (sqlite3_column_type(st, col) == SQLITE_NULL) {
        *len = 0;
        return NULL;
    }
    const void *p = sqlite3_column_blob(st, col);
    *len = (size_t)sqlite3_column_bytes(st, col);
    return p != NULL ? p : (const void *)"";
}

static bool sqlite_column_is_null(ws_db_stmt *s, int col)
{
    return sqlite3_column_type(sqlite_stmt_of(s)->st, col) == SQLITE_NULL;
}

static int64_t sqlite_changes(ws_db_stmt *s)
{
    return sqlite_stmt_of(s)->changes;
}

/* ---- schema version: PRAGMA user_version, as lib/store keeps it ----------- */

static ws_err sqlite_schema_version(ws_db_conn *c, int *out)
{
    sqlite_conn *sc = sqlite_of(c);
    int v = 0;
    int rc = sqlite_pragma(sc, "PRAGMA user_version", NULL, 0, &v);
    if (rc != SQLITE_OK) {
        return sqlite_fail(sc, rc, NULL);
    }
    *out = v;
    return WS_OK;
}

static ws_err sqlite_migrate_begin(ws_db_conn *c)
{
    (void)c; /* BEGIN IMMEDIATE already holds the write lock */
    return WS_OK;
}

static ws_err sqlite_schema_version_set(ws_db_conn *c, int from, int to)
{
    (void)from;
    char sql[48];
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", to);
    return sqlite_exec(c, sql);
}

static bool sqlite_has(ws_db_feature f)
{
    return f == WS_DB_RETURNING || f == WS_DB_ON_CONFLICT;
}

static bool sqlite_txn_open(ws_db_conn *c)
{
    return !sqlite3_get_autocommit(sqlite_of(c)->db);
}

/* The short reason /readyz shows; NULL when the program is at fault. */
static const char *sqlite_fault_text(const ws_db_error *e)
{
    switch (e->sqlite_code & 0xff) {
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
    case SQLITE_PROTOCOL:
    case SQLITE_NOLFS:
        return "database file locking failed";
    default:
        return NULL;
    }
}

static ws_err sqlite_checkpoint(ws_db_conn *c, bool truncate, int *frames, int *done)
{
    sqlite_conn *sc = sqlite_of(c);
    const char *file = sqlite3_db_filename(sc->db, "main");
    if (file == NULL || file[0] == '\0') {
        return WS_OK; /* :memory: */
    }
    int rc = sqlite3_wal_checkpoint_v2(
        sc->db, "main", truncate ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE,
        frames, done);
    if (rc != SQLITE_OK) {
        return sqlite_fail(sc, rc, NULL);
    }
    return truncate && *frames > 0 && *done < *frames ? WS_EBUSY : WS_OK;
}

/* ---- the check before start (ws_db_check_url) ------------------------------ */

typedef struct sqlite_check_clock {
    long long deadline_ms;
    int expired;
} sqlite_check_clock;

/* Progress handler of the quick_check: interrupt it past its budget. */
static int sqlite_check_progress(void *arg)
{
    sqlite_check_clock *k = arg;
    if (ws__db_now_ms() > k->deadline_ms) {
        k->expired = 1;
        return 1;
    }
    return 0;
}

static int sqlite_query_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *out = sqlite3_column_int(st, 0);
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* The schema version must be one this program knows, and a version 0 file
 * must hold no table. */
static ws_err sqlite_check_version(sqlite3 *db, int want, char *detail, size_t cap)
{
    int v = -1, tables = 0;
    char text[96];
    if (sqlite_query_int(db, "PRAGMA user_version", &v) != SQLITE_OK ||
        sqlite_query_int(db,
                         "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"
                         " AND name NOT LIKE 'sqlite_%'",
                         &tables) != SQLITE_OK) {
        ws__db_detail_append(detail, cap, sqlite3_errmsg(db));
        return WS_ESTORE;
    }
    if (want >= 0 && v > want) {
        snprintf(text, sizeof(text), "schema version %d is newer than this program's %d",
                 v, want);
        ws__db_detail_append(detail, cap, text);
        return WS_ESTORE;
    }
    if (v == 0 && tables > 0) {
        snprintf(text, sizeof(text), "schema version 0 but %d tables", tables);
        ws__db_detail_append(detail, cap, text);
        return WS_ESTORE;
    }
    return WS_OK;
}

/* PRAGMA quick_check within budget_ms; the first few problems in detail. */
static ws_err sqlite_quick_check(sqlite3 *db, uint32_t budget_ms, char *detail,
                                 size_t cap)
{
    sqlite_check_clock k = {.deadline_ms = ws__db_now_ms() + budget_ms};
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA quick_check(8)", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        ws__db_detail_append(detail, cap, sqlite3_errmsg(db));
        return WS_ESTORE;
    }
    sqlite3_progress_handler(db, 1000, sqlite_check_progress, &k);
    ws_err err = WS_OK;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *row = (const char *)sqlite3_column_text(st, 0);
        if (row != NULL && strcmp(row, "ok") != 0) {
            ws__db_detail_append(detail, cap, row);
            err = WS_ESTORE;
        }
    }
    if (rc != SQLITE_DONE) {
        if (k.expired) {
            char text[96];
            snprintf(text, sizeof(text), "quick_check did not finish within %u ms",
                     budget_ms);
            ws__db_detail_append(detail, cap, text);
            err = err == WS_OK ? WS_ETIMEDOUT : err;
        } else {
            ws__db_detail_append(detail, cap, sqlite3_errmsg(db));
            err = WS_ESTORE;
        }
    }
    sqlite3_progress_handler(db, 0, NULL, NULL);
    sqlite3_finalize(st);
    return err;
}

/* A bare connection: no pragma is set, no migration runs, nothing is
 * written to a file that may be damaged (an absent file is created empty). */
static ws_err sqlite_check(const char *path, int want_version, uint32_t budget_ms,
                           char *detail, size_t cap)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
        NULL);
    ws_err err;
    if (rc != SQLITE_OK) {
        ws__db_detail_append(detail, cap,
                             db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        err = sqlite_err(rc) == WS_EIO ? WS_EIO : WS_ESTORE;
    } else {
        sqlite3_extended_result_codes(db, 1);
        sqlite3_busy_timeout(db, 5000);
        err = sqlite_check_version(db, want_version, detail, cap);
        if (err == WS_OK && budget_ms > 0) {
            err = sqlite_quick_check(db, budget_ms, detail, cap);
        }
    }
    sqlite3_close(db);
    return err;
}

const ws__db_ops ws__db_sqlite_ops = {
    .engine = WS_DB_SQLITE,
    .conn_open = sqlite_conn_open,
    .conn_close = sqlite_conn_close,
    .conn_ok = sqlite_conn_ok,
    .conn_reset = sqlite_conn_reset,
    .conn_cleanup = sqlite_conn_cleanup,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .exec = sqlite_exec,
    .prepare = sqlite_prepare,
    .stmt_free = sqlite_stmt_free,
    .stmt_reset = sqlite_stmt_reset,
    .bind_int64 = sqlite_bind_int64,
    .bind_text = sqlite_bind_text,
    .bind_null = sqlite_bind_null,
    .bind_blob = sqlite_bind_blob,
    .step = sqlite_step,
    .column_count = sqlite_column_count,
    .column_int64 = sqlite_column_int64,
    .column_text = sqlite_column_text,
    .column_is_null = sqlite_column_is_null,
    .column_blob = sqlite_column_blob,
    .changes = sqlite_changes,
    .schema_version = sqlite_schema_version,
    .migrate_begin = sqlite_migrate_begin,
    .schema_version_set = sqlite_schema_version_set,
    .has = sqlite_has,
    .txn_open = sqlite_txn_open,
    .fault_text = sqlite_fault_text,
    .checkpoint = sqlite_checkpoint,
    .check = sqlite_check,
};
