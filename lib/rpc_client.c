/*
 * RPC client over one nng req0 socket shared by every thread. A call takes
 * a "call slot" (an nng context, its aio and a condition variable) from a
 * free list, or makes one, and gives it back when the call succeeds, so the
 * steady state opens no context and allocates no aio per call. The aio
 * callback chains the receive onto the send on nng's thread, and wakes only
 * its own caller (its own mutex and condition variable): one wake-up per
 * call, not a broadcast to every waiting caller, and neither the callback
 * nor a waiting caller takes the client's mutex, which guards only the
 * slot lists, the pipe waits and close: with 64 front threads calling at
 * once, no caller queues behind another's wake-up.
 *
 * Metrics: the series of each method (latency, calls by code) are looked up
 * once and kept in a small table read without a lock.
 *
 * UNAVAILABLE versus DEADLINE_EXCEEDED (what lets the front answer 503 for a
 * backend that is down and 504 for one that is slow): a req0 send with no
 * connected peer does not fail, it waits in nng's queue until the timeout.
 * So the client tracks its connected pipes (nng_pipe_notify, counted per
 * dialer by rpc_dialer.c) and, before
 * sending, waits for one for at most RPC_CLIENT_CONNECT_GRACE_MS (or the
 * deadline, if shorter): that covers one redial period (RECONNMAXT) and so a
 * peer that has just come up. No pipe by then: UNAVAILABLE without sending.
 * A call that times out while no pipe is connected (the peer went away
 * mid-call) is also UNAVAILABLE; a call that times out with a connected peer
 * is DEADLINE_EXCEEDED.
 *
 * Resends: with one URL NNG_OPT_REQ_RESENDTIME is disabled. Our methods are
 * idempotent reads, so a resend would be harmless, but it would double the
 * work on a server that is slow because it is overloaded; and with the
 * timer off nng's pipe-close logic fails a request whose connection dropped
 * at once (ECONNRESET: UNAVAILABLE now, not at the deadline). With several
 * URLs (replicas) it is on (opts->resend_ms, below the callers' deadline):
 * then nng 1.5.2 resends a request whose pipe closed at once, to another
 * connected pipe (a replica that died: measured < 5 ms), and one not
 * answered within resend_ms to the next pipe (a replica that hangs). The
 * cost, a second copy of a slow request, is bounded by one per resend_ms.
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

#include "clock.h"
#include "rpc_dialer.h"
#include "rpc_sock.h"
#include "rpc_tls.h"
#include "trace.h"
#include "webshop/v1/rpc.pb-c.h"

#define RPC_CLIENT_RECONN_MIN_MS    10
#define RPC_CLIENT_RECONN_MAX_MS    250
#define RPC_CLIENT_CONNECT_GRACE_MS 300
#define RPC_CLIENT_RESEND_MS        1000 /* with replicas, opts->resend_ms 0 */
#define RPC_CLIENT_HARD_FACTOR      4
#define RPC_CLIENT_N_CODES          (WS_RPC_UNAUTHENTICATED + 1)
/* Methods whose metric series are cached; calls to more methods than this
 * look their series up per call (slower, still correct). */
#define RPC_CLIENT_METHOD_SLOTS 32
/* Idle call slots kept for reuse; more are freed when their call ends. */
#define RPC_CLIENT_FREE_MAX 256

typedef enum rpc_client_stage {
    RPC_CLIENT_STAGE_SEND,
    RPC_CLIENT_STAGE_RECV,
} rpc_client_stage;

/* One call in flight: an nng context with its aio. While an operation is
 * pending the slot belongs to nng (and its callback); stage and end_ms are
 * written by the caller before the send and by the callback between send
 * and receive, never at the same time. A slot is on the pending list (so
 * that close can cancel it) from before its send until its caller is done
 * with it, then on the free list or freed. */
typedef struct rpc_client_slot {
    ws_rpc_client *c;
    nng_ctx ctx;
    nng_aio *aio;
    pthread_mutex_t mu;     /* done and rv; taken after c->mu, never before */
    pthread_cond_t cv;      /* done, pipes changed or closing; with mu */
    int64_t end_ms;         /* monotonic deadline; INT64_MAX = none */
    rpc_client_stage stage; /* see above */
    atomic_bool abandon;    /* the caller gave up: do not start the receive */
    int rv;                 /* the call's nng result, under mu once done */
    bool done;              /* the callback finished the call, under mu */
    struct rpc_client_slot *prev, *next; /* pending or free list, under c->mu */
} rpc_client_slot;

/* The metric series of one method, created on first use and never freed
 * before the client; the code counters are filled in on first use too. */
typedef struct rpc_client_method {
    char *name;                                      /* owned */
    ws_histogram *latency;                           /* owned by the registry */
    _Atomic(ws_counter *) calls[RPC_CLIENT_N_CODES]; /* owned by the registry */
} rpc_client_method;

struct ws_rpc_client {
    nng_socket sock;
    size_t max_msg;
    ws_metrics *metrics;
    char *first_url; /* owned, for messages */
    atomic_uint_fast64_t next_id;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* pipes changed or closed (callers waiting for a pipe) */
    /* Set at open before any pipe, freed at close. It counts the connected
     * pipes (rpc_dialer_set_any_up), updated by the pipe callback before it
     * wakes anyone under mu. */
    rpc_dialer_set *dialers;
    int calls;                /* calls in progress, under mu */
    rpc_client_slot *pending; /* slots of calls in flight, under mu */
    rpc_client_slot *free;    /* idle slots, under mu */
    int n_free;               /* under mu */
    bool closed;              /* under mu */

    /* Filled in order under mu, read without it: an entry once published
     * never changes. */
    _Atomic(rpc_client_method *) methods[RPC_CLIENT_METHOD_SLOTS];
};

static int64_t rpc_client_now_ms(void)
{
    return ws_clock_mono_ms();
}

/* Pipe events, on an nng thread: the dialer set counts the pipe, then
 * whoever waits on a pipe change is woken. */
static void rpc_client_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    ws_rpc_client *c = arg;

    rpc_dialer_set_pipe(c->dialers, p, ev == NNG_PIPE_EV_ADD_POST);
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->cv);
    /* A caller waiting for its answer with no pipe left must start its
     * grace timer now. */
    for (rpc_client_slot *k = c->pending; k != NULL; k = k->next) {
        pthread_mutex_lock(&k->mu);
        pthread_cond_signal(&k->cv);
        pthread_mutex_unlock(&k->mu);
    }
    pthread_mutex_unlock(&c->mu);
}

/* aio callback, on an nng thread (or inline in nng_ctx_send): after a
 * successful send start the receive, with what is left of the deadline;
 * otherwise the call is over: record the result and wake its caller. */
static void rpc_client_slot_cb(void *arg)
{
    rpc_client_slot *k = arg;
    int rv = nng_aio_result(k->aio);

    if (k->stage == RPC_CLIENT_STAGE_SEND) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(k->aio));
            nng_aio_set_msg(k->aio, NULL);
        } else if (atomic_load(&k->abandon)) {
            rv = NNG_ECANCELED;
        } else {
            nng_duration left = NNG_DURATION_INFINITE;
            if (k->end_ms != INT64_MAX) {
                int64_t l = k->end_ms - rpc_client_now_ms();
                if (l <= 0) {
                    rv = NNG_ETIMEDOUT;
                } else {
                    left = (nng_duration)l;
                }
            }
            if (rv == 0) {
                k->stage = RPC_CLIENT_STAGE_RECV;
                nng_aio_set_timeout(k->aio, left);
                nng_ctx_recv(k->ctx, k->aio);
                return;
            }
        }
    }
    pthread_mutex_lock(&k->mu);
    k->rv = rv;
    k->done = true;
    pthread_mutex_unlock(&k->mu);
    /* Signalled after the unlock, so that the caller does not wake only to
     * block on k->mu. k (its cv) outlives this: the caller waits for this
     * callback to return (nng_aio_wait, nng_aio_free) before it reuses or
     * frees k. */
    pthread_cond_signal(&k->cv);
}

/* A new slot with its own context on c's socket; nng's error code. */
static int rpc_client_slot_new(ws_rpc_client *c, rpc_client_slot **out)
{
    pthread_condattr_t ca;
    rpc_client_slot *k = calloc(1, sizeof(*k));
    int rv;

    if (k == NULL) {
        return NNG_ENOMEM;
    }
    k->c = c;
    atomic_init(&k->abandon, false);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rv = pthread_cond_init(&k->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rv != 0) {
        free(k);
        return NNG_ENOMEM;
    }
    if (pthread_mutex_init(&k->mu, NULL) != 0) {
        pthread_cond_destroy(&k->cv);
        free(k);
        return NNG_ENOMEM;
    }
    if ((rv = nng_aio_alloc(&k->aio, rpc_client_slot_cb, k)) != 0 ||
        (rv = nng_ctx_open(&k->ctx, c->sock)) != 0) {
        nng_aio_free(k->aio); /* NULL-safe */
        pthread_mutex_destroy(&k->mu);
        pthread_cond_destroy(&k->cv);
        free(k);
        return rv;
    }
    *out = k;
    return 0;
}

/* Free a slot whose operations are over; k may be NULL. */
static void rpc_client_slot_free(rpc_client_slot *k)
{
    if (k == NULL) {
        return;
    }
    nng_aio_free(k->aio); /* waits for a callback still running */
    nng_ctx_close(k->ctx);
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

/* Under c->mu: link k at the head of *list. */
static void rpc_client_slot_link(rpc_client_slot **list, rpc_client_slot *k)
{
    k->prev = NULL;
    k->next = *list;
    if (*list != NULL) {
        (*list)->prev = k;
    }
    *list = k;
}

/* Under c->mu: unlink k from *list. */
static void rpc_client_slot_unlink(rpc_client_slot **list, rpc_client_slot *k)
{
    if (k->prev != NULL) {
        k->prev->next = k->next;
    } else {
        *list = k->next;
    }
    if (k->next != NULL) {
        k->next->prev = k->prev;
    }
    k->prev = k->next = NULL;
}

/* Whether opts asks for TLS consistently: every TLS option or none, and
 * then only and all tls+tcp:// URLs. When they do, the files are tried
 * once here, so that a bad one fails the open with its own error. */
static ws_err rpc_client_tls_check(const ws_rpc_client_opts *opts)
{
    int set = (opts->tls_cert != NULL) + (opts->tls_key != NULL) +
              (opts->tls_ca != NULL) + (opts->tls_server_name != NULL);
    if (set != 0 && set != 4) {
        return WS_EINVAL;
    }
    for (size_t i = 0; i < opts->n_urls; i++) {
        if ((strncmp(opts->urls[i], "tls+", 4) == 0) != (set == 4)) {
            return WS_EINVAL;
        }
    }
    if (set == 0) {
        return WS_OK;
    }
    nng_tls_config *cfg;
    ws_err err = ws__rpc_tls_config_new(0, opts->tls_cert, opts->tls_key, opts->tls_ca,
                                        opts->tls_server_name, &cfg);
    if (err == WS_OK) {
        nng_tls_config_free(cfg);
    }
    return err;
}

/* NNG_OPT_REQ_RESENDTIME for opts: off for one URL (see the top). */
static nng_duration rpc_client_resend_ms(const ws_rpc_client_opts *opts)
{
    if (opts->n_urls < 2) {
        return NNG_DURATION_INFINITE;
    }
    return opts->resend_ms ? (nng_duration)opts->resend_ms : RPC_CLIENT_RESEND_MS;
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
    ws_err tls_err = rpc_client_tls_check(opts);
    if (tls_err != WS_OK) {
        return tls_err;
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
                                rpc_client_resend_ms(opts))) != 0 ||
        (rv = rpc_dialer_set_new(c->sock, opts, c->metrics, &c->dialers)) != 0 ||
        (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, rpc_client_pipe_cb, c)) !=
            0 ||
        (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, rpc_client_pipe_cb, c)) !=
            0) {
        goto fail_opts;
    }
    if ((rv = rpc_dialer_set_start(c->dialers)) != 0) {
        goto fail_opts;
    }
    *out = c;
    return WS_OK;

fail_opts:
    nng_close(c->sock);
    rpc_dialer_set_free(c->dialers);
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
        for (rpc_client_slot *k = c->pending; k != NULL; k = k->next) {
            atomic_store(&k->abandon, true);
            nng_aio_cancel(k->aio);
        }
        struct timespec ts = ws_clock_mono_after(10);
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    rpc_client_slot *idle = c->free;
    c->free = NULL;
    c->n_free = 0;
    pthread_mutex_unlock(&c->mu);
    while (idle != NULL) {
        rpc_client_slot *k = idle;
        idle = k->next;
        rpc_client_slot_free(k);
    }
    /* If the close hangs (rpc_sock.h), c is kept whole: its pipe callback
     * may still run. */
    if (!ws__rpc_sock_close(c->sock, "rpc_client", c)) {
        return;
    }
    rpc_dialer_set_free(c->dialers); /* after the socket's last pipe event */
    for (int i = 0; i < RPC_CLIENT_METHOD_SLOTS; i++) {
        rpc_client_method *m = atomic_load(&c->methods[i]);
        if (m != NULL) {
            free(m->name);
            free(m);
        }
    }
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
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
    while (!rpc_dialer_set_any_up(c->dialers) && !c->closed) {
        int64_t now = rpc_client_now_ms();
        if (now >= until_ms) {
            break;
        }
        struct timespec ts = ws_clock_mono_after(until_ms - now);
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
    return rpc_dialer_set_any_up(c->dialers);
}

static ws_rpc_code rpc_client_code_from_nng(ws_rpc_client *c, int rv)
{
    bool closed, no_pipe;

    pthread_mutex_lock(&c->mu);
    closed = c->closed;
    no_pipe = !rpc_dialer_set_any_up(c->dialers);
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

/* Under k->mu: wait until k's call is over. If no pipe is connected for
 * RPC_CLIENT_CONNECT_GRACE_MS meanwhile (the server went away mid-call and
 * has not come back), give the call up -- cancel it, again every 20 ms in
 * case the cancel fell between the send and the receive -- and return true
 * ("lost"). */
static bool rpc_client_slot_wait_locked(ws_rpc_client *c, rpc_client_slot *k)
{
    int64_t no_pipe_since = -1;
    bool lost = false;

    while (!k->done) {
        /* The pipe callback counts the pipe before it signals k->cv under
         * k->mu, so a loss after this test still wakes the wait below. */
        if (rpc_dialer_set_any_up(c->dialers) && !lost) {
            no_pipe_since = -1;
            pthread_cond_wait(&k->cv, &k->mu);
            continue;
        }
        int64_t now = rpc_client_now_ms();
        if (!lost) {
            if (no_pipe_since < 0) {
                no_pipe_since = now;
            }
            if (now - no_pipe_since >= RPC_CLIENT_CONNECT_GRACE_MS) {
                lost = true;
                atomic_store(&k->abandon, true);
            }
        }
        if (lost) {
            pthread_mutex_unlock(&k->mu);
            nng_aio_cancel(k->aio);
            pthread_mutex_lock(&k->mu);
            if (k->done) {
                break;
            }
        }
        struct timespec ts = ws_clock_mono_after(20);
        pthread_cond_timedwait(&k->cv, &k->mu, &ts);
    }
    return lost;
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
    rpc_client_slot *k = NULL, *spare = NULL;
    nng_msg *m = NULL;
    ws_rpc_code code;
    bool lost, closed, up, reuse = false;
    size_t n;
    int rv;

    env.method = (char *)method;
    env.payload.data = (uint8_t *)payload;
    env.payload.len = payload_len;
    env.deadline_ms = deadline_ms;
    env.request_id = atomic_fetch_add(&c->next_id, 1);
    /* A caller working for a trace passes it on (rpc.proto, traceparent). */
    char traceparent[WS_TRACEPARENT_SIZE];
    if (ws_trace_current() != NULL) {
        ws_trace span; /* this call, a child span of the caller's trace */
        ws_trace_child(ws_trace_current(), &span);
        ws_trace_format(&span, traceparent);
        env.traceparent = traceparent;
    }
    n = webshop__v1__rpc_request__get_packed_size(&env);
    if (n > c->max_msg) {
        if (msg != NULL && msg_len > 0) {
            snprintf(msg, msg_len, "request of %zu bytes exceeds the limit of %zu", n,
                     c->max_msg);
        }
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    if ((rv = nng_msg_alloc(&m, n)) != 0) {
        return WS_RPC_RESOURCE_EXHAUSTED;
    }
    webshop__v1__rpc_request__pack(&env, nng_msg_body(m));

    /* A dialer nng stopped redialing is replaced first (rpc_dialer.h). */
    rpc_dialer_set_check(c->dialers);
    /* One critical section: a connected pipe, then a slot from the free
     * list, linked as pending so that close can cancel it. */
    pthread_mutex_lock(&c->mu);
    int64_t grace = start + RPC_CLIENT_CONNECT_GRACE_MS;
    up = rpc_client_wait_pipe_locked(c, grace < end ? grace : end);
    closed = c->closed;
    if (up && !closed && c->free != NULL) {
        k = c->free;
        rpc_client_slot_unlink(&c->free, k);
        c->n_free--;
        rpc_client_slot_link(&c->pending, k);
    }
    pthread_mutex_unlock(&c->mu);
    if (closed || !up) {
        nng_msg_free(m);
        if (closed) {
            rpc_client_set_msg(msg, msg_len, "client closed%s", "");
            return WS_RPC_CANCELLED;
        }
        rpc_client_set_msg(msg, msg_len, "no server connected at %s", c->first_url);
        return WS_RPC_UNAVAILABLE;
    }
    if (k == NULL) {
        if ((rv = rpc_client_slot_new(c, &spare)) != 0) {
            nng_msg_free(m);
            code = rpc_client_code_from_nng(c, rv);
            rpc_client_set_msg(msg, msg_len, "%s", nng_strerror(rv));
            return code;
        }
        pthread_mutex_lock(&c->mu);
        closed = c->closed;
        if (!closed) {
            k = spare;
            spare = NULL;
            rpc_client_slot_link(&c->pending, k);
        }
        pthread_mutex_unlock(&c->mu);
        if (closed) {
            rpc_client_slot_free(spare);
            nng_msg_free(m);
            rpc_client_set_msg(msg, msg_len, "client closed%s", "");
            return WS_RPC_CANCELLED;
        }
    }

    int64_t left = NNG_DURATION_INFINITE;
    if (end != INT64_MAX) {
        left = end - rpc_client_now_ms();
        if (left <= 0) {
            left = 1; /* 0 would mean "the socket's default" to nng */
        }
    }
    k->end_ms = end;
    k->stage = RPC_CLIENT_STAGE_SEND;
    k->done = false;
    k->rv = 0;
    atomic_store(&k->abandon, false);
    nng_aio_set_timeout(k->aio, (nng_duration)left);
    nng_aio_set_msg(k->aio, m);
    nng_ctx_send(k->ctx, k->aio); /* k belongs to nng until done */

    pthread_mutex_lock(&k->mu);
    lost = rpc_client_slot_wait_locked(c, k);
    rv = k->rv;
    pthread_mutex_unlock(&k->mu);
    m = NULL;
    if (rv == 0) {
        m = nng_aio_get_msg(k->aio);
        nng_aio_set_msg(k->aio, NULL);
        /* The callback may still be returning: let it finish before the
         * next call starts an operation on this aio. */
        nng_aio_wait(k->aio);
    }
    pthread_mutex_lock(&c->mu);
    rpc_client_slot_unlink(&c->pending, k);
    /* A slot whose call failed is not reused: its context may hold the
     * state of a request that was never answered. */
    reuse = rv == 0 && !c->closed && c->n_free < RPC_CLIENT_FREE_MAX;
    if (reuse) {
        rpc_client_slot_link(&c->free, k);
        c->n_free++;
    }
    pthread_mutex_unlock(&c->mu);
    if (!reuse) {
        rpc_client_slot_free(k);
    }
    if (rv != 0) {
        goto fail;
    }

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

/* The cached series of method, created on first use; NULL when the table
 * is full or out of memory (the caller then looks the series up itself). */
static rpc_client_method *rpc_client_method_get(ws_rpc_client *c, const char *method)
{
    int i;

    for (i = 0; i < RPC_CLIENT_METHOD_SLOTS; i++) {
        rpc_client_method *m = atomic_load_explicit(&c->methods[i], memory_order_acquire);
        if (m == NULL) {
            break;
        }
        if (strcmp(m->name, method) == 0) {
            return m;
        }
    }
    if (i == RPC_CLIENT_METHOD_SLOTS) {
        return NULL;
    }
    rpc_client_method *found = NULL;
    pthread_mutex_lock(&c->mu);
    for (i = 0; i < RPC_CLIENT_METHOD_SLOTS; i++) {
        rpc_client_method *m = atomic_load_explicit(&c->methods[i], memory_order_relaxed);
        if (m == NULL) {
            break;
        }
        if (strcmp(m->name, method) == 0) {
            found = m;
            break;
        }
    }
    if (found == NULL && i < RPC_CLIENT_METHOD_SLOTS) {
        char label[256], labels[300];
        rpc_client_method *m = calloc(1, sizeof(*m));
        if (m != NULL && (m->name = strdup(method)) != NULL) {
            rpc_client_label_escape(label, sizeof(label), method);
            snprintf(labels, sizeof(labels), "method=\"%s\"", label);
            m->latency = ws_histogram_get(
                c->metrics, "webshop_rpc_client_latency_seconds",
                "Duration of RPC calls, as the caller sees it.", labels, NULL, 0);
            atomic_store_explicit(&c->methods[i], m, memory_order_release);
            found = m;
        } else {
            free(m);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return found;
}

/* Count one finished call and its duration. */
static void rpc_client_record(ws_rpc_client *c, const char *method, ws_rpc_code code,
                              double seconds)
{
    char label[256], labels[512];
    rpc_client_method *m = rpc_client_method_get(c, method);

    if ((unsigned)code >= RPC_CLIENT_N_CODES) {
        code = WS_RPC_UNKNOWN;
    }
    if (m != NULL) {
        ws_counter *k = atomic_load_explicit(&m->calls[code], memory_order_acquire);
        if (k == NULL) {
            /* ws_counter_get returns the same series to racing threads. */
            rpc_client_label_escape(label, sizeof(label), method);
            snprintf(labels, sizeof(labels), "method=\"%s\",code=\"%s\"", label,
                     ws_rpc_code_name(code));
            k = ws_counter_get(c->metrics, "webshop_rpc_client_calls_total",
                               "RPC calls made, by method and status code.", labels);
            atomic_store_explicit(&m->calls[code], k, memory_order_release);
        }
        ws_counter_inc(k);
        ws_histogram_observe(m->latency, seconds);
        return;
    }
    rpc_client_label_escape(label, sizeof(label), method);
    snprintf(labels, sizeof(labels), "method=\"%s\",code=\"%s\"", label,
             ws_rpc_code_name(code));
    ws_counter_inc(ws_counter_get(c->metrics, "webshop_rpc_client_calls_total",
                                  "RPC calls made, by method and status code.", labels));
    snprintf(labels, sizeof(labels), "method=\"%s\"", label);
    ws_histogram_observe(ws_histogram_get(c->metrics,
                                          "webshop_rpc_client_latency_seconds",
                                          "Duration of RPC calls, as the caller sees it.",
                                          labels, NULL, 0),
                         seconds);
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

    rpc_client_record(c, method, code, ws_now_seconds() - t0);

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
