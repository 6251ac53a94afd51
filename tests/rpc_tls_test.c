/*
 * Mutual TLS on RPC and the per-method authorization table, over real nng
 * tls+tcp sockets on loopback, with certificates that tools/shop_ca makes
 * into a temp dir at the start of the run (nothing committed). One server
 * serves Inventory and Orders (the generated register functions, so the
 * table is the one the .proto files declare) on one TLS listener per
 * caller identity, as a service would. What a caller without a valid
 * certificate gets is "never connected": the handshake fails, so its call
 * ends UNAVAILABLE without reaching the server, and a positive control on
 * the same path proves the refusal is the certificate's.
 *
 * RPC_TLS_BENCH=N runs round_trip_cost: N calls over tcp:// then over
 * tls+tcp://, and prints calls/s of each and their ratio.
 */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>

#include "rpc_client.h"
#include "rpc_server.h"
#include "rpc_server_int.h"
#include "webshop/v1/inventory.rpc.h"
#include "webshop/v1/order.rpc.h"
#include "webshop/v1/rpc.pb-c.h"
#include "webshop/v1/rpc.rpc.h"

#define CALL_MS 3000

static char ca_dir[256];

/* ------------------------------------------------------------ certificates */

/* Once per run, in the runner (the tests, each in its own process, find
 * the dir in RPC_TLS_TEST_DIR): make every certificate the tests use. */
ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
    char cmd[1024];
    (void)set;
    snprintf(ca_dir, sizeof(ca_dir), "/tmp/rpc_tls_test.XXXXXX");
    if (mkdtemp(ca_dir) == NULL) {
        abort();
    }
    snprintf(cmd, sizeof(cmd), "%s %s --expired front --foreign front >/dev/null",
             SHOP_CA, ca_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "tools/shop_ca failed\n");
        abort();
    }
    setenv("RPC_TLS_TEST_DIR", ca_dir, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
    char cmd[512];
    (void)stats;
    if (ca_dir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", ca_dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", ca_dir);
        }
    }
}

static void find_certs(void)
{
    const char *d = getenv("RPC_TLS_TEST_DIR");
    cr_assert_not_null(d, "the PRE_ALL hook made no certificates");
    snprintf(ca_dir, sizeof(ca_dir), "%s", d);
}

/* ca_dir/NAME in a static ring of buffers (a test uses a few at once). */
static const char *cert(const char *name)
{
    static char bufs[8][320];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s", ca_dir, name);
    return b;
}

/* ----------------------------------------------------------------- server */

static ws_rpc_code get_catalog(void *ctx, const Webshop__V1__GetCatalogRequest *req,
                               Webshop__V1__GetCatalogResponse **resp, ws_rpc_call *call)
{
    (void)ctx, (void)req, (void)call;
    *resp = malloc(sizeof(**resp));
    webshop__v1__get_catalog_response__init(*resp);
    return WS_RPC_OK;
}

static ws_rpc_code list_orders(void *ctx, const Webshop__V1__ListOrdersRequest *req,
                               Webshop__V1__ListOrdersResponse **resp, ws_rpc_call *call)
{
    (void)ctx, (void)req, (void)call;
    *resp = malloc(sizeof(**resp));
    webshop__v1__list_orders_response__init(*resp);
    return WS_RPC_OK;
}

static const webshop_v1_inventory_server inventory_impl = {.get_catalog = get_catalog};
static const webshop_v1_orders_server orders_impl = {.list_orders = list_orders};

/* A server with both services; plain: its plain URL (NULL: TLS only); one
 * TLS listener per identity in ids (NULL-terminated), each trusting that
 * identity's CA, presenting server_cert ("inventory": inventory.crt/.key). */
static ws_rpc_server *server_new(const char *plain, const char *const *ids,
                                 const char *server_cert)
{
    ws_rpc_server_opts o = {.url = plain, .identities_only = plain == NULL};
    ws_rpc_server *srv = NULL;
    char crt[64], key[64], ca[64];

    cr_assert_eq(ws_rpc_server_open(&o, &srv), WS_OK);
    cr_assert_eq(webshop_v1_inventory_register(srv, &inventory_impl), WS_OK);
    cr_assert_eq(webshop_v1_orders_register(srv, &orders_impl), WS_OK);
    snprintf(crt, sizeof(crt), "%s.crt", server_cert);
    snprintf(key, sizeof(key), "%s.key", server_cert);
    for (size_t i = 0; ids != NULL && ids[i] != NULL; i++) {
        snprintf(ca, sizeof(ca), "%s-ca.crt", ids[i]);
        cr_assert_eq(ws_rpc_server_listen_tls(srv, "tls+tcp://127.0.0.1:0", ids[i],
                                              cert(crt), cert(key), cert(ca)),
                     WS_OK, "listen_tls %s", ids[i]);
    }
    cr_assert_eq(ws_rpc_server_start(srv), WS_OK);
    return srv;
}

static void server_free(ws_rpc_server *srv)
{
    ws_rpc_server_close(srv);
}

/* ----------------------------------------------------------------- client */

/* A client of url presenting NAME.crt/NAME.key ("front", "front-expired"),
 * trusting ca.crt, expecting the server name server_name; with name NULL, a
 * plain (tcp://) client. */
static ws_rpc_client *client_new(const char *url, const char *name,
                                 const char *server_name)
{
    char crt[64], key[64];
    ws_rpc_client_opts o = {.urls = &url, .n_urls = 1};
    if (name != NULL) {
        snprintf(crt, sizeof(crt), "%s.crt", name);
        snprintf(key, sizeof(key), "%s.key", name);
        o.tls_cert = cert(crt);
        o.tls_key = cert(key);
        o.tls_ca = cert("ca.crt");
        o.tls_server_name = server_name;
    }
    ws_rpc_client *c = NULL;
    cr_assert_eq(ws_rpc_client_open(&o, &c), WS_OK, "client %s", name ? name : "plain");
    return c;
}

/* Call method (GetCatalog or ListOrders, both with empty requests). */
static ws_rpc_code call(ws_rpc_client *c, const char *method, char *msg, size_t msg_len)
{
    ProtobufCMessage *resp = NULL;
    ws_rpc_code code;
    if (strcmp(method, WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD) == 0) {
        Webshop__V1__ListOrdersRequest req = WEBSHOP__V1__LIST_ORDERS_REQUEST__INIT;
        code = ws_rpc_client_call(c, method, &req.base,
                                  &webshop__v1__list_orders_response__descriptor, &resp,
                                  CALL_MS, msg, msg_len);
    } else {
        Webshop__V1__GetCatalogRequest req = WEBSHOP__V1__GET_CATALOG_REQUEST__INIT;
        code = ws_rpc_client_call(c, method, &req.base,
                                  &webshop__v1__get_catalog_response__descriptor, &resp,
                                  CALL_MS, msg, msg_len);
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

/* One call of method by a new client of url (as client_new makes it); the
 * code. */
static ws_rpc_code call_once(const char *url, const char *name, const char *server_name,
                             const char *method, char *msg, size_t msg_len)
{
    ws_rpc_client *c = client_new(url, name, server_name);
    ws_rpc_code code = call(c, method, msg, msg_len);
    ws_rpc_client_close(c);
    return code;
}

/* One call of identity NAME's certificate to srv's listener for identity
 * listener_id; the code. */
static ws_rpc_code call_as(ws_rpc_server *srv, const char *listener_id, const char *name,
                           const char *method, char *msg, size_t msg_len)
{
    const char *url = ws_rpc_server_tls_url(srv, listener_id);
    cr_assert_not_null(url);
    return call_once(url, name, "inventory", method, msg, msg_len);
}

/* A bare nng req socket dialing url over TLS with no client certificate (or
 * with NAME's when name is not NULL): 0 when a reply to one request came
 * back within 1.5 s, else the nng error. */
static int raw_call(const char *url, const char *name)
{
    nng_socket s;
    nng_dialer d;
    nng_tls_config *cfg;
    nng_msg *m;
    char crt[64], key[64];
    int rv;

    cr_assert_eq(nng_req0_open(&s), 0);
    cr_assert_eq(nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT), 0);
    cr_assert_eq(nng_tls_config_ca_file(cfg, cert("ca.crt")), 0);
    cr_assert_eq(nng_tls_config_server_name(cfg, "inventory"), 0);
    if (name != NULL) {
        snprintf(crt, sizeof(crt), "%s.crt", name);
        snprintf(key, sizeof(key), "%s.key", name);
        char both[320];
        snprintf(both, sizeof(both), "%s/%s.pem", ca_dir, name);
        char cmd[1200];
        snprintf(cmd, sizeof(cmd), "cat '%s' '%s' > '%s'", cert(crt), cert(key), both);
        cr_assert_eq(system(cmd), 0);
        cr_assert_eq(nng_tls_config_cert_key_file(cfg, both, NULL), 0);
    }
    cr_assert_eq(nng_dialer_create(&d, s, url), 0);
    cr_assert_eq(nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg), 0);
    cr_assert_eq(nng_dialer_start(d, NNG_FLAG_NONBLOCK), 0);
    nng_tls_config_free(cfg);
    cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 1500), 0);
    cr_assert_eq(nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 1500), 0);

    Webshop__V1__RpcRequest req = WEBSHOP__V1__RPC_REQUEST__INIT;
    req.method = (char *)WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD;
    req.request_id = 1;
    size_t n = webshop__v1__rpc_request__get_packed_size(&req);
    cr_assert_eq(nng_msg_alloc(&m, n), 0);
    webshop__v1__rpc_request__pack(&req, nng_msg_body(m));
    if ((rv = nng_sendmsg(s, m, 0)) != 0) {
        nng_msg_free(m);
    } else if ((rv = nng_recvmsg(s, &m, 0)) == 0) {
        nng_msg_free(m);
    }
    nng_close(s);
    return rv;
}

/* ------------------------------------------------------------ log capture */

static int saved_stderr = -1;
static char log_path[300];

static void capture_start(void)
{
    snprintf(log_path, sizeof(log_path), "%s/log.XXXXXX", ca_dir);
    int fd = mkstemp(log_path);
    cr_assert(fd >= 0);
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    cr_assert(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

/* Stop capturing; whether the captured text holds needle. */
static bool capture_stop_has(const char *needle)
{
    static char text[16384];
    fflush(stderr);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    FILE *f = fopen(log_path, "r");
    cr_assert_not_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    return strstr(text, needle) != NULL;
}

/* ------------------------------------------------------------------ tests */

static const char *const front_admin[] = {"front", "admin", NULL};

TestSuite(rpc_tls, .init = find_certs, .timeout = 60);

/* A TLS-only server for front and admin; one call of method with NAME's
 * certificate to the listener of identity listener_id must end in want. */
static void expect_call_as(const char *listener_id, const char *name, const char *method,
                           ws_rpc_code want)
{
    ws_rpc_server *srv = server_new(NULL, front_admin, "inventory");
    ws_rpc_code code = call_as(srv, listener_id, name, method, NULL, 0);
    cr_expect_eq(code, want, "%s to %s's listener, %s: %s", name, listener_id, method,
                 ws_rpc_code_name(code));
    server_free(srv);
}

Test(rpc_tls, front_calls_get_catalog)
{
    expect_call_as("front", "front", WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD, WS_RPC_OK);
}

Test(rpc_tls, front_calling_list_orders_is_permission_denied)
{
    ws_rpc_server *srv = server_new(NULL, front_admin, "inventory");
    char msg[WS_RPC_MSG_LEN] = "";
    capture_start();
    ws_rpc_code code = call_as(srv, "front", "front",
                               WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD, msg, sizeof(msg));
    /* The line carries the call's trace_id= between the event and these. */
    bool logged = capture_stop_has("identity=front method=/webshop.v1.Orders/ListOrders");
    cr_expect_eq(code, WS_RPC_PERMISSION_DENIED, "got %s", ws_rpc_code_name(code));
    cr_expect(strstr(msg, "front") != NULL, "message names the identity: %s", msg);
    cr_expect(logged, "the refusal is logged with identity and method");
    server_free(srv);
}

Test(rpc_tls, admin_calls_list_orders)
{
    expect_call_as("admin", "admin", WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD, WS_RPC_OK);
}

Test(rpc_tls, no_client_certificate_cannot_call)
{
    ws_rpc_server *srv = server_new(NULL, front_admin, "inventory");
    const char *url = ws_rpc_server_tls_url(srv, "front");
    cr_expect_eq(raw_call(url, "front"), 0, "control: the same path with a certificate");
    cr_expect_neq(raw_call(url, NULL), 0, "no certificate: no answer");
    server_free(srv);
}

Test(rpc_tls, certificate_of_another_ca_cannot_call)
{
    expect_call_as("front", "front-foreign", WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD,
                   WS_RPC_UNAVAILABLE);
}

Test(rpc_tls, expired_certificate_cannot_call)
{
    expect_call_as("front", "front-expired", WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD,
                   WS_RPC_UNAVAILABLE);
}

/* The front's certificate is valid, but the admin listener trusts only the
 * admin CA: no identity can pass for another by picking its listener. */
Test(rpc_tls, identity_cannot_use_another_identitys_listener)
{
    expect_call_as("admin", "front", WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD,
                   WS_RPC_UNAVAILABLE);
}

Test(rpc_tls, client_refuses_server_whose_name_does_not_match)
{
    ws_rpc_server *srv = server_new(NULL, front_admin, "inventory");
    const char *url = ws_rpc_server_tls_url(srv, "front");
    cr_expect_eq(call_once(url, "front", "order", WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD,
                           NULL, 0),
                 WS_RPC_UNAVAILABLE);
    cr_expect_eq(call_once(url, "front", "inventory",
                           WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD, NULL, 0),
                 WS_RPC_OK, "control: the right name");
    server_free(srv);
}

Test(rpc_tls, client_refuses_server_of_another_ca)
{
    ws_rpc_server *srv = server_new(NULL, front_admin, "front-foreign");
    cr_expect_eq(call_once(ws_rpc_server_tls_url(srv, "front"), "front", "front",
                           WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD, NULL, 0),
                 WS_RPC_UNAVAILABLE);
    server_free(srv);
}

/* The plain listener of a server with identity listeners works as before:
 * no identity, no check. */
Test(rpc_tls, plain_listener_is_not_checked)
{
    ws_rpc_server *srv = server_new("tcp://127.0.0.1:0", front_admin, "inventory");
    const char *url = ws_rpc_server_url(srv);
    cr_assert_eq(strncmp(url, "tcp://", 6), 0, "%s", url);
    cr_expect_eq(
        call_once(url, NULL, NULL, WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD, NULL, 0),
        WS_RPC_OK);
    cr_expect_eq(
        call_as(srv, "front", "front", WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD, NULL, 0),
        WS_RPC_PERMISSION_DENIED, "the same server checks its identity listeners");
    server_free(srv);
}

/* The table without the network: every generated allow entry, reflection,
 * an unknown identity, and a connection whose identity is lost. */
static ws_rpc_code dispatch_as(ws_rpc_server *srv, const char *identity,
                               const char *method)
{
    Webshop__V1__RpcRequest req = WEBSHOP__V1__RPC_REQUEST__INIT;
    uint8_t buf[256], *out = NULL;
    size_t out_len = 0;
    req.method = (char *)method;
    size_t n = webshop__v1__rpc_request__pack(&req, buf);
    cr_assert_eq(ws__rpc_server_dispatch_as(srv, identity, buf, n, &out, &out_len),
                 WS_OK);
    Webshop__V1__RpcResponse *r = webshop__v1__rpc_response__unpack(NULL, out_len, out);
    cr_assert_not_null(r);
    ws_rpc_code code = (ws_rpc_code)r->status;
    webshop__v1__rpc_response__free_unpacked(r, NULL);
    free(out);
    return code;
}

Test(rpc_tls, authorization_table_from_the_proto)
{
    ws_rpc_server_opts o = {.url = "inproc://rpc-tls-table"};
    ws_rpc_server *srv = NULL;
    cr_assert_eq(ws_rpc_server_open(&o, &srv), WS_OK);
    cr_assert_eq(webshop_v1_inventory_register(srv, &inventory_impl), WS_OK);
    cr_assert_eq(webshop_v1_orders_register(srv, &orders_impl), WS_OK);
    static const struct {
        const char *identity, *method;
        bool allowed;
    } cases[] = {
        {"front", WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD, true},
        {"front", WEBSHOP_V1_INVENTORY_GET_PRODUCT_METHOD, true},
        {"front", WEBSHOP_V1_INVENTORY_GET_RESERVATION_METHOD, false},
        {"front", WEBSHOP_V1_ORDERS_GET_ORDER_METHOD, true},
        {"front", WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD, false},
        {"order", WEBSHOP_V1_INVENTORY_GET_RESERVATION_METHOD, true},
        {"order", WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD, false},
        {"order", WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD, false},
        {"inventory", WEBSHOP_V1_ORDERS_GET_ORDER_METHOD, true},
        {"inventory", WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD, false},
        {"admin", WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD, true},
        {"admin", WEBSHOP_V1_INVENTORY_GET_PRODUCT_METHOD, true},
        {"admin", WEBSHOP_V1_INVENTORY_GET_RESERVATION_METHOD, true},
        {"admin", WEBSHOP_V1_ORDERS_GET_ORDER_METHOD, true},
        {"admin", WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD, true},
        {"stranger", WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD, false},
        {"front", WEBSHOP_V1_REFLECTION_LIST_SERVICES_METHOD, true},
    };
    capture_start(); /* the refusals' log lines */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ws_rpc_code code = dispatch_as(srv, cases[i].identity, cases[i].method);
        /* Allowed calls reach the handler: OK or, where the test server has
         * none, UNIMPLEMENTED; never PERMISSION_DENIED. */
        if (cases[i].allowed) {
            cr_expect_neq(code, WS_RPC_PERMISSION_DENIED, "%s %s", cases[i].identity,
                          cases[i].method);
        } else {
            cr_expect_eq(code, WS_RPC_PERMISSION_DENIED, "%s %s: %s", cases[i].identity,
                         cases[i].method, ws_rpc_code_name(code));
        }
    }
    cr_expect_eq(dispatch_as(srv, "", WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD),
                 WS_RPC_UNAUTHENTICATED);
    cr_expect_eq(dispatch_as(srv, NULL, WEBSHOP_V1_ORDERS_LIST_ORDERS_METHOD), WS_RPC_OK,
                 "no identity: not checked");
    cr_expect(capture_stop_has("event=rpc_unauthenticated"));
    ws_rpc_server_close(srv);
}

Test(rpc_tls, listen_tls_refusals)
{
    ws_rpc_server_opts o = {.url = NULL};
    ws_rpc_server *srv = NULL;
    cr_expect_eq(ws_rpc_server_open(&o, &srv), WS_EINVAL, "no URL: only when asked for");
    o.identities_only = 1;
    cr_assert_eq(ws_rpc_server_open(&o, &srv), WS_OK);
    cr_expect_eq(ws_rpc_server_start(srv), WS_EINVAL, "no listener at all");
    char crt[320], key[320];
    snprintf(crt, sizeof(crt), "%s", cert("inventory.crt"));
    snprintf(key, sizeof(key), "%s", cert("inventory.key"));
    const char *u = "tls+tcp://127.0.0.1:0";
    cr_expect_eq(ws_rpc_server_listen_tls(srv, "tcp://127.0.0.1:0", "front", crt, key,
                                          cert("front-ca.crt")),
                 WS_EINVAL);
    cr_expect_eq(
        ws_rpc_server_listen_tls(srv, u, "Front", crt, key, cert("front-ca.crt")),
        WS_EINVAL);
    cr_expect_eq(ws_rpc_server_listen_tls(srv, u, "front", crt, key, cert("nope-ca.crt")),
                 WS_ENOTFOUND);
    cr_expect_eq(ws_rpc_server_listen_tls(srv, u, "front", cert("nope.crt"), key,
                                          cert("front-ca.crt")),
                 WS_ENOTFOUND);
    cr_expect_eq(
        ws_rpc_server_listen_tls(srv, u, "front", key, key, cert("front-ca.crt")),
        WS_EPARSE, "a key is no certificate");
    cr_expect_eq(
        ws_rpc_server_listen_tls(srv, u, "front", crt, key, cert("front-ca.crt")), WS_OK);
    cr_expect_eq(
        ws_rpc_server_listen_tls(srv, u, "front", crt, key, cert("front-ca.crt")),
        WS_EINVAL, "one listener per identity");
    cr_expect_null(ws_rpc_server_tls_url(srv, "admin"));
    cr_expect_eq(ws_rpc_server_start(srv), WS_OK);
    cr_expect_eq(strncmp(ws_rpc_server_url(srv), "tls+tcp://127.0.0.1:", 20), 0, "%s",
                 ws_rpc_server_url(srv));
    cr_expect_neq(strcmp(ws_rpc_server_url(srv), u), 0, "the bound port");
    ws_rpc_server_close(srv);

    /* The client's side of the same checks. */
    const char *tls_url = "tls+tcp://127.0.0.1:1";
    const char *tcp_url = "tcp://127.0.0.1:1";
    ws_rpc_client *c = NULL;
    ws_rpc_client_opts co = {.urls = &tls_url, .n_urls = 1};
    cr_expect_eq(ws_rpc_client_open(&co, &c), WS_EINVAL, "tls URL without TLS options");
    co = (ws_rpc_client_opts){.urls = &tcp_url,
                              .n_urls = 1,
                              .tls_cert = crt,
                              .tls_key = key,
                              .tls_ca = cert("ca.crt"),
                              .tls_server_name = "inventory"};
    cr_expect_eq(ws_rpc_client_open(&co, &c), WS_EINVAL, "TLS options on a tcp URL");
    co.urls = &tls_url;
    co.tls_server_name = NULL;
    cr_expect_eq(ws_rpc_client_open(&co, &c), WS_EINVAL, "no server name");
    co.tls_server_name = "inventory";
    co.tls_ca = cert("nope.crt");
    cr_expect_eq(ws_rpc_client_open(&co, &c), WS_ENOTFOUND);
}

/* -------------------------------------------------------------- generator */

/* Run protoc with our plugin on one .proto text into ca_dir/gen; its exit
 * status, stderr in err, and the generated x.rpc.c in src (when it built). */
static int gen_protoc(const char *proto, char *err, size_t err_len, char *src,
                      size_t src_len)
{
    char cmd[2048], path[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s/gen && mkdir %s/gen", ca_dir, ca_dir);
    cr_assert_eq(system(cmd), 0);
    snprintf(path, sizeof(path), "%s/gen/x.proto", ca_dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(proto, f);
    fclose(f);
    snprintf(
        cmd, sizeof(cmd),
        "cd %s/gen && %s --plugin=protoc-gen-webshop=%s --proto_path=. --proto_path=%s "
        "--proto_path=/usr/include --webshop_out=. x.proto 2>err.txt; echo $? >rc",
        ca_dir, PROTOC, PLUGIN, PROTO_ROOT);
    cr_assert_eq(system(cmd), 0);
    const char *outs[] = {"err.txt", "x.rpc.c"};
    char *bufs[] = {err, src};
    size_t lens[] = {err_len, src_len};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/gen/%s", ca_dir, outs[i]);
        f = fopen(path, "r");
        size_t n = f != NULL ? fread(bufs[i], 1, lens[i] - 1, f) : 0;
        bufs[i][n] = '\0';
        if (f != NULL) {
            fclose(f);
        }
    }
    snprintf(path, sizeof(path), "%s/gen/rc", ca_dir);
    f = fopen(path, "r");
    int rc = -1;
    cr_assert_eq(fscanf(f, "%d", &rc), 1);
    fclose(f);
    return rc;
}

#define GEN_HEAD                                                                         \
    "syntax = \"proto3\"; package t; import \"webshop/v1/auth_options.proto\";\n"        \
    "message M {}\n"

Test(rpc_tls, generator_writes_the_table_and_refuses_bad_names)
{
    static char err[4096], src[65536];
    int rc = gen_protoc(
        GEN_HEAD "service S {\n"
                 "  rpc A(M) returns (M) {\n"
                 "    option (webshop.v1.allow) = {identities: [\"x\", \"y-2\"]};\n"
                 "  }\n"
                 "  rpc B(M) returns (M);\n"
                 "}\n",
        err, sizeof(err), src, sizeof(src));
    cr_assert_eq(rc, 0, "%s", err);
    cr_expect(strstr(src, "allow_a[] = {\"x\", \"y-2\", NULL};") != NULL, "%s", src);
    cr_expect(strstr(src, "        allow_a,\n        NULL,\n    };") != NULL, "%s", src);
    cr_expect(strstr(src, "ws_rpc_server_allow(srv, &t__s__descriptor, allow)") != NULL);

    rc = gen_protoc(GEN_HEAD
                    "service S { rpc A(M) returns (M) {\n"
                    "  option (webshop.v1.allow) = {identities: [\"Front\"]}; } }\n",
                    err, sizeof(err), src, sizeof(src));
    cr_expect_neq(rc, 0, "an identity no certificate can have");
    cr_expect(strstr(err, "/t.S/A: identity \"Front\" in (webshop.v1.allow)") != NULL,
              "%s", err);
}

/* ------------------------------------------------------------------- cost */

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n calls on c, one after the other: calls per second of wall time, and
 * (*cpu_us) the process's CPU microseconds per call, client and server
 * together (the steadier figure on a loaded machine). */
static double calls_per_s(ws_rpc_client *c, int n, double *cpu_us)
{
    cr_assert_eq(call(c, WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD, NULL, 0), WS_RPC_OK);
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(call(c, WEBSHOP_V1_INVENTORY_GET_CATALOG_METHOD, NULL, 0),
                     WS_RPC_OK);
    }
    *cpu_us = (clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0) * 1e6 / n;
    return n / (clock_s(CLOCK_MONOTONIC) - t0);
}

Test(rpc_tls, round_trip_cost)
{
    const char *env = getenv("RPC_TLS_BENCH");
    if (env == NULL) {
        cr_skip_test("set RPC_TLS_BENCH=N to measure");
    }
    int n = atoi(env);
    ws_rpc_server *srv = server_new("tcp://127.0.0.1:0", front_admin, "inventory");
    ws_rpc_client *plain = client_new(ws_rpc_server_url(srv), NULL, NULL);
    ws_rpc_client *tls =
        client_new(ws_rpc_server_tls_url(srv, "front"), "front", "inventory");
    for (int round = 0; round < 2; round++) {
        double pc, tc;
        double p = calls_per_s(plain, n, &pc), t = calls_per_s(tls, n, &tc);
        printf("rpc_tls_cost calls=%d tcp=%.0f/s tls=%.0f/s ratio=%.2f "
               "cpu_us_per_call tcp=%.1f tls=%.1f\n",
               n, p, t, t / p, pc, tc);
    }
    ws_rpc_client_close(plain);
    ws_rpc_client_close(tls);
    server_free(srv);
}
