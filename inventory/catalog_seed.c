/*
 * Catalog seeding (see catalog_seed.h): every product through the seed port
 * (stock_db.h), first time by id or rename and reprice, in one transaction,
 * so running it on every start is safe. The default catalog's "only when
 * there is none" is checked in the same transaction.
 */
#include "catalog_seed.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "stock_db.h"

#define SEED_MAX_FILE (16u << 20)

typedef struct seed_ctx {
    const Webshop__V1__Product *const *products;
    size_t n;
    bool only_if_empty; /* seed nothing when a product exists */
    size_t inserted;    /* rewritten on every attempt */
} seed_ctx;

static ws_err seed_txn(ws_db_conn *c, void *arg)
{
    seed_ctx *x = arg;
    x->inserted = 0;
    if (x->only_if_empty) {
        int64_t count = 0;
        ws_err err = inv_db_catalog_count(c, &count);
        if (err != WS_OK || count > 0) {
            return err;
        }
    }
    for (size_t i = 0; i < x->n; i++) {
        bool inserted = false;
        ws_err err = inv_db_product_seed(c, x->products[i], &inserted);
        if (err != WS_OK) {
            return err;
        }
        x->inserted += inserted;
    }
    return WS_OK;
}

/* Every product valid, no id twice; logged otherwise. */
static bool seed_products_valid(const Webshop__V1__Product *const *products, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const Webshop__V1__Product *p = products[i];
        if (p == NULL || p->id <= 0 || p->name == NULL || p->name[0] == '\0' ||
            p->price < 0 || p->balance < 0) {
            ws_log_error("catalog_product_invalid", "index=%zu id=%d", i, p ? p->id : 0);
            return false;
        }
        for (size_t j = 0; j < i; j++) {
            if (products[j]->id == p->id) {
                ws_log_error("catalog_product_duplicate", "index=%zu id=%d", i, p->id);
                return false;
            }
        }
    }
    return true;
}

static ws_err seed_run(ws_db *db, const Webshop__V1__Product *const *products, size_t n,
                       bool only_if_empty, size_t *inserted)
{
    if (db == NULL || (n > 0 && products == NULL)) {
        return WS_EINVAL;
    }
    if (!seed_products_valid(products, n)) {
        return WS_EINVAL;
    }
    seed_ctx x = {.products = products, .n = n, .only_if_empty = only_if_empty};
    ws_err err = ws_db_txn(db, seed_txn, &x);
    if (err == WS_OK && inserted != NULL) {
        *inserted = x.inserted;
    }
    return err;
}

ws_err inv_catalog_seed(ws_db *db, const Webshop__V1__Product *const *products, size_t n,
                        size_t *inserted)
{
    return seed_run(db, products, n, false, inserted);
}

ws_err inv_catalog_seed_default(ws_db *db, size_t *inserted)
{
    Webshop__V1__Product p1 = WEBSHOP__V1__PRODUCT__INIT;
    Webshop__V1__Product p2 = WEBSHOP__V1__PRODUCT__INIT;
    p1.id = 1;
    p1.name = "One Leg Web Shop Prototype";
    p1.price = 1000;
    p1.balance = 200;
    p2.id = 2;
    p2.name = "One Leg Web Shop Prototype v 2.0";
    p2.price = 2000;
    p2.balance = 200;
    const Webshop__V1__Product *const prototype[] = {&p1, &p2};
    return seed_run(db, prototype, 2, true, inserted);
}

/* Read a whole file of at most SEED_MAX_FILE bytes. */
static ws_err seed_file_read(const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        ws_log_error("catalog_open_failed", "path=%s error=%s", path, strerror(errno));
        return WS_EIO;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    ws_err err = buf ? WS_OK : WS_ENOMEM;
    while (err == WS_OK) {
        if (n == cap) {
            if (cap >= SEED_MAX_FILE) {
                err = WS_ETOOBIG;
                break;
            }
            char *b = realloc(buf, cap * 2);
            if (b == NULL) {
                err = WS_ENOMEM;
                break;
            }
            buf = b;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) {
                err = WS_EIO;
            }
            break;
        }
    }
    fclose(f);
    if (err != WS_OK) {
        free(buf);
        return err;
    }
    *data = buf;
    *len = n;
    return WS_OK;
}

ws_err inv_catalog_seed_file(ws_db *db, const char *path, size_t *inserted)
{
    char *data;
    size_t len;
    ws_err err = seed_file_read(path, &data, &len);
    if (err != WS_OK) {
        return err;
    }
    ws_json_limits limits = {.max_bytes = SEED_MAX_FILE};
    ProtobufCMessage **msgs = NULL;
    size_t n = 0;
    ws_json_error jerr;
    err = ws_json_decode_array(&webshop__v1__product__descriptor, data, len, &limits,
                               &msgs, &n, &jerr);
    free(data);
    if (err != WS_OK) {
        ws_log_error("catalog_parse_failed", "path=%s error=%s detail=%s", path,
                     ws_errname(err), jerr.text);
        return err;
    }
    err = inv_catalog_seed(db, (const Webshop__V1__Product *const *)msgs, n, inserted);
    for (size_t i = 0; i < n; i++) {
        protobuf_c_message_free_unpacked(msgs[i], NULL);
    }
    free(msgs);
    return err;
}
