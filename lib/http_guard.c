/*
 * The guard: keeps civetweb's workers for clients that use them. civetweb
 * 1.15 gives a connection a worker thread for its whole life and bounds
 * only the wait for request headers (request_timeout_ms, keep_alive_timeout_ms):
 * a body is read with a timeout per recv() that restarts on every byte
 * (pull_all in its src/civetweb.c), so a client trickling one byte every
 * few seconds holds a worker for as long as it likes, and idle or slow
 * clients can hold every worker at once. civetweb offers no call that cuts
 * a connection from another thread and does not expose the socket.
 *
 * So each worker has a slot (init_thread) that says what its connection is
 * doing (the civetweb callbacks and ws_http_read_body move it), and one
 * watchdog thread shuts the read side of a connection's socket (found by
 * its addresses among the process's file descriptors) when
 *   - a body is not complete within body_timeout_ms, or
 *   - fewer than `reserve` workers are free, and the connection has been
 *     idle, sending its headers or its body for longer than busy_grace_ms
 *     (every such connection, at each look: they are all either attackers
 *     or clients slower than the grace while the server is full).
 * A cut socket reads as end of file: civetweb stops waiting, the request is
 * answered 408 if any of it arrived, and the worker takes the next queued
 * connection. Handlers (RPCs, waits) and streams are never cut here.
 *
 * The per-address cap (max_conns_per_addr) is decided here too, once per
 * connection, the first time its address can be read (mg_get_request_info
 * answers from just after init_connection): by the worker at its first
 * begin_request, or by the watchdog at its next look while the connection
 * still waits for its first request. A connection is counted while it has
 * a worker; the count is a pass over the slots (at most `threads`), no
 * table to keep. One over the cap is refused: answered 503 by the worker
 * (http.c), or, still waiting, cut like an idle one at the watchdog's look.
 */
#include "clock.h"
#include "http_int.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <linux/tcp.h> /* struct tcp_info with tcpi_bytes_received */
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <civetweb.h>

#include "log.h"

/* The watchdog looks this often while any connection is open. */
#define HTTP_GUARD_TICK_MS 25

/* The most connections cut per tick (they are looked up in one pass). */
#define HTTP_GUARD_BATCH 64

enum { CUT_IDLE, CUT_SLOW, CUT_DEADLINE, CUT_PER_ADDR, CUT_REASONS };

double ws__http_now(void)
{
    return ws_clock_mono_seconds();
}

http_slot *ws__http_slot_new(ws_http *h)
{
    http_slot *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    s->h = h;
    s->fd = -1;
    pthread_mutex_lock(&h->guard_mu);
    s->next = h->slots;
    h->slots = s;
    pthread_mutex_unlock(&h->guard_mu);
    return s;
}

void ws__http_slot_free(http_slot *s)
{
    if (s == NULL) {
        return;
    }
    ws_http *h = s->h;
    pthread_mutex_lock(&h->guard_mu);
    for (http_slot **p = &h->slots; *p != NULL; p = &(*p)->next) {
        if (*p == s) {
            *p = s->next;
            break;
        }
    }
    if (s->state != SLOT_NONE) {
        h->busy--;
    }
    pthread_mutex_unlock(&h->guard_mu);
    free(s);
}

/* Enter state; under guard_mu. */
static void http_guard_enter(http_slot *s, http_slot_state state)
{
    ws_http *h = s->h;
    if (s->state == SLOT_NONE && state != SLOT_NONE) {
        if (h->busy++ == 0) {
            pthread_cond_signal(&h->guard_cv); /* the watchdog sleeps while idle */
        }
    } else if (s->state != SLOT_NONE && state == SLOT_NONE) {
        h->busy--;
    }
    s->state = state;
    s->since = ws__http_now();
    s->gen++;
}

void ws__http_slot_connect(http_slot *s, const struct mg_connection *conn)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->h->guard_mu);
    s->conn = conn;
    s->remote_addr[0] = '\0';
    s->remote_port = 0; /* known once civetweb shows it, see http_guard_identify */
    s->server_port = 0;
    s->fd = -1;
    s->cut = false;
    s->first = true;
    s->admitted = false;
    s->refused = false;
    http_guard_enter(s, SLOT_WAITING);
    pthread_mutex_unlock(&s->h->guard_mu);
}

void ws__http_slot_set(http_slot *s, http_slot_state state)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->h->guard_mu);
    if (state == SLOT_WAITING) {
        s->first = false; /* a request was answered: waiting for the next */
    }
    if (s->state != SLOT_NONE) {
        http_guard_enter(s, state);
    }
    pthread_mutex_unlock(&s->h->guard_mu);
}

void ws__http_slot_body(http_slot *s, int timeout_ms)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->h->guard_mu);
    http_guard_enter(s, SLOT_BODY);
    s->deadline = s->since + timeout_ms / 1000.0;
    pthread_mutex_unlock(&s->h->guard_mu);
}

void ws__http_slot_disconnect(http_slot *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_lock(&s->h->guard_mu);
    http_guard_enter(s, SLOT_NONE);
    s->fd = -1;
    s->cut = false;
    s->admitted = false; /* no longer counted against its address */
    pthread_mutex_unlock(&s->h->guard_mu);
}

bool ws__http_slot_was_cut(http_slot *s)
{
    if (s == NULL) {
        return false;
    }
    pthread_mutex_lock(&s->h->guard_mu);
    bool cut = s->cut;
    pthread_mutex_unlock(&s->h->guard_mu);
    return cut;
}

double ws__http_slot_age(http_slot *s)
{
    if (s == NULL) {
        return 0;
    }
    pthread_mutex_lock(&s->h->guard_mu);
    double age = ws__http_now() - s->since;
    pthread_mutex_unlock(&s->h->guard_mu);
    return age;
}

bool ws__http_slot_first(http_slot *s)
{
    if (s == NULL) {
        return true;
    }
    pthread_mutex_lock(&s->h->guard_mu);
    bool first = s->first;
    pthread_mutex_unlock(&s->h->guard_mu);
    return first;
}

/* ---- finding a connection's socket ------------------------------------- */

/* A connection to find: its addresses, and the fd once found. */
typedef struct http_guard_find {
    const char *remote_addr;
    int remote_port, server_port;
    int fd;
} http_guard_find;

/* The port and numeric host (civetweb's form: getnameinfo NI_NUMERICHOST)
 * of a socket address; false for what is not IPv4 or IPv6. */
static bool http_guard_addr(const struct sockaddr_storage *sa, socklen_t len, char *host,
                            size_t host_len, int *port)
{
    if (sa->ss_family == AF_INET) {
        *port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    } else if (sa->ss_family == AF_INET6) {
        *port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    } else {
        return false;
    }
    return getnameinfo((const struct sockaddr *)sa, len, host, (socklen_t)host_len, NULL,
                       0, NI_NUMERICHOST) == 0;
}

/* Match one descriptor against the connections sought. */
static void http_guard_match(int fd, http_guard_find *want, int n)
{
    struct sockaddr_storage peer, local;
    socklen_t plen = sizeof(peer), llen = sizeof(local);
    char host[64];
    int pport, lport;
    if (getpeername(fd, (struct sockaddr *)&peer, &plen) != 0 ||
        !http_guard_addr(&peer, plen, host, sizeof(host), &pport)) {
        return;
    }
    for (int i = 0; i < n; i++) {
        if (want[i].fd >= 0 || want[i].remote_port != pport ||
            strcmp(want[i].remote_addr, host) != 0) {
            continue;
        }
        char lhost[64];
        if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0 &&
            http_guard_addr(&local, llen, lhost, sizeof(lhost), &lport) &&
            lport == want[i].server_port) {
            want[i].fd = fd;
        }
        return;
    }
}

/* Find the sockets of want[0..n) in one pass over /proc/self/fd. */
static void http_guard_find_fds(http_guard_find *want, int n)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return;
    }
    int self = dirfd(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end == '\0' && end != e->d_name && fd != self) {
            http_guard_match((int)fd, want, n);
        }
    }
    closedir(d);
}

/* Learn s's peer addresses; under guard_mu. civetweb fills them in before
 * init_connection but mg_get_request_info answers NULL until the worker
 * starts reading the request (connection_type); from then on, and until
 * connection_close (which waits for guard_mu), they stay as they are.
 * False while they cannot be had. */
static bool http_guard_identify(http_slot *s)
{
    if (s->remote_port != 0) {
        return true;
    }
    const struct mg_request_info *ri =
        s->conn != NULL ? mg_get_request_info(s->conn) : NULL;
    if (ri == NULL || ri->remote_port == 0) {
        return false;
    }
    snprintf(s->remote_addr, sizeof(s->remote_addr), "%s", ri->remote_addr);
    s->remote_port = ri->remote_port;
    s->server_port = ri->server_port;
    return true;
}

/* ---- connections per address ------------------------------------------ */

/* Whether the cap counts connections from addr (civetweb's numeric text):
 * this machine's loopback address never -- every local client, the shop's
 * own tools and a local HAProxy share it. */
static bool http_guard_capped(const char *addr)
{
    return strcmp(addr, "127.0.0.1") != 0 && strcmp(addr, "::1") != 0 &&
           strcmp(addr, "::ffff:127.0.0.1") != 0;
}

/* Admit or refuse s's connection under the per-address cap, once its
 * address is known; under guard_mu. False while it cannot be decided yet. */
static bool http_guard_admit(http_slot *s)
{
    ws_http *h = s->h;
    if (s->admitted || s->refused) {
        return true;
    }
    if (s->state == SLOT_NONE || !http_guard_identify(s)) {
        return false;
    }
    if (h->max_conns_per_addr > 0 && http_guard_capped(s->remote_addr)) {
        int n = 0;
        for (const http_slot *t = h->slots; t != NULL; t = t->next) {
            n += t != s && t->admitted && strcmp(t->remote_addr, s->remote_addr) == 0;
        }
        if (n >= h->max_conns_per_addr) {
            s->refused = true;
            ws_counter_inc(h->cut_total[CUT_PER_ADDR]);
            return true;
        }
    }
    s->admitted = true;
    return true;
}

/* Decide every connection still waiting for its first request; under
 * guard_mu. */
static void http_guard_admit_new(ws_http *h)
{
    if (h->max_conns_per_addr <= 0) {
        return;
    }
    for (http_slot *s = h->slots; s != NULL; s = s->next) {
        if (s->state == SLOT_WAITING && s->first) {
            (void)http_guard_admit(s);
        }
    }
}

bool ws__http_slot_refused(http_slot *s)
{
    if (s == NULL || s->h->max_conns_per_addr <= 0) {
        return false;
    }
    pthread_mutex_lock(&s->h->guard_mu);
    (void)http_guard_admit(s);
    bool refused = s->refused;
    pthread_mutex_unlock(&s->h->guard_mu);
    return refused;
}

/* The socket of s's connection, looked up once; -1 when it cannot be
 * found (by its peer's address: a connection already reset has none).
 * From the worker thread that serves it. */
static int http_guard_own_fd(http_slot *s)
{
    pthread_mutex_lock(&s->h->guard_mu);
    int fd = s->fd;
    bool known = http_guard_identify(s);
    http_guard_find want = {s->remote_addr, s->remote_port, s->server_port, -1};
    pthread_mutex_unlock(&s->h->guard_mu);
    if (!known) {
        return -1;
    }
    if (fd < 0) {
        /* Only this worker's thread changes the connection, and it is here:
         * the addresses cannot change under the look-up. */
        http_guard_find_fds(&want, 1);
        fd = want.fd;
        if (fd >= 0) {
            pthread_mutex_lock(&s->h->guard_mu);
            s->fd = fd;
            pthread_mutex_unlock(&s->h->guard_mu);
        }
    }
    return fd;
}

void ws__http_slot_find_socket(http_slot *s)
{
    if (s != NULL) {
        (void)http_guard_own_fd(s);
    }
}

bool ws__http_slot_peer_gone(http_slot *s)
{
    int fd = s != NULL ? http_guard_own_fd(s) : -1;
    if (fd < 0) {
        return false;
    }
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

long long ws__http_slot_bytes_received(http_slot *s)
{
    int fd = s != NULL ? http_guard_own_fd(s) : -1;
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_received) +
                  sizeof(ti.tcpi_bytes_received)) {
        return -1;
    }
    return (long long)ti.tcpi_bytes_received;
}

/* ---- the watchdog ------------------------------------------------------- */

/* A connection chosen to be cut: its slot, the state generation it was
 * chosen in, why, and where to find it. */
typedef struct http_guard_victim {
    http_slot *slot;
    unsigned gen;
    int why;
} http_guard_victim;

/* Choose what to cut now; under guard_mu. Returns how many. */
static int http_guard_choose(ws_http *h, double now, http_guard_victim *v,
                             http_guard_find *f)
{
    bool pressure = h->threads - h->busy < h->reserve;
    double grace = h->busy_grace_ms / 1000.0;
    int n = 0;
    for (http_slot *s = h->slots; s != NULL && n < HTTP_GUARD_BATCH; s = s->next) {
        int why = -1;
        if (s->cut) {
            continue;
        }
        if (s->refused && s->state == SLOT_WAITING && s->first) {
            why = CUT_PER_ADDR; /* over its address's cap, no request yet */
        } else if (s->state == SLOT_BODY && now >= s->deadline) {
            why = CUT_DEADLINE;
        } else if (pressure && (s->state == SLOT_WAITING || s->state == SLOT_BODY) &&
                   now - s->since >= grace) {
            why = s->state == SLOT_BODY ? CUT_SLOW : CUT_IDLE;
        }
        if (why >= 0 && http_guard_identify(s)) {
            v[n] = (http_guard_victim){s, s->gen, why};
            f[n] =
                (http_guard_find){s->remote_addr, s->remote_port, s->server_port, s->fd};
            n++;
        }
    }
    return n;
}

/* Cut the chosen connections that are still in the state they were chosen
 * in; under guard_mu. */
static void http_guard_cut(ws_http *h, http_guard_victim *v, http_guard_find *f, int n)
{
    for (int i = 0; i < n; i++) {
        http_slot *s = v[i].slot;
        bool alive = false;
        for (http_slot *t = h->slots; t != NULL && !alive; t = t->next) {
            alive = t == s;
        }
        if (!alive || s->gen != v[i].gen || f[i].fd < 0) {
            continue;
        }
        s->fd = f[i].fd;
        /* Read side only: the worker still answers (408) on this socket. */
        if (shutdown(f[i].fd, SHUT_RD) == 0 || errno == ENOTCONN) {
            s->cut = true;
            ws_counter_inc(h->cut_total[v[i].why]);
        }
    }
}

static void *http_guard_main(void *arg)
{
    ws_http *h = arg;
    http_guard_victim v[HTTP_GUARD_BATCH];
    http_guard_find f[HTTP_GUARD_BATCH];
    char addrs[HTTP_GUARD_BATCH][48];
    pthread_mutex_lock(&h->guard_mu);
    while (!h->guard_stop) {
        if (h->busy == 0) {
            pthread_cond_wait(&h->guard_cv, &h->guard_mu);
            continue;
        }
        http_guard_admit_new(h);
        int n = http_guard_choose(h, ws__http_now(), v, f);
        if (n > 0) {
            /* The addresses outlive the unlock in our own copy. */
            int unknown = 0;
            for (int i = 0; i < n; i++) {
                snprintf(addrs[i], sizeof(addrs[i]), "%s", f[i].remote_addr);
                f[i].remote_addr = addrs[i];
                unknown += f[i].fd < 0;
            }
            pthread_mutex_unlock(&h->guard_mu);
            if (unknown > 0) {
                http_guard_find_fds(f, n);
            }
            pthread_mutex_lock(&h->guard_mu);
            http_guard_cut(h, v, f, n);
        }
        struct timespec ts =
            ws_clock_mono_after(HTTP_GUARD_TICK_MS); /* cv is monotonic */
        pthread_cond_timedwait(&h->guard_cv, &h->guard_mu, &ts);
    }
    pthread_mutex_unlock(&h->guard_mu);
    return NULL;
}

ws_err ws__http_guard_start(ws_http *h)
{
    static const char *const why[CUT_REASONS] = {
        "reason=\"idle\"", "reason=\"slow_body\"", "reason=\"body_deadline\"",
        "reason=\"per_addr_cap\""};
    ws_metrics *m = ws_metrics_default();
    for (int i = 0; i < CUT_REASONS; i++) {
        h->cut_total[i] = m != NULL
                              ? ws_counter_get(m, "webshop_http_connections_cut_total",
                                               "Connections cut to keep HTTP "
                                               "workers for other clients",
                                               why[i])
                              : NULL;
    }
    pthread_mutex_init(&h->guard_mu, NULL);
    ws_clock_cond_init(&h->guard_cv);
    if (pthread_create(&h->guard_thread, NULL, http_guard_main, h) != 0) {
        pthread_cond_destroy(&h->guard_cv);
        pthread_mutex_destroy(&h->guard_mu);
        return WS_ENOMEM;
    }
    h->guard_started = true;
    return WS_OK;
}

void ws__http_guard_stop(ws_http *h)
{
    if (!h->guard_started) {
        return;
    }
    pthread_mutex_lock(&h->guard_mu);
    h->guard_stop = true;
    pthread_cond_signal(&h->guard_cv);
    pthread_mutex_unlock(&h->guard_mu);
    pthread_join(h->guard_thread, NULL);
    pthread_cond_destroy(&h->guard_cv);
    pthread_mutex_destroy(&h->guard_mu);
    h->guard_started = false;
}
