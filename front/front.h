/*
 * The front's wiring, shared by main.c and the route handlers: the RPC
 * clients of both backends, the bus, the catalog cache and the settings the
 * handlers need. Built once by main.c; read-only afterwards (the objects it
 * points to are thread-safe).
 */
#ifndef FRONT_FRONT_H
#define FRONT_FRONT_H

#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "catalog_cache.h"
#include "metrics.h"
#include "place_order.h"
#include "route_stats.h"
#include "rpc_client.h"
#include "status_stream.h"

typedef struct front {
    ws_rpc_client *inventory; /* not owned */
    ws_rpc_client *orders;    /* not owned */
    ws_bus *bus;              /* not owned */
    catalog_cache *catalog;   /* not owned */
    ws_metrics *metrics;      /* not owned */
    route_stats *stats;       /* not owned; per-route series of metrics, resolved
                                 once; NULL = looked up per request */
    uint32_t rpc_deadline_ms;     /* reads */
    uint32_t publish_deadline_ms; /* wait for PUBACK */
    int accept_wait_ms;           /* after the PUBACK, how long POST and DELETE
                                     /order wait for the order service's
                                     commit before answering 202 */
    size_t max_body;              /* POST /order body cap */
    place_order_limits limits;
    const char *openapi; /* the OpenAPI document (JSON), or NULL */
    size_t openapi_len;
    int access_log; /* one log line per request */
    status_stream *statuses; /* not owned: live events for GET /events and the
                                waiters of POST/DELETE /order; NULL = none
                                (writes then answer 202 unless a look-up
                                finds the order committed) */
    int sse_heartbeat_ms;    /* idle time before a heartbeat comment */
    int sse_max_ms;          /* a stream's longest life; the browser reconnects */
} front;

#endif
