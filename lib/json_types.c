/*
 * The message types the JSON transcoder knows by name (json.h,
 * ws_json_register and ws_json_type_find), for google.protobuf.Any: the
 * well-known types, built in, and what the process registered. A sorted
 * array would be faster to search, but the table holds tens of types and is
 * searched once per Any, so a list in registration order is enough.
 */
#include "json.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/empty.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"

static const ProtobufCMessageDescriptor *const json_types_builtin[] = {
    &google__protobuf__any__descriptor,
    &google__protobuf__duration__descriptor,
    &google__protobuf__empty__descriptor,
    &google__protobuf__field_mask__descriptor,
    &google__protobuf__struct__descriptor,
    &google__protobuf__value__descriptor,
    &google__protobuf__list_value__descriptor,
    &google__protobuf__timestamp__descriptor,
    &google__protobuf__double_value__descriptor,
    &google__protobuf__float_value__descriptor,
    &google__protobuf__int64_value__descriptor,
    &google__protobuf__uint64_value__descriptor,
    &google__protobuf__int32_value__descriptor,
    &google__protobuf__uint32_value__descriptor,
    &google__protobuf__bool_value__descriptor,
    &google__protobuf__string_value__descriptor,
    &google__protobuf__bytes_value__descriptor,
};

/* The registered types; reachable from here until exit, never freed. */
static struct {
    pthread_mutex_t lock;
    const ProtobufCMessageDescriptor **types; /* guarded by lock */
    size_t n, cap;                            /* guarded by lock */
} json_types = {.lock = PTHREAD_MUTEX_INITIALIZER};

static const ProtobufCMessageDescriptor *json_types_find_locked(const char *name)
{
    for (size_t i = 0; i < sizeof json_types_builtin / sizeof json_types_builtin[0];
         i++) {
        if (strcmp(json_types_builtin[i]->name, name) == 0) {
            return json_types_builtin[i];
        }
    }
    for (size_t i = 0; i < json_types.n; i++) {
        if (strcmp(json_types.types[i]->name, name) == 0) {
            return json_types.types[i];
        }
    }
    return NULL;
}

/* Add desc and, depth first, the message types of its fields. */
static ws_err json_types_add_locked(const ProtobufCMessageDescriptor *desc)
{
    if (json_types_find_locked(desc->name) != NULL) {
        return WS_OK;
    }
    if (json_types.n == json_types.cap) {
        size_t cap = json_types.cap > 0 ? json_types.cap * 2 : 32;
        const ProtobufCMessageDescriptor **t = realloc(json_types.types, cap * sizeof *t);
        if (t == NULL) {
            return WS_ENOMEM;
        }
        json_types.types = t;
        json_types.cap = cap;
    }
    json_types.types[json_types.n++] = desc;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            ws_err err = json_types_add_locked(f->descriptor);
            if (err != WS_OK) {
                return err;
            }
        }
    }
    return WS_OK;
}

ws_err ws_json_register(const ProtobufCMessageDescriptor *desc)
{
    if (desc == NULL || desc->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        return WS_EINVAL;
    }
    pthread_mutex_lock(&json_types.lock);
    ws_err err = json_types_add_locked(desc);
    pthread_mutex_unlock(&json_types.lock);
    return err;
}

const ProtobufCMessageDescriptor *ws_json_type_find(const char *full_name)
{
    if (full_name == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&json_types.lock);
    const ProtobufCMessageDescriptor *d = json_types_find_locked(full_name);
    pthread_mutex_unlock(&json_types.lock);
    return d;
}
