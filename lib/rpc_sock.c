/* Closing an nng socket within a bound; see rpc_sock.h. */
#define _DEFAULT_SOURCE /* on_exit */
#include "rpc_sock.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

/* One close in progress: shared by the closing thread and the waiter; the
 * last of the two to let go frees it. */
typedef struct rpc_sock_closer {
    nng_socket sock;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;      /* nng_close returned */
    bool abandoned; /* the waiter gave up: the thread frees */
} rpc_sock_closer;

/* What stuck closes left behind: reachable for ever, so a leak checker
 * does not report what must not be freed. */
typedef struct rpc_sock_kept {
    void *keep;
    struct rpc_sock_kept *next;
} rpc_sock_kept;

static pthread_mutex_t rpc_sock_kept_mu = PTHREAD_MUTEX_INITIALIZER;
static rpc_sock_kept *rpc_sock_kept_head;

static void rpc_sock_closer_free(rpc_sock_closer *k)
{
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

static void *rpc_sock_closer_main(void *arg)
{
    rpc_sock_closer *k = arg;
    nng_close(k->sock);
    pthread_mutex_lock(&k->mu);
    k->done = true;
    bool abandoned = k->abandoned;
    pthread_cond_signal(&k->cv);
    pthread_mutex_unlock(&k->mu);
    if (abandoned) {
        rpc_sock_closer_free(k);
    }
    return NULL;
}

/* on_exit handler, registered after nng's own atexit(nng_fini) and so run
 * before it: nng_fini closes every socket and waits for the reaper, which
 * a stuck close has blocked for good, so the process would never end. It
 * ends here with its status instead. */
static void rpc_sock_exit_now(int status, void *arg)
{
    (void)arg;
    fflush(NULL);
    _exit(status);
}

static pthread_once_t rpc_sock_exit_once = PTHREAD_ONCE_INIT;

static void rpc_sock_exit_register(void)
{
    on_exit(rpc_sock_exit_now, NULL);
}

static void rpc_sock_keep(void *keep)
{
    rpc_sock_kept *n = malloc(sizeof(*n));
    if (n == NULL) {
        return; /* still never freed; a leak checker may say so */
    }
    n->keep = keep;
    pthread_mutex_lock(&rpc_sock_kept_mu);
    n->next = rpc_sock_kept_head;
    rpc_sock_kept_head = n;
    pthread_mutex_unlock(&rpc_sock_kept_mu);
}

bool ws__rpc_sock_close(nng_socket sock, const char *what, void *keep)
{
    rpc_sock_closer *k = calloc(1, sizeof(*k));
    pthread_t th;

    if (k == NULL) {
        goto unbounded;
    }
    if (pthread_mutex_init(&k->mu, NULL) != 0) {
        free(k);
        goto unbounded;
    }
    if (ws_clock_cond_init(&k->cv) != 0) {
        pthread_mutex_destroy(&k->mu);
        free(k);
        goto unbounded;
    }
    k->sock = sock;
    if (pthread_create(&th, NULL, rpc_sock_closer_main, k) != 0) {
        rpc_sock_closer_free(k);
        goto unbounded;
    }
    pthread_detach(th);

    struct timespec until = ws_clock_mono_after(RPC_SOCK_CLOSE_MS);
    pthread_mutex_lock(&k->mu);
    while (!k->done && pthread_cond_timedwait(&k->cv, &k->mu, &until) == 0) {
    }
    bool done = k->done;
    k->abandoned = !done;
    pthread_mutex_unlock(&k->mu);
    if (done) {
        rpc_sock_closer_free(k);
        return true;
    }
    rpc_sock_keep(keep);
    pthread_once(&rpc_sock_exit_once, rpc_sock_exit_register);
    ws_log_error("rpc_socket_close_stuck", "socket=%s bound_ms=%d cause=%s effect=%s",
                 what, RPC_SOCK_CLOSE_MS,
                 "nng 1.5.2 closed a pipe during a receive (nanomsg/nng#1636)",
                 "its memory is kept; later closes in this process may hang too");
    return false;

unbounded:
    nng_close(sock); /* no memory or thread to spare: waited for as before */
    return true;
}
