/*
 * The front's HTTP route handlers; see routes.h. Which handler serves a
 * request is decided by the route table generated from front.proto
 * (webshop/v1/front.routes.h, lib/http_route.h): path templates, methods,
 * 405 with Allow and HEAD come from there, and nothing here looks at the
 * path or the method. Handlers run on HTTP worker threads; everything
 * they touch through `front` is thread-safe.
 */
#include "routes.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "log.h"
#include "order_events.h"
#include "order_id.h"
#include "order_write.h"
#include "uuid_text.h"
#include "connect.h"
#include "static_files.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/front.pb-c.h"
#include "webshop/v1/front.routes.h"
#include "webshop/v1/inventory.rpc.h"
#include "webshop/v1/order.rpc.h"
#include "webshop/v1/rpc.rpc.h"

#define RETRY_AFTER "Retry-After: 1\r\n"

int routes_http_status(ws_rpc_code code)
{
    switch (code) {
    case WS_RPC_OK:
        return 200;
    case WS_RPC_INVALID_ARGUMENT:
    case WS_RPC_OUT_OF_RANGE:
    case WS_RPC_FAILED_PRECONDITION:
        return 400;
    case WS_RPC_NOT_FOUND:
        return 404;
    case WS_RPC_ALREADY_EXISTS:
    case WS_RPC_ABORTED:
        return 409;
    case WS_RPC_RESOURCE_EXHAUSTED:
        return 429;
    case WS_RPC_UNIMPLEMENTED:
        return 501;
    case WS_RPC_UNAVAILABLE:
    case WS_RPC_CANCELLED:
        return 503;
    case WS_RPC_DEADLINE_EXCEEDED:
        return 504;
    case WS_RPC_UNAUTHENTICATED:
        return 401;
    case WS_RPC_PERMISSION_DENIED:
        return 403;
    default:
        return 500;
    }
}

/* secs as milliseconds with three decimals ("12.345") into out (>= 32
 * bytes), without snprintf. */
static void routes_format_ms(char *out, double secs)
{
    unsigned long long us =
        secs > 0 && secs < 1e9 ? (unsigned long long)(secs * 1e6 + 0.5) : 0;
    unsigned long long whole = us / 1000;
    char digits[24];
    size_t i = sizeof(digits), o = 0;
    do {
        digits[--i] = (char)('0' + whole % 10);
        whole /= 10;
    } while (whole != 0);
    while (i < sizeof(digits)) {
        out[o++] = digits[i++];
    }
    out[o++] = '.';
    out[o++] = (char)('0' + us % 1000 / 100);
    out[o++] = (char)('0' + us % 100 / 10);
    out[o++] = (char)('0' + us % 10);
    out[o] = '\0';
}

/* Count and log one finished request. The series come from f->stats, a
 * table resolved once, when there is one; the access line's duration is
 * formatted by hand (milliseconds with three decimals). */
static void routes_observe(front *f, route_id route, const char *method, const char *path,
                           int status, double started)
{
    double secs = ws_now_seconds() - started;
    const char *name = route_stats_name(route);
    if (f->stats != NULL) {
        route_stats_observe(f->stats, route, method, status, secs);
    } else {
        char labels[160];
        snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\",status=\"%d\"", name,
                 route_stats_method(method), status);
        ws_counter_inc(ws_counter_get(f->metrics, "webshop_http_requests_total",
                                      "HTTP requests by route, method and status",
                                      labels));
        snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\"", name,
                 route_stats_method(method));
        ws_histogram_observe(
            ws_histogram_get(f->metrics, "webshop_http_request_duration_seconds",
                             "HTTP request latency by route and method", labels, NULL, 0),
            secs);
    }
    if (f->access_log) {
        char ms[32];
        routes_format_ms(ms, secs);
        ws_log_buffered(WS_LOG_INFO, "http_request",
                        "method=%s path=%s route=%s status=%d ms=%s", method, path, name,
                        status, ms);
    }
}

/* Answer an RPC failure with the status that fits and a JSON error. */
static int routes_reply_rpc_error(ws_http_req *req, ws_rpc_code code, const char *what,
                                  const char *msg)
{
    int status = routes_http_status(code);
    const char *extra = status == 503 ? RETRY_AFTER : NULL;
    return ws_http_reply_error(req, status, ws_rpc_code_name(code), extra, "%s: %s", what,
                               msg[0] != '\0' ? msg : ws_rpc_code_name(code));
}

int routes_reply_json(ws_http_req *req, int status, const ProtobufCMessage *m,
                      unsigned flags, const char *extra)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    if (ws_json_encode(m, flags, &b) != WS_OK) {
        ws_buf_fini(&b);
        return ws_http_reply_error(req, 500, "INTERNAL", NULL,
                                   "cannot encode the response");
    }
    int rc = ws_http_reply(req, status, "application/json", b.data, b.len, extra);
    ws_buf_fini(&b);
    return rc;
}

/* ---- GET /inventory ---------------------------------------------------- */

/* Fetch the catalog over RPC and render the JSON array the API answers. */
static ws_rpc_code routes_catalog_fetch(front *f, ws_buf *out, char *msg, size_t msg_len)
{
    Webshop__V1__GetCatalogRequest req = WEBSHOP__V1__GET_CATALOG_REQUEST__INIT;
    Webshop__V1__GetCatalogResponse *resp = NULL;
    ws_rpc_code code = webshop_v1_inventory_get_catalog_ex(
        f->inventory, &req, &resp, f->rpc_deadline_ms, msg, msg_len);
    if (code != WS_RPC_OK) {
        return code;
    }
    ws_err err = ws_buf_putc(out, '[');
    for (size_t i = 0; i < resp->n_products && err == WS_OK; i++) {
        if (i > 0) {
            err = ws_buf_putc(out, ',');
        }
        if (err == WS_OK) {
            err = ws_json_encode(&resp->products[i]->base, WS_JSON_DEFAULTS, out);
        }
    }
    if (err == WS_OK) {
        err = ws_buf_putc(out, ']');
    }
    webshop__v1__get_catalog_response__free_unpacked(resp, NULL);
    if (err != WS_OK) {
        snprintf(msg, msg_len, "cannot render the catalog");
        return WS_RPC_INTERNAL;
    }
    return WS_RPC_OK;
}

static int routes_inventory(ws_http_req *req, const ws_http_route_match *m, void *ctx)
{
    (void)m;
    front *f = ctx;
    double t0 = ws_now_seconds();
    int status;
    /* The cache is only as fresh as the stock-changed subscription: not
     * while it is down, and not across a reconnect (events in the gap). */
    uint64_t epoch = ws_bus_ready_epoch(f->bus);
    catalog_snapshot *s = catalog_cache_get(f->catalog, epoch);
    if (s == NULL) {
        uint64_t gen = catalog_cache_generation(f->catalog);
        char msg[WS_RPC_MSG_LEN] = "";
        ws_buf b;
        ws_buf_init(&b, 0);
        ws_rpc_code code = routes_catalog_fetch(f, &b, msg, sizeof(msg));
        if (code != WS_RPC_OK) {
            ws_buf_fini(&b);
            status = routes_reply_rpc_error(req, code, "inventory", msg);
            goto done;
        }
        size_t len = 0;
        char *body = ws_buf_steal(&b, &len);
        s = body != NULL ? catalog_cache_put(f->catalog, gen, epoch, body, len) : NULL;
        if (s == NULL) {
            status = ws_http_reply_error(req, 500, "INTERNAL", NULL, "out of memory");
            goto done;
        }
    }
    char extra[64];
    snprintf(extra, sizeof(extra), "ETag: %s\r\n", s->etag);
    const char *inm = ws_http_header(req, "If-None-Match");
    if (inm != NULL && (strstr(inm, s->etag) != NULL || strcmp(inm, "*") == 0)) {
        status = ws_http_reply(req, 304, NULL, NULL, 0, extra);
    } else {
        /* HEAD: the same head, Content-Length included; the body is left
         * out by ws_http_reply. */
        status = ws_http_reply(req, 200, "application/json", s->body, s->len, extra);
    }
    catalog_snapshot_release(f->catalog, s);
done:
    routes_observe(f, ROUTE_INVENTORY, ws_http_method(req), ws_http_path(req), status,
                   t0);
    return status;
}

/* ---- /order and /order/{id} --------------------------------------------- */

static int routes_get_order(ws_http_req *req, front *f, const char *id)
{
    Webshop__V1__GetOrderRequest in = WEBSHOP__V1__GET_ORDER_REQUEST__INIT;
    Webshop__V1__GetOrderResponse *resp = NULL;
    char msg[WS_RPC_MSG_LEN] = "";
    in.id = (char *)id;
    ws_rpc_code code = webshop_v1_orders_get_order_ex(
        f->orders, &in, &resp, f->rpc_deadline_ms, msg, sizeof(msg));
    if (code != WS_RPC_OK) {
        if (code == WS_RPC_NOT_FOUND) {
            return ws_http_reply_error(req, 404, "NOT_FOUND", NULL, "order %s not found",
                                       id);
        }
        return routes_reply_rpc_error(req, code, "orders", msg);
    }
    int rc;
    if (resp->order == NULL) {
        rc = ws_http_reply_error(req, 502, "INTERNAL", NULL, "orders: empty answer");
    } else {
        rc = routes_reply_json(req, 200, &resp->order->base, WS_JSON_DEFAULTS, NULL);
    }
    webshop__v1__get_order_response__free_unpacked(resp, NULL);
    return rc;
}

static int routes_place_order(ws_http_req *req, const ws_http_route_match *m, void *ctx)
{
    (void)m;
    front *f = ctx;
    double t0 = ws_now_seconds();
    int status = order_write_place(req, f);
    routes_observe(f, ROUTE_ORDER, ws_http_method(req), ws_http_path(req), status, t0);
    return status;
}

/* GET and DELETE /order/{id}: the id bound from the path (the same
 * request message for both: {id}), normalized to a lower-case UUID. */
static int routes_order_id(ws_http_req *req, const ws_http_route_match *m, front *f,
                           bool cancel)
{
    double t0 = ws_now_seconds();
    int status;
    ProtobufCMessage *msg = NULL;
    char err[128] = "";
    ws_err e = ws_http_route_request(m, &msg, err, sizeof(err));
    if (e != WS_OK) {
        status = e == WS_EPARSE
                     ? ws_http_reply_error(req, 400, "INVALID_ARGUMENT", NULL, "%s", err)
                     : ws_http_reply_error(req, 500, "INTERNAL", NULL, "out of memory");
        goto done;
    }
    /* GetOrderRequest and CancelOrderRequest: one string field, id. */
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field_by_name(msg->descriptor, "id");
    const char *id = fd != NULL ? *(const char **)((const char *)msg + fd->offset) : "";
    char lower[ORDER_ID_LEN];
    if (!ws_uuid_normalize(id, lower)) {
        status = ws_http_reply_error(req, 400, "INVALID_ARGUMENT", NULL,
                                     "id: expected a UUID like "
                                     "123e4567-e89b-12d3-a456-426614174000");
    } else {
        status =
            cancel ? order_write_cancel(req, f, lower) : routes_get_order(req, f, lower);
    }
    protobuf_c_message_free_unpacked(msg, NULL);
done:
    routes_observe(f, ROUTE_ORDER_ID, ws_http_method(req), ws_http_path(req), status, t0);
    return status;
}

static int routes_get_order_id(ws_http_req *req, const ws_http_route_match *m, void *ctx)
{
    return routes_order_id(req, m, ctx, false);
}

static int routes_cancel_order(ws_http_req *req, const ws_http_route_match *m, void *ctx)
{
    return routes_order_id(req, m, ctx, true);
}

static int routes_watch_events(ws_http_req *req, const ws_http_route_match *m, void *ctx)
{
    (void)m;
    return order_events_serve(req, ctx);
}

/* ---- health, metrics, OpenAPI ------------------------------------------- */

static int routes_healthz(ws_http_req *req, const ws_http_route_match *m, void *ctx)
{
    (void)m;
    (void)ctx;
    static const char ok[] = "{\"status\":\"ok\"}";
    return ws_http_reply(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
}

/* Ask a backend's reflection service: cheap, touches no database. */
static void routes_ready_check(ws_rpc_client *c, uint32_t deadline_ms,
                               Webshop__V1__HealthCheck *check, const char *name,
                               bool *ok)
{
    Webshop__V1__ListServicesRequest req = WEBSHOP__V1__LIST_SERVICES_REQUEST__INIT;
    Webshop__V1__ListServicesResponse *resp = NULL;
    ws_rpc_code code = webshop_v1_reflection_list_services(c, &req, &resp, deadline_ms);
    check->name = (char *)name;
    if (code == WS_RPC_OK) {
        webshop__v1__list_services_response__free_unpacked(resp, NULL);
        check->status = "ok";
    } else {
        check->status = (char *)ws_rpc_code_name(code);
        *ok = false;
    }
}

static int routes_readyz(ws_http_req *req, const ws_http_route_match *m, void *ctx)
{
    (void)m;
    front *f = ctx;
    bool ok = true;
    Webshop__V1__HealthCheck checks[3];
    Webshop__V1__HealthCheck *ptrs[3];
    for (int i = 0; i < 3; i++) {
        webshop__v1__health_check__init(&checks[i]);
        ptrs[i] = &checks[i];
    }
    /* Ready means: this front can take an order now. A POST or DELETE
     * /order needs the broker only (the answer waits for the order service,
     * but falls back to 202 queued without it), so the broker decides the
     * status code; the backends' RPC serves reads only, and while one is
     * down the front is "degraded" (200: reads answer 503 for what needs
     * it, writes still go through). A load balancer then keeps a front
     * that can accept orders in rotation. */
    checks[0].name = "broker";
    checks[0].status = ws_bus_connected(f->bus) ? "ok" : "UNAVAILABLE";
    ok = ws_bus_connected(f->bus);
    bool reads = true;
    uint32_t deadline = f->rpc_deadline_ms < 1000 ? f->rpc_deadline_ms : 1000;
    routes_ready_check(f->inventory, deadline, &checks[1], "inventory", &reads);
    routes_ready_check(f->orders, deadline, &checks[2], "orders", &reads);
    Webshop__V1__HealthResponse resp = WEBSHOP__V1__HEALTH_RESPONSE__INIT;
    resp.status = !ok ? "unavailable" : reads ? "ok" : "degraded";
    resp.n_checks = 3;
    resp.checks = ptrs;
    return routes_reply_json(req, ok ? 200 : 503, &resp.base, 0, ok ? NULL : RETRY_AFTER);
}

static int routes_metrics(ws_http_req *req, void *ctx)
{
    front *f = ctx;
    return ws_http_reply_metrics(req, f->metrics);
}

static int routes_openapi(ws_http_req *req, void *ctx)
{
    front *f = ctx;
    if (f->openapi == NULL) {
        return ws_http_reply_error(req, 404, "NOT_FOUND", NULL,
                                   "no OpenAPI document built");
    }
    return ws_http_reply(req, 200, "application/json", f->openapi, f->openapi_len, NULL);
}

/* Every request no other route took: front.proto's routes, or 404. */
static int routes_api(ws_http_req *req, void *ctx)
{
    static const webshop_v1_front_routes api = {
        .get_catalog = routes_inventory,
        .get_order = routes_get_order_id,
        .place_order = routes_place_order,
        .cancel_order = routes_cancel_order,
        .watch_events = routes_watch_events,
        .healthz = routes_healthz,
        .readyz = routes_readyz,
    };
    front *f = ctx;
    int status = webshop_v1_front_routes_serve(req, &api, f);
    if (status < 0) {
        double t0 = ws_now_seconds();
        const char *path = ws_http_path(req);
        status =
            ws_http_reply_error(req, 404, "NOT_FOUND", NULL, "no route for %s", path);
        routes_observe(f, ROUTE_OTHER, ws_http_method(req), path, status, t0);
    }
    return status;
}

void routes_install(ws_http *h, front *f)
{
    /* The API's routes come from front.proto (routes_api, last: a prefix
     * route that takes every path). Before it, what front.proto does not
     * describe: exact, case-sensitive paths with their methods, answered
     * 405 with Allow by lib/http for any other; the storefront's page is
     * "/" exactly, its assets under /static/; the Connect endpoint takes
     * the RPC services' paths (connect.h). */
    ws_http_route(h, "/metrics$", "GET", routes_metrics, f);
    ws_http_route(h, "/openapi.json$", "GET", routes_openapi, f);
    ws_http_route(h, "/static/", "GET", static_files_serve, f);
    ws_http_route(h, "/$", "GET", static_files_serve, f);
    connect_install(h, f);
    ws_http_route(h, "/", NULL, routes_api, f);
}
