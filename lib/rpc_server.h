/*
 * RPC server on an nng rep0 socket. Serves any number of protobuf services
 * registered by their protobuf-c service descriptor, plus the built-in
 * /webshop.v1.Reflection/ListServices. Requests are handled concurrently: a
 * configurable number of nng contexts, each with its own aio, driven by a
 * pool of worker threads (or, for short handlers, by nng's own threads). Each request is an RpcRequest (rpc.proto); the
 * server finds the method, refuses work whose deadline has passed
 * (DEADLINE_EXCEEDED), unpacks the payload (INVALID_ARGUMENT if it cannot),
 * calls the handler, and answers an RpcResponse. Calls, errors and latency
 * are counted per method in the metrics registry.
 *
 * Identities (mutual TLS): besides its plain URL, a server may listen on
 * tls+tcp:// once per caller identity (ws_rpc_server_listen_tls), each
 * listener requiring a client certificate that chains to that identity's CA.
 * A call that came in on such a listener is the identity's, and runs only if
 * the method's authorization table (ws_rpc_server_allow; generated from the
 * (webshop.v1.allow) options) lists the identity: otherwise
 * PERMISSION_DENIED, logged as
 *   event=rpc_permission_denied identity=front method=/pkg.Svc/Method
 * (UNAUTHENTICATED, event=rpc_unauthenticated, when the connection it came
 * on cannot be tied to a verified identity any more). Calls over the plain
 * URL (tcp://, ipc://, inproc://) carry no identity and are not checked.
 *
 * Listeners that go deaf: nng 1.5.2 (nanomsg/nng#1518, fixed in 1.6.0)
 * stops accepting for good on a listener whose peer vanished during the SP
 * handshake (an ipc:// peer that connects and closes, a client killed
 * mid-dial; tcp:// and tls+tcp:// peers whose FIN is followed by a RST).
 * While it runs, the server probes each of its listeners about once a
 * second with a connection of its own (no request: no caller, no call
 * metric), and closes and re-opens, on the same bound URL, one that did not
 * hand the probe's connection to the socket twice in a row within a
 * second: its connections are dropped (clients redial), the ipc:// socket
 * file is made anew; calls are served again within about 3.5 s. Logged as
 *   event=rpc_listener_restarted url=ipc:///run/.../inventory.sock reason=no_handshake
 * (warn; rpc_listener_restart_failed url=.. error=.. when the re-listen
 * fails, retried) and counted in
 * webshop_rpc_server_listener_restarts_total{url}. inproc:// is not probed.
 */
#ifndef WS_RPC_SERVER_H
#define WS_RPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "err.h"
#include "metrics.h"
#include "rpc.h"

typedef struct ws_rpc_server ws_rpc_server;
typedef struct ws_rpc_call ws_rpc_call; /* one call in progress */

/* A method handler. Runs on a server worker thread, possibly concurrently
 * with other calls to the same or other methods. req is the unpacked request
 * (owned by the server). On WS_RPC_OK the handler sets *resp to a message of
 * the method's output type, allocated -- with everything it points to -- by
 * malloc, so that the server can free it with
 * protobuf_c_message_free_unpacked(resp, NULL) after packing. On any other
 * code *resp must be left NULL; the handler may describe the failure with
 * ws_rpc_call_set_message(). While it runs, the thread's current trace
 * (trace.h) is a span of the request's traceparent (RpcRequest.traceparent),
 * or of a new trace when the request carried none or an invalid one: its log
 * lines and the calls it makes carry the caller's trace_id. */
typedef ws_rpc_code (*ws_rpc_handler_fn)(void *ctx, const ProtobufCMessage *req,
                                         ProtobufCMessage **resp /* OUT */,
                                         ws_rpc_call *call);

typedef struct ws_rpc_server_opts {
    const char *url;        /* "tcp://127.0.0.1:7001", "ipc://...", "inproc://..." */
    int contexts;           /* concurrent requests in flight; 0 = 16 */
    int workers;            /* handler threads; 0 = 4 */
    int inline_handlers;    /* 1: no worker threads; each handler runs on the nng
                             * task thread that received its request. Saves a
                             * thread hop per call; only for handlers that are
                             * short and never wait for nng (make no RPC call). */
    size_t max_msg;         /* cap on a request and on a handler's response (not on
                             * reflection's descriptors); 0 = WS_RPC_DEFAULT_MAX_MSG */
    ws_metrics *metrics;    /* registry for per-method metrics; NULL = default */
    int ipc_mode;           /* permission bits of an ipc:// url's socket file;
                             * 0 = 0600 (only the server's user may connect) */
    int identities_only;    /* 1: no plain listener (url must be NULL), only the
                             * ws_rpc_server_listen_tls ones (one at least) */
} ws_rpc_server_opts;

/* Create a server (not yet listening). *out owns it; close with
 * ws_rpc_server_close(). WS_EINVAL for a bad option, WS_ENOMEM. */
ws_err ws_rpc_server_open(const ws_rpc_server_opts *opts, ws_rpc_server **out /* OUT */);

/* Register every method of svc. handlers[i] serves svc->methods[i] (NULL
 * answers UNIMPLEMENTED); ctx is passed to each. Call before start. The
 * descriptor and handlers array must outlive the server. WS_EEXIST if the
 * service is already registered. */
ws_err ws_rpc_server_register(ws_rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                              const ws_rpc_handler_fn *handlers, void *ctx);

/* Serve these serialized google.protobuf.FileDescriptorProtos through
 * reflection (FileContainingSymbol, FileByFilename), so that clients built
 * without the types (webshopctl) can call the server's methods. Generated
 * register functions call it with their file and its imports
 * (IDENT__files); a file already added is skipped. The array and bytes must
 * outlive the server. Before start; WS_EPARSE for bytes that are not a
 * FileDescriptorProto. */
ws_err ws_rpc_server_add_files(ws_rpc_server *srv, const ProtobufCBinaryData *files,
                               size_t n);

/* Who may call svc's methods over an identity listener: allow[i] is the
 * NULL-terminated list of identities allowed to call svc->methods[i], or NULL
 * when none is. Generated register functions call it with the table of the
 * methods' (webshop.v1.allow) options. A registered service without a table
 * is denied to every identity; the built-in Reflection service is open to
 * every identity (it shows only the schema). The table is borrowed and must
 * outlive the server. Before start; WS_ENOTFOUND if svc is not registered. */
ws_err ws_rpc_server_allow(ws_rpc_server *srv, const ProtobufCServiceDescriptor *svc,
                           const char *const *const *allow);

/* Also listen, from start on, on url (tls+tcp://HOST:PORT, port 0 for any)
 * for calls of one identity (a-z, 0-9, '-'): the TLS handshake requires a
 * client certificate that chains to ca, a PEM file of that identity's CA
 * only (tools/shop_ca's ID-ca.crt). The server presents cert (PEM: its
 * certificate, then the chain to the shop's root) with key. The files are
 * read now. Before start; one listener per identity. WS_EINVAL for a bad
 * argument, an identity already listening, or a URL that is not tls+tcp;
 * WS_ENOTFOUND, WS_EIO or WS_EPARSE for a file (logged). Once listening the
 * server logs, at info level:
 *   event=rpc_tls_listening url=tls+tcp://127.0.0.1:PORT identity=ID */
ws_err ws_rpc_server_listen_tls(ws_rpc_server *srv, const char *url, const char *identity,
                                const char *cert, const char *key, const char *ca);

/* The URL, with the port bound after start, of identity's TLS listener, or
 * NULL if there is none. Owned by srv, valid until close. */
const char *ws_rpc_server_tls_url(const ws_rpc_server *srv, const char *identity);

/* Listen on the URL and start serving. A tcp URL may ask for port 0 (any
 * free port); the port bound is in ws_rpc_server_url() and in the line
 * logged once listening, at info level:
 *   event=rpc_listening url=tcp://127.0.0.1:PORT contexts=.. workers=.. inline=..
 * WS_EUNAVAIL if the address cannot be bound (in use). */
ws_err ws_rpc_server_start(ws_rpc_server *srv);

/* The URL the server listens on: after a successful start, the URL with the
 * port actually bound (tcp://127.0.0.1:0 becomes tcp://127.0.0.1:41234);
 * before, the URL it was opened with. A server opened identities_only answers
 * its first TLS listener's (ws_rpc_server_tls_url). Owned by srv, valid
 * until close. */
const char *ws_rpc_server_url(const ws_rpc_server *srv);

/* Stop accepting, let in-flight handlers finish, close the socket, free.
 * srv may be NULL. Must not be called from a handler. */
void ws_rpc_server_close(ws_rpc_server *srv);

/* Inside a handler: set the status message sent with a non-OK code. */
void ws_rpc_call_set_message(ws_rpc_call *call, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Inside a handler: milliseconds left before the caller's deadline, or -1
 * if the call has none. */
int64_t ws_rpc_call_remaining_ms(const ws_rpc_call *call);

/* Inside a handler: the status for a backend's ws_err, with the call's
 * message set, the same in every service. WS_OK OK; WS_EINVAL
 * INVALID_ARGUMENT and WS_ENOTFOUND NOT_FOUND (message: what, naming the
 * field or the thing); WS_EBUSY, WS_EUNAVAIL, WS_ETIMEDOUT and WS_EIO
 * UNAVAILABLE (the database is busy, gone or cannot be written: the caller
 * may retry, elsewhere); anything else INTERNAL, logged as rpc_failed with
 * the method. */
ws_rpc_code ws_rpc_status_of(ws_err err, ws_rpc_call *call, const char *method,
                             const char *what);

#endif
