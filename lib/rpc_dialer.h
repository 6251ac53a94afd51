/*
 * The dialers of an RPC client (rpc_client.c), private to it: one per URL,
 * each replaced when nng has stopped redialing it.
 *
 * nng 1.5.2 (Debian 12) has the client side of nanomsg/nng#1518 (fixed in
 * 1.6.0 by 9248ed74): when the server closes a connection before the
 * dialer has written its 8-byte SP header, the write fails with EPIPE,
 * which nng maps to NNG_ECLOSED and hands to the dialer, which takes it
 * for "dialer closed" and never dials again -- every later call of the
 * client ends UNAVAILABLE for ever. Over ipc:// one server that accepts and
 * closes (a backend SIGKILLed with our connection in its accept queue, a
 * listener re-opened by the server's probe) does it every time (measured:
 * a dialer with RECONNMAXT 20 ms connected once in 5 s to a unix listener
 * that accepts and closes; over tcp:// 813 times). It is what left a chaos
 * run's order service unable to reach the inventory for the rest of the
 * run (1,293 cancels never confirmed).
 *
 * So each dialer is watched: while it has no pipe, a caller that finds
 * fewer pipes than dialers asks rpc_dialer_set_check(), which at most every
 * RPC_DIALER_CHECK_MS per dialer reads the dialer's connect results in
 * nng's statistics (connects, refusals, errors of every kind: a live dialer
 * adds one per attempt, at least every RECONNMAXT). A dialer with no pipe
 * whose count did not move between two checks is wedged: it is closed and
 * a new one dialed on the same URL (rpc_dialer_restarted,
 * webshop_rpc_client_dialer_restarts_total{url}). Nothing is replaced while
 * it has a pipe or keeps trying; no thread of its own: a client nobody
 * calls needs no connection.
 */
#ifndef WS_RPC_DIALER_H
#define WS_RPC_DIALER_H

#include <stdbool.h>
#include <stddef.h>

#include <nng/nng.h>

#include "metrics.h"
#include "rpc_client.h"

#define RPC_DIALER_CHECK_MS 1000 /* a down dialer's attempts are read at most every */

typedef struct rpc_dialer_set rpc_dialer_set;

/* A set for the URLs of opts on sock (TLS configuration from opts when it
 * has one, already checked by the caller), counting restarts in metrics;
 * nothing dialed yet. 0 and *out, or NNG_ENOMEM. */
int rpc_dialer_set_new(nng_socket sock, const ws_rpc_client_opts *opts,
                       ws_metrics *metrics, rpc_dialer_set **out /* OUT */);

/* Dial every URL (non-blocking: the peer may come up later). Call once the
 * socket's pipe callback can reach s. 0 or an nng error (the dialers made
 * so far end with the socket). */
int rpc_dialer_set_start(rpc_dialer_set *s);

/* After nng_close of the socket (its pipe callbacks may still report to
 * the set until then). s may be NULL. */
void rpc_dialer_set_free(rpc_dialer_set *s);

/* A pipe of the socket was added (ADD_POST) or removed (REM_POST); from the
 * socket's pipe callback, any nng thread. Pipes of unknown dialers are
 * ignored. */
void rpc_dialer_set_pipe(rpc_dialer_set *s, nng_pipe p, bool added);

/* Whether every dialer has a pipe: lock-free, for the caller's fast path. */
bool rpc_dialer_set_all_up(const rpc_dialer_set *s);

/* Whether some dialer has a pipe (the client can send): lock-free; a pipe
 * event is counted before rpc_dialer_set_pipe returns. */
bool rpc_dialer_set_any_up(const rpc_dialer_set *s);

/* Replace the dialers that stopped dialing (see the top). Any thread, not
 * holding the client's locks (closing a dialer runs pipe callbacks); cheap
 * when no dialer is due for a check. */
void rpc_dialer_set_check(rpc_dialer_set *s);

#endif
