/*
 * Serves the embedded storefront: GET / answers index.html, GET /static/NAME
 * the other files. Answers carry their Content-Type, a strong ETag (304 on
 * If-None-Match), "Cache-Control: no-cache" (the browser revalidates, so a
 * new build is seen at once and an unchanged file costs a 304), and a
 * Content-Security-Policy that allows only this origin's scripts and styles.
 */
#ifndef FRONT_STATIC_FILES_H
#define FRONT_STATIC_FILES_H

#include "static_assets.h"

#include "http.h"

/* The asset served at path ("/" is "/static/index.html"), or NULL. */
const static_asset *static_files_find(const char *path);

/* The route handler (a ws_http_handler_fn); ctx is unused. GET and HEAD;
 * 404 for an unknown file, 405 for other methods. Returns the status. */
int static_files_serve(ws_http_req *req, void *ctx);

#endif
