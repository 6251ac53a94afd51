/*
 * Reading custom options from protobuf-c's unknown fields; see options.h.
 */
#include "options.h"

/* A base-128 varint at *p; false at a truncated one. */
static bool options_varint_read(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;

    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;

        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

static const ProtobufCMessageUnknownField *options_find(const ProtobufCMessage *opts,
                                                        uint32_t number,
                                                        ProtobufCWireType wire)
{
    const ProtobufCMessageUnknownField *found = NULL;

    if (opts == NULL) {
        return NULL;
    }
    for (unsigned i = 0; i < opts->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *u = &opts->unknown_fields[i];

        if (u->tag == number && u->wire_type == wire) {
            found = u;
        }
    }
    return found;
}

bool options_find_bytes(const ProtobufCMessage *opts, uint32_t number, options_bytes *out)
{
    const ProtobufCMessageUnknownField *u =
        options_find(opts, number, PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED);
    const uint8_t *p;
    const uint8_t *end;
    uint64_t len;

    if (u == NULL) {
        return false;
    }
    /* protobuf-c keeps a length-delimited unknown field with its length
     * prefix (it re-emits tag + data when packing). */
    p = u->data;
    end = u->data + u->len;
    if (!options_varint_read(&p, end, &len) || len != (uint64_t)(end - p)) {
        return false;
    }
    out->data = p;
    out->len = (size_t)len;
    return true;
}

bool options_find_varint(const ProtobufCMessage *opts, uint32_t number, uint64_t *out)
{
    const ProtobufCMessageUnknownField *u =
        options_find(opts, number, PROTOBUF_C_WIRE_TYPE_VARINT);
    const uint8_t *p;

    if (u == NULL) {
        return false;
    }
    p = u->data;
    return options_varint_read(&p, u->data + u->len, out);
}

/* Walk msg to the last occurrence of field number with wire type wire, or
 * to occurrence `nth` when nth is not SIZE_MAX: *val is its varint (wire
 * 0), or *bytes its payload (wire 2). */
static bool options_msg_field(options_bytes msg, uint32_t number, unsigned wire,
                              size_t nth, uint64_t *val, options_bytes *bytes)
{
    const uint8_t *p = msg.data;
    const uint8_t *end = msg.data + msg.len;
    bool found = false;
    size_t seen = 0;

    while (p < end) {
        uint64_t key;
        uint64_t v;

        if (!options_varint_read(&p, end, &key)) {
            return false;
        }
        switch (key & 7) {
        case 0:
            if (!options_varint_read(&p, end, &v)) {
                return false;
            }
            if ((key >> 3) == number && wire == 0 && (nth == SIZE_MAX || seen++ == nth)) {
                *val = v;
                found = true;
                if (nth != SIZE_MAX) {
                    return true;
                }
            }
            break;
        case 1:
        case 5:
            v = (key & 7) == 1 ? 8 : 4;
            if ((uint64_t)(end - p) < v) {
                return false;
            }
            p += v;
            break;
        case 2:
            if (!options_varint_read(&p, end, &v) || v > (uint64_t)(end - p)) {
                return false;
            }
            if ((key >> 3) == number && wire == 2 && (nth == SIZE_MAX || seen++ == nth)) {
                bytes->data = p;
                bytes->len = (size_t)v;
                found = true;
                if (nth != SIZE_MAX) {
                    return true;
                }
            }
            p += v;
            break;
        default:
            return false; /* groups: never in our options */
        }
    }
    return found;
}

bool options_msg_varint(options_bytes msg, uint32_t number, uint64_t *out)
{
    uint64_t v;
    options_bytes unused;

    if (!options_msg_field(msg, number, 0, SIZE_MAX, &v, &unused)) {
        return false;
    }
    *out = v;
    return true;
}

bool options_msg_bytes(options_bytes msg, uint32_t number, options_bytes *out)
{
    uint64_t unused;
    options_bytes b;

    if (!options_msg_field(msg, number, 2, SIZE_MAX, &unused, &b)) {
        return false;
    }
    *out = b;
    return true;
}

bool options_msg_bytes_at(options_bytes msg, uint32_t number, size_t index,
                          options_bytes *out)
{
    uint64_t unused;
    options_bytes b;

    if (index == SIZE_MAX || !options_msg_field(msg, number, 2, index, &unused, &b)) {
        return false;
    }
    *out = b;
    return true;
}
