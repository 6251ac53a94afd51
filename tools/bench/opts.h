/*
 * The bench's settings, as parsed from its flags by main.c and read by
 * every phase. Plain data; strings point into argv or are literals.
 */
#ifndef BENCH_OPTS_H
#define BENCH_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "ceiling.h"
#include "shop.h"

typedef struct bench_opts {
    double seconds;    /* each load phase */
    double drain;      /* wait for final statuses until none came for this long */
    uint64_t requests; /* most requests per load phase */
    int connections;   /* keep-alive connections of the load phases */
    int window;        /* MQTT ceiling: messages in flight */
    const char *url;   /* a running shop to load, or NULL */
    const char *state_dir;
    const char *broker; /* with url: HOST:PORT of its broker, or NULL */
    const char *broker_user;
    const char *broker_password_file;
    const char *json;   /* write the figures as JSON here, or NULL */
    const char *svg;    /* --curve: the plot's path, or NULL for BUILD/bench-curve.svg */
    const char *script; /* tools/webshop */
    const char *build_dir;
    const char *store; /* sqlite, postgres or both (--store); NULL: the default */
    bool no_ceilings;
    bool keep;
    bool curve;                /* run the scaling curve instead of the table */
    bool transport_set;        /* --rpc-transport given */
    bench_transport transport; /* with url: the shop's RPC transport */
    int pids[BENCH_PROCS];     /* with url: processes to sample, 0 unknown */
} bench_opts;

#endif
