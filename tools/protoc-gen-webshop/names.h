/*
 * The generator's naming rules, in one place so that every emitter names
 * things the same way. Two families:
 *
 *  - protoc-c's names, which our code must reference exactly: the C type of
 *    a message (Acme__Greet__V1__HelloRequest) and the lower-case prefix of
 *    its descriptors (acme__greet__v1__hello_request). These follow protoc-c
 *    1.4 (c_helpers.cc: FullNameToC, FullNameToLower), including a file's
 *    `option (pb_c_file).c_package`, which replaces the proto package.
 *  - our own names: P_S_M with P the package with dots turned into
 *    underscores and lower-cased, S the service and M the method in
 *    snake_case (GetCatalog -> get_catalog, HTTPGet -> http_get).
 *
 * Every function appends to a strbuf.
 */
#ifndef GEN_NAMES_H
#define GEN_NAMES_H

#include <stdbool.h>

#include "strbuf.h"

/* protoc-c's C type name of the message or service full_name (".a.b.Msg" or
 * "a.b.Msg") declared in a file of package package (may be NULL) with
 * c_package (NULL if the file sets none). */
void names_c_type(strbuf *out, const char *full_name, const char *package,
                  const char *c_package);

/* protoc-c's lower-case name: append "__descriptor" to get the descriptor. */
void names_c_lower(strbuf *out, const char *full_name, const char *package,
                   const char *c_package);

/* snake_case of a CamelCase identifier; underscores are kept. */
void names_snake(strbuf *out, const char *name);

/* Our P: the package, dots to underscores, lower-cased. */
void names_package(strbuf *out, const char *package);

/* ASCII upper-case copy. */
void names_upper(strbuf *out, const char *s);

/* True if s is a C keyword (it then cannot name a struct member). */
bool names_is_c_keyword(const char *s);

#endif
