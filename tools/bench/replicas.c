/*
 * The replicas comparison; see replicas.h. The figures and the target come
 * from replicas_figures and replicas_target, so the table and the JSON
 * cannot disagree.
 */
#include "replicas.h"

#include <string.h>

/* One figure measured with both replica counts. */
typedef struct replicas_figure {
    const char *key;   /* JSON name */
    const char *label; /* table text */
    int decimals;      /* of a value in the table */
    double a, b;
    bool ran_a, ran_b; /* measured in that run */
} replicas_figure;

/* The figures, in table order; the first is the coordination target's. */
enum {
    FIG_E2E_STOREFRONT,
    FIG_E2E_DIRECT,
    FIG_POST_EDGE,
    FIG_INV_EDGE,
    FIG_INV_P50_EDGE,
    FIG_INV_P50_DIRECT,
    FIG_INV_P99_EDGE,
    FIG_INV_P99_DIRECT,
    FIG_ORD_P50_EDGE,
    FIG_ORD_P50_DIRECT,
    FIG_INV_P50_ADDED,
    FIG_ORD_P50_ADDED,
    FIG_RSS,
    REPLICAS_FIGURES
};

static const struct {
    const char *key, *label;
    int decimals;
} replicas_what[REPLICAS_FIGURES] = {
    {"orders_e2e_per_sec_storefront", "orders/s end to end at the storefront", 0},
    {"orders_e2e_per_sec_direct", "orders/s end to end, direct at one front", 0},
    {"post_order_201_per_sec_via_haproxy", "POST /order -> 201 via haproxy, req/s", 0},
    {"get_inventory_per_sec_via_haproxy", "GET /inventory via haproxy, req/s", 0},
    {"get_inventory_p50_ms_via_haproxy", "GET /inventory p50 via haproxy, ms", 3},
    {"get_inventory_p50_ms_direct", "GET /inventory p50 direct, ms", 3},
    {"get_inventory_p99_ms_via_haproxy", "GET /inventory p99 via haproxy, ms", 3},
    {"get_inventory_p99_ms_direct", "GET /inventory p99 direct, ms", 3},
    {"get_order_p50_ms_via_haproxy", "GET /order/{id} p50 via haproxy, ms", 3},
    {"get_order_p50_ms_direct", "GET /order/{id} p50 direct, ms", 3},
    {"get_inventory_p50_ms_added_by_haproxy", "GET /inventory p50 added by haproxy, ms",
     3},
    {"get_order_p50_ms_added_by_haproxy", "GET /order/{id} p50 added by haproxy, ms", 3},
    {"rss_peak_mib_all_processes", "RSS peak, all processes together, MiB", 1},
};

static double replicas_ratio(double b, double a)
{
    return a > 0 ? b / a : 0.0;
}

static bool replicas_ok(const bench_phase *p)
{
    return p->ran && p->r.ok > 0;
}

static double replicas_rss_mib(const bench_report *rp)
{
    long kb = 0;
    for (int i = 0; i < rp->n_procs; i++) {
        kb += rp->procs[i].peak_kb > 0 ? rp->procs[i].peak_kb : 0;
    }
    return (double)kb / 1024.0;
}

/* p50 of an edge phase minus p50 of its direct twin (one run). */
static double replicas_added(const bench_phase *edge, const bench_phase *direct,
                             bool *ran)
{
    *ran = replicas_ok(edge) && replicas_ok(direct);
    return bench_phase_ms(edge, 50) - bench_phase_ms(direct, 50);
}

/* Figure `fig` of one run; *ran whether it was measured. Orders at the
 * storefront: through the edge, or at the front when the run has none (one
 * replica: no HAProxy). */
static double replicas_value(const bench_report *rp, int fig, bool *ran)
{
    const bench_phase *p = NULL;
    double pct = 50;
    switch (fig) {
    case FIG_E2E_STOREFRONT:
        if (!rp->edge) {
            return replicas_value(rp, FIG_E2E_DIRECT, ran);
        }
        *ran = rp->edge_e2e_ran && rp->edge_e2e.completed > 0;
        return rp->edge_e2e.per_sec;
    case FIG_E2E_DIRECT:
        *ran = rp->e2e_ran && rp->e2e.completed > 0;
        return rp->e2e.per_sec;
    case FIG_POST_EDGE:
        *ran = replicas_ok(&rp->edge_post);
        return bench_phase_rate(&rp->edge_post);
    case FIG_INV_EDGE:
        *ran = replicas_ok(&rp->edge_inventory);
        return bench_phase_rate(&rp->edge_inventory);
    case FIG_INV_P50_ADDED:
        return replicas_added(&rp->edge_inventory, &rp->inventory, ran);
    case FIG_ORD_P50_ADDED:
        return replicas_added(&rp->edge_order_get, &rp->order_get, ran);
    case FIG_RSS:
        *ran = rp->n_procs > 0;
        return replicas_rss_mib(rp);
    case FIG_INV_P99_EDGE:
    case FIG_INV_P99_DIRECT:
        pct = 99;
        p = fig == FIG_INV_P99_EDGE ? &rp->edge_inventory : &rp->inventory;
        break;
    default:
        p = fig == FIG_INV_P50_EDGE     ? &rp->edge_inventory
            : fig == FIG_INV_P50_DIRECT ? &rp->inventory
            : fig == FIG_ORD_P50_EDGE   ? &rp->edge_order_get
                                        : &rp->order_get;
    }
    *ran = replicas_ok(p);
    return bench_phase_ms(p, pct);
}

static void replicas_figures(const bench_report *a, const bench_report *b,
                             replicas_figure *v)
{
    for (int i = 0; i < REPLICAS_FIGURES; i++) {
        v[i].key = replicas_what[i].key;
        v[i].label = replicas_what[i].label;
        v[i].decimals = replicas_what[i].decimals;
        v[i].a = replicas_value(a, i, &v[i].ran_a);
        v[i].b = replicas_value(b, i, &v[i].ran_b);
    }
}

static bool replicas_both(const replicas_figure *v)
{
    return v->ran_a && v->ran_b;
}

/* The coordination target: the first figure, B / A. */
static double replicas_coordination(const replicas_figure *v)
{
    return replicas_ratio(v[0].b, v[0].a);
}

static const char *replicas_verdict(const replicas_figure *v)
{
    return !replicas_both(v)                                 ? "n/a"
           : replicas_coordination(v) >= TARGET_COORDINATION ? "met"
                                                             : "MISSED";
}

/* The target's label: at the storefront (HAProxy or, without one, the front). */
static void replicas_target_label(const bench_report *a, const bench_report *b, char *out,
                                  size_t cap)
{
    snprintf(out, cap, "orders/s e2e at the storefront, %d / %d replicas", b->replicas,
             a->replicas);
}

static const char *replicas_storefront(const bench_report *rp)
{
    return rp->edge ? "haproxy" : "front";
}

/* ---- the table ------------------------------------------------------------- */

void bench_replicas_print(const bench_report *a, const bench_report *b, FILE *f)
{
    replicas_figure fig[REPLICAS_FIGURES];
    replicas_figures(a, b, fig);
    fprintf(f,
            "\nwebshop bench: %d replicas next to %d (back to back, store %s, %d "
            "cores)\n\n",
            b->replicas, a->replicas, b->store[0] != '\0' ? b->store : "?", a->cores);
    char ha[32];
    char hb[32];
    snprintf(ha, sizeof(ha), "%d replica%s", a->replicas, a->replicas == 1 ? "" : "s");
    snprintf(hb, sizeof(hb), "%d replica%s", b->replicas, b->replicas == 1 ? "" : "s");
    fprintf(f, "  %-42s %12s %12s %8s\n", "figure", ha, hb, "B/A");
    fprintf(f, "  %-42s %12s %12s\n", "the storefront (where orders are placed)",
            replicas_storefront(a), replicas_storefront(b));
    for (int i = 0; i < REPLICAS_FIGURES; i++) {
        char va[24] = "-";
        char vb[24] = "-";
        char ratio[24] = "-";
        if (fig[i].ran_a) {
            snprintf(va, sizeof(va), "%.*f", fig[i].decimals, fig[i].a);
        }
        if (fig[i].ran_b) {
            snprintf(vb, sizeof(vb), "%.*f", fig[i].decimals, fig[i].b);
        }
        if (replicas_both(&fig[i]) && fig[i].a > 0) {
            snprintf(ratio, sizeof(ratio), "%.3f", replicas_ratio(fig[i].b, fig[i].a));
        }
        fprintf(f, "  %-42s %12s %12s %8s\n", fig[i].label, va, vb, ratio);
    }
    char label[96];
    replicas_target_label(a, b, label, sizeof(label));
    char target[24];
    snprintf(target, sizeof(target), ">= %.2f", TARGET_COORDINATION);
    fprintf(f, "\n  %-50s %10s %10s %8s\n", "target (issue 14): cost of coordination",
            "measured", "target", "");
    if (replicas_both(fig)) {
        fprintf(f, "  %-50s %10.3f %10s %8s\n", label, replicas_coordination(fig), target,
                replicas_verdict(fig));
    } else {
        fprintf(f, "  %-50s %10s %10s %8s\n", label, "-", target, replicas_verdict(fig));
    }
    fputc('\n', f);
    fflush(f);
}

/* ---- JSON ------------------------------------------------------------------- */

static void replicas_json_body(FILE *f, const bench_report *a, const bench_report *b)
{
    replicas_figure fig[REPLICAS_FIGURES];
    replicas_figures(a, b, fig);
    fprintf(f,
            "  \"comparison\": {\n    \"a\": %d,\n    \"b\": %d,\n    \"figures\": {\n",
            a->replicas, b->replicas);
    for (int i = 0; i < REPLICAS_FIGURES; i++) {
        fprintf(f,
                "      \"%s\": {\"label\": \"%s\", \"ran_a\": %s, \"ran_b\": %s, "
                "\"a\": %.4f, \"b\": %.4f, \"b_of_a\": %.4f}%s\n",
                fig[i].key, fig[i].label, fig[i].ran_a ? "true" : "false",
                fig[i].ran_b ? "true" : "false", fig[i].a, fig[i].b,
                replicas_both(&fig[i]) ? replicas_ratio(fig[i].b, fig[i].a) : 0.0,
                i + 1 < REPLICAS_FIGURES ? "," : "");
    }
    char label[96];
    replicas_target_label(a, b, label, sizeof(label));
    fprintf(f,
            "    },\n    \"targets\": {\n      \"coordination_orders_e2e\": {\"label\": "
            "\"%s\", \"ran\": %s, \"storefront_a\": \"%s\", \"storefront_b\": "
            "\"%s\", \"measured\": %.4f, \"target\": %.4f, \"op\": \">=\", "
            "\"verdict\": \"%s\"}\n    }\n  }\n",
            label, replicas_both(fig) ? "true" : "false", replicas_storefront(a),
            replicas_storefront(b), replicas_coordination(fig), TARGET_COORDINATION,
            replicas_verdict(fig));
}

int bench_replicas_json(const bench_report *a, const bench_report *b, const char *path)
{
    FILE *f = fopen(path, "we");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "{\n  \"replicas\": [%d, %d],\n  \"replicas_%d\": ", a->replicas,
            b->replicas, a->replicas);
    bench_report_json_write(a, f);
    fprintf(f, ",\n  \"replicas_%d\": ", b->replicas);
    bench_report_json_write(b, f);
    fprintf(f, ",\n");
    replicas_json_body(f, a, b);
    fprintf(f, "}\n");
    return fclose(f) == 0 ? 0 : -1;
}
