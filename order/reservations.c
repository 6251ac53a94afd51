/*
 * GetReservation calls for the recovery loop: one call per order, bounded by
 * a deadline, the RPC status mapped onto ws_err so the loop knows a missing
 * answer from a real one.
 */
#include "reservations.h"

#include "log.h"
#include "webshop/v1/inventory.rpc.h"

ws_err order_reservations_lookup(void *ctx, const char *order_id,
                                 Webshop__V1__GetReservationResponse **out)
{
    order_reservations *r = ctx;
    Webshop__V1__GetReservationRequest req = WEBSHOP__V1__GET_RESERVATION_REQUEST__INIT;
    req.order_id = (char *)order_id;
    Webshop__V1__GetReservationResponse *resp = NULL;
    char msg[WS_RPC_MSG_LEN];
    ws_rpc_code code = webshop_v1_inventory_get_reservation_ex(
        r->client, &req, &resp, r->deadline_ms ? r->deadline_ms : 2000, msg, sizeof msg);
    switch (code) {
    case WS_RPC_OK:
        *out = resp;
        return WS_OK;
    case WS_RPC_DEADLINE_EXCEEDED:
        return WS_ETIMEDOUT;
    case WS_RPC_UNAVAILABLE:
        return WS_EUNAVAIL;
    default:
        ws_log_warn("order_reservation_lookup_failed", "order_id=%s code=%s message=%s",
                    order_id, ws_rpc_code_name(code), msg);
        return WS_EPROTO;
    }
}
