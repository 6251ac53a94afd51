/*
 * Private to lib/db: the structs the neutral layer (lib/db.c) shares with
 * its engines (db_sqlite.c, db_pg.c), and the engine operations table, in
 * the shape of nng's transport ops. An engine embeds ws_db_conn and
 * ws_db_stmt as the first member of its own structs and casts back. The
 * neutral layer owns the pool, the statement cache, transactions and their
 * retry, reconnect backoff, migrations and the placeholder scanner; an
 * engine owns its driver handle and the translation of the driver's codes.
 * Nothing outside lib/db includes this header.
 */
#ifndef WS_DB_INT_H
#define WS_DB_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "db.h"

typedef enum ws__db_stmt_state {
    WS__DB_IDLE = 0, /* reset: bindable, not run */
    WS__DB_ROWS,     /* run, between rows */
    WS__DB_DONE,     /* run to completion */
} ws__db_stmt_state;

struct ws_db_stmt {
    ws_db_conn *conn;        /* the connection it was prepared on */
    struct ws_db_stmt *next; /* cache chain; owned by conn's cache */
    uint32_t hash;
    char *sql;   /* owned: the cache key, as given ($N form) */
    int nparams; /* highest $N in sql */
    ws__db_stmt_state state;
};

struct ws_db_conn {
    ws_db *pool;
    ws_db_error err;    /* last driver error */
    ws_err txn_err;     /* first statement error in the open txn */
    int in_txn;         /* inside a transaction's fn */
    int in_group;       /* a group transaction is open (ws_db_group_begin) */
    int sp_unreleased;  /* the group's last savepoint succeeded and is not
                           released yet: released with the next SAVEPOINT,
                           in the same exec, or by the group's COMMIT */
    int txn_read_only;  /* the open transaction is read-only */
    atomic_int failing; /* 1 while the last write failed for the storage */
    char fail_why[128]; /* why, while failing (written before failing = 1) */
    long long fail_since_ms;
    unsigned seed;        /* backoff jitter */
    unsigned long epoch;  /* pool loss epoch when last (re)connected */
    ws_db_stmt **buckets; /* owned statement cache; power-of-two size */
    size_t nbuckets;
    size_t nentries;
};

/* lib/db's group commit: each message a savepoint of the group's
 * transaction. The RELEASE of a savepoint that succeeded is sent with the
 * next SAVEPOINT, as one exec (one round trip on PostgreSQL, instead of
 * two per message), and the last one is left to COMMIT. Engines that
 * cannot run two statements in one exec recognise these strings. */
#define WS__DB_SQL_SAVEPOINT "SAVEPOINT ws_db_group"
#define WS__DB_SQL_RELEASE_SAVEPOINT                                                     \
    "RELEASE SAVEPOINT ws_db_group; SAVEPOINT ws_db_group"
#define WS__DB_SQL_ROLLBACK_TO                                                           \
    "ROLLBACK TO SAVEPOINT ws_db_group; RELEASE SAVEPOINT ws_db_group"

typedef struct ws__db_ops {
    ws_db_engine engine;
    /* Open one connection configured for the pool; on failure fill *err. */
    ws_err (*conn_open)(ws_db *db, ws_db_conn **out, ws_db_error *err);
    void (*conn_close)(ws_db_conn *c);
    /* False when the connection is known broken (PostgreSQL CONNECTION_BAD). */
    bool (*conn_ok)(ws_db_conn *c);
    /* Reconnect in place; the statement cache was already emptied. */
    ws_err (*conn_reset)(ws_db_conn *c);
    /* At release: roll back a transaction left open. */
    void (*conn_cleanup)(ws_db_conn *c);
    ws_err (*begin)(ws_db_conn *c, const ws_db_txn_opts *o);
    ws_err (*commit)(ws_db_conn *c);
    void (*rollback)(ws_db_conn *c);
    ws_err (*exec)(ws_db_conn *c, const char *sql);
    /* Compile sql (already checked: one statement, $N, nparams) into a new
     * statement whose header the neutral layer fills in. */
    ws_err (*prepare)(ws_db_conn *c, const char *sql, int nparams, ws_db_stmt **out);
    void (*stmt_free)(ws_db_stmt *s);
    void (*stmt_reset)(ws_db_stmt *s); /* drop result and bindings */
    ws_err (*bind_int64)(ws_db_stmt *s, int pos, int64_t v);
    ws_err (*bind_text)(ws_db_stmt *s, int pos, const char *v);
    ws_err (*bind_null)(ws_db_stmt *s, int pos);
    ws_err (*bind_blob)(ws_db_stmt *s, int pos, const void *data, size_t len);
    ws_err (*step)(ws_db_stmt *s, bool *row);
    int (*column_count)(ws_db_stmt *s);
    int64_t (*column_int64)(ws_db_stmt *s, int col);
    const char *(*column_text)(ws_db_stmt *s, int col);
    bool (*column_is_null)(ws_db_stmt *s, int col);
    const void *(*column_blob)(ws_db_stmt *s, int col, size_t *len);
    int64_t (*changes)(ws_db_stmt *s);
    /* The schema version outside or inside a transaction (0: none yet). */
    ws_err (*schema_version)(ws_db_conn *c, int *out);
    /* First step of the migration transaction: serialise migrators and
     * make sure the version record exists. */
    ws_err (*migrate_begin)(ws_db_conn *c);
    ws_err (*schema_version_set)(ws_db_conn *c, int from, int to);
    bool (*has)(ws_db_feature f);
    /* True while c is inside a transaction the server still has open
     * (SQLite may roll back by itself after FULL or IOERR). */
    bool (*txn_open)(ws_db_conn *c);
    /* The short reason /readyz shows for an error (see ws_db_failing), or
     * NULL when e is not the storage's fault (constraint, bad SQL, misuse). */
    const char *(*fault_text)(const ws_db_error *e);
    /* SQLite only (NULL elsewhere): checkpoint the WAL; *frames / *done. */
    ws_err (*checkpoint)(ws_db_conn *c, bool truncate, int *frames, int *done);
    /* ws_db_check_url for this engine, on a bare connection to target. */
    ws_err (*check)(const char *target, int want_version, uint32_t budget_ms,
                    char *detail, size_t cap);
} ws__db_ops;

extern const ws__db_ops ws__db_sqlite_ops;

/* What the PostgreSQL module (libwebshop-db-pg.so, db_pg.c) exports as
 * ws__db_pg_module: its ops and what it was built with, which the loader
 * compares with its own before it uses the ops (a module of another build
 * would misread these structs). The module calls back into the program
 * for ws__db_fail, ws__db_error_set and ws_log only, which every program
 * linking lib/db exports (lib/meson.build). */
typedef struct ws__db_module {
    const char *version; /* WEBSHOP_VERSION */
    size_t ops_size, db_size, conn_size, stmt_size;
    const ws__db_ops *ops;
} ws__db_module;

/* The PostgreSQL engine, loaded from its module on the first call (see
 * db_module.c for where it is looked for) and never unloaded; thread-safe.
 * NULL when it cannot be loaded, with *why (static text, may be NULL)
 * saying why: the module not found, libpq missing, another build's. */
const ws__db_ops *ws__db_pg_ops_load(const char **why /* OUT */);

struct ws_db {
    const ws__db_ops *ops;
    char *target;   /* owned: SQLite path or libpq conninfo; may hold
                       a password: never log it */
    char *url_safe; /* owned: the URL, redacted */
    int pool_size;
    int acquire_timeout_ms;
    int txn_retries;
    int busy_timeout_ms;          /* SQLite */
    int synchronous;              /* SQLite: 0 OFF .. 3 EXTRA */
    int wal_autocheckpoint;       /* SQLite: pages; 0 = never */
    long long journal_size_limit; /* SQLite: bytes; -1 = none */
    int connect_timeout_s;
    char *app_name; /* owned */
    int schema_version;

    pthread_mutex_t mu; /* guards the fields down to reset_backoff_ms */
    pthread_cond_t cv;  /* signalled when a connection is released */
    ws_db_conn **conns; /* owned: every connection */
    ws_db_conn **idle;  /* stack of connections not held */
    int nconns;
    int nidle;
    long long next_reset_ms; /* no reconnect attempt before this */
    int reset_backoff_ms;    /* 0 after a success */

    atomic_ulong epoch; /* bumped on each connection loss seen */
    atomic_ulong st_retries;
    atomic_ulong st_reconnects;
    atomic_ulong st_reconnect_failures;
    atomic_ulong st_prepares;
};

/* Record a driver error on c and return err: sets c->err, the txn's first
 * error, and on WS_EUNAVAIL bumps the pool's loss epoch (when c was current),
 * so that every other connection is reset before its next use. msg may be
 * NULL. */
ws_err ws__db_fail(ws_db_conn *c, ws_err err, int sqlite_code, const char *sqlstate,
                   const char *msg);

/* Fill an error record without a connection (open failures). */
void ws__db_error_set(ws_db_error *e, ws_db_engine engine, ws_err err, int sqlite_code,
                      const char *sqlstate, const char *msg);

/* ---- text rules (db_text.c) ---- */

typedef enum ws__db_url_kind {
    WS__DB_URL_BAD = 0,
    WS__DB_URL_SQLITE,
    WS__DB_URL_PG,
} ws__db_url_kind;

/* Which engine url names. For SQLite *path points at the file path inside
 * url; for BAD *why says why (a static string). */
ws__db_url_kind ws__db_url_classify(const char *url, const char **path /* OUT */,
                                    const char **why /* OUT */);

/* What the scanner saw in one SQL text, outside string literals, quoted
 * identifiers, dollar quotes and comments. */
typedef struct ws__db_sql_info {
    int max_param;    /* highest $N; 0 when none */
    int bad_param;    /* a $0 or a $N above 65535 */
    int qmarks;       /* bare '?' */
    int statements;   /* non-empty statements between ';' */
    int unterminated; /* a literal, identifier or comment never closed */
} ws__db_sql_info;

/* Scan sql. When rewrite is not NULL it must hold strlen(sql) + 1 bytes and
 * receives sql with each $N placeholder written ?N (SQLite's positional
 * form, same length). */
void ws__db_sql_scan(const char *sql, ws__db_sql_info *info /* OUT */, char *rewrite);

/* Append text to detail (cap bytes) as one line: newlines become "; ",
 * double quotes single ones; a "; " goes between appended parts. */
void ws__db_detail_append(char *detail, size_t cap, const char *text);

/* Milliseconds of CLOCK_MONOTONIC. */
long long ws__db_now_ms(void);

#endif
