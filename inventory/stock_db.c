/*
 * The inventory's storage adapter (see stock_db.h): all of its SQL, written
 * once with $N placeholders for both engines. Nothing here differs between
 * SQLite and PostgreSQL: both have INSERT ... ON CONFLICT DO NOTHING, a
 * DELETE whose IN (...) subquery has ORDER BY and LIMIT, and the same
 * boolean-free columns (confirmed is 0/1), so no dialect table is needed;
 * ws_db_dialect would be the place if one ever is. Statements are cached by
 * lib/db per connection, so each text is compiled once per connection.
 *
 * The reservation status is stored as its lower-case name ('reserved',
 * 'rejected', 'released', 'tombstoned'); the release kind as '',
 * 'canceled' or 'orphan'. The mapping to the contract's enum lives here.
 */
#include "stock_db.h"

#include <stdio.h>
#include <string.h>

/* One parameter of a statement: an integer, or text (NULL binds NULL). */
typedef struct stock_db_arg {
    bool is_text;
    int64_t i;
    const char *text;
} stock_db_arg;

#define DB_INT(v)  ((stock_db_arg){.is_text = false, .i = (int64_t)(v)})
#define DB_TEXT(v) ((stock_db_arg){.is_text = true, .text = (v)})
/* args array and count for stock_db_prepare. */
#define DB_ARGS(...)                                                                     \
    ((const stock_db_arg[]){__VA_ARGS__}),                                               \
        (sizeof((const stock_db_arg[]){__VA_ARGS__}) / sizeof(stock_db_arg))

static const char *const stock_db_status_names[] = {
    [WEBSHOP__V1__RESERVATION_STATUS__RESERVED] = "reserved",
    [WEBSHOP__V1__RESERVATION_STATUS__REJECTED] = "rejected",
    [WEBSHOP__V1__RESERVATION_STATUS__RELEASED] = "released",
    [WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED] = "tombstoned",
};

static Webshop__V1__ReservationStatus stock_db_status_parse(const char *s)
{
    for (int i = 1; i <= WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED; i++) {
        if (s != NULL && strcmp(s, stock_db_status_names[i]) == 0) {
            return (Webshop__V1__ReservationStatus)i;
        }
    }
    return WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN;
}

static const char *stock_db_status_name(Webshop__V1__ReservationStatus st)
{
    if (st < WEBSHOP__V1__RESERVATION_STATUS__RESERVED ||
        st > WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED) {
        return NULL; /* binds NULL: the NOT NULL constraint refuses it */
    }
    return stock_db_status_names[st];
}

/* The cached statement for sql with args bound. */
static ws_err stock_db_prepare(ws_db_conn *c, const char *sql, const stock_db_arg *args,
                               size_t n, ws_db_stmt **out)
{
    ws_db_stmt *st = NULL;
    ws_err err = ws_db_prepare(c, sql, &st);
    for (size_t i = 0; err == WS_OK && i < n; i++) {
        err = args[i].is_text ? ws_db_bind_text(st, (int)i + 1, args[i].text)
                              : ws_db_bind_int64(st, (int)i + 1, args[i].i);
    }
    if (err != WS_OK) {
        ws_db_reset(st);
        return err;
    }
    *out = st;
    return WS_OK;
}

/* Run a statement that returns no row; *changes (may be NULL) its rows. */
static ws_err stock_db_run(ws_db_conn *c, const char *sql, const stock_db_arg *args,
                           size_t n, int64_t *changes)
{
    ws_db_stmt *st;
    ws_err err = stock_db_prepare(c, sql, args, n, &st);
    if (err != WS_OK) {
        return err;
    }
    err = ws_db_run(st, changes);
    ws_db_reset(st);
    return err;
}

/* Run a statement that returns at most one row of integers: *found (OUT)
 * whether it did, vals[0..n_vals) its columns. */
static ws_err stock_db_ints(ws_db_conn *c, const char *sql, const stock_db_arg *args,
                            size_t n, bool *found, int64_t *vals, int n_vals)
{
    ws_db_stmt *st;
    ws_err err = stock_db_prepare(c, sql, args, n, &st);
    if (err != WS_OK) {
        return err;
    }
    bool row = false;
    err = ws_db_step(st, &row);
    if (err == WS_OK) {
        for (int i = 0; row && i < n_vals; i++) {
            vals[i] = ws_db_column_int64(st, i);
        }
        *found = row;
    }
    ws_db_reset(st);
    return err;
}

/* ---- stock ------------------------------------------------------------ */

ws_err inv_db_stock_take(ws_db_conn *c, int32_t product_id, int32_t count, bool *taken)
{
    int64_t changes = 0;
    ws_err err = stock_db_run(c,
                              "UPDATE products SET balance = balance - $1"
                              " WHERE id = $2 AND balance >= $1",
                              DB_ARGS(DB_INT(count), DB_INT(product_id)), &changes);
    if (err == WS_OK) {
        *taken = changes == 1;
    }
    return err;
}

ws_err inv_db_stock_restock(ws_db_conn *c, int32_t product_id, int32_t count)
{
    int64_t changes = 0;
    ws_err err =
        stock_db_run(c, "UPDATE products SET balance = balance + $1 WHERE id = $2",
                     DB_ARGS(DB_INT(count), DB_INT(product_id)), &changes);
    return err == WS_OK && changes != 1 ? WS_ESTORE : err;
}

ws_err inv_db_stock_balance(ws_db_conn *c, int32_t product_id, int64_t *balance)
{
    bool found = false;
    int64_t v = 0;
    ws_err err = stock_db_ints(c, "SELECT balance FROM products WHERE id = $1",
                               DB_ARGS(DB_INT(product_id)), &found, &v, 1);
    if (err == WS_OK && !found) {
        return WS_ENOTFOUND;
    }
    if (err == WS_OK) {
        *balance = v;
    }
    return err;
}

ws_err inv_db_stock_levels(ws_db_conn *c, int32_t product_id, int64_t *balance,
                           int64_t *held, int64_t *added)
{
    bool found = false;
    int64_t v[3] = {0};
    ws_err err =
        stock_db_ints(c,
                      "SELECT p.balance, p.stock_added,"
                      " (SELECT coalesce(sum(i.count), 0) FROM reservation_items i"
                      "  JOIN reservations r ON r.order_id = i.order_id"
                      "  WHERE r.status = 'reserved' AND i.product_id = p.id)"
                      " FROM products p WHERE p.id = $1",
                      DB_ARGS(DB_INT(product_id)), &found, v, 3);
    if (err == WS_OK && !found) {
        return WS_ENOTFOUND;
    }
    if (err == WS_OK) {
        *balance = v[0];
        *added = v[1];
        *held = v[2];
    }
    return err;
}

/* ---- reservations ------------------------------------------------------- */

ws_err inv_db_reservation_record(ws_db_conn *c, const char *order_id,
                                 Webshop__V1__ReservationStatus status,
                                 const char *reason, int64_t now_ms, bool *first)
{
    int64_t changes = 0;
    ws_err err = stock_db_run(
        c,
        "INSERT INTO reservations(order_id, status, reason,"
        " created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (order_id) DO NOTHING",
        DB_ARGS(DB_TEXT(order_id), DB_TEXT(stock_db_status_name(status)),
                DB_TEXT(reason ? reason : ""), DB_INT(now_ms), DB_INT(now_ms)),
        &changes);
    if (err == WS_OK) {
        *first = changes == 1;
    }
    return err;
}

ws_err inv_db_reservation_items_record(ws_db_conn *c, const char *order_id,
                                       const inv_db_line *lines, size_t n)
{
    ws_err err = WS_OK;
    for (size_t i = 0; err == WS_OK && i < n; i++) {
        err =
            stock_db_run(c,
                         "INSERT INTO reservation_items(order_id, idx, product_id, count)"
                         " VALUES ($1, $2, $3, $4)",
                         DB_ARGS(DB_TEXT(order_id), DB_INT(i),
                                 DB_INT(lines[i].product_id), DB_INT(lines[i].count)),
                         NULL);
    }
    return err;
}

ws_err inv_db_reservation_reject(ws_db_conn *c, const char *order_id, const char *reason,
                                 int64_t now_ms)
{
    int64_t changes = 0;
    ws_err err = stock_db_run(
        c,
        "UPDATE reservations SET status = 'rejected', reason = $1,"
        " updated_ms = $2 WHERE order_id = $3 AND status = 'reserved'",
        DB_ARGS(DB_TEXT(reason), DB_INT(now_ms), DB_TEXT(order_id)), &changes);
    return err == WS_OK && changes != 1 ? WS_ESTORE : err;
}

ws_err inv_db_reservation_get(ws_db_conn *c, const char *order_id,
                              inv_db_reservation *out)
{
    ws_db_stmt *st;
    ws_err err = stock_db_prepare(
        c, "SELECT status, reason, release_kind FROM reservations WHERE order_id = $1",
        DB_ARGS(DB_TEXT(order_id)), &st);
    if (err != WS_OK) {
        return err;
    }
    bool row = false;
    err = ws_db_step(st, &row);
    if (err == WS_OK) {
        memset(out, 0, sizeof(*out));
        if (row) {
            out->status = stock_db_status_parse(ws_db_column_text(st, 0));
            const char *r = ws_db_column_text(st, 1);
            snprintf(out->reason, sizeof(out->reason), "%s", r ? r : "");
            const char *kind = ws_db_column_text(st, 2);
            out->orphan = kind != NULL && strcmp(kind, "orphan") == 0;
            if (out->status == WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN) {
                err = WS_ESTORE; /* a status the CHECK constraint forbids */
            }
        }
    }
    ws_db_reset(st);
    return err;
}

ws_err inv_db_reservation_items(ws_db_conn *c, const char *order_id, inv_db_line *lines,
                                size_t cap, size_t *n)
{
    ws_db_stmt *st;
    ws_err err = stock_db_prepare(c,
                                  "SELECT product_id, count FROM reservation_items"
                                  " WHERE order_id = $1 ORDER BY idx",
                                  DB_ARGS(DB_TEXT(order_id)), &st);
    if (err != WS_OK) {
        return err;
    }
    size_t k = 0;
    bool row = true;
    while (err == WS_OK && row) {
        err = ws_db_step(st, &row);
        if (err == WS_OK && row) {
            if (k == cap) {
                err = WS_ESTORE; /* a record never holds more than an order may */
                break;
            }
            lines[k].product_id = (int32_t)ws_db_column_int64(st, 0);
            lines[k].count = (int32_t)ws_db_column_int64(st, 1);
            k++;
        }
    }
    ws_db_reset(st);
    if (err == WS_OK) {
        *n = k;
    }
    return err;
}

ws_err inv_db_reservation_release(ws_db_conn *c, const char *order_id, int64_t now_ms,
                                  bool *released)
{
    int64_t changes = 0;
    ws_err err = stock_db_run(c,
                              "UPDATE reservations SET status = 'released',"
                              " release_kind = 'canceled', reason = '', updated_ms = $1"
                              " WHERE order_id = $2 AND status = 'reserved'",
                              DB_ARGS(DB_INT(now_ms), DB_TEXT(order_id)), &changes);
    if (err == WS_OK) {
        *released = changes == 1;
    }
    return err;
}

/* ---- the orphan sweep --------------------------------------------------- */

ws_err inv_db_orphan_candidates(ws_db_conn *c, int64_t cutoff_ms,
                                inv_orphan_candidate *out, size_t limit, size_t *n)
{
    ws_db_stmt *st;
    ws_err err = stock_db_prepare(c,
                                  "SELECT order_id, created_ms FROM reservations"
                                  " WHERE status = 'reserved' AND confirmed = 0"
                                  " AND created_ms <= $1 ORDER BY created_ms LIMIT $2",
                                  DB_ARGS(DB_INT(cutoff_ms), DB_INT(limit)), &st);
    if (err != WS_OK) {
        return err;
    }
    size_t k = 0;
    bool row = true;
    while (err == WS_OK && row && k < limit) {
        err = ws_db_step(st, &row);
        if (err == WS_OK && row) {
            const char *id = ws_db_column_text(st, 0);
            snprintf(out[k].order_id, sizeof(out[k].order_id), "%s", id ? id : "");
            out[k].created_ms = ws_db_column_int64(st, 1);
            k++;
        }
    }
    ws_db_reset(st);
    if (err == WS_OK) {
        *n = k;
    }
    return err;
}

ws_err inv_db_orphan_due(ws_db_conn *c, const char *order_id, int64_t cutoff_ms,
                         bool *due)
{
    int64_t one = 0;
    return stock_db_ints(
        c,
        "SELECT 1 FROM reservations WHERE order_id = $1"
        " AND status = 'reserved' AND confirmed = 0 AND created_ms <= $2",
        DB_ARGS(DB_TEXT(order_id), DB_INT(cutoff_ms)), due, &one, 1);
}

ws_err inv_db_orphan_confirm(ws_db_conn *c, const char *order_id, int64_t cutoff_ms,
                             bool *confirmed)
{
    int64_t changes = 0;
    ws_err err = stock_db_run(c,
                              "UPDATE reservations SET confirmed = 1 WHERE order_id = $1"
                              " AND status = 'reserved' AND confirmed = 0"
                              " AND created_ms <= $2",
                              DB_ARGS(DB_TEXT(order_id), DB_INT(cutoff_ms)), &changes);
    if (err == WS_OK) {
        *confirmed = changes == 1;
    }
    return err;
}

ws_err inv_db_orphan_release(ws_db_conn *c, const char *order_id, const char *reason,
                             int64_t now_ms, int64_t cutoff_ms, bool *released)
{
    int64_t changes = 0;
    ws_err err = stock_db_run(
        c,
        "UPDATE reservations SET status = 'released',"
        " release_kind = 'orphan', reason = $1, updated_ms = $2"
        " WHERE order_id = $3 AND status = 'reserved'"
        " AND confirmed = 0 AND created_ms <= $4",
        DB_ARGS(DB_TEXT(reason), DB_INT(now_ms), DB_TEXT(order_id), DB_INT(cutoff_ms)),
        &changes);
    if (err == WS_OK) {
        *released = changes == 1;
    }
    return err;
}

ws_err inv_db_tombstones_expire(ws_db_conn *c, int64_t cutoff_ms, size_t limit, size_t *n)
{
    /* Tombstones never have items (a cancel records none), so deleting the
     * reservation row is the whole of it. The outer status test keeps the
     * statement exact should the row change between subquery and delete. */
    int64_t changes = 0;
    ws_err err = stock_db_run(c,
                              "DELETE FROM reservations WHERE status = 'tombstoned'"
                              " AND order_id IN (SELECT order_id FROM reservations"
                              "  WHERE status = 'tombstoned' AND updated_ms <= $1"
                              "  ORDER BY updated_ms LIMIT $2)",
                              DB_ARGS(DB_INT(cutoff_ms), DB_INT(limit)), &changes);
    if (err == WS_OK) {
        *n = (size_t)changes;
    }
    return err;
}

ws_err inv_db_restamp_future(ws_db_conn *c, int64_t after_ms, int64_t now_ms, size_t *n)
{
    int64_t held = 0, tomb = 0;
    ws_err err = stock_db_run(c,
                              "UPDATE reservations SET created_ms = $1"
                              " WHERE created_ms > $2 AND status = 'reserved'"
                              " AND confirmed = 0",
                              DB_ARGS(DB_INT(now_ms), DB_INT(after_ms)), &held);
    if (err == WS_OK) {
        err = stock_db_run(c,
                           "UPDATE reservations SET updated_ms = $1"
                           " WHERE updated_ms > $2 AND status = 'tombstoned'",
                           DB_ARGS(DB_INT(now_ms), DB_INT(after_ms)), &tomb);
    }
    if (err == WS_OK) {
        *n = (size_t)(held + tomb);
    }
    return err;
}

/* ---- catalog ------------------------------------------------------------ */

/* Visit every row of a products query (id, name, price, balance). */
static ws_err stock_db_products_visit(ws_db_stmt *st, inv_db_product_fn fn, void *ctx,
                                      size_t *visited)
{
    ws_err err = WS_OK;
    bool row = true;
    size_t k = 0;
    while (err == WS_OK && row) {
        err = ws_db_step(st, &row);
        if (err == WS_OK && row) {
            const char *name = ws_db_column_text(st, 1);
            inv_db_product p = {.id = (int32_t)ws_db_column_int64(st, 0),
                                .name = name ? name : "",
                                .price = (int32_t)ws_db_column_int64(st, 2),
                                .balance = ws_db_column_int64(st, 3)};
            err = fn(ctx, &p);
            k++;
        }
    }
    ws_db_reset(st);
    *visited = k;
    return err;
}

ws_err inv_db_catalog_each(ws_db_conn *c, inv_db_product_fn fn, void *ctx)
{
    ws_db_stmt *st;
    ws_err err = stock_db_prepare(
        c, "SELECT id, name, price, balance FROM products ORDER BY id", NULL, 0, &st);
    size_t n = 0;
    return err == WS_OK ? stock_db_products_visit(st, fn, ctx, &n) : err;
}

ws_err inv_db_product_get(ws_db_conn *c, int32_t id, inv_db_product_fn fn, void *ctx)
{
    ws_db_stmt *st;
    ws_err err =
        stock_db_prepare(c, "SELECT id, name, price, balance FROM products WHERE id = $1",
                         DB_ARGS(DB_INT(id)), &st);
    size_t n = 0;
    if (err == WS_OK) {
        err = stock_db_products_visit(st, fn, ctx, &n);
    }
    return err == WS_OK && n == 0 ? WS_ENOTFOUND : err;
}

ws_err inv_db_catalog_count(ws_db_conn *c, int64_t *n)
{
    bool found = false;
    int64_t v = 0;
    ws_err err =
        stock_db_ints(c, "SELECT count(*) FROM products", NULL, 0, &found, &v, 1);
    if (err == WS_OK) {
        *n = found ? v : 0;
    }
    return err;
}

ws_err inv_db_product_seed(ws_db_conn *c, const Webshop__V1__Product *p, bool *inserted)
{
    int64_t changes = 0;
    ws_err err =
        stock_db_run(c,
                     "INSERT INTO products(id, name, price, balance, stock_added)"
                     " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                     DB_ARGS(DB_INT(p->id), DB_TEXT(p->name), DB_INT(p->price),
                             DB_INT(p->balance), DB_INT(p->balance)),
                     &changes);
    if (err != WS_OK) {
        return err;
    }
    if (changes == 0) {
        /* Known: rename and reprice only; the stock may have moved. */
        err = stock_db_run(c, "UPDATE products SET name = $1, price = $2 WHERE id = $3",
                           DB_ARGS(DB_TEXT(p->name), DB_INT(p->price), DB_INT(p->id)),
                           NULL);
    }
    if (err == WS_OK) {
        *inserted = changes == 1;
    }
    return err;
}
