/*
 * The scaling curve (`webshop-bench --curve`, issue 19): orders/s and
 * latency of POST /order (closed loop, each client one keep-alive
 * connection sending its next order when the last was answered) at 1, 2,
 * 4, 8, 16 and 32 concurrent clients, with the end-to-end rate to a final
 * status; and GET /inventory at catalogs of 10, 1,000 and 10,000 products
 * (body size, the first answer, which the front fetches from the
 * inventory, and the cached answers under load). Each catalog size gets a
 * shop of its own, started by the bench; the client curve runs on the
 * first. Printed as a table, plotted to an SVG, optionally JSON.
 */
#ifndef BENCH_CURVE_H
#define BENCH_CURVE_H

#include <stdbool.h>
#include <stddef.h>

#include "opts.h"
#include "orders.h"
#include "routes.h"

#define BENCH_CURVE_N_CLIENTS  6
#define BENCH_CURVE_N_CATALOGS 3

typedef struct bench_curve_clients {
    int clients;
    bench_phase post; /* POST /order, 201 latency; post.n202 the 202s */
    bool e2e_ran;
    bench_e2e e2e; /* POST -> final status */
} bench_curve_clients;

typedef struct bench_curve_catalog {
    int products;
    bool ran;
    size_t bytes;    /* body of GET /inventory */
    double first_ms; /* the first answer after the shop started */
    bench_phase get; /* GET /inventory, connections clients */
} bench_curve_catalog;

typedef struct bench_curve {
    int cores;
    double seconds;
    int connections;
    bench_curve_clients clients[BENCH_CURVE_N_CLIENTS];
    bench_curve_catalog catalog[BENCH_CURVE_N_CATALOGS];
} bench_curve;

/*
 * Measure the curve as o says, print it to stdout, plot it to o->svg (or
 * BUILD_DIR/bench-curve.svg) and write o->json if set. With --url or
 * --state-dir only the client curve runs (the catalog sizes need shops of
 * their own). Returns the process exit status (0 when measured).
 */
int bench_curve_main(const bench_opts *o);

#endif
