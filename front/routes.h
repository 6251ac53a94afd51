/*
 * The front's HTTP routes (DESIGN.md "HTTP API"): request parsing,
 * validation, the RPC or publish behind each route, and the mapping of
 * every outcome onto an HTTP status with a JSON error body.
 */
#ifndef FRONT_ROUTES_H
#define FRONT_ROUTES_H

#include "front.h"
#include "http.h"
#include "rpc.h"

/* Register every route of the API on h; f must outlive h. */
void routes_install(ws_http *h, front *f);

/* The HTTP status that reports an RPC outcome: NOT_FOUND 404,
 * INVALID_ARGUMENT 400, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, ... */
int routes_http_status(ws_rpc_code code);

#endif
