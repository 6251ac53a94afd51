/*
 * GET /events: Server-Sent Events of order status and stock; see
 * order_events.h. Runs on a HTTP worker thread for the stream's life.
 */
#include "order_events.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "front.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "order_id.h"
#include "uuid_text.h"
#include "status_stream.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/order.facts.h"
#include "webshop/v1/order.rpc.h"

/* Browsers wait this long before reconnecting a dropped stream. */
#define ORDER_EVENTS_RETRY_MS 2000

/* A stream checks this often whether its client went away. */
#define ORDER_EVENTS_PEER_CHECK_MS 100

/* Room for the orders parameter: 20 ids, commas, and some slack. */
#define ORDER_EVENTS_QUERY_MAX (STATUS_STREAM_MAX_IDS * ORDER_ID_LEN + 64)

typedef struct order_events_req {
    char ids[STATUS_STREAM_MAX_IDS][ORDER_ID_LEN];
    const char *ptrs[STATUS_STREAM_MAX_IDS];
    int rank[STATUS_STREAM_MAX_IDS]; /* highest rank sent per id */
    int status[STATUS_STREAM_MAX_IDS];
    size_t n;
    bool stock;
} order_events_req;

static bool order_events_final(int status)
{
    return status == WEBSHOP__V1__ORDER_STATUS__UNSUCCESSFUL ||
           status == WEBSHOP__V1__ORDER_STATUS__CANCELED;
}

/* Parse ?orders=a,b&stock=true into r. Returns 0, or an HTTP status with a
 * message in msg. */
static int order_events_parse(ws_http_req *req, order_events_req *r, char *msg,
                              size_t msg_len)
{
    memset(r, 0, sizeof(*r));
    char val[ORDER_EVENTS_QUERY_MAX];
    char flag[16];
    int fl = ws_http_query_var(req, "stock", flag, sizeof(flag));
    if (fl >= 0 || fl == -2 || fl == -3) {
        if (fl >= 0 && (strcmp(flag, "true") == 0 || strcmp(flag, "1") == 0)) {
            r->stock = true;
        } else if (fl < 0 || (strcmp(flag, "false") != 0 && strcmp(flag, "0") != 0)) {
            snprintf(msg, msg_len, "stock: expected true or false");
            return 400;
        }
    }
    int n = ws_http_query_var(req, "orders", val, sizeof(val));
    if (n == -2) {
        snprintf(msg, msg_len, "orders: at most %d order ids", STATUS_STREAM_MAX_IDS);
        return 400;
    }
    if (n == -3) {
        snprintf(msg, msg_len, "orders: badly encoded");
        return 400;
    }
    if (n > 0) {
        char *save = NULL;
        for (char *tok = strtok_r(val, ",", &save); tok != NULL;
             tok = strtok_r(NULL, ",", &save)) {
            char low[ORDER_ID_LEN];
            if (!ws_uuid_normalize(tok, low)) {
                snprintf(msg, msg_len,
                         "orders: \"%.40s\" is not an order id (a UUID like "
                         "123e4567-e89b-12d3-a456-426614174000)",
                         tok);
                return 400;
            }
            bool dup = false;
            for (size_t i = 0; i < r->n && !dup; i++) {
                dup = strcmp(r->ids[i], low) == 0;
            }
            if (dup) {
                continue;
            }
            if (r->n == STATUS_STREAM_MAX_IDS) {
                snprintf(msg, msg_len, "orders: at most %d order ids",
                         STATUS_STREAM_MAX_IDS);
                return 400;
            }
            memcpy(r->ids[r->n], low, ORDER_ID_LEN);
            r->ptrs[r->n] = r->ids[r->n];
            r->n++;
        }
    }
    if (r->n == 0 && !r->stock) {
        snprintf(msg, msg_len,
                 "orders: give one or more order ids (orders=ID,ID), or stock=true");
        return 400;
    }
    return 0;
}

/* Write all of s; false when the client is gone. */
static bool order_events_write(ws_http_req *req, const char *s, size_t len)
{
    return ws_http_write(req, s, len);
}

/* Send one SSE event whose data is msg as JSON (proto field names). */
static bool order_events_send(ws_http_req *req, const char *event,
                              const ProtobufCMessage *msg)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    ws_err err = ws_buf_printf(&b, "event: %s\ndata: ", event);
    if (err == WS_OK) {
        err = ws_json_encode(msg, WS_JSON_DEFAULTS, &b);
    }
    if (err == WS_OK) {
        err = ws_buf_puts(&b, "\n\n");
    }
    bool ok = err == WS_OK && order_events_write(req, b.data, b.len);
    ws_buf_fini(&b);
    return ok;
}

static bool order_events_send_status(ws_http_req *req, const char *id, int status,
                                     const char *reason)
{
    Webshop__V1__OrderStatusChanged m = WEBSHOP__V1__ORDER_STATUS_CHANGED__INIT;
    m.order_id = (char *)id;
    m.status = (Webshop__V1__OrderStatus)status;
    m.reason = (char *)(reason != NULL ? reason : "");
    return order_events_send(req, "status", &m.base);
}

static bool order_events_send_stock(ws_http_req *req, int32_t product, int32_t bal)
{
    Webshop__V1__StockChanged m = WEBSHOP__V1__STOCK_CHANGED__INIT;
    m.product_id = product;
    m.balance = bal;
    return order_events_send(req, "stock", &m.base);
}

/* Snapshot: the current status of each order that exists. Returns WS_RPC_OK
 * or the first failure other than NOT_FOUND. Events for the snapshot's
 * orders queue up on the watch meanwhile. */
static ws_rpc_code order_events_snapshot(front *f, order_events_req *r,
                                         Webshop__V1__Order **orders, char *msg,
                                         size_t msg_len)
{
    for (size_t i = 0; i < r->n; i++) {
        Webshop__V1__GetOrderRequest req = WEBSHOP__V1__GET_ORDER_REQUEST__INIT;
        Webshop__V1__GetOrderResponse *resp = NULL;
        req.id = r->ids[i];
        ws_rpc_code code = webshop_v1_orders_get_order_ex(
            f->orders, &req, &resp, f->rpc_deadline_ms, msg, msg_len);
        if (code == WS_RPC_NOT_FOUND) {
            continue;
        }
        if (code != WS_RPC_OK) {
            return code;
        }
        if (resp->order != NULL) {
            orders[i] = resp->order;
            resp->order = NULL;
        }
        webshop__v1__get_order_response__free_unpacked(resp, NULL);
    }
    return WS_RPC_OK;
}

/* Forward events until every order is final, the bound, or a failure. */
static void order_events_pump(ws_http_req *req, front *f, status_watch *w,
                              order_events_req *r)
{
    double start = ws_now_seconds();
    double last_write = start;
    int heartbeat = f->sse_heartbeat_ms > 0 ? f->sse_heartbeat_ms : 15000;
    int max_ms = f->sse_max_ms > 0 ? f->sse_max_ms : 300000;
    for (;;) {
        if (r->n > 0 && !r->stock) {
            bool all = true;
            for (size_t i = 0; i < r->n && all; i++) {
                all = order_events_final(r->status[i]);
            }
            if (all) {
                static const char end[] = "event: end\ndata: {}\n\n";
                order_events_write(req, end, sizeof(end) - 1);
                return;
            }
        }
        double now = ws_now_seconds();
        int left = max_ms - (int)((now - start) * 1000.0);
        if (left <= 0) {
            return; /* the bound: EventSource reconnects */
        }
        int idle = (int)((now - last_write) * 1000.0);
        int wait = heartbeat - idle;
        if (wait > left) {
            wait = left;
        }
        if (wait <= 0) {
            static const char hb[] = ": heartbeat\n\n";
            if (!order_events_write(req, hb, sizeof(hb) - 1)) {
                return;
            }
            last_write = ws_now_seconds();
            continue;
        }
        /* Wake at least this often to see whether the client left: a
         * closed stream frees its worker and its slot at once, not at the
         * next heartbeat. */
        if (wait > ORDER_EVENTS_PEER_CHECK_MS) {
            wait = ORDER_EVENTS_PEER_CHECK_MS;
        }
        status_event ev;
        status_next got = status_watch_next(w, wait, &ev);
        if (got == STATUS_NEXT_TIMEOUT) {
            if (ws_http_peer_gone(req)) {
                return;
            }
            continue;
        }
        if (got != STATUS_NEXT_EVENT) {
            return; /* overflow or shutdown: the client reconnects */
        }
        bool ok = true;
        if (ev.kind == STATUS_EVENT_STOCK) {
            ok = order_events_send_stock(req, ev.product_id, ev.balance);
        } else {
            for (size_t i = 0; i < r->n; i++) {
                if (strcmp(r->ids[i], ev.order_id) != 0) {
                    continue;
                }
                /* Forward a change that does not go backwards: a higher
                 * rank, or another status of the same rank (the order
                 * service settles SUCCESSFUL <-> UNSUCCESSFUL by the
                 * inventory's record). */
                int rank = webshop_v1_order_status_rank(ev.status);
                if (rank > r->rank[i] ||
                    (rank == r->rank[i] && ev.status != r->status[i])) {
                    r->rank[i] = rank;
                    r->status[i] = ev.status;
                    ok = order_events_send_status(req, ev.order_id, ev.status, ev.reason);
                }
                break;
            }
        }
        if (!ok) {
            return;
        }
        last_write = ws_now_seconds();
    }
}

static int order_events_stream(ws_http_req *req, front *f, order_events_req *r)
{
    if (f->statuses == NULL) {
        return ws_http_reply_error(req, 501, "UNIMPLEMENTED", NULL,
                                   "no live events here");
    }
    status_watch *w = NULL;
    ws_err err = status_watch_open(f->statuses, r->ptrs, r->n, r->stock, &w);
    if (err == WS_EBUSY) {
        return ws_http_reply_error(
            req, 503, "UNAVAILABLE", "Retry-After: 10\r\n",
            "too many live streams; poll GET /order/{id} meanwhile");
    }
    if (err != WS_OK) {
        return ws_http_reply_error(req, 503, "UNAVAILABLE", "Retry-After: 1\r\n",
                                   "live events unavailable: %s", ws_strerror(err));
    }
    Webshop__V1__Order *orders[STATUS_STREAM_MAX_IDS] = {NULL};
    char msg[WS_RPC_MSG_LEN] = "";
    ws_rpc_code code = order_events_snapshot(f, r, orders, msg, sizeof(msg));
    int status = 200;
    if (code != WS_RPC_OK) {
        int hs = code == WS_RPC_DEADLINE_EXCEEDED ? 504 : 503;
        status = ws_http_reply_error(req, hs, ws_rpc_code_name(code),
                                     "Retry-After: 1\r\n", "orders: %s",
                                     msg[0] != '\0' ? msg : ws_rpc_code_name(code));
        goto done;
    }
    /* No Content-Length: the body ends when the connection closes. HEAD
     * gets this head and nothing more. */
    char retry[32];
    int n = snprintf(retry, sizeof(retry), "retry: %d\n\n", ORDER_EVENTS_RETRY_MS);
    bool ok = ws_http_stream_start(req, 200, "text/event-stream; charset=utf-8",
                                   "X-Accel-Buffering: no\r\n") &&
              !ws_http_is_head(req) && order_events_write(req, retry, (size_t)n);
    for (size_t i = 0; i < r->n && ok; i++) {
        if (orders[i] != NULL) {
            r->rank[i] = webshop_v1_order_status_rank(orders[i]->status);
            r->status[i] = orders[i]->status;
            ok = order_events_send_status(req, r->ids[i], orders[i]->status,
                                          orders[i]->reason);
        }
    }
    if (ok) {
        ws_gauge *g = ws_gauge_get(f->metrics, "webshop_sse_streams",
                                   "Open Server-Sent-Events streams", NULL);
        ws_gauge_add(g, 1);
        order_events_pump(req, f, w, r);
        ws_gauge_add(g, -1);
    }
done:
    for (size_t i = 0; i < r->n; i++) {
        if (orders[i] != NULL) {
            webshop__v1__order__free_unpacked(orders[i], NULL);
        }
    }
    status_watch_close(w);
    return status;
}

int order_events_serve(ws_http_req *req, void *ctx)
{
    front *f = ctx;
    double t0 = ws_now_seconds();
    int status;
    char msg[256];
    order_events_req *r = malloc(sizeof(*r));
    if (r == NULL) {
        status = ws_http_reply_error(req, 500, "INTERNAL", NULL, "out of memory");
    } else if ((status = order_events_parse(req, r, msg, sizeof(msg))) != 0) {
        status = ws_http_reply_error(req, status, "INVALID_ARGUMENT", NULL, "%s", msg);
    } else {
        status = order_events_stream(req, f, r);
    }
    free(r);
    char labels[96];
    snprintf(labels, sizeof(labels), "route=\"/events\",method=\"%s\",status=\"%d\"",
             route_stats_method(ws_http_method(req)), status);
    ws_counter_inc(ws_counter_get(f->metrics, "webshop_http_requests_total",
                                  "HTTP requests by route, method and status", labels));
    if (f->access_log) {
        ws_log_buffered(WS_LOG_INFO, "http_request",
                        "method=%s path=/events route=/events status=%d ms=%.3f",
                        ws_http_method(req), status, (ws_now_seconds() - t0) * 1000.0);
    }
    return status;
}
