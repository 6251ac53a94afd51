/*
 * The shop under test; see shop.h. Starting and stopping go through
 * tools/webshop so the bench measures exactly what `tools/webshop up` runs.
 */
#include "shop.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "load.h"
#include "tls.h"

static const char *const shop_proc_names[BENCH_PROCS] = {"broker", "inventory", "order",
                                                         "front"};

/* Most extra arguments shop_script_run passes. */
#define SHOP_EXTRA_MAX 8

/*
 * Run `script verb --state-dir DIR [extra...]` with WEBSHOP_BUILD_DIR set;
 * extra is NULL or a NULL-terminated list of at most SHOP_EXTRA_MAX. Its
 * stdout goes to out (cap bytes, NUL-terminated) when out is not NULL,
 * else to our stderr. Returns the exit status, -1 if it could not run.
 */
static int shop_script_run(const bench_shop *s, const char *verb,
                           const char *const *extra, char *out, size_t cap)
{
    int pipefd[2] = {-1, -1};
    if (out != NULL && pipe2(pipefd, O_CLOEXEC) != 0) {
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        dup2(out != NULL ? pipefd[1] : STDERR_FILENO, STDOUT_FILENO);
        setenv("WEBSHOP_BUILD_DIR", s->build_dir, 1);
        const char *argv[5 + SHOP_EXTRA_MAX] = {s->script, verb, "--state-dir",
                                                s->state_dir, NULL};
        for (int i = 0; extra != NULL && extra[i] != NULL && i < SHOP_EXTRA_MAX; i++) {
            argv[4 + i] = extra[i];
            argv[5 + i] = NULL;
        }
        execv(s->script, (char *const *)argv);
        fprintf(stderr, "bench: cannot run %s: %s\n", s->script, strerror(errno));
        _exit(127);
    }
    size_t len = 0;
    if (out != NULL) {
        close(pipefd[1]);
        for (;;) {
            ssize_t n = read(pipefd[0], out + len, cap - 1 - len);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                break;
            }
            len += (size_t)n;
            if (len == cap - 1) {
                break;
            }
        }
        out[len] = '\0';
        close(pipefd[0]);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

void bench_shop_procs_default(bench_shop *s)
{
    s->n_procs = 0;
    for (int i = 0; i < BENCH_PROCS; i++) {
        bench_shop_proc_add(s, shop_proc_names[i], 0);
    }
}

bool bench_shop_proc_add(bench_shop *s, const char *name, int pid)
{
    for (int i = 0; i < s->n_procs; i++) {
        if (strcmp(s->procs[i].name, name) == 0) {
            s->procs[i].pid = pid;
            return true;
        }
    }
    if (s->n_procs == BENCH_PROCS_MAX) {
        return false;
    }
    bench_proc *p = &s->procs[s->n_procs++];
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->pid = pid;
    p->idle_kb = -1;
    p->peak_kb = -1;
    return true;
}

bool bench_proc_is_service(const char *name)
{
    return strncmp(name, "inventory", 9) == 0 || strncmp(name, "order", 5) == 0 ||
           strncmp(name, "front", 5) == 0;
}

const bench_proc *bench_proc_find(const bench_proc *v, int n, const char *name)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(v[i].name, name) == 0) {
            return &v[i];
        }
    }
    return NULL;
}

/* Whether key ends with suffix. */
static bool shop_key_ends(const char *key, const char *suffix)
{
    size_t n = strlen(key);
    size_t m = strlen(suffix);
    return n > m && strcmp(key + n - m, suffix) == 0;
}

/* The port of an http://HOST:PORT/ URL, 0 when it has none. */
static int shop_url_port(const char *url)
{
    const char *p = strstr(url, "://");
    p = p != NULL ? strchr(p + 3, ':') : NULL;
    return p != NULL ? atoi(p + 1) : 0;
}

/* What the facts say of the edge and the fronts, gathered while parsing. */
typedef struct shop_fronts {
    bool haproxy;      /* a haproxy_pid key */
    int haproxy_port;  /* haproxy_port (or haproxy_http_port), 0 none */
    char urls[8][256]; /* front*url* values, comma lists split */
    int n_urls;
    int ports[8]; /* front*_port values */
    int n_ports;
} shop_fronts;

/* A key naming a front's URL or port, or the edge's: gathered into f. */
static bool shop_fact_front(bench_shop *s, shop_fronts *f, const char *key, const char *v)
{
    if (strcmp(key, "haproxy_url") == 0 || strcmp(key, "edge_url") == 0) {
        snprintf(s->edge_url, sizeof(s->edge_url), "%s", v);
        return true;
    }
    if (strcmp(key, "haproxy_port") == 0 || strcmp(key, "haproxy_http_port") == 0) {
        f->haproxy_port = atoi(v);
        return true;
    }
    if (strncmp(key, "front", 5) != 0) {
        return false;
    }
    if (strstr(key, "url") != NULL) {
        char list[1024];
        snprintf(list, sizeof(list), "%s", v);
        char *save = NULL;
        for (char *u = strtok_r(list, ", ", &save); u != NULL && f->n_urls < 8;
             u = strtok_r(NULL, ", ", &save)) {
            snprintf(f->urls[f->n_urls++], sizeof(f->urls[0]), "%s", u);
        }
        return true;
    }
    if (shop_key_ends(key, "_port") && strstr(key, "metrics") == NULL && atoi(v) > 0 &&
        f->n_ports < 8) {
        f->ports[f->n_ports++] = atoi(v);
        return true;
    }
    return false;
}

/* The edge and one front's direct URL from what the facts said. */
static void shop_fronts_resolve(bench_shop *s, const shop_fronts *f)
{
    if (s->edge_url[0] == '\0' && f->haproxy_port > 0) {
        snprintf(s->edge_url, sizeof(s->edge_url), "http://127.0.0.1:%d/",
                 f->haproxy_port);
    }
    if (s->edge_url[0] == '\0' && f->haproxy) {
        snprintf(s->edge_url, sizeof(s->edge_url), "%s", s->url);
    }
    if (s->edge_url[0] == '\0') { /* no edge: `url` is the front */
        snprintf(s->front_url, sizeof(s->front_url), "%s", s->url);
        return;
    }
    int edge_port = shop_url_port(s->edge_url);
    for (int i = 0; i < f->n_urls && s->front_url[0] == '\0'; i++) {
        if (edge_port == 0 || shop_url_port(f->urls[i]) != edge_port) {
            snprintf(s->front_url, sizeof(s->front_url), "%s", f->urls[i]);
        }
    }
    for (int i = 0; i < f->n_ports && s->front_url[0] == '\0'; i++) {
        if (f->ports[i] != edge_port) {
            snprintf(s->front_url, sizeof(s->front_url), "http://127.0.0.1:%d/",
                     f->ports[i]);
        }
    }
}

/* One name=value fact (not `running`) into s and f. */
static void shop_fact(bench_shop *s, shop_fronts *f, const char *key, const char *v)
{
    if (strcmp(key, "url") == 0) {
        snprintf(s->url, sizeof(s->url), "%s", v);
    } else if (strcmp(key, "broker_host") == 0) {
        snprintf(s->broker_host, sizeof(s->broker_host), "%s", v);
    } else if (strcmp(key, "broker_port") == 0) {
        s->broker_port = atoi(v);
    } else if (strcmp(key, "replicas") == 0) {
        s->replicas = atoi(v);
    } else if (strcmp(key, "store") == 0) {
        snprintf(s->store, sizeof(s->store), "%s", v);
    } else if (strcmp(key, "order_rpc") == 0 ||
               (strncmp(key, "order", 5) == 0 && strstr(key, "rpc") != NULL &&
                strstr(v, "://") != NULL && s->order_rpc[0] == '\0')) {
        /* order_rpc, or the first replica's (order_rpc_0, order-0_rpc, ...); a
         * comma list's first address decides the transport. */
        snprintf(s->order_rpc, sizeof(s->order_rpc), "%s", v);
    } else if (strncmp(key, "broker_tls_", 11) == 0) {
        bench_tls_broker_fact(key, v);
    } else if (strcmp(key, "broker_user") == 0) {
        snprintf(s->broker_user, sizeof(s->broker_user), "%s", v);
    } else if (strcmp(key, "broker_password_file") == 0) {
        if (bench_read_secret(v, s->broker_password, sizeof(s->broker_password)) != 0) {
            fprintf(stderr, "bench: cannot read the broker password file %s\n", v);
        }
    } else if (shop_key_ends(key, "_pid") && strstr(key, "supervisor") == NULL) {
        char name[sizeof(s->procs[0].name)];
        snprintf(name, sizeof(name), "%.*s", (int)(strlen(key) - 4), key);
        f->haproxy |= strncmp(name, "haproxy", 7) == 0;
        if (!bench_shop_proc_add(s, name, atoi(v))) {
            fprintf(stderr, "bench: more than %d processes: %s not sampled\n",
                    BENCH_PROCS_MAX, name);
        }
    } else {
        shop_fact_front(s, f, key, v);
    }
}

/* Read `tools/webshop status` into s; returns true when the shop runs. */
static bool shop_facts_read(bench_shop *s)
{
    size_t cap = 65536;
    char *out = malloc(cap);
    if (out == NULL || shop_script_run(s, "status", NULL, out, cap) != 0) {
        free(out);
        return false;
    }
    bool running = false;
    shop_fronts f;
    memset(&f, 0, sizeof(f));
    s->n_procs = 0;
    s->edge_url[0] = '\0';
    s->front_url[0] = '\0';
    s->order_rpc[0] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            continue;
        }
        *eq = '\0';
        if (strcmp(line, "running") == 0) {
            running = strcmp(eq + 1, "yes") == 0;
        } else {
            shop_fact(s, &f, line, eq + 1);
        }
    }
    free(out);
    shop_fronts_resolve(s, &f);
    if (s->n_procs == 0) {
        bench_shop_procs_default(s);
    }
    return running;
}

/* Write a catalog of n products (ids 1..n) to path; 0 or -1. Two billion
 * units each: bench orders are reserved, never rejected out of stock (the
 * prototype's catalog has 400 units). */
static int shop_catalog_write(const char *path, int n)
{
    FILE *f = fopen(path, "we");
    if (f == NULL) {
        return -1;
    }
    fputc('[', f);
    for (int i = 1; i <= n; i++) {
        fprintf(f,
                "%s{\"id\": %d, \"name\": \"bench product %d\", \"price\": %d,"
                " \"balance\": 2000000000}",
                i > 1 ? ",\n " : "", i, i, 100 + (i % 50) * 10);
    }
    fputs("]\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

/* Make s->state_dir: the given one, or a fresh temporary one. */
static int shop_state_dir_make(bench_shop *s, const char *state_dir)
{
    if (state_dir != NULL) {
        snprintf(s->state_dir, sizeof(s->state_dir), "%s", state_dir);
        return 0;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(s->state_dir, sizeof(s->state_dir), "%s/webshop-bench-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(s->state_dir) == NULL) {
        fprintf(stderr, "bench: cannot create %s: %s\n", s->state_dir, strerror(errno));
        return -1;
    }
    s->temp_dir = true;
    return 0;
}

/* Set the inventory's catalog (WEBSHOP_INVENTORY_CATALOG, for the `up` only)
 * to a fresh one of `products` products unless one is set; whether we set it. */
static bool shop_catalog_set(const bench_shop *s, int products)
{
    char catalog[sizeof(s->state_dir) + 32];
    snprintf(catalog, sizeof(catalog), "%s/bench-catalog.json", s->state_dir);
    if (getenv("WEBSHOP_INVENTORY_CATALOG") != NULL ||
        shop_catalog_write(catalog, products < 2 ? 2 : products) != 0) {
        return false;
    }
    setenv("WEBSHOP_INVENTORY_CATALOG", catalog, 1);
    return true;
}

int bench_shop_up(bench_shop *s, const char *script, const char *build_dir,
                  const char *state_dir, int http_port, int products, const char *store,
                  int replicas)
{
    memset(s, 0, sizeof(*s));
    atomic_init(&s->sampler_stop, false);
    bench_shop_procs_default(s);
    s->replicas = replicas;
    snprintf(s->script, sizeof(s->script), "%s", script);
    snprintf(s->build_dir, sizeof(s->build_dir), "%s", build_dir);
    if (shop_state_dir_make(s, state_dir) != 0) {
        return -1;
    }
    if (!s->temp_dir && shop_facts_read(s)) {
        fprintf(stderr, "bench: using the shop running from %s\n", s->state_dir);
        return 0;
    }
    char port[16];
    char nrep[16];
    snprintf(port, sizeof(port), "%d", http_port);
    snprintf(nrep, sizeof(nrep), "%d", replicas);
    /* The inventory reads the catalog through its --catalog variable,
     * WEBSHOP_INVENTORY_CATALOG; one already set wins. The child inherits it, so it
     * is set for the `up` only and restored after. */
    bool own_catalog = shop_catalog_set(s, products);
    const char *extra[SHOP_EXTRA_MAX + 1] = {"--http-port", port};
    int n = 2;
    if (store != NULL) {
        extra[n++] = "--store";
        extra[n++] = store;
    }
    if (replicas > 0) {
        extra[n++] = "--replicas";
        extra[n++] = nrep;
    }
    if (bench_tls_on()) {
        extra[n++] = "--tls";
    }
    fprintf(stderr,
            "bench: starting a shop: %s up --state-dir %s --http-port %s%s%s%s%s%s\n",
            s->script, s->state_dir, port, store != NULL ? " --store " : "",
            store != NULL ? store : "", replicas > 0 ? " --replicas " : "",
            replicas > 0 ? nrep : "", bench_tls_on() ? " --tls" : "");
    s->started = true;
    int rc = shop_script_run(s, "up", extra, NULL, 0);
    if (own_catalog) {
        unsetenv("WEBSHOP_INVENTORY_CATALOG");
    }
    if (rc != 0) {
        fprintf(stderr, "bench: `%s up` failed; logs in %s/logs\n", s->script,
                s->state_dir);
        return -1;
    }
    if (!shop_facts_read(s) || s->url[0] == '\0') {
        fprintf(stderr, "bench: `%s status` shows no running shop\n", s->script);
        return -1;
    }
    return 0;
}

static int shop_rm_entry(const char *path, const struct stat *sb, int flag,
                         struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

void bench_shop_down(bench_shop *s, bool keep)
{
    bench_shop_sampler_stop(s);
    if (s->started) {
        shop_script_run(s, "down", NULL, NULL, 0);
        s->started = false;
    }
    if (s->temp_dir) {
        if (keep) {
            fprintf(stderr, "bench: kept the shop's state and logs in %s\n",
                    s->state_dir);
        } else {
            nftw(s->state_dir, shop_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        }
        s->temp_dir = false;
    }
}

int bench_read_secret(const char *file, char *out, size_t cap)
{
    FILE *f = fopen(file, "re");
    if (f == NULL) {
        return -1;
    }
    bool ok = fgets(out, (int)cap, f) != NULL;
    fclose(f);
    if (!ok) {
        out[0] = '\0';
        return -1;
    }
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

long bench_rss_kb(int pid)
{
    if (pid <= 0) {
        return -1;
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        return -1;
    }
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

void bench_shop_sample_idle(bench_shop *s)
{
    for (int i = 0; i < s->n_procs; i++) {
        s->procs[i].idle_kb = bench_rss_kb(s->procs[i].pid);
        if (s->procs[i].idle_kb > s->procs[i].peak_kb) {
            s->procs[i].peak_kb = s->procs[i].idle_kb;
        }
    }
}

static void *shop_sampler_main(void *arg)
{
    bench_shop *s = arg;
    while (!atomic_load(&s->sampler_stop)) {
        for (int i = 0; i < s->n_procs; i++) {
            long kb = bench_rss_kb(s->procs[i].pid);
            if (kb > s->procs[i].peak_kb) {
                s->procs[i].peak_kb = kb;
            }
        }
        struct timespec ts = {.tv_nsec = 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

void bench_shop_sampler_start(bench_shop *s)
{
    if (s->sampling) {
        return;
    }
    atomic_store(&s->sampler_stop, false);
    s->sampling = pthread_create(&s->sampler, NULL, shop_sampler_main, s) == 0;
}

void bench_shop_sampler_stop(bench_shop *s)
{
    if (!s->sampling) {
        return;
    }
    atomic_store(&s->sampler_stop, true);
    pthread_join(s->sampler, NULL);
    s->sampling = false;
}

/* ---- a fresh broker --------------------------------------------------------- */

static bool shop_port_open(int port)
{
    bench_target t;
    char url[64];
    char err[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    if (bench_target_parse(url, &t, err, sizeof(err)) != 0) {
        return false;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    bool ok = connect(fd, (struct sockaddr *)&t.addr, t.addr_len) == 0;
    close(fd);
    return ok;
}

int bench_broker_start(const char *dir, int *pid, int *port)
{
    int p = bench_free_port();
    char conf[PATH_MAX];
    snprintf(conf, sizeof(conf), "%s/bench-mosquitto.conf", dir);
    FILE *f = fopen(conf, "we");
    if (p <= 0 || f == NULL) {
        if (f != NULL) {
            fclose(f);
        }
        return -1;
    }
    /* The limits and Nagle setting tools/webshop up writes (DESIGN.md,
     * measured facts). */
    fprintf(
        f,
        "listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "set_tcp_nodelay true\n"
        "max_inflight_messages 1000\nmax_queued_messages 1000000\nmax_queued_bytes 0\n"
        "log_dest stderr\nlog_type error\n%s",
        p, getuid() == 0 ? "user root\n" : "");
    fclose(f);
    fflush(stderr);
    pid_t child = fork();
    if (child < 0) {
        return -1;
    }
    if (child == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, STDIN_FILENO);
            dup2(null, STDOUT_FILENO);
        }
        execl("/usr/sbin/mosquitto", "mosquitto", "-c", conf, (char *)NULL);
        _exit(127);
    }
    double until = bench_now() + 10.0;
    while (bench_now() < until) {
        if (shop_port_open(p)) {
            *pid = child;
            *port = p;
            return 0;
        }
        if (waitpid(child, NULL, WNOHANG) == child) {
            fprintf(stderr, "bench: mosquitto exited at start\n");
            return -1;
        }
        struct timespec ts = {.tv_nsec = 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    bench_broker_stop(child);
    return -1;
}

void bench_broker_stop(int pid)
{
    if (pid <= 0) {
        return;
    }
    kill(pid, SIGTERM);
    double until = bench_now() + 5.0;
    while (bench_now() < until) {
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            return;
        }
        struct timespec ts = {.tv_nsec = 20 * 1000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}
