/*
 * The bench's table and JSON; see report.h. Every ratio, its target and
 * its verdict come from report_ratios, so the table and the JSON cannot
 * disagree.
 */
#include "report.h"

#include <string.h>

#include "tls.h"

/* One ratio (or bound) of the run. */
typedef struct report_ratio {
    const char *key; /* JSON name */
    char label[80];  /* table text */
    double measured;
    double target;   /* when has_target */
    bool has_target; /* false: shown for reference only */
    bool at_most;    /* the target is an upper bound (measured < target) */
    bool ran;        /* both sides were measured */
} report_ratio;

#define REPORT_MAX_RATIOS 20

static double report_ms(double ns)
{
    return ns / 1e6;
}

static double report_frac(double v, double ceiling)
{
    return ceiling > 0 ? v / ceiling : 0.0;
}

static double report_ceiling_rate(const bench_ceiling_row *c)
{
    return c->ran ? c->c.per_sec : 0.0;
}

static bool report_ratio_met(const report_ratio *r)
{
    return r->at_most ? r->measured < r->target : r->measured >= r->target;
}

static const char *report_verdict(const report_ratio *r)
{
    if (!r->has_target) {
        return "";
    }
    return !r->ran ? "n/a" : report_ratio_met(r) ? "met" : "MISSED";
}

static report_ratio *report_add(report_ratio *v, int *n, const char *key, double measured,
                                double target, bool has_target, bool ran)
{
    report_ratio *r = &v[(*n)++];
    memset(r, 0, sizeof(*r));
    r->key = key;
    r->measured = measured;
    r->target = target;
    r->has_target = has_target;
    r->ran = ran;
    return r;
}

double bench_phase_rate(const bench_phase *p)
{
    return p->ran ? bench_load_rate(&p->r) : 0.0;
}

double bench_phase_ms(const bench_phase *p, double pct)
{
    return p->ran && p->r.ok > 0 ? report_ms(bench_hist_percentile(&p->r.hist, pct))
                                 : 0.0;
}

/* The cost of the edge, route by route: through HAProxy / directly. */
static void report_ratios_edge(const bench_report *rp, report_ratio *v, int *n)
{
    static const struct {
        const char *key, *label;
    } what[4] = {
        {"edge_get_inventory_of_direct", "GET /inventory via haproxy / direct"},
        {"edge_get_order_of_direct", "GET /order/{id} via haproxy / direct"},
        {"edge_post_order_201_of_direct", "POST /order -> 201 via haproxy / direct"},
        {"edge_orders_e2e_of_direct", "orders/s end to end via haproxy / direct"},
    };
    double through[4] = {
        bench_phase_rate(&rp->edge_inventory), bench_phase_rate(&rp->edge_order_get),
        bench_phase_rate(&rp->edge_post), rp->edge_e2e_ran ? rp->edge_e2e.per_sec : 0.0};
    double direct[4] = {bench_phase_rate(&rp->inventory),
                        bench_phase_rate(&rp->order_get), bench_phase_rate(&rp->post),
                        rp->e2e_ran ? rp->e2e.per_sec : 0.0};
    for (int i = 0; i < 4; i++) {
        report_ratio *r =
            report_add(v, n, what[i].key, report_frac(through[i], direct[i]), TARGET_EDGE,
                       true, through[i] > 0 && direct[i] > 0);
        snprintf(r->label, sizeof(r->label), "%s", what[i].label);
    }
}

/* --tls: the cost of TLS on the ceiling, tls+tcp / tcp. (GET /order/{id}
 * over TLS against the tcp ceiling is the "other transport" ratio.) */
static void report_ratios_tls(const bench_report *rp, report_ratio *v, int *n)
{
    double tls = report_ceiling_rate(&rp->civetweb_rpc[BENCH_TLS]);
    double tcp = report_ceiling_rate(&rp->civetweb_rpc[BENCH_TCP]);
    report_ratio *r = report_add(v, n, "civetweb_nng_tls_of_tcp", report_frac(tls, tcp),
                                 0, false, tls > 0 && tcp > 0);
    snprintf(r->label, sizeof(r->label), "civetweb+nng tls+tcp / civetweb+nng tcp");
}

/* Fill v (REPORT_MAX_RATIOS) with rp's ratios, targets first; the count. */
static int report_ratios(const bench_report *rp, report_ratio *v)
{
    int n = 0;
    bench_transport used = rp->transport;
    bench_transport other = used == BENCH_TCP ? BENCH_IPC : BENCH_TCP;
    double civ = report_ceiling_rate(&rp->civetweb);
    double rpc_used = report_ceiling_rate(&rp->civetweb_rpc[used]);
    double rpc_other = report_ceiling_rate(&rp->civetweb_rpc[other]);
    double mq3 = report_ceiling_rate(&rp->mqtt) / 3.0;
    double inv = rp->inventory.ran ? bench_load_rate(&rp->inventory.r) : 0.0;
    double get = rp->order_get.ran ? bench_load_rate(&rp->order_get.r) : 0.0;
    report_ratio *r;

    r = report_add(v, &n, "get_inventory_of_civetweb", report_frac(inv, civ),
                   TARGET_INVENTORY, true, inv > 0 && civ > 0);
    snprintf(r->label, sizeof(r->label), "GET /inventory / civetweb bare");
    r = report_add(v, &n,
                   used == BENCH_TCP   ? "get_order_of_civetweb_nng_tcp"
                   : used == BENCH_TLS ? "get_order_of_civetweb_nng_tls"
                                       : "get_order_of_civetweb_nng_ipc",
                   report_frac(get, rpc_used), TARGET_ORDER_GET, true,
                   get > 0 && rpc_used > 0);
    snprintf(r->label, sizeof(r->label), "GET /order/{id} / civetweb+nng %s (shop's)",
             bench_transport_name(used));
    r = report_add(v, &n, "orders_e2e_of_mosquitto_div_3",
                   report_frac(rp->e2e.per_sec, mq3), TARGET_E2E, true,
                   rp->e2e_ran && rp->e2e.per_sec > 0 && mq3 > 0);
    snprintf(r->label, sizeof(r->label), "orders/s end to end / (mosquitto QoS 1 / 3)");
    r = report_add(v, &n, "half_rate_post_201_p99_ms",
                   report_ms(bench_hist_percentile(&rp->half_post.r.hist, 99)),
                   TARGET_HALF_P99_MS, true, rp->half_post.ran && rp->half_post.r.ok > 0);
    r->at_most = true;
    snprintf(r->label, sizeof(r->label), "p99 POST->201 at %.0f orders/s, ms",
             rp->half_rate);
    if (strcmp(rp->store, "postgres") == 0) {
        r = report_add(v, &n, "orders_e2e_per_sec_postgres", rp->e2e.per_sec,
                       TARGET_PG_E2E_PER_SEC, true, rp->e2e_ran && rp->e2e.per_sec > 0);
        snprintf(r->label, sizeof(r->label), "orders/s end to end on PostgreSQL");
    }
    if (rp->edge) {
        report_ratios_edge(rp, v, &n);
    }

    r = report_add(v, &n,
                   other == BENCH_TCP ? "get_order_of_civetweb_nng_tcp"
                                      : "get_order_of_civetweb_nng_ipc",
                   report_frac(get, rpc_other), 0, false, get > 0 && rpc_other > 0);
    snprintf(r->label, sizeof(r->label), "GET /order/{id} / civetweb+nng %s",
             bench_transport_name(other));
    r = report_add(v, &n, "get_order_of_civetweb", report_frac(get, civ), 0, false,
                   get > 0 && civ > 0);
    snprintf(r->label, sizeof(r->label), "GET /order/{id} / civetweb bare");
    double tcp = report_ceiling_rate(&rp->civetweb_rpc[BENCH_TCP]);
    double ipc = report_ceiling_rate(&rp->civetweb_rpc[BENCH_IPC]);
    r = report_add(v, &n, "civetweb_nng_tcp_of_civetweb", report_frac(tcp, civ), 0, false,
                   tcp > 0 && civ > 0);
    snprintf(r->label, sizeof(r->label), "civetweb+nng tcp / civetweb bare");
    r = report_add(v, &n, "civetweb_nng_ipc_of_tcp", report_frac(ipc, tcp), 0, false,
                   ipc > 0 && tcp > 0);
    snprintf(r->label, sizeof(r->label), "civetweb+nng ipc / civetweb+nng tcp");
    if (rp->civetweb_rpc[BENCH_TLS].ran || rp->transport == BENCH_TLS) {
        report_ratios_tls(rp, v, &n);
    }
    return n;
}

/* ---- the table ------------------------------------------------------------- */

static void report_print_hist(FILE *f, const bench_hist *h)
{
    fprintf(f, " %8.3f %8.3f %8.3f", report_ms(bench_hist_percentile(h, 50)),
            report_ms(bench_hist_percentile(h, 90)),
            report_ms(bench_hist_percentile(h, 99)));
}

static void report_print_ceiling(FILE *f, const char *name, const bench_ceiling_row *c,
                                 const char *unit)
{
    if (!c->ran) {
        fprintf(f, "  %-36s %12s\n", name, "not run");
        return;
    }
    fprintf(f, "  %-36s %10.0f %-6s", name, c->c.per_sec, unit);
    report_print_hist(f, &c->c.hist);
    if (c->c.errors > 0) {
        fprintf(f, "   (%llu errors)", (unsigned long long)c->c.errors);
    }
    fputc('\n', f);
}

static void report_print_load(FILE *f, const char *name, const bench_phase *p, bool post)
{
    if (!p->ran) {
        fprintf(f, "  %-36s %12s\n", name, "not run");
        return;
    }
    fprintf(f, "  %-36s %10.0f %-6s", name, bench_load_rate(&p->r), "req/s");
    report_print_hist(f, &p->r.hist);
    if (post) {
        fprintf(f, "   (%llu 201, %llu 202, %llu other status, %llu I/O errors)\n",
                (unsigned long long)p->r.ok, (unsigned long long)p->n202,
                (unsigned long long)(p->r.bad_status - p->n202),
                (unsigned long long)p->r.io_errors);
    } else {
        fprintf(f, "   (%llu ok, %llu other status, %llu I/O errors)\n",
                (unsigned long long)p->r.ok, (unsigned long long)p->r.bad_status,
                (unsigned long long)p->r.io_errors);
    }
}

static void report_print_e2e(FILE *f, const char *name, bool ran, const bench_e2e *e)
{
    if (!ran) {
        fprintf(f, "  %-36s %12s\n", name, "not run");
        return;
    }
    fprintf(f, "  %-36s %10.0f %-6s", name, e->per_sec, "ord/s");
    report_print_hist(f, &e->hist);
    fprintf(f, "   (%llu of %llu orders final: %llu successful, %llu out of stock)\n",
            (unsigned long long)e->completed, (unsigned long long)e->posted,
            (unsigned long long)e->successful, (unsigned long long)e->unsuccessful);
}

static void report_print_ratios(FILE *f, const bench_report *rp)
{
    report_ratio v[REPORT_MAX_RATIOS];
    int n = report_ratios(rp, v);
    fprintf(f, "\n  %-50s %10s %10s %8s\n", "target (issue 19)", "measured", "target",
            "");
    bool header = false;
    for (int i = 0; i < n; i++) {
        const report_ratio *r = &v[i];
        if (!r->has_target && !header) {
            fprintf(f, "  %-50s\n", "for reference (no target)");
            header = true;
        }
        char target[24] = "";
        if (r->has_target) {
            snprintf(target, sizeof(target),
                     r->at_most         ? "< %.0f"
                     : r->target >= 100 ? ">= %.0f"
                                        : ">= %.2f",
                     r->target);
        }
        if (!r->ran) {
            fprintf(f, "  %-50s %10s %10s %8s\n", r->label, "-", target,
                    report_verdict(r));
        } else {
            fprintf(f, "  %-50s %10.*f %10s %8s\n", r->label, r->target >= 100 ? 0 : 3,
                    r->measured, target, report_verdict(r));
        }
    }
}

static bool report_proc_met(const bench_proc *p)
{
    return p->idle_kb >= 0 && p->peak_kb >= 0 && p->idle_kb < TARGET_IDLE_KB &&
           p->peak_kb < TARGET_PEAK_KB;
}

static void report_print_rss(FILE *f, const bench_report *rp)
{
    fprintf(f, "\n  %-16s %10s %10s %14s\n", "RSS MiB", "idle", "peak", "target");
    for (int i = 0; i < rp->n_procs; i++) {
        const bench_proc *p = &rp->procs[i];
        bool service = bench_proc_is_service(p->name);
        const char *target = service ? "< 10 / < 40" : "(not a target)";
        if (p->idle_kb < 0 && p->peak_kb < 0) {
            fprintf(f, "  %-16s %10s %10s %14s %s\n", p->name, "?", "?", target,
                    service ? "n/a" : "");
            continue;
        }
        fprintf(f, "  %-16s %10.1f %10.1f %14s %s\n", p->name,
                (double)p->idle_kb / 1024.0, (double)p->peak_kb / 1024.0, target,
                !service             ? ""
                : report_proc_met(p) ? "met"
                                     : "MISSED");
    }
}

void bench_report_print(const bench_report *rp, FILE *f)
{
    char reps[32] = "";
    if (rp->replicas > 0) {
        snprintf(reps, sizeof(reps), ", replicas %d", rp->replicas);
    }
    fprintf(f,
            "\nwebshop bench: %d cores, %.1f s per phase, %d connections, civetweb %d "
            "threads, shop at %s (rpc %s, store %s%s)%s%s\n\n",
            rp->cores, rp->seconds, rp->connections, BENCH_FRONT_HTTP_THREADS, rp->url,
            bench_transport_name(rp->transport), rp->store[0] != '\0' ? rp->store : "?",
            reps, rp->edge ? ", haproxy at " : "", rp->edge ? rp->edge_url : "");
    fprintf(f, "  %-36s %17s %8s %8s %8s\n", "ceilings (same machine, run)", "rate",
            "p50 ms", "p90 ms", "p99 ms");
    report_print_ceiling(f, "civetweb bare, 400 B JSON", &rp->civetweb, "req/s");
    report_print_ceiling(f, "civetweb + nng round trip, tcp",
                         &rp->civetweb_rpc[BENCH_TCP], "req/s");
    report_print_ceiling(f, "civetweb + nng round trip, ipc",
                         &rp->civetweb_rpc[BENCH_IPC], "req/s");
    if (rp->civetweb_rpc[BENCH_TLS].ran || rp->transport == BENCH_TLS) {
        report_print_ceiling(f, "civetweb + nng round trip, tls+tcp",
                             &rp->civetweb_rpc[BENCH_TLS], "req/s");
    }
    char name[64];
    snprintf(name, sizeof(name), "nng req/rep, %d ctx, tcp", BENCH_RPC_CONTEXTS);
    report_print_ceiling(f, name, &rp->nng, "rt/s");
    snprintf(name, sizeof(name), "mosquitto QoS 1, window %d%s", rp->window,
             bench_tls_on() ? ", tls" : "");
    report_print_ceiling(f, name, &rp->mqtt, "msg/s");

    fprintf(f, "\n  %-36s %17s %8s %8s %8s\n", "shop", "rate", "p50 ms", "p90 ms",
            "p99 ms");
    report_print_load(f, "GET /inventory", &rp->inventory, false);
    report_print_load(f, "GET /order/{id}", &rp->order_get, false);
    report_print_load(f, "POST /order -> 201 (max)", &rp->post, true);
    report_print_e2e(f, "orders end to end (max)", rp->e2e_ran, &rp->e2e);
    report_print_load(f, "POST /order -> 201 at half rate", &rp->half_post, true);
    report_print_e2e(f, "orders end to end at half rate", rp->half_ran, &rp->half);
    if (rp->edge) {
        fprintf(f, "\n  %-36s %17s %8s %8s %8s\n", "shop through haproxy", "rate",
                "p50 ms", "p90 ms", "p99 ms");
        report_print_load(f, "GET /inventory via haproxy", &rp->edge_inventory, false);
        report_print_load(f, "GET /order/{id} via haproxy", &rp->edge_order_get, false);
        report_print_load(f, "POST /order -> 201 via haproxy", &rp->edge_post, true);
        report_print_e2e(f, "orders end to end via haproxy", rp->edge_e2e_ran,
                         &rp->edge_e2e);
    }
    report_print_ratios(f, rp);
    report_print_rss(f, rp);
    fputc('\n', f);
    fflush(f);
}

/* ---- JSON ------------------------------------------------------------------- */

static void report_json_hist(FILE *f, const bench_hist *h)
{
    fprintf(f, "\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f",
            report_ms(bench_hist_percentile(h, 50)),
            report_ms(bench_hist_percentile(h, 90)),
            report_ms(bench_hist_percentile(h, 99)), report_ms((double)h->max_ns));
}

static void report_json_load(FILE *f, const char *name, const bench_phase *p, bool comma)
{
    fprintf(f,
            "    \"%s\": {\"ran\": %s, \"per_sec\": %.1f, \"ok\": %llu, "
            "\"accepted_202\": %llu, \"other_status\": %llu, \"io_errors\": %llu, "
            "\"seconds\": %.3f, ",
            name, p->ran ? "true" : "false", bench_load_rate(&p->r),
            (unsigned long long)p->r.ok, (unsigned long long)p->n202,
            (unsigned long long)(p->r.bad_status - p->n202),
            (unsigned long long)p->r.io_errors, p->r.elapsed);
    report_json_hist(f, &p->r.hist);
    fprintf(f, "}%s\n", comma ? "," : "");
}

static void report_json_ceiling(FILE *f, const char *name, const bench_ceiling_row *c,
                                bool comma)
{
    fprintf(
        f,
        "    \"%s\": {\"ran\": %s, \"per_sec\": %.1f, \"ops\": %llu, \"errors\": %llu, ",
        name, c->ran ? "true" : "false", c->c.per_sec, (unsigned long long)c->c.ops,
        (unsigned long long)c->c.errors);
    report_json_hist(f, &c->c.hist);
    fprintf(f, "}%s\n", comma ? "," : "");
}

static void report_json_e2e(FILE *f, const char *name, bool ran, const bench_e2e *e,
                            double rate, bool comma)
{
    fprintf(f,
            "    \"%s\": {\"ran\": %s, \"per_sec\": %.1f, \"offered_per_sec\": %.1f, "
            "\"posted\": %llu, \"completed\": %llu, \"successful\": %llu, "
            "\"unsuccessful\": %llu, ",
            name, ran ? "true" : "false", e->per_sec, rate, (unsigned long long)e->posted,
            (unsigned long long)e->completed, (unsigned long long)e->successful,
            (unsigned long long)e->unsuccessful);
    report_json_hist(f, &e->hist);
    fprintf(f, "}%s\n", comma ? "," : "");
}

static void report_json_ratios(FILE *f, const bench_report *rp)
{
    report_ratio v[REPORT_MAX_RATIOS];
    int n = report_ratios(rp, v);
    fprintf(f, "  \"ratios\": {\n");
    for (int i = 0; i < n; i++) {
        const report_ratio *r = &v[i];
        fprintf(f, "    \"%s\": {\"label\": \"%s\", \"ran\": %s, \"measured\": %.4f",
                r->key, r->label, r->ran ? "true" : "false", r->measured);
        if (r->has_target) {
            fprintf(f, ", \"target\": %.4f, \"op\": \"%s\", \"verdict\": \"%s\"",
                    r->target, r->at_most ? "<" : ">=", report_verdict(r));
        }
        fprintf(f, "}%s\n", i + 1 < n ? "," : "");
    }
    fprintf(f, "  },\n");
}

static void report_json_rss(FILE *f, const bench_report *rp)
{
    fprintf(f, "  \"rss_kib\": {\n");
    for (int i = 0; i < rp->n_procs; i++) {
        const bench_proc *p = &rp->procs[i];
        bool service = bench_proc_is_service(p->name);
        fprintf(f, "    \"%s\": {\"pid\": %d, \"idle\": %ld, \"peak\": %ld", p->name,
                p->pid, p->idle_kb, p->peak_kb);
        if (service) {
            fprintf(f, ", \"target_idle\": %d, \"target_peak\": %d, \"verdict\": \"%s\"",
                    TARGET_IDLE_KB, TARGET_PEAK_KB,
                    p->idle_kb < 0       ? "n/a"
                    : report_proc_met(p) ? "met"
                                         : "MISSED");
        }
        fprintf(f, "}%s\n", i + 1 < rp->n_procs ? "," : "");
    }
    fprintf(f, "  }\n");
}

void bench_report_json_write(const bench_report *rp, FILE *f)
{
    fprintf(
        f,
        "{\n  \"cores\": %d,\n  \"seconds_per_phase\": %.3f,\n  \"connections\": %d,\n"
        "  \"http_threads\": %d,\n  \"rpc_transport\": \"%s\",\n  \"store\": \"%s\",\n"
        "  \"replicas\": %d,\n  \"url\": \"%s\",\n  \"edge_url\": \"%s\",\n",
        rp->cores, rp->seconds, rp->connections, BENCH_FRONT_HTTP_THREADS,
        bench_transport_name(rp->transport), rp->store, rp->replicas, rp->url,
        rp->edge ? rp->edge_url : "");
    fprintf(f, "  \"ceilings\": {\n");
    report_json_ceiling(f, "civetweb", &rp->civetweb, true);
    report_json_ceiling(f, "civetweb_nng_tcp", &rp->civetweb_rpc[BENCH_TCP], true);
    report_json_ceiling(f, "civetweb_nng_ipc", &rp->civetweb_rpc[BENCH_IPC], true);
    if (rp->civetweb_rpc[BENCH_TLS].ran) {
        report_json_ceiling(f, "civetweb_nng_tls", &rp->civetweb_rpc[BENCH_TLS], true);
    }
    report_json_ceiling(f, "nng_reqrep", &rp->nng, true);
    report_json_ceiling(f, "mosquitto_qos1", &rp->mqtt, false);
    fprintf(f, "  },\n  \"shop\": {\n");
    report_json_load(f, "get_inventory", &rp->inventory, true);
    report_json_load(f, "get_order", &rp->order_get, true);
    report_json_load(f, "post_order", &rp->post, true);
    report_json_e2e(f, "orders_e2e", rp->e2e_ran, &rp->e2e, 0, true);
    report_json_load(f, "post_order_half_rate", &rp->half_post, true);
    report_json_e2e(f, "orders_e2e_half_rate", rp->half_ran, &rp->half, rp->half_rate,
                    false);
    if (rp->edge) {
        fprintf(f, "  },\n  \"edge\": {\n");
        report_json_load(f, "get_inventory", &rp->edge_inventory, true);
        report_json_load(f, "get_order", &rp->edge_order_get, true);
        report_json_load(f, "post_order", &rp->edge_post, true);
        report_json_e2e(f, "orders_e2e", rp->edge_e2e_ran, &rp->edge_e2e, 0, false);
        fprintf(f, "  },\n");
    } else {
        fprintf(f, "  },\n  \"edge\": null,\n");
    }
    report_json_ratios(f, rp);
    report_json_rss(f, rp);
    fprintf(f, "}");
}

int bench_report_json(const bench_report *rp, const char *path)
{
    FILE *f = fopen(path, "we");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    bench_report_json_write(rp, f);
    fputc('\n', f);
    return fclose(f) == 0 ? 0 : -1;
}
