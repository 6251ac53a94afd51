/*
 * POST /order and DELETE /order/{id}: publish, then wait for the order
 * service's commit; see order_write.h. Runs on HTTP worker threads;
 * everything it touches through `front` is thread-safe.
 */
#include "order_write.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "http.h"
#include "json.h"
#include "log.h"
#include "place_order.h"
#include "routes.h"
#include "status_stream.h"
#include "webshop/v1/events.facts.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/front.pb-c.h"
#include "webshop/v1/order.rpc.h"

#define RETRY_AFTER          "Retry-After: 1\r\n"

/* PlaceOrderResponse.status and CancelOrderResponse.status values. */
#define ORDER_WRITE_COMMITTED "COMMITTED"
#define ORDER_WRITE_QUEUED    "QUEUED"

/* What the order service's record says about a POST. */
typedef enum order_write_verdict {
    VERDICT_COMMITTED, /* recorded (with the same items, when keyed) */
    VERDICT_REUSED,    /* recorded with other items: the key was reused */
    VERDICT_ABSENT,    /* NOT_FOUND */
    VERDICT_UNKNOWN,   /* the order service could not be asked */
} order_write_verdict;

/* One POST /order being served. */
typedef struct order_write_post {
    char id[ORDER_ID_LEN];
    const char *key;            /* Idempotency-Key header, or NULL; not owned */
    Webshop__V1__OrderSent *ev; /* owned: the validated event */
    status_waiter *w;           /* owned; NULL without a hub */
} order_write_post;

static uint32_t order_write_check_ms(const front *f)
{
    return f->rpc_deadline_ms < ORDER_WRITE_CHECK_MS ? f->rpc_deadline_ms
                                                     : ORDER_WRITE_CHECK_MS;
}

/* Orders.GetOrder(id) within deadline_ms. WS_RPC_OK with *out, which the
 * caller frees with webshop__v1__order__free_unpacked; otherwise the code,
 * msg says why, and *out is untouched. */
static ws_rpc_code order_write_lookup(front *f, const char *id, uint32_t deadline_ms,
                                      Webshop__V1__Order **out, char *msg, size_t msg_len)
{
    Webshop__V1__GetOrderRequest req = WEBSHOP__V1__GET_ORDER_REQUEST__INIT;
    Webshop__V1__GetOrderResponse *resp = NULL;
    req.id = (char *)id;
    ws_rpc_code code =
        webshop_v1_orders_get_order_ex(f->orders, &req, &resp, deadline_ms, msg, msg_len);
    if (code != WS_RPC_OK) {
        return code;
    }
    if (resp->order == NULL) {
        webshop__v1__get_order_response__free_unpacked(resp, NULL);
        snprintf(msg, msg_len, "empty answer");
        return WS_RPC_INTERNAL;
    }
    *out = resp->order;
    resp->order = NULL;
    webshop__v1__get_order_response__free_unpacked(resp, NULL);
    return WS_RPC_OK;
}

/* Ask the order service what it recorded for p's order, comparing the
 * items when p has a key. */
static order_write_verdict order_write_verdict_of(front *f, const order_write_post *p)
{
    Webshop__V1__Order *o = NULL;
    char msg[WS_RPC_MSG_LEN] = "";
    ws_rpc_code code =
        order_write_lookup(f, p->id, order_write_check_ms(f), &o, msg, sizeof(msg));
    if (code == WS_RPC_NOT_FOUND) {
        return VERDICT_ABSENT;
    }
    if (code != WS_RPC_OK) {
        ws_log_warn("order_lookup_failed", "id=%s code=%s msg=\"%s\"", p->id,
                    ws_rpc_code_name(code), msg);
        return VERDICT_UNKNOWN;
    }
    order_write_verdict v = VERDICT_COMMITTED;
    if (p->key != NULL &&
        place_order_compare(o->items, o->n_items, p->ev->items, p->ev->n_items) ==
            PLACE_ORDER_ITEMS_DIFFER) {
        v = VERDICT_REUSED;
    }
    webshop__v1__order__free_unpacked(o, NULL);
    return v;
}

/* ---- answers ---------------------------------------------------------- */

static int order_write_reply_placed(ws_http_req *req, const order_write_post *p,
                                    bool committed)
{
    Webshop__V1__PlaceOrderResponse resp = WEBSHOP__V1__PLACE_ORDER_RESPONSE__INIT;
    resp.order_id = (char *)p->id;
    resp.status = committed ? ORDER_WRITE_COMMITTED : ORDER_WRITE_QUEUED;
    char extra[96];
    snprintf(extra, sizeof(extra), "Location: /order/%s\r\n", p->id);
    return routes_reply_json(req, committed ? 201 : 202, &resp.base, 0, extra);
}

static int order_write_reply_reused(ws_http_req *req, const order_write_post *p)
{
    return ws_http_reply_error(req, 422, "IDEMPOTENCY_KEY_REUSED", NULL,
                               "Idempotency-Key \"%.*s\": already used for order %s with "
                               "other items; use a new key for a new order",
                               ORDER_ID_MAX_KEY, p->key, p->id);
}

/* The answer for a publish that failed; what says what was published. */
static int order_write_reply_publish_error(ws_http_req *req, ws_err err,
                                           const char *retry)
{
    if (err == WS_EUNAVAIL) {
        return ws_http_reply_error(req, 503, "UNAVAILABLE", RETRY_AFTER,
                                   "broker unavailable; %s", retry);
    }
    if (err == WS_ETIMEDOUT) {
        return ws_http_reply_error(req, 504, "DEADLINE_EXCEEDED", RETRY_AFTER,
                                   "broker did not acknowledge in time; %s", retry);
    }
    return ws_http_reply_error(req, 500, "INTERNAL", NULL, "publish failed: %s",
                               ws_strerror(err));
}

/* The answer for an order-service look-up that failed (never NOT_FOUND). */
static int order_write_reply_lookup_error(ws_http_req *req, ws_rpc_code code,
                                          const char *msg)
{
    int status = routes_http_status(code);
    return ws_http_reply_error(req, status, ws_rpc_code_name(code),
                               status == 503 || status == 504 ? RETRY_AFTER : NULL,
                               "orders: %s",
                               msg[0] != '\0' ? msg : ws_rpc_code_name(code));
}

/* ---- POST /order -------------------------------------------------------- */

static bool order_write_json_content_type(const char *ct)
{
    if (ct == NULL) {
        return false;
    }
    size_t n = strlen("application/json");
    if (strncasecmp(ct, "application/json", n) != 0) {
        return false;
    }
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

/* Headers and body into p. Returns 0, or the HTTP status of the error
 * answer sent. */
static int order_write_place_read(ws_http_req *req, front *f, order_write_post *p)
{
    if (!order_write_json_content_type(ws_http_header(req, "Content-Type"))) {
        return ws_http_reply_error(req, 415, "UNSUPPORTED_MEDIA_TYPE", NULL,
                                   "Content-Type must be application/json");
    }
    p->key = ws_http_header(req, "Idempotency-Key");
    if (p->key != NULL) {
        if (!order_id_from_key(p->key, p->id)) {
            return ws_http_reply_error(
                req, 400, "INVALID_ARGUMENT", NULL,
                "Idempotency-Key: must be 1..%d printable ASCII characters",
                ORDER_ID_MAX_KEY);
        }
    } else {
        order_id_new(p->id);
    }
    ws_buf body;
    ws_buf_init(&body, 0);
    ws_err err = ws_http_read_body(req, f->max_body, &body);
    if (err == WS_ETOOBIG) {
        ws_buf_fini(&body);
        return ws_http_reply_error(req, 413, "PAYLOAD_TOO_LARGE", "Connection: close\r\n",
                                   "body: larger than %zu bytes", f->max_body);
    }
    if (err == WS_ETIMEDOUT) {
        ws_buf_fini(&body);
        return ws_http_reply_error(req, 408, "REQUEST_TIMEOUT", NULL,
                                   "body: not complete in time");
    }
    if (err != WS_OK) {
        ws_buf_fini(&body);
        return ws_http_reply_error(req, 400, "INVALID_ARGUMENT", NULL,
                                   "body: incomplete");
    }
    char msg[256];
    int rc = place_order_parse(body.data != NULL ? body.data : "", body.len, p->id,
                               &f->limits, &p->ev, msg, sizeof(msg));
    ws_buf_fini(&body);
    if (rc != 0) {
        return ws_http_reply_error(req, 400, "INVALID_ARGUMENT", NULL, "%s", msg);
    }
    return 0;
}

/* Open p's waiter, before anything is published or looked up, so that no
 * status published meanwhile is missed. Returns 0, or the status sent. */
static int order_write_open_waiter(ws_http_req *req, front *f, const char *id,
                                   status_waiter **w)
{
    if (f->statuses == NULL) {
        return 0; /* no hub: answers rest on the look-up after publishing */
    }
    ws_err err = status_waiter_open(f->statuses, id, w);
    if (err == WS_ECLOSED) {
        return ws_http_reply_error(req, 503, "UNAVAILABLE", RETRY_AFTER,
                                   "the front is shutting down; retry");
    }
    if (err != WS_OK) {
        return ws_http_reply_error(req, 500, "INTERNAL", NULL,
                                   "cannot wait for the order: %s", ws_strerror(err));
    }
    return 0;
}

/* True when the order service announced a status for w's order within
 * wait_ms (want: the statuses that count). */
static bool order_write_confirmed(status_waiter *w, unsigned want, int wait_ms)
{
    return w != NULL && status_waiter_wait(w, want, wait_ms, NULL) == STATUS_NEXT_EVENT;
}

/* Publish p's OrderSent and answer from the wait and the look-ups. */
static int order_write_place_publish(ws_http_req *req, front *f, order_write_post *p)
{
    ws_err err =
        ws_bus_publish(f->bus, WEBSHOP_V1_ORDER_SENT_TOPIC, &p->ev->base, f->publish_deadline_ms);
    if (err != WS_OK) {
        return order_write_reply_publish_error(req, err,
                                               "retry with the same Idempotency-Key");
    }
    double t0 = ws_now_seconds();
    bool committed = order_write_confirmed(p->w, STATUS_WANT_ANY, f->accept_wait_ms);
    if (committed && p->key == NULL) {
        return order_write_reply_placed(req, p, true);
    }
    /* Keyed: catch a racing POST with other items. Unconfirmed: catch a
     * status event this front missed (its subscription reconnecting). */
    order_write_verdict v = order_write_verdict_of(f, p);
    if (v == VERDICT_REUSED) {
        return order_write_reply_reused(req, p);
    }
    if (committed || v == VERDICT_COMMITTED) {
        return order_write_reply_placed(req, p, true);
    }
    ws_log_info("order_queued", "id=%s waited_ms=%d", p->id,
                (int)((ws_now_seconds() - t0) * 1000.0));
    return order_write_reply_placed(req, p, false);
}

int order_write_place(ws_http_req *req, front *f)
{
    order_write_post p;
    memset(&p, 0, sizeof(p));
    int status = order_write_place_read(req, f, &p);
    if (status == 0) {
        status = order_write_open_waiter(req, f, p.id, &p.w);
    }
    if (status == 0 && p.key != NULL) {
        /* A retry of an order already recorded publishes nothing. UNKNOWN
         * (the order service cannot be asked): publish anyway, see
         * order_write.h. */
        order_write_verdict v = order_write_verdict_of(f, &p);
        if (v == VERDICT_COMMITTED) {
            status = order_write_reply_placed(req, &p, true);
        } else if (v == VERDICT_REUSED) {
            status = order_write_reply_reused(req, &p);
        }
    }
    if (status == 0) {
        status = order_write_place_publish(req, f, &p);
    }
    status_waiter_close(p.w);
    if (p.ev != NULL) {
        webshop__v1__order_sent__free_unpacked(p.ev, NULL);
    }
    return status;
}

/* ---- DELETE /order/{id} ------------------------------------------------- */

static int order_write_reply_order(ws_http_req *req, const Webshop__V1__Order *o)
{
    return routes_reply_json(req, 200, &o->base, WS_JSON_DEFAULTS, NULL);
}

/* After the cancel was published: answer 200 with the canceled order, or
 * 202 when the order service has not confirmed it. before is the order as
 * it was; seen tells whether CANCELED was announced. */
static int order_write_cancel_answer(ws_http_req *req, front *f, const char *id,
                                     Webshop__V1__Order *before, bool seen)
{
    Webshop__V1__Order *o = NULL;
    char msg[WS_RPC_MSG_LEN] = "";
    ws_rpc_code code =
        order_write_lookup(f, id, order_write_check_ms(f), &o, msg, sizeof(msg));
    int status;
    if (code == WS_RPC_OK && o->status == WEBSHOP__V1__ORDER_STATUS__CANCELED) {
        status = order_write_reply_order(req, o);
    } else if (seen) {
        /* Committed, but the record could not be read back: answer what the
         * announcement says. */
        before->status = WEBSHOP__V1__ORDER_STATUS__CANCELED;
        status = order_write_reply_order(req, before);
    } else {
        ws_log_info("cancel_queued", "id=%s", id);
        Webshop__V1__CancelOrderResponse resp = WEBSHOP__V1__CANCEL_ORDER_RESPONSE__INIT;
        resp.order_id = (char *)id;
        resp.status = ORDER_WRITE_QUEUED;
        char extra[96];
        snprintf(extra, sizeof(extra), "Location: /order/%s\r\n", id);
        status = routes_reply_json(req, 202, &resp.base, 0, extra);
    }
    if (o != NULL) {
        webshop__v1__order__free_unpacked(o, NULL);
    }
    return status;
}

/* DELETE for an order the order service has: publish and wait. */
static int order_write_cancel_known(ws_http_req *req, front *f, const char *id,
                                    status_waiter *w, Webshop__V1__Order *before)
{
    if (before->status == WEBSHOP__V1__ORDER_STATUS__CANCELED) {
        return order_write_reply_order(req, before);
    }
    Webshop__V1__CancelOrder ev = WEBSHOP__V1__CANCEL_ORDER__INIT;
    ev.order_id = (char *)id;
    ws_err err =
        ws_bus_publish(f->bus, WEBSHOP_V1_CANCEL_ORDER_TOPIC, &ev.base, f->publish_deadline_ms);
    if (err != WS_OK) {
        return order_write_reply_publish_error(req, err, "retry the DELETE");
    }
    bool seen = order_write_confirmed(w, STATUS_WANT(WEBSHOP__V1__ORDER_STATUS__CANCELED),
                                      f->accept_wait_ms);
    return order_write_cancel_answer(req, f, id, before, seen);
}

int order_write_cancel(ws_http_req *req, front *f, const char id[ORDER_ID_LEN])
{
    status_waiter *w = NULL;
    int status = order_write_open_waiter(req, f, id, &w);
    if (status != 0) {
        return status;
    }
    /* Only an order the order service recorded may be canceled: a cancel
     * published for any id would let anyone pre-cancel another client's
     * future (Idempotency-Key derived) order. */
    Webshop__V1__Order *before = NULL;
    char msg[WS_RPC_MSG_LEN] = "";
    ws_rpc_code code =
        order_write_lookup(f, id, f->rpc_deadline_ms, &before, msg, sizeof(msg));
    if (code == WS_RPC_NOT_FOUND) {
        status =
            ws_http_reply_error(req, 404, "NOT_FOUND", NULL, "order %s not found", id);
    } else if (code != WS_RPC_OK) {
        status = order_write_reply_lookup_error(req, code, msg);
    } else {
        status = order_write_cancel_known(req, f, id, w, before);
        webshop__v1__order__free_unpacked(before, NULL);
    }
    status_waiter_close(w);
    return status;
}
