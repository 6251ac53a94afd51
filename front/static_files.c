/*
 * The embedded storefront over HTTP; see static_files.h.
 */
#include "static_files.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

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

int static_files_serve(ws_http_req *req, void *ctx)
{
    (void)ctx;
    if (!ws_http_is_get(req)) {
        return ws_http_reply_method_not_allowed(req, "GET, HEAD");
    }
    const char *path = ws_http_path(req);
    const static_asset *a = static_files_find(path);
    if (a == NULL) {
        return ws_http_reply_error(req, 404, "NOT_FOUND", NULL, "no file %s", path);
    }
    bool fresh = static_files_matches(ws_http_header(req, "If-None-Match"), a->etag);
    char extra[640];
    int n = snprintf(extra, sizeof(extra),
                     "ETag: %s\r\n"
                     "Cache-Control: no-cache\r\n"
                     "X-Content-Type-Options: nosniff\r\n"
                     "Referrer-Policy: no-referrer\r\n"
                     "Content-Security-Policy: default-src 'self'; img-src 'self' data:; "
                     "object-src 'none'; base-uri 'none'; frame-ancestors 'none'\r\n",
                     a->etag);
    if (n < 0 || (size_t)n >= sizeof(extra)) {
        return ws_http_reply_error(req, 500, "INTERNAL", NULL, "header too long");
    }
    /* 304 carries no body; HEAD gets the 200's head without the body. */
    return ws_http_reply(req, fresh ? 304 : 200, fresh ? NULL : a->content_type, a->data,
                         fresh ? 0 : a->len, extra);
}
