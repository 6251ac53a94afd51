/*
 * POST /order body validation; see place_order.h.
 */
#include "place_order.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "uuid_text.h"
#include "webshop/v1/front.pb-c.h"

/* Bodies are small: an order of 100 items is about 4 KiB of JSON. */
#define PLACE_ORDER_MAX_DEPTH 8

int place_order_parse(const char *body, size_t len, const char *order_id,
                      const place_order_limits *limits, Webshop__V1__OrderSent **out,
                      char *msg, size_t msg_len)
{
    int max_items = limits != NULL && limits->max_items > 0 ? limits->max_items
                                                            : WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS;
    int max_count = limits != NULL && limits->max_count > 0 ? limits->max_count
                                                            : WEBSHOP_V1_ORDER_ITEM_COUNT_MAX;
    ws_json_limits jl = {.max_bytes = len + 1, .max_depth = PLACE_ORDER_MAX_DEPTH};
    ws_json_error jerr;
    ProtobufCMessage *m = NULL;

    ws_err err = ws_json_decode(&webshop__v1__place_order_request__descriptor, body, len, &jl,
                                &m, &jerr);
    if (err != WS_OK) {
        snprintf(msg, msg_len, "%s", err == WS_ENOMEM ? "out of memory" : jerr.text);
        return -1;
    }
    Webshop__V1__PlaceOrderRequest *req = (Webshop__V1__PlaceOrderRequest *)m;
    int rc = -1;
    /* The prototype's clients send "orderId": "" (or an id); the front
     * picks the id either way, but a value that is no id is a client bug
     * worth telling about. */
    if (req->order_id != NULL && req->order_id[0] != '\0' && !ws_uuid_valid(req->order_id)) {
        snprintf(msg, msg_len,
                 "orderId: must be empty or a UUID like "
                 "123e4567-e89b-12d3-a456-426614174000 (it is ignored: the front picks "
                 "the id), got \"%.40s\"",
                 req->order_id);
        goto done;
    }
    if (req->n_items == 0) {
        snprintf(msg, msg_len, "items: at least one item is required");
        goto done;
    }
    if (req->n_items > (size_t)max_items) {
        snprintf(msg, msg_len, "items: at most %d items per order, got %zu", max_items,
                 req->n_items);
        goto done;
    }
    for (size_t i = 0; i < req->n_items; i++) {
        const Webshop__V1__OrderItem *it = req->items[i];
        if (it->inventory_id <= 0) {
            snprintf(msg, msg_len, "items[%zu].inventory_id: must be a positive product id", i);
            goto done;
        }
        if (it->count <= 0 || it->count > max_count) {
            snprintf(msg, msg_len, "items[%zu].count: must be between 1 and %d, got %d", i,
                     max_count, (int)it->count);
            goto done;
        }
    }

    Webshop__V1__OrderSent *ev = malloc(sizeof(*ev));
    char *id = strdup(order_id);
    if (ev == NULL || id == NULL) {
        free(ev);
        free(id);
        snprintf(msg, msg_len, "out of memory");
        goto done;
    }
    webshop__v1__order_sent__init(ev);
    ev->order_id = id;
    /* Move the items over: both messages own them the same way. */
    ev->n_items = req->n_items;
    ev->items = req->items;
    req->n_items = 0;
    req->items = NULL;
    *out = ev;
    rc = 0;
done:
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* One order line as a sortable pair. */
typedef struct place_order_line {
    int32_t id, count;
} place_order_line;

static int place_order_line_cmp(const void *a, const void *b)
{
    const place_order_line *x = a, *y = b;
    if (x->id != y->id) {
        return x->id < y->id ? -1 : 1;
    }
    return x->count < y->count ? -1 : x->count > y->count;
}

/* The lines of items, sorted, into a malloc'ed array; NULL on ENOMEM. */
static place_order_line *place_order_lines(Webshop__V1__OrderItem *const *items, size_t n)
{
    place_order_line *v = malloc((n > 0 ? n : 1) * sizeof(*v));
    if (v == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        v[i].id = items[i] != NULL ? items[i]->inventory_id : 0;
        v[i].count = items[i] != NULL ? items[i]->count : 0;
    }
    qsort(v, n, sizeof(*v), place_order_line_cmp);
    return v;
}

place_order_match place_order_compare(Webshop__V1__OrderItem *const *recorded, size_t n_recorded,
                                      Webshop__V1__OrderItem *const *asked, size_t n_asked)
{
    if (n_recorded == 0) {
        return PLACE_ORDER_ITEMS_UNKNOWN;
    }
    if (n_recorded != n_asked) {
        return PLACE_ORDER_ITEMS_DIFFER;
    }
    place_order_line *a = place_order_lines(recorded, n_recorded);
    place_order_line *b = place_order_lines(asked, n_asked);
    place_order_match r = PLACE_ORDER_ITEMS_SAME;
    if (a == NULL || b == NULL) {
        r = PLACE_ORDER_ITEMS_UNKNOWN;
    } else if (memcmp(a, b, n_asked * sizeof(*a)) != 0) {
        r = PLACE_ORDER_ITEMS_DIFFER;
    }
    free(a);
    free(b);
    return r;
}
