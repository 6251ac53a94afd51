/*
 * nng TLS configurations for RPC (see rpc_tls.h). nng 1.5's
 * nng_tls_config_cert_key_file wants the certificate and the key in one
 * file; operators keep them apart (the key 0600, the certificate public), so
 * both files are read here and handed to nng_tls_config_own_cert as PEM
 * text. The CA file is loaded by nng itself.
 */
#include "rpc_tls.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* Largest PEM file read: a chain of a few certificates is a few KiB. */
#define RPC_TLS_MAX_PEM (256 * 1024)

/* Read path into a malloc'ed NUL-terminated string (*out). */
static ws_err rpc_tls_read(const char *path, char **out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return errno == ENOENT ? WS_ENOTFOUND : WS_EIO;
    }
    char *buf = malloc(RPC_TLS_MAX_PEM + 1);
    if (buf == NULL) {
        fclose(f);
        return WS_ENOMEM;
    }
    size_t n = fread(buf, 1, RPC_TLS_MAX_PEM + 1, f);
    bool bad = ferror(f) || n > RPC_TLS_MAX_PEM;
    fclose(f);
    if (bad) {
        free(buf);
        return n > RPC_TLS_MAX_PEM ? WS_ETOOBIG : WS_EIO;
    }
    buf[n] = '\0';
    *out = buf;
    return WS_OK;
}

static ws_err rpc_tls_err_from_nng(int rv)
{
    return rv == NNG_ENOMEM ? WS_ENOMEM : WS_EPARSE;
}

/* Load our own certificate (cert, with its chain) and key into cfg. */
static ws_err rpc_tls_own_cert(nng_tls_config *cfg, const char *cert, const char *key)
{
    char *cert_pem = NULL, *key_pem = NULL;
    ws_err err = rpc_tls_read(cert, &cert_pem);
    if (err != WS_OK) {
        ws_log_error("rpc_tls_config_failed", "file=%s error=%s", cert, ws_errname(err));
        return err;
    }
    if ((err = rpc_tls_read(key, &key_pem)) != WS_OK) {
        ws_log_error("rpc_tls_config_failed", "file=%s error=%s", key, ws_errname(err));
        free(cert_pem);
        return err;
    }
    int rv = nng_tls_config_own_cert(cfg, cert_pem, key_pem, NULL);
    if (rv != 0) {
        err = rpc_tls_err_from_nng(rv);
        ws_log_error("rpc_tls_config_failed", "file=%s key=%s error=%s tls_error=%s",
                     cert, key, ws_errname(err), nng_strerror(rv));
    }
    memset(key_pem, 0, strlen(key_pem));
    free(key_pem);
    free(cert_pem);
    return err;
}

ws_err ws__rpc_tls_config_new(int server, const char *cert, const char *key,
                              const char *ca, const char *server_name,
                              nng_tls_config **out)
{
    nng_tls_config *cfg;
    int rv;
    ws_err err;

    if (cert == NULL || key == NULL || ca == NULL || out == NULL) {
        return WS_EINVAL;
    }
    rv = nng_tls_config_alloc(&cfg, server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT);
    if (rv != 0) {
        return rv == NNG_ENOMEM ? WS_ENOMEM : WS_EINVAL;
    }
    if ((err = rpc_tls_own_cert(cfg, cert, key)) != WS_OK) {
        nng_tls_config_free(cfg);
        return err;
    }
    if ((rv = nng_tls_config_ca_file(cfg, ca)) != 0 ||
        (rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
        (server_name != NULL &&
         (rv = nng_tls_config_server_name(cfg, server_name)) != 0)) {
        err = rv == NNG_ENOENT ? WS_ENOTFOUND : rpc_tls_err_from_nng(rv);
        ws_log_error("rpc_tls_config_failed", "file=%s error=%s tls_error=%s", ca,
                     ws_errname(err), nng_strerror(rv));
        nng_tls_config_free(cfg);
        return err;
    }
    *out = cfg;
    return WS_OK;
}

int ws__rpc_identity_valid(const char *identity)
{
    size_t n = identity != NULL ? strlen(identity) : 0;
    if (n == 0 || n > WS_RPC_IDENTITY_MAX) {
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        char c = identity[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
            return 0;
        }
    }
    return 1;
}
