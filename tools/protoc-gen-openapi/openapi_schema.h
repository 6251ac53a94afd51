/*
 * JSON schemas (OpenAPI 3.0) of messages, enums and fields, following the
 * proto3 JSON mapping the front's transcoder implements: proto field
 * names, 64-bit integers as strings, enums by name, maps as JSON objects
 * (additionalProperties), the well-known types in their JSON forms. A
 * oneof becomes a oneOf that admits one member or none; limits from
 * contract.proto ((webshop.v1.limits), (webshop.v1.list_limits)) become
 * minimum/maximum and minItems/maxItems; a field is `required` when
 * (webshop.v1.required) says so or its limits exclude the zero value.
 */
#ifndef OPENAPI_SCHEMA_H
#define OPENAPI_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "openapi_types.h"

/* {"$ref":"#/components/schemas/<name>"} for a used type t. */
void openapi_schema_ref(ws_buf *out, const openapi_type *t);

/* The schema of one value of fd (for a repeated field, of one element; for
 * a map, the whole object), without description or limits. Types are
 * looked up in ts; a type that is not there is written as {}. */
void openapi_schema_value(ws_buf *out, const openapi_types *ts, const field_proto *fd);

/* The schema of field `index` of message owner, with its limits and its
 * comment as description. */
void openapi_schema_field(ws_buf *out, const openapi_types *ts, const openapi_type *owner,
                          size_t index);

/* The schema of a value of the message or enum of full name full: a $ref,
 * or the inline JSON form of a well-known type. */
void openapi_schema_named(ws_buf *out, const openapi_types *ts, const char *full);

/* The leading comment of field index of message owner, or NULL. */
const char *openapi_schema_field_comment(const openapi_type *owner, size_t index);

/* "<name>":{schema} of the used type t (a message or an enum). */
void openapi_schema_type(ws_buf *out, const openapi_types *ts, const openapi_type *t);

/* True when fd must be present in the JSON (see the file comment). */
bool openapi_schema_required(const openapi_types *ts, const field_proto *fd);

#endif
