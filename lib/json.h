/*
 * The proto3 JSON mapping, in both directions, for any protobuf-c message,
 * driven only by its ProtobufCMessageDescriptor: no message type has
 * hand-written JSON code. Input is parsed with jansson; output is written
 * straight into a ws_buf.
 *
 * Input accepts a field's proto name and its lowerCamelCase json_name;
 * rejects unknown fields, wrong types, out-of-range numbers, bad UTF-8 and
 * duplicate keys, with an error that names the JSON path
 * ("items[2].count: expected integer"). Output writes proto names or
 * lowerCamelCase names by option.
 *
 * The well-known types (google/protobuf/timestamp.proto, duration, empty,
 * field_mask, struct, wrappers, any) have their canonical JSON forms, as
 * every protobuf implementation writes them: a Timestamp is an RFC 3339
 * string, a Duration "1.5s", a wrapper its bare value, a Struct any JSON
 * object; see json_wkt.h for each form and its range checks.
 */
#ifndef WS_JSON_H
#define WS_JSON_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "buf.h"
#include "err.h"

/* Output options, OR-ed together. */
enum {
    WS_JSON_CAMEL = 1 << 0,    /* lowerCamelCase names (the bus); default proto names (HTTP) */
    WS_JSON_DEFAULTS = 1 << 1, /* also write fields that hold their default value */
    WS_JSON_ENUM_INTS = 1 << 2 /* enums as numbers, not names */
};

/* Limits on decoding outside input. Zero fields take the defaults below. */
typedef struct ws_json_limits {
    size_t max_bytes; /* input size; default 1 MiB */
    int max_depth;    /* nesting of objects and arrays; default 32 */
} ws_json_limits;

#define WS_JSON_DEFAULT_MAX_BYTES (1u << 20)
#define WS_JSON_DEFAULT_MAX_DEPTH 32

/* Error detail: the JSON path and what was wrong, NUL-terminated,
 * "items[2].count: expected integer" or "line 1 column 5: invalid token". */
typedef struct ws_json_error {
    char text[256];
} ws_json_error;

/* Decode JSON text (len bytes, not necessarily NUL-terminated) into a new
 * message of type desc, allocated with protobuf-c's default allocator.
 * On success *out owns the message; free it with
 * protobuf_c_message_free_unpacked(*out, NULL). On error *out is untouched,
 * nothing leaks, err (may be NULL) explains, and the return is WS_EPARSE
 * (malformed or invalid input), WS_ETOOBIG (limits), or WS_ENOMEM.
 * limits may be NULL for the defaults. */
ws_err ws_json_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                      const ws_json_limits *limits, ProtobufCMessage **out /* OUT */,
                      ws_json_error *err /* OUT, may be NULL */);

/* Append the JSON form of msg to out (a single value, no newline: an
 * object, or a well-known type's own form). flags: WS_JSON_*. Returns
 * WS_ETOOBIG if out's limit is reached (out is then truncated to its
 * previous length, as on every error), WS_ENOMEM, WS_ERANGE for a Timestamp
 * or Duration out of its range, WS_EINVAL for a message with no JSON form
 * (bad UTF-8 in a string field, an Any of a type not known, a non-finite
 * number in a google.protobuf.Value). */
ws_err ws_json_encode(const ProtobufCMessage *msg, unsigned flags, ws_buf *out);

/* ws_json_encode, and on failure err (may be NULL) says where and why,
 * as the decoder does: "r_ts[1]: timestamp out of range (years 0001 to 9999
 * in UTC)". Also WS_ERANGE: a Timestamp or Duration out of its range. */
ws_err ws_json_encode_err(const ProtobufCMessage *msg, unsigned flags, ws_buf *out,
                          ws_json_error *err /* OUT, may be NULL */);

/* Decode a JSON array of messages of type desc (e.g. a catalog file). On
 * success *out is a calloc'ed array of *n message pointers, each freed with
 * protobuf_c_message_free_unpacked, the array with free(). Same errors as
 * ws_json_decode; paths start with the index ("[3].price: ..."). */
ws_err ws_json_decode_array(const ProtobufCMessageDescriptor *desc, const char *json,
                            size_t len, const ws_json_limits *limits,
                            ProtobufCMessage ***out /* OUT */, size_t *n /* OUT */,
                            ws_json_error *err /* OUT, may be NULL */);

/* The message types the transcoder can name: the "@type" of a
 * google.protobuf.Any is looked up here, both ways (an Any of a type not
 * found is an error). Known without registering: the well-known types
 * (google.protobuf.Timestamp, ...). ws_json_register adds desc and every
 * message type reachable through its fields (a request registers the
 * messages it nests), keyed by full name; a name already known keeps its
 * first descriptor. The table is process-wide, guarded by a mutex, and only
 * grows: register at start-up (any thread may, at any time), and keep desc
 * alive for the life of the process (protoc-c's descriptors are static).
 * Returns WS_OK, WS_EINVAL (not a message descriptor), WS_ENOMEM. */
ws_err ws_json_register(const ProtobufCMessageDescriptor *desc);

/* The descriptor of the message type called full_name ("acme.v1.Charge",
 * no leading dot), among the registered and the well-known types, or NULL.
 * Any thread. */
const ProtobufCMessageDescriptor *ws_json_type_find(const char *full_name);

#endif
