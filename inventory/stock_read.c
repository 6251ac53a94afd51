/*
 * The read side of the stock module (see stock.h): the catalog, one
 * product, one reservation and a product's levels, each read in one
 * read-only transaction on a connection of the pool (on SQLite it takes no
 * write lock, so readers never queue behind the consumer's group). READ
 * COMMITTED is enough on PostgreSQL: each answer is one statement, except a
 * reservation's record and its items, and the items of a record never
 * change after the commit that recorded them. The answers are allocated
 * anew on every attempt; what an earlier attempt built is freed first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stock.h"
#include "stock_db.h"
#include "uuid_text.h"

static const ws_db_txn_opts stock_read_only = {.read_only = true};

static Webshop__V1__Product *stock_product_new(const inv_db_product *row)
{
    Webshop__V1__Product *p = malloc(sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    webshop__v1__product__init(p);
    p->name = strdup(row->name);
    if (p->name == NULL) {
        free(p);
        return NULL;
    }
    p->id = row->id;
    p->price = row->price;
    p->balance = (int32_t)row->balance;
    return p;
}

typedef struct stock_catalog_ctx {
    Webshop__V1__GetCatalogResponse *r;
    size_t cap; /* room in r->products */
} stock_catalog_ctx;

/* Append one product to the catalog answer. */
static ws_err stock_catalog_add(void *ctx, const inv_db_product *row)
{
    stock_catalog_ctx *x = ctx;
    Webshop__V1__GetCatalogResponse *r = x->r;
    if (r->n_products == x->cap) {
        size_t ncap = x->cap ? x->cap * 2 : 16;
        Webshop__V1__Product **a = realloc(r->products, ncap * sizeof(*a));
        if (a == NULL) {
            return WS_ENOMEM;
        }
        r->products = a;
        x->cap = ncap;
    }
    Webshop__V1__Product *p = stock_product_new(row);
    if (p == NULL) {
        return WS_ENOMEM;
    }
    r->products[r->n_products++] = p;
    return WS_OK;
}

static ws_err stock_catalog_txn(ws_db_conn *c, void *arg)
{
    stock_catalog_ctx *x = arg;
    if (x->r != NULL) {
        protobuf_c_message_free_unpacked(&x->r->base, NULL);
    }
    x->cap = 0;
    x->r = malloc(sizeof(*x->r));
    if (x->r == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__get_catalog_response__init(x->r);
    return inv_db_catalog_each(c, stock_catalog_add, x);
}

ws_err inv_stock_catalog(ws_db *db, Webshop__V1__GetCatalogResponse **out)
{
    if (db == NULL || out == NULL) {
        return WS_EINVAL;
    }
    stock_catalog_ctx x = {0};
    ws_err err = ws_db_txn_with(db, &stock_read_only, stock_catalog_txn, &x);
    if (err != WS_OK) {
        if (x.r != NULL) {
            protobuf_c_message_free_unpacked(&x.r->base, NULL);
        }
        return err;
    }
    *out = x.r;
    return WS_OK;
}

typedef struct stock_product_ctx {
    int32_t id;
    Webshop__V1__Product *p;
} stock_product_ctx;

static ws_err stock_product_keep(void *ctx, const inv_db_product *row)
{
    stock_product_ctx *x = ctx;
    x->p = stock_product_new(row);
    return x->p != NULL ? WS_OK : WS_ENOMEM;
}

static ws_err stock_product_txn(ws_db_conn *c, void *arg)
{
    stock_product_ctx *x = arg;
    if (x->p != NULL) {
        protobuf_c_message_free_unpacked(&x->p->base, NULL);
        x->p = NULL;
    }
    return inv_db_product_get(c, x->id, stock_product_keep, x);
}

ws_err inv_stock_product(ws_db *db, int32_t id, Webshop__V1__Product **out)
{
    if (db == NULL || out == NULL) {
        return WS_EINVAL;
    }
    stock_product_ctx x = {.id = id};
    ws_err err = ws_db_txn_with(db, &stock_read_only, stock_product_txn, &x);
    if (err != WS_OK) {
        if (x.p != NULL) {
            protobuf_c_message_free_unpacked(&x.p->base, NULL);
        }
        return err;
    }
    *out = x.p;
    return WS_OK;
}

typedef struct stock_reservation_ctx {
    const char *order_id; /* lower case */
    Webshop__V1__GetReservationResponse *r;
} stock_reservation_ctx;

/* The record's items into r. */
static ws_err stock_reservation_items_add(ws_db_conn *c, const char *order_id,
                                          Webshop__V1__GetReservationResponse *r)
{
    inv_db_line lines[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS];
    size_t n = 0;
    ws_err err =
        inv_db_reservation_items(c, order_id, lines, WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS, &n);
    if (err != WS_OK || n == 0) {
        return err;
    }
    r->items = calloc(n, sizeof(*r->items));
    if (r->items == NULL) {
        return WS_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        Webshop__V1__OrderItem *it = malloc(sizeof(*it));
        if (it == NULL) {
            return WS_ENOMEM;
        }
        webshop__v1__order_item__init(it);
        it->inventory_id = lines[i].product_id;
        it->count = lines[i].count;
        r->items[r->n_items++] = it;
    }
    return WS_OK;
}

static ws_err stock_reservation_txn(ws_db_conn *c, void *arg)
{
    stock_reservation_ctx *x = arg;
    if (x->r != NULL) {
        protobuf_c_message_free_unpacked(&x->r->base, NULL);
    }
    Webshop__V1__GetReservationResponse *r = malloc(sizeof(*r));
    x->r = r;
    if (r == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__get_reservation_response__init(r);
    r->order_id = strdup(x->order_id);
    if (r->order_id == NULL) {
        return WS_ENOMEM;
    }
    inv_db_reservation rec;
    ws_err err = inv_db_reservation_get(c, x->order_id, &rec);
    if (err != WS_OK) {
        return err;
    }
    r->status = rec.status;
    if (rec.reason[0] != '\0') {
        r->reason = strdup(rec.reason);
        if (r->reason == NULL) {
            return WS_ENOMEM;
        }
    }
    return stock_reservation_items_add(c, x->order_id, r);
}

ws_err inv_stock_reservation(ws_db *db, const char *order_id_in,
                             Webshop__V1__GetReservationResponse **out)
{
    char order_id[WS_UUID_TEXT_LEN];
    if (db == NULL || out == NULL || !ws_uuid_normalize(order_id_in, order_id)) {
        return WS_EINVAL;
    }
    stock_reservation_ctx x = {.order_id = order_id};
    ws_err err = ws_db_txn_with(db, &stock_read_only, stock_reservation_txn, &x);
    if (err != WS_OK) {
        if (x.r != NULL) {
            protobuf_c_message_free_unpacked(&x.r->base, NULL);
        }
        return err;
    }
    *out = x.r;
    return WS_OK;
}

typedef struct stock_levels_ctx {
    int32_t product_id;
    int64_t balance, held, added;
} stock_levels_ctx;

static ws_err stock_levels_txn(ws_db_conn *c, void *arg)
{
    stock_levels_ctx *x = arg;
    return inv_db_stock_levels(c, x->product_id, &x->balance, &x->held, &x->added);
}

ws_err inv_stock_levels(ws_db *db, int32_t product_id, int64_t *balance, int64_t *held,
                        int64_t *added)
{
    if (db == NULL || balance == NULL || held == NULL || added == NULL) {
        return WS_EINVAL;
    }
    stock_levels_ctx x = {.product_id = product_id};
    ws_err err = ws_db_txn_with(db, &stock_read_only, stock_levels_txn, &x);
    if (err == WS_OK) {
        *balance = x.balance;
        *held = x.held;
        *added = x.added;
    }
    return err;
}
