/*
 * The TLS side of RPC, shared by the server and the client: what a mutual
 * TLS endpoint is given (its certificate chain, its key, the CA it trusts)
 * and the nng TLS configuration built from it. The files are read once, when
 * the configuration is made, so a missing or unreadable file is an error at
 * open or listen time, never on the first call. Not installed: nng's types
 * stay out of the public headers.
 */
#ifndef WS_RPC_TLS_H
#define WS_RPC_TLS_H

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

#include "err.h"

/* Longest identity name accepted (a-z, 0-9 and '-', as tools/shop_ca makes). */
#define WS_RPC_IDENTITY_MAX 64

/* A TLS configuration for one end. server: a listener that requires a
 * client certificate chaining to ca (NNG_TLS_AUTH_MODE_REQUIRED); otherwise
 * a dialer that verifies the server's certificate against ca and, when
 * server_name is not NULL, its name (a DNS subjectAltName or the CN).
 * cert is a PEM file with the certificate first and then its chain, key the
 * PEM file of its unencrypted private key, ca a PEM file of the CA
 * certificate(s) trusted. On WS_OK *out holds one reference (release with
 * nng_tls_config_free). WS_EINVAL for a NULL path, WS_ENOTFOUND or WS_EIO
 * for a file that cannot be read, WS_EPARSE for one that holds no usable
 * certificate or key; each failure is logged (rpc_tls_config_failed). */
ws_err ws__rpc_tls_config_new(int server, const char *cert, const char *key,
                              const char *ca, const char *server_name,
                              nng_tls_config **out /* OUT */);

/* True for a valid identity name: 1..WS_RPC_IDENTITY_MAX of a-z, 0-9, '-'. */
int ws__rpc_identity_valid(const char *identity);

#endif
