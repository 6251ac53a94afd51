/*
 * The listener probe of an RPC server (rpc_server.c), private to it.
 *
 * nng 1.5.2 (Debian 12) has nanomsg/nng#1518, fixed in 1.6.0 by 9248ed74:
 * when a peer is gone before the SP header exchange ends, the transport's
 * write fails with EPIPE, which nng maps to NNG_ECLOSED and passes to the
 * socket's accept; the socket takes it for "listener closed" and never
 * accepts again, so every later client hangs. One local process that
 * connects and closes (or a client SIGKILLed mid-dial) makes an ipc://
 * server deaf; tcp:// and tls+tcp:// are hit by a peer whose FIN is
 * followed by a RST (tls+tcp: after its ClientHello). The transport goes
 * on accepting and negotiating; only the socket above has stopped taking
 * its pipes.
 *
 * So a thread dials each listener like a client every interval and checks,
 * within the bound, that the socket took the connection: for ipc and tcp
 * the probe exchanges SP headers as a req0 peer and waits for the pipe's
 * ADD_POST on the server's socket (rpc_probe_pipe_added; then closes: an
 * ordinary short-lived pipe that never sends a request, so it is no caller
 * and no call metric counts it); for tls+tcp the probe has no certificate,
 * so the server refuses its handshake, and the refusal must show in the
 * listener's accept results in nng's statistics. After RPC_PROBE_MISSES
 * misses in a row the listener is closed and opened again on its bound URL
 * (the host's listener_open), logged as rpc_listener_restarted and counted
 * in webshop_rpc_server_listener_restarts_total{url}. Two misses, not one:
 * closing a listener also closes its connections, which a merely slow
 * server must not suffer for one late probe. Nothing is logged per probe.
 * A wedged listener's negotiated-but-never-taken pipes are leaked by nng
 * when it is closed (about 8 KiB per wedge).
 *
 * Between rounds the thread also watches each listener's "other" errors
 * in nng's statistics every RPC_PROBE_WATCH_MS. The wedge's NNG_ECLOSED is
 * counted there; so are errors nng backs off from for 100 ms, and the
 * errors of the listener's pipes (every peer that disconnects raises it:
 * about 1,200 a second with clients coming and going in a test loop). A
 * rise is probed at once with RPC_PROBE_SUSPECT_MS as the bound, and
 * RPC_PROBE_MISSES such misses in a row replace the listener
 * (reason=accept_stopped): a wedge costs about a watch step and two short
 * bounds instead of a round and two long ones, and a healthy server pays a
 * probe (one connection and an 8-byte exchange) per watch step at most
 * while clients disconnect. The probe's own pipe counts one such error when
 * it closes, and moves the mark by one (an idle ipc server: one rise in
 * 2 s, not one per step). That matters for short-lived clients: a
 * webshopctl that exits while its dialer redials can wedge a server, and
 * the next webshopctl, with a 1 s deadline, found it deaf (CI,
 * e2e_security).
 */
#ifndef WS_RPC_PROBE_H
#define WS_RPC_PROBE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "metrics.h"

#define RPC_PROBE_MS         1000 /* a round of probes every */
#define RPC_PROBE_BOUND_MS   1000 /* a probe's handshake must complete within */
#define RPC_PROBE_MISSES     2    /* misses in a row that replace a listener */
#define RPC_PROBE_WATCH_MS   100  /* the listeners' accept errors are read every */
#define RPC_PROBE_SUSPECT_MS 300  /* bound of the probe that follows a rise */

/* One nng listener of the server as the probe sees it: set up by the
 * server's start; from then on l, down and misses belong to the probe
 * thread, which replaces l when it stops completing handshakes. id and
 * prev_id are read by any thread serving a request (the caller's identity
 * is the listener's): the current listener's id and its predecessor's,
 * whose last requests may still be answered while the replacement takes
 * over. */
typedef struct rpc_server_listener {
    const char *url;     /* the bound URL (port fixed); the server's */
    nng_tls_config *cfg; /* a TLS listener's server config, else NULL; borrowed */
    nng_listener l;
    _Atomic int id;         /* nng_listener_id(l); 0 before start */
    _Atomic int prev_id;    /* the replaced listener's id, 0 if none */
    _Atomic unsigned added; /* pipes the socket took from l (ADD_POST) */
    bool down;              /* l closed, its replacement failed: retry */
    int misses;             /* probes in a row that saw no handshake */
    int64_t others;         /* its "other" accept results when last read, -1 unknown */
} rpc_server_listener;

/* What the probe needs of its server. */
typedef struct rpc_probe_host {
    /* The listener probed i-th (the plain one first, then the identity
     * ones); NULL past the last. */
    rpc_server_listener *(*listener_at)(void *ctx, size_t i);
    /* Open x anew on x->url after the probe closed it (options and TLS
     * config as at start; x->l and x->id set): 0 or an nng error. */
    int (*listener_open)(void *ctx, rpc_server_listener *x);
    void *ctx;
    ws_metrics *metrics;
    bool any_tls; /* some listener is tls+tcp: the probe needs a client config */
} rpc_probe_host;

/* Embedded in the server (zeroed), which outlives every pipe callback. */
typedef struct rpc_probe {
    rpc_probe_host host;
    int interval_ms;
    int bound_ms;
    pthread_t thread;
    bool started;        /* the thread runs: stop joins it */
    nng_aio *aio;        /* the probe's one aio; canceled by stop */
    nng_tls_config *tls; /* client config of TLS probes (no certificate) */
    bool sync;           /* mu and cv are initialised */
    pthread_mutex_t mu;  /* stop and starting an op on aio */
    pthread_cond_t cv;   /* stop, and a pipe added, wake the thread */
    bool stop;           /* under mu */
} rpc_probe;

/* The lock: 0 or an nng error. Before any pipe callback can run. */
int rpc_probe_init(rpc_probe *p);

/* Change the pace (tests); values <= 0 keep the current one, which is
 * RPC_PROBE_MS and RPC_PROBE_BOUND_MS unless set. Before start. */
void rpc_probe_set_pace(rpc_probe *p, int interval_ms, int bound_ms);

/* The thread, its aio and TLS client config: 0 or an nng error. The first
 * round comes one interval later. */
int rpc_probe_start(rpc_probe *p, const rpc_probe_host *host);

/* On ADD_POST of a pipe from x (an nng thread): counted, the probe woken. */
void rpc_probe_pipe_added(rpc_probe *p, rpc_server_listener *x);

/* Stop the thread, canceling a probe in progress (so that the server's
 * close does not wait out its bound). Idempotent. */
void rpc_probe_stop(rpc_probe *p);

/* After the server's socket is closed (no pipe callback runs any more). */
void rpc_probe_fini(rpc_probe *p);

#endif
