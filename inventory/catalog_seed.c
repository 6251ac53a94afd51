/*
 * Catalog seeding (see catalog_seed.h). The seed is an upsert keyed by
 * product id whose update branch leaves balance and stock_added alone, so
 * running it on every start is safe.
 */
#include "catalog_seed.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"

#define SEED_MAX_FILE (16u << 20)

typedef struct seed_ctx {
    const Webshop__V1__Product *const *products;
    size_t n;
    size_t inserted;
} seed_ctx;

static ws_err seed_txn(ws_store *s, void *arg)
{
    seed_ctx *c = arg;
    c->inserted = 0;
    sqlite3_stmt *st;
    ws_err err =
        ws_store_stmt(s,
                      "INSERT INTO products(id, name, price, balance, stock_added)"
                      " VALUES (?1, ?2, ?3, ?4, ?4)"
                      " ON CONFLICT(id) DO UPDATE SET name = excluded.name,"
                      " price = excluded.price",
                      &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_stmt *ex;
    for (size_t i = 0; i < c->n; i++) {
        const Webshop__V1__Product *p = c->products[i];
        err = ws_store_stmt(s, "SELECT 1 FROM products WHERE id = ?", &ex);
        if (err != WS_OK) {
            return err;
        }
        sqlite3_bind_int(ex, 1, p->id);
        int rc = sqlite3_step(ex);
        sqlite3_reset(ex);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            return ws_err_from_sqlite(rc);
        }
        c->inserted += rc == SQLITE_DONE;
        sqlite3_bind_int(st, 1, p->id);
        sqlite3_bind_text(st, 2, p->name, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, p->price);
        sqlite3_bind_int(st, 4, p->balance);
        err = ws_err_from_sqlite(sqlite3_step(st));
        sqlite3_reset(st);
        if (err != WS_OK) {
            return err;
        }
    }
    return WS_OK;
}

ws_err inv_catalog_seed(ws_store *s, const Webshop__V1__Product *const *products,
                        size_t n, size_t *inserted)
{
    if (s == NULL || (n > 0 && products == NULL)) {
        return WS_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        const Webshop__V1__Product *p = products[i];
        if (p == NULL || p->id <= 0 || p->name == NULL || p->name[0] == '\0' ||
            p->price < 0 || p->balance < 0) {
            ws_log_error("catalog_product_invalid", "index=%zu id=%d", i, p ? p->id : 0);
            return WS_EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (products[j]->id == p->id) {
                ws_log_error("catalog_product_duplicate", "index=%zu id=%d", i, p->id);
                return WS_EINVAL;
            }
        }
    }
    seed_ctx c = {.products = products, .n = n};
    ws_err err = ws_store_txn(s, seed_txn, &c);
    if (err == WS_OK && inserted != NULL) {
        *inserted = c.inserted;
    }
    return err;
}

ws_err inv_catalog_seed_default(ws_store *s, size_t *inserted)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s, "SELECT count(*) FROM products", &st);
    if (err != WS_OK) {
        return err;
    }
    int rc = sqlite3_step(st);
    int64_t count = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    if (count < 0) {
        return ws_err_from_sqlite(rc) == WS_OK ? WS_ESTORE : ws_err_from_sqlite(rc);
    }
    if (count > 0) {
        if (inserted != NULL) {
            *inserted = 0;
        }
        return WS_OK;
    }
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
    return inv_catalog_seed(s, prototype, 2, inserted);
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

ws_err inv_catalog_seed_file(ws_store *s, const char *path, size_t *inserted)
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
    err = inv_catalog_seed(s, (const Webshop__V1__Product *const *)msgs, n, inserted);
    for (size_t i = 0; i < n; i++) {
        protobuf_c_message_free_unpacked(msgs[i], NULL);
    }
    free(msgs);
    return err;
}
