/*
 * Private helpers shared by the parts of the JSON transcoder (json_decode.c,
 * json_encode.c, json_wkt.c): field-name matching as protoc derives
 * json_name, UTF-8 validation, the map-entry test, and the entry points
 * the well-known types' rules call back into (a value, a whole message, a
 * failure that names the path). Nothing here is public.
 */
#ifndef WS_JSON_INT_H
#define WS_JSON_INT_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include <jansson.h>

#include "buf.h"
#include "err.h"
#include "json.h"

/* 1 if key[0..keylen) equals the lowerCamelCase json_name protoc derives
 * from the proto field name (each '_' dropped, the next character
 * upper-cased), else 0. */
int ws__json_camel_eq(const char *proto_name, const char *key, size_t keylen);

/* 1 if s[0..n) is well-formed UTF-8: no overlong forms, no surrogates,
 * nothing past U+10FFFF. */
int ws__json_utf8_valid(const char *s, size_t n);

/* 1 if field is a proto3 map: a repeated message whose type is the
 * synthetic "<Field>Entry" message with key = 1 and value = 2. protobuf-c
 * 1.4 keeps no map_entry flag, so this is recognised by shape. */
int ws__json_is_map(const ProtobufCFieldDescriptor *field);

/* Longest decimal text of a 64-bit integer, with sign and NUL. */
#define WS_JSON_INT_TEXT 24

/* The decimal text of the integer value of type type at p, as the encoder
 * writes it (without the quotes 64-bit values get), into buf (at least
 * WS_JSON_INT_TEXT bytes). Returns 1, or 0 for a type that is not one of
 * the ten integer types (nothing written). */
int ws__json_int_text(ProtobufCType type, const void *p, char *buf);

/* Size of one value of a field's type in a protobuf-c message struct. */
size_t ws__json_type_size(ProtobufCType type);

/* Where the decoder or encoder is in a message, for error messages. */
typedef struct ws__json_path {
    ws_json_error *err; /* caller's, may be NULL */
    char path[192];     /* JSON path of the value being decoded */
    size_t plen;        /* bytes used in path */
} ws__json_path;

/* Copy outside text into an error message: printable ASCII only, at most
 * cap bytes with the NUL, "..." when cut. */
void ws__json_sanitize(char *dst, size_t cap, const char *src, size_t n);

/* Write "PATH: what" into d->err (when not NULL); returns code. */
ws_err ws__json_fail(ws__json_path *d, ws_err code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Extend the path by ".key" or "[i]"; ws__json_pop(d, plen) restores
 * the length saved before the push. */
void ws__json_push_key(ws__json_path *d, const char *key);
void ws__json_push_index(ws__json_path *d, size_t i);
void ws__json_pop(ws__json_path *d, size_t plen);

/* One value of field f's type from v (not null) into p, as the generic
 * decoder does for a field (a message field through ws__json_dec_message). */
ws_err ws__json_dec_value(ws__json_path *d, const ProtobufCFieldDescriptor *f,
                          const json_t *v, void *p);

/* A new message of type desc from v: a well-known type by its own JSON
 * form, any other from an object. On error nothing is left allocated. */
ws_err ws__json_dec_message(ws__json_path *d, const ProtobufCMessageDescriptor *desc,
                            const json_t *v, ProtobufCMessage **out /* OUT */);

/* The encoder's state: the output options and where it is, for errors. */
typedef struct ws__json_enc {
    ws__json_path at; /* at.err is the caller's, may be NULL */
    unsigned flags;   /* WS_JSON_* */
} ws__json_enc;

/* The encoder's counterparts: a JSON string of s[0..n) (WS_EINVAL for bad
 * UTF-8), a float or double in its shortest round-trip form, one value of
 * f's type at p, a whole message (a well-known type in
 * its own form), and a message's members alone, without the braces, each
 * preceded by a comma unless *first (cleared once one is written). */
ws_err ws__json_enc_string(ws_buf *b, const char *s, size_t n);
ws_err ws__json_enc_real(ws_buf *b, double v, int is_float);
ws_err ws__json_enc_value(ws_buf *b, const ProtobufCFieldDescriptor *f, const void *p,
                          ws__json_enc *e, int depth);
ws_err ws__json_enc_message(ws_buf *b, const ProtobufCMessage *m, ws__json_enc *e,
                            int depth);
ws_err ws__json_enc_members(ws_buf *b, const ProtobufCMessage *m, ws__json_enc *e,
                            int depth, int *first);

/* Deeper than any sane message; guards against a cyclic message graph. */
#define WS_JSON_ENC_MAX_DEPTH 100

#endif
