/*
 * The ceilings the shop is measured against, taken on the same machine in
 * the same run: a bare civetweb handler answering a 400-byte JSON body; the
 * same handler making one nng req/rep round trip to a bare echo server
 * first (tcp and ipc), the ceiling of a route that makes one RPC; bare nng
 * req/rep round trips with many contexts on one socket; and bare Mosquitto
 * QoS 1 throughput from one publisher to one subscriber with a window of
 * messages in flight. Each is the best any shop code built on those
 * components could do here.
 */
#ifndef BENCH_CEILING_H
#define BENCH_CEILING_H

#include <stdint.h>

#include "hist.h"

/* The nng transports a ceiling can use: loopback TCP, a Unix socket, or
 * mutual TLS over loopback TCP (tls.h; only with --tls). */
typedef enum bench_transport {
    BENCH_TCP,
    BENCH_IPC,
    BENCH_TLS,
} bench_transport;

/* "tcp", "ipc" or "tls+tcp". */
const char *bench_transport_name(bench_transport tr);

/* The front's civetweb settings (front/main.c --http-threads default,
 * lib/http.c options): the civetweb ceilings run with the same, so they
 * bound what the front could do with its configuration. */
#define BENCH_FRONT_HTTP_THREADS 64

/* The shop's RPC servers' default (lib/service.c --rpc-contexts). */
#define BENCH_RPC_CONTEXTS 16

/* A running civetweb ceiling server; see bench_civetweb_start. */
typedef struct bench_civetweb bench_civetweb;

/*
 * Start a civetweb server on 127.0.0.1 at a free port with `threads` worker
 * threads and the front's options (keep-alive, Nagle off, 10 s request
 * timeout, 16 KiB header cap), answering GET /bench with 400 bytes of JSON.
 * Returns NULL on failure; *port (OUT) is its port.
 */
bench_civetweb *bench_civetweb_start(int threads, int *port);

/*
 * The same server, whose /bench handler first makes one nng req/rep round
 * trip of `size` bytes to a bare echo rep server over transport tr, then
 * answers the same 400 bytes (503 if the round trip failed). The echo
 * server runs in a process of its own (bench_echo_serve), as the order
 * service does, with `contexts` contexts echoing from nng's callback
 * thread, as the shop's RPC servers run their handlers (--rpc-workers 0);
 * the handler waits on a reused context, aio and condition variable per
 * call, as lib/rpc_client.c does. The best a route that makes one RPC and
 * does nothing else can do with the front's settings. Returns NULL on
 * failure (message on stderr); *port (OUT).
 */
bench_civetweb *bench_civetweb_rpc_start(int threads, bench_transport tr, int contexts,
                                         int size, int *port);

/*
 * The echo server process: this program run as `--echo-server tcp|ipc
 * CONTEXTS` listens on a fresh loopback address, prints it as one line on
 * stdout, echoes until its stdin closes, and returns the exit status.
 */
int bench_echo_serve(bench_transport tr, int contexts);

/* Stop and free s; NULL is allowed. */
void bench_civetweb_stop(bench_civetweb *s);

/* The result of a throughput ceiling. */
typedef struct bench_ceiling {
    double per_sec;  /* operations per second */
    uint64_t ops;    /* operations completed */
    uint64_t errors; /* failed operations */
    double elapsed;  /* seconds measured */
    bench_hist hist; /* latency per operation (round trip, publish to delivery) */
} bench_ceiling;

/*
 * nng req/rep over transport tr (tcp://127.0.0.1 or an ipc:// socket file)
 * with `contexts` contexts on one req socket against as many on one rep
 * socket, `size`-byte messages, for `seconds`. Returns 0 and fills *out,
 * -1 on setup failure (message on stderr).
 */
int bench_nng_run(bench_transport tr, int contexts, int size, double seconds,
                  bench_ceiling *out);

/*
 * Mosquitto QoS 1 from one publisher to one subscriber through the broker
 * at host:port, keeping at most `window` messages published but not yet
 * delivered, `size`-byte payloads, for `seconds`, as user (NULL or empty:
 * anonymous) with password. Returns 0 and fills *out, -1 on failure.
 */
int bench_mqtt_run(const char *host, int port, const char *user, const char *password,
                   int window, int size, double seconds, bench_ceiling *out);

#endif
