/*
 * The Connect protocol (connectrpc.com/docs/protocol), unary, for every
 * method of the RPC services behind the front, so that clients other than
 * ours can call them over HTTP: POST /webshop.v1.Inventory/GetCatalog with
 * Content-Type application/json (proto3 JSON, lib/json.h) or
 * application/proto (the binary encoding), answered in the same encoding.
 *
 * Generic: a method is found by name in protobuf-c's service descriptor
 * and its messages come from that descriptor, so a method added to
 * inventory.proto or order.proto is served here with no C; only a new
 * service needs a line (which RPC client serves it).
 *
 * What the protocol asks and how it is answered:
 *   - errors are Connect's JSON {"code": "not_found", "message": ...} with
 *     the HTTP status of Connect's table (not_found 404, unavailable 503,
 *     deadline_exceeded 504, invalid_argument 400, ...);
 *   - Connect-Timeout-Ms (1..10 digits) is the RPC's deadline, capped at
 *     CONNECT_MAX_TIMEOUT_MS; without it the front's --rpc-deadline;
 *   - Connect-Protocol-Version, when sent, must be 1 (invalid_argument
 *     otherwise); a request without it is served (the spec lets servers
 *     accept it, and curl users rarely send it);
 *   - another Content-Type is 415 with Accept-Post; Content-Encoding other
 *     than identity is unimplemented (Accept-Encoding: identity);
 *   - a body larger than the front's --max-body is resource_exhausted;
 *     a body that is not a message of the method's input type is
 *     invalid_argument, naming what is wrong;
 *   - a method the service does not have is unimplemented (404); another
 *     HTTP method than POST is 405 with Allow: POST (lib/http).
 */
#ifndef FRONT_CONNECT_H
#define FRONT_CONNECT_H

#include "front.h"
#include "http.h"

/* The longest deadline a client may ask for with Connect-Timeout-Ms (the
 * longest --rpc-deadline the front takes). */
#define CONNECT_MAX_TIMEOUT_MS 60000

/* Route /webshop.v1.Inventory/ and /webshop.v1.Orders/ on h to the Connect
 * handler (POST only); f must outlive h. */
void connect_install(ws_http *h, front *f);

/* Connect's name of an RPC code ("not_found", "canceled") and the HTTP
 * status that carries it (404, 499). */
const char *connect_code_name(ws_rpc_code code);
int connect_http_status(ws_rpc_code code);

#endif
