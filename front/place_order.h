/*
 * POST /order body validation: JSON (decoded only by the transcoder) into
 * the OrderSent event the front publishes. Every rule of the HTTP API is
 * here, so the fuzz target and the handler share it.
 */
#ifndef FRONT_PLACE_ORDER_H
#define FRONT_PLACE_ORDER_H

#include <stddef.h>

#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/order.facts.h"

typedef struct place_order_limits {
    int max_items; /* items per order; 0 = WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS */
    int max_count; /* units per item; 0 = WEBSHOP_V1_ORDER_ITEM_COUNT_MAX */
} place_order_limits;

/* Decode body (len bytes) as a PlaceOrderRequest and check it: order_id
 * (orderId) empty, absent or a UUID in either case (and then ignored: the
 * caller's order_id is the order's), at least one item, at most max_items,
 * every inventory_id positive, every count in 1..max_count. On success returns 0 and *out is a malloc'ed OrderSent
 * carrying order_id (copied) and the items; free it with
 * webshop__v1__order_sent__free_unpacked(*out, NULL). On failure returns -1,
 * *out is untouched and msg holds a message naming the field
 * ("items[1].count: must be between 1 and 1000"). */
int place_order_parse(const char *body, size_t len, const char *order_id,
                      const place_order_limits *limits, Webshop__V1__OrderSent **out /* OUT */,
                      char *msg /* OUT */, size_t msg_len);

/* How the items an Idempotency-Key's order was recorded with compare with
 * the items a POST asks for. */
typedef enum place_order_match {
    PLACE_ORDER_ITEMS_SAME = 0,    /* the same lines, in any order */
    PLACE_ORDER_ITEMS_DIFFER = 1,  /* other lines: the key was reused */
    PLACE_ORDER_ITEMS_UNKNOWN = 2, /* nothing recorded yet (the order service
                                      heard of the order from an outcome
                                      first), or out of memory: treated as
                                      the same order */
} place_order_match;

/* Compare recorded (the order service's lines, n_recorded of them) with
 * asked (the request's), as multisets of (inventory_id, count) lines: the
 * order of lines does not matter, a line repeated does. Neither array is
 * modified; NULL elements count as (0, 0). */
place_order_match place_order_compare(Webshop__V1__OrderItem *const *recorded, size_t n_recorded,
                                      Webshop__V1__OrderItem *const *asked, size_t n_asked);

#endif
