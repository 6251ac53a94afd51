/*
 * Tests of front/route_stats: a request is counted in exactly the series
 * webshop_http_requests_total{route,method,status} and
 * webshop_http_request_duration_seconds{route,method} that a lookup by name
 * finds, for cached statuses and for those outside the table; GET and
 * DELETE of one route are separate series; unknown methods share one
 * "other"; and concurrent observers lose no count.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "metrics.h"
#include "route_stats.h"

static ws_counter *requests_m(ws_metrics *m, const char *route, const char *method,
                              int status)
{
    char labels[128];
    snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\",status=\"%d\"", route,
             method, status);
    return ws_counter_get(m, "webshop_http_requests_total", "", labels);
}

static ws_counter *requests(ws_metrics *m, const char *route, int status)
{
    return requests_m(m, route, "GET", status);
}

static ws_histogram *latency_m(ws_metrics *m, const char *route, const char *method)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\"", route, method);
    return ws_histogram_get(m, "webshop_http_request_duration_seconds", "", labels, NULL,
                            0);
}

static ws_histogram *latency(ws_metrics *m, const char *route)
{
    return latency_m(m, route, "GET");
}

Test(route_stats, request_counts_in_the_series_found_by_name)
{
    ws_metrics *m = ws_metrics_new();
    route_stats *rs = route_stats_new(m);
    cr_assert(rs != NULL);
    route_stats_observe(rs, ROUTE_ORDER_ID, "GET", 200, 0.001);
    route_stats_observe(rs, ROUTE_ORDER_ID, "GET", 200, 0.002);
    route_stats_observe(rs, ROUTE_ORDER_ID, "GET", 404, 0.001);
    route_stats_observe(rs, ROUTE_INVENTORY, "GET", 304, 0.001);
    cr_expect_eq(ws_counter_value(requests(m, "/order/{id}", 200)), 2);
    cr_expect_eq(ws_counter_value(requests(m, "/order/{id}", 404)), 1);
    cr_expect_eq(ws_counter_value(requests(m, "/inventory", 304)), 1);
    cr_expect_eq(ws_counter_value(requests(m, "/inventory", 200)), 0);
    cr_expect_eq(ws_histogram_count(latency(m, "/order/{id}")), 3);
    cr_expect_eq(ws_histogram_count(latency(m, "/inventory")), 1);
    route_stats_free(rs);
    ws_metrics_free(m);
}

Test(route_stats, status_outside_the_table_and_bad_route_still_count)
{
    ws_metrics *m = ws_metrics_new();
    route_stats *rs = route_stats_new(m);
    cr_assert(rs != NULL);
    route_stats_observe(rs, ROUTE_ORDER, "GET", 600, 0.001);
    route_stats_observe(rs, ROUTE_ORDER, "GET", 99, 0.001);
    route_stats_observe(rs, (route_id)42, "GET", 500, 0.001);
    cr_expect_eq(ws_counter_value(requests(m, "/order", 600)), 1);
    cr_expect_eq(ws_counter_value(requests(m, "/order", 99)), 1);
    cr_expect_eq(ws_counter_value(requests(m, "other", 500)), 1);
    cr_expect_str_eq(route_stats_name((route_id)42), "other");
    route_stats_observe(NULL, ROUTE_ORDER, "GET", 200, 0.001); /* ignored */
    route_stats_free(rs);
    route_stats_free(NULL);
    ws_metrics_free(m);
}

#define THREADS    4
#define PER_THREAD 20000

static void *observe_many(void *arg)
{
    route_stats *rs = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        route_stats_observe(rs, ROUTE_ORDER_ID, "GET", i % 2 ? 200 : 404, 0.0001);
    }
    return NULL;
}

Test(route_stats, concurrent_observers_lose_no_count)
{
    ws_metrics *m = ws_metrics_new();
    route_stats *rs = route_stats_new(m);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        cr_assert_eq(pthread_create(&t[i], NULL, observe_many, rs), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    cr_expect_eq(ws_counter_value(requests(m, "/order/{id}", 200)),
                 THREADS * PER_THREAD / 2);
    cr_expect_eq(ws_counter_value(requests(m, "/order/{id}", 404)),
                 THREADS * PER_THREAD / 2);
    cr_expect_eq(ws_histogram_count(latency(m, "/order/{id}")), THREADS * PER_THREAD);
    route_stats_free(rs);
    ws_metrics_free(m);
}

Test(route_stats, get_and_delete_of_one_route_are_separate_series)
{
    ws_metrics *m = ws_metrics_new();
    route_stats *rs = route_stats_new(m);
    cr_assert(rs != NULL);
    route_stats_observe(rs, ROUTE_ORDER_ID, "GET", 200, 0.001);
    route_stats_observe(rs, ROUTE_ORDER_ID, "DELETE", 200, 0.001);
    route_stats_observe(rs, ROUTE_ORDER_ID, "DELETE", 200, 0.001);
    route_stats_observe(rs, ROUTE_ORDER_ID, "BREW", 405, 0.001);
    route_stats_observe(rs, ROUTE_ORDER_ID, "COFFEE", 405, 0.001);
    route_stats_observe(rs, ROUTE_ORDER_ID, NULL, 405, 0.001);
    cr_expect_eq(ws_counter_value(requests_m(m, "/order/{id}", "GET", 200)), 1);
    cr_expect_eq(ws_counter_value(requests_m(m, "/order/{id}", "DELETE", 200)), 2);
    cr_expect_eq(ws_counter_value(requests_m(m, "/order/{id}", "other", 405)), 3);
    cr_expect_eq(ws_histogram_count(latency_m(m, "/order/{id}", "GET")), 1);
    cr_expect_eq(ws_histogram_count(latency_m(m, "/order/{id}", "DELETE")), 2);
    cr_expect_str_eq(route_stats_method("PATCH"), "PATCH");
    cr_expect_str_eq(route_stats_method("get"), "other");
    ws_buf out;
    ws_buf_init(&out, 0);
    cr_assert_eq(ws_metrics_render(m, &out), WS_OK);
    cr_expect(strstr(out.data, "webshop_http_requests_total{route=\"/order/{id}\","
                               "method=\"DELETE\",status=\"200\"} 2\n") != NULL,
              "%s", out.data);
    cr_expect(strstr(out.data, "method=\"HEAD\"") == NULL, "series made before use");
    ws_buf_fini(&out);
    route_stats_free(rs);
    ws_metrics_free(m);
}
