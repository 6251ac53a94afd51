/*
 * The shop one run loads: a running one named by --url (with its broker
 * and processes from flags), or one started (or found running) through
 * tools/webshop in a state directory; and what the run needs to know of
 * it: its HTTP target (one front directly) and, when HAProxy is at the
 * edge, the edge's, its broker and credentials, the RPC transport between
 * its services.
 */
#ifndef BENCH_SESSION_H
#define BENCH_SESSION_H

#include <stdbool.h>

#include "ceiling.h"
#include "load.h"
#include "opts.h"
#include "shop.h"

typedef struct bench_session {
    bench_shop shop;     /* its processes (pids, RSS); the shop itself unless --url */
    bool have_shop;      /* started or attached through tools/webshop */
    bench_target target; /* one front, directly */
    char url[256];
    bool has_edge;            /* HAProxy at the edge: edge_target holds it */
    bench_target edge_target; /* the edge */
    char edge_url[256];
    char broker_host[64];
    int broker_port;             /* 0 when unknown */
    const char *broker_user;     /* NULL or empty: anonymous; points into shop or opts */
    const char *broker_password; /* points into shop */
    bench_transport transport;   /* front -> order service */
} bench_session;

/*
 * Open s for o: attach to o->url, or start a shop with a catalog of
 * `products` products (see bench_shop_up). Returns 0; on failure an exit
 * status (1 the shop did not start, 2 bad flags) with a message on stderr,
 * s closed. s must not move while open (it points into itself).
 */
int bench_session_open(bench_session *s, const bench_opts *o, int products);

/* Stop what s started (keeping its state directory if keep); NULL allowed. */
void bench_session_close(bench_session *s, bool keep);

#endif
