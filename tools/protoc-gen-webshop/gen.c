/*
 * The driver of protoc-gen-webshop. For each file protoc asks for, it builds
 * the model of gen.h (names computed once, every type resolved through an
 * index of all messages in the request, protoc-c's c_package option
 * honoured), refuses what it cannot serve with a message for protoc
 * (CodeGeneratorResponse.error), and has the emitters print
 * "<file>.rpc.h" and "<file>.rpc.c". Files without a service produce
 * nothing. With the parameter "facts" (--webshop_out=facts:DIR) it writes
 * "<file>.facts.h" instead, for every file: the facts declared with the
 * options of webshop/v1/contract.proto (facts.h). With "routes"
 * (--webshop_out=routes:DIR) it writes "<file>.routes.h" and
 * "<file>.routes.c" for every file whose services have methods with a
 * (webshop.v1.http) rule: their route tables (routes.h).
 */
#include "gen.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "facts.h"
#include "names.h"
#include "options.h"
#include "routes.h"

/* protoc's descriptor.proto field numbers, for SourceCodeInfo paths. */
#define GEN_FILE_SERVICE_FIELD   6
#define GEN_SERVICE_METHOD_FIELD 2
/* protobuf-c.proto: extend FileOptions { ProtobufCFileOptions pb_c_file = 1019 },
 * whose field 6 is c_package. */
#define GEN_PB_C_FILE_EXT  1019
#define GEN_PB_C_C_PACKAGE 6
/* CodeGeneratorResponse.Feature.FEATURE_PROTO3_OPTIONAL: we never look at
 * fields, so proto3 optional is no concern of ours. */
#define GEN_FEATURE_PROTO3_OPTIONAL 1

/* A message type of the request, by full name (".pkg.Outer.Inner"). */
typedef struct gen_type {
    char *full_name;
    const gen_file_proto *file;
    const Google__Protobuf__DescriptorProto *msg;
} gen_type;

typedef struct gen_ctx {
    const gen_request *req;
    gen_type *types;
    size_t n_types;
    size_t cap_types;
    char *error; /* the first error, owned */
    bool nomem;
} gen_ctx;

static void gen_ctx_fail(gen_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void gen_ctx_fail(gen_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (ctx->error != NULL) {
        return;
    }
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        ctx->nomem = true;
        return;
    }
    ctx->error = malloc((size_t)n + 1);
    if (ctx->error == NULL) {
        ctx->nomem = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(ctx->error, (size_t)n + 1, fmt, ap);
    va_end(ap);
}

/* Take sb's text (NULL and nomem set if any append failed). */
static char *gen_ctx_take(gen_ctx *ctx, strbuf *sb)
{
    char *s = strbuf_take(sb);

    if (s == NULL) {
        ctx->nomem = true;
    }
    return s;
}

static void gen_types_add(gen_ctx *ctx, const char *scope,
                          const Google__Protobuf__DescriptorProto *msg,
                          const gen_file_proto *file)
{
    strbuf sb = STRBUF_INIT;
    char *name;

    strbuf_printf(&sb, "%s.%s", scope, msg->name ? msg->name : "");
    name = gen_ctx_take(ctx, &sb);
    if (name == NULL) {
        return;
    }
    if (ctx->n_types == ctx->cap_types) {
        size_t cap = ctx->cap_types ? ctx->cap_types * 2 : 64;
        gen_type *t = realloc(ctx->types, cap * sizeof(*t));

        if (t == NULL) {
            free(name);
            ctx->nomem = true;
            return;
        }
        ctx->types = t;
        ctx->cap_types = cap;
    }
    ctx->types[ctx->n_types].full_name = name;
    ctx->types[ctx->n_types].file = file;
    ctx->types[ctx->n_types].msg = msg;
    ctx->n_types++;
    for (size_t i = 0; i < msg->n_nested_type; i++) {
        gen_types_add(ctx, name, msg->nested_type[i], file);
    }
}

static void gen_types_index(gen_ctx *ctx)
{
    for (size_t f = 0; f < ctx->req->n_proto_file; f++) {
        const gen_file_proto *file = ctx->req->proto_file[f];
        strbuf scope = STRBUF_INIT;
        char *s;

        if (file->package != NULL && file->package[0] != '\0') {
            strbuf_printf(&scope, ".%s", file->package);
        }
        s = gen_ctx_take(ctx, &scope);
        if (s == NULL) {
            return;
        }
        for (size_t i = 0; i < file->n_message_type; i++) {
            gen_types_add(ctx, s, file->message_type[i], file);
        }
        free(s);
    }
}

static const gen_type *gen_types_find(const gen_ctx *ctx, const char *full_name)
{
    for (size_t i = 0; i < ctx->n_types; i++) {
        if (strcmp(ctx->types[i].full_name, full_name) == 0) {
            return &ctx->types[i];
        }
    }
    return NULL;
}

/* The file's `option (pb_c_file).c_package`, which protobuf-c keeps among
 * the unknown fields of FileOptions (we do not compile protobuf-c.proto).
 * Written to sb; false if absent. */
static bool gen_file_c_package(const gen_file_proto *file, strbuf *sb)
{
    options_bytes ext;
    options_bytes pkg;

    if (file->options == NULL ||
        !options_find_bytes(&file->options->base, GEN_PB_C_FILE_EXT, &ext) ||
        !options_msg_bytes(ext, GEN_PB_C_C_PACKAGE, &pkg)) {
        return false;
    }
    strbuf_fini(sb);
    strbuf_putn(sb, (const char *)pkg.data, pkg.len);
    return true;
}

/* protoc-c's C type and lower name of a message type. */
static bool gen_type_names(gen_ctx *ctx, const char *file_name, const char *full_name,
                           char **c_type, char **lower)
{
    const gen_type *t = gen_types_find(ctx, full_name);
    strbuf pkg = STRBUF_INIT;
    strbuf sb = STRBUF_INIT;
    const char *c_package = NULL;

    if (t == NULL) {
        gen_ctx_fail(ctx, "%s: type %s is not a message of this request", file_name,
                     full_name);
        return false;
    }
    if (gen_file_c_package(t->file, &pkg)) {
        c_package = strbuf_str(&pkg);
    }
    names_c_type(&sb, full_name, t->file->package, c_package);
    *c_type = gen_ctx_take(ctx, &sb);
    if (lower != NULL) {
        names_c_lower(&sb, full_name, t->file->package, c_package);
        *lower = gen_ctx_take(ctx, &sb);
    }
    strbuf_fini(&pkg);
    return !ctx->nomem;
}

/* The leading comment of the element at path in file, or NULL. */
static const char *gen_comment_find(const gen_file_proto *file, const int32_t *path,
                                    size_t n)
{
    if (file->source_code_info == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < file->source_code_info->n_location; i++) {
        const Google__Protobuf__SourceCodeInfo__Location *loc =
            file->source_code_info->location[i];

        if (loc->n_path == n && memcmp(loc->path, path, n * sizeof(*path)) == 0) {
            return loc->leading_comments;
        }
    }
    return NULL;
}

static void gen_method_fini(gen_method *m)
{
    free(m->fn);
    free(m->macro);
    free(m->field);
    free(m->path);
    free(m->in_type);
    free(m->in_lower);
    free(m->out_type);
    free(m->out_lower);
}

static void gen_service_fini(gen_service *s)
{
    for (size_t i = 0; i < s->n_methods; i++) {
        gen_method_fini(&s->methods[i]);
    }
    free(s->methods);
    free(s->full_name);
    free(s->prefix);
    free(s->lower);
}

static void gen_file_fini(gen_file *f)
{
    for (size_t i = 0; i < f->n_services; i++) {
        gen_service_fini(&f->services[i]);
    }
    free(f->services);
    free(f->base);
    free(f->ident);
}

/* Read m's (webshop.v1.allow) option into m->allow, refusing an identity
 * the runtime could never match: empty, or other than a-z, 0-9 and '-' (the
 * names tools/shop_ca makes; the generated C quotes them without escaping). */
static bool gen_method_allow(gen_ctx *ctx, const gen_file_proto *file, gen_method *m)
{
    const Google__Protobuf__MethodOptions *o = m->proto->options;
    options_bytes id;

    if (o == NULL || !options_find_bytes(&o->base, GEN_ALLOW_EXT, &m->allow)) {
        m->allow = (options_bytes){NULL, 0};
        return true;
    }
    for (; options_msg_bytes_at(m->allow, GEN_ALLOW_IDENTITIES, m->n_allow, &id);
         m->n_allow++) {
        bool ok = id.len > 0 && id.len <= 64;
        for (size_t i = 0; ok && i < id.len; i++) {
            uint8_t c = id.data[i];
            ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
        }
        if (!ok) {
            gen_ctx_fail(ctx,
                         "%s: %s: identity \"%.*s\" in (webshop.v1.allow) is not a name "
                         "of a-z, 0-9 and '-'",
                         file->name, m->path, (int)(id.len > 64 ? 64 : id.len),
                         (const char *)id.data);
            return false;
        }
    }
    return true;
}

static bool gen_method_init(gen_ctx *ctx, const gen_file_proto *file,
                            const gen_service *s, int32_t s_index, int32_t m_index,
                            gen_method *m)
{
    const gen_method_proto *mp = s->proto->method[m_index];
    int32_t path[4] = {GEN_FILE_SERVICE_FIELD, s_index, GEN_SERVICE_METHOD_FIELD,
                       m_index};
    strbuf sb = STRBUF_INIT;

    m->proto = mp;
    if (mp->name == NULL || mp->input_type == NULL || mp->output_type == NULL) {
        gen_ctx_fail(ctx, "%s: method without a name or types in %s", file->name,
                     s->full_name);
        return false;
    }
    if (mp->client_streaming || mp->server_streaming) {
        gen_ctx_fail(ctx, "%s: %s.%s is a streaming method; webshop RPC is unary only",
                     file->name, s->full_name, mp->name);
        return false;
    }
    strbuf_printf(&sb, "%s_", s->prefix);
    names_snake(&sb, mp->name);
    m->fn = gen_ctx_take(ctx, &sb);
    if (m->fn == NULL) {
        return false;
    }
    names_upper(&sb, m->fn);
    strbuf_puts(&sb, "_METHOD");
    m->macro = gen_ctx_take(ctx, &sb);
    names_snake(&sb, mp->name);
    if (names_is_c_keyword(strbuf_str(&sb)) || strcmp(strbuf_str(&sb), "ctx") == 0) {
        strbuf_puts(&sb, "_");
    }
    m->field = gen_ctx_take(ctx, &sb);
    strbuf_printf(&sb, "/%s/%s", s->full_name, mp->name);
    m->path = gen_ctx_take(ctx, &sb);
    if (ctx->nomem) {
        return false;
    }
    if (!gen_type_names(ctx, file->name, mp->input_type, &m->in_type, &m->in_lower) ||
        !gen_type_names(ctx, file->name, mp->output_type, &m->out_type, &m->out_lower)) {
        return false;
    }
    m->comment = gen_comment_find(file, path, 4);
    return gen_method_allow(ctx, file, m);
}

static bool gen_service_init(gen_ctx *ctx, const gen_file_proto *file, int32_t s_index,
                             gen_service *s)
{
    const gen_service_proto *sp = file->service[s_index];
    const char *package = file->package ? file->package : "";
    int32_t path[2] = {GEN_FILE_SERVICE_FIELD, s_index};
    strbuf sb = STRBUF_INIT;
    strbuf cpkg = STRBUF_INIT;
    bool has_c_package;

    s->proto = sp;
    if (sp->name == NULL) {
        gen_ctx_fail(ctx, "%s: service without a name", file->name);
        return false;
    }
    strbuf_printf(&sb, "%s%s%s", package, package[0] ? "." : "", sp->name);
    s->full_name = gen_ctx_take(ctx, &sb);
    names_package(&sb, package);
    if (package[0] != '\0') {
        strbuf_puts(&sb, "_");
    }
    names_snake(&sb, sp->name);
    s->prefix = gen_ctx_take(ctx, &sb);
    if (s->full_name == NULL || s->prefix == NULL) {
        return false;
    }
    has_c_package = gen_file_c_package(file, &cpkg);
    names_c_lower(&sb, s->full_name, package, has_c_package ? strbuf_str(&cpkg) : NULL);
    strbuf_fini(&cpkg);
    s->lower = gen_ctx_take(ctx, &sb);
    if (s->lower == NULL) {
        return false;
    }
    s->comment = gen_comment_find(file, path, 2);
    if (sp->n_method == 0) {
        return true;
    }
    s->methods = calloc(sp->n_method, sizeof(*s->methods));
    if (s->methods == NULL) {
        ctx->nomem = true;
        return false;
    }
    for (size_t i = 0; i < sp->n_method; i++) {
        s->n_methods = i + 1;
        if (!gen_method_init(ctx, file, s, s_index, (int32_t)i, &s->methods[i])) {
            return false;
        }
    }
    return true;
}

/* Every generated C identifier of the file must be unique: two .proto names
 * can map to one C name (GetX and Get_x, Foo.Bar_baz and FooBar.Baz). */
static bool gen_file_check_clashes(gen_ctx *ctx, const gen_file *f)
{
    size_t n = 0;
    size_t cap = 0;
    char **names = NULL;
    bool ok = true;
    strbuf sb = STRBUF_INIT;

    for (size_t i = 0; i < f->n_services; i++) {
        cap += 2 + 2 * f->services[i].n_methods;
    }
    names = calloc(cap ? cap : 1, sizeof(*names));
    if (names == NULL) {
        ctx->nomem = true;
        return false;
    }
    for (size_t i = 0; i < f->n_services; i++) {
        const gen_service *s = &f->services[i];

        strbuf_printf(&sb, "%s_server", s->prefix);
        names[n++] = gen_ctx_take(ctx, &sb);
        strbuf_printf(&sb, "%s_register", s->prefix);
        names[n++] = gen_ctx_take(ctx, &sb);
        for (size_t j = 0; j < s->n_methods; j++) {
            names[n++] = strdup(s->methods[j].fn);
            strbuf_printf(&sb, "%s_ex", s->methods[j].fn);
            names[n++] = gen_ctx_take(ctx, &sb);
        }
    }
    for (size_t i = 0; i < n && ok; i++) {
        if (names[i] == NULL) {
            ctx->nomem = true;
            ok = false;
            break;
        }
        for (size_t j = i + 1; j < n; j++) {
            if (names[j] != NULL && strcmp(names[i], names[j]) == 0) {
                gen_ctx_fail(ctx, "%s: two services or methods map to the C name %s",
                             f->proto->name, names[i]);
                ok = false;
                break;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
    return ok;
}

static bool gen_file_init(gen_ctx *ctx, const gen_file_proto *file, gen_file *f)
{
    const char *name = file->name ? file->name : "";
    size_t len = strlen(name);
    strbuf sb = STRBUF_INIT;

    f->proto = file;
    if (len > 6 && strcmp(name + len - 6, ".proto") == 0) {
        len -= 6;
    }
    strbuf_putn(&sb, name, len);
    f->base = gen_ctx_take(ctx, &sb);
    if (f->base == NULL) {
        return false;
    }
    f->req = ctx->req;
    for (const char *p = f->base; *p != '\0'; p++) {
        char ch = isalnum((unsigned char)*p) ? *p : '_';
        strbuf_putn(&sb, &ch, 1);
    }
    f->ident = gen_ctx_take(ctx, &sb);
    if (f->ident == NULL) {
        return false;
    }
    f->services = calloc(file->n_service, sizeof(*f->services));
    if (f->services == NULL) {
        ctx->nomem = true;
        return false;
    }
    for (size_t i = 0; i < file->n_service; i++) {
        f->n_services = i + 1;
        if (!gen_service_init(ctx, file, (int32_t)i, &f->services[i])) {
            return false;
        }
        f->services[i].file_ident = f->ident;
    }
    return gen_file_check_clashes(ctx, f);
}

static bool gen_response_add(gen_ctx *ctx, gen_response *resp, const char *base,
                             const char *suffix, strbuf *content)
{
    Google__Protobuf__Compiler__CodeGeneratorResponse__File *out;
    Google__Protobuf__Compiler__CodeGeneratorResponse__File **files;
    strbuf name = STRBUF_INIT;

    out = malloc(sizeof(*out));
    files = realloc(resp->file, (resp->n_file + 1) * sizeof(*files));
    if (out == NULL || files == NULL) {
        free(out);
        if (files != NULL) {
            resp->file = files;
        }
        ctx->nomem = true;
        return false;
    }
    resp->file = files;
    google__protobuf__compiler__code_generator_response__file__init(out);
    strbuf_printf(&name, "%s%s", base, suffix);
    out->name = gen_ctx_take(ctx, &name);
    out->content = gen_ctx_take(ctx, content);
    resp->file[resp->n_file++] = out;
    return !ctx->nomem;
}

static const gen_file_proto *gen_request_find_file(const gen_request *req,
                                                   const char *name)
{
    for (size_t i = 0; i < req->n_proto_file; i++) {
        if (req->proto_file[i]->name != NULL &&
            strcmp(req->proto_file[i]->name, name) == 0) {
            return req->proto_file[i];
        }
    }
    return NULL;
}

static void gen_one_file(gen_ctx *ctx, const gen_file_proto *file, gen_response *resp)
{
    gen_file f;
    strbuf h = STRBUF_INIT;
    strbuf c = STRBUF_INIT;

    memset(&f, 0, sizeof(f));
    if (!gen_file_init(ctx, file, &f)) {
        gen_file_fini(&f);
        return;
    }
    emit_file_header(&f, &h);
    emit_file_source(&f, &c);
    if (!emit_descriptors_source(&f, &c)) {
        gen_ctx_fail(ctx, "%s: an import is missing from the request (or out of memory)",
                     file->name);
        strbuf_fini(&h);
        strbuf_fini(&c);
        gen_file_fini(&f);
        return;
    }
    if (gen_response_add(ctx, resp, f.base, ".rpc.h", &h)) {
        gen_response_add(ctx, resp, f.base, ".rpc.c", &c);
    }
    strbuf_fini(&h);
    strbuf_fini(&c);
    gen_file_fini(&f);
}

/* facts_build's lower_of: protoc-c's lower name of a message of the request. */
static char *gen_lower_of(const char *full_name, void *arg)
{
    gen_ctx *ctx = arg;
    char *c_type = NULL;
    char *lower = NULL;

    if (!gen_type_names(ctx, "facts", full_name, &c_type, &lower)) {
        free(lower);
        lower = NULL;
    }
    free(c_type);
    return lower;
}

/* "<file>.facts.h" for one file (the "facts" parameter). */
static void gen_one_facts(gen_ctx *ctx, const gen_file_proto *file, gen_response *resp)
{
    gen_facts f;
    strbuf h = STRBUF_INIT;
    char err[512] = "";
    int rc = facts_build(file, gen_lower_of, ctx, &f, err, sizeof(err));

    if (rc == -1) {
        gen_ctx_fail(ctx, "%s", err);
    } else if (rc != 0) {
        ctx->nomem = true;
    } else if (ctx->error == NULL && !ctx->nomem) {
        emit_facts_header(&f, &h);
        gen_response_add(ctx, resp, f.base, ".facts.h", &h);
    }
    strbuf_fini(&h);
    facts_fini(&f);
}

/* routes_build's msg_of: a message of the request by full name. */
static const routes_msg_proto *gen_msg_of(const char *full_name, void *arg)
{
    const gen_type *t = gen_types_find(arg, full_name);

    return t != NULL ? t->msg : NULL;
}

/* "<file>.routes.h" and ".routes.c" for one file (the "routes" parameter);
 * nothing for a file without routed methods. */
static void gen_one_routes(gen_ctx *ctx, const gen_file_proto *file, gen_response *resp)
{
    gen_file f;
    gen_routes r;
    strbuf h = STRBUF_INIT;
    strbuf c = STRBUF_INIT;
    char err[512] = "";

    memset(&f, 0, sizeof(f));
    memset(&r, 0, sizeof(r));
    if (gen_file_init(ctx, file, &f)) {
        int rc = routes_build(&f, gen_msg_of, ctx, &r, err, sizeof(err));
        if (rc == -1) {
            gen_ctx_fail(ctx, "%s", err);
        } else if (rc != 0) {
            ctx->nomem = true;
        } else if (r.n_services > 0) {
            emit_routes_header(&r, &h);
            emit_routes_source(&r, &c);
            if (gen_response_add(ctx, resp, f.base, ".routes.h", &h)) {
                gen_response_add(ctx, resp, f.base, ".routes.c", &c);
            }
        }
    }
    strbuf_fini(&h);
    strbuf_fini(&c);
    routes_fini(&r);
    gen_file_fini(&f);
}

bool gen_run(const gen_request *req, gen_response *resp)
{
    gen_ctx ctx;

    memset(&ctx, 0, sizeof(ctx));
    ctx.req = req;
    resp->has_supported_features = 1;
    resp->supported_features = GEN_FEATURE_PROTO3_OPTIONAL;
    bool facts = false;
    bool routes = false;
    if (req->parameter != NULL && strcmp(req->parameter, "facts") == 0) {
        facts = true;
    } else if (req->parameter != NULL && strcmp(req->parameter, "routes") == 0) {
        routes = true;
    } else if (req->parameter != NULL && req->parameter[0] != '\0') {
        gen_ctx_fail(&ctx,
                     "protoc-gen-webshop takes no parameter but \"facts\" or \"routes\" "
                     "(got \"%s\")",
                     req->parameter);
    }
    gen_types_index(&ctx);
    for (size_t i = 0; i < req->n_file_to_generate && ctx.error == NULL && !ctx.nomem;
         i++) {
        const gen_file_proto *file = gen_request_find_file(req, req->file_to_generate[i]);

        if (file == NULL) {
            gen_ctx_fail(&ctx, "%s: not among the request's proto_file",
                         req->file_to_generate[i]);
        } else if (facts) {
            gen_one_facts(&ctx, file, resp);
        } else if (routes) {
            gen_one_routes(&ctx, file, resp);
        } else if (file->n_service > 0) {
            gen_one_file(&ctx, file, resp);
        }
    }
    for (size_t i = 0; i < ctx.n_types; i++) {
        free(ctx.types[i].full_name);
    }
    free(ctx.types);
    if (ctx.error != NULL) {
        /* protoc ignores the files of a failed response; drop them. */
        gen_response_fini(resp);
        resp->error = ctx.error;
    }
    return !ctx.nomem;
}

void gen_response_fini(gen_response *resp)
{
    for (size_t i = 0; i < resp->n_file; i++) {
        free(resp->file[i]->name);
        free(resp->file[i]->content);
        free(resp->file[i]);
    }
    free(resp->file);
    resp->file = NULL;
    resp->n_file = 0;
    free(resp->error);
    resp->error = NULL;
}
