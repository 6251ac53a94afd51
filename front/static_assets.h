/*
 * The storefront's static files (front/static/), embedded into the binary
 * at build time by tools/embed_static.py, so the front needs no path at run
 * time. The table is generated; this header only declares it.
 */
#ifndef FRONT_STATIC_ASSETS_H
#define FRONT_STATIC_ASSETS_H

#include <stddef.h>

typedef struct static_asset {
    const char *path;         /* URL path, "/static/app.js" */
    const char *content_type; /* full Content-Type value */
    const unsigned char *data;
    size_t len;
    const char *etag; /* quoted strong validator from the bytes' SHA-256 */
} static_asset;

extern const static_asset static_assets[];
extern const size_t static_assets_count;

#endif
