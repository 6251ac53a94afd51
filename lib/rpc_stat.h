/*
 * Counters of one nng dialer or listener, read from nng's statistics: what
 * the RPC runtime's watchdogs (rpc_probe.c for listeners, rpc_dialer.c for
 * dialers) use to tell an endpoint that still works from one that nng has
 * silently stopped (nanomsg/nng#1518). Private to the RPC runtime.
 *
 * nng 1.5.2's own nng_stat_find_dialer/nng_stat_find_listener ignore the id
 * below the top of the tree (nng_stat_find_scope recurses with
 * nng_stat_find, by name only): with two dialers on a socket, asking for
 * the second returns the first. So the scope is looked up here, by kind and
 * by its value, which nng sets to the endpoint's id (or, for a socket, by
 * its "id" statistic).
 */
#ifndef WS_RPC_STAT_H
#define WS_RPC_STAT_H

#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

/* The sum of the counters named in names (n of them; a missing one counts
 * 0) of the object of kind scope ("dialer", "listener", "pipe", "socket")
 * whose id is id,
 * from a fresh snapshot; -1 when nng has no such endpoint or keeps no
 * statistics. Any thread; takes a snapshot of every statistic of the
 * process (cheap for our handful of sockets, not for a hot path). */
int64_t ws__rpc_stat_sum(const char *scope, int id, const char *const *names, size_t n);

/* The same sum read from snap, a snapshot the caller took with
 * nng_stats_get (and frees): for reading several objects at one moment
 * without a snapshot each. */
int64_t ws__rpc_stat_sum_in(nng_stat *snap, const char *scope, int id,
                            const char *const *names, size_t n);

#endif
