/*
 * webshop-order as a process, against a real mosquitto (harness), on a fresh
 * database of the run's engine (test_db: SQLite, or PostgreSQL under
 * with_pg, given with --db-url): an OrderSent, an InStock and a CancelOrder
 * published on the bus move the order through PENDING, SUCCESSFUL and
 * CANCELED as GetOrder and ListOrders show it, the relay publishes each
 * status (and the OrderCanceled) from the outbox, errors come back as RPC
 * statuses, and SIGTERM stops the service with exit 0 (on SQLite with no
 * WAL left behind). Its /metrics counts the orders by status
 * (webshop_orders).
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bus.h"
#include "harness.h"
#include "rpc_client.h"
#include "test_db.h"
#include "webshop/v1/events.facts.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/order.rpc.h"

#define WAIT_MS  15000
#define ORDER_ID "7c1d2e3f-4a5b-4c6d-8e9f-0123456789ab"

static char *tmpdir;
static char db_url[512];
static harness_broker broker;
static char rpc_url[64];
static harness_proc ord;
static ws_metrics *metrics;
static ws_bus *bus; /* the test's own client: publishes and subscribes */
static ws_rpc_client *rpc;
static int ord_http_port; /* the service's --http-port (metrics) */

/* What the test's subscriber saw from the order service. */
static pthread_mutex_t seen_mu = PTHREAD_MUTEX_INITIALIZER;
static int seen_status[5]; /* OrderStatusChanged for ORDER_ID, by status */
static int seen_canceled;  /* OrderCanceled for ORDER_ID */
static int seen_probes;

static ws_err status_handler(void *ctx, const ProtobufCMessage *msg,
                             const ws_bus_msg_info *info)
{
    (void)ctx;
    (void)info;
    const Webshop__V1__OrderStatusChanged *m =
        (const Webshop__V1__OrderStatusChanged *)msg;
    pthread_mutex_lock(&seen_mu);
    if (strcmp(m->order_id, ORDER_ID) == 0 && (unsigned)m->status < 5) {
        seen_status[m->status]++;
    } else if (strcmp(m->order_id, "probe") == 0) {
        seen_probes++;
    }
    pthread_mutex_unlock(&seen_mu);
    return WS_OK;
}

static ws_err canceled_handler(void *ctx, const ProtobufCMessage *msg,
                               const ws_bus_msg_info *info)
{
    (void)ctx;
    (void)info;
    pthread_mutex_lock(&seen_mu);
    seen_canceled +=
        strcmp(((const Webshop__V1__OrderCanceled *)msg)->order_id, ORDER_ID) == 0;
    pthread_mutex_unlock(&seen_mu);
    return WS_OK;
}

static int seen(int *counter)
{
    pthread_mutex_lock(&seen_mu);
    int n = *counter;
    pthread_mutex_unlock(&seen_mu);
    return n;
}

static bool probe_seen(void *ctx)
{
    (void)ctx;
    return seen(&seen_probes) > 0;
}

static bool bus_up(void *ctx)
{
    (void)ctx;
    return ws_bus_connected(bus);
}

static void ord_start(void)
{
    char log[4200], port[32], hport[16];
    snprintf(log, sizeof(log), "%s/order.log", tmpdir);
    snprintf(port, sizeof(port), "127.0.0.1:%d", broker.port);
    ord_http_port = harness_port_reserve();
    snprintf(hport, sizeof(hport), "%d", ord_http_port);
    char inv[64];
    snprintf(inv, sizeof(inv), "tcp://127.0.0.1:%d", harness_port_reserve());
    char *const argv[] = {
        ORDER_EXE, "--db-url",           db_url,       "--broker",
        port,      "--rpc-url",          rpc_url,      "--http-port",
        hport,     "--client-id",        "order-test", "--inventory-url",
        inv,       "--shutdown-timeout", "5s",         "--rpc-plaintext",
        NULL};
    cr_assert_eq(harness_proc_spawn(&ord, argv, log), 0);
}

/* GetOrder of id: the status, 0 when NOT_FOUND, -code on another error. */
static int get_status(const char *id)
{
    Webshop__V1__GetOrderRequest req = WEBSHOP__V1__GET_ORDER_REQUEST__INIT;
    req.id = (char *)id;
    Webshop__V1__GetOrderResponse *resp = NULL;
    ws_rpc_code code = webshop_v1_orders_get_order(rpc, &req, &resp, 1000);
    if (code == WS_RPC_NOT_FOUND) {
        return 0;
    }
    if (code != WS_RPC_OK) {
        return -(int)code;
    }
    int st = resp->order->status;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return st;
}

static bool rpc_ready(void *ctx)
{
    (void)ctx;
    return get_status(ORDER_ID) >= 0;
}

static void setup(void)
{
    tmpdir = harness_tmpdir_new("order-svc");
    cr_assert_not_null(tmpdir);
    cr_assert_eq(test_db_fresh(db_url, sizeof(db_url)), 0);
    cr_assert_eq(harness_broker_start(&broker, tmpdir, NULL), 0);
    snprintf(rpc_url, sizeof(rpc_url), "tcp://127.0.0.1:%d", harness_port_reserve());

    metrics = ws_metrics_new();
    ws_bus_opts bo = {.host = "127.0.0.1",
                      .port = broker.port,
                      .client_id = "order-test-client",
                      .clean_start = false,
                      .metrics = metrics};
    cr_assert_eq(ws_bus_open(&bo, &bus), WS_OK);
    cr_assert_eq(ws_bus_subscribe(bus, WEBSHOP_V1_ORDER_STATUS_CHANGED_TOPIC,
                                  &webshop__v1__order_status_changed__descriptor,
                                  status_handler, NULL),
                 WS_OK);
    cr_assert_eq(ws_bus_subscribe(bus, WEBSHOP_V1_ORDER_CANCELED_TOPIC,
                                  &webshop__v1__order_canceled__descriptor,
                                  canceled_handler, NULL),
                 WS_OK);
    cr_assert_eq(ws_bus_start(bus), WS_OK);
    cr_assert(harness_wait_until(bus_up, NULL, WAIT_MS));
    /* The subscription is live once a probe comes back. */
    Webshop__V1__OrderStatusChanged probe = WEBSHOP__V1__ORDER_STATUS_CHANGED__INIT;
    probe.order_id = "probe";
    probe.reason = "";
    long long deadline = harness_now_ms() + WAIT_MS;
    while (!probe_seen(NULL)) {
        cr_assert_lt(harness_now_ms(), deadline);
        cr_assert_eq(
            ws_bus_publish(bus, WEBSHOP_V1_ORDER_STATUS_CHANGED_TOPIC, &probe.base, 2000),
            WS_OK);
        harness_wait_until(probe_seen, NULL, 200);
    }
    const char *urls[] = {rpc_url};
    ws_rpc_client_opts ro = {.urls = urls, .n_urls = 1, .metrics = metrics};
    cr_assert_eq(ws_rpc_client_open(&ro, &rpc), WS_OK);
}

static void teardown(void)
{
    harness_proc_stop(&ord, SIGKILL, 1000);
    ws_rpc_client_close(rpc);
    ws_bus_close(bus);
    ws_metrics_free(metrics);
    cr_expect_eq(harness_broker_stop(&broker, SIGTERM), 0);
    test_db_cleanup(db_url);
    harness_tmpdir_free(tmpdir);
}

TestSuite(order_service, .init = setup, .fini = teardown, .timeout = 90);

typedef struct until_status {
    const char *topic;
    const ProtobufCMessage *msg;
    int status;
} until_status;

static bool status_is(void *ctx)
{
    return get_status(ORDER_ID) == ((until_status *)ctx)->status;
}

/* Publish msg on topic until GetOrder shows status, within WAIT_MS. The
 * consumer may not have subscribed yet when its RPC answers (a fresh
 * session drops what was published before); duplicates are harmless. */
static bool publish_until(const char *topic, const ProtobufCMessage *msg, int status)
{
    until_status u = {.topic = topic, .msg = msg, .status = status};
    long long deadline = harness_now_ms() + WAIT_MS;
    while (harness_now_ms() < deadline) {
        cr_assert_eq(ws_bus_publish(bus, topic, msg, 5000), WS_OK);
        if (harness_wait_until(status_is, &u, 500)) {
            return true;
        }
    }
    return false;
}

static bool status_seen_pending(void *ctx)
{
    (void)ctx;
    return seen(&seen_status[WEBSHOP__V1__ORDER_STATUS__PENDING]) > 0;
}

static bool status_seen_successful(void *ctx)
{
    (void)ctx;
    return seen(&seen_status[WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL]) > 0;
}

static bool status_seen_canceled(void *ctx)
{
    (void)ctx;
    return seen(&seen_status[WEBSHOP__V1__ORDER_STATUS__CANCELED]) > 0 &&
           seen(&seen_canceled) > 0;
}

static void assert_listed_once(void)
{
    Webshop__V1__ListOrdersRequest lq = WEBSHOP__V1__LIST_ORDERS_REQUEST__INIT;
    Webshop__V1__ListOrdersResponse *lr = NULL;
    cr_assert_eq(webshop_v1_orders_list_orders(rpc, &lq, &lr, 2000), WS_RPC_OK);
    cr_assert_eq(lr->n_orders, 1);
    cr_assert_str_eq(lr->orders[0]->id, ORDER_ID);
    cr_assert_eq(lr->orders[0]->n_items, 1);
    cr_assert_str_eq(lr->next_page_token, "");
    protobuf_c_message_free_unpacked(&lr->base, NULL);
    lq.page_size = -1;
    lr = NULL;
    cr_assert_eq(webshop_v1_orders_list_orders(rpc, &lq, &lr, 2000),
                 WS_RPC_INVALID_ARGUMENT);
}

Test(order_service, applies_events_serves_orders_publishes_statuses_and_stops_cleanly)
{
    ord_start();
    cr_assert(harness_wait_until(rpc_ready, NULL, WAIT_MS), "no RPC answer");
    cr_assert_eq(get_status("not-a-uuid"), -(int)WS_RPC_INVALID_ARGUMENT);

    Webshop__V1__OrderItem item = WEBSHOP__V1__ORDER_ITEM__INIT;
    item.inventory_id = 1;
    item.count = 2;
    Webshop__V1__OrderItem *items[] = {&item};
    Webshop__V1__OrderSent sent = WEBSHOP__V1__ORDER_SENT__INIT;
    sent.order_id = ORDER_ID;
    sent.n_items = 1;
    sent.items = items;
    cr_assert(publish_until(WEBSHOP_V1_ORDER_SENT_TOPIC, &sent.base,
                            WEBSHOP__V1__ORDER_STATUS__PENDING));
    cr_assert(harness_wait_until(status_seen_pending, NULL, WAIT_MS),
              "PENDING not relayed");

    Webshop__V1__InStock in = WEBSHOP__V1__IN_STOCK__INIT;
    in.order_id = ORDER_ID;
    cr_assert(publish_until(WEBSHOP_V1_IN_STOCK_TOPIC, &in.base,
                            WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL));
    cr_assert(harness_wait_until(status_seen_successful, NULL, WAIT_MS));

    Webshop__V1__CancelOrder cancel = WEBSHOP__V1__CANCEL_ORDER__INIT;
    cancel.order_id = ORDER_ID;
    cr_assert(publish_until(WEBSHOP_V1_CANCEL_ORDER_TOPIC, &cancel.base,
                            WEBSHOP__V1__ORDER_STATUS__CANCELED));
    cr_assert(harness_wait_until(status_seen_canceled, NULL, WAIT_MS));
    assert_listed_once();

    cr_assert_eq(harness_proc_stop(&ord, SIGTERM, 10000), 0);
    cr_assert(WIFEXITED(ord.status), "the order service did not exit by itself");
    cr_assert_eq(WEXITSTATUS(ord.status), 0);
    if (!test_db_is_pg()) {
        char wal[600];
        struct stat stw;
        const char *path = strncmp(db_url, "sqlite:", 7) == 0 ? db_url + 7 : db_url;
        snprintf(wal, sizeof(wal), "%s-wal", path);
        cr_assert(stat(wal, &stw) != 0 || stw.st_size == 0, "WAL left: %lld bytes",
                  (long long)stw.st_size);
    }
}

#define BURST 200

typedef struct burst_ctx {
    size_t want;
} burst_ctx;

/* ListOrders shows want orders, every one PENDING with its line. */
static bool burst_listed(void *ctx)
{
    burst_ctx *b = ctx;
    Webshop__V1__ListOrdersRequest lq = WEBSHOP__V1__LIST_ORDERS_REQUEST__INIT;
    lq.page_size = 1000;
    Webshop__V1__ListOrdersResponse *lr = NULL;
    if (webshop_v1_orders_list_orders(rpc, &lq, &lr, 2000) != WS_RPC_OK) {
        return false;
    }
    bool ok = lr->n_orders == b->want;
    for (size_t i = 0; ok && i < lr->n_orders; i++) {
        ok = lr->orders[i]->status == WEBSHOP__V1__ORDER_STATUS__PENDING &&
             lr->orders[i]->n_items == 1;
    }
    protobuf_c_message_free_unpacked(&lr->base, NULL);
    return ok;
}

/* Events that arrive back to back are committed in groups (one transaction,
 * a savepoint each, on a connection the bus thread holds for the group):
 * a burst of OrderSent, each twice, makes exactly one order each. */
Test(order_service, a_burst_of_orders_each_sent_twice_makes_one_order_each)
{
    ord_start();
    cr_assert(harness_wait_until(rpc_ready, NULL, WAIT_MS), "no RPC answer");
    /* The consumer has subscribed once the first order shows. */
    Webshop__V1__OrderItem item = WEBSHOP__V1__ORDER_ITEM__INIT;
    item.inventory_id = 3;
    item.count = 1;
    Webshop__V1__OrderItem *items[] = {&item};
    Webshop__V1__OrderSent sent = WEBSHOP__V1__ORDER_SENT__INIT;
    sent.order_id = ORDER_ID;
    sent.n_items = 1;
    sent.items = items;
    cr_assert(publish_until(WEBSHOP_V1_ORDER_SENT_TOPIC, &sent.base,
                            WEBSHOP__V1__ORDER_STATUS__PENDING));
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < BURST; i++) {
            char id[40];
            snprintf(id, sizeof(id), "00000000-0000-4000-8000-%012d", i);
            sent.order_id = id;
            cr_assert_eq(
                ws_bus_publish(bus, WEBSHOP_V1_ORDER_SENT_TOPIC, &sent.base, 5000),
                WS_OK);
        }
    }
    burst_ctx b = {.want = BURST + 1};
    cr_assert(harness_wait_until(burst_listed, &b, WAIT_MS),
              "the burst is not all there");
    cr_assert_eq(harness_proc_stop(&ord, SIGTERM, 10000), 0);
    cr_assert_eq(WEXITSTATUS(ord.status), 0);
}

/* ---- webshop_orders ------------------------------------------------------ */

/* GET path from 127.0.0.1:port into buf (headers and body, NUL-terminated);
 * false when it cannot be fetched. */
static bool http_get(int port, const char *path, char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char req[256];
    int n =
        snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
              write(fd, req, (size_t)n) == n;
    size_t len = 0;
    while (ok && len + 1 < cap) {
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r <= 0) {
            ok = r == 0;
            break;
        }
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    return ok && strncmp(buf, "HTTP/1.1 200", 12) == 0;
}

typedef struct orders_gauge {
    const char *want[5]; /* by status: the value expected, as rendered */
    char last[128];      /* what was seen last, for the failure message */
} orders_gauge;

/* /metrics shows webshop_orders{status=...} with every expected value. */
static bool orders_gauge_is(void *ctx)
{
    orders_gauge *g = ctx;
    static char text[1 << 18];
    if (!http_get(ord_http_port, "/metrics", text, sizeof text)) {
        snprintf(g->last, sizeof g->last, "no /metrics");
        return false;
    }
    static const char *const names[5] = {NULL, "PENDING", "SUCCESSFUL", "UNSUCCESSFUL",
                                         "CANCELED"};
    for (int s = 1; s < 5; s++) {
        char line[96];
        snprintf(line, sizeof line, "\nwebshop_orders{status=\"%s\"} ", names[s]);
        const char *at = strstr(text, line);
        if (at == NULL) {
            snprintf(g->last, sizeof g->last, "no series for %s", names[s]);
            return false;
        }
        at += strlen(line);
        size_t vl = strcspn(at, "\n");
        if (vl != strlen(g->want[s]) || strncmp(at, g->want[s], vl) != 0) {
            snprintf(g->last, sizeof g->last, "%s is %.*s", names[s], (int)vl, at);
            return false;
        }
    }
    return strstr(text, "# HELP webshop_orders ") != NULL &&
           strstr(text, "# TYPE webshop_orders gauge") != NULL;
}

typedef struct id_status {
    const char *id;
    int status;
} id_status;

static bool id_status_is(void *ctx)
{
    const id_status *u = ctx;
    return get_status(u->id) == u->status;
}

/* publish_until for the order id. */
static bool publish_until_id(const char *topic, const ProtobufCMessage *msg,
                             const char *id, int status)
{
    id_status u = {.id = id, .status = status};
    long long deadline = harness_now_ms() + WAIT_MS;
    while (harness_now_ms() < deadline) {
        cr_assert_eq(ws_bus_publish(bus, topic, msg, 5000), WS_OK);
        if (harness_wait_until(id_status_is, &u, 500)) {
            return true;
        }
    }
    return false;
}

/* The order service counts its orders by status: every status of the state
 * machine has a series (0 when empty); a cancel for an order never seen
 * (a tombstone) is not an order. */
Test(order_service, metrics_count_the_orders_by_status)
{
    ord_start();
    cr_assert(harness_wait_until(rpc_ready, NULL, WAIT_MS), "no RPC answer");
    orders_gauge g0 = {.want = {NULL, "0", "0", "0", "0"}};
    cr_assert(harness_wait_until(orders_gauge_is, &g0, WAIT_MS), "%s", g0.last);

    static const char *const ids[4] = {
        "11111111-2222-4333-8444-000000000001", "11111111-2222-4333-8444-000000000002",
        "11111111-2222-4333-8444-000000000003", "11111111-2222-4333-8444-000000000004"};
    Webshop__V1__OrderItem item = WEBSHOP__V1__ORDER_ITEM__INIT;
    item.inventory_id = 1;
    item.count = 1;
    Webshop__V1__OrderItem *items[] = {&item};
    for (int i = 0; i < 4; i++) {
        Webshop__V1__OrderSent sent = WEBSHOP__V1__ORDER_SENT__INIT;
        sent.order_id = (char *)ids[i];
        sent.n_items = 1;
        sent.items = items;
        cr_assert(publish_until_id(WEBSHOP_V1_ORDER_SENT_TOPIC, &sent.base, ids[i],
                                   WEBSHOP__V1__ORDER_STATUS__PENDING));
    }
    orders_gauge g1 = {.want = {NULL, "4", "0", "0", "0"}};
    cr_assert(harness_wait_until(orders_gauge_is, &g1, WAIT_MS), "%s", g1.last);

    Webshop__V1__InStock in = WEBSHOP__V1__IN_STOCK__INIT;
    in.order_id = (char *)ids[0];
    cr_assert(publish_until_id(WEBSHOP_V1_IN_STOCK_TOPIC, &in.base, ids[0],
                               WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL));
    Webshop__V1__OutOfStock out = WEBSHOP__V1__OUT_OF_STOCK__INIT;
    out.order_id = (char *)ids[1];
    out.reason = "none left";
    cr_assert(publish_until_id(WEBSHOP_V1_OUT_OF_STOCK_TOPIC, &out.base, ids[1],
                               WEBSHOP__V1__ORDER_STATUS__UNSUCCESSFUL));
    /* A cancel of an order never seen first (a tombstone), then one of a
     * known order: in order on one topic, so once the second shows, the
     * first was applied. */
    Webshop__V1__CancelOrder stray = WEBSHOP__V1__CANCEL_ORDER__INIT;
    stray.order_id = "11111111-2222-4333-8444-0000000000ff";
    cr_assert_eq(ws_bus_publish(bus, WEBSHOP_V1_CANCEL_ORDER_TOPIC, &stray.base, 5000),
                 WS_OK);
    Webshop__V1__CancelOrder cancel = WEBSHOP__V1__CANCEL_ORDER__INIT;
    cancel.order_id = (char *)ids[2];
    cr_assert(publish_until_id(WEBSHOP_V1_CANCEL_ORDER_TOPIC, &cancel.base, ids[2],
                               WEBSHOP__V1__ORDER_STATUS__CANCELED));
    orders_gauge g2 = {.want = {NULL, "1", "1", "1", "1"}};
    cr_assert(harness_wait_until(orders_gauge_is, &g2, WAIT_MS), "%s", g2.last);
}
