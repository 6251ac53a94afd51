/*
 * End-to-end order timing; see orders.h. The subscriber decodes both bus
 * formats: protobuf by default, the proto3 JSON form when the payload's
 * first non-blank byte is '{'.
 */
#include "orders.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>

#include "load.h"
#include "tls.h"
#include "webshop/v1/events.facts.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/order.facts.h"

#define ORDERS_ID_LEN 48

typedef struct orders_rec {
    char id[ORDERS_ID_LEN];
    double t;
    int status; /* events only */
} orders_rec;

typedef struct orders_vec {
    orders_rec *v;
    size_t n;
    size_t cap;
} orders_vec;

struct bench_orders {
    struct mosquitto *mosq;
    bool loop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool subscribed;      /* under mu */
    orders_vec posts;     /* under mu */
    orders_vec finals;    /* under mu */
    double last_event;    /* under mu */
    uint64_t undecodable; /* under mu */
};

static bool orders_vec_push(orders_vec *v, const char *id, size_t len, double t,
                            int status)
{
    if (v->n == v->cap) {
        size_t ncap = v->cap ? v->cap * 2 : 4096;
        orders_rec *nv = realloc(v->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            return false;
        }
        v->v = nv;
        v->cap = ncap;
    }
    orders_rec *r = &v->v[v->n++];
    if (len >= ORDERS_ID_LEN) {
        len = ORDERS_ID_LEN - 1;
    }
    memcpy(r->id, id, len);
    r->id[len] = '\0';
    r->t = t;
    r->status = status;
    return true;
}

static void orders_cond_wait(bench_orders *o, double seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    long ns = until.tv_nsec + (long)(seconds * 1e9);
    until.tv_sec += ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    pthread_cond_timedwait(&o->cv, &o->mu, &until);
}

/* The string value of "key": "..." in a JSON text, or NULL. */
static const char *orders_json_string(const char *s, size_t len, const char *key,
                                      size_t *vlen)
{
    size_t klen = strlen(key);
    const char *end = s + len;
    for (const char *p = s; p + klen + 2 < end; p++) {
        if (*p == '"' && strncmp(p + 1, key, klen) == 0 && p[klen + 1] == '"') {
            const char *q = p + klen + 2;
            while (q < end && (*q == ' ' || *q == ':' || *q == '\t')) {
                q++;
            }
            if (q < end && *q == '"') {
                const char *v = q + 1;
                const char *ve = memchr(v, '"', (size_t)(end - v));
                if (ve != NULL) {
                    *vlen = (size_t)(ve - v);
                    return v;
                }
            }
            return NULL;
        }
    }
    return NULL;
}

static int orders_status_from_name(const char *v, size_t n)
{
    for (int i = 0; webshop_v1_order_status_name(i) != NULL; i++) {
        const char *name = webshop_v1_order_status_name(i);
        if (strlen(name) == n && strncmp(name, v, n) == 0) {
            return i;
        }
    }
    return -1;
}

static void orders_on_message(struct mosquitto *m, void *arg,
                              const struct mosquitto_message *msg)
{
    (void)m;
    bench_orders *o = arg;
    double now = bench_now();
    const char *p = msg->payload;
    size_t len = (size_t)msg->payloadlen;
    size_t i = 0;
    while (i < len && (p[i] == ' ' || p[i] == '\n' || p[i] == '\t' || p[i] == '\r')) {
        i++;
    }
    char id[ORDERS_ID_LEN] = "";
    size_t id_len = 0;
    int status = -1;
    if (i < len && p[i] == '{') {
        size_t vl = 0;
        const char *v = orders_json_string(p, len, "orderId", &vl);
        if (v == NULL) {
            v = orders_json_string(p, len, "order_id", &vl);
        }
        if (v != NULL && vl < sizeof(id)) {
            memcpy(id, v, vl);
            id_len = vl;
        }
        v = orders_json_string(p, len, "status", &vl);
        if (v != NULL) {
            status = orders_status_from_name(v, vl);
        }
    } else {
        Webshop__V1__OrderStatusChanged *ev =
            webshop__v1__order_status_changed__unpack(NULL, len, (const uint8_t *)p);
        if (ev != NULL) {
            id_len = strlen(ev->order_id);
            if (id_len < sizeof(id)) {
                memcpy(id, ev->order_id, id_len);
            } else {
                id_len = 0;
            }
            status = (int)ev->status;
            webshop__v1__order_status_changed__free_unpacked(ev, NULL);
        }
    }
    pthread_mutex_lock(&o->mu);
    if (id_len == 0 || status < 0) {
        o->undecodable++;
    } else if (status >= WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL) {
        orders_vec_push(&o->finals, id, id_len, now, status);
        o->last_event = now;
        pthread_cond_broadcast(&o->cv);
    }
    pthread_mutex_unlock(&o->mu);
}

static void orders_on_connect(struct mosquitto *m, void *arg, int rc)
{
    (void)arg;
    if (rc == 0) {
        mosquitto_subscribe(m, NULL, WEBSHOP_V1_ORDER_STATUS_CHANGED_TOPIC, 1);
    }
}

static void orders_on_subscribe(struct mosquitto *m, void *arg, int mid, int n,
                                const int *granted)
{
    (void)m;
    (void)mid;
    bench_orders *o = arg;
    pthread_mutex_lock(&o->mu);
    o->subscribed = n > 0 && granted[0] <= 2;
    pthread_cond_broadcast(&o->cv);
    pthread_mutex_unlock(&o->mu);
}

bench_orders *bench_orders_open(const char *host, int port, const char *user,
                                const char *password)
{
    bench_orders *o = calloc(1, sizeof(*o));
    if (o == NULL) {
        return NULL;
    }
    pthread_mutex_init(&o->mu, NULL);
    pthread_cond_init(&o->cv, NULL);
    o->mosq = mosquitto_new(NULL, true, o);
    if (o->mosq == NULL || bench_tls_mosq(o->mosq) != 0) {
        bench_orders_close(o);
        return NULL;
    }
    if (user != NULL && user[0] != '\0') {
        mosquitto_username_pw_set(o->mosq, user, password);
    }
    mosquitto_int_option(o->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_callback_set(o->mosq, orders_on_connect);
    mosquitto_subscribe_callback_set(o->mosq, orders_on_subscribe);
    mosquitto_message_callback_set(o->mosq, orders_on_message);
    int rc = mosquitto_connect(o->mosq, host, port, 60);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench: mqtt %s:%d: %s\n", host, port, mosquitto_strerror(rc));
        bench_orders_close(o);
        return NULL;
    }
    o->loop = mosquitto_loop_start(o->mosq) == MOSQ_ERR_SUCCESS;
    double until = bench_now() + 5.0;
    pthread_mutex_lock(&o->mu);
    while (!o->subscribed && bench_now() < until) {
        orders_cond_wait(o, 0.05);
    }
    bool ok = o->subscribed;
    pthread_mutex_unlock(&o->mu);
    if (!ok) {
        fprintf(stderr, "bench: no subscription to %s in 5 s\n",
                WEBSHOP_V1_ORDER_STATUS_CHANGED_TOPIC);
        bench_orders_close(o);
        return NULL;
    }
    return o;
}

void bench_orders_close(bench_orders *o)
{
    if (o == NULL) {
        return;
    }
    if (o->mosq != NULL) {
        mosquitto_disconnect(o->mosq);
        if (o->loop) {
            mosquitto_loop_stop(o->mosq, false);
        }
        mosquitto_destroy(o->mosq);
    }
    free(o->posts.v);
    free(o->finals.v);
    pthread_cond_destroy(&o->cv);
    pthread_mutex_destroy(&o->mu);
    free(o);
}

void bench_orders_posted(bench_orders *o, const char *id, size_t len, double t_sent)
{
    pthread_mutex_lock(&o->mu);
    orders_vec_push(&o->posts, id, len, t_sent, 0);
    pthread_mutex_unlock(&o->mu);
}

size_t bench_orders_count(bench_orders *o)
{
    pthread_mutex_lock(&o->mu);
    size_t n = o->posts.n;
    pthread_mutex_unlock(&o->mu);
    return n;
}

const char *bench_orders_id(bench_orders *o, size_t i)
{
    return o->posts.v[i].id;
}

void bench_orders_drain(bench_orders *o, double quiet_s, double max_s)
{
    double start = bench_now();
    pthread_mutex_lock(&o->mu);
    if (o->last_event < start) {
        o->last_event = start;
    }
    while (o->finals.n < o->posts.n) {
        double now = bench_now();
        if (now - start >= max_s || now - o->last_event >= quiet_s) {
            break;
        }
        orders_cond_wait(o, 0.05);
    }
    pthread_mutex_unlock(&o->mu);
}

static int orders_rec_cmp(const void *a, const void *b)
{
    const orders_rec *x = a;
    const orders_rec *y = b;
    int c = strcmp(x->id, y->id);
    if (c != 0) {
        return c;
    }
    return (x->t > y->t) - (x->t < y->t);
}

void bench_orders_match(bench_orders *o, size_t from, double t0, bench_e2e *out)
{
    memset(out, 0, sizeof(*out));
    bench_hist_init(&out->hist);
    pthread_mutex_lock(&o->mu);
    size_t np = from < o->posts.n ? o->posts.n - from : 0;
    size_t ne = o->finals.n;
    orders_rec *p = malloc((np + 1) * sizeof(*p));
    orders_rec *e = malloc((ne + 1) * sizeof(*e));
    if (p == NULL || e == NULL) {
        pthread_mutex_unlock(&o->mu);
        free(p);
        free(e);
        return;
    }
    memcpy(p, o->posts.v + from, np * sizeof(*p));
    memcpy(e, o->finals.v, ne * sizeof(*e));
    pthread_mutex_unlock(&o->mu);
    qsort(p, np, sizeof(*p), orders_rec_cmp);
    qsort(e, ne, sizeof(*e), orders_rec_cmp);
    out->posted = np;
    double last = t0;
    size_t j = 0;
    for (size_t i = 0; i < np; i++) {
        if (i > 0 && strcmp(p[i].id, p[i - 1].id) == 0) {
            continue; /* the same order posted twice: count it once */
        }
        while (j < ne && strcmp(e[j].id, p[i].id) < 0) {
            j++;
        }
        if (j < ne && strcmp(e[j].id, p[i].id) == 0) {
            /* e is sorted by time within an id: e[j] is the first final event. */
            out->completed++;
            if (e[j].status == WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL) {
                out->successful++;
            } else if (e[j].status == WEBSHOP__V1__ORDER_STATUS__UNSUCCESSFUL) {
                out->unsuccessful++;
            }
            double d = e[j].t - p[i].t;
            bench_hist_record(&out->hist, d > 0 ? (uint64_t)(d * 1e9) : 0);
            if (e[j].t > last) {
                last = e[j].t;
            }
        }
    }
    out->per_sec = last > t0 ? (double)out->completed / (last - t0) : 0.0;
    free(p);
    free(e);
}
