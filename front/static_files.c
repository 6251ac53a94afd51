/*
 * The embedded storefront over HTTP; see static_files.h.
 */
#include "static_files.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <civetweb.h>

#include "http.h"

const static_asset *static_files_find(const char *path)
{
    if (path == NULL) {
        return NULL;
    }
    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        path = "/static/index.html";
    }
    for (size_t i = 0; i < static_assets_count; i++) {
        if (strcmp(static_assets[i].path, path) == 0) {
            return &static_assets[i];
        }
    }
    return NULL;
}

/* True when an If-None-Match value names etag (or is "*"). */
static bool static_files_matches(const char *inm, const char *etag)
{
    return inm != NULL && (strstr(inm, etag) != NULL || strcmp(inm, "*") == 0);
}

int static_files_serve(struct mg_connection *conn, void *ctx)
{
    (void)ctx;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    bool head = strcmp(ri->request_method, "HEAD") == 0;
    if (strcmp(ri->request_method, "GET") != 0 && !head) {
        return ws_http_reply_error(conn, 405, "METHOD_NOT_ALLOWED",
                                   "Allow: GET, HEAD\r\n",
                                   "method not allowed; allowed: GET, HEAD");
    }
    const static_asset *a = static_files_find(ri->local_uri);
    if (a == NULL) {
        return ws_http_reply_error(conn, 404, "NOT_FOUND", NULL, "no file %s",
                                   ri->local_uri != NULL ? ri->local_uri : "?");
    }
    bool fresh = static_files_matches(ws_http_header(conn, "If-None-Match"), a->etag);
    int status = fresh ? 304 : 200;
    char head_buf[768];
    int n = snprintf(head_buf, sizeof(head_buf),
                     "HTTP/1.1 %d %s\r\n"
                     "Content-Length: %zu\r\n"
                     "Content-Type: %s\r\n"
                     "ETag: %s\r\n"
                     "Cache-Control: no-cache\r\n"
                     "X-Content-Type-Options: nosniff\r\n"
                     "Referrer-Policy: no-referrer\r\n"
                     "Content-Security-Policy: default-src 'self'; img-src 'self' data:; "
                     "object-src 'none'; base-uri 'none'; frame-ancestors 'none'\r\n"
                     "\r\n",
                     status, fresh ? "Not Modified" : "OK", fresh ? (size_t)0 : a->len,
                     a->content_type, a->etag);
    if (n < 0 || (size_t)n >= sizeof(head_buf)) {
        return ws_http_reply_error(conn, 500, "INTERNAL", NULL, "header too long");
    }
    mg_write(conn, head_buf, (size_t)n);
    if (!fresh && !head) {
        mg_write(conn, a->data, a->len);
    }
    return status;
}
