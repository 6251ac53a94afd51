/*
 * Answers for lib/http: complete replies (one write for head and small
 * body), JSON errors, streamed answers, the body reader with its deadline,
 * and the JSON answers that replace civetweb's own error pages. Every head
 * is built here from our own strings: nothing from the request reaches a
 * status line or a header unless a caller put it in extra_headers.
 */
#include "http_int.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <civetweb.h>

#include "log.h"

static const char *http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
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

/* Whether the answer to r closes the connection: asked for, a body left
 * unread (civetweb would otherwise read it in the worker, at the client's
 * pace, and what follows it may be a smuggled request). */
static bool http_reply_closes(const ws_http_req *r, const char *extra)
{
    return r->close || !r->body_done ||
           (extra != NULL && strstr(extra, "Connection: close\r\n") != NULL);
}

/* The head of an answer into h: status line, length (len < 0: none),
 * type, caching, HSTS, traceparent, Connection, extra lines. */
static void http_head_build(http_head *h, ws_http_req *r, int status,
                            const char *content_type, long long len, const char *extra)
{
    char num[24];
    http_head_puts(h, "HTTP/1.1 ");
    http_head_put(
        h, num,
        http_decimal(num, (size_t)(status >= 100 && status < 1000 ? status : 500)));
    http_head_puts(h, " ");
    http_head_puts(h, http_reason(status));
    http_head_puts(h, "\r\n");
    if (len >= 0) {
        http_head_puts(h, "Content-Length: ");
        http_head_put(h, num, http_decimal(num, (size_t)len));
        http_head_puts(h, "\r\n");
    }
    if (content_type != NULL) {
        http_head_puts(h, "Content-Type: ");
        http_head_puts(h, content_type);
        http_head_puts(h, "\r\n");
    }
    if (extra == NULL || strstr(extra, "Cache-Control:") == NULL) {
        http_head_puts(h, "Cache-Control: no-store\r\n");
    }
    if (r->h != NULL) {
        http_head_puts(h, r->h->hsts);
    }
    if (r->trace.trace_id[0] != '\0') {
        char tp[WS_TRACEPARENT_SIZE];
        ws_trace_format(&r->trace, tp);
        http_head_puts(h, WS_TRACEPARENT_NAME ": ");
        http_head_puts(h, tp);
        http_head_puts(h, "\r\n");
    }
    /* A body without a length ends with the connection. */
    bool close = http_reply_closes(r, extra) || len < 0;
    if (close) {
        mg_disable_connection_keep_alive(r->conn);
    }
    if (close && (extra == NULL || strstr(extra, "Connection: close\r\n") == NULL)) {
        http_head_puts(h, "Connection: close\r\n");
    }
    if (extra != NULL) {
        http_head_puts(h, extra);
    }
    http_head_puts(h, "\r\n");
}

int ws_http_reply(ws_http_req *req, int status, const char *content_type,
                  const void *body, size_t len, const char *extra_headers)
{
    /* One write for headers and a small body: fewer syscalls, and
     * civetweb's keep-alive only needs a correct Content-Length. Built by
     * hand: snprintf cost more than the rest of a cached reply. */
    char head[1024];
    http_head h = {head, 0, sizeof(head)};
    bool no_body = status == 304 || status == 204 || req->head;
    http_head_build(&h, req, status, content_type, status == 304 ? 0 : (long long)len,
                    extra_headers);
    if (h.len >= h.cap) {
        return ws_http_reply_error(req, 500, "INTERNAL", NULL, "response head too long");
    }
    size_t n = h.len;
    if (!no_body && len > 0 && len <= 8192) {
        char stack[1024 + 8192];
        memcpy(stack, head, n);
        memcpy(stack + n, body, len);
        mg_write(req->conn, stack, n + len);
    } else {
        mg_write(req->conn, head, n);
        if (!no_body && len > 0) {
            mg_write(req->conn, body, len);
        }
    }
    return status;
}

/* Append text to b as the inside of a JSON string: quotes, backslashes and
 * control characters escaped, invalid UTF-8 written as U+FFFD. */
static void http_json_string(ws_buf *b, const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t n = strlen(text);
    while (n > 0) {
        size_t ok = ws__http_utf8_valid_prefix(p, n);
        for (size_t i = 0; i < ok; i++) {
            if (p[i] == '"' || p[i] == '\\') {
                ws_buf_putc(b, '\\');
                ws_buf_putc(b, (char)p[i]);
            } else if (p[i] < 0x20 || p[i] == 0x7f) {
                ws_buf_printf(b, "\\u%04x", p[i]);
            } else {
                ws_buf_putc(b, (char)p[i]);
            }
        }
        p += ok;
        n -= ok;
        if (n > 0) {
            ws_buf_puts(b, "\\ufffd"); /* one invalid byte */
            p++;
            n--;
        }
    }
}

int ws_http_reply_error(ws_http_req *req, int status, const char *code,
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
    http_json_string(&b, code);
    ws_buf_puts(&b, "\",\"message\":\"");
    http_json_string(&b, text);
    ws_buf_puts(&b, "\"}");
    int rc;
    if (b.data == NULL) { /* out of memory: still a JSON answer */
        static const char oom[] = "{\"code\":\"INTERNAL\",\"message\":\"out of memory\"}";
        rc = ws_http_reply(req, status, "application/json", oom, sizeof(oom) - 1,
                           extra_headers);
    } else {
        rc = ws_http_reply(req, status, "application/json", b.data, b.len, extra_headers);
    }
    ws_buf_fini(&b);
    return rc;
}

int ws_http_reply_method_not_allowed(ws_http_req *req, const char *allow)
{
    char extra[96];
    snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    return ws_http_reply_error(req, 405, "METHOD_NOT_ALLOWED", extra,
                               "method not allowed; allowed: %s", allow);
}

/* Answer one of civetweb's errors; see ws__http_reply_civetweb_error. */
static void http_reply_civetweb_status(ws_http_req *r, int status, const char *errmsg);

void ws__http_reply_civetweb_error(struct mg_connection *conn, int status,
                                   const char *errmsg)
{
    /* The request as far as civetweb got: a HEAD gets no body; its
     * traceparent, if it got that far, is adopted as for any request. */
    ws_http_req r;
    ws__http_req_begin(&r, conn);
    r.close = true;
    r.body_done = true;
    http_reply_civetweb_status(&r, status, errmsg);
    ws__http_req_end(&r);
}

static void http_reply_civetweb_status(ws_http_req *r, int status, const char *errmsg)
{
    http_slot *s = r->slot;
    ws_http *h = r->h;
    int waited_ms = (int)(ws__http_slot_age(s) * 1000.0);
    int limit = h == NULL                ? 0
                : ws__http_slot_first(s) ? h->request_timeout_ms
                                         : h->keep_alive_ms;
    mg_disable_connection_keep_alive(r->conn);
    /* civetweb says "Malformed message" for a request that did not arrive
     * in time as for one with a control character; the clock tells. */
    if (status == 400 && errmsg != NULL && strcmp(errmsg, "Malformed message") == 0 &&
        (ws__http_slot_was_cut(s) || (limit > 0 && waited_ms >= limit))) {
        ws_http_reply_error(r, 408, "REQUEST_TIMEOUT", NULL,
                            "request headers: not complete in time");
        return;
    }
    /* ... and for one that did not fit in its buffer (the branch that
     * would say 413 is not reached in 1.15): on a connection's first
     * request, the bytes received tell. */
    if (status == 400 && errmsg != NULL && strcmp(errmsg, "Malformed message") == 0 &&
        ws__http_slot_first(s) &&
        ws__http_slot_bytes_received(s) >= HTTP_MAX_REQUEST_HEAD) {
        status = 413;
    }
    switch (status) {
    case 400:
        ws_http_reply_error(r, 400, "INVALID_ARGUMENT", NULL,
                            "malformed request line or header fields");
        break;
    case 411: /* civetweb: a Content-Length that strtoll cannot read */
        ws_http_reply_error(r, 400, "INVALID_ARGUMENT", NULL,
                            "Content-Length: not a decimal number of bytes");
        break;
    case 413: /* civetweb: request line and headers over max_request_size */
        ws_http_reply_error(r, 431, "HEADERS_TOO_LARGE", NULL,
                            "request line and header fields: more than %d bytes",
                            HTTP_MAX_REQUEST_HEAD);
        break;
    case 505: {
        /* civetweb: any "HTTP/<word>" but 1.0 and 1.1. A version
         * (DIGIT.DIGIT) we do not speak is named as such, but answered
         * 400, not 505: no request of a client's makes us answer 5xx (a
         * 5xx says the server failed, and is what monitors alert on). */
        const struct mg_request_info *ri = mg_get_request_info(r->conn);
        const char *v = ri != NULL && ri->http_version != NULL ? ri->http_version : "";
        bool version = v[0] >= '0' && v[0] <= '9' && v[1] == '.' && v[2] >= '0' &&
                       v[2] <= '9' && v[3] == '\0';
        if (version) {
            ws_http_reply_error(r, 400, "HTTP_VERSION_NOT_SUPPORTED", NULL,
                                "only HTTP/1.0 and HTTP/1.1 are served");
        } else {
            ws_http_reply_error(r, 400, "INVALID_ARGUMENT", NULL,
                                "request line: malformed HTTP version");
        }
        break;
    }
    default:
        ws_log_warn("http_server_error", "status=%d", status);
        ws_http_reply_error(r, status >= 400 && status < 600 ? status : 500, "INTERNAL",
                            NULL, "the request could not be served");
        break;
    }
}

ws_err ws_http_read_body(ws_http_req *req, size_t max, ws_buf *out)
{
    http_slot *s = req->slot;
    long long declared = req->content_length;
    if (req->body_done) {
        return WS_OK; /* no body */
    }
    if (declared > 0 && (unsigned long long)declared > max) {
        return WS_ETOOBIG;
    }
    ws__http_slot_body(s, req->h != NULL ? req->h->body_timeout_ms : 10000);
    ws_err err = WS_OK;
    char chunk[4096];
    for (;;) {
        int n = mg_read(req->conn, chunk, sizeof(chunk));
        if (n < 0) {
            err = WS_EIO;
            break;
        }
        if (n == 0) {
            break;
        }
        if (out->len + (size_t)n > max) {
            err = WS_ETOOBIG;
            break;
        }
        if ((err = ws_buf_append(out, chunk, (size_t)n)) != WS_OK) {
            break;
        }
    }
    if (err == WS_OK && declared > 0 && out->len != (size_t)declared) {
        err = WS_EIO;
    }
    if (ws__http_slot_was_cut(s)) {
        err = WS_ETIMEDOUT;
    }
    ws__http_slot_set(s, SLOT_HANDLER);
    req->body_done = err == WS_OK;
    return err;
}

bool ws_http_stream_start(ws_http_req *req, int status, const char *content_type,
                          const char *extra_headers)
{
    char head[1024];
    http_head h = {head, 0, sizeof(head)};
    http_head_build(&h, req, status, content_type, -1, extra_headers);
    if (h.len >= h.cap) {
        return false;
    }
    ws__http_slot_set(req->slot, SLOT_STREAM);
    ws__http_slot_find_socket(req->slot);
    return mg_write(req->conn, head, h.len) == (int)h.len;
}

bool ws_http_write(ws_http_req *req, const void *data, size_t len)
{
    if (req->head) {
        return true;
    }
    return len == 0 || mg_write(req->conn, data, len) == (int)len;
}

bool ws_http_peer_gone(ws_http_req *req)
{
    return ws__http_slot_peer_gone(req->slot);
}

int ws_http_reply_metrics(ws_http_req *req, ws_metrics *m)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    if (ws_metrics_render(m, &b) != WS_OK) {
        ws_buf_fini(&b);
        return ws_http_reply_error(req, 500, "INTERNAL", NULL, "cannot render metrics");
    }
    int rc = ws_http_reply(req, 200, "text/plain; version=0.0.4; charset=utf-8",
                           b.data != NULL ? b.data : "", b.len, NULL);
    ws_buf_fini(&b);
    return rc;
}
