/*
 * The routes model of a .proto file (see routes.h): reads each method's
 * (webshop.v1.http) rule and its additional_bindings from the unknown
 * fields of MethodOptions (options.h), checks every template, body and
 * response_body against the method's messages, refuses two bindings that
 * would match the same requests, and computes every C name once.
 */
#include "routes.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "options.h"

/* HttpRule field numbers (http.proto). */
#define ROUTES_RULE_GET            1
#define ROUTES_RULE_POST           2
#define ROUTES_RULE_DELETE         3
#define ROUTES_RULE_BODY           4
#define ROUTES_RULE_SUCCESS_STATUS 5
#define ROUTES_RULE_RESPONSE_BODY  7
#define ROUTES_RULE_PUT            11
#define ROUTES_RULE_PATCH          12
#define ROUTES_RULE_ADDITIONAL     13

/* lib/http_route.h's WS_HTTP_ROUTE_MAX_PARAMS. */
#define ROUTES_MAX_PARAMS 8

typedef Google__Protobuf__FieldDescriptorProto routes_field_proto;

typedef struct routes_ctx {
    gen_routes *r;
    const routes_msg_proto *(*msg_of)(const char *, void *);
    void *arg;
    char *err;
    size_t err_len;
    int rc;           /* 0, -1 (err set) or -2 (out of memory) */
    const char *what; /* "pkg.Svc.Method: (webshop.v1.http)" for messages */
} routes_ctx;

static const struct {
    uint32_t number;
    const char *verb;
} routes_verbs[] = {
    {ROUTES_RULE_GET, "GET"},       {ROUTES_RULE_POST, "POST"},
    {ROUTES_RULE_PUT, "PUT"},       {ROUTES_RULE_PATCH, "PATCH"},
    {ROUTES_RULE_DELETE, "DELETE"},
};

static void routes_fail(routes_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void routes_fail(routes_ctx *c, const char *fmt, ...)
{
    va_list ap;
    size_t n;

    if (c->rc != 0) {
        return;
    }
    snprintf(c->err, c->err_len, "%s: ", c->what);
    n = strlen(c->err);
    va_start(ap, fmt);
    vsnprintf(c->err + n, c->err_len - n, fmt, ap);
    va_end(ap);
    c->rc = -1;
}

static char *routes_dup(routes_ctx *c, const uint8_t *s, size_t n)
{
    char *out = malloc(n + 1);

    if (out == NULL) {
        c->rc = -2;
        return NULL;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

static char *routes_take(routes_ctx *c, strbuf *sb)
{
    char *s = strbuf_take(sb);

    if (s == NULL && c->rc == 0) {
        c->rc = -2;
    }
    return s;
}

static bool routes_is_ident(const char *s, size_t n)
{
    if (n == 0 ||
        !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_')) {
        return false;
    }
    for (size_t i = 1; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '_')) {
            return false;
        }
    }
    return true;
}

static const routes_field_proto *routes_field(const routes_msg_proto *m, const char *name,
                                              size_t n)
{
    for (size_t i = 0; m != NULL && i < m->n_field; i++) {
        const char *fn = m->field[i]->name;
        if (fn != NULL && strlen(fn) == n && memcmp(fn, name, n) == 0) {
            return m->field[i];
        }
    }
    return NULL;
}

/* A path parameter binds one scalar that text can spell: a string, a
 * number, a bool or an enum (not bytes, a message, a list or a map). */
static bool routes_field_bindable(const routes_field_proto *fd)
{
    if (fd->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED) {
        return false;
    }
    switch (fd->type) {
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_GROUP:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BYTES:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE:
        return false;
    default:
        return true;
    }
}

/* A {field} segment at s (n bytes, braces included); the field's name
 * goes to names[*n_names]. */
static void routes_param_check(routes_ctx *c, const char *pattern, const char *s,
                               size_t n, const routes_msg_proto *in, const char **names,
                               size_t *n_names, size_t *lens)
{
    const char *name = s + 1;
    size_t len = n - 2;

    if (n < 3 || s[n - 1] != '}' || memchr(name, '}', len) != NULL) {
        routes_fail(c, "\"%s\": a segment that opens '{' must be one {field}", pattern);
        return;
    }
    if (memchr(name, '=', len) != NULL || memchr(name, '*', len) != NULL) {
        routes_fail(c, "\"%s\": {field=pattern} and wildcards are not supported",
                    pattern);
        return;
    }
    if (memchr(name, '.', len) != NULL) {
        routes_fail(c, "\"%s\": {%.*s}: nested fields are not supported", pattern,
                    (int)len, name);
        return;
    }
    const routes_field_proto *fd =
        routes_is_ident(name, len) ? routes_field(in, name, len) : NULL;
    if (fd == NULL) {
        routes_fail(c, "\"%s\": {%.*s} is not a field of %s", pattern, (int)len, name,
                    in != NULL && in->name != NULL ? in->name : "the request");
        return;
    }
    if (!routes_field_bindable(fd)) {
        routes_fail(c,
                    "\"%s\": {%.*s} must be a single string, integer, bool or enum field",
                    pattern, (int)len, name);
        return;
    }
    for (size_t i = 0; i < *n_names; i++) {
        if (lens[i] == len && memcmp(names[i], name, len) == 0) {
            routes_fail(c, "\"%s\": {%.*s} appears twice", pattern, (int)len, name);
            return;
        }
    }
    if (*n_names == ROUTES_MAX_PARAMS) {
        routes_fail(c, "\"%s\": more than %d {field} segments", pattern,
                    ROUTES_MAX_PARAMS);
        return;
    }
    names[*n_names] = name;
    lens[(*n_names)++] = len;
}

/* A template: "/" alone, or "/seg/seg..." with no empty segment, each
 * literal (printable ASCII, none of the characters a path escapes or a C
 * string would need to) or one {field}. */
static void routes_pattern_check(routes_ctx *c, const char *pattern,
                                 const routes_msg_proto *in)
{
    const char *names[ROUTES_MAX_PARAMS];
    size_t lens[ROUTES_MAX_PARAMS];
    size_t n_names = 0;

    if (pattern[0] != '/') {
        routes_fail(c, "\"%s\": a path template starts with '/'", pattern);
        return;
    }
    if (strcmp(pattern, "/") == 0) {
        return;
    }
    for (const char *p = pattern; *p != '\0' && c->rc == 0;) {
        p++;
        size_t n = strcspn(p, "/");
        if (n == 0) {
            routes_fail(c, "\"%s\": an empty segment (\"//\" or a trailing '/')",
                        pattern);
            return;
        }
        if (*p == '{') {
            routes_param_check(c, pattern, p, n, in, names, &n_names, lens);
        } else {
            for (size_t i = 0; i < n; i++) {
                unsigned char ch = (unsigned char)p[i];
                if (ch <= 0x20 || ch >= 0x7f || strchr("\"\\?#%{}", ch) != NULL) {
                    routes_fail(
                        c,
                        "\"%s\": a literal segment has '%c' or a byte that is not "
                        "printable ASCII",
                        pattern, ch > 0x20 && ch < 0x7f ? ch : '?');
                    return;
                }
            }
            if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) {
                routes_fail(c, "\"%s\": '.' and '..' segments never match", pattern);
                return;
            }
        }
        p += n;
    }
}

/* Two templates match the same paths when they differ only in the names
 * of their {field} segments. */
static bool routes_same_shape(const char *a, const char *b)
{
    while (*a != '\0' && *b != '\0') {
        size_t na = strcspn(a, "/");
        size_t nb = strcspn(b, "/");
        bool pa = *a == '{';
        bool pb = *b == '{';
        if (pa != pb || (!pa && (na != nb || memcmp(a, b, na) != 0))) {
            return false;
        }
        a += na;
        b += nb;
        if (*a == '/' && *b == '/') {
            a++;
            b++;
        } else if (*a != *b) {
            return false;
        }
    }
    return *a == *b;
}

/* The verb and template of one rule (exactly one verb field). */
static const char *routes_rule_verb(routes_ctx *c, options_bytes rule,
                                    options_bytes *path)
{
    const char *verb = NULL;

    for (size_t i = 0; i < sizeof(routes_verbs) / sizeof(routes_verbs[0]); i++) {
        options_bytes p;
        if (!options_msg_bytes(rule, routes_verbs[i].number, &p)) {
            continue;
        }
        if (verb != NULL) {
            routes_fail(c,
                        "sets both %s and %s; a rule has one verb (add the other as an "
                        "additional_bindings entry)",
                        verb, routes_verbs[i].verb);
            return NULL;
        }
        verb = routes_verbs[i].verb;
        *path = p;
    }
    if (verb == NULL) {
        routes_fail(c, "sets no path (one of get, post, put, patch, delete)");
    }
    return verb;
}

/* The text of string field number of rule, "" when absent (owned). */
static char *routes_rule_string(routes_ctx *c, options_bytes rule, uint32_t number)
{
    options_bytes b = {NULL, 0};
    static const uint8_t none[1] = {0};

    if (!options_msg_bytes(rule, number, &b)) {
        b.data = none;
        b.len = 0;
    }
    if (memchr(b.data, '\0', b.len) != NULL) {
        routes_fail(c, "a string option holds a NUL byte");
        return NULL;
    }
    return routes_dup(c, b.data, b.len);
}

/* body and response_body name top-level fields (body: "*" is the whole
 * request); a body field is not also a path parameter. */
static void routes_bodies_check(routes_ctx *c, const routes_binding *b,
                                const routes_msg_proto *in, const routes_msg_proto *out)
{
    if (b->body[0] != '\0' && strcmp(b->body, "*") != 0) {
        if (routes_field(in, b->body, strlen(b->body)) == NULL) {
            routes_fail(c, "body \"%s\" is not a field of %s", b->body,
                        in != NULL && in->name != NULL ? in->name : "the request");
            return;
        }
        char braced[260];
        snprintf(braced, sizeof(braced), "{%s}", b->body);
        if (strstr(b->pattern, braced) != NULL) {
            routes_fail(c, "body \"%s\" is also a path parameter", b->body);
            return;
        }
    }
    if (b->body[0] != '\0' && strcmp(b->verb, "GET") == 0) {
        routes_fail(c, "a GET has no body (body \"%s\")", b->body);
        return;
    }
    if (b->response_body[0] != '\0' &&
        routes_field(out, b->response_body, strlen(b->response_body)) == NULL) {
        routes_fail(c, "response_body \"%s\" is not a field of %s", b->response_body,
                    out != NULL && out->name != NULL ? out->name : "the response");
    }
}

static routes_binding *routes_push(routes_ctx *c, routes_service *s)
{
    routes_binding *grown = realloc(s->bindings, (s->n_bindings + 1) * sizeof(*grown));

    if (grown == NULL) {
        c->rc = -2;
        return NULL;
    }
    s->bindings = grown;
    memset(&grown[s->n_bindings], 0, sizeof(*grown));
    return &grown[s->n_bindings++];
}

/* One rule (the method's or one of its additional_bindings) as binding
 * number s->n_bindings of method index mi. */
static void routes_binding_add(routes_ctx *c, routes_service *s, options_bytes rule,
                               size_t mi, bool additional, const routes_msg_proto *in,
                               const routes_msg_proto *out)
{
    options_bytes path;
    uint64_t status = 0;
    const char *verb = routes_rule_verb(c, rule, &path);

    if (verb == NULL) {
        return;
    }
    routes_binding *b = routes_push(c, s);
    if (b == NULL) {
        return;
    }
    b->verb = verb;
    b->method = mi;
    b->additional = additional;
    b->pattern = routes_dup(c, path.data, path.len);
    b->body = routes_rule_string(c, rule, ROUTES_RULE_BODY);
    b->response_body = routes_rule_string(c, rule, ROUTES_RULE_RESPONSE_BODY);
    if (c->rc != 0) {
        return;
    }
    if (memchr(path.data, '\0', path.len) != NULL) {
        routes_fail(c, "a path template holds a NUL byte");
        return;
    }
    if (options_msg_varint(rule, ROUTES_RULE_SUCCESS_STATUS, &status) &&
        (status < 100 || status > 599) && status != 0) {
        routes_fail(c, "success_status %lld is not an HTTP status (100..599)",
                    (long long)(int32_t)status);
        return;
    }
    b->success_status = status != 0 ? (int)status : 200;
    routes_pattern_check(c, b->pattern, in);
    if (c->rc == 0) {
        routes_bodies_check(c, b, in, out);
    }
    for (size_t i = 0; i + 1 < s->n_bindings && c->rc == 0; i++) {
        const routes_binding *o = &s->bindings[i];
        if (strcmp(o->verb, b->verb) == 0 && routes_same_shape(o->pattern, b->pattern)) {
            routes_fail(c, "%s %s matches the same requests as %s %s of %s.%s", b->verb,
                        b->pattern, o->verb, o->pattern, s->svc->full_name,
                        s->methods[o->method]->proto->name);
        }
    }
}

/* The bindings of method m (index mi in s->methods), from its rule. */
static void routes_method_add(routes_ctx *c, routes_service *s, const gen_method *m,
                              options_bytes rule, size_t mi)
{
    const routes_msg_proto *in = c->msg_of(m->proto->input_type, c->arg);
    const routes_msg_proto *out = c->msg_of(m->proto->output_type, c->arg);
    options_bytes extra;

    routes_binding_add(c, s, rule, mi, false, in, out);
    for (size_t i = 0;
         c->rc == 0 && options_msg_bytes_at(rule, ROUTES_RULE_ADDITIONAL, i, &extra);
         i++) {
        options_bytes nested;
        if (options_msg_bytes(extra, ROUTES_RULE_ADDITIONAL, &nested)) {
            routes_fail(c, "additional_bindings[%zu] has additional_bindings of its own",
                        i);
            return;
        }
        routes_binding_add(c, s, extra, mi, true, in, out);
    }
}

static char *routes_name(routes_ctx *c, const char *prefix, const char *suffix)
{
    strbuf sb = STRBUF_INIT;

    strbuf_printf(&sb, "%s_%s", prefix, suffix);
    return routes_take(c, &sb);
}

/* The routed methods of svc into s; nothing when it has none. */
static void routes_service_build(routes_ctx *c, const gen_service *svc, routes_service *s)
{
    char what[512];

    s->svc = svc;
    for (size_t i = 0; i < svc->n_methods && c->rc == 0; i++) {
        const gen_method *m = &svc->methods[i];
        options_bytes rule;
        if (m->proto->options == NULL ||
            !options_find_bytes(&m->proto->options->base, ROUTES_OPT_HTTP, &rule)) {
            continue;
        }
        const gen_method **grown =
            realloc(s->methods, (s->n_methods + 1) * sizeof(*grown));
        if (grown == NULL) {
            c->rc = -2;
            return;
        }
        s->methods = grown;
        s->methods[s->n_methods++] = m;
        snprintf(what, sizeof(what), "%s.%s: (webshop.v1.http)", svc->full_name,
                 m->proto->name);
        c->what = what;
        routes_method_add(c, s, m, rule, s->n_methods - 1);
    }
    c->what = svc->full_name;
    if (s->n_methods == 0 || c->rc != 0) {
        return;
    }
    s->handlers = routes_name(c, svc->prefix, "routes");
    s->table = routes_name(c, svc->prefix, "route_table");
    s->serve = routes_name(c, svc->prefix, "routes_serve");
    s->bindings_name = routes_name(c, svc->prefix, "route_bindings");
    s->methods_name = routes_name(c, svc->prefix, "route_methods");
}

/* No two services may share a generated name (Foo's foo_routes_serve and
 * FooRoutes's ...): every name of every service against every other. */
static void routes_check_clashes(routes_ctx *c, const gen_routes *r)
{
    for (size_t i = 0; i < r->n_services && c->rc == 0; i++) {
        const routes_service *a = &r->services[i];
        const char *an[] = {a->handlers, a->table, a->serve, a->bindings_name,
                            a->methods_name};
        for (size_t j = i + 1; j < r->n_services && c->rc == 0; j++) {
            const routes_service *b = &r->services[j];
            const char *bn[] = {b->handlers, b->table, b->serve, b->bindings_name,
                                b->methods_name};
            for (size_t x = 0; x < 5 && c->rc == 0; x++) {
                for (size_t y = 0; y < 5; y++) {
                    if (strcmp(an[x], bn[y]) == 0) {
                        c->what = r->file->proto->name;
                        routes_fail(c, "services %s and %s both map to the C name %s",
                                    a->svc->full_name, b->svc->full_name, an[x]);
                        break;
                    }
                }
            }
        }
    }
}

int routes_build(const gen_file *f,
                 const routes_msg_proto *(*msg_of)(const char *full_name, void *arg),
                 void *arg, gen_routes *out, char *err, size_t err_len)
{
    routes_ctx c = {out, msg_of, arg, err, err_len, 0, ""};
    strbuf sb = STRBUF_INIT;

    memset(out, 0, sizeof(*out));
    out->file = f;
    strbuf_puts(&sb, "WS_GEN_");
    names_upper(&sb, f->base);
    strbuf_puts(&sb, "_ROUTES_H");
    for (char *p = sb.data; p != NULL && *p != '\0'; p++) {
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) {
            *p = '_';
        }
    }
    out->guard = routes_take(&c, &sb);
    out->services = calloc(f->n_services ? f->n_services : 1, sizeof(*out->services));
    if (out->services == NULL) {
        return -2;
    }
    for (size_t i = 0; i < f->n_services && c.rc == 0; i++) {
        routes_service *s = &out->services[out->n_services];
        routes_service_build(&c, &f->services[i], s);
        if (s->n_methods > 0 || s->n_bindings > 0) {
            out->n_services++;
        } else {
            free(s->methods);
            memset(s, 0, sizeof(*s));
        }
    }
    if (c.rc == 0) {
        routes_check_clashes(&c, out);
    }
    return c.rc;
}

void routes_fini(gen_routes *r)
{
    /* services has one slot per service of the file: the counted ones,
     * then perhaps the one whose build failed, then zeroes. */
    for (size_t i = 0; r->services != NULL && r->file != NULL && i < r->file->n_services;
         i++) {
        routes_service *s = &r->services[i];
        for (size_t j = 0; j < s->n_bindings; j++) {
            free(s->bindings[j].pattern);
            free(s->bindings[j].body);
            free(s->bindings[j].response_body);
        }
        free(s->bindings);
        free(s->methods);
        free(s->handlers);
        free(s->table);
        free(s->serve);
        free(s->bindings_name);
        free(s->methods_name);
    }
    free(r->services);
    free(r->guard);
    memset(r, 0, sizeof(*r));
}
