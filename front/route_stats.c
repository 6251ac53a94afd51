/*
 * Per-route request metrics of the front; see route_stats.h. A counter
 * slot starts NULL and is filled once with the registry's series: racing
 * threads get the same pointer from ws_counter_get, so a lost race costs
 * only a lookup.
 */
#include "route_stats.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#define ROUTE_STATS_MIN_STATUS 100
#define ROUTE_STATS_N_STATUS   500 /* 100..599 */

static const char *const route_stats_names[ROUTE_COUNT] = {
    [ROUTE_INVENTORY] = "/inventory",
    [ROUTE_ORDER] = "/order",
    [ROUTE_ORDER_ID] = "/order/{id}",
    [ROUTE_OTHER] = "other",
};

struct route_stats {
    ws_metrics *metrics;                /* not owned */
    ws_histogram *latency[ROUTE_COUNT]; /* owned by the registry */
    _Atomic(ws_counter *) requests[ROUTE_COUNT][ROUTE_STATS_N_STATUS]; /* ditto */
};

const char *route_stats_name(route_id route)
{
    return (unsigned)route < ROUTE_COUNT ? route_stats_names[route] : "other";
}

route_stats *route_stats_new(ws_metrics *m)
{
    route_stats *rs = calloc(1, sizeof(*rs));
    if (rs == NULL) {
        return NULL;
    }
    rs->metrics = m;
    for (int r = 0; r < ROUTE_COUNT; r++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "route=\"%s\"", route_stats_names[r]);
        rs->latency[r] =
            ws_histogram_get(m, "webshop_http_request_duration_seconds",
                             "HTTP request latency by route", labels, NULL, 0);
        for (int s = 0; s < ROUTE_STATS_N_STATUS; s++) {
            atomic_init(&rs->requests[r][s], NULL);
        }
    }
    return rs;
}

void route_stats_free(route_stats *rs)
{
    free(rs);
}

static ws_counter *route_stats_counter(route_stats *rs, route_id route, int status)
{
    char labels[96];
    snprintf(labels, sizeof(labels), "route=\"%s\",status=\"%d\"",
             route_stats_name(route), status);
    return ws_counter_get(rs->metrics, "webshop_http_requests_total",
                          "HTTP requests by route and status", labels);
}

void route_stats_observe(route_stats *rs, route_id route, int status, double seconds)
{
    if (rs == NULL) {
        return;
    }
    if ((unsigned)route >= ROUTE_COUNT) {
        route = ROUTE_OTHER;
    }
    ws_histogram_observe(rs->latency[route], seconds);
    unsigned slot = (unsigned)(status - ROUTE_STATS_MIN_STATUS);
    if (slot >= ROUTE_STATS_N_STATUS) {
        ws_counter_inc(route_stats_counter(rs, route, status));
        return;
    }
    ws_counter *c =
        atomic_load_explicit(&rs->requests[route][slot], memory_order_acquire);
    if (c == NULL) {
        c = route_stats_counter(rs, route, status);
        atomic_store_explicit(&rs->requests[route][slot], c, memory_order_release);
    }
    ws_counter_inc(c);
}
