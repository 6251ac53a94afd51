/*
 * The platform side of HTTPS on Debian 12, kept out of lib/http: making
 * its civetweb 1.15 (which dlopen()s "libssl.so" and was built for the
 * OpenSSL 1.1 API) work with OpenSSL 3 through libwebshop-tls-compat
 * (tls_compat.c), and handing civetweb a certificate and a separate key as
 * the one PEM file it reads, without writing the key to disk (a Linux
 * memfd). Knows nothing of HTTP; nothing here is thread-safe against
 * itself, lib/http calls it once per listener, before it starts.
 */
#ifndef WS_TLS_PLATFORM_H
#define WS_TLS_PLATFORM_H

#include <stdbool.h>
#include <stddef.h>

/* Make dlopen("libssl.so") answer a libssl that civetweb 1.15 can use:
 * load the compat library (SONAME "libssl.so") from $WEBSHOP_TLS_COMPAT,
 * the build tree or the install path, then check that what civetweb will
 * get has SSL_get_peer_certificate. Never unloaded. False, with a log line
 * (http_tls_unavailable) naming what is missing, when it cannot. */
bool ws_tls_platform_load(void);

/* Join the PEM files cert and key into one anonymous in-memory file and
 * write its name (/proc/self/fd/N) into path. Returns the file's fd, which
 * the caller closes once the file has been read; -1 (with a log line)
 * when a file cannot be read. */
int ws_tls_platform_pem_join(const char *cert, const char *key, char *path,
                             size_t path_len);

#endif
