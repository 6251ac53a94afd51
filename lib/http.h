/*
 * A small HTTP server on civetweb, shared by the front (its whole API) and
 * the backends (/metrics and /healthz). It owns the civetweb context, maps
 * our options onto civetweb's (threads, request timeout, keep-alive, TLS),
 * and offers reply helpers that always set Content-Length so keep-alive
 * works. Handlers run on civetweb worker threads, one request per thread.
 *
 * civetweb gives each keep-alive connection its own worker thread: size
 * `threads` to the connections you accept (DESIGN.md, measured facts).
 */
#ifndef WS_HTTP_H
#define WS_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "err.h"
#include "metrics.h"

struct mg_connection;
typedef struct ws_http ws_http;

typedef struct ws_http_opts {
    const char *host;        /* listen address; NULL = "127.0.0.1" */
    int port;                /* 0 = any free port (see ws_http_port) */
    int threads;             /* worker threads = concurrent connections; 0 = 32 */
    int request_timeout_ms;  /* whole request incl. slow clients; 0 = 10000 */
    int keep_alive_ms;       /* idle keep-alive; 0 = 5000 */
    const char *tls_cert;    /* PEM certificate (chain); NULL = plain HTTP */
    const char *tls_key;     /* PEM private key; NULL = the key is in tls_cert */
    bool access_log;         /* one log line per request */
} ws_http_opts;

/* Handler for one URI prefix: return the HTTP status sent (for logs). */
typedef int (*ws_http_handler_fn)(struct mg_connection *conn, void *ctx);

/* Start serving. Routes can be added before or after. Once listening, one
 * line at info level names the address, with the port actually bound (the
 * one to read after asking for port 0):
 *   event=http_listening url=http://127.0.0.1:PORT     (https with TLS)
 * WS_EUNAVAIL when the port cannot be bound, WS_EINVAL on a bad option
 * (e.g. unreadable cert). */
ws_err ws_http_open(const ws_http_opts *opts, ws_http **out /* OUT */);

/* Start answering through the routes. From ws_http_open until this call
 * every request is answered 503 {"code":"UNAVAILABLE"} with Retry-After
 * (civetweb listens before routes can be added). Call it once every route
 * is installed. Any thread; idempotent. */
void ws_http_serve(ws_http *h);

/* Route every request whose URI starts with uri (civetweb's rules: "/order"
 * also matches "/order/..."; a trailing "$" makes it exact) to fn. */
void ws_http_route(ws_http *h, const char *uri, ws_http_handler_fn fn, void *ctx);

/* The bound port (useful with port 0). */
int ws_http_port(const ws_http *h);

/* Stop: waits for in-flight requests, closes connections, frees. h may be
 * NULL. */
void ws_http_close(ws_http *h);

/* Send a complete response. extra_headers are full lines
 * ("Location: /order/x\r\n"), may be NULL. Returns status. */
int ws_http_reply(struct mg_connection *conn, int status, const char *content_type,
                  const void *body, size_t len, const char *extra_headers);

/* Send {"code": code, "message": formatted} with status. */
int ws_http_reply_error(struct mg_connection *conn, int status, const char *code,
                        const char *extra_headers, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Read the request body into out, at most max bytes. WS_ETOOBIG when the
 * declared or actual length exceeds max, WS_EIO when the client stops
 * sending. */
ws_err ws_http_read_body(struct mg_connection *conn, size_t max, ws_buf *out);

/* The value of a request header, or NULL. */
const char *ws_http_header(const struct mg_connection *conn, const char *name);

/* Render the registry as Prometheus text and send it (200). */
int ws_http_reply_metrics(struct mg_connection *conn, ws_metrics *m);

/* Route /metrics, /healthz (200 {"status":"ok"}) and /readyz on h, for
 * backends. /readyz answers 200 while the check set with ws_http_set_ready
 * holds (always, if none), else 503 with Retry-After. */
void ws_http_route_basics(ws_http *h, ws_metrics *m);

/* The readiness check of /readyz: ready(ctx) on a civetweb worker thread;
 * it must be cheap and thread-safe. Call before traffic arrives. */
void ws_http_set_ready(ws_http *h, bool (*ready)(void *ctx), void *ctx);

#endif
