/*
 * Custom options of a .proto file, read without compiling the .proto that
 * declares them. protoc sends an option such as `(webshop.v1.topic)` inside
 * MessageOptions as an extension field; protobuf-c, which does not know the
 * extension, keeps it among the options message's unknown fields. These
 * functions find such a field by number and decode the few wire shapes our
 * options use: a varint, a length-delimited value (string or message), and
 * the fields of such a message. Nothing is allocated; every pointer handed
 * out points into the options message, which the caller keeps alive.
 */
#ifndef GEN_OPTIONS_H
#define GEN_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* A length-delimited value: bytes of a string, or an encoded message. */
typedef struct options_bytes {
    const uint8_t *data;
    size_t len;
} options_bytes;

/* The last value of extension field `number` in opts (an options message,
 * may be NULL) when it is length-delimited: true and *out set, else false. */
bool options_find_bytes(const ProtobufCMessage *opts, uint32_t number,
                        options_bytes *out /* OUT */);

/* The same for a varint extension (int32, int64, uint32, bool, enum). */
bool options_find_varint(const ProtobufCMessage *opts, uint32_t number,
                         uint64_t *out /* OUT */);

/* Field `number` of the encoded message msg, last occurrence wins: a varint
 * (options_msg_varint) or a length-delimited value (options_msg_bytes).
 * False when absent or when msg is malformed. */
bool options_msg_varint(options_bytes msg, uint32_t number, uint64_t *out /* OUT */);
bool options_msg_bytes(options_bytes msg, uint32_t number, options_bytes *out /* OUT */);

/* The index-th occurrence (from 0) of length-delimited field `number` of
 * msg, for a repeated field: false when there are no more (or msg is
 * malformed). */
bool options_msg_bytes_at(options_bytes msg, uint32_t number, size_t index,
                          options_bytes *out /* OUT */);

#endif
