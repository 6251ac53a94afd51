/*
 * Private entry points of the bus, shared with its tests and fuzz targets:
 * how a received payload becomes a message, without a broker. Nothing here
 * is public.
 */
#ifndef WS_BUS_INT_H
#define WS_BUS_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* True when payload (len bytes) is to be read as JSON: its first byte that
 * is not a space, tab, CR or LF is '{'. */
bool ws__bus_is_json(const void *payload, size_t len);

/* Decode payload (len bytes) as a message of type desc: proto3 JSON when
 * json is true (at most max_payload bytes, default nesting limit), else
 * protobuf binary. Returns a message freed with
 * protobuf_c_message_free_unpacked(msg, NULL), or NULL when undecodable
 * (logged at warn with topic, which is only used for the log line). */
ProtobufCMessage *ws__bus_decode(const ProtobufCMessageDescriptor *desc,
                                 const char *topic, const void *payload, size_t len,
                                 bool json, size_t max_payload);

#endif
