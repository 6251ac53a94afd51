/* The listener probe of an RPC server; see rpc_probe.h. */
#include "rpc_probe.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "log.h"
#include "rpc_stat.h"

int rpc_probe_init(rpc_probe *p)
{
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        return NNG_ENOMEM;
    }
    if (ws_clock_cond_init(&p->cv) != 0) {
        pthread_mutex_destroy(&p->mu);
        return NNG_ENOMEM;
    }
    p->sync = true;
    return 0;
}

void rpc_probe_set_pace(rpc_probe *p, int interval_ms, int bound_ms)
{
    if (interval_ms > 0) {
        p->interval_ms = interval_ms;
    }
    if (bound_ms > 0) {
        p->bound_ms = bound_ms;
    }
}

void rpc_probe_fini(rpc_probe *p)
{
    rpc_probe_stop(p);
    if (p->sync) {
        pthread_cond_destroy(&p->cv);
        pthread_mutex_destroy(&p->mu);
        p->sync = false;
    }
}

void rpc_probe_pipe_added(rpc_probe *p, rpc_server_listener *x)
{
    atomic_fetch_add_explicit(&x->added, 1, memory_order_release);
    if (p->sync) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

typedef enum probe_op {
    PROBE_DIAL,
    PROBE_SEND,
    PROBE_RECV,
} probe_op;

/* Run one operation on p->aio and wait for it, until until_ms
 * (monotonic): its nng result, NNG_ECANCELED once close has begun. The
 * start happens under probe_mu, so close either sees it and cancels it or
 * has stopped it from starting. */
static int probe_run(rpc_probe *p, probe_op op, nng_stream_dialer *d, nng_stream *s,
                     void *buf, size_t len, int64_t until_ms)
{
    nng_aio *aio = p->aio;
    int64_t left = until_ms - ws_clock_mono_ms();
    pthread_mutex_lock(&p->mu);
    if (p->stop) {
        pthread_mutex_unlock(&p->mu);
        return NNG_ECANCELED;
    }
    nng_aio_set_timeout(aio, left > 0 ? (nng_duration)left : 1);
    if (op == PROBE_DIAL) {
        nng_stream_dialer_dial(d, aio);
    } else {
        nng_iov iov = {.iov_buf = buf, .iov_len = len};
        nng_aio_set_iov(aio, 1, &iov);
        if (op == PROBE_SEND) {
            nng_stream_send(s, aio);
        } else {
            nng_stream_recv(s, aio);
        }
    }
    pthread_mutex_unlock(&p->mu);
    nng_aio_wait(aio);
    return nng_aio_result(aio);
}

/* Exchange SP headers over s (ipc, tcp) or start the TLS handshake: 0 when
 * the server answered in time, else the nng error. */
static int probe_talk(rpc_probe *p, nng_stream *s, bool tls, int64_t until_ms)
{
    /* req0 (0x30): a peer rep0 accepts; the pipe ends when we close. */
    uint8_t hdr[8] = {0, 'S', 'P', 0, 0x00, 0x30, 0, 0}, in[8];
    size_t got = 0;
    int rv;
    if (tls) {
        /* Drives the handshake until the server refuses it (or the bound
         * passes); whether the socket saw the refusal is told by the
         * statistics, whatever the error here. */
        rv = probe_run(p, PROBE_RECV, NULL, s, in, 1, until_ms);
        return rv == NNG_ECANCELED ? rv : 0;
    }
    for (size_t sent = 0; sent < sizeof(hdr); sent += nng_aio_count(p->aio)) {
        rv = probe_run(p, PROBE_SEND, NULL, s, hdr + sent, sizeof(hdr) - sent, until_ms);
        if (rv != 0) {
            return rv;
        }
    }
    /* All 8 bytes, so that our close is a FIN after a finished exchange. */
    while (got < sizeof(in)) {
        rv = probe_run(p, PROBE_RECV, NULL, s, in + got, sizeof(in) - got, until_ms);
        if (rv != 0) {
            return rv;
        }
        got += nng_aio_count(p->aio);
    }
    return 0;
}

/* Wait until x's socket took a pipe from it since *before was read, or
 * until until_ms: whether it did. */
static bool probe_wait_added(rpc_probe *p, rpc_server_listener *x, unsigned before,
                             int64_t until_ms)
{
    struct timespec until = ws_clock_mono_after(until_ms - ws_clock_mono_ms());
    bool added;
    pthread_mutex_lock(&p->mu);
    while (!(added = atomic_load_explicit(&x->added, memory_order_acquire) != before) &&
           !p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &until) == 0) {
    }
    pthread_mutex_unlock(&p->mu);
    return added;
}

/* How many connections x's socket has taken from x's listener, accepted
 * or refused (nng's per-listener statistics), or -1 when nng keeps none.
 * The core counts every accept result of a live listener once; a wedged
 * one reports none, though its transport still negotiates. */
static int64_t probe_listener_results(rpc_server_listener *x)
{
    static const char *const names[] = {"accept",  "disconnect", "canceled", "other",
                                        "timeout", "proto",      "auth",     "oom"};
    return ws__rpc_stat_sum("listener", nng_listener_id(x->l), names,
                            sizeof(names) / sizeof(names[0]));
}

/* A TLS listener's results, polled until they differ from before or
 * until_ms: whether they did. The probe has no certificate, so its pipe
 * never reaches the socket: the core's count of the refusal is the sign
 * that it still accepts. */
static bool probe_wait_results(rpc_probe *p, rpc_server_listener *x, int64_t before,
                               int64_t until_ms)
{
    for (;;) {
        if (probe_listener_results(x) != before) {
            return true; /* read outside probe_mu: nng takes its stats lock */
        }
        pthread_mutex_lock(&p->mu);
        bool over = p->stop || ws_clock_mono_ms() >= until_ms;
        if (!over) {
            struct timespec step = ws_clock_mono_after(10);
            pthread_cond_timedwait(&p->cv, &p->mu, &step);
        }
        pthread_mutex_unlock(&p->mu);
        if (over) {
            return false;
        }
    }
}

/* Probe x once, within bound_ms: 1 if it completed a handshake in time (or
 * could not be probed for lack of memory: no reason to blame it), 0 if
 * not, -1 when close has begun. */
static int probe_once(rpc_probe *p, rpc_server_listener *x, int bound_ms)
{
    int64_t until = ws_clock_mono_ms() + bound_ms;
    unsigned before = atomic_load_explicit(&x->added, memory_order_acquire);
    int64_t results = x->cfg != NULL ? probe_listener_results(x) : 0;
    if (results < 0) {
        return 1; /* nng built without statistics: a TLS listener cannot be told */
    }
    nng_stream_dialer *d = NULL;
    int rv = nng_stream_dialer_alloc(&d, x->url);
    if (rv == 0 && x->cfg != NULL) {
        rv = nng_stream_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, p->tls);
    }
    if (rv != 0) {
        nng_stream_dialer_free(d);
        return 1;
    }
    rv = probe_run(p, PROBE_DIAL, d, NULL, NULL, 0, until);
    if (rv == 0) {
        nng_stream *s = nng_aio_get_output(p->aio, 0);
        rv = probe_talk(p, s, x->cfg != NULL, until);
        /* The transport negotiates even when the socket above has stopped
         * taking its pipes (that is the wedge): only the socket's ADD_POST
         * tells. Waited for before closing, so the pipe is still there. */
        bool took = rv != 0          ? false
                    : x->cfg == NULL ? probe_wait_added(p, x, before, until)
                                     : probe_wait_results(p, x, results, until);
        if (rv == 0 && !took) {
            rv = p->stop ? NNG_ECANCELED : NNG_ETIMEDOUT;
        }
        nng_stream_free(s); /* closes it */
    }
    nng_stream_dialer_free(d);
    return rv == NNG_ECANCELED ? -1 : rv == 0;
}

/* Close x's listener (with its connections; an ipc socket file goes with
 * it) and listen again on its bound URL. On failure (the port not yet
 * free) x is down and the next round tries again. */
static void probe_replace(rpc_probe *p, rpc_server_listener *x, const char *reason)
{
    int old = atomic_load_explicit(&x->id, memory_order_relaxed);
    if (!x->down) {
        nng_listener_close(x->l);
    }
    int rv = p->host.listener_open(p->host.ctx, x);
    x->down = rv != 0;
    if (rv != 0) {
        ws_log_warn("rpc_listener_restart_failed", "url=%s error=%s", x->url,
                    nng_strerror(rv));
        return;
    }
    atomic_store_explicit(&x->prev_id, old, memory_order_release);
    x->misses = 0;
    char labels[512];
    snprintf(labels, sizeof(labels), "url=\"%s\"", x->url);
    ws_counter_inc(ws_counter_get(p->host.metrics,
                                  "webshop_rpc_server_listener_restarts_total",
                                  "Listeners replaced because they stopped completing "
                                  "handshakes (nng#1518).",
                                  labels));
    ws_log_warn("rpc_listener_restarted", "url=%s reason=%s", x->url, reason);
}

static const char *const probe_others[] = {"other"};

/* x's "other" errors (see rpc_probe.h), -1 when unknown. */
static int64_t probe_listener_others(rpc_server_listener *x)
{
    return x->down ? -1
                   : ws__rpc_stat_sum("listener", nng_listener_id(x->l), probe_others, 1);
}

/* After a probe of x that the socket took: the pipe it closed counts one
 * "other" error (a TLS probe is refused before any pipe and counts none),
 * which must not read as a rise. The mark is moved by that one instead of
 * read again after the probe: a read would also swallow a wedge that came
 * during the probe (seen under ASan with the CPU oversubscribed: a rise
 * from a client's disconnect, a probe that passed, the wedge meanwhile,
 * and nothing more to see until the next round). */
static void probe_own_error(rpc_server_listener *x)
{
    if (x->cfg == NULL && x->others >= 0) {
        x->others++;
    }
}

/* One look at every listener's "other" errors; a listener where they rose
 * is probed at once, and replaced when RPC_PROBE_MISSES probes in a row
 * miss. False once close began. */
static bool probe_watch(rpc_probe *p)
{
    rpc_server_listener *x;
    nng_stat *snap;
    if (nng_stats_get(&snap) != 0) {
        return true; /* nothing to compare at this step */
    }
    bool going = true;
    for (size_t i = 0; going && (x = p->host.listener_at(p->host.ctx, i)) != NULL; i++) {
        if (strncmp(x->url, "inproc://", 9) == 0 || x->down) {
            continue;
        }
        /* One copy of nng's statistics per step, not one per listener:
         * this runs ten times a second in every server. */
        int64_t now =
            ws__rpc_stat_sum_in(snap, "listener", nng_listener_id(x->l), probe_others, 1);
        bool rose = now > x->others && x->others >= 0;
        x->others = now;
        if (!rose) {
            continue;
        }
        int alive = 0;
        for (int k = 0; k < RPC_PROBE_MISSES && alive == 0; k++) {
            alive = probe_once(p, x, RPC_PROBE_SUSPECT_MS);
        }
        if (alive < 0) {
            going = false;
        } else if (!alive) {
            probe_replace(p, x, "accept_stopped");
            x->others = probe_listener_others(x);
        } else {
            probe_own_error(x);
        }
    }
    nng_stats_free(snap);
    return going;
}

/* One round: every listener probed once. Returns false once close began;
 * *missed tells whether a listener is suspect (probed again soon). */
static bool probe_round(rpc_probe *p, bool *missed /* OUT */)
{
    rpc_server_listener *x;
    *missed = false;
    for (size_t i = 0; (x = p->host.listener_at(p->host.ctx, i)) != NULL; i++) {
        if (strncmp(x->url, "inproc://", 9) == 0) {
            continue; /* no transport handshake, nothing to wedge */
        }
        if (x->down) {
            probe_replace(p, x, "no_handshake");
            *missed = *missed || x->down;
            x->others = probe_listener_others(x);
            continue;
        }
        int alive = probe_once(p, x, p->bound_ms);
        if (alive < 0) {
            return false;
        }
        if (alive) {
            x->misses = 0;
            probe_own_error(x);
        } else if (++x->misses >= RPC_PROBE_MISSES) {
            probe_replace(p, x, "no_handshake");
            x->others = probe_listener_others(x);
        } else {
            *missed = true;
        }
    }
    return true;
}

/* Waits ms or until close: false once close has begun. */
static bool probe_pause(rpc_probe *p, int ms)
{
    struct timespec until = ws_clock_mono_after(ms);
    pthread_mutex_lock(&p->mu);
    while (!p->stop && pthread_cond_timedwait(&p->cv, &p->mu, &until) == 0) {
    }
    bool stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    return !stop;
}

/* The first round one interval after start (a new listener is not wedged,
 * and the first clients' handshakes need not share the CPU with ours); a
 * suspect is probed again soon: it is closed after a second miss, so a
 * wedge costs about an interval and two bounds. */
static void *probe_main(void *arg)
{
    rpc_probe *p = arg;
    rpc_server_listener *x;
    bool missed = false;
    for (size_t i = 0; (x = p->host.listener_at(p->host.ctx, i)) != NULL; i++) {
        x->others = probe_listener_others(x); /* inproc ones are never watched */
    }
    int64_t next = ws_clock_mono_ms() + p->interval_ms;
    for (;;) {
        int64_t left = next - ws_clock_mono_ms();
        if (!probe_pause(p, left < RPC_PROBE_WATCH_MS ? (left > 0 ? (int)left : 0)
                                                      : RPC_PROBE_WATCH_MS) ||
            !probe_watch(p)) {
            break;
        }
        if (ws_clock_mono_ms() < next) {
            continue;
        }
        if (!probe_round(p, &missed)) {
            break;
        }
        next = ws_clock_mono_ms() + (missed ? p->bound_ms / 4 : p->interval_ms);
    }
    return NULL;
}

int rpc_probe_start(rpc_probe *p, const rpc_probe_host *host)
{
    int rv;
    p->host = *host;
    p->interval_ms = p->interval_ms > 0 ? p->interval_ms : RPC_PROBE_MS;
    p->bound_ms = p->bound_ms > 0 ? p->bound_ms : RPC_PROBE_BOUND_MS;
    if ((rv = nng_aio_alloc(&p->aio, NULL, NULL)) != 0) {
        goto fail;
    }
    if (p->host.any_tls &&
        ((rv = nng_tls_config_alloc(&p->tls, NNG_TLS_MODE_CLIENT)) != 0 ||
         (rv = nng_tls_config_auth_mode(p->tls, NNG_TLS_AUTH_MODE_NONE)) != 0)) {
        goto fail;
    }
    if (pthread_create(&p->thread, NULL, probe_main, p) != 0) {
        rv = NNG_ENOMEM;
        goto fail;
    }
    p->started = true;
    return 0;

fail:
    if (p->tls != NULL) {
        nng_tls_config_free(p->tls);
        p->tls = NULL;
    }
    nng_aio_free(p->aio);
    p->aio = NULL;
    return rv;
}

void rpc_probe_stop(rpc_probe *p)
{
    if (!p->started) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    nng_aio_cancel(p->aio);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    p->started = false;
    nng_aio_free(p->aio);
    p->aio = NULL;
    if (p->tls != NULL) {
        nng_tls_config_free(p->tls);
        p->tls = NULL;
    }
}
