/*
 * Request builders and answer hooks of the shop's routes; see routes.h.
 * They run on the load generator's connection threads: what they share is
 * atomic or behind bench_orders' lock.
 */
#include "routes.h"

#include <stdio.h>
#include <string.h>

void bench_req_ctx_init(bench_req_ctx *c, const bench_target *t, bench_orders *orders)
{
    memset(c, 0, sizeof(*c));
    c->t = t;
    c->orders = orders;
    atomic_init(&c->n201, 0);
    atomic_init(&c->n202, 0);
    atomic_init(&c->body_len, 0);
}

static size_t routes_len(int n, size_t cap)
{
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t bench_make_inventory(void *ctx, int conn, uint64_t seq, char *out, size_t cap)
{
    (void)conn;
    (void)seq;
    const bench_req_ctx *c = ctx;
    return routes_len(snprintf(out, cap, "GET %s/inventory HTTP/1.1\r\nHost: %s\r\n\r\n",
                               c->t->base_path, c->t->host),
                      cap);
}

size_t bench_make_civetweb(void *ctx, int conn, uint64_t seq, char *out, size_t cap)
{
    (void)conn;
    (void)seq;
    const bench_req_ctx *c = ctx;
    return routes_len(
        snprintf(out, cap, "GET /bench HTTP/1.1\r\nHost: %s\r\n\r\n", c->t->host), cap);
}

size_t bench_make_post(void *ctx, int conn, uint64_t seq, char *out, size_t cap)
{
    const bench_req_ctx *c = ctx;
    char body[96];
    int blen =
        snprintf(body, sizeof(body), "{\"items\": [{\"inventoryId\": %d, \"count\": 1}]}",
                 (int)((seq + (uint64_t)conn) % 2) + 1);
    return routes_len(
        snprintf(
            out, cap,
            "POST %s/order HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n%s",
            c->t->base_path, c->t->host, blen, body),
        cap);
}

/* The string value of "order_id" in the answer's JSON body, or NULL. */
static const char *routes_order_id(const char *body, size_t len, size_t *id_len)
{
    const char *key = memmem(body, len, "\"order_id\"", 10);
    if (key == NULL) {
        return NULL;
    }
    const char *end = body + len;
    const char *q = memchr(key + 10, '"', (size_t)(end - (key + 10)));
    if (q == NULL) {
        return NULL;
    }
    const char *e = memchr(q + 1, '"', (size_t)(end - (q + 1)));
    if (e == NULL) {
        return NULL;
    }
    *id_len = (size_t)(e - q - 1);
    return q + 1;
}

void bench_done_post(void *ctx, int conn, uint64_t seq, int status, const char *body,
                     size_t len, double t_sent, double t_done)
{
    (void)conn;
    (void)seq;
    (void)t_done;
    bench_req_ctx *c = ctx;
    if (status == 201) {
        atomic_fetch_add(&c->n201, 1);
    } else if (status == 202) {
        atomic_fetch_add(&c->n202, 1);
    } else {
        return;
    }
    size_t id_len = 0;
    const char *id = routes_order_id(body, len, &id_len);
    if (id != NULL && c->orders != NULL) {
        bench_orders_posted(c->orders, id, id_len, t_sent);
    }
}

size_t bench_make_get_order(void *ctx, int conn, uint64_t seq, char *out, size_t cap)
{
    const bench_req_ctx *c = ctx;
    size_t i = (size_t)((uint64_t)conn * 7919u + seq * 16u + (uint64_t)conn) % c->n_ids;
    return routes_len(snprintf(out, cap, "GET %s/order/%s HTTP/1.1\r\nHost: %s\r\n\r\n",
                               c->t->base_path, bench_orders_id(c->orders, i),
                               c->t->host),
                      cap);
}

void bench_done_inventory(void *ctx, int conn, uint64_t seq, int status, const char *body,
                          size_t len, double t_sent, double t_done)
{
    (void)conn;
    (void)seq;
    (void)body;
    (void)t_sent;
    (void)t_done;
    bench_req_ctx *c = ctx;
    if (status == 200) {
        atomic_store(&c->body_len, len);
    }
}

void bench_phase_run(const char *what, bench_phase *p, const bench_load_spec *spec)
{
    fprintf(stderr, "bench: %s for %.1f s ...\n", what, spec->seconds);
    bench_req_ctx *ctx = spec->ctx;
    uint64_t n202 = atomic_load(&ctx->n202);
    p->ran = bench_load_run(spec, &p->r) == 0;
    p->n202 = atomic_load(&ctx->n202) - n202;
    if (p->ran && p->r.ok == 0) {
        fprintf(stderr,
                "bench: %s: no successful answer (last status %d, %llu I/O errors)\n",
                what, p->r.last_bad, (unsigned long long)p->r.io_errors);
    }
}
