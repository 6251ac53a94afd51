/*
 * Routing from a generated route table, the way grpc-gateway does it: the
 * (webshop.v1.http) annotations of a service's methods become a
 * ws_http_route_table (protoc-gen-webshop --webshop_out=routes:DIR writes
 * "<file>.routes.c"), and this module matches requests against it.
 *
 * A table lists bindings: a verb, a path template whose segments are
 * literal text or a {field} segment, the request field that is the body
 * ("*" the whole message, "" none) and the response field that is the
 * answer's body. Matching is on the decoded path (lib/http has already
 * refused %2F, NUL, dot segments and bad UTF-8): exact and case-sensitive,
 * a {field} matches one whole non-empty segment, no trailing '/'. A path
 * that some binding matches with another verb is answered 405 with an
 * Allow header listing the verbs of that path in table order (", HEAD"
 * added when GET is among them); HEAD is served by a GET binding.
 *
 * Nothing here allocates except ws_http_route_request; tables are static
 * and read-only, so any thread may match at any time.
 */
#ifndef WS_HTTP_ROUTE_H
#define WS_HTTP_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

#include "http.h"

/* The most {field} segments one template may have. */
#define WS_HTTP_ROUTE_MAX_PARAMS 8

/* One route: a verb and a path template, served by method `method` of the
 * table. Generated; every string is a literal. */
typedef struct ws_http_route_binding {
    const char *verb;          /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *pattern;       /* "/order/{id}" */
    const char *body;          /* "*", a request field, or "" for no body */
    const char *response_body; /* a response field, or "" for the whole message */
    int success_status;        /* 200 unless the rule says otherwise */
    size_t method;             /* index in ws_http_route_table.methods */
} ws_http_route_binding;

/* One annotated method of the service. */
typedef struct ws_http_route_method {
    const char *name;                         /* "GetOrder" */
    const ProtobufCMessageDescriptor *input;  /* request message */
    const ProtobufCMessageDescriptor *output; /* response message */
} ws_http_route_method;

/* The routes of one service, in the order of the .proto (the first
 * binding that matches wins; a generated table has no two bindings with
 * one verb and one template). */
typedef struct ws_http_route_table {
    const char *service; /* "webshop.v1.Front" */
    const ws_http_route_binding *bindings;
    size_t n_bindings;
    const ws_http_route_method *methods;
    size_t n_methods;
} ws_http_route_table;

/* A matched request: its binding and the values of its {field} segments,
 * each NUL-terminated (copied out of the path). */
typedef struct ws_http_route_match {
    const ws_http_route_table *table;
    const ws_http_route_binding *binding;
    size_t n_params;
    const char *param_names[WS_HTTP_ROUTE_MAX_PARAMS];  /* field names, in the table */
    const char *param_values[WS_HTTP_ROUTE_MAX_PARAMS]; /* point into text */
    char text[WS_HTTP_PATH_MAX];
} ws_http_route_match;

/* Outcomes of ws_http_route_find. */
typedef enum ws_http_route_result {
    WS_HTTP_ROUTE_FOUND,     /* *out holds the binding and its parameters */
    WS_HTTP_ROUTE_NO_PATH,   /* no binding matches the path: 404 */
    WS_HTTP_ROUTE_NO_METHOD, /* some do, with other verbs: 405, allow is set */
} ws_http_route_result;

/* A route handler: serve req for the binding in m (ctx as given to
 * ws_http_route_dispatch's caller). Returns the status sent. */
typedef int (*ws_http_route_fn)(ws_http_req *req, const ws_http_route_match *m,
                                void *ctx);

/* Match verb and path (decoded, NUL-terminated) against t. On FOUND *out
 * is filled; on NO_METHOD allow (allow_len bytes, may be NULL) receives the
 * Allow header's value ("GET, DELETE, HEAD"); *out is otherwise untouched.
 * Pure: no I/O, any thread. */
ws_http_route_result ws_http_route_find(const ws_http_route_table *t, const char *verb,
                                        const char *path,
                                        ws_http_route_match *out /* OUT */,
                                        char *allow /* OUT */, size_t allow_len);

/* Match req against t: 0 with *out filled when a binding takes
 * it (the caller then runs its handler); -1 when no binding matches the
 * path (nothing is sent: the caller answers, usually 404); otherwise the
 * 405 METHOD_NOT_ALLOWED (with Allow) it sent. */
int ws_http_route_dispatch(ws_http_req *req, const ws_http_route_table *t,
                           ws_http_route_match *out /* OUT */);

/* The value of {name} in m, or NULL when the template has no such
 * segment. Valid as long as m. */
const char *ws_http_route_param(const ws_http_route_match *m, const char *name);

/* A new request message of m's method with every {field} value bound into
 * its field: strings as they are, integers in decimal (no sign for
 * unsigned, no leading '+', in range), bools as true/false, enums by
 * name or number. The rest holds its defaults. On WS_OK *out owns the
 * message (free with protobuf_c_message_free_unpacked(*out, NULL)).
 * WS_EPARSE with err naming the field ("id: expected an integer") when a
 * value does not fit its field, WS_ENOMEM. */
ws_err ws_http_route_request(const ws_http_route_match *m,
                             ProtobufCMessage **out /* OUT */, char *err /* OUT */,
                             size_t err_len);

/* The 501 answer for a binding whose handler is NULL. */
int ws_http_route_unimplemented(ws_http_req *req, const ws_http_route_match *m);

#endif
