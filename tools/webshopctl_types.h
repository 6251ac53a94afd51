/*
 * What webshopctl knows about the contracts: RPC methods by full name, with
 * their input and output message descriptors, taken from the protobuf-c
 * service descriptors of every contract service (so a new method needs no
 * change here), and the event topics of DESIGN.md with their message types.
 */
#ifndef WSCTL_TYPES_H
#define WSCTL_TYPES_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* The method named name: "/webshop.v1.Inventory/GetCatalog" (gRPC style),
 * "webshop.v1.Inventory/GetCatalog" or "webshop.v1.Inventory.GetCatalog".
 * Writes the canonical "/pkg.Service/Method" into path (path_len bytes).
 * NULL if no contract service has it. */
const ProtobufCMethodDescriptor *wsctl_method_find(const char *name, char *path,
                                                   size_t path_len);

/* The contract services, for listing known methods. */
const ProtobufCServiceDescriptor *const *wsctl_services(size_t *n /* OUT */);

/* An event topic and its message type. */
typedef struct wsctl_topic {
    const char *topic;
    const ProtobufCMessageDescriptor *desc;
} wsctl_topic;

/* The message type published on topic, or NULL for a topic not ours. */
const ProtobufCMessageDescriptor *wsctl_topic_find(const char *topic);

/* Every event topic (the table of DESIGN.md). */
const wsctl_topic *wsctl_topics(size_t *n /* OUT */);

#endif
