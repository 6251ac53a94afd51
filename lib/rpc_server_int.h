/*
 * Private entry points of the RPC server, shared with its tests and fuzz
 * targets: serving one request without nng, so that the whole dispatch path
 * (envelope, method lookup, deadline, payload, handler, response packing)
 * can be driven from bytes in memory. Nothing here is public.
 */
#ifndef WS_RPC_SERVER_INT_H
#define WS_RPC_SERVER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "rpc_server.h"

/* Serve one request: req (len bytes, any content, NULL allowed when len is
 * 0) is taken as a packed RpcRequest and dispatched exactly as a request
 * received from nng, on the calling thread; the server need not be started.
 * On WS_OK *resp is a malloc'ed packed RpcResponse of *resp_len bytes that
 * the caller frees. WS_ENOMEM when no response could be built (the nng path
 * then lets the caller time out), WS_EINVAL for a NULL srv or
 * out-parameter; on error the out-parameters are untouched. */
ws_err ws__rpc_server_dispatch(ws_rpc_server *srv, const void *req, size_t len,
                               uint8_t **resp /* OUT */, size_t *resp_len /* OUT */);

/* The same as a call of identity: NULL as over a plain listener (not
 * checked), "" as over a TLS connection whose identity is not known
 * (UNAUTHENTICATED), or a name, checked against the authorization table. */
ws_err ws__rpc_server_dispatch_as(ws_rpc_server *srv, const char *identity,
                                  const void *req, size_t len, uint8_t **resp /* OUT */,
                                  size_t *resp_len /* OUT */);

/* The listener probe's pace: every interval_ms each listener of srv gets a
 * probe connection that must complete its handshake within bound_ms; after
 * two misses in a row the listener is replaced (see rpc_server.c). The
 * defaults are 1000 and 1000; tests shrink them. Before start; values <= 0
 * keep the default. */
void ws__rpc_server_set_probe(ws_rpc_server *srv, int interval_ms, int bound_ms);

#endif
