/*
 * The order domain (order/orders.c) on a temp SQLite file, no broker:
 * precedence and idempotence of the four events over every arrival order,
 * what each event queues in the outbox, validation, and the two queries.
 * The clock is a parameter, so nothing sleeps.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "orders.h"
#include "outbox.h"
#include "schema.h"

#define IN  WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL
#define OUT WEBSHOP__V1__ORDER_STATUS__UNSUCCESSFUL

static char tmpdir[64];
static ws_store *store;
static orders_policy pol;

static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ws-order-test-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
    char path[128];
    snprintf(path, sizeof path, "%s/order.db", tmpdir);
    cr_assert_eq(order_schema_open(path, "OFF", &store), WS_OK);
    pol = orders_policy_default();
}

static void teardown(void)
{
    ws_store_close(store);
    char path[128];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/order.db%s", tmpdir, suffix[i]);
        unlink(path);
    }
    cr_assert_eq(rmdir(tmpdir), 0);
}

TestSuite(order_orders, .init = setup, .fini = teardown);

static void new_id(char id[37])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, id);
}

/* ---- outbox inspection --------------------------------------------------- */

typedef struct drained {
    int n_status;
    int last_status;
    char last_reason[600];
    int n_canceled;
    int n_sent;
    size_t n_sent_items;
    int n_rows;
} drained;

typedef struct drain_ctx {
    ws_store *s;
    drained d;
    int64_t ids[4096];
    size_t n_ids;
} drain_ctx;

static const ProtobufCMessageDescriptor *const out_types[] = {
    &webshop__v1__order_status_changed__descriptor,
    &webshop__v1__order_canceled__descriptor,
    &webshop__v1__order_sent__descriptor,
};

static ws_err drain_row(void *ctx, const ws_outbox_row *row)
{
    drain_ctx *c = ctx;
    ProtobufCMessage *m;
    cr_assert_eq(ws_outbox_row_unpack(row, out_types, 3, &m), WS_OK);
    c->d.n_rows++;
    if (m->descriptor == &webshop__v1__order_status_changed__descriptor) {
        Webshop__V1__OrderStatusChanged *e = (Webshop__V1__OrderStatusChanged *)m;
        cr_assert_str_eq(row->topic, ORDERS_TOPIC_STATUS);
        c->d.n_status++;
        c->d.last_status = e->status;
        snprintf(c->d.last_reason, sizeof c->d.last_reason, "%s", e->reason);
    } else if (m->descriptor == &webshop__v1__order_canceled__descriptor) {
        cr_assert_str_eq(row->topic, ORDERS_TOPIC_CANCELED);
        c->d.n_canceled++;
    } else {
        Webshop__V1__OrderSent *e = (Webshop__V1__OrderSent *)m;
        cr_assert_str_eq(row->topic, "public-front/order-send");
        c->d.n_sent++;
        c->d.n_sent_items = e->n_items;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    cr_assert_lt(c->n_ids, 4096);
    c->ids[c->n_ids++] = row->id;
    return WS_OK;
}

/* Read every outbox row, sum them up, and delete them. */
static drained drain(void)
{
    static drain_ctx c;
    memset(&c, 0, sizeof c);
    c.s = store;
    cr_assert_eq(ws_outbox_scan(store, 0, 4096, drain_row, &c, NULL), WS_OK);
    for (size_t i = 0; i < c.n_ids; i++) {
        cr_assert_eq(ws_outbox_delete(store, c.ids[i]), WS_OK);
    }
    return c.d;
}

/* ---- events --------------------------------------------------------------- */

static Webshop__V1__OrderItem item1 = {
    PROTOBUF_C_MESSAGE_INIT(&webshop__v1__order_item__descriptor), 1, 2};
static Webshop__V1__OrderItem item2 = {
    PROTOBUF_C_MESSAGE_INIT(&webshop__v1__order_item__descriptor), 2, 5};
static Webshop__V1__OrderItem *two_items[] = {&item1, &item2};

static ws_err send_ev(const char *id, int64_t now, orders_effect *eff)
{
    Webshop__V1__OrderSent e = WEBSHOP__V1__ORDER_SENT__INIT;
    e.order_id = (char *)id;
    e.n_items = 2;
    e.items = two_items;
    return orders_apply_sent(store, &pol, &e, now, eff);
}

static ws_err in_ev(const char *id, int64_t now, orders_effect *eff)
{
    Webshop__V1__InStock e = WEBSHOP__V1__IN_STOCK__INIT;
    e.order_id = (char *)id;
    return orders_apply_in_stock(store, &pol, &e, now, eff);
}

static ws_err out_ev(const char *id, const char *reason, int64_t now, orders_effect *eff)
{
    Webshop__V1__OutOfStock e = WEBSHOP__V1__OUT_OF_STOCK__INIT;
    e.order_id = (char *)id;
    e.reason = (char *)reason;
    return orders_apply_out_of_stock(store, &pol, &e, now, eff);
}

static ws_err cancel_ev(const char *id, int64_t now, orders_effect *eff)
{
    Webshop__V1__CancelOrder e = WEBSHOP__V1__CANCEL_ORDER__INIT;
    e.order_id = (char *)id;
    return orders_apply_cancel(store, &pol, &e, now, eff);
}

/* 'S' OrderSent, 'O' the outcome (in or out of stock), 'C' CancelOrder. */
static void apply_char(char ev, int outcome, const char *id, int64_t now)
{
    ws_err err;
    switch (ev) {
    case 'S':
        err = send_ev(id, now, NULL);
        break;
    case 'O':
        err = outcome == IN ? in_ev(id, now, NULL)
                            : out_ev(id, "not enough stock", now, NULL);
        break;
    default:
        err = cancel_ev(id, now, NULL);
        break;
    }
    cr_assert_eq(err, WS_OK, "event %c: %s", ev, ws_errname(err));
}

static int cmp_char(const void *a, const void *b)
{
    return *(const char *)a - *(const char *)b;
}

/* Next lexicographic permutation of s[0..n); false after the last. */
static bool next_perm(char *s, size_t n)
{
    if (n < 2) {
        return false;
    }
    size_t i = n - 1;
    while (i > 0 && s[i - 1] >= s[i]) {
        i--;
    }
    if (i == 0) {
        return false;
    }
    size_t j = n - 1;
    while (s[j] <= s[i - 1]) {
        j--;
    }
    char t = s[i - 1];
    s[i - 1] = s[j];
    s[j] = t;
    for (size_t a = i, b = n - 1; a < b; a++, b--) {
        t = s[a];
        s[a] = s[b];
        s[b] = t;
    }
    return true;
}

Test(order_orders, every_permutation_of_events_ends_in_same_state)
{
    const char kinds[] = {'S', 'O', 'C'};
    int permutations = 0;
    for (int outcome = IN; outcome <= OUT; outcome++) {
        for (int present = 1; present < 8; present++) {
            for (int dup = 0; dup < 8; dup++) {
                if ((dup & ~present) != 0) {
                    continue;
                }
                char seq[7];
                size_t n = 0;
                for (int k = 0; k < 3; k++) {
                    if (present & (1 << k)) {
                        seq[n++] = kinds[k];
                    }
                    if (dup & (1 << k)) {
                        seq[n++] = kinds[k];
                    }
                }
                seq[n] = '\0';
                qsort(seq, n, 1, cmp_char);
                bool has_s = present & 1, has_o = present & 2, has_c = present & 4;
                int want = has_c   ? WEBSHOP__V1__ORDER_STATUS__CANCELED
                           : has_o ? outcome
                                   : WEBSHOP__V1__ORDER_STATUS__PENDING;
                const char *want_reason = want == OUT ? "not enough stock" : "";
                do {
                    char id[37];
                    new_id(id);
                    for (size_t i = 0; i < n; i++) {
                        apply_char(seq[i], outcome, id, 1000 + (int64_t)i);
                    }
                    Webshop__V1__Order *o;
                    cr_assert_eq(orders_get(store, id, &o), WS_OK);
                    cr_assert_eq(o->status, want, "%s: status %d, want %d", seq,
                                 o->status, want);
                    cr_assert_str_eq(o->reason, want_reason, "%s", seq);
                    cr_assert_eq(o->n_items, has_s ? 2u : 0u, "%s", seq);
                    if (has_s) {
                        cr_assert_eq(o->items[1]->inventory_id, 2);
                        cr_assert_eq(o->items[1]->count, 5);
                    }
                    cr_assert_eq(o->created_ms, 1000);
                    protobuf_c_message_free_unpacked(&o->base, NULL);

                    drained d = drain();
                    cr_assert_geq(d.n_status, 1, "%s", seq);
                    cr_assert_leq(d.n_status, 3, "%s", seq);
                    cr_assert_eq(d.last_status, want, "%s: last queued status", seq);
                    cr_assert_str_eq(d.last_reason, want_reason, "%s", seq);
                    cr_assert_eq(d.n_canceled > 0, has_c, "%s", seq);
                    cr_assert_eq(d.n_sent, 0);

                    /* Replaying everything changes nothing and queues no
                     * status (only the unconfirmed cancel is re-queued). */
                    for (size_t i = 0; i < n; i++) {
                        apply_char(seq[i], outcome, id, 5000);
                    }
                    d = drain();
                    cr_assert_eq(d.n_status, 0, "%s: replay queued a status", seq);
                    int n_c = 0;
                    for (size_t i = 0; i < n; i++) {
                        n_c += seq[i] == 'C';
                    }
                    cr_assert_eq(d.n_canceled, n_c,
                                 "%s: one OrderCanceled per replayed cancel", seq);
                    cr_assert_eq(orders_get(store, id, &o), WS_OK);
                    cr_assert_eq(o->status, want);
                    protobuf_c_message_free_unpacked(&o->base, NULL);
                    permutations++;
                } while (next_perm(seq, n));
            }
        }
    }
    cr_assert_gt(permutations, 400);
}

Test(order_orders, event_for_unseen_order_creates_it)
{
    char id[37];
    new_id(id);
    orders_effect eff;
    cr_assert_eq(in_ev(id, 42, &eff), WS_OK);
    cr_assert(eff.created);
    cr_assert_eq(eff.old_status, 0);
    cr_assert_eq(eff.new_status, IN);
    Webshop__V1__Order *o;
    cr_assert_eq(orders_get(store, id, &o), WS_OK);
    cr_assert_str_eq(o->id, id);
    cr_assert_eq(o->status, IN);
    cr_assert_eq(o->n_items, 0);
    cr_assert_eq(o->created_ms, 42);
    cr_assert_eq(o->updated_ms, 42);
    protobuf_c_message_free_unpacked(&o->base, NULL);
    drained d = drain();
    cr_assert_eq(d.n_rows, 1);
    cr_assert_eq(d.last_status, IN);
}

Test(order_orders, late_order_sent_fills_items_only)
{
    char id[37];
    new_id(id);
    cr_assert_eq(out_ev(id, "unknown product", 10, NULL), WS_OK);
    drain();
    orders_effect eff;
    cr_assert_eq(send_ev(id, 20, &eff), WS_OK);
    cr_assert(!eff.created);
    cr_assert(eff.items_filled);
    cr_assert_eq(eff.old_status, OUT);
    cr_assert_eq(eff.new_status, OUT);
    cr_assert_eq(eff.queued, 0);
    Webshop__V1__Order *o;
    cr_assert_eq(orders_get(store, id, &o), WS_OK);
    cr_assert_eq(o->status, OUT);
    cr_assert_str_eq(o->reason, "unknown product");
    cr_assert_eq(o->n_items, 2);
    cr_assert_eq(o->created_ms, 10);
    cr_assert_eq(o->updated_ms, 20);
    protobuf_c_message_free_unpacked(&o->base, NULL);
    cr_assert_eq(drain().n_rows, 0);

    /* A second OrderSent with other items is a conflict and changes nothing. */
    Webshop__V1__OrderSent e = WEBSHOP__V1__ORDER_SENT__INIT;
    e.order_id = id;
    e.n_items = 1;
    e.items = two_items;
    cr_assert_eq(orders_apply_sent(store, &pol, &e, 30, &eff), WS_OK);
    cr_assert(eff.conflict);
    cr_assert(!eff.items_filled);
    cr_assert_eq(orders_get(store, id, &o), WS_OK);
    cr_assert_eq(o->n_items, 2);
    cr_assert_eq(o->updated_ms, 20);
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order_orders, first_recorded_outcome_wins)
{
    char a[37], b[37];
    new_id(a);
    new_id(b);
    orders_effect eff;
    cr_assert_eq(in_ev(a, 1, NULL), WS_OK);
    cr_assert_eq(out_ev(a, "late", 2, &eff), WS_OK);
    cr_assert(eff.conflict);
    cr_assert_eq(eff.new_status, IN);
    cr_assert_eq(out_ev(b, "first", 1, NULL), WS_OK);
    cr_assert_eq(in_ev(b, 2, &eff), WS_OK);
    cr_assert(eff.conflict);
    Webshop__V1__Order *o;
    cr_assert_eq(orders_get(store, b, &o), WS_OK);
    cr_assert_eq(o->status, OUT);
    cr_assert_str_eq(o->reason, "first");
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order_orders, cancel_queues_order_canceled_with_the_status_change)
{
    char id[37];
    new_id(id);
    cr_assert_eq(send_ev(id, 1, NULL), WS_OK);
    cr_assert_eq(in_ev(id, 2, NULL), WS_OK);
    drain();
    orders_effect eff;
    cr_assert_eq(cancel_ev(id, 3, &eff), WS_OK);
    cr_assert_eq(eff.old_status, IN);
    cr_assert_eq(eff.new_status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
    cr_assert_eq(eff.queued, 2);
    drained d = drain();
    cr_assert_eq(d.n_canceled, 1);
    cr_assert_eq(d.n_status, 1);
    cr_assert_eq(d.last_status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
}

Test(order_orders, duplicate_cancel_requeues_only_until_confirmed)
{
    char id[37];
    new_id(id);
    cr_assert_eq(cancel_ev(id, 1, NULL), WS_OK);
    drain();
    orders_effect eff;
    cr_assert_eq(cancel_ev(id, 2, &eff), WS_OK);
    cr_assert_eq(eff.queued, 1);
    drained d = drain();
    cr_assert_eq(d.n_canceled, 1);
    cr_assert_eq(d.n_status, 0);
    /* What the recovery loop does when the inventory confirms. */
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE orders SET cancel_confirmed = 1 WHERE id = '%s'",
             id);
    cr_assert_eq(ws_store_exec(store, sql), WS_OK);
    cr_assert_eq(cancel_ev(id, 3, &eff), WS_OK);
    cr_assert_eq(eff.queued, 0);
    cr_assert_eq(drain().n_rows, 0);
}

Test(order_orders, invalid_events_are_refused_and_write_nothing)
{
    orders_effect eff;
    cr_assert_eq(in_ev("not-a-uuid", 1, &eff), WS_EINVAL);
    cr_assert_str_eq(eff.invalid, "order_id");
    cr_assert_eq(in_ev("6F9619FF-8B86-D011-B42D-00C04FC964FF", 1, &eff), WS_EINVAL);
    cr_assert_eq(cancel_ev("", 1, &eff), WS_EINVAL);
    cr_assert_eq(out_ev("6f9619ff-8b86-d011-b42d-00c04fc964f", "x", 1, &eff), WS_EINVAL);

    char id[37];
    new_id(id);
    Webshop__V1__OrderSent e = WEBSHOP__V1__ORDER_SENT__INIT;
    e.order_id = id;
    cr_assert_eq(orders_apply_sent(store, &pol, &e, 1, &eff), WS_EINVAL);
    cr_assert_str_eq(eff.invalid, "items");
    Webshop__V1__OrderItem bad_count = WEBSHOP__V1__ORDER_ITEM__INIT;
    bad_count.inventory_id = 1;
    bad_count.count = 0;
    Webshop__V1__OrderItem *items[] = {&item1, &bad_count};
    e.items = items;
    e.n_items = 2;
    cr_assert_eq(orders_apply_sent(store, &pol, &e, 1, &eff), WS_EINVAL);
    cr_assert_str_eq(eff.invalid, "items.count");
    Webshop__V1__OrderItem bad_id = WEBSHOP__V1__ORDER_ITEM__INIT;
    bad_id.inventory_id = -3;
    bad_id.count = 1;
    items[1] = &bad_id;
    cr_assert_eq(orders_apply_sent(store, &pol, &e, 1, &eff), WS_EINVAL);
    cr_assert_str_eq(eff.invalid, "items.inventory_id");

    Webshop__V1__Order *o;
    cr_assert_eq(orders_get(store, id, &o), WS_ENOTFOUND);
    cr_assert_eq(drain().n_rows, 0);
}

Test(order_orders, long_reason_is_cut_on_a_utf8_boundary)
{
    char reason[1200];
    size_t n = 0;
    while (n + 2 < sizeof reason - 1) {
        reason[n++] = '\xc3'; /* "é" */
        reason[n++] = '\xa9';
    }
    reason[n] = '\0';
    memmove(reason + 1, reason, n + 1); /* shift by one: the cut falls mid-sequence */
    reason[0] = 'x';
    char id[37];
    new_id(id);
    cr_assert_eq(out_ev(id, reason, 1, NULL), WS_OK);
    Webshop__V1__Order *o;
    cr_assert_eq(orders_get(store, id, &o), WS_OK);
    size_t len = strlen(o->reason);
    cr_assert_leq(len, ORDERS_MAX_REASON);
    cr_assert_geq(len, ORDERS_MAX_REASON - 1);
    cr_assert_eq(len % 2, 1, "cut inside a two-byte sequence");
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order_orders, get_unknown_or_malformed_id)
{
    Webshop__V1__Order *o = NULL;
    cr_assert_eq(orders_get(store, "6f9619ff-8b86-d011-b42d-00c04fc964ff", &o),
                 WS_ENOTFOUND);
    cr_assert_eq(orders_get(store, "bogus", &o), WS_EINVAL);
    cr_assert_null(o);
}

/* Walk every page of size page_size; return how many orders were seen and
 * check they come newest first without repeats. */
static size_t walk_pages(int32_t page_size, size_t expect_pages)
{
    char *token = strdup("");
    size_t seen = 0, pages = 0;
    int64_t prev_ms = INT64_MAX;
    char prev_id[37] = "~";
    for (;;) {
        Webshop__V1__ListOrdersResponse *r;
        cr_assert_eq(orders_list(store, page_size, token, &r), WS_OK);
        free(token);
        pages++;
        for (size_t i = 0; i < r->n_orders; i++) {
            Webshop__V1__Order *o = r->orders[i];
            bool older = o->created_ms < prev_ms ||
                         (o->created_ms == prev_ms && strcmp(o->id, prev_id) < 0);
            cr_assert(older, "page %zu row %zu out of order", pages, i);
            prev_ms = o->created_ms;
            snprintf(prev_id, sizeof prev_id, "%s", o->id);
            seen++;
        }
        token = strdup(r->next_page_token);
        bool last = r->next_page_token[0] == '\0';
        if (!last) {
            cr_assert_eq(r->n_orders, (size_t)page_size);
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (last) {
            break;
        }
        cr_assert_lt(pages, 10000);
    }
    free(token);
    if (expect_pages) {
        cr_assert_eq(pages, expect_pages);
    }
    return seen;
}

Test(order_orders, list_pages_newest_first_across_equal_timestamps)
{
    char id[37];
    for (int i = 0; i < 23; i++) {
        new_id(id);
        cr_assert_eq(send_ev(id, i < 11 ? 100 : 200 + i / 5, NULL), WS_OK);
    }
    cr_assert_eq(walk_pages(3, 8), 23);
    cr_assert_eq(walk_pages(23, 1), 23);
    cr_assert_eq(walk_pages(1, 23), 23);
    cr_assert_eq(walk_pages(0, 1), 23);
}

Test(order_orders, list_page_size_default_and_cap)
{
    char id[37];
    for (int i = 0; i < ORDERS_PAGE_MAX + 5; i++) {
        new_id(id);
        cr_assert_eq(in_ev(id, i, NULL), WS_OK);
    }
    Webshop__V1__ListOrdersResponse *r;
    cr_assert_eq(orders_list(store, 0, NULL, &r), WS_OK);
    cr_assert_eq(r->n_orders, ORDERS_PAGE_DEFAULT);
    cr_assert_eq(r->orders[0]->created_ms, ORDERS_PAGE_MAX + 4);
    cr_assert_neq(r->next_page_token[0], '\0');
    protobuf_c_message_free_unpacked(&r->base, NULL);
    cr_assert_eq(orders_list(store, 1 << 30, NULL, &r), WS_OK);
    cr_assert_eq(r->n_orders, ORDERS_PAGE_MAX);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    cr_assert_eq(walk_pages(ORDERS_PAGE_MAX, 2), ORDERS_PAGE_MAX + 5);
}

Test(order_orders, list_refuses_bad_tokens_and_sizes)
{
    Webshop__V1__ListOrdersResponse *r = NULL;
    cr_assert_eq(orders_list(store, -1, NULL, &r), WS_EINVAL);
    const char *bad[] = {
        "!!!",        /* not base64url */
        "a",          /* impossible length */
        "MTIz",       /* "123": no colon */
        "MTIzOmFiYw", /* "123:abc": not a uuid */
        "LTE6NmY5NjE5ZmYtOGI4Ni1kMDExLWI0MmQtMDBjMDRmYzk2NGZm", /* "-1:<uuid>" */
        "OjZmOTYxOWZmLThiODYtZDAxMS1iNDJkLTAwYzA0ZmM5NjRmZg",   /* ":<uuid>" */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(orders_list(store, 10, bad[i], &r), WS_EINVAL, "token %s", bad[i]);
    }
    cr_assert_null(r);
    /* The good form of the same: "1:<uuid>". */
    cr_assert_eq(
        orders_list(store, 10, "MTo2Zjk2MTlmZi04Yjg2LWQwMTEtYjQyZC0wMGMwNGZjOTY0ZmY", &r),
        WS_OK);
    cr_assert_eq(r->n_orders, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}
