/*
 * The bare-component ceilings; see ceiling.h. Everything runs inside the
 * bench process, so a ceiling pays for its own client as the shop's load
 * does: the two figures stay comparable on a machine with 2 cores.
 */
#include "ceiling.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <civetweb.h>
#include <mosquitto.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "load.h"
#include "tls.h"

/* ---- the echo rep server ------------------------------------------------- */

const char *bench_transport_name(bench_transport tr)
{
    return tr == BENCH_IPC ? "ipc" : tr == BENCH_TLS ? "tls+tcp" : "tcp";
}

typedef struct nng_run nng_run;

/* One context of a ceiling: a server context echoing, or a client context
 * of bench_nng_run. */
typedef struct nng_side {
    nng_run *run;
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;   /* the pending operation is a send */
    double started; /* when the current round trip began (client) */
    uint64_t ops;   /* round trips completed (client) */
    uint64_t errors;
    bench_hist hist; /* touched only by this context's callback */
} nng_side;

/* A rep socket on a fresh loopback address whose contexts send every
 * request straight back from nng's callback thread. */
typedef struct nng_echo {
    nng_socket sock;
    nng_side *ctxs; /* n, owned */
    int n;
    char url[160]; /* the bound address, to dial */
    bool ipc_file; /* url names a socket file, removed at close */
} nng_echo;

/* Server context: receive, send the same message back, repeat. */
static void nng_rep_cb(void *arg)
{
    nng_side *s = arg;
    int rv = nng_aio_result(s->aio);
    if (s->sending) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(s->aio));
            if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
                return;
            }
        }
        s->sending = false;
        nng_ctx_recv(s->ctx, s->aio);
        return;
    }
    if (rv != 0) {
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
            return;
        }
        nng_ctx_recv(s->ctx, s->aio);
        return;
    }
    s->sending = true;
    nng_aio_set_msg(s->aio, nng_aio_get_msg(s->aio));
    nng_ctx_send(s->ctx, s->aio);
}

/* Listen on a fresh address of tr as lib/rpc_server.c does (Nagle off on
 * tcp; port 0, read back); fills e->url. nng's error code. */
static int nng_echo_listen(nng_echo *e, bench_transport tr)
{
    static atomic_uint seq;
    if (tr == BENCH_TLS) {
        return bench_tls_listen(e->sock, e->url, sizeof(e->url));
    }
    if (tr == BENCH_IPC) {
        const char *tmp = getenv("TMPDIR");
        if (tmp == NULL || tmp[0] == '\0' || strlen(tmp) > 60) {
            tmp = "/tmp";
        }
        snprintf(e->url, sizeof(e->url), "ipc://%s/webshop-bench-%d-%u.ipc", tmp,
                 (int)getpid(), atomic_fetch_add(&seq, 1));
        unlink(e->url + 6);
        e->ipc_file = true;
        return nng_listen(e->sock, e->url, NULL, 0);
    }
    nng_listener l;
    int port = 0;
    int rv;
    if ((rv = nng_listener_create(&l, e->sock, "tcp://127.0.0.1:0")) != 0) {
        return rv;
    }
    if ((rv = nng_listener_set_bool(l, NNG_OPT_TCP_NODELAY, true)) != 0 ||
        (rv = nng_listener_start(l, 0)) != 0 ||
        (rv = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port)) != 0) {
        nng_listener_close(l);
        return rv;
    }
    snprintf(e->url, sizeof(e->url), "tcp://127.0.0.1:%d", port);
    return 0;
}

static void nng_echo_close(nng_echo *e)
{
    for (int i = 0; e->ctxs != NULL && i < e->n; i++) {
        if (e->ctxs[i].aio != NULL) {
            nng_aio_stop(e->ctxs[i].aio);
        }
    }
    nng_close(e->sock);
    for (int i = 0; e->ctxs != NULL && i < e->n; i++) {
        nng_aio_free(e->ctxs[i].aio);
    }
    free(e->ctxs);
    e->ctxs = NULL;
    if (e->ipc_file) {
        unlink(e->url + 6);
        e->ipc_file = false;
    }
}

/* Open e on tr with `contexts` echoing contexts. Returns 0, or -1 with a
 * message on stderr (e closed). */
static int nng_echo_open(nng_echo *e, bench_transport tr, int contexts)
{
    memset(e, 0, sizeof(*e));
    e->sock = (nng_socket)NNG_SOCKET_INITIALIZER;
    int rv = nng_rep0_open(&e->sock);
    if (rv != 0) {
        fprintf(stderr, "bench: nng rep: %s\n", nng_strerror(rv));
        return -1;
    }
    e->ctxs = calloc((size_t)contexts, sizeof(*e->ctxs));
    e->n = e->ctxs != NULL ? contexts : 0;
    if (e->ctxs == NULL || (rv = nng_echo_listen(e, tr)) != 0) {
        fprintf(stderr, "bench: nng listen %s: %s\n", e->url,
                e->ctxs == NULL ? "out of memory" : nng_strerror(rv));
        nng_echo_close(e);
        return -1;
    }
    for (int i = 0; i < contexts; i++) {
        if ((rv = nng_ctx_open(&e->ctxs[i].ctx, e->sock)) != 0 ||
            (rv = nng_aio_alloc(&e->ctxs[i].aio, nng_rep_cb, &e->ctxs[i])) != 0) {
            fprintf(stderr, "bench: nng contexts: %s\n", nng_strerror(rv));
            nng_echo_close(e);
            return -1;
        }
        nng_ctx_recv(e->ctxs[i].ctx, e->ctxs[i].aio);
    }
    return 0;
}

/* ---- the echo server in a process of its own --------------------------------- */

int bench_echo_serve(bench_transport tr, int contexts)
{
    nng_echo e;
    if (contexts < 1 || nng_echo_open(&e, tr, contexts) != 0) {
        return 1;
    }
    printf("%s\n", e.url);
    fflush(stdout);
    char buf[64];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n == 0 || (n < 0 && errno != EINTR)) {
            break;
        }
    }
    nng_echo_close(&e);
    nng_fini();
    return 0;
}

/* A child running bench_echo_serve. */
typedef struct echo_proc {
    pid_t pid;     /* 0 when none */
    int in_fd;     /* the write end of its stdin: closing it stops the child */
    char url[160]; /* where it listens */
} echo_proc;

/* Read the child's first line (its URL) from fd into p->url, within 10 s. */
static int echo_proc_read_url(echo_proc *p, int fd)
{
    size_t len = 0;
    double until = bench_now() + 10.0;
    while (len + 1 < sizeof(p->url) && bench_now() < until) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int ms = (int)((until - bench_now()) * 1000) + 1;
        if (poll(&pfd, 1, ms) <= 0) {
            continue;
        }
        ssize_t n = read(fd, p->url + len, 1);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            break;
        }
        if (p->url[len] == '\n') {
            p->url[len] = '\0';
            return len > 0 ? 0 : -1;
        }
        len++;
    }
    p->url[len] = '\0';
    return -1;
}

static void echo_proc_stop(echo_proc *p)
{
    if (p->pid <= 0) {
        return;
    }
    close(p->in_fd);
    double until = bench_now() + 5.0;
    while (waitpid(p->pid, NULL, WNOHANG) == 0) {
        if (bench_now() >= until) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
            break;
        }
        struct timespec ts = {.tv_nsec = 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (strncmp(p->url, "ipc://", 6) == 0) {
        unlink(p->url + 6); /* gone already unless the child was killed */
    }
    p->pid = 0;
}

/* Run this program as `--echo-server TR CONTEXTS` and learn its URL. */
static int echo_proc_start(echo_proc *p, bench_transport tr, int contexts)
{
    memset(p, 0, sizeof(*p));
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    int in[2], out[2];
    if (n <= 0 || pipe2(in, O_CLOEXEC) != 0) {
        return -1;
    }
    exe[n] = '\0';
    if (pipe2(out, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        return -1;
    }
    char nctx[16];
    snprintf(nctx, sizeof(nctx), "%d", contexts);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        const char *argv[] = {exe, "--echo-server", bench_transport_name(tr), nctx, NULL};
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->pid = pid > 0 ? pid : 0;
    p->in_fd = in[1];
    int rc = pid > 0 ? echo_proc_read_url(p, out[0]) : -1;
    close(out[0]);
    if (rc != 0) {
        fprintf(stderr, "bench: the echo server process did not start\n");
        if (p->pid > 0) {
            echo_proc_stop(p);
        } else {
            close(p->in_fd);
        }
        return -1;
    }
    return 0;
}

/* ---- civetweb ------------------------------------------------------------ */

#define CIVETWEB_BODY 400

/* One call slot of the RPC ceiling's handlers: a req context, its aio and
 * a condition variable, reused call after call (lib/rpc_client.c's shape). */
typedef struct rpc_slot {
    nng_ctx ctx;
    nng_aio *aio;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool sending;          /* the pending operation is the send; the caller sets it
                              before the send, the callback clears it after */
    bool done;             /* under mu */
    int rv;                /* under mu, once done */
    struct rpc_slot *next; /* free list, under bench_civetweb.mu */
} rpc_slot;

struct bench_civetweb {
    struct mg_context *ctx;
    char response[256 + CIVETWEB_BODY]; /* headers and body, written at once */
    size_t response_len;
    /* With one RPC per request (bench_civetweb_rpc_start); else rpc false. */
    bool rpc;
    echo_proc echo;
    nng_socket req;
    int msg_size;
    pthread_mutex_t mu;
    rpc_slot *free; /* idle slots, under mu */
};

static const char civetweb_unavailable[] =
    "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n"
    "Content-Type: application/json\r\n\r\n{}";

static int civetweb_bench_handler(struct mg_connection *conn, void *arg)
{
    bench_civetweb *s = arg;
    mg_write(conn, s->response, s->response_len);
    return 200;
}

/* aio callback, on an nng thread: chain the receive onto a good send; else
 * (or once the answer is in) wake the caller. */
static void rpc_slot_cb(void *arg)
{
    rpc_slot *k = arg;
    int rv = nng_aio_result(k->aio);
    if (k->sending) {
        if (rv == 0) {
            k->sending = false;
            nng_ctx_recv(k->ctx, k->aio);
            return;
        }
        nng_msg_free(nng_aio_get_msg(k->aio));
        nng_aio_set_msg(k->aio, NULL);
    }
    pthread_mutex_lock(&k->mu);
    k->rv = rv;
    k->done = true;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

/* A free slot, or a new one; NULL on failure. */
static rpc_slot *rpc_slot_take(bench_civetweb *s)
{
    pthread_mutex_lock(&s->mu);
    rpc_slot *k = s->free;
    if (k != NULL) {
        s->free = k->next;
    }
    pthread_mutex_unlock(&s->mu);
    if (k != NULL) {
        return k;
    }
    k = calloc(1, sizeof(*k));
    if (k == NULL) {
        return NULL;
    }
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    if (nng_aio_alloc(&k->aio, rpc_slot_cb, k) != 0 ||
        nng_ctx_open(&k->ctx, s->req) != 0) {
        nng_aio_free(k->aio);
        pthread_cond_destroy(&k->cv);
        pthread_mutex_destroy(&k->mu);
        free(k);
        return NULL;
    }
    nng_aio_set_timeout(k->aio, 5000);
    return k;
}

static void rpc_slot_give(bench_civetweb *s, rpc_slot *k)
{
    pthread_mutex_lock(&s->mu);
    k->next = s->free;
    s->free = k;
    pthread_mutex_unlock(&s->mu);
}

/* One round trip of msg (ownership taken) on k; nng's result. */
static int rpc_slot_call(rpc_slot *k, nng_msg *msg)
{
    k->done = false;
    k->sending = true;
    nng_aio_set_msg(k->aio, msg);
    nng_ctx_send(k->ctx, k->aio);
    pthread_mutex_lock(&k->mu);
    while (!k->done) {
        pthread_cond_wait(&k->cv, &k->mu);
    }
    int rv = k->rv;
    pthread_mutex_unlock(&k->mu);
    if (rv == 0) {
        nng_msg_free(nng_aio_get_msg(k->aio));
    }
    return rv;
}

static int civetweb_rpc_handler(struct mg_connection *conn, void *arg)
{
    bench_civetweb *s = arg;
    rpc_slot *k = rpc_slot_take(s);
    nng_msg *m = NULL;
    bool ok = k != NULL && nng_msg_alloc(&m, (size_t)s->msg_size) == 0;
    if (ok) {
        memset(nng_msg_body(m), 'x', (size_t)s->msg_size);
        ok = rpc_slot_call(k, m) == 0;
    }
    if (k != NULL) {
        rpc_slot_give(s, k);
    }
    if (!ok) {
        mg_write(conn, civetweb_unavailable, sizeof(civetweb_unavailable) - 1);
        return 503;
    }
    mg_write(conn, s->response, s->response_len);
    return 200;
}

/* The 400-byte JSON answer of both ceilings, headers included. */
static void civetweb_response_fill(bench_civetweb *s)
{
    char body[CIVETWEB_BODY + 1];
    /* A JSON array of products, padded to exactly 400 bytes. */
    int n = snprintf(body, sizeof(body),
                     "[{\"id\":1,\"name\":\"Apple\",\"price\":100,\"balance\":200},"
                     "{\"id\":2,\"name\":\"Banana\",\"price\":200,\"balance\":200},"
                     "{\"id\":3,\"name\":\"Cherry\",\"price\":300,\"balance\":200}");
    while (n < CIVETWEB_BODY - 1) {
        body[n++] = ' ';
    }
    body[n++] = ']';
    body[n] = '\0';
    s->response_len = (size_t)snprintf(s->response, sizeof(s->response),
                                       "HTTP/1.1 200 OK\r\n"
                                       "Content-Length: %d\r\n"
                                       "Content-Type: application/json\r\n"
                                       "Cache-Control: no-store\r\n"
                                       "\r\n%s",
                                       CIVETWEB_BODY, body);
}

/* Start civetweb for s with lib/http.c's options and route /bench to
 * handler; 0 with *port, -1. */
static int civetweb_launch(bench_civetweb *s, int threads, mg_request_handler handler,
                           int *port)
{
    /* Port 0: the kernel picks a free port, read back from civetweb (no
     * port is chosen first and raced for). */
    char nthreads[16];
    snprintf(nthreads, sizeof(nthreads), "%d", threads);
    const char *options[] = {"listening_ports",
                             "127.0.0.1:0",
                             "num_threads",
                             nthreads,
                             "request_timeout_ms",
                             "10000",
                             "enable_keep_alive",
                             "yes",
                             "keep_alive_timeout_ms",
                             "5000",
                             "max_request_size",
                             "16384",
                             "enable_directory_listing",
                             "no",
                             "tcp_nodelay",
                             "1",
                             NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    s->ctx = mg_start(&cb, s, options);
    struct mg_server_port sp;
    if (s->ctx != NULL && mg_get_server_ports(s->ctx, 1, &sp) == 1) {
        *port = sp.port;
    } else if (s->ctx != NULL) {
        mg_stop(s->ctx);
        s->ctx = NULL;
    }
    if (s->ctx == NULL) {
        return -1;
    }
    mg_set_request_handler(s->ctx, "/bench", handler, s);
    return 0;
}

bench_civetweb *bench_civetweb_start(int threads, int *port)
{
    bench_civetweb *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    civetweb_response_fill(s);
    if (civetweb_launch(s, threads, civetweb_bench_handler, port) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

bench_civetweb *bench_civetweb_rpc_start(int threads, bench_transport tr, int contexts,
                                         int size, int *port)
{
    bench_civetweb *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    civetweb_response_fill(s);
    s->rpc = true;
    s->msg_size = size;
    s->req = (nng_socket)NNG_SOCKET_INITIALIZER;
    pthread_mutex_init(&s->mu, NULL);
    if (echo_proc_start(&s->echo, tr, contexts) != 0) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    int rv = nng_req0_open(&s->req);
    if (rv == 0) {
        /* Blocking dial: the ceiling starts once the pipe is up. */
        rv = tr == BENCH_TLS ? bench_tls_dial(s->req, s->echo.url)
                             : nng_dial(s->req, s->echo.url, NULL, 0);
    }
    if (rv != 0) {
        fprintf(stderr, "bench: nng dial %s: %s\n", s->echo.url, nng_strerror(rv));
        bench_civetweb_stop(s);
        return NULL;
    }
    if (civetweb_launch(s, threads, civetweb_rpc_handler, port) != 0) {
        bench_civetweb_stop(s);
        return NULL;
    }
    return s;
}

void bench_civetweb_stop(bench_civetweb *s)
{
    if (s == NULL) {
        return;
    }
    if (s->ctx != NULL) {
        mg_stop(s->ctx); /* every handler has returned: all slots are free */
    }
    if (s->rpc) {
        for (rpc_slot *k = s->free; k != NULL; k = k->next) {
            nng_aio_stop(k->aio);
        }
        nng_close(s->req);
        while (s->free != NULL) {
            rpc_slot *k = s->free;
            s->free = k->next;
            nng_aio_free(k->aio);
            pthread_cond_destroy(&k->cv);
            pthread_mutex_destroy(&k->mu);
            free(k);
        }
        echo_proc_stop(&s->echo);
        pthread_mutex_destroy(&s->mu);
    }
    free(s);
}

/* ---- nng req/rep ---------------------------------------------------------- */

struct nng_run {
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active; /* client contexts still looping; under mu */
};

static void nng_run_finish(nng_run *r)
{
    pthread_mutex_lock(&r->mu);
    r->active--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Client context: send, await the answer, record, repeat until stopped. */
static void nng_req_cb(void *arg)
{
    nng_side *s = arg;
    nng_run *r = s->run;
    int rv = nng_aio_result(s->aio);
    if (s->sending) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(s->aio));
            s->errors++;
            nng_run_finish(r);
            return;
        }
        s->sending = false;
        nng_ctx_recv(s->ctx, s->aio);
        return;
    }
    if (rv != 0) {
        s->errors++;
        nng_run_finish(r);
        return;
    }
    nng_msg *msg = nng_aio_get_msg(s->aio);
    if (atomic_load(&r->stop)) {
        nng_msg_free(msg);
        nng_run_finish(r);
        return;
    }
    double now = bench_now();
    s->ops++;
    bench_hist_record(&s->hist, (uint64_t)((now - s->started) * 1e9));
    s->started = now;
    s->sending = true;
    nng_aio_set_msg(s->aio, msg);
    nng_ctx_send(s->ctx, s->aio);
}

/* Start every client context with a first message of size bytes. */
static void nng_run_kick(nng_run *run, nng_side *cli, int contexts, int size)
{
    pthread_mutex_lock(&run->mu);
    run->active = contexts;
    pthread_mutex_unlock(&run->mu);
    for (int i = 0; i < contexts; i++) {
        nng_msg *m = NULL;
        if (nng_msg_alloc(&m, (size_t)size) != 0) {
            nng_run_finish(run);
            continue;
        }
        memset(nng_msg_body(m), 'x', (size_t)size);
        cli[i].sending = true;
        cli[i].started = bench_now();
        nng_aio_set_msg(cli[i].aio, m);
        nng_ctx_send(cli[i].ctx, cli[i].aio);
    }
}

/* Sleep until `seconds` after t0, stop the run and wait (at most 5 s) for
 * every client context to end at its next answer; returns the stop time. */
static double nng_run_stop(nng_run *run, double t0, double seconds)
{
    double end = t0 + seconds;
    while (bench_now() < end) {
        double d = end - bench_now();
        struct timespec sl = {.tv_sec = (time_t)d,
                              .tv_nsec = (long)((d - (time_t)d) * 1e9)};
        nanosleep(&sl, NULL);
    }
    atomic_store(&run->stop, true);
    double t1 = bench_now();
    pthread_mutex_lock(&run->mu);
    while (run->active > 0 && bench_now() < t1 + 5.0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 50 * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&run->cv, &run->mu, &until);
    }
    pthread_mutex_unlock(&run->mu);
    return t1;
}

int bench_nng_run(bench_transport tr, int contexts, int size, double seconds,
                  bench_ceiling *out)
{
    memset(out, 0, sizeof(*out));
    bench_hist_init(&out->hist);
    nng_run run;
    memset(&run, 0, sizeof(run));
    atomic_init(&run.stop, false);
    pthread_mutex_init(&run.mu, NULL);
    pthread_cond_init(&run.cv, NULL);
    nng_echo echo;
    nng_socket req = NNG_SOCKET_INITIALIZER;
    nng_side *cli = calloc((size_t)contexts, sizeof(*cli));
    bool echo_open = false;
    int rc = -1;
    int rv;
    if (cli == NULL || nng_echo_open(&echo, tr, contexts) != 0) {
        goto done;
    }
    echo_open = true;
    if ((rv = nng_req0_open(&req)) != 0 || (rv = nng_dial(req, echo.url, NULL, 0)) != 0) {
        fprintf(stderr, "bench: nng %s: %s\n", echo.url, nng_strerror(rv));
        goto done;
    }
    for (int i = 0; i < contexts; i++) {
        cli[i].run = &run;
        bench_hist_init(&cli[i].hist);
        if ((rv = nng_ctx_open(&cli[i].ctx, req)) != 0 ||
            (rv = nng_aio_alloc(&cli[i].aio, nng_req_cb, &cli[i])) != 0) {
            fprintf(stderr, "bench: nng contexts: %s\n", nng_strerror(rv));
            goto done;
        }
    }
    double t0 = bench_now();
    nng_run_kick(&run, cli, contexts, size);
    double t1 = nng_run_stop(&run, t0, seconds);
    for (int i = 0; i < contexts; i++) {
        out->ops += cli[i].ops;
        out->errors += cli[i].errors;
        bench_hist_merge(&out->hist, &cli[i].hist);
    }
    out->elapsed = t1 - t0;
    out->per_sec = out->elapsed > 0 ? (double)out->ops / out->elapsed : 0;
    rc = 0;
done:
    for (int i = 0; cli != NULL && i < contexts; i++) {
        if (cli[i].aio != NULL) {
            nng_aio_stop(cli[i].aio);
        }
    }
    nng_close(req);
    for (int i = 0; cli != NULL && i < contexts; i++) {
        nng_aio_free(cli[i].aio);
    }
    if (echo_open) {
        nng_echo_close(&echo);
    }
    free(cli);
    pthread_cond_destroy(&run.cv);
    pthread_mutex_destroy(&run.mu);
    return rc;
}

/* ---- Mosquitto QoS 1 ------------------------------------------------------ */

typedef struct mqtt_run {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char topic[96];
    bool subscribed;      /* under mu */
    bool connected_pub;   /* under mu */
    uint64_t received;    /* under mu */
    double last_received; /* under mu */
    bench_hist hist;      /* under mu */
} mqtt_run;

static void mqtt_cond_wait(mqtt_run *r, double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long ns = until.tv_nsec + (long)(seconds * 1e9);
    until.tv_sec += ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&r->cv, &r->mu, &until);
}

static void mqtt_sub_on_connect(struct mosquitto *m, void *arg, int rc)
{
    mqtt_run *r = arg;
    if (rc == 0) {
        mosquitto_subscribe(m, NULL, r->topic, 1);
    }
}

static void mqtt_sub_on_subscribe(struct mosquitto *m, void *arg, int mid, int n,
                                  const int *granted)
{
    (void)m;
    (void)mid;
    mqtt_run *r = arg;
    pthread_mutex_lock(&r->mu);
    r->subscribed = n > 0 && granted[0] == 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void mqtt_sub_on_message(struct mosquitto *m, void *arg,
                                const struct mosquitto_message *msg)
{
    (void)m;
    mqtt_run *r = arg;
    double now = bench_now();
    double sent = 0;
    if (msg->payloadlen >= (int)sizeof(sent)) {
        memcpy(&sent, msg->payload, sizeof(sent));
    }
    pthread_mutex_lock(&r->mu);
    r->received++;
    r->last_received = now;
    if (sent > 0 && now >= sent) {
        bench_hist_record(&r->hist, (uint64_t)((now - sent) * 1e9));
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void mqtt_pub_on_connect(struct mosquitto *m, void *arg, int rc)
{
    (void)m;
    mqtt_run *r = arg;
    pthread_mutex_lock(&r->mu);
    r->connected_pub = rc == 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

int bench_mqtt_run(const char *host, int port, const char *user, const char *password,
                   int window, int size, double seconds, bench_ceiling *out)
{
    memset(out, 0, sizeof(*out));
    bench_hist_init(&out->hist);
    mqtt_run r;
    memset(&r, 0, sizeof(r));
    bench_hist_init(&r.hist);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    snprintf(r.topic, sizeof(r.topic), "bench/%d/qos1", (int)getpid());
    int rc = -1;
    char *payload =
        calloc(1, (size_t)size < sizeof(double) ? sizeof(double) : (size_t)size);
    struct mosquitto *pub = mosquitto_new(NULL, true, &r);
    struct mosquitto *sub = mosquitto_new(NULL, true, &r);
    bool pub_loop = false;
    bool sub_loop = false;
    if (payload == NULL || pub == NULL || sub == NULL || bench_tls_mosq(pub) != 0 ||
        bench_tls_mosq(sub) != 0) {
        goto done;
    }
    if (user != NULL && user[0] != '\0') {
        mosquitto_username_pw_set(pub, user, password);
        mosquitto_username_pw_set(sub, user, password);
    }
    mosquitto_max_inflight_messages_set(pub, (unsigned)window);
    mosquitto_int_option(pub, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_int_option(sub, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_callback_set(sub, mqtt_sub_on_connect);
    mosquitto_subscribe_callback_set(sub, mqtt_sub_on_subscribe);
    mosquitto_message_callback_set(sub, mqtt_sub_on_message);
    mosquitto_connect_callback_set(pub, mqtt_pub_on_connect);
    int mrc;
    if ((mrc = mosquitto_connect(sub, host, port, 60)) != MOSQ_ERR_SUCCESS ||
        (mrc = mosquitto_connect(pub, host, port, 60)) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench: mqtt %s:%d: %s\n", host, port, mosquitto_strerror(mrc));
        goto done;
    }
    sub_loop = mosquitto_loop_start(sub) == MOSQ_ERR_SUCCESS;
    pub_loop = mosquitto_loop_start(pub) == MOSQ_ERR_SUCCESS;
    if (!sub_loop || !pub_loop) {
        goto done;
    }
    double ready_by = bench_now() + 5.0;
    pthread_mutex_lock(&r.mu);
    while ((!r.subscribed || !r.connected_pub) && bench_now() < ready_by) {
        mqtt_cond_wait(&r, 0.05);
    }
    bool ready = r.subscribed && r.connected_pub;
    pthread_mutex_unlock(&r.mu);
    if (!ready) {
        fprintf(stderr, "bench: mqtt %s:%d: no connection or subscription in 5 s\n", host,
                port);
        goto done;
    }
    uint64_t sent = 0;
    double t0 = bench_now();
    double end = t0 + seconds;
    for (;;) {
        pthread_mutex_lock(&r.mu);
        while (sent - r.received >= (uint64_t)window && bench_now() < end) {
            mqtt_cond_wait(&r, 0.05);
        }
        pthread_mutex_unlock(&r.mu);
        double now = bench_now();
        if (now >= end) {
            break;
        }
        memcpy(payload, &now, sizeof(now));
        if (mosquitto_publish(pub, NULL, r.topic, size, payload, 1, false) !=
            MOSQ_ERR_SUCCESS) {
            out->errors++;
            continue;
        }
        sent++;
    }
    /* Let what is in flight arrive (bounded), so the rate counts deliveries. */
    double drain_by = bench_now() + 3.0;
    pthread_mutex_lock(&r.mu);
    while (r.received < sent && bench_now() < drain_by) {
        mqtt_cond_wait(&r, 0.05);
    }
    out->ops = r.received;
    out->elapsed = (r.last_received > t0 ? r.last_received : bench_now()) - t0;
    bench_hist_merge(&out->hist, &r.hist);
    pthread_mutex_unlock(&r.mu);
    if (sent > out->ops) {
        out->errors += sent - out->ops;
    }
    out->per_sec = out->elapsed > 0 ? (double)out->ops / out->elapsed : 0;
    rc = 0;
done:
    if (pub != NULL) {
        mosquitto_disconnect(pub);
        if (pub_loop) {
            mosquitto_loop_stop(pub, false);
        }
        mosquitto_destroy(pub);
    }
    if (sub != NULL) {
        mosquitto_disconnect(sub);
        if (sub_loop) {
            mosquitto_loop_stop(sub, false);
        }
        mosquitto_destroy(sub);
    }
    free(payload);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    return rc;
}
