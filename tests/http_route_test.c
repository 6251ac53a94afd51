/*
 * lib/http_route: matching against a generated route table (the one
 * protoc-gen-webshop writes for tests/proto/acme/routes.proto, which uses
 * every annotation form) and binding {field} segments into the request
 * message. The front's table is exercised over HTTP by tests/e2e.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "acme/routes.routes.h"
#include "http_route.h"

static const ws_http_route_table *T = &acme_routes_v1_library_route_table;

/* The method name of what verb and path match, or the outcome. */
static const char *route_of(const char *verb, const char *path, ws_http_route_match *m)
{
    char allow[96];
    switch (ws_http_route_find(T, verb, path, m, allow, sizeof(allow))) {
    case WS_HTTP_ROUTE_FOUND:
        return T->methods[m->binding->method].name;
    case WS_HTTP_ROUTE_NO_METHOD:
        return "405";
    default:
        return "404";
    }
}

Test(http_route, every_verb_and_binding_reaches_its_method)
{
    static const struct {
        const char *verb, *path, *method, *pattern;
    } cases[] = {
        {"GET", "/shelves/7/books/b1", "GetBook", "/shelves/{shelf}/books/{id}"},
        {"GET", "/shelves/7/sorted/ORDER_NAME", "GetBook",
         "/shelves/{shelf}/sorted/{order}"},
        {"GET", "/shelves/7/public/true", "GetBook", "/shelves/{shelf}/public/{public}"},
        {"GET", "/racks/3", "GetBook", "/racks/{rack}"},
        {"POST", "/shelves", "CreateShelf", "/shelves"},
        {"PUT", "/shelves/7/books/b1", "UpdateBook", "/shelves/{shelf}/books/{id}"},
        {"PATCH", "/shelves/7/books/b1", "UpdateBook", "/shelves/{shelf}/books/{id}"},
        {"DELETE", "/shelves/7", "DeleteShelf", "/shelves/{shelf}"},
        {"GET", "/shelves/7/books", "ListBooks", "/shelves/{shelf}/books"},
        {"POST", "/shelves/7/books:list", "ListBooks", "/shelves/{shelf}/books:list"},
        {"GET", "/", "Home", "/"},
        {"HEAD", "/", "Home", "/"},
        {"HEAD", "/shelves/7/books/b1", "GetBook", "/shelves/{shelf}/books/{id}"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ws_http_route_match m;
        cr_assert_str_eq(route_of(cases[i].verb, cases[i].path, &m), cases[i].method,
                         "%s %s", cases[i].verb, cases[i].path);
        cr_assert_str_eq(m.binding->pattern, cases[i].pattern);
    }
}

Test(http_route, bindings_carry_body_response_body_and_status)
{
    ws_http_route_match m;
    cr_assert_str_eq(route_of("POST", "/shelves", &m), "CreateShelf");
    cr_assert_str_eq(m.binding->body, "*");
    cr_assert_eq(m.binding->success_status, 201);
    cr_assert_str_eq(route_of("PATCH", "/shelves/1/books/x", &m), "UpdateBook");
    cr_assert_str_eq(m.binding->body, "book");
    cr_assert_str_eq(route_of("GET", "/shelves/1/books", &m), "ListBooks");
    cr_assert_str_eq(m.binding->response_body, "books");
    cr_assert_str_eq(m.binding->body, "");
    cr_assert_str_eq(route_of("DELETE", "/shelves/1", &m), "DeleteShelf");
    cr_assert_eq(m.binding->success_status, 204);
    cr_assert_eq(m.table->methods[m.binding->method].output,
                 &acme__routes__v1__empty__descriptor);
}

Test(http_route, matching_is_exact_and_case_sensitive)
{
    static const char *misses[] = {
        "/Shelves",
        "/shelves/",
        "/shelves//books",
        "//shelves",
        "/shelves/7/books/",
        "/shelves/7/Books",
        "/shelves/7/books/b1/x",
        "/racks",
        "/racks/",
        "/shelves/7/books:List",
        "/SHELVES/7",
        "/shelves/7/books:list/",
        "",
        "x",
    };
    for (size_t i = 0; i < sizeof(misses) / sizeof(misses[0]); i++) {
        ws_http_route_match m;
        cr_assert_str_eq(route_of("GET", misses[i], &m), "404", "%s", misses[i]);
        cr_assert_str_eq(route_of("DELETE", misses[i], &m), "404", "%s", misses[i]);
    }
    ws_http_route_match m;
    /* A segment may hold what a literal may not: it is one value. */
    cr_assert_str_eq(route_of("GET", "/shelves/7/books/a%2Fb", &m), "GetBook");
    cr_assert_str_eq(ws_http_route_param(&m, "id"), "a%2Fb");
}

Test(http_route, other_methods_answer_405_with_the_paths_verbs)
{
    static const struct {
        const char *verb, *path, *allow;
    } cases[] = {
        {"POST", "/shelves/7/books/b1", "GET, PUT, PATCH, HEAD"},
        {"DELETE", "/shelves/7/books/b1", "GET, PUT, PATCH, HEAD"},
        {"GET", "/shelves", "POST"},
        {"HEAD", "/shelves", "POST"},
        {"GET", "/shelves/7", "DELETE"},
        {"OPTIONS", "/", "GET, HEAD"},
        {"get", "/", "GET, HEAD"},
        {"PUT", "/shelves/7/books", "GET, HEAD"},
        {"GET", "/shelves/7/books:list", "POST"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ws_http_route_match m;
        char allow[96] = "";
        cr_assert_eq(
            ws_http_route_find(T, cases[i].verb, cases[i].path, &m, allow, sizeof(allow)),
            WS_HTTP_ROUTE_NO_METHOD, "%s %s", cases[i].verb, cases[i].path);
        cr_assert_str_eq(allow, cases[i].allow, "%s %s", cases[i].verb, cases[i].path);
    }
}

Test(http_route, path_parameters_bind_into_typed_request_fields)
{
    ws_http_route_match m;
    char err[128] = "";
    ProtobufCMessage *msg = NULL;

    cr_assert_str_eq(route_of("GET", "/shelves/-42/books/B%20x", &m), "GetBook");
    cr_assert_eq(ws_http_route_request(&m, &msg, err, sizeof(err)), WS_OK, "%s", err);
    Acme__Routes__V1__GetBookRequest *r = (Acme__Routes__V1__GetBookRequest *)msg;
    cr_assert_eq(r->shelf, -42);
    cr_assert_str_eq(r->id, "B%20x");
    protobuf_c_message_free_unpacked(msg, NULL);

    cr_assert_str_eq(route_of("GET", "/shelves/1/sorted/ORDER_PRICE", &m), "GetBook");
    cr_assert_eq(ws_http_route_request(&m, &msg, err, sizeof(err)), WS_OK, "%s", err);
    cr_assert_eq(((Acme__Routes__V1__GetBookRequest *)msg)->order,
                 ACME__ROUTES__V1__ORDER__ORDER_PRICE);
    protobuf_c_message_free_unpacked(msg, NULL);

    cr_assert_str_eq(route_of("GET", "/shelves/1/sorted/1", &m), "GetBook");
    cr_assert_eq(ws_http_route_request(&m, &msg, err, sizeof(err)), WS_OK, "%s", err);
    cr_assert_eq(((Acme__Routes__V1__GetBookRequest *)msg)->order,
                 ACME__ROUTES__V1__ORDER__ORDER_NAME);
    protobuf_c_message_free_unpacked(msg, NULL);

    cr_assert_str_eq(route_of("GET", "/shelves/1/public/true", &m), "GetBook");
    cr_assert_eq(ws_http_route_request(&m, &msg, err, sizeof(err)), WS_OK, "%s", err);
    cr_assert(((Acme__Routes__V1__GetBookRequest *)msg)->public_);
    protobuf_c_message_free_unpacked(msg, NULL);

    cr_assert_str_eq(route_of("GET", "/racks/4294967295", &m), "GetBook");
    cr_assert_eq(ws_http_route_request(&m, &msg, err, sizeof(err)), WS_OK, "%s", err);
    cr_assert_eq(((Acme__Routes__V1__GetBookRequest *)msg)->rack, 4294967295u);
    protobuf_c_message_free_unpacked(msg, NULL);
}

Test(http_route, values_that_do_not_fit_their_field_are_refused_by_name)
{
    static const struct {
        const char *path, *err;
    } cases[] = {
        {"/shelves/x/books/b", "shelf: expected an integer in range"},
        {"/shelves/+1/books/b", "shelf: expected an integer in range"},
        {"/shelves/1.5/books/b", "shelf: expected an integer in range"},
        {"/shelves/99999999999999999999/books/b", "shelf: expected an integer in range"},
        {"/racks/-1", "rack: expected an unsigned integer in range"},
        {"/racks/4294967296", "rack: expected an unsigned integer in range"},
        {"/shelves/1/public/yes", "public: expected true or false"},
        {"/shelves/1/sorted/ORDER_SIZE", "order: expected one of the enum's names"},
        {"/shelves/1/sorted/9", "order: expected one of the enum's names"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ws_http_route_match m;
        char err[128] = "";
        ProtobufCMessage *msg = NULL;
        cr_assert_str_eq(route_of("GET", cases[i].path, &m), "GetBook", "%s",
                         cases[i].path);
        cr_assert_eq(ws_http_route_request(&m, &msg, err, sizeof(err)), WS_EPARSE, "%s",
                     cases[i].path);
        cr_assert_null(msg);
        cr_assert_str_eq(err, cases[i].err);
    }
}

Test(http_route, a_method_without_a_rule_has_no_route)
{
    for (size_t i = 0; i < T->n_methods; i++) {
        cr_assert_str_neq(T->methods[i].name, "Internal");
    }
    cr_assert_eq(T->n_methods, 6);
    cr_assert_eq(T->n_bindings, 11);
    cr_assert_str_eq(T->service, "acme.routes.v1.Library");
}
