/*
 * POST /order body validation: JSON (decoded only by the transcoder) into
 * the OrderSent event the front publishes. Every rule of the HTTP API is
 * here, so the fuzz target and the handler share it.
 */
#ifndef FRONT_PLACE_ORDER_H
#define FRONT_PLACE_ORDER_H

#include <stddef.h>

#include "webshop/v1/events.pb-c.h"

typedef struct place_order_limits {
    int max_items; /* items per order; 0 = 100 */
    int max_count; /* units per item; 0 = 1000 */
} place_order_limits;

/* Decode body (len bytes) as a PlaceOrderRequest and check it: at least one
 * item, at most max_items, every inventory_id positive, every count in
 * 1..max_count. On success returns 0 and *out is a malloc'ed OrderSent
 * carrying order_id (copied) and the items; free it with
 * webshop__v1__order_sent__free_unpacked(*out, NULL). On failure returns -1,
 * *out is untouched and msg holds a message naming the field
 * ("items[1].count: must be between 1 and 1000"). */
int place_order_parse(const char *body, size_t len, const char *order_id,
                      const place_order_limits *limits, Webshop__V1__OrderSent **out /* OUT */,
                      char *msg /* OUT */, size_t msg_len);

#endif
