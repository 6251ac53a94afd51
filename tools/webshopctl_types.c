/*
 * webshopctl's one compiled-in type table: topic -> event message, generated
 * from the contract (events.facts.h), for publish and watch. RPC types are
 * never compiled in: call and describe take them from the server
 * (webshopctl_reflect.c).
 */
#include "webshopctl_types.h"

#include <stdio.h>
#include <string.h>

#include "webshop/v1/events.facts.h"
#include "webshop/v1/events.pb-c.h"

/* Every topic of the contract with its message, from events.proto's
 * (webshop.v1.topic) options. */
#define WSCTL_TOPIC_ROW(topic, lower) {topic, &lower##__descriptor},
static const wsctl_topic wsctl_topic_table[] = {
    WEBSHOP_V1_EVENTS_TOPICS(WSCTL_TOPIC_ROW)};
#undef WSCTL_TOPIC_ROW

#define WSCTL_COUNT(a) (sizeof(a) / sizeof((a)[0]))

const ProtobufCMessageDescriptor *wsctl_topic_find(const char *topic)
{
    for (size_t i = 0; i < WSCTL_COUNT(wsctl_topic_table); i++) {
        if (strcmp(wsctl_topic_table[i].topic, topic) == 0) {
            return wsctl_topic_table[i].desc;
        }
    }
    return NULL;
}

const wsctl_topic *wsctl_topics(size_t *n)
{
    *n = WSCTL_COUNT(wsctl_topic_table);
    return wsctl_topic_table;
}
