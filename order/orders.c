/*
 * Applying events to orders and reading them back, on SQLite through
 * ws_store. Each event runs in one ws_store_txn: read the row, decide with
 * the precedence rules of orders.h, write the row and its items, and queue
 * the resulting events in the outbox, all or nothing. The transaction
 * function may run more than once (busy retry), so it keeps its findings in
 * the context and resets them at every start.
 */
#include "orders.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "outbox.h"
#include "uuid_text.h"

typedef Webshop__V1__OrderStatus order_status;

#define ST_PENDING      WEBSHOP__V1__ORDER_STATUS__PENDING
#define ST_SUCCESSFUL   WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL
#define ST_UNSUCCESSFUL WEBSHOP__V1__ORDER_STATUS__UNSUCCESSFUL
#define ST_CANCELED     WEBSHOP__V1__ORDER_STATUS__CANCELED

orders_policy orders_policy_default(void)
{
    orders_policy p = {
        .resend_after_ms = 5000, .backoff_cap_ms = 60000, .max_attempts = 20};
    return p;
}

int64_t orders_policy_delay(const orders_policy *p, int done)
{
    int64_t d = p->resend_after_ms > 0 ? p->resend_after_ms : 1;
    int64_t cap = p->backoff_cap_ms > d ? p->backoff_cap_ms : d;
    for (int i = 0; i < done && d < cap; i++) {
        d *= 2;
    }
    return d < cap ? d : cap;
}

const char *orders_status_name(int status)
{
    switch (status) {
    case ST_PENDING:
        return "PENDING";
    case ST_SUCCESSFUL:
        return "SUCCESSFUL";
    case ST_UNSUCCESSFUL:
        return "UNSUCCESSFUL";
    case ST_CANCELED:
        return "CANCELED";
    default:
        return "UNSPECIFIED";
    }
}

/* CANCELED > SUCCESSFUL = UNSUCCESSFUL > PENDING. */
static int orders_status_rank(int status)
{
    switch (status) {
    case ST_PENDING:
        return 1;
    case ST_SUCCESSFUL:
    case ST_UNSUCCESSFUL:
        return 2;
    case ST_CANCELED:
        return 3;
    default:
        return 0;
    }
}

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static size_t orders_reason_len(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n <= max) {
        return n;
    }
    n = max;
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80) {
        n--;
    }
    return n;
}

/* ---- outcome progress --------------------------------------------------- */

/* Where the outcome stream has got to, for the recovery loop (orders.h):
 * the newest created_ms among orders that received an outcome, and the
 * now_ms of the last outcome applied. Written by the consumer thread, read
 * by the recovery thread; a heuristic, so relaxed atomics suffice (a value
 * from a transaction that later rolled back only makes one pass re-send). */
static _Atomic int64_t orders_outcome_created_ms;
static _Atomic int64_t orders_outcome_seen_ms;

static void orders_progress_note(int64_t created_ms, int64_t now_ms)
{
    int64_t cur = atomic_load_explicit(&orders_outcome_created_ms, memory_order_relaxed);
    while (created_ms > cur && !atomic_compare_exchange_weak_explicit(
                                   &orders_outcome_created_ms, &cur, created_ms,
                                   memory_order_relaxed, memory_order_relaxed)) {
    }
    cur = atomic_load_explicit(&orders_outcome_seen_ms, memory_order_relaxed);
    while (now_ms > cur && !atomic_compare_exchange_weak_explicit(
                               &orders_outcome_seen_ms, &cur, now_ms,
                               memory_order_relaxed, memory_order_relaxed)) {
    }
}

void orders_progress(int64_t *outcome_created_ms, int64_t *outcome_seen_ms)
{
    *outcome_created_ms =
        atomic_load_explicit(&orders_outcome_created_ms, memory_order_relaxed);
    *outcome_seen_ms =
        atomic_load_explicit(&orders_outcome_seen_ms, memory_order_relaxed);
}

/* ---- applying events ---------------------------------------------------- */

typedef struct orders_txn {
    const orders_policy *p;
    const char *id;
    int ev_status; /* the status the event brings */
    const char *reason;
    size_t reason_len;
    const Webshop__V1__OrderSent *sent; /* items, for OrderSent */
    int64_t now_ms;
    orders_effect eff; /* reset at every run */
} orders_txn;

/* Step a statement that returns no row. */
static ws_err orders_step_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) {
        sqlite3_reset(st);
        ws_err err = ws_err_from_sqlite(rc);
        return err == WS_OK ? WS_ESTORE : err;
    }
    return WS_OK;
}

static ws_err orders_queue_status(ws_store *s, orders_txn *t, int status,
                                  const char *reason, size_t reason_len)
{
    char rbuf[ORDERS_MAX_REASON + 1];
    memcpy(rbuf, reason, reason_len);
    rbuf[reason_len] = '\0';
    Webshop__V1__OrderStatusChanged m = WEBSHOP__V1__ORDER_STATUS_CHANGED__INIT;
    m.order_id = (char *)t->id;
    m.status = (order_status)status;
    m.reason = rbuf;
    ws_err err = ws_outbox_put(s, ORDERS_TOPIC_STATUS, &m.base);
    if (err == WS_OK) {
        t->eff.queued++;
    }
    return err;
}

static ws_err orders_queue_canceled(ws_store *s, orders_txn *t)
{
    Webshop__V1__OrderCanceled m = WEBSHOP__V1__ORDER_CANCELED__INIT;
    m.order_id = (char *)t->id;
    ws_err err = ws_outbox_put(s, ORDERS_TOPIC_CANCELED, &m.base);
    if (err == WS_OK) {
        t->eff.queued++;
    }
    return err;
}

static ws_err orders_items_insert(ws_store *s, orders_txn *t)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "INSERT INTO order_items(order_id, line, inventory_id, "
                               "count) VALUES (?1, ?2, ?3, ?4)",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    for (size_t i = 0; i < t->sent->n_items; i++) {
        sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
        sqlite3_bind_int(st, 3, t->sent->items[i]->inventory_id);
        sqlite3_bind_int(st, 4, t->sent->items[i]->count);
        if ((err = orders_step_done(st)) != WS_OK) {
            return err;
        }
        sqlite3_reset(st);
    }
    t->eff.items_filled = true;
    return WS_OK;
}

/* Compare the stored items with the event's: *same true if equal. *empty
 * true if none are stored. */
static ws_err orders_items_compare(ws_store *s, orders_txn *t, bool *empty, bool *same)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "SELECT inventory_id, count FROM order_items WHERE order_id = ?1 ORDER BY line",
        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    size_t n = 0;
    bool eq = true;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n >= t->sent->n_items ||
            sqlite3_column_int(st, 0) != t->sent->items[n]->inventory_id ||
            sqlite3_column_int(st, 1) != t->sent->items[n]->count) {
            eq = false;
        }
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        return ws_err_from_sqlite(rc);
    }
    *empty = n == 0;
    *same = eq && n == t->sent->n_items;
    return WS_OK;
}

/* The deadline of the first recovery step for an order entering status. */
static void orders_bind_due(sqlite3_stmt *st, int idx, const orders_txn *t, int status)
{
    if (status == ST_PENDING || status == ST_CANCELED) {
        sqlite3_bind_int64(st, idx, t->now_ms + orders_policy_delay(t->p, 0));
    } else {
        sqlite3_bind_null(st, idx);
    }
}

static ws_err orders_txn_insert(ws_store *s, orders_txn *t)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "INSERT INTO orders(id, status, reason, created_ms, updated_ms,"
        " next_resend_ms, items_due_ms) VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
        &st);
    if (err != WS_OK) {
        return err;
    }
    size_t rlen = t->ev_status == ST_UNSUCCESSFUL ? t->reason_len : 0;
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, t->ev_status);
    sqlite3_bind_text(st, 3, t->reason, (int)rlen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, t->now_ms);
    orders_bind_due(st, 5, t, t->ev_status);
    if (t->sent == NULL) {
        sqlite3_bind_int64(st, 6, t->now_ms + orders_policy_delay(t->p, 0));
    } else {
        sqlite3_bind_null(st, 6);
    }
    if ((err = orders_step_done(st)) != WS_OK) {
        return err;
    }
    t->eff.created = true;
    t->eff.new_status = t->ev_status;
    if (t->sent != NULL && (err = orders_items_insert(s, t)) != WS_OK) {
        return err;
    }
    if ((err = orders_queue_status(s, t, t->ev_status, t->reason, rlen)) != WS_OK) {
        return err;
    }
    if (t->ev_status == ST_CANCELED) {
        return orders_queue_canceled(s, t);
    }
    return WS_OK;
}

static ws_err orders_txn_raise(ws_store *s, orders_txn *t)
{
    sqlite3_stmt *st;
    ws_err err =
        ws_store_stmt(s,
                      "UPDATE orders SET status = ?2, reason = ?3, updated_ms = ?4,"
                      " next_resend_ms = ?5 WHERE id = ?1",
                      &st);
    if (err != WS_OK) {
        return err;
    }
    size_t rlen = t->ev_status == ST_UNSUCCESSFUL ? t->reason_len : 0;
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, t->ev_status);
    sqlite3_bind_text(st, 3, t->reason, (int)rlen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, t->now_ms);
    orders_bind_due(st, 5, t, t->ev_status);
    if ((err = orders_step_done(st)) != WS_OK) {
        return err;
    }
    t->eff.new_status = t->ev_status;
    if ((err = orders_queue_status(s, t, t->ev_status, t->reason, rlen)) != WS_OK) {
        return err;
    }
    if (t->ev_status == ST_CANCELED) {
        return orders_queue_canceled(s, t);
    }
    return WS_OK;
}

static ws_err orders_txn_touch(ws_store *s, orders_txn *t)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s, "UPDATE orders SET updated_ms = ?2, items_due_ms = NULL WHERE id = ?1", &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, t->now_ms);
    return orders_step_done(st);
}

static ws_err orders_txn_run(ws_store *s, void *ctx)
{
    orders_txn *t = ctx;
    memset(&t->eff, 0, sizeof t->eff);

    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s, "SELECT status, cancel_confirmed, created_ms FROM orders WHERE id = ?1", &st);
    if (err != WS_OK) {
        return err;
    }
    bool outcome = t->ev_status == ST_SUCCESSFUL || t->ev_status == ST_UNSUCCESSFUL;
    sqlite3_bind_text(st, 1, t->id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        if (outcome) {
            orders_progress_note(t->now_ms, t->now_ms);
        }
        return orders_txn_insert(s, t);
    }
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return ws_err_from_sqlite(rc);
    }
    int cur = sqlite3_column_int(st, 0);
    bool confirmed = sqlite3_column_int(st, 1) != 0;
    if (outcome) {
        orders_progress_note(sqlite3_column_int64(st, 2), t->now_ms);
    }
    sqlite3_reset(st);
    t->eff.old_status = t->eff.new_status = cur;

    if (t->sent != NULL) {
        bool empty = false, same = true;
        if ((err = orders_items_compare(s, t, &empty, &same)) != WS_OK) {
            return err;
        }
        if (empty) {
            if ((err = orders_items_insert(s, t)) != WS_OK ||
                (err = orders_txn_touch(s, t)) != WS_OK) {
                return err;
            }
        } else if (!same) {
            t->eff.conflict = true;
        }
    }

    int rank_ev = orders_status_rank(t->ev_status);
    int rank_cur = orders_status_rank(cur);
    if (rank_ev > rank_cur) {
        return orders_txn_raise(s, t);
    }
    if (rank_ev == rank_cur && t->ev_status != cur) {
        t->eff.conflict = true; /* SUCCESSFUL vs UNSUCCESSFUL: the first stays */
    } else if (t->ev_status == ST_CANCELED && !confirmed) {
        return orders_queue_canceled(s, t);
    }
    return WS_OK;
}

static ws_err orders_apply(ws_store *s, orders_txn *t, orders_effect *out)
{
    ws_err err = ws_store_txn(s, orders_txn_run, t);
    if (err == WS_OK && out != NULL) {
        *out = t->eff;
    }
    return err;
}

static ws_err orders_invalid(orders_effect *out, const char *what)
{
    if (out != NULL) {
        memset(out, 0, sizeof *out);
        out->invalid = what;
    }
    return WS_EINVAL;
}

ws_err orders_apply_sent(ws_store *s, const orders_policy *p,
                         const Webshop__V1__OrderSent *ev, int64_t now_ms,
                         orders_effect *out)
{
    if (!ws_uuid_canonical(ev->order_id)) {
        return orders_invalid(out, "order_id");
    }
    if (ev->n_items == 0 || ev->n_items > ORDERS_MAX_ITEMS) {
        return orders_invalid(out, "items");
    }
    for (size_t i = 0; i < ev->n_items; i++) {
        if (ev->items[i] == NULL || ev->items[i]->inventory_id <= 0) {
            return orders_invalid(out, "items.inventory_id");
        }
        if (ev->items[i]->count <= 0) {
            return orders_invalid(out, "items.count");
        }
    }
    orders_txn t = {.p = p,
                    .id = ev->order_id,
                    .ev_status = ST_PENDING,
                    .reason = "",
                    .sent = ev,
                    .now_ms = now_ms};
    return orders_apply(s, &t, out);
}

ws_err orders_apply_in_stock(ws_store *s, const orders_policy *p,
                             const Webshop__V1__InStock *ev, int64_t now_ms,
                             orders_effect *out)
{
    if (!ws_uuid_canonical(ev->order_id)) {
        return orders_invalid(out, "order_id");
    }
    orders_txn t = {.p = p,
                    .id = ev->order_id,
                    .ev_status = ST_SUCCESSFUL,
                    .reason = "",
                    .now_ms = now_ms};
    return orders_apply(s, &t, out);
}

ws_err orders_apply_out_of_stock(ws_store *s, const orders_policy *p,
                                 const Webshop__V1__OutOfStock *ev, int64_t now_ms,
                                 orders_effect *out)
{
    if (!ws_uuid_canonical(ev->order_id)) {
        return orders_invalid(out, "order_id");
    }
    const char *reason = ev->reason != NULL ? ev->reason : "";
    orders_txn t = {.p = p,
                    .id = ev->order_id,
                    .ev_status = ST_UNSUCCESSFUL,
                    .reason = reason,
                    .reason_len = orders_reason_len(reason, ORDERS_MAX_REASON),
                    .now_ms = now_ms};
    return orders_apply(s, &t, out);
}

ws_err orders_apply_cancel(ws_store *s, const orders_policy *p,
                           const Webshop__V1__CancelOrder *ev, int64_t now_ms,
                           orders_effect *out)
{
    if (!ws_uuid_canonical(ev->order_id)) {
        return orders_invalid(out, "order_id");
    }
    orders_txn t = {.p = p,
                    .id = ev->order_id,
                    .ev_status = ST_CANCELED,
                    .reason = "",
                    .now_ms = now_ms};
    return orders_apply(s, &t, out);
}

/* ---- queries ------------------------------------------------------------ */

#define ORDERS_COLUMNS "id, status, reason, created_ms, updated_ms, attempts"

static char *orders_column_dup(sqlite3_stmt *st, int col)
{
    const unsigned char *v = sqlite3_column_text(st, col);
    return strdup(v != NULL ? (const char *)v : "");
}

static ws_err orders_items_load(ws_store *s, Webshop__V1__Order *o)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s,
        "SELECT inventory_id, count FROM order_items WHERE order_id = ?1 ORDER BY line",
        &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, o->id, -1, SQLITE_STATIC);
    int rc;
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (o->n_items == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            Webshop__V1__OrderItem **ni = realloc(o->items, ncap * sizeof *ni);
            if (ni == NULL) {
                sqlite3_reset(st);
                return WS_ENOMEM;
            }
            o->items = ni;
            cap = ncap;
        }
        Webshop__V1__OrderItem *it = malloc(sizeof *it);
        if (it == NULL) {
            sqlite3_reset(st);
            return WS_ENOMEM;
        }
        webshop__v1__order_item__init(it);
        it->inventory_id = sqlite3_column_int(st, 0);
        it->count = sqlite3_column_int(st, 1);
        o->items[o->n_items++] = it;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? WS_OK : ws_err_from_sqlite(rc);
}

/* Build an Order from the current row of st (ORDERS_COLUMNS) and its items. */
static ws_err orders_row_load(sqlite3_stmt *st, Webshop__V1__Order **out)
{
    Webshop__V1__Order *o = malloc(sizeof *o);
    if (o == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__order__init(o);
    o->id = orders_column_dup(st, 0);
    o->reason = orders_column_dup(st, 2);
    if (o->id == NULL || o->reason == NULL) {
        protobuf_c_message_free_unpacked(&o->base, NULL);
        return WS_ENOMEM;
    }
    o->status = (order_status)sqlite3_column_int(st, 1);
    o->created_ms = sqlite3_column_int64(st, 3);
    o->updated_ms = sqlite3_column_int64(st, 4);
    o->attempts = sqlite3_column_int(st, 5);
    *out = o;
    return WS_OK;
}

ws_err orders_get(ws_store *s, const char *id, Webshop__V1__Order **out)
{
    if (!ws_uuid_canonical(id)) {
        return WS_EINVAL;
    }
    sqlite3_stmt *st;
    ws_err err =
        ws_store_stmt(s, "SELECT " ORDERS_COLUMNS " FROM orders WHERE id = ?1", &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? WS_ENOTFOUND : ws_err_from_sqlite(rc);
    }
    Webshop__V1__Order *o;
    err = orders_row_load(st, &o);
    sqlite3_reset(st);
    if (err != WS_OK) {
        return err;
    }
    if ((err = orders_items_load(s, o)) != WS_OK) {
        protobuf_c_message_free_unpacked(&o->base, NULL);
        return err;
    }
    *out = o;
    return WS_OK;
}

static const char orders_b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding of src[0..n) into dst (room for 4*ceil(n/3)+1). */
static void orders_b64_encode(const unsigned char *src, size_t n, char *dst)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)src[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= src[i + 2];
        }
        dst[o++] = orders_b64[(v >> 18) & 63];
        dst[o++] = orders_b64[(v >> 12) & 63];
        if (i + 1 < n) {
            dst[o++] = orders_b64[(v >> 6) & 63];
        }
        if (i + 2 < n) {
            dst[o++] = orders_b64[v & 63];
        }
    }
    dst[o] = '\0';
}

/* Decode base64url without padding; -1 on a bad character, a bad length or
 * output longer than cap, else the decoded length. */
static long orders_b64_decode(const char *src, unsigned char *dst, size_t cap)
{
    size_t n = strlen(src);
    if (n % 4 == 1) {
        return -1;
    }
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = src[i] != '\0' ? strchr(orders_b64, src[i]) : NULL;
        if (p == NULL) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)(p - orders_b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap) {
                return -1;
            }
            dst[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) {
        return -1; /* non-canonical trailing bits */
    }
    return (long)o;
}

/* Parse a page token into its key (created_ms, id[37]). */
static bool orders_token_parse(const char *token, int64_t *created_ms, char *id)
{
    unsigned char raw[80];
    long n = orders_b64_decode(token, raw, sizeof raw - 1);
    if (n <= 0) {
        return false;
    }
    raw[n] = '\0';
    if (memchr(raw, '\0', (size_t)n) != NULL) {
        return false;
    }
    char *colon = strchr((char *)raw, ':');
    if (colon == NULL || colon == (char *)raw) {
        return false;
    }
    *colon = '\0';
    char *end;
    errno = 0;
    long long v = strtoll((char *)raw, &end, 10);
    if (*end != '\0' || errno != 0 || v < 0) {
        return false;
    }
    if (!ws_uuid_canonical(colon + 1)) {
        return false;
    }
    *created_ms = v;
    memcpy(id, colon + 1, 37);
    return true;
}

static ws_err orders_token_make(const Webshop__V1__Order *o, char **out)
{
    char raw[80];
    int n = snprintf(raw, sizeof raw, "%" PRId64 ":%s", o->created_ms, o->id);
    char *tok = malloc(4 * ((size_t)n / 3 + 1) + 1);
    if (tok == NULL) {
        return WS_ENOMEM;
    }
    orders_b64_encode((const unsigned char *)raw, (size_t)n, tok);
    *out = tok;
    return WS_OK;
}

ws_err orders_list(ws_store *s, int32_t page_size, const char *page_token,
                   Webshop__V1__ListOrdersResponse **out)
{
    if (page_size < 0) {
        return WS_EINVAL;
    }
    size_t limit = page_size == 0                ? ORDERS_PAGE_DEFAULT
                   : page_size > ORDERS_PAGE_MAX ? ORDERS_PAGE_MAX
                                                 : (size_t)page_size;
    int64_t after_ms = 0;
    char after_id[37] = "";
    bool first = page_token == NULL || page_token[0] == '\0';
    if (!first && !orders_token_parse(page_token, &after_ms, after_id)) {
        return WS_EINVAL;
    }

    sqlite3_stmt *st;
    ws_err err = first ? ws_store_stmt(s,
                                       "SELECT " ORDERS_COLUMNS " FROM orders"
                                       " ORDER BY created_ms DESC, id DESC LIMIT ?3",
                                       &st)
                       : ws_store_stmt(s,
                                       "SELECT " ORDERS_COLUMNS " FROM orders"
                                       " WHERE (created_ms, id) < (?1, ?2)"
                                       " ORDER BY created_ms DESC, id DESC LIMIT ?3",
                                       &st);
    if (err != WS_OK) {
        return err;
    }
    Webshop__V1__ListOrdersResponse *r = malloc(sizeof *r);
    if (r == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__list_orders_response__init(r);
    r->orders = calloc(limit, sizeof *r->orders);
    if (r->orders == NULL) {
        free(r);
        return WS_ENOMEM;
    }
    if (!first) {
        sqlite3_bind_int64(st, 1, after_ms);
        sqlite3_bind_text(st, 2, after_id, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 3,
                       (sqlite3_int64)limit + 1); /* one more: is there a next page? */
    int rc;
    bool more = false;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (r->n_orders == limit) {
            more = true;
            break;
        }
        if ((err = orders_row_load(st, &r->orders[r->n_orders])) != WS_OK) {
            break;
        }
        r->n_orders++;
    }
    sqlite3_reset(st);
    if (err == WS_OK && rc != SQLITE_ROW && rc != SQLITE_DONE) {
        err = ws_err_from_sqlite(rc);
    }
    for (size_t i = 0; err == WS_OK && i < r->n_orders; i++) {
        err = orders_items_load(s, r->orders[i]);
    }
    if (err == WS_OK) {
        err = more ? orders_token_make(r->orders[r->n_orders - 1], &r->next_page_token)
                   : ((r->next_page_token = strdup("")) == NULL ? WS_ENOMEM : WS_OK);
    }
    if (err != WS_OK) {
        protobuf_c_message_free_unpacked(&r->base, NULL);
        return err;
    }
    *out = r;
    return WS_OK;
}
