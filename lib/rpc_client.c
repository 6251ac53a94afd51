/*
 * RPC client over one nng req0 socket shared by every thread; each call
 * opens its own context and aio, so calls run in parallel and nng matches
 * each reply to its request.
 *
 * UNAVAILABLE versus DEADLINE_EXCEEDED (what lets the front answer 503 for a
 * backend that is down and 504 for one that is slow): a req0 send with no
 * connected peer does not fail, it waits in nng's queue until the timeout.
 * So the client tracks its connected pipes (nng_pipe_notify) and, before
 * sending, waits for one for at most RPC_CLIENT_CONNECT_GRACE_MS (or the
 * deadline, if shorter): that covers one redial period (RECONNMAXT) and so a
 * peer that has just come up. No pipe by then: UNAVAILABLE without sending.
 * A call that times out while no pipe is connected (the peer went away
 * mid-call) is also UNAVAILABLE; a call that times out with a connected peer
 * is DEADLINE_EXCEEDED.
 *
 * Resends: NNG_OPT_REQ_RESENDTIME is disabled. Our methods are idempotent
 * reads, so a resend would be harmless, but it would double the work on a
 * server that is slow because it is overloaded; and a request lost with its
 * connection is handled by nng's pipe-close logic, not by the timer.
 *
 * Message size: a request larger than max_msg is refused here with
 * RESOURCE_EXHAUSTED. A response larger than max_msg is RESOURCE_EXHAUSTED
 * too; the transport itself drops connections whose messages exceed
 * RPC_CLIENT_HARD_FACTOR * max_msg, which bounds memory (such a call ends
 * as UNAVAILABLE or DEADLINE_EXCEEDED). Servers refuse to send responses
 * beyond their own max_msg, so with equal limits the hard cap never fires.
 */
#include "rpc_client.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "webshop/v1/rpc.pb-c.h"

#define RPC_CLIENT_RECONN_MIN_MS    10
#define RPC_CLIENT_RECONN_MAX_MS    250
#define RPC_CLIENT_CONNECT_GRACE_MS 300
#define RPC_CLIENT_HARD_FACTOR      4

/* A call's aio, listed so that close can cancel it. */
typedef struct rpc_client_pending {
    ws_rpc_client *c;
    nng_aio *aio;
    bool done; /* the aio's operation finished, under c->mu */
    struct rpc_client_pending *next;
} rpc_client_pending;

struct ws_rpc_client {
    nng_socket sock;
    size_t max_msg;
    ws_metrics *metrics;
    char *first_url; /* owned, for messages */
    atomic_uint_fast64_t next_id;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* pipes changed, a call ended, or closed */
    uint32_t *pipes;   /* ids of connected pipes, under mu */
    size_t n_pipes, cap_pipes;
    int calls;                   /* calls in progress, under mu */
    rpc_client_pending *pending; /* their aios, under mu */
    bool closed;                 /* under mu */
};

static int64_t rpc_client_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Pipe events, on an nng thread. A pipe that was never added (rejected by
 * the protocol) is ignored on removal, so the set stays exact. */
static void rpc_client_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    ws_rpc_client *c = arg;
    uint32_t id = (uint32_t)nng_pipe_id(p);

    pthread_mutex_lock(&c->mu);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        if (c->n_pipes == c->cap_pipes) {
            size_t cap = c->cap_pipes ? c->cap_pipes * 2 : 8;
            uint32_t *grown = realloc(c->pipes, cap * sizeof(*grown));
            if (grown != NULL) {
                c->pipes = grown;
                c->cap_pipes = cap;
            }
        }
        if (c->n_pipes < c->cap_pipes) {
            c->pipes[c->n_pipes++] = id;
        }
    } else if (ev == NNG_PIPE_EV_REM_POST) {
        for (size_t i = 0; i < c->n_pipes; i++) {
            if (c->pipes[i] == id) {
                c->pipes[i] = c->pipes[--c->n_pipes];
                break;
            }
        }
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

ws_err ws_rpc_client_open(const ws_rpc_client_opts *opts, ws_rpc_client **out)
{
    ws_rpc_client *c;
    pthread_condattr_t ca;
    int rv;

    if (opts == NULL || opts->urls == NULL || opts->n_urls == 0) {
        return WS_EINVAL;
    }
    for (size_t i = 0; i < opts->n_urls; i++) {
        if (opts->urls[i] == NULL || opts->urls[i][0] == '\0') {
            return WS_EINVAL;
        }
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return WS_ENOMEM;
    }
    c->max_msg = opts->max_msg ? opts->max_msg : WS_RPC_DEFAULT_MAX_MSG;
    c->metrics = opts->metrics ? opts->metrics : ws_metrics_default();
    atomic_init(&c->next_id, 1);
    c->first_url = strdup(opts->urls[0]);
    if (c->first_url == NULL) {
        free(c);
        return WS_ENOMEM;
    }
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        goto fail_mu;
    }
    if (pthread_cond_init(&c->cv, &ca) != 0) {
        goto fail_cv;
    }
    pthread_condattr_destroy(&ca);
    if ((rv = nng_req0_open(&c->sock)) != 0) {
        goto fail_sock;
    }
    size_t hard = c->max_msg > SIZE_MAX / RPC_CLIENT_HARD_FACTOR
                      ? 0
                      : c->max_msg * RPC_CLIENT_HARD_FACTOR;
    if ((rv = nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, hard)) != 0 ||
        (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, RPC_CLIENT_RECONN_MIN_MS)) !=
            0 ||
        (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, RPC_CLIENT_RECONN_MAX_MS)) !=
            0 ||
        (rv = nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME,
                                NNG_DURATION_INFINITE)) != 0 ||
        (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, rpc_client_pipe_cb, c)) !=
            0 ||
        (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, rpc_client_pipe_cb, c)) !=
            0) {
        goto fail_opts;
    }
    for (size_t i = 0; i < opts->n_urls; i++) {
        /* NONBLOCK: the peer may come up later; nng keeps redialing. */
        if ((rv = nng_dial(c->sock, opts->urls[i], NULL, NNG_FLAG_NONBLOCK)) != 0) {
            goto fail_opts;
        }
    }
    *out = c;
    return WS_OK;

fail_opts:
    nng_close(c->sock);
    free(c->pipes);
fail_sock:
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c->first_url);
    free(c);
    return rv == NNG_ENOMEM ? WS_ENOMEM : WS_EINVAL;
fail_cv:
    pthread_mutex_destroy(&c->mu);
fail_mu:
    pthread_condattr_destroy(&ca);
    free(c->first_url);
    free(c);
    return WS_ENOMEM;
}

void ws_rpc_client_close(ws_rpc_client *c)
{
    if (c == NULL) {
        return;
    }
    /* In-flight calls are canceled (they end CANCELLED) and waited for
     * before the socket is closed: nng 1.5 can crash when a context
     * operation races with nng_close. A call may start its next operation
     * just after a cancel, hence the loop. */
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    pthread_cond_broadcast(&c->cv);
    while (c->calls > 0) {
        struct timespec ts;
        for (rpc_client_pending *p = c->pending; p != NULL; p = p->next) {
            nng_aio_cancel(p->aio);
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    pthread_mutex_unlock(&c->mu);
    nng_close(c->sock);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c->pipes);
    free(c->first_url);
    free(c);
}

static void rpc_client_set_msg(char *msg, size_t msg_len, const char *fmt,
                               const char *arg)
{
    if (msg != NULL && msg_len > 0) {
        snprintf(msg, msg_len, fmt, arg);
    }
}

/* Under c->mu: wait until a pipe is connected, the grace period ends (at
 * until_ms, monotonic) or the client closes. True if a pipe is connected. */
static bool rpc_client_wait_pipe_locked(ws_rpc_client *c, int64_t until_ms)
{
    while (c->n_pipes == 0 && !c->closed) {
        struct timespec ts;
        int64_t now = rpc_client_now_ms();
        if (now >= until_ms) {
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = (int64_t)ts.tv_nsec + (until_ms - now) * 1000000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    return c->n_pipes > 0;
}

static ws_rpc_code rpc_client_code_from_nng(ws_rpc_client *c, int rv)
{
    bool closed, no_pipe;

    pthread_mutex_lock(&c->mu);
    closed = c->closed;
    no_pipe = c->n_pipes == 0;
    pthread_mutex_unlock(&c->mu);
    if (closed) {
        return WS_RPC_CANCELLED;
    }
    switch (rv) {
    case NNG_ETIMEDOUT:
        return no_pipe ? WS_RPC_UNAVAILABLE : WS_RPC_DEADLINE_EXCEEDED;
    case NNG_EMSGSIZE:
    case NNG_ENOMEM:
        return WS_RPC_RESOURCE_EXHAUSTED;
    default: /* ECLOSED, ECANCELED, ECONNRESET, ECONNREFUSED, ECONNSHUT, ... */
        return WS_RPC_UNAVAILABLE;
    }
}

/* aio callback, on an nng thread: wake the caller. */
static void rpc_client_aio_cb(void *arg)
{
    rpc_client_pending *p = arg;

    pthread_mutex_lock(&p->c->mu);
    p->done = true;
    pthread_cond_broadcast(&p->c->cv);
    pthread_mutex_unlock(&p->c->mu);
}

/* Start nothing; wait for p's operation to end. If no pipe is connected for
 * RPC_CLIENT_CONNECT_GRACE_MS meanwhile (the server went away mid-call and
 * has not come back), cancel it and return true ("lost"). */
static bool rpc_client_await(ws_rpc_client *c, rpc_client_pending *p)
{
    int64_t no_pipe_since = -1;
    bool lost = false;

    pthread_mutex_lock(&c->mu);
    while (!p->done) {
        int64_t now = rpc_client_now_ms();
        if (c->n_pipes > 0 || lost) {
            no_pipe_since = -1;
            pthread_cond_wait(&c->cv, &c->mu);
            continue;
        }
        if (no_pipe_since < 0) {
            no_pipe_since = now;
        }
        if (now - no_pipe_since >= RPC_CLIENT_CONNECT_GRACE_MS) {
            lost = true;
            pthread_mutex_unlock(&c->mu);
            nng_aio_cancel(p->aio);
            pthread_mutex_lock(&c->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 20 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    p->done = false;
    pthread_mutex_unlock(&c->mu);
    return lost;
}

static void rpc_client_pending_remove(ws_rpc_client *c, rpc_client_pending *p)
{
    pthread_mutex_lock(&c->mu);
    for (rpc_client_pending **pp = &c->pending; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* Send one envelope and wait for the answer. On WS_RPC_OK *out is the
 * response envelope, whose status may be any code; otherwise msg is set. */
static ws_rpc_code rpc_client_roundtrip(ws_rpc_client *c, const char *method,
                                        const uint8_t *payload, size_t payload_len,
                                        uint32_t deadline_ms,
                                        Webshop__V1__RpcResponse **out, char *msg,
                                        size_t msg_len)
{
    Webshop__V1__RpcRequest env = WEBSHOP__V1__RPC_REQUEST__INIT;
    Webshop__V1__RpcResponse *resp;
    int64_t start = rpc_client_now_ms();
    int64_t end = deadline_ms ? start + deadline_ms : INT64_MAX;
    nng_ctx ctx;
    nng_aio *aio = NULL;
    nng_msg *m = NULL;
    ws_rpc_code code;
    bool lost = false;
    size_t n;
    int rv;

    env.method = (char *)method;
    env.payload.data = (uint8_t *)payload;
    env.payload.len = payload_len;
    env.deadline_ms = deadline_ms;
    env.request_id = atomic_fetch_add(&c->next_id, 1);
    n = webshop__v1__rpc_request__get_packed_size(&env);
    if (n > c->max_msg) {
        if (msg != NULL && msg_len > 0) {
            snprintf(msg, msg_len, "request of %zu bytes exceeds the limit of %zu", n,
                     c->max_msg);
        }
        return WS_RPC_RESOURCE_EXHAUSTED;
    }

    pthread_mutex_lock(&c->mu);
    int64_t grace = start + RPC_CLIENT_CONNECT_GRACE_MS;
    bool up = rpc_client_wait_pipe_locked(c, grace < end ? grace : end);
    bool closed = c->closed;
    pthread_mutex_unlock(&c->mu);
    if (closed) {
        rpc_client_set_msg(msg, msg_len, "client closed%s", "");
        return WS_RPC_CANCELLED;
    }
    if (!up) {
        rpc_client_set_msg(msg, msg_len, "no server connected at %s", c->first_url);
        return WS_RPC_UNAVAILABLE;
    }

    if ((rv = nng_msg_alloc(&m, n)) != 0) {
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    webshop__v1__rpc_request__pack(&env, nng_msg_body(m));
    rpc_client_pending pending = {.c = c};
    if ((rv = nng_aio_alloc(&aio, rpc_client_aio_cb, &pending)) != 0) {
        nng_msg_free(m);
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    pending.aio = aio;
    pthread_mutex_lock(&c->mu);
    pending.next = c->pending;
    c->pending = &pending;
    closed = c->closed;
    pthread_mutex_unlock(&c->mu);
    if (closed || (rv = nng_ctx_open(&ctx, c->sock)) != 0) {
        nng_msg_free(m);
        rpc_client_pending_remove(c, &pending);
        nng_aio_free(aio);
        if (closed) {
            rpc_client_set_msg(msg, msg_len, "client closed%s", "");
            return WS_RPC_CANCELLED;
        }
        code = rpc_client_code_from_nng(c, rv);
        rpc_client_set_msg(msg, msg_len, "%s", nng_strerror(rv));
        return code;
    }

    int64_t left = NNG_DURATION_INFINITE;
    if (end != INT64_MAX) {
        left = end - rpc_client_now_ms();
        if (left <= 0) {
            left = 1; /* 0 would mean "the socket's default" to nng */
        }
    }
    nng_aio_set_timeout(aio, (nng_duration)left);
    nng_aio_set_msg(aio, m);
    nng_ctx_send(ctx, aio);
    lost = rpc_client_await(c, &pending);
    if ((rv = nng_aio_result(aio)) != 0) {
        nng_msg_free(nng_aio_get_msg(aio));
        goto fail;
    }
    if (end != INT64_MAX) {
        left = end - rpc_client_now_ms();
        if (left <= 0) {
            rv = NNG_ETIMEDOUT;
            goto fail;
        }
    }
    nng_aio_set_timeout(aio, (nng_duration)left);
    nng_ctx_recv(ctx, aio);
    lost = rpc_client_await(c, &pending);
    if ((rv = nng_aio_result(aio)) != 0) {
        goto fail;
    }
    m = nng_aio_get_msg(aio);
    nng_ctx_close(ctx);
    rpc_client_pending_remove(c, &pending);
    nng_aio_free(aio);

    if (nng_msg_len(m) > c->max_msg) {
        if (msg != NULL && msg_len > 0) {
            snprintf(msg, msg_len, "response of %zu bytes exceeds the limit of %zu",
                     nng_msg_len(m), c->max_msg);
        }
        nng_msg_free(m);
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    resp = webshop__v1__rpc_response__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    nng_msg_free(m);
    if (resp == NULL) {
        rpc_client_set_msg(msg, msg_len, "malformed RpcResponse from %s", c->first_url);
        return WS_RPC_INTERNAL;
    }
    /* 0: the server could not read the request's envelope. */
    if (resp->request_id != env.request_id && resp->request_id != 0) {
        rpc_client_set_msg(msg, msg_len, "response to another request for %s", method);
        webshop__v1__rpc_response__free_unpacked(resp, NULL);
        return WS_RPC_INTERNAL;
    }
    *out = resp;
    return WS_RPC_OK;

fail:
    nng_ctx_close(ctx);
    rpc_client_pending_remove(c, &pending);
    nng_aio_free(aio);
    code = rpc_client_code_from_nng(c, rv);
    if (lost && code != WS_RPC_CANCELLED) {
        code = WS_RPC_UNAVAILABLE;
        rv = NNG_ETIMEDOUT; /* for the message below */
    }
    if (code == WS_RPC_DEADLINE_EXCEEDED) {
        if (msg != NULL && msg_len > 0) {
            snprintf(msg, msg_len, "no answer within %u ms", (unsigned)deadline_ms);
        }
    } else if (code == WS_RPC_UNAVAILABLE && rv == NNG_ETIMEDOUT) {
        rpc_client_set_msg(msg, msg_len, "lost the server at %s", c->first_url);
    } else {
        rpc_client_set_msg(msg, msg_len, "%s", nng_strerror(rv));
    }
    return code;
}

/* Escape a caller-supplied method name as a Prometheus label value,
 * truncating it to fit dst. */
static void rpc_client_label_escape(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    for (; *src != '\0' && o + 3 < cap; src++) {
        if (*src == '\\' || *src == '"') {
            dst[o++] = '\\';
            dst[o++] = *src;
        } else if (*src == '\n') {
            dst[o++] = '\\';
            dst[o++] = 'n';
        } else {
            dst[o++] = *src;
        }
    }
    dst[o] = '\0';
}

/* A call, counted in the metrics. resp_desc NULL: raw bytes into *raw. */
static ws_rpc_code rpc_client_invoke(ws_rpc_client *c, const char *method,
                                     const uint8_t *req, size_t req_len,
                                     const ProtobufCMessageDescriptor *resp_desc,
                                     ProtobufCMessage **resp, uint8_t **raw,
                                     size_t *raw_len, uint32_t deadline_ms, char *msg,
                                     size_t msg_len)
{
    Webshop__V1__RpcResponse *env = NULL;
    double t0 = ws_now_seconds();
    ws_rpc_code code;
    char labels[512];

    if (msg != NULL && msg_len > 0) {
        msg[0] = '\0';
    }
    pthread_mutex_lock(&c->mu);
    if (c->closed) {
        pthread_mutex_unlock(&c->mu);
        rpc_client_set_msg(msg, msg_len, "client closed%s", "");
        return WS_RPC_CANCELLED;
    }
    c->calls++;
    pthread_mutex_unlock(&c->mu);

    code = rpc_client_roundtrip(c, method, req, req_len, deadline_ms, &env, msg, msg_len);
    if (code == WS_RPC_OK) {
        code = (unsigned)env->status <= WS_RPC_UNAUTHENTICATED ? (ws_rpc_code)env->status
                                                               : WS_RPC_UNKNOWN;
        if (code != WS_RPC_OK) {
            rpc_client_set_msg(msg, msg_len, "%s", env->message ? env->message : "");
        } else if (resp_desc != NULL) {
            ProtobufCMessage *r = protobuf_c_message_unpack(
                resp_desc, NULL, env->payload.len, env->payload.data);
            if (r == NULL) {
                code = WS_RPC_INTERNAL;
                rpc_client_set_msg(msg, msg_len, "response payload is not a valid %s",
                                   resp_desc->name);
            } else {
                *resp = r;
            }
        } else {
            uint8_t *copy = malloc(env->payload.len ? env->payload.len : 1);
            if (copy == NULL) {
                code = WS_RPC_RESOURCE_EXHAUSTED;
                rpc_client_set_msg(msg, msg_len, "out of memory%s", "");
            } else {
                if (env->payload.len > 0) {
                    memcpy(copy, env->payload.data, env->payload.len);
                }
                *raw = copy;
                *raw_len = env->payload.len;
            }
        }
        webshop__v1__rpc_response__free_unpacked(env, NULL);
    }

    char method_label[256];
    rpc_client_label_escape(method_label, sizeof(method_label), method);
    snprintf(labels, sizeof(labels), "method=\"%s\",code=\"%s\"", method_label,
             ws_rpc_code_name(code));
    ws_counter_inc(ws_counter_get(c->metrics, "webshop_rpc_client_calls_total",
                                  "RPC calls made, by method and status code.", labels));
    snprintf(labels, sizeof(labels), "method=\"%s\"", method_label);
    ws_histogram_observe(ws_histogram_get(c->metrics,
                                          "webshop_rpc_client_latency_seconds",
                                          "Duration of RPC calls, as the caller sees it.",
                                          labels, NULL, 0),
                         ws_now_seconds() - t0);

    pthread_mutex_lock(&c->mu);
    if (--c->calls == 0 && c->closed) {
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return code;
}

ws_rpc_code ws_rpc_client_call(ws_rpc_client *c, const char *method,
                               const ProtobufCMessage *req,
                               const ProtobufCMessageDescriptor *resp_desc,
                               ProtobufCMessage **resp, uint32_t deadline_ms, char *msg,
                               size_t msg_len)
{
    uint8_t stackbuf[512], *buf = stackbuf;
    size_t n;
    ws_rpc_code code;

    if (c == NULL || method == NULL || req == NULL || resp_desc == NULL || resp == NULL) {
        rpc_client_set_msg(msg, msg_len, "invalid arguments%s", "");
        return WS_RPC_INVALID_ARGUMENT;
    }
    n = protobuf_c_message_get_packed_size(req);
    if (n > sizeof(stackbuf) && (buf = malloc(n)) == NULL) {
        rpc_client_set_msg(msg, msg_len, "out of memory%s", "");
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    protobuf_c_message_pack(req, buf);
    code = rpc_client_invoke(c, method, buf, n, resp_desc, resp, NULL, NULL, deadline_ms,
                             msg, msg_len);
    if (buf != stackbuf) {
        free(buf);
    }
    return code;
}

ws_rpc_code ws_rpc_client_call_raw(ws_rpc_client *c, const char *method,
                                   const uint8_t *req, size_t req_len, uint8_t **resp,
                                   size_t *resp_len, uint32_t deadline_ms, char *msg,
                                   size_t msg_len)
{
    if (c == NULL || method == NULL || (req == NULL && req_len > 0) || resp == NULL ||
        resp_len == NULL) {
        rpc_client_set_msg(msg, msg_len, "invalid arguments%s", "");
        return WS_RPC_INVALID_ARGUMENT;
    }
    return rpc_client_invoke(c, method, req, req_len, NULL, NULL, resp, resp_len,
                             deadline_ms, msg, msg_len);
}
