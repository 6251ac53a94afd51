/*
 * Closing an nng socket of the RPC runtime within a bound. Private to the
 * RPC runtime (rpc_server.c, rpc_client.c) and its tests.
 *
 * nng 1.5.2 (Debian 12) can hang nng_close for ever. Its tcp, tls and ipc
 * transports read a message as a header and then a body, and the header's
 * callback starts the body's read without checking whether the pipe is
 * closing (fixed for tcp in nng 1.6.0 by a1bc737b, nanomsg/nng#1636). When
 * a pipe is closed between the two, the read is refused by the closed aio
 * without a callback, so the protocol's receive on that pipe never ends;
 * the reaper thread waits for it in the pipe's stop, and nng_close waits
 * for the reaper. It takes a pipe closed while its peer is sending: a
 * server closed under load, a client closed while answers arrive. Seen in
 * CI and here in rpc_test (a replica closed under load, about 1 run in 30
 * with the CPU oversubscribed): the close never returned. Once the reaper
 * is stuck, every later close in the process hangs as well.
 *
 * So a socket is closed on a thread of its own and waited for at most
 * RPC_SOCK_CLOSE_MS: a process shutting down then finishes instead of
 * hanging until something kills it. A close that did not return is logged
 * (rpc_socket_close_stuck, error), and its owner must keep every object
 * nng may still call back into (pipe-notify arguments, aios): `keep` is
 * parked where it stays reachable and is never freed. nng 1.5.2 also
 * registers atexit(nng_fini), which waits for the same reaper: after a
 * stuck close the process ends through _exit with its exit status (an
 * on_exit handler that runs before nng's), skipping later atexit work.
 */
#ifndef WS_RPC_SOCK_H
#define WS_RPC_SOCK_H

#include <stdbool.h>

#include <nng/nng.h>

#define RPC_SOCK_CLOSE_MS 2000 /* nng_close must return within */

/* nng_close(sock), waited for at most RPC_SOCK_CLOSE_MS: true once closed.
 * False when it did not return in time: the thread that runs it is left
 * blocked, the event is logged with what (the socket's role, e.g.
 * "rpc_server") and keep is parked for good; the caller must not free keep
 * nor anything nng holds of it. Falls back to a plain nng_close when no
 * thread can be started. */
bool ws__rpc_sock_close(nng_socket sock, const char *what, void *keep);

#endif
