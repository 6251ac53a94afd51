/*
 * Tests of the trace context on the RPC path (rpc.proto RpcRequest.traceparent):
 * a caller working for a trace sends a child span of it and the handler runs
 * under the caller's trace id; a request without one, or with one that does not
 * parse, is served under a new trace; the serving thread does not keep a call's
 * trace for the next call, and an in-process dispatch gives the calling thread
 * its own trace back. The lines a call logs carry its trace_id (stderr is
 * captured into a temporary file for that test). Real webshop.v1.Inventory
 * descriptor, inproc transport, one hand-written GetProduct handler.
 */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rpc_client.h"
#include "rpc_server.h"
#include "rpc_server_int.h"
#include "trace.h"
#include "webshop/v1/inventory.pb-c.h"
#include "webshop/v1/inventory.rpc.h"
#include "webshop/v1/rpc.pb-c.h"

#define GET_PRODUCT "/webshop.v1.Inventory/GetProduct"
/* A GetProduct id for which the handler fails with a store error, which
 * ws_rpc_status_of logs (rpc_failed). */
#define ID_STORE_ERROR (-7)

/* What the handler saw of the serving thread's trace, last call. */
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static bool seen_traced;
static ws_trace seen;
static int seen_calls;

static ws_rpc_code handle_get_product(void *ctx, const ProtobufCMessage *req,
                                      ProtobufCMessage **resp, ws_rpc_call *call)
{
    const Webshop__V1__GetProductRequest *in =
        (const Webshop__V1__GetProductRequest *)req;
    (void)ctx;
    const ws_trace *t = ws_trace_current();
    pthread_mutex_lock(&seen_mu);
    seen_traced = t != NULL;
    if (t != NULL) {
        seen = *t;
    }
    seen_calls++;
    pthread_mutex_unlock(&seen_mu);
    if (in->id == ID_STORE_ERROR) {
        return ws_rpc_status_of(WS_ESTORE, call, GET_PRODUCT, NULL);
    }
    Webshop__V1__GetProductResponse *r = malloc(sizeof(*r));
    Webshop__V1__Product *p = malloc(sizeof(*p));
    webshop__v1__get_product_response__init(r);
    webshop__v1__product__init(p);
    p->id = in->id;
    p->name = strdup("traced");
    r->product = p;
    *resp = &r->base;
    return WS_RPC_OK;
}

static ws_rpc_handler_fn handlers[3];

/* The trace the handler saw last (false: it ran with none). */
static bool seen_get(ws_trace *out)
{
    pthread_mutex_lock(&seen_mu);
    bool traced = seen_traced;
    *out = seen;
    pthread_mutex_unlock(&seen_mu);
    return traced;
}

static ws_rpc_server *server_new(const char *url, bool inline_handlers)
{
    const ProtobufCServiceDescriptor *d = &webshop__v1__inventory__descriptor;
    for (unsigned i = 0; i < d->n_methods; i++) {
        handlers[i] =
            strcmp(d->methods[i].name, "GetProduct") == 0 ? handle_get_product : NULL;
    }
    ws_rpc_server_opts o = {.url = url, .workers = 1, .inline_handlers = inline_handlers};
    ws_rpc_server *srv = NULL;
    cr_assert_eq(ws_rpc_server_open(&o, &srv), WS_OK);
    cr_assert_eq(ws_rpc_server_register(srv, d, handlers, NULL), WS_OK);
    return srv;
}

static ws_rpc_client *client_new(const char *url)
{
    const char *urls[] = {url};
    ws_rpc_client_opts o = {.urls = urls, .n_urls = 1};
    ws_rpc_client *c = NULL;
    cr_assert_eq(ws_rpc_client_open(&o, &c), WS_OK);
    return c;
}

static ws_rpc_code get_product(ws_rpc_client *c, int32_t id)
{
    Webshop__V1__GetProductRequest req = WEBSHOP__V1__GET_PRODUCT_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    req.id = id;
    ws_rpc_code code = ws_rpc_client_call(c, GET_PRODUCT, &req.base,
                                          &webshop__v1__get_product_response__descriptor,
                                          &resp, 5000, NULL, 0);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return code;
}

/* A caller's trace reaches the handler (workers or inline), as a child span;
 * the caller's own trace is left as it was; the serving thread drops it after
 * the call, so an untraced call next gets a new trace. */
static void caller_trace_run(const char *url, bool inline_handlers)
{
    ws_rpc_server *srv = server_new(url, inline_handlers);
    cr_assert_eq(ws_rpc_server_start(srv), WS_OK);
    ws_rpc_client *c = client_new(url);

    ws_trace mine, got;
    ws_trace_new(&mine);
    ws_trace_set_current(&mine);
    cr_assert_eq(get_product(c, 1), WS_RPC_OK);
    cr_assert(seen_get(&got), "the handler ran with no trace");
    cr_assert_str_eq(got.trace_id, mine.trace_id);
    cr_assert_str_neq(got.span_id, mine.span_id, "the call is a span of its own");
    cr_assert_eq(got.flags, mine.flags);
    const ws_trace *after = ws_trace_current();
    cr_assert_not_null(after);
    cr_assert_str_eq(after->span_id, mine.span_id);

    ws_trace_set_current(NULL);
    cr_assert_eq(get_product(c, 2), WS_RPC_OK);
    cr_assert(seen_get(&got), "an untraced call is served under a new trace");
    cr_assert_str_neq(got.trace_id, mine.trace_id,
                      "the worker kept the last call's trace");

    ws_rpc_client_close(c);
    ws_rpc_server_close(srv);
}

Test(rpc_trace, handler_runs_under_the_callers_trace_on_a_worker, .timeout = 30)
{
    caller_trace_run("inproc://rpc-trace-worker", false);
}

Test(rpc_trace, handler_runs_under_the_callers_trace_inline, .timeout = 30)
{
    caller_trace_run("inproc://rpc-trace-inline", true);
}

/* Untraced callers: every call its own new trace. */
Test(rpc_trace, call_without_a_trace_gets_a_new_one_each_time, .timeout = 30)
{
    const char *url = "inproc://rpc-trace-none";
    ws_rpc_server *srv = server_new(url, false);
    cr_assert_eq(ws_rpc_server_start(srv), WS_OK);
    ws_rpc_client *c = client_new(url);
    ws_trace_set_current(NULL);

    ws_trace a, b;
    cr_assert_eq(get_product(c, 1), WS_RPC_OK);
    cr_assert(seen_get(&a));
    cr_assert_eq(get_product(c, 1), WS_RPC_OK);
    cr_assert(seen_get(&b));
    cr_assert_str_neq(a.trace_id, b.trace_id);

    ws_rpc_client_close(c);
    ws_rpc_server_close(srv);
}

/* Serve one envelope in process with the given traceparent (NULL: none). */
static Webshop__V1__RpcResponse *dispatch(ws_rpc_server *srv, const char *traceparent)
{
    Webshop__V1__GetProductRequest req = WEBSHOP__V1__GET_PRODUCT_REQUEST__INIT;
    uint8_t payload[16];
    req.id = 3;
    size_t plen = webshop__v1__get_product_request__pack(&req, payload);
    Webshop__V1__RpcRequest env = WEBSHOP__V1__RPC_REQUEST__INIT;
    env.method = (char *)GET_PRODUCT;
    env.payload.data = payload;
    env.payload.len = plen;
    env.request_id = 9;
    if (traceparent != NULL) {
        env.traceparent = (char *)traceparent;
    }
    uint8_t buf[256];
    size_t n = webshop__v1__rpc_request__pack(&env, buf);
    uint8_t *out = NULL;
    size_t out_len = 0;
    cr_assert_eq(ws__rpc_server_dispatch(srv, buf, n, &out, &out_len), WS_OK);
    Webshop__V1__RpcResponse *resp =
        webshop__v1__rpc_response__unpack(NULL, out_len, out);
    free(out);
    cr_assert_not_null(resp);
    return resp;
}

/* A traceparent that does not parse is no reason to refuse the call: it is
 * served, under a new trace. A valid one is continued: its trace id, and a
 * span of the server's own. */
Test(rpc_trace, garbage_traceparent_gets_a_new_trace_and_the_call_is_served,
     .timeout = 30)
{
    ws_rpc_server *srv = server_new("inproc://rpc-trace-garbage", false);
    static const char *const bad[] = {
        "garbage",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",    /* no flags */
        "00-00000000000000000000000000000000-b7ad6b7169203331-01", /* zero id */
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", /* upper case */
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", /* version ff */
        "",
    };
    ws_trace_set_current(NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int before = seen_calls;
        Webshop__V1__RpcResponse *resp = dispatch(srv, bad[i]);
        cr_assert_eq(resp->status, WEBSHOP__V1__STATUS_CODE__OK, "%s", bad[i]);
        cr_assert_eq(resp->request_id, 9);
        webshop__v1__rpc_response__free_unpacked(resp, NULL);
        ws_trace got;
        cr_assert_eq(seen_calls, before + 1);
        cr_assert(seen_get(&got), "no trace for %s", bad[i]);
        cr_assert_str_neq(got.trace_id, "0af7651916cd43dd8448eb211c80319c", "%s", bad[i]);
        cr_assert_null(ws_trace_current(),
                       "the dispatching thread kept the call's trace");
    }
    const char *good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    Webshop__V1__RpcResponse *resp = dispatch(srv, good);
    cr_assert_eq(resp->status, WEBSHOP__V1__STATUS_CODE__OK);
    webshop__v1__rpc_response__free_unpacked(resp, NULL);
    ws_trace got;
    cr_assert(seen_get(&got));
    cr_assert_str_eq(got.trace_id, "0af7651916cd43dd8448eb211c80319c");
    cr_assert_str_neq(got.span_id, "b7ad6b7169203331", "the server's span is its own");
    cr_assert_eq(got.flags, 1);
    ws_rpc_server_close(srv);
}

/* An in-process dispatch from a thread with a trace of its own gives that
 * trace back after the call. */
Test(rpc_trace, dispatch_restores_the_calling_threads_trace, .timeout = 30)
{
    ws_rpc_server *srv = server_new("inproc://rpc-trace-restore", false);
    ws_trace mine, got;
    ws_trace_new(&mine);
    ws_trace_set_current(&mine);
    Webshop__V1__RpcResponse *resp =
        dispatch(srv, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    webshop__v1__rpc_response__free_unpacked(resp, NULL);
    cr_assert(seen_get(&got));
    cr_assert_str_eq(got.trace_id, "0af7651916cd43dd8448eb211c80319c");
    const ws_trace *cur = ws_trace_current();
    cr_assert_not_null(cur);
    cr_assert_str_eq(cur->trace_id, mine.trace_id);
    cr_assert_str_eq(cur->span_id, mine.span_id);
    ws_trace_set_current(NULL);
    ws_rpc_server_close(srv);
}

/* The line a failing handler logs (rpc_failed, from ws_rpc_status_of) on the
 * server's worker carries the caller's trace_id. */
Test(rpc_trace, lines_logged_for_a_call_carry_the_callers_trace_id, .timeout = 30)
{
    const char *url = "inproc://rpc-trace-log";
    ws_rpc_server *srv = server_new(url, false);
    cr_assert_eq(ws_rpc_server_start(srv), WS_OK);
    ws_rpc_client *c = client_new(url);

    char path[] = "/tmp/rpc_trace_log_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    cr_assert_geq(saved, 0);
    cr_assert_geq(dup2(fd, STDERR_FILENO), 0);

    ws_trace mine;
    ws_trace_new(&mine);
    ws_trace_set_current(&mine);
    ws_rpc_code code = get_product(c, ID_STORE_ERROR);
    ws_trace_set_current(NULL);
    dup2(saved, STDERR_FILENO);
    close(saved);
    cr_assert_eq(code, WS_RPC_INTERNAL);

    char text[8192];
    ssize_t n = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    cr_assert_geq(n, 0);
    text[n] = '\0';
    const char *line = strstr(text, "rpc_failed");
    cr_assert_not_null(line, "no rpc_failed line in: %s", text);
    const char *eol = strchr(line, '\n');
    char want[64];
    snprintf(want, sizeof(want), "trace_id=%s", mine.trace_id);
    const char *at = strstr(line, want);
    cr_assert(at != NULL && (eol == NULL || at < eol), "no %s in: %s", want, text);

    ws_rpc_client_close(c);
    ws_rpc_server_close(srv);
}
