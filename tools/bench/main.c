/*
 * webshop-bench: the load generator and benchmark of the shop (issues 7
 * and 19). Starts a shop with `tools/webshop up` (or attaches to a running
 * one), measures on the same machine in the same run the ceilings of the
 * components the shop is built from (bare civetweb; civetweb plus one nng
 * round trip to a bare echo server, over tcp and ipc; bare nng req/rep;
 * bare Mosquitto QoS 1), then loads the shop: GET /inventory, POST /order
 * (201 once the order service committed, 202 when it did not confirm in
 * time) with end-to-end timing to a final status over MQTT, GET
 * /order/{id}, and POST -> 201 latency at half the maximal order rate;
 * samples the RSS of every process; prints every ratio next to its target
 * with "met"/"MISSED", and optionally JSON. --store picks the backends'
 * store of the shop it starts (`tools/webshop up --store`); --store both
 * measures the shop on SQLite, then on PostgreSQL, and shows them side by
 * side (compare.h). With --curve it measures the
 * scaling curve instead (curve.h). Loopback only. Speed is reported, never
 * asserted: the exit status says only whether the measurements could be
 * taken.
 */
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <civetweb.h>
#include <mosquitto.h>
#include <nng/nng.h>

#include "ceiling.h"
#include "compare.h"
#include "curve.h"
#include "load.h"
#include "opts.h"
#include "orders.h"
#include "replicas.h"
#include "report.h"
#include "routes.h"
#include "session.h"
#include "shop.h"
#include "tls.h"

#ifndef BENCH_WEBSHOP_SCRIPT
#define BENCH_WEBSHOP_SCRIPT "tools/webshop"
#endif
#ifndef BENCH_BUILD_DIR
#define BENCH_BUILD_DIR "build"
#endif

/* Size of an RPC ceiling's messages: about a GetOrder request or answer. */
#define BENCH_RPC_MSG 128

/* ---- flags ---------------------------------------------------------------- */

static void bench_usage(FILE *f)
{
    fprintf(
        f,
        "usage: webshop-bench [options]\n"
        "Load the webshop on loopback and compare it with its components' ceilings.\n\n"
        "  --seconds S        length of each load phase (default 5)\n"
        "  --requests N       most requests per load phase (default 5000000)\n"
        "  --connections N    keep-alive connections, one thread each (default 16)\n"
        "  --window N         MQTT ceiling: messages in flight (default 1000)\n"
        "  --drain S          wait for final statuses until none came for S s (default "
        "5)\n"
        "  --json FILE        also write the figures as JSON\n"
        "  --curve            instead of the table: orders/s and p99 at 1..32 clients "
        "and\n"
        "                     GET /inventory at 10, 1000, 10000 products, plotted to "
        "SVG\n"
        "  --svg FILE         with --curve: the plot (default BUILD/bench-curve.svg)\n"
        "  --store S          sqlite, postgres or both: the store of the shop it\n"
        "                     starts (tools/webshop up --store; default sqlite).\n"
        "                     both: the shop on SQLite, then on PostgreSQL, each in\n"
        "                     its own temporary state dir, then side by side with\n"
        "                     the ratio PostgreSQL/SQLite and the targets (>= 0.5 x\n"
        "                     SQLite and >= 1000 orders/s end to end); the ceilings\n"
        "                     are measured once; --json holds {sqlite, postgres,\n"
        "                     comparison}\n"
        "  --replicas N       the shop it starts runs `tools/webshop up --replicas N` "
        "(N\n"
        "                     of each backend and of the front, HAProxy at the edge;\n"
        "                     N > 1 on PostgreSQL): every route is measured directly\n"
        "                     at one front (the ratios to the ceilings) and through\n"
        "                     HAProxy (its cost: through / direct, target >= %.2f)\n"
        "  --replicas A,B     two shops back to back, A then B replicas, both on\n"
        "                     PostgreSQL, with the same ceilings, side by side: "
        "orders/s\n"
        "                     end to end through HAProxy, GET latency through HAProxy\n"
        "                     and direct, and the coordination ratio B / A (target\n"
        "                     >= %.2f); --json holds {replicas_A, replicas_B, "
        "comparison}\n"
        "  --replicas-compare the same as --replicas 1,2\n"
        "  --state-dir DIR    use the shop running from DIR, or start one there\n"
        "  --url URL          target a running shop at URL (loopback only)\n"
        "  --edge-url URL     with --url: the same shop through its proxy (HAProxy)\n"
        "  --broker HOST:PORT with --url: its broker (end-to-end timing, MQTT ceiling)\n"
        "  --broker-user U    with --broker: MQTT user (e.g. webshop-admin)\n"
        "  --broker-password-file F  with --broker: file holding that user's password\n"
        "  --pid NAME=PID     with --url: a process to sample (broker, inventory, order, "
        "front,\n"
        "                     or any other name, e.g. front_1, haproxy; repeatable)\n"
        "  --rpc-transport T  tcp or ipc: the shop's RPC transport, whose ceiling GET\n"
        "                     /order/{id} is held to (default: from the shop's facts, "
        "else ipc,\n"
        "                     the services' default)\n"
        "  --webshop PATH     the tools/webshop script (default %s)\n"
        "  --build-dir DIR    the build tree the shop runs from (default %s)\n"
        "  --tls              start the shop with `up --tls` (RPC over mutual TLS, the\n"
        "                     bus over TLS with client certificates); adds the ceiling\n"
        "                     civetweb + nng round trip over tls+tcp and the TLS ratios\n"
        "  --no-ceilings      skip the ceiling measurements\n"
        "  --keep             keep the temporary state directory and its logs\n"
        "  -h, --help         this text\n",
        TARGET_EDGE, TARGET_COORDINATION, BENCH_WEBSHOP_SCRIPT, BENCH_BUILD_DIR);
}

enum {
    O_SECONDS = 1000,
    O_REQUESTS,
    O_CONN,
    O_WINDOW,
    O_JSON,
    O_STATE,
    O_URL,
    O_BROKER,
    O_PID,
    O_SCRIPT,
    O_BUILD,
    O_NOCEIL,
    O_KEEP,
    O_TLS,
    O_BUSER,
    O_BPASS,
    O_DRAIN,
    O_CURVE,
    O_SVG,
    O_TRANSPORT,
    O_STORE,
    O_REPLICAS,
    O_REPCMP,
    O_EDGE,
};

/* A number flag: v in (lo, hi] for doubles; 0 or 2 (with a message). */
static int bench_opt_double(const char *flag, const char *arg, double lo, double hi,
                            double *v)
{
    char *end;
    *v = strtod(arg, &end);
    if (*end != '\0' || *v <= lo || *v > hi) {
        fprintf(stderr, "webshop-bench: --%s: expected %g < S <= %g\n", flag, lo, hi);
        return 2;
    }
    return 0;
}

static int bench_opt_int(const char *flag, const char *arg, long lo, long hi, int *v)
{
    char *end;
    long n = strtol(arg, &end, 10);
    if (*end != '\0' || n < lo || n > hi) {
        fprintf(stderr, "webshop-bench: --%s: expected %ld..%ld\n", flag, lo, hi);
        return 2;
    }
    *v = (int)n;
    return 0;
}

/* --pid NAME=PID: NAME letters, digits, '_' or '-'. */
static int bench_opt_pid(const char *arg, bench_opts *o)
{
    const char *eq = strchr(arg, '=');
    size_t n = eq != NULL ? (size_t)(eq - arg) : 0;
    bool ok = n > 0 && n < sizeof(((bench_proc *)NULL)->name) && atoi(eq + 1) > 0 &&
              strspn(arg, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
    if (!ok || o->n_pids == BENCH_PROCS_MAX) {
        fprintf(stderr,
                "webshop-bench: --pid: expected NAME=PID (at most %d), NAME e.g. "
                "broker, inventory, order, front, front_1, haproxy\n",
                BENCH_PROCS_MAX);
        return 2;
    }
    snprintf(o->pid_names[o->n_pids], sizeof(o->pid_names[0]), "%.*s", (int)n, arg);
    o->pids[o->n_pids++] = atoi(eq + 1);
    return 0;
}

/* --replicas N or A,B (each 1..8). */
static int bench_opt_replicas(const char *arg, bench_opts *o)
{
    char *end;
    long a = strtol(arg, &end, 10);
    long b = 0;
    if (*end == ',') {
        b = strtol(end + 1, &end, 10);
        if (b < 1 || b > 8) {
            a = 0;
        }
    }
    if (*end != '\0' || a < 1 || a > 8 || a == b) {
        fprintf(stderr, "webshop-bench: --replicas: expected N or A,B (A != B), each "
                        "1..8\n");
        return 2;
    }
    o->replicas = (int)a;
    o->replicas_vs = (int)b;
    return 0;
}

/* Flags with a value that is not a plain string. */
static int bench_opt_value(int c, const char *arg, bench_opts *o)
{
    char *end;
    switch (c) {
    case O_SECONDS:
        return bench_opt_double("seconds", arg, 0, 3600, &o->seconds);
    case O_DRAIN:
        return bench_opt_double("drain", arg, 0, 600, &o->drain);
    case O_REQUESTS:
        o->requests = strtoull(arg, &end, 10);
        if (*end != '\0' || o->requests == 0) {
            fprintf(stderr, "webshop-bench: --requests: expected a positive count\n");
            return 2;
        }
        return 0;
    case O_CONN:
        return bench_opt_int("connections", arg, 1, 1024, &o->connections);
    case O_WINDOW:
        return bench_opt_int("window", arg, 1, 65535, &o->window);
    case O_PID:
        return bench_opt_pid(arg, o);
    case O_REPLICAS:
        return bench_opt_replicas(arg, o);
    case O_STORE:
        if (strcmp(arg, "sqlite") != 0 && strcmp(arg, "postgres") != 0 &&
            strcmp(arg, "both") != 0) {
            fprintf(stderr,
                    "webshop-bench: --store: expected sqlite, postgres or both\n");
            return 2;
        }
        o->store = arg;
        return 0;
    case O_TRANSPORT:
        if (strcmp(arg, "tcp") != 0 && strcmp(arg, "ipc") != 0) {
            fprintf(stderr, "webshop-bench: --rpc-transport: expected tcp or ipc\n");
            return 2;
        }
        o->transport = strcmp(arg, "ipc") == 0 ? BENCH_IPC : BENCH_TCP;
        o->transport_set = true;
        return 0;
    default:
        return 2;
    }
}

/* One flag; 0, 1 (help shown) or 2 (usage error). */
static int bench_opt_one(int c, const char *arg, bench_opts *o)
{
    switch (c) {
    case O_JSON:
        o->json = arg;
        return 0;
    case O_SVG:
        o->svg = arg;
        return 0;
    case O_STATE:
        o->state_dir = arg;
        return 0;
    case O_URL:
        o->url = arg;
        return 0;
    case O_EDGE:
        o->edge_url = arg;
        return 0;
    case O_REPCMP:
        o->replicas = 1;
        o->replicas_vs = 2;
        return 0;
    case O_BROKER:
        o->broker = arg;
        return 0;
    case O_BUSER:
        o->broker_user = arg;
        return 0;
    case O_BPASS:
        o->broker_password_file = arg;
        return 0;
    case O_SCRIPT:
        o->script = arg;
        return 0;
    case O_BUILD:
        o->build_dir = arg;
        return 0;
    case O_NOCEIL:
        o->no_ceilings = true;
        return 0;
    case O_KEEP:
        o->keep = true;
        return 0;
    case O_TLS:
        bench_tls_set(true);
        return 0;
    case O_CURVE:
        o->curve = true;
        return 0;
    case 'h':
        bench_usage(stdout);
        return 1;
    case '?':
        bench_usage(stderr);
        return 2;
    default:
        return bench_opt_value(c, arg, o);
    }
}

/* --store with the other flags: only for a shop the bench starts. */
static int bench_opts_check_store(const bench_opts *o)
{
    if (o->store == NULL) {
        return 0;
    }
    if (o->url != NULL) {
        fprintf(stderr, "webshop-bench: --store and --url exclude each other (the store "
                        "of a shop at a URL is its own)\n");
        return 2;
    }
    if (strcmp(o->store, "both") == 0 && (o->state_dir != NULL || o->curve)) {
        fprintf(stderr, "webshop-bench: --store both starts two shops of its own: not "
                        "with --state-dir or --curve\n");
        return 2;
    }
    return 0;
}

/* --replicas with the other flags; more than one replica is on PostgreSQL,
 * and so are both runs of a comparison (the same store for both). */
static int bench_opts_check_replicas(bench_opts *o)
{
    if (o->replicas == 0) {
        return 0;
    }
    const char *why = NULL;
    bool pg = o->replicas > 1 || o->replicas_vs > 0;
    if (o->url != NULL) {
        why = "--replicas is for a shop the bench starts: not with --url";
    } else if (o->replicas_vs > 0 && (o->state_dir != NULL || o->curve)) {
        why = "--replicas A,B starts two shops of its own: not with --state-dir or "
              "--curve";
    } else if (pg && o->store != NULL && strcmp(o->store, "postgres") != 0) {
        why = "more than one replica (and a comparison of replicas) runs on --store "
              "postgres only";
    }
    if (why != NULL) {
        fprintf(stderr, "webshop-bench: %s\n", why);
        return 2;
    }
    if (pg) {
        o->store = "postgres";
    }
    return 0;
}

static int bench_opts_parse(int argc, char **argv, bench_opts *o)
{
    static const struct option longopts[] = {
        {"seconds", required_argument, NULL, O_SECONDS},
        {"requests", required_argument, NULL, O_REQUESTS},
        {"connections", required_argument, NULL, O_CONN},
        {"window", required_argument, NULL, O_WINDOW},
        {"drain", required_argument, NULL, O_DRAIN},
        {"json", required_argument, NULL, O_JSON},
        {"curve", no_argument, NULL, O_CURVE},
        {"svg", required_argument, NULL, O_SVG},
        {"state-dir", required_argument, NULL, O_STATE},
        {"url", required_argument, NULL, O_URL},
        {"broker", required_argument, NULL, O_BROKER},
        {"pid", required_argument, NULL, O_PID},
        {"broker-user", required_argument, NULL, O_BUSER},
        {"broker-password-file", required_argument, NULL, O_BPASS},
        {"rpc-transport", required_argument, NULL, O_TRANSPORT},
        {"store", required_argument, NULL, O_STORE},
        {"replicas", required_argument, NULL, O_REPLICAS},
        {"replicas-compare", no_argument, NULL, O_REPCMP},
        {"edge-url", required_argument, NULL, O_EDGE},
        {"webshop", required_argument, NULL, O_SCRIPT},
        {"build-dir", required_argument, NULL, O_BUILD},
        {"no-ceilings", no_argument, NULL, O_NOCEIL},
        {"keep", no_argument, NULL, O_KEEP},
        {"tls", no_argument, NULL, O_TLS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int rc = bench_opt_one(c, optarg, o);
        if (rc != 0) {
            return rc;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "webshop-bench: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    if (o->url != NULL && o->state_dir != NULL) {
        fprintf(stderr, "webshop-bench: --url and --state-dir exclude each other\n");
        return 2;
    }
    if (o->url == NULL && (o->broker != NULL || o->edge_url != NULL)) {
        fprintf(stderr, "webshop-bench: --broker and --edge-url need --url\n");
        return 2;
    }
    if (o->svg != NULL && !o->curve) {
        fprintf(stderr, "webshop-bench: --svg needs --curve\n");
        return 2;
    }
    return bench_opts_check_store(o) != 0 ? 2 : bench_opts_check_replicas(o);
}

/* ---- the ceilings ------------------------------------------------------------ */

/* Load GET /bench of a civetweb ceiling server cw (NULL: did not start). */
static void bench_ceiling_http(const bench_opts *o, const char *what, bench_civetweb *cw,
                               int port, bench_ceiling_row *row)
{
    memset(row, 0, sizeof(*row));
    if (cw == NULL) {
        fprintf(stderr, "bench: cannot start the %s server\n", what);
        return;
    }
    char url[64];
    char err[256];
    bench_target ct;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    if (bench_target_parse(url, &ct, err, sizeof(err)) == 0) {
        bench_req_ctx ctx;
        bench_req_ctx_init(&ctx, &ct, NULL);
        bench_load_spec spec = {.target = &ct,
                                .connections = o->connections,
                                .seconds = o->seconds,
                                .max_requests = o->requests,
                                .ok_status = 200,
                                .make = bench_make_civetweb,
                                .ctx = &ctx};
        bench_phase ph;
        memset(&ph, 0, sizeof(ph));
        char label[96];
        snprintf(label, sizeof(label), "ceiling: %s", what);
        bench_phase_run(label, &ph, &spec);
        row->ran = ph.ran && ph.r.ok > 0;
        row->c.per_sec = bench_load_rate(&ph.r);
        row->c.ops = ph.r.ok;
        row->c.errors = ph.r.bad_status + ph.r.io_errors;
        row->c.elapsed = ph.r.elapsed;
        row->c.hist = ph.r.hist;
    }
    bench_civetweb_stop(cw);
}

/* Mosquitto QoS 1 through the shop's broker, or a fresh one when none is
 * known. */
static void bench_ceiling_mqtt(const bench_opts *o, const bench_session *s,
                               bench_report *rp)
{
    const char *host = s->broker_host;
    int port = s->broker_port;
    const char *user = s->broker_user;
    int fresh_pid = 0;
    char dir[] = "/tmp/webshop-bench-broker-XXXXXX";
    bool dir_made = false;
    if (port == 0 && mkdtemp(dir) != NULL) {
        dir_made = true;
        if (bench_broker_start(dir, &fresh_pid, &port) == 0) {
            host = "127.0.0.1";
            user = NULL;
            fprintf(stderr, "bench: no shop broker known: a fresh one for the ceiling\n");
        }
    }
    if (port > 0) {
        fprintf(stderr, "bench: ceiling: mosquitto QoS 1 for %.1f s ...\n", o->seconds);
        rp->mqtt.ran = bench_mqtt_run(host, port, user, s->broker_password, o->window,
                                      100, o->seconds, &rp->mqtt.c) == 0;
    }
    bench_broker_stop(fresh_pid);
    if (dir_made) {
        char conf[PATH_MAX];
        snprintf(conf, sizeof(conf), "%s/bench-mosquitto.conf", dir);
        remove(conf);
        rmdir(dir);
    }
}

/* --tls: civetweb + one nng round trip over tls+tcp, with tools/shop_ca's
 * certificates in a temporary directory (tls.h). */
static void bench_ceiling_tls(const bench_opts *o, bench_report *rp)
{
    memset(&rp->civetweb_rpc[BENCH_TLS], 0, sizeof(rp->civetweb_rpc[BENCH_TLS]));
    if (!bench_tls_on()) {
        return;
    }
    int port = 0;
    bench_civetweb *cw = NULL;
    if (bench_tls_certs_make(o->script) == 0) {
        cw = bench_civetweb_rpc_start(BENCH_FRONT_HTTP_THREADS, BENCH_TLS,
                                      BENCH_RPC_CONTEXTS, BENCH_RPC_MSG, &port);
    }
    bench_ceiling_http(o, "civetweb + nng round trip, tls+tcp", cw, port,
                       &rp->civetweb_rpc[BENCH_TLS]);
    bench_tls_certs_remove();
}

/* Every ceiling, while the shop idles. */
static void bench_ceilings_run(const bench_opts *o, const bench_session *s,
                               bench_report *rp)
{
    int port = 0;
    bench_civetweb *cw = bench_civetweb_start(BENCH_FRONT_HTTP_THREADS, &port);
    bench_ceiling_http(o, "bare civetweb", cw, port, &rp->civetweb);
    for (int t = BENCH_TCP; t <= BENCH_IPC; t++) {
        char what[64];
        snprintf(what, sizeof(what), "civetweb + nng round trip, %s",
                 bench_transport_name((bench_transport)t));
        cw = bench_civetweb_rpc_start(BENCH_FRONT_HTTP_THREADS, (bench_transport)t,
                                      BENCH_RPC_CONTEXTS, BENCH_RPC_MSG, &port);
        bench_ceiling_http(o, what, cw, port, &rp->civetweb_rpc[t]);
    }
    bench_ceiling_tls(o, rp);
    fprintf(stderr, "bench: ceiling: bare nng req/rep for %.1f s ...\n", o->seconds);
    rp->nng.ran = bench_nng_run(BENCH_TCP, BENCH_RPC_CONTEXTS, BENCH_RPC_MSG, o->seconds,
                                &rp->nng.c) == 0;
    bench_ceiling_mqtt(o, s, rp);
}

/* ---- the shop ------------------------------------------------------------------ */

/* POST /order as fast as spec's target answers, then wait for the final
 * statuses of this phase's orders into *e2e. */
static void bench_post_max(const bench_opts *o, const char *what, bench_load_spec *spec,
                           bench_phase *post, bench_e2e *e2e, bool *e2e_ran)
{
    bench_req_ctx *ctx = spec->ctx;
    spec->make = bench_make_post;
    spec->done = bench_done_post;
    spec->ok_status = 201;
    spec->rate = 0;
    size_t from = ctx->orders != NULL ? bench_orders_count(ctx->orders) : 0;
    double t0 = bench_now();
    bench_phase_run(what, post, spec);
    if (ctx->orders != NULL) {
        fprintf(stderr, "bench: waiting for the orders to reach a final status ...\n");
        bench_orders_drain(ctx->orders, o->drain, 10.0 * o->drain + o->seconds);
        bench_orders_match(ctx->orders, from, t0, e2e);
        *e2e_ran = true;
    }
}

/* POST /order open loop at half the maximal order rate: POST -> 201 latency. */
static void bench_post_half(const bench_opts *o, bench_load_spec *spec, bench_report *rp)
{
    bench_req_ctx *ctx = spec->ctx;
    double max = rp->e2e_ran && rp->e2e.per_sec > 0 ? rp->e2e.per_sec
                                                    : bench_load_rate(&rp->post.r);
    if (max <= 0) {
        return;
    }
    rp->half_rate = max / 2.0;
    spec->make = bench_make_post;
    spec->done = bench_done_post;
    spec->ok_status = 201;
    spec->rate = rp->half_rate;
    size_t from = ctx->orders != NULL ? bench_orders_count(ctx->orders) : 0;
    char what[96];
    snprintf(what, sizeof(what), "POST /order at %.0f orders/s", rp->half_rate);
    double t0 = bench_now();
    bench_phase_run(what, &rp->half_post, spec);
    spec->rate = 0;
    if (ctx->orders != NULL) {
        bench_orders_drain(ctx->orders, o->drain, 10.0 * o->drain + o->seconds);
        bench_orders_match(ctx->orders, from, t0, &rp->half);
        rp->half_ran = true;
    }
}

/* GET /order/{id} of the orders recorded so far, directly and (edge not
 * NULL) through the edge. */
static void bench_get_orders(bench_load_spec *spec, bench_load_spec *edge,
                             bench_report *rp)
{
    bench_req_ctx *ctx = spec->ctx;
    size_t n = ctx->orders != NULL ? bench_orders_count(ctx->orders) : 0;
    if (n == 0) {
        fprintf(stderr, "bench: no accepted orders: GET /order/{id} not run\n");
        return;
    }
    ctx->n_ids = n;
    spec->make = bench_make_get_order;
    spec->done = NULL;
    spec->ok_status = 200;
    bench_phase_run("GET /order/{id}", &rp->order_get, spec);
    if (edge != NULL) {
        ((bench_req_ctx *)edge->ctx)->n_ids = n;
        edge->make = bench_make_get_order;
        edge->done = NULL;
        edge->ok_status = 200;
        bench_phase_run("GET /order/{id} via haproxy", &rp->edge_order_get, edge);
    }
}

/* The shop's phases: each route directly at one front, and through the edge
 * when there is one (the same orders, the same broker subscription). */
static void bench_shop_run(const bench_opts *o, bench_session *s, bench_report *rp)
{
    bench_orders *orders = NULL;
    if (s->broker_port > 0) {
        orders = bench_orders_open(s->broker_host, s->broker_port, s->broker_user,
                                   s->broker_password);
    }
    bench_req_ctx ctx;
    bench_req_ctx ectx;
    bench_req_ctx_init(&ctx, &s->target, orders);
    bench_req_ctx_init(&ectx, &s->edge_target, orders);
    bench_load_spec spec = {.target = &s->target,
                            .connections = o->connections,
                            .seconds = o->seconds,
                            .max_requests = o->requests,
                            .ok_status = 200,
                            .make = bench_make_inventory,
                            .ctx = &ctx};
    bench_load_spec edge = spec;
    edge.target = &s->edge_target;
    edge.ctx = &ectx;
    rp->edge = s->has_edge;
    snprintf(rp->edge_url, sizeof(rp->edge_url), "%s", s->edge_url);
    bench_phase_run("GET /inventory", &rp->inventory, &spec);
    if (rp->edge) {
        bench_phase_run("GET /inventory via haproxy", &rp->edge_inventory, &edge);
    }
    bench_post_max(o, "POST /order", &spec, &rp->post, &rp->e2e, &rp->e2e_ran);
    if (rp->edge) {
        bench_post_max(o, "POST /order via haproxy", &edge, &rp->edge_post, &rp->edge_e2e,
                       &rp->edge_e2e_ran);
    }
    bench_get_orders(&spec, rp->edge ? &edge : NULL, rp);
    bench_post_half(o, &spec, rp);
    bench_orders_close(orders);
}

/* A load phase that ran without one successful answer. */
static bool bench_report_empty(const bench_report *rp)
{
    return (rp->inventory.ran && rp->inventory.r.ok == 0) ||
           (rp->post.ran && rp->post.r.ok == 0) ||
           (rp->order_get.ran && rp->order_get.r.ok == 0) ||
           (rp->edge_inventory.ran && rp->edge_inventory.r.ok == 0) ||
           (rp->edge_post.ran && rp->edge_post.r.ok == 0) ||
           (rp->edge_order_get.ran && rp->edge_order_get.r.ok == 0);
}

/*
 * Measure one shop into rp: the ceilings (copied from `ceilings` when not
 * NULL, else measured unless --no-ceilings), then the shop's phases. 0; 3
 * when a load phase got no successful answer (rp is filled); else the exit
 * status of bench_session_open (rp holds nothing).
 */
static int bench_measure(const bench_opts *o, const bench_report *ceilings,
                         bench_report *rp)
{
    memset(rp, 0, sizeof(*rp));
    rp->cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    rp->seconds = o->seconds;
    rp->connections = o->connections;
    rp->window = o->window;
    bench_session s;
    int rc = bench_session_open(&s, o, 2);
    if (rc != 0) {
        return rc;
    }
    snprintf(rp->url, sizeof(rp->url), "%s", s.url);
    snprintf(rp->store, sizeof(rp->store), "%s", s.shop.store);
    rp->transport = s.transport;
    rp->replicas = s.shop.replicas;
    bench_shop_sample_idle(&s.shop);
    bench_shop_sampler_start(&s.shop);
    if (ceilings != NULL) {
        rp->civetweb = ceilings->civetweb;
        memcpy(rp->civetweb_rpc, ceilings->civetweb_rpc, sizeof(rp->civetweb_rpc));
        rp->nng = ceilings->nng;
        rp->mqtt = ceilings->mqtt;
    } else if (!o->no_ceilings) {
        bench_ceilings_run(o, &s, rp);
    }
    bench_shop_run(o, &s, rp);
    bench_shop_sampler_stop(&s.shop);
    rp->n_procs = s.shop.n_procs;
    memcpy(rp->procs, s.shop.procs, sizeof(rp->procs));
    rc = bench_report_empty(rp) ? 3 : 0;
    if (rc != 0) {
        fprintf(stderr, "webshop-bench: a load phase got no successful answer\n");
    }
    bench_session_close(&s, o->keep || rc != 0);
    return rc;
}

/* One store (the script's default unless --store): its table and JSON. */
static int bench_run(const bench_opts *o)
{
    bench_report *rp = calloc(1, sizeof(*rp));
    if (rp == NULL) {
        return 1;
    }
    int rc = bench_measure(o, NULL, rp);
    if (rc == 0 || rc == 3) {
        bench_report_print(rp, stdout);
        if (o->json != NULL && bench_report_json(rp, o->json) != 0 && rc == 0) {
            rc = 1;
        }
    }
    free(rp);
    return rc;
}

/* --store both: SQLite, then PostgreSQL with the same ceilings, side by side. */
static int bench_run_both(const bench_opts *o)
{
    bench_report *rp = calloc(2, sizeof(*rp));
    if (rp == NULL) {
        return 1;
    }
    bench_opts one = *o;
    one.store = "sqlite";
    fprintf(stderr,
            "bench: --store both: the shop on SQLite first, then on PostgreSQL\n");
    int rc = bench_measure(&one, NULL, &rp[0]);
    if (rc == 0 || rc == 3) {
        one.store = "postgres";
        int rc_pg = bench_measure(&one, o->no_ceilings ? NULL : &rp[0], &rp[1]);
        rc = rc_pg != 0 ? rc_pg : rc;
        if (rc_pg == 0 || rc_pg == 3) {
            bench_report_print(&rp[0], stdout);
            bench_report_print(&rp[1], stdout);
            bench_compare_print(&rp[0], &rp[1], stdout);
            if (o->json != NULL && bench_compare_json(&rp[0], &rp[1], o->json) != 0 &&
                rc == 0) {
                rc = 1;
            }
        }
    }
    free(rp);
    return rc;
}

/* --replicas A,B: A replicas, then B with the same ceilings, side by side. */
static int bench_run_replicas(const bench_opts *o)
{
    bench_report *rp = calloc(2, sizeof(*rp));
    if (rp == NULL) {
        return 1;
    }
    bench_opts one = *o;
    one.replicas_vs = 0;
    fprintf(stderr, "bench: --replicas %d,%d: the shop with %d replicas first, then %d\n",
            o->replicas, o->replicas_vs, o->replicas, o->replicas_vs);
    int rc = bench_measure(&one, NULL, &rp[0]);
    if (rc == 0 || rc == 3) {
        one.replicas = o->replicas_vs;
        int rc_b = bench_measure(&one, o->no_ceilings ? NULL : &rp[0], &rp[1]);
        rc = rc_b != 0 ? rc_b : rc;
        if (rc_b == 0 || rc_b == 3) {
            bench_report_print(&rp[0], stdout);
            bench_report_print(&rp[1], stdout);
            bench_replicas_print(&rp[0], &rp[1], stdout);
            if (o->json != NULL && bench_replicas_json(&rp[0], &rp[1], o->json) != 0 &&
                rc == 0) {
                rc = 1;
            }
        }
    }
    free(rp);
    return rc;
}

int main(int argc, char **argv)
{
    bench_opts o = {.seconds = 5.0,
                    .drain = 5.0,
                    .requests = 5000000,
                    .connections = 16,
                    .window = 1000,
                    .script = BENCH_WEBSHOP_SCRIPT,
                    .build_dir = BENCH_BUILD_DIR,
                    /* With --url and no facts: the services' default, ipc. */
                    .transport = BENCH_IPC};
    if (argc == 4 && strcmp(argv[1], "--echo-server") == 0) {
        /* The child of a civetweb + nng ceiling (ceiling.h). */
        bench_transport tr = strcmp(argv[2], "ipc") == 0       ? BENCH_IPC
                             : strcmp(argv[2], "tls+tcp") == 0 ? BENCH_TLS
                                                               : BENCH_TCP;
        return bench_echo_serve(tr, atoi(argv[3]));
    }
    int rc = bench_opts_parse(argc, argv, &o);
    if (rc != 0) {
        return rc == 1 ? 0 : rc;
    }
    signal(SIGPIPE, SIG_IGN);
    mg_init_library(0);
    mosquitto_lib_init();
    if (o.curve) {
        rc = bench_curve_main(&o);
    } else if (o.replicas_vs > 0) {
        rc = bench_run_replicas(&o);
    } else if (o.store != NULL && strcmp(o.store, "both") == 0) {
        rc = bench_run_both(&o);
    } else {
        rc = bench_run(&o);
    }
    mosquitto_lib_cleanup();
    mg_exit_library();
    nng_fini();
    return rc;
}
