/*
 * The shop a run loads; see session.h.
 */
#include "session.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Split "host:port" of a loopback broker; refuses other hosts. */
static int session_broker_parse(const char *s, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= cap || atoi(colon + 1) <= 0) {
        fprintf(stderr, "webshop-bench: --broker: expected HOST:PORT, got %s\n", s);
        return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    *port = atoi(colon + 1);
    char url[128];
    char err[256];
    bench_target t;
    snprintf(url, sizeof(url), "http://%s:%d/", host, *port);
    if (bench_target_parse(url, &t, err, sizeof(err)) != 0) {
        fprintf(stderr, "webshop-bench: broker: %s\n", err);
        return -1;
    }
    return 0;
}

/* --url: the shop and its broker come from flags. */
static int session_attach_url(bench_session *s, const bench_opts *o)
{
    snprintf(s->url, sizeof(s->url), "%s", o->url);
    if (o->edge_url != NULL) {
        snprintf(s->edge_url, sizeof(s->edge_url), "%s", o->edge_url);
    }
    /* The processes named by --pid, else the four of a shop, unknown. */
    bench_shop_procs_default(&s->shop);
    s->shop.n_procs = o->n_pids > 0 ? 0 : s->shop.n_procs;
    for (int i = 0; i < o->n_pids; i++) {
        bench_shop_proc_add(&s->shop, o->pid_names[i], o->pids[i]);
    }
    atomic_init(&s->shop.sampler_stop, false);
    s->transport = o->transport;
    if (o->broker != NULL &&
        session_broker_parse(o->broker, s->broker_host, sizeof(s->broker_host),
                             &s->broker_port) != 0) {
        return 2;
    }
    s->broker_user = o->broker_user;
    if (o->broker_password_file != NULL) {
        if (bench_read_secret(o->broker_password_file, s->shop.broker_password,
                              sizeof(s->shop.broker_password)) != 0) {
            fprintf(stderr, "webshop-bench: cannot read %s\n", o->broker_password_file);
            return 2;
        }
        s->broker_password = s->shop.broker_password;
    }
    return 0;
}

/* A shop through tools/webshop: its facts name everything. */
static int session_start(bench_session *s, const bench_opts *o, int products)
{
    /* With replicas the shop takes ports well past --http-port (a block per
     * replica): up reserves free ones itself. */
    int port = o->replicas > 1 ? 0 : bench_free_port();
    if (bench_shop_up(&s->shop, o->script, o->build_dir, o->state_dir, port, products,
                      o->store, o->replicas) != 0) {
        bench_shop_down(&s->shop, true);
        return 1;
    }
    s->have_shop = true;
    if (o->store != NULL && s->shop.store[0] != '\0' &&
        strcmp(o->store, s->shop.store) != 0) {
        fprintf(stderr,
                "webshop-bench: the shop running from %s is on --store %s, not %s\n",
                s->shop.state_dir, s->shop.store, o->store);
        return 2;
    }
    if (s->shop.edge_url[0] != '\0' && s->shop.front_url[0] == '\0') {
        fprintf(stderr,
                "bench: `status` names HAProxy at %s but no front's own URL: "
                "every route measured through HAProxy only\n",
                s->shop.edge_url);
        snprintf(s->url, sizeof(s->url), "%s", s->shop.edge_url);
    } else {
        snprintf(s->url, sizeof(s->url), "%s", s->shop.front_url);
        snprintf(s->edge_url, sizeof(s->edge_url), "%s", s->shop.edge_url);
    }
    snprintf(s->broker_host, sizeof(s->broker_host), "%s", s->shop.broker_host);
    s->broker_port = s->shop.broker_port;
    s->broker_user = s->shop.broker_user;
    s->broker_password = s->shop.broker_password;
    s->transport = strncmp(s->shop.order_rpc, "ipc://", 6) == 0        ? BENCH_IPC
                   : strncmp(s->shop.order_rpc, "tls+tcp://", 10) == 0 ? BENCH_TLS
                                                                       : BENCH_TCP;
    if (o->transport_set) {
        s->transport = o->transport;
    }
    return 0;
}

int bench_session_open(bench_session *s, const bench_opts *o, int products)
{
    memset(s, 0, sizeof(*s));
    int rc = o->url != NULL ? session_attach_url(s, o) : session_start(s, o, products);
    char err[256];
    if (rc == 0 && bench_target_parse(s->url, &s->target, err, sizeof(err)) != 0) {
        fprintf(stderr, "webshop-bench: %s\n", err);
        rc = 2;
    }
    if (rc == 0 && s->edge_url[0] != '\0') {
        if (bench_target_parse(s->edge_url, &s->edge_target, err, sizeof(err)) != 0) {
            fprintf(stderr, "webshop-bench: the edge: %s\n", err);
            rc = 2;
        }
        s->has_edge = rc == 0;
    }
    if (rc == 0 && s->broker_port > 0) {
        char url[128];
        bench_target bt;
        snprintf(url, sizeof(url), "http://%s:%d/", s->broker_host, s->broker_port);
        if (bench_target_parse(url, &bt, err, sizeof(err)) != 0) {
            fprintf(stderr, "webshop-bench: broker: %s\n", err);
            rc = 2;
        }
    }
    if (rc != 0) {
        bench_session_close(s, true);
    }
    return rc;
}

void bench_session_close(bench_session *s, bool keep)
{
    if (s == NULL) {
        return;
    }
    bench_shop_sampler_stop(&s->shop);
    if (s->have_shop) {
        bench_shop_down(&s->shop, keep);
        s->have_shop = false;
    }
}
