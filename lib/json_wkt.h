/*
 * The well-known types' own JSON forms, for the transcoder (json_encode.c,
 * json_decode.c call in here for every message whose type is one of them):
 *
 *   Timestamp        "1972-01-01T10:00:20.021Z" (RFC 3339; 0, 3, 6 or 9
 *                    fractional digits out; any offset and 1..9 digits in),
 *                    years 0001..9999, nanos 0..999999999
 *   Duration         "1.000340012s", "-0.5s"; at most +-315576000000 s,
 *                    nanos of the seconds' sign
 *   FieldMask        "a.bC,d": paths in lowerCamelCase, comma-separated
 *   Struct, Value,   any JSON object, value, array; null is a Value
 *   ListValue        (NullValue is null)
 *   the wrappers     the bare value of their one field (Int64Value a string,
 *                    BytesValue base64, as the field itself would be)
 *   Any              {"@type": "type.googleapis.com/NAME", ...NAME's fields}
 *                    or, when NAME is itself one of these, {"@type": ...,
 *                    "value": its JSON}; NAME must be a type the process
 *                    knows (ws_json_type_find)
 *
 * Empty has no rule of its own: as a message with no fields it is {}.
 * Types are recognised by their full name, so a copy of these messages that
 * a user compiled with protoc-c is treated alike. Private to lib/.
 */
#ifndef WS_JSON_WKT_H
#define WS_JSON_WKT_H

#include <protobuf-c/protobuf-c.h>

#include "json_int.h"

typedef enum ws__json_wkt {
    WS__JSON_WKT_NONE = 0, /* an ordinary message (Empty included) */
    WS__JSON_WKT_TIMESTAMP,
    WS__JSON_WKT_DURATION,
    WS__JSON_WKT_FIELD_MASK,
    WS__JSON_WKT_STRUCT,
    WS__JSON_WKT_VALUE,
    WS__JSON_WKT_LIST_VALUE,
    WS__JSON_WKT_WRAPPER, /* DoubleValue ... BytesValue */
    WS__JSON_WKT_ANY
} ws__json_wkt;

/* Which rule a message type follows, by its full name. */
ws__json_wkt ws__json_wkt_of(const ProtobufCMessageDescriptor *desc);

/* 1 if ed is google.protobuf.NullValue (written and read as null). */
int ws__json_wkt_is_null_enum(const ProtobufCEnumDescriptor *ed);

/* 1 if a JSON null given for field f is a value (f is a Value or a
 * NullValue) rather than "field not set". */
int ws__json_wkt_takes_null(const ProtobufCFieldDescriptor *f);

/* Append m (of kind kind) in its JSON form. WS_ERANGE for a Timestamp or
 * Duration out of range, WS_EINVAL for a value with no JSON form (a
 * FieldMask path that cannot be camel-cased, a non-finite number_value, an
 * Any of an unknown type or with bytes that do not unpack), or the buffer's
 * errors; e->at says where and why. */
ws_err ws__json_wkt_encode(ws_buf *b, const ProtobufCMessage *m, ws__json_wkt kind,
                           ws__json_enc *e, int depth);

/* A new message of type desc (of kind kind) from its JSON form v; errors
 * name d's path ("created: timestamp before 0001-01-01"). */
ws_err ws__json_wkt_decode(ws__json_path *d, const ProtobufCMessageDescriptor *desc,
                           ws__json_wkt kind, const json_t *v,
                           ProtobufCMessage **out /* OUT */);

#endif
