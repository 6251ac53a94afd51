/*
 * The OpenAPI document of the front, generated at build time from
 * proto/webshop/v1/front.proto by tools/protoc-gen-openapi and compiled in.
 */
#ifndef FRONT_OPENAPI_DOC_H
#define FRONT_OPENAPI_DOC_H

#include <stddef.h>

extern const char webshop_v1_front_openapi_json[];
extern const size_t webshop_v1_front_openapi_json_len;

#endif
