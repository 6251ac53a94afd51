/*
 * libwebshop-tls-compat: lets Debian 12's civetweb 1.15 serve HTTPS with
 * OpenSSL 3. That civetweb loads OpenSSL at run time (dlopen "libssl.so",
 * then dlsym of every function it uses) and, built for the OpenSSL 1.1 API,
 * looks up SSL_get_peer_certificate, which OpenSSL 3 no longer exports (it
 * became a macro for SSL_get1_peer_certificate). The lookup fails quietly
 * and the first TLS connection calls a NULL pointer (civetweb issue #1334).
 *
 * This library's SONAME is "libssl.so" and it depends on the real
 * libssl.so.3: once ws_http_open has loaded it (by path, RTLD_GLOBAL),
 * glibc answers civetweb's dlopen("libssl.so") with it, and dlsym on that
 * handle finds the one missing function here and every other one in
 * libssl.so.3 behind it. Nothing else links against it.
 */
#include <openssl/ssl.h>

#undef SSL_get_peer_certificate

/* OpenSSL 1.1's name: the peer's certificate with a reference the caller
 * frees with X509_free (civetweb does), i.e. SSL_get1_peer_certificate. */
X509 *SSL_get_peer_certificate(const SSL *s);

X509 *SSL_get_peer_certificate(const SSL *s)
{
    return SSL_get1_peer_certificate(s);
}
