/*
 * OpenAPI 3.0 from the contracts: every method of a service in the files to
 * generate that carries a (webshop.v1.http) route becomes an operation,
 * with the answers and headers its annotation lists (http.proto); request
 * and response messages become JSON schemas following the proto3 JSON
 * mapping the front's transcoder implements (openapi_schema.h). Comments
 * in the .proto become descriptions. Works on any package that imports
 * webshop/v1/http.proto; nothing here is specific to the shop.
 */
#ifndef OPENAPI_OPENAPI_H
#define OPENAPI_OPENAPI_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "google/protobuf/compiler/plugin.pb-c.h"

/* What the .proto cannot say, from the plugin's parameter
 * ("version=0.1.0,license=MIT"). Every member may be NULL. */
typedef struct openapi_params {
    const char *version;     /* info.version; "0.0.0" when NULL */
    const char *license;     /* info.license.name; no license when NULL */
    const char *license_url; /* info.license.url */
} openapi_params;

/* Build the OpenAPI document of every routed service in the files to
 * generate of req into out (JSON, one line and a newline). Returns false
 * with a message in err (size err_len) when the contracts cannot be
 * described: no route at all, a route with no verb or two, a path
 * parameter that is not a field, an unknown type or body, a malformed or
 * dangling response or header, a status listed twice. */
bool openapi_build(const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                   const openapi_params *params, ws_buf *out, char *err, size_t err_len);

#endif
