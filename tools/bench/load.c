/*
 * The HTTP load generator; see load.h. One thread per connection with
 * blocking sockets, as wrk does with as many threads as connections: on a
 * 2-core machine this costs the client about what an epoll loop would, and
 * keeps the client short enough to trust.
 */
#include "load.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOAD_BUF_MIN      (64 * 1024)
#define LOAD_BODY_MAX     (64 * 1024 * 1024)
#define LOAD_IO_TIMEOUT_S 10

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool load_addr_is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return false;
}

int bench_target_parse(const char *url, bench_target *t, char *err, size_t err_len)
{
    memset(t, 0, sizeof(*t));
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(err, err_len, "%s: only http:// URLs are supported", url);
        return -1;
    }
    const char *h = url + 7;
    const char *path = strchr(h, '/');
    size_t hp_len = path != NULL ? (size_t)(path - h) : strlen(h);
    if (hp_len == 0 || hp_len >= sizeof(t->host)) {
        snprintf(err, err_len, "%s: bad host", url);
        return -1;
    }
    memcpy(t->host, h, hp_len);
    char host[64];
    char port[16] = "80";
    if (t->host[0] == '[') {
        const char *close = strchr(t->host, ']');
        if (close == NULL || (size_t)(close - t->host - 1) >= sizeof(host)) {
            snprintf(err, err_len, "%s: bad IPv6 host", url);
            return -1;
        }
        memcpy(host, t->host + 1, (size_t)(close - t->host - 1));
        host[close - t->host - 1] = '\0';
        if (close[1] == ':') {
            snprintf(port, sizeof(port), "%s", close + 2);
        }
    } else {
        snprintf(host, sizeof(host), "%s", t->host);
        char *colon = strchr(host, ':');
        if (colon != NULL) {
            *colon = '\0';
            snprintf(port, sizeof(port), "%s", colon + 1);
        }
    }
    if (path != NULL) {
        size_t n = strlen(path);
        while (n > 0 && path[n - 1] == '/') {
            n--;
        }
        if (n >= sizeof(t->base_path)) {
            snprintf(err, err_len, "%s: path too long", url);
            return -1;
        }
        memcpy(t->base_path, path, n);
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, err_len, "%s: cannot resolve %s: %s", url, host, gai_strerror(rc));
        return -1;
    }
    if (!load_addr_is_loopback(res->ai_addr)) {
        freeaddrinfo(res);
        snprintf(err, err_len,
                 "%s: %s is not a loopback address; the bench loads loopback only", url,
                 host);
        return -1;
    }
    memcpy(&t->addr, res->ai_addr, res->ai_addrlen);
    t->addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

/* ---- one keep-alive connection ----------------------------------------- */

typedef struct load_conn {
    const bench_target *target;
    int fd;        /* -1 when closed */
    uint64_t used; /* answers read on this socket */
    char *buf;     /* response bytes */
    size_t cap;
    size_t len;
} load_conn;

static int load_conn_open(load_conn *c)
{
    c->fd = socket(c->target->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = LOAD_IO_TIMEOUT_S};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(c->fd, (const struct sockaddr *)&c->target->addr, c->target->addr_len) !=
        0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    c->used = 0;
    c->len = 0;
    return 0;
}

static void load_conn_close(load_conn *c)
{
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    c->len = 0;
}

static int load_conn_write(load_conn *c, const char *req, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, req + off, len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return -1;
        }
        off += (size_t)n;
    }
    return 0;
}

/* Read more bytes; returns bytes read, 0 on EOF, -1 on error. */
static ssize_t load_conn_fill(load_conn *c)
{
    if (c->len == c->cap) {
        size_t ncap = c->cap * 2;
        if (ncap > LOAD_BODY_MAX) {
            return -1;
        }
        char *nb = realloc(c->buf, ncap);
        if (nb == NULL) {
            return -1;
        }
        c->buf = nb;
        c->cap = ncap;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n > 0) {
            c->len += (size_t)n;
        }
        return n;
    }
}

/* Case-insensitive header lookup in the header block [h, end). */
static const char *load_header_find(const char *h, const char *end, const char *name,
                                    size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *line = h;
    while (line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (eol == NULL) {
            eol = end;
        }
        if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
            line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (v < eol && (*v == ' ' || *v == '\t')) {
                v++;
            }
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ')) {
                ve--;
            }
            *vlen = (size_t)(ve - v);
            return v;
        }
        line = eol + 1;
    }
    return NULL;
}

/*
 * Send req and read the whole answer. Returns 0 with *status, *body and
 * *body_len (pointing into c->buf, valid until the next request); -1 when
 * nothing was answered on a reused socket (the caller may retry on a fresh
 * one); -2 on any other failure. Closes c when the server asked to.
 */
static int load_conn_request(load_conn *c, const char *req, size_t req_len, int *status,
                             const char **body, size_t *body_len)
{
    bool reused = c->used > 0;
    c->len = 0;
    if (load_conn_write(c, req, req_len) != 0) {
        return reused ? -1 : -2;
    }
    const char *hend = NULL;
    for (;;) {
        if (c->len >= 4) {
            hend = memmem(c->buf, c->len, "\r\n\r\n", 4);
            if (hend != NULL) {
                break;
            }
        }
        ssize_t n = load_conn_fill(c);
        if (n <= 0) {
            return (n == 0 && c->len == 0 && reused) ? -1 : -2;
        }
    }
    size_t head_len = (size_t)(hend - c->buf) + 4;
    if (c->len < 12 || strncmp(c->buf, "HTTP/1.", 7) != 0) {
        return -2;
    }
    int st = atoi(c->buf + 9);
    if (st < 100 || st > 599) {
        return -2;
    }
    const char *hstart = memchr(c->buf, '\n', head_len);
    size_t vlen = 0;
    bool close_after = false;
    const char *v = load_header_find(hstart + 1, hend + 2, "Connection", &vlen);
    if (v != NULL && vlen == 5 && strncasecmp(v, "close", 5) == 0) {
        close_after = true;
    }
    if (load_header_find(hstart + 1, hend + 2, "Transfer-Encoding", &vlen) != NULL) {
        return -2; /* chunked bodies are not part of this minimal client */
    }
    size_t clen = 0;
    bool until_eof = false;
    v = load_header_find(hstart + 1, hend + 2, "Content-Length", &vlen);
    if (v != NULL) {
        clen = (size_t)strtoull(v, NULL, 10);
    } else if (!(st < 200 || st == 204 || st == 304)) {
        until_eof = true;
        close_after = true;
    }
    if (clen > LOAD_BODY_MAX) {
        return -2;
    }
    for (;;) {
        if (!until_eof && c->len >= head_len + clen) {
            break;
        }
        ssize_t n = load_conn_fill(c);
        if (n < 0) {
            return -2;
        }
        if (n == 0) {
            if (until_eof) {
                clen = c->len - head_len;
                break;
            }
            return -2;
        }
    }
    *status = st;
    *body = c->buf + head_len;
    *body_len = clen;
    c->used++;
    if (close_after) {
        /* Keep the bytes readable for the caller: close only the socket. */
        close(c->fd);
        c->fd = -1;
    }
    return 0;
}

/* ---- the load run ------------------------------------------------------ */

typedef struct load_shared {
    const bench_load_spec *spec;
    pthread_barrier_t ready; /* every thread connected (or failed to) */
    pthread_barrier_t go;    /* t0 is set */
    double t0;               /* written by the barrier's serial thread */
    atomic_uint_fast64_t issued;
} load_shared;

typedef struct load_worker {
    load_shared *sh;
    int index;
    pthread_t thread;
    bench_load_result res; /* this thread's counts and latencies */
    double last_done;
} load_worker;

static void load_sleep_until(double t)
{
    double now = bench_now();
    if (t <= now) {
        return;
    }
    double d = t - now;
    struct timespec ts = {.tv_sec = (time_t)d,
                          .tv_nsec = (long)((d - (double)(time_t)d) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void *load_worker_main(void *arg)
{
    load_worker *w = arg;
    load_shared *sh = w->sh;
    const bench_load_spec *spec = sh->spec;
    load_conn c = {.target = spec->target, .fd = -1, .cap = LOAD_BUF_MIN};
    c.buf = malloc(c.cap);
    if (c.buf != NULL) {
        load_conn_open(&c);
    }
    if (pthread_barrier_wait(&sh->ready) == PTHREAD_BARRIER_SERIAL_THREAD) {
        sh->t0 = bench_now();
    }
    pthread_barrier_wait(&sh->go);
    double t0 = sh->t0;
    double deadline = t0 + spec->seconds;
    double interval = spec->rate > 0 ? (double)spec->connections / spec->rate : 0.0;
    double next = t0 + interval * (double)w->index / (double)spec->connections;
    char *req = malloc(16384);
    w->last_done = t0;
    for (uint64_t seq = 0; req != NULL && c.buf != NULL; seq++) {
        double t_sent = bench_now();
        if (interval > 0) {
            if (next >= deadline) {
                break;
            }
            load_sleep_until(next);
            t_sent = next;
            next += interval;
        }
        if (t_sent >= deadline) {
            break;
        }
        if (spec->max_requests > 0 &&
            atomic_fetch_add(&sh->issued, 1) >= spec->max_requests) {
            break;
        }
        size_t len = spec->make(spec->ctx, w->index, seq, req, 16384);
        if (len == 0) {
            break;
        }
        if (c.fd < 0 && load_conn_open(&c) != 0) {
            w->res.io_errors++;
            load_sleep_until(bench_now() + 0.01);
            continue;
        }
        int status = 0;
        const char *body = NULL;
        size_t body_len = 0;
        int rc = load_conn_request(&c, req, len, &status, &body, &body_len);
        if (rc == -1) {
            /* The server closed an idle keep-alive socket: retry once. */
            load_conn_close(&c);
            w->res.reconnects++;
            rc = load_conn_open(&c) == 0
                     ? load_conn_request(&c, req, len, &status, &body, &body_len)
                     : -2;
        }
        double t_done = bench_now();
        if (rc != 0) {
            w->res.io_errors++;
            load_conn_close(&c);
            continue;
        }
        w->last_done = t_done;
        bool ok = spec->ok_status != 0 ? status == spec->ok_status
                                       : (status >= 200 && status < 300);
        if (ok) {
            w->res.ok++;
            bench_hist_record(&w->res.hist, (uint64_t)((t_done - t_sent) * 1e9));
        } else {
            w->res.bad_status++;
            w->res.last_bad = status;
        }
        if (spec->done != NULL) {
            spec->done(spec->ctx, w->index, seq, status, body, body_len, t_sent, t_done);
        }
        if (c.fd < 0) {
            w->res.reconnects++;
        }
    }
    free(req);
    load_conn_close(&c);
    free(c.buf);
    return NULL;
}

int bench_load_run(const bench_load_spec *spec, bench_load_result *out)
{
    memset(out, 0, sizeof(*out));
    bench_hist_init(&out->hist);
    int n = spec->connections > 0 ? spec->connections : 1;
    load_shared sh = {.spec = spec};
    atomic_init(&sh.issued, 0);
    load_worker *w = calloc((size_t)n, sizeof(*w));
    if (w == NULL) {
        return -1;
    }
    pthread_barrier_init(&sh.ready, NULL, (unsigned)n);
    pthread_barrier_init(&sh.go, NULL, (unsigned)n);
    int started = 0;
    for (int i = 0; i < n; i++) {
        w[i].sh = &sh;
        w[i].index = i;
        bench_hist_init(&w[i].res.hist);
        if (pthread_create(&w[i].thread, NULL, load_worker_main, &w[i]) != 0) {
            break;
        }
        started++;
    }
    if (started < n) {
        /* A barrier sized for n would never open: fail before any thread waits. */
        fprintf(stderr, "bench: cannot start %d load threads\n", n);
        abort();
    }
    double last = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(w[i].thread, NULL);
        out->ok += w[i].res.ok;
        out->bad_status += w[i].res.bad_status;
        out->io_errors += w[i].res.io_errors;
        out->reconnects += w[i].res.reconnects;
        if (w[i].res.last_bad != 0) {
            out->last_bad = w[i].res.last_bad;
        }
        bench_hist_merge(&out->hist, &w[i].res.hist);
        if (w[i].last_done > last) {
            last = w[i].last_done;
        }
    }
    out->elapsed = last - sh.t0;
    pthread_barrier_destroy(&sh.ready);
    pthread_barrier_destroy(&sh.go);
    free(w);
    return 0;
}

double bench_load_rate(const bench_load_result *r)
{
    return r->elapsed > 0 ? (double)r->ok / r->elapsed : 0.0;
}

/* Ports are picked the way tests/support/harness.c reserves them, so the
 * bench never collides with a test run: from 20000..65535 outside the
 * kernel's ephemeral range (no outgoing connection is given one), locked by
 * an flock on $WEBSHOP_PORT_DIR/PORT.lock (default /tmp/webshop-ports) that
 * this process holds until it exits, and free by bind when picked. */
#define BENCH_PORT_FLOOR 20000

static bool bench_port_bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* Lock DIR/port.lock; true when this process now holds it (the fd stays
 * open until exit). A file removed by its last holder meanwhile is not it. */
static bool bench_port_lock(const char *dir, int port)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%d.lock", dir, port);
    int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        return false;
    }
    struct stat held, named;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &held) == 0 &&
        stat(path, &named) == 0 && held.st_ino == named.st_ino &&
        held.st_dev == named.st_dev) {
        return true;
    }
    close(fd);
    return false;
}

int bench_free_port(void)
{
    static unsigned char given[65536 / 8];
    int lo = 32768, hi = 60999;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
    if (f != NULL) {
        if (fscanf(f, "%d %d", &lo, &hi) != 2) {
            lo = 32768;
            hi = 60999;
        }
        fclose(f);
    }
    const char *dir = getenv("WEBSHOP_PORT_DIR");
    if (dir == NULL || dir[0] == '\0') {
        dir = "/tmp/webshop-ports";
    }
    mkdir(dir, 01777);
    chmod(dir, 01777);
    int n = 65536 - BENCH_PORT_FLOOR;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int start =
        (int)(((unsigned long)getpid() * 2654435761ul ^ (unsigned long)ts.tv_nsec) %
              (unsigned long)n);
    for (int i = 0; i < n; i++) {
        int p = BENCH_PORT_FLOOR + (start + i) % n;
        if ((p >= lo && p <= hi) || (given[p / 8] & (1u << (p % 8)))) {
            continue;
        }
        if (bench_port_lock(dir, p) && bench_port_bindable(p)) {
            given[p / 8] |= (unsigned char)(1u << (p % 8));
            return p;
        }
    }
    return -1;
}
