/*
 * webshopctl's view of a server's types, with nothing compiled in: the
 * descriptors the server serves through reflection
 * (/webshop.v1.Reflection/FileContainingSymbol), or a descriptor set file
 * (--protoset, what `protoc --include_imports -o FILE` writes), or .proto
 * files compiled by protoc on the spot (--proto with --import-path), turned
 * into protobuf-c descriptors at run time (lib/proto_dyn.h). Also the
 * printer of `describe`: a symbol's definition in .proto syntax.
 */
#ifndef WSCTL_REFLECT_H
#define WSCTL_REFLECT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "proto_dyn.h"
#include "rpc_client.h"

/* Where the types come from: at most one of protoset and proto is set;
 * neither means reflection. import_path is colon-separated (--proto). */
typedef struct wsctl_types_src {
    const char *protoset;
    const char *proto;
    const char *import_path;
} wsctl_types_src;

/* A pool holding symbol (a service, "Service.Method", a message or an enum,
 * full name, no leading dot) and everything it needs. c may be NULL unless
 * src says reflection. On failure returns NULL and why (one line, for
 * "webshopctl: ...") is in err. */
ws_proto_dyn *wsctl_types_load(const wsctl_types_src *src, ws_rpc_client *c,
                               uint32_t deadline_ms, const char *symbol, char *err,
                               size_t err_len);

/* Split a method name ("/pkg.Service/Method", "pkg.Service/Method" or
 * "pkg.Service.Method") into service (full name) and method. False for
 * anything else. */
int wsctl_method_split(const char *name, char *service, size_t service_len, char *method,
                       size_t method_len);

/* Print the definition of symbol (found in p) in .proto syntax on out. 0,
 * or -1 when p has no such symbol. */
int wsctl_describe(const ws_proto_dyn *p, const char *symbol, FILE *out);

#endif
