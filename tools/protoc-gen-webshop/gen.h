/*
 * The code generator's driver, the one entry point main.c calls, and the
 * model the emitters share: for each .proto file with services, a
 * gen_service per service and a gen_method per method, every name computed
 * once (names.h) before any text is written. Emitters (emit_file.c,
 * emit_service.c, emit_method.c) only print this model.
 */
#ifndef GEN_GEN_H
#define GEN_GEN_H

#include <stdbool.h>
#include <stddef.h>

#include "google/protobuf/compiler/plugin.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"

#include "options.h"
#include "strbuf.h"

/* auth_options.proto: extend MethodOptions { Allow allow = 50020 }, whose
 * field 1 is the repeated identities. */
#define GEN_ALLOW_EXT        50020
#define GEN_ALLOW_IDENTITIES 1

typedef Google__Protobuf__Compiler__CodeGeneratorRequest gen_request;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse gen_response;
typedef Google__Protobuf__FileDescriptorProto gen_file_proto;
typedef Google__Protobuf__ServiceDescriptorProto gen_service_proto;
typedef Google__Protobuf__MethodDescriptorProto gen_method_proto;

/* One method; every string is owned. */
typedef struct gen_method {
    const gen_method_proto *proto;
    char *fn;            /* P_S_M: client stub */
    char *macro;         /* P_S_M_METHOD */
    char *field;         /* member of the server struct: M (or M_ if a keyword) */
    char *path;          /* "/pkg.Service/Method" */
    char *in_type;       /* protoc-c C type of the input */
    char *in_lower;      /* protoc-c lower name of the input (+ "__descriptor") */
    char *out_type;      /* ... of the output */
    char *out_lower;     /* protoc-c lower name of the output (+ "__descriptor") */
    const char *comment; /* leading comment in the .proto, or NULL (borrowed) */
    options_bytes allow; /* the (webshop.v1.allow) Allow message, into proto's
                          * options; len 0 (data NULL) when the method has none */
    size_t n_allow;      /* identities in allow, each checked by gen_method_allow */
} gen_method;

/* One service; every string is owned. */
typedef struct gen_service {
    const gen_service_proto *proto;
    char *full_name; /* "pkg.Service" */
    char *prefix;    /* P_S */
    char *lower;     /* protoc-c lower name of the service (+ "__descriptor") */
    gen_method *methods;
    size_t n_methods;
    const char *comment; /* borrowed */
    const char *file_ident; /* the file's C identifier (borrowed from gen_file) */
} gen_service;

/* One generated .proto file. */
typedef struct gen_file {
    const gen_file_proto *proto;
    const gen_request *req; /* every file protoc passed (for the descriptors) */
    char *base;  /* name without ".proto": "webshop/v1/inventory" */
    char *ident; /* base as a C identifier: "webshop_v1_inventory" */
    gen_service *services;
    size_t n_services;
} gen_file;

/* Generate code for every file_to_generate of req into resp (files, or
 * error when a .proto cannot be served: streaming methods, unknown types,
 * name clashes, unknown parameter). Returns false only when out of memory
 * (then resp may be half-filled: free it with gen_response_fini()). */
bool gen_run(const gen_request *req, gen_response *resp);

/* Free what gen_run() put into resp (not resp itself). */
void gen_response_fini(gen_response *resp);

/* Emitters. Each appends to out. */
void emit_file_header(const gen_file *f, strbuf *out);
void emit_file_source(const gen_file *f, strbuf *out);
void emit_service_header(const gen_service *s, strbuf *out);
void emit_service_source(const gen_service *s, strbuf *out);
/* The serialized FileDescriptorProtos of f and everything it imports
 * (IDENT__files, IDENT__n_files), for the server's reflection: the
 * declarations for the header, the definitions for the source. */
void emit_descriptors_decl(const gen_file *f, strbuf *out);
bool emit_descriptors_source(const gen_file *f, strbuf *out);
void emit_method_decls(const gen_service *s, const gen_method *m, strbuf *out);
void emit_method_handler_field(const gen_service *s, const gen_method *m, strbuf *out);
void emit_method_stubs(const gen_service *s, const gen_method *m, strbuf *out);
void emit_method_thunk(const gen_service *s, const gen_method *m, strbuf *out);
/* The authorization table of s (from each method's (webshop.v1.allow)), as
 * static arrays inside the register function, and its hand-over to
 * ws_rpc_server_allow(). Nothing for a service without methods. */
void emit_service_allow(const gen_service *s, strbuf *out);

/* A C block comment holding text (a .proto comment: "*" "/" defused), each
 * line prefixed with indent. Nothing for NULL or blank text. */
void emit_comment(strbuf *out, const char *text, const char *indent);

#endif
