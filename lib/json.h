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

/* Append the JSON form of msg to out (a single object, no newline).
 * flags: WS_JSON_*. Returns WS_ETOOBIG if out's limit is reached (out is then
 * truncated to its previous length), WS_ENOMEM, WS_EINVAL for a message
 * protobuf-c could not have produced (bad UTF-8 in a string field). */
ws_err ws_json_encode(const ProtobufCMessage *msg, unsigned flags, ws_buf *out);

/* Decode a JSON array of messages of type desc (e.g. a catalog file). On
 * success *out is a calloc'ed array of *n message pointers, each freed with
 * protobuf_c_message_free_unpacked, the array with free(). Same errors as
 * ws_json_decode; paths start with the index ("[3].price: ..."). */
ws_err ws_json_decode_array(const ProtobufCMessageDescriptor *desc, const char *json,
                            size_t len, const ws_json_limits *limits,
                            ProtobufCMessage ***out /* OUT */, size_t *n /* OUT */,
                            ws_json_error *err /* OUT, may be NULL */);

#endif
