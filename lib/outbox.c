/*
 * The transactional outbox (see outbox.h): the table helpers, which run on
 * the caller's store inside the caller's transaction, and the relay, a
 * thread with its own store that scans the table in id order, publishes each
 * row with ws_bus_publish_async (a ring of up to `window` publishes in
 * flight, in id order), and deletes the rows whose PUBACK came back by id
 * range, up to the oldest publish still unanswered, a few hundred at a time.
 *
 * The relay thread is the only user of its store. The bus network thread
 * only touches the relay's mutex-protected fields (in-flight count, the ring
 * slots, the failure flag), so every SQLite call stays on the
 * relay thread. The relay object is reference counted by its in-flight
 * publishes, so that closing it before the bus delivers the last callbacks
 * is safe.
 */
#include "outbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#define OUTBOX_DEFAULT_WINDOW  100
#define OUTBOX_DEFAULT_POLL_MS 1000
#define OUTBOX_RETRY_MS        50
/* A delete (or scan) that fails is tried again after 50 ms doubling to 2 s
 * while it keeps failing: a full disk must not make the relay spin. */
#define OUTBOX_FAIL_MIN_MS 50
#define OUTBOX_FAIL_MAX_MS 2000

static int64_t outbox_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

ws_err ws_outbox_put(ws_store *s, const char *topic, const ProtobufCMessage *msg)
{
    if (s == NULL || topic == NULL || topic[0] == '\0' || msg == NULL) {
        return WS_EINVAL;
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t small[512];
    uint8_t *buf = small;
    if (len > sizeof(small)) {
        buf = malloc(len);
        if (buf == NULL) {
            return WS_ENOMEM;
        }
    }
    protobuf_c_message_pack(msg, buf);

    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(
        s, "INSERT INTO outbox(topic, type, payload, created_ms) VALUES (?, ?, ?, ?)",
        &st);
    if (err == WS_OK) {
        sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, msg->descriptor->name, -1, SQLITE_STATIC);
        /* A zero-length blob must still be a blob, not NULL. */
        sqlite3_bind_blob(st, 3, len ? (const void *)buf : "", (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, outbox_now_ms());
        err = ws_err_from_sqlite(sqlite3_step(st));
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    if (buf != small) {
        free(buf);
    }
    return err;
}

ws_err ws_outbox_scan(ws_store *s, int64_t after_id, size_t limit, ws_outbox_row_fn fn,
                      void *ctx, size_t *visited)
{
    if (s == NULL || fn == NULL) {
        return WS_EINVAL;
    }
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s,
                               "SELECT id, topic, type, payload, created_ms FROM outbox"
                               " WHERE id > ? ORDER BY id LIMIT ?",
                               &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int64(st, 1, after_id);
    sqlite3_bind_int64(st, 2, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    size_t n = 0;
    for (;;) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE) {
            break;
        }
        if (rc != SQLITE_ROW) {
            err = ws_err_from_sqlite(rc);
            break;
        }
        ws_outbox_row row = {
            .id = sqlite3_column_int64(st, 0),
            .topic = (const char *)sqlite3_column_text(st, 1),
            .type = (const char *)sqlite3_column_text(st, 2),
            .payload = sqlite3_column_blob(st, 3),
            .len = (size_t)sqlite3_column_bytes(st, 3),
            .created_ms = sqlite3_column_int64(st, 4),
        };
        if (row.topic == NULL || row.type == NULL) {
            err = WS_ENOMEM;
            break;
        }
        n++;
        err = fn(ctx, &row);
        if (err != WS_OK) {
            break;
        }
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (visited != NULL) {
        *visited = n;
    }
    return err;
}

ws_err ws_outbox_delete(ws_store *s, int64_t id)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s, "DELETE FROM outbox WHERE id = ?", &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int64(st, 1, id);
    err = ws_err_from_sqlite(sqlite3_step(st));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

ws_err ws_outbox_count(ws_store *s, int64_t *n)
{
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s, "SELECT count(*) FROM outbox", &st);
    if (err != WS_OK) {
        return err;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *n = sqlite3_column_int64(st, 0);
        err = WS_OK;
    } else {
        err = ws_err_from_sqlite(rc);
        if (err == WS_OK) {
            err = WS_ESTORE;
        }
    }
    sqlite3_reset(st);
    return err;
}

ws_err ws_outbox_row_unpack(const ws_outbox_row *row,
                            const ProtobufCMessageDescriptor *const *types, size_t n,
                            ProtobufCMessage **out)
{
    for (size_t i = 0; i < n; i++) {
        if (types[i] != NULL && strcmp(types[i]->name, row->type) == 0) {
            ProtobufCMessage *m =
                protobuf_c_message_unpack(types[i], NULL, row->len, row->payload);
            if (m == NULL) {
                return WS_EPARSE;
            }
            *out = m;
            return WS_OK;
        }
    }
    return WS_ENOTFOUND;
}

/* ---- relay ---------------------------------------------------------- */

/* Acknowledged rows are deleted by id range, not one by one as each PUBACK
 * comes: when this many are waiting, when the oldest waited this long, and
 * whenever nothing is in flight (so flush sees an empty table). A crash
 * between an ack and its delete only means that row goes out again. */
#define OUTBOX_DELETE_BATCH 256
#define OUTBOX_DELETE_MS    20
/* Acks the network thread collects before it wakes the relay thread. */
#define OUTBOX_ACKS_PER_WAKE 64

/* One publish in flight: a slot of the relay's ring, in publish (id) order;
 * the context of its callback. */
typedef struct outbox_slot {
    struct ws_outbox_relay *relay;
    int64_t id;
    int state; /* OUTBOX_SLOT_* (under the relay's mu) */
} outbox_slot;

enum { OUTBOX_SLOT_FLYING, OUTBOX_SLOT_ACKED, OUTBOX_SLOT_FAILED };

struct ws_outbox_relay {
    /* Set at open, read-only afterwards. */
    ws_store *store; /* relay thread only */
    ws_bus *bus;
    const ProtobufCMessageDescriptor *const *types;
    size_t n_types;
    int window;
    int poll_ms;
    ws_counter *published;
    ws_counter *failed_publishes;
    ws_counter *dropped;
    ws_counter *delete_failures;
    ws_gauge *inflight_gauge;
    ws_gauge *failing_gauge;

    pthread_t thread;     /* valid when started */
    int64_t deleted_upto; /* relay thread only: rows <= this are deleted */
    /* Failure backoff, relay thread only: one per kind of store work. */
    struct outbox_fail {
        int delay_ms;    /* 0 while the work succeeds */
        int64_t next_ms; /* do not try again before (CLOCK_MONOTONIC ms) */
        int64_t since_ms;
        unsigned long attempts;
    } del_fail, scan_fail;

    /* Everything below is guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* the relay thread waits here */
    pthread_cond_t drained; /* flush waits here */
    bool started;
    bool stop;
    bool closed;       /* close is done; the last callback frees */
    int inflight;      /* publishes whose callback has not come */
    bool failed;       /* a publish failed; restart from the oldest row */
    outbox_slot *ring; /* window slots; [head, tail) in publish order */
    uint64_t head, tail;
    int64_t acked_upto; /* every published row <= this is acknowledged */
    int acks_unsignaled;
    uint64_t kick_seq;    /* bumped by kick and flush */
    uint64_t drained_seq; /* kick_seq last seen with the table drained */
};

/* What a scan of the relay thread carries between rows. */
typedef struct outbox_scan_state {
    ws_outbox_relay *relay;
    int64_t cursor; /* last id published or dropped */
} outbox_scan_state;

static void outbox_relay_free(ws_outbox_relay *r)
{
    pthread_cond_destroy(&r->drained);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->mu);
    free(r->ring);
    free(r);
}

static void outbox_relay_deadline(struct timespec *ts, uint32_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int64_t outbox_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Bus network thread: the broker answered one publish. The relay thread is
 * woken only when it has something to do: a failure, nothing left in
 * flight, or a handful of acks to turn into room and deletes. */
static void outbox_relay_on_ack(void *ctx, ws_err result)
{
    outbox_slot *slot = ctx;
    ws_outbox_relay *r = slot->relay;

    pthread_mutex_lock(&r->mu);
    r->inflight--;
    ws_gauge_add(r->inflight_gauge, -1);
    if (result == WS_OK) {
        ws_counter_inc(r->published);
        slot->state = OUTBOX_SLOT_ACKED;
    } else {
        ws_counter_inc(r->failed_publishes);
        slot->state = OUTBOX_SLOT_FAILED;
        r->failed = true;
    }
    int per_wake =
        r->window / 2 < OUTBOX_ACKS_PER_WAKE ? r->window / 2 : OUTBOX_ACKS_PER_WAKE;
    bool signal = r->failed || r->inflight == 0 ||
                  ++r->acks_unsignaled >= (per_wake > 0 ? per_wake : 1);
    if (signal) {
        r->acks_unsignaled = 0;
        pthread_cond_signal(&r->wake);
    }
    bool last = r->closed && r->inflight == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        outbox_relay_free(r);
    }
}

/* Relay thread, inside a scan: publish one row. */
static ws_err outbox_relay_publish_row(void *ctx, const ws_outbox_row *row)
{
    outbox_scan_state *ss = ctx;
    ws_outbox_relay *r = ss->relay;
    ProtobufCMessage *msg = NULL;
    ws_err err = ws_outbox_row_unpack(row, r->types, r->n_types, &msg);
    if (err != WS_OK) {
        /* It can never be published: say so and drop it. */
        ws_log_error("outbox_row_dropped", "id=%lld topic=%s type=%s error=%s",
                     (long long)row->id, row->topic, row->type, ws_errname(err));
        ws_counter_inc(r->dropped);
        ss->cursor = row->id;
        return ws_outbox_delete(r->store, row->id);
    }

    /* Take the slot first: the callback may run before publish returns. */
    pthread_mutex_lock(&r->mu);
    if (r->tail - r->head >= (uint64_t)r->window) {
        pthread_mutex_unlock(&r->mu);
        protobuf_c_message_free_unpacked(msg, NULL);
        return WS_EBUSY; /* cannot happen: the scan is limited to the room */
    }
    outbox_slot *slot = &r->ring[r->tail % (uint64_t)r->window];
    slot->relay = r;
    slot->id = row->id;
    slot->state = OUTBOX_SLOT_FLYING;
    r->tail++;
    r->inflight++;
    pthread_mutex_unlock(&r->mu);
    ws_gauge_add(r->inflight_gauge, 1);

    err = ws_bus_publish_async(r->bus, row->topic, msg, outbox_relay_on_ack, slot);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (err != WS_OK) {
        pthread_mutex_lock(&r->mu);
        r->tail--;
        r->inflight--;
        pthread_mutex_unlock(&r->mu);
        ws_gauge_add(r->inflight_gauge, -1);
        return err;
    }
    ss->cursor = row->id;
    return WS_OK;
}

static ws_err outbox_relay_delete_txn(ws_store *s, void *ctx)
{
    const int64_t *upto = ctx;
    sqlite3_stmt *st;
    ws_err err = ws_store_stmt(s, "DELETE FROM outbox WHERE id <= ?", &st);
    if (err != WS_OK) {
        return err;
    }
    sqlite3_bind_int64(st, 1, *upto);
    err = ws_err_from_sqlite(sqlite3_step(st));
    sqlite3_reset(st);
    return err;
}

/* Move head past the acknowledged slots at the front of the ring (mu). */
static void outbox_relay_ring_advance(ws_outbox_relay *r)
{
    while (r->head < r->tail) {
        const outbox_slot *slot = &r->ring[r->head % (uint64_t)r->window];
        if (slot->state != OUTBOX_SLOT_ACKED) {
            break;
        }
        if (slot->id > r->acked_upto) {
            r->acked_upto = slot->id;
        }
        r->head++;
    }
}

/* The store work of kind f (what: "delete" or "scan") failed with err:
 * back off, and say so once when it starts failing. */
static void outbox_fail_note(ws_outbox_relay *r, struct outbox_fail *f, const char *what,
                             int64_t now_ms, ws_err err, int64_t upto)
{
    f->attempts++;
    if (f->delay_ms == 0) {
        f->delay_ms = OUTBOX_FAIL_MIN_MS;
        f->since_ms = now_ms;
        ws_gauge_add(r->failing_gauge, 1);
        ws_log_error("outbox_store_failing",
                     "work=%s upto=%lld error=%s retry_ms=%d max_retry_ms=%d note=%s",
                     what, (long long)upto, ws_errname(err), f->delay_ms,
                     OUTBOX_FAIL_MAX_MS,
                     "retried with backoff; the rows wait in the table");
    } else {
        f->delay_ms =
            f->delay_ms * 2 > OUTBOX_FAIL_MAX_MS ? OUTBOX_FAIL_MAX_MS : f->delay_ms * 2;
    }
    f->next_ms = now_ms + f->delay_ms;
}

/* The store work of kind f succeeded: say so if it was failing. */
static void outbox_fail_clear(ws_outbox_relay *r, struct outbox_fail *f, const char *what,
                              int64_t now_ms)
{
    if (f->delay_ms == 0) {
        return;
    }
    ws_gauge_add(r->failing_gauge, -1);
    ws_log_info("outbox_store_recovered", "work=%s failed_ms=%lld attempts=%lu", what,
                (long long)(now_ms - f->since_ms), f->attempts);
    *f = (struct outbox_fail){0};
}

/* Milliseconds until the failing work f may be tried again; 0 when it may
 * now (or is not failing). */
static int64_t outbox_fail_wait(const struct outbox_fail *f, int64_t now_ms)
{
    return f->delay_ms != 0 && f->next_ms > now_ms ? f->next_ms - now_ms : 0;
}

/* Relay thread: delete the acknowledged rows up to acked when enough are
 * owed, when the oldest waited long enough, when nothing is in flight, or
 * when a failing delete's backoff is over. */
static void outbox_relay_delete_step(ws_outbox_relay *r, int64_t acked, bool idle,
                                     int64_t now_ms, int64_t *last_delete_ms)
{
    if (acked <= r->deleted_upto || outbox_fail_wait(&r->del_fail, now_ms) != 0) {
        return;
    }
    if (!(idle || acked - r->deleted_upto >= OUTBOX_DELETE_BATCH ||
          now_ms - *last_delete_ms >= OUTBOX_DELETE_MS || r->del_fail.delay_ms != 0)) {
        return;
    }
    ws_err err = ws_store_txn(r->store, outbox_relay_delete_txn, &acked);
    if (err == WS_OK) {
        r->deleted_upto = acked;
        outbox_fail_clear(r, &r->del_fail, "delete", now_ms);
    } else {
        /* Tried again later; those rows may go out twice. */
        ws_counter_inc(r->delete_failures);
        outbox_fail_note(r, &r->del_fail, "delete", now_ms, err, acked);
    }
    *last_delete_ms = now_ms;
}

/* Relay thread: publish up to room rows after *cursor (unless a failing
 * scan is backing off: then WS_EIO, "not drained"). WS_OK when room is 0. */
static ws_err outbox_relay_scan_step(ws_outbox_relay *r, int room, int64_t now_ms,
                                     int64_t *cursor, size_t *visited)
{
    if (room <= 0) {
        return WS_OK;
    }
    if (outbox_fail_wait(&r->scan_fail, now_ms) != 0) {
        return WS_EIO;
    }
    outbox_scan_state ss = {.relay = r, .cursor = *cursor};
    ws_err err = ws_outbox_scan(r->store, *cursor, (size_t)room, outbox_relay_publish_row,
                                &ss, visited);
    *cursor = ss.cursor;
    if (err != WS_OK && err != WS_EUNAVAIL && err != WS_EBUSY) {
        outbox_fail_note(r, &r->scan_fail, "scan", now_ms, err, *cursor);
    } else if (err == WS_OK) {
        outbox_fail_clear(r, &r->scan_fail, "scan", now_ms);
    }
    return err;
}

static void *outbox_relay_main(void *arg)
{
    ws_outbox_relay *r = arg;
    int64_t cursor = 0;
    int64_t last_delete_ms = outbox_mono_ms();

    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        if (r->failed && r->inflight == 0) {
            /* Everything after the failure is settled: start again from the
             * oldest row still in the table. */
            outbox_relay_ring_advance(r);
            r->failed = false;
            r->head = r->tail = 0;
            cursor = 0;
        }
        outbox_relay_ring_advance(r);
        int64_t acked = r->acked_upto;
        bool idle = r->inflight == 0;
        uint64_t seen = r->kick_seq;
        int room = r->failed ? 0 : r->window - (int)(r->tail - r->head);
        pthread_mutex_unlock(&r->mu);

        int64_t now_ms = outbox_mono_ms();
        outbox_relay_delete_step(r, acked, idle, now_ms, &last_delete_ms);
        bool delete_failed = r->del_fail.delay_ms != 0;
        size_t visited = 0;
        ws_err err = outbox_relay_scan_step(r, room, now_ms, &cursor, &visited);

        pthread_mutex_lock(&r->mu);
        outbox_relay_ring_advance(r);
        bool full = room > 0 && err == WS_OK && visited == (size_t)room;
        bool deletes_owed = r->acked_upto > r->deleted_upto;
        if (room > 0 && err == WS_OK && !full && r->inflight == 0 && r->head == r->tail &&
            !deletes_owed && !r->failed) {
            r->drained_seq = seen;
            pthread_cond_broadcast(&r->drained);
        }
        bool work = r->stop || (r->failed && r->inflight == 0) || r->kick_seq != seen ||
                    (full && r->tail - r->head < (uint64_t)r->window) ||
                    (deletes_owed && r->inflight == 0 && !delete_failed);
        if (!work) {
            uint32_t ms =
                (err == WS_OK && !delete_failed) ? (uint32_t)r->poll_ms : OUTBOX_RETRY_MS;
            if (deletes_owed && ms > OUTBOX_DELETE_MS) {
                ms = OUTBOX_DELETE_MS;
            }
            /* A failing delete or scan waits for its backoff, whatever else
             * would wake the loop sooner. */
            int64_t del_wait = outbox_fail_wait(&r->del_fail, now_ms);
            int64_t scan_wait = outbox_fail_wait(&r->scan_fail, now_ms);
            if (delete_failed && deletes_owed && del_wait > ms) {
                ms = (uint32_t)del_wait;
            }
            if (r->scan_fail.delay_ms != 0 && scan_wait > ms) {
                ms = (uint32_t)scan_wait;
            }
            struct timespec ts;
            outbox_relay_deadline(&ts, ms);
            pthread_cond_timedwait(&r->wake, &r->mu, &ts);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

ws_err ws_outbox_relay_open(const ws_outbox_relay_opts *opts, ws_outbox_relay **out)
{
    if (opts == NULL || opts->store == NULL || opts->bus == NULL || out == NULL ||
        (opts->n_types > 0 && opts->types == NULL) || opts->window < 0 ||
        opts->poll_ms < 0) {
        return WS_EINVAL;
    }
    ws_outbox_relay *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return WS_ENOMEM;
    }
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        free(r);
        return WS_ENOMEM;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        goto fail_mu;
    }
    if (pthread_cond_init(&r->wake, &ca) != 0) {
        goto fail_wake;
    }
    if (pthread_cond_init(&r->drained, &ca) != 0) {
        goto fail_drained;
    }
    pthread_condattr_destroy(&ca);

    ws_metrics *m = opts->metrics ? opts->metrics : ws_metrics_default();
    r->published = ws_counter_get(m, "webshop_outbox_published_total",
                                  "Outbox rows published and acknowledged", NULL);
    r->failed_publishes =
        ws_counter_get(m, "webshop_outbox_publish_failures_total",
                       "Outbox publishes that failed and will be retried", NULL);
    r->dropped =
        ws_counter_get(m, "webshop_outbox_dropped_total",
                       "Outbox rows that could not be decoded and were deleted", NULL);
    r->inflight_gauge = ws_gauge_get(m, "webshop_outbox_inflight",
                                     "Outbox publishes awaiting their PUBACK", NULL);
    r->delete_failures =
        ws_counter_get(m, "webshop_outbox_delete_failures_total",
                       "Deletes of acknowledged outbox rows that failed (retried with "
                       "backoff)",
                       NULL);
    r->failing_gauge =
        ws_gauge_get(m, "webshop_outbox_store_failing",
                     "Kinds of outbox store work (delete, scan) failing now", NULL);
    r->store = opts->store;
    r->bus = opts->bus;
    r->types = opts->types;
    r->n_types = opts->n_types;
    r->window = opts->window ? opts->window : OUTBOX_DEFAULT_WINDOW;
    r->poll_ms = opts->poll_ms ? opts->poll_ms : OUTBOX_DEFAULT_POLL_MS;
    r->ring = calloc((size_t)r->window, sizeof(*r->ring));
    if (r->ring == NULL) {
        pthread_cond_destroy(&r->drained);
        pthread_cond_destroy(&r->wake);
        pthread_mutex_destroy(&r->mu);
        free(r);
        return WS_ENOMEM;
    }
    *out = r;
    return WS_OK;

fail_drained:
    pthread_cond_destroy(&r->wake);
fail_wake:
    pthread_mutex_destroy(&r->mu);
fail_mu:
    pthread_condattr_destroy(&ca);
    free(r);
    return WS_ENOMEM;
}

ws_err ws_outbox_relay_start(ws_outbox_relay *r)
{
    if (r == NULL) {
        return WS_EINVAL;
    }
    pthread_mutex_lock(&r->mu);
    if (r->started) {
        pthread_mutex_unlock(&r->mu);
        return WS_EINVAL;
    }
    int rc = pthread_create(&r->thread, NULL, outbox_relay_main, r);
    if (rc == 0) {
        r->started = true;
    }
    pthread_mutex_unlock(&r->mu);
    return rc == 0 ? WS_OK : ws_err_from_errno(rc);
}

void ws_outbox_relay_kick(ws_outbox_relay *r)
{
    if (r == NULL) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    r->kick_seq++;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mu);
}

ws_err ws_outbox_relay_flush(ws_outbox_relay *r, uint32_t timeout_ms)
{
    if (r == NULL) {
        return WS_EINVAL;
    }
    struct timespec ts;
    outbox_relay_deadline(&ts, timeout_ms);
    ws_err err = WS_OK;
    pthread_mutex_lock(&r->mu);
    if (!r->started || r->stop) {
        pthread_mutex_unlock(&r->mu);
        return WS_EINVAL;
    }
    uint64_t want = ++r->kick_seq;
    pthread_cond_signal(&r->wake);
    while (r->drained_seq < want) {
        int rc = pthread_cond_timedwait(&r->drained, &r->mu, &ts);
        if (rc == ETIMEDOUT && r->drained_seq < want) {
            err = WS_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    return err;
}

void ws_outbox_relay_close(ws_outbox_relay *r)
{
    if (r == NULL) {
        return;
    }
    pthread_mutex_lock(&r->mu);
    bool started = r->started;
    r->stop = true;
    pthread_cond_signal(&r->wake);
    pthread_mutex_unlock(&r->mu);
    if (started) {
        pthread_join(r->thread, NULL);
    }
    ws_store_close(r->store);
    r->store = NULL;

    pthread_mutex_lock(&r->mu);
    r->closed = true;
    bool last = r->inflight == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        outbox_relay_free(r);
    }
}
