/*
 * The HTTP routes of a .proto file's services, from the (webshop.v1.http)
 * annotations of their methods (webshop/v1/http.proto), as a model for the
 * emitter of "<file>.routes.h" and "<file>.routes.c" (emit_routes.c): per
 * service, every binding (the rule itself and its additional_bindings)
 * with its verb, path template, body and response_body, each checked
 * against the request and response messages before anything is printed.
 * The generated table is served by lib/http_route.h.
 */
#ifndef GEN_ROUTES_H
#define GEN_ROUTES_H

#include <stdbool.h>
#include <stddef.h>

#include "gen.h"

/* Option field numbers, as declared in proto/webshop/v1/http.proto. */
#define ROUTES_OPT_HTTP 50001 /* MethodOptions: HttpRule */

typedef Google__Protobuf__DescriptorProto routes_msg_proto;

/* One binding; strings owned except verb (a literal). */
typedef struct routes_binding {
    const char *verb;    /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    char *pattern;       /* "/order/{id}" */
    char *body;          /* "*", a field, or "" */
    char *response_body; /* a field, or "" */
    int success_status;  /* 200 when the rule says 0 */
    size_t method;       /* index in routes_service.methods */
    bool additional;     /* from additional_bindings */
} routes_binding;

/* One service with at least one routed method. */
typedef struct routes_service {
    const gen_service *svc;     /* borrowed from the gen_file */
    char *handlers;             /* P_S_routes: the struct of handlers */
    char *table;                /* P_S_route_table */
    char *serve;                /* P_S_routes_serve */
    char *bindings_name;        /* P_S_route_bindings (static) */
    char *methods_name;         /* P_S_route_methods (static) */
    const gen_method **methods; /* the routed methods, in .proto order */
    size_t n_methods;
    routes_binding *bindings;
    size_t n_bindings;
} routes_service;

typedef struct gen_routes {
    const gen_file *file;
    char *guard; /* WS_GEN_WEBSHOP_V1_FRONT_ROUTES_H */
    routes_service *services;
    size_t n_services;
} gen_routes;

/* Build the routes of f. msg_of(full_name, arg) finds a message of the
 * request by its full name (".pkg.Msg"), or NULL. Returns 0, or -1 with a
 * message in err naming the method and the option (a rule without a path
 * or with two, a template we cannot match, a {field} or body or
 * response_body that is no fit field, two bindings with one verb and
 * template, a nested additional binding), or -2 when out of memory. A
 * file without routed methods builds an empty model (n_services 0).
 * Whatever the result, free the model with routes_fini(). */
int routes_build(const gen_file *f,
                 const routes_msg_proto *(*msg_of)(const char *full_name, void *arg),
                 void *arg, gen_routes *out /* OUT */, char *err, size_t err_len);

void routes_fini(gen_routes *r);

/* The text of "<file>.routes.h" and "<file>.routes.c". */
void emit_routes_header(const gen_routes *r, strbuf *out);
void emit_routes_source(const gen_routes *r, strbuf *out);

#endif
