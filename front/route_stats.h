/*
 * The front's per-request metrics without a per-request lookup: the series
 * webshop_http_requests_total{route,method,status} and
 * webshop_http_request_duration_seconds{route,method} are resolved in the
 * registry the first time a (route, method[, status]) is seen and kept in
 * a fixed table indexed by route, method and status, read without a lock.
 * ws_counter_get on every request took a registry-wide mutex, a malloc and
 * a label canonicalisation. The method label keeps GET and DELETE of
 * /order/{id} apart; methods outside the table count as method="other", so
 * a client cannot grow the registry by inventing methods.
 */
#ifndef FRONT_ROUTE_STATS_H
#define FRONT_ROUTE_STATS_H

#include "metrics.h"

/* The routes the front counts, as their label values. */
typedef enum route_id {
    ROUTE_INVENTORY, /* "/inventory" */
    ROUTE_ORDER,     /* "/order" */
    ROUTE_ORDER_ID,  /* "/order/{id}" */
    ROUTE_OTHER,     /* "other": unknown paths */
    ROUTE_COUNT
} route_id;

typedef struct route_stats route_stats;

/* The label value of route ("/inventory", ...); "other" out of range. */
const char *route_stats_name(route_id route);

/* The method label value of an HTTP method: "GET", "HEAD", "POST", "PUT",
 * "DELETE", "PATCH", "OPTIONS", or "other" for anything else (NULL too).
 * Never NULL. */
const char *route_stats_method(const char *method);

/* A table over registry m (which must outlive it); NULL on ENOMEM. */
route_stats *route_stats_new(ws_metrics *m);

/* Free the table (not the series, which the registry owns); rs may be
 * NULL. */
void route_stats_free(route_stats *rs);

/* Count one finished request of route with HTTP method (as received; NULL
 * counts as "other") and status (100..599; any other value is counted
 * under its own label through a plain lookup) that took seconds. Any
 * thread, lock-free once the series exist. rs may be NULL: nothing is
 * counted. */
void route_stats_observe(route_stats *rs, route_id route, const char *method, int status,
                         double seconds);

#endif
