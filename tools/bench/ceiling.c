/*
 * The bare-component ceilings; see ceiling.h. Everything runs inside the
 * bench process, so a ceiling pays for its own client as the shop's load
 * does: the two figures stay comparable on a machine with 2 cores.
 */
#include "ceiling.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <civetweb.h>
#include <mosquitto.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include "load.h"

/* ---- civetweb ------------------------------------------------------------ */

#define CIVETWEB_BODY 400

struct bench_civetweb {
    struct mg_context *ctx;
    char response[256 + CIVETWEB_BODY]; /* headers and body, written at once */
    size_t response_len;
};

static int civetweb_bench_handler(struct mg_connection *conn, void *arg)
{
    bench_civetweb *s = arg;
    mg_write(conn, s->response, s->response_len);
    return 200;
}

bench_civetweb *bench_civetweb_start(int threads, int *port)
{
    bench_civetweb *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    char body[CIVETWEB_BODY + 1];
    /* A JSON array of products, padded to exactly 400 bytes. */
    int n = snprintf(body, sizeof(body),
                     "[{\"id\":1,\"name\":\"Apple\",\"price\":100,\"balance\":200},"
                     "{\"id\":2,\"name\":\"Banana\",\"price\":200,\"balance\":200},"
                     "{\"id\":3,\"name\":\"Cherry\",\"price\":300,\"balance\":200}");
    while (n < CIVETWEB_BODY - 1) {
        body[n++] = ' ';
    }
    body[n++] = ']';
    body[n] = '\0';
    s->response_len = (size_t)snprintf(s->response, sizeof(s->response),
                                       "HTTP/1.1 200 OK\r\n"
                                       "Content-Length: %d\r\n"
                                       "Content-Type: application/json\r\n"
                                       "Cache-Control: no-store\r\n"
                                       "\r\n%s",
                                       CIVETWEB_BODY, body);
    /* Port 0: the kernel picks a free port, read back from civetweb (no
     * port is chosen first and raced for). Nagle off, as lib/http sets it. */
    char nthreads[16];
    snprintf(nthreads, sizeof(nthreads), "%d", threads);
    const char *options[] = {"listening_ports",
                             "127.0.0.1:0",
                             "num_threads",
                             nthreads,
                             "enable_keep_alive",
                             "yes",
                             "keep_alive_timeout_ms",
                             "5000",
                             "request_timeout_ms",
                             "10000",
                             "tcp_nodelay",
                             "1",
                             NULL};
    struct mg_callbacks cb;
    memset(&cb, 0, sizeof(cb));
    s->ctx = mg_start(&cb, s, options);
    struct mg_server_port sp;
    if (s->ctx != NULL && mg_get_server_ports(s->ctx, 1, &sp) == 1) {
        *port = sp.port;
    } else if (s->ctx != NULL) {
        mg_stop(s->ctx);
        s->ctx = NULL;
    }
    if (s->ctx == NULL) {
        free(s);
        return NULL;
    }
    mg_set_request_handler(s->ctx, "/bench", civetweb_bench_handler, s);
    return s;
}

void bench_civetweb_stop(bench_civetweb *s)
{
    if (s == NULL) {
        return;
    }
    mg_stop(s->ctx);
    free(s);
}

/* ---- nng req/rep ---------------------------------------------------------- */

typedef struct nng_run nng_run;

typedef struct nng_side {
    nng_run *run;
    nng_ctx ctx;
    nng_aio *aio;
    bool sending;   /* the pending operation is a send */
    double started; /* when the current round trip began (client) */
    uint64_t ops;   /* round trips completed (client) */
    uint64_t errors;
    bench_hist hist; /* touched only by this context's callback */
} nng_side;

struct nng_run {
    atomic_bool stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active; /* client contexts still looping; under mu */
    int size;
};

static void nng_run_finish(nng_run *r)
{
    pthread_mutex_lock(&r->mu);
    r->active--;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Server context: receive, send the same message back, repeat. */
static void nng_rep_cb(void *arg)
{
    nng_side *s = arg;
    int rv = nng_aio_result(s->aio);
    if (s->sending) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(s->aio));
            if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
                return;
            }
        }
        s->sending = false;
        nng_ctx_recv(s->ctx, s->aio);
        return;
    }
    if (rv != 0) {
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
            return;
        }
        nng_ctx_recv(s->ctx, s->aio);
        return;
    }
    s->sending = true;
    nng_aio_set_msg(s->aio, nng_aio_get_msg(s->aio));
    nng_ctx_send(s->ctx, s->aio);
}

/* Client context: send, await the answer, record, repeat until stopped. */
static void nng_req_cb(void *arg)
{
    nng_side *s = arg;
    nng_run *r = s->run;
    int rv = nng_aio_result(s->aio);
    if (s->sending) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(s->aio));
            s->errors++;
            nng_run_finish(r);
            return;
        }
        s->sending = false;
        nng_ctx_recv(s->ctx, s->aio);
        return;
    }
    if (rv != 0) {
        s->errors++;
        nng_run_finish(r);
        return;
    }
    nng_msg *msg = nng_aio_get_msg(s->aio);
    if (atomic_load(&r->stop)) {
        nng_msg_free(msg);
        nng_run_finish(r);
        return;
    }
    double now = bench_now();
    s->ops++;
    bench_hist_record(&s->hist, (uint64_t)((now - s->started) * 1e9));
    s->started = now;
    s->sending = true;
    nng_aio_set_msg(s->aio, msg);
    nng_ctx_send(s->ctx, s->aio);
}

int bench_nng_run(int contexts, int size, double seconds, bench_ceiling *out)
{
    memset(out, 0, sizeof(*out));
    bench_hist_init(&out->hist);
    nng_run run = {.size = size};
    atomic_init(&run.stop, false);
    pthread_mutex_init(&run.mu, NULL);
    pthread_cond_init(&run.cv, NULL);
    nng_socket rep = NNG_SOCKET_INITIALIZER;
    nng_socket req = NNG_SOCKET_INITIALIZER;
    nng_side *srv = calloc((size_t)contexts, sizeof(*srv));
    nng_side *cli = calloc((size_t)contexts, sizeof(*cli));
    int rc = -1;
    int rv;
    char url[64];
    if (srv == NULL || cli == NULL) {
        goto done;
    }
    if ((rv = nng_rep0_open(&rep)) != 0 || (rv = nng_req0_open(&req)) != 0) {
        fprintf(stderr, "bench: nng: %s\n", nng_strerror(rv));
        goto done;
    }
    /* Port 0: the listener reports the port the kernel picked. */
    nng_listener lst;
    int bound = 0;
    snprintf(url, sizeof(url), "tcp://127.0.0.1:0");
    if ((rv = nng_listen(rep, url, &lst, 0)) == 0 &&
        (rv = nng_listener_get_int(lst, NNG_OPT_TCP_BOUND_PORT, &bound)) == 0) {
        snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", bound);
    }
    if (rv != 0 || (rv = nng_dial(req, url, NULL, 0)) != 0) {
        fprintf(stderr, "bench: nng %s: %s\n", url, nng_strerror(rv));
        goto done;
    }
    for (int i = 0; i < contexts; i++) {
        srv[i].run = &run;
        cli[i].run = &run;
        bench_hist_init(&cli[i].hist);
        if ((rv = nng_ctx_open(&srv[i].ctx, rep)) != 0 ||
            (rv = nng_aio_alloc(&srv[i].aio, nng_rep_cb, &srv[i])) != 0 ||
            (rv = nng_ctx_open(&cli[i].ctx, req)) != 0 ||
            (rv = nng_aio_alloc(&cli[i].aio, nng_req_cb, &cli[i])) != 0) {
            fprintf(stderr, "bench: nng contexts: %s\n", nng_strerror(rv));
            goto done;
        }
        nng_ctx_recv(srv[i].ctx, srv[i].aio);
    }
    double t0 = bench_now();
    pthread_mutex_lock(&run.mu);
    run.active = contexts;
    pthread_mutex_unlock(&run.mu);
    for (int i = 0; i < contexts; i++) {
        nng_msg *m = NULL;
        if (nng_msg_alloc(&m, (size_t)size) != 0) {
            nng_run_finish(&run);
            continue;
        }
        memset(nng_msg_body(m), 'x', (size_t)size);
        cli[i].sending = true;
        cli[i].started = bench_now();
        nng_aio_set_msg(cli[i].aio, m);
        nng_ctx_send(cli[i].ctx, cli[i].aio);
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double end = t0 + seconds;
    while (bench_now() < end) {
        double d = end - bench_now();
        struct timespec sl = {.tv_sec = (time_t)d,
                              .tv_nsec = (long)((d - (time_t)d) * 1e9)};
        nanosleep(&sl, NULL);
    }
    atomic_store(&run.stop, true);
    double t1 = bench_now();
    /* Every context ends at its next answer; bounded by a 5 s wait. */
    pthread_mutex_lock(&run.mu);
    while (run.active > 0 && bench_now() < t1 + 5.0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 50 * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&run.cv, &run.mu, &until);
    }
    pthread_mutex_unlock(&run.mu);
    for (int i = 0; i < contexts; i++) {
        out->ops += cli[i].ops;
        out->errors += cli[i].errors;
        bench_hist_merge(&out->hist, &cli[i].hist);
    }
    out->elapsed = t1 - t0;
    out->per_sec = out->elapsed > 0 ? (double)out->ops / out->elapsed : 0;
    rc = 0;
done:
    if (cli != NULL) {
        for (int i = 0; i < contexts; i++) {
            if (cli[i].aio != NULL) {
                nng_aio_stop(cli[i].aio);
            }
        }
    }
    if (srv != NULL) {
        for (int i = 0; i < contexts; i++) {
            if (srv[i].aio != NULL) {
                nng_aio_stop(srv[i].aio);
            }
        }
    }
    nng_close(req);
    nng_close(rep);
    for (int i = 0; cli != NULL && i < contexts; i++) {
        nng_aio_free(cli[i].aio);
    }
    for (int i = 0; srv != NULL && i < contexts; i++) {
        nng_aio_free(srv[i].aio);
    }
    free(cli);
    free(srv);
    pthread_cond_destroy(&run.cv);
    pthread_mutex_destroy(&run.mu);
    return rc;
}

/* ---- Mosquitto QoS 1 ------------------------------------------------------ */

typedef struct mqtt_run {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char topic[96];
    bool subscribed;      /* under mu */
    bool connected_pub;   /* under mu */
    uint64_t received;    /* under mu */
    double last_received; /* under mu */
    bench_hist hist;      /* under mu */
} mqtt_run;

static void mqtt_cond_wait(mqtt_run *r, double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long ns = until.tv_nsec + (long)(seconds * 1e9);
    until.tv_sec += ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&r->cv, &r->mu, &until);
}

static void mqtt_sub_on_connect(struct mosquitto *m, void *arg, int rc)
{
    mqtt_run *r = arg;
    if (rc == 0) {
        mosquitto_subscribe(m, NULL, r->topic, 1);
    }
}

static void mqtt_sub_on_subscribe(struct mosquitto *m, void *arg, int mid, int n,
                                  const int *granted)
{
    (void)m;
    (void)mid;
    mqtt_run *r = arg;
    pthread_mutex_lock(&r->mu);
    r->subscribed = n > 0 && granted[0] == 1;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void mqtt_sub_on_message(struct mosquitto *m, void *arg,
                                const struct mosquitto_message *msg)
{
    (void)m;
    mqtt_run *r = arg;
    double now = bench_now();
    double sent = 0;
    if (msg->payloadlen >= (int)sizeof(sent)) {
        memcpy(&sent, msg->payload, sizeof(sent));
    }
    pthread_mutex_lock(&r->mu);
    r->received++;
    r->last_received = now;
    if (sent > 0 && now >= sent) {
        bench_hist_record(&r->hist, (uint64_t)((now - sent) * 1e9));
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void mqtt_pub_on_connect(struct mosquitto *m, void *arg, int rc)
{
    (void)m;
    mqtt_run *r = arg;
    pthread_mutex_lock(&r->mu);
    r->connected_pub = rc == 0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

int bench_mqtt_run(const char *host, int port, const char *user, const char *password,
                   int window, int size, double seconds, bench_ceiling *out)
{
    memset(out, 0, sizeof(*out));
    bench_hist_init(&out->hist);
    mqtt_run r;
    memset(&r, 0, sizeof(r));
    bench_hist_init(&r.hist);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    snprintf(r.topic, sizeof(r.topic), "bench/%d/qos1", (int)getpid());
    int rc = -1;
    char *payload =
        calloc(1, (size_t)size < sizeof(double) ? sizeof(double) : (size_t)size);
    struct mosquitto *pub = mosquitto_new(NULL, true, &r);
    struct mosquitto *sub = mosquitto_new(NULL, true, &r);
    bool pub_loop = false;
    bool sub_loop = false;
    if (payload == NULL || pub == NULL || sub == NULL) {
        goto done;
    }
    if (user != NULL && user[0] != '\0') {
        mosquitto_username_pw_set(pub, user, password);
        mosquitto_username_pw_set(sub, user, password);
    }
    mosquitto_max_inflight_messages_set(pub, (unsigned)window);
    mosquitto_int_option(pub, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_int_option(sub, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_callback_set(sub, mqtt_sub_on_connect);
    mosquitto_subscribe_callback_set(sub, mqtt_sub_on_subscribe);
    mosquitto_message_callback_set(sub, mqtt_sub_on_message);
    mosquitto_connect_callback_set(pub, mqtt_pub_on_connect);
    int mrc;
    if ((mrc = mosquitto_connect(sub, host, port, 60)) != MOSQ_ERR_SUCCESS ||
        (mrc = mosquitto_connect(pub, host, port, 60)) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench: mqtt %s:%d: %s\n", host, port, mosquitto_strerror(mrc));
        goto done;
    }
    sub_loop = mosquitto_loop_start(sub) == MOSQ_ERR_SUCCESS;
    pub_loop = mosquitto_loop_start(pub) == MOSQ_ERR_SUCCESS;
    if (!sub_loop || !pub_loop) {
        goto done;
    }
    double ready_by = bench_now() + 5.0;
    pthread_mutex_lock(&r.mu);
    while ((!r.subscribed || !r.connected_pub) && bench_now() < ready_by) {
        mqtt_cond_wait(&r, 0.05);
    }
    bool ready = r.subscribed && r.connected_pub;
    pthread_mutex_unlock(&r.mu);
    if (!ready) {
        fprintf(stderr, "bench: mqtt %s:%d: no connection or subscription in 5 s\n", host,
                port);
        goto done;
    }
    uint64_t sent = 0;
    double t0 = bench_now();
    double end = t0 + seconds;
    for (;;) {
        pthread_mutex_lock(&r.mu);
        while (sent - r.received >= (uint64_t)window && bench_now() < end) {
            mqtt_cond_wait(&r, 0.05);
        }
        pthread_mutex_unlock(&r.mu);
        double now = bench_now();
        if (now >= end) {
            break;
        }
        memcpy(payload, &now, sizeof(now));
        if (mosquitto_publish(pub, NULL, r.topic, size, payload, 1, false) !=
            MOSQ_ERR_SUCCESS) {
            out->errors++;
            continue;
        }
        sent++;
    }
    /* Let what is in flight arrive (bounded), so the rate counts deliveries. */
    double drain_by = bench_now() + 3.0;
    pthread_mutex_lock(&r.mu);
    while (r.received < sent && bench_now() < drain_by) {
        mqtt_cond_wait(&r, 0.05);
    }
    out->ops = r.received;
    out->elapsed = (r.last_received > t0 ? r.last_received : bench_now()) - t0;
    bench_hist_merge(&out->hist, &r.hist);
    pthread_mutex_unlock(&r.mu);
    if (sent > out->ops) {
        out->errors += sent - out->ops;
    }
    out->per_sec = out->elapsed > 0 ? (double)out->ops / out->elapsed : 0;
    rc = 0;
done:
    if (pub != NULL) {
        mosquitto_disconnect(pub);
        if (pub_loop) {
            mosquitto_loop_stop(pub, false);
        }
        mosquitto_destroy(pub);
    }
    if (sub != NULL) {
        mosquitto_disconnect(sub);
        if (sub_loop) {
            mosquitto_loop_stop(sub, false);
        }
        mosquitto_destroy(sub);
    }
    free(payload);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    return rc;
}
