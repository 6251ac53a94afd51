/*
 * Sample messages for the JSON transcoder's tests: a generic populator that
 * sets every field of any message type to a value derived from the field,
 * and the table of every contract message type. Shared by json_test.c
 * (round trips, golden files) and json_xcheck.c (the cross-check against
 * Python's json_format).
 */
#ifndef WS_JSON_SAMPLE_H
#define WS_JSON_SAMPLE_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* A new message of type desc with every field set: scalars singular and
 * repeated (two elements, the second an extreme value: INT64_MIN,
 * UINT64_MAX, -Infinity, a string full of escapes), the first member of each
 * oneof, proto3 optionals set to zero, nested messages down to depth more
 * levels (none at 0). Free with protobuf_c_message_free_unpacked(m, NULL). */
ProtobufCMessage *json_sample_new(const ProtobufCMessageDescriptor *desc, int depth);

/* Every message type of proto/webshop/v1/\*.proto. */
extern const ProtobufCMessageDescriptor *const json_sample_contracts[];
extern const size_t json_sample_contracts_n;

/* Nesting used for the contract samples. */
#define JSON_SAMPLE_DEPTH 3

#endif
