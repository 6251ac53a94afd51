/*
 * The order service's question to the inventory: what did you decide for
 * this order? Inventory.GetReservation through the generated client stub,
 * shaped as the recovery loop's order_recovery_lookup_fn.
 */
#ifndef ORDER_RESERVATIONS_H
#define ORDER_RESERVATIONS_H

#include <stdint.h>

#include "recovery.h"
#include "rpc_client.h"

/* What order_reservations_lookup needs; owned by the caller. */
typedef struct order_reservations {
    ws_rpc_client *client; /* dials the inventory; not owned */
    uint32_t deadline_ms;  /* per call; 0 = 2000 */
} order_reservations;

/* An order_recovery_lookup_fn; ctx is an order_reservations. WS_OK with the
 * inventory's answer in *out (the caller frees it); WS_ETIMEDOUT on
 * DEADLINE_EXCEEDED, WS_EUNAVAIL on UNAVAILABLE, WS_EPROTO on any other
 * status (logged). */
ws_err order_reservations_lookup(void *ctx, const char *order_id,
                                 Webshop__V1__GetReservationResponse **out /* OUT */);

#endif
