/*
 * The HTTP load generator: a minimal HTTP/1.1 client over plain blocking
 * sockets (write a request, parse the status line and headers, read a
 * Content-Length body) and a load run that drives one keep-alive
 * connection per thread, bounded by a request count and a duration, either
 * as fast as the server answers (closed loop) or at a fixed total rate
 * (open loop, latency measured from the intended send time so a stalled
 * server cannot hide its queueing).
 */
#ifndef BENCH_LOAD_H
#define BENCH_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "hist.h"

/* A loopback HTTP target. */
typedef struct bench_target {
    struct sockaddr_storage addr; /* resolved loopback address */
    socklen_t addr_len;
    char host[64];       /* Host header value */
    char base_path[128]; /* path prefix of the URL, without a trailing '/' */
} bench_target;

/*
 * Parse an http:// URL and resolve its host. Refuses (returns -1 with a
 * message in err) any host that is not a loopback address.
 */
int bench_target_parse(const char *url, bench_target *t, char *err, size_t err_len);

/* A TCP port on 127.0.0.1 outside the kernel's ephemeral range, flock'ed for
 * this process (the tests/support/harness.h protocol) and free by bind when
 * returned, or -1. */
int bench_free_port(void);

/* Seconds on the monotonic clock. */
double bench_now(void);

/*
 * Builds request number seq of connection conn into out (at most cap
 * bytes); returns its length, 0 to stop this connection. Runs on the
 * connection's thread.
 */
typedef size_t (*bench_make_fn)(void *ctx, int conn, uint64_t seq, char *out, size_t cap);

/*
 * Sees one answer: status, body, when the request was meant to be sent and
 * when its answer was complete (bench_now() seconds). Runs on the
 * connection's thread.
 */
typedef void (*bench_done_fn)(void *ctx, int conn, uint64_t seq, int status,
                              const char *body, size_t body_len, double t_sent,
                              double t_done);

typedef struct bench_load_spec {
    const bench_target *target;
    int connections;       /* one thread and one keep-alive connection each */
    double seconds;        /* stop sending after this long */
    uint64_t max_requests; /* and after this many requests in all (0: no bound) */
    double rate;           /* total requests/s, 0 for as fast as possible */
    int ok_status;         /* the status that counts as success, 0 for any 2xx */
    bench_make_fn make;
    bench_done_fn done; /* may be NULL */
    void *ctx;
} bench_load_spec;

typedef struct bench_load_result {
    uint64_t ok;         /* answers with the success status */
    uint64_t bad_status; /* answers with another status */
    uint64_t io_errors;  /* connect, write, read or parse failures */
    int last_bad;        /* the last unexpected status seen */
    uint64_t reconnects; /* connections reopened after the server closed them */
    double elapsed;      /* seconds from start to the last answer */
    bench_hist hist;     /* latency of successful requests */
} bench_load_result;

/* Run spec to completion; fills *out. Returns 0, or -1 if no thread started. */
int bench_load_run(const bench_load_spec *spec, bench_load_result *out);

/* Successful requests per second of r. */
double bench_load_rate(const bench_load_result *r);

#endif
