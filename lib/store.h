/*
 * SQLite storage helpers every service uses for the database it owns:
 * open with WAL, a busy timeout, foreign keys on and a configurable
 * `synchronous`; apply the service's numbered migrations inside one
 * transaction tracked by PRAGMA user_version; cache prepared statements; and
 * run a function inside BEGIN IMMEDIATE ... COMMIT, retrying a bounded number
 * of times when the database is busy.
 *
 * A ws_store is one connection: use it from one thread at a time. Open one
 * per thread for concurrent readers (WAL lets readers run beside a writer).
 */
#ifndef WS_STORE_H
#define WS_STORE_H

#include <stddef.h>

#include <sqlite3.h>

#include "err.h"

typedef struct ws_store ws_store;

/* One schema step. Versions start at 1 and increase by 1; sql may hold
 * several statements. */
typedef struct ws_migration {
    int version;
    const char *sql;
} ws_migration;

typedef struct ws_store_opts {
    const char *path;        /* database file; ":memory:" allowed */
    const char *synchronous; /* "OFF", "NORMAL" (default), "FULL", "EXTRA" */
    int busy_timeout_ms;     /* 0 = 5000; < 0 = never wait (BUSY at once) */
    int txn_retries;         /* extra attempts on SQLITE_BUSY; 0 = 10; < 0 = none */
    int readonly;            /* open read-only, apply no migration; with n > 0
                                the version must equal the last migration */
} ws_store_opts;

/* Open the database and bring its schema to the last of migrations[0..n)
 * (n may be 0). All pending migrations run in one transaction: if one fails
 * the database stays at its old version and WS_ESTORE is returned. A
 * database newer than the last migration is refused (WS_ESTORE). A file
 * database must really be in WAL mode afterwards. WS_EINVAL for a bad
 * synchronous value or a migration list that is not versions 1..n in order.
 * Migration SQL runs inside that transaction, so it must not BEGIN or COMMIT
 * itself. Failures are logged. On success *out owns the connection. */
ws_err ws_store_open(const ws_store_opts *opts, const ws_migration *migrations, size_t n,
                     ws_store **out /* OUT */);

/* Finalize cached statements and close; s may be NULL. */
void ws_store_close(ws_store *s);

/* The raw connection, for what the helpers do not cover. */
sqlite3 *ws_store_db(ws_store *s);

/* PRAGMA user_version; -1 (logged) if it cannot be read. */
int ws_store_version(ws_store *s);

/* A prepared statement for sql, cached by its text: reset and with bindings
 * cleared, ready to bind. Owned by the store (do not finalize). Step it to
 * SQLITE_DONE or sqlite3_reset() it when done: outside a transaction a
 * statement left between rows holds a read snapshot open. sql must be one
 * statement (WS_EINVAL otherwise). Returns WS_ESTORE with the SQLite message
 * logged when sql does not compile. */
ws_err ws_store_stmt(ws_store *s, const char *sql, sqlite3_stmt **out /* OUT */);

/* Run fn(s, ctx) inside BEGIN IMMEDIATE ... COMMIT. If fn returns non-WS_OK
 * the transaction is rolled back and that error returned. If BEGIN or COMMIT
 * meets SQLITE_BUSY, or fn returns WS_EBUSY (a statement met BUSY), the whole
 * transaction (fn included) is retried up to opts.txn_retries times with a
 * short randomised backoff, then WS_EBUSY. fn must therefore have no effects
 * outside the database. Cached statements fn left mid-rows are reset before
 * COMMIT/ROLLBACK. Not nestable: WS_EINVAL inside an open transaction;
 * inside an open group (ws_store_group_begin) it runs as a savepoint. */
typedef ws_err (*ws_store_txn_fn)(ws_store *s, void *ctx);
ws_err ws_store_txn(ws_store *s, ws_store_txn_fn fn, void *ctx);

/* Group commit: open one BEGIN IMMEDIATE transaction (with the same bounded
 * busy retry as ws_store_txn) that every ws_store_txn until
 * ws_store_group_end joins as a SAVEPOINT of its own: a ws_store_txn whose fn
 * fails rolls back to its savepoint only and returns its error, so one bad
 * event does not undo its neighbours, and no retry happens inside a group.
 * WS_EINVAL when a group or transaction is already open. */
ws_err ws_store_group_begin(ws_store *s);

/* COMMIT the open group. WS_OK, or an error (logged) after which nothing of
 * the group is in the database: the caller re-runs its work outside a group
 * (the ws_store_txn calls inside reported success that did not last).
 * WS_EINVAL when no group is open. */
ws_err ws_store_group_end(ws_store *s);

/* How many times ws_store_txn has retried a transaction after SQLITE_BUSY
 * (at BEGIN, in fn, or at COMMIT) since open; for metrics and tests. Unlike
 * the rest of the API it may be called from any thread. */
unsigned long ws_store_busy_retries(const ws_store *s);

/* Execute SQL with no result rows (one or more statements). */
ws_err ws_store_exec(ws_store *s, const char *sql);

/* Translate an SQLite result code: SQLITE_OK/DONE/ROW -> WS_OK,
 * BUSY/LOCKED -> WS_EBUSY, NOMEM -> WS_ENOMEM, CONSTRAINT -> WS_EEXIST,
 * TOOBIG -> WS_ETOOBIG, anything else WS_ESTORE. */
ws_err ws_err_from_sqlite(int rc);

#endif
