/*
 * webshop-bench: the load generator and benchmark of the shop (issue 7).
 * Starts a shop with `tools/webshop up` (or attaches to a running one),
 * measures on the same machine in the same run the ceilings of the
 * components the shop is built from (bare civetweb, bare nng req/rep, bare
 * Mosquitto QoS 1), then loads the shop: GET /inventory, POST /order with
 * end-to-end timing to a final status over MQTT, GET /order/{id}, and the
 * end-to-end latency at half the maximum order rate; samples the RSS of
 * every process; prints a table with each figure as a fraction of its
 * ceiling next to the target, and optionally JSON. Loopback only.
 * Speed is reported, never asserted: the exit status says only whether the
 * measurements could be taken.
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
#include "load.h"
#include "orders.h"
#include "shop.h"

#ifndef BENCH_WEBSHOP_SCRIPT
#define BENCH_WEBSHOP_SCRIPT "tools/webshop"
#endif
#ifndef BENCH_BUILD_DIR
#define BENCH_BUILD_DIR "build"
#endif

/* The targets. */
#define TARGET_INVENTORY   0.6
#define TARGET_ORDER_GET   0.35
#define TARGET_E2E         0.4
#define TARGET_HALF_P99_MS 50.0
#define TARGET_IDLE_KB     (10 * 1024)
#define TARGET_PEAK_KB     (40 * 1024)

typedef struct bench_opts {
    double seconds;
    double drain;
    uint64_t requests;
    int connections;
    int window;
    const char *url;
    const char *state_dir;
    const char *broker;
    const char *broker_user;
    const char *broker_password_file;
    const char *json;
    const char *script;
    const char *build_dir;
    bool no_ceilings;
    bool keep;
    int pids[BENCH_PROCS];
} bench_opts;

/* One load phase's figures, as reported. */
typedef struct bench_phase {
    bool ran;
    bench_load_result r;
} bench_phase;

typedef struct bench_report {
    int cores;
    bench_opts *o;
    bench_ceiling civetweb, nng, mqtt;
    bool civetweb_ran, nng_ran, mqtt_ran;
    bench_phase inventory, post, order_get, half_post;
    bool e2e_ran, half_ran;
    bench_e2e e2e, half;
    double half_rate;
    bench_proc procs[BENCH_PROCS];
    char url[256];
} bench_report;

/* ---- request builders -------------------------------------------------- */

typedef struct bench_req_ctx {
    const bench_target *t;
    bench_orders *orders; /* POST: where accepted orders are recorded */
    size_t n_ids;         /* GET /order/{id}: orders to pick from */
} bench_req_ctx;

static size_t bench_make_inventory(void *ctx, int conn, uint64_t seq, char *out,
                                   size_t cap)
{
    (void)conn;
    (void)seq;
    const bench_req_ctx *c = ctx;
    int n = snprintf(out, cap, "GET %s/inventory HTTP/1.1\r\nHost: %s\r\n\r\n",
                     c->t->base_path, c->t->host);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static size_t bench_make_civetweb(void *ctx, int conn, uint64_t seq, char *out,
                                  size_t cap)
{
    (void)conn;
    (void)seq;
    const bench_req_ctx *c = ctx;
    int n = snprintf(out, cap, "GET /bench HTTP/1.1\r\nHost: %s\r\n\r\n", c->t->host);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static size_t bench_make_post(void *ctx, int conn, uint64_t seq, char *out, size_t cap)
{
    const bench_req_ctx *c = ctx;
    char body[96];
    int blen =
        snprintf(body, sizeof(body), "{\"items\": [{\"inventoryId\": %d, \"count\": 1}]}",
                 (int)((seq + (uint64_t)conn) % 2) + 1);
    int n = snprintf(
        out, cap,
        "POST %s/order HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
        "Content-Length: %d\r\n\r\n%s",
        c->t->base_path, c->t->host, blen, body);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static void bench_done_post(void *ctx, int conn, uint64_t seq, int status,
                            const char *body, size_t len, double t_sent, double t_done)
{
    (void)conn;
    (void)seq;
    (void)t_done;
    const bench_req_ctx *c = ctx;
    if (status != 201 || c->orders == NULL) {
        return;
    }
    const char *key = memmem(body, len, "\"order_id\"", 10);
    if (key == NULL) {
        return;
    }
    const char *q = memchr(key + 10, '"', len - (size_t)(key + 10 - body));
    if (q == NULL) {
        return;
    }
    const char *e = memchr(q + 1, '"', len - (size_t)(q + 1 - body));
    if (e == NULL) {
        return;
    }
    bench_orders_posted(c->orders, q + 1, (size_t)(e - q - 1), t_sent);
}

static size_t bench_make_get_order(void *ctx, int conn, uint64_t seq, char *out,
                                   size_t cap)
{
    const bench_req_ctx *c = ctx;
    size_t i = (size_t)((uint64_t)conn * 7919u + seq * 16u + (uint64_t)conn) % c->n_ids;
    int n = snprintf(out, cap, "GET %s/order/%s HTTP/1.1\r\nHost: %s\r\n\r\n",
                     c->t->base_path, bench_orders_id(c->orders, i), c->t->host);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- output ------------------------------------------------------------ */

static double bench_ms(double ns)
{
    return ns / 1e6;
}

static const char *bench_verdict(bool ran, bool met)
{
    return !ran ? "n/a" : met ? "met" : "MISSED";
}

static void bench_print_load(const char *name, const bench_phase *p, const char *unit)
{
    if (!p->ran) {
        printf("  %-30s %12s\n", name, "not run");
        return;
    }
    printf(
        "  %-30s %10.0f %-6s %8.3f %8.3f %8.3f   (%llu ok, %llu other status, %llu I/O "
        "errors)\n",
        name, bench_load_rate(&p->r), unit,
        bench_ms(bench_hist_percentile(&p->r.hist, 50)),
        bench_ms(bench_hist_percentile(&p->r.hist, 90)),
        bench_ms(bench_hist_percentile(&p->r.hist, 99)), (unsigned long long)p->r.ok,
        (unsigned long long)p->r.bad_status, (unsigned long long)p->r.io_errors);
}

static void bench_print_ceiling(const char *name, bool ran, const bench_ceiling *c,
                                const char *unit)
{
    if (!ran) {
        printf("  %-30s %12s\n", name, "not run");
        return;
    }
    printf("  %-30s %10.0f %-6s %8.3f %8.3f %8.3f\n", name, c->per_sec, unit,
           bench_ms(bench_hist_percentile(&c->hist, 50)),
           bench_ms(bench_hist_percentile(&c->hist, 90)),
           bench_ms(bench_hist_percentile(&c->hist, 99)));
}

static double bench_frac(double v, double ceiling)
{
    return ceiling > 0 ? v / ceiling : 0.0;
}

static void bench_print(const bench_report *rp)
{
    const bench_opts *o = rp->o;
    printf("\nwebshop bench: %d cores, %.1f s per phase, %d connections, shop at %s\n\n",
           rp->cores, o->seconds, o->connections, rp->url);
    printf("  %-30s %17s %8s %8s %8s\n", "ceilings (same machine, run)", "rate", "p50 ms",
           "p90 ms", "p99 ms");
    bench_print_ceiling("civetweb bare, 400 B JSON", rp->civetweb_ran, &rp->civetweb,
                        "req/s");
    bench_print_ceiling("nng req/rep, 16 ctx, tcp", rp->nng_ran, &rp->nng, "rt/s");
    char mq[64];
    snprintf(mq, sizeof(mq), "mosquitto QoS 1, window %d", o->window);
    bench_print_ceiling(mq, rp->mqtt_ran, &rp->mqtt, "msg/s");
    printf("\n  %-30s %17s %8s %8s %8s\n", "shop", "rate", "p50 ms", "p90 ms", "p99 ms");
    bench_print_load("GET /inventory", &rp->inventory, "req/s");
    bench_print_load("GET /order/{id}", &rp->order_get, "req/s");
    bench_print_load("POST /order accepted", &rp->post, "req/s");
    if (rp->e2e_ran) {
        printf("  %-30s %10.0f %-6s %8.3f %8s %8.3f   (%llu of %llu orders final: %llu "
               "successful, %llu out of stock)\n",
               "orders end to end (max)", rp->e2e.per_sec, "ord/s",
               bench_ms(bench_hist_percentile(&rp->e2e.hist, 50)), "",
               bench_ms(bench_hist_percentile(&rp->e2e.hist, 99)),
               (unsigned long long)rp->e2e.completed, (unsigned long long)rp->e2e.posted,
               (unsigned long long)rp->e2e.successful,
               (unsigned long long)rp->e2e.unsuccessful);
    } else {
        printf("  %-30s %12s\n", "orders end to end (max)", "not run");
    }
    if (rp->half_ran) {
        printf("  %-30s %10.0f %-6s %8.3f %8s %8.3f   (%llu of %llu orders final)\n",
               "orders end to end at half rate", rp->half.per_sec, "ord/s",
               bench_ms(bench_hist_percentile(&rp->half.hist, 50)), "",
               bench_ms(bench_hist_percentile(&rp->half.hist, 99)),
               (unsigned long long)rp->half.completed,
               (unsigned long long)rp->half.posted);
    } else {
        printf("  %-30s %12s\n", "orders end to end at half rate", "not run");
    }

    double civ = rp->civetweb_ran ? rp->civetweb.per_sec : 0;
    double mq3 = rp->mqtt_ran ? rp->mqtt.per_sec / 3.0 : 0;
    double finv = bench_frac(bench_load_rate(&rp->inventory.r), civ);
    double fget = bench_frac(bench_load_rate(&rp->order_get.r), civ);
    double fe2e = bench_frac(rp->e2e.per_sec, mq3);
    double p99h = bench_ms(bench_hist_percentile(&rp->half.hist, 99));
    printf("\n  %-44s %10s %10s %8s\n", "target (issue 7)", "measured", "target", "");
    printf("  %-44s %10.3f %10s %8s\n", "GET /inventory / civetweb", finv, ">= 0.60",
           bench_verdict(rp->inventory.ran && civ > 0, finv >= TARGET_INVENTORY));
    printf("  %-44s %10.3f %10s %8s\n", "GET /order/{id} / civetweb", fget, ">= 0.35",
           bench_verdict(rp->order_get.ran && civ > 0, fget >= TARGET_ORDER_GET));
    printf("  %-44s %10.3f %10s %8s\n", "orders/s end to end / (mosquitto / 3)", fe2e,
           ">= 0.40", bench_verdict(rp->e2e_ran && mq3 > 0, fe2e >= TARGET_E2E));
    char lbl[96];
    snprintf(lbl, sizeof(lbl), "p99 POST->final at %.0f orders/s, ms", rp->half_rate);
    printf(
        "  %-44s %10.3f %10s %8s\n", lbl, p99h, "< 50",
        bench_verdict(rp->half_ran && rp->half.completed > 0, p99h < TARGET_HALF_P99_MS));

    printf("\n  %-12s %10s %10s %10s\n", "RSS MiB", "idle", "peak", "target");
    for (int i = 0; i < BENCH_PROCS; i++) {
        const bench_proc *p = &rp->procs[i];
        bool service = strcmp(p->name, "broker") != 0;
        if (p->idle_kb < 0 && p->peak_kb < 0) {
            printf("  %-12s %10s %10s %10s\n", p->name, "?", "?",
                   service ? "< 10 / < 40" : "");
            continue;
        }
        printf("  %-12s %10.1f %10.1f %10s %s\n", p->name, (double)p->idle_kb / 1024.0,
               (double)p->peak_kb / 1024.0, service ? "< 10 / < 40" : "(not a target)",
               !service                                                       ? ""
               : (p->idle_kb < TARGET_IDLE_KB && p->peak_kb < TARGET_PEAK_KB) ? "met"
                                                                              : "MISSED");
    }
    printf("\n");
    fflush(stdout);
}

static void bench_json_hist(FILE *f, const bench_hist *h)
{
    fprintf(f, "\"p50_ms\": %.4f, \"p90_ms\": %.4f, \"p99_ms\": %.4f, \"max_ms\": %.4f",
            bench_ms(bench_hist_percentile(h, 50)),
            bench_ms(bench_hist_percentile(h, 90)),
            bench_ms(bench_hist_percentile(h, 99)), bench_ms((double)h->max_ns));
}

static void bench_json_load(FILE *f, const char *name, const bench_phase *p, bool comma)
{
    fprintf(f,
            "    \"%s\": {\"ran\": %s, \"per_sec\": %.1f, \"ok\": %llu, "
            "\"other_status\": %llu, "
            "\"io_errors\": %llu, \"seconds\": %.3f, ",
            name, p->ran ? "true" : "false", bench_load_rate(&p->r),
            (unsigned long long)p->r.ok, (unsigned long long)p->r.bad_status,
            (unsigned long long)p->r.io_errors, p->r.elapsed);
    bench_json_hist(f, &p->r.hist);
    fprintf(f, "}%s\n", comma ? "," : "");
}

static void bench_json_ceiling(FILE *f, const char *name, bool ran,
                               const bench_ceiling *c, bool comma)
{
    fprintf(
        f,
        "    \"%s\": {\"ran\": %s, \"per_sec\": %.1f, \"ops\": %llu, \"errors\": %llu, ",
        name, ran ? "true" : "false", c->per_sec, (unsigned long long)c->ops,
        (unsigned long long)c->errors);
    bench_json_hist(f, &c->hist);
    fprintf(f, "}%s\n", comma ? "," : "");
}

static void bench_json_e2e(FILE *f, const char *name, bool ran, const bench_e2e *e,
                           double rate, bool comma)
{
    fprintf(f,
            "    \"%s\": {\"ran\": %s, \"per_sec\": %.1f, \"offered_per_sec\": %.1f, "
            "\"posted\": %llu, \"completed\": %llu, \"successful\": %llu, "
            "\"unsuccessful\": %llu, ",
            name, ran ? "true" : "false", e->per_sec, rate, (unsigned long long)e->posted,
            (unsigned long long)e->completed, (unsigned long long)e->successful,
            (unsigned long long)e->unsuccessful);
    bench_json_hist(f, &e->hist);
    fprintf(f, "}%s\n", comma ? "," : "");
}

static int bench_json_write(const bench_report *rp, const char *path)
{
    FILE *f = fopen(path, "we");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    double civ = rp->civetweb_ran ? rp->civetweb.per_sec : 0;
    double mq3 = rp->mqtt_ran ? rp->mqtt.per_sec / 3.0 : 0;
    fprintf(
        f,
        "{\n  \"cores\": %d,\n  \"seconds_per_phase\": %.3f,\n  \"connections\": %d,\n",
        rp->cores, rp->o->seconds, rp->o->connections);
    fprintf(f, "  \"ceilings\": {\n");
    bench_json_ceiling(f, "civetweb", rp->civetweb_ran, &rp->civetweb, true);
    bench_json_ceiling(f, "nng_reqrep", rp->nng_ran, &rp->nng, true);
    bench_json_ceiling(f, "mosquitto_qos1", rp->mqtt_ran, &rp->mqtt, false);
    fprintf(f, "  },\n  \"shop\": {\n");
    bench_json_load(f, "get_inventory", &rp->inventory, true);
    bench_json_load(f, "get_order", &rp->order_get, true);
    bench_json_load(f, "post_order", &rp->post, true);
    bench_json_e2e(f, "orders_e2e", rp->e2e_ran, &rp->e2e, 0, true);
    bench_json_e2e(f, "orders_e2e_half_rate", rp->half_ran, &rp->half, rp->half_rate,
                   false);
    fprintf(f, "  },\n  \"fractions\": {\n");
    fprintf(f, "    \"get_inventory_of_civetweb\": %.4f,\n",
            bench_frac(bench_load_rate(&rp->inventory.r), civ));
    fprintf(f, "    \"get_order_of_civetweb\": %.4f,\n",
            bench_frac(bench_load_rate(&rp->order_get.r), civ));
    fprintf(f, "    \"orders_e2e_of_mosquitto_div_3\": %.4f\n",
            bench_frac(rp->e2e.per_sec, mq3));
    fprintf(f,
            "  },\n  \"targets\": {\"get_inventory_of_civetweb\": %.2f, "
            "\"get_order_of_civetweb\": %.2f, \"orders_e2e_of_mosquitto_div_3\": %.2f, "
            "\"half_rate_p99_ms\": %.1f, \"idle_rss_kib\": %d, \"peak_rss_kib\": %d},\n",
            TARGET_INVENTORY, TARGET_ORDER_GET, TARGET_E2E, TARGET_HALF_P99_MS,
            TARGET_IDLE_KB, TARGET_PEAK_KB);
    fprintf(f, "  \"rss_kib\": {\n");
    for (int i = 0; i < BENCH_PROCS; i++) {
        fprintf(f, "    \"%s\": {\"pid\": %d, \"idle\": %ld, \"peak\": %ld}%s\n",
                rp->procs[i].name, rp->procs[i].pid, rp->procs[i].idle_kb,
                rp->procs[i].peak_kb, i + 1 < BENCH_PROCS ? "," : "");
    }
    fprintf(f, "  }\n}\n");
    return fclose(f) == 0 ? 0 : -1;
}

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
        "  --state-dir DIR    use the shop running from DIR, or start one there\n"
        "  --url URL          target a running shop at URL (loopback only)\n"
        "  --broker HOST:PORT with --url: its broker (end-to-end timing, MQTT ceiling)\n"
        "  --broker-user U    with --broker: MQTT user (e.g. webshop-admin)\n"
        "  --broker-password-file F  with --broker: file holding that user's password\n"
        "  --pid NAME=PID     with --url: a process to sample (broker, inventory, order, "
        "front)\n"
        "  --webshop PATH     the tools/webshop script (default %s)\n"
        "  --build-dir DIR    the build tree the shop runs from (default %s)\n"
        "  --no-ceilings      skip the ceiling measurements\n"
        "  --keep             keep the temporary state directory and its logs\n"
        "  -h, --help         this text\n",
        BENCH_WEBSHOP_SCRIPT, BENCH_BUILD_DIR);
}

static int bench_opts_parse(int argc, char **argv, bench_opts *o)
{
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
        O_BUSER,
        O_BPASS,
        O_DRAIN
    };
    static const struct option longopts[] = {
        {"seconds", required_argument, NULL, O_SECONDS},
        {"requests", required_argument, NULL, O_REQUESTS},
        {"connections", required_argument, NULL, O_CONN},
        {"window", required_argument, NULL, O_WINDOW},
        {"drain", required_argument, NULL, O_DRAIN},
        {"json", required_argument, NULL, O_JSON},
        {"state-dir", required_argument, NULL, O_STATE},
        {"url", required_argument, NULL, O_URL},
        {"broker", required_argument, NULL, O_BROKER},
        {"pid", required_argument, NULL, O_PID},
        {"broker-user", required_argument, NULL, O_BUSER},
        {"broker-password-file", required_argument, NULL, O_BPASS},
        {"webshop", required_argument, NULL, O_SCRIPT},
        {"build-dir", required_argument, NULL, O_BUILD},
        {"no-ceilings", no_argument, NULL, O_NOCEIL},
        {"keep", no_argument, NULL, O_KEEP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_SECONDS:
            o->seconds = strtod(optarg, &end);
            if (*end != '\0' || o->seconds <= 0 || o->seconds > 3600) {
                fprintf(stderr, "webshop-bench: --seconds: expected 0 < S <= 3600\n");
                return 2;
            }
            break;
        case O_DRAIN:
            o->drain = strtod(optarg, &end);
            if (*end != '\0' || o->drain <= 0 || o->drain > 600) {
                fprintf(stderr, "webshop-bench: --drain: expected 0 < S <= 600\n");
                return 2;
            }
            break;
        case O_REQUESTS:
            o->requests = strtoull(optarg, &end, 10);
            if (*end != '\0' || o->requests == 0) {
                fprintf(stderr, "webshop-bench: --requests: expected a positive count\n");
                return 2;
            }
            break;
        case O_CONN:
            o->connections = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || o->connections < 1 || o->connections > 1024) {
                fprintf(stderr, "webshop-bench: --connections: expected 1..1024\n");
                return 2;
            }
            break;
        case O_WINDOW:
            o->window = (int)strtol(optarg, &end, 10);
            if (*end != '\0' || o->window < 1 || o->window > 65535) {
                fprintf(stderr, "webshop-bench: --window: expected 1..65535\n");
                return 2;
            }
            break;
        case O_JSON:
            o->json = optarg;
            break;
        case O_STATE:
            o->state_dir = optarg;
            break;
        case O_URL:
            o->url = optarg;
            break;
        case O_BROKER:
            o->broker = optarg;
            break;
        case O_BUSER:
            o->broker_user = optarg;
            break;
        case O_BPASS:
            o->broker_password_file = optarg;
            break;
        case O_PID: {
            const char *eq = strchr(optarg, '=');
            int found = -1;
            static const char *const names[BENCH_PROCS] = {"broker", "inventory", "order",
                                                           "front"};
            for (int i = 0; eq != NULL && i < BENCH_PROCS; i++) {
                if (strlen(names[i]) == (size_t)(eq - optarg) &&
                    strncmp(optarg, names[i], (size_t)(eq - optarg)) == 0) {
                    found = i;
                }
            }
            if (found < 0 || atoi(eq + 1) <= 0) {
                fprintf(stderr,
                        "webshop-bench: --pid: expected NAME=PID, NAME one of broker, "
                        "inventory, order, front\n");
                return 2;
            }
            o->pids[found] = atoi(eq + 1);
            break;
        }
        case O_SCRIPT:
            o->script = optarg;
            break;
        case O_BUILD:
            o->build_dir = optarg;
            break;
        case O_NOCEIL:
            o->no_ceilings = true;
            break;
        case O_KEEP:
            o->keep = true;
            break;
        case 'h':
            bench_usage(stdout);
            return 1;
        default:
            bench_usage(stderr);
            return 2;
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
    if (o->url == NULL && (o->broker != NULL)) {
        fprintf(stderr, "webshop-bench: --broker needs --url\n");
        return 2;
    }
    return 0;
}

/* Split "host:port" of a loopback broker; refuses other hosts. */
static int bench_broker_parse(const char *s, char *host, size_t cap, int *port)
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

/* ---- the run ---------------------------------------------------------------- */

static void bench_phase_run(const char *what, bench_phase *p, const bench_load_spec *spec)
{
    fprintf(stderr, "bench: %s for %.1f s ...\n", what, spec->seconds);
    p->ran = bench_load_run(spec, &p->r) == 0;
    if (p->ran && p->r.ok == 0) {
        fprintf(stderr,
                "bench: %s: no successful answer (last status %d, %llu I/O errors)\n",
                what, p->r.last_bad, (unsigned long long)p->r.io_errors);
    }
}

static int bench_run(bench_opts *o)
{
    bench_report rp;
    memset(&rp, 0, sizeof(rp));
    rp.o = o;
    rp.cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int rc = 0;
    bench_shop shop;
    memset(&shop, 0, sizeof(shop));
    bool have_shop = false;
    int fresh_broker_pid = 0;
    char fresh_dir[] = "/tmp/webshop-bench-broker-XXXXXX";
    bool fresh_dir_made = false;
    char broker_host[64] = "";
    int broker_port = 0;
    const char *broker_user = NULL;
    const char *broker_password = NULL;
    bench_orders *orders = NULL;

    if (o->url != NULL) {
        snprintf(rp.url, sizeof(rp.url), "%s", o->url);
        for (int i = 0; i < BENCH_PROCS; i++) {
            static const char *const names[BENCH_PROCS] = {"broker", "inventory", "order",
                                                           "front"};
            snprintf(shop.procs[i].name, sizeof(shop.procs[i].name), "%s", names[i]);
            shop.procs[i].pid = o->pids[i];
            shop.procs[i].idle_kb = -1;
            shop.procs[i].peak_kb = -1;
        }
        atomic_init(&shop.sampler_stop, false);
        if (o->broker != NULL &&
            bench_broker_parse(o->broker, broker_host, sizeof(broker_host),
                               &broker_port) != 0) {
            return 2;
        }
        broker_user = o->broker_user;
        if (o->broker_password_file != NULL) {
            if (bench_read_secret(o->broker_password_file, shop.broker_password,
                                  sizeof(shop.broker_password)) != 0) {
                fprintf(stderr, "webshop-bench: cannot read %s\n",
                        o->broker_password_file);
                return 2;
            }
            broker_password = shop.broker_password;
        }
    } else {
        int port = bench_free_port();
        if (bench_shop_up(&shop, o->script, o->build_dir, o->state_dir, port) != 0) {
            bench_shop_down(&shop, true);
            return 1;
        }
        have_shop = true;
        snprintf(rp.url, sizeof(rp.url), "%s", shop.url);
        snprintf(broker_host, sizeof(broker_host), "%s", shop.broker_host);
        broker_port = shop.broker_port;
        broker_user = shop.broker_user;
        broker_password = shop.broker_password;
    }
    bench_target target;
    char err[256];
    if (bench_target_parse(rp.url, &target, err, sizeof(err)) != 0) {
        fprintf(stderr, "webshop-bench: %s\n", err);
        rc = 2;
        goto out;
    }
    if (broker_port > 0) {
        char url[128];
        bench_target bt;
        snprintf(url, sizeof(url), "http://%s:%d/", broker_host, broker_port);
        if (bench_target_parse(url, &bt, err, sizeof(err)) != 0) {
            fprintf(stderr, "webshop-bench: broker: %s\n", err);
            rc = 2;
            goto out;
        }
    }

    bench_shop_sample_idle(&shop);
    bench_shop_sampler_start(&shop);

    /* Ceilings first, while the shop idles. */
    if (!o->no_ceilings) {
        int cport = 0;
        bench_civetweb *cw = bench_civetweb_start(o->connections, &cport);
        if (cw != NULL) {
            char url[64];
            bench_target ct;
            snprintf(url, sizeof(url), "http://127.0.0.1:%d", cport);
            if (bench_target_parse(url, &ct, err, sizeof(err)) == 0) {
                bench_req_ctx rc_ctx = {.t = &ct};
                bench_load_spec spec = {.target = &ct,
                                        .connections = o->connections,
                                        .seconds = o->seconds,
                                        .max_requests = o->requests,
                                        .ok_status = 200,
                                        .make = bench_make_civetweb,
                                        .ctx = &rc_ctx};
                bench_phase ph;
                memset(&ph, 0, sizeof(ph));
                bench_phase_run("ceiling: bare civetweb", &ph, &spec);
                rp.civetweb_ran = ph.ran && ph.r.ok > 0;
                rp.civetweb.per_sec = bench_load_rate(&ph.r);
                rp.civetweb.ops = ph.r.ok;
                rp.civetweb.errors = ph.r.bad_status + ph.r.io_errors;
                rp.civetweb.elapsed = ph.r.elapsed;
                rp.civetweb.hist = ph.r.hist;
            }
            bench_civetweb_stop(cw);
        } else {
            fprintf(stderr, "bench: cannot start the bare civetweb server\n");
        }
        fprintf(stderr, "bench: ceiling: bare nng req/rep for %.1f s ...\n", o->seconds);
        rp.nng_ran = bench_nng_run(16, 128, o->seconds, &rp.nng) == 0;
        if (broker_port == 0) {
            if (mkdtemp(fresh_dir) != NULL) {
                fresh_dir_made = true;
                if (bench_broker_start(fresh_dir, &fresh_broker_pid, &broker_port) == 0) {
                    snprintf(broker_host, sizeof(broker_host), "127.0.0.1");
                    broker_user = NULL;
                    fprintf(stderr, "bench: no shop broker known: a fresh one for the "
                                    "ceiling\n");
                }
            }
        }
        if (broker_port > 0) {
            fprintf(stderr, "bench: ceiling: mosquitto QoS 1 for %.1f s ...\n",
                    o->seconds);
            rp.mqtt_ran =
                bench_mqtt_run(broker_host, broker_port, broker_user, broker_password,
                               o->window, 100, o->seconds, &rp.mqtt) == 0;
        }
        if (fresh_broker_pid > 0) {
            bench_broker_stop(fresh_broker_pid);
            fresh_broker_pid = 0;
            broker_port = 0;
        }
    }

    /* The shop. */
    bench_req_ctx ctx = {.t = &target};
    bench_load_spec spec = {.target = &target,
                            .connections = o->connections,
                            .seconds = o->seconds,
                            .max_requests = o->requests,
                            .ok_status = 200,
                            .make = bench_make_inventory,
                            .ctx = &ctx};
    bench_phase_run("GET /inventory", &rp.inventory, &spec);

    if (broker_port > 0) {
        orders =
            bench_orders_open(broker_host, broker_port, broker_user, broker_password);
    }
    ctx.orders = orders;
    spec.make = bench_make_post;
    spec.done = bench_done_post;
    spec.ok_status = 201;
    double t0 = bench_now();
    bench_phase_run("POST /order", &rp.post, &spec);
    if (orders != NULL) {
        fprintf(stderr, "bench: waiting for the orders to reach a final status ...\n");
        bench_orders_drain(orders, o->drain, 10.0 * o->drain + o->seconds);
        bench_orders_match(orders, 0, t0, &rp.e2e);
        rp.e2e_ran = true;
    }

    size_t n_ids = orders != NULL ? bench_orders_count(orders) : 0;
    if (n_ids > 0) {
        ctx.n_ids = n_ids;
        spec.make = bench_make_get_order;
        spec.done = NULL;
        spec.ok_status = 200;
        bench_phase_run("GET /order/{id}", &rp.order_get, &spec);
    } else {
        fprintf(stderr, "bench: no accepted orders: GET /order/{id} not run\n");
    }

    if (orders != NULL && rp.e2e.per_sec > 0) {
        rp.half_rate = rp.e2e.per_sec / 2.0;
        spec.make = bench_make_post;
        spec.done = bench_done_post;
        spec.ok_status = 201;
        spec.rate = rp.half_rate;
        size_t from = bench_orders_count(orders);
        char what[96];
        snprintf(what, sizeof(what), "POST /order at %.0f orders/s", rp.half_rate);
        t0 = bench_now();
        bench_phase_run(what, &rp.half_post, &spec);
        bench_orders_drain(orders, o->drain, 10.0 * o->drain + o->seconds);
        bench_orders_match(orders, from, t0, &rp.half);
        rp.half_ran = true;
    }

    bench_shop_sampler_stop(&shop);
    memcpy(rp.procs, shop.procs, sizeof(rp.procs));
    bench_print(&rp);
    if (o->json != NULL && bench_json_write(&rp, o->json) != 0) {
        rc = 1;
    }
    if ((rp.inventory.ran && rp.inventory.r.ok == 0) ||
        (rp.post.ran && rp.post.r.ok == 0) ||
        (rp.order_get.ran && rp.order_get.r.ok == 0)) {
        fprintf(stderr, "webshop-bench: a load phase got no successful answer\n");
        rc = 3;
    }
out:
    bench_orders_close(orders);
    if (fresh_broker_pid > 0) {
        bench_broker_stop(fresh_broker_pid);
    }
    if (fresh_dir_made) {
        char conf[PATH_MAX];
        snprintf(conf, sizeof(conf), "%s/bench-mosquitto.conf", fresh_dir);
        remove(conf);
        rmdir(fresh_dir);
    }
    bench_shop_sampler_stop(&shop);
    if (have_shop) {
        bench_shop_down(&shop, o->keep || rc != 0);
    }
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
                    .build_dir = BENCH_BUILD_DIR};
    int rc = bench_opts_parse(argc, argv, &o);
    if (rc != 0) {
        return rc == 1 ? 0 : rc;
    }
    signal(SIGPIPE, SIG_IGN);
    mg_init_library(0);
    mosquitto_lib_init();
    rc = bench_run(&o);
    mosquitto_lib_cleanup();
    mg_exit_library();
    nng_fini();
    return rc;
}
