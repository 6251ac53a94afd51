/*
 * The ceilings the shop is measured against, taken on the same machine in
 * the same run: a bare civetweb handler answering a 400-byte JSON body, bare
 * nng req/rep round trips with many contexts on one socket, and bare
 * Mosquitto QoS 1 throughput from one publisher to one subscriber with a
 * window of messages in flight. Each is the best any shop code built on
 * that component could do here.
 */
#ifndef BENCH_CEILING_H
#define BENCH_CEILING_H

#include <stdint.h>

#include "hist.h"

/* A running bare civetweb server; see bench_civetweb_start. */
typedef struct bench_civetweb bench_civetweb;

/*
 * Start a civetweb server on 127.0.0.1 at a free port with `threads` worker
 * threads and keep-alive on, answering GET /bench with 400 bytes of JSON.
 * Returns NULL on failure; *port (OUT) is its port.
 */
bench_civetweb *bench_civetweb_start(int threads, int *port);

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
 * nng req/rep over tcp://127.0.0.1 with `contexts` contexts on one req
 * socket against as many on one rep socket, `size`-byte messages, for
 * `seconds`. Returns 0 and fills *out, -1 on setup failure (message on
 * stderr).
 */
int bench_nng_run(int contexts, int size, double seconds, bench_ceiling *out);

/*
 * Mosquitto QoS 1 from one publisher to one subscriber through the broker
 * at host:port, keeping at most `window` messages published but not yet
 * delivered, `size`-byte payloads, for `seconds`, as user (NULL or empty:
 * anonymous) with password. Returns 0 and fills *out, -1 on failure.
 */
int bench_mqtt_run(const char *host, int port, const char *user, const char *password,
                   int window, int size, double seconds, bench_ceiling *out);

#endif
