/*
 * Tests of front/route_stats: a request is counted in exactly the series
 * webshop_http_requests_total{route,status} and
 * webshop_http_request_duration_seconds{route} that a lookup by name finds,
 * for cached statuses and for those outside the table, and concurrent
 * observers lose no count.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>

#include "metrics.h"
#include "route_stats.h"

static ws_counter *requests(ws_metrics *m, const char *route, int status)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "route=\"%s\",status=\"%d\"", route, status);
    return ws_counter_get(m, "webshop_http_requests_total", "", labels);
}

static ws_histogram *latency(ws_metrics *m, const char *route)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "route=\"%s\"", route);
    return ws_histogram_get(m, "webshop_http_request_duration_seconds", "", labels, NULL,
                            0);
}

Test(route_stats, request_counts_in_the_series_found_by_name)
{
    ws_metrics *m = ws_metrics_new();
    route_stats *rs = route_stats_new(m);
    cr_assert(rs != NULL);
    route_stats_observe(rs, ROUTE_ORDER_ID, 200, 0.001);
    route_stats_observe(rs, ROUTE_ORDER_ID, 200, 0.002);
    route_stats_observe(rs, ROUTE_ORDER_ID, 404, 0.001);
    route_stats_observe(rs, ROUTE_INVENTORY, 304, 0.001);
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
    route_stats_observe(rs, ROUTE_ORDER, 600, 0.001);
    route_stats_observe(rs, ROUTE_ORDER, 99, 0.001);
    route_stats_observe(rs, (route_id)42, 500, 0.001);
    cr_expect_eq(ws_counter_value(requests(m, "/order", 600)), 1);
    cr_expect_eq(ws_counter_value(requests(m, "/order", 99)), 1);
    cr_expect_eq(ws_counter_value(requests(m, "other", 500)), 1);
    cr_expect_str_eq(route_stats_name((route_id)42), "other");
    route_stats_observe(NULL, ROUTE_ORDER, 200, 0.001); /* ignored */
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
        route_stats_observe(rs, ROUTE_ORDER_ID, i % 2 ? 200 : 404, 0.0001);
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
