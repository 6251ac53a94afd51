/*
 * The shop's routes as load: builders of the requests the load generator
 * sends (GET /inventory, POST /order, GET /order/{id}, and the ceilings'
 * GET /bench) and the answer hooks that record what came back: the order
 * id of every accepted POST (201 committed or 202 queued, both become
 * final) for end-to-end timing, the count of each, and the size of the
 * catalog's body. Shared by the main run and the scaling curve.
 */
#ifndef BENCH_ROUTES_H
#define BENCH_ROUTES_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "load.h"
#include "orders.h"

typedef struct bench_req_ctx {
    const bench_target *t;     /* not owned */
    bench_orders *orders;      /* POST: where accepted orders are recorded; may be NULL */
    size_t n_ids;              /* GET /order/{id}: orders to pick from (of orders) */
    atomic_uint_fast64_t n201; /* POST answers 201 (committed), since init */
    atomic_uint_fast64_t n202; /* POST answers 202 (queued), since init */
    atomic_size_t body_len;    /* GET /inventory: size of the last body */
} bench_req_ctx;

/* Set up c for target t (not owned) and orders (may be NULL). */
void bench_req_ctx_init(bench_req_ctx *c, const bench_target *t, bench_orders *orders);

/* bench_make_fn builders; ctx is a bench_req_ctx. */
size_t bench_make_inventory(void *ctx, int conn, uint64_t seq, char *out, size_t cap);
size_t bench_make_civetweb(void *ctx, int conn, uint64_t seq, char *out, size_t cap);
size_t bench_make_post(void *ctx, int conn, uint64_t seq, char *out, size_t cap);
/* Needs ctx->orders with ctx->n_ids > 0 recorded orders. */
size_t bench_make_get_order(void *ctx, int conn, uint64_t seq, char *out, size_t cap);

/* bench_done_fn for POST /order: counts 201 and 202 and records the order
 * id of either with its intended send time in ctx->orders. */
void bench_done_post(void *ctx, int conn, uint64_t seq, int status, const char *body,
                     size_t len, double t_sent, double t_done);

/* bench_done_fn for GET /inventory: keeps the body's size of a 200. */
void bench_done_inventory(void *ctx, int conn, uint64_t seq, int status, const char *body,
                          size_t len, double t_sent, double t_done);

/* One load phase's figures. */
typedef struct bench_phase {
    bool ran;
    bench_load_result r; /* r.ok: answers with the phase's success status */
    uint64_t n202;       /* POST phases: answers 202 (queued, not committed in time) */
} bench_phase;

/*
 * Run spec (whose ctx is a bench_req_ctx) into *p, saying `what` on
 * stderr: p->ran when the load ran, p->n202 the 202s it got.
 */
void bench_phase_run(const char *what, bench_phase *p, const bench_load_spec *spec);

#endif
