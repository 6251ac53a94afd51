/*
 * The bench over TLS (--tls, issue 20): whether the run asked for it, the
 * broker client certificate the shop's facts name (applied to every MQTT
 * client the bench opens), and the TLS side of the civetweb + nng ceiling:
 * certificates from tools/shop_ca in a temporary directory, an echo server
 * listening on tls+tcp:// as the order service's listener for the front
 * (its leaf, trusting only the front's identity CA) and a req socket dialing
 * it as the front does (its leaf, the shop's root, server name "order").
 * nng's TLS configuration is used directly: the bench never links lib/.
 */
#ifndef BENCH_TLS_H
#define BENCH_TLS_H

#include <stdbool.h>

#include <mosquitto.h>
#include <nng/nng.h>

/* --tls: set once while parsing the flags; read by every phase. */
void bench_tls_set(bool on);
bool bench_tls_on(void);

/* A status fact broker_tls_ca, broker_tls_cert or broker_tls_key (others
 * are ignored): the admin's broker certificate files. */
void bench_tls_broker_fact(const char *key, const char *value);

/* Give m the broker certificate when the facts named one; 0, or -1 with
 * a message on stderr. */
int bench_tls_mosq(struct mosquitto *m);

/* Make the ceiling's certificates with tools/shop_ca (next to script) in
 * a fresh temporary directory, named to the echo server child through the
 * environment (WEBSHOP_BENCH_TLS_DIR). 0, or -1 with a message. */
int bench_tls_certs_make(const char *script);

/* Remove that directory and its files. */
void bench_tls_certs_remove(void);

/* Listen on tls+tcp://127.0.0.1 at a fresh port with the order's leaf,
 * requiring a front certificate; url (cap bytes) gets the address. nng's
 * error code. */
int bench_tls_listen(nng_socket sock, char *url, size_t cap);

/* Dial url (blocking) with the front's leaf, checking the server's name
 * "order" against the shop's root CA. nng's error code. */
int bench_tls_dial(nng_socket sock, const char *url);

#endif
