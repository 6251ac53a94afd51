/*
 * protobuf-c descriptors built at run time from FileDescriptorProtos, so a
 * program can pack, unpack and transcode (lib/json) messages of types it was
 * not compiled with: what webshopctl does with the descriptors a server
 * serves through reflection. A pool owns every descriptor it builds; the
 * messages made with them are ordinary protobuf-c messages (unpack with
 * protobuf_c_message_unpack, free with protobuf_c_message_free_unpacked)
 * that must be freed before the pool.
 *
 * The C layout of a dynamic message is this module's own (protobuf-c only
 * reads it through the field offsets), so a dynamic descriptor is never
 * mixed with a compiled one of the same name. What protobuf-c 1.4 keeps of
 * a field is rebuilt: label (proto3 fields without presence are
 * PROTOBUF_C_LABEL_NONE; proto3 `optional` and proto2 `optional` have a
 * has_ flag), packed-ness (proto3's default, or [packed]), oneofs (one case
 * field and a union), maps (repeated *Entry messages, as protoc makes them).
 * Not rebuilt: proto2 default values other than the type's zero (a field
 * with [default = ...] reads as zero when absent), extensions, groups.
 *
 * Message init: protobuf_c_message_init() calls the descriptor's
 * message_init, which a dynamic descriptor cannot have (it would need to
 * know its descriptor); use ws_proto_dyn_message_new() or
 * ws_proto_message_init(), which lib/json uses for every message it makes.
 */
#ifndef WS_PROTO_DYN_H
#define WS_PROTO_DYN_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "err.h"

typedef struct ws_proto_dyn ws_proto_dyn;

/* An empty pool. WS_ENOMEM. */
ws_err ws_proto_dyn_new(ws_proto_dyn **out /* OUT */);

/* Free the pool and every descriptor in it; p may be NULL. */
void ws_proto_dyn_free(ws_proto_dyn *p);

/* Add one serialized FileDescriptorProto. Files may come in any order; a
 * file whose name is already in the pool is skipped (WS_OK). Types are
 * resolved by ws_proto_dyn_build. WS_EPARSE for bytes that are not a
 * FileDescriptorProto, WS_ENOMEM. */
ws_err ws_proto_dyn_add_file(ws_proto_dyn *p, const uint8_t *data, size_t len);

/* Build the descriptors of every file added since the last build. Every
 * type a field names must be in the pool by then: WS_ENOTFOUND otherwise,
 * with the missing name in *missing (may be NULL; owned by the pool). */
ws_err ws_proto_dyn_build(ws_proto_dyn *p, const char **missing /* OUT */);

/* Lookups by full name without a leading dot ("webshop.v1.Order"); NULL
 * when the pool has no such type. */
const ProtobufCMessageDescriptor *ws_proto_dyn_message(const ws_proto_dyn *p,
                                                       const char *full_name);
const ProtobufCEnumDescriptor *ws_proto_dyn_enum(const ws_proto_dyn *p,
                                                 const char *full_name);
const ProtobufCServiceDescriptor *ws_proto_dyn_service(const ws_proto_dyn *p,
                                                       const char *full_name);

/* The FileDescriptorProto (unpacked, owned by the pool) that declares
 * full_name (a message, enum, service or "Service.Method"), or NULL. The
 * pointer is a Google__Protobuf__FileDescriptorProto. */
const ProtobufCMessage *ws_proto_dyn_file_of(const ws_proto_dyn *p,
                                             const char *full_name);

/* The descriptor proto that declares full_name, owned by the pool: a
 * google.protobuf.DescriptorProto, EnumDescriptorProto,
 * ServiceDescriptorProto or MethodDescriptorProto (look at its
 * descriptor->name), or NULL. */
const ProtobufCMessage *ws_proto_dyn_proto_of(const ws_proto_dyn *p,
                                              const char *full_name);

/* Initialise a message of any descriptor, compiled or dynamic: the
 * compiled init when there is one, else zeroes with proto3 strings empty. */
void ws_proto_message_init(const ProtobufCMessageDescriptor *d, ProtobufCMessage *m);

/* malloc and init a message of d; NULL when out of memory. Free it with
 * protobuf_c_message_free_unpacked(m, NULL). */
ProtobufCMessage *ws_proto_dyn_message_new(const ProtobufCMessageDescriptor *d);

#endif
