/*
 * Run-time protobuf-c descriptors (proto_dyn.h). Each added file is kept
 * unpacked; ws_proto_dyn_build walks the files not yet built twice: first
 * it makes an empty descriptor for every message and enum (nested ones
 * included) under its full name, so that fields can point at types declared
 * later or in other files; then it fills in enums, message layouts and
 * services. Every allocation hangs off the pool's arena list.
 */
#include "proto_dyn.h"

#include <stdalign.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"

typedef Google__Protobuf__FileDescriptorProto dyn_file_pb;
typedef Google__Protobuf__DescriptorProto dyn_msg_pb;
typedef Google__Protobuf__EnumDescriptorProto dyn_enum_pb;
typedef Google__Protobuf__FieldDescriptorProto dyn_field_pb;

typedef enum dyn_kind { DYN_MESSAGE, DYN_ENUM, DYN_SERVICE, DYN_METHOD } dyn_kind;

/* One named thing of the pool. */
typedef struct dyn_sym {
    char *name; /* full name, no leading dot */
    dyn_kind kind;
    const dyn_file_pb *file;
    const void *pb; /* its DescriptorProto / EnumDescriptorProto / ... */
    void *desc;     /* the protobuf-c descriptor being built */
} dyn_sym;

typedef struct dyn_chunk {
    struct dyn_chunk *next;
    alignas(max_align_t) unsigned char data[];
} dyn_chunk;

struct ws_proto_dyn {
    dyn_file_pb **files;
    size_t n_files, cap_files, n_built;
    dyn_sym *syms;
    size_t n_syms, cap_syms;
    dyn_chunk *arena;
    char missing[256];
};

/* ---- memory --------------------------------------------------------------- */

static void *dyn_alloc(ws_proto_dyn *p, size_t n)
{
    dyn_chunk *c = calloc(1, sizeof(*c) + (n ? n : 1));
    if (c == NULL) {
        return NULL;
    }
    c->next = p->arena;
    p->arena = c;
    return c->data;
}

static char *dyn_strdup(ws_proto_dyn *p, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = dyn_alloc(p, n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

/* "pkg" + "." + "name", or "name" when pkg is empty. */
static char *dyn_join(ws_proto_dyn *p, const char *pkg, const char *name)
{
    size_t a = pkg ? strlen(pkg) : 0, b = strlen(name);
    char *d = dyn_alloc(p, a + b + 2);
    if (d == NULL) {
        return NULL;
    }
    if (a > 0) {
        memcpy(d, pkg, a);
        d[a++] = '.';
    }
    memcpy(d + a, name, b + 1);
    return d;
}

/* The C identifier protobuf-c would use ("webshop.v1.Order" ->
 * "webshop_v1_Order"): only for log lines and error messages. */
static char *dyn_c_name(ws_proto_dyn *p, const char *full)
{
    char *c = dyn_strdup(p, full);
    for (char *q = c; q != NULL && *q != '\0'; q++) {
        if (*q == '.') {
            *q = '_';
        }
    }
    return c;
}

ws_err ws_proto_dyn_new(ws_proto_dyn **out)
{
    *out = calloc(1, sizeof(**out));
    return *out != NULL ? WS_OK : WS_ENOMEM;
}

void ws_proto_dyn_free(ws_proto_dyn *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->n_files; i++) {
        google__protobuf__file_descriptor_proto__free_unpacked(p->files[i], NULL);
    }
    free(p->files);
    free(p->syms);
    while (p->arena != NULL) {
        dyn_chunk *n = p->arena->next;
        free(p->arena);
        p->arena = n;
    }
    free(p);
}

/* ---- symbols -------------------------------------------------------------- */

static dyn_sym *dyn_find(const ws_proto_dyn *p, const char *name, dyn_kind kind)
{
    if (name != NULL && name[0] == '.') {
        name++;
    }
    for (size_t i = 0; name != NULL && i < p->n_syms; i++) {
        if (p->syms[i].kind == kind && strcmp(p->syms[i].name, name) == 0) {
            return &p->syms[i];
        }
    }
    return NULL;
}

static ws_err dyn_sym_add(ws_proto_dyn *p, char *name, dyn_kind kind,
                          const dyn_file_pb *f, const void *pb, void *desc)
{
    if (name == NULL) {
        return WS_ENOMEM;
    }
    if (p->n_syms == p->cap_syms) {
        size_t cap = p->cap_syms ? 2 * p->cap_syms : 32;
        dyn_sym *s = realloc(p->syms, cap * sizeof(*s));
        if (s == NULL) {
            return WS_ENOMEM;
        }
        p->syms = s;
        p->cap_syms = cap;
    }
    p->syms[p->n_syms++] = (dyn_sym){name, kind, f, pb, desc};
    return WS_OK;
}

ws_err ws_proto_dyn_add_file(ws_proto_dyn *p, const uint8_t *data, size_t len)
{
    dyn_file_pb *f = google__protobuf__file_descriptor_proto__unpack(NULL, len, data);
    if (f == NULL || f->name == NULL) {
        if (f != NULL) {
            google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
        }
        return WS_EPARSE;
    }
    for (size_t i = 0; i < p->n_files; i++) {
        if (strcmp(p->files[i]->name, f->name) == 0) {
            google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
            return WS_OK;
        }
    }
    if (p->n_files == p->cap_files) {
        size_t cap = p->cap_files ? 2 * p->cap_files : 8;
        dyn_file_pb **n = realloc(p->files, cap * sizeof(*n));
        if (n == NULL) {
            google__protobuf__file_descriptor_proto__free_unpacked(f, NULL);
            return WS_ENOMEM;
        }
        p->files = n;
        p->cap_files = cap;
    }
    p->files[p->n_files++] = f;
    return WS_OK;
}

/* Pass one: an empty descriptor per message and enum, nested ones too. */
static ws_err dyn_declare_enum(ws_proto_dyn *p, const dyn_file_pb *f, const char *scope,
                               const dyn_enum_pb *e)
{
    ProtobufCEnumDescriptor *d = dyn_alloc(p, sizeof(*d));
    if (d == NULL) {
        return WS_ENOMEM;
    }
    return dyn_sym_add(p, dyn_join(p, scope, e->name), DYN_ENUM, f, e, d);
}

static ws_err dyn_declare_message(ws_proto_dyn *p, const dyn_file_pb *f,
                                  const char *scope, const dyn_msg_pb *m)
{
    ProtobufCMessageDescriptor *d = dyn_alloc(p, sizeof(*d));
    char *name = dyn_join(p, scope, m->name);
    if (d == NULL || name == NULL) {
        return WS_ENOMEM;
    }
    ws_err err = dyn_sym_add(p, name, DYN_MESSAGE, f, m, d);
    for (size_t i = 0; err == WS_OK && i < m->n_nested_type; i++) {
        err = dyn_declare_message(p, f, name, m->nested_type[i]);
    }
    for (size_t i = 0; err == WS_OK && i < m->n_enum_type; i++) {
        err = dyn_declare_enum(p, f, name, m->enum_type[i]);
    }
    return err;
}

/* ---- enums ---------------------------------------------------------------- */

static int dyn_cmp_value(const void *a, const void *b)
{
    int x = ((const ProtobufCEnumValue *)a)->value,
        y = ((const ProtobufCEnumValue *)b)->value;
    return (x > y) - (x < y);
}

static int dyn_cmp_value_index(const void *a, const void *b)
{
    return strcmp(((const ProtobufCEnumValueIndex *)a)->name,
                  ((const ProtobufCEnumValueIndex *)b)->name);
}

/* Runs of consecutive numbers, and the sentinel protobuf-c expects. */
static ProtobufCIntRange *dyn_ranges(ws_proto_dyn *p, const int *nums, unsigned n,
                                     unsigned *n_ranges)
{
    ProtobufCIntRange *r = dyn_alloc(p, (n + 1) * sizeof(*r));
    unsigned k = 0;
    for (unsigned i = 0; r != NULL && i < n; i++) {
        if (i == 0 || nums[i] != nums[i - 1] + 1) {
            r[k].start_value = nums[i];
            r[k].orig_index = i;
            k++;
        }
    }
    if (r != NULL) {
        r[k].start_value = 0;
        r[k].orig_index = n;
    }
    *n_ranges = k;
    return r;
}

static ws_err dyn_build_enum(ws_proto_dyn *p, dyn_sym *s)
{
    const dyn_enum_pb *e = s->pb;
    ProtobufCEnumDescriptor *d = s->desc;
    unsigned n = (unsigned)e->n_value;
    ProtobufCEnumValue *v = dyn_alloc(p, (n ? n : 1) * sizeof(*v));
    ProtobufCEnumValueIndex *byname = dyn_alloc(p, (n ? n : 1) * sizeof(*byname));
    int *nums = dyn_alloc(p, (n ? n : 1) * sizeof(*nums));
    if (v == NULL || byname == NULL || nums == NULL) {
        return WS_ENOMEM;
    }
    for (unsigned i = 0; i < n; i++) {
        v[i].name = e->value[i]->name;
        v[i].c_name = e->value[i]->name;
        v[i].value = e->value[i]->number;
    }
    qsort(v, n, sizeof(*v), dyn_cmp_value);
    unsigned u = 0; /* aliases: keep the first name of each number */
    for (unsigned i = 0; i < n; i++) {
        if (u == 0 || v[i].value != v[u - 1].value) {
            v[u++] = v[i];
        }
    }
    for (unsigned i = 0; i < n; i++) {
        byname[i].name = e->value[i]->name;
        for (unsigned j = 0; j < u; j++) {
            if (v[j].value == e->value[i]->number) {
                byname[i].index = j;
            }
        }
    }
    qsort(byname, n, sizeof(*byname), dyn_cmp_value_index);
    for (unsigned i = 0; i < u; i++) {
        nums[i] = v[i].value;
    }
    d->magic = PROTOBUF_C__ENUM_DESCRIPTOR_MAGIC;
    d->name = s->name;
    d->short_name = e->name;
    d->c_name = dyn_c_name(p, s->name);
    if (d->c_name == NULL) {
        return WS_ENOMEM;
    }
    d->package_name = s->file->package ? s->file->package : "";
    d->n_values = u;
    d->values = v;
    d->n_value_names = n;
    d->values_by_name = byname;
    d->value_ranges = dyn_ranges(p, nums, u, &d->n_value_ranges);
    return d->c_name && d->value_ranges ? WS_OK : WS_ENOMEM;
}

/* ---- messages ------------------------------------------------------------- */

/* Size and alignment of one value of type t (not repeated). */
static size_t dyn_value_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4; /* 32-bit numbers, float, enum */
    }
}

static size_t dyn_value_align(ProtobufCType t)
{
    return t == PROTOBUF_C_TYPE_BYTES ? alignof(ProtobufCBinaryData) : dyn_value_size(t);
}

static size_t dyn_place(size_t *at, size_t size, size_t align)
{
    *at = (*at + align - 1) / align * align;
    size_t off = *at;
    *at += size;
    return off;
}

static ProtobufCType dyn_type(int t)
{
    switch (t) {
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE:
        return PROTOBUF_C_TYPE_DOUBLE;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT:
        return PROTOBUF_C_TYPE_FLOAT;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT64:
        return PROTOBUF_C_TYPE_INT64;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT64:
        return PROTOBUF_C_TYPE_UINT64;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT32:
        return PROTOBUF_C_TYPE_INT32;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED64:
        return PROTOBUF_C_TYPE_FIXED64;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED32:
        return PROTOBUF_C_TYPE_FIXED32;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BOOL:
        return PROTOBUF_C_TYPE_BOOL;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_STRING:
        return PROTOBUF_C_TYPE_STRING;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE:
        return PROTOBUF_C_TYPE_MESSAGE;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BYTES:
        return PROTOBUF_C_TYPE_BYTES;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT32:
        return PROTOBUF_C_TYPE_UINT32;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_ENUM:
        return PROTOBUF_C_TYPE_ENUM;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED32:
        return PROTOBUF_C_TYPE_SFIXED32;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64:
        return PROTOBUF_C_TYPE_SFIXED64;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32:
        return PROTOBUF_C_TYPE_SINT32;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT64:
        return PROTOBUF_C_TYPE_SINT64;
    default:
        return (ProtobufCType)-1; /* groups */
    }
}

static bool dyn_is_proto3(const dyn_file_pb *f)
{
    return f->syntax != NULL && strcmp(f->syntax, "proto3") == 0;
}

static bool dyn_packable(ProtobufCType t)
{
    return t != PROTOBUF_C_TYPE_STRING && t != PROTOBUF_C_TYPE_BYTES &&
           t != PROTOBUF_C_TYPE_MESSAGE;
}

/* Fields sorted by number, for protobuf-c. */
static int dyn_cmp_field(const void *a, const void *b)
{
    uint32_t x = ((const ProtobufCFieldDescriptor *)a)->id;
    uint32_t y = ((const ProtobufCFieldDescriptor *)b)->id;
    return (x > y) - (x < y);
}

static _Thread_local const ProtobufCFieldDescriptor *dyn_sort_fields;

static int dyn_cmp_field_name(const void *a, const void *b)
{
    return strcmp(dyn_sort_fields[*(const unsigned *)a].name,
                  dyn_sort_fields[*(const unsigned *)b].name);
}

/* Resolve the type a field names. */
static ws_err dyn_field_type(ws_proto_dyn *p, const dyn_field_pb *fp,
                             ProtobufCFieldDescriptor *fd)
{
    if (fd->type != PROTOBUF_C_TYPE_MESSAGE && fd->type != PROTOBUF_C_TYPE_ENUM) {
        return WS_OK;
    }
    dyn_sym *t = dyn_find(p, fp->type_name,
                          fd->type == PROTOBUF_C_TYPE_MESSAGE ? DYN_MESSAGE : DYN_ENUM);
    if (t == NULL) {
        snprintf(p->missing, sizeof(p->missing), "%s",
                 fp->type_name ? fp->type_name : "?");
        return WS_ENOTFOUND;
    }
    fd->descriptor = t->desc;
    return WS_OK;
}

/* Lay out field i (and, for the first member of a oneof, the whole oneof). */
static ws_err dyn_layout_field(ws_proto_dyn *p, const dyn_file_pb *f, const dyn_msg_pb *m,
                               size_t i, ProtobufCFieldDescriptor *fd, size_t *at,
                               size_t *oneof_off, size_t *oneof_case)
{
    const dyn_field_pb *fp = m->field[i];
    fd->name = fp->name;
    fd->id = (uint32_t)fp->number;
    fd->type = dyn_type(fp->type);
    if ((int)fd->type < 0) {
        snprintf(p->missing, sizeof(p->missing), "%s.%s (groups are not supported)",
                 m->name, fp->name);
        return WS_ENOTFOUND;
    }
    ws_err err = dyn_field_type(p, fp, fd);
    if (err != WS_OK) {
        return err;
    }
    size_t vs = dyn_value_size(fd->type), va = dyn_value_align(fd->type);
    bool repeated =
        fp->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED;
    bool p3opt = fp->has_proto3_optional && fp->proto3_optional;
    bool in_oneof = fp->has_oneof_index && !p3opt;
    if (repeated) {
        fd->label = PROTOBUF_C_LABEL_REPEATED;
        fd->quantifier_offset = (unsigned)dyn_place(at, sizeof(size_t), alignof(size_t));
        fd->offset = (unsigned)dyn_place(at, sizeof(void *), alignof(void *));
        bool packed = dyn_is_proto3(f) && dyn_packable(fd->type);
        if (fp->options != NULL && fp->options->has_packed) {
            packed = fp->options->packed && dyn_packable(fd->type);
        }
        fd->flags = packed ? PROTOBUF_C_FIELD_FLAG_PACKED : 0;
    } else if (in_oneof) {
        int o = fp->oneof_index;
        if (oneof_off[o] == SIZE_MAX) {
            /* The case field, then a union big enough for every member. */
            oneof_case[o] = dyn_place(at, sizeof(uint32_t), alignof(uint32_t));
            size_t big = 0, al = 1;
            for (size_t j = 0; j < m->n_field; j++) {
                const dyn_field_pb *g = m->field[j];
                if (g->has_oneof_index && g->oneof_index == o &&
                    !(g->has_proto3_optional && g->proto3_optional)) {
                    ProtobufCType gt = dyn_type(g->type);
                    big = dyn_value_size(gt) > big ? dyn_value_size(gt) : big;
                    al = dyn_value_align(gt) > al ? dyn_value_align(gt) : al;
                }
            }
            oneof_off[o] = dyn_place(at, big, al);
        }
        fd->label = PROTOBUF_C_LABEL_NONE;
        fd->flags = PROTOBUF_C_FIELD_FLAG_ONEOF;
        fd->quantifier_offset = (unsigned)oneof_case[o];
        fd->offset = (unsigned)oneof_off[o];
    } else if (dyn_is_proto3(f) && !p3opt) {
        fd->label = PROTOBUF_C_LABEL_NONE;
        fd->offset = (unsigned)dyn_place(at, vs, va);
        if (fd->type == PROTOBUF_C_TYPE_STRING) {
            fd->default_value = protobuf_c_empty_string;
        }
    } else {
        fd->label =
            fp->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REQUIRED
                ? PROTOBUF_C_LABEL_REQUIRED
                : PROTOBUF_C_LABEL_OPTIONAL;
        bool has_flag = fd->type != PROTOBUF_C_TYPE_STRING &&
                        fd->type != PROTOBUF_C_TYPE_MESSAGE &&
                        fd->label == PROTOBUF_C_LABEL_OPTIONAL;
        if (has_flag) {
            fd->quantifier_offset = (unsigned)dyn_place(at, sizeof(protobuf_c_boolean),
                                                        alignof(protobuf_c_boolean));
        }
        fd->offset = (unsigned)dyn_place(at, vs, va);
    }
    return WS_OK;
}

static ws_err dyn_build_message(ws_proto_dyn *p, dyn_sym *s)
{
    const dyn_msg_pb *m = s->pb;
    ProtobufCMessageDescriptor *d = s->desc;
    unsigned n = (unsigned)m->n_field;
    ProtobufCFieldDescriptor *fields = dyn_alloc(p, (n ? n : 1) * sizeof(*fields));
    unsigned *byname = dyn_alloc(p, (n ? n : 1) * sizeof(*byname));
    size_t *oneof_off = dyn_alloc(p, (m->n_oneof_decl + 1) * sizeof(size_t));
    size_t *oneof_case = dyn_alloc(p, (m->n_oneof_decl + 1) * sizeof(size_t));
    int *nums = dyn_alloc(p, (n ? n : 1) * sizeof(*nums));
    if (!fields || !byname || !oneof_off || !oneof_case || !nums) {
        return WS_ENOMEM;
    }
    for (size_t o = 0; o < m->n_oneof_decl; o++) {
        oneof_off[o] = SIZE_MAX;
    }
    size_t at = sizeof(ProtobufCMessage);
    for (size_t i = 0; i < n; i++) {
        ws_err err =
            dyn_layout_field(p, s->file, m, i, &fields[i], &at, oneof_off, oneof_case);
        if (err != WS_OK) {
            return err;
        }
    }
    qsort(fields, n, sizeof(*fields), dyn_cmp_field);
    for (unsigned i = 0; i < n; i++) {
        byname[i] = i;
        nums[i] = (int)fields[i].id;
    }
    dyn_sort_fields = fields;
    qsort(byname, n, sizeof(*byname), dyn_cmp_field_name);
    d->magic = PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC;
    d->name = s->name;
    d->short_name = m->name;
    d->c_name = dyn_c_name(p, s->name);
    if (d->c_name == NULL) {
        return WS_ENOMEM;
    }
    d->package_name = s->file->package ? s->file->package : "";
    d->sizeof_message =
        (at + alignof(max_align_t) - 1) / alignof(max_align_t) * alignof(max_align_t);
    d->n_fields = n;
    d->fields = fields;
    d->fields_sorted_by_name = byname;
    d->field_ranges = dyn_ranges(p, nums, n, &d->n_field_ranges);
    d->message_init = NULL;
    return d->c_name && d->field_ranges ? WS_OK : WS_ENOMEM;
}

/* ---- services ------------------------------------------------------------- */

static _Thread_local const ProtobufCMethodDescriptor *dyn_sort_methods;

static int dyn_cmp_method_index(const void *a, const void *b)
{
    return strcmp(dyn_sort_methods[*(const unsigned *)a].name,
                  dyn_sort_methods[*(const unsigned *)b].name);
}

static ws_err dyn_build_service(ws_proto_dyn *p, const dyn_file_pb *f,
                                const Google__Protobuf__ServiceDescriptorProto *sv)
{
    ProtobufCServiceDescriptor *d = dyn_alloc(p, sizeof(*d));
    unsigned n = (unsigned)sv->n_method;
    ProtobufCMethodDescriptor *ms = dyn_alloc(p, (n ? n : 1) * sizeof(*ms));
    unsigned *idx = dyn_alloc(p, (n ? n : 1) * sizeof(*idx));
    char *name = dyn_join(p, f->package, sv->name);
    if (!d || !ms || !idx || !name) {
        return WS_ENOMEM;
    }
    for (unsigned i = 0; i < n; i++) {
        const Google__Protobuf__MethodDescriptorProto *mp = sv->method[i];
        dyn_sym *in = dyn_find(p, mp->input_type, DYN_MESSAGE);
        dyn_sym *out = dyn_find(p, mp->output_type, DYN_MESSAGE);
        if (in == NULL || out == NULL) {
            snprintf(p->missing, sizeof(p->missing), "%s",
                     in == NULL ? mp->input_type : mp->output_type);
            return WS_ENOTFOUND;
        }
        ms[i] = (ProtobufCMethodDescriptor){mp->name, in->desc, out->desc};
        idx[i] = i;
        ws_err err =
            dyn_sym_add(p, dyn_join(p, name, mp->name), DYN_METHOD, f, mp, &ms[i]);
        if (err != WS_OK) {
            return err;
        }
    }
    dyn_sort_methods = ms;
    qsort(idx, n, sizeof(*idx), dyn_cmp_method_index);
    d->magic = PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC;
    d->name = name;
    d->short_name = sv->name;
    d->c_name = dyn_c_name(p, name);
    if (d->c_name == NULL) {
        return WS_ENOMEM;
    }
    d->package = f->package ? f->package : "";
    d->n_methods = n;
    d->methods = ms;
    d->method_indices_by_name = idx;
    return dyn_sym_add(p, name, DYN_SERVICE, f, sv, d);
}

/* ---- build ---------------------------------------------------------------- */

ws_err ws_proto_dyn_build(ws_proto_dyn *p, const char **missing)
{
    size_t first_sym = p->n_syms;
    ws_err err = WS_OK;
    p->missing[0] = '\0';
    for (size_t i = p->n_built; err == WS_OK && i < p->n_files; i++) {
        const dyn_file_pb *f = p->files[i];
        for (size_t j = 0; err == WS_OK && j < f->n_message_type; j++) {
            err = dyn_declare_message(p, f, f->package, f->message_type[j]);
        }
        for (size_t j = 0; err == WS_OK && j < f->n_enum_type; j++) {
            err = dyn_declare_enum(p, f, f->package, f->enum_type[j]);
        }
    }
    size_t declared = p->n_syms;
    for (size_t i = first_sym; err == WS_OK && i < declared; i++) {
        if (p->syms[i].kind == DYN_ENUM) {
            err = dyn_build_enum(p, &p->syms[i]);
        }
    }
    for (size_t i = first_sym; err == WS_OK && i < declared; i++) {
        if (p->syms[i].kind == DYN_MESSAGE) {
            err = dyn_build_message(p, &p->syms[i]);
        }
    }
    for (size_t i = p->n_built; err == WS_OK && i < p->n_files; i++) {
        const dyn_file_pb *f = p->files[i];
        for (size_t j = 0; err == WS_OK && j < f->n_service; j++) {
            err = dyn_build_service(p, f, f->service[j]);
        }
    }
    if (err == WS_OK) {
        p->n_built = p->n_files;
    }
    if (missing != NULL) {
        *missing = p->missing[0] != '\0' ? p->missing : NULL;
    }
    return err;
}

const ProtobufCMessageDescriptor *ws_proto_dyn_message(const ws_proto_dyn *p,
                                                       const char *full_name)
{
    dyn_sym *s = dyn_find(p, full_name, DYN_MESSAGE);
    return s != NULL ? s->desc : NULL;
}

const ProtobufCEnumDescriptor *ws_proto_dyn_enum(const ws_proto_dyn *p,
                                                 const char *full_name)
{
    dyn_sym *s = dyn_find(p, full_name, DYN_ENUM);
    return s != NULL ? s->desc : NULL;
}

const ProtobufCServiceDescriptor *ws_proto_dyn_service(const ws_proto_dyn *p,
                                                       const char *full_name)
{
    dyn_sym *s = dyn_find(p, full_name, DYN_SERVICE);
    return s != NULL ? s->desc : NULL;
}

const ProtobufCMessage *ws_proto_dyn_file_of(const ws_proto_dyn *p, const char *full_name)
{
    for (int k = DYN_MESSAGE; k <= DYN_METHOD; k++) {
        dyn_sym *s = dyn_find(p, full_name, (dyn_kind)k);
        if (s != NULL) {
            return &s->file->base;
        }
    }
    return NULL;
}

const ProtobufCMessage *ws_proto_dyn_proto_of(const ws_proto_dyn *p,
                                              const char *full_name)
{
    for (int k = DYN_MESSAGE; k <= DYN_METHOD; k++) {
        dyn_sym *s = dyn_find(p, full_name, (dyn_kind)k);
        if (s != NULL) {
            return s->pb;
        }
    }
    return NULL;
}

/* ---- init ----------------------------------------------------------------- */

void ws_proto_message_init(const ProtobufCMessageDescriptor *d, ProtobufCMessage *m)
{
    if (d->message_init != NULL) {
        d->message_init(m);
        return;
    }
    memset(m, 0, d->sizeof_message);
    m->descriptor = d;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED &&
            f->default_value != NULL && !(f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) {
            *(const char **)((char *)m + f->offset) = f->default_value;
        }
    }
}

ProtobufCMessage *ws_proto_dyn_message_new(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = malloc(d->sizeof_message);
    if (m != NULL) {
        ws_proto_message_init(d, m);
    }
    return m;
}
