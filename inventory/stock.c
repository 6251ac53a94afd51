/*
 * Stock reservations (see stock.h). Each public operation is one
 * ws_store_txn whose body reads the order's reservation row first: that row
 * is the idempotency key (one per order id, lower case), so a duplicate
 * event finds the decision already taken and only re-queues what the record
 * says now. The transaction body has no effect outside the database (the
 * store may retry it), so the outcome struct is rewritten from scratch on
 * every attempt. The sweep's steps live in stock_sweep.c.
 */
#include "stock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "outbox.h"
#include "stock_int.h"
#include "uuid_text.h"

const ProtobufCMessageDescriptor *const inv_outbox_types[] = {
    &webshop__v1__in_stock__descriptor,
    &webshop__v1__out_of_stock__descriptor,
    &webshop__v1__stock_changed__descriptor,
};
const size_t inv_outbox_n_types = sizeof(inv_outbox_types) / sizeof(inv_outbox_types[0]);

/* Longest non-UUID order id still echoed back in an OutOfStock. */
#define STOCK_ECHO_ID_MAX 64

int64_t inv__stock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *const stock_status_names[] = {
    [WEBSHOP__V1__RESERVATION_STATUS__RESERVED] = "reserved",
    [WEBSHOP__V1__RESERVATION_STATUS__REJECTED] = "rejected",
    [WEBSHOP__V1__RESERVATION_STATUS__RELEASED] = "released",
    [WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED] = "tombstoned",
};

static Webshop__V1__ReservationStatus stock_status_parse(const char *s)
{
    for (int i = 1; i <= WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED; i++) {
        if (s != NULL && strcmp(s, stock_status_names[i]) == 0) {
            return (Webshop__V1__ReservationStatus)i;
        }
    }
    return WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN;
}

ws_err inv__stock_stmt_run(sqlite3_stmt *st)
{
    ws_err err = ws_err_from_sqlite(sqlite3_step(st));
    sqlite3_reset(st);
    return err;
}

/* Run one cached statement that returns no row (a savepoint command):
 * prepared once, not re-parsed as ws_store_exec would. */
static ws_err stock_exec_cached(ws_store *s, const char *sql)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s, sql, &st);
    return err == WS_OK ? inv__stock_stmt_run(st) : err;
}

/* The recorded status and reason of order_id, and whether a release was
 * the orphan sweep's (*orphan); status RESERVATION_UNKNOWN if there is no
 * row. */
static ws_err stock_reservation_find(ws_store *s, const char *order_id,
                                     Webshop__V1__ReservationStatus *status, bool *orphan,
                                     char *reason, size_t reason_len)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s, "SELECT status, reason, release_kind FROM reservations WHERE order_id = ?",
        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
    *orphan = false;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *status = stock_status_parse((const char *)sqlite3_column_text(st, 0));
        const char *r = (const char *)sqlite3_column_text(st, 1);
        snprintf(reason, reason_len, "%s", r ? r : "");
        const char *kind = (const char *)sqlite3_column_text(st, 2);
        *orphan = kind != NULL && strcmp(kind, "orphan") == 0;
        if (*status == WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN) {
            err = WS_ESTORE; /* a status the CHECK constraint forbids */
        }
    } else if (rc == SQLITE_DONE) {
        *status = WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN;
        reason[0] = '\0';
    } else {
        err = ws_err_from_sqlite(rc);
    }
    sqlite3_reset(st);
    return err;
}

static ws_err stock_reservation_insert(ws_store *s, const char *order_id,
                                       Webshop__V1__ReservationStatus status,
                                       const char *reason)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "INSERT INTO reservations(order_id, status, reason,"
                               " created_ms, updated_ms) VALUES (?, ?, ?, ?, ?4)",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, stock_status_names[status], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, inv__stock_now_ms());
    return inv__stock_stmt_run(st);
}

static ws_err stock_items_insert(ws_store *s, const char *order_id,
                                 const Webshop__V1__OrderSent *ev)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "INSERT INTO reservation_items(order_id, idx, product_id,"
                               " count) VALUES (?, ?, ?, ?)",
                               &st);
    for (size_t i = 0; err == WS_OK && i < ev->n_items; i++) {
        const Webshop__V1__OrderItem *it = ev->items[i];
        sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)i);
        sqlite3_bind_int(st, 3, it ? it->inventory_id : 0);
        sqlite3_bind_int(st, 4, it ? it->count : 0);
        err = inv__stock_stmt_run(st);
    }
    return err;
}

/* Current balance of product id: WS_ENOTFOUND if there is no such product. */
static ws_err stock_balance_get(ws_store *s, int32_t id, int64_t *balance)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s, "SELECT balance FROM products WHERE id = ?", &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *balance = sqlite3_column_int64(st, 0);
    } else {
        err = rc == SQLITE_DONE ? WS_ENOTFOUND : ws_err_from_sqlite(rc);
    }
    sqlite3_reset(st);
    return err;
}

static ws_err stock_queue_in_stock(ws_store *s, const char *order_id, size_t *n_queued)
{
    Webshop__V1__InStock m = WEBSHOP__V1__IN_STOCK__INIT;
    m.order_id = (char *)order_id;
    ws_err err = ws_outbox_put(s, WEBSHOP_V1_IN_STOCK_TOPIC, &m.base);
    *n_queued += err == WS_OK;
    return err;
}

static ws_err stock_queue_out_of_stock(ws_store *s, const char *order_id,
                                       const char *reason, size_t *n_queued)
{
    Webshop__V1__OutOfStock m = WEBSHOP__V1__OUT_OF_STOCK__INIT;
    m.order_id = (char *)order_id;
    m.reason = (char *)reason;
    ws_err err = ws_outbox_put(s, WEBSHOP_V1_OUT_OF_STOCK_TOPIC, &m.base);
    *n_queued += err == WS_OK;
    return err;
}

/* Queue one StockChanged for each distinct product among ids[0..n). */
static ws_err stock_queue_changed(ws_store *s, const int32_t *ids, size_t n,
                                  size_t *n_queued)
{
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            seen = ids[j] == ids[i];
        }
        if (seen) {
            continue;
        }
        int64_t balance = 0;
        ws_err err = stock_balance_get(s, ids[i], &balance);
        if (err != WS_OK) {
            return err;
        }
        Webshop__V1__StockChanged m = WEBSHOP__V1__STOCK_CHANGED__INIT;
        m.product_id = ids[i];
        m.balance = (int32_t)balance;
        err = ws_outbox_put(s, WEBSHOP_V1_STOCK_CHANGED_TOPIC, &m.base);
        if (err != WS_OK) {
            return err;
        }
        (*n_queued)++;
    }
    return WS_OK;
}

/* Why the items of ev cannot be reserved whatever the stock, or "" . */
static void stock_items_check(const Webshop__V1__OrderSent *ev, char *reason, size_t len)
{
    reason[0] = '\0';
    if (ev->n_items == 0) {
        snprintf(reason, len, "no items");
        return;
    }
    if (ev->n_items > WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS) {
        snprintf(reason, len, "too many items (at most %d)", WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS);
        return;
    }
    for (size_t i = 0; i < ev->n_items; i++) {
        const Webshop__V1__OrderItem *it = ev->items[i];
        if (it == NULL || it->inventory_id <= 0) {
            snprintf(reason, len, "unknown product %d", it ? it->inventory_id : 0);
            return;
        }
        if (it->count < WEBSHOP_V1_ORDER_ITEM_COUNT_MIN || it->count > WEBSHOP_V1_ORDER_ITEM_COUNT_MAX) {
            snprintf(reason, len, "invalid count for product %d", it->inventory_id);
            return;
        }
    }
}

/* Decrement every item, each statement checking its own balance. On the
 * first item that cannot be had, stop and say why in reason; the caller
 * rolls back to its savepoint. */
static ws_err stock_items_take(ws_store *s, const Webshop__V1__OrderSent *ev,
                               char *reason, size_t len)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "UPDATE products SET balance = balance - ?1"
                               " WHERE id = ?2 AND balance >= ?1",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3 *db = ws_store_db(s);
    for (size_t i = 0; i < ev->n_items; i++) {
        const Webshop__V1__OrderItem *it = ev->items[i];
        sqlite3_bind_int(st, 1, it->count);
        sqlite3_bind_int(st, 2, it->inventory_id);
        err = inv__stock_stmt_run(st);
        if (err != WS_OK) {
            return err;
        }
        if (sqlite3_changes(db) == 0) {
            int64_t balance;
            err = stock_balance_get(s, it->inventory_id, &balance);
            if (err == WS_ENOTFOUND) {
                snprintf(reason, len, "unknown product %d", it->inventory_id);
                return WS_OK;
            }
            if (err != WS_OK) {
                return err;
            }
            snprintf(reason, len, "not enough stock for product %d", it->inventory_id);
            return WS_OK;
        }
    }
    return WS_OK;
}

typedef struct stock_sent_ctx {
    const Webshop__V1__OrderSent *ev;
    const char *id; /* ev's order id normalized, or NULL when it is not a UUID */
    inv_order_outcome *out;
} stock_sent_ctx;

static bool stock_id_echoable(const char *id)
{
    size_t n = 0;
    for (; id[n] != '\0'; n++) {
        unsigned char c = (unsigned char)id[n];
        if (n >= STOCK_ECHO_ID_MAX || c < 0x21 || c > 0x7e) {
            return false;
        }
    }
    return n > 0;
}

/* A duplicate OrderSent: set out->action and re-queue what the record says
 * now (see the table in stock.h); a release by a cancel queues nothing. */
static ws_err stock_outcome_requeue(ws_store *s, const char *order_id, bool orphan,
                                    inv_order_outcome *out)
{
    switch (out->status) {
    case WEBSHOP__V1__RESERVATION_STATUS__RESERVED:
        out->action = INV_ORDER_DUPLICATE;
        return stock_queue_in_stock(s, order_id, &out->n_queued);
    case WEBSHOP__V1__RESERVATION_STATUS__RELEASED:
        if (!orphan) {
            out->action = INV_ORDER_DUPLICATE_CANCELED;
            return WS_OK;
        }
        out->action = INV_ORDER_DUPLICATE_ORPHAN;
        return stock_queue_out_of_stock(s, order_id, out->reason, &out->n_queued);
    case WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED:
        out->action = INV_ORDER_TOMBSTONED;
        snprintf(out->reason, sizeof(out->reason), "canceled");
        return stock_queue_out_of_stock(s, order_id, out->reason, &out->n_queued);
    default:
        out->action = INV_ORDER_DUPLICATE;
        return stock_queue_out_of_stock(s, order_id, out->reason, &out->n_queued);
    }
}

static ws_err stock_sent_txn(ws_store *s, void *arg)
{
    stock_sent_ctx *c = arg;
    const Webshop__V1__OrderSent *ev = c->ev;
    inv_order_outcome *out = c->out;
    memset(out, 0, sizeof(*out));
    out->n_items = ev->n_items;

    if (c->id == NULL) {
        out->action = INV_ORDER_BAD_ID;
        snprintf(out->reason, sizeof(out->reason), "bad order id");
        if (ev->order_id != NULL && stock_id_echoable(ev->order_id)) {
            return stock_queue_out_of_stock(s, ev->order_id, out->reason, &out->n_queued);
        }
        return WS_OK;
    }
    const char *id = c->id;
    snprintf(out->order_id, sizeof(out->order_id), "%s", id);

    bool orphan;
    ws_err err = stock_reservation_find(s, id, &out->status, &orphan, out->reason,
                                        sizeof(out->reason));
    if (err != WS_OK) {
        return err;
    }
    if (out->status != WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN) {
        return stock_outcome_requeue(s, id, orphan, out);
    }

    stock_items_check(ev, out->reason, sizeof(out->reason));
    if (out->reason[0] == '\0') {
        err = stock_exec_cached(s, "SAVEPOINT inv_reserve");
        if (err != WS_OK) {
            return err;
        }
        err = stock_items_take(s, ev, out->reason, sizeof(out->reason));
        if (err != WS_OK) {
            return err; /* the whole transaction rolls back */
        }
        if (out->reason[0] != '\0') {
            err = stock_exec_cached(s, "ROLLBACK TO inv_reserve");
            if (err != WS_OK) {
                return err;
            }
        }
        err = stock_exec_cached(s, "RELEASE inv_reserve");
        if (err != WS_OK) {
            return err;
        }
    }

    bool reserved = out->reason[0] == '\0';
    out->status = reserved ? WEBSHOP__V1__RESERVATION_STATUS__RESERVED
                           : WEBSHOP__V1__RESERVATION_STATUS__REJECTED;
    out->action = reserved ? INV_ORDER_RESERVED : INV_ORDER_REJECTED;
    err = stock_reservation_insert(s, id, out->status, out->reason);
    if (err == WS_OK && ev->n_items <= WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS) {
        err = stock_items_insert(s, id, ev);
    }
    if (err != WS_OK) {
        return err;
    }
    if (!reserved) {
        return stock_queue_out_of_stock(s, id, out->reason, &out->n_queued);
    }
    err = stock_queue_in_stock(s, id, &out->n_queued);
    if (err != WS_OK) {
        return err;
    }
    int32_t ids[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS];
    for (size_t i = 0; i < ev->n_items; i++) {
        ids[i] = ev->items[i]->inventory_id;
    }
    return stock_queue_changed(s, ids, ev->n_items, &out->n_queued);
}

ws_err inv_stock_order_sent(ws_store *s, const Webshop__V1__OrderSent *ev,
                            inv_order_outcome *out)
{
    if (s == NULL || ev == NULL || out == NULL) {
        return WS_EINVAL;
    }
    char id[WS_UUID_TEXT_LEN];
    inv_order_outcome o;
    stock_sent_ctx c = {
        .ev = ev, .id = ws_uuid_normalize(ev->order_id, id) ? id : NULL, .out = &o};
    ws_err err = ws_store_txn(s, stock_sent_txn, &c);
    if (err != WS_OK) {
        return err;
    }
    *out = o;
    return o.action == INV_ORDER_BAD_ID ? WS_EINVAL : WS_OK;
}

typedef struct stock_cancel_ctx {
    const char *order_id;
    inv_cancel_outcome *out;
} stock_cancel_ctx;

/* Put the items of a reserved order back; collect the products touched. */
static ws_err stock_items_restore(ws_store *s, const char *order_id, int32_t *ids,
                                  size_t *n_ids)
{
    int32_t counts[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS];
    size_t n = 0;
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "SELECT product_id, count FROM reservation_items"
                               " WHERE order_id = ? ORDER BY idx",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS) {
            rc = SQLITE_CORRUPT; /* a reserved order never holds more */
            break;
        }
        ids[n] = sqlite3_column_int(st, 0);
        counts[n] = sqlite3_column_int(st, 1);
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        return rc == SQLITE_CORRUPT ? WS_ESTORE : ws_err_from_sqlite(rc);
    }

    err = ws_store_stmt(s, "UPDATE products SET balance = balance + ? WHERE id = ?", &st);
    if (err != WS_OK) {
        return err;
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int(st, 1, counts[i]);
        sqlite3_bind_int(st, 2, ids[i]);
        err = inv__stock_stmt_run(st);
        if (err != WS_OK) {
            return err;
        }
        if (sqlite3_changes(ws_store_db(s)) != 1) {
            return WS_ESTORE; /* products are never deleted */
        }
    }
    *n_ids = n;
    return WS_OK;
}

ws_err inv__stock_release(ws_store *s, const char *order_id, const char *kind,
                          const char *reason, int64_t now_ms, size_t *n_items,
                          size_t *n_queued)
{
    int32_t ids[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS];
    size_t n = 0;
    ws_err err = stock_items_restore(s, order_id, ids, &n);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_stmt *st;
    err = ws_store_stmt(s,
                        "UPDATE reservations SET status = 'released', release_kind = ?1,"
                        " reason = ?2, updated_ms = ?3"
                        " WHERE order_id = ?4 AND status = 'reserved'",
                        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, reason ? reason : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms);
    sqlite3_bind_text(st, 4, order_id, -1, SQLITE_STATIC);
    err = inv__stock_stmt_run(st);
    if (err != WS_OK) {
        return err;
    }
    if (sqlite3_changes(ws_store_db(s)) != 1) {
        return WS_ESTORE; /* the caller checked it is held: rolls back */
    }
    size_t queued = 0;
    err = stock_queue_changed(s, ids, n, &queued);
    if (err == WS_OK) {
        *n_items = n;
        *n_queued += queued;
    }
    return err;
}

static ws_err stock_cancel_txn(ws_store *s, void *arg)
{
    stock_cancel_ctx *c = arg;
    inv_cancel_outcome *out = c->out;
    memset(out, 0, sizeof(*out));
    snprintf(out->order_id, sizeof(out->order_id), "%s", c->order_id);
    char reason[INV_REASON_LEN];
    bool orphan;
    ws_err err = stock_reservation_find(s, c->order_id, &out->status, &orphan, reason,
                                        sizeof(reason));
    if (err != WS_OK) {
        return err;
    }
    if (out->status == WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN) {
        out->action = INV_CANCEL_TOMBSTONED;
        out->status = WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED;
        return stock_reservation_insert(s, c->order_id, out->status, "");
    }
    if (out->status != WEBSHOP__V1__RESERVATION_STATUS__RESERVED) {
        out->action = INV_CANCEL_NOOP;
        return WS_OK;
    }
    size_t n_items = 0;
    err = inv__stock_release(s, c->order_id, "canceled", "", inv__stock_now_ms(),
                             &n_items, &out->n_queued);
    if (err != WS_OK) {
        return err;
    }
    out->action = INV_CANCEL_RELEASED;
    out->status = WEBSHOP__V1__RESERVATION_STATUS__RELEASED;
    return WS_OK;
}

ws_err inv_stock_order_canceled(ws_store *s, const Webshop__V1__OrderCanceled *ev,
                                inv_cancel_outcome *out)
{
    char id[WS_UUID_TEXT_LEN];
    if (s == NULL || ev == NULL || out == NULL || !ws_uuid_normalize(ev->order_id, id)) {
        return WS_EINVAL;
    }
    inv_cancel_outcome o;
    stock_cancel_ctx c = {.order_id = id, .out = &o};
    ws_err err = ws_store_txn(s, stock_cancel_txn, &c);
    if (err == WS_OK) {
        *out = o;
    }
    return err;
}

/* ---- read side ------------------------------------------------------- */

static Webshop__V1__Product *stock_product_new(sqlite3_stmt *st)
{
    Webshop__V1__Product *p = malloc(sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    webshop__v1__product__init(p);
    const char *name = (const char *)sqlite3_column_text(st, 1);
    p->name = strdup(name ? name : "");
    if (p->name == NULL) {
        free(p);
        return NULL;
    }
    p->id = sqlite3_column_int(st, 0);
    p->price = sqlite3_column_int(st, 2);
    p->balance = sqlite3_column_int(st, 3);
    return p;
}

ws_err inv_stock_catalog(ws_store *s, Webshop__V1__GetCatalogResponse **out)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s, "SELECT id, name, price, balance FROM products ORDER BY id", &st);
    if (err != WS_OK) {
        return err;
    }
    Webshop__V1__GetCatalogResponse *r = malloc(sizeof(*r));
    if (r == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__get_catalog_response__init(r);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (r->n_products == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            Webshop__V1__Product **a = realloc(r->products, ncap * sizeof(*a));
            if (a == NULL) {
                err = WS_ENOMEM;
                break;
            }
            r->products = a;
            cap = ncap;
        }
        Webshop__V1__Product *p = stock_product_new(st);
        if (p == NULL) {
            err = WS_ENOMEM;
            break;
        }
        r->products[r->n_products++] = p;
    }
    if (err == WS_OK && rc != SQLITE_DONE) {
        err = ws_err_from_sqlite(rc);
        err = err == WS_OK ? WS_ESTORE : err;
    }
    sqlite3_reset(st);
    if (err != WS_OK) {
        protobuf_c_message_free_unpacked(&r->base, NULL);
        return err;
    }
    *out = r;
    return WS_OK;
}

ws_err inv_stock_product(ws_store *s, int32_t id, Webshop__V1__Product **out)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s, "SELECT id, name, price, balance FROM products WHERE id = ?", &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int(st, 1, id);
    int rc = sqlite3_step(st);
    Webshop__V1__Product *p = NULL;
    if (rc == SQLITE_ROW) {
        p = stock_product_new(st);
        err = p ? WS_OK : WS_ENOMEM;
    } else if (rc == SQLITE_DONE) {
        err = WS_ENOTFOUND;
    } else {
        err = ws_err_from_sqlite(rc);
    }
    sqlite3_reset(st);
    if (err == WS_OK) {
        *out = p;
    }
    return err;
}

static ws_err stock_reservation_items_load(ws_store *s, const char *order_id,
                                           Webshop__V1__GetReservationResponse *r)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "SELECT product_id, count FROM reservation_items"
                               " WHERE order_id = ? ORDER BY idx",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (r->n_items == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            Webshop__V1__OrderItem **a = realloc(r->items, ncap * sizeof(*a));
            if (a == NULL) {
                err = WS_ENOMEM;
                break;
            }
            r->items = a;
            cap = ncap;
        }
        Webshop__V1__OrderItem *it = malloc(sizeof(*it));
        if (it == NULL) {
            err = WS_ENOMEM;
            break;
        }
        webshop__v1__order_item__init(it);
        it->inventory_id = sqlite3_column_int(st, 0);
        it->count = sqlite3_column_int(st, 1);
        r->items[r->n_items++] = it;
    }
    if (err == WS_OK && rc != SQLITE_DONE) {
        err = ws_err_from_sqlite(rc);
        err = err == WS_OK ? WS_ESTORE : err;
    }
    sqlite3_reset(st);
    return err;
}

ws_err inv_stock_reservation(ws_store *s, const char *order_id_in,
                             Webshop__V1__GetReservationResponse **out)
{
    char order_id[WS_UUID_TEXT_LEN];
    if (!ws_uuid_normalize(order_id_in, order_id)) {
        return WS_EINVAL;
    }
    Webshop__V1__GetReservationResponse *r = malloc(sizeof(*r));
    if (r == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__get_reservation_response__init(r);
    r->order_id = strdup(order_id);
    char reason[INV_REASON_LEN];
    Webshop__V1__ReservationStatus status;
    bool orphan;
    ws_err err = r->order_id ? WS_OK : WS_ENOMEM;
    if (err == WS_OK) {
        err =
            stock_reservation_find(s, order_id, &status, &orphan, reason, sizeof(reason));
    }
    if (err == WS_OK && reason[0] != '\0') {
        r->reason = strdup(reason);
        err = r->reason ? WS_OK : WS_ENOMEM;
    }
    if (err == WS_OK) {
        r->status = status;
        err = stock_reservation_items_load(s, order_id, r);
    }
    if (err != WS_OK) {
        protobuf_c_message_free_unpacked(&r->base, NULL);
        return err;
    }
    *out = r;
    return WS_OK;
}

ws_err inv_stock_levels(ws_store *s, int32_t product_id, int64_t *balance, int64_t *held,
                        int64_t *added)
{
    sqlite3_stmt *st;
    ws_err err =
        ws_store_stmt(s,
                      "SELECT p.balance, p.stock_added,"
                      " (SELECT coalesce(sum(i.count), 0) FROM reservation_items i"
                      "  JOIN reservations r ON r.order_id = i.order_id"
                      "  WHERE r.status = 'reserved' AND i.product_id = p.id)"
                      " FROM products p WHERE p.id = ?",
                      &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int(st, 1, product_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *balance = sqlite3_column_int64(st, 0);
        *added = sqlite3_column_int64(st, 1);
        *held = sqlite3_column_int64(st, 2);
    } else {
        err = rc == SQLITE_DONE ? WS_ENOTFOUND : ws_err_from_sqlite(rc);
    }
    sqlite3_reset(st);
    return err;
}
