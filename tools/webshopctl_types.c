/*
 * webshopctl's type tables: the contract services (methods come from their
 * protobuf-c descriptors) and the topic -> event message table, generated
 * from the contract (events.facts.h).
 */
#include "webshopctl_types.h"

#include <stdio.h>
#include <string.h>

#include "webshop/v1/events.facts.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/inventory.pb-c.h"
#include "webshop/v1/order.pb-c.h"
#include "webshop/v1/rpc.pb-c.h"

static const ProtobufCServiceDescriptor *const wsctl_service_table[] = {
    &webshop__v1__inventory__descriptor,
    &webshop__v1__orders__descriptor,
    &webshop__v1__reflection__descriptor,
};

/* Every topic of the contract with its message, from events.proto's
 * (webshop.v1.topic) options. */
#define WSCTL_TOPIC_ROW(topic, lower) {topic, &lower##__descriptor},
static const wsctl_topic wsctl_topic_table[] = {WEBSHOP_V1_EVENTS_TOPICS(WSCTL_TOPIC_ROW)};
#undef WSCTL_TOPIC_ROW

#define WSCTL_COUNT(a) (sizeof(a) / sizeof((a)[0]))

const ProtobufCServiceDescriptor *const *wsctl_services(size_t *n)
{
    *n = WSCTL_COUNT(wsctl_service_table);
    return wsctl_service_table;
}

const ProtobufCMethodDescriptor *wsctl_method_find(const char *name, char *path,
                                                   size_t path_len)
{
    const char *sep;
    size_t svc_len;

    if (name[0] == '/') {
        name++;
    }
    sep = strchr(name, '/');
    if (sep == NULL) {
        sep = strrchr(name, '.');
    }
    if (sep == NULL || sep == name || sep[1] == '\0') {
        return NULL;
    }
    svc_len = (size_t)(sep - name);
    for (size_t i = 0; i < WSCTL_COUNT(wsctl_service_table); i++) {
        const ProtobufCServiceDescriptor *svc = wsctl_service_table[i];
        const ProtobufCMethodDescriptor *m;

        if (strlen(svc->name) != svc_len || strncmp(svc->name, name, svc_len) != 0) {
            continue;
        }
        m = protobuf_c_service_descriptor_get_method_by_name(svc, sep + 1);
        if (m == NULL) {
            return NULL;
        }
        if (path != NULL &&
            snprintf(path, path_len, "/%s/%s", svc->name, m->name) >= (int)path_len) {
            return NULL;
        }
        return m;
    }
    return NULL;
}

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
