/*
 * OpenAPI 3 from the contracts: every method of a service that carries a
 * (webshop.v1.http) route annotation becomes an operation; request and
 * response messages become JSON schemas following the proto3 JSON mapping
 * the front's transcoder implements (proto field names, 64-bit integers as
 * strings, enums by name). Comments in the .proto become descriptions.
 */
#ifndef OPENAPI_OPENAPI_H
#define OPENAPI_OPENAPI_H

#include <stdbool.h>

#include "buf.h"
#include "google/protobuf/compiler/plugin.pb-c.h"

/* Build the OpenAPI document of every routed service in the files to
 * generate of req into out (JSON). Returns false with a message in err
 * (size err_len) when the contracts cannot be described: an unknown type,
 * a route with no verb, a path parameter that is not a field. */
bool openapi_build(const Google__Protobuf__Compiler__CodeGeneratorRequest *req, ws_buf *out,
                   char *err, size_t err_len);

/* Append s as a JSON string literal (quoted, escaped). */
void openapi_json_string(ws_buf *out, const char *s);

#endif
