/*
 * SQLite storage helpers every service uses for the database it owns:
 * open with WAL, a busy timeout, foreign keys on and a configurable
 * `synchronous`; apply the service's numbered migrations inside one
 * transaction tracked by PRAGMA user_version; cache prepared statements; and
 * run a function inside BEGIN IMMEDIATE ... COMMIT, retrying a bounded number
 * of times when the database is busy.
 *
 * Faults. A connection remembers why its last write failed (disk full,
 * read-only file, I/O error, ...) until one of its transactions commits
 * again (ws_store_failing, any thread; the gauge webshop_store_commit_failing
 * in the default registry counts the connections in that state), so a
 * service can say on /readyz why it cannot commit. The WAL is kept small
 * (wal_autocheckpoint, journal_size_limit) and can be truncated at a clean
 * stop (ws_store_checkpoint). ws_store_check refuses a damaged database
 * before a service starts on it.
 *
 * A ws_store is one connection: use it from one thread at a time. Open one
 * per thread for concurrent readers (WAL lets readers run beside a writer).
 */
#ifndef WS_STORE_H
#define WS_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
    int wal_autocheckpoint;  /* WAL pages after which a commit checkpoints;
                                0 = 256 (1 MiB of 4 KiB pages); < 0 = never */
    int64_t journal_size_limit; /* bytes the WAL file is truncated to when a
                                   checkpoint resets it; 0 = 1 MiB; < 0 = none */
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
 * TOOBIG -> WS_ETOOBIG; FULL, READONLY, IOERR*, CANTOPEN, PERM -> WS_EIO
 * (the storage cannot be written now: keep the work and retry, the fault may
 * clear; the same word lib/db uses); anything else WS_ESTORE (bad SQL,
 * corruption, ...). */
ws_err ws_err_from_sqlite(int rc);

/* True while the last write of this connection failed for a reason of the
 * database or its file (not a constraint), until one of its transactions
 * (or groups) commits again; then why (may be NULL) receives a short reason
 * such as "disk full", "database is read-only", "disk I/O error",
 * "database damaged", "database locked". Any thread; s may be NULL (false). */
bool ws_store_failing(const ws_store *s, char *why, size_t cap);

/* The path the store was opened with (for log lines); never NULL for an open
 * store. */
const char *ws_store_path(const ws_store *s);

/* Check a database before a service uses it. The schema version must be
 * known: PRAGMA user_version at most want_version (the last migration; < 0
 * skips that part), and a version 0 database must hold no table (else it is
 * some other program's file, or its first page is damaged). Then PRAGMA
 * quick_check, stopped after budget_ms (0 = skip it): its cost is one read
 * of every page, about 10 ms per 10 MB when the file is in the page cache.
 * Returns WS_OK; WS_ESTORE when the database is damaged or unreadable, with
 * what is wrong in detail (one line, may be NULL); WS_ETIMEDOUT when the
 * quick_check did not finish within the budget (no verdict: the caller
 * decides; detail says so). Logs nothing; the caller says what it does. */
ws_err ws_store_check(ws_store *s, int want_version, uint32_t budget_ms, char *detail,
                      size_t cap);

/* ws_store_check on a bare connection to path, opened only for it (the file
 * is created, empty, when there is none; no pragma is set and nothing is
 * written), then closed: what a service runs before it opens the database
 * for work. WS_EIO when the file cannot be opened or read (detail says why),
 * else as ws_store_check. */
ws_err ws_store_check_path(const char *path, int want_version, uint32_t budget_ms,
                           char *detail, size_t cap);

/* Checkpoint the WAL into the database: PASSIVE (copy what no reader needs,
 * never wait), or with truncate, wait for readers (the busy timeout) and
 * cut the WAL file to zero bytes, for a clean stop. Logs one line,
 * store_checkpoint, with the frames in the WAL and checkpointed. WS_OK,
 * WS_EBUSY when readers or a writer kept it from finishing, WS_EIO/WS_ESTORE
 * when the database could not be written. A no-op WS_OK for :memory:. */
ws_err ws_store_checkpoint(ws_store *s, bool truncate);

#endif
