/*
 * The platform side of HTTPS for lib/http: making Debian 12's civetweb 1.15
 * work with OpenSSL 3 (the compat library of tls_compat.c), handing it a
 * certificate and a separate key as the one PEM file it reads, and the
 * cipher policy it is given.
 */
#include "http_int.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

/* TLS 1.2: forward secrecy (ECDHE) and AEAD only (AES-GCM, ChaCha20-Poly1305),
 * the server's order; no static RSA, no CBC, no SHA-1 MACs, no DHE. civetweb
 * hands this to SSL_CTX_set_cipher_list, which does not touch TLS 1.3's
 * suites (all AEAD): those stay OpenSSL's defaults. */
const char ws__http_tls_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* civetweb 1.15 loads OpenSSL with dlopen("libssl.so") and, on OpenSSL 3,
 * misses SSL_get_peer_certificate and crashes on the first TLS connection
 * (see tls_compat.c). Load the compat library (SONAME "libssl.so") first,
 * from $WEBSHOP_TLS_COMPAT, the build tree or the install path, and check
 * that what civetweb will get has the function. Never unloaded. */
bool ws__http_tls_compat_load(void)
{
    const char *paths[3] = {getenv("WEBSHOP_TLS_COMPAT"), NULL, NULL};
#ifdef WS_TLS_COMPAT_BUILT
    paths[1] = WS_TLS_COMPAT_BUILT;
    paths[2] = WS_TLS_COMPAT_INSTALLED;
#endif
    for (int i = 0; i < 3; i++) {
        if (paths[i] != NULL && paths[i][0] != '\0' &&
            dlopen(paths[i], RTLD_NOW | RTLD_GLOBAL) != NULL) {
            break;
        }
    }
    void *ssl = dlopen("libssl.so", RTLD_LAZY);
    bool ok = ssl != NULL && dlsym(ssl, "SSL_get_peer_certificate") != NULL;
    if (ssl != NULL) {
        dlclose(ssl);
    }
    if (!ok) {
        ws_log_error("http_tls_unavailable", "reason=%s",
                     ssl == NULL ? "no_libssl.so(install_libssl-dev)"
                                 : "libwebshop-tls-compat.so_not_found");
    }
    return ok;
}

/* Append the file at path to fd; false when it cannot be read or written. */
static bool http_tls_append(int fd, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        ws_log_error("http_tls_unreadable", "file=%s", path);
        return false;
    }
    char chunk[4096];
    size_t n;
    bool ok = true;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (write(fd, chunk, n) != (ssize_t)n) {
            ok = false;
            break;
        }
    }
    ok = ok && !ferror(f) && write(fd, "\n", 1) == 1;
    fclose(f);
    return ok;
}

/* civetweb reads the certificate and the private key from one PEM file
 * (ssl_certificate). For a separate key, join both into an anonymous
 * in-memory file (never on disk) and name it /proc/self/fd/N in path; the
 * caller closes the returned fd once civetweb has read it (mg_start).
 * Returns the fd, or -1 when a file cannot be read. */
int ws__http_tls_pem_join(const char *cert, const char *key, char *path, size_t path_len)
{
    int fd = memfd_create("webshop-tls-pem", MFD_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    if (!http_tls_append(fd, cert) || !http_tls_append(fd, key)) {
        close(fd);
        return -1;
    }
    snprintf(path, path_len, "/proc/self/fd/%d", fd);
    return fd;
}
