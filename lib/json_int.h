/*
 * Private helpers shared by the two halves of the JSON transcoder
 * (json_decode.c, json_encode.c): field-name matching as protoc derives
 * json_name, UTF-8 validation, and the map-entry test. Nothing here is public.
 */
#ifndef WS_JSON_INT_H
#define WS_JSON_INT_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

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

#endif
