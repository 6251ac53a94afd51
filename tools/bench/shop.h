/*
 * The shop under test: started the way a user starts it (`tools/webshop up`
 * into a state directory, its facts read back with `tools/webshop status`,
 * stopped with `tools/webshop down`) or attached to a running one; the
 * resident memory of its processes, sampled from /proc while loads run;
 * and a fresh Mosquitto broker for the ceiling when the shop's is unknown.
 *
 * With replicas (`up --replicas N`) the facts name more processes and an
 * edge: every `NAME_pid` key of `status` is a process of the table
 * (broker, postgres, haproxy, inventory_0, front_1, ...: whatever names
 * `status` gives; `*supervisor*` keys aside), the edge is `haproxy_url`,
 * else http://127.0.0.1:`haproxy_port`/, else `url` when a `haproxy_pid`
 * is listed; one front's direct URL is the first `front*url*` value (a
 * comma list allowed: `front_urls`) or `front*_port` (not metrics) that is
 * not the edge's port; `replicas` is read when present. Without an edge
 * `url` is the front.
 */
#ifndef BENCH_SHOP_H
#define BENCH_SHOP_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* The four processes of a shop without replicas, in table order. */
#define BENCH_PROCS 4
/* Most processes the table holds (8 replicas of three services, broker,
 * haproxy, postgres and spare). */
#define BENCH_PROCS_MAX 40

typedef struct bench_proc {
    char name[32]; /* broker, inventory, order, front; with replicas e.g. front_1 */
    int pid;       /* 0 when unknown */
    long idle_kb;  /* VmRSS before any load, -1 unknown */
    long peak_kb;  /* highest VmRSS seen while sampling, -1 unknown */
} bench_proc;

typedef struct bench_shop {
    char script[PATH_MAX];    /* tools/webshop */
    char build_dir[PATH_MAX]; /* passed as WEBSHOP_BUILD_DIR */
    char state_dir[PATH_MAX];
    bool started;        /* we ran `up`, so we run `down` */
    bool temp_dir;       /* we created state_dir, so we remove it */
    char url[256];       /* `url`: the shop's entry (HAProxy's with replicas) */
    char edge_url[256];  /* HAProxy at the edge; empty when none */
    char front_url[256]; /* one front's own URL (not the edge); empty unknown */
    char broker_host[64];
    int broker_port;           /* 0 when unknown */
    char order_rpc[160];       /* the order service's RPC address; empty when unknown */
    char store[16];            /* sqlite or postgres (the facts' store); empty unknown */
    char broker_user[64];      /* empty: anonymous */
    char broker_password[256]; /* read from the facts' broker_password_file */
    int replicas;              /* the facts' `replicas`, else `up --replicas`; 0 none */
    int n_procs;
    bench_proc procs[BENCH_PROCS_MAX];
    pthread_t sampler;
    bool sampling;
    atomic_bool sampler_stop;
} bench_shop;

/*
 * Set up s for script and build_dir. With state_dir NULL a temporary one is
 * made. If a shop already runs from state_dir it is attached (whatever its
 * store), else one is started on http_port (0: up picks free ports) with a catalog of
 * `products` products (ids 1..N, stock deep enough that no bench order runs out; at least
 * 2; the environment's WEBSHOP_INVENTORY_CATALOG wins when set) on store
 * ("sqlite" or "postgres": `up --store`; NULL: the script's default) with
 * `up --replicas replicas` when replicas > 0.
 * Returns 0, or -1 with a message on stderr.
 */
int bench_shop_up(bench_shop *s, const char *script, const char *build_dir,
                  const char *state_dir, int http_port, int products, const char *store,
                  int replicas);

/* Set the table to broker, inventory, order, front, all unknown. */
void bench_shop_procs_default(bench_shop *s);

/* Add (or, by name, update) a process of the table; false when it is full. */
bool bench_shop_proc_add(bench_shop *s, const char *name, int pid);

/* Whether a process of that name is one of the shop's services (the RSS
 * targets apply): inventory*, order*, front*. */
bool bench_proc_is_service(const char *name);

/* The process named name in v (n of them), or NULL. */
const bench_proc *bench_proc_find(const bench_proc *v, int n, const char *name);

/* Stop the shop if we started it; remove the temporary state directory unless keep. */
void bench_shop_down(bench_shop *s, bool keep);

/*
 * Read the first line of file into out (cap bytes, newline stripped).
 * Returns 0, or -1 when it cannot be read.
 */
int bench_read_secret(const char *file, char *out, size_t cap);

/* VmRSS of pid in kB from /proc, -1 when unreadable. */
long bench_rss_kb(int pid);

/* Record every known process's VmRSS as its idle figure. */
void bench_shop_sample_idle(bench_shop *s);

/* Start (stop) a thread sampling VmRSS every 50 ms into peak_kb. */
void bench_shop_sampler_start(bench_shop *s);
void bench_shop_sampler_stop(bench_shop *s);

/*
 * Start a Mosquitto broker on a free loopback port with the limits
 * `tools/webshop up` writes; *pid and *port (OUT). dir holds its config.
 * Returns 0 or -1.
 */
int bench_broker_start(const char *dir, int *pid, int *port);

/* Stop a broker started by bench_broker_start (SIGTERM, then SIGKILL after 5 s). */
void bench_broker_stop(int pid);

#endif
