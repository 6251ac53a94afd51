/*
 * POST /order body validation; see place_order.h.
 */
#include "place_order.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "webshop/v1/front.pb-c.h"

/* Bodies are small: an order of 100 items is about 4 KiB of JSON. */
#define PLACE_ORDER_MAX_DEPTH 8

int place_order_parse(const char *body, size_t len, const char *order_id,
                      const place_order_limits *limits, Webshop__V1__OrderSent **out,
                      char *msg, size_t msg_len)
{
    int max_items = limits != NULL && limits->max_items > 0 ? limits->max_items : 100;
    int max_count = limits != NULL && limits->max_count > 0 ? limits->max_count : 1000;
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
