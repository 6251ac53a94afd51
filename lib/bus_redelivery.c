/*
 * Recognising a redelivered message. libmosquitto sends a QoS 1 PUBACK
 * before calling on_message, and its public message struct does not carry
 * the DUP flag, so redeliveries are recognised by their packet id and
 * payload: a message whose (id, hash of topic and payload) matches one of
 * the last BUS_RECENT received on an earlier connection is a redelivery (the
 * broker may only resend after a reconnect). Network thread only.
 */
#include "bus_int.h"

static uint64_t bus_hash(const char *topic, const void *payload, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)topic; *p != '\0'; p++) {
        h = (h ^ *p) * 1099511628211ull;
    }
    h = (h ^ 0xff) * 1099511628211ull;
    const unsigned char *q = payload;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ q[i]) * 1099511628211ull;
    }
    return h;
}

bool ws__bus_redelivered(ws_bus *bus, int mid, const char *topic, const void *payload,
                         size_t len, uint64_t gen)
{
    uint64_t hash = bus_hash(topic, payload, len);
    bool dup = false;
    for (size_t i = 0; i < BUS_RECENT; i++) {
        const bus_recent *r = &bus->recent[i];
        if (r->gen != 0 && r->gen < gen && r->mid == mid && r->hash == hash) {
            dup = true;
            break;
        }
    }
    bus->recent[bus->recent_next] = (bus_recent){.mid = mid, .hash = hash, .gen = gen};
    bus->recent_next = (bus->recent_next + 1) % BUS_RECENT;
    return dup;
}
