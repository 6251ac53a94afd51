/*
 * protoc-gen-webshop's "routes" mode (--webshop_out=routes:DIR): the route
 * table and handlers it writes for tests/proto/acme/routes.proto, which
 * uses every annotation form, compared byte for byte with
 * tests/golden/routes/ (WS_GOLDEN_UPDATE=1 rewrites them), the front's own
 * table, and the refusals for rules it cannot serve (run through the real
 * protoc on .proto files written here).
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "webshop/v1/front.routes.h"

/* Run protoc with our plugin in routes mode on proto (a path under
 * proto_dir); *dir_out is the temp dir holding the output (the caller
 * removes it). Returns protoc's exit status, its stderr in err. */
static int routes_protoc(const char *proto_dir, const char *proto, char *dir_out,
                         size_t dir_len, char *err, size_t err_len)
{
    char dir[] = "/tmp/webshop-routes-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    snprintf(dir_out, dir_len, "%s", dir);
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "%s --plugin=protoc-gen-webshop=%s --proto_path=%s --proto_path=%s "
             "--proto_path=/usr/include --webshop_out=routes:%s %s 2>%s/err.txt; echo $? "
             ">%s/rc",
             PROTOC, PLUGIN, proto_dir, PROTO_ROOT, dir, proto, dir, dir);
    cr_assert_eq(system(cmd), 0);
    char file[512];
    snprintf(file, sizeof(file), "%s/err.txt", dir);
    FILE *f = fopen(file, "r");
    size_t n = f != NULL ? fread(err, 1, err_len - 1, f) : 0;
    err[n] = '\0';
    if (f != NULL) {
        fclose(f);
    }
    snprintf(file, sizeof(file), "%s/rc", dir);
    f = fopen(file, "r");
    int rc = -1;
    cr_assert_eq(fscanf(f, "%d", &rc), 1);
    fclose(f);
    return rc;
}

static void routes_rmdir(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

/* The whole of path (malloc'ed, NUL-terminated), or NULL. */
static char *routes_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    cr_assert_not_null(s);
    cr_assert_eq(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

static void routes_golden(const char *dir, const char *name)
{
    char got_path[600];
    char want_path[600];
    snprintf(got_path, sizeof(got_path), "%s/acme/%s", dir, name);
    snprintf(want_path, sizeof(want_path), "%s/routes/%s", GOLDEN_DIR, name);
    char *got = routes_slurp(got_path);
    cr_assert_not_null(got, "%s was not written", got_path);
    const char *update = getenv("WS_GOLDEN_UPDATE");
    if (update != NULL && strcmp(update, "1") == 0) {
        FILE *f = fopen(want_path, "wb");
        cr_assert_not_null(f, "cannot write %s", want_path);
        fputs(got, f);
        fclose(f);
    }
    char *want = routes_slurp(want_path);
    cr_assert_not_null(want, "%s is missing (WS_GOLDEN_UPDATE=1 writes it)", want_path);
    cr_assert_str_eq(got, want,
                     "%s differs from %s (WS_GOLDEN_UPDATE=1 after a deliberate change)",
                     got_path, want_path);
    free(got);
    free(want);
}

Test(codegen_routes, every_annotation_form_matches_the_golden_files)
{
    char dir[64];
    char err[2048];
    int rc =
        routes_protoc(ACME_DIR, "acme/routes.proto", dir, sizeof(dir), err, sizeof(err));
    cr_assert_eq(rc, 0, "%s", err);
    routes_golden(dir, "routes.routes.h");
    routes_golden(dir, "routes.routes.c");
    routes_rmdir(dir);
}

Test(codegen_routes, a_file_without_rules_writes_nothing)
{
    char dir[64];
    char err[2048];
    int rc =
        routes_protoc(ACME_DIR, "acme/greeter.proto", dir, sizeof(dir), err, sizeof(err));
    cr_assert_eq(rc, 0, "%s", err);
    char path[600];
    snprintf(path, sizeof(path), "%s/acme/greeter.routes.h", dir);
    cr_assert_eq(access(path, F_OK), -1);
    routes_rmdir(dir);
}

Test(codegen_routes, the_fronts_table_is_front_proto)
{
    const ws_http_route_table *t = &webshop_v1_front_route_table;
    static const char *want[][3] = {
        {"GET", "/inventory", "GetCatalog"}, {"GET", "/order/{id}", "GetOrder"},
        {"POST", "/order", "PlaceOrder"},    {"DELETE", "/order/{id}", "CancelOrder"},
        {"GET", "/events", "WatchEvents"},   {"GET", "/healthz", "Healthz"},
        {"GET", "/readyz", "Readyz"},
    };
    cr_assert_eq(t->n_bindings, sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < t->n_bindings; i++) {
        cr_assert_str_eq(t->bindings[i].verb, want[i][0]);
        cr_assert_str_eq(t->bindings[i].pattern, want[i][1]);
        cr_assert_str_eq(t->methods[t->bindings[i].method].name, want[i][2]);
    }
    cr_assert_str_eq(t->bindings[0].response_body, "products");
    cr_assert_str_eq(t->bindings[2].body, "*");
    cr_assert_eq(t->bindings[2].success_status, 201);
}

#define ROUTES_HEAD                                                                      \
    "syntax = \"proto3\"; package t; import \"webshop/v1/http.proto\";\n"                \
    "message R { string id = 1; int64 n = 2; repeated string tags = 3; R child = 4;"     \
    " bytes raw = 5; double d = 6; }\n"                                                  \
    "service S {\n"

Test(codegen_routes, rules_it_cannot_serve_are_refused_by_name)
{
    static const struct {
        const char *rpc;
        const char *says;
    } cases[] = {
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {body: \"*\"}; }",
         "t.S.M: (webshop.v1.http): sets no path"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a\" post: \"/a\"}; "
         "}",
         "sets both GET and POST"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"a\"}; }",
         "\"a\": a path template starts with '/'"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/\"}; }",
         "an empty segment"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a//b\"}; }",
         "an empty segment"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/{nope}\"}; }",
         "{nope} is not a field of R"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/{tags}\"}; }",
         "{tags} must be a single string, integer, bool or enum field"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/{child}\"}; }",
         "{child} must be a single"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/{raw}\"}; }",
         "{raw} must be a single"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/{d}\"}; }",
         "{d} must be a single"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/{child.id}\"}; }",
         "nested fields are not supported"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/{id=*}\"}; }",
         "{field=pattern} and wildcards are not supported"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/{id}/{id}\"}; }",
         "{id} appears twice"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/x{id}\"}; }",
         "a literal segment has '{'"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a?b\"}; }",
         "a literal segment has '?'"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/..\"}; }",
         "'.' and '..' segments never match"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a\" body: \"*\"}; }",
         "a GET has no body"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {post: \"/a\" body: "
         "\"nope\"}; }",
         "body \"nope\" is not a field of R"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {post: \"/a/{id}\" body: "
         "\"id\"}; }",
         "body \"id\" is also a path parameter"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a\" response_body: "
         "\"x\"}; }",
         "response_body \"x\" is not a field of R"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a\" success_status: "
         "42}; }",
         "success_status 42 is not an HTTP status"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a\" "
         "additional_bindings:"
         " {get: \"/b\" additional_bindings: {get: \"/c\"}}}; }",
         "additional_bindings[0] has additional_bindings of its own"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a/{id}\"}; }\n"
         "rpc N(R) returns (R) { option (webshop.v1.http) = {get: \"/a/{n}\"}; }",
         "t.S.N: (webshop.v1.http): GET /a/{n} matches the same requests as GET /a/{id} "
         "of "
         "t.S.M"},
        {"rpc M(R) returns (R) { option (webshop.v1.http) = {get: \"/a\" "
         "additional_bindings:"
         " {get: \"/a\"}}; }",
         "GET /a matches the same requests as GET /a of t.S.M"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char src[256];
        snprintf(src, sizeof(src), "/tmp/webshop-routes-src-XXXXXX");
        cr_assert_not_null(mkdtemp(src));
        char path[300];
        snprintf(path, sizeof(path), "%s/x.proto", src);
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fprintf(f, "%s%s\n}\n", ROUTES_HEAD, cases[i].rpc);
        fclose(f);
        char dir[64];
        char err[2048];
        int rc = routes_protoc(src, "x.proto", dir, sizeof(dir), err, sizeof(err));
        cr_assert_neq(rc, 0, "case %zu was accepted: %s", i, cases[i].rpc);
        cr_assert(strstr(err, cases[i].says) != NULL, "case %zu: %s\nwanted: %s", i, err,
                  cases[i].says);
        routes_rmdir(dir);
        routes_rmdir(src);
    }
}

Test(codegen_routes, an_unknown_parameter_is_refused)
{
    char dir[64];
    char err[2048];
    char cmd[2048];
    char tmp[] = "/tmp/webshop-routes-XXXXXX";
    cr_assert_not_null(mkdtemp(tmp));
    snprintf(
        cmd, sizeof(cmd),
        "%s --plugin=protoc-gen-webshop=%s --proto_path=%s --proto_path=%s "
        "--proto_path=/usr/include --webshop_out=route:%s acme/routes.proto 2>%s/err.txt",
        PROTOC, PLUGIN, ACME_DIR, PROTO_ROOT, tmp, tmp);
    cr_assert_neq(system(cmd), 0);
    snprintf(dir, sizeof(dir), "%s/err.txt", tmp);
    char *text = routes_slurp(dir);
    cr_assert_not_null(text);
    snprintf(err, sizeof(err), "%s", text);
    free(text);
    cr_assert(strstr(err, "\"facts\" or \"routes\"") != NULL, "%s", err);
    routes_rmdir(tmp);
}
