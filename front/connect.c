/*
 * The front's Connect endpoint; see connect.h. One handler for every
 * service: the request's path names the service and method, protobuf-c's
 * descriptors give the messages, the RPC client of the service makes the
 * call.
 */
#include "connect.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "log.h"
#include "webshop/v1/inventory.pb-c.h"
#include "webshop/v1/order.pb-c.h"

#define CONNECT_ACCEPT_POST "Accept-Post: application/json, application/proto\r\n"

/* The services served, and which RPC client of the front calls each. */
static const struct {
    const ProtobufCServiceDescriptor *svc;
    size_t client; /* offsetof(front, the ws_rpc_client *) */
} connect_services[] = {
    {&webshop__v1__inventory__descriptor, offsetof(front, inventory)},
    {&webshop__v1__orders__descriptor, offsetof(front, orders)},
};

#define CONNECT_N_SERVICES (sizeof(connect_services) / sizeof(connect_services[0]))

/* Connect's codes, by ws_rpc_code (gRPC's numbers), with their HTTP status. */
static const struct {
    const char *name;
    int status;
} connect_codes[] = {
    {"ok", 200},
    {"canceled", 499},
    {"unknown", 500},
    {"invalid_argument", 400},
    {"deadline_exceeded", 504},
    {"not_found", 404},
    {"already_exists", 409},
    {"permission_denied", 403},
    {"resource_exhausted", 429},
    {"failed_precondition", 400},
    {"aborted", 409},
    {"out_of_range", 400},
    {"unimplemented", 501},
    {"internal", 500},
    {"unavailable", 503},
    {"data_loss", 500},
    {"unauthenticated", 401},
};

const char *connect_code_name(ws_rpc_code code)
{
    size_t i = (size_t)code;
    return i < sizeof(connect_codes) / sizeof(connect_codes[0]) ? connect_codes[i].name
                                                                : "unknown";
}

int connect_http_status(ws_rpc_code code)
{
    size_t i = (size_t)code;
    return i < sizeof(connect_codes) / sizeof(connect_codes[0]) ? connect_codes[i].status
                                                                : 500;
}

/* A Connect error: its JSON body is lib/http's error body, whose "code"
 * carries Connect's name. */
#define connect_error(req, code, extra, ...)                                             \
    ws_http_reply_error((req), connect_http_status(code), connect_code_name(code),       \
                        (extra), __VA_ARGS__)

/* One Connect call being served. */
typedef struct connect_call {
    const ProtobufCMethodDescriptor *method;
    ws_rpc_client *client;
    char path[160]; /* "/webshop.v1.Inventory/GetCatalog" */
    bool json;      /* application/json; else application/proto */
    uint32_t deadline_ms;
} connect_call;

/* The service and method the path names; false when there is none. */
static bool connect_find(front *f, const char *path, connect_call *c)
{
    for (size_t i = 0; i < CONNECT_N_SERVICES; i++) {
        const ProtobufCServiceDescriptor *svc = connect_services[i].svc;
        size_t n = strlen(svc->name);
        if (path[0] != '/' || strncmp(path + 1, svc->name, n) != 0 ||
            path[1 + n] != '/') {
            continue;
        }
        const char *name = path + 2 + n;
        c->method = protobuf_c_service_descriptor_get_method_by_name(svc, name);
        if (c->method == NULL || strlen(path) >= sizeof(c->path)) {
            return false;
        }
        c->client = *(ws_rpc_client **)((char *)f + connect_services[i].client);
        snprintf(c->path, sizeof(c->path), "%s", path);
        return true;
    }
    return false;
}

/* application/json (charset utf-8 or none) or application/proto; false
 * for anything else. Media types are case-insensitive. */
static bool connect_content_type(const char *ct, bool *json)
{
    if (ct == NULL) {
        return false;
    }
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) {
        n--;
    }
    const char *params = ct + strcspn(ct, ";");
    if (n == 16 && strncasecmp(ct, "application/json", 16) == 0) {
        while (*params == ';' || *params == ' ' || *params == '\t') {
            params++;
        }
        *json = true;
        return *params == '\0' || strcasecmp(params, "charset=utf-8") == 0 ||
               strcasecmp(params, "charset=\"utf-8\"") == 0;
    }
    if (n == 17 && strncasecmp(ct, "application/proto", 17) == 0 && *params == '\0') {
        *json = false;
        return true;
    }
    return false;
}

/* Connect-Timeout-Ms: 1..10 ASCII digits. The deadline, capped; false when
 * the value is malformed. Without the header, the front's deadline. */
static bool connect_timeout(const char *v, uint32_t fallback, uint32_t *out)
{
    if (v == NULL) {
        *out = fallback;
        return true;
    }
    size_t n = strlen(v);
    if (n == 0 || n > 10 || strspn(v, "0123456789") != n) {
        return false;
    }
    unsigned long long ms = strtoull(v, NULL, 10);
    *out = ms > CONNECT_MAX_TIMEOUT_MS ? CONNECT_MAX_TIMEOUT_MS
           : ms == 0                   ? 1
                                       : (uint32_t)ms;
    return true;
}

/* Check the request's headers into c; 0, or the status of the error sent. */
static int connect_headers(ws_http_req *req, front *f, connect_call *c)
{
    const char *version = ws_http_header(req, "Connect-Protocol-Version");
    if (version != NULL && strcmp(version, "1") != 0) {
        return connect_error(req, WS_RPC_INVALID_ARGUMENT, NULL,
                             "Connect-Protocol-Version: only 1 is spoken here");
    }
    if (!connect_content_type(ws_http_header(req, "Content-Type"), &c->json)) {
        return ws_http_reply_error(req, 415, connect_code_name(WS_RPC_INVALID_ARGUMENT),
                                   CONNECT_ACCEPT_POST,
                                   "Content-Type: expected application/json or "
                                   "application/proto (unary Connect)");
    }
    const char *enc = ws_http_header(req, "Content-Encoding");
    if (enc != NULL && strcasecmp(enc, "identity") != 0) {
        return connect_error(req, WS_RPC_UNIMPLEMENTED, "Accept-Encoding: identity\r\n",
                             "Content-Encoding: only identity is accepted");
    }
    if (!connect_timeout(ws_http_header(req, "Connect-Timeout-Ms"), f->rpc_deadline_ms,
                         &c->deadline_ms)) {
        return connect_error(req, WS_RPC_INVALID_ARGUMENT, NULL,
                             "Connect-Timeout-Ms: expected 1 to 10 digits");
    }
    return 0;
}

/* Read and decode the request message; 0 with *out set, or the status of
 * the error sent. */
static int connect_read(ws_http_req *req, front *f, const connect_call *c,
                        ProtobufCMessage **out)
{
    const ProtobufCMessageDescriptor *in = c->method->input;
    ws_buf body;
    ws_buf_init(&body, 0);
    ws_err err = ws_http_read_body(req, f->max_body, &body);
    if (err != WS_OK) {
        ws_buf_fini(&body);
        if (err == WS_ETOOBIG) {
            return connect_error(req, WS_RPC_RESOURCE_EXHAUSTED, NULL,
                                 "body: larger than %zu bytes", f->max_body);
        }
        return connect_error(
            req, err == WS_ETIMEDOUT ? WS_RPC_DEADLINE_EXCEEDED : WS_RPC_INVALID_ARGUMENT,
            NULL, "body: %s", ws_strerror(err));
    }
    int status = 0;
    if (c->json) {
        ws_json_limits lim = {.max_bytes = f->max_body + 1};
        ws_json_error jerr = {""};
        /* An empty body is the empty message, as with application/proto. */
        const char *text = body.len > 0 ? (const char *)body.data : "{}";
        err = ws_json_decode(in, text, body.len > 0 ? body.len : 2, &lim, out, &jerr);
        if (err != WS_OK) {
            status = err == WS_ENOMEM
                         ? connect_error(req, WS_RPC_INTERNAL, NULL, "out of memory")
                         : connect_error(req, WS_RPC_INVALID_ARGUMENT, NULL, "body: %s",
                                         jerr.text);
        }
    } else {
        static const uint8_t empty[1] = {0};
        *out = protobuf_c_message_unpack(
            in, NULL, body.len, body.len > 0 ? (const uint8_t *)body.data : empty);
        if (*out == NULL) {
            status = connect_error(req, WS_RPC_INVALID_ARGUMENT, NULL,
                                   "body: not a valid %s in the protobuf binary encoding",
                                   in->name);
        }
    }
    ws_buf_fini(&body);
    return status;
}

/* Answer the response message in the request's encoding. */
static int connect_reply(ws_http_req *req, const connect_call *c,
                         const ProtobufCMessage *resp)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    ws_err err = WS_OK;
    if (c->json) {
        err = ws_json_encode(resp, WS_JSON_CAMEL, &b);
    } else {
        size_t n = protobuf_c_message_get_packed_size(resp);
        err = ws_buf_reserve(&b, n + 1);
        if (err == WS_OK) {
            b.len = protobuf_c_message_pack(resp, (uint8_t *)b.data);
        }
    }
    int status =
        err != WS_OK
            ? connect_error(req, WS_RPC_INTERNAL, NULL, "cannot encode the response")
            : ws_http_reply(req, 200, c->json ? "application/json" : "application/proto",
                            b.data, b.len, NULL);
    ws_buf_fini(&b);
    return status;
}

/* The call itself: headers, body, RPC, answer. */
static int connect_call_serve(ws_http_req *req, front *f, connect_call *c)
{
    int status = connect_headers(req, f, c);
    if (status != 0) {
        return status;
    }
    ProtobufCMessage *in = NULL;
    status = connect_read(req, f, c, &in);
    if (status != 0) {
        return status;
    }
    ProtobufCMessage *resp = NULL;
    char msg[WS_RPC_MSG_LEN] = "";
    ws_rpc_code code = ws_rpc_client_call(c->client, c->path, in, c->method->output,
                                          &resp, c->deadline_ms, msg, sizeof(msg));
    protobuf_c_message_free_unpacked(in, NULL);
    if (code != WS_RPC_OK) {
        const char *extra = code == WS_RPC_UNAVAILABLE ? "Retry-After: 1\r\n" : NULL;
        return connect_error(req, code, extra, "%s",
                             msg[0] != '\0' ? msg : ws_rpc_code_name(code));
    }
    status = connect_reply(req, c, resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    return status;
}

static int connect_serve(ws_http_req *req, void *ctx)
{
    front *f = ctx;
    double t0 = ws_now_seconds();
    const char *path = ws_http_path(req);
    connect_call c;
    memset(&c, 0, sizeof(c));
    int status;
    if (!connect_find(f, path, &c)) {
        status = ws_http_reply_error(req, 404, connect_code_name(WS_RPC_UNIMPLEMENTED),
                                     NULL, "no method %s", path);
    } else {
        status = connect_call_serve(req, f, &c);
    }
    char labels[64];
    snprintf(labels, sizeof(labels), "route=\"connect\",status=\"%d\"", status);
    ws_counter_inc(ws_counter_get(f->metrics, "webshop_http_requests_total",
                                  "HTTP requests by route and status", labels));
    if (f->access_log) {
        ws_log_buffered(WS_LOG_INFO, "http_request",
                        "method=%s path=%s route=connect status=%d ms=%.3f",
                        ws_http_method(req), path, status,
                        (ws_now_seconds() - t0) * 1000.0);
    }
    return status;
}

void connect_install(ws_http *h, front *f)
{
    for (size_t i = 0; i < CONNECT_N_SERVICES; i++) {
        char uri[128];
        snprintf(uri, sizeof(uri), "/%s/", connect_services[i].svc->name);
        ws_http_route(h, uri, "POST", connect_serve, f);
    }
}
