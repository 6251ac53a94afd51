/*
 * A client's dialers survive servers that close a connection before the SP
 * handshake. nng 1.5.2 (Debian 12) stops redialing for ever when that
 * happens before its header is written (the write fails with EPIPE, mapped
 * to NNG_ECLOSED, which the dialer takes for its own close; the client side
 * of nanomsg/nng#1518). rpc_dialer replaces such a dialer. Each test uses a
 * real client and a raw unix listener (accept, close) or a real server on
 * ipc:// in a temp dir; nothing sleeps: conditions are polled until a
 * deadline.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "rpc_client.h"
#include "rpc_fixture.h"
#include "rpc_server.h"

/* A call must be answered this soon after the real server is up: two
 * dialer checks (RPC_DIALER_CHECK_MS apart) and a redial take about 1 s;
 * the rest is room for a loaded machine. */
#define BOUND_MS 8000
/* No new connection for this long after a close: the dialer stopped (a
 * live one redials within RECONNMAXT, 250 ms). */
#define SILENT_MS  750
#define MAX_ROUNDS 20
#define RESTARTS   "webshop_rpc_client_dialer_restarts_total"

static char tmp_dir[256];

static void make_dir(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/rpc_dialer_test.XXXXXX");
    cr_assert_not_null(mkdtemp(tmp_dir));
}

static void remove_dir(void)
{
    char cmd[320];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(rpc_dialer, .init = make_dir, .fini = remove_dir, .timeout = 60);

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static ws_rpc_server *server_new(const char *url)
{
    ws_rpc_server_opts o = {.url = url};
    ws_rpc_server *srv = NULL;
    cr_assert_eq(ws_rpc_server_open(&o, &srv), WS_OK);
    cr_assert_eq(webshop_v1_inventory_register(srv, &rpc_fixture_inventory), WS_OK);
    ws_err err = ws_rpc_server_start(srv);
    cr_assert_eq(err, WS_OK, "start: %s", ws_strerror(err));
    return srv;
}

static ws_rpc_client *client_new(const char *url, ws_metrics *m)
{
    ws_rpc_client_opts o = {.urls = &url, .n_urls = 1, .metrics = m};
    ws_rpc_client *c = NULL;
    cr_assert_eq(ws_rpc_client_open(&o, &c), WS_OK);
    return c;
}

/* Calls until one is answered or BOUND_MS have passed: whether one was. */
static bool answered_within_bound(ws_rpc_client *c)
{
    long long until = now_ms() + BOUND_MS;
    ws_rpc_code code;
    do {
        code = rpc_fixture_get_catalog(c, 1000);
    } while (code != WS_RPC_OK && now_ms() < until);
    return code == WS_RPC_OK;
}

static uint64_t restarts(ws_metrics *m, const char *url)
{
    char labels[400];
    snprintf(labels, sizeof(labels), "url=\"%s\"", url);
    return ws_counter_value(ws_counter_get(m, RESTARTS, "", labels));
}

/* A raw unix listener on path. */
static int raw_listen(const char *path)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    cr_assert_lt(strlen(path), sizeof(a.sun_path));
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0, "bind %s", path);
    cr_assert_eq(listen(fd, 16), 0);
    return fd;
}

/* Accept a connection on lfd within ms and close it at once: whether one
 * came. */
static bool accept_and_close(int lfd, int ms)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    int n;
    do {
        n = poll(&p, 1, ms);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        return false;
    }
    int fd = accept(lfd, NULL, NULL);
    cr_assert_geq(fd, 0);
    close(fd);
    return true;
}

/* The server that closed at accept went away and a real one came up on the
 * same path: the client reaches it, though nng had stopped redialing. */
Test(rpc_dialer, dialer_wedged_by_a_close_at_accept_is_replaced)
{
    char path[320], url[330];
    snprintf(path, sizeof(path), "%s/inv.sock", tmp_dir);
    snprintf(url, sizeof(url), "ipc://%s", path);
    ws_metrics *m = ws_metrics_new();
    int lfd = raw_listen(path);
    ws_rpc_client *c = client_new(url, m);

    /* Close every connection at accept until the dialer stops coming:
     * whether it is wedged is a race (our close against its header
     * write), which nng 1.5.2 loses at once here. */
    cr_assert(accept_and_close(lfd, BOUND_MS), "the client never dialed");
    int accepted = 1;
    bool wedged = false;
    /* Each connection that came is closed too: the next wait is again
     * for silence, not for a connection (a close may just have wedged). */
    while (!wedged && accepted < MAX_ROUNDS) {
        wedged = !accept_and_close(lfd, SILENT_MS);
        accepted += !wedged;
    }
    cr_assert(wedged, "the dialer redialed after %d closes: the test proved nothing",
              accepted);
    close(lfd);
    unlink(path);

    ws_rpc_server *srv = server_new(url);
    long long t0 = now_ms();
    cr_assert(answered_within_bound(c), "no answer within %d ms of the server", BOUND_MS);
    cr_log_info("answered after %lld ms (%d closes at accept)", now_ms() - t0, accepted);
    cr_expect_geq(restarts(m, url), 1);
    ws_rpc_client_close(c);
    ws_rpc_server_close(srv);
    ws_metrics_free(m);
}

/* A dialer that keeps failing because nothing listens is alive (nng counts
 * each refusal): calls end UNAVAILABLE and nothing is replaced; once the
 * server is up the same client is answered. */
Test(rpc_dialer, dialer_to_a_server_not_up_yet_is_left_alone)
{
    char url[330];
    snprintf(url, sizeof(url), "ipc://%s/later.sock", tmp_dir);
    ws_metrics *m = ws_metrics_new();
    ws_rpc_client *c = client_new(url, m);
    long long until = now_ms() + 3 * 1000;
    int calls = 0;
    do {
        cr_assert_eq(rpc_fixture_get_catalog(c, 500), WS_RPC_UNAVAILABLE);
        calls++;
    } while (now_ms() < until);
    cr_expect_eq(restarts(m, url), 0, "replaced a live dialer (%d calls)", calls);
    ws_rpc_server *srv = server_new(url);
    cr_assert(answered_within_bound(c));
    cr_expect_eq(restarts(m, url), 0);
    ws_rpc_client_close(c);
    ws_rpc_server_close(srv);
    ws_metrics_free(m);
}

/* A server that restarts (closed, opened again on the same path) is
 * reached again by the same client; a connected dialer is never
 * replaced. */
Test(rpc_dialer, dialer_follows_a_restarted_server)
{
    char url[330];
    snprintf(url, sizeof(url), "ipc://%s/again.sock", tmp_dir);
    ws_metrics *m = ws_metrics_new();
    ws_rpc_server *srv = server_new(url);
    ws_rpc_client *c = client_new(url, m);
    for (int i = 0; i < 3; i++) {
        cr_assert(answered_within_bound(c), "round %d", i);
        ws_rpc_server_close(srv);
        srv = server_new(url);
    }
    cr_assert(answered_within_bound(c));
    long long until = now_ms() + 1500;
    do {
        cr_assert_eq(rpc_fixture_get_catalog(c, 1000), WS_RPC_OK);
    } while (now_ms() < until);
    cr_log_info("restarts: %llu", (unsigned long long)restarts(m, url));
    ws_rpc_client_close(c);
    ws_rpc_server_close(srv);
    ws_metrics_free(m);
}
