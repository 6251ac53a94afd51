/*
 * The PostgreSQL engine of lib/db, through libpq only. One connection is
 * one PGconn (blocking API), connected with PQconnectdbParams so that the
 * URL (a URI or a keyword string) is expanded and our defaults
 * (connect_timeout, fallback_application_name) apply only where the URL is
 * silent. Statements are prepared server-side once per connection under a
 * generated name, parameters are sent as text (the server infers their
 * types from the statement), and a statement's whole result is fetched at
 * its first step. Notices (e.g. "relation already exists, skipping") go to
 * the debug log, not stderr. A connection that libpq reports CONNECTION_BAD
 * is reset by the neutral layer (PQreset) on its next acquire; the SQLSTATE
 * table in pg_err() decides what counts as lost, full or retryable.
 * Built as its own module (libwebshop-db-pg.so) that db_module.c loads
 * only when a postgres URL is opened; ws__db_pg_module is all it exports.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db_int.h"
#include "log.h"

typedef struct pg_conn {
    ws_db_conn base;
    PGconn *pg;
    unsigned long next_name; /* for prepared statement names */
    int ro_txn;              /* the open transaction began READ ONLY */
    int broken;              /* a failure said the connection is gone */
} pg_conn;

typedef struct pg_stmt {
    ws_db_stmt base;
    char name[32]; /* server-side prepared statement */
    PGresult *res; /* the current result, or NULL */
    int row;       /* current row in res */
    int64_t changes;
    char **vals;           /* nparams entries: NULL (SQL NULL) or a value */
    char **heap;           /* nparams entries: owned text copies */
    char (*nums)[24];      /* nparams buffers for integers */
    unsigned char **blobs; /* decoded BYTEA values of the current row */
    size_t nblobs, capblobs;
} pg_stmt;

/* Free the decoded BYTEA values (at each step, reset and free). */
static void pg_blobs_free(pg_stmt *ps)
{
    for (size_t i = 0; i < ps->nblobs; i++) {
        PQfreemem(ps->blobs[i]);
    }
    ps->nblobs = 0;
}

static pg_conn *pg_of(ws_db_conn *c)
{
    return (pg_conn *)c;
}

static pg_stmt *pg_stmt_of(ws_db_stmt *s)
{
    return (pg_stmt *)s;
}

static int pg_class(const char *state, const char *cls)
{
    return state != NULL && strncmp(state, cls, 2) == 0;
}

static int pg_is(const char *state, const char *code)
{
    return state != NULL && strcmp(state, code) == 0;
}

/* The translation of a SQLSTATE; lost (the connection is gone) wins. */
static ws_err pg_err(const char *state, int lost)
{
    if (lost || pg_class(state, "08") || pg_is(state, "57P01") || pg_is(state, "57P02") ||
        pg_is(state, "57P03") || pg_is(state, "53300")) {
        return WS_EUNAVAIL;
    }
    if (pg_is(state, "40001") || pg_is(state, "40P01") || pg_is(state, "55P03")) {
        return WS_EBUSY;
    }
    if (pg_is(state, "53100") || pg_is(state, "58030") || pg_is(state, "25006")) {
        return WS_EIO;
    }
    if (pg_is(state, "53200")) {
        return WS_ENOMEM;
    }
    if (pg_is(state, "23505")) {
        return WS_EEXIST;
    }
    if (pg_is(state, "57014")) {
        return WS_ETIMEDOUT;
    }
    if (pg_class(state, "54")) {
        return WS_ETOOBIG;
    }
    if (pg_is(state, "22003")) {
        return WS_ERANGE;
    }
    return WS_ESTORE;
}

/* Record the failure res (may be NULL) describes on c. Every error the
 * server sends has a SQLSTATE; one without is libpq's own, and those are
 * about the connection ("server closed the connection unexpectedly", "no
 * connection to the server"). libpq may still say CONNECTION_OK right after
 * such a failure (a failed write is reported before the read that notices
 * EOF), so we mark the connection broken ourselves. */
static ws_err pg_fail(pg_conn *pc, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    int lost = PQstatus(pc->pg) != CONNECTION_OK || state == NULL;
    if (msg == NULL) {
        msg = PQerrorMessage(pc->pg);
    }
    ws_err err = pg_err(state, lost);
    if (err == WS_EIO && pc->ro_txn && pg_is(state, "25006")) {
        err = WS_EINVAL; /* a write in a read-only transaction: the caller's bug */
    }
    if (err == WS_EUNAVAIL) {
        pc->broken = 1;
    }
    return ws__db_fail(&pc->base, err, 0, state, msg);
}

/* Check a result for the wanted status; clears it on failure. */
static ws_err pg_check(pg_conn *pc, PGresult *res, ExecStatusType want)
{
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st == want || (want == PGRES_COMMAND_OK && st == PGRES_TUPLES_OK)) {
        return WS_OK;
    }
    ws_err err = pg_fail(pc, res);
    PQclear(res);
    return err;
}

static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    ws_log_debug("db_notice", "engine=postgresql msg=%s", message);
}

/* ---- connections ---------------------------------------------------------- */

static void pg_conn_close(ws_db_conn *c)
{
    pg_conn *pc = pg_of(c);
    if (pc == NULL) {
        return;
    }
    PQfinish(pc->pg);
    free(pc);
}

/* Refuse a string libpq cannot parse; its message may quote the text, so
 * it is withheld when the text holds a password. */
static ws_err pg_conninfo_check(const char *target, ws_db_error *err)
{
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(target, &msg);
    if (opts != NULL) {
        PQconninfoFree(opts);
        return WS_OK;
    }
    const char *say = msg ? msg : "out of memory";
    if (strstr(target, "password") != NULL || strchr(target, '@') != NULL) {
        say = "connection string refused by libpq (message withheld: it may quote a "
              "password)";
    }
    ws__db_error_set(err, WS_DB_POSTGRES, msg ? WS_EINVAL : WS_ENOMEM, 0, NULL, say);
    PQfreemem(msg);
    return err->err;
}

/* Session settings unless the URL gives its own options: a lock wait
 * longer than lock_timeout fails with 55P03, which lib/db reports as
 * WS_EBUSY and the callers retry. Without it, two replicas whose group
 * transactions insert the same rows in opposite order (the order service:
 * replica A commits a placement while B handles the inventory's outcome for
 * it, and the other way round) wait for PostgreSQL's deadlock check
 * (deadlock_timeout, 1 s) before one is aborted: measured, end-to-end orders
 * with 2 replicas stalled in 1 s steps at 150/s. Migrations lift it (their
 * advisory lock may be held for as long as a migration runs). */
#define PG_SESSION_OPTIONS "-c lock_timeout=20"

static ws_err pg_conn_open(ws_db *db, ws_db_conn **out, ws_db_error *err)
{
    ws_err e = pg_conninfo_check(db->target, err);
    if (e != WS_OK) {
        return e;
    }
    char timeout[16];
    snprintf(timeout, sizeof(timeout), "%d", db->connect_timeout_s);
    /* Later entries win; dbname (the whole URL, expanded) comes last, so
     * what the URL says overrides our defaults. */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "options",
                                "dbname", NULL};
    const char *const vals[] = {timeout, db->app_name, PG_SESSION_OPTIONS, db->target, NULL};
    pg_conn *pc = calloc(1, sizeof(*pc));
    if (pc == NULL) {
        ws__db_error_set(err, WS_DB_POSTGRES, WS_ENOMEM, 0, NULL, NULL);
        return WS_ENOMEM;
    }
    pc->base.pool = db;
    pc->pg = PQconnectdbParams(keys, vals, 1);
    if (pc->pg == NULL || PQstatus(pc->pg) != CONNECTION_OK) {
        e = pc->pg && PQconnectionNeedsPassword(pc->pg) ? WS_EAUTH : WS_EUNAVAIL;
        ws__db_error_set(err, WS_DB_POSTGRES, e, 0, NULL,
                         pc->pg ? PQerrorMessage(pc->pg) : "out of memory");
        pg_conn_close(&pc->base);
        return e;
    }
    PQsetNoticeProcessor(pc->pg, pg_notice, NULL);
    *out = &pc->base;
    return WS_OK;
}

static bool pg_conn_ok(ws_db_conn *c)
{
    return !pg_of(c)->broken && PQstatus(pg_of(c)->pg) == CONNECTION_OK;
}

static ws_err pg_conn_reset(ws_db_conn *c)
{
    pg_conn *pc = pg_of(c);
    PQreset(pc->pg);
    if (PQstatus(pc->pg) != CONNECTION_OK) {
        ws_err e = PQconnectionNeedsPassword(pc->pg) ? WS_EAUTH : WS_EUNAVAIL;
        return ws__db_fail(c, e, 0, NULL, PQerrorMessage(pc->pg));
    }
    pc->broken = 0;
    pc->ro_txn = 0;
    pc->next_name = 0;
    return WS_OK;
}

static ws_err pg_exec(ws_db_conn *c, const char *sql)
{
    pg_conn *pc = pg_of(c);
    PGresult *res = PQexec(pc->pg, sql);
    ws_err err = pg_check(pc, res, PGRES_COMMAND_OK);
    if (err == WS_OK) {
        PQclear(res);
    }
    return err;
}

static void pg_rollback(ws_db_conn *c)
{
    pg_conn *pc = pg_of(c);
    PGTransactionStatusType ts = PQtransactionStatus(pc->pg);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        PQclear(PQexec(pc->pg, "ROLLBACK"));
    }
    pc->ro_txn = 0;
}

static void pg_conn_cleanup(ws_db_conn *c)
{
    pg_rollback(c);
}

static ws_err pg_begin(ws_db_conn *c, const ws_db_txn_opts *o)
{
    static const char *const iso[] = {"READ COMMITTED", "REPEATABLE READ",
                                      "SERIALIZABLE"};
    unsigned i = (unsigned)o->isolation < 3 ? (unsigned)o->isolation : 0;
    char sql[96];
    snprintf(sql, sizeof(sql), "BEGIN ISOLATION LEVEL %s%s", iso[i],
             o->read_only ? " READ ONLY" : "");
    ws_err err = pg_exec(c, sql);
    pg_of(c)->ro_txn = err == WS_OK && o->read_only;
    return err;
}

static ws_err pg_commit(ws_db_conn *c)
{
    pg_conn *pc = pg_of(c);
    PGresult *res = PQexec(pc->pg, "COMMIT");
    pc->ro_txn = 0;
    ws_err err = pg_check(pc, res, PGRES_COMMAND_OK);
    if (err != WS_OK) {
        return err;
    }
    /* COMMIT of an aborted transaction "succeeds" as ROLLBACK. */
    int rolled_back = strcmp(PQcmdStatus(res), "ROLLBACK") == 0;
    PQclear(res);
    if (rolled_back) {
        return ws__db_fail(c, c->err.err != WS_OK ? c->err.err : WS_ESTORE, 0,
                           c->err.sqlstate,
                           "transaction was aborted by an earlier error");
    }
    return WS_OK;
}

/* ---- statements ----------------------------------------------------------- */

static void pg_stmt_free(ws_db_stmt *s)
{
    pg_stmt *ps = pg_stmt_of(s);
    PQclear(ps->res);
    pg_blobs_free(ps);
    free(ps->blobs);
    for (int i = 0; ps->heap != NULL && i < s->nparams; i++) {
        free(ps->heap[i]);
    }
    free(ps->vals);
    free(ps->heap);
    free(ps->nums);
    free(ps);
}

static ws_err pg_prepare(ws_db_conn *c, const char *sql, int nparams, ws_db_stmt **out)
{
    pg_conn *pc = pg_of(c);
    pg_stmt *ps = calloc(1, sizeof(*ps));
    size_t n = nparams > 0 ? (size_t)nparams : 1;
    if (ps != NULL) {
        ps->base.nparams = nparams;
        ps->vals = calloc(n, sizeof(*ps->vals));
        ps->heap = calloc(n, sizeof(*ps->heap));
        ps->nums = calloc(n, sizeof(*ps->nums));
    }
    if (ps == NULL || !ps->vals || !ps->heap || !ps->nums) {
        if (ps != NULL) {
            pg_stmt_free(&ps->base);
        }
        return ws__db_fail(c, WS_ENOMEM, 0, NULL, NULL);
    }
    snprintf(ps->name, sizeof(ps->name), "ws_%lu", ++pc->next_name);
    PGresult *res = PQprepare(pc->pg, ps->name, sql, 0, NULL);
    ws_err err = pg_check(pc, res, PGRES_COMMAND_OK);
    if (err != WS_OK) {
        pg_stmt_free(&ps->base);
        return err;
    }
    PQclear(res);
    *out = &ps->base;
    return WS_OK;
}

static void pg_stmt_reset(ws_db_stmt *s)
{
    pg_stmt *ps = pg_stmt_of(s);
    PQclear(ps->res);
    pg_blobs_free(ps);
    ps->res = NULL;
    ps->row = -1;
    ps->changes = 0;
    for (int i = 0; i < s->nparams; i++) {
        free(ps->heap[i]);
        ps->heap[i] = NULL;
        ps->vals[i] = NULL;
    }
}

static void pg_bind_clear(pg_stmt *ps, int i)
{
    free(ps->heap[i]);
    ps->heap[i] = NULL;
    ps->vals[i] = NULL;
}

static ws_err pg_bind_int64(ws_db_stmt *s, int pos, int64_t v)
{
    pg_stmt *ps = pg_stmt_of(s);
    pg_bind_clear(ps, pos - 1);
    snprintf(ps->nums[pos - 1], sizeof(ps->nums[0]), "%lld", (long long)v);
    ps->vals[pos - 1] = ps->nums[pos - 1];
    return WS_OK;
}

static ws_err pg_bind_text(ws_db_stmt *s, int pos, const char *v)
{
    pg_stmt *ps = pg_stmt_of(s);
    pg_bind_clear(ps, pos - 1);
    ps->heap[pos - 1] = strdup(v);
    if (ps->heap[pos - 1] == NULL) {
        return ws__db_fail(s->conn, WS_ENOMEM, 0, NULL, NULL);
    }
    ps->vals[pos - 1] = ps->heap[pos - 1];
    return WS_OK;
}

static ws_err pg_bind_null(ws_db_stmt *s, int pos)
{
    pg_bind_clear(pg_stmt_of(s), pos - 1);
    return WS_OK;
}

/* BYTEA in its hex text form: \x then two hex digits a byte. */
static ws_err pg_bind_blob(ws_db_stmt *s, int pos, const void *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    pg_stmt *ps = pg_stmt_of(s);
    pg_bind_clear(ps, pos - 1);
    char *t = malloc(2 * len + 3);
    if (t == NULL) {
        return ws__db_fail(s->conn, WS_ENOMEM, 0, NULL, NULL);
    }
    const unsigned char *b = data;
    t[0] = '\\';
    t[1] = 'x';
    for (size_t i = 0; i < len; i++) {
        t[2 + 2 * i] = hex[b[i] >> 4];
        t[3 + 2 * i] = hex[b[i] & 15];
    }
    t[2 + 2 * len] = '\0';
    ps->heap[pos - 1] = t;
    ps->vals[pos - 1] = t;
    return WS_OK;
}

/* The first step runs the statement and keeps its whole result. */
static ws_err pg_step(ws_db_stmt *s, bool *row)
{
    pg_stmt *ps = pg_stmt_of(s);
    pg_conn *pc = pg_of(s->conn);
    pg_blobs_free(ps);
    if (ps->res == NULL) {
        PGresult *res = PQexecPrepared(pc->pg, ps->name, s->nparams,
                                       (const char *const *)ps->vals, NULL, NULL, 0);
        ws_err err = pg_check(pc, res, PGRES_COMMAND_OK);
        if (err != WS_OK) {
            return err;
        }
        ps->res = res;
        ps->row = -1;
        const char *tag = PQcmdStatus(res);
        ps->changes =
            strncmp(tag, "SELECT", 6) == 0 ? 0 : strtoll(PQcmdTuples(res), NULL, 10);
    }
    ps->row++;
    *row = ps->row < PQntuples(ps->res);
    return WS_OK;
}

static int pg_column_count(ws_db_stmt *s)
{
    pg_stmt *ps = pg_stmt_of(s);
    return ps->res ? PQnfields(ps->res) : 0;
}

static bool pg_column_is_null(ws_db_stmt *s, int col)
{
    pg_stmt *ps = pg_stmt_of(s);
    return PQgetisnull(ps->res, ps->row, col) != 0;
}

static const char *pg_column_text(ws_db_stmt *s, int col)
{
    pg_stmt *ps = pg_stmt_of(s);
    return pg_column_is_null(s, col) ? NULL : PQgetvalue(ps->res, ps->row, col);
}

static const void *pg_column_blob(ws_db_stmt *s, int col, size_t *len)
{
    pg_stmt *ps = pg_stmt_of(s);
    const char *t = pg_column_text(s, col);
    *len = 0;
    if (t == NULL) {
        return NULL;
    }
    if (ps->nblobs == ps->capblobs) {
        size_t cap = ps->capblobs ? 2 * ps->capblobs : 4;
        unsigned char **b = realloc(ps->blobs, cap * sizeof(*b));
        if (b == NULL) {
            return NULL;
        }
        ps->blobs = b;
        ps->capblobs = cap;
    }
    unsigned char *v = PQunescapeBytea((const unsigned char *)t, len);
    if (v == NULL) {
        *len = 0;
        return NULL;
    }
    ps->blobs[ps->nblobs++] = v;
    return v;
}

static int64_t pg_column_int64(ws_db_stmt *s, int col)
{
    const char *t = pg_column_text(s, col);
    if (t == NULL) {
        return 0;
    }
    if ((t[0] == 't' || t[0] == 'f') && t[1] == '\0') {
        return t[0] == 't'; /* boolean */
    }
    return strtoll(t, NULL, 10);
}

static int64_t pg_changes(ws_db_stmt *s)
{
    return pg_stmt_of(s)->changes;
}

/* ---- schema version: a table schema_migrations, one row per version ------- */

static ws_err pg_query_int(pg_conn *pc, const char *sql, int *out)
{
    PGresult *res = PQexec(pc->pg, sql);
    ws_err err = pg_check(pc, res, PGRES_TUPLES_OK);
    if (err != WS_OK) {
        return err;
    }
    *out =
        PQntuples(res) > 0 && !PQgetisnull(res, 0, 0) ? atoi(PQgetvalue(res, 0, 0)) : 0;
    PQclear(res);
    return WS_OK;
}

static ws_err pg_schema_version(ws_db_conn *c, int *out)
{
    pg_conn *pc = pg_of(c);
    int exists = 0;
    ws_err err = pg_query_int(
        pc, "SELECT (to_regclass('schema_migrations') IS NOT NULL)::int", &exists);
    if (err != WS_OK || !exists) {
        *out = 0;
        return err;
    }
    return pg_query_int(pc, "SELECT coalesce(max(version), 0) FROM schema_migrations",
                        out);
}

/* Replicas starting together serialise here: the lock is held until the
 * migration transaction ends, and READ COMMITTED lets the waiter see the
 * winner's rows once it gets the lock. One lock per schema. */
static ws_err pg_migrate_begin(ws_db_conn *c)
{
    ws_err err = pg_exec(c, "SET LOCAL lock_timeout = 0");
    if (err != WS_OK) {
        return err;
    }
    err = pg_exec(c, "SELECT pg_advisory_xact_lock(hashtext('ws_db.migrate.' || "
                            "coalesce(current_schema(), '')))");
    if (err != WS_OK) {
        return err;
    }
    return pg_exec(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
                      "version integer PRIMARY KEY, "
                      "applied_at timestamptz NOT NULL DEFAULT now())");
}

static ws_err pg_schema_version_set(ws_db_conn *c, int from, int to)
{
    char sql[128];
    snprintf(sql, sizeof(sql),
             "INSERT INTO schema_migrations (version) SELECT generate_series(%d, %d)",
             from + 1, to);
    return pg_exec(c, sql);
}

static bool pg_has(ws_db_feature f)
{
    (void)f;
    return true;
}

static bool pg_txn_open(ws_db_conn *c)
{
    PGTransactionStatusType ts = PQtransactionStatus(pg_of(c)->pg);
    return ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR || ts == PQTRANS_ACTIVE;
}

/* The short reason /readyz shows; NULL when the program is at fault. */
static const char *pg_fault_text(const ws_db_error *e)
{
    if (e->err == WS_EUNAVAIL) {
        return "database unavailable";
    }
    if (pg_is(e->sqlstate, "53100")) {
        return "disk full";
    }
    if (pg_is(e->sqlstate, "58030")) {
        return "disk I/O error";
    }
    if (pg_is(e->sqlstate, "25006")) {
        return "database is read-only";
    }
    if (pg_is(e->sqlstate, "53200")) {
        return "out of memory";
    }
    return NULL;
}

static const ws__db_ops pg_ops = {
    .engine = WS_DB_POSTGRES,
    .conn_open = pg_conn_open,
    .conn_close = pg_conn_close,
    .conn_ok = pg_conn_ok,
    .conn_reset = pg_conn_reset,
    .conn_cleanup = pg_conn_cleanup,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .exec = pg_exec,
    .prepare = pg_prepare,
    .stmt_free = pg_stmt_free,
    .stmt_reset = pg_stmt_reset,
    .bind_int64 = pg_bind_int64,
    .bind_text = pg_bind_text,
    .bind_null = pg_bind_null,
    .bind_blob = pg_bind_blob,
    .step = pg_step,
    .column_count = pg_column_count,
    .column_int64 = pg_column_int64,
    .column_text = pg_column_text,
    .column_is_null = pg_column_is_null,
    .column_blob = pg_column_blob,
    .changes = pg_changes,
    .schema_version = pg_schema_version,
    .migrate_begin = pg_migrate_begin,
    .schema_version_set = pg_schema_version_set,
    .has = pg_has,
    .txn_open = pg_txn_open,
    .fault_text = pg_fault_text,
};

/* The module's one entry point (see ws__db_module in db_int.h). */
const ws__db_module ws__db_pg_module = {
    .version = WEBSHOP_VERSION,
    .ops_size = sizeof(ws__db_ops),
    .db_size = sizeof(ws_db),
    .conn_size = sizeof(ws_db_conn),
    .stmt_size = sizeof(ws_db_stmt),
    .ops = &pg_ops,
};
