/*
 * civetweb wrapper; see http.h. civetweb parses requests and moves bytes;
 * everything else is ours: begin_request serves every request (checks,
 * routing, 405, the handler) so civetweb's own routing, URL decoding and
 * error pages are never used, and http_error turns the errors civetweb
 * still raises (unparsable request line, header block too large, bad
 * version) into our JSON answers.
 */
#include "http_int.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <civetweb.h>

#include "log.h"
#include "tls_platform.h"

#define HTTP_STR_(x) #x
#define HTTP_STR(x)  HTTP_STR_(x)

/* ---- requests ---------------------------------------------------------- */

/* True when method is in allow (a ", " list); GET allows HEAD. */
static bool http_method_allowed(const char *allow, const char *method, bool head)
{
    size_t n = strlen(method);
    for (const char *p = allow; *p != '\0';) {
        size_t len = strcspn(p, ", ");
        if ((len == n && memcmp(p, method, n) == 0) ||
            (head && len == 3 && memcmp(p, "GET", 3) == 0)) {
            return true;
        }
        p += len;
        p += strspn(p, ", ");
    }
    return false;
}

static const http_route *http_route_find(ws_http *h, const char *path)
{
    int n = atomic_load_explicit(&h->n_routes, memory_order_acquire);
    for (int i = 0; i < n; i++) {
        const http_route *rt = &h->routes[i];
        size_t len = strlen(rt->uri);
        if (rt->exact ? strcmp(path, rt->uri) == 0 : strncmp(path, rt->uri, len) == 0) {
            return rt;
        }
    }
    return NULL;
}

void ws__http_req_begin(ws_http_req *r, struct mg_connection *conn)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    memset(r, 0, offsetof(ws_http_req, path));
    r->path[0] = '\0';
    r->conn = conn;
    r->h = mg_get_user_data(mg_get_context(conn));
    r->slot = mg_get_thread_pointer(conn);
    r->method = ri != NULL && ri->request_method != NULL ? ri->request_method : "";
    r->head = strcmp(r->method, "HEAD") == 0;
    r->query = ri != NULL ? ri->query_string : NULL;
    r->remote_addr = ri != NULL ? ri->remote_addr : "";
    r->content_length = ri != NULL ? ri->content_length : -1;
    /* The caller's trace, or a new one; our span is a child of it. */
    const char *tp = ri != NULL ? mg_get_header(conn, WS_TRACEPARENT_NAME) : NULL;
    ws_trace_child(ws_trace_adopt(tp, tp != NULL ? strlen(tp) : 0), &r->trace);
    ws_trace_set_current(&r->trace);
    if (r->slot != NULL) {
        r->slot->req = r;
    }
}

void ws__http_req_end(ws_http_req *r)
{
    if (r->slot != NULL) {
        r->slot->req = NULL;
    }
    ws_trace_set_current(NULL);
}

/* Check r (begun): 0, or the status of the error answer to send (msg,
 * code say why). */
static int http_req_check(ws_http *h, ws_http_req *r, const char **code, char *msg,
                          size_t msg_len)
{
    const struct mg_request_info *ri = mg_get_request_info(r->conn);
    r->chunked = mg_get_header(r->conn, "Transfer-Encoding") != NULL;
    r->body_done = !r->chunked && r->content_length <= 0;
    int st = ws__http_check_framing(ri, h->max_headers, code, msg, msg_len);
    if (st != 0) {
        r->close = true; /* framing we refuse: what follows is not a request */
        return st;
    }
    *code = "INVALID_ARGUMENT";
    st = ws__http_decode_path(ri->local_uri_raw, r->path, sizeof(r->path), msg, msg_len);
    if (st == 414) {
        *code = "URI_TOO_LONG";
    }
    return st;
}

/* Serve one parsed request; returns the status sent. */
static int http_dispatch(ws_http *h, ws_http_req *r)
{
    if (!atomic_load(&h->serving)) {
        /* civetweb accepts connections from mg_start on, but routes are
         * installed after: until ws_http_serve, answer this ourselves. */
        return ws_http_reply_error(r, 503, "UNAVAILABLE", "Retry-After: 1\r\n",
                                   "starting: try again in a moment");
    }
    const http_route *rt = http_route_find(h, r->path);
    if (rt == NULL) {
        return ws_http_reply_error(r, 404, "NOT_FOUND", NULL, "no route for %s", r->path);
    }
    if (rt->allow[0] != '\0' && !http_method_allowed(rt->allow, r->method, r->head)) {
        char allow[80];
        bool get = http_method_allowed(rt->allow, "GET", false);
        snprintf(allow, sizeof(allow), "%s%s", rt->allow,
                 get && !http_method_allowed(rt->allow, "HEAD", false) ? ", HEAD" : "");
        return ws_http_reply_method_not_allowed(r, allow);
    }
    int status = rt->fn(r, rt->ctx);
    return status >= 100 && status < 1000 ? status : 500;
}

/* The answer to a connection over its address's cap (http_guard.c). */
static int http_refuse(ws_http_req *r)
{
    ws_http_close_after(r);
    return ws_http_reply_error(r, 503, "TOO_MANY_CONNECTIONS", "Retry-After: 1\r\n",
                               "too many connections from this address at once (at "
                               "most %d)",
                               r->h->max_conns_per_addr);
}

/* civetweb: a request line and headers were read. Serve it; returning a
 * status tells civetweb it was answered. */
static int http_begin_request(struct mg_connection *conn)
{
    ws_http_req req;
    ws__http_req_begin(&req, conn);
    ws__http_slot_set(req.slot, SLOT_HANDLER);
    const char *code = "INVALID_ARGUMENT";
    char msg[192];
    int status = 0;
    if (ws__http_slot_refused(req.slot)) {
        status = http_refuse(&req);
    } else if ((status = http_req_check(req.h, &req, &code, msg, sizeof(msg))) != 0) {
        status = ws_http_reply_error(&req, status, code, NULL, "%s", msg);
    } else {
        status = http_dispatch(req.h, &req);
    }
    ws__http_req_end(&req);
    return status;
}

/* civetweb: the answer is out; the connection waits for its next request. */
static void http_end_request(const struct mg_connection *conn, int status)
{
    (void)status;
    ws__http_slot_set(mg_get_thread_pointer(conn), SLOT_WAITING);
}

/* civetweb: it would send one of its own error pages. Ours instead. */
static int http_error(struct mg_connection *conn, int status, const char *errmsg)
{
    if (ws__http_slot_refused(mg_get_thread_pointer(conn))) {
        /* Over the cap and cut while its request came: the same answer. */
        ws_http_req r;
        ws__http_req_begin(&r, conn);
        r.body_done = true;
        (void)http_refuse(&r);
        ws__http_req_end(&r);
        return 0;
    }
    ws__http_reply_civetweb_error(conn, status, errmsg);
    return 0; /* handled */
}

static void *http_init_thread(const struct mg_context *ctx, int thread_type)
{
    if (thread_type != 1) {
        return NULL; /* the master and the timer thread serve no connection */
    }
    return ws__http_slot_new(mg_get_user_data(ctx));
}

static void http_exit_thread(const struct mg_context *ctx, int thread_type, void *ptr)
{
    (void)ctx;
    if (thread_type == 1) {
        ws__http_slot_free(ptr);
    }
}

static int http_init_connection(const struct mg_connection *conn, void **conn_data)
{
    *conn_data = NULL;
    ws__http_slot_connect(mg_get_thread_pointer(conn), conn);
    return 0;
}

static void http_connection_close(const struct mg_connection *conn)
{
    ws__http_slot_disconnect(mg_get_thread_pointer(conn));
}

static int http_log_message(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    ws_log_warn("http_server", "msg=%s", message);
    return 1; /* handled: civetweb writes nothing itself */
}

/* ---- the server -------------------------------------------------------- */

/* TLS 1.2: forward secrecy (ECDHE) and AEAD only (AES-GCM, ChaCha20-Poly1305),
 * the server's order; no static RSA, no CBC, no SHA-1 MACs, no DHE. civetweb
 * hands this to SSL_CTX_set_cipher_list, which does not touch TLS 1.3's
 * suites (all AEAD): those stay OpenSSL's defaults. */
static const char http_tls_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* Our options with their defaults applied, into h. */
static void http_opts_apply(ws_http *h, const ws_http_opts *o)
{
    h->threads = o->threads > 0 ? o->threads : 32;
    h->request_timeout_ms = o->request_timeout_ms > 0 ? o->request_timeout_ms : 10000;
    h->keep_alive_ms = o->keep_alive_ms > 0 ? o->keep_alive_ms : 5000;
    h->body_timeout_ms = o->body_timeout_ms > 0 ? o->body_timeout_ms : 10000;
    h->reserve = o->reserve > 0 ? o->reserve : (h->threads / 8 > 0 ? h->threads / 8 : 1);
    h->busy_grace_ms = o->busy_grace_ms > 0 ? o->busy_grace_ms : 100;
    h->max_headers = o->max_headers > 0 && o->max_headers <= WS_HTTP_MAX_HEADERS
                         ? o->max_headers
                         : WS_HTTP_MAX_HEADERS;
    h->max_conns_per_addr = o->max_conns_per_addr > 0 ? o->max_conns_per_addr : 0;
    h->access_log = o->access_log;
    h->tls = o->tls_cert != NULL && o->tls_cert[0] != '\0';
    if (h->tls && o->hsts_max_age_s > 0) {
        snprintf(h->hsts, sizeof(h->hsts), "Strict-Transport-Security: max-age=%ld\r\n",
                 o->hsts_max_age_s);
    }
}

/* The civetweb option strings, kept alive until mg_start has read them. */
typedef struct http_cw_opts {
    char ports[300], threads[16], timeout[16], keepalive[16], queue[16];
    char pem_path[64];
    int pem_fd;
    const char *v[40];
} http_cw_opts;

/* Fill c->v for h; WS_EINVAL when the TLS files are not usable. */
static ws_err http_cw_opts_build(const ws_http *h, const ws_http_opts *o, http_cw_opts *c)
{
    const char *host = o->host != NULL ? o->host : "127.0.0.1";
    snprintf(c->ports, sizeof(c->ports),
             strchr(host, ':') != NULL ? "[%s]:%d%s" : "%s:%d%s", host, o->port,
             h->tls ? "s" : "");
    snprintf(c->threads, sizeof(c->threads), "%d", h->threads);
    snprintf(c->timeout, sizeof(c->timeout), "%d", h->request_timeout_ms);
    snprintf(c->keepalive, sizeof(c->keepalive), "%d", h->keep_alive_ms);
    snprintf(c->queue, sizeof(c->queue), "%d", h->threads < 64 ? 64 : h->threads);
    c->pem_fd = -1;
    const char *pairs[][2] = {
        {"listening_ports", c->ports},
        {"num_threads", c->threads},
        {"request_timeout_ms", c->timeout},
        {"enable_keep_alive", "yes"},
        {"keep_alive_timeout_ms", c->keepalive},
        /* Request line and header block cap: more is answered 431. */
        {"max_request_size", HTTP_STR(HTTP_MAX_REQUEST_HEAD)},
        {"enable_directory_listing", "no"},
        /* Room for connections waiting for a worker, accepted (civetweb's
         * queue) and not yet (the kernel's): past both, a client's
         * handshake is dropped and retried after 1, 2, 4... s, which the
         * guard cannot shorten. */
        {"listen_backlog", "1024"},
        {"connection_queue", c->queue},
        /* The raw path reaches begin_request, which decodes it strictly
         * (civetweb's decoding turns %00 into a NUL that cuts the path). */
        {"decode_url", "no"},
        /* Absolute-form targets (GET http://host:port/x) for our port are
         * served, whatever the host; civetweb otherwise closes silently. */
        {"enable_auth_domain_check", "no"},
        /* Nagle off on accepted connections (civetweb's default is on): a
         * reply written in two pieces, or an SSE event after a quiet spell,
         * would otherwise wait for the client's delayed ACK (~40 ms). */
        {"tcp_nodelay", "1"},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        c->v[n++] = pairs[i][0];
        c->v[n++] = pairs[i][1];
    }
    if (h->tls) {
        if (!ws_tls_platform_load()) {
            return WS_EINVAL;
        }
        if (o->tls_key != NULL && o->tls_key[0] != '\0') {
            c->pem_fd = ws_tls_platform_pem_join(o->tls_cert, o->tls_key, c->pem_path,
                                                 sizeof(c->pem_path));
            if (c->pem_fd < 0) {
                return WS_EINVAL;
            }
        }
        c->v[n++] = "ssl_certificate";
        c->v[n++] = c->pem_fd >= 0 ? c->pem_path : o->tls_cert;
        /* Intermediate certificates after the leaf in the cert file. */
        c->v[n++] = "ssl_certificate_chain";
        c->v[n++] = o->tls_cert;
        c->v[n++] = "ssl_protocol_version";
        c->v[n++] = "4"; /* TLS 1.2 and newer */
        c->v[n++] = "ssl_cipher_list";
        c->v[n++] = http_tls_ciphers;
    }
    c->v[n] = NULL;
    return WS_OK;
}

static void http_callbacks(struct mg_callbacks *cb)
{
    memset(cb, 0, sizeof(*cb));
    cb->log_message = http_log_message;
    cb->begin_request = http_begin_request;
    cb->end_request = http_end_request;
    cb->http_error = http_error;
    cb->init_thread = http_init_thread;
    cb->exit_thread = http_exit_thread;
    cb->init_connection = http_init_connection;
    cb->connection_close = http_connection_close;
}

ws_err ws_http_open(const ws_http_opts *opts, ws_http **out)
{
    ws_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        return WS_ENOMEM;
    }
    http_opts_apply(h, opts);
    atomic_init(&h->serving, false);
    atomic_init(&h->n_routes, 0);
    http_cw_opts c;
    ws_err err = http_cw_opts_build(h, opts, &c);
    if (err == WS_OK) {
        err = ws__http_guard_start(h);
    }
    if (err != WS_OK) {
        if (c.pem_fd >= 0) {
            close(c.pem_fd);
        }
        free(h);
        return err;
    }
    struct mg_callbacks cb;
    http_callbacks(&cb);
    mg_init_library(h->tls ? MG_FEATURES_TLS : 0);
    h->ctx = mg_start(&cb, h, c.v);
    if (c.pem_fd >= 0) {
        close(c.pem_fd); /* read by mg_start */
    }
    if (h->ctx == NULL) {
        ws_log_error("http_start_failed", "listen=%s", c.ports);
        mg_exit_library();
        ws__http_guard_stop(h);
        bool tls = h->tls;
        free(h);
        return tls ? WS_EINVAL : WS_EUNAVAIL;
    }
    struct mg_server_port sp[4];
    int np = mg_get_server_ports(h->ctx, 4, sp);
    h->port = np > 0 ? sp[0].port : opts->port;
    /* The one line that says where the server is: tests and launchers that
     * asked for port 0 read the port from it. */
    const char *host = opts->host != NULL ? opts->host : "127.0.0.1";
    snprintf(h->host, sizeof h->host, "%s", host);
    ws_log_info("http_listening",
                strchr(host, ':') != NULL ? "url=%s://[%s]:%d" : "url=%s://%s:%d",
                h->tls ? "https" : "http", host, h->port);
    *out = h;
    return WS_OK;
}

void ws_http_serve(ws_http *h)
{
    atomic_store(&h->serving, true);
}

void ws_http_route(ws_http *h, const char *uri, const char *allow, ws_http_handler_fn fn,
                   void *ctx)
{
    int n = atomic_load(&h->n_routes);
    if (n >= HTTP_MAX_ROUTES) {
        ws_log_error("http_route_dropped", "uri=%s reason=too_many_routes", uri);
        return;
    }
    http_route *rt = &h->routes[n];
    size_t len = strlen(uri);
    rt->exact = len > 0 && uri[len - 1] == '$';
    snprintf(rt->uri, sizeof(rt->uri), "%.*s", (int)(rt->exact ? len - 1 : len), uri);
    snprintf(rt->allow, sizeof(rt->allow), "%s", allow != NULL ? allow : "");
    rt->fn = fn;
    rt->ctx = ctx;
    atomic_store_explicit(&h->n_routes, n + 1, memory_order_release);
}

int ws_http_port(const ws_http *h)
{
    return h->port;
}

void ws_http_close(ws_http *h)
{
    if (h == NULL) {
        return;
    }
    ws__http_stop(h->ctx, h->host, h->port); /* the workers' slots are freed by exit_thread */
    mg_exit_library();
    ws__http_guard_stop(h);
    free(h);
}

/* ---- request accessors -------------------------------------------------- */

const char *ws_http_method(const ws_http_req *req)
{
    return req->method;
}

bool ws_http_is_get(const ws_http_req *req)
{
    return req->head || strcmp(req->method, "GET") == 0;
}

bool ws_http_is_head(const ws_http_req *req)
{
    return req->head;
}

const char *ws_http_path(const ws_http_req *req)
{
    return req->path;
}

const char *ws_http_query(const ws_http_req *req)
{
    return req->query;
}

int ws_http_query_var(const ws_http_req *req, const char *name, char *out, size_t out_len)
{
    return ws__http_query_var(req->query, name, out, out_len);
}

const char *ws_http_header(const ws_http_req *req, const char *name)
{
    return mg_get_header(req->conn, name);
}

const char *ws_http_remote_addr(const ws_http_req *req)
{
    return req->remote_addr != NULL ? req->remote_addr : "";
}

const ws_trace *ws_http_trace(const ws_http_req *req)
{
    return &req->trace;
}

void ws_http_close_after(ws_http_req *req)
{
    req->close = true;
    mg_disable_connection_keep_alive(req->conn);
}

/* ---- /metrics, /healthz, /readyz for backends --------------------------- */

static int http_metrics_handler(ws_http_req *req, void *ctx)
{
    ws_http *h = ctx;
    return ws_http_reply_metrics(req, h->metrics);
}

static int http_healthz_handler(ws_http_req *req, void *ctx)
{
    (void)ctx;
    static const char ok[] = "{\"status\":\"ok\"}";
    return ws_http_reply(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
}

static int http_readyz_handler(ws_http_req *req, void *ctx)
{
    ws_http *h = ctx;
    if (h->ready != NULL && !h->ready(h->ready_ctx)) {
        static const char no[] = "{\"status\":\"unavailable\"}";
        return ws_http_reply(req, 503, "application/json", no, sizeof(no) - 1,
                             "Retry-After: 1\r\n");
    }
    static const char ok[] = "{\"status\":\"ok\"}";
    return ws_http_reply(req, 200, "application/json", ok, sizeof(ok) - 1, NULL);
}

void ws_http_route_basics(ws_http *h, ws_metrics *m)
{
    h->metrics = m != NULL ? m : ws_metrics_default();
    ws_http_route(h, "/metrics$", "GET", http_metrics_handler, h);
    ws_http_route(h, "/healthz$", "GET", http_healthz_handler, h);
    ws_http_route(h, "/readyz$", "GET", http_readyz_handler, h);
}

void ws_http_set_ready(ws_http *h, bool (*ready)(void *ctx), void *ctx)
{
    h->ready_ctx = ctx;
    h->ready = ready;
}
