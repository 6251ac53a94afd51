/*
 * The dialers of an RPC client and their replacement when nng stops
 * redialing one (see rpc_dialer.h for the nng bug). The set keeps, under
 * its own mutex, each dialer's current nng id, how many pipes it has (from
 * the socket's pipe events, matched by pipe id so that a pipe of a dialer
 * being replaced is still counted off), and what its last check saw.
 */
#include "rpc_dialer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/supplemental/tls/tls.h>

#include "clock.h"
#include "log.h"
#include "rpc_stat.h"
#include "rpc_tls.h"

typedef struct rpc_dialer {
    char *url;          /* owned */
    uint32_t id;        /* current nng dialer id, under mu */
    int pipes;          /* its pipes now, under mu */
    int64_t checked_ms; /* last check (monotonic), INT64_MIN never; under mu */
    int64_t attempts;   /* connect results at the last check, -1 unknown; under mu */
    bool checking;      /* a thread is checking it (without mu) */
} rpc_dialer;

typedef struct rpc_dialer_pipe {
    uint32_t pipe;
    size_t dialer; /* index into dialers */
} rpc_dialer_pipe;

struct rpc_dialer_set {
    nng_socket sock;
    ws_metrics *metrics;
    char *tls_cert, *tls_key, *tls_ca, *tls_server_name; /* owned; NULL: plain */
    pthread_mutex_t mu;
    rpc_dialer *dialers;
    size_t n;
    atomic_size_t n_up;     /* dialers with a pipe, written under mu */
    rpc_dialer_pipe *pipes; /* under mu */
    size_t n_pipes, cap_pipes;
};

/* A new dialer on url, not started, configured for TLS when s is: 0 and *d,
 * or an nng error. */
static int rpc_dialer_create(rpc_dialer_set *s, const char *url, nng_dialer *d)
{
    int rv = nng_dialer_create(d, s->sock, url);
    if (rv != 0 || s->tls_cert == NULL) {
        return rv;
    }
    nng_tls_config *cfg;
    if (ws__rpc_tls_config_new(0, s->tls_cert, s->tls_key, s->tls_ca, s->tls_server_name,
                               &cfg) != WS_OK) {
        nng_dialer_close(*d);
        return NNG_EINVAL;
    }
    rv = nng_dialer_set_ptr(*d, NNG_OPT_TLS_CONFIG, cfg); /* the dialer holds it */
    nng_tls_config_free(cfg);
    if (rv != 0) {
        nng_dialer_close(*d);
    }
    return rv;
}

static char *rpc_dialer_dup(const char *s, bool *oom)
{
    char *d = s != NULL ? strdup(s) : NULL;
    *oom = *oom || (s != NULL && d == NULL);
    return d;
}

int rpc_dialer_set_new(nng_socket sock, const ws_rpc_client_opts *opts,
                       ws_metrics *metrics, rpc_dialer_set **out)
{
    rpc_dialer_set *s = calloc(1, sizeof(*s));
    bool oom = false;

    if (s == NULL || (s->dialers = calloc(opts->n_urls, sizeof(*s->dialers))) == NULL ||
        pthread_mutex_init(&s->mu, NULL) != 0) {
        if (s != NULL) {
            free(s->dialers);
        }
        free(s);
        return NNG_ENOMEM;
    }
    s->sock = sock;
    s->metrics = metrics;
    atomic_init(&s->n_up, 0);
    if (opts->tls_cert != NULL) {
        s->tls_cert = rpc_dialer_dup(opts->tls_cert, &oom);
        s->tls_key = rpc_dialer_dup(opts->tls_key, &oom);
        s->tls_ca = rpc_dialer_dup(opts->tls_ca, &oom);
        s->tls_server_name = rpc_dialer_dup(opts->tls_server_name, &oom);
    }
    for (size_t i = 0; i < opts->n_urls && !oom; i++) {
        rpc_dialer *d = &s->dialers[s->n];
        if ((d->url = rpc_dialer_dup(opts->urls[i], &oom)) != NULL) {
            d->checked_ms = INT64_MIN;
            d->attempts = -1;
            s->n++;
        }
    }
    if (oom) {
        rpc_dialer_set_free(s);
        return NNG_ENOMEM;
    }
    *out = s;
    return 0;
}

int rpc_dialer_set_start(rpc_dialer_set *s)
{
    int rv = 0;
    for (size_t i = 0; i < s->n && rv == 0; i++) {
        rpc_dialer *d = &s->dialers[i];
        nng_dialer nd;
        /* The id is known before the dialer starts, so its first pipe
         * finds it. NONBLOCK: the peer may come up later. */
        if ((rv = rpc_dialer_create(s, d->url, &nd)) == 0) {
            pthread_mutex_lock(&s->mu);
            d->id = (uint32_t)nng_dialer_id(nd);
            pthread_mutex_unlock(&s->mu);
            rv = nng_dialer_start(nd, NNG_FLAG_NONBLOCK);
        }
    }
    return rv;
}

void rpc_dialer_set_free(rpc_dialer_set *s)
{
    if (s == NULL) {
        return;
    }
    for (size_t i = 0; i < s->n; i++) {
        free(s->dialers[i].url);
    }
    free(s->dialers);
    free(s->pipes);
    free(s->tls_cert);
    free(s->tls_key);
    free(s->tls_ca);
    free(s->tls_server_name);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Under mu: the index of the dialer whose id is id, or s->n. */
static size_t rpc_dialer_find_locked(const rpc_dialer_set *s, uint32_t id)
{
    size_t i = 0;
    while (i < s->n && s->dialers[i].id != id) {
        i++;
    }
    return i;
}

/* Under mu: count the dialers with a pipe into n_up. */
static void rpc_dialer_count_up_locked(rpc_dialer_set *s)
{
    size_t up = 0;
    for (size_t i = 0; i < s->n; i++) {
        up += s->dialers[i].pipes > 0;
    }
    atomic_store(&s->n_up, up);
}

void rpc_dialer_set_pipe(rpc_dialer_set *s, nng_pipe p, bool added)
{
    uint32_t pid = (uint32_t)nng_pipe_id(p);
    uint32_t did = (uint32_t)nng_dialer_id(nng_pipe_dialer(p));

    pthread_mutex_lock(&s->mu);
    if (added) {
        size_t i = rpc_dialer_find_locked(s, did);
        if (i < s->n && s->n_pipes == s->cap_pipes) {
            size_t cap = s->cap_pipes ? s->cap_pipes * 2 : 4;
            rpc_dialer_pipe *grown = realloc(s->pipes, cap * sizeof(*grown));
            if (grown != NULL) {
                s->pipes = grown;
                s->cap_pipes = cap;
            }
        }
        if (i < s->n && s->n_pipes < s->cap_pipes) {
            s->pipes[s->n_pipes++] = (rpc_dialer_pipe){.pipe = pid, .dialer = i};
            s->dialers[i].pipes++;
        }
    } else {
        for (size_t k = 0; k < s->n_pipes; k++) {
            if (s->pipes[k].pipe == pid) {
                s->dialers[s->pipes[k].dialer].pipes--;
                s->pipes[k] = s->pipes[--s->n_pipes];
                break;
            }
        }
    }
    rpc_dialer_count_up_locked(s);
    pthread_mutex_unlock(&s->mu);
}

bool rpc_dialer_set_all_up(const rpc_dialer_set *s)
{
    return atomic_load(&s->n_up) >= s->n;
}

bool rpc_dialer_set_any_up(const rpc_dialer_set *s)
{
    return atomic_load(&s->n_up) > 0;
}

/* How many connect attempts the dialer id has finished, whatever their
 * result, or -1 when nng keeps no statistics. */
static int64_t rpc_dialer_attempts(uint32_t id)
{
    static const char *const names[] = {"connect", "refused", "disconnect", "canceled",
                                        "other",   "timeout", "proto",      "auth",
                                        "oom",     "reject"};
    return ws__rpc_stat_sum("dialer", (int)id, names, sizeof(names) / sizeof(names[0]));
}

/* Close dialer i (id old) and dial its URL again. */
static void rpc_dialer_replace(rpc_dialer_set *s, size_t i, uint32_t old)
{
    rpc_dialer *d = &s->dialers[i];
    nng_dialer nd, od = NNG_DIALER_INITIALIZER;
    int rv = rpc_dialer_create(s, d->url, &nd);

    if (rv == 0) {
        pthread_mutex_lock(&s->mu);
        d->id = (uint32_t)nng_dialer_id(nd);
        d->attempts = -1;
        pthread_mutex_unlock(&s->mu);
    }
    od.id = old;
    nng_dialer_close(od);
    if (rv == 0) {
        rv = nng_dialer_start(nd, NNG_FLAG_NONBLOCK);
    }
    if (rv != 0) {
        /* The old dialer is gone either way: the next check tries again. */
        ws_log_warn("rpc_dialer_restart_failed", "url=%s error=%s", d->url,
                    nng_strerror(rv));
        return;
    }
    char labels[512];
    snprintf(labels, sizeof(labels), "url=\"%s\"", d->url);
    ws_counter_inc(ws_counter_get(s->metrics, "webshop_rpc_client_dialer_restarts_total",
                                  "Dialers replaced because they stopped redialing "
                                  "(nng#1518).",
                                  labels));
    ws_log_warn("rpc_dialer_restarted", "url=%s reason=no_redial", d->url);
}

void rpc_dialer_set_check(rpc_dialer_set *s)
{
    if (rpc_dialer_set_all_up(s)) {
        return;
    }
    int64_t now = ws_clock_mono_ms();
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->n; i++) {
        rpc_dialer *d = &s->dialers[i];
        if (d->pipes > 0 || d->checking ||
            (d->checked_ms != INT64_MIN && now - d->checked_ms < RPC_DIALER_CHECK_MS)) {
            continue;
        }
        d->checking = true;
        uint32_t id = d->id;
        pthread_mutex_unlock(&s->mu);
        int64_t attempts = rpc_dialer_attempts(id);
        pthread_mutex_lock(&s->mu);
        /* Wedged: down at both checks (a dialer that connected in between
         * has counted it) and not one attempt finished since the last. The
         * id must not have changed under us (only this thread replaces). */
        bool wedged = d->pipes == 0 && d->id == id && d->checked_ms != INT64_MIN &&
                      attempts >= 0 && attempts == d->attempts;
        d->checked_ms = now;
        d->attempts = attempts;
        if (wedged) {
            pthread_mutex_unlock(&s->mu);
            rpc_dialer_replace(s, i, id);
            pthread_mutex_lock(&s->mu);
            d->checked_ms = ws_clock_mono_ms();
        }
        d->checking = false;
    }
    pthread_mutex_unlock(&s->mu);
}
