/*
 * The front's HTTP routes (DESIGN.md "HTTP API"): the handlers of
 * front.proto's methods (validation, the RPC or publish behind each, the
 * mapping of every outcome onto an HTTP status with a JSON error body),
 * served through the route table generated from front.proto's
 * (webshop.v1.http) rules (webshop/v1/front.routes.h: paths, methods, 405,
 * HEAD), plus the routes front.proto does not describe (metrics, the
 * OpenAPI document, the storefront, the Connect endpoint of connect.h).
 * The write routes (POST /order, DELETE /order/{id}) live in order_write.c.
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

/* Answer status with m as JSON (ws_json_encode with flags; proto field
 * names unless flags say otherwise) and extra header lines (may be NULL);
 * 500 when m cannot be encoded. Returns the status sent. */
int routes_reply_json(ws_http_req *req, int status, const ProtobufCMessage *m,
                      unsigned flags, const char *extra);

#endif
