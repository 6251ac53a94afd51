/*
 * The type index of the OpenAPI generator; see openapi_types.h.
 */
#include "openapi_types.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* descriptor.proto: FileDescriptorProto.message_type = 4, .enum_type = 5;
 * DescriptorProto.nested_type = 3, .enum_type = 4. */
enum { PATH_FILE_MESSAGE = 4, PATH_FILE_ENUM = 5, PATH_NESTED = 3, PATH_NESTED_ENUM = 4 };

static bool openapi_types_add(openapi_types *ts, const char *scope, size_t rel_at,
                              const char *name, const msg_proto *m, const enum_proto *e,
                              const file_proto *f, const int *path, size_t path_len)
{
    if (ts->n == ts->cap) {
        size_t cap = ts->cap == 0 ? 64 : ts->cap * 2;
        openapi_type *v = realloc(ts->v, cap * sizeof(*v));
        if (v == NULL) {
            return false;
        }
        ts->v = v;
        ts->cap = cap;
    }
    openapi_type *t = &ts->v[ts->n];
    memset(t, 0, sizeof(*t));
    size_t n = strlen(scope) + strlen(name) + 2;
    t->full = malloc(n);
    if (t->full == NULL) {
        return false;
    }
    snprintf(t->full, n, "%s.%s", scope, name);
    t->rel = t->full + rel_at;
    t->name = t->rel;
    t->msg = m;
    t->en = e;
    t->file = f;
    if (path_len <= OPENAPI_TYPE_PATH_MAX) {
        memcpy(t->path, path, path_len * sizeof(int));
        t->path_len = path_len;
    }
    ts->n++;
    return true;
}

/* m and, depth first, its nested types; path (path_len ints) is m's. */
static bool openapi_types_index_message(openapi_types *ts, const char *scope,
                                        size_t rel_at, const msg_proto *m,
                                        const file_proto *f, int *path, size_t path_len)
{
    if (!openapi_types_add(ts, scope, rel_at, m->name, m, NULL, f, path, path_len)) {
        return false;
    }
    /* ts->v moves as it grows: keep the name, not the pointer. */
    char *me = strdup(ts->v[ts->n - 1].full);
    if (me == NULL) {
        return false;
    }
    bool ok = true;
    bool deep = path_len + 2 > OPENAPI_TYPE_PATH_MAX;
    for (size_t i = 0; ok && i < m->n_nested_type; i++) {
        if (!deep) {
            path[path_len] = PATH_NESTED;
            path[path_len + 1] = (int)i;
        }
        ok = openapi_types_index_message(ts, me, rel_at, m->nested_type[i], f, path,
                                         deep ? OPENAPI_TYPE_PATH_MAX + 1 : path_len + 2);
    }
    for (size_t i = 0; ok && i < m->n_enum_type; i++) {
        if (!deep) {
            path[path_len] = PATH_NESTED_ENUM;
            path[path_len + 1] = (int)i;
        }
        ok = openapi_types_add(ts, me, rel_at, m->enum_type[i]->name, NULL,
                               m->enum_type[i], f, path,
                               deep ? OPENAPI_TYPE_PATH_MAX + 1 : path_len + 2);
    }
    free(me);
    return ok;
}

bool openapi_types_index(openapi_types *ts,
                         const Google__Protobuf__Compiler__CodeGeneratorRequest *req)
{
    for (size_t i = 0; i < req->n_proto_file; i++) {
        const file_proto *f = req->proto_file[i];
        char scope[512] = "";
        if (f->package != NULL && f->package[0] != '\0') {
            snprintf(scope, sizeof(scope), ".%s", f->package);
        }
        size_t rel_at = strlen(scope) + 1; /* past ".pkg." */
        int path[OPENAPI_TYPE_PATH_MAX];
        for (size_t k = 0; k < f->n_message_type; k++) {
            path[0] = PATH_FILE_MESSAGE;
            path[1] = (int)k;
            if (!openapi_types_index_message(ts, scope, rel_at, f->message_type[k], f,
                                             path, 2)) {
                return false;
            }
        }
        for (size_t k = 0; k < f->n_enum_type; k++) {
            path[0] = PATH_FILE_ENUM;
            path[1] = (int)k;
            if (!openapi_types_add(ts, scope, rel_at, f->enum_type[k]->name, NULL,
                                   f->enum_type[k], f, path, 2)) {
                return false;
            }
        }
    }
    return true;
}

void openapi_types_fini(openapi_types *ts)
{
    if (ts == NULL) {
        return;
    }
    for (size_t i = 0; i < ts->n; i++) {
        free(ts->v[i].full);
    }
    free(ts->v);
    memset(ts, 0, sizeof(*ts));
}

openapi_type *openapi_types_find(const openapi_types *ts, const char *full)
{
    for (size_t i = 0; full != NULL && i < ts->n; i++) {
        if (strcmp(ts->v[i].full, full) == 0) {
            return &ts->v[i];
        }
    }
    return NULL;
}

bool openapi_types_is_wkt(const char *full)
{
    static const char *const wkt[] = {
        "Timestamp",   "Duration",    "FieldMask",  "Empty",       "Struct",
        "Value",       "ListValue",   "Any",        "DoubleValue", "FloatValue",
        "Int64Value",  "UInt64Value", "Int32Value", "UInt32Value", "BoolValue",
        "StringValue", "BytesValue",  "NullValue",
    };
    static const char prefix[] = ".google.protobuf.";
    if (full == NULL || strncmp(full, prefix, sizeof(prefix) - 1) != 0) {
        return false;
    }
    for (size_t i = 0; i < sizeof(wkt) / sizeof(wkt[0]); i++) {
        if (strcmp(full + sizeof(prefix) - 1, wkt[i]) == 0) {
            return true;
        }
    }
    return false;
}

bool openapi_types_is_map_entry(const openapi_type *t)
{
    return t->msg != NULL && t->msg->options != NULL && t->msg->options->has_map_entry &&
           t->msg->options->map_entry;
}

const openapi_type *openapi_types_map_entry(const openapi_types *ts,
                                            const field_proto *fd)
{
    if (fd->label != GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED ||
        fd->type != GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE) {
        return NULL;
    }
    const openapi_type *t = openapi_types_find(ts, fd->type_name);
    return t != NULL && openapi_types_is_map_entry(t) && t->msg->n_field == 2 ? t : NULL;
}

bool openapi_types_mark(openapi_types *ts, const char *full, char *err, size_t err_len)
{
    if (openapi_types_is_wkt(full)) {
        return true;
    }
    openapi_type *t = openapi_types_find(ts, full);
    if (t == NULL) {
        snprintf(err, err_len, "unknown type %s", full != NULL ? full : "(none)");
        return false;
    }
    bool entry = openapi_types_is_map_entry(t);
    if (t->used) {
        return true;
    }
    t->used = !entry;
    for (size_t i = 0; t->msg != NULL && i < t->msg->n_field; i++) {
        const field_proto *fd = t->msg->field[i];
        if (fd->type_name == NULL || (entry && i == 0)) {
            continue;
        }
        if (!openapi_types_mark(ts, fd->type_name, err, err_len)) {
            snprintf(err + strlen(err), err_len - strlen(err), " (field %s of %s)",
                     fd->name, t->full + 1);
            return false;
        }
    }
    return true;
}

void openapi_types_name(openapi_types *ts)
{
    for (size_t i = 0; i < ts->n; i++) {
        openapi_type *t = &ts->v[i];
        t->name = t->rel;
        for (size_t k = 0; t->used && k < ts->n; k++) {
            if (k != i && ts->v[k].used && strcmp(ts->v[k].rel, t->rel) == 0) {
                t->name = t->full + 1;
                break;
            }
        }
    }
}
