/*
 * ws_bus against a real mosquitto started by the harness on a reserved
 * loopback port: QoS 1 round trips in both payload formats, publish-and-wait,
 * broker restarts, offline delivery through a persistent session,
 * garbage payloads, and shared subscriptions (two members of a share group
 * split every message, before and after a broker restart, next to a plain
 * subscriber); and the harness's own promises (reserved ports, the
 * broker config). Every wait polls a condition with a deadline.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bus.h"
#include "harness.h"
#include "metrics.h"
#include "trace.h"
#include "webshop/v1/events.pb-c.h"

#define WAIT_MS     10000
#define TOPIC       "test/order-send"
#define TOPIC_LABEL "topic=\"" TOPIC "\""

static char *tmpdir;
static harness_broker broker;

static void setup(void)
{
    tmpdir = harness_tmpdir_new("bus");
    cr_assert_not_null(tmpdir);
    cr_assert_eq(harness_broker_start(&broker, tmpdir, NULL), 0);
}

static void teardown(void)
{
    cr_expect_eq(harness_broker_stop(&broker, SIGTERM), 0);
    harness_tmpdir_free(tmpdir);
}

TestSuite(bus, .init = setup, .fini = teardown, .timeout = 60);

/* ---- a subscriber that records what it got ------------------------------ */

#define MAX_GOT 32

typedef struct got {
    pthread_mutex_t mu;
    int n;
    uint8_t *packed[MAX_GOT]; /* each received message, re-packed */
    size_t len[MAX_GOT];
    char order_id[MAX_GOT][64];
    bool json[MAX_GOT];
} got;

static void got_init(got *g)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
}

static void got_fini(got *g)
{
    for (int i = 0; i < g->n && i < MAX_GOT; i++) {
        free(g->packed[i]);
    }
    pthread_mutex_destroy(&g->mu);
}

static int got_count(got *g)
{
    pthread_mutex_lock(&g->mu);
    int n = g->n;
    pthread_mutex_unlock(&g->mu);
    return n;
}

static ws_err got_handler(void *ctx, const ProtobufCMessage *msg,
                          const ws_bus_msg_info *info)
{
    got *g = ctx;
    const Webshop__V1__OrderSent *o = (const Webshop__V1__OrderSent *)msg;
    pthread_mutex_lock(&g->mu);
    if (g->n < MAX_GOT) {
        size_t n = protobuf_c_message_get_packed_size(msg);
        g->packed[g->n] = malloc(n + 1);
        protobuf_c_message_pack(msg, g->packed[g->n]);
        g->len[g->n] = n;
        snprintf(g->order_id[g->n], sizeof(g->order_id[0]), "%s", o->order_id);
        g->json[g->n] = info->json;
    }
    g->n++; /* counts all; the first MAX_GOT are kept */
    pthread_mutex_unlock(&g->mu);
    return WS_OK;
}

typedef struct want {
    got *g;
    int n;
} want;

static bool got_at_least(void *ctx)
{
    want *w = ctx;
    return got_count(w->g) >= w->n;
}

static bool got_wait(got *g, int n)
{
    want w = {g, n};
    return harness_wait_until(got_at_least, &w, WAIT_MS);
}

/* ---- helpers ------------------------------------------------------------ */

static ws_bus *bus_new(const char *client_id, ws_bus_format format, int port,
                       ws_metrics *m)
{
    ws_bus_opts o = {
        .host = "127.0.0.1",
        .port = port,
        .client_id = client_id,
        .format = format,
        .metrics = m,
    };
    ws_bus *bus = NULL;
    cr_assert_eq(ws_bus_open(&o, &bus), WS_OK);
    return bus;
}

/* Start every bus in all, then wait until each is ready (connected, and
 * every subscription acknowledged). */
static void bus_start_ready(ws_bus *const *all, int n)
{
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ws_bus_start(all[i]), WS_OK);
    }
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ws_bus_wait_connected(all[i], WAIT_MS), WS_OK);
    }
}

/* A protobuf publisher "test-pub" on the broker, ready. */
static ws_bus *pub_ready(ws_metrics *m)
{
    ws_bus *pub = bus_new("test-pub", WS_BUS_PROTOBUF, broker.port, m);
    bus_start_ready(&pub, 1);
    return pub;
}

/* A subscriber "test-sub" recording what arrives on TOPIC into g; not
 * started. */
static ws_bus *sub_new(got *g, ws_metrics *m)
{
    ws_bus *sub = bus_new("test-sub", WS_BUS_PROTOBUF, broker.port, m);
    cr_assert_eq(ws_bus_subscribe(sub, TOPIC, &webshop__v1__order_sent__descriptor,
                                  got_handler, g),
                 WS_OK);
    return sub;
}

static bool is_connected(void *ctx)
{
    return ws_bus_connected(ctx);
}

static bool is_disconnected(void *ctx)
{
    return !ws_bus_connected(ctx);
}

/* An OrderSent with id and two items. Strings point at static storage. */
typedef struct order {
    Webshop__V1__OrderSent msg;
    Webshop__V1__OrderItem item[2];
    Webshop__V1__OrderItem *items[2];
    char id[64];
} order;

static void order_make(order *o, const char *id)
{
    webshop__v1__order_sent__init(&o->msg);
    snprintf(o->id, sizeof(o->id), "%s", id);
    for (int i = 0; i < 2; i++) {
        webshop__v1__order_item__init(&o->item[i]);
        o->item[i].inventory_id = i + 1;
        o->item[i].count = 10 * (i + 1);
        o->items[i] = &o->item[i];
    }
    o->msg.order_id = o->id;
    o->msg.n_items = 2;
    o->msg.items = o->items;
}

static void expect_same(const got *g, int i, const ProtobufCMessage *sent)
{
    size_t n = protobuf_c_message_get_packed_size(sent);
    uint8_t *p = malloc(n + 1);
    protobuf_c_message_pack(sent, p);
    cr_expect_eq(g->len[i], n);
    cr_expect(n == g->len[i] && memcmp(p, g->packed[i], n) == 0,
              "message %d differs from what was sent", i);
    free(p);
}

static uint64_t counter(ws_metrics *m, const char *name, const char *labels)
{
    return ws_counter_value(ws_counter_get(m, name, "", labels));
}

static double gauge(ws_metrics *m, const char *name)
{
    return ws_gauge_value(ws_gauge_get(m, name, "", NULL));
}

/* A subscriber on TOPIC and a publisher in format, both connected. */
typedef struct pair {
    ws_metrics *sm, *pm;
    ws_bus *sub, *pub;
    got g;
} pair;

static void pair_open(pair *p, ws_bus_format format)
{
    got_init(&p->g);
    p->sm = ws_metrics_new();
    p->pm = ws_metrics_new();
    p->sub = sub_new(&p->g, p->sm);
    p->pub = bus_new("test-pub", format, broker.port, p->pm);
    bus_start_ready((ws_bus *[]){p->sub, p->pub}, 2);
}

static void pair_close(pair *p)
{
    ws_bus_close(p->pub);
    ws_bus_close(p->sub);
    ws_metrics_free(p->pm);
    ws_metrics_free(p->sm);
    got_fini(&p->g);
}

/* ---- tests -------------------------------------------------------------- */

static void round_trip(ws_bus_format format)
{
    pair p;
    pair_open(&p, format);
    order o;
    order_make(&o, format == WS_BUS_JSON ? "order-json" : "order-pb");
    cr_assert_eq(ws_bus_publish(p.pub, TOPIC, &o.msg.base, WAIT_MS), WS_OK);
    cr_assert(got_wait(&p.g, 1));
    expect_same(&p.g, 0, &o.msg.base);
    cr_expect_eq(p.g.json[0], format == WS_BUS_JSON);
    cr_expect_eq(counter(p.pm, "webshop_bus_published_total", TOPIC_LABEL), 1);
    cr_expect_eq(counter(p.sm, "webshop_bus_received_total", TOPIC_LABEL), 1);
    cr_expect_eq(counter(p.sm, "webshop_bus_undecodable_total", TOPIC_LABEL), 0);
    pair_close(&p);
}

Test(bus, qos1_round_trip_protobuf)
{
    round_trip(WS_BUS_PROTOBUF);
}

Test(bus, qos1_round_trip_json)
{
    round_trip(WS_BUS_JSON);
}

Test(bus, publish_returns_after_puback)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = pub_ready(m);
    order o;
    order_make(&o, "acked");
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(ws_bus_publish(pub, TOPIC, &o.msg.base, WAIT_MS), WS_OK);
        /* The PUBACK was counted before the call returned. */
        cr_assert_eq(counter(m, "webshop_bus_acked_total", NULL), (uint64_t)i + 1);
    }
    cr_expect_eq(gauge(m, "webshop_bus_connected"), 1.0);
    ws_bus_close(pub);
    cr_expect_eq(gauge(m, "webshop_bus_connected"), 0.0);
    ws_metrics_free(m);
}

static void async_done(void *ctx, ws_err result)
{
    int *n = ctx;
    if (result == WS_OK) {
        __atomic_add_fetch(n, 1, __ATOMIC_SEQ_CST);
    }
}

/* Waits up to ms until *n (bumped atomically by another thread) reaches
 * target. */
typedef struct want_n {
    int *n;
    int target;
} want_n;

static bool n_reached(void *ctx)
{
    want_n *w = ctx;
    return __atomic_load_n(w->n, __ATOMIC_SEQ_CST) >= w->target;
}

static bool n_wait(int *n, int target, int ms)
{
    want_n w = {n, target};
    return harness_wait_until(n_reached, &w, ms);
}

Test(bus, publish_async_calls_back_once_per_message)
{
    pair p;
    pair_open(&p, WS_BUS_PROTOBUF);
    int acked = 0;
    order o;
    order_make(&o, "async");
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(ws_bus_publish_async(p.pub, TOPIC, &o.msg.base, async_done, &acked),
                     WS_OK);
    }
    cr_assert(n_wait(&acked, 50, WAIT_MS));
    cr_assert(got_wait(&p.g, 50));
    pair_close(&p);
    cr_expect_eq(acked, 50);
}

/* ---- event age and the loop hook ---------------------------------------- */

/* The age histogram's count and sum for TOPIC in m. */
static void age_of(ws_metrics *m, uint64_t *count, double *sum)
{
    ws_buf out;
    ws_buf_init(&out, 0);
    cr_assert_eq(ws_metrics_render(m, &out), WS_OK);
    const char *c =
        strstr(out.data, "webshop_event_age_seconds_count{topic=\"" TOPIC "\"} ");
    const char *s =
        strstr(out.data, "webshop_event_age_seconds_sum{topic=\"" TOPIC "\"} ");
    cr_assert(c != NULL && s != NULL, "%s", out.data);
    *count = strtoull(strchr(c, ' ') + 1, NULL, 10);
    *sum = strtod(strchr(s, ' ') + 1, NULL);
    ws_buf_fini(&out);
}

Test(bus, consumed_events_count_their_age_from_creation)
{
    pair p;
    pair_open(&p, WS_BUS_PROTOBUF);
    order o;
    order_make(&o, "fresh");
    cr_assert_eq(ws_bus_publish(p.pub, TOPIC, &o.msg.base, WAIT_MS), WS_OK);
    cr_assert(got_wait(&p.g, 1));
    uint64_t n = 0;
    double sum = 0;
    age_of(p.sm, &n, &sum);
    cr_expect_eq(n, 1);
    cr_expect(sum >= 0 && sum < 5, "a fresh event is %f s old", sum);
    /* An outbox row made a minute ago is a minute old when consumed. */
    int acked = 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t minute_ago = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000 - 60000;
    cr_assert_eq(ws_bus_publish_async_at(p.pub, TOPIC, &o.msg.base, minute_ago,
                                         async_done, &acked),
                 WS_OK);
    cr_assert(got_wait(&p.g, 2));
    age_of(p.sm, &n, &sum);
    cr_expect_eq(n, 2);
    cr_expect(sum >= 60 && sum < 70, "sum of ages %f", sum);
    cr_expect_eq(
        ws_bus_publish_async_at(p.pub, TOPIC, &o.msg.base, -1, async_done, &acked),
        WS_EINVAL);
    pair_close(&p);
}

static void count_turn(void *ctx)
{
    __atomic_add_fetch((int *)ctx, 1, __ATOMIC_SEQ_CST);
}

Test(bus, loop_hook_runs_every_turn_connected_or_not)
{
    ws_metrics *m = ws_metrics_new();
    /* Connected and idle: about every 100 ms. */
    int turns = 0;
    ws_bus *bus = bus_new("test-hook", WS_BUS_PROTOBUF, broker.port, m);
    cr_assert_eq(ws_bus_set_loop_hook(bus, count_turn, &turns), WS_OK);
    cr_assert_eq(ws_bus_start(bus), WS_OK);
    cr_expect_eq(ws_bus_set_loop_hook(bus, NULL, NULL), WS_EINVAL, "set after start");
    cr_assert_eq(ws_bus_wait_connected(bus, WAIT_MS), WS_OK);
    cr_assert(n_wait(&turns, __atomic_load_n(&turns, __ATOMIC_SEQ_CST) + 10, WAIT_MS),
              "idle loop turns");
    ws_bus_close(bus);
    /* No broker: every reconnect attempt is a turn too. */
    int offline = 0;
    int port = harness_port_reserve();
    bus = bus_new("test-hook-offline", WS_BUS_PROTOBUF, port, m);
    cr_assert_eq(ws_bus_set_loop_hook(bus, count_turn, &offline), WS_OK);
    cr_assert_eq(ws_bus_start(bus), WS_OK);
    /* Backoff 100 ms doubling: 5 attempts within about 3 s. */
    cr_expect(n_wait(&offline, 5, WAIT_MS), "reconnect turns");
    ws_bus_close(bus);
    ws_metrics_free(m);
}

Test(bus, publish_without_broker_is_unavailable)
{
    ws_metrics *m = ws_metrics_new();
    int port = harness_port_reserve(); /* locked by us: nobody listens there */
    ws_bus *pub = bus_new("test-nobroker", WS_BUS_PROTOBUF, port, m);
    order o;
    order_make(&o, "nobody");
    /* Before start, and while it keeps failing to connect. */
    cr_expect_eq(ws_bus_publish(pub, TOPIC, &o.msg.base, 1000), WS_EUNAVAIL);
    cr_assert_eq(ws_bus_start(pub), WS_OK);
    cr_expect_eq(ws_bus_wait_connected(pub, 300), WS_ETIMEDOUT);
    cr_expect_eq(ws_bus_publish(pub, TOPIC, &o.msg.base, 1000), WS_EUNAVAIL);
    cr_expect_eq(ws_bus_publish_async(pub, TOPIC, &o.msg.base, async_done, NULL),
                 WS_EUNAVAIL);
    cr_expect_not(ws_bus_connected(pub));
    ws_bus_close(pub);
    ws_metrics_free(m);
}

Test(bus, reconnects_and_resubscribes_after_broker_restart)
{
    pair p;
    pair_open(&p, WS_BUS_PROTOBUF);
    /* Kill the broker and lose its database, so the subscription survives
     * only if the client renews it by itself. */
    cr_assert_eq(harness_broker_stop(&broker, SIGKILL), 0);
    char db[4200];
    snprintf(db, sizeof(db), "%s/mosquitto.db", broker.dir);
    unlink(db);
    cr_assert(harness_wait_until(is_disconnected, p.sub, WAIT_MS));
    cr_assert(harness_wait_until(is_disconnected, p.pub, WAIT_MS));
    order o;
    order_make(&o, "while-down");
    cr_expect_eq(ws_bus_publish(p.pub, TOPIC, &o.msg.base, 500), WS_EUNAVAIL);

    cr_assert_eq(harness_broker_restart(&broker), 0);
    cr_assert(harness_wait_until(is_connected, p.sub, WAIT_MS));
    cr_assert(harness_wait_until(is_connected, p.pub, WAIT_MS));
    /* Connected is CONNACK; ready is every SUBACK of the resubscribe. */
    cr_assert_eq(ws_bus_wait_connected(p.sub, WAIT_MS), WS_OK);

    order_make(&o, "after-restart");
    cr_assert_eq(ws_bus_publish(p.pub, TOPIC, &o.msg.base, WAIT_MS), WS_OK);
    cr_assert(got_wait(&p.g, 1));
    cr_expect_str_eq(p.g.order_id[0], "after-restart");
    cr_expect_eq(counter(p.sm, "webshop_bus_reconnects_total", NULL), 1);
    cr_expect_eq(counter(p.pm, "webshop_bus_reconnects_total", NULL), 1);
    pair_close(&p);
}

/* Close the subscriber, publish n messages, reopen it with the same client
 * id: they arrive, in order. */
static void offline_delivery(pair *p, int n)
{
    ws_bus_close(p->sub);
    p->sub = NULL;
    order o;
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "offline-%d", i);
        order_make(&o, id);
        cr_assert_eq(ws_bus_publish(p->pub, TOPIC, &o.msg.base, WAIT_MS), WS_OK);
    }
    got g2;
    got_init(&g2);
    ws_metrics *m2 = ws_metrics_new();
    ws_bus *sub = sub_new(&g2, m2);
    cr_assert_eq(ws_bus_start(sub), WS_OK);
    cr_assert(got_wait(&g2, n));
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "offline-%d", i);
        cr_expect_str_eq(g2.order_id[i], id);
    }
    ws_bus_close(sub);
    ws_metrics_free(m2);
    got_fini(&g2);
}

Test(bus, messages_published_while_subscriber_offline_arrive)
{
    pair p;
    pair_open(&p, WS_BUS_PROTOBUF);
    offline_delivery(&p, 5);
    pair_close(&p);
}

Test(bus, session_survives_reconnect_and_broker_restart)
{
    pair p;
    pair_open(&p, WS_BUS_PROTOBUF);
    /* The session expiry must be sent again on the automatic reconnect, or
     * the broker forgets the session when the subscriber then leaves. */
    cr_assert_eq(harness_broker_restart(&broker), 0);
    cr_assert_eq(ws_bus_wait_connected(p.sub, WAIT_MS), WS_OK);
    cr_assert_eq(ws_bus_wait_connected(p.pub, WAIT_MS), WS_OK);
    offline_delivery(&p, 3);
    pair_close(&p);
}

Test(bus, garbage_payloads_are_counted_and_dropped)
{
    pair p;
    pair_open(&p, WS_BUS_PROTOBUF);
    static const struct {
        const char *data;
        size_t len;
    } junk[] = {
        {"\xff\xff\xff\xff", 4}, /* truncated varint tag */
        {"\x0a\x05"
         "ab",
         4},                              /* length past the end */
        {"{not json", 9},                 /* malformed JSON */
        {"  {\"orderId\": 5}", 16},       /* JSON of the wrong type */
        {"{\"noSuchField\": \"x\"}", 20}, /* unknown field */
    };
    size_t n_junk = sizeof(junk) / sizeof(junk[0]);
    for (size_t i = 0; i < n_junk; i++) {
        cr_assert_eq(ws_bus_publish_raw(p.pub, TOPIC, junk[i].data, junk[i].len, WAIT_MS),
                     WS_OK);
    }
    order o;
    order_make(&o, "valid-after-junk");
    cr_assert_eq(ws_bus_publish(p.pub, TOPIC, &o.msg.base, WAIT_MS), WS_OK);
    cr_assert(got_wait(&p.g, 1));
    /* One publisher, one topic, QoS 1: delivered in order, so the junk was
     * handled before the valid message. */
    cr_expect_eq(p.g.n, 1);
    cr_expect_str_eq(p.g.order_id[0], "valid-after-junk");
    expect_same(&p.g, 0, &o.msg.base);
    cr_expect_eq(counter(p.sm, "webshop_bus_undecodable_total", TOPIC_LABEL), n_junk);
    cr_expect_eq(counter(p.sm, "webshop_bus_received_total", TOPIC_LABEL), n_junk + 1);
    cr_expect(ws_bus_connected(p.sub));
    pair_close(&p);
}

typedef struct pending {
    ws_bus *bus;
    ws_err result;
} pending;

static void *publish_thread(void *arg)
{
    pending *pd = arg;
    order o;
    order_make(&o, "never-acked");
    pd->result = ws_bus_publish(pd->bus, TOPIC, &o.msg.base, 60000);
    return NULL;
}

typedef struct sent_ctx {
    ws_metrics *m;
    uint64_t n;
} sent_ctx;

static bool published_n(void *ctx)
{
    sent_ctx *s = ctx;
    return counter(s->m, "webshop_bus_published_total", TOPIC_LABEL) >= s->n;
}

static void async_closed(void *ctx, ws_err result)
{
    *(ws_err *)ctx = result;
}

Test(bus, close_fails_pending_publish_waits)
{
    /* The broker is frozen, so no PUBACK comes: a sync publish and an async
     * one are pending when the bus closes. Both end with WS_ECLOSED. */
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = pub_ready(m);
    cr_assert_eq(kill(broker.proc.pid, SIGSTOP), 0);

    ws_err async_result = WS_OK;
    order o;
    order_make(&o, "never-acked-async");
    cr_assert_eq(
        ws_bus_publish_async(pub, TOPIC, &o.msg.base, async_closed, &async_result),
        WS_OK);
    pending pd = {.bus = pub, .result = WS_OK};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, publish_thread, &pd), 0);
    sent_ctx sc = {m, 2};
    cr_assert(harness_wait_until(published_n, &sc, WAIT_MS));

    ws_bus_close(pub);
    pthread_join(t, NULL);
    cr_expect_eq(pd.result, WS_ECLOSED);
    cr_expect_eq(async_result, WS_ECLOSED);
    kill(broker.proc.pid, SIGCONT);
    ws_metrics_free(m);
}

Test(bus, open_rejects_persistent_session_without_client_id)
{
    ws_bus_opts o = {.port = broker.port};
    ws_bus *bus = NULL;
    cr_expect_eq(ws_bus_open(&o, &bus), WS_EINVAL);
    cr_expect_null(bus);
    o.clean_start = true;
    cr_expect_eq(ws_bus_open(&o, &bus), WS_OK);
    ws_bus_close(bus);
    ws_bus_close(NULL);
}

Test(bus, username_and_password_are_sent)
{
    /* A second broker that refuses anonymous clients. */
    char pw[4400], extra[8500], dir2[4200];
    snprintf(dir2, sizeof(dir2), "%s/auth", tmpdir);
    cr_assert_eq(mkdir(dir2, 0700), 0);
    snprintf(pw, sizeof(pw), "%s/passwd", dir2);
    harness_proc p = {0};
    char *argv[] = {"mosquitto_passwd", "-b", "-c", pw, "shop", "s3cret", NULL};
    char log[4300];
    snprintf(log, sizeof(log), "%s/passwd.log", dir2);
    cr_assert_eq(harness_proc_spawn(&p, argv, log), 0);
    cr_assert_eq(harness_proc_stop(&p, 0, WAIT_MS), 0); /* signal 0: just wait */
    cr_assert(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0);
    snprintf(extra, sizeof(extra), "allow_anonymous false\npassword_file %s", pw);
    harness_broker b2;
    cr_assert_eq(harness_broker_start(&b2, dir2, extra), 0);

    ws_metrics *m = ws_metrics_new();
    ws_bus_opts o = {.port = b2.port,
                     .client_id = "auth-bad",
                     .username = "shop",
                     .password = "wrong",
                     .metrics = m};
    ws_bus *bad = NULL;
    cr_assert_eq(ws_bus_open(&o, &bad), WS_OK);
    cr_assert_eq(ws_bus_start(bad), WS_OK);
    cr_expect_eq(ws_bus_wait_connected(bad, 500), WS_EAUTH);
    ws_bus_close(bad);

    o.client_id = "auth-good";
    o.password = "s3cret";
    ws_bus *good = NULL;
    cr_assert_eq(ws_bus_open(&o, &good), WS_OK);
    cr_assert_eq(ws_bus_start(good), WS_OK);
    cr_expect_eq(ws_bus_wait_connected(good, WAIT_MS), WS_OK);
    ws_bus_close(good);
    ws_metrics_free(m);
    cr_expect_eq(harness_broker_stop(&b2, SIGTERM), 0);
}

/* ---- group commit hooks -------------------------------------------------- */

typedef struct grouped {
    pthread_mutex_t mu;
    bool in_group;
    int begins, ends, fail_ends; /* fail this many first ends */
    int first_group;             /* messages in the first group */
    int in_group_calls, outside_calls, biggest, current;
} grouped;

static ws_err grouped_begin(void *ctx)
{
    grouped *g = ctx;
    pthread_mutex_lock(&g->mu);
    cr_expect_not(g->in_group, "begin inside an open group");
    g->in_group = true;
    g->begins++;
    g->current = 0;
    pthread_mutex_unlock(&g->mu);
    return WS_OK;
}

static ws_err grouped_end(void *ctx)
{
    grouped *g = ctx;
    pthread_mutex_lock(&g->mu);
    cr_expect(g->in_group, "end without begin");
    g->in_group = false;
    g->ends++;
    if (g->ends == 1) {
        g->first_group = g->current;
    }
    bool fail = g->ends <= g->fail_ends;
    pthread_mutex_unlock(&g->mu);
    return fail ? WS_ESTORE : WS_OK;
}

static ws_err grouped_handler(void *ctx, const ProtobufCMessage *msg,
                              const ws_bus_msg_info *info)
{
    (void)msg;
    (void)info;
    grouped *g = ctx;
    pthread_mutex_lock(&g->mu);
    if (g->in_group) {
        g->in_group_calls++;
        if (++g->current > g->biggest) {
            g->biggest = g->current;
        }
    } else {
        g->outside_calls++;
    }
    pthread_mutex_unlock(&g->mu);
    return WS_OK;
}

typedef struct grouped_want {
    grouped *g;
    int calls;
} grouped_want;

static bool grouped_done(void *ctx)
{
    grouped_want *w = ctx;
    pthread_mutex_lock(&w->g->mu);
    bool done = w->g->in_group_calls + w->g->outside_calls >= w->calls &&
                !w->g->in_group && w->g->ends >= 1;
    pthread_mutex_unlock(&w->g->mu);
    return done;
}

/* Subscribe a grouped handler with batch hooks, publish n messages back to
 * back, and wait for at least want_calls handler calls with no group open. */
static void grouped_run(grouped *g, int n, int max_msgs, ws_metrics *sm)
{
    pthread_mutex_init(&g->mu, NULL);
    ws_metrics *pm = ws_metrics_new();
    ws_bus *sub = bus_new("test-sub", WS_BUS_PROTOBUF, broker.port, sm);
    ws_bus *pub = bus_new("test-pub", WS_BUS_PROTOBUF, broker.port, pm);
    ws_bus_batch b = {
        .begin = grouped_begin, .end = grouped_end, .ctx = g, .max_msgs = max_msgs};
    cr_assert_eq(ws_bus_set_batch(sub, &b), WS_OK);
    cr_assert_eq(ws_bus_subscribe(sub, TOPIC, &webshop__v1__order_sent__descriptor,
                                  grouped_handler, g),
                 WS_OK);
    bus_start_ready((ws_bus *[]){sub, pub}, 2);
    cr_assert_eq(ws_bus_set_batch(sub, &b), WS_EINVAL, "set_batch after start");
    int acked = 0;
    order o;
    order_make(&o, "grouped");
    for (int i = 0; i < n; i++) {
        cr_assert_eq(ws_bus_publish_async(pub, TOPIC, &o.msg.base, async_done, &acked),
                     WS_OK);
    }
    grouped_want w = {g, n};
    cr_assert(harness_wait_until(grouped_done, &w, WAIT_MS));
    ws_bus_close(pub);
    ws_bus_close(sub);
    ws_metrics_free(pm);
    pthread_mutex_destroy(&g->mu);
}

Test(bus, back_to_back_messages_are_handled_in_bounded_groups)
{
    grouped g = {0};
    ws_metrics *sm = ws_metrics_new();
    grouped_run(&g, 50, 8, sm);
    cr_expect_eq(g.in_group_calls, 50);
    cr_expect_eq(g.outside_calls, 0);
    cr_expect_eq(g.begins, g.ends);
    cr_expect_leq(g.biggest, 8, "a group above max_msgs");
    cr_expect_eq(counter(sm, "webshop_bus_batched_messages_total", NULL), 50);
    cr_expect_eq(counter(sm, "webshop_bus_batches_total", NULL), (uint64_t)g.ends);
    ws_metrics_free(sm);
}

Test(bus, failed_group_end_hands_its_messages_again_outside_a_group)
{
    grouped g = {.fail_ends = 1};
    ws_metrics *sm = ws_metrics_new();
    grouped_run(&g, 20, 0, sm);
    cr_expect_eq(g.in_group_calls, 20);
    cr_expect_gt(g.first_group, 0);
    cr_expect_eq(g.outside_calls, g.first_group, "the failed group is replayed once");
    ws_metrics_free(sm);
}

/* ---- hold and retry ----------------------------------------------------- */

/* A handler whose store "cannot commit": it fails with WS_EIO for the order
 * id in fail_id while allow is false, and records every message it applies,
 * in order. */
#define FLAKY_MAX 16
typedef struct flaky {
    pthread_mutex_t mu;
    const char *fail_id;
    ws_err fail_with;
    bool allow;
    int fails;             /* calls that failed */
    unsigned last_attempt; /* info->attempt of the last failed call */
    int n;                 /* messages applied */
    char applied[FLAKY_MAX][32];
    bool in_group; /* batch hooks: a group is open */
    int begins, ends;
    int grouped_fails; /* failures seen inside a group */
} flaky;

static ws_err flaky_handler(void *ctx, const ProtobufCMessage *msg,
                            const ws_bus_msg_info *info)
{
    flaky *f = ctx;
    const char *id = ((const Webshop__V1__OrderSent *)msg)->order_id;
    pthread_mutex_lock(&f->mu);
    ws_err err = WS_OK;
    if (strcmp(id, f->fail_id) == 0 && !f->allow) {
        f->fails++;
        f->last_attempt = info->attempt;
        f->grouped_fails += f->in_group;
        err = f->fail_with;
    } else if (f->n < FLAKY_MAX) {
        snprintf(f->applied[f->n++], sizeof(f->applied[0]), "%s", id);
    }
    pthread_mutex_unlock(&f->mu);
    return err;
}

static ws_err flaky_begin(void *ctx)
{
    flaky *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->in_group = true;
    f->begins++;
    pthread_mutex_unlock(&f->mu);
    return WS_OK;
}

static ws_err flaky_end(void *ctx)
{
    flaky *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->in_group = false;
    f->ends++;
    pthread_mutex_unlock(&f->mu);
    return WS_OK;
}

typedef struct flaky_want {
    flaky *f;
    int fails, applied;
} flaky_want;

static bool flaky_reached(void *ctx)
{
    flaky_want *w = ctx;
    pthread_mutex_lock(&w->f->mu);
    bool ok = w->f->fails >= w->fails && w->f->n >= w->applied;
    pthread_mutex_unlock(&w->f->mu);
    return ok;
}

/* Waits until f has failed at least fails times and applied at least
 * applied messages. */
static bool flaky_wait(flaky *f, int fails, int applied)
{
    flaky_want w = {f, fails, applied};
    return harness_wait_until(flaky_reached, &w, WAIT_MS);
}

static bool bus_is_holding(void *ctx)
{
    return ws_bus_holding(ctx, NULL);
}

static bool bus_not_holding(void *ctx)
{
    return !ws_bus_holding(ctx, NULL);
}

/* A subscriber with the retry policy (short backoff) and, with batch, the
 * group hooks; keepalive in seconds (0: the default). */
static ws_bus *flaky_sub(flaky *f, bool batch, int keepalive, ws_metrics *m)
{
    ws_bus_opts o = {.host = "127.0.0.1",
                     .port = broker.port,
                     .client_id = "test-flaky",
                     .keepalive = keepalive,
                     .metrics = m};
    ws_bus *bus = NULL;
    cr_assert_eq(ws_bus_open(&o, &bus), WS_OK);
    if (batch) {
        ws_bus_batch b = {.begin = flaky_begin, .end = flaky_end, .ctx = f};
        cr_assert_eq(ws_bus_set_batch(bus, &b), WS_OK);
    }
    ws_bus_retry r = {.min_ms = 10, .max_ms = 40};
    cr_assert_eq(ws_bus_set_retry(bus, &r), WS_OK);
    cr_assert_eq(ws_bus_subscribe(bus, TOPIC, &webshop__v1__order_sent__descriptor,
                                  flaky_handler, f),
                 WS_OK);
    bus_start_ready(&bus, 1);
    cr_assert_eq(ws_bus_set_retry(bus, &r), WS_EINVAL, "set_retry after start");
    return bus;
}

/* A flaky subscriber (failing fail_id with fail_with until allowed) and a
 * publisher, both ready, each with its own metrics. */
typedef struct flaky_rig {
    flaky f;
    ws_metrics *sm, *pm;
    ws_bus *sub, *pub;
} flaky_rig;

static void flaky_rig_open(flaky_rig *r, const char *fail_id, ws_err fail_with,
                           bool batch, int keepalive)
{
    *r = (flaky_rig){.f = {.fail_id = fail_id, .fail_with = fail_with}};
    pthread_mutex_init(&r->f.mu, NULL);
    r->sm = ws_metrics_new();
    r->pm = ws_metrics_new();
    r->sub = flaky_sub(&r->f, batch, keepalive, r->sm);
    r->pub = pub_ready(r->pm);
}

static void flaky_rig_close(flaky_rig *r)
{
    ws_bus_close(r->pub);
    ws_bus_close(r->sub);
    ws_metrics_free(r->pm);
    ws_metrics_free(r->sm);
    pthread_mutex_destroy(&r->f.mu);
}

/* Publish one message per order id, in order, each acknowledged; the list
 * ends with NULL. */
__attribute__((sentinel)) static void publish_ids(ws_bus *pub, ...)
{
    va_list ap;
    va_start(ap, pub);
    for (const char *id; (id = va_arg(ap, const char *)) != NULL;) {
        order o;
        order_make(&o, id);
        cr_assert_eq(ws_bus_publish(pub, TOPIC, &o.msg.base, WAIT_MS), WS_OK);
    }
    va_end(ap);
}

/* A is held and A, B, C were published: nothing was applied meanwhile. Then
 * the store commits: A, B, C are applied, reading resumes (resumed(sub)),
 * and a later D arrives after them (also a chance for a late duplicate of
 * A to show). */
static void flaky_commit_then_resume(flaky_rig *r, bool (*resumed)(void *))
{
    pthread_mutex_lock(&r->f.mu);
    cr_expect_eq(r->f.n, 0, "a message after the held one ran before it");
    r->f.allow = true;
    pthread_mutex_unlock(&r->f.mu);
    cr_assert(flaky_wait(&r->f, 0, 3));
    cr_assert(harness_wait_until(resumed, r->sub, WAIT_MS));
    publish_ids(r->pub, "D", NULL);
    cr_assert(flaky_wait(&r->f, 0, 4));
}

/* A fails three times, then commits: A, B, C are each applied once, in
 * that order, and nothing after A runs while A is held. */
static void hold_then_apply_in_order(bool batch)
{
    flaky_rig r;
    flaky_rig_open(&r, "A", WS_EIO, batch, 0);

    publish_ids(r.pub, "A", "B", "C", NULL);
    cr_assert(flaky_wait(&r.f, 3, 0));
    ws_bus_hold h;
    cr_assert(ws_bus_holding(r.sub, &h));
    cr_expect_geq(h.held, 1);
    cr_expect_geq(h.attempts, 3);
    cr_expect_eq(h.error, WS_EIO);
    cr_expect_str_eq(h.topic, TOPIC);
    pthread_mutex_lock(&r.f.mu);
    cr_expect_geq(r.f.last_attempt, 2);
    pthread_mutex_unlock(&r.f.mu);
    flaky_commit_then_resume(&r, bus_not_holding);
    pthread_mutex_lock(&r.f.mu);
    cr_expect_eq(r.f.n, 4, "a message applied twice");
    cr_expect_str_eq(r.f.applied[0], "A");
    cr_expect_str_eq(r.f.applied[1], "B");
    cr_expect_str_eq(r.f.applied[2], "C");
    cr_expect_str_eq(r.f.applied[3], "D");
    if (batch) {
        cr_expect_geq(r.f.grouped_fails, 1, "the first failure ran inside a group");
        cr_expect_lt(r.f.grouped_fails, r.f.fails, "retries run outside any group");
    }
    int fails = r.f.fails;
    pthread_mutex_unlock(&r.f.mu);
    cr_expect_eq(counter(r.sm, "webshop_bus_handler_retries_total", NULL),
                 (uint64_t)fails);
    cr_expect_eq(counter(r.sm, "webshop_bus_handler_failed_total", TOPIC_LABEL), 0);
    cr_expect_eq(gauge(r.sm, "webshop_bus_held_messages"), 0);
    flaky_rig_close(&r);
}

Test(bus, a_handler_that_cannot_commit_holds_its_message_until_it_can)
{
    hold_then_apply_in_order(false);
}

Test(bus, a_failure_inside_a_group_holds_that_message_and_keeps_the_order)
{
    hold_then_apply_in_order(true);
}

/* An invalid message is dropped and counted, never held. */
Test(bus, an_invalid_message_is_dropped_not_retried)
{
    flaky_rig r;
    flaky_rig_open(&r, "bad", WS_EINVAL, false, 0);
    publish_ids(r.pub, "bad", "good", NULL);
    cr_assert(flaky_wait(&r.f, 1, 1));
    pthread_mutex_lock(&r.f.mu);
    cr_expect_eq(r.f.fails, 1, "an invalid message was retried");
    cr_expect_str_eq(r.f.applied[0], "good");
    pthread_mutex_unlock(&r.f.mu);
    cr_expect_not(ws_bus_holding(r.sub, NULL));
    cr_expect_eq(counter(r.sm, "webshop_bus_handler_failed_total", TOPIC_LABEL), 1);
    cr_expect_eq(counter(r.sm, "webshop_bus_handler_retries_total", NULL), 0);
    flaky_rig_close(&r);
}

/* Held past the keepalive (5 s, libmosquitto's least; the test takes about
 * 10 s): not reading, the client gives the connection
 * up; once the message commits it reconnects, and what was published
 * meanwhile arrives after it; the held message is applied exactly once. */
Test(bus, a_hold_longer_than_the_keepalive_reconnects_after_the_message_commits)
{
    flaky_rig r;
    flaky_rig_open(&r, "A", WS_EIO, true, 5);
    publish_ids(r.pub, "A", NULL);
    cr_assert(harness_wait_until(bus_is_holding, r.sub, WAIT_MS));
    /* Published while held: it waits at the broker (or unread). */
    publish_ids(r.pub, "B", "C", NULL);
    cr_assert(harness_wait_until(is_disconnected, r.sub, 4 * 5000),
              "the connection outlived two keepalives without a read");
    cr_expect(ws_bus_holding(r.sub, NULL));
    /* Anything redelivered has arrived once connected; D gives a late
     * duplicate of A the chance to show with one more round trip. */
    flaky_commit_then_resume(&r, is_connected);
    pthread_mutex_lock(&r.f.mu);
    int a = 0;
    for (int i = 0; i < r.f.n; i++) {
        a += strcmp(r.f.applied[i], "A") == 0;
    }
    cr_expect_eq(a, 1, "the held message was applied %d times", a);
    cr_expect_str_eq(r.f.applied[0], "A");
    cr_expect_str_eq(r.f.applied[1], "B");
    cr_expect_str_eq(r.f.applied[2], "C");
    pthread_mutex_unlock(&r.f.mu);
    cr_expect_geq(counter(r.sm, "webshop_bus_reconnects_total", NULL), 1);
    flaky_rig_close(&r);
}

/* Closing while a message is held does not wait for it to commit. */
Test(bus, close_while_holding_returns_at_once)
{
    flaky_rig r;
    flaky_rig_open(&r, "A", WS_ESTORE, false, 0);
    publish_ids(r.pub, "A", NULL);
    cr_assert(flaky_wait(&r.f, 5, 0));
    long long t0 = harness_now_ms();
    ws_bus_close(r.sub);
    r.sub = NULL;
    cr_expect_lt(harness_now_ms() - t0, 1500, "close waited for the held message");
    flaky_rig_close(&r);
}

/* ---- shared subscriptions ----------------------------------------------- */

#define SHARE_N     300
#define SHARE_GROUP "test-svc"

/* What the members of a share group and a plain subscriber got: how often
 * each message index arrived, and on which topic. */
typedef struct share_tally {
    pthread_mutex_t mu;
    int seen[2 * SHARE_N];  /* by the share group, per message index */
    int plain[2 * SHARE_N]; /* by the unshared subscriber */
    int by_member[2];       /* messages per group member */
    int shared_total, plain_total;
    int bad_topic; /* deliveries whose info->topic was not TOPIC */
} share_tally;

typedef struct share_ctx {
    share_tally *t;
    int member; /* 0, 1; -1 for the plain subscriber */
} share_ctx;

static ws_err share_handler(void *ctx, const ProtobufCMessage *msg,
                            const ws_bus_msg_info *info)
{
    share_ctx *c = ctx;
    share_tally *t = c->t;
    const Webshop__V1__OrderSent *o = (const Webshop__V1__OrderSent *)msg;
    int i = atoi(o->order_id + 2); /* "s-<i>" */
    pthread_mutex_lock(&t->mu);
    if (strcmp(info->topic, TOPIC) != 0) {
        t->bad_topic++;
    }
    if (i >= 0 && i < 2 * SHARE_N) {
        if (c->member < 0) {
            t->plain[i]++;
            t->plain_total++;
        } else {
            t->seen[i]++;
            t->shared_total++;
            t->by_member[c->member]++;
        }
    }
    pthread_mutex_unlock(&t->mu);
    return WS_OK;
}

typedef struct share_rig {
    share_tally t;
    share_ctx ctx[3];
    ws_metrics *m[4];
    ws_bus *member[2], *plain, *pub;
} share_rig;

/* Two members of SHARE_GROUP on TOPIC (member 0 through opts.share_group,
 * member 1 through ws_bus_subscribe_shared), a plain subscriber and a
 * publisher, all ready. */
static void share_rig_open(share_rig *r)
{
    memset(r, 0, sizeof(*r));
    pthread_mutex_init(&r->t.mu, NULL);
    for (int i = 0; i < 4; i++) {
        r->m[i] = ws_metrics_new();
    }
    for (int i = 0; i < 2; i++) {
        char id[32];
        snprintf(id, sizeof(id), "test-share-%d", i);
        ws_bus_opts o = {.port = broker.port, .client_id = id, .metrics = r->m[i]};
        o.share_group = i == 0 ? SHARE_GROUP : NULL;
        cr_assert_eq(ws_bus_open(&o, &r->member[i]), WS_OK);
        r->ctx[i] = (share_ctx){&r->t, i};
    }
    r->ctx[2] = (share_ctx){&r->t, -1};
    const ProtobufCMessageDescriptor *d = &webshop__v1__order_sent__descriptor;
    cr_assert_eq(ws_bus_subscribe(r->member[0], TOPIC, d, share_handler, &r->ctx[0]),
                 WS_OK);
    cr_assert_eq(ws_bus_subscribe_shared(r->member[1], SHARE_GROUP, TOPIC, d,
                                         share_handler, &r->ctx[1]),
                 WS_OK);
    r->plain = bus_new("test-plain", WS_BUS_PROTOBUF, broker.port, r->m[2]);
    cr_assert_eq(ws_bus_subscribe(r->plain, TOPIC, d, share_handler, &r->ctx[2]), WS_OK);
    r->pub = bus_new("test-pub", WS_BUS_PROTOBUF, broker.port, r->m[3]);
    bus_start_ready((ws_bus *[]){r->member[0], r->member[1], r->plain, r->pub}, 4);
}

static void share_rig_close(share_rig *r)
{
    ws_bus_close(r->pub);
    ws_bus_close(r->plain);
    ws_bus_close(r->member[1]);
    ws_bus_close(r->member[0]);
    for (int i = 0; i < 4; i++) {
        ws_metrics_free(r->m[i]);
    }
    pthread_mutex_destroy(&r->t.mu);
}

/* Publish messages [from, to) at QoS 1, each acknowledged. */
static void share_publish(share_rig *r, int from, int to)
{
    order o;
    for (int i = from; i < to; i++) {
        char id[32];
        snprintf(id, sizeof(id), "s-%d", i);
        order_make(&o, id);
        cr_assert_eq(ws_bus_publish(r->pub, TOPIC, &o.msg.base, WAIT_MS), WS_OK);
    }
}

typedef struct share_want {
    share_tally *t;
    int shared, plain;
} share_want;

/* Every message below w->shared reached the group, and below w->plain the
 * plain subscriber, at least once (a total would count a redelivery). */
static bool share_reached(void *ctx)
{
    share_want *w = ctx;
    bool ok = true;
    pthread_mutex_lock(&w->t->mu);
    for (int i = 0; ok && i < w->shared; i++) {
        ok = w->t->seen[i] > 0;
    }
    for (int i = 0; ok && i < w->plain; i++) {
        ok = w->t->plain[i] > 0;
    }
    pthread_mutex_unlock(&w->t->mu);
    return ok;
}

/* Every message in [from, to) reached the group exactly once and the plain
 * subscriber exactly once, on the plain topic -- except those below
 * again_below, which may have come twice: QoS 1 is at least once, and a
 * broker stopped (SIGTERM) before it read a subscriber's last PUBACKs saves
 * those messages as in flight and sends them again after its restart (seen
 * once in CI, under ASan: the last message before the restart, to the plain
 * subscriber). Messages published after the restart come exactly once. */
static void share_expect_once(share_rig *r, int from, int to, int again_below)
{
    share_want w = {&r->t, to, to};
    cr_assert(harness_wait_until(share_reached, &w, WAIT_MS), "shared %d plain %d of %d",
              r->t.shared_total, r->t.plain_total, to);
    pthread_mutex_lock(&r->t.mu);
    int again_shared = 0, again_plain = 0;
    for (int i = from; i < to; i++) {
        int most = i < again_below ? 2 : 1;
        cr_expect(r->t.seen[i] >= 1 && r->t.seen[i] <= most,
                  "message %d reached the group %d times", i, r->t.seen[i]);
        cr_expect(r->t.plain[i] >= 1 && r->t.plain[i] <= most,
                  "message %d reached the plain subscriber %d times", i, r->t.plain[i]);
        again_shared += r->t.seen[i] > 1;
        again_plain += r->t.plain[i] > 1;
    }
    if (again_shared + again_plain > 0) {
        cr_log_info("sent again after the restart: %d to the group, %d to the plain one",
                    again_shared, again_plain);
    }
    cr_expect_eq(r->t.shared_total, to + again_shared);
    cr_expect_eq(r->t.plain_total, to + again_plain);
    cr_expect_eq(r->t.bad_topic, 0, "delivered with a $share/ topic");
    pthread_mutex_unlock(&r->t.mu);
}

Test(bus, share_group_members_get_every_message_once_between_them)
{
    share_rig r;
    share_rig_open(&r);
    share_publish(&r, 0, SHARE_N);
    share_expect_once(&r, 0, SHARE_N, 0);
    cr_expect_gt(r.t.by_member[0], 0);
    cr_expect_gt(r.t.by_member[1], 0);
    cr_log_info("share split %d/%d", r.t.by_member[0], r.t.by_member[1]);
    /* Labelled with the plain filter in both members. */
    uint64_t m0 = counter(r.m[0], "webshop_bus_received_total", TOPIC_LABEL);
    uint64_t m1 = counter(r.m[1], "webshop_bus_received_total", TOPIC_LABEL);
    cr_expect_eq(m0 + m1, SHARE_N);
    share_rig_close(&r);
}

typedef struct epoch_change {
    ws_bus *bus;
    uint64_t old;
} epoch_change;

static bool epoch_renewed(void *ctx)
{
    epoch_change *e = ctx;
    uint64_t now = ws_bus_ready_epoch(e->bus);
    return now != 0 && now != e->old;
}

Test(bus, share_group_members_subscribe_again_after_a_broker_restart)
{
    share_rig r;
    share_rig_open(&r);
    share_publish(&r, 0, SHARE_N / 2);
    share_expect_once(&r, 0, SHARE_N / 2, 0);
    int before[2] = {r.t.by_member[0], r.t.by_member[1]};
    ws_bus *all[4] = {r.member[0], r.member[1], r.plain, r.pub};
    epoch_change e[4];
    for (int i = 0; i < 4; i++) {
        e[i] = (epoch_change){all[i], ws_bus_ready_epoch(all[i])};
        cr_assert_neq(e[i].old, 0);
    }
    /* SIGTERM: the broker saves the sessions (persistence is on) but, in
     * 2.0.11, not the shared subscriptions in them. */
    cr_assert_eq(harness_broker_restart(&broker), 0);
    for (int i = 0; i < 4; i++) {
        cr_assert(harness_wait_until(epoch_renewed, &e[i], WAIT_MS), "bus %d not ready",
                  i);
    }
    share_publish(&r, SHARE_N / 2, 2 * SHARE_N);
    share_expect_once(&r, 0, 2 * SHARE_N, SHARE_N / 2);
    cr_expect_gt(r.t.by_member[0] - before[0], 0,
                 "member 0 got nothing after the restart");
    cr_expect_gt(r.t.by_member[1] - before[1], 0,
                 "member 1 got nothing after the restart");
    cr_log_info("after restart split %d/%d", r.t.by_member[0] - before[0],
                r.t.by_member[1] - before[1]);
    cr_expect_eq(counter(r.m[0], "webshop_bus_reconnects_total", NULL), 1);
    share_rig_close(&r);
}

Test(bus, malformed_share_groups_are_refused)
{
    ws_bus *bus = bus_new("test-share-bad", WS_BUS_PROTOBUF, broker.port, NULL);
    const ProtobufCMessageDescriptor *d = &webshop__v1__order_sent__descriptor;
    cr_expect_eq(ws_bus_subscribe_shared(bus, "", TOPIC, d, share_handler, NULL),
                 WS_EINVAL);
    cr_expect_eq(ws_bus_subscribe_shared(bus, "a/b", TOPIC, d, share_handler, NULL),
                 WS_EINVAL);
    cr_expect_eq(ws_bus_subscribe_shared(bus, "a+", TOPIC, d, share_handler, NULL),
                 WS_EINVAL);
    cr_expect_eq(ws_bus_subscribe(bus, "$share/g", d, share_handler, NULL), WS_EINVAL);
    cr_expect_eq(ws_bus_subscribe(bus, "$share//" TOPIC, d, share_handler, NULL),
                 WS_EINVAL);
    cr_expect_eq(
        ws_bus_subscribe_shared(bus, "g", "$share/h/" TOPIC, d, share_handler, NULL),
        WS_EINVAL);
    cr_expect_eq(ws_bus_subscribe(bus, "$share/g/" TOPIC, d, share_handler, NULL), WS_OK);
    ws_bus_close(bus);
    ws_bus_opts o = {.port = broker.port, .client_id = "x", .share_group = "a#"};
    ws_bus *b2 = NULL;
    cr_expect_eq(ws_bus_open(&o, &b2), WS_EINVAL);
    cr_expect_null(b2);
}

/* ---- many publishers at once -------------------------------------------- */

#define CONC_THREADS 16
#define CONC_EACH    200

typedef struct conc {
    ws_bus *bus;
    int ok; /* publishes that returned WS_OK (atomic) */
    int failed;
} conc;

static void *conc_thread(void *arg)
{
    conc *c = arg;
    order o;
    order_make(&o, "concurrent");
    for (int i = 0; i < CONC_EACH; i++) {
        ws_err err = ws_bus_publish(c->bus, TOPIC, &o.msg.base, WAIT_MS);
        __atomic_add_fetch(err == WS_OK ? &c->ok : &c->failed, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

static double conc_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Every waiting publisher is woken by its own PUBACK: 16 threads publishing
 * and waiting at once all complete, each publish exactly once, and the
 * acknowledged count matches. Prints the rate (sync, and async in a loop)
 * for comparing implementations. */
Test(bus, many_concurrent_sync_publishers_all_complete)
{
    ws_metrics *m = ws_metrics_new();
    ws_bus *pub = pub_ready(m);
    conc c = {.bus = pub};
    pthread_t t[CONC_THREADS];
    double t0 = conc_now_s();
    for (int i = 0; i < CONC_THREADS; i++) {
        cr_assert_eq(pthread_create(&t[i], NULL, conc_thread, &c), 0);
    }
    for (int i = 0; i < CONC_THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    double sync_s = conc_now_s() - t0;
    cr_expect_eq(c.ok, CONC_THREADS * CONC_EACH);
    cr_expect_eq(c.failed, 0);
    cr_expect_eq(counter(m, "webshop_bus_acked_total", NULL),
                 (uint64_t)CONC_THREADS * CONC_EACH);

    int acked = 0;
    order o;
    order_make(&o, "async-rate");
    int n_async = CONC_THREADS * CONC_EACH;
    t0 = conc_now_s();
    for (int i = 0; i < n_async; i++) {
        ws_err err;
        while ((err = ws_bus_publish_async(pub, TOPIC, &o.msg.base, async_done,
                                           &acked)) == WS_EBUSY) {
            sched_yield();
        }
        cr_assert_eq(err, WS_OK);
    }
    cr_assert(n_wait(&acked, n_async, 3 * WAIT_MS));
    double async_s = conc_now_s() - t0;
    fprintf(stderr, "bus throughput: sync %d threads x %d: %.0f/s; async %d: %.0f/s\n",
            CONC_THREADS, CONC_EACH, CONC_THREADS * CONC_EACH / sync_s, n_async,
            n_async / async_s);
    ws_bus_close(pub);
    ws_metrics_free(m);
}

/* ---- trace context on the bus ------------------------------------------- */

#define TR_MAX 32

/* What each handler call saw: the order id and the thread's current trace;
 * and whether the loop hook, between handlers, ever saw a trace. */
typedef struct traced {
    pthread_mutex_t mu;
    int n;
    char id[TR_MAX][64];
    bool had[TR_MAX];
    ws_trace seen[TR_MAX];
    bool grouped[TR_MAX]; /* inside a group */
    bool in_group;
    int ends, fail_ends;
    int hook_turns, hook_traced;
    ws_bus *sub, *pub; /* traced_open's */
} traced;

static ws_err traced_handler(void *ctx, const ProtobufCMessage *msg,
                             const ws_bus_msg_info *info)
{
    (void)info;
    traced *t = ctx;
    const ws_trace *cur = ws_trace_current();
    pthread_mutex_lock(&t->mu);
    if (t->n < TR_MAX) {
        snprintf(t->id[t->n], sizeof(t->id[0]), "%s",
                 ((const Webshop__V1__OrderSent *)msg)->order_id);
        t->had[t->n] = cur != NULL;
        if (cur != NULL) {
            t->seen[t->n] = *cur;
        }
        t->grouped[t->n] = t->in_group;
    }
    t->n++;
    pthread_mutex_unlock(&t->mu);
    return WS_OK;
}

static void traced_hook(void *ctx)
{
    traced *t = ctx;
    bool cur = ws_trace_current() != NULL;
    pthread_mutex_lock(&t->mu);
    t->hook_turns++;
    t->hook_traced += cur;
    pthread_mutex_unlock(&t->mu);
}

static ws_err traced_begin(void *ctx)
{
    traced *t = ctx;
    pthread_mutex_lock(&t->mu);
    t->in_group = true;
    pthread_mutex_unlock(&t->mu);
    return WS_OK;
}

static ws_err traced_end(void *ctx)
{
    traced *t = ctx;
    pthread_mutex_lock(&t->mu);
    t->in_group = false;
    bool fail = ++t->ends <= t->fail_ends;
    pthread_mutex_unlock(&t->mu);
    return fail ? WS_ESTORE : WS_OK;
}

typedef struct traced_want {
    traced *t;
    int n;
} traced_want;

static bool traced_reached(void *ctx)
{
    traced_want *w = ctx;
    pthread_mutex_lock(&w->t->mu);
    bool done = w->t->n >= w->n && !w->t->in_group;
    pthread_mutex_unlock(&w->t->mu);
    return done;
}

/* Waits until at least n handler calls ran and no group is open. */
static bool traced_wait(traced *t, int n)
{
    traced_want w = {t, n};
    return harness_wait_until(traced_reached, &w, WAIT_MS);
}

/* t->sub, a subscriber with traced_handler (and group hooks when batch),
 * and t->pub, a publisher, both ready. */
static void traced_open(traced *t, bool batch)
{
    pthread_mutex_init(&t->mu, NULL);
    t->sub = bus_new("test-sub", WS_BUS_PROTOBUF, broker.port, NULL);
    t->pub = bus_new("test-pub", WS_BUS_PROTOBUF, broker.port, NULL);
    ws_bus_batch b = {.begin = traced_begin,
                      .end = traced_end,
                      .ctx = t,
                      .max_msgs = 64,
                      .max_us = 200000};
    if (batch) {
        cr_assert_eq(ws_bus_set_batch(t->sub, &b), WS_OK);
    }
    cr_assert_eq(ws_bus_set_loop_hook(t->sub, traced_hook, t), WS_OK);
    cr_assert_eq(ws_bus_subscribe(t->sub, TOPIC, &webshop__v1__order_sent__descriptor,
                                  traced_handler, t),
                 WS_OK);
    bus_start_ready((ws_bus *[]){t->sub, t->pub}, 2);
}

static void traced_close(traced *t)
{
    ws_bus_close(t->pub);
    ws_bus_close(t->sub);
    cr_expect_gt(t->hook_turns, 0);
    cr_expect_eq(t->hook_traced, 0, "the network thread kept a trace after a handler");
    pthread_mutex_destroy(&t->mu);
}

static void traced_publish(ws_bus *pub, const char *id, const ws_trace *trace)
{
    order o;
    order_make(&o, id);
    ws_trace_set_current(trace);
    cr_assert_eq(ws_bus_publish(pub, TOPIC, &o.msg.base, WAIT_MS), WS_OK);
    ws_trace_set_current(NULL);
}

Test(bus, a_publish_under_a_trace_is_handled_in_that_trace_as_a_child_span)
{
    traced t = {0};
    traced_open(&t, false);
    ws_trace mine;
    ws_trace_new(&mine);
    traced_publish(t.pub, "traced-sync", &mine);
    cr_expect_null(ws_trace_current(), "publish changed the caller's trace");
    /* The async path (the outbox relay's) carries it too. */
    int acked = 0;
    order o;
    order_make(&o, "traced-async");
    ws_trace_set_current(&mine);
    cr_assert_eq(ws_bus_publish_async(t.pub, TOPIC, &o.msg.base, async_done, &acked),
                 WS_OK);
    ws_trace_set_current(NULL);
    cr_assert(traced_wait(&t, 2));
    for (int i = 0; i < 2; i++) {
        cr_assert(t.had[i], "handler %d ran without a trace", i);
        cr_expect_str_eq(t.seen[i].trace_id, mine.trace_id);
        cr_expect_str_neq(t.seen[i].span_id, mine.span_id, "not a child span");
        cr_expect_eq(t.seen[i].flags, mine.flags);
    }
    cr_expect_str_neq(t.seen[0].span_id, t.seen[1].span_id, "one span per publish");
    traced_close(&t);
}

Test(bus, a_message_without_a_trace_is_handled_under_a_new_one)
{
    traced t = {0};
    traced_open(&t, false);
    traced_publish(t.pub, "untraced-1", NULL);
    traced_publish(t.pub, "untraced-2", NULL);
    cr_assert(traced_wait(&t, 2));
    cr_expect(t.had[0] && t.had[1], "a handler ran without a trace");
    cr_expect_str_neq(t.seen[0].trace_id, t.seen[1].trace_id, "two messages, one trace");
    traced_close(&t);
}

Test(bus, a_malformed_traceparent_gets_a_new_trace_and_the_message_is_delivered)
{
    traced t = {0};
    traced_open(&t, false);
    /* A current trace whose id is not lower-case hex: the publisher sends
     * it as it is, and the traceparent on the wire does not parse. */
    ws_trace bad;
    ws_trace_new(&bad);
    memset(bad.trace_id, 'Z', 32);
    traced_publish(t.pub, "malformed", &bad);
    cr_assert(traced_wait(&t, 1));
    cr_expect_str_eq(t.id[0], "malformed");
    cr_assert(t.had[0], "the handler ran without a trace");
    cr_expect_str_neq(t.seen[0].trace_id, bad.trace_id);
    ws_trace parsed;
    char text[WS_TRACEPARENT_SIZE];
    ws_trace_format(&t.seen[0], text);
    cr_expect(ws_trace_parse(text, WS_TRACEPARENT_LEN, &parsed), "not a valid new trace");
    traced_close(&t);
}

/* Index of the publish whose order id is id, or -1. */
static int traced_which(const char ids[][16], int n, const char *id)
{
    for (int i = 0; i < n; i++) {
        if (strcmp(ids[i], id) == 0) {
            return i;
        }
    }
    return -1;
}

Test(bus, grouped_messages_each_run_in_their_own_trace_also_when_replayed)
{
    enum { N = 6 };
    traced t = {.fail_ends = 1}; /* the first group's end fails: a replay */
    traced_open(&t, true);
    char ids[N][16];
    ws_trace traces[N];
    int acked = 0;
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], sizeof(ids[i]), "grouped-%d", i);
        ws_trace_new(&traces[i]);
        order o;
        order_make(&o, ids[i]);
        ws_trace_set_current(&traces[i]);
        cr_assert_eq(ws_bus_publish_async(t.pub, TOPIC, &o.msg.base, async_done, &acked),
                     WS_OK);
    }
    ws_trace_set_current(NULL);
    cr_assert(traced_wait(&t, N + 1)); /* at least one replayed call */
    cr_assert(n_wait(&acked, N, WAIT_MS));
    pthread_mutex_lock(&t.mu);
    int n = t.n < TR_MAX ? t.n : TR_MAX;
    int in_group = 0, replayed = 0;
    for (int i = 0; i < n; i++) {
        int k = traced_which((const char(*)[16])ids, N, t.id[i]);
        cr_assert_geq(k, 0, "unknown message %s", t.id[i]);
        cr_assert(t.had[i], "call %d without a trace", i);
        cr_expect_str_eq(t.seen[i].trace_id, traces[k].trace_id, "call %d (%s)", i,
                         t.id[i]);
        in_group += t.grouped[i];
        /* A replay runs under the very span of the first call. */
        for (int j = 0; j < i; j++) {
            if (strcmp(t.id[j], t.id[i]) == 0) {
                replayed++;
                cr_expect_str_eq(t.seen[j].span_id, t.seen[i].span_id);
            }
        }
    }
    pthread_mutex_unlock(&t.mu);
    cr_expect_gt(in_group, 0, "nothing ran in a group");
    cr_expect_gt(replayed, 0, "nothing was replayed");
    traced_close(&t);
}

/* ---- the harness itself -------------------------------------------------- */

/* The broker config the harness writes turns Nagle off (issue 12). */
Test(bus, harness_broker_config_sets_tcp_nodelay)
{
    FILE *f = fopen(broker.conf, "r");
    cr_assert_not_null(f);
    char line[512];
    bool nodelay = false;
    while (fgets(line, sizeof(line), f) != NULL) {
        nodelay = nodelay || strcmp(line, "set_tcp_nodelay true\n") == 0;
    }
    fclose(f);
    cr_expect(nodelay, "%s lacks set_tcp_nodelay true", broker.conf);
}

#define RESERVED_N 300

/* Reserved ports: never the same twice in a run, never in the kernel's
 * ephemeral range, each locked against other processes while held, each
 * free to bind; a broker started afterwards gets yet another one. */
Test(harness, reserved_ports_are_unique_locked_and_outside_the_ephemeral_range,
     .timeout = 60)
{
    static unsigned char seen[65536];
    int lo, hi;
    harness_ephemeral_range(&lo, &hi);
    cr_assert(lo > 0 && lo <= hi);
    const char *dir = getenv("WEBSHOP_PORT_DIR");
    if (dir == NULL || dir[0] == '\0') {
        dir = "/tmp/webshop-ports";
    }
    for (int i = 0; i < RESERVED_N; i++) {
        int p = harness_port_reserve();
        cr_assert_gt(p, 1023, "reservation %d", i);
        cr_assert_leq(p, 65535);
        cr_assert_eq(seen[p], 0, "port %d handed out twice", p);
        seen[p] = 1;
        cr_expect(p < lo || p > hi, "port %d is in the ephemeral range %d-%d", p, lo, hi);
        /* Another open file description of the lock cannot take it. */
        char path[4200];
        snprintf(path, sizeof(path), "%s/%d.lock", dir, p);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
        cr_expect_neq(flock(fd, LOCK_EX | LOCK_NB), 0, "%s is not locked", path);
        close(fd);
        cr_expect_not(harness_port_open(p), "something listens on reserved port %d", p);
    }
    /* A broker started now gets a port none of those. */
    char *dir2 = harness_tmpdir_new("harness-ports");
    cr_assert_not_null(dir2);
    harness_broker b;
    cr_assert_eq(harness_broker_start(&b, dir2, NULL), 0);
    cr_expect_eq(seen[b.port], 0, "broker got port %d again", b.port);
    cr_expect(b.port < lo || b.port > hi);
    cr_expect_eq(harness_broker_stop(&b, SIGTERM), 0);
    harness_tmpdir_free(dir2);
}
