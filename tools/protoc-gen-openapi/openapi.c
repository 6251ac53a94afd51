/*
 * The OpenAPI document builder; see openapi.h.
 */
#include "openapi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "options.h"
#include "webshop/v1/contract.pb-c.h"
#include "webshop/v1/http.pb-c.h"

/* Field number of the (webshop.v1.http) method option in http.proto. */
#define OPENAPI_HTTP_OPTION 50001
/* contract.proto: (webshop.v1.list_limits) on messages, (webshop.v1.limits)
 * on fields. */
#define OPENAPI_LIST_LIMITS_OPTION 50011
#define OPENAPI_LIMITS_OPTION 50012

typedef Google__Protobuf__FileDescriptorProto file_proto;
typedef Google__Protobuf__DescriptorProto msg_proto;
typedef Google__Protobuf__EnumDescriptorProto enum_proto;
typedef Google__Protobuf__FieldDescriptorProto field_proto;

/* A message or enum known by full name (".pkg.Name"), with its comment. */
typedef struct openapi_type {
    char *full;          /* ".webshop.v1.Order"; owned */
    const char *short_name; /* last component, the schema name */
    const msg_proto *msg;   /* or */
    const enum_proto *en;
    const file_proto *file;
    int path[8]; /* source_code_info path of the type */
    size_t path_len;
    bool used; /* referenced from an operation: emit its schema */
} openapi_type;

typedef struct openapi_ctx {
    openapi_type *types;
    size_t n_types, cap_types;
    char *err;
    size_t err_len;
} openapi_ctx;

void openapi_json_string(ws_buf *out, const char *s)
{
    ws_buf_putc(out, '"');
    for (const unsigned char *p = (const unsigned char *)(s != NULL ? s : ""); *p != '\0'; p++) {
        switch (*p) {
        case '"':
            ws_buf_puts(out, "\\\"");
            break;
        case '\\':
            ws_buf_puts(out, "\\\\");
            break;
        case '\n':
            ws_buf_puts(out, "\\n");
            break;
        case '\t':
            ws_buf_puts(out, "\\t");
            break;
        default:
            if (*p < 0x20) {
                ws_buf_printf(out, "\\u%04x", *p);
            } else {
                ws_buf_putc(out, (char)*p);
            }
        }
    }
    ws_buf_putc(out, '"');
}

/* The leading comment of the element at path in f, trimmed, or NULL. */
static const char *openapi_comment(const file_proto *f, const int *path, size_t n)
{
    if (f->source_code_info == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < f->source_code_info->n_location; i++) {
        const Google__Protobuf__SourceCodeInfo__Location *loc =
            f->source_code_info->location[i];
        if (loc->n_path != n) {
            continue;
        }
        bool same = true;
        for (size_t k = 0; k < n && same; k++) {
            same = loc->path[k] == path[k];
        }
        if (same && loc->leading_comments != NULL) {
            return loc->leading_comments;
        }
    }
    return NULL;
}

/* Comment text with leading spaces of each line and the final newline
 * removed, written as a JSON string. */
static void openapi_description(ws_buf *out, const char *comment)
{
    ws_buf tmp;
    ws_buf_init(&tmp, 0);
    const char *p = comment;
    while (*p != '\0') {
        while (*p == ' ') {
            p++;
        }
        const char *nl = strchr(p, '\n');
        size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (tmp.len > 0 && len > 0) {
            ws_buf_putc(&tmp, ' ');
        }
        ws_buf_append(&tmp, p, len);
        p += len;
        if (*p == '\n') {
            p++;
        }
    }
    openapi_json_string(out, tmp.data != NULL ? tmp.data : "");
    ws_buf_fini(&tmp);
}

static bool openapi_add_type(openapi_ctx *c, const char *prefix, const char *name,
                             const msg_proto *m, const enum_proto *e, const file_proto *f,
                             const int *path, size_t path_len)
{
    if (c->n_types == c->cap_types) {
        size_t cap = c->cap_types == 0 ? 64 : c->cap_types * 2;
        openapi_type *t = realloc(c->types, cap * sizeof(*t));
        if (t == NULL) {
            return false;
        }
        c->types = t;
        c->cap_types = cap;
    }
    openapi_type *t = &c->types[c->n_types];
    memset(t, 0, sizeof(*t));
    size_t n = strlen(prefix) + strlen(name) + 2;
    t->full = malloc(n);
    if (t->full == NULL) {
        return false;
    }
    snprintf(t->full, n, "%s.%s", prefix, name);
    t->short_name = name;
    t->msg = m;
    t->en = e;
    t->file = f;
    memcpy(t->path, path, path_len * sizeof(int));
    t->path_len = path_len;
    c->n_types++;
    return true;
}

/* Index the messages (and their nested types) and enums of one file. */
static bool openapi_index_message(openapi_ctx *c, const char *prefix, const msg_proto *m,
                                  const file_proto *f, int *path, size_t path_len)
{
    if (path_len + 2 > 8) {
        return true; /* deeper nesting: described without comments */
    }
    if (!openapi_add_type(c, prefix, m->name, m, NULL, f, path, path_len)) {
        return false;
    }
    char *me = c->types[c->n_types - 1].full;
    for (size_t i = 0; i < m->n_nested_type; i++) {
        path[path_len] = 3;
        path[path_len + 1] = (int)i;
        if (!openapi_index_message(c, me, m->nested_type[i], f, path, path_len + 2)) {
            return false;
        }
    }
    for (size_t i = 0; i < m->n_enum_type; i++) {
        path[path_len] = 4;
        path[path_len + 1] = (int)i;
        if (!openapi_add_type(c, me, m->enum_type[i]->name, NULL, m->enum_type[i], f, path,
                              path_len + 2)) {
            return false;
        }
    }
    return true;
}

static bool openapi_index(openapi_ctx *c, const Google__Protobuf__Compiler__CodeGeneratorRequest *req)
{
    for (size_t i = 0; i < req->n_proto_file; i++) {
        const file_proto *f = req->proto_file[i];
        char prefix[256];
        snprintf(prefix, sizeof(prefix), ".%s", f->package != NULL ? f->package : "");
        if (f->package == NULL || f->package[0] == '\0') {
            prefix[0] = '\0';
        }
        int path[8];
        for (size_t k = 0; k < f->n_message_type; k++) {
            path[0] = 4;
            path[1] = (int)k;
            if (!openapi_index_message(c, prefix, f->message_type[k], f, path, 2)) {
                return false;
            }
        }
        for (size_t k = 0; k < f->n_enum_type; k++) {
            path[0] = 5;
            path[1] = (int)k;
            if (!openapi_add_type(c, prefix, f->enum_type[k]->name, NULL, f->enum_type[k], f,
                                  path, 2)) {
                return false;
            }
        }
    }
    return true;
}

static openapi_type *openapi_find(openapi_ctx *c, const char *full)
{
    for (size_t i = 0; i < c->n_types; i++) {
        if (strcmp(c->types[i].full, full) == 0) {
            return &c->types[i];
        }
    }
    return NULL;
}

/* Mark t and every type it reaches as used. */
static bool openapi_mark(openapi_ctx *c, openapi_type *t)
{
    if (t->used) {
        return true;
    }
    t->used = true;
    if (t->msg == NULL) {
        return true;
    }
    for (size_t i = 0; i < t->msg->n_field; i++) {
        const field_proto *fd = t->msg->field[i];
        if (fd->type_name == NULL) {
            continue;
        }
        openapi_type *u = openapi_find(c, fd->type_name);
        if (u == NULL) {
            snprintf(c->err, c->err_len, "%s.%s: unknown type %s", t->full + 1, fd->name,
                     fd->type_name);
            return false;
        }
        if (!openapi_mark(c, u)) {
            return false;
        }
    }
    return true;
}

/* The JSON schema of one field's value (without the repeated wrapper). */
static void openapi_field_value_schema(ws_buf *out, openapi_ctx *c, const field_proto *fd)
{
    switch (fd->type) {
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT:
        ws_buf_printf(out, "{\"type\":\"number\",\"format\":\"%s\"}",
                      fd->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT
                          ? "float"
                          : "double");
        break;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT64:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT64:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64:
        ws_buf_puts(out, "{\"type\":\"string\",\"format\":\"int64\"}");
        break;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT64:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED64:
        ws_buf_puts(out, "{\"type\":\"string\",\"format\":\"uint64\"}");
        break;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT32:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED32:
        ws_buf_puts(out, "{\"type\":\"integer\",\"format\":\"int64\",\"minimum\":0,"
                         "\"maximum\":4294967295}");
        break;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT32:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED32:
        ws_buf_puts(out, "{\"type\":\"integer\",\"format\":\"int32\"}");
        break;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BOOL:
        ws_buf_puts(out, "{\"type\":\"boolean\"}");
        break;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_STRING:
        ws_buf_puts(out, "{\"type\":\"string\"}");
        break;
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BYTES:
        ws_buf_puts(out, "{\"type\":\"string\",\"format\":\"byte\"}");
        break;
    default: {
        openapi_type *u = fd->type_name != NULL ? openapi_find(c, fd->type_name) : NULL;
        ws_buf_printf(out, "{\"$ref\":\"#/components/schemas/%s\"}",
                      u != NULL ? u->short_name : "Unknown");
        break;
    }
    }
}

/* The (webshop.v1.limits) of a field or (webshop.v1.list_limits) of a
 * message (contract.proto), or NULL; free with webshop__v1__limits__free_unpacked. */
static Webshop__V1__Limits *openapi_limits(const ProtobufCMessage *opts, uint32_t number)
{
    options_bytes b;
    if (!options_find_bytes(opts, number, &b)) {
        return NULL;
    }
    return webshop__v1__limits__unpack(NULL, b.len, b.data);
}

/* ,"minItems":..,"maxItems":.. for the list field fd: the bounds of its own
 * (webshop.v1.limits), else those its element message declares with
 * (webshop.v1.list_limits). */
static void openapi_list_limits(ws_buf *out, openapi_ctx *c, const field_proto *fd)
{
    Webshop__V1__Limits *l = fd->options != NULL
                                 ? openapi_limits(&fd->options->base, OPENAPI_LIMITS_OPTION)
                                 : NULL;
    openapi_type *u = fd->type_name != NULL ? openapi_find(c, fd->type_name) : NULL;
    if (l == NULL && u != NULL && u->msg != NULL && u->msg->options != NULL) {
        l = openapi_limits(&u->msg->options->base, OPENAPI_LIST_LIMITS_OPTION);
    }
    if (l == NULL) {
        return;
    }
    if (l->has_min_items && l->min_items > 0) {
        ws_buf_printf(out, ",\"minItems\":%u", (unsigned)l->min_items);
    }
    if (l->has_max_items) {
        ws_buf_printf(out, ",\"maxItems\":%u", (unsigned)l->max_items);
    }
    webshop__v1__limits__free_unpacked(l, NULL);
}

/* ,"minimum":..,"maximum":.. for a number field with (webshop.v1.limits). */
static void openapi_value_limits(ws_buf *out, const field_proto *fd)
{
    if (fd->options == NULL) {
        return;
    }
    Webshop__V1__Limits *l = openapi_limits(&fd->options->base, OPENAPI_LIMITS_OPTION);
    if (l == NULL) {
        return;
    }
    if (l->has_min) {
        ws_buf_printf(out, ",\"minimum\":%lld", (long long)l->min);
    }
    if (l->has_max) {
        ws_buf_printf(out, ",\"maximum\":%lld", (long long)l->max);
    }
    webshop__v1__limits__free_unpacked(l, NULL);
}

static void openapi_field_schema(ws_buf *out, openapi_ctx *c, const openapi_type *owner,
                                 size_t index)
{
    const field_proto *fd = owner->msg->field[index];
    bool repeated = fd->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED;
    int path[10];
    memcpy(path, owner->path, owner->path_len * sizeof(int));
    path[owner->path_len] = 2;
    path[owner->path_len + 1] = (int)index;
    const char *comment = openapi_comment(owner->file, path, owner->path_len + 2);
    if (repeated) {
        ws_buf_puts(out, "{\"type\":\"array\",\"items\":");
        openapi_field_value_schema(out, c, fd);
        openapi_list_limits(out, c, fd);
    } else if (fd->type_name != NULL) {
        /* A $ref may carry no siblings in OpenAPI 3.0: wrap it. */
        ws_buf_puts(out, "{\"allOf\":[");
        openapi_field_value_schema(out, c, fd);
        ws_buf_puts(out, "]");
    } else {
        openapi_field_value_schema(out, c, fd);
        out->len--; /* reopen the object to add limits and a description */
        out->data[out->len] = '\0';
        openapi_value_limits(out, fd);
    }
    if (comment != NULL) {
        ws_buf_puts(out, ",\"description\":");
        openapi_description(out, comment);
    }
    ws_buf_putc(out, '}');
}

static void openapi_schema(ws_buf *out, openapi_ctx *c, const openapi_type *t)
{
    openapi_json_string(out, t->short_name);
    ws_buf_putc(out, ':');
    const char *comment = openapi_comment(t->file, t->path, t->path_len);
    if (t->en != NULL) {
        ws_buf_puts(out, "{\"type\":\"string\",\"enum\":[");
        for (size_t i = 0; i < t->en->n_value; i++) {
            if (i > 0) {
                ws_buf_putc(out, ',');
            }
            openapi_json_string(out, t->en->value[i]->name);
        }
        ws_buf_putc(out, ']');
    } else {
        ws_buf_puts(out, "{\"type\":\"object\",\"properties\":{");
        for (size_t i = 0; i < t->msg->n_field; i++) {
            if (i > 0) {
                ws_buf_putc(out, ',');
            }
            openapi_json_string(out, t->msg->field[i]->name);
            ws_buf_putc(out, ':');
            openapi_field_schema(out, c, t, i);
        }
        ws_buf_puts(out, "}");
    }
    if (comment != NULL) {
        ws_buf_puts(out, ",\"description\":");
        openapi_description(out, comment);
    }
    ws_buf_putc(out, '}');
}

/* The route annotation of a method, unpacked from the unknown field that
 * protobuf-c keeps for an extension it does not know; NULL when absent. */
static Webshop__V1__HttpRule *openapi_rule(const Google__Protobuf__MethodDescriptorProto *m)
{
    if (m->options == NULL) {
        return NULL;
    }
    const ProtobufCMessage *o = &m->options->base;
    for (unsigned i = 0; i < o->n_unknown_fields; i++) {
        const ProtobufCMessageUnknownField *u = &o->unknown_fields[i];
        if (u->tag == OPENAPI_HTTP_OPTION && u->wire_type == PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED) {
            /* protobuf-c keeps the length prefix in data: skip the varint. */
            size_t k = 0;
            while (k < u->len && k < 10 && (u->data[k] & 0x80) != 0) {
                k++;
            }
            if (k >= u->len) {
                return NULL;
            }
            return webshop__v1__http_rule__unpack(NULL, u->len - k - 1, u->data + k + 1);
        }
    }
    return NULL;
}

typedef struct openapi_op {
    const char *verb; /* "get", "post", "delete" */
    const char *path;
    Webshop__V1__HttpRule *rule; /* owned */
    const Google__Protobuf__MethodDescriptorProto *method;
    const file_proto *file;
    int svc_index, method_index;
    const char *service;
} openapi_op;

static bool openapi_has_param(const char *path, const char *name)
{
    char want[128];
    snprintf(want, sizeof(want), "{%s}", name);
    return strstr(path, want) != NULL;
}

static void openapi_error_response(ws_buf *out, int status, const char *what)
{
    ws_buf_printf(out,
                  ",\"%d\":{\"description\":\"%s\",\"content\":{\"application/json\":"
                  "{\"schema\":{\"$ref\":\"#/components/schemas/ErrorBody\"}}}}",
                  status, what);
}

static bool openapi_operation(ws_buf *out, openapi_ctx *c, const openapi_op *op)
{
    openapi_type *in = openapi_find(c, op->method->input_type);
    openapi_type *outt = openapi_find(c, op->method->output_type);
    if (in == NULL || outt == NULL || in->msg == NULL || outt->msg == NULL) {
        snprintf(c->err, c->err_len, "%s: unknown input or output type", op->method->name);
        return false;
    }
    openapi_mark(c, in);
    openapi_mark(c, outt);
    int path[4] = {6, op->svc_index, 2, op->method_index};
    const char *comment = openapi_comment(op->file, path, 4);
    openapi_json_string(out, op->verb);
    ws_buf_puts(out, ":{\"operationId\":");
    openapi_json_string(out, op->method->name);
    ws_buf_puts(out, ",\"tags\":[");
    openapi_json_string(out, op->service);
    ws_buf_puts(out, "]");
    if (op->rule->summary != NULL && op->rule->summary[0] != '\0') {
        ws_buf_puts(out, ",\"summary\":");
        openapi_json_string(out, op->rule->summary);
    }
    if (comment != NULL) {
        ws_buf_puts(out, ",\"description\":");
        openapi_description(out, comment);
    }
    /* Path parameters, then (for GET/DELETE) the other fields as query. */
    bool body = op->rule->body != NULL && strcmp(op->rule->body, "*") == 0;
    ws_buf_puts(out, ",\"parameters\":[");
    bool first = true;
    for (size_t i = 0; i < in->msg->n_field; i++) {
        const field_proto *fd = in->msg->field[i];
        bool in_path = openapi_has_param(op->path, fd->name);
        if (!in_path && body) {
            continue;
        }
        if (!in_path && fd->type_name != NULL) {
            continue; /* messages cannot be query parameters */
        }
        if (!first) {
            ws_buf_putc(out, ',');
        }
        first = false;
        ws_buf_puts(out, "{\"name\":");
        openapi_json_string(out, fd->name);
        ws_buf_printf(out, ",\"in\":\"%s\",\"required\":%s,\"schema\":",
                      in_path ? "path" : "query", in_path ? "true" : "false");
        openapi_field_value_schema(out, c, fd);
        ws_buf_putc(out, '}');
    }
    ws_buf_putc(out, ']');
    if (body) {
        ws_buf_printf(out, ",\"requestBody\":{\"required\":true,\"content\":{\"application/json\":"
                           "{\"schema\":{\"$ref\":\"#/components/schemas/%s\"}}}}",
                      in->short_name);
    }
    int status = op->rule->success_status != 0 ? op->rule->success_status : 200;
    ws_buf_printf(out, ",\"responses\":{\"%d\":{\"description\":\"Success\"", status);
    const char *media = op->rule->response_content_type;
    if (media != NULL && media[0] != '\0') {
        /* Not JSON (a Server-Sent-Events stream): the body is text; the
         * description names the message each event carries. */
        ws_buf_puts(out, ",\"content\":{");
        openapi_json_string(out, media);
        ws_buf_printf(out, ":{\"schema\":{\"type\":\"string\",\"description\":"
                           "\"Each event's data is a %s as JSON\"}}}}",
                      outt->short_name);
    } else if (op->rule->response_body != NULL && op->rule->response_body[0] != '\0') {
        ws_buf_puts(out, ",\"content\":{\"application/json\":{\"schema\":");
        size_t k;
        for (k = 0; k < outt->msg->n_field; k++) {
            if (strcmp(outt->msg->field[k]->name, op->rule->response_body) == 0) {
                break;
            }
        }
        if (k == outt->msg->n_field) {
            snprintf(c->err, c->err_len, "%s: response_body %s is not a field of %s",
                     op->method->name, op->rule->response_body, outt->short_name);
            return false;
        }
        openapi_field_schema(out, c, outt, k);
        ws_buf_puts(out, "}}}");
    } else {
        ws_buf_printf(out,
                      ",\"content\":{\"application/json\":{\"schema\":"
                      "{\"$ref\":\"#/components/schemas/%s\"}}}}",
                      outt->short_name);
    }
    openapi_error_response(out, 400, "Bad request: the message names the field");
    if (strchr(op->path, '{') != NULL) {
        openapi_error_response(out, 404, "Not found");
    }
    openapi_error_response(out, 405, "Method not allowed (see the Allow header)");
    if (body) {
        openapi_error_response(out, 413, "Body too large");
        openapi_error_response(out, 415, "Content-Type is not application/json");
    }
    openapi_error_response(out, 503, "A dependency is unavailable (see Retry-After)");
    openapi_error_response(out, 504, "A dependency did not answer in time");
    ws_buf_puts(out, "}}");
    return true;
}

bool openapi_build(const Google__Protobuf__Compiler__CodeGeneratorRequest *req, ws_buf *out,
                   char *err, size_t err_len)
{
    openapi_ctx c = {.err = err, .err_len = err_len};
    openapi_op *ops = NULL;
    size_t n_ops = 0;
    bool ok = false;
    const char *title = "API";
    const char *description = NULL;
    err[0] = '\0';

    if (!openapi_index(&c, req)) {
        snprintf(err, err_len, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < req->n_proto_file; i++) {
        const file_proto *f = req->proto_file[i];
        bool wanted = false;
        for (size_t k = 0; k < req->n_file_to_generate; k++) {
            wanted = wanted || strcmp(req->file_to_generate[k], f->name) == 0;
        }
        if (!wanted) {
            continue;
        }
        for (size_t s = 0; s < f->n_service; s++) {
            const Google__Protobuf__ServiceDescriptorProto *svc = f->service[s];
            for (size_t m = 0; m < svc->n_method; m++) {
                Webshop__V1__HttpRule *rule = openapi_rule(svc->method[m]);
                if (rule == NULL) {
                    continue;
                }
                openapi_op op = {.rule = rule, .method = svc->method[m], .file = f,
                                 .svc_index = (int)s, .method_index = (int)m,
                                 .service = svc->name};
                if (rule->get != NULL && rule->get[0] != '\0') {
                    op.verb = "get";
                    op.path = rule->get;
                } else if (rule->post != NULL && rule->post[0] != '\0') {
                    op.verb = "post";
                    op.path = rule->post;
                } else if (rule->delete_ != NULL && rule->delete_[0] != '\0') {
                    op.verb = "delete";
                    op.path = rule->delete_;
                } else {
                    snprintf(err, err_len, "%s.%s: http rule without a verb", svc->name,
                             svc->method[m]->name);
                    webshop__v1__http_rule__free_unpacked(rule, NULL);
                    goto done;
                }
                openapi_op *grown = realloc(ops, (n_ops + 1) * sizeof(*ops));
                if (grown == NULL) {
                    webshop__v1__http_rule__free_unpacked(rule, NULL);
                    snprintf(err, err_len, "out of memory");
                    goto done;
                }
                ops = grown;
                ops[n_ops++] = op;
                title = svc->name;
                int path[2] = {6, (int)s};
                description = openapi_comment(f, path, 2);
            }
        }
    }
    if (n_ops == 0) {
        snprintf(err, err_len, "no method carries a (webshop.v1.http) route");
        goto done;
    }
    openapi_type *errbody = openapi_find(&c, ".webshop.v1.ErrorBody");
    if (errbody == NULL) {
        snprintf(err, err_len, "webshop.v1.ErrorBody is needed for error responses");
        goto done;
    }
    openapi_mark(&c, errbody);

    ws_buf_puts(out, "{\"openapi\":\"3.0.3\",\"info\":{\"title\":");
    openapi_json_string(out, title);
    ws_buf_puts(out, ",\"version\":\"1.0.0\"");
    if (description != NULL) {
        ws_buf_puts(out, ",\"description\":");
        openapi_description(out, description);
    }
    ws_buf_puts(out, "},\"servers\":[{\"url\":\"/\"}],\"paths\":{");
    bool *done_op = calloc(n_ops, sizeof(bool));
    if (done_op == NULL) {
        snprintf(err, err_len, "out of memory");
        goto done;
    }
    bool first_path = true;
    for (size_t i = 0; i < n_ops; i++) {
        if (done_op[i]) {
            continue;
        }
        if (!first_path) {
            ws_buf_putc(out, ',');
        }
        first_path = false;
        openapi_json_string(out, ops[i].path);
        ws_buf_puts(out, ":{");
        bool first_op = true;
        for (size_t k = i; k < n_ops; k++) {
            if (done_op[k] || strcmp(ops[k].path, ops[i].path) != 0) {
                continue;
            }
            if (!first_op) {
                ws_buf_putc(out, ',');
            }
            first_op = false;
            done_op[k] = true;
            if (!openapi_operation(out, &c, &ops[k])) {
                free(done_op);
                goto done;
            }
        }
        ws_buf_putc(out, '}');
    }
    free(done_op);
    ws_buf_puts(out, "},\"components\":{\"schemas\":{");
    bool first = true;
    for (size_t i = 0; i < c.n_types; i++) {
        if (!c.types[i].used) {
            continue;
        }
        if (!first) {
            ws_buf_putc(out, ',');
        }
        first = false;
        openapi_schema(out, &c, &c.types[i]);
    }
    ws_buf_puts(out, "}}}\n");
    ok = err[0] == '\0';
done:
    for (size_t i = 0; i < n_ops; i++) {
        webshop__v1__http_rule__free_unpacked(ops[i].rule, NULL);
    }
    free(ops);
    for (size_t i = 0; i < c.n_types; i++) {
        free(c.types[i].full);
    }
    free(c.types);
    return ok;
}
