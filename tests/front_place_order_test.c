/*
 * The front's POST /order validation and order ids.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "order_id.h"
#include "place_order.h"
#include "uuid_text.h"

static int parse(const char *body, Webshop__V1__OrderSent **out, char *msg)
{
    place_order_limits lim = {.max_items = 3, .max_count = 10};
    return place_order_parse(body, strlen(body), "0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d", &lim,
                             out, msg, 256);
}

Test(place_order, valid_body_becomes_order_sent)
{
    Webshop__V1__OrderSent *ev = NULL;
    char msg[256];
    cr_assert_eq(parse("{\"items\": [{\"inventoryId\": 1, \"count\": 2}, "
                       "{\"inventory_id\": 2, \"count\": 10}]}",
                       &ev, msg),
                 0, "%s", msg);
    cr_assert_str_eq(ev->order_id, "0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d");
    cr_assert_eq(ev->n_items, 2);
    cr_assert_eq(ev->items[1]->inventory_id, 2);
    cr_assert_eq(ev->items[1]->count, 10);
    webshop__v1__order_sent__free_unpacked(ev, NULL);
}

Test(place_order, every_rule_names_the_field)
{
    struct {
        const char *body;
        const char *msg;
    } cases[] = {
        {"{}", "items: at least one item is required"},
        {"{\"items\": []}", "items: at least one item is required"},
        {"{\"items\": [{\"inventoryId\": 1, \"count\": 1}, {\"inventoryId\": 1, \"count\": 1}, "
         "{\"inventoryId\": 1, \"count\": 1}, {\"inventoryId\": 1, \"count\": 1}]}",
         "items: at most 3 items per order, got 4"},
        {"{\"items\": [{\"inventoryId\": 0, \"count\": 1}]}",
         "items[0].inventory_id: must be a positive product id"},
        {"{\"items\": [{\"inventoryId\": 1, \"count\": 11}]}",
         "items[0].count: must be between 1 and 10, got 11"},
        {"{\"items\": [{\"inventoryId\": 1}]}", "items[0].count: must be between 1 and 10, got 0"},
        {"{\"items\": [{\"inventoryId\": 1, \"count\": \"x\"}]}", "items[0].count"},
        {"{\"orderId\": \"x\", \"items\": []}", "orderId: must be empty or a UUID"},
        {"{\"orderId\": \"x\", \"items\": [{\"inventoryId\": 1, \"count\": 1}]}",
         "orderId: must be empty or a UUID"},
        {"{\"order_id\": \"0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8\", \"items\": "
         "[{\"inventoryId\": 1, \"count\": 1}]}",
         "orderId"},
        {"{\"orderId\": 5, \"items\": [{\"inventoryId\": 1, \"count\": 1}]}", "orderId"},
        {"[", "line 1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Webshop__V1__OrderSent *ev = NULL;
        char msg[256] = "";
        cr_assert_eq(parse(cases[i].body, &ev, msg), -1, "case %zu accepted", i);
        cr_assert_null(ev);
        cr_assert_not_null(strstr(msg, cases[i].msg), "case %zu: got \"%s\"", i, msg);
    }
}

Test(order_id, key_derived_ids_are_stable_uuid5)
{
    char a[ORDER_ID_LEN], b[ORDER_ID_LEN], c[ORDER_ID_LEN];
    cr_assert(order_id_from_key("readme-first-order", a));
    cr_assert(order_id_from_key("readme-first-order", b));
    cr_assert(order_id_from_key("another", c));
    cr_assert_str_eq(a, b);
    cr_assert_str_neq(a, c);
    /* The value tools/webshop up prints (Python's uuid5 in our namespace). */
    cr_assert_str_eq(a, "550e7ba5-52a6-53e5-92dc-9537033ef36d");
    cr_assert_eq(a[14], '5', "version 5");
}

Test(order_id, bad_keys_are_refused)
{
    char out[ORDER_ID_LEN] = "untouched";
    char big[ORDER_ID_MAX_KEY + 2];
    memset(big, 'k', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_not(order_id_from_key("", out));
    cr_assert_not(order_id_from_key(big, out));
    cr_assert_not(order_id_from_key("tab\there", out));
    cr_assert_not(order_id_from_key("\xc3\xa9", out));
    cr_assert_str_eq(out, "untouched");
}

Test(order_id, validation)
{
    char id[ORDER_ID_LEN];
    order_id_new(id);
    cr_assert(ws_uuid_valid(id));
    cr_assert(ws_uuid_valid("0B7C1D4E-5F60-4A1B-8C2D-3E4F5A6B7C8D"));
    cr_assert_not(ws_uuid_valid("0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8"));
    cr_assert_not(ws_uuid_valid("0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8dd"));
    cr_assert_not(ws_uuid_valid("0b7c1d4e05f60-4a1b-8c2d-3e4f5a6b7c8d"));
    cr_assert_not(ws_uuid_valid("0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8g"));
    cr_assert_not(ws_uuid_valid(""));
}

/* Fresh ids are version-4 UUIDs (RFC 4122 variant), lowercase, and distinct
 * across more draws than one thread's random pool holds. */
Test(order_id, fresh_ids_are_distinct_lowercase_uuid4)
{
    enum { N = 1000 };
    static char ids[N][ORDER_ID_LEN];
    for (int i = 0; i < N; i++) {
        order_id_new(ids[i]);
        cr_assert(ws_uuid_valid(ids[i]), "%s", ids[i]);
        cr_assert_eq(ids[i][14], '4', "version of %s", ids[i]);
        cr_assert(strchr("89ab", ids[i][19]) != NULL, "variant of %s", ids[i]);
        for (int k = 0; k < ORDER_ID_LEN - 1; k++) {
            cr_assert(ids[i][k] < 'A' || ids[i][k] > 'F', "uppercase in %s", ids[i]);
        }
    }
    for (int i = 0; i < N; i++) {
        for (int j = i + 1; j < N; j++) {
            cr_assert_str_neq(ids[i], ids[j]);
        }
    }
}

/* The Python prototype's clients send "orderId": "" (11.7); an id they send
 * is accepted and ignored: the front's id is the order's. */
Test(place_order, order_id_empty_absent_or_a_uuid_is_ignored)
{
    const char *bodies[] = {
        "{\"orderId\": \"\", \"items\": [{\"inventoryId\": 1, \"count\": 2}]}",
        "{\"order_id\": \"\", \"items\": [{\"inventoryId\": 1, \"count\": 2}]}",
        "{\"items\": [{\"inventoryId\": 1, \"count\": 2}]}",
        "{\"orderId\": \"11111111-2222-4333-8444-555555555555\", \"items\": "
        "[{\"inventoryId\": 1, \"count\": 2}]}",
        "{\"orderId\": \"AAAAAAAA-2222-4333-8444-555555555555\", \"items\": "
        "[{\"inventoryId\": 1, \"count\": 2}]}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        Webshop__V1__OrderSent *ev = NULL;
        char msg[256] = "";
        cr_assert_eq(parse(bodies[i], &ev, msg), 0, "body %zu: %s", i, msg);
        cr_assert_str_eq(ev->order_id, "0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d", "body %zu", i);
        cr_assert_eq(ev->n_items, 1);
        webshop__v1__order_sent__free_unpacked(ev, NULL);
    }
}

/* Items as arrays of OrderItem pointers for place_order_compare. */
#define LINES_MAX 8
typedef struct lines {
    Webshop__V1__OrderItem v[LINES_MAX];
    Webshop__V1__OrderItem *p[LINES_MAX];
    size_t n;
} lines;

static void lines_set(lines *l, const int (*pairs)[2], size_t n)
{
    l->n = n;
    for (size_t i = 0; i < n; i++) {
        webshop__v1__order_item__init(&l->v[i]);
        l->v[i].inventory_id = pairs[i][0];
        l->v[i].count = pairs[i][1];
        l->p[i] = &l->v[i];
    }
}

static place_order_match compare(const int (*a)[2], size_t na, const int (*b)[2], size_t nb)
{
    lines x, y;
    lines_set(&x, a, na);
    lines_set(&y, b, nb);
    place_order_match m = place_order_compare(x.p, x.n, y.p, y.n);
    /* Neither side is reordered by the comparison. */
    for (size_t i = 0; i < na; i++) {
        cr_assert_eq(x.p[i]->inventory_id, a[i][0]);
    }
    for (size_t i = 0; i < nb; i++) {
        cr_assert_eq(y.p[i]->inventory_id, b[i][0]);
    }
    return m;
}

Test(place_order, recorded_items_compare_in_any_order)
{
    const int one[][2] = {{1, 2}, {2, 1}, {3, 5}};
    const int shuffled[][2] = {{3, 5}, {1, 2}, {2, 1}};
    const int other_count[][2] = {{1, 2}, {2, 2}, {3, 5}};
    const int other_product[][2] = {{1, 2}, {4, 1}, {3, 5}};
    const int fewer[][2] = {{1, 2}, {2, 1}};
    const int repeated[][2] = {{1, 2}, {1, 2}, {2, 1}};
    const int repeated2[][2] = {{1, 2}, {2, 1}, {2, 1}};
    const int split[][2] = {{1, 1}, {1, 1}};
    const int joined[][2] = {{1, 2}};
    cr_assert_eq(compare(one, 3, one, 3), PLACE_ORDER_ITEMS_SAME);
    cr_assert_eq(compare(one, 3, shuffled, 3), PLACE_ORDER_ITEMS_SAME);
    cr_assert_eq(compare(one, 3, other_count, 3), PLACE_ORDER_ITEMS_DIFFER);
    cr_assert_eq(compare(one, 3, other_product, 3), PLACE_ORDER_ITEMS_DIFFER);
    cr_assert_eq(compare(one, 3, fewer, 2), PLACE_ORDER_ITEMS_DIFFER);
    cr_assert_eq(compare(fewer, 2, one, 3), PLACE_ORDER_ITEMS_DIFFER);
    /* Lines are a multiset: a repeated line matters, and is not summed. */
    cr_assert_eq(compare(repeated, 3, repeated2, 3), PLACE_ORDER_ITEMS_DIFFER);
    cr_assert_eq(compare(split, 2, joined, 1), PLACE_ORDER_ITEMS_DIFFER);
    /* An order the order service knows only from an outcome has no items
     * yet: the same order, whatever is asked. */
    cr_assert_eq(compare(NULL, 0, one, 3), PLACE_ORDER_ITEMS_UNKNOWN);
}
