/*
 * HTTP annotations and the answers, headers and shared components made of
 * them; see openapi_http.h.
 */
#include "openapi_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "openapi_schema.h"
#include "openapi_text.h"
#include "options.h"

/* http.proto: (webshop.v1.http) on methods, (webshop.v1.http_api) on
 * services. */
#define OPENAPI_HTTP_OPTION     50001
#define OPENAPI_HTTP_API_OPTION 50002

static bool openapi_http_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

Webshop__V1__HttpRule *openapi_http_rule(const method_proto *m)
{
    options_bytes b;
    if (m->options == NULL ||
        !options_find_bytes(&m->options->base, OPENAPI_HTTP_OPTION, &b)) {
        return NULL;
    }
    return webshop__v1__http_rule__unpack(NULL, b.len, b.data);
}

/* A component key: letters, digits, '.', '-', '_' (OpenAPI 3.0). */
static bool openapi_http_key_ok(const char *s)
{
    if (!openapi_http_set(s)) {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '.' || *s == '-' || *s == '_')) {
            return false;
        }
    }
    return true;
}

static bool openapi_http_api_check(const openapi_api *a, char *err, size_t err_len)
{
    const Webshop__V1__HttpApi *api = a->api;
    for (size_t i = 0; i < api->n_responses; i++) {
        const http_response *r = api->responses[i];
        if (!openapi_http_key_ok(r->name) || openapi_http_set(r->ref)) {
            snprintf(err, err_len,
                     "%s: http_api.responses[%zu] needs a name (letters, digits, . - _) "
                     "and no ref",
                     a->svc->name, i);
            return false;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(api->responses[k]->name, r->name) == 0) {
                snprintf(err, err_len, "%s: http_api response %s declared twice",
                         a->svc->name, r->name);
                return false;
            }
        }
    }
    for (size_t i = 0; i < api->n_headers; i++) {
        const http_header *h = api->headers[i];
        if (!openapi_http_key_ok(h->name) || openapi_http_set(h->ref)) {
            snprintf(
                err, err_len,
                "%s: http_api.headers[%zu] needs a name (letters, digits, . - _) and "
                "no ref",
                a->svc->name, i);
            return false;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcasecmp(api->headers[k]->name, h->name) == 0) {
                snprintf(err, err_len, "%s: http_api header %s declared twice",
                         a->svc->name, h->name);
                return false;
            }
        }
    }
    return true;
}

bool openapi_http_api_open(openapi_api *a, const file_proto *f, int index, char *err,
                           size_t err_len)
{
    memset(a, 0, sizeof(*a));
    a->file = f;
    a->index = index;
    a->svc = f->service[index];
    options_bytes b;
    if (a->svc->options != NULL &&
        options_find_bytes(&a->svc->options->base, OPENAPI_HTTP_API_OPTION, &b)) {
        a->api = webshop__v1__http_api__unpack(NULL, b.len, b.data);
    } else {
        a->api = webshop__v1__http_api__unpack(NULL, 0, (const uint8_t *)"");
    }
    if (a->api == NULL) {
        snprintf(err, err_len, "%s: malformed (webshop.v1.http_api)", a->svc->name);
        return false;
    }
    a->response_used = calloc(a->api->n_responses + 1, sizeof(bool));
    a->header_used = calloc(a->api->n_headers + 1, sizeof(bool));
    a->param_used = calloc(a->api->n_headers + 1, sizeof(bool));
    if (a->response_used == NULL || a->header_used == NULL || a->param_used == NULL) {
        snprintf(err, err_len, "out of memory");
        return false;
    }
    return openapi_http_api_check(a, err, err_len);
}

void openapi_http_api_close(openapi_api *a)
{
    if (a == NULL) {
        return;
    }
    if (a->api != NULL) {
        webshop__v1__http_api__free_unpacked(a->api, NULL);
    }
    free(a->response_used);
    free(a->header_used);
    free(a->param_used);
    memset(a, 0, sizeof(*a));
}

/* The index of the shared header called name, or -1. */
static int openapi_http_shared_header(const openapi_api *a, const char *name)
{
    for (size_t i = 0; i < a->api->n_headers; i++) {
        if (strcmp(a->api->headers[i]->name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static bool openapi_http_header_check(const openapi_api *a, const http_header *h,
                                      char *err, size_t err_len)
{
    if (openapi_http_set(h->ref)) {
        bool bare = !openapi_http_set(h->name) && !openapi_http_set(h->description) &&
                    !h->required && !openapi_http_set(h->type) &&
                    !openapi_http_set(h->format) && h->min_length == 0 &&
                    h->max_length == 0 && !openapi_http_set(h->pattern);
        if (!bare) {
            snprintf(err, err_len, "%s: header ref %s sets other fields too",
                     a->svc->name, h->ref);
            return false;
        }
        if (openapi_http_shared_header(a, h->ref) < 0) {
            snprintf(err, err_len, "%s: header ref %s: no such header in http_api",
                     a->svc->name, h->ref);
            return false;
        }
        return true;
    }
    if (!openapi_http_set(h->name)) {
        snprintf(err, err_len, "%s: a header without a name", a->svc->name);
        return false;
    }
    static const char *const types[] = {"", "string", "integer", "number", "boolean"};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(h->type != NULL ? h->type : "", types[i]) == 0) {
            return true;
        }
    }
    snprintf(err, err_len,
             "%s: header %s: type %s is not string, integer, number or boolean",
             a->svc->name, h->name, h->type);
    return false;
}

bool openapi_http_headers_check(openapi_api *a, http_header *const *h, size_t n,
                                bool request, char *err, size_t err_len)
{
    for (size_t i = 0; i < n; i++) {
        if (!openapi_http_header_check(a, h[i], err, err_len)) {
            return false;
        }
        if (openapi_http_set(h[i]->ref)) {
            int k = openapi_http_shared_header(a, h[i]->ref);
            (request ? a->param_used : a->header_used)[k] = true;
        }
    }
    return true;
}

/* An answer that is not a ref: a status, a description, valid headers. */
static bool openapi_http_response_check(openapi_api *a, const http_response *r, char *err,
                                        size_t err_len)
{
    if (r->status < 100 || r->status > 599) {
        snprintf(err, err_len, "%s: response status %d is not 100..599", a->svc->name,
                 r->status);
        return false;
    }
    if (!openapi_http_set(r->description)) {
        snprintf(err, err_len, "%s: response %d needs a description", a->svc->name,
                 r->status);
        return false;
    }
    return openapi_http_headers_check(a, r->headers, r->n_headers, false, err, err_len);
}

const http_response *openapi_http_response_resolve(openapi_api *a, const http_response *r,
                                                   char *err, size_t err_len)
{
    if (!openapi_http_set(r->ref)) {
        return openapi_http_response_check(a, r, err, err_len) ? r : NULL;
    }
    bool bare = r->status == 0 && !openapi_http_set(r->description) &&
                !openapi_http_set(r->body) && !openapi_http_set(r->content_type) &&
                r->n_headers == 0 && !openapi_http_set(r->name);
    if (!bare) {
        snprintf(err, err_len, "%s: response ref %s sets other fields too", a->svc->name,
                 r->ref);
        return NULL;
    }
    for (size_t i = 0; i < a->api->n_responses; i++) {
        const http_response *s = a->api->responses[i];
        if (strcmp(s->name, r->ref) == 0) {
            if (!openapi_http_response_check(a, s, err, err_len)) {
                return NULL;
            }
            a->response_used[i] = true;
            return s;
        }
    }
    snprintf(err, err_len, "%s: response ref %s: no such response in http_api",
             a->svc->name, r->ref);
    return NULL;
}

const openapi_type *openapi_http_body_type(const openapi_types *ts, const openapi_api *a,
                                           const char *body)
{
    char full[512];
    snprintf(full, sizeof(full), ".%s", body);
    const openapi_type *t = openapi_types_find(ts, full);
    if (t == NULL && a->file->package != NULL && a->file->package[0] != '\0') {
        snprintf(full, sizeof(full), ".%s.%s", a->file->package, body);
        t = openapi_types_find(ts, full);
    }
    return t != NULL && t->msg != NULL ? t : NULL;
}

/* {"type":...,...} of a header's value. */
static void openapi_http_header_schema(ws_buf *out, const http_header *h)
{
    ws_buf_puts(out, "{\"type\":");
    openapi_text_json(out, openapi_http_set(h->type) ? h->type : "string");
    if (openapi_http_set(h->format)) {
        ws_buf_puts(out, ",\"format\":");
        openapi_text_json(out, h->format);
    }
    if (h->min_length > 0) {
        ws_buf_printf(out, ",\"minLength\":%u", (unsigned)h->min_length);
    }
    if (h->max_length > 0) {
        ws_buf_printf(out, ",\"maxLength\":%u", (unsigned)h->max_length);
    }
    if (openapi_http_set(h->pattern)) {
        ws_buf_puts(out, ",\"pattern\":");
        openapi_text_json(out, h->pattern);
    }
    ws_buf_putc(out, '}');
}

/* The members of a header object (no braces): description, required,
 * schema; a parameter object adds name and in before them. */
static void openapi_http_header_body(ws_buf *out, const http_header *h, bool param)
{
    if (param) {
        ws_buf_puts(out, "\"name\":");
        openapi_text_json(out, h->name);
        ws_buf_puts(out, ",\"in\":\"header\",");
    }
    ws_buf_printf(out, "\"required\":%s", h->required ? "true" : "false");
    if (openapi_http_set(h->description)) {
        ws_buf_puts(out, ",\"description\":");
        openapi_text_json(out, h->description);
    }
    ws_buf_puts(out, ",\"schema\":");
    openapi_http_header_schema(out, h);
}

void openapi_http_emit_headers(ws_buf *out, const openapi_api *a, http_header *const *h,
                               size_t n)
{
    if (n == 0) {
        return;
    }
    ws_buf_puts(out, ",\"headers\":{");
    for (size_t i = 0; i < n; i++) {
        ws_buf_puts(out, i > 0 ? "," : "");
        if (openapi_http_set(h[i]->ref)) {
            const http_header *s =
                a->api->headers[openapi_http_shared_header(a, h[i]->ref)];
            openapi_text_json(out, s->name);
            ws_buf_puts(out, ":{\"$ref\":\"#/components/headers/");
            ws_buf_puts(out, s->name);
            ws_buf_puts(out, "\"}");
        } else {
            openapi_text_json(out, h[i]->name);
            ws_buf_puts(out, ":{");
            openapi_http_header_body(out, h[i], false);
            ws_buf_putc(out, '}');
        }
    }
    ws_buf_putc(out, '}');
}

void openapi_http_emit_params(ws_buf *out, const openapi_api *a, http_header *const *h,
                              size_t n, bool *first)
{
    (void)a; /* a shared request header is always a $ref */
    for (size_t i = 0; i < n; i++) {
        ws_buf_puts(out, *first ? "{" : ",{");
        *first = false;
        if (openapi_http_set(h[i]->ref)) {
            ws_buf_puts(out, "\"$ref\":\"#/components/parameters/");
            ws_buf_puts(out, h[i]->ref);
            ws_buf_putc(out, '"');
        } else {
            openapi_http_header_body(out, h[i], true);
        }
        ws_buf_putc(out, '}');
    }
}

/* {"description":...,"headers":...,"content":...} of a resolved answer. */
static void openapi_http_response_object(ws_buf *out, const openapi_types *ts,
                                         const openapi_api *a, const http_response *r)
{
    ws_buf_puts(out, "{\"description\":");
    openapi_text_json(out, r->description);
    openapi_http_emit_headers(out, a, r->headers, r->n_headers);
    const openapi_type *body =
        openapi_http_set(r->body) ? openapi_http_body_type(ts, a, r->body) : NULL;
    const char *media =
        openapi_http_set(r->content_type) ? r->content_type : "application/json";
    if (body != NULL) {
        ws_buf_puts(out, ",\"content\":{");
        openapi_text_json(out, media);
        ws_buf_puts(out, ":{\"schema\":");
        openapi_schema_ref(out, body);
        ws_buf_puts(out, "}}");
    } else if (openapi_http_set(r->content_type)) {
        ws_buf_puts(out, ",\"content\":{");
        openapi_text_json(out, media);
        ws_buf_puts(out, ":{\"schema\":{\"type\":\"string\"}}}");
    }
    ws_buf_putc(out, '}');
}

void openapi_http_emit_response(ws_buf *out, const openapi_types *ts,
                                const openapi_api *a, const http_response *r)
{
    if (openapi_http_set(r->ref)) {
        ws_buf_puts(out, "{\"$ref\":\"#/components/responses/");
        ws_buf_puts(out, r->ref);
        ws_buf_puts(out, "\"}");
        return;
    }
    openapi_http_response_object(out, ts, a, r);
}

void openapi_http_emit_component_responses(ws_buf *out, const openapi_types *ts,
                                           const openapi_api *a, bool *first)
{
    for (size_t i = 0; i < a->api->n_responses; i++) {
        if (!a->response_used[i]) {
            continue;
        }
        ws_buf_puts(out, *first ? "" : ",");
        *first = false;
        openapi_text_json(out, a->api->responses[i]->name);
        ws_buf_putc(out, ':');
        openapi_http_response_object(out, ts, a, a->api->responses[i]);
    }
}

void openapi_http_emit_component_headers(ws_buf *out, const openapi_api *a, bool *first)
{
    for (size_t i = 0; i < a->api->n_headers; i++) {
        if (!a->header_used[i]) {
            continue;
        }
        ws_buf_puts(out, *first ? "" : ",");
        *first = false;
        openapi_text_json(out, a->api->headers[i]->name);
        ws_buf_puts(out, ":{");
        openapi_http_header_body(out, a->api->headers[i], false);
        ws_buf_putc(out, '}');
    }
}

void openapi_http_emit_component_params(ws_buf *out, const openapi_api *a, bool *first)
{
    for (size_t i = 0; i < a->api->n_headers; i++) {
        if (!a->param_used[i]) {
            continue;
        }
        ws_buf_puts(out, *first ? "" : ",");
        *first = false;
        openapi_text_json(out, a->api->headers[i]->name);
        ws_buf_puts(out, ":{");
        openapi_http_header_body(out, a->api->headers[i], true);
        ws_buf_putc(out, '}');
    }
}
