/*
 * RPC server on an nng rep0 socket. Each of `contexts` nng contexts runs a
 * small state machine driven by its aio callback: RECV (waiting for a
 * request) -> queued for a worker -> SEND (answer on its way) -> RECV. The
 * aio callbacks run on nng's task threads and never block: a received
 * request is only put on a queue, and `workers` threads take requests from
 * it, decode the envelope, run the handler and send the answer. So
 * `contexts` bounds the requests in flight and `workers` the handlers
 * running at once. With inline_handlers the callback serves the request
 * itself: no queue, no worker, one thread hop less per call (about a third
 * of the server's CPU time per call for a point read), at the price of
 * holding one of nng's task threads while the handler runs. Close drains: contexts stop
 * receiving once their answer is out, the socket is closed, every context reaches its end
 * state, then the workers are joined.
 *
 * A probe thread (rpc_probe.h) checks that every listener still hands new
 * connections to the socket, and replaces one that does not (nng#1518).
 *
 * Tracing: a call runs under the request's traceparent (rpc.proto), set as
 * the serving thread's current trace from the decoded envelope to the
 * answer, so every line logged for it carries the caller's trace_id.
 */
#include "rpc_server.h"
#include "rpc_server_int.h"
#include "rpc_probe.h"
#include "rpc_sock.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>

#include "clock.h"
#include "log.h"
#include "rpc_tls.h"
#include "trace.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "proto_dyn.h"
#include "webshop/v1/rpc.pb-c.h"
#include "webshop/v1/rpc.rpc.h"

#define RPC_SERVER_DEFAULT_CONTEXTS 16
#define RPC_SERVER_DEFAULT_WORKERS  4
#define RPC_SERVER_N_CODES          (WS_RPC_UNAUTHENTICATED + 1)
#define RPC_SERVER_PARK_MS          50 /* close lets busy pipes park this long */
/* The envelope around a response payload: request id, status, message and
 * field tags; a response payload may use max_msg minus this. */
#define RPC_SERVER_ENVELOPE_ROOM (WS_RPC_MSG_LEN + 64)

/* Metrics of one method (or of every unknown method together). The code
 * counters are created on first use: ws_counter_get returns the same pointer
 * to racing threads, so a lost race only costs a lookup. */
typedef struct rpc_server_stats {
    char *method;                                    /* owned; label value */
    ws_histogram *latency;                           /* owned by the registry */
    _Atomic(ws_counter *) calls[RPC_SERVER_N_CODES]; /* owned by the registry */
} rpc_server_stats;

typedef struct rpc_server_service {
    const ProtobufCServiceDescriptor *desc; /* caller's, outlives the server */
    const ws_rpc_handler_fn *handlers;      /* caller's, desc->n_methods */
    void *ctx;
    rpc_server_stats *stats;         /* owned; one per method */
    const char *const *const *allow; /* caller's, desc->n_methods; NULL = none */
} rpc_server_service;

/* One mutual-TLS listener: calls that come in on it are identity's. Set up
 * before start, read without a lock once the server runs. */
typedef struct rpc_server_tls {
    char *url;             /* owned, as given */
    char *bound_url;       /* owned; set by start: url with the port bound */
    char *identity;        /* owned */
    nng_tls_config *cfg;   /* one reference, owned */
    rpc_server_listener l; /* set by start */
} rpc_server_tls;

/* One FileDescriptorProto the server serves through reflection. */
typedef struct rpc_server_file {
    char *name;  /* owned: "webshop/v1/inventory.proto" */
    char **deps; /* owned: the names it imports */
    size_t n_deps;
    const ProtobufCBinaryData *data; /* the caller's, outlives the server */
} rpc_server_file;

typedef enum rpc_server_ctx_state {
    RPC_SERVER_CTX_RECV,
    RPC_SERVER_CTX_SEND,
} rpc_server_ctx_state;

/* One nng context and its aio. Owned, at any moment, by exactly one of: nng
 * (an operation pending), the work queue, or a worker; the hand-offs go
 * through nng or the queue lock, so the fields need no lock of their own. */
typedef struct rpc_server_ctx {
    ws_rpc_server *srv;
    nng_ctx ctx;
    nng_aio *aio;
    rpc_server_ctx_state state;
    nng_msg *req;                /* the received request, while queued */
    double arrival;              /* monotonic seconds when the request arrived */
    struct rpc_server_ctx *next; /* work queue link, under srv->mu */
} rpc_server_ctx;

struct ws_rpc_call {
    double arrival;       /* monotonic seconds */
    uint32_t deadline_ms; /* 0 = none */
    char msg[WS_RPC_MSG_LEN];
};

struct ws_rpc_server {
    char *url;
    char *bound_url; /* owned; set by start: url with the port actually bound */
    int n_ctxs;
    int n_workers;        /* 0 when inline_handlers */
    bool inline_handlers; /* handlers run in the aio callback */
    size_t max_msg;
    int ipc_mode; /* mode of an ipc:// socket file */
    ws_metrics *metrics;

    rpc_server_service *services; /* registered before start; [0] = Reflection */
    size_t n_services;
    rpc_server_file *files; /* descriptors served by reflection, added before start */
    size_t n_files;
    ws_proto_dyn *symbols;     /* built from files at start: symbol -> file */
    rpc_server_stats unknown;  /* unknown methods and undecodable envelopes */
    ws_gauge *in_flight_gauge; /* requests received and not yet answered */
    rpc_server_tls *tls;       /* identity listeners, added before start */
    size_t n_tls;
    rpc_server_listener plain; /* the listener of url, set by start */

    rpc_probe probe; /* started by start, stopped first thing by close */

    nng_socket sock;
    bool sock_open;
    rpc_server_ctx *ctxs; /* n_ctxs */
    pthread_t *threads;   /* n_workers */
    int n_threads;        /* threads started */

    pthread_mutex_t mu;
    pthread_cond_t work_cv;      /* workers wait for the queue */
    pthread_cond_t done_cv;      /* close waits for in_flight */
    rpc_server_ctx *head, *tail; /* work queue, under mu */
    int in_flight;               /* requests received, answer not yet sent, under mu */
    bool closing;                /* under mu: answer what arrived, take no more */
    bool stop_workers;           /* under mu */
};

static double rpc_server_now(void)
{
    return ws_clock_mono_seconds();
}

/* ------------------------------------------------------------------ stats */

static ws_err rpc_server_stats_init(ws_rpc_server *srv, rpc_server_stats *st,
                                    const char *method)
{
    char labels[512];

    memset(st, 0, sizeof(*st));
    st->method = strdup(method);
    if (st->method == NULL) {
        return WS_ENOMEM;
    }
    snprintf(labels, sizeof(labels), "method=\"%s\"", method);
    st->latency =
        ws_histogram_get(srv->metrics, "webshop_rpc_server_latency_seconds",
                         "Time from a request's arrival to its answer.", labels, NULL, 0);
    for (int i = 0; i < RPC_SERVER_N_CODES; i++) {
        atomic_init(&st->calls[i], NULL);
    }
    return WS_OK;
}

static void rpc_server_stats_fini(rpc_server_stats *st)
{
    free(st->method);
    st->method = NULL;
}

static void rpc_server_stats_record(ws_rpc_server *srv, rpc_server_stats *st,
                                    ws_rpc_code code, double seconds)
{
    if ((unsigned)code >= RPC_SERVER_N_CODES) {
        code = WS_RPC_UNKNOWN;
    }
    ws_counter *c = atomic_load_explicit(&st->calls[code], memory_order_acquire);
    if (c == NULL) {
        char labels[512];
        snprintf(labels, sizeof(labels), "method=\"%s\",code=\"%s\"", st->method,
                 ws_rpc_code_name(code));
        c = ws_counter_get(srv->metrics, "webshop_rpc_server_calls_total",
                           "RPC calls served, by method and status code.", labels);
        atomic_store_explicit(&st->calls[code], c, memory_order_release);
    }
    ws_counter_inc(c);
    ws_histogram_observe(st->latency, seconds);
}

/* ------------------------------------------------------------- reflection */

static void rpc_server_reflection_free(Webshop__V1__ListServicesResponse *r)
{
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* Built-in /webshop.v1.Reflection/ListServices; ctx is the server. Builds
 * the answer with malloc so protobuf_c_message_free_unpacked frees it. */
static ws_rpc_code rpc_server_reflection_list(void *ctx, const ProtobufCMessage *req,
                                              ProtobufCMessage **resp, ws_rpc_call *call)
{
    ws_rpc_server *srv = ctx;
    Webshop__V1__ListServicesResponse *r;

    (void)req;
    r = malloc(sizeof(*r));
    if (r == NULL) {
        goto nomem;
    }
    webshop__v1__list_services_response__init(r);
    r->services = calloc(srv->n_services, sizeof(*r->services));
    if (r->services == NULL) {
        goto fail;
    }
    for (size_t i = 0; i < srv->n_services; i++) {
        const ProtobufCServiceDescriptor *d = srv->services[i].desc;
        Webshop__V1__ServiceInfo *si = malloc(sizeof(*si));
        if (si == NULL) {
            goto fail;
        }
        webshop__v1__service_info__init(si);
        r->services[r->n_services++] = si;
        si->name = strdup(d->name);
        si->methods = calloc(d->n_methods ? d->n_methods : 1, sizeof(*si->methods));
        if (si->name == NULL || si->methods == NULL) {
            goto fail;
        }
        for (unsigned j = 0; j < d->n_methods; j++) {
            Webshop__V1__MethodInfo *mi = malloc(sizeof(*mi));
            if (mi == NULL) {
                goto fail;
            }
            webshop__v1__method_info__init(mi);
            si->methods[si->n_methods++] = mi;
            mi->name = strdup(d->methods[j].name);
            mi->input_type = strdup(d->methods[j].input->name);
            mi->output_type = strdup(d->methods[j].output->name);
            if (mi->name == NULL || mi->input_type == NULL || mi->output_type == NULL) {
                goto fail;
            }
        }
    }
    *resp = &r->base;
    return WS_RPC_OK;

fail:
    rpc_server_reflection_free(r);
nomem:
    ws_rpc_call_set_message(call, "out of memory");
    return WS_RPC_RESOURCE_EXHAUSTED;
}

static const rpc_server_file *rpc_server_file_find(const ws_rpc_server *srv,
                                                   const char *name)
{
    for (size_t i = 0; i < srv->n_files; i++) {
        if (strcmp(srv->files[i].name, name) == 0) {
            return &srv->files[i];
        }
    }
    return NULL;
}

/* Append file and, first, what it imports (each once) to r. */
static bool rpc_server_files_put(const ws_rpc_server *srv, const rpc_server_file *f,
                                 Webshop__V1__FileDescriptorResponse *r)
{
    for (size_t i = 0; i < r->n_file_descriptor_proto; i++) {
        /* The answer holds copies: the same file is the same bytes (a file
         * imported on two paths, as descriptor.proto is, goes in once). */
        const ProtobufCBinaryData *b = &r->file_descriptor_proto[i];
        if (b->len == f->data->len && memcmp(b->data, f->data->data, b->len) == 0) {
            return true;
        }
    }
    for (size_t i = 0; i < f->n_deps; i++) {
        const rpc_server_file *d = rpc_server_file_find(srv, f->deps[i]);
        if (d != NULL && !rpc_server_files_put(srv, d, r)) {
            return false;
        }
    }
    if (r->n_file_descriptor_proto == srv->n_files) {
        return false; /* cannot happen: each file once */
    }
    ProtobufCBinaryData *b = &r->file_descriptor_proto[r->n_file_descriptor_proto];
    b->data = malloc(f->data->len ? f->data->len : 1);
    if (b->data == NULL) {
        return false;
    }
    memcpy(b->data, f->data->data, f->data->len);
    b->len = f->data->len;
    r->n_file_descriptor_proto++;
    return true;
}

/* The answer for file f (NULL: NOT_FOUND naming what). */
static ws_rpc_code rpc_server_files_answer(const ws_rpc_server *srv,
                                           const rpc_server_file *f, const char *what,
                                           ProtobufCMessage **resp, ws_rpc_call *call)
{
    if (f == NULL) {
        ws_rpc_call_set_message(call, "%s: not served here", what);
        return WS_RPC_NOT_FOUND;
    }
    Webshop__V1__FileDescriptorResponse *r = malloc(sizeof(*r));
    if (r != NULL) {
        webshop__v1__file_descriptor_response__init(r);
        r->file_descriptor_proto =
            calloc(srv->n_files, sizeof(*r->file_descriptor_proto));
    }
    if (r == NULL || r->file_descriptor_proto == NULL ||
        !rpc_server_files_put(srv, f, r)) {
        if (r != NULL) {
            protobuf_c_message_free_unpacked(&r->base, NULL);
        }
        ws_rpc_call_set_message(call, "out of memory");
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    *resp = &r->base;
    return WS_RPC_OK;
}

static ws_rpc_code rpc_server_reflection_symbol(void *ctx, const ProtobufCMessage *req,
                                                ProtobufCMessage **resp,
                                                ws_rpc_call *call)
{
    ws_rpc_server *srv = ctx;
    const char *sym = ((const Webshop__V1__FileContainingSymbolRequest *)req)->symbol;
    if (sym[0] == '.') {
        sym++;
    }
    const Google__Protobuf__FileDescriptorProto *fp =
        srv->symbols ? (const void *)ws_proto_dyn_file_of(srv->symbols, sym) : NULL;
    return rpc_server_files_answer(srv, fp ? rpc_server_file_find(srv, fp->name) : NULL,
                                   sym, resp, call);
}

static ws_rpc_code rpc_server_reflection_file(void *ctx, const ProtobufCMessage *req,
                                              ProtobufCMessage **resp, ws_rpc_call *call)
{
    ws_rpc_server *srv = ctx;
    const char *name = ((const Webshop__V1__FileByFilenameRequest *)req)->filename;
    return rpc_server_files_answer(srv, rpc_server_file_find(srv, name), name, resp,
                                   call);
}

/* Same order as the methods of service Reflection in rpc.proto. */
static const ws_rpc_handler_fn rpc_server_reflection_handlers[] = {
    rpc_server_reflection_list,
    rpc_server_reflection_symbol,
    rpc_server_reflection_file,
};

ws_err ws_rpc_server_add_files(ws_rpc_server *srv, const ProtobufCBinaryData *files,
                               size_t n)
{
    if (srv == NULL || (files == NULL && n > 0) || srv->sock_open) {
        return WS_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        Google__Protobuf__FileDescriptorProto *fp =
            google__protobuf__file_descriptor_proto__unpack(NULL, files[i].len,
                                                            files[i].data);
        if (fp == NULL || fp->name == NULL) {
            if (fp != NULL) {
                google__protobuf__file_descriptor_proto__free_unpacked(fp, NULL);
            }
            return WS_EPARSE;
        }
        ws_err err = WS_OK;
        if (rpc_server_file_find(srv, fp->name) == NULL) {
            rpc_server_file *g = realloc(srv->files, (srv->n_files + 1) * sizeof(*g));
            if (g == NULL) {
                err = WS_ENOMEM;
            } else {
                srv->files = g;
                rpc_server_file *f = &g[srv->n_files];
                *f = (rpc_server_file){.name = strdup(fp->name),
                                       .deps =
                                           calloc(fp->n_dependency + 1, sizeof(char *)),
                                       .data = &files[i]};
                srv->n_files++;
                for (size_t d = 0; f->deps != NULL && d < fp->n_dependency; d++) {
                    f->deps[f->n_deps] = strdup(fp->dependency[d]);
                    f->n_deps += f->deps[f->n_deps] != NULL;
                }
                if (f->name == NULL || f->deps == NULL || f->n_deps != fp->n_dependency) {
                    err = WS_ENOMEM;
                }
            }
        }
        google__protobuf__file_descriptor_proto__free_unpacked(fp, NULL);
        if (err != WS_OK) {
            return err;
        }
    }
    return WS_OK;
}

/* At start: index every symbol of the served files. A file whose imports
 * are not served is logged; its symbols are then not found by reflection. */
static void rpc_server_symbols_build(ws_rpc_server *srv)
{
    if (ws_proto_dyn_new(&srv->symbols) != WS_OK) {
        return;
    }
    for (size_t i = 0; i < srv->n_files; i++) {
        ws_proto_dyn_add_file(srv->symbols, srv->files[i].data->data,
                              srv->files[i].data->len);
    }
    const char *missing = NULL;
    ws_err err = ws_proto_dyn_build(srv->symbols, &missing);
    if (err != WS_OK) {
        ws_log_warn("rpc_reflection_incomplete", "err=%s missing=%s", ws_errname(err),
                    missing ? missing : "?");
        ws_proto_dyn_free(srv->symbols);
        srv->symbols = NULL;
    }
}

static void rpc_server_files_free(ws_rpc_server *srv)
{
    for (size_t i = 0; i < srv->n_files; i++) {
        for (size_t d = 0; d < srv->files[i].n_deps; d++) {
            free(srv->files[i].deps[d]);
        }
        free(srv->files[i].deps);
        free(srv->files[i].name);
    }
    free(srv->files);
    ws_proto_dyn_free(srv->symbols);
}

/* -------------------------------------------------------------- lifecycle */

ws_err ws_rpc_server_open(const ws_rpc_server_opts *opts, ws_rpc_server **out)
{
    ws_rpc_server *srv;
    ws_err err;

    if (opts == NULL || (opts->url == NULL) != (opts->identities_only != 0) ||
        (opts->url != NULL && opts->url[0] == '\0') || opts->contexts < 0 ||
        opts->workers < 0) {
        return WS_EINVAL;
    }
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        return WS_ENOMEM;
    }
    srv->n_ctxs = opts->contexts ? opts->contexts : RPC_SERVER_DEFAULT_CONTEXTS;
    srv->n_workers = opts->workers ? opts->workers : RPC_SERVER_DEFAULT_WORKERS;
    srv->inline_handlers = opts->inline_handlers != 0;
    if (srv->inline_handlers) {
        srv->n_workers = 0;
    }
    srv->max_msg = opts->max_msg ? opts->max_msg : WS_RPC_DEFAULT_MAX_MSG;
    srv->ipc_mode = opts->ipc_mode ? opts->ipc_mode : 0600;
    srv->metrics = opts->metrics ? opts->metrics : ws_metrics_default();
    srv->url = opts->url != NULL ? strdup(opts->url) : NULL;
    if (opts->url != NULL && srv->url == NULL) {
        free(srv);
        return WS_ENOMEM;
    }
    if (pthread_mutex_init(&srv->mu, NULL) != 0) {
        free(srv->url);
        free(srv);
        return WS_ENOMEM;
    }
    if (pthread_cond_init(&srv->work_cv, NULL) != 0) {
        pthread_mutex_destroy(&srv->mu);
        free(srv->url);
        free(srv);
        return WS_ENOMEM;
    }
    if (pthread_cond_init(&srv->done_cv, NULL) != 0) {
        pthread_cond_destroy(&srv->work_cv);
        pthread_mutex_destroy(&srv->mu);
        free(srv->url);
        free(srv);
        return WS_ENOMEM;
    }
    srv->in_flight_gauge = ws_gauge_get(srv->metrics, "webshop_rpc_server_in_flight",
                                        "Requests received and not yet answered.", NULL);
    err = rpc_server_stats_init(srv, &srv->unknown, "unknown");
    if (err == WS_OK) {
        err = ws_rpc_server_register(srv, &webshop__v1__reflection__descriptor,
                                     rpc_server_reflection_handlers, srv);
    }
    if (err == WS_OK) {
        err =
            ws_rpc_server_add_files(srv, webshop_v1_rpc__files, webshop_v1_rpc__n_files);
    }
    if (err != WS_OK) {
        ws_rpc_server_close(srv);
        return err;
    }
    *out = srv;
    return WS_OK;
}

ws_err ws_rpc_server_register(ws_rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                              const ws_rpc_handler_fn *handlers, void *ctx)
{
    rpc_server_service *grown, *s;

    if (srv == NULL || svc == NULL || handlers == NULL || srv->sock_open) {
        return WS_EINVAL;
    }
    for (size_t i = 0; i < srv->n_services; i++) {
        if (strcmp(srv->services[i].desc->name, svc->name) == 0) {
            return WS_EEXIST;
        }
    }
    grown = realloc(srv->services, (srv->n_services + 1) * sizeof(*grown));
    if (grown == NULL) {
        return WS_ENOMEM;
    }
    srv->services = grown;
    s = &srv->services[srv->n_services];
    s->desc = svc;
    s->handlers = handlers;
    s->ctx = ctx;
    s->stats = calloc(svc->n_methods ? svc->n_methods : 1, sizeof(*s->stats));
    if (s->stats == NULL) {
        return WS_ENOMEM;
    }
    for (unsigned i = 0; i < svc->n_methods; i++) {
        char method[256];
        snprintf(method, sizeof(method), "/%s/%s", svc->name, svc->methods[i].name);
        if (rpc_server_stats_init(srv, &s->stats[i], method) != WS_OK) {
            for (unsigned j = 0; j < i; j++) {
                rpc_server_stats_fini(&s->stats[j]);
            }
            free(s->stats);
            return WS_ENOMEM;
        }
    }
    srv->n_services++;
    return WS_OK;
}

/* ------------------------------------------------------------- identities */

ws_err ws_rpc_server_allow(ws_rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                           const char *const *const *allow)
{
    if (srv == NULL || svc == NULL || allow == NULL || srv->sock_open) {
        return WS_EINVAL;
    }
    for (size_t i = 0; i < srv->n_services; i++) {
        if (srv->services[i].desc == svc) {
            srv->services[i].allow = allow;
            return WS_OK;
        }
    }
    return WS_ENOTFOUND;
}

ws_err ws_rpc_server_listen_tls(ws_rpc_server *srv, const char *url, const char *identity,
                                const char *cert, const char *key, const char *ca)
{
    if (srv == NULL || url == NULL || strncmp(url, "tls+tcp", 7) != 0 || srv->sock_open ||
        !ws__rpc_identity_valid(identity) ||
        ws_rpc_server_tls_url(srv, identity) != NULL) {
        return WS_EINVAL;
    }
    rpc_server_tls *grown = realloc(srv->tls, (srv->n_tls + 1) * sizeof(*grown));
    if (grown == NULL) {
        return WS_ENOMEM;
    }
    srv->tls = grown;
    rpc_server_tls t = {.url = strdup(url), .identity = strdup(identity)};
    ws_err err = t.url != NULL && t.identity != NULL ? WS_OK : WS_ENOMEM;
    if (err == WS_OK) {
        err = ws__rpc_tls_config_new(1, cert, key, ca, NULL, &t.cfg);
    }
    if (err != WS_OK) {
        free(t.url);
        free(t.identity);
        return err;
    }
    srv->tls[srv->n_tls++] = t;
    return WS_OK;
}

const char *ws_rpc_server_tls_url(const ws_rpc_server *srv, const char *identity)
{
    for (size_t i = 0; srv != NULL && identity != NULL && i < srv->n_tls; i++) {
        if (strcmp(srv->tls[i].identity, identity) == 0) {
            return srv->tls[i].bound_url ? srv->tls[i].bound_url : srv->tls[i].url;
        }
    }
    return NULL;
}

static char *rpc_server_url_with_port(const char *url, int port);
static int rpc_server_listener_open(ws_rpc_server *srv, rpc_server_listener *x,
                                    const char *url, int *port /* OUT */);

/* At start: open every identity listener. Returns 0 or an nng error. */
static int rpc_server_tls_start(ws_rpc_server *srv)
{
    for (size_t i = 0; i < srv->n_tls; i++) {
        rpc_server_tls *t = &srv->tls[i];
        int port = 0, rv;
        t->l.cfg = t->cfg;
        if ((rv = rpc_server_listener_open(srv, &t->l, t->url, &port)) != 0) {
            ws_log_error("rpc_server_listen_failed", "url=%s identity=%s error=%s",
                         t->url, t->identity, nng_strerror(rv));
            return rv; /* the socket's close ends the listener */
        }
        if ((t->bound_url = rpc_server_url_with_port(t->url, port)) == NULL) {
            return NNG_ENOMEM;
        }
        t->l.url = t->bound_url;
        ws_log_info("rpc_tls_listening", "url=%s identity=%s", t->bound_url, t->identity);
    }
    return 0;
}

static void rpc_server_tls_free(ws_rpc_server *srv)
{
    for (size_t i = 0; i < srv->n_tls; i++) {
        free(srv->tls[i].url);
        free(srv->tls[i].bound_url);
        free(srv->tls[i].identity);
        nng_tls_config_free(srv->tls[i].cfg);
    }
    free(srv->tls);
}

/* Whether a pipe of listener lid came in on x (or on the one x replaced). */
static bool rpc_server_listener_is(rpc_server_listener *x, int lid)
{
    return lid > 0 && (atomic_load_explicit(&x->id, memory_order_acquire) == lid ||
                       atomic_load_explicit(&x->prev_id, memory_order_acquire) == lid);
}

/* The identity of the caller of req (see rpc_server_authorize): NULL when
 * it came over the plain listener (or the server has no identity
 * listeners), the name when over an identity listener on a verified
 * connection, "" when that cannot be told (the pipe is gone). */
static const char *rpc_server_identity_of(ws_rpc_server *srv, nng_msg *req)
{
    if (srv->n_tls == 0) {
        return NULL;
    }
    nng_pipe p = nng_msg_get_pipe(req);
    int lid = nng_listener_id(nng_pipe_listener(p));
    for (size_t i = 0; lid > 0 && i < srv->n_tls; i++) {
        if (rpc_server_listener_is(&srv->tls[i].l, lid)) {
            bool verified = false;
            if (nng_pipe_get_bool(p, NNG_OPT_TLS_VERIFIED, &verified) != 0 || !verified) {
                return "";
            }
            return srv->tls[i].identity;
        }
    }
    return rpc_server_listener_is(&srv->plain, lid) ? NULL : "";
}

/* Whether identity may call method idx of svc; identity NULL (a plain
 * listener) always may. On refusal sets *code and the call's message, and
 * logs the refusal with the identity and the method. */
static bool rpc_server_authorize(ws_rpc_server *srv, const rpc_server_service *svc,
                                 size_t idx, const char *identity, const char *method,
                                 ws_rpc_call *call, ws_rpc_code *code)
{
    if (identity == NULL) {
        return true;
    }
    if (identity[0] == '\0') {
        ws_log_warn("rpc_unauthenticated", "method=%s", method);
        ws_rpc_call_set_message(call, "caller not authenticated");
        *code = WS_RPC_UNAUTHENTICATED;
        return false;
    }
    if (svc == &srv->services[0]) {
        return true; /* Reflection: the schema, for every identity */
    }
    const char *const *ids = svc->allow != NULL ? svc->allow[idx] : NULL;
    for (size_t i = 0; ids != NULL && ids[i] != NULL; i++) {
        if (strcmp(ids[i], identity) == 0) {
            return true;
        }
    }
    ws_log_warn("rpc_permission_denied", "identity=%s method=%s", identity, method);
    ws_rpc_call_set_message(call, "identity %s may not call %.200s", identity, method);
    *code = WS_RPC_PERMISSION_DENIED;
    return false;
}

/* --------------------------------------------------------------- dispatch */

static const ProtobufCMethodDescriptor *
rpc_server_find(ws_rpc_server *srv, const char *name, rpc_server_service **svc_out)
{
    const char *slash;
    size_t svc_len;

    if (name == NULL || name[0] != '/') {
        return NULL;
    }
    slash = strchr(name + 1, '/');
    if (slash == NULL) {
        return NULL;
    }
    svc_len = (size_t)(slash - (name + 1));
    for (size_t i = 0; i < srv->n_services; i++) {
        rpc_server_service *s = &srv->services[i];
        if (strlen(s->desc->name) == svc_len &&
            memcmp(s->desc->name, name + 1, svc_len) == 0) {
            const ProtobufCMethodDescriptor *m =
                protobuf_c_service_descriptor_get_method_by_name(s->desc, slash + 1);
            if (m != NULL) {
                *svc_out = s;
            }
            return m;
        }
    }
    return NULL;
}

/* The request's trace becomes the thread's current one for the rest of the
 * call (handler, logs, the calls it makes), as a span of this server's, a
 * child of the caller's; a request without a valid traceparent starts a
 * new trace. What the thread had before (a worker: nothing; an in-process
 * dispatch: the caller's) is saved in *outer and restored when the call is
 * answered. */
static void rpc_server_trace_enter(const Webshop__V1__RpcRequest *env,
                                   ws_trace_saved *outer /* OUT */)
{
    ws_trace_save(outer);
    const char *tp = env->traceparent;
    ws_trace span; /* the server's, a child of the caller's */
    ws_trace_child(ws_trace_adopt(tp, tp != NULL ? strlen(tp) : 0), &span);
    ws_trace_set_current(&span);
}

/* Packs the answer into whatever the transport sends; returns false when
 * out of memory. */
typedef bool (*rpc_server_sink_fn)(const Webshop__V1__RpcResponse *out, void *arg);

/* Serve one request of len bytes at data: hands the answer to sink, and
 * returns its result (false: no answer could be built, out of memory). The
 * request bytes stay the caller's. identity: the caller's, as
 * rpc_server_identity_of tells it. Shared by the nng path and
 * ws__rpc_server_dispatch(). */
static bool rpc_server_serve(ws_rpc_server *srv, const char *identity,
                             const uint8_t *data, size_t len, double arrival,
                             rpc_server_sink_fn sink, void *sink_arg)
{
    Webshop__V1__RpcRequest *env = NULL;
    Webshop__V1__RpcResponse out = WEBSHOP__V1__RPC_RESPONSE__INIT;
    rpc_server_stats *stats = &srv->unknown;
    rpc_server_service *svc = NULL;
    const ProtobufCMethodDescriptor *md = NULL;
    ProtobufCMessage *in = NULL, *resp = NULL;
    uint8_t *payload = NULL;
    ws_rpc_call call = {.arrival = arrival};
    ws_rpc_code code;
    ws_trace_saved outer = {0}; /* the thread's trace before this call */
    bool answered;

    if (len > srv->max_msg) {
        /* Only inproc gets here: stream transports enforce RECVMAXSZ. */
        code = WS_RPC_RESOURCE_EXHAUSTED;
        ws_rpc_call_set_message(&call, "request of %zu bytes exceeds the limit of %zu",
                                len, srv->max_msg);
        goto answer;
    }
    env = webshop__v1__rpc_request__unpack(NULL, len, data);
    if (env == NULL) {
        code = WS_RPC_INVALID_ARGUMENT;
        ws_rpc_call_set_message(&call, "malformed RpcRequest envelope");
        goto answer;
    }
    out.request_id = env->request_id;
    call.deadline_ms = env->deadline_ms;
    rpc_server_trace_enter(env, &outer);
    md = rpc_server_find(srv, env->method, &svc);
    if (md == NULL) {
        code = WS_RPC_UNIMPLEMENTED;
        ws_rpc_call_set_message(&call, "unknown method %.200s", env->method);
        goto answer;
    }
    size_t idx = (size_t)(md - svc->desc->methods);
    stats = &svc->stats[idx];
    if (!rpc_server_authorize(srv, svc, idx, identity, env->method, &call, &code)) {
        goto answer;
    }
    if (svc->handlers[idx] == NULL) {
        code = WS_RPC_UNIMPLEMENTED;
        ws_rpc_call_set_message(&call, "method %.200s has no handler", env->method);
        goto answer;
    }
    if (ws_rpc_call_remaining_ms(&call) == 0) {
        code = WS_RPC_DEADLINE_EXCEEDED;
        ws_rpc_call_set_message(&call, "deadline of %u ms passed before the call started",
                                (unsigned)env->deadline_ms);
        goto answer;
    }
    in = protobuf_c_message_unpack(md->input, NULL, env->payload.len, env->payload.data);
    if (in == NULL) {
        code = WS_RPC_INVALID_ARGUMENT;
        ws_rpc_call_set_message(&call, "payload is not a valid %s", md->input->name);
        goto answer;
    }
    code = svc->handlers[idx](svc->ctx, in, &resp, &call);
    if (code == WS_RPC_OK) {
        if (resp == NULL || resp->descriptor != md->output) {
            code = WS_RPC_INTERNAL;
            ws_rpc_call_set_message(&call, "handler of %s returned %s", env->method,
                                    resp == NULL ? "no response"
                                                 : "a response of the wrong type");
            ws_log_error("rpc_handler_bad_response", "method=%s", env->method);
        }
    } else if ((unsigned)code >= RPC_SERVER_N_CODES) {
        code = WS_RPC_UNKNOWN;
    }
    if (code == WS_RPC_OK) {
        size_t n = protobuf_c_message_get_packed_size(resp);
        /* Reflection answers are the server's own descriptors (bounded by
         * what it was built with), not subject to the cap on handlers. */
        bool capped = svc != &srv->services[0];
        if (capped && n + RPC_SERVER_ENVELOPE_ROOM > srv->max_msg) {
            code = WS_RPC_RESOURCE_EXHAUSTED;
            ws_rpc_call_set_message(
                &call, "response of %zu bytes exceeds the limit of %zu", n, srv->max_msg);
        } else if ((payload = malloc(n ? n : 1)) == NULL) {
            code = WS_RPC_RESOURCE_EXHAUSTED;
            ws_rpc_call_set_message(&call, "out of memory");
        } else {
            protobuf_c_message_pack(resp, payload);
            out.payload.data = payload;
            out.payload.len = n;
        }
    }

answer:
    out.status = (Webshop__V1__StatusCode)code;
    out.message = code == WS_RPC_OK ? (char *)"" : call.msg;
    answered = sink(&out, sink_arg);
    rpc_server_stats_record(srv, stats, code, rpc_server_now() - arrival);
    free(payload);
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    if (in != NULL) {
        protobuf_c_message_free_unpacked(in, NULL);
    }
    if (env != NULL) {
        ws_trace_restore(&outer);
        webshop__v1__rpc_request__free_unpacked(env, NULL);
    }
    return answered;
}

static bool rpc_server_sink_nng(const Webshop__V1__RpcResponse *out, void *arg)
{
    nng_msg **msg = arg;
    size_t n = webshop__v1__rpc_response__get_packed_size(out);

    if (nng_msg_alloc(msg, n) != 0) {
        *msg = NULL;
        return false;
    }
    webshop__v1__rpc_response__pack(out, nng_msg_body(*msg));
    return true;
}

/* Serve one request received from nng: returns the response message to
 * send, or NULL if none could be built (out of memory); never takes
 * ownership of req. */
static nng_msg *rpc_server_dispatch(ws_rpc_server *srv, nng_msg *req, double arrival)
{
    nng_msg *msg = NULL;

    if (!rpc_server_serve(srv, rpc_server_identity_of(srv, req), nng_msg_body(req),
                          nng_msg_len(req), arrival, rpc_server_sink_nng, &msg)) {
        return NULL;
    }
    return msg;
}

typedef struct rpc_server_mem {
    uint8_t *data;
    size_t len;
} rpc_server_mem;

static bool rpc_server_sink_mem(const Webshop__V1__RpcResponse *out, void *arg)
{
    rpc_server_mem *mem = arg;
    size_t n = webshop__v1__rpc_response__get_packed_size(out);

    mem->data = malloc(n ? n : 1);
    if (mem->data == NULL) {
        return false;
    }
    mem->len = webshop__v1__rpc_response__pack(out, mem->data);
    return true;
}

ws_err ws__rpc_server_dispatch(ws_rpc_server *srv, const void *req, size_t len,
                               uint8_t **resp, size_t *resp_len)
{
    return ws__rpc_server_dispatch_as(srv, NULL, req, len, resp, resp_len);
}

ws_err ws__rpc_server_dispatch_as(ws_rpc_server *srv, const char *identity,
                                  const void *req, size_t len, uint8_t **resp,
                                  size_t *resp_len)
{
    rpc_server_mem mem = {NULL, 0};
    static const uint8_t empty[1];

    if (srv == NULL || resp == NULL || resp_len == NULL || (req == NULL && len > 0)) {
        return WS_EINVAL;
    }
    if (!rpc_server_serve(srv, identity, req != NULL ? req : empty, len, rpc_server_now(),
                          rpc_server_sink_mem, &mem)) {
        return WS_ENOMEM;
    }
    *resp = mem.data;
    *resp_len = mem.len;
    return WS_OK;
}

/* ------------------------------------------------------------ state machine */

/* The answer to sc's request is sent (or failed): receive the next request,
 * or stop if the server is closing. */
static void rpc_server_ctx_answered(rpc_server_ctx *sc)
{
    ws_rpc_server *srv = sc->srv;
    bool closing;

    pthread_mutex_lock(&srv->mu);
    srv->in_flight--;
    ws_gauge_add(srv->in_flight_gauge, -1);
    closing = srv->closing;
    if (closing && srv->in_flight == 0) {
        pthread_cond_broadcast(&srv->done_cv);
    }
    pthread_mutex_unlock(&srv->mu);
    if (!closing) {
        /* Close may begin right here and stop sc->aio: the receive then
         * never starts and never calls back (nng_aio_begin on a stopped
         * aio), which close does not wait for. */
        sc->state = RPC_SERVER_CTX_RECV;
        nng_ctx_recv(sc->ctx, sc->aio);
    }
}

/* Serve sc's queued request and send the answer; sc belongs to nng again
 * when this returns. */
static void rpc_server_ctx_serve(rpc_server_ctx *sc)
{
    nng_msg *resp = rpc_server_dispatch(sc->srv, sc->req, sc->arrival);

    nng_msg_free(sc->req);
    sc->req = NULL;
    if (resp == NULL) {
        /* Nothing to answer with: the caller times out. Receiving again
         * drops this request's state in the rep0 context. */
        rpc_server_ctx_answered(sc);
        return;
    }
    sc->state = RPC_SERVER_CTX_SEND;
    nng_aio_set_msg(sc->aio, resp);
    nng_ctx_send(sc->ctx, sc->aio); /* sc belongs to nng from here */
}

/* aio callback, on an nng task thread: never blocks, except to run the
 * handler itself with inline_handlers. */
static void rpc_server_ctx_cb(void *arg)
{
    rpc_server_ctx *sc = arg;
    ws_rpc_server *srv = sc->srv;
    int rv = nng_aio_result(sc->aio);

    if (sc->state == RPC_SERVER_CTX_SEND) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(sc->aio));
            nng_aio_set_msg(sc->aio, NULL);
        }
        rpc_server_ctx_answered(sc);
        return;
    }

    /* RECV */
    if (rv != 0) {
        pthread_mutex_lock(&srv->mu);
        if (srv->closing || rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
            pthread_mutex_unlock(&srv->mu);
            return; /* this context's state machine has stopped */
        }
        pthread_mutex_unlock(&srv->mu);
        /* A transient failure (a message too large for the protocol
         * layer, ENOMEM): keep serving. */
        nng_ctx_recv(sc->ctx, sc->aio);
        return;
    }
    sc->req = nng_aio_get_msg(sc->aio);
    nng_aio_set_msg(sc->aio, NULL);
    sc->arrival = rpc_server_now();
    sc->next = NULL;
    pthread_mutex_lock(&srv->mu);
    if (srv->closing) {
        /* Received after close began: close no longer waits for it, and
         * it would be answered on an aio that close stops (a send on a
         * stopped aio never completes, so close waited for this context
         * for ever: seen with replicas under load, whose clients keep
         * sending). Dropped unanswered: a client with several servers
         * resends it to another (NNG_OPT_REQ_RESENDTIME). */
        pthread_mutex_unlock(&srv->mu);
        nng_msg_free(sc->req);
        sc->req = NULL;
        return;
    }
    srv->in_flight++;
    ws_gauge_add(srv->in_flight_gauge, 1);
    if (srv->inline_handlers) {
        pthread_mutex_unlock(&srv->mu);
        rpc_server_ctx_serve(sc);
        return;
    }
    if (srv->tail != NULL) {
        srv->tail->next = sc;
    } else {
        srv->head = sc;
    }
    srv->tail = sc;
    pthread_cond_signal(&srv->work_cv);
    pthread_mutex_unlock(&srv->mu);
}

static void *rpc_server_worker_main(void *arg)
{
    ws_rpc_server *srv = arg;

    for (;;) {
        rpc_server_ctx *sc;

        pthread_mutex_lock(&srv->mu);
        while (srv->head == NULL && !srv->stop_workers) {
            pthread_cond_wait(&srv->work_cv, &srv->mu);
        }
        sc = srv->head;
        if (sc == NULL) {
            pthread_mutex_unlock(&srv->mu);
            return NULL;
        }
        srv->head = sc->next;
        if (srv->head == NULL) {
            srv->tail = NULL;
        }
        pthread_mutex_unlock(&srv->mu);
        rpc_server_ctx_serve(sc);
    }
}

static ws_err rpc_server_err_from_nng(int rv)
{
    switch (rv) {
    case 0:
        return WS_OK;
    case NNG_ENOMEM:
        return WS_ENOMEM;
    case NNG_EADDRINUSE:
    case NNG_EPERM:
        return WS_EUNAVAIL;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
    case NNG_ENOTSUP:
        return WS_EINVAL;
    default:
        return WS_EIO;
    }
}

/* url with its port replaced by port: "tcp://127.0.0.1:0" and 4242 give
 * "tcp://127.0.0.1:4242" (the port follows the last ':' of a tcp URL, also
 * after "[::1]"). Returns a malloc'ed string, or NULL when out of memory. */
static char *rpc_server_url_with_port(const char *url, int port)
{
    const char *colon = strrchr(url, ':');
    const char *sep = strstr(url, "://");
    size_t keep = (colon != NULL && sep != NULL && colon > sep + 2)
                      ? (size_t)(colon - url)
                      : strlen(url);
    size_t cap = keep + 16;
    char *s = malloc(cap);
    if (s != NULL) {
        snprintf(s, cap, "%.*s:%d", (int)keep, url, port);
    }
    return s;
}

/* Create and start x->l on url (x->cfg: a TLS listener with that config)
 * and publish its id in x->id. Nagle is turned off on tcp listeners (nng's
 * default, set here so it cannot silently change): an answer is one small
 * write that must not wait for the caller's delayed ACK. An ipc:// socket
 * file gets srv->ipc_mode (0600: only our user may connect). *port is the
 * tcp port bound (0 for ipc). Returns 0 or an nng error; on error x is
 * unchanged and nothing is left listening. Used by start and by the probe,
 * which re-listens on the bound URL. */
static int rpc_server_listener_open(ws_rpc_server *srv, rpc_server_listener *x,
                                    const char *url, int *port /* OUT */)
{
    nng_listener l;
    int rv = nng_listener_create(&l, srv->sock, url);
    if (rv != 0) {
        return rv;
    }
    bool tcp = strncmp(url, "tcp", 3) == 0 || x->cfg != NULL;
    if (x->cfg != NULL) {
        rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, x->cfg);
    }
    if (rv == 0 && tcp) {
        rv = nng_listener_set_bool(l, NNG_OPT_TCP_NODELAY, true);
    }
    if (rv == 0 && strncmp(url, "ipc://", 6) == 0) {
        rv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, srv->ipc_mode);
    }
    if (rv == 0) {
        rv = nng_listener_start(l, 0);
    }
    int bound = 0;
    if (rv == 0 && tcp) {
        rv = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &bound);
    }
    if (rv != 0) {
        nng_listener_close(l);
        return rv;
    }
    x->l = l;
    atomic_store_explicit(&x->id, nng_listener_id(l), memory_order_release);
    *port = bound;
    return 0;
}

/* Listen on srv->url and record in srv->bound_url where: for tcp, with the
 * port the kernel chose when the URL asked for port 0. Returns 0 or an nng
 * error. */
static int rpc_server_listen(ws_rpc_server *srv)
{
    int port = 0;
    if (srv->url == NULL) {
        return 0; /* identity listeners only */
    }
    int rv = rpc_server_listener_open(srv, &srv->plain, srv->url, &port);
    if (rv != 0) {
        return rv;
    }
    if (strncmp(srv->url, "tcp", 3) == 0) {
        srv->bound_url = rpc_server_url_with_port(srv->url, port);
    } else {
        srv->bound_url = strdup(srv->url);
    }
    srv->plain.url = srv->bound_url;
    return srv->bound_url != NULL ? 0 : NNG_ENOMEM; /* the socket's close ends l */
}

/* --------------------------------------------------------- listener probe */

/* The listener probed i-th: the plain one first, then the identity ones;
 * NULL past the last (rpc_probe_host.listener_at). */
static rpc_server_listener *rpc_server_listener_at(void *ctx, size_t i)
{
    ws_rpc_server *srv = ctx;
    if (srv->url != NULL && i-- == 0) {
        return &srv->plain;
    }
    return i < srv->n_tls ? &srv->tls[i].l : NULL;
}

/* rpc_probe_host.listener_open: x again on its bound URL. */
static int rpc_server_listener_reopen(void *ctx, rpc_server_listener *x)
{
    int port = 0;
    return rpc_server_listener_open(ctx, x, x->url, &port);
}

/* ADD_POST on srv's socket (an nng thread): a pipe reached the socket, so
 * the listener it came from accepts; the probe waiting for it is told. */
static void rpc_server_pipe_added(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    ws_rpc_server *srv = arg;
    rpc_server_listener *x;
    int lid = nng_listener_id(nng_pipe_listener(p));
    (void)ev;
    for (size_t i = 0; lid > 0 && (x = rpc_server_listener_at(srv, i)) != NULL; i++) {
        if (atomic_load_explicit(&x->id, memory_order_acquire) == lid) {
            rpc_probe_pipe_added(&srv->probe, x);
            return;
        }
    }
}

void ws__rpc_server_set_probe(ws_rpc_server *srv, int interval_ms, int bound_ms)
{
    if (srv != NULL && !srv->sock_open) {
        rpc_probe_set_pace(&srv->probe, interval_ms, bound_ms);
    }
}

ws_err ws_rpc_server_start(ws_rpc_server *srv)
{
    int rv;

    if (srv == NULL || srv->sock_open || (srv->url == NULL && srv->n_tls == 0)) {
        return WS_EINVAL;
    }
    if (srv->symbols == NULL) {
        rpc_server_symbols_build(srv);
    }
    if ((rv = nng_rep0_open(&srv->sock)) != 0) {
        return rpc_server_err_from_nng(rv);
    }
    srv->sock_open = true;
    if ((rv = rpc_probe_init(&srv->probe)) != 0) {
        goto fail;
    }
    if ((rv = nng_pipe_notify(srv->sock, NNG_PIPE_EV_ADD_POST, rpc_server_pipe_added,
                              srv)) != 0) {
        goto fail;
    }
    /* RECVMAXSZ counts the whole message; 0 would mean "no limit". */
    if ((rv = nng_socket_set_size(srv->sock, NNG_OPT_RECVMAXSZ, srv->max_msg)) != 0) {
        goto fail;
    }
    srv->ctxs = calloc((size_t)srv->n_ctxs, sizeof(*srv->ctxs));
    srv->threads = calloc((size_t)srv->n_workers, sizeof(*srv->threads));
    if (srv->ctxs == NULL || srv->threads == NULL) {
        rv = NNG_ENOMEM;
        goto fail;
    }
    for (int i = 0; i < srv->n_ctxs; i++) {
        rpc_server_ctx *sc = &srv->ctxs[i];
        sc->srv = srv;
        if ((rv = nng_aio_alloc(&sc->aio, rpc_server_ctx_cb, sc)) != 0 ||
            (rv = nng_ctx_open(&sc->ctx, srv->sock)) != 0) {
            goto fail;
        }
    }
    for (; srv->n_threads < srv->n_workers; srv->n_threads++) {
        if (pthread_create(&srv->threads[srv->n_threads], NULL, rpc_server_worker_main,
                           srv) != 0) {
            rv = NNG_ENOMEM;
            goto fail;
        }
    }
    if ((rv = rpc_server_listen(srv)) != 0) {
        ws_log_error("rpc_server_listen_failed", "url=%s err=%s", srv->url,
                     nng_strerror(rv));
        goto fail;
    }
    if ((rv = rpc_server_tls_start(srv)) != 0) {
        goto fail;
    }
    rpc_probe_host host = {.listener_at = rpc_server_listener_at,
                           .listener_open = rpc_server_listener_reopen,
                           .ctx = srv,
                           .metrics = srv->metrics,
                           .any_tls = srv->n_tls > 0};
    if ((rv = rpc_probe_start(&srv->probe, &host)) != 0) {
        goto fail;
    }
    for (int i = 0; i < srv->n_ctxs; i++) {
        srv->ctxs[i].state = RPC_SERVER_CTX_RECV;
        nng_ctx_recv(srv->ctxs[i].ctx, srv->ctxs[i].aio);
    }
    /* The one line that says where the server is: tests and launchers that
     * asked for port 0 read the port from it. */
    if (srv->url != NULL) {
        ws_log_info("rpc_listening", "url=%s contexts=%d workers=%d inline=%d",
                    srv->bound_url, srv->n_ctxs, srv->n_workers, srv->inline_handlers);
    }
    return WS_OK;

fail:
    /* Nothing was received yet: no context is active, close frees the rest;
     * sock_open stays set so a second start is refused. */
    return rpc_server_err_from_nng(rv);
}

void ws_rpc_server_close(ws_rpc_server *srv)
{
    if (srv == NULL) {
        return;
    }
    rpc_probe_stop(&srv->probe);
    if (srv->sock_open) {
        /* Drain: contexts stop receiving once their answer is out, and we
         * wait for every request already received to be answered (one that
         * arrives after closing is set is dropped, see rpc_server_ctx_cb).
         * Then every context's aio is stopped: its pending receive is
         * canceled, nng_aio_stop waits for a callback still running, and no
         * operation starts on it again (nng_aio_begin fails on a stopped
         * aio without calling back). So a context that was just about to
         * receive again is not waited for: it was stopped too, and counting
         * contexts down in their callbacks hung close when one was stopped
         * between its answer and its next receive (CI, under load). Only
         * when the workers are joined is the socket closed: nng 1.5 can
         * crash when nng_ctx_send races with nng_close. */
        pthread_mutex_lock(&srv->mu);
        srv->closing = true;
        while (srv->in_flight > 0) {
            pthread_cond_wait(&srv->done_cv, &srv->mu);
        }
        pthread_mutex_unlock(&srv->mu);
        if (srv->ctxs != NULL) {
            for (int i = 0; i < srv->n_ctxs; i++) {
                if (srv->ctxs[i].aio != NULL) {
                    nng_aio_stop(srv->ctxs[i].aio);
                }
            }
        }
        pthread_mutex_lock(&srv->mu);
        srv->stop_workers = true;
        pthread_cond_broadcast(&srv->work_cv);
        pthread_mutex_unlock(&srv->mu);
        for (int i = 0; i < srv->n_threads; i++) {
            pthread_join(srv->threads[i], NULL);
        }
        /* Let the pipes park before they are closed. With no context
         * receiving, rep0 holds the next message a pipe brings and asks it
         * for no more, so its transport reads nothing; closing a pipe that
         * is reading is what can hang nng 1.5.2's close for good
         * (rpc_sock.h). Under load every busy pipe brings its next request
         * within a millisecond or two; an idle one has nothing coming. */
        ws_clock_sleep_ms(RPC_SERVER_PARK_MS);
        /* No pipe callback runs after it. If it hangs all the same, srv is
         * kept whole: nng still holds its aios and pipe callbacks. */
        if (!ws__rpc_sock_close(srv->sock, "rpc_server", srv)) {
            return;
        }
        if (srv->ctxs != NULL) {
            for (int i = 0; i < srv->n_ctxs; i++) {
                nng_aio_free(srv->ctxs[i].aio); /* NULL-safe; waits for callbacks */
            }
        }
    }
    for (size_t i = 0; i < srv->n_services; i++) {
        for (unsigned j = 0; j < srv->services[i].desc->n_methods; j++) {
            rpc_server_stats_fini(&srv->services[i].stats[j]);
        }
        free(srv->services[i].stats);
    }
    free(srv->services);
    rpc_server_files_free(srv);
    rpc_server_tls_free(srv);
    rpc_server_stats_fini(&srv->unknown);
    free(srv->ctxs);
    free(srv->threads);
    rpc_probe_fini(&srv->probe);
    pthread_cond_destroy(&srv->work_cv);
    pthread_cond_destroy(&srv->done_cv);
    pthread_mutex_destroy(&srv->mu);
    free(srv->url);
    free(srv->bound_url);
    free(srv);
}

const char *ws_rpc_server_url(const ws_rpc_server *srv)
{
    if (srv->url == NULL && srv->n_tls > 0) {
        return ws_rpc_server_tls_url(srv, srv->tls[0].identity);
    }
    return srv->bound_url != NULL ? srv->bound_url : srv->url;
}

/* ------------------------------------------------------------------ calls */

/* Length of the well-formed UTF-8 sequence at s (n bytes left, n > 0), or 0
 * if none starts there: no overlong forms, no surrogates, nothing past
 * U+10FFFF, no sequence cut short. */
static size_t rpc_server_utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;

    if (c < 0x80) {
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF) {
            return 0;
        }
    }
    return len;
}

/* Make s valid UTF-8 in place: each byte that starts no well-formed
 * sequence becomes '?'. RpcResponse.message is a proto3 string, and a peer
 * in any other language rejects the whole response if it is not UTF-8; the
 * message may quote caller bytes (an unknown method name) and vsnprintf may
 * have cut a character in two. */
static void rpc_server_utf8_scrub(char *s)
{
    size_t n = strlen(s);
    unsigned char *p = (unsigned char *)s;

    for (size_t i = 0; i < n;) {
        size_t len = rpc_server_utf8_seq(p + i, n - i);
        if (len == 0) {
            p[i++] = '?';
        } else {
            i += len;
        }
    }
}

void ws_rpc_call_set_message(ws_rpc_call *call, const char *fmt, ...)
{
    va_list ap;

    if (call == NULL || fmt == NULL) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(call->msg, sizeof(call->msg), fmt, ap);
    va_end(ap);
    rpc_server_utf8_scrub(call->msg);
}

int64_t ws_rpc_call_remaining_ms(const ws_rpc_call *call)
{
    double left;

    if (call == NULL || call->deadline_ms == 0) {
        return -1;
    }
    left = (double)call->deadline_ms - (rpc_server_now() - call->arrival) * 1e3;
    return left <= 0 ? 0 : (int64_t)left;
}

ws_rpc_code ws_rpc_status_of(ws_err err, ws_rpc_call *call, const char *method,
                             const char *what)
{
    switch (err) {
    case WS_OK:
        return WS_RPC_OK;
    case WS_EINVAL:
        ws_rpc_call_set_message(call, "%s", what ? what : "invalid argument");
        return WS_RPC_INVALID_ARGUMENT;
    case WS_ENOTFOUND:
        ws_rpc_call_set_message(call, "%s", what ? what : "not found");
        return WS_RPC_NOT_FOUND;
    case WS_EBUSY:
    case WS_EUNAVAIL:
    case WS_ETIMEDOUT:
    case WS_EIO:
        ws_rpc_call_set_message(call, "database unavailable (%s)", ws_errname(err));
        return WS_RPC_UNAVAILABLE;
    default:
        ws_log_error("rpc_failed", "method=%s err=%s", method ? method : "?",
                     ws_errname(err));
        ws_rpc_call_set_message(call, "%s", ws_strerror(err));
        return WS_RPC_INTERNAL;
    }
}
