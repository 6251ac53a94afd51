/*
 * Stock reservations, the event decisions (see stock.h). Each is one
 * transaction on the caller's connection whose first write is the "first
 * time" of the order id: the reservation (OrderSent) or the tombstone
 * (OrderCanceled) is recorded with INSERT ... ON CONFLICT DO NOTHING, and
 * the event that recorded it decides. Every other event for the id --
 * duplicate, late, or racing on another connection at the same moment --
 * changes nothing at that statement, reads the record and acts on what it
 * says now. The transaction body has no effect outside the database (it may
 * run again after a conflict), so the outcome struct is rewritten from
 * scratch on every attempt. The reads live in stock_read.c, the sweep's
 * steps in stock_sweep.c, the SQL behind stock_db.h.
 */
#include "stock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "outbox.h"
#include "stock_db.h"
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

static ws_err stock_queue_in_stock(ws_db_conn *c, const char *order_id, size_t *n_queued)
{
    Webshop__V1__InStock m = WEBSHOP__V1__IN_STOCK__INIT;
    m.order_id = (char *)order_id;
    ws_err err = ws_outbox_put(c, WEBSHOP_V1_IN_STOCK_TOPIC, &m.base);
    *n_queued += err == WS_OK;
    return err;
}

static ws_err stock_queue_out_of_stock(ws_db_conn *c, const char *order_id,
                                       const char *reason, size_t *n_queued)
{
    Webshop__V1__OutOfStock m = WEBSHOP__V1__OUT_OF_STOCK__INIT;
    m.order_id = (char *)order_id;
    m.reason = (char *)reason;
    ws_err err = ws_outbox_put(c, WEBSHOP_V1_OUT_OF_STOCK_TOPIC, &m.base);
    *n_queued += err == WS_OK;
    return err;
}

ws_err inv__stock_queue_changed(ws_db_conn *c, const int32_t *ids, size_t n,
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
        ws_err err = inv_db_stock_balance(c, ids[i], &balance);
        if (err != WS_OK) {
            return err;
        }
        Webshop__V1__StockChanged m = WEBSHOP__V1__STOCK_CHANGED__INIT;
        m.product_id = ids[i];
        m.balance = (int32_t)balance;
        err = ws_outbox_put(c, WEBSHOP_V1_STOCK_CHANGED_TOPIC, &m.base);
        if (err != WS_OK) {
            return err;
        }
        (*n_queued)++;
    }
    return WS_OK;
}

void inv__stock_lines_sort(inv_db_line *lines, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        inv_db_line l = lines[i];
        size_t j = i;
        for (; j > 0 && lines[j - 1].product_id > l.product_id; j--) {
            lines[j] = lines[j - 1];
        }
        lines[j] = l;
    }
}

ws_err inv__stock_moved(ws_db_conn *c, const int32_t *ids, size_t n, size_t *n_queued,
                        int32_t *moved, size_t *n_moved)
{
    if (moved == NULL) {
        return inv__stock_queue_changed(c, ids, n, n_queued);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || moved[k - 1] != ids[i]) {
            moved[k++] = ids[i];
        }
    }
    *n_moved = k;
    return WS_OK;
}

ws_err inv__stock_restore(ws_db_conn *c, const char *order_id, size_t *n_items,
                          size_t *n_queued, int32_t *moved, size_t *n_moved)
{
    inv_db_line lines[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS];
    size_t n = 0;
    ws_err err =
        inv_db_reservation_items(c, order_id, lines, WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS, &n);
    if (err != WS_OK) {
        return err;
    }
    inv__stock_lines_sort(lines, n);
    int32_t ids[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS];
    for (size_t i = 0; err == WS_OK && i < n; i++) {
        err = inv_db_stock_restock(c, lines[i].product_id, lines[i].count);
        ids[i] = lines[i].product_id;
    }
    size_t queued = 0;
    if (err == WS_OK) {
        err = inv__stock_moved(c, ids, n, &queued, moved, n_moved);
    }
    if (err == WS_OK) {
        *n_items = n;
        *n_queued += queued;
    }
    return err;
}

typedef struct stock_changed_ctx {
    const int32_t *ids;
    size_t n, queued; /* queued: rewritten on every attempt */
} stock_changed_ctx;

static ws_err stock_changed_txn(ws_db_conn *c, void *arg)
{
    stock_changed_ctx *x = arg;
    x->queued = 0;
    return inv__stock_queue_changed(c, x->ids, x->n, &x->queued);
}

ws_err inv_stock_changed_queue(ws_db_conn *c, const int32_t *ids, size_t n,
                               size_t *n_queued)
{
    if (c == NULL || (ids == NULL && n > 0) || n_queued == NULL) {
        return WS_EINVAL;
    }
    stock_changed_ctx x = {.ids = ids, .n = n};
    ws_err err = n > 0 ? ws_db_conn_txn(c, NULL, stock_changed_txn, &x) : WS_OK;
    if (err == WS_OK) {
        *n_queued = x.queued;
    }
    return err;
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
        snprintf(reason, len, "too many items (at most %d)",
                 WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS);
        return;
    }
    for (size_t i = 0; i < ev->n_items; i++) {
        const Webshop__V1__OrderItem *it = ev->items[i];
        if (it == NULL || it->inventory_id <= 0) {
            snprintf(reason, len, "unknown product %d", it ? it->inventory_id : 0);
            return;
        }
        if (it->count < WEBSHOP_V1_ORDER_ITEM_COUNT_MIN ||
            it->count > WEBSHOP_V1_ORDER_ITEM_COUNT_MAX) {
            snprintf(reason, len, "invalid count for product %d", it->inventory_id);
            return;
        }
    }
}

/* The order's lines in event order; n_items <= WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS. */
static size_t stock_lines_of(const Webshop__V1__OrderSent *ev, inv_db_line *lines)
{
    for (size_t i = 0; i < ev->n_items; i++) {
        const Webshop__V1__OrderItem *it = ev->items[i];
        lines[i] = (inv_db_line){.product_id = it ? it->inventory_id : 0,
                                 .count = it ? it->count : 0};
    }
    return ev->n_items;
}

/* Take every line, in product-id order, each statement checking its own
 * balance. On the first line that cannot be had, put the lines already
 * taken back and say why in reason; nothing stays moved. */
static ws_err stock_lines_take(ws_db_conn *c, const inv_db_line *in, size_t n,
                               char *reason, size_t len)
{
    inv_db_line lines[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS];
    memcpy(lines, in, n * sizeof(*lines));
    inv__stock_lines_sort(lines, n);
    size_t taken = 0;
    ws_err err = WS_OK;
    for (; taken < n; taken++) {
        bool ok = false;
        err = inv_db_stock_take(c, lines[taken].product_id, lines[taken].count, &ok);
        if (err != WS_OK || !ok) {
            break;
        }
    }
    if (err != WS_OK || taken == n) {
        return err; /* an error fails the whole transaction */
    }
    int64_t balance = 0;
    err = inv_db_stock_balance(c, lines[taken].product_id, &balance);
    if (err != WS_OK && err != WS_ENOTFOUND) {
        return err;
    }
    snprintf(reason, len,
             err == WS_ENOTFOUND ? "unknown product %d"
                                 : "not enough stock for product %d",
             lines[taken].product_id);
    err = WS_OK;
    while (err == WS_OK && taken > 0) {
        taken--;
        err = inv_db_stock_restock(c, lines[taken].product_id, lines[taken].count);
    }
    return err;
}

typedef struct stock_sent_ctx {
    const Webshop__V1__OrderSent *ev;
    bool defer_changed; /* inv_stock_opts */
    const char *id;     /* ev's order id normalized, or NULL when it is not a UUID */
    inv_order_outcome *out;
} stock_sent_ctx;

static bool stock_id_echoable(const char *id)
{
    size_t n = 0;
    for (; id[n] != '\0'; n++) {
        unsigned char ch = (unsigned char)id[n];
        if (n >= STOCK_ECHO_ID_MAX || ch < 0x21 || ch > 0x7e) {
            return false;
        }
    }
    return n > 0;
}

/* Someone was first for order_id (this is a duplicate, or raced one): read
 * the record and re-queue what it says now (see the table in stock.h); a
 * release by a cancel queues nothing. */
static ws_err stock_sent_duplicate(ws_db_conn *c, const char *order_id,
                                   inv_order_outcome *out)
{
    inv_db_reservation rec;
    ws_err err = inv_db_reservation_get(c, order_id, &rec);
    if (err != WS_OK) {
        return err;
    }
    out->status = rec.status;
    snprintf(out->reason, sizeof(out->reason), "%s", rec.reason);
    switch (rec.status) {
    case WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN:
        return WS_EBUSY; /* a tombstone expired in between: decide again */
    case WEBSHOP__V1__RESERVATION_STATUS__RESERVED:
        out->action = INV_ORDER_DUPLICATE;
        return stock_queue_in_stock(c, order_id, &out->n_queued);
    case WEBSHOP__V1__RESERVATION_STATUS__RELEASED:
        if (!rec.orphan) {
            out->action = INV_ORDER_DUPLICATE_CANCELED;
            return WS_OK;
        }
        out->action = INV_ORDER_DUPLICATE_ORPHAN;
        return stock_queue_out_of_stock(c, order_id, out->reason, &out->n_queued);
    case WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED:
        out->action = INV_ORDER_TOMBSTONED;
        snprintf(out->reason, sizeof(out->reason), "canceled");
        return stock_queue_out_of_stock(c, order_id, out->reason, &out->n_queued);
    default:
        out->action = INV_ORDER_DUPLICATE;
        return stock_queue_out_of_stock(c, order_id, out->reason, &out->n_queued);
    }
}

/* This event recorded the reservation of id: take the stock (or reject),
 * record the items, queue the outcome and the balances that moved. */
static ws_err stock_sent_decide(ws_db_conn *c, const char *id,
                                const Webshop__V1__OrderSent *ev, bool defer_changed,
                                int64_t now_ms, inv_order_outcome *out)
{
    inv_db_line lines[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS];
    size_t n =
        ev->n_items <= WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS ? stock_lines_of(ev, lines) : 0;
    ws_err err = WS_OK;
    if (out->status == WEBSHOP__V1__RESERVATION_STATUS__RESERVED) {
        err = stock_lines_take(c, lines, n, out->reason, sizeof(out->reason));
        if (err == WS_OK && out->reason[0] != '\0') {
            out->status = WEBSHOP__V1__RESERVATION_STATUS__REJECTED;
            err = inv_db_reservation_reject(c, id, out->reason, now_ms);
        }
    }
    if (err == WS_OK) {
        err = inv_db_reservation_items_record(c, id, lines, n);
    }
    if (err != WS_OK) {
        return err;
    }
    if (out->status != WEBSHOP__V1__RESERVATION_STATUS__RESERVED) {
        out->action = INV_ORDER_REJECTED;
        return stock_queue_out_of_stock(c, id, out->reason, &out->n_queued);
    }
    out->action = INV_ORDER_RESERVED;
    err = stock_queue_in_stock(c, id, &out->n_queued);
    if (err != WS_OK) {
        return err;
    }
    inv__stock_lines_sort(lines, n);
    int32_t ids[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS];
    for (size_t i = 0; i < n; i++) {
        ids[i] = lines[i].product_id;
    }
    return inv__stock_moved(c, ids, n, &out->n_queued, defer_changed ? out->moved : NULL,
                            &out->n_moved);
}

static ws_err stock_sent_txn(ws_db_conn *c, void *arg)
{
    stock_sent_ctx *x = arg;
    const Webshop__V1__OrderSent *ev = x->ev;
    inv_order_outcome *out = x->out;
    memset(out, 0, sizeof(*out));
    out->n_items = ev->n_items;

    if (x->id == NULL) {
        out->action = INV_ORDER_BAD_ID;
        snprintf(out->reason, sizeof(out->reason), "bad order id");
        if (ev->order_id != NULL && stock_id_echoable(ev->order_id)) {
            return stock_queue_out_of_stock(c, ev->order_id, out->reason, &out->n_queued);
        }
        return WS_OK;
    }
    snprintf(out->order_id, sizeof(out->order_id), "%s", x->id);
    stock_items_check(ev, out->reason, sizeof(out->reason));
    out->status = out->reason[0] == '\0' ? WEBSHOP__V1__RESERVATION_STATUS__RESERVED
                                         : WEBSHOP__V1__RESERVATION_STATUS__REJECTED;
    int64_t now = ws_clock_wall_ms();
    bool first = false;
    ws_err err =
        inv_db_reservation_record(c, x->id, out->status, out->reason, now, &first);
    if (err != WS_OK) {
        return err;
    }
    if (!first) {
        return stock_sent_duplicate(c, x->id, out);
    }
    return stock_sent_decide(c, x->id, ev, x->defer_changed, now, out);
}

ws_err inv_stock_order_sent(ws_db_conn *c, const Webshop__V1__OrderSent *ev,
                            inv_order_outcome *out)
{
    return inv_stock_order_sent_with(c, ev, NULL, out);
}

ws_err inv_stock_order_sent_with(ws_db_conn *c, const Webshop__V1__OrderSent *ev,
                                 const inv_stock_opts *opts, inv_order_outcome *out)
{
    if (c == NULL || ev == NULL || out == NULL) {
        return WS_EINVAL;
    }
    char id[WS_UUID_TEXT_LEN];
    inv_order_outcome o;
    stock_sent_ctx x = {.ev = ev,
                        .defer_changed = opts != NULL && opts->defer_changed,
                        .id = ws_uuid_normalize(ev->order_id, id) ? id : NULL,
                        .out = &o};
    ws_err err = ws_db_conn_txn(c, NULL, stock_sent_txn, &x);
    if (err != WS_OK) {
        return err;
    }
    *out = o;
    return o.action == INV_ORDER_BAD_ID ? WS_EINVAL : WS_OK;
}

typedef struct stock_cancel_ctx {
    const char *order_id;
    bool defer_changed; /* inv_stock_opts */
    inv_cancel_outcome *out;
} stock_cancel_ctx;

/* The tombstone is the cancel's "first time"; when a record exists, the
 * conditional release decides; when that changed nothing, the record is
 * already released, rejected or tombstoned. */
static ws_err stock_cancel_txn(ws_db_conn *c, void *arg)
{
    stock_cancel_ctx *x = arg;
    inv_cancel_outcome *out = x->out;
    memset(out, 0, sizeof(*out));
    snprintf(out->order_id, sizeof(out->order_id), "%s", x->order_id);
    int64_t now = ws_clock_wall_ms();
    bool first = false;
    ws_err err = inv_db_reservation_record(
        c, x->order_id, WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED, "", now, &first);
    if (err != WS_OK || first) {
        out->action = INV_CANCEL_TOMBSTONED;
        out->status = WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED;
        return err;
    }
    bool released = false;
    err = inv_db_reservation_release(c, x->order_id, now, &released);
    if (err != WS_OK) {
        return err;
    }
    if (released) {
        size_t n_items = 0;
        out->action = INV_CANCEL_RELEASED;
        out->status = WEBSHOP__V1__RESERVATION_STATUS__RELEASED;
        return inv__stock_restore(c, x->order_id, &n_items, &out->n_queued,
                                  x->defer_changed ? out->moved : NULL, &out->n_moved);
    }
    inv_db_reservation rec = {0};
    err = inv_db_reservation_get(c, x->order_id, &rec);
    if (err == WS_OK &&
        rec.status == WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN) {
        err = WS_EBUSY; /* a tombstone expired in between: decide again */
    }
    out->action = INV_CANCEL_NOOP;
    out->status = rec.status;
    return err;
}

ws_err inv_stock_order_canceled(ws_db_conn *c, const Webshop__V1__OrderCanceled *ev,
                                inv_cancel_outcome *out)
{
    return inv_stock_order_canceled_with(c, ev, NULL, out);
}

ws_err inv_stock_order_canceled_with(ws_db_conn *c, const Webshop__V1__OrderCanceled *ev,
                                     const inv_stock_opts *opts, inv_cancel_outcome *out)
{
    char id[WS_UUID_TEXT_LEN];
    if (c == NULL || ev == NULL || out == NULL || !ws_uuid_normalize(ev->order_id, id)) {
        return WS_EINVAL;
    }
    inv_cancel_outcome o;
    stock_cancel_ctx x = {
        .order_id = id, .defer_changed = opts != NULL && opts->defer_changed, .out = &o};
    ws_err err = ws_db_conn_txn(c, NULL, stock_cancel_txn, &x);
    if (err == WS_OK) {
        *out = o;
    }
    return err;
}

/* ---- a backward wall-clock jump ----------------------------------------- */

typedef struct stock_restamp_ctx {
    int64_t now_ms;
    size_t n; /* rewritten on every attempt */
} stock_restamp_ctx;

static ws_err stock_restamp_txn(ws_db_conn *c, void *arg)
{
    stock_restamp_ctx *x = arg;
    x->n = 0;
    return inv_db_restamp_future(c, x->now_ms + WS_CLOCK_JUMP_MS, x->now_ms, &x->n);
}

ws_err inv_stock_restamp_future(ws_db *db, int64_t now_ms, size_t *n)
{
    if (db == NULL || n == NULL) {
        return WS_EINVAL;
    }
    stock_restamp_ctx x = {.now_ms = now_ms};
    ws_err err = ws_db_txn(db, stock_restamp_txn, &x);
    *n = err == WS_OK ? x.n : 0;
    return err;
}
