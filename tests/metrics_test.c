/*
 * Tests of lib/metrics: the Prometheus text exposition against golden text,
 * exact totals under concurrent updates, histogram bucketing, identity of
 * metrics by name and labels, refusal of bad names, labels and type clashes,
 * and escaping of label values and HELP text.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "metrics.h"

static char *render(ws_metrics *m)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    cr_assert_eq(ws_metrics_render(m, &b), WS_OK);
    char *s = ws_buf_steal(&b, NULL);
    cr_assert(s != NULL);
    return s;
}

Test(metrics, render_matches_golden_text)
{
    ws_metrics *m = ws_metrics_new();
    cr_assert(m != NULL);
    ws_counter *ok = ws_counter_get(m, "webshop_rpc_calls_total", "RPC calls served.",
                                    "method=\"GetOrder\",code=\"OK\"");
    ws_counter *nf = ws_counter_get(m, "webshop_rpc_calls_total", "RPC calls served.",
                                    "method=\"GetOrder\",code=\"NOT_FOUND\"");
    ws_gauge *g = ws_gauge_get(m, "webshop_inflight", "Requests in flight.", NULL);
    static const double bounds[] = {0.1, 0.5, 1};
    ws_histogram *h = ws_histogram_get(m, "webshop_latency_seconds", "Latency.",
                                       "route=\"/order\"", bounds, 3);
    ws_counter_add(ok, 41);
    ws_counter_inc(ok);
    ws_counter_inc(nf);
    ws_gauge_set(g, 3);
    ws_gauge_add(g, -0.5);
    ws_histogram_observe(h, 0.05);
    ws_histogram_observe(h, 0.1); /* on a bound: counted in that bucket */
    ws_histogram_observe(h, 0.7);
    ws_histogram_observe(h, 2);
    char *s = render(m);
    cr_expect_str_eq(s,
                     "# HELP webshop_rpc_calls_total RPC calls served.\n"
                     "# TYPE webshop_rpc_calls_total counter\n"
                     "webshop_rpc_calls_total{method=\"GetOrder\",code=\"OK\"} 42\n"
                     "webshop_rpc_calls_total{method=\"GetOrder\",code=\"NOT_FOUND\"} 1\n"
                     "# HELP webshop_inflight Requests in flight.\n"
                     "# TYPE webshop_inflight gauge\n"
                     "webshop_inflight 2.5\n"
                     "# HELP webshop_latency_seconds Latency.\n"
                     "# TYPE webshop_latency_seconds histogram\n"
                     "webshop_latency_seconds_bucket{route=\"/order\",le=\"0.1\"} 2\n"
                     "webshop_latency_seconds_bucket{route=\"/order\",le=\"0.5\"} 2\n"
                     "webshop_latency_seconds_bucket{route=\"/order\",le=\"1\"} 3\n"
                     "webshop_latency_seconds_bucket{route=\"/order\",le=\"+Inf\"} 4\n"
                     "webshop_latency_seconds_sum{route=\"/order\"} 2.85\n"
                     "webshop_latency_seconds_count{route=\"/order\"} 4\n");
    free(s);
    ws_metrics_free(m);
}

Test(metrics, empty_registry_renders_nothing)
{
    ws_metrics *m = ws_metrics_new();
    char *s = render(m);
    cr_expect_str_eq(s, "");
    free(s);
    ws_metrics_free(m);
}

Test(metrics, histogram_without_bounds_uses_default_latency_buckets)
{
    ws_metrics *m = ws_metrics_new();
    ws_histogram *h = ws_histogram_get(m, "lat", "l", NULL, NULL, 0);
    cr_assert(h != NULL);
    ws_histogram_observe(h, 0.003);
    ws_histogram_observe(h, 100);
    cr_expect_eq(ws_histogram_count(h), 2);
    char *s = render(m);
    cr_expect(strstr(s, "lat_bucket{le=\"0.0001\"} 0\n") != NULL, "%s", s);
    cr_expect(strstr(s, "lat_bucket{le=\"0.0025\"} 0\n") != NULL, "%s", s);
    cr_expect(strstr(s, "lat_bucket{le=\"0.005\"} 1\n") != NULL, "%s", s);
    cr_expect(strstr(s, "lat_bucket{le=\"10\"} 1\n") != NULL, "%s", s);
    cr_expect(strstr(s, "lat_bucket{le=\"+Inf\"} 2\n") != NULL, "%s", s);
    cr_expect(strstr(s, "lat_sum 100.003\nlat_count 2\n") != NULL, "%s", s);
    free(s);
    ws_metrics_free(m);
}

Test(metrics, same_name_and_labels_give_same_metric)
{
    ws_metrics *m = ws_metrics_new();
    ws_counter *a = ws_counter_get(m, "c_total", "h", "a=\"1\",b=\"2\"");
    ws_counter *b = ws_counter_get(m, "c_total", "h", "a=\"1\", b=\"2\"");
    ws_counter *c = ws_counter_get(m, "c_total", "h", "a=\"1\",b=\"3\"");
    ws_counter *d = ws_counter_get(m, "c_total", "h", NULL);
    ws_counter *e = ws_counter_get(m, "c_total", "h", "");
    cr_expect(a != NULL && c != NULL && d != NULL);
    cr_expect_eq(a, b);
    cr_expect_neq(a, c);
    cr_expect_eq(d, e);
    char *s = render(m);
    /* HELP and TYPE once per name, however many series. */
    cr_expect_eq(strstr(strstr(s, "# TYPE") + 1, "# TYPE"), NULL);
    free(s);
    ws_metrics_free(m);
}

Test(metrics, name_registered_as_another_type_is_refused)
{
    ws_metrics *m = ws_metrics_new();
    cr_assert(ws_counter_get(m, "x", "h", NULL) != NULL);
    cr_expect_null(ws_gauge_get(m, "x", "h", NULL));
    cr_expect_null(ws_histogram_get(m, "x", "h", "a=\"b\"", NULL, 0));
    ws_metrics_free(m);
}

Test(metrics, bad_names_and_label_sets_are_refused)
{
    ws_metrics *m = ws_metrics_new();
    cr_expect_null(ws_counter_get(m, "", "h", NULL));
    cr_expect_null(ws_counter_get(m, "1abc", "h", NULL));
    cr_expect_null(ws_counter_get(m, "has space", "h", NULL));
    cr_expect_null(ws_counter_get(m, "dash-name", "h", NULL));
    cr_expect_null(ws_counter_get(m, NULL, "h", NULL));
    cr_expect_null(ws_counter_get(m, "ok", "h", "a=1"));
    cr_expect_null(ws_counter_get(m, "ok", "h", "a=\"1"));
    cr_expect_null(ws_counter_get(m, "ok", "h", "=\"1\""));
    cr_expect_null(ws_counter_get(m, "ok", "h", "a-b=\"1\""));
    cr_expect_null(ws_counter_get(m, "ok", "h", "a=\"1\" b=\"2\""));
    cr_expect_null(ws_histogram_get(m, "hist", "h", "le=\"1\"", NULL, 0));
    static const double unsorted[] = {1, 0.5};
    cr_expect_null(ws_histogram_get(m, "hist", "h", NULL, unsorted, 2));
    static const double dup[] = {1, 1};
    cr_expect_null(ws_histogram_get(m, "hist", "h", NULL, dup, 2));
    cr_expect(ws_counter_get(m, "ns:sub_total", "h", "a_1=\"x\",") != NULL);
    ws_metrics_free(m);
}

Test(metrics, label_values_and_help_are_escaped)
{
    ws_metrics *m = ws_metrics_new();
    ws_counter *c =
        ws_counter_get(m, "esc_total", "line one\nback\\slash \"q\"",
                       "path=\"C:\\\\dir\",q=\"say \\\"hi\\\"\",nl=\"a\\nb\"");
    cr_assert(c != NULL);
    ws_counter_inc(c);
    char *s = render(m);
    cr_expect_str_eq(
        s, "# HELP esc_total line one\\nback\\\\slash \"q\"\n"
           "# TYPE esc_total counter\n"
           "esc_total{path=\"C:\\\\dir\",q=\"say \\\"hi\\\"\",nl=\"a\\nb\"} 1\n");
    free(s);
    ws_metrics_free(m);
}

Test(metrics, gauge_renders_special_values)
{
    ws_metrics *m = ws_metrics_new();
    ws_gauge *a = ws_gauge_get(m, "g", "h", "k=\"inf\"");
    ws_gauge *b = ws_gauge_get(m, "g", "h", "k=\"ninf\"");
    ws_gauge *c = ws_gauge_get(m, "g", "h", "k=\"nan\"");
    ws_gauge *d = ws_gauge_get(m, "g", "h", "k=\"third\"");
    ws_gauge_set(a, INFINITY);
    ws_gauge_set(b, -INFINITY);
    ws_gauge_set(c, NAN);
    ws_gauge_set(d, 1.0 / 3.0);
    char *s = render(m);
    cr_expect(strstr(s, "g{k=\"inf\"} +Inf\n") != NULL, "%s", s);
    cr_expect(strstr(s, "g{k=\"ninf\"} -Inf\n") != NULL, "%s", s);
    cr_expect(strstr(s, "g{k=\"nan\"} NaN\n") != NULL, "%s", s);
    cr_expect(strstr(s, "g{k=\"third\"} 0.3333333333333333\n") != NULL, "%s", s);
    free(s);
    ws_metrics_free(m);
}

Test(metrics, null_metrics_are_ignored)
{
    ws_counter_inc(NULL);
    ws_counter_add(NULL, 5);
    ws_gauge_set(NULL, 1);
    ws_gauge_add(NULL, 1);
    ws_histogram_observe(NULL, 1);
    cr_expect_eq(ws_counter_value(NULL), 0);
    cr_expect_eq(ws_gauge_value(NULL), 0.0);
    cr_expect_eq(ws_histogram_count(NULL), 0);
    ws_metrics_free(NULL);
}

#define THREADS    8
#define PER_THREAD 100000

typedef struct hammer_arg {
    ws_metrics *m;
    pthread_barrier_t *start;
} hammer_arg;

static void *hammer(void *p)
{
    hammer_arg *a = p;
    /* Each thread looks the metrics up itself, so get() races too. */
    ws_counter *c = ws_counter_get(a->m, "hits_total", "h", "k=\"v\"");
    ws_gauge *g = ws_gauge_get(a->m, "level", "h", NULL);
    ws_histogram *h = ws_histogram_get(a->m, "obs", "h", NULL, NULL, 0);
    pthread_barrier_wait(a->start);
    for (int i = 0; i < PER_THREAD; i++) {
        ws_counter_inc(c);
        ws_gauge_add(g, 1.0);
        ws_histogram_observe(h, (i % 2) ? 0.002 : 20.0);
    }
    return NULL;
}

Test(metrics, concurrent_updates_are_exact)
{
    ws_metrics *m = ws_metrics_new();
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    pthread_t t[THREADS];
    hammer_arg arg = {m, &start};
    for (int i = 0; i < THREADS; i++) {
        cr_assert(pthread_create(&t[i], NULL, hammer, &arg) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_barrier_destroy(&start);
    ws_counter *c = ws_counter_get(m, "hits_total", "h", "k=\"v\"");
    ws_gauge *g = ws_gauge_get(m, "level", "h", NULL);
    ws_histogram *h = ws_histogram_get(m, "obs", "h", NULL, NULL, 0);
    cr_expect_eq(ws_counter_value(c), (uint64_t)THREADS * PER_THREAD);
    cr_expect_eq(ws_gauge_value(g), (double)THREADS * PER_THREAD);
    cr_expect_eq(ws_histogram_count(h), (uint64_t)THREADS * PER_THREAD);
    char *s = render(m);
    cr_expect(strstr(s, "obs_bucket{le=\"0.0025\"} 400000\n") != NULL, "%s", s);
    cr_expect(strstr(s, "obs_bucket{le=\"10\"} 400000\n") != NULL, "%s", s);
    cr_expect(strstr(s, "obs_bucket{le=\"+Inf\"} 800000\n") != NULL, "%s", s);
    cr_expect(strstr(s, "obs_count 800000\n") != NULL, "%s", s);
    free(s);
    ws_metrics_free(m);
}

Test(metrics, default_registry_is_shared_and_recreated_after_free)
{
    ws_metrics *a = ws_metrics_default();
    cr_assert(a != NULL);
    cr_expect_eq(ws_metrics_default(), a);
    ws_counter *c = ws_counter_get(a, "d_total", "h", NULL);
    ws_counter_inc(c);
    ws_metrics_free(a);
    ws_metrics *b = ws_metrics_default();
    cr_assert(b != NULL);
    char *s = render(b);
    cr_expect_str_eq(s, "");
    free(s);
    ws_metrics_free(b);
}

Test(metrics, monotonic_clock_does_not_go_back)
{
    double prev = ws_now_seconds();
    cr_expect(prev > 0);
    for (int i = 0; i < 1000; i++) {
        double now = ws_now_seconds();
        cr_assert(now >= prev);
        prev = now;
    }
}
