/*
 * protoc-gen-webshop end to end: tests/proto/acme/greeter.proto (a service
 * that is not ours) is compiled at build time by protoc-c and our plugin;
 * these tests register an implementation through the generated server
 * binding on a real ws_rpc_server over inproc, and call it through the
 * generated client stubs. They cover the OK path (including a nested
 * response type and protoc-c's names for odd message names), a handler's
 * error code and message, UNIMPLEMENTED for a NULL handler, the thunk's
 * guards, and the generated stubs of our own contracts (Reflection).
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acme/greeter.rpc.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "webshop/v1/rpc.rpc.h"

#define DEADLINE_MS 5000

/* ---- the implementation ------------------------------------------------ */

typedef struct greeter_impl {
    atomic_int calls; /* handler invocations */
} greeter_impl;

static ws_rpc_code greeter_say_hello(void *ctx, const Acme__Greet__V1__HelloRequest *req,
                                     Acme__Greet__V1__HelloReply **resp,
                                     ws_rpc_call *call)
{
    greeter_impl *g = ctx;
    Acme__Greet__V1__HelloReply *r;
    char *text;

    atomic_fetch_add(&g->calls, 1);
    if (req->name == NULL || req->name[0] == '\0') {
        ws_rpc_call_set_message(call, "name is empty");
        return WS_RPC_INVALID_ARGUMENT;
    }
    if (asprintf(&text, "Hello, %s!", req->name) < 0) {
        return WS_RPC_INTERNAL;
    }
    r = malloc(sizeof(*r));
    if (r == NULL) {
        free(text);
        return WS_RPC_INTERNAL;
    }
    acme__greet__v1__hello_reply__init(r);
    r->greeting = text;
    *resp = r;
    return WS_RPC_OK;
}

static ws_rpc_code greeter_count_words(void *ctx,
                                       const Acme__Greet__V1__CountWordsRequest *req,
                                       Acme__Greet__V1__WordStats__Result **resp,
                                       ws_rpc_call *call)
{
    greeter_impl *g = ctx;
    Acme__Greet__V1__WordStats__Result *r;
    int words = 0;
    bool in_word = false;

    (void)call;
    atomic_fetch_add(&g->calls, 1);
    for (const char *p = req->text ? req->text : ""; *p != '\0'; p++) {
        bool blank = isspace((unsigned char)*p) != 0;

        if (!blank && !in_word) {
            words++;
        }
        in_word = !blank;
    }
    r = malloc(sizeof(*r));
    if (r == NULL) {
        return WS_RPC_INTERNAL;
    }
    acme__greet__v1__word_stats__result__init(r);
    r->words = words;
    *resp = r;
    return WS_RPC_OK;
}

static ws_rpc_code greeter_echo_blob(void *ctx, const Acme__Greet__V1__TextBlobV2 *req,
                                     Acme__Greet__V1__TextBlobV2 **resp,
                                     ws_rpc_call *call)
{
    greeter_impl *g = ctx;
    Acme__Greet__V1__TextBlobV2 *r;

    (void)call;
    atomic_fetch_add(&g->calls, 1);
    r = malloc(sizeof(*r));
    if (r == NULL) {
        return WS_RPC_INTERNAL;
    }
    acme__greet__v1__text_blob_v2__init(r);
    r->data = strdup(req->data ? req->data : "");
    if (r->data == NULL) {
        free(r);
        return WS_RPC_INTERNAL;
    }
    *resp = r;
    return WS_RPC_OK;
}

/* Answers OK without a response: the thunk must turn that into INTERNAL. */
static ws_rpc_code greeter_say_hello_forgets(void *ctx,
                                             const Acme__Greet__V1__HelloRequest *req,
                                             Acme__Greet__V1__HelloReply **resp,
                                             ws_rpc_call *call)
{
    (void)ctx;
    (void)req;
    (void)resp;
    (void)call;
    return WS_RPC_OK;
}

/* Fails but leaves a response behind: the thunk must free it (the
 * sanitizer run catches a leak). */
static ws_rpc_code greeter_say_hello_litters(void *ctx,
                                             const Acme__Greet__V1__HelloRequest *req,
                                             Acme__Greet__V1__HelloReply **resp,
                                             ws_rpc_call *call)
{
    Acme__Greet__V1__HelloReply *r = malloc(sizeof(*r));

    (void)ctx;
    (void)req;
    if (r != NULL) {
        acme__greet__v1__hello_reply__init(r);
        r->greeting = strdup("left behind");
        *resp = r;
    }
    ws_rpc_call_set_message(call, "no such greeting");
    return WS_RPC_NOT_FOUND;
}

/* ---- fixture: one server and one client per test ------------------------ */

static ws_rpc_server *srv;
static ws_rpc_client *cli;
static greeter_impl impl_state;

static void fixture_start(const char *url, const acme_greet_v1_greeter_server *impl)
{
    ws_rpc_server_opts so = {.url = url, .contexts = 4, .workers = 2};
    ws_rpc_client_opts co = {.urls = &url, .n_urls = 1};

    cr_assert_eq(ws_rpc_server_open(&so, &srv), WS_OK);
    cr_assert_eq(acme_greet_v1_greeter_register(srv, impl), WS_OK);
    cr_assert_eq(ws_rpc_server_start(srv), WS_OK);
    cr_assert_eq(ws_rpc_client_open(&co, &cli), WS_OK);
}

/* The server closes first, draining its in-flight answers while the client
 * is still connected. */
static void fixture_stop(void)
{
    ws_rpc_server_close(srv);
    srv = NULL;
    ws_rpc_client_close(cli);
    cli = NULL;
}

static acme_greet_v1_greeter_server full_impl(void)
{
    acme_greet_v1_greeter_server s = {
        .ctx = &impl_state,
        .say_hello = greeter_say_hello,
        .count_words = greeter_count_words,
        .echo_blob = greeter_echo_blob,
    };

    atomic_store(&impl_state.calls, 0);
    return s;
}

/* SayHello for name through the running fixture, by the _ex stub (its
 * message into msg) or, with msg NULL, the plain one. For calls that fail:
 * the response must stay untouched (NULL). Returns the code. */
static ws_rpc_code say_hello_failing(const char *name, char *msg, size_t msg_len)
{
    Acme__Greet__V1__HelloRequest req = ACME__GREET__V1__HELLO_REQUEST__INIT;
    Acme__Greet__V1__HelloReply *resp = NULL;
    ws_rpc_code code;

    req.name = (char *)name;
    if (msg != NULL) {
        code = acme_greet_v1_greeter_say_hello_ex(cli, &req, &resp, DEADLINE_MS, msg,
                                                  msg_len);
    } else {
        code = acme_greet_v1_greeter_say_hello(cli, &req, &resp, DEADLINE_MS);
    }
    cr_assert_null(resp, "the response stays untouched on failure");
    return code;
}

/* ---- tests ------------------------------------------------------------- */

Test(codegen, names_follow_the_contract_and_protoc_c)
{
    const ProtobufCServiceDescriptor *d = &acme__greet__v1__greeter__descriptor;

    cr_assert_str_eq(ACME_GREET_V1_GREETER_SAY_HELLO_METHOD,
                     "/acme.greet.v1.Greeter/SayHello");
    cr_assert_str_eq(ACME_GREET_V1_GREETER_COUNT_WORDS_METHOD,
                     "/acme.greet.v1.Greeter/CountWords");
    cr_assert_str_eq(ACME_GREET_V1_GREETER_ECHO_BLOB_METHOD,
                     "/acme.greet.v1.Greeter/Echo_Blob");
    cr_assert_str_eq(WEBSHOP_V1_REFLECTION_LIST_SERVICES_METHOD,
                     "/webshop.v1.Reflection/ListServices");
    /* The generated handler table is in the descriptor's method order. */
    cr_assert_eq(d->n_methods, 3);
    cr_assert_str_eq(d->methods[0].name, "SayHello");
    cr_assert_str_eq(d->methods[1].name, "CountWords");
    cr_assert_str_eq(d->methods[2].name, "Echo_Blob");
}

Test(codegen, stubs_call_registered_handlers_ok)
{
    acme_greet_v1_greeter_server impl = full_impl();
    Acme__Greet__V1__HelloRequest hreq = ACME__GREET__V1__HELLO_REQUEST__INIT;
    Acme__Greet__V1__HelloReply *hresp = NULL;
    Acme__Greet__V1__CountWordsRequest creq = ACME__GREET__V1__COUNT_WORDS_REQUEST__INIT;
    Acme__Greet__V1__WordStats__Result *cresp = NULL;
    Acme__Greet__V1__TextBlobV2 breq = ACME__GREET__V1__TEXT_BLOB_V2__INIT;
    Acme__Greet__V1__TextBlobV2 *bresp = NULL;

    fixture_start("inproc://codegen-ok", &impl);

    hreq.name = "Ada";
    cr_assert_eq(acme_greet_v1_greeter_say_hello(cli, &hreq, &hresp, DEADLINE_MS),
                 WS_RPC_OK);
    cr_assert_not_null(hresp);
    cr_assert_str_eq(hresp->greeting, "Hello, Ada!");
    acme__greet__v1__hello_reply__free_unpacked(hresp, NULL);

    creq.text = "  one two\tthree  ";
    cr_assert_eq(acme_greet_v1_greeter_count_words(cli, &creq, &cresp, DEADLINE_MS),
                 WS_RPC_OK);
    cr_assert_not_null(cresp);
    cr_assert_eq(cresp->words, 3);
    protobuf_c_message_free_unpacked((ProtobufCMessage *)cresp, NULL);

    breq.data = "blob";
    cr_assert_eq(acme_greet_v1_greeter_echo_blob(cli, &breq, &bresp, DEADLINE_MS),
                 WS_RPC_OK);
    cr_assert_str_eq(bresp->data, "blob");
    acme__greet__v1__text_blob_v2__free_unpacked(bresp, NULL);

    cr_assert_eq(atomic_load(&impl_state.calls), 3);
    fixture_stop();
}

Test(codegen, handler_error_code_and_message_reach_the_caller)
{
    acme_greet_v1_greeter_server impl = full_impl();
    char msg[WS_RPC_MSG_LEN];

    fixture_start("inproc://codegen-error", &impl);
    cr_assert_eq(say_hello_failing("", msg, sizeof(msg)), WS_RPC_INVALID_ARGUMENT);
    cr_assert_str_eq(msg, "name is empty");
    /* The plain stub reports the code too, without a message. */
    cr_assert_eq(say_hello_failing("", NULL, 0), WS_RPC_INVALID_ARGUMENT);
    fixture_stop();
}

Test(codegen, null_handler_answers_unimplemented)
{
    acme_greet_v1_greeter_server impl = full_impl();
    Acme__Greet__V1__CountWordsRequest req = ACME__GREET__V1__COUNT_WORDS_REQUEST__INIT;
    Acme__Greet__V1__WordStats__Result *resp = NULL;
    char msg[WS_RPC_MSG_LEN];

    impl.count_words = NULL;
    fixture_start("inproc://codegen-unimplemented", &impl);
    req.text = "a b";
    cr_assert_eq(acme_greet_v1_greeter_count_words_ex(cli, &req, &resp, DEADLINE_MS, msg,
                                                      sizeof(msg)),
                 WS_RPC_UNIMPLEMENTED);
    cr_assert_null(resp);
    cr_assert_not_null(strstr(msg, "CountWords"), "message: %s", msg);
    cr_assert_eq(atomic_load(&impl_state.calls), 0);
    fixture_stop();
}

Test(codegen, ok_without_response_is_internal)
{
    acme_greet_v1_greeter_server impl = full_impl();

    impl.say_hello = greeter_say_hello_forgets;
    fixture_start("inproc://codegen-forgets", &impl);
    cr_assert_eq(say_hello_failing("Ada", NULL, 0), WS_RPC_INTERNAL);
    fixture_stop();
}

Test(codegen, failed_handler_response_is_freed_not_sent)
{
    acme_greet_v1_greeter_server impl = full_impl();
    char msg[WS_RPC_MSG_LEN];

    impl.say_hello = greeter_say_hello_litters;
    fixture_start("inproc://codegen-litters", &impl);
    cr_assert_eq(say_hello_failing("Ada", msg, sizeof(msg)), WS_RPC_NOT_FOUND);
    cr_assert_str_eq(msg, "no such greeting");
    fixture_stop();
}

Test(codegen, register_rejects_null_and_duplicate)
{
    acme_greet_v1_greeter_server impl = full_impl();
    ws_rpc_server_opts so = {.url = "inproc://codegen-register"};
    ws_rpc_server *s = NULL;

    cr_assert_eq(ws_rpc_server_open(&so, &s), WS_OK);
    cr_assert_eq(acme_greet_v1_greeter_register(s, NULL), WS_EINVAL);
    cr_assert_eq(acme_greet_v1_greeter_register(s, &impl), WS_OK);
    cr_assert_eq(acme_greet_v1_greeter_register(s, &impl), WS_EEXIST);
    ws_rpc_server_close(s);
}

Test(codegen, contract_reflection_stub_lists_the_generated_service)
{
    acme_greet_v1_greeter_server impl = full_impl();
    Webshop__V1__ListServicesRequest req = WEBSHOP__V1__LIST_SERVICES_REQUEST__INIT;
    Webshop__V1__ListServicesResponse *resp = NULL;
    const Webshop__V1__ServiceInfo *greeter = NULL;

    fixture_start("inproc://codegen-reflection", &impl);
    cr_assert_eq(webshop_v1_reflection_list_services(cli, &req, &resp, DEADLINE_MS),
                 WS_RPC_OK);
    for (size_t i = 0; i < resp->n_services; i++) {
        if (strcmp(resp->services[i]->name, "acme.greet.v1.Greeter") == 0) {
            greeter = resp->services[i];
        }
    }
    cr_assert_not_null(greeter);
    cr_assert_eq(greeter->n_methods, 3);
    cr_assert_str_eq(greeter->methods[1]->name, "CountWords");
    cr_assert_str_eq(greeter->methods[1]->output_type, "acme.greet.v1.WordStats.Result");
    webshop__v1__list_services_response__free_unpacked(resp, NULL);
    fixture_stop();
}
