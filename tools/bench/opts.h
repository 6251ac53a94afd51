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
    double seconds;       /* each load phase */
    double drain;         /* wait for final statuses until none came for this long */
    uint64_t requests;    /* most requests per load phase */
    int connections;      /* keep-alive connections of the load phases */
    int window;           /* MQTT ceiling: messages in flight */
    const char *url;      /* a running shop to load, or NULL */
    const char *edge_url; /* with url: the proxy in front of it, or NULL */
    const char *state_dir;
    const char *broker; /* with url: HOST:PORT of its broker, or NULL */
    const char *broker_user;
    const char *broker_password_file;
    const char *json;   /* write the figures as JSON here, or NULL */
    const char *svg;    /* --curve: the plot's path, or NULL for BUILD/bench-curve.svg */
    const char *script; /* tools/webshop */
    const char *build_dir;
    const char *store; /* sqlite, postgres or both (--store); NULL: the default */
    int replicas;      /* `up --replicas N`; 0: not passed */
    int replicas_vs;   /* --replicas A,B: B (the run compared with A), else 0 */
    bool no_ceilings;
    bool keep;
    bool curve;                /* run the scaling curve instead of the table */
    bool transport_set;        /* --rpc-transport given */
    bench_transport transport; /* with url: the shop's RPC transport (default
                                  BENCH_IPC, the services' default) */
    int n_pids;                /* with url: processes to sample (--pid) */
    char pid_names[BENCH_PROCS_MAX][32];
    int pids[BENCH_PROCS_MAX];
} bench_opts;

#endif
