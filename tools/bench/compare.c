/*
 * The store comparison; see compare.h. The figures and the two targets
 * come from compare_figures and compare_targets, so the table and the
 * JSON cannot disagree.
 */
#include "compare.h"

#include <string.h>

/* One figure measured on both stores. */
typedef struct compare_figure {
    const char *key;   /* JSON name */
    const char *label; /* table text */
    int decimals;      /* of a value in the table */
    double sqlite, postgres;
    bool ran; /* measured on both */
} compare_figure;

/* One target of issue 13. */
typedef struct compare_target {
    const char *key;
    const char *label;
    double measured, target;
    bool ran;
} compare_target;

#define COMPARE_FIGURES 4
#define COMPARE_TARGETS 2

static double compare_rate(const bench_phase *p)
{
    return p->ran ? bench_load_rate(&p->r) : 0.0;
}

static double compare_half_p99_ms(const bench_report *rp)
{
    return rp->half_post.ran ? bench_hist_percentile(&rp->half_post.r.hist, 99) / 1e6
                             : 0.0;
}

static double compare_ratio(double pg, double sq)
{
    return sq > 0 ? pg / sq : 0.0;
}

static void compare_figures(const bench_report *sq, const bench_report *pg,
                            compare_figure *v)
{
    v[0] = (compare_figure){
        "orders_e2e_per_sec", "orders/s end to end (max)", 0, sq->e2e.per_sec,
        pg->e2e.per_sec,      sq->e2e_ran && pg->e2e_ran};
    v[1] = (compare_figure){"post_order_201_per_sec",
                            "POST /order -> 201 (max), req/s",
                            0,
                            compare_rate(&sq->post),
                            compare_rate(&pg->post),
                            sq->post.ran && pg->post.ran};
    v[2] = (compare_figure){"get_order_per_sec",
                            "GET /order/{id}, req/s",
                            0,
                            compare_rate(&sq->order_get),
                            compare_rate(&pg->order_get),
                            sq->order_get.ran && pg->order_get.ran};
    v[3] = (compare_figure){"half_rate_post_201_p99_ms",
                            "p99 POST->201 at half its own max, ms",
                            3,
                            compare_half_p99_ms(sq),
                            compare_half_p99_ms(pg),
                            sq->half_post.ran && pg->half_post.ran};
}

static void compare_targets(const bench_report *sq, const bench_report *pg,
                            compare_target *v)
{
    v[0] = (compare_target){
        "orders_e2e_postgres_of_sqlite", "orders/s end to end, PostgreSQL / SQLite",
        compare_ratio(pg->e2e.per_sec, sq->e2e.per_sec), TARGET_PG_OF_SQLITE,
        sq->e2e_ran && pg->e2e_ran && sq->e2e.per_sec > 0};
    v[1] = (compare_target){"orders_e2e_per_sec_postgres",
                            "orders/s end to end on PostgreSQL", pg->e2e.per_sec,
                            TARGET_PG_E2E_PER_SEC, pg->e2e_ran};
}

static const char *compare_verdict(const compare_target *t)
{
    return !t->ran ? "n/a" : t->measured >= t->target ? "met" : "MISSED";
}

/* ---- the table ------------------------------------------------------------- */

/* The processes of either run, by name: sq's in order, then pg's others
 * (the postgres cluster); returns their count (at most 2 x BENCH_PROCS_MAX). */
static int compare_proc_names(const bench_report *sq, const bench_report *pg,
                              const char **names)
{
    int n = 0;
    for (int i = 0; i < sq->n_procs; i++) {
        names[n++] = sq->procs[i].name;
    }
    for (int i = 0; i < pg->n_procs; i++) {
        if (bench_proc_find(sq->procs, sq->n_procs, pg->procs[i].name) == NULL) {
            names[n++] = pg->procs[i].name;
        }
    }
    return n;
}

/* "idle / peak" MiB of p into out, "-" when the run has no such process. */
static void compare_mib(const bench_proc *p, char *out, size_t cap)
{
    if (p == NULL || p->idle_kb < 0) {
        snprintf(out, cap, "-");
        return;
    }
    snprintf(out, cap, "%.1f / %8.1f", (double)p->idle_kb / 1024.0,
             (double)p->peak_kb / 1024.0);
}

static long compare_kb(const bench_proc *p, bool peak)
{
    return p == NULL ? -1 : peak ? p->peak_kb : p->idle_kb;
}

static void compare_print_rss(FILE *f, const bench_report *sq, const bench_report *pg)
{
    const char *names[2 * BENCH_PROCS_MAX];
    int n = compare_proc_names(sq, pg, names);
    fprintf(f, "\n  %-40s %21s %21s\n", "RSS MiB, idle / peak", "sqlite", "postgres");
    for (int i = 0; i < n; i++) {
        char a[48];
        char b[48];
        compare_mib(bench_proc_find(sq->procs, sq->n_procs, names[i]), a, sizeof(a));
        compare_mib(bench_proc_find(pg->procs, pg->n_procs, names[i]), b, sizeof(b));
        fprintf(f, "  %-40s %21s %21s\n", names[i], a, b);
    }
}

void bench_compare_print(const bench_report *sq, const bench_report *pg, FILE *f)
{
    compare_figure fig[COMPARE_FIGURES];
    compare_target tgt[COMPARE_TARGETS];
    compare_figures(sq, pg, fig);
    compare_targets(sq, pg, tgt);
    fprintf(f,
            "\nwebshop bench: the shop on PostgreSQL next to SQLite (back to back, %d "
            "cores)\n\n",
            sq->cores);
    fprintf(f, "  %-40s %10s %10s %10s\n", "figure", "sqlite", "postgres", "pg/sqlite");
    for (int i = 0; i < COMPARE_FIGURES; i++) {
        fprintf(f, "  %-40s %10.*f %10.*f", fig[i].label, fig[i].decimals, fig[i].sqlite,
                fig[i].decimals, fig[i].postgres);
        if (fig[i].ran && fig[i].sqlite > 0) {
            fprintf(f, " %10.3f\n", compare_ratio(fig[i].postgres, fig[i].sqlite));
        } else {
            fprintf(f, " %10s\n", "-");
        }
    }
    compare_print_rss(f, sq, pg);
    fprintf(f, "\n  %-50s %10s %10s %8s\n", "target (issue 13)", "measured", "target",
            "");
    for (int i = 0; i < COMPARE_TARGETS; i++) {
        char target[24];
        snprintf(target, sizeof(target), tgt[i].target >= 100 ? ">= %.0f" : ">= %.2f",
                 tgt[i].target);
        if (tgt[i].ran) {
            fprintf(f, "  %-50s %10.*f %10s %8s\n", tgt[i].label,
                    tgt[i].target >= 100 ? 0 : 3, tgt[i].measured, target,
                    compare_verdict(&tgt[i]));
        } else {
            fprintf(f, "  %-50s %10s %10s %8s\n", tgt[i].label, "-", target,
                    compare_verdict(&tgt[i]));
        }
    }
    fputc('\n', f);
    fflush(f);
}

/* ---- JSON ------------------------------------------------------------------- */

static void compare_json_rss(FILE *f, const bench_report *sq, const bench_report *pg)
{
    const char *names[2 * BENCH_PROCS_MAX];
    int n = compare_proc_names(sq, pg, names);
    fprintf(f, "    \"rss_kib\": {\n");
    for (int i = 0; i < n; i++) {
        const bench_proc *a = bench_proc_find(sq->procs, sq->n_procs, names[i]);
        const bench_proc *b = bench_proc_find(pg->procs, pg->n_procs, names[i]);
        fprintf(f,
                "      \"%s\": {\"sqlite\": {\"idle\": %ld, \"peak\": %ld}, "
                "\"postgres\": {\"idle\": %ld, \"peak\": %ld}}%s\n",
                names[i], compare_kb(a, false), compare_kb(a, true), compare_kb(b, false),
                compare_kb(b, true), i + 1 < n ? "," : "");
    }
    fprintf(f, "    },\n");
}

static void compare_json_body(FILE *f, const bench_report *sq, const bench_report *pg)
{
    compare_figure fig[COMPARE_FIGURES];
    compare_target tgt[COMPARE_TARGETS];
    compare_figures(sq, pg, fig);
    compare_targets(sq, pg, tgt);
    fprintf(f, "  \"comparison\": {\n    \"figures\": {\n");
    for (int i = 0; i < COMPARE_FIGURES; i++) {
        fprintf(f,
                "      \"%s\": {\"label\": \"%s\", \"ran\": %s, \"sqlite\": %.4f, "
                "\"postgres\": %.4f, \"postgres_of_sqlite\": %.4f}%s\n",
                fig[i].key, fig[i].label, fig[i].ran ? "true" : "false", fig[i].sqlite,
                fig[i].postgres, compare_ratio(fig[i].postgres, fig[i].sqlite),
                i + 1 < COMPARE_FIGURES ? "," : "");
    }
    fprintf(f, "    },\n");
    compare_json_rss(f, sq, pg);
    fprintf(f, "    \"targets\": {\n");
    for (int i = 0; i < COMPARE_TARGETS; i++) {
        fprintf(f,
                "      \"%s\": {\"label\": \"%s\", \"ran\": %s, \"measured\": %.4f, "
                "\"target\": %.4f, \"op\": \">=\", \"verdict\": \"%s\"}%s\n",
                tgt[i].key, tgt[i].label, tgt[i].ran ? "true" : "false", tgt[i].measured,
                tgt[i].target, compare_verdict(&tgt[i]),
                i + 1 < COMPARE_TARGETS ? "," : "");
    }
    fprintf(f, "    }\n  }\n");
}

int bench_compare_json(const bench_report *sq, const bench_report *pg, const char *path)
{
    FILE *f = fopen(path, "we");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    fprintf(f, "{\n  \"store\": \"both\",\n  \"sqlite\": ");
    bench_report_json_write(sq, f);
    fprintf(f, ",\n  \"postgres\": ");
    bench_report_json_write(pg, f);
    fprintf(f, ",\n");
    compare_json_body(f, sq, pg);
    fprintf(f, "}\n");
    return fclose(f) == 0 ? 0 : -1;
}
