/*
 * lib/db: the engine-neutral database layer under the storage adapters. A
 * ws_db is a pool of connections to one database, opened from a URL:
 *
 *   sqlite:PATH, sqlite:///ABS/PATH, or a plain PATH   -> SQLite
 *   postgresql://... or postgres://...                 -> PostgreSQL (libpq URI)
 *   a libpq keyword string ("host=/run/pg dbname=shop") -> PostgreSQL
 *
 * Anything else (another scheme, an empty string, a string libpq cannot
 * parse) is refused with WS_EINVAL and a log line saying why. A plain path is
 * a string with no "scheme:" prefix whose first word is not "keyword=". URLs
 * are logged with their password replaced by "***" (ws_db_url_redact).
 *
 * What every engine promises the code above it:
 *   - SQLite connections run WAL, synchronous=NORMAL (configurable), foreign
 *     keys on and a busy timeout; each setting is read back.
 *   - A transaction (ws_db_txn) is retried as a whole, a bounded number of
 *     times with jittered exponential backoff, when it meets SQLite
 *     BUSY/LOCKED or PostgreSQL SQLSTATE 40001 (serialization failure),
 *     40P01 (deadlock) or 55P03 (lock not available). SQLite transactions
 *     are BEGIN IMMEDIATE (serializable: one writer at a time); PostgreSQL
 *     transactions are READ COMMITTED unless the call asks for REPEATABLE
 *     READ or SERIALIZABLE.
 *   - Statements are written once for both engines with $1, $2 ...
 *     placeholders (PostgreSQL's native form; the SQLite engine rewrites
 *     them to ?1, ?2 ..., which bind by the same position). A bare "?" is
 *     refused on both engines. Parameters are sent as text and PostgreSQL
 *     infers their types from the statement; write CAST($1 AS BIGINT), not
 *     the PostgreSQL-only $1::bigint, where a type must be said. Statements
 *     are prepared once per connection and cached by their text.
 *   - Errors keep the driver's code and message (ws_db_last_error) and are
 *     translated into ws_err so that callers can act on them:
 *       WS_EBUSY     retryable conflict (the txn helper already retried)
 *       WS_EUNAVAIL  the server is gone (PostgreSQL CONNECTION_BAD, class
 *                    08, 57P01..57P03, 53300): report not ready; the pool
 *                    reconnects by itself on a later use (see ws_db_acquire)
 *       WS_EIO       storage cannot be written: SQLITE_FULL, SQLITE_READONLY,
 *                    SQLITE_IOERR*, SQLITE_CANTOPEN; PostgreSQL 53100 (disk
 *                    full), 58030 (I/O error), 25006 (read-only server or
 *                    session): keep the work and retry later, the fault may
 *                    clear (a write inside a transaction begun read-only is
 *                    the caller's bug: WS_EINVAL)
 *       WS_EEXIST    unique or primary key violation
 *       WS_ESTORE    anything else (bad SQL, other constraints, corruption)
 *   - Migrations per engine, tracked in the database (SQLite PRAGMA
 *     user_version, the same counter lib/store uses, so its files open
 *     unchanged; PostgreSQL a table schema_migrations in the first schema of
 *     the search_path), applied in one transaction at open; a database newer
 *     than the code is refused. On PostgreSQL the migration holds an
 *     advisory lock, so replicas that start together migrate once.
 *
 * Threads: the pool is thread-safe; a connection (ws_db_conn) and its
 * statements belong to the one thread that acquired it until it releases it
 * (ws_db_acquire/ws_db_release, or implicitly inside ws_db_txn). Nothing
 * here calls back on another thread.
 */
#ifndef WS_DB_H
#define WS_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct ws_db ws_db;           /* a pool of connections to one database */
typedef struct ws_db_conn ws_db_conn; /* one connection, held by one thread */
typedef struct ws_db_stmt ws_db_stmt; /* a cached prepared statement of one conn */

typedef enum ws_db_engine {
    WS_DB_SQLITE = 1,
    WS_DB_POSTGRES = 2,
} ws_db_engine;

/* The driver's view of the last failure on a connection. */
typedef struct ws_db_error {
    ws_err err;          /* the translation (WS_OK: no error recorded) */
    ws_db_engine engine; /* which driver said it */
    int sqlite_code;     /* SQLite extended result code; 0 on PostgreSQL */
    char sqlstate[6];    /* PostgreSQL SQLSTATE ("40001"); "" on SQLite or
                            when the server sent none (connection lost) */
    char message[256];   /* the driver's message, truncated; never holds a
                            password */
} ws_db_error;

/* One schema step. Versions are 1..n in order. Each field may hold several
 * statements; NULL means "nothing to do on this engine" (not both NULL). The
 * SQL runs inside the migration transaction: it must not BEGIN or COMMIT. */
typedef struct ws_db_migration {
    int version;
    const char *sqlite_sql;
    const char *pg_sql;
} ws_db_migration;

typedef struct ws_db_opts {
    const char *url;                   /* see the file comment; required */
    int pool_size;                     /* connections, opened at once; 0 = 4 */
    int acquire_timeout_ms;            /* wait for a free connection; 0 = 5000 */
    int txn_retries;                   /* extra attempts of a conflicting txn; 0 = 10,
                                          < 0 = none */
    int busy_timeout_ms;               /* SQLite: wait for a lock before BUSY; 0 =
                                          5000, < 0 = never wait */
    const char *synchronous;           /* SQLite: OFF, NORMAL (NULL), FULL, EXTRA */
    int connect_timeout_s;             /* PostgreSQL connect/reconnect bound; 0 = 5
                                          (a connect_timeout in the URL wins) */
    const char *app_name;              /* PostgreSQL fallback_application_name; NULL =
                                          "webshop" */
    int wal_autocheckpoint;            /* SQLite: WAL pages after which a commit
                                          checkpoints; 0 = 256 (1 MiB); < 0 = never */
    int64_t journal_size_limit;        /* SQLite: bytes the WAL is cut back to after a
                                          checkpoint; 0 = 1 MiB; < 0 = no limit */
    const ws_db_migration *migrations; /* may be NULL when n_migrations is 0 */
    size_t n_migrations;               /* 0: the schema version is neither checked
                                          nor changed */
    ws_db_error *error;                /* OUT, may be NULL: why open failed */
} ws_db_opts;

/* Open the pool: parse the URL, open pool_size connections, check the schema
 * version and apply pending migrations (one transaction; on failure nothing
 * of it stays). Returns WS_OK and *out, or: WS_EINVAL for a refused URL or
 * option or a migration list that is not versions 1..n; WS_EUNAVAIL when the
 * PostgreSQL server cannot be reached (retry later); WS_EAUTH when it wants
 * a password we do not have; WS_EIO when the SQLite file cannot be opened or
 * written; WS_ESTORE for a database newer than the code or a failed
 * migration; WS_ENOTFOUND for a postgres URL when the PostgreSQL engine
 * (its module, or libpq) cannot be loaded, error->message saying why (not
 * worth a retry). Failures are logged (URL redacted). */
ws_err ws_db_open(const ws_db_opts *opts, ws_db **out /* OUT */);

/* Close every connection; db may be NULL. No connection may be held. */
void ws_db_close(ws_db *db);

ws_db_engine ws_db_engine_of(const ws_db *db);

/* "sqlite" or "postgresql"; "?" for anything else. */
const char *ws_db_engine_name(ws_db_engine engine);

/* The URL the pool was opened with, password redacted; owned by the pool. */
const char *ws_db_url(const ws_db *db);

/* The schema version found or reached at open (0 with no migrations). */
int ws_db_schema_version(const ws_db *db);

/* Copy url into out (len bytes, always terminated) with any password
 * replaced by "***": the URI's user:password@ and ?password=, or a keyword
 * string's password=... Returns out. */
char *ws_db_url_redact(const char *url, char *out, size_t len);

/* Readiness: take a connection (reconnecting it if it is broken and the
 * backoff allows), run a trivial query, give it back. WS_OK, WS_EUNAVAIL
 * (server gone or reconnect backing off), WS_ETIMEDOUT (pool exhausted), or
 * the query's error; *why (may be NULL) says why, for a /readyz answer.
 * Any thread. */
ws_err ws_db_check(ws_db *db, ws_db_error *why /* OUT */);

/* Take a connection for the calling thread, waiting up to
 * acquire_timeout_ms for one to be free (WS_ETIMEDOUT). A connection found
 * broken (or older than a connection loss another one saw) is reset first,
 * no more often than a jittered backoff from 50 ms doubling to 2 s allows
 * for the whole pool; meanwhile, or when the reset fails, WS_EUNAVAIL and
 * the connection stays in the pool. Give it back with ws_db_release. */
ws_err ws_db_acquire(ws_db *db, ws_db_conn **out /* OUT */);

/* Give a connection back: statements still between rows are reset and a
 * transaction left open is rolled back. c may be NULL. */
void ws_db_release(ws_db_conn *c);

typedef enum ws_db_isolation {
    WS_DB_READ_COMMITTED = 0, /* PostgreSQL default */
    WS_DB_REPEATABLE_READ,
    WS_DB_SERIALIZABLE,
} ws_db_isolation;

typedef struct ws_db_txn_opts {
    ws_db_isolation isolation; /* PostgreSQL only: SQLite is serializable */
    bool read_only;            /* fn only reads. SQLite: BEGIN DEFERRED (takes no
                                  write lock, so readers do not queue behind
                                  writers), and a statement that would write is
                                  refused before it runs (sqlite3_stmt_readonly;
                                  PRAGMA query_only would expire every prepared
                                  statement at each switch); PostgreSQL: READ ONLY.
                                  A write inside fails on both with WS_EINVAL */
    bool one_statement;        /* with read_only: fn runs a single statement,
                                  which is its own snapshot on both engines, so it
                                  runs outside any transaction: no BEGIN and no
                                  COMMIT (two round trips fewer on PostgreSQL).
                                  Writes are not refused then: fn must not write.
                                  Ignored without read_only */
    int retries;               /* 0 = the pool's txn_retries, < 0 = none */
    ws_db_error *error;        /* OUT, may be NULL: the driver error of the failed
                                  attempt (when the result is not WS_OK) */
} ws_db_txn_opts;

/* The body of a transaction. It runs on the calling thread with a held
 * connection; it may run several times (one per attempt), so it must have no
 * effect outside the database, or one that is safe to repeat. Return WS_OK
 * to commit, WS_EBUSY to ask for a retry, anything else to roll back. */
typedef ws_err (*ws_db_txn_fn)(ws_db_conn *c, void *ctx);

/* Run fn in a transaction on a connection of the pool (acquired and
 * released here): BEGIN, fn, COMMIT. Returns WS_OK once committed, fn's
 * error after a rollback, or the error of BEGIN/COMMIT. Retries the whole
 * attempt (fn included) on WS_EBUSY, up to the retry bound, then returns
 * WS_EBUSY. A statement that failed inside fn fails the transaction on both
 * engines even when fn returns WS_OK (PostgreSQL aborts the transaction on
 * any error; use ON CONFLICT DO NOTHING or a conditional statement for the
 * outcomes you expect). WS_EUNAVAIL from COMMIT means the outcome is
 * unknown: make the work idempotent and redo it. Calling ws_db_txn on the
 * same pool from inside fn is refused (WS_EINVAL): use c. */
ws_err ws_db_txn(ws_db *db, ws_db_txn_fn fn, void *ctx);
ws_err ws_db_txn_with(ws_db *db, const ws_db_txn_opts *opts /* NULL: defaults */,
                      ws_db_txn_fn fn, void *ctx);

/* The same on a connection the caller holds. WS_EINVAL inside a txn. */
ws_err ws_db_conn_txn(ws_db_conn *c, const ws_db_txn_opts *opts, ws_db_txn_fn fn,
                      void *ctx);

/* Group commit on a held connection, for a consumer that applies a run of
 * events back to back: ws_db_group_begin opens one transaction (BEGIN, with
 * the pool's bounded conflict retry at BEGIN only), and every
 * ws_db_conn_txn on c until ws_db_group_end runs as a SAVEPOINT of it: an
 * fn that fails rolls back to its savepoint only and returns its error (one
 * bad event does not undo its neighbours); no retry happens inside a group
 * (WS_EBUSY is returned to the caller). ws_db_group_end COMMITs: WS_OK, or
 * an error after which nothing of the group is in the database (the caller
 * re-runs its work outside a group: the ws_db_conn_txn calls inside reported
 * a success that did not last). WS_EINVAL when a group or txn is already
 * open (begin) or none is (end). On PostgreSQL the group is READ COMMITTED. */
ws_err ws_db_group_begin(ws_db_conn *c);
ws_err ws_db_group_end(ws_db_conn *c);
bool ws_db_in_group(const ws_db_conn *c);

/* Run SQL with no parameters and no result rows; several statements
 * allowed (migrations, PRAGMA, SET). */
ws_err ws_db_exec(ws_db_conn *c, const char *sql);

/* The prepared statement for sql (one statement, $N placeholders), cached
 * on c by its text: returned reset, with every parameter NULL. Owned by c
 * and valid while c is held; do not free. Preparing a text again while its
 * statement is between rows resets it. WS_EINVAL for several statements or
 * a bare "?"; the driver's error when it does not compile. */
ws_err ws_db_prepare(ws_db_conn *c, const char *sql, ws_db_stmt **out /* OUT */);

/* Bind parameter $pos (1-based). Text is copied. WS_ERANGE for a position
 * the statement does not have; WS_EINVAL for a statement that has run and
 * was not reset. */
ws_err ws_db_bind_int64(ws_db_stmt *s, int pos, int64_t v);
ws_err ws_db_bind_text(ws_db_stmt *s, int pos, const char *text /* NULL binds NULL */);
ws_err ws_db_bind_null(ws_db_stmt *s, int pos);
/* Binary: SQLite BLOB, PostgreSQL BYTEA (sent and read in its hex text
 * form). The bytes are copied; data may be NULL only when len is 0. */
ws_err ws_db_bind_blob(ws_db_stmt *s, int pos, const void *data, size_t len);

/* Run the statement or advance it: WS_OK with *row true when a row is
 * available, false when it is done (stepping again stays done until
 * ws_db_reset). PostgreSQL fetches the whole result at the first step. On
 * error the statement is reset and the error is the connection's last. */
ws_err ws_db_step(ws_db_stmt *s, bool *row /* OUT */);

/* Step to the end, ignoring rows; *changes (may be NULL) as ws_db_changes. */
ws_err ws_db_run(ws_db_stmt *s, int64_t *changes /* OUT */);

/* Drop the statement's result and bindings; s may be NULL. */
void ws_db_reset(ws_db_stmt *s);

/* Columns of the current row (0-based). Out of range or no row: 0 / NULL /
 * true. Text stays valid until the next step, reset or prepare of s.
 * column_int64 reads a PostgreSQL boolean as 1 or 0. */
int ws_db_column_count(ws_db_stmt *s);
int64_t ws_db_column_int64(ws_db_stmt *s, int col);
const char *ws_db_column_text(ws_db_stmt *s, int col);
bool ws_db_column_is_null(ws_db_stmt *s, int col);
/* A BLOB/BYTEA column: its bytes and *len (0 and a non-NULL pointer for an
 * empty value; NULL for SQL NULL or no row). Valid as column_text is. */
const void *ws_db_column_blob(ws_db_stmt *s, int col, size_t *len /* OUT */);

/* Rows inserted, updated or deleted by the statement's last run once it is
 * done; 0 for a statement that only reads. 0 for an UPDATE means "the
 * condition did not hold: someone else was first". */
int64_t ws_db_changes(ws_db_stmt *s);

/* The last driver error seen on c (err WS_OK when none since acquire). */
const ws_db_error *ws_db_last_error(const ws_db_conn *c);

ws_db_engine ws_db_conn_engine(const ws_db_conn *c);

/* Dialect questions, for the few statements that differ. */
typedef enum ws_db_feature {
    WS_DB_SKIP_LOCKED,    /* SELECT ... FOR UPDATE SKIP LOCKED: PostgreSQL
                             only (SQLite has one writer; BEGIN IMMEDIATE
                             already excludes other claimers) */
    WS_DB_ADVISORY_LOCKS, /* pg_advisory_xact_lock: PostgreSQL only */
    WS_DB_RETURNING,      /* INSERT/UPDATE ... RETURNING: both (SQLite 3.35+) */
    WS_DB_ON_CONFLICT,    /* INSERT ... ON CONFLICT DO NOTHING: both */
} ws_db_feature;

bool ws_db_has(const ws_db_conn *c, ws_db_feature f);

/* sqlite_sql on SQLite, pg_sql on PostgreSQL. */
const char *ws_db_dialect(const ws_db_conn *c, const char *sqlite_sql,
                          const char *pg_sql);

/* Faults of the storage itself. A connection whose write transaction
 * failed to commit (or whose statement failed) with WS_EIO or WS_EUNAVAIL
 * is "failing" until one of its write transactions or groups commits again.
 * True while any connection of the pool is failing; then why (may be NULL)
 * receives a short reason ("disk full", "database is read-only", "disk I/O
 * error", "database damaged", "database unavailable", or the PostgreSQL
 * message). The gauge webshop_db_commit_failing of the default metrics
 * registry counts failing connections of every pool. Any thread. */
bool ws_db_failing(const ws_db *db, char *why, size_t cap);

/* SQLite: checkpoint the WAL into the database, PASSIVE, or with truncate
 * wait for readers (busy timeout) and cut the WAL file to zero bytes, for a
 * clean stop; logs db_checkpoint with the frames. WS_OK, WS_EBUSY when
 * readers or a writer kept it from finishing, WS_EIO/WS_ESTORE when the
 * file could not be written. PostgreSQL and :memory:: a no-op WS_OK. No
 * connection of the pool may be held by the caller. */
ws_err ws_db_checkpoint(ws_db *db, bool truncate);

/* Check a database before a service opens it for work, on a connection of
 * its own (closed again). want_version is the code's last migration (< 0
 * skips the version part): the schema version found must be at most that;
 * on SQLite a version 0 database must hold no table (another program's
 * file, or a damaged first page), then PRAGMA quick_check, stopped after
 * budget_ms (0 = skip; its cost is one read of every page, ~10 ms per 10 MB
 * in the page cache). On PostgreSQL the schema_migrations version is read
 * and the server must answer. Returns WS_OK; WS_ESTORE when damaged or
 * newer than the code (detail says what, one line); WS_ETIMEDOUT when the
 * quick_check ran out of budget (no verdict: the caller decides);
 * WS_EIO when an SQLite file cannot be opened or read; WS_EUNAVAIL when
 * the PostgreSQL server cannot be reached; WS_EINVAL for a refused URL;
 * WS_ENOTFOUND when the PostgreSQL engine cannot be loaded (as ws_db_open).
 * Logs nothing (but the one db_engine_unavailable line of the engine's
 * loader); the caller says what it does. detail may be NULL. */
ws_err ws_db_check_url(const char *url, int want_version, uint32_t budget_ms,
                       char *detail, size_t cap);

typedef struct ws_db_stats {
    unsigned long txn_retries;        /* attempts retried after a conflict */
    unsigned long reconnects;         /* connections reset successfully */
    unsigned long reconnect_failures; /* resets that failed */
    unsigned long prepares;           /* statements compiled (cache misses) */
} ws_db_stats;

/* Counters since open; any thread. */
void ws_db_stats_get(const ws_db *db, ws_db_stats *out /* OUT */);

#endif
