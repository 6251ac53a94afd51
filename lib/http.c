/*
 * civetweb wrapper; see http.h.
 */
#include "http.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <civetweb.h>

#include "log.h"

struct ws_http {
    struct mg_context *ctx; /* owned */
    int port;               /* bound port, read once at start */
    bool access_log;
    ws_metrics *metrics; /* for ws_http_route_basics; not owned */
    bool (*ready)(void *ctx); /* for /readyz; NULL = always ready */
    void *ready_ctx;
    atomic_bool serving; /* set by ws_http_serve; until then every request is 503 */
};

/* civetweb accepts connections from mg_start on, but routes can only be
 * registered on the running context: a request in between would get
 * civetweb's own plain-text 404. Until ws_http_serve, answer it ourselves. */
static int http_begin_request(struct mg_connection *conn)
{
    ws_http *h = mg_get_user_data(mg_get_context(conn));
    if (h == NULL || atomic_load(&h->serving)) {
        return 0; /* civetweb dispatches to the routes */
    }
    ws_http_reply_error(conn, 503, "UNAVAILABLE", "Retry-After: 1\r\n",
                        "starting: try again in a moment");
    return 503; /* handled, with this status */
}

static int http_log_message(const struct mg_connection *conn, const char *message)
{
    (void)conn;
    ws_log_warn("http_server", "msg=%s", message);
    return 1; /* handled: civetweb writes nothing itself */
}

/* civetweb 1.15 loads OpenSSL with dlopen("libssl.so") and, on OpenSSL 3,
 * misses SSL_get_peer_certificate and crashes on the first TLS connection
 * (see tls_compat.c). Load the compat library (SONAME "libssl.so") first,
 * from $WEBSHOP_TLS_COMPAT, the build tree or the install path, and check
 * that what civetweb will get has the function. Never unloaded. */
static bool http_tls_compat_load(void)
{
    const char *paths[3] = {getenv("WEBSHOP_TLS_COMPAT"), NULL, NULL};
#ifdef WS_TLS_COMPAT_BUILT
    paths[1] = WS_TLS_COMPAT_BUILT;
    paths[2] = WS_TLS_COMPAT_INSTALLED;
#endif
    for (int i = 0; i < 3; i++) {
        if (paths[i] != NULL && paths[i][0] != '\0' &&
            dlopen(paths[i], RTLD_NOW | RTLD_GLOBAL) != NULL) {
            break;
        }
    }
    void *ssl = dlopen("libssl.so", RTLD_LAZY);
    bool ok = ssl != NULL && dlsym(ssl, "SSL_get_peer_certificate") != NULL;
    if (ssl != NULL) {
        dlclose(ssl);
    }
    if (!ok) {
        ws_log_error("http_tls_unavailable", "reason=%s",
                     ssl == NULL ? "no_libssl.so(install_libssl-dev)"
                                 : "libwebshop-tls-compat.so_not_found");
    }
    return ok;
}

/* civetweb reads the certificate and the private key from one PEM file
 * (ssl_certificate). For a separate key, join both into an anonymous
 * in-memory file (never on disk) and name it /proc/self/fd/N in path; the
 * caller closes the returned fd once civetweb has read it (mg_start).
 * Returns the fd, or -1 when a file cannot be read. */
static int http_tls_pem_join(const char *cert, const char *key, char *path, size_t path_len)
{
    int fd = memfd_create("webshop-tls-pem", MFD_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    const char *files[2] = {cert, key};
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "rb");
        if (f == NULL) {
            ws_log_error("http_tls_unreadable", "file=%s", files[i]);
            close(fd);
            return -1;
        }
        char chunk[4096];
        size_t n;
        bool ok = true;
        while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
            if (write(fd, chunk, n) != (ssize_t)n) {
                ok = false;
                break;
            }
        }
        ok = ok && !ferror(f) && write(fd, "\n", 1) == 1;
        fclose(f);
        if (!ok) {
            close(fd);
            return -1;
        }
    }
    snprintf(path, path_len, "/proc/self/fd/%d", fd);
    return fd;
}

ws_err ws_http_open(const ws_http_opts *opts, ws_http **out)
{
    char ports[300];
    char threads[16];
    char timeout[16];
    char keepalive[16];
    const char *host = opts->host != NULL ? opts->host : "127.0.0.1";
    bool tls = opts->tls_cert != NULL && opts->tls_cert[0] != '\0';
    bool v6 = strchr(host, ':') != NULL;

    snprintf(ports, sizeof(ports), v6 ? "[%s]:%d%s" : "%s:%d%s", host, opts->port,
             tls ? "s" : "");
    snprintf(threads, sizeof(threads), "%d", opts->threads > 0 ? opts->threads : 32);
    snprintf(timeout, sizeof(timeout), "%d",
             opts->request_timeout_ms > 0 ? opts->request_timeout_ms : 10000);
    snprintf(keepalive, sizeof(keepalive), "%d",
             opts->keep_alive_ms > 0 ? opts->keep_alive_ms : 5000);

    const char *options[32];
    int n = 0;
    options[n++] = "listening_ports";
    options[n++] = ports;
    options[n++] = "num_threads";
    options[n++] = threads;
    options[n++] = "request_timeout_ms";
    options[n++] = timeout;
    options[n++] = "enable_keep_alive";
    options[n++] = "yes";
    options[n++] = "keep_alive_timeout_ms";
    options[n++] = keepalive;
    /* Header block cap: requests with more header bytes are refused. */
    options[n++] = "max_request_size";
    options[n++] = "16384";
    options[n++] = "enable_directory_listing";
    options[n++] = "no";
    /* Nagle off on accepted connections (civetweb's default is on): a reply
     * written in two pieces, or an SSE event after a quiet spell, would
     * otherwise wait for the client's delayed ACK (~40 ms). */
    options[n++] = "tcp_nodelay";
    options[n++] = "1";
    char pem_path[64];
    int pem_fd = -1;
    if (tls && !http_tls_compat_load()) {
        return WS_EINVAL;
    }
    if (tls && opts->tls_key != NULL && opts->tls_key[0] != '\0') {
        pem_fd = http_tls_pem_join(opts->tls_cert, opts->tls_key, pem_path, sizeof(pem_path));
        if (pem_fd < 0) {
            return WS_EINVAL;
        }
    }
    if (tls) {
        options[n++] = "ssl_certificate";
        options[n++] = pem_fd >= 0 ? pem_path : opts->tls_cert;
        /* Intermediate certificates after the leaf in the cert file. */
        options[n++] = "ssl_certificate_chain";
        options[n++] = opts->tls_cert;
        options[n++] = "ssl_protocol_version";
        options[n++] = "4"; /* TLS 1.2 and newer */
    }
    options[n] = NULL;

    ws_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        if (pem_fd >= 0) {
            close(pem_fd);
        }
        return WS_ENOMEM;
    }
    h->access_log = opts->access_log;
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    cb.log_message = http_log_message;
    cb.begin_request = http_begin_request;
    atomic_init(&h->serving, false);
    mg_init_library(tls ? MG_FEATURES_TLS : 0);
    h->ctx = mg_start(&cb, h, options);
    if (pem_fd >= 0) {
        close(pem_fd); /* read by mg_start */
    }
    if (h->ctx == NULL) {
        ws_log_error("http_start_failed", "listen=%s", ports);
        mg_exit_library();
        free(h);
        return tls ? WS_EINVAL : WS_EUNAVAIL;
    }
    struct mg_server_port sp[4];
    int np = mg_get_server_ports(h->ctx, 4, sp);
    h->port = np > 0 ? sp[0].port : opts->port;
    /* The one line that says where the server is: tests and launchers that
     * asked for port 0 read the port from it. */
    ws_log_info("http_listening", v6 ? "url=%s://[%s]:%d" : "url=%s://%s:%d",
                tls ? "https" : "http", host, h->port);
    *out = h;
    return WS_OK;
}

void ws_http_serve(ws_http *h)
{
    atomic_store(&h->serving, true);
}

void ws_http_route(ws_http *h, const char *uri, ws_http_handler_fn fn, void *ctx)
{
    mg_set_request_handler(h->ctx, uri, (mg_request_handler)fn, ctx);
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
    mg_stop(h->ctx);
    mg_exit_library();
    free(h);
}

static const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Unknown";
    }
}

/* A response head being built in a fixed buffer; len >= cap once
 * something did not fit. */
typedef struct http_head {
    char *p;
    size_t len, cap;
} http_head;

static void http_head_put(http_head *h, const char *s, size_t n)
{
    if (h->len < h->cap && n < h->cap - h->len) {
        memcpy(h->p + h->len, s, n);
        h->len += n;
    } else {
        h->len = h->cap;
    }
}

static void http_head_puts(http_head *h, const char *s)
{
    http_head_put(h, s, strlen(s));
}

/* Write v in decimal into d (room for 20 digits); returns the length. */
static size_t http_decimal(char *d, size_t v)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    memcpy(d, tmp + i, sizeof(tmp) - i);
    return sizeof(tmp) - i;
}

int ws_http_reply(struct mg_connection *conn, int status, const char *content_type,
                  const void *body, size_t len, const char *extra_headers)
{
    /* One write for headers and a small body: fewer syscalls, and
     * civetweb's keep-alive only needs a correct Content-Length. */
    /* Built by hand: snprintf cost more than the rest of a cached reply. */
    char head[1024];
    http_head h = {head, 0, sizeof(head)};
    char num[24];
    http_head_puts(&h, "HTTP/1.1 ");
    http_head_put(&h, num, http_decimal(num, (size_t)(status >= 0 ? status : 0)));
    http_head_puts(&h, " ");
    http_head_puts(&h, http_reason(status));
    http_head_puts(&h, "\r\nContent-Length: ");
    http_head_put(&h, num, http_decimal(num, status == 304 ? (size_t)0 : len));
    http_head_puts(&h, "\r\n");
    if (content_type != NULL) {
        http_head_puts(&h, "Content-Type: ");
        http_head_puts(&h, content_type);
        http_head_puts(&h, "\r\n");
    }
    http_head_puts(&h, "Cache-Control: no-store\r\n");
    if (extra_headers != NULL) {
        http_head_puts(&h, extra_headers);
    }
    http_head_puts(&h, "\r\n");
    if (h.len >= h.cap) {
        return 500; /* did not fit */
    }
    size_t n = h.len;
    if (status != 304 && len > 0 && len <= 8192) {
        char stack[1024 + 8192];
        memcpy(stack, head, n);
        memcpy(stack + n, body, len);
        mg_write(conn, stack, n + len);
    } else {
        mg_write(conn, head, n);
        if (status != 304 && len > 0) {
            mg_write(conn, body, len);
        }
    }
    return status;
}

int ws_http_reply_error(struct mg_connection *conn, int status, const char *code,
                        const char *extra_headers, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);

    ws_buf b;
    ws_buf_init(&b, 0);
    ws_buf_puts(&b, "{\"code\":\"");
    ws_buf_puts(&b, code);
    ws_buf_puts(&b, "\",\"message\":\"");
    for (const unsigned char *p = (const unsigned char *)text; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            ws_buf_putc(&b, '\\');
            ws_buf_putc(&b, (char)*p);
        } else if (*p < 0x20) {
            ws_buf_printf(&b, "\\u%04x", *p);
        } else {
            ws_buf_putc(&b, (char)*p);
        }
    }
    ws_buf_puts(&b, "\"}");
    int rc = ws_http_reply(conn, status, "application/json", b.data != NULL ? b.data : "",
                           b.len, extra_headers);
    ws_buf_fini(&b);
    return rc;
}

ws_err ws_http_read_body(struct mg_connection *conn, size_t max, ws_buf *out)
{
    const struct mg_request_info *ri = mg_get_request_info(conn);
    if (ri->content_length > 0 && (unsigned long long)ri->content_length > max) {
        return WS_ETOOBIG;
    }
    char chunk[4096];
    for (;;) {
        int n = mg_read(conn, chunk, sizeof(chunk));
        if (n < 0) {
            return WS_EIO;
        }
        if (n == 0) {
            break;
        }
        if (out->len + (size_t)n > max) {
            return WS_ETOOBIG;
        }
        ws_err err = ws_buf_append(out, chunk, (size_t)n);
        if (err != WS_OK) {
            return err;
        }
    }
    if (ri->content_length > 0 && out->len != (size_t)ri->content_length) {
        return WS_EIO;
    }
    return WS_OK;
}

const char *ws_http_header(const struct mg_connection *conn, const char *name)
{
    return mg_get_header(conn, name);
}

int ws_http_reply_metrics(struct mg_connection *conn, ws_metrics *m)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    if (ws_metrics_render(m, &b) != WS_OK) {
        ws_buf_fini(&b);
        return ws_http_reply_error(conn, 500, "INTERNAL", NULL, "cannot render metrics");
    }
    int rc = ws_http_reply(conn, 200, "text/plain; version=0.0.4; charset=utf-8",
                           b.data != NULL ? b.data : "", b.len, NULL);
    ws_buf_fini(&b);
    return rc;
}

static int http_metrics_handler(struct mg_connection *conn, void *ctx)
{
    ws_http *h = ctx;
    return ws_http_reply_metrics(conn, h->metrics);
}

static int http_healthz_handler(struct mg_connection *conn, void *ctx)
{
    (void)ctx;
    static const char ok[] = "{\"status\":\"ok\"}";
    return ws_http_reply(conn, 200, "application/json", ok, sizeof(ok) - 1, NULL);
}

static int http_readyz_handler(struct mg_connection *conn, void *ctx)
{
    ws_http *h = ctx;
    if (h->ready != NULL && !h->ready(h->ready_ctx)) {
        static const char no[] = "{\"status\":\"unavailable\"}";
        return ws_http_reply(conn, 503, "application/json", no, sizeof(no) - 1,
                             "Retry-After: 1\r\n");
    }
    static const char ok[] = "{\"status\":\"ok\"}";
    return ws_http_reply(conn, 200, "application/json", ok, sizeof(ok) - 1, NULL);
}

void ws_http_route_basics(ws_http *h, ws_metrics *m)
{
    h->metrics = m != NULL ? m : ws_metrics_default();
    ws_http_route(h, "/metrics$", http_metrics_handler, h);
    ws_http_route(h, "/healthz$", http_healthz_handler, h);
    ws_http_route(h, "/readyz$", http_readyz_handler, h);
}

void ws_http_set_ready(ws_http *h, bool (*ready)(void *ctx), void *ctx)
{
    h->ready_ctx = ctx;
    h->ready = ready;
}
