/*
 * Fan-out of live events to SSE streams and to the waiters of POST and
 * DELETE /order; see status_stream.h. One mutex guards the hub, every
 * watch's queue and every waiter: publishing is a scan of at most
 * max_watches watches of at most STATUS_STREAM_MAX_IDS ids each plus one
 * hash bucket of waiters, a few microseconds, so a finer scheme would buy
 * nothing.
 */
#include "status_stream.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "uuid_text.h"

struct status_watch {
    status_stream *hub;                            /* not owned */
    status_watch *prev, *next;                     /* guarded by hub->mu */
    char ids[STATUS_STREAM_MAX_IDS][ORDER_ID_LEN]; /* immutable after open */
    size_t n_ids;                                  /* immutable after open */
    bool stock;                                    /* immutable after open */
    status_event queue[STATUS_STREAM_QUEUE];       /* guarded by hub->mu */
    size_t head, len;                              /* guarded by hub->mu */
    bool overflow;                                 /* guarded by hub->mu */
    pthread_cond_t cv;                             /* signalled on push, shutdown */
};

/* Waiter buckets: a power of two; the ids hashed are random UUIDs (the
 * front picks them), and a bucket is short anyway (one waiter per HTTP
 * worker thread at most). */
#define STATUS_STREAM_BUCKETS 64

struct status_waiter {
    status_stream *hub;         /* not owned */
    status_waiter *prev, *next; /* guarded by hub->mu: the bucket's list */
    size_t bucket;              /* immutable after open */
    char id[ORDER_ID_LEN];      /* immutable after open: lower case */
    unsigned seen;              /* guarded by hub->mu: STATUS_WANT bits */
    pthread_cond_t cv;          /* signalled on a status for id, shutdown */
};

struct status_stream {
    pthread_mutex_t mu;
    status_watch *watches;                         /* guarded by mu: open watches */
    int n_watches;                                 /* guarded by mu */
    int max_watches;                               /* immutable */
    bool closed;                                   /* guarded by mu */
    status_waiter *waiters[STATUS_STREAM_BUCKETS]; /* guarded by mu */
    int n_waiters;                                 /* guarded by mu */
};

status_stream *status_stream_new(int max_watches)
{
    if (max_watches < 1) {
        return NULL;
    }
    status_stream *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->max_watches = max_watches;
    return s;
}

void status_stream_free(status_stream *s)
{
    if (s == NULL) {
        return;
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void status_stream_shutdown(status_stream *s)
{
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    for (status_watch *w = s->watches; w != NULL; w = w->next) {
        pthread_cond_signal(&w->cv);
    }
    for (size_t b = 0; b < STATUS_STREAM_BUCKETS; b++) {
        for (status_waiter *w = s->waiters[b]; w != NULL; w = w->next) {
            pthread_cond_signal(&w->cv);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* Lowercase a canonical UUID into out; false if id is not one. */
static bool status_stream_id_normalize(const char *id, char out[ORDER_ID_LEN])
{
    return id != NULL && ws_uuid_normalize(id, out);
}

/* The waiter bucket of a lower-case id (FNV-1a over its text). */
static size_t status_stream_bucket(const char id[ORDER_ID_LEN])
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i + 1 < ORDER_ID_LEN; i++) {
        h = (h ^ (unsigned char)id[i]) * 16777619u;
    }
    return h & (STATUS_STREAM_BUCKETS - 1);
}

/* The STATUS_WANT bit recording status; bit 31 for values outside 0..30. */
static unsigned status_stream_bit(int status)
{
    return status >= 0 && status <= 30 ? STATUS_WANT(status) : 1u << 31;
}

/* Record status for every waiter on id. Caller holds s->mu. */
static void status_stream_wake_waiters(status_stream *s, const char id[ORDER_ID_LEN],
                                       int status)
{
    for (status_waiter *w = s->waiters[status_stream_bucket(id)]; w != NULL;
         w = w->next) {
        if (memcmp(w->id, id, ORDER_ID_LEN) == 0) {
            w->seen |= status_stream_bit(status);
            pthread_cond_signal(&w->cv);
        }
    }
}

/* Append ev to w's queue, or mark it overflowed. Caller holds hub->mu. */
static void status_watch_push(status_watch *w, const status_event *ev)
{
    if (w->overflow) {
        return;
    }
    if (w->len == STATUS_STREAM_QUEUE) {
        w->overflow = true;
    } else {
        w->queue[(w->head + w->len) % STATUS_STREAM_QUEUE] = *ev;
        w->len++;
    }
    pthread_cond_signal(&w->cv);
}

void status_stream_publish_order(status_stream *s, const char *order_id, int status,
                                 const char *reason)
{
    status_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = STATUS_EVENT_ORDER;
    if (!status_stream_id_normalize(order_id, ev.order_id)) {
        return;
    }
    ev.status = status;
    if (reason != NULL) {
        size_t n = strlen(reason);
        if (n > STATUS_STREAM_REASON_MAX) {
            n = STATUS_STREAM_REASON_MAX;
            /* Never split a UTF-8 sequence: back off continuation bytes. */
            while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80) {
                n--;
            }
        }
        memcpy(ev.reason, reason, n);
        ev.reason[n] = '\0';
    }
    pthread_mutex_lock(&s->mu);
    for (status_watch *w = s->watches; w != NULL; w = w->next) {
        for (size_t i = 0; i < w->n_ids; i++) {
            if (memcmp(w->ids[i], ev.order_id, ORDER_ID_LEN) == 0) {
                status_watch_push(w, &ev);
                break;
            }
        }
    }
    status_stream_wake_waiters(s, ev.order_id, status);
    pthread_mutex_unlock(&s->mu);
}

void status_stream_publish_stock(status_stream *s, int32_t product_id, int32_t balance)
{
    status_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = STATUS_EVENT_STOCK;
    ev.product_id = product_id;
    ev.balance = balance;
    pthread_mutex_lock(&s->mu);
    for (status_watch *w = s->watches; w != NULL; w = w->next) {
        if (w->stock) {
            status_watch_push(w, &ev);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

ws_err status_watch_open(status_stream *s, const char *const *ids, size_t n, bool stock,
                         status_watch **out)
{
    if (n > STATUS_STREAM_MAX_IDS || (n > 0 && ids == NULL)) {
        return WS_EINVAL;
    }
    status_watch *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return WS_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (!status_stream_id_normalize(ids[i], w->ids[i])) {
            free(w);
            return WS_EINVAL;
        }
    }
    w->n_ids = n;
    w->stock = stock;
    w->hub = s;
    ws_clock_cond_init(&w->cv); /* monotonic, the clock of the deadlines */

    pthread_mutex_lock(&s->mu);
    ws_err err = WS_OK;
    if (s->closed) {
        err = WS_ECLOSED;
    } else if (s->n_watches >= s->max_watches) {
        err = WS_EBUSY;
    } else {
        w->next = s->watches;
        if (s->watches != NULL) {
            s->watches->prev = w;
        }
        s->watches = w;
        s->n_watches++;
    }
    pthread_mutex_unlock(&s->mu);
    if (err != WS_OK) {
        pthread_cond_destroy(&w->cv);
        free(w);
        return err;
    }
    *out = w;
    return WS_OK;
}

status_next status_watch_next(status_watch *w, int timeout_ms, status_event *out)
{
    status_stream *s = w->hub;
    struct timespec until = ws_clock_mono_after(timeout_ms);
    status_next r;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        if (w->len > 0) {
            *out = w->queue[w->head];
            w->head = (w->head + 1) % STATUS_STREAM_QUEUE;
            w->len--;
            r = STATUS_NEXT_EVENT;
            break;
        }
        if (w->overflow) {
            r = STATUS_NEXT_OVERFLOW;
            break;
        }
        if (s->closed) {
            r = STATUS_NEXT_CLOSED;
            break;
        }
        int rc = pthread_cond_timedwait(&w->cv, &s->mu, &until);
        if (rc == ETIMEDOUT && w->len == 0 && !w->overflow && !s->closed) {
            r = STATUS_NEXT_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

void status_watch_close(status_watch *w)
{
    if (w == NULL) {
        return;
    }
    status_stream *s = w->hub;
    pthread_mutex_lock(&s->mu);
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        s->watches = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    }
    s->n_watches--;
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

int status_stream_watches(status_stream *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n_watches;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* ---- waiters ------------------------------------------------------------ */

ws_err status_waiter_open(status_stream *s, const char *order_id, status_waiter **out)
{
    status_waiter *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return WS_ENOMEM;
    }
    if (!status_stream_id_normalize(order_id, w->id)) {
        free(w);
        return WS_EINVAL;
    }
    w->hub = s;
    w->bucket = status_stream_bucket(w->id);
    ws_clock_cond_init(&w->cv); /* monotonic, the clock of the deadlines */
    pthread_mutex_lock(&s->mu);
    bool closed = s->closed;
    if (!closed) {
        w->next = s->waiters[w->bucket];
        if (w->next != NULL) {
            w->next->prev = w;
        }
        s->waiters[w->bucket] = w;
        s->n_waiters++;
    }
    pthread_mutex_unlock(&s->mu);
    if (closed) {
        pthread_cond_destroy(&w->cv);
        free(w);
        return WS_ECLOSED;
    }
    *out = w;
    return WS_OK;
}

/* The highest status whose bit is in bits (-1 for bit 31 alone). */
static int status_waiter_pick(unsigned bits)
{
    for (int st = 30; st >= 0; st--) {
        if (bits & STATUS_WANT(st)) {
            return st;
        }
    }
    return -1;
}

status_next status_waiter_wait(status_waiter *w, unsigned want, int timeout_ms,
                               int *status)
{
    status_stream *s = w->hub;
    struct timespec until = ws_clock_mono_after(timeout_ms);
    status_next r;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        unsigned got = w->seen & want;
        if (got != 0) {
            if (status != NULL) {
                *status = status_waiter_pick(got);
            }
            r = STATUS_NEXT_EVENT;
            break;
        }
        if (s->closed) {
            r = STATUS_NEXT_CLOSED;
            break;
        }
        int rc = pthread_cond_timedwait(&w->cv, &s->mu, &until);
        if (rc == ETIMEDOUT && (w->seen & want) == 0 && !s->closed) {
            r = STATUS_NEXT_TIMEOUT;
            break;
        }
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

void status_waiter_close(status_waiter *w)
{
    if (w == NULL) {
        return;
    }
    status_stream *s = w->hub;
    pthread_mutex_lock(&s->mu);
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        s->waiters[w->bucket] = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    }
    s->n_waiters--;
    pthread_mutex_unlock(&s->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}

int status_stream_waiters(status_stream *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n_waiters;
    pthread_mutex_unlock(&s->mu);
    return n;
}
