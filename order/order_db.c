/*
 * The order service's one database adapter: every SQL statement of the
 * service, behind the ports of order_db.h, written once with $N
 * placeholders for SQLite and PostgreSQL. The engines differ only where
 * a row is claimed: PostgreSQL adds FOR UPDATE SKIP LOCKED
 * (ws_db_has(c, WS_DB_SKIP_LOCKED)); SQLite's single writer already
 * excludes a second claimer. Parameters whose type PostgreSQL cannot infer
 * from a column (CASE results, arithmetic) are CAST. The status rank is a
 * CASE expression built once from the generated facts.
 */
#include "order_db.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webshop/v1/order.facts.h"

#define DB_PENDING  WEBSHOP__V1__ORDER_STATUS__PENDING
#define DB_CANCELED WEBSHOP__V1__ORDER_STATUS__CANCELED
#define DB_CLAIM    " FOR UPDATE SKIP LOCKED"

/* ---- statements built from the facts ----------------------------------- */

static pthread_once_t db_sql_once = PTHREAD_ONCE_INIT;
static char db_sql_raise[768];
static char db_sql_settle[768];

/* "CASE status WHEN 1 THEN 1 ... ELSE 0 END" from webshop_v1_order_status_rank
 * over every value the enum declares. */
static void db_rank_case(char *out, size_t cap)
{
    const ProtobufCEnumDescriptor *d = &webshop__v1__order_status__descriptor;
    size_t len = (size_t)snprintf(out, cap, "(CASE status");
    for (unsigned i = 0; i < d->n_values && len < cap; i++) {
        int v = d->values[i].value;
        len += (size_t)snprintf(out + len, cap - len, " WHEN %d THEN %d", v,
                                webshop_v1_order_status_rank(v));
    }
    if (len < cap) {
        snprintf(out + len, cap - len, " ELSE 0 END)");
    }
}

static void db_sql_build(void)
{
    char rank[256];
    db_rank_case(rank, sizeof rank);
    snprintf(db_sql_raise, sizeof db_sql_raise,
             "UPDATE orders SET status = $2, reason = $3, updated_ms = $4,"
             " next_resend_ms = $5 WHERE id = $1 AND %s < CAST($6 AS INTEGER)"
             " AND (has_items = 1 OR CAST($7 AS INTEGER) = 0)",
             rank);
    snprintf(db_sql_settle, sizeof db_sql_settle,
             "UPDATE orders SET status = $2, reason = $3, updated_ms = $4,"
             " next_resend_ms = NULL, check_due_ms = NULL WHERE id = $1"
             " AND %s <= CAST($5 AS INTEGER) AND NOT (status = $2 AND reason = $3)",
             rank);
}

/* ---- helpers --------------------------------------------------------------- */

static ws_err db_bind_opt(ws_db_stmt *s, int pos, int64_t v)
{
    return v < 0 ? ws_db_bind_null(s, pos) : ws_db_bind_int64(s, pos, v);
}

/* Prepare sql and bind $1 = id. */
static ws_err db_prep_id(ws_db_conn *c, const char *sql, const char *id, ws_db_stmt **s)
{
    ws_err err = ws_db_prepare(c, sql, s);
    if (err == WS_OK) {
        err = ws_db_bind_text(*s, 1, id);
    }
    return err;
}

/* Run a statement; *hit true when it changed a row. */
static ws_err db_run_hit(ws_db_stmt *s, bool *hit)
{
    int64_t changes = 0;
    ws_err err = ws_db_run(s, &changes);
    if (err == WS_OK) {
        *hit = changes > 0;
    }
    return err;
}

/* Step a statement that returns at most one row: *row true with its first
 * column in *v; the statement is run to its end. */
static ws_err db_step_one(ws_db_stmt *s, bool *row, int64_t *v)
{
    bool r;
    ws_err err = ws_db_step(s, &r);
    if (err != WS_OK) {
        return err;
    }
    *row = r;
    if (r) {
        *v = ws_db_column_int64(s, 0);
        bool more = false;
        err = ws_db_step(s, &more);
        while (err == WS_OK && more) {
            err = ws_db_step(s, &more);
        }
    }
    ws_db_reset(s);
    return err;
}

static void db_copy_id(char dst[37], ws_db_stmt *s, int col)
{
    const char *v = ws_db_column_text(s, col);
    snprintf(dst, 37, "%s", v != NULL ? v : "");
}

/* ---- rows ------------------------------------------------------------------ */

ws_err order_db_read(ws_db_conn *c, const char *id, order_db_row *row)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c,
                            "SELECT status, cancel_confirmed, tombstone,"
                            " CASE WHEN check_due_ms IS NULL THEN 0 ELSE 1 END,"
                            " check_attempts, created_ms, has_items"
                            " FROM orders WHERE id = $1",
                            id, &s);
    bool r = false;
    if (err == WS_OK) {
        err = ws_db_step(s, &r);
    }
    if (err != WS_OK) {
        return err;
    }
    if (r) {
        row->status = (int)ws_db_column_int64(s, 0);
        row->confirmed = ws_db_column_int64(s, 1) != 0;
        row->tombstone = ws_db_column_int64(s, 2) != 0;
        row->check_due = ws_db_column_int64(s, 3) != 0;
        row->check_attempts = (int)ws_db_column_int64(s, 4);
        row->created_ms = ws_db_column_int64(s, 5);
        row->has_items = ws_db_column_int64(s, 6) != 0;
    }
    ws_db_reset(s);
    return r ? WS_OK : WS_ENOTFOUND;
}

ws_err order_db_insert(ws_db_conn *c, const order_db_new *o, bool *created)
{
    ws_db_stmt *s;
    ws_err err =
        db_prep_id(c,
                   "INSERT INTO orders(id, status, reason, created_ms, updated_ms,"
                   " next_resend_ms, items_due_ms, check_due_ms, tombstone,"
                   " has_items) VALUES ($1, $2, '', $3, $3, $4, $5, $6, $7, $8)"
                   " ON CONFLICT (id) DO NOTHING",
                   o->id, &s);
    if (err != WS_OK) {
        return err;
    }
    if ((err = ws_db_bind_int64(s, 2, o->status)) != WS_OK ||
        (err = ws_db_bind_int64(s, 3, o->now_ms)) != WS_OK ||
        (err = db_bind_opt(s, 4, o->next_resend_ms)) != WS_OK ||
        (err = db_bind_opt(s, 5, o->items_due_ms)) != WS_OK ||
        (err = db_bind_opt(s, 6, o->check_due_ms)) != WS_OK ||
        (err = ws_db_bind_int64(s, 7, o->tombstone)) != WS_OK ||
        (err = ws_db_bind_int64(s, 8, o->has_items)) != WS_OK) {
        ws_db_reset(s);
        return err;
    }
    return db_run_hit(s, created);
}

/* ---- lines ----------------------------------------------------------------- */

ws_err order_db_items_claim(ws_db_conn *c, const char *id, int64_t now_ms,
                            int64_t first_resend_ms, bool *claimed)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(
        c,
        "UPDATE orders SET has_items = 1, updated_ms = $2, items_due_ms = NULL,"
        " next_resend_ms = CASE WHEN status = $3 AND next_resend_ms IS NULL"
        " THEN CAST($4 AS BIGINT) ELSE next_resend_ms END"
        " WHERE id = $1 AND has_items = 0",
        id, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 2, now_ms);
    ws_db_bind_int64(s, 3, DB_PENDING);
    ws_db_bind_int64(s, 4, first_resend_ms);
    return db_run_hit(s, claimed);
}

ws_err order_db_items_put(ws_db_conn *c, const char *id, size_t n,
                          Webshop__V1__OrderItem *const *items)
{
    for (size_t i = 0; i < n; i++) {
        ws_db_stmt *s;
        ws_err err = db_prep_id(c,
                                "INSERT INTO order_items(order_id, line, inventory_id,"
                                " count) VALUES ($1, $2, $3, $4)",
                                id, &s);
        if (err != WS_OK) {
            return err;
        }
        ws_db_bind_int64(s, 2, (int64_t)i);
        ws_db_bind_int64(s, 3, items[i]->inventory_id);
        ws_db_bind_int64(s, 4, items[i]->count);
        if ((err = ws_db_run(s, NULL)) != WS_OK) {
            return err;
        }
    }
    return WS_OK;
}

#define DB_SQL_ITEMS                                                                     \
    "SELECT inventory_id, count FROM order_items WHERE order_id = $1 ORDER BY line"

ws_err order_db_items_same(ws_db_conn *c, const char *id, size_t n,
                           Webshop__V1__OrderItem *const *items, bool *same)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c, DB_SQL_ITEMS, id, &s);
    if (err != WS_OK) {
        return err;
    }
    size_t k = 0;
    bool eq = true, r;
    while ((err = ws_db_step(s, &r)) == WS_OK && r) {
        if (k >= n || ws_db_column_int64(s, 0) != items[k]->inventory_id ||
            ws_db_column_int64(s, 1) != items[k]->count) {
            eq = false;
        }
        k++;
    }
    ws_db_reset(s);
    if (err == WS_OK) {
        *same = eq && k == n && k > 0;
    }
    return err;
}

ws_err order_db_items_read(ws_db_conn *c, const char *id, Webshop__V1__OrderItem *items,
                           size_t cap, size_t *n)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c, DB_SQL_ITEMS, id, &s);
    if (err != WS_OK) {
        return err;
    }
    size_t k = 0;
    bool r;
    while ((err = ws_db_step(s, &r)) == WS_OK && r && k < cap) {
        webshop__v1__order_item__init(&items[k]);
        items[k].inventory_id = (int32_t)ws_db_column_int64(s, 0);
        items[k].count = (int32_t)ws_db_column_int64(s, 1);
        k++;
    }
    ws_db_reset(s);
    if (err == WS_OK) {
        *n = k;
    }
    return err;
}

/* ---- status ---------------------------------------------------------------- */

static ws_err db_move_bind(ws_db_stmt *s, const order_db_move *m)
{
    char *reason = strndup(m->reason != NULL ? m->reason : "", m->reason_len);
    if (reason == NULL) {
        ws_db_reset(s);
        return WS_ENOMEM;
    }
    ws_err err = ws_db_bind_int64(s, 2, m->status);
    if (err == WS_OK) {
        err = ws_db_bind_text(s, 3, reason);
    }
    if (err == WS_OK) {
        err = ws_db_bind_int64(s, 4, m->now_ms);
    }
    free(reason);
    return err;
}

ws_err order_db_status_raise(ws_db_conn *c, const order_db_move *m, bool *moved)
{
    pthread_once(&db_sql_once, db_sql_build);
    ws_db_stmt *s;
    ws_err err = db_prep_id(c, db_sql_raise, m->id, &s);
    if (err == WS_OK) {
        err = db_move_bind(s, m);
    }
    if (err != WS_OK) {
        return err;
    }
    db_bind_opt(s, 5, m->next_resend_ms);
    ws_db_bind_int64(s, 6, webshop_v1_order_status_rank(m->status));
    ws_db_bind_int64(s, 7, m->need_items);
    return db_run_hit(s, moved);
}

ws_err order_db_status_settle(ws_db_conn *c, const order_db_move *m, bool *moved)
{
    pthread_once(&db_sql_once, db_sql_build);
    ws_db_stmt *s;
    ws_err err = db_prep_id(c, db_sql_settle, m->id, &s);
    if (err == WS_OK) {
        err = db_move_bind(s, m);
    }
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 5, webshop_v1_order_status_rank(m->status));
    return db_run_hit(s, moved);
}

ws_err order_db_reveal(ws_db_conn *c, const char *id, int64_t now_ms, bool *revealed,
                       int *status)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c,
                            "UPDATE orders SET tombstone = 0, updated_ms = $2"
                            " WHERE id = $1 AND tombstone = 1 RETURNING status",
                            id, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 2, now_ms);
    int64_t v = 0;
    bool r = false;
    if ((err = db_step_one(s, &r, &v)) == WS_OK) {
        *revealed = r;
        *status = (int)v;
    }
    return err;
}

/* ---- outcome checks -------------------------------------------------------- */

ws_err order_db_check_arm(ws_db_conn *c, const char *id, int64_t due_ms)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c,
                            "UPDATE orders SET check_due_ms = $2, check_attempts = 0"
                            " WHERE id = $1 AND check_due_ms IS NULL",
                            id, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 2, due_ms);
    return ws_db_run(s, NULL);
}

ws_err order_db_check_rearm(ws_db_conn *c, const char *id, int64_t due_ms,
                            int max_attempts, bool *found, bool *dropped)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(
        c,
        "UPDATE orders SET check_attempts = check_attempts + 1,"
        " check_due_ms = CASE WHEN check_attempts + 1 >= CAST($3 AS INTEGER) THEN NULL"
        " ELSE CAST($2 AS BIGINT) END"
        " WHERE id = $1 AND check_due_ms IS NOT NULL RETURNING check_attempts",
        id, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 2, due_ms);
    ws_db_bind_int64(s, 3, max_attempts);
    int64_t attempts = 0;
    bool r = false;
    if ((err = db_step_one(s, &r, &attempts)) == WS_OK) {
        *found = r;
        *dropped = r && attempts >= max_attempts;
    }
    return err;
}

ws_err order_db_check_clear(ws_db_conn *c, const char *id)
{
    ws_db_stmt *s;
    ws_err err =
        db_prep_id(c, "UPDATE orders SET check_due_ms = NULL WHERE id = $1", id, &s);
    return err == WS_OK ? ws_db_run(s, NULL) : err;
}

/* ---- cancels ---------------------------------------------------------------- */

ws_err order_db_cancel_confirm(ws_db_conn *c, const char *id, bool *moved)
{
    ws_db_stmt *s;
    ws_err err =
        db_prep_id(c,
                   "UPDATE orders SET cancel_confirmed = 1, next_resend_ms = NULL"
                   " WHERE id = $1 AND status = $2",
                   id, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 2, DB_CANCELED);
    return db_run_hit(s, moved);
}

ws_err order_db_cancel_due(ws_db_conn *c, const char *id, int *attempts)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c,
                            "SELECT cancel_attempts FROM orders WHERE id = $1"
                            " AND status = $2 AND cancel_confirmed = 0"
                            " AND next_resend_ms IS NOT NULL",
                            id, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 2, DB_CANCELED);
    int64_t v = 0;
    bool r = false;
    if ((err = db_step_one(s, &r, &v)) != WS_OK) {
        return err;
    }
    if (!r) {
        return WS_ENOTFOUND;
    }
    *attempts = (int)v;
    return WS_OK;
}

ws_err order_db_cancel_next(ws_db_conn *c, const char *id, bool count, int64_t next_ms,
                            bool *moved)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c,
                            "UPDATE orders SET cancel_attempts = cancel_attempts + $2,"
                            " next_resend_ms = $3 WHERE id = $1 AND status = $4"
                            " AND cancel_confirmed = 0",
                            id, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 2, count ? 1 : 0);
    db_bind_opt(s, 3, next_ms);
    ws_db_bind_int64(s, 4, DB_CANCELED);
    return db_run_hit(s, moved);
}

/* ---- recovery ---------------------------------------------------------------- */

ws_err order_db_outbox_backlog(ws_db_conn *c, int64_t *n)
{
    ws_db_stmt *s;
    ws_err err = ws_db_prepare(c,
                               "SELECT coalesce((SELECT max(id) FROM outbox) -"
                               " (SELECT min(id) FROM outbox) + 1, 0)",
                               &s);
    if (err != WS_OK) {
        return err;
    }
    bool r = false;
    int64_t v = 0;
    if ((err = db_step_one(s, &r, &v)) == WS_OK) {
        *n = r ? v : 0;
    }
    return err;
}

/* Run a due-rows select (binds: $1 now, $2 limit, and $3 when status >= 0);
 * columns id, attempts, created_ms, due. */
static ws_err db_due_rows(ws_db_conn *c, const char *sql, int64_t now_ms, size_t cap,
                          int status, order_db_due *rows, size_t *n)
{
    ws_db_stmt *s;
    ws_err err = ws_db_prepare(c, sql, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 1, now_ms);
    ws_db_bind_int64(s, 2, (int64_t)cap);
    if (status >= 0) {
        ws_db_bind_int64(s, 3, status);
    }
    size_t k = 0;
    bool r;
    while ((err = ws_db_step(s, &r)) == WS_OK && r && k < cap) {
        db_copy_id(rows[k].id, s, 0);
        rows[k].attempts = (int)ws_db_column_int64(s, 1);
        rows[k].created_ms = ws_db_column_int64(s, 2);
        rows[k].due_ms = ws_db_column_int64(s, 3);
        k++;
    }
    ws_db_reset(s);
    if (err == WS_OK) {
        *n = k;
    }
    return err;
}

#define DB_SQL_RESEND_DUE                                                                \
    "SELECT id, attempts, created_ms, next_resend_ms FROM orders WHERE status = $3"      \
    " AND next_resend_ms <= $1 AND has_items = 1 ORDER BY next_resend_ms LIMIT $2"

ws_err order_db_resend_due(ws_db_conn *c, int64_t now_ms, size_t cap, order_db_due *rows,
                           size_t *n)
{
    const char *sql =
        ws_db_has(c, WS_DB_SKIP_LOCKED) ? DB_SQL_RESEND_DUE DB_CLAIM : DB_SQL_RESEND_DUE;
    return db_due_rows(c, sql, now_ms, cap, DB_PENDING, rows, n);
}

ws_err order_db_resend_next(ws_db_conn *c, const char *id, bool count, int64_t next_ms,
                            bool *moved)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c,
                            "UPDATE orders SET attempts = attempts + $2,"
                            " next_resend_ms = $3 WHERE id = $1 AND status = $4",
                            id, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 2, count ? 1 : 0);
    db_bind_opt(s, 3, next_ms);
    ws_db_bind_int64(s, 4, DB_PENDING);
    return db_run_hit(s, moved);
}

/* The SQL of one kind of due row: select (with and without the claim
 * suffix), the lease move, and the give-back. */
typedef struct db_due_sql {
    const char *select;
    const char *select_claim;
    const char *lease;   /* $1 id, $2 lease_until */
    const char *unclaim; /* $1 id, $2 lease_until, $3 due */
    bool status;         /* the select binds $3 = CANCELED */
} db_due_sql;

#define DB_DUE_SEL(cols, where, col)                                                     \
    "SELECT id, " cols ", created_ms, " col " FROM orders WHERE " where " AND " col      \
    " <= $1 ORDER BY " col " LIMIT $2"
#define DB_DUE(cols, where, col, st)                                                     \
    {                                                                                    \
        DB_DUE_SEL(cols, where, col), DB_DUE_SEL(cols, where, col) DB_CLAIM,             \
            "UPDATE orders SET " col " = $2 WHERE id = $1",                              \
            "UPDATE orders SET " col " = $3 WHERE id = $1 AND " col " = $2", st          \
    }

static const db_due_sql db_due_kinds[] = {
    [ORDER_DB_DUE_CANCEL] =
        DB_DUE("cancel_attempts", "status = $3 AND cancel_confirmed = 0",
               "next_resend_ms", true),
    [ORDER_DB_DUE_ITEMS] = DB_DUE("items_attempts", "1 = 1", "items_due_ms", false),
    [ORDER_DB_DUE_CHECK] = DB_DUE("check_attempts", "1 = 1", "check_due_ms", false),
};

ws_err order_db_claim_due(ws_db_conn *c, order_db_due_kind kind, int64_t now_ms,
                          int64_t lease_until_ms, size_t cap, order_db_due *rows,
                          size_t *n)
{
    const db_due_sql *q = &db_due_kinds[kind];
    const char *sql = ws_db_has(c, WS_DB_SKIP_LOCKED) ? q->select_claim : q->select;
    size_t k = 0;
    ws_err err = db_due_rows(c, sql, now_ms, cap, q->status ? DB_CANCELED : -1, rows, &k);
    for (size_t i = 0; err == WS_OK && i < k; i++) {
        ws_db_stmt *s;
        if ((err = db_prep_id(c, q->lease, rows[i].id, &s)) == WS_OK) {
            ws_db_bind_int64(s, 2, lease_until_ms);
            err = ws_db_run(s, NULL);
        }
    }
    if (err == WS_OK) {
        *n = k;
    }
    return err;
}

ws_err order_db_unclaim(ws_db_conn *c, order_db_due_kind kind, const char *id,
                        int64_t lease_until_ms, int64_t due_ms)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c, db_due_kinds[kind].unclaim, id, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 2, lease_until_ms);
    ws_db_bind_int64(s, 3, due_ms);
    return ws_db_run(s, NULL);
}

ws_err order_db_items_rearm(ws_db_conn *c, const char *id, int64_t due_ms,
                            int max_attempts, bool *found, int *attempts)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(
        c,
        "UPDATE orders SET items_attempts = items_attempts + 1,"
        " items_due_ms = CASE WHEN items_attempts + 1 >= CAST($3 AS INTEGER) THEN NULL"
        " ELSE CAST($2 AS BIGINT) END WHERE id = $1 AND items_due_ms IS NOT NULL"
        " RETURNING items_attempts",
        id, &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 2, due_ms);
    ws_db_bind_int64(s, 3, max_attempts);
    int64_t v = 0;
    bool r = false;
    if ((err = db_step_one(s, &r, &v)) == WS_OK) {
        *found = r;
        *attempts = (int)v;
    }
    return err;
}

/* ---- tombstones ------------------------------------------------------------ */

#define DB_TOMB_DONE                                                                     \
    "tombstone = 1 AND created_ms <= $1 AND items_due_ms IS NULL"                        \
    " AND (cancel_confirmed = 1 OR next_resend_ms IS NULL)"
#define DB_TOMB_PICK                                                                     \
    "SELECT id FROM orders WHERE " DB_TOMB_DONE " ORDER BY created_ms LIMIT $2"
/* PostgreSQL locks the candidates once, in a materialised CTE: a locking
 * subquery under the DELETE may be re-run per row, and would then skip the
 * rows this statement already deleted and pick the next ones past LIMIT. */
#define DB_SQL_TOMB_PG                                                                   \
    "WITH doomed AS MATERIALIZED (" DB_TOMB_PICK DB_CLAIM ")"                            \
    " DELETE FROM orders WHERE " DB_TOMB_DONE " AND id IN (SELECT id FROM doomed)"
#define DB_SQL_TOMB_SQLITE                                                               \
    "DELETE FROM orders WHERE " DB_TOMB_DONE " AND id IN (" DB_TOMB_PICK ")"

ws_err order_db_tombstones_expire(ws_db_conn *c, int64_t before_ms, size_t limit,
                                  size_t *deleted)
{
    ws_db_stmt *s;
    ws_err err =
        ws_db_prepare(c, ws_db_dialect(c, DB_SQL_TOMB_SQLITE, DB_SQL_TOMB_PG), &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 1, before_ms);
    ws_db_bind_int64(s, 2, (int64_t)limit);
    int64_t changes = 0;
    if ((err = ws_db_run(s, &changes)) == WS_OK) {
        *deleted = (size_t)changes;
    }
    return err;
}

ws_err order_db_tombstones_restamp(ws_db_conn *c, int64_t after_ms, int64_t now_ms,
                                   size_t *n)
{
    ws_db_stmt *s;
    ws_err err = ws_db_prepare(
        c, "UPDATE orders SET created_ms = $1 WHERE tombstone = 1 AND created_ms > $2",
        &s);
    if (err != WS_OK) {
        return err;
    }
    ws_db_bind_int64(s, 1, now_ms);
    ws_db_bind_int64(s, 2, after_ms);
    int64_t changes = 0;
    if ((err = ws_db_run(s, &changes)) == WS_OK) {
        *n = (size_t)changes;
    }
    return err;
}

/* ---- queries --------------------------------------------------------------- */

#define DB_ORDER_COLUMNS "id, status, reason, created_ms, updated_ms, attempts"

static char *db_column_dup(ws_db_stmt *s, int col)
{
    const char *v = ws_db_column_text(s, col);
    return strdup(v != NULL ? v : "");
}

/* An Order from the current row of s (DB_ORDER_COLUMNS), without lines. */
static ws_err db_order_load(ws_db_stmt *s, Webshop__V1__Order **out)
{
    Webshop__V1__Order *o = malloc(sizeof *o);
    if (o == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__order__init(o);
    o->id = db_column_dup(s, 0);
    o->reason = db_column_dup(s, 2);
    if (o->id == NULL || o->reason == NULL) {
        protobuf_c_message_free_unpacked(&o->base, NULL);
        return WS_ENOMEM;
    }
    o->status = (Webshop__V1__OrderStatus)ws_db_column_int64(s, 1);
    o->created_ms = ws_db_column_int64(s, 3);
    o->updated_ms = ws_db_column_int64(s, 4);
    o->attempts = (int32_t)ws_db_column_int64(s, 5);
    *out = o;
    return WS_OK;
}

/* Append one line to o's items (*cap: their room, grown here). */
static ws_err db_order_item_add(Webshop__V1__Order *o, size_t *cap, int64_t inventory_id,
                                int64_t count)
{
    if (o->n_items == *cap) {
        size_t ncap = *cap ? *cap * 2 : 4;
        Webshop__V1__OrderItem **ni = realloc(o->items, ncap * sizeof *ni);
        if (ni == NULL) {
            return WS_ENOMEM;
        }
        o->items = ni;
        *cap = ncap;
    }
    Webshop__V1__OrderItem *it = malloc(sizeof *it);
    if (it == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__order_item__init(it);
    it->inventory_id = (int32_t)inventory_id;
    it->count = (int32_t)count;
    o->items[o->n_items++] = it;
    return WS_OK;
}

/* The lines of o, appended as malloc'ed items. */
static ws_err db_order_items(ws_db_conn *c, Webshop__V1__Order *o)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c, DB_SQL_ITEMS, o->id, &s);
    if (err != WS_OK) {
        return err;
    }
    size_t cap = 0;
    bool r;
    while ((err = ws_db_step(s, &r)) == WS_OK && r) {
        err = db_order_item_add(o, &cap, ws_db_column_int64(s, 0),
                                ws_db_column_int64(s, 1));
        if (err != WS_OK) {
            break;
        }
    }
    ws_db_reset(s);
    return err;
}

/* One statement for an order and its lines (a row per line; one row with
 * NULL lines for an order without any), so that GetOrder can run it on its
 * own, outside a transaction: one round trip on PostgreSQL. */
#define DB_SQL_ORDER_WITH_ITEMS                                                          \
    "SELECT o.id, o.status, o.reason, o.created_ms, o.updated_ms, o.attempts,"           \
    " i.inventory_id, i.count FROM orders o"                                             \
    " LEFT JOIN order_items i ON i.order_id = o.id"                                      \
    " WHERE o.id = $1 AND o.tombstone = 0 ORDER BY i.line"

ws_err order_db_get(ws_db_conn *c, const char *id, Webshop__V1__Order **out)
{
    ws_db_stmt *s;
    ws_err err = db_prep_id(c, DB_SQL_ORDER_WITH_ITEMS, id, &s);
    bool r = false;
    if (err == WS_OK) {
        err = ws_db_step(s, &r);
    }
    if (err != WS_OK) {
        return err;
    }
    if (!r) {
        ws_db_reset(s);
        return WS_ENOTFOUND;
    }
    Webshop__V1__Order *o;
    if ((err = db_order_load(s, &o)) != WS_OK) {
        ws_db_reset(s);
        return err;
    }
    size_t cap = 0;
    while (err == WS_OK && r && !ws_db_column_is_null(s, 6)) {
        err = db_order_item_add(o, &cap, ws_db_column_int64(s, 6),
                                ws_db_column_int64(s, 7));
        if (err == WS_OK) {
            err = ws_db_step(s, &r);
        }
    }
    ws_db_reset(s);
    if (err != WS_OK) {
        protobuf_c_message_free_unpacked(&o->base, NULL);
        return err;
    }
    *out = o;
    return WS_OK;
}

ws_err order_db_list(ws_db_conn *c, int64_t after_ms, const char *after_id, size_t cap,
                     Webshop__V1__Order **out, size_t *n, bool *more)
{
    ws_db_stmt *s;
    ws_err err;
    if (after_id == NULL) {
        err = ws_db_prepare(c,
                            "SELECT " DB_ORDER_COLUMNS " FROM orders WHERE tombstone = 0"
                            " ORDER BY created_ms DESC, id DESC LIMIT $1",
                            &s);
        if (err == WS_OK) {
            err = ws_db_bind_int64(s, 1, (int64_t)cap + 1);
        }
    } else {
        err = ws_db_prepare(c,
                            "SELECT " DB_ORDER_COLUMNS " FROM orders"
                            " WHERE (created_ms, id) < (CAST($1 AS BIGINT), $2)"
                            " AND tombstone = 0"
                            " ORDER BY created_ms DESC, id DESC LIMIT $3",
                            &s);
        if (err == WS_OK) {
            ws_db_bind_int64(s, 1, after_ms);
            ws_db_bind_text(s, 2, after_id);
            err = ws_db_bind_int64(s, 3, (int64_t)cap + 1); /* one more: a next page? */
        }
    }
    if (err != WS_OK) {
        return err;
    }
    size_t k = 0;
    bool r, next = false;
    while ((err = ws_db_step(s, &r)) == WS_OK && r) {
        if (k == cap) {
            next = true;
            break;
        }
        if ((err = db_order_load(s, &out[k])) != WS_OK) {
            break;
        }
        k++;
    }
    ws_db_reset(s);
    for (size_t i = 0; err == WS_OK && i < k; i++) {
        err = db_order_items(c, out[i]);
    }
    if (err != WS_OK) {
        for (size_t i = 0; i < k; i++) {
            protobuf_c_message_free_unpacked(&out[i]->base, NULL);
            out[i] = NULL;
        }
        return err;
    }
    *n = k;
    *more = next;
    return WS_OK;
}

ws_err order_db_count_by_status(ws_db_conn *c, int64_t *counts, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        counts[i] = 0;
    }
    ws_db_stmt *s;
    ws_err err = ws_db_prepare(
        c, "SELECT status, count(*) FROM orders WHERE tombstone = 0 GROUP BY status", &s);
    if (err != WS_OK) {
        return err;
    }
    bool row = false;
    while ((err = ws_db_step(s, &row)) == WS_OK && row) {
        int64_t status = ws_db_column_int64(s, 0);
        if (status >= 0 && (uint64_t)status < n) {
            counts[status] = ws_db_column_int64(s, 1);
        }
    }
    ws_db_reset(s);
    return err;
}
