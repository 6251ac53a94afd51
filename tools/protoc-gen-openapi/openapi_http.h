/*
 * The HTTP annotations of http.proto and the OpenAPI pieces made of them.
 * A method's (webshop.v1.http) route lists its answers and request
 * headers; a service's (webshop.v1.http_api) declares once the answers and
 * headers several routes share, which routes name by ref. A shared piece
 * becomes one entry of the document's components (responses, headers, or
 * parameters for a request header), written only when a route uses it.
 * Nothing here knows the shop: any package may use these options.
 */
#ifndef OPENAPI_HTTP_H
#define OPENAPI_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "openapi_types.h"
#include "webshop/v1/http.pb-c.h"

typedef Webshop__V1__HttpRule__Response http_response;
typedef Webshop__V1__HttpRule__Header http_header;
typedef Google__Protobuf__ServiceDescriptorProto svc_proto;
typedef Google__Protobuf__MethodDescriptorProto method_proto;

/* One service with routes, and which of its shared pieces are used. */
typedef struct openapi_api {
    const svc_proto *svc;      /* not owned */
    const file_proto *file;    /* declaring file; not owned */
    int index;                 /* in file->service */
    Webshop__V1__HttpApi *api; /* owned; an empty HttpApi when none */
    bool *response_used;       /* owned; per api->responses */
    bool *header_used;         /* owned; per api->headers: as a response header */
    bool *param_used;          /* owned; per api->headers: as a request header */
} openapi_api;

/* The route annotation of m, or NULL when it has none (or it is
 * malformed). Free with webshop__v1__http_rule__free_unpacked. */
Webshop__V1__HttpRule *openapi_http_rule(const method_proto *m);

/* Read svc's (webshop.v1.http_api) into a and check its shared pieces
 * (named, unique names, no refs among them). Returns false with a message
 * in err; a is to be closed either way. */
bool openapi_http_api_open(openapi_api *a, const file_proto *f, int index, char *err,
                           size_t err_len);

/* Free what a owns; a may be NULL. */
void openapi_http_api_close(openapi_api *a);

/* The answer entry r stands for: r itself, or the shared answer its ref
 * names (then marked used, with its headers). Checks the entry; NULL with
 * a message in err when it is malformed or names nothing. */
const http_response *openapi_http_response_resolve(openapi_api *a, const http_response *r,
                                                   char *err, size_t err_len);

/* Check the headers of r (response headers) or of a route's request and
 * mark the shared ones they name. False with a message in err. */
bool openapi_http_headers_check(openapi_api *a, http_header *const *h, size_t n,
                                bool request, char *err, size_t err_len);

/* The message type a response body names: a full name
 * ("webshop.v1.ErrorBody") or one in the service's package. NULL when
 * there is none of that name. */
const openapi_type *openapi_http_body_type(const openapi_types *ts, const openapi_api *a,
                                           const char *body);

/* ,"headers":{...} for the n response headers h (nothing when n is 0). */
void openapi_http_emit_headers(ws_buf *out, const openapi_api *a, http_header *const *h,
                               size_t n);

/* The request headers of a route, as parameter objects, each preceded by
 * a comma when *first is false; *first is cleared once one is written. */
void openapi_http_emit_params(ws_buf *out, const openapi_api *a, http_header *const *h,
                              size_t n, bool *first);

/* The response object of answer entry r (a $ref for a shared one). */
void openapi_http_emit_response(ws_buf *out, const openapi_types *ts,
                                const openapi_api *a, const http_response *r);

/* The used shared pieces of a, as members of components.responses,
 * components.headers and components.parameters. Each member is preceded
 * by a comma unless *first is set, which is then cleared. */
void openapi_http_emit_component_responses(ws_buf *out, const openapi_types *ts,
                                           const openapi_api *a, bool *first);
void openapi_http_emit_component_headers(ws_buf *out, const openapi_api *a, bool *first);
void openapi_http_emit_component_params(ws_buf *out, const openapi_api *a, bool *first);

#endif
