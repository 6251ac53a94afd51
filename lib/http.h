/*
 * A small HTTP server on civetweb, shared by the front (its whole API) and
 * the backends (/metrics and /healthz). It owns the civetweb context, maps
 * our options onto civetweb's (threads, timeouts, keep-alive, TLS) and is
 * the only place that calls civetweb: a handler gets the request as an
 * opaque ws_http_req, reads it through the ws_http_* accessors below and
 * answers with the reply helpers, which always set Content-Length so
 * keep-alive works. No civetweb type appears in this header.
 *
 * Everything a hostile client can send is refused here, before a handler
 * runs, with a JSON error written by us (never civetweb's text/plain page,
 * never a byte of the request echoed into a status line or header):
 * framing (header count, Content-Length, Transfer-Encoding), the path
 * (percent-escapes, NUL, encoded '/', dot segments, UTF-8), the method
 * (405 with Allow), and time (deadlines for headers, body and idle
 * keep-alive; a reserve of free workers). See README "Security and limits".
 *
 * civetweb gives each connection its own worker thread for as long as the
 * connection lives: size `threads` to the connections you accept (DESIGN.md,
 * measured facts). Handlers run on those threads, one request per thread.
 *
 * Connections per address: with max_conns_per_addr set, a connection is
 * counted against its client address once a worker holds it (queued ones
 * hold none and are not counted). One over the cap is refused at once:
 * answered 503 {"code":"TOO_MANY_CONNECTIONS"} with Retry-After and
 * Connection: close when its request is there when the worker looks; an
 * idle or slow one has its read side shut by the guard within a tick
 * (25 ms): closed without a word, or the same 503 when part of a request
 * came. Why not earlier: civetweb 1.15 has no hook before accept; its
 * init_connection callback runs on the worker after accept (after the TLS
 * handshake), its return value is ignored, and mg_get_request_info is NULL
 * inside it (connection_type is set after it returns), so the address
 * cannot be read there; begin_request sees it only once the head arrived.
 *
 * Tracing (lib/trace.h): before any handler runs (and before any error
 * answer of ours), the request's traceparent header is adopted -- a
 * missing or invalid one starts a new trace -- and this server's span, a
 * child of it, is the worker thread's current trace until the answer is
 * out. Every answer, errors and streams included, carries
 *   traceparent: 00-<the same trace id>-<this server's span id>-<flags>
 */
#ifndef WS_HTTP_H
#define WS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "err.h"
#include "metrics.h"
#include "trace.h"

typedef struct ws_http ws_http;

/* One request being served, from the moment its head was read until its
 * handler returns; owned by lib/http (never free it, never keep it). */
typedef struct ws_http_req ws_http_req;

/* The most header fields a request may have: civetweb 1.15 keeps 64 and
 * drops the rest silently, so a request with 64 may have had more. */
#define WS_HTTP_MAX_HEADERS 63

/* The longest decoded path answered (longer: 414). */
#define WS_HTTP_PATH_MAX 2048

/* A default for ws_http_opts.max_conns_per_addr (the front's
 * --max-conns-per-addr): a quarter of the front's 64 workers. */
#define WS_HTTP_MAX_CONNS_PER_ADDR 16

typedef struct ws_http_opts {
    const char *host;       /* listen address; NULL = "127.0.0.1" */
    int port;               /* 0 = any free port (see ws_http_port) */
    int threads;            /* worker threads = concurrent connections; 0 = 32 */
    int request_timeout_ms; /* a new connection's request line and headers; 0 = 10000 */
    int keep_alive_ms;      /* idle between requests, next headers included; 0 = 5000 */
    int body_timeout_ms;    /* end of headers to the body's last byte; 0 = 10000 */
    int reserve;            /* workers kept free: with fewer free, connections
                               idle or sending their request for longer than
                               busy_grace_ms are cut; 0 = threads / 8 (at least 1) */
    int busy_grace_ms;      /* see reserve; 0 = 100 */
    int max_headers;        /* header fields per request, 1..WS_HTTP_MAX_HEADERS;
                               0 = WS_HTTP_MAX_HEADERS; more: 431 */
    int max_conns_per_addr; /* workers one client address may hold at once;
                               0 = no cap. 127.0.0.1 and ::1 (this machine's
                               tools, a local HAProxy) are never counted. See
                               "Connections per address" above */
    const char *tls_cert;   /* PEM certificate (chain); NULL = plain HTTP */
    const char *tls_key;    /* PEM private key; NULL = the key is in tls_cert */
    long hsts_max_age_s;    /* with TLS, every answer carries
                               Strict-Transport-Security: max-age=N; 0 = none */
    bool access_log;        /* one log line per request */
} ws_http_opts;

/* Handler for one route: return the HTTP status sent (for logs). */
typedef int (*ws_http_handler_fn)(ws_http_req *req, void *ctx);

/* Start serving. Routes can be added before or after. Once listening, one
 * line at info level names the address, with the port actually bound (the
 * one to read after asking for port 0):
 *   event=http_listening url=http://127.0.0.1:PORT     (https with TLS)
 * WS_EUNAVAIL when the port cannot be bound, WS_EINVAL on a bad option
 * (e.g. unreadable cert). */
ws_err ws_http_open(const ws_http_opts *opts, ws_http **out /* OUT */);

/* Start answering through the routes. From ws_http_open until this call
 * every request is answered 503 {"code":"UNAVAILABLE"} with Retry-After.
 * Call it once every route is installed. Any thread; idempotent. */
void ws_http_serve(ws_http *h);

/* Route requests for uri to fn. "/x$" matches the path "/x" exactly; "/x"
 * (no '$') every path that starts with "/x". Case-sensitive, on the
 * decoded path; the first route added that matches wins. allow lists the
 * methods the route takes ("GET", "GET, DELETE"; GET implies HEAD): any
 * other method is answered 405 with an Allow header before fn runs. NULL
 * allow: fn checks the method itself. At most 32 routes; call before
 * ws_http_serve. */
void ws_http_route(ws_http *h, const char *uri, const char *allow, ws_http_handler_fn fn,
                   void *ctx);

/* The bound port (useful with port 0). */
int ws_http_port(const ws_http *h);

/* Stop: waits for in-flight requests, closes connections, frees. h may be
 * NULL. */
void ws_http_close(ws_http *h);

/* ---- the request, inside a handler ------------------------------------ */

/* The method as sent ("GET", "HEAD", "POST", ...). */
const char *ws_http_method(const ws_http_req *req);

/* True for GET and HEAD: a handler serves HEAD as GET and the reply
 * helpers leave the body out (keeping its Content-Length). */
bool ws_http_is_get(const ws_http_req *req);

/* True for HEAD. */
bool ws_http_is_head(const ws_http_req *req);

/* The path, percent-decoded: starts with '/', valid UTF-8, no control
 * characters, no NUL, no '/' that was encoded, no "." or ".." segment. */
const char *ws_http_path(const ws_http_req *req);

/* The query string as sent (after '?', still encoded), or NULL. */
const char *ws_http_query(const ws_http_req *req);

/* The first value of query parameter name, decoded ('+' is a space) into
 * out (NUL-terminated). Returns its length; -1 when absent; -2 when it
 * does not fit in out_len; -3 when it is badly encoded (an invalid escape,
 * %00, a control character or not UTF-8). */
int ws_http_query_var(const ws_http_req *req, const char *name, char *out,
                      size_t out_len);

/* The value of a request header (the first, when sent more than once;
 * name is case-insensitive), or NULL. */
const char *ws_http_header(const ws_http_req *req, const char *name);

/* The peer's address as text ("127.0.0.1", "::1"); "" when unknown. */
const char *ws_http_remote_addr(const ws_http_req *req);

/* This server's span of the request (the traceparent its answer carries);
 * the worker thread's ws_trace_current() while the handler runs. */
const ws_trace *ws_http_trace(const ws_http_req *req);

/* Read the request body into out, at most max bytes, within the body
 * deadline (ws_http_opts.body_timeout_ms from the end of the headers).
 * WS_ETOOBIG when the declared or actual length exceeds max, WS_ETIMEDOUT
 * when the deadline passed (or the client was cut to keep workers free),
 * WS_EIO when the client stops sending. On any error the answer closes
 * the connection. */
ws_err ws_http_read_body(ws_http_req *req, size_t max, ws_buf *out);

/* The answer to this request closes the connection (Connection: close);
 * no further request is read from it. */
void ws_http_close_after(ws_http_req *req);

/* ---- answers ---------------------------------------------------------- */

/* Send a complete response. extra_headers are full lines
 * ("Location: /order/x\r\n"), may be NULL, and must hold no byte from the
 * request unchecked. Cache-Control: no-store unless extra_headers has a
 * Cache-Control. Returns status. */
int ws_http_reply(ws_http_req *req, int status, const char *content_type,
                  const void *body, size_t len, const char *extra_headers);

/* Send {"code": code, "message": formatted} with status. Bytes of the
 * message that are not valid UTF-8 are written as U+FFFD. */
int ws_http_reply_error(ws_http_req *req, int status, const char *code,
                        const char *extra_headers, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* 405 {"code":"METHOD_NOT_ALLOWED"} with "Allow: allow". */
int ws_http_reply_method_not_allowed(ws_http_req *req, const char *allow);

/* Start an answer whose body has no length (Server-Sent Events): the head
 * with Connection: close and no Content-Length. The caller then writes the
 * body with ws_http_write (nothing for HEAD). False when the client is
 * gone. */
bool ws_http_stream_start(ws_http_req *req, int status, const char *content_type,
                          const char *extra_headers);

/* Write len bytes of a streamed body; false when the client is gone. */
bool ws_http_write(ws_http_req *req, const void *data, size_t len);

/* True once the client has closed its side of the connection (or it
 * broke): a streaming handler polls this to free its worker at once. */
bool ws_http_peer_gone(ws_http_req *req);

/* Render the registry as Prometheus text and send it (200). */
int ws_http_reply_metrics(ws_http_req *req, ws_metrics *m);

/* Route /metrics, /healthz (200 {"status":"ok"}) and /readyz on h, for
 * backends. /readyz answers 200 while the check set with ws_http_set_ready
 * holds (always, if none), else 503 with Retry-After. */
void ws_http_route_basics(ws_http *h, ws_metrics *m);

/* The readiness check of /readyz: ready(ctx) on a civetweb worker thread;
 * it must be cheap and thread-safe. Call before traffic arrives. */
void ws_http_set_ready(ws_http *h, bool (*ready)(void *ctx), void *ctx);

#endif
