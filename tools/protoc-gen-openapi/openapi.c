/*
 * The OpenAPI document: routes collected from the annotations, checked and
 * their types marked (so that only referenced schemas and shared pieces are
 * written), then the document itself; see openapi.h.
 */
#include "openapi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "openapi_http.h"
#include "openapi_schema.h"
#include "openapi_text.h"
#include "openapi_types.h"

/* descriptor.proto: FileDescriptorProto.service = 6,
 * ServiceDescriptorProto.method = 2. */
enum { PATH_SERVICE = 6, PATH_METHOD = 2 };

/* One routed method. */
typedef struct openapi_op {
    const char *verb;            /* "get", "post", "put", "patch", "delete" */
    char *path;                  /* OpenAPI form of the template; owned */
    Webshop__V1__HttpRule *rule; /* owned */
    const method_proto *method;
    size_t method_index;
    openapi_api *api;         /* its service; not owned */
    const openapi_type *in;   /* request message */
    const openapi_type *out;  /* response message */
    int success;              /* status of a successful answer */
    const http_response *ok;  /* the entry describing it, or NULL */
    const char *operation_id; /* points into method or owned_id */
    char *owned_id;           /* "Service.Method" when names clash; owned */
} openapi_op;

typedef struct openapi_doc {
    openapi_types types;
    openapi_api *apis; /* owned, n_apis of them */
    size_t n_apis;
    openapi_op *ops; /* owned, n_ops of them */
    size_t n_ops;
    const openapi_params *params;
    char *err;
    size_t err_len;
} openapi_doc;

static bool openapi_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static bool openapi_fail(openapi_doc *d, const char *what)
{
    snprintf(d->err, d->err_len, "%s", what);
    return false;
}

/* ---- collecting the routes ------------------------------------------- */

/* The OpenAPI path of a template: "{name=pattern}" segments become
 * "{name}". NULL when braces do not pair or out of memory. */
static char *openapi_path_of(const char *tmpl)
{
    char *p = malloc(strlen(tmpl) + 1);
    if (p == NULL || tmpl[0] != '/') {
        free(p);
        return NULL;
    }
    size_t k = 0;
    bool in_var = false, skip = false;
    for (const char *s = tmpl; *s != '\0'; s++) {
        if (*s == '{' || *s == '}') {
            if (in_var == (*s == '{')) {
                free(p);
                return NULL;
            }
            in_var = *s == '{';
            skip = false;
        } else if (in_var && *s == '=') {
            skip = true;
        }
        if (!skip) {
            p[k++] = *s;
        }
    }
    p[k] = '\0';
    if (in_var) {
        free(p);
        return NULL;
    }
    return p;
}

/* The verb and template of rule; false when not exactly one is set. */
static bool openapi_verb(const Webshop__V1__HttpRule *rule, const char **verb,
                         const char **tmpl)
{
    const char *const verbs[5] = {"get", "post", "put", "patch", "delete"};
    const char *const tmpls[5] = {rule->get, rule->post, rule->put, rule->patch,
                                  rule->delete_};
    int n = 0;
    for (int i = 0; i < 5; i++) {
        if (openapi_set(tmpls[i])) {
            *verb = verbs[i];
            *tmpl = tmpls[i];
            n++;
        }
    }
    return n == 1;
}

static bool openapi_add_op(openapi_doc *d, openapi_api *a, size_t m,
                           Webshop__V1__HttpRule *rule)
{
    const method_proto *method = a->svc->method[m];
    const char *verb = NULL, *tmpl = NULL;
    char *path = NULL;
    if (!openapi_verb(rule, &verb, &tmpl)) {
        snprintf(d->err, d->err_len,
                 "%s.%s: http rule needs exactly one of get, post, put, patch, delete",
                 a->svc->name, method->name);
    } else if ((path = openapi_path_of(tmpl)) == NULL) {
        snprintf(d->err, d->err_len,
                 "%s.%s: path %s must start with / and pair its braces", a->svc->name,
                 method->name, tmpl);
    }
    openapi_op *grown =
        path != NULL ? realloc(d->ops, (d->n_ops + 1) * sizeof(*grown)) : NULL;
    if (grown == NULL) {
        if (path != NULL) {
            openapi_fail(d, "out of memory");
        }
        free(path);
        webshop__v1__http_rule__free_unpacked(rule, NULL);
        return false;
    }
    d->ops = grown;
    openapi_op *op = &d->ops[d->n_ops++];
    memset(op, 0, sizeof(*op));
    op->verb = verb;
    op->path = path;
    op->rule = rule;
    op->method = method;
    op->method_index = m;
    op->api = a;
    op->success = rule->success_status != 0 ? rule->success_status : 200;
    op->operation_id = method->name;
    return true;
}

/* Additional binding k of rule as a rule of its own: its verb, path, body
 * and response_body, with everything else (the answers, headers, summary)
 * from rule. Made by merging encodings (a later field wins): rule without
 * its route fields, then the binding. NULL when out of memory. */
static Webshop__V1__HttpRule *openapi_binding_rule(Webshop__V1__HttpRule *rule, size_t k)
{
    Webshop__V1__HttpRule base = *rule;
    base.get = base.post = base.put = base.patch = base.delete_ = "";
    base.body = base.response_body = "";
    base.n_additional_bindings = 0;
    Webshop__V1__HttpRule extra = *rule->additional_bindings[k];
    extra.n_additional_bindings = 0;
    size_t n1 = webshop__v1__http_rule__get_packed_size(&base);
    size_t n2 = webshop__v1__http_rule__get_packed_size(&extra);
    uint8_t *buf = malloc(n1 + n2 + 1);
    if (buf == NULL) {
        return NULL;
    }
    webshop__v1__http_rule__pack(&base, buf);
    webshop__v1__http_rule__pack(&extra, buf + n1);
    Webshop__V1__HttpRule *out = webshop__v1__http_rule__unpack(NULL, n1 + n2, buf);
    free(buf);
    return out;
}

/* The operations of method m of a: its rule, then each of its
 * additional_bindings (operationId "<Method>_2", "_3", ...). */
static bool openapi_add_method(openapi_doc *d, openapi_api *a, size_t m)
{
    Webshop__V1__HttpRule *rule = openapi_http_rule(a->svc->method[m]);
    if (rule == NULL) {
        return true;
    }
    size_t n_extra = rule->n_additional_bindings;
    Webshop__V1__HttpRule **extra = calloc(n_extra + 1, sizeof(*extra));
    bool ok = extra != NULL;
    for (size_t k = 0; ok && k < n_extra; k++) {
        ok = (extra[k] = openapi_binding_rule(rule, k)) != NULL;
    }
    if (!ok) {
        for (size_t k = 0; extra != NULL && k < n_extra; k++) {
            if (extra[k] != NULL) {
                webshop__v1__http_rule__free_unpacked(extra[k], NULL);
            }
        }
        free(extra);
        webshop__v1__http_rule__free_unpacked(rule, NULL);
        return openapi_fail(d, "out of memory");
    }
    ok = openapi_add_op(d, a, m, rule);
    for (size_t k = 0; k < n_extra; k++) {
        if (!ok) {
            webshop__v1__http_rule__free_unpacked(extra[k], NULL);
            continue;
        }
        ok = openapi_add_op(d, a, m, extra[k]);
        const char *name = a->svc->method[m]->name;
        size_t n = strlen(name) + 24;
        openapi_op *op = &d->ops[d->n_ops - 1];
        if (ok && (op->owned_id = malloc(n)) == NULL) {
            ok = openapi_fail(d, "out of memory");
        } else if (ok) {
            snprintf(op->owned_id, n, "%s_%zu", name, k + 2);
            op->operation_id = op->owned_id;
        }
    }
    free(extra);
    return ok;
}

static bool openapi_wanted(const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                           const file_proto *f)
{
    for (size_t k = 0; k < req->n_file_to_generate; k++) {
        if (strcmp(req->file_to_generate[k], f->name) == 0) {
            return true;
        }
    }
    return false;
}

/* Every service of the files to generate, and its routes. d->apis is
 * sized once: routes point into it. */
static bool openapi_collect(openapi_doc *d,
                            const Google__Protobuf__Compiler__CodeGeneratorRequest *req)
{
    size_t n = 0;
    for (size_t i = 0; i < req->n_proto_file; i++) {
        n += openapi_wanted(req, req->proto_file[i]) ? req->proto_file[i]->n_service : 0;
    }
    d->apis = calloc(n + 1, sizeof(*d->apis));
    if (d->apis == NULL) {
        return openapi_fail(d, "out of memory");
    }
    for (size_t i = 0; i < req->n_proto_file; i++) {
        const file_proto *f = req->proto_file[i];
        for (size_t s = 0; openapi_wanted(req, f) && s < f->n_service; s++) {
            openapi_api *a = &d->apis[d->n_apis++];
            if (!openapi_http_api_open(a, f, (int)s, d->err, d->err_len)) {
                return false;
            }
            for (size_t m = 0; m < a->svc->n_method; m++) {
                if (!openapi_add_method(d, a, m)) {
                    return false;
                }
            }
        }
    }
    if (d->n_ops == 0) {
        return openapi_fail(d, "no method carries a (webshop.v1.http) route");
    }
    return true;
}

/* ---- checking a route and marking what it references ------------------ */

/* The index of the field called name in message t, or -1. */
static int openapi_field_index(const openapi_type *t, const char *name)
{
    for (size_t i = 0; i < t->msg->n_field; i++) {
        if (strcmp(t->msg->field[i]->name, name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static bool openapi_in_path(const char *path, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strchr(path, '{'); p != NULL; p = strchr(p + 1, '{')) {
        if (strncmp(p + 1, name, n) == 0 && p[1 + n] == '}') {
            return true;
        }
    }
    return false;
}

/* Every {name} of the path is a field of the request. */
static bool openapi_check_path(openapi_doc *d, const openapi_op *op)
{
    for (const char *p = strchr(op->path, '{'); p != NULL; p = strchr(p + 1, '{')) {
        const char *end = strchr(p, '}');
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)(end - p - 1), p + 1);
        if (openapi_field_index(op->in, name) < 0) {
            snprintf(d->err, d->err_len, "%s: path parameter {%s} is not a field of %s",
                     op->method->name, name, op->in->full + 1);
            return false;
        }
    }
    return true;
}

/* Mark a type a route's schema references (nothing for scalars). */
static bool openapi_mark(openapi_doc *d, const openapi_op *op, const char *full)
{
    if (full == NULL || openapi_types_mark(&d->types, full, d->err, d->err_len)) {
        return true;
    }
    snprintf(d->err + strlen(d->err), d->err_len - strlen(d->err), " in %s",
             op->method->name);
    return false;
}

/* The request side: body, path and query parameters, request headers. */
static bool openapi_prepare_request(openapi_doc *d, openapi_op *op)
{
    const char *body = op->rule->body;
    bool whole = openapi_set(body) && strcmp(body, "*") == 0;
    if (openapi_set(body) && !whole && openapi_field_index(op->in, body) < 0) {
        snprintf(d->err, d->err_len, "%s: body %s is not a field of %s", op->method->name,
                 body, op->in->full + 1);
        return false;
    }
    if (!openapi_check_path(d, op)) {
        return false;
    }
    if (whole && !openapi_mark(d, op, op->in->full)) {
        return false;
    }
    for (size_t i = 0; !whole && i < op->in->msg->n_field; i++) {
        const field_proto *fd = op->in->msg->field[i];
        bool is_body = openapi_set(body) && strcmp(fd->name, body) == 0;
        bool query_enum =
            fd->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_ENUM;
        if ((is_body || query_enum) && !openapi_mark(d, op, fd->type_name)) {
            return false;
        }
    }
    return openapi_http_headers_check(op->api, op->rule->request_headers,
                                      op->rule->n_request_headers, true, d->err,
                                      d->err_len);
}

/* The success answer's body: the response message, one of its fields, or
 * a non-JSON stream (whose events the description names). */
static bool openapi_prepare_success(openapi_doc *d, openapi_op *op)
{
    if (openapi_set(op->rule->response_content_type)) {
        return true;
    }
    const char *field = op->rule->response_body;
    if (!openapi_set(field)) {
        return openapi_mark(d, op, op->out->full);
    }
    int k = openapi_field_index(op->out, field);
    if (k < 0) {
        snprintf(d->err, d->err_len, "%s: response_body %s is not a field of %s",
                 op->method->name, field, op->out->full + 1);
        return false;
    }
    return openapi_mark(d, op, op->out->msg->field[k]->type_name);
}

/* The listed answers: resolved, one per status, bodies known. */
static bool openapi_prepare_responses(openapi_doc *d, openapi_op *op)
{
    int seen[64];
    size_t n_seen = 0;
    for (size_t i = 0; i < op->rule->n_responses; i++) {
        const http_response *r = openapi_http_response_resolve(
            op->api, op->rule->responses[i], d->err, d->err_len);
        if (r == NULL) {
            snprintf(d->err + strlen(d->err), d->err_len - strlen(d->err), " (%s)",
                     op->method->name);
            return false;
        }
        for (size_t k = 0; k < n_seen; k++) {
            if (seen[k] == r->status) {
                snprintf(d->err, d->err_len, "%s: status %d listed twice",
                         op->method->name, r->status);
                return false;
            }
        }
        if (n_seen < sizeof(seen) / sizeof(seen[0])) {
            seen[n_seen++] = r->status;
        }
        const openapi_type *body =
            openapi_set(r->body) ? openapi_http_body_type(&d->types, op->api, r->body)
                                 : NULL;
        if (r->status == op->success) {
            if (openapi_set(r->body)) {
                snprintf(d->err, d->err_len,
                         "%s: the success answer (%d) sets a body; it is the method's "
                         "response",
                         op->method->name, r->status);
                return false;
            }
            op->ok = r;
        } else if (openapi_set(r->body) && body == NULL) {
            snprintf(d->err, d->err_len, "%s: response %d: body %s is no message",
                     op->method->name, r->status, r->body);
            return false;
        } else if (body != NULL && !openapi_mark(d, op, body->full)) {
            return false;
        }
    }
    return true;
}

static bool openapi_prepare(openapi_doc *d, openapi_op *op)
{
    op->in = openapi_types_find(&d->types, op->method->input_type);
    op->out = openapi_types_find(&d->types, op->method->output_type);
    if (op->in == NULL || op->out == NULL || op->in->msg == NULL ||
        op->out->msg == NULL) {
        snprintf(d->err, d->err_len, "%s: unknown input or output type",
                 op->method->name);
        return false;
    }
    for (openapi_op *o = d->ops; o < op; o++) {
        if (strcmp(o->path, op->path) == 0 && strcmp(o->verb, op->verb) == 0) {
            snprintf(d->err, d->err_len, "%s and %s: both route %s %s", o->method->name,
                     op->method->name, op->verb, op->path);
            return false;
        }
        if (strcmp(o->method->name, op->method->name) == 0 && op->owned_id == NULL) {
            size_t n = strlen(op->api->svc->name) + strlen(op->method->name) + 2;
            op->owned_id = malloc(n);
            if (op->owned_id == NULL) {
                return openapi_fail(d, "out of memory");
            }
            snprintf(op->owned_id, n, "%s.%s", op->api->svc->name, op->method->name);
            op->operation_id = op->owned_id;
        }
    }
    return openapi_prepare_request(d, op) && openapi_prepare_success(d, op) &&
           openapi_prepare_responses(d, op);
}

/* ---- writing an operation -------------------------------------------- */

/* Path parameters, query parameters (the request fields neither in the
 * path nor in the body; not messages or maps), request headers. */
static void openapi_emit_params(ws_buf *out, const openapi_doc *d, const openapi_op *op)
{
    const char *body = op->rule->body;
    bool whole = openapi_set(body) && strcmp(body, "*") == 0;
    bool first = true;
    ws_buf p;
    ws_buf_init(&p, 0);
    for (size_t i = 0; i < op->in->msg->n_field; i++) {
        const field_proto *fd = op->in->msg->field[i];
        bool in_path = openapi_in_path(op->path, fd->name);
        bool message =
            fd->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE;
        if (!in_path && (whole || (openapi_set(body) && strcmp(fd->name, body) == 0) ||
                         (message && !openapi_types_is_wkt(fd->type_name)))) {
            continue;
        }
        bool list =
            fd->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED;
        ws_buf_puts(&p, first ? "{\"name\":" : ",{\"name\":");
        first = false;
        openapi_text_json(&p, fd->name);
        ws_buf_printf(&p, ",\"in\":\"%s\",\"required\":%s", in_path ? "path" : "query",
                      in_path || openapi_schema_required(&d->types, fd) ? "true"
                                                                        : "false");
        openapi_text_description(&p, openapi_schema_field_comment(op->in, i));
        ws_buf_puts(&p,
                    list ? ",\"schema\":{\"type\":\"array\",\"items\":" : ",\"schema\":");
        openapi_schema_value(&p, &d->types, fd);
        ws_buf_puts(&p, list ? "}}" : "}");
    }
    openapi_http_emit_params(&p, op->api, op->rule->request_headers,
                             op->rule->n_request_headers, &first);
    if (p.len > 0) {
        ws_buf_printf(out, ",\"parameters\":[%s]", p.data);
    }
    ws_buf_fini(&p);
}

static void openapi_emit_request_body(ws_buf *out, const openapi_doc *d,
                                      const openapi_op *op)
{
    const char *body = op->rule->body;
    if (!openapi_set(body)) {
        return;
    }
    ws_buf_puts(out,
                ",\"requestBody\":{\"required\":true,\"content\":{\"application/json\":"
                "{\"schema\":");
    if (strcmp(body, "*") == 0) {
        openapi_schema_named(out, &d->types, op->in->full);
    } else {
        openapi_schema_field(out, &d->types, op->in,
                             (size_t)openapi_field_index(op->in, body));
    }
    ws_buf_puts(out, "}}}");
}

/* The success answer: its entry's description and headers, the method's
 * response as its body. */
static void openapi_emit_success(ws_buf *out, const openapi_doc *d, const openapi_op *op)
{
    ws_buf_printf(out, "\"%d\":{\"description\":", op->success);
    openapi_text_json(out, op->ok != NULL ? op->ok->description : "Success");
    if (op->ok != NULL) {
        openapi_http_emit_headers(out, op->api, op->ok->headers, op->ok->n_headers);
    }
    const char *media = op->rule->response_content_type;
    ws_buf_puts(out, ",\"content\":{");
    openapi_text_json(out, openapi_set(media) ? media : "application/json");
    ws_buf_puts(out, ":{\"schema\":");
    if (openapi_set(media) && strcmp(media, "text/event-stream") == 0) {
        ws_buf_puts(out, "{\"type\":\"string\",\"description\":");
        char what[600];
        snprintf(what, sizeof(what), "Server-Sent Events; each event's data is JSON: %s.",
                 op->out->rel);
        openapi_text_json(out, what);
        ws_buf_putc(out, '}');
    } else if (openapi_set(media)) {
        ws_buf_puts(out, "{\"type\":\"string\"}");
    } else if (openapi_set(op->rule->response_body)) {
        int k = openapi_field_index(op->out, op->rule->response_body);
        openapi_schema_field(out, &d->types, op->out, (size_t)k);
    } else {
        openapi_schema_named(out, &d->types, op->out->full);
    }
    ws_buf_puts(out, "}}}");
}

/* Every answer, by status. */
static void openapi_emit_responses(ws_buf *out, const openapi_doc *d,
                                   const openapi_op *op)
{
    ws_buf_puts(out, ",\"responses\":{");
    bool first = true;
    for (int status = 100; status <= 599; status++) {
        if (status == op->success) {
            ws_buf_puts(out, first ? "" : ",");
            first = false;
            openapi_emit_success(out, d, op);
            continue;
        }
        for (size_t i = 0; i < op->rule->n_responses; i++) {
            const http_response *e = op->rule->responses[i];
            const http_response *r = e;
            for (size_t k = 0; openapi_set(e->ref) && k < op->api->api->n_responses;
                 k++) {
                if (strcmp(op->api->api->responses[k]->name, e->ref) == 0) {
                    r = op->api->api->responses[k];
                }
            }
            if (r->status == status) {
                ws_buf_printf(out, "%s\"%d\":", first ? "" : ",", status);
                first = false;
                openapi_http_emit_response(out, &d->types, op->api, e);
            }
        }
    }
    ws_buf_putc(out, '}');
}

static void openapi_emit_operation(ws_buf *out, const openapi_doc *d,
                                   const openapi_op *op)
{
    openapi_text_json(out, op->verb);
    ws_buf_puts(out, ":{\"operationId\":");
    openapi_text_json(out, op->operation_id);
    ws_buf_puts(out, ",\"tags\":[");
    openapi_text_json(out, op->api->svc->name);
    ws_buf_putc(out, ']');
    if (openapi_set(op->rule->summary)) {
        ws_buf_puts(out, ",\"summary\":");
        openapi_text_json(out, op->rule->summary);
    } else {
        ws_buf_puts(out, ",\"summary\":");
        openapi_text_json(out, op->method->name);
    }
    int path[4] = {PATH_SERVICE, op->api->index, PATH_METHOD, (int)op->method_index};
    openapi_text_description(out, openapi_text_comment(op->api->file, path, 4));
    openapi_emit_params(out, d, op);
    openapi_emit_request_body(out, d, op);
    openapi_emit_responses(out, d, op);
    ws_buf_putc(out, '}');
}

/* ---- the document ----------------------------------------------------- */

/* Operations grouped by path, in the order the routes are declared. */
static void openapi_emit_paths(ws_buf *out, const openapi_doc *d)
{
    ws_buf_puts(out, ",\"paths\":{");
    for (size_t i = 0; i < d->n_ops; i++) {
        bool earlier = false;
        for (size_t k = 0; k < i && !earlier; k++) {
            earlier = strcmp(d->ops[k].path, d->ops[i].path) == 0;
        }
        if (earlier) {
            continue;
        }
        ws_buf_puts(out, i > 0 ? "," : "");
        openapi_text_json(out, d->ops[i].path);
        ws_buf_puts(out, ":{");
        for (size_t k = i; k < d->n_ops; k++) {
            if (strcmp(d->ops[k].path, d->ops[i].path) == 0) {
                ws_buf_puts(out, k > i ? "," : "");
                openapi_emit_operation(out, d, &d->ops[k]);
            }
        }
        ws_buf_putc(out, '}');
    }
    ws_buf_putc(out, '}');
}

/* info: title, version, description, license. */
static void openapi_emit_info(ws_buf *out, const openapi_doc *d)
{
    const openapi_api *main_api = d->ops[0].api;
    const char *title = main_api->svc->name;
    for (size_t i = 0; i < d->n_apis; i++) {
        if (openapi_set(d->apis[i].api->title)) {
            title = d->apis[i].api->title;
            break;
        }
    }
    ws_buf_puts(out, "\"info\":{\"title\":");
    openapi_text_json(out, title);
    ws_buf_puts(out, ",\"version\":");
    openapi_text_json(out,
                      openapi_set(d->params->version) ? d->params->version : "0.0.0");
    int path[2] = {PATH_SERVICE, main_api->index};
    openapi_text_description(out, openapi_text_comment(main_api->file, path, 2));
    if (openapi_set(d->params->license)) {
        ws_buf_puts(out, ",\"license\":{\"name\":");
        openapi_text_json(out, d->params->license);
        if (openapi_set(d->params->license_url)) {
            ws_buf_puts(out, ",\"url\":");
            openapi_text_json(out, d->params->license_url);
        }
        ws_buf_putc(out, '}');
    }
    ws_buf_putc(out, '}');
}

/* security (only when every service says it asks for no credentials) and
 * one tag per service that has routes. */
static void openapi_emit_security_tags(ws_buf *out, const openapi_doc *d)
{
    bool no_auth = true;
    bool first = true;
    ws_buf tags;
    ws_buf_init(&tags, 0);
    for (size_t i = 0; i < d->n_apis; i++) {
        const openapi_api *a = &d->apis[i];
        bool routed = false;
        for (size_t k = 0; k < d->n_ops && !routed; k++) {
            routed = d->ops[k].api == a;
        }
        if (!routed) {
            continue;
        }
        no_auth = no_auth && a->api->no_auth;
        ws_buf_puts(&tags, first ? "{\"name\":" : ",{\"name\":");
        first = false;
        openapi_text_json(&tags, a->svc->name);
        int path[2] = {PATH_SERVICE, a->index};
        const char *comment = openapi_text_comment(a->file, path, 2);
        if (comment != NULL) {
            openapi_text_description(&tags, comment);
        } else {
            ws_buf_printf(&tags, ",\"description\":\"The routes of %s.\"", a->svc->name);
        }
        ws_buf_putc(&tags, '}');
    }
    if (no_auth) {
        ws_buf_puts(out, ",\"security\":[]");
    }
    ws_buf_printf(out, ",\"tags\":[%s]", tags.data != NULL ? tags.data : "");
    ws_buf_fini(&tags);
}

/* components: the used schemas, and the shared answers, response headers
 * and request headers the routes use; an empty section is left out. */
static void openapi_emit_components(ws_buf *out, const openapi_doc *d)
{
    ws_buf part;
    ws_buf_init(&part, 0);
    bool first = true;
    for (size_t i = 0; i < d->types.n; i++) {
        if (d->types.v[i].used) {
            ws_buf_puts(&part, first ? "" : ",");
            first = false;
            openapi_schema_type(&part, &d->types, &d->types.v[i]);
        }
    }
    const char *sep = "";
    ws_buf_puts(out, ",\"components\":{");
    for (int section = 0; section < 4; section++) {
        static const char *const names[4] = {"schemas", "responses", "headers",
                                             "parameters"};
        first = true;
        for (size_t i = 0; section > 0 && i < d->n_apis; i++) {
            if (section == 1) {
                openapi_http_emit_component_responses(&part, &d->types, &d->apis[i],
                                                      &first);
            } else if (section == 2) {
                openapi_http_emit_component_headers(&part, &d->apis[i], &first);
            } else {
                openapi_http_emit_component_params(&part, &d->apis[i], &first);
            }
        }
        if (part.len > 0) {
            ws_buf_printf(out, "%s\"%s\":{%s}", sep, names[section], part.data);
            sep = ",";
        }
        ws_buf_reset(&part);
    }
    ws_buf_putc(out, '}');
    ws_buf_fini(&part);
}

/* Two services may not share a component name both use. */
static bool openapi_check_components(openapi_doc *d)
{
    for (size_t i = 0; i < d->n_apis; i++) {
        const openapi_api *a = &d->apis[i];
        for (size_t k = i + 1; k < d->n_apis; k++) {
            const openapi_api *b = &d->apis[k];
            for (size_t x = 0; x < a->api->n_responses; x++) {
                for (size_t y = 0; a->response_used[x] && y < b->api->n_responses; y++) {
                    if (b->response_used[y] && strcmp(a->api->responses[x]->name,
                                                      b->api->responses[y]->name) == 0) {
                        snprintf(d->err, d->err_len, "%s and %s both declare response %s",
                                 a->svc->name, b->svc->name, b->api->responses[y]->name);
                        return false;
                    }
                }
            }
        }
    }
    return true;
}

bool openapi_build(const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                   const openapi_params *params, ws_buf *out, char *err, size_t err_len)
{
    static const openapi_params none = {0};
    openapi_doc d = {
        .params = params != NULL ? params : &none, .err = err, .err_len = err_len};
    err[0] = '\0';
    bool ok = openapi_types_index(&d.types, req) ? openapi_collect(&d, req)
                                                 : openapi_fail(&d, "out of memory");
    for (size_t i = 0; ok && i < d.n_ops; i++) {
        ok = openapi_prepare(&d, &d.ops[i]);
    }
    ok = ok && openapi_check_components(&d);
    if (ok) {
        openapi_types_name(&d.types);
        ws_buf_puts(out, "{\"openapi\":\"3.0.3\",");
        openapi_emit_info(out, &d);
        ws_buf_puts(out, ",\"servers\":[{\"url\":\"/\"}]");
        openapi_emit_security_tags(out, &d);
        openapi_emit_paths(out, &d);
        openapi_emit_components(out, &d);
        ws_buf_puts(out, "}\n");
    }
    for (size_t i = 0; i < d.n_ops; i++) {
        webshop__v1__http_rule__free_unpacked(d.ops[i].rule, NULL);
        free(d.ops[i].path);
        free(d.ops[i].owned_id);
    }
    free(d.ops);
    for (size_t i = 0; i < d.n_apis; i++) {
        openapi_http_api_close(&d.apis[i]);
    }
    free(d.apis);
    openapi_types_fini(&d.types);
    return ok;
}
