/*
 * The message and enum types of a CodeGeneratorRequest, by full name, for
 * the OpenAPI document: where each is declared (for its comment), whether
 * the document references it (only those become component schemas), and
 * the schema name it gets: its name inside its package ("Order",
 * "WordStats.Result"), or its full name ("acme.parts.v1.Item") when two
 * referenced types share that name. Map entry messages and the well-known
 * types of google/protobuf are never schemas of their own: a map is an
 * object, and a well-known type has its JSON form written inline.
 */
#ifndef OPENAPI_TYPES_H
#define OPENAPI_TYPES_H

#include <stdbool.h>
#include <stddef.h>

#include "google/protobuf/compiler/plugin.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"

typedef Google__Protobuf__FileDescriptorProto file_proto;
typedef Google__Protobuf__DescriptorProto msg_proto;
typedef Google__Protobuf__EnumDescriptorProto enum_proto;
typedef Google__Protobuf__FieldDescriptorProto field_proto;

/* Deepest source_code_info path kept; a type nested deeper is described
 * without comments. */
#define OPENAPI_TYPE_PATH_MAX 32

typedef struct openapi_type {
    char *full;                      /* ".webshop.v1.Order"; owned */
    const char *rel;                 /* name inside the package; points into full */
    const char *name;                /* schema name (openapi_types_name); into full */
    const msg_proto *msg;            /* a message, or NULL */
    const enum_proto *en;            /* an enum, or NULL */
    const file_proto *file;          /* declaring file; not owned */
    int path[OPENAPI_TYPE_PATH_MAX]; /* source_code_info path */
    size_t path_len;                 /* 0: no comments */
    bool used;                       /* referenced: emitted as a schema */
} openapi_type;

typedef struct openapi_types {
    openapi_type *v; /* owned */
    size_t n, cap;
} openapi_types;

/* Index every message and enum (nested ones too) of every file of req.
 * Returns false when out of memory. ts is empty on entry; free it with
 * openapi_types_fini either way. */
bool openapi_types_index(openapi_types *ts,
                         const Google__Protobuf__Compiler__CodeGeneratorRequest *req);

/* Free what ts owns; ts may be NULL. */
void openapi_types_fini(openapi_types *ts);

/* The type of full name full (".pkg.Name"), or NULL. */
openapi_type *openapi_types_find(const openapi_types *ts, const char *full);

/* True for a well-known type whose JSON form is written inline
 * (".google.protobuf.Timestamp", wrappers, Struct, ...). */
bool openapi_types_is_wkt(const char *full);

/* True when t is a map's entry message (option map_entry). */
bool openapi_types_is_map_entry(const openapi_type *t);

/* The entry message of a map field, or NULL when fd is not a map. */
const openapi_type *openapi_types_map_entry(const openapi_types *ts,
                                            const field_proto *fd);

/* Mark the type of full name full, and every type its fields reach, as
 * used. A well-known type or a map entry is not marked itself (what a map
 * holds is). Returns false with a message in err when a type is unknown. */
bool openapi_types_mark(openapi_types *ts, const char *full, char *err, size_t err_len);

/* Give every used type its schema name; call once everything is marked. */
void openapi_types_name(openapi_types *ts);

#endif
