/*
 * The scaling curve; see curve.h.
 */
#include "curve.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "plot.h"
#include "session.h"

static const int curve_clients[BENCH_CURVE_N_CLIENTS] = {1, 2, 4, 8, 16, 32};
static const int curve_products[BENCH_CURVE_N_CATALOGS] = {10, 1000, 10000};

static double curve_ms(double ns)
{
    return ns / 1e6;
}

/* ---- measuring ---------------------------------------------------------------- */

/* GET /inventory on s: the first answer alone, then o->connections clients. */
static void curve_catalog_run(const bench_opts *o, bench_session *s,
                              bench_curve_catalog *c)
{
    bench_req_ctx ctx;
    bench_req_ctx_init(&ctx, &s->target, NULL);
    bench_load_spec spec = {.target = &s->target,
                            .connections = 1,
                            .seconds = 30.0,
                            .max_requests = 1,
                            .ok_status = 200,
                            .make = bench_make_inventory,
                            .done = bench_done_inventory,
                            .ctx = &ctx};
    bench_phase first;
    memset(&first, 0, sizeof(first));
    char what[96];
    snprintf(what, sizeof(what), "GET /inventory, %d products, first answer",
             c->products);
    bench_phase_run(what, &first, &spec);
    c->first_ms = first.r.ok > 0 ? curve_ms((double)first.r.hist.max_ns) : -1;
    spec.connections = o->connections;
    spec.seconds = o->seconds;
    spec.max_requests = o->requests;
    snprintf(what, sizeof(what), "GET /inventory, %d products", c->products);
    bench_phase_run(what, &c->get, &spec);
    c->bytes = atomic_load(&ctx.body_len);
    c->ran = c->get.ran && c->get.r.ok > 0;
}

/* POST /order closed loop at each client count, waiting for the final
 * statuses after each so the next starts with nothing in flight. */
static void curve_clients_run(const bench_opts *o, bench_session *s, bench_curve *cv)
{
    bench_orders *orders = NULL;
    if (s->broker_port > 0) {
        orders = bench_orders_open(s->broker_host, s->broker_port, s->broker_user,
                                   s->broker_password);
    }
    for (int i = 0; i < BENCH_CURVE_N_CLIENTS; i++) {
        bench_curve_clients *p = &cv->clients[i];
        bench_req_ctx ctx;
        bench_req_ctx_init(&ctx, &s->target, orders);
        bench_load_spec spec = {.target = &s->target,
                                .connections = p->clients,
                                .seconds = o->seconds,
                                .max_requests = o->requests,
                                .ok_status = 201,
                                .make = bench_make_post,
                                .done = bench_done_post,
                                .ctx = &ctx};
        char what[64];
        snprintf(what, sizeof(what), "POST /order, %d clients", p->clients);
        size_t from = orders != NULL ? bench_orders_count(orders) : 0;
        double t0 = bench_now();
        bench_phase_run(what, &p->post, &spec);
        if (orders != NULL) {
            bench_orders_drain(orders, o->drain, 10.0 * o->drain + o->seconds);
            bench_orders_match(orders, from, t0, &p->e2e);
            p->e2e_ran = true;
        }
    }
    bench_orders_close(orders);
}

/* One shop per catalog size; the client curve on the first. */
static int curve_measure(const bench_opts *o, bench_curve *cv)
{
    if (o->url != NULL || o->state_dir != NULL) {
        bench_session s;
        int rc = bench_session_open(&s, o, 2);
        if (rc != 0) {
            return rc;
        }
        fprintf(stderr,
                "bench: --curve on a given shop: catalog sizes not run (they need "
                "shops the bench starts)\n");
        curve_clients_run(o, &s, cv);
        bench_session_close(&s, o->keep);
        return 0;
    }
    for (int k = 0; k < BENCH_CURVE_N_CATALOGS; k++) {
        bench_session s;
        int rc = bench_session_open(&s, o, cv->catalog[k].products);
        if (rc != 0) {
            return rc;
        }
        curve_catalog_run(o, &s, &cv->catalog[k]);
        if (k == 0) {
            curve_clients_run(o, &s, cv);
        }
        bench_session_close(&s, o->keep);
    }
    return 0;
}

/* ---- output ------------------------------------------------------------------------ */

static void curve_print(const bench_curve *cv, FILE *f)
{
    fprintf(f, "\nwebshop bench --curve: %d cores, %.1f s per point\n\n", cv->cores,
            cv->seconds);
    fprintf(f, "  %-8s %10s %9s %9s %9s %8s %8s %12s %10s\n", "clients", "201/s",
            "p50 ms", "p90 ms", "p99 ms", "202s", "errors", "final ord/s", "final p99");
    for (int i = 0; i < BENCH_CURVE_N_CLIENTS; i++) {
        const bench_curve_clients *p = &cv->clients[i];
        if (!p->post.ran) {
            fprintf(f, "  %-8d %10s\n", p->clients, "not run");
            continue;
        }
        const bench_hist *h = &p->post.r.hist;
        fprintf(f, "  %-8d %10.0f %9.3f %9.3f %9.3f %8llu %8llu", p->clients,
                bench_load_rate(&p->post.r), curve_ms(bench_hist_percentile(h, 50)),
                curve_ms(bench_hist_percentile(h, 90)),
                curve_ms(bench_hist_percentile(h, 99)), (unsigned long long)p->post.n202,
                (unsigned long long)(p->post.r.bad_status - p->post.n202 +
                                     p->post.r.io_errors));
        if (p->e2e_ran) {
            fprintf(f, " %12.0f %10.3f\n", p->e2e.per_sec,
                    curve_ms(bench_hist_percentile(&p->e2e.hist, 99)));
        } else {
            fprintf(f, " %12s %10s\n", "-", "-");
        }
    }
    fprintf(f, "\n  %-9s %12s %12s %10s %9s %9s %9s\n", "products", "body bytes",
            "first ms", "req/s", "p50 ms", "p90 ms", "p99 ms");
    for (int k = 0; k < BENCH_CURVE_N_CATALOGS; k++) {
        const bench_curve_catalog *c = &cv->catalog[k];
        if (!c->ran) {
            fprintf(f, "  %-9d %12s\n", c->products, "not run");
            continue;
        }
        const bench_hist *h = &c->get.r.hist;
        fprintf(f, "  %-9d %12zu %12.3f %10.0f %9.3f %9.3f %9.3f\n", c->products,
                c->bytes, c->first_ms, bench_load_rate(&c->get.r),
                curve_ms(bench_hist_percentile(h, 50)),
                curve_ms(bench_hist_percentile(h, 90)),
                curve_ms(bench_hist_percentile(h, 99)));
    }
    fputc('\n', f);
    fflush(f);
}

static int curve_json(const bench_curve *cv, const char *path)
{
    FILE *f = fopen(path, "we");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "{\n  \"cores\": %d,\n  \"seconds_per_point\": %.3f,\n  \"clients\": [\n",
            cv->cores, cv->seconds);
    for (int i = 0; i < BENCH_CURVE_N_CLIENTS; i++) {
        const bench_curve_clients *p = &cv->clients[i];
        const bench_hist *h = &p->post.r.hist;
        fprintf(f,
                "    {\"clients\": %d, \"ran\": %s, \"per_sec\": %.1f, \"ok_201\": %llu, "
                "\"accepted_202\": %llu, \"p50_ms\": %.4f, \"p90_ms\": %.4f, "
                "\"p99_ms\": %.4f, \"final_per_sec\": %.1f, \"final_p99_ms\": %.4f}%s\n",
                p->clients, p->post.ran ? "true" : "false", bench_load_rate(&p->post.r),
                (unsigned long long)p->post.r.ok, (unsigned long long)p->post.n202,
                curve_ms(bench_hist_percentile(h, 50)),
                curve_ms(bench_hist_percentile(h, 90)),
                curve_ms(bench_hist_percentile(h, 99)), p->e2e_ran ? p->e2e.per_sec : 0.0,
                p->e2e_ran ? curve_ms(bench_hist_percentile(&p->e2e.hist, 99)) : 0.0,
                i + 1 < BENCH_CURVE_N_CLIENTS ? "," : "");
    }
    fprintf(f, "  ],\n  \"catalog\": [\n");
    for (int k = 0; k < BENCH_CURVE_N_CATALOGS; k++) {
        const bench_curve_catalog *c = &cv->catalog[k];
        const bench_hist *h = &c->get.r.hist;
        fprintf(f,
                "    {\"products\": %d, \"ran\": %s, \"bytes\": %zu, \"first_ms\": %.4f, "
                "\"per_sec\": %.1f, \"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": "
                "%.4f}%s\n",
                c->products, c->ran ? "true" : "false", c->bytes, c->first_ms,
                bench_load_rate(&c->get.r), curve_ms(bench_hist_percentile(h, 50)),
                curve_ms(bench_hist_percentile(h, 90)),
                curve_ms(bench_hist_percentile(h, 99)),
                k + 1 < BENCH_CURVE_N_CATALOGS ? "," : "");
    }
    fprintf(f, "  ]\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

/* A value to plot, or -1 (not drawn) when its phase did not run. */
static double curve_y(bool ran, double v)
{
    return ran ? v : -1.0;
}

static int curve_svg(const bench_curve *cv, const char *path)
{
    double rate[BENCH_CURVE_N_CLIENTS], final[BENCH_CURVE_N_CLIENTS];
    double p50[BENCH_CURVE_N_CLIENTS], p99[BENCH_CURVE_N_CLIENTS];
    char ticks[BENCH_CURVE_N_CLIENTS][16];
    const char *xt[BENCH_CURVE_N_CLIENTS];
    for (int i = 0; i < BENCH_CURVE_N_CLIENTS; i++) {
        const bench_curve_clients *p = &cv->clients[i];
        bool ran = p->post.ran && p->post.r.ok > 0;
        rate[i] = curve_y(ran, bench_load_rate(&p->post.r));
        final[i] = curve_y(p->e2e_ran, p->e2e.per_sec);
        p50[i] = curve_y(ran, curve_ms(bench_hist_percentile(&p->post.r.hist, 50)));
        p99[i] = curve_y(ran, curve_ms(bench_hist_percentile(&p->post.r.hist, 99)));
        snprintf(ticks[i], sizeof(ticks[i]), "%d", p->clients);
        xt[i] = ticks[i];
    }
    double crate[BENCH_CURVE_N_CATALOGS], c50[BENCH_CURVE_N_CATALOGS];
    double c99[BENCH_CURVE_N_CATALOGS], cfirst[BENCH_CURVE_N_CATALOGS];
    char cticks[BENCH_CURVE_N_CATALOGS][16], cnotes[BENCH_CURVE_N_CATALOGS][32];
    const char *cxt[BENCH_CURVE_N_CATALOGS], *cn[BENCH_CURVE_N_CATALOGS];
    for (int k = 0; k < BENCH_CURVE_N_CATALOGS; k++) {
        const bench_curve_catalog *c = &cv->catalog[k];
        crate[k] = curve_y(c->ran, bench_load_rate(&c->get.r));
        c50[k] = curve_y(c->ran, curve_ms(bench_hist_percentile(&c->get.r.hist, 50)));
        c99[k] = curve_y(c->ran, curve_ms(bench_hist_percentile(&c->get.r.hist, 99)));
        cfirst[k] = curve_y(c->ran, c->first_ms);
        snprintf(cticks[k], sizeof(cticks[k]), "%d", c->products);
        snprintf(cnotes[k], sizeof(cnotes[k]), c->ran ? "%.1f KiB" : "not run",
                 (double)c->bytes / 1024.0);
        cxt[k] = cticks[k];
        cn[k] = cnotes[k];
    }
    const bench_plot_series s_rate[] = {{"POST -> 201 per s", rate, "#1f77b4", 0},
                                        {"final status per s", final, "#2ca02c", 1}};
    const bench_plot_series s_lat[] = {{"POST -> 201 p50", p50, "#1f77b4", 0},
                                       {"POST -> 201 p99", p99, "#d62728", 0}};
    const bench_plot_series s_crate[] = {{"GET /inventory per s", crate, "#1f77b4", 0}};
    const bench_plot_series s_clat[] = {{"p50", c50, "#1f77b4", 0},
                                        {"p99", c99, "#d62728", 0},
                                        {"first answer", cfirst, "#ff7f0e", 1}};
    const bench_plot_chart charts[] = {
        {"Orders per second", "concurrent clients", "orders/s", xt, NULL,
         BENCH_CURVE_N_CLIENTS, s_rate, 2},
        {"POST /order latency", "concurrent clients", "ms", xt, NULL,
         BENCH_CURVE_N_CLIENTS, s_lat, 2},
        {"GET /inventory throughput", "products in the catalog (body size below)",
         "req/s", cxt, cn, BENCH_CURVE_N_CATALOGS, s_crate, 1},
        {"GET /inventory latency", "products in the catalog (body size below)", "ms", cxt,
         cn, BENCH_CURVE_N_CATALOGS, s_clat, 3},
    };
    char sub[160];
    snprintf(
        sub, sizeof(sub),
        "%d cores, %.1f s per point; POST closed loop, one keep-alive connection per "
        "client; GET /inventory with %d connections",
        cv->cores, cv->seconds, cv->connections);
    return bench_plot_svg(path, "webshop bench --curve", sub, charts, 4, 2);
}

int bench_curve_main(const bench_opts *o)
{
    bench_curve cv;
    memset(&cv, 0, sizeof(cv));
    cv.cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    cv.seconds = o->seconds;
    cv.connections = o->connections;
    for (int i = 0; i < BENCH_CURVE_N_CLIENTS; i++) {
        cv.clients[i].clients = curve_clients[i];
    }
    for (int k = 0; k < BENCH_CURVE_N_CATALOGS; k++) {
        cv.catalog[k].products = curve_products[k];
    }
    int rc = curve_measure(o, &cv);
    if (rc != 0) {
        return rc;
    }
    curve_print(&cv, stdout);
    char svg[PATH_MAX];
    if (o->svg != NULL) {
        snprintf(svg, sizeof(svg), "%s", o->svg);
    } else {
        snprintf(svg, sizeof(svg), "%s/bench-curve.svg", o->build_dir);
    }
    if (curve_svg(&cv, svg) != 0) {
        return 1;
    }
    printf("plot: %s\n", svg);
    if (o->json != NULL && curve_json(&cv, o->json) != 0) {
        return 1;
    }
    return 0;
}
