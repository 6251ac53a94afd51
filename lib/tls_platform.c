/*
 * The platform side of HTTPS; see tls_platform.h. dlopen of the compat
 * library and memfd_create are the only platform calls lib/http needs for
 * TLS, and they live here (the cipher policy stays with the listener's
 * options in http.c).
 */
#include "tls_platform.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"

/* civetweb 1.15 loads OpenSSL with dlopen("libssl.so") and, on OpenSSL 3,
 * misses SSL_get_peer_certificate and crashes on the first TLS connection
 * (see tls_compat.c). Load the compat library (SONAME "libssl.so") first,
 * from $WEBSHOP_TLS_COMPAT, the build tree or the install path, and check
 * that what civetweb will get has the function. Never unloaded. */
bool ws_tls_platform_load(void)
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
static bool tls_platform_append(int fd, const char *path)
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
int ws_tls_platform_pem_join(const char *cert, const char *key, char *path,
                             size_t path_len)
{
    int fd = memfd_create("webshop-tls-pem", MFD_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    if (!tls_platform_append(fd, cert) || !tls_platform_append(fd, key)) {
        close(fd);
        return -1;
    }
    snprintf(path, path_len, "/proc/self/fd/%d", fd);
    return fd;
}
