/*
 * What webshopctl knows about the contracts at compile time: the event
 * topics with their message types, for publish and watch. Nothing about RPC
 * (see webshopctl_reflect.h).
 */
#ifndef WSCTL_TYPES_H
#define WSCTL_TYPES_H

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

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
