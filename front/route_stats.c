/*
 * Per-route request metrics of the front; see route_stats.h. Every slot
 * starts NULL and is filled once with the registry's series: racing
 * threads get the same pointer from ws_counter_get / ws_histogram_get, so
 * a lost race costs only a lookup. Series are made on first use, so
 * /metrics shows only the (route, method) pairs that were requested.
 */
#include "route_stats.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROUTE_STATS_MIN_STATUS 100
#define ROUTE_STATS_N_STATUS   500 /* 100..599 */

#define ROUTE_STATS_REQUESTS "webshop_http_requests_total"
#define ROUTE_STATS_LATENCY  "webshop_http_request_duration_seconds"

static const char *const route_stats_names[ROUTE_COUNT] = {
    [ROUTE_INVENTORY] = "/inventory",
    [ROUTE_ORDER] = "/order",
    [ROUTE_ORDER_ID] = "/order/{id}",
    [ROUTE_OTHER] = "other",
};

/* The method labels; the last is every other method. */
static const char *const route_stats_methods[] = {"GET",   "HEAD",  "POST",    "PUT",
                                                  "DELETE", "PATCH", "OPTIONS", "other"};
#define ROUTE_STATS_N_METHODS (sizeof(route_stats_methods) / sizeof(route_stats_methods[0]))

struct route_stats {
    ws_metrics *metrics; /* not owned */
    /* Owned by the registry. */
    _Atomic(ws_histogram *) latency[ROUTE_COUNT][ROUTE_STATS_N_METHODS];
    _Atomic(ws_counter *) requests[ROUTE_COUNT][ROUTE_STATS_N_METHODS][ROUTE_STATS_N_STATUS];
};

const char *route_stats_name(route_id route)
{
    return (unsigned)route < ROUTE_COUNT ? route_stats_names[route] : "other";
}

static size_t route_stats_method_index(const char *method)
{
    for (size_t i = 0; method != NULL && i + 1 < ROUTE_STATS_N_METHODS; i++) {
        if (strcmp(method, route_stats_methods[i]) == 0) {
            return i;
        }
    }
    return ROUTE_STATS_N_METHODS - 1;
}

const char *route_stats_method(const char *method)
{
    return route_stats_methods[route_stats_method_index(method)];
}

route_stats *route_stats_new(ws_metrics *m)
{
    /* calloc: NULL slots (an all-zero atomic pointer is a NULL one). */
    route_stats *rs = calloc(1, sizeof(*rs));
    if (rs == NULL) {
        return NULL;
    }
    rs->metrics = m;
    return rs;
}

void route_stats_free(route_stats *rs)
{
    free(rs);
}

static ws_counter *route_stats_counter(route_stats *rs, route_id route, size_t method,
                                       int status)
{
    char labels[128];
    snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\",status=\"%d\"",
             route_stats_name(route), route_stats_methods[method], status);
    return ws_counter_get(rs->metrics, ROUTE_STATS_REQUESTS,
                          "HTTP requests by route, method and status", labels);
}

static ws_histogram *route_stats_latency(route_stats *rs, route_id route, size_t method)
{
    ws_histogram *h =
        atomic_load_explicit(&rs->latency[route][method], memory_order_acquire);
    if (h == NULL) {
        char labels[96];
        snprintf(labels, sizeof(labels), "route=\"%s\",method=\"%s\"",
                 route_stats_name(route), route_stats_methods[method]);
        h = ws_histogram_get(rs->metrics, ROUTE_STATS_LATENCY,
                             "HTTP request latency by route and method", labels, NULL, 0);
        atomic_store_explicit(&rs->latency[route][method], h, memory_order_release);
    }
    return h;
}

void route_stats_observe(route_stats *rs, route_id route, const char *method, int status,
                         double seconds)
{
    if (rs == NULL) {
        return;
    }
    if ((unsigned)route >= ROUTE_COUNT) {
        route = ROUTE_OTHER;
    }
    size_t mi = route_stats_method_index(method);
    ws_histogram_observe(route_stats_latency(rs, route, mi), seconds);
    unsigned slot = (unsigned)(status - ROUTE_STATS_MIN_STATUS);
    if (slot >= ROUTE_STATS_N_STATUS) {
        ws_counter_inc(route_stats_counter(rs, route, mi, status));
        return;
    }
    ws_counter *c =
        atomic_load_explicit(&rs->requests[route][mi][slot], memory_order_acquire);
    if (c == NULL) {
        c = route_stats_counter(rs, route, mi, status);
        atomic_store_explicit(&rs->requests[route][mi][slot], c, memory_order_release);
    }
    ws_counter_inc(c);
}
