/*
 * The transactional outbox (see outbox.h): the table helpers, which run on
 * the caller's connection inside the caller's transaction, and the relay, a
 * thread that claims the next free rows in id order (a lease in the row;
 * FOR UPDATE SKIP LOCKED on PostgreSQL, so relays of several replicas never
 * claim the same row), publishes each with ws_bus_publish_async (a ring of
 * up to `window` publishes in flight, in id order), and deletes the rows
 * whose PUBACK came back, a few hundred at a time, by runs of consecutive
 * ids (a run of ids that are all this relay's is safe to delete as a range;
 * a range over ids another relay holds would not be). A claim carries the
 * deletes owed at that moment in its own transaction (one transaction per
 * pass instead of two); a delete runs alone only when no claim is made, or
 * when the combined transaction failed (the claim is then tried alone, and
 * the deletes at their next turn).
 *
 * The relay thread takes a connection of the pool for each transaction
 * (claim, delete, release, gauges) and gives it back before it waits. The
 * bus network thread only touches the relay's mutex-protected fields
 * (in-flight count, the ring slots, the failure flag), so every database
 * call stays on the relay thread. The relay object is reference counted by
 * its in-flight publishes, so that closing it before the bus delivers the
 * last callbacks is safe.
 *
 * Tracing: put stores the putting thread's traceparent in the row; the relay
 * thread makes it current around that row's publish only (a trace per row,
 * cleared after), never around the claim or the deletes, which are no one
 * request's work.
 */
#include "outbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "log.h"
#include "trace.h"

#define OUTBOX_DEFAULT_WINDOW   100
#define OUTBOX_DEFAULT_POLL_MS  1000
#define OUTBOX_DEFAULT_LEASE_MS 30000
#define OUTBOX_RETRY_MS         50
/* A delete (or claim) that fails is tried again after 50 ms doubling to 2 s
 * while it keeps failing: a full disk must not make the relay spin. */
#define OUTBOX_FAIL_MIN_MS 50
#define OUTBOX_FAIL_MAX_MS 2000
/* The row gauges are refreshed with a claim that did not fill the window
 * (the table is short), else at most this often (a count of a long table
 * is not free). */
#define OUTBOX_GAUGE_MS 250

ws_err ws_outbox_put(ws_db_conn *c, const char *topic, const ProtobufCMessage *msg)
{
    if (c == NULL || topic == NULL || topic[0] == '\0' || msg == NULL) {
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
    char traceparent[WS_TRACEPARENT_SIZE];
    const ws_trace *trace = ws_trace_current();
    if (trace != NULL) {
        ws_trace_format(trace, traceparent);
    }

    ws_db_stmt *st = NULL;
    ws_err err = ws_db_prepare(c,
                               "INSERT INTO outbox(topic, type, payload, created_ms,"
                               " traceparent) VALUES ($1, $2, $3, $4, $5)",
                               &st);
    if (err == WS_OK && (err = ws_db_bind_text(st, 1, topic)) == WS_OK &&
        (err = ws_db_bind_text(st, 2, msg->descriptor->name)) == WS_OK &&
        /* A zero-length payload is still a blob, not NULL. */
        (err = ws_db_bind_blob(st, 3, buf, len)) == WS_OK &&
        (err = ws_db_bind_int64(st, 4, ws_clock_wall_ms())) == WS_OK &&
        (err = ws_db_bind_text(st, 5, trace != NULL ? traceparent : NULL)) == WS_OK) {
        err = ws_db_run(st, NULL);
    }
    if (buf != small) {
        free(buf);
    }
    return err;
}

/* The row under the statement's cursor: columns id, topic, type, payload,
 * created_ms, traceparent. WS_ESTORE when a NOT NULL column reads as NULL. */
static ws_err outbox_row_read(ws_db_stmt *st, ws_outbox_row *row /* OUT */)
{
    size_t len = 0;
    const void *payload = ws_db_column_blob(st, 3, &len);
    *row = (ws_outbox_row){
        .id = ws_db_column_int64(st, 0),
        .topic = ws_db_column_text(st, 1),
        .type = ws_db_column_text(st, 2),
        .payload = payload,
        .len = len,
        .created_ms = ws_db_column_int64(st, 4),
        .traceparent = ws_db_column_text(st, 5),
    };
    return row->topic == NULL || row->type == NULL || row->payload == NULL ? WS_ESTORE
                                                                           : WS_OK;
}

ws_err ws_outbox_scan(ws_db_conn *c, int64_t after_id, size_t limit, ws_outbox_row_fn fn,
                      void *ctx, size_t *visited)
{
    if (c == NULL || fn == NULL) {
        return WS_EINVAL;
    }
    ws_db_stmt *st = NULL;
    ws_err err = ws_db_prepare(c,
                               "SELECT id, topic, type, payload, created_ms, traceparent"
                               " FROM outbox"
                               " WHERE id > $1 ORDER BY id LIMIT $2",
                               &st);
    if (err == WS_OK && (err = ws_db_bind_int64(st, 1, after_id)) == WS_OK) {
        err = ws_db_bind_int64(st, 2, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    }
    size_t n = 0;
    bool more = err == WS_OK;
    while (more && (err = ws_db_step(st, &more)) == WS_OK && more) {
        ws_outbox_row row;
        if ((err = outbox_row_read(st, &row)) != WS_OK) {
            break;
        }
        n++;
        if ((err = fn(ctx, &row)) != WS_OK) {
            break;
        }
    }
    ws_db_reset(st);
    if (visited != NULL) {
        *visited = n;
    }
    return err;
}

ws_err ws_outbox_delete(ws_db_conn *c, int64_t id)
{
    ws_db_stmt *st = NULL;
    ws_err err = ws_db_prepare(c, "DELETE FROM outbox WHERE id = $1", &st);
    if (err == WS_OK && (err = ws_db_bind_int64(st, 1, id)) == WS_OK) {
        err = ws_db_run(st, NULL);
    }
    return err;
}

ws_err ws_outbox_count(ws_db_conn *c, int64_t *n)
{
    if (n == NULL) {
        return WS_EINVAL;
    }
    ws_db_stmt *st = NULL;
    ws_err err = ws_db_prepare(c, "SELECT count(*) FROM outbox", &st);
    bool row = false;
    if (err == WS_OK && (err = ws_db_step(st, &row)) == WS_OK) {
        if (row) {
            *n = ws_db_column_int64(st, 0);
        } else {
            err = WS_ESTORE;
        }
    }
    ws_db_reset(st);
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

/* Acknowledged rows are deleted in batches, not one by one as each PUBACK
 * comes: when this many are waiting, when the oldest waited this long, and
 * whenever nothing is in flight (so flush sees an empty table). A crash
 * between an ack and its delete only means that row goes out again once
 * its lease has run out. */
#define OUTBOX_DELETE_BATCH 256
#define OUTBOX_DELETE_MS    20
/* Acks the network thread collects before it wakes the relay thread. */
#define OUTBOX_ACKS_PER_WAKE 64

/* The claim: the next free rows in id order become this relay's until $1.
 * On PostgreSQL rows another relay is claiming right now are skipped, not
 * waited for; the outer condition re-checks the lease of a row that
 * another claim committed meanwhile. SQLite has one writer (BEGIN
 * IMMEDIATE), so nothing is locked there. RETURNING gives no order: the
 * relay sorts. */
#define OUTBOX_CLAIM_SQL(lock)                                                           \
    "UPDATE outbox SET lease_until_ms = $1 WHERE id IN"                                  \
    " (SELECT id FROM outbox WHERE lease_until_ms < $2 ORDER BY id LIMIT $3" lock ")"    \
    " AND lease_until_ms < $2"                                                           \
    " RETURNING id, topic, type, payload, created_ms, traceparent"

/* One publish in flight: a slot of the relay's ring, in publish (id) order;
 * the context of its callback. */
typedef struct outbox_slot {
    struct ws_outbox_relay *relay;
    int64_t id;
    int64_t lease; /* the lease_until_ms this relay's claim wrote in the row */
    int state;     /* OUTBOX_SLOT_* (under the relay's mu) */
} outbox_slot;

enum { OUTBOX_SLOT_FLYING, OUTBOX_SLOT_ACKED, OUTBOX_SLOT_FAILED };

/* A claimed row, copied out of the claim transaction (row points into mem). */
typedef struct outbox_claimed {
    ws_outbox_row row;
    char *mem;
} outbox_claimed;

/* A claimed row this relay gives back unpublished (lease_until_ms = 0 when
 * it still holds the lease it wrote). */
typedef struct outbox_lease {
    int64_t id;
    int64_t lease;
} outbox_lease;

struct ws_outbox_relay {
    /* Set at open, read-only afterwards. */
    ws_db *db; /* not owned */
    ws_bus *bus;
    const ProtobufCMessageDescriptor *const *types;
    size_t n_types;
    int window;
    int poll_ms;
    int lease_ms;
    bool sole_relay; /* drop leases left by an earlier run at start */
    ws_counter *published;
    ws_counter *failed_publishes;
    ws_counter *dropped;
    ws_counter *delete_failures;
    ws_gauge *inflight_gauge;
    ws_gauge *failing_gauge;
    ws_gauge *rows_gauge;
    ws_gauge *oldest_gauge;

    pthread_t thread; /* valid when started */
    /* Relay thread only (the ring walks that fill acked and give_back run
     * on it, under mu). */
    int64_t *acked; /* acknowledged (or dropped) ids not deleted yet */
    size_t nacked, acked_cap;
    outbox_lease *give_back; /* claimed rows to release; 2 * window (one
                                claim's rest and one ring: nothing is claimed
                                while any wait) */
    size_t ngive;
    outbox_claimed *batch; /* the last claim; window entries */
    size_t nbatch;
    int64_t gauges_ms; /* last refresh of the row gauges (monotonic) */
    /* Failure backoff: one per kind of database work. */
    struct outbox_fail {
        int delay_ms;    /* 0 while the work succeeds */
        int64_t next_ms; /* do not try again before (CLOCK_MONOTONIC ms) */
        int64_t since_ms;
        unsigned long attempts;
    } del_fail, claim_fail, rel_fail;

    /* Everything below is guarded by mu. */
    pthread_mutex_t mu;
    pthread_cond_t wake;    /* the relay thread waits here */
    pthread_cond_t drained; /* flush waits here */
    bool started;
    bool stop;
    bool closed;       /* close is done; the last callback frees */
    int inflight;      /* publishes whose callback has not come */
    bool failed;       /* a publish failed; give back what is unacknowledged */
    outbox_slot *ring; /* window slots; [head, tail) in publish order */
    uint64_t head, tail;
    int acks_unsignaled;
    uint64_t kick_seq;    /* bumped by kick and flush */
    uint64_t drained_seq; /* kick_seq last seen with the table drained */
};

static void outbox_relay_free(ws_outbox_relay *r)
{
    pthread_cond_destroy(&r->drained);
    pthread_cond_destroy(&r->wake);
    pthread_mutex_destroy(&r->mu);
    free(r->ring);
    free(r->acked);
    free(r->give_back);
    free(r->batch);
    free(r);
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

/* Relay thread: publish one claimed row (its trace current, see
 * outbox_relay_publish_row). A row that can never be published is logged,
 * counted and queued for deletion (WS_OK). */
static ws_err outbox_relay_publish_traced(ws_outbox_relay *r, const ws_outbox_row *row,
                                          int64_t lease)
{
    ProtobufCMessage *msg = NULL;
    ws_err err = ws_outbox_row_unpack(row, r->types, r->n_types, &msg);
    if (err != WS_OK) {
        ws_log_error("outbox_row_dropped", "id=%lld topic=%s type=%s error=%s",
                     (long long)row->id, row->topic, row->type, ws_errname(err));
        ws_counter_inc(r->dropped);
        r->acked[r->nacked++] = row->id; /* room for it was counted at the claim */
        return WS_OK;
    }

    /* Take the slot first: the callback may run before publish returns. */
    pthread_mutex_lock(&r->mu);
    if (r->tail - r->head >= (uint64_t)r->window) {
        pthread_mutex_unlock(&r->mu);
        protobuf_c_message_free_unpacked(msg, NULL);
        return WS_EBUSY; /* cannot happen: the claim is limited to the room */
    }
    outbox_slot *slot = &r->ring[r->tail % (uint64_t)r->window];
    slot->relay = r;
    slot->id = row->id;
    slot->lease = lease;
    slot->state = OUTBOX_SLOT_FLYING;
    r->tail++;
    r->inflight++;
    pthread_mutex_unlock(&r->mu);
    ws_gauge_add(r->inflight_gauge, 1);

    err = ws_bus_publish_async_at(r->bus, row->topic, msg, row->created_ms,
                                  outbox_relay_on_ack, slot);
    protobuf_c_message_free_unpacked(msg, NULL);
    if (err == WS_OK) {
        ws_log_debug("outbox_publish", "id=%lld topic=%s lease_until_ms=%lld",
                     (long long)row->id, row->topic, (long long)lease);
    }
    if (err != WS_OK) {
        pthread_mutex_lock(&r->mu);
        r->tail--;
        r->inflight--;
        pthread_mutex_unlock(&r->mu);
        ws_gauge_add(r->inflight_gauge, -1);
    }
    return err;
}

/* Relay thread: publish one claimed row with its trace as the thread's
 * current one, so the bus puts it on the message and the lines about the row
 * carry it; a row put without one (or with one that does not parse) is
 * published with none. */
static ws_err outbox_relay_publish_row(ws_outbox_relay *r, const ws_outbox_row *row,
                                       int64_t lease)
{
    ws_trace trace;
    bool traced = row->traceparent != NULL &&
                  ws_trace_parse(row->traceparent, strlen(row->traceparent), &trace);
    ws_trace_set_current(traced ? &trace : NULL);
    ws_err err = outbox_relay_publish_traced(r, row, lease);
    ws_trace_set_current(NULL);
    return err;
}

/* Move head past the acknowledged slots at the front of the ring, queueing
 * their rows for deletion (mu). */
static void outbox_relay_ring_advance(ws_outbox_relay *r)
{
    while (r->head < r->tail) {
        const outbox_slot *slot = &r->ring[r->head % (uint64_t)r->window];
        if (slot->state != OUTBOX_SLOT_ACKED) {
            break;
        }
        r->acked[r->nacked++] = slot->id;
        r->head++;
    }
}

/* A publish failed and nothing is in flight any more (mu): the acknowledged
 * rows are deleted, the others given back, so that the next claim starts
 * again from the oldest row left. */
static void outbox_relay_settle(ws_outbox_relay *r)
{
    size_t given = 0;
    for (uint64_t i = r->head; i < r->tail; i++) {
        const outbox_slot *slot = &r->ring[i % (uint64_t)r->window];
        if (slot->state == OUTBOX_SLOT_ACKED) {
            r->acked[r->nacked++] = slot->id;
        } else {
            r->give_back[r->ngive++] = (outbox_lease){slot->id, slot->lease};
            given++;
        }
    }
    r->head = r->tail = 0;
    r->failed = false;
    ws_log_warn("outbox_publish_restart", "rows_given_back=%zu note=%s", given,
                "published again from the oldest row left");
}

/* Rows the relay may claim now: room in the ring, and room in acked for
 * every row in flight or claimed (mu). */
static int outbox_relay_room(const ws_outbox_relay *r)
{
    size_t ring = (size_t)(r->tail - r->head);
    size_t room = (size_t)r->window - ring;
    size_t owed = r->nacked + ring;
    size_t left = owed < r->acked_cap ? r->acked_cap - owed : 0;
    return (int)(left < room ? left : room);
}

/* The database work of kind f (what: "delete", "claim" or "release") failed with err:
 * back off, and say so once when it starts failing. */
static void outbox_fail_note(ws_outbox_relay *r, struct outbox_fail *f, const char *what,
                             int64_t now_ms, ws_err err, size_t rows)
{
    f->attempts++;
    if (f->delay_ms == 0) {
        f->delay_ms = OUTBOX_FAIL_MIN_MS;
        f->since_ms = now_ms;
        ws_gauge_add(r->failing_gauge, 1);
        ws_log_error("outbox_store_failing",
                     "work=%s rows=%zu error=%s retry_ms=%d max_retry_ms=%d note=%s",
                     what, rows, ws_errname(err), f->delay_ms, OUTBOX_FAIL_MAX_MS,
                     "retried with backoff; the rows wait in the table");
    } else {
        f->delay_ms =
            f->delay_ms * 2 > OUTBOX_FAIL_MAX_MS ? OUTBOX_FAIL_MAX_MS : f->delay_ms * 2;
    }
    f->next_ms = now_ms + f->delay_ms;
}

/* The database work of kind f succeeded: say so if it was failing. */
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

static int outbox_id_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Delete the acknowledged rows (sorted) by runs of consecutive ids: every
 * id of a run is this relay's, so the range holds no row of another. */
static ws_err outbox_relay_delete_txn(ws_db_conn *c, void *ctx)
{
    const ws_outbox_relay *r = ctx;
    for (size_t i = 0; i < r->nacked;) {
        size_t j = i;
        while (j + 1 < r->nacked && r->acked[j + 1] - r->acked[j] <= 1) {
            j++; /* equal ids: a row published twice (its lease ran out) */
        }
        ws_db_stmt *st = NULL;
        ws_err err =
            ws_db_prepare(c, "DELETE FROM outbox WHERE id >= $1 AND id <= $2", &st);
        if (err == WS_OK && (err = ws_db_bind_int64(st, 1, r->acked[i])) == WS_OK &&
            (err = ws_db_bind_int64(st, 2, r->acked[j])) == WS_OK) {
            err = ws_db_run(st, NULL);
        }
        if (err != WS_OK) {
            return err;
        }
        i = j + 1;
    }
    return WS_OK;
}

/* Relay thread: delete the acknowledged rows when enough are owed, when the
 * oldest waited long enough, when nothing is in flight, or when a failing
 * delete's backoff is over -- unless the claim of this pass carries them
 * (carried). */
static void outbox_relay_delete_step(ws_outbox_relay *r, bool idle, bool carried,
                                     int64_t now_ms, int64_t *last_delete_ms)
{
    if (r->nacked == 0 || carried || outbox_fail_wait(&r->del_fail, now_ms) != 0) {
        return;
    }
    if (!(idle || r->nacked >= OUTBOX_DELETE_BATCH ||
          now_ms - *last_delete_ms >= OUTBOX_DELETE_MS || r->del_fail.delay_ms != 0)) {
        return;
    }
    qsort(r->acked, r->nacked, sizeof(r->acked[0]), outbox_id_cmp);
    ws_err err = ws_db_txn(r->db, outbox_relay_delete_txn, r);
    if (err == WS_OK) {
        r->nacked = 0;
        outbox_fail_clear(r, &r->del_fail, "delete", now_ms);
    } else {
        /* Tried again later; those rows may go out twice. */
        ws_counter_inc(r->delete_failures);
        outbox_fail_note(r, &r->del_fail, "delete", now_ms, err, r->nacked);
    }
    *last_delete_ms = now_ms;
}

static ws_err outbox_relay_give_back_txn(ws_db_conn *c, void *ctx)
{
    const ws_outbox_relay *r = ctx;
    for (size_t i = 0; i < r->ngive; i++) {
        ws_db_stmt *st = NULL;
        ws_err err = ws_db_prepare(
            c,
            "UPDATE outbox SET lease_until_ms = 0 WHERE id = $1 AND lease_until_ms = $2",
            &st);
        if (err == WS_OK &&
            (err = ws_db_bind_int64(st, 1, r->give_back[i].id)) == WS_OK &&
            (err = ws_db_bind_int64(st, 2, r->give_back[i].lease)) == WS_OK) {
            err = ws_db_run(st, NULL);
        }
        if (err != WS_OK) {
            return err;
        }
    }
    return WS_OK;
}

/* Relay thread: release the claimed rows that were not published, so that
 * the next claim (this relay's or another's) takes them at once. While that
 * fails the relay claims nothing and tries again with backoff (another
 * relay takes them when their lease runs out). */
static void outbox_relay_give_back(ws_outbox_relay *r, int64_t now_ms)
{
    if (r->ngive == 0 || outbox_fail_wait(&r->rel_fail, now_ms) != 0) {
        return;
    }
    ws_err err = ws_db_txn(r->db, outbox_relay_give_back_txn, r);
    if (err == WS_OK) {
        r->ngive = 0;
        outbox_fail_clear(r, &r->rel_fail, "release", now_ms);
    } else {
        outbox_fail_note(r, &r->rel_fail, "release", now_ms, err, r->ngive);
    }
}

/* What a claim transaction takes and gives back. */
typedef struct outbox_claim_ctx {
    ws_outbox_relay *r;
    int limit;
    int64_t now_wall_ms; /* rows whose lease ended before are free */
    int64_t lease;       /* lease_until_ms written in the claimed rows */
    bool gauges_due;     /* read the row gauges even after a claim that found rows */
    bool gauges_read;    /* OUT: rows and oldest_ms hold the table's state */
    int64_t rows, oldest_ms;
    bool with_delete; /* delete the acknowledged rows (sorted) first */
} outbox_claim_ctx;

static void outbox_batch_clear(ws_outbox_relay *r)
{
    for (size_t i = 0; i < r->nbatch; i++) {
        free(r->batch[i].mem);
    }
    r->nbatch = 0;
}

/* Copy a claimed row out of the statement (valid until its next step). */
static ws_err outbox_batch_add(ws_outbox_relay *r, const ws_outbox_row *row)
{
    size_t tl = strlen(row->topic) + 1, yl = strlen(row->type) + 1;
    size_t pl = row->traceparent != NULL ? strlen(row->traceparent) + 1 : 0;
    char *mem = malloc(tl + yl + pl + row->len + 1);
    if (mem == NULL) {
        return WS_ENOMEM;
    }
    memcpy(mem, row->topic, tl);
    memcpy(mem + tl, row->type, yl);
    if (pl > 0) {
        memcpy(mem + tl + yl, row->traceparent, pl);
    }
    memcpy(mem + tl + yl + pl, row->payload, row->len);
    outbox_claimed *b = &r->batch[r->nbatch++];
    b->mem = mem;
    b->row = *row;
    b->row.topic = mem;
    b->row.type = mem + tl;
    b->row.traceparent = pl > 0 ? mem + tl + yl : NULL;
    b->row.payload = mem + tl + yl + pl;
    return WS_OK;
}

/* The row gauges' inputs: rows waiting and the oldest created_ms. */
static ws_err outbox_gauges_read(ws_db_conn *c, int64_t *rows, int64_t *oldest_ms)
{
    ws_db_stmt *st = NULL;
    ws_err err = ws_db_prepare(c, "SELECT count(*), min(created_ms) FROM outbox", &st);
    bool row = false;
    if (err == WS_OK && (err = ws_db_step(st, &row)) == WS_OK) {
        if (row) {
            *rows = ws_db_column_int64(st, 0);
            *oldest_ms = ws_db_column_is_null(st, 1) ? 0 : ws_db_column_int64(st, 1);
        } else {
            err = WS_ESTORE;
        }
    }
    ws_db_reset(st);
    return err;
}

/* The claim (see OUTBOX_CLAIM_SQL); it may run more than once. */
static ws_err outbox_claim_txn(ws_db_conn *c, void *arg)
{
    outbox_claim_ctx *cc = arg;
    ws_outbox_relay *r = cc->r;
    outbox_batch_clear(r); /* an earlier attempt's rows */
    cc->gauges_read = false;
    if (cc->with_delete) {
        ws_err derr = outbox_relay_delete_txn(c, r);
        if (derr != WS_OK) {
            return derr;
        }
    }
    const char *sql = ws_db_has(c, WS_DB_SKIP_LOCKED)
                          ? OUTBOX_CLAIM_SQL(" FOR UPDATE SKIP LOCKED")
                          : OUTBOX_CLAIM_SQL("");
    ws_db_stmt *st = NULL;
    ws_err err = ws_db_prepare(c, sql, &st);
    if (err == WS_OK && (err = ws_db_bind_int64(st, 1, cc->lease)) == WS_OK &&
        (err = ws_db_bind_int64(st, 2, cc->now_wall_ms)) == WS_OK) {
        err = ws_db_bind_int64(st, 3, cc->limit);
    }
    bool more = err == WS_OK;
    while (more && (err = ws_db_step(st, &more)) == WS_OK && more) {
        ws_outbox_row row;
        if (r->nbatch >= (size_t)cc->limit) {
            err = WS_ESTORE; /* more rows than the LIMIT: cannot happen */
        } else if ((err = outbox_row_read(st, &row)) == WS_OK) {
            err = outbox_batch_add(r, &row);
        }
        if (err != WS_OK) {
            break;
        }
    }
    ws_db_reset(st);
    /* The gauges every OUTBOX_GAUGE_MS, and whenever the claim found
     * nothing (so that an emptied table shows at once); not on every claim
     * that took less than the room, which under load is nearly every one: a
     * count(*) per claim was a scan of the table per publish batch. */
    if (err == WS_OK && (cc->gauges_due || r->nbatch == 0)) {
        err = outbox_gauges_read(c, &cc->rows, &cc->oldest_ms);
        cc->gauges_read = err == WS_OK;
    }
    return err;
}

static void outbox_gauges_set(ws_outbox_relay *r, int64_t rows, int64_t oldest_ms,
                              int64_t now_ms)
{
    int64_t age_ms = rows > 0 ? ws_clock_wall_ms() - oldest_ms : 0;
    ws_gauge_set(r->rows_gauge, (double)rows);
    ws_gauge_set(r->oldest_gauge, age_ms > 0 ? (double)age_ms / 1000.0 : 0.0);
    r->gauges_ms = now_ms;
}

static int outbox_claimed_cmp(const void *a, const void *b)
{
    return outbox_id_cmp(&((const outbox_claimed *)a)->row.id,
                         &((const outbox_claimed *)b)->row.id);
}

/* Relay thread: publish the claimed rows in id order; those after a
 * publish that failed are given back. Returns that publish's error. */
static ws_err outbox_relay_publish_batch(ws_outbox_relay *r, int64_t lease)
{
    qsort(r->batch, r->nbatch, sizeof(r->batch[0]), outbox_claimed_cmp);
    ws_err err = WS_OK;
    for (size_t i = 0; i < r->nbatch; i++) {
        if (err == WS_OK) {
            err = outbox_relay_publish_row(r, &r->batch[i].row, lease);
        }
        if (err != WS_OK) {
            r->give_back[r->ngive++] = (outbox_lease){r->batch[i].row.id, lease};
        }
    }
    outbox_batch_clear(r);
    return err;
}

static ws_err outbox_claim_peek_txn(ws_db_conn *c, void *arg)
{
    outbox_claim_ctx *cc = arg;
    return outbox_gauges_read(c, &cc->rows, &cc->oldest_ms);
}

/* Relay thread, the bus down: nothing is claimed (another relay may
 * publish the rows), but the gauges stay fresh and an empty table still
 * counts as drained (*looked). */
static ws_err outbox_relay_peek(ws_outbox_relay *r, int64_t now_ms, bool *looked)
{
    if (r->gauges_ms != 0 && now_ms - r->gauges_ms < OUTBOX_GAUGE_MS) {
        return WS_EUNAVAIL;
    }
    outbox_claim_ctx cc = {.r = r};
    ws_db_txn_opts to = {.read_only = true};
    ws_err err = ws_db_txn_with(r->db, &to, outbox_claim_peek_txn, &cc);
    if (err != WS_OK) {
        outbox_fail_note(r, &r->claim_fail, "claim", now_ms, err, 0);
        return err;
    }
    outbox_fail_clear(r, &r->claim_fail, "claim", now_ms);
    outbox_gauges_set(r, cc.rows, cc.oldest_ms, now_ms);
    *looked = cc.rows == 0;
    return cc.rows == 0 ? WS_OK : WS_EUNAVAIL;
}

/* Whether the claim of this pass (room rows, the bus up, no failing claim
 * backing off) takes the acknowledged rows' delete into its transaction:
 * some are owed and no delete is failing. */
static bool outbox_relay_carries_delete(const ws_outbox_relay *r, int room,
                                        int64_t now_ms)
{
    return room > 0 && r->nacked > 0 && r->del_fail.delay_ms == 0 &&
           outbox_fail_wait(&r->claim_fail, now_ms) == 0 && ws_bus_connected(r->bus);
}

/* Relay thread: claim up to room rows and publish them (unless a failing
 * claim is backing off: then WS_EIO, "not drained"), with the owed deletes
 * in the same transaction when carry (outbox_relay_carries_delete, decided
 * once per pass by the caller). *looked: the table was read; *full: the
 * claim took all the room (more may be waiting); a delete it carried (or
 * ran) sets *last_delete_ms. WS_OK when room is 0. */
static ws_err outbox_relay_claim_step(ws_outbox_relay *r, int room, bool carry,
                                      int64_t now_ms, bool *looked, bool *full,
                                      int64_t *last_delete_ms)
{
    *looked = *full = false;
    if (room <= 0) {
        return WS_OK;
    }
    if (outbox_fail_wait(&r->claim_fail, now_ms) != 0) {
        return WS_EIO;
    }
    if (!ws_bus_connected(r->bus)) {
        return outbox_relay_peek(r, now_ms, looked);
    }
    int64_t wall = ws_clock_wall_ms();
    outbox_claim_ctx cc = {.r = r,
                           .limit = room,
                           .now_wall_ms = wall,
                           .lease = wall + r->lease_ms,
                           .gauges_due = now_ms - r->gauges_ms >= OUTBOX_GAUGE_MS};
    if (carry) {
        qsort(r->acked, r->nacked, sizeof(r->acked[0]), outbox_id_cmp);
        cc.with_delete = true;
    }
    ws_err err = ws_db_txn(r->db, outbox_claim_txn, &cc);
    if (err != WS_OK && cc.with_delete) {
        /* Each alone, the delete first, as before the two were one. */
        cc.with_delete = false;
        outbox_relay_delete_step(r, true, false, now_ms, last_delete_ms);
        err = ws_db_txn(r->db, outbox_claim_txn, &cc);
    }
    if (err != WS_OK) {
        outbox_batch_clear(r);
        outbox_fail_note(r, &r->claim_fail, "claim", now_ms, err, (size_t)room);
        return err;
    }
    if (cc.with_delete) {
        r->nacked = 0;
        *last_delete_ms = now_ms;
    }
    outbox_fail_clear(r, &r->claim_fail, "claim", now_ms);
    if (cc.gauges_read) {
        outbox_gauges_set(r, cc.rows, cc.oldest_ms, now_ms);
    }
    *looked = true;
    *full = r->nbatch == (size_t)room;
    return outbox_relay_publish_batch(r, cc.lease);
}

/* What one pass of the relay loop saw, for the decision to wait. */
typedef struct outbox_pass {
    uint64_t seen; /* kick_seq before the pass */
    int room;
    ws_err err; /* of the claim step */
    bool looked, full;
    bool delete_failed;
    int64_t now_ms;
} outbox_pass;

/* After a pass (mu held): tell flush when the table is drained, then wait
 * unless there is work at once. */
static void outbox_relay_rest(ws_outbox_relay *r, const outbox_pass *p)
{
    outbox_relay_ring_advance(r);
    bool deletes_owed = r->nacked > 0;
    if (p->room > 0 && p->err == WS_OK && p->looked && !p->full && r->inflight == 0 &&
        r->head == r->tail && !deletes_owed && r->ngive == 0 && !r->failed) {
        r->drained_seq = p->seen;
        pthread_cond_broadcast(&r->drained);
    }
    bool work = r->stop || (r->failed && r->inflight == 0) || r->kick_seq != p->seen ||
                (r->ngive > 0 && r->rel_fail.delay_ms == 0) ||
                (p->full && !r->failed && outbox_relay_room(r) > 0) ||
                (deletes_owed && r->inflight == 0 && !p->delete_failed);
    if (work) {
        return;
    }
    int64_t ms = (p->err == WS_OK && !p->delete_failed) ? r->poll_ms : OUTBOX_RETRY_MS;
    if (deletes_owed && ms > OUTBOX_DELETE_MS) {
        ms = OUTBOX_DELETE_MS;
    }
    /* A failing delete, claim or release waits for its backoff, whatever
     * else would wake the loop sooner. */
    int64_t del_wait = outbox_fail_wait(&r->del_fail, p->now_ms);
    int64_t claim_wait = outbox_fail_wait(&r->claim_fail, p->now_ms);
    if (p->delete_failed && deletes_owed && del_wait > ms) {
        ms = del_wait;
    }
    if (r->claim_fail.delay_ms != 0 && claim_wait > ms) {
        ms = claim_wait;
    }
    if (r->ngive > 0) {
        /* Nothing else goes on until the release works: try at its time. */
        ms = outbox_fail_wait(&r->rel_fail, p->now_ms);
    }
    struct timespec ts = ws_clock_mono_after(ms);
    pthread_cond_timedwait(&r->wake, &r->mu, &ts);
}

static void *outbox_relay_main(void *arg)
{
    ws_outbox_relay *r = arg;
    int64_t last_delete_ms = ws_clock_mono_ms();

    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        if (r->failed && r->inflight == 0) {
            outbox_relay_settle(r);
        }
        outbox_relay_ring_advance(r);
        bool idle = r->inflight == 0;
        outbox_pass p = {.seen = r->kick_seq,
                         .room = r->failed ? 0 : outbox_relay_room(r)};
        pthread_mutex_unlock(&r->mu);

        p.now_ms = ws_clock_mono_ms();
        outbox_relay_give_back(r, p.now_ms);
        if (r->ngive > 0) {
            p.room = 0; /* the rows given back first */
        }
        bool carried = outbox_relay_carries_delete(r, p.room, p.now_ms);
        outbox_relay_delete_step(r, idle, carried, p.now_ms, &last_delete_ms);
        p.err = outbox_relay_claim_step(r, p.room, carried, p.now_ms, &p.looked, &p.full,
                                        &last_delete_ms);
        p.delete_failed = r->del_fail.delay_ms != 0;

        pthread_mutex_lock(&r->mu);
        outbox_relay_rest(r, &p);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* The relay's metrics, in the registry m. */
static void outbox_relay_metrics(ws_outbox_relay *r, ws_metrics *m)
{
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
    r->failing_gauge = ws_gauge_get(
        m, "webshop_outbox_store_failing",
        "Kinds of outbox database work (delete, claim, release) failing now", NULL);
    r->rows_gauge =
        ws_gauge_get(m, "webshop_outbox_rows",
                     "Outbox rows waiting to be published (every relay's), as "
                     "of the relay's last look at the table",
                     NULL);
    r->oldest_gauge = ws_gauge_get(
        m, "webshop_outbox_oldest_age_seconds",
        "Age of the oldest outbox row waiting, as of the relay's last look at "
        "the table (0 when none)",
        NULL);
}

/* The relay's buffers, sized by its window. */
static ws_err outbox_relay_alloc(ws_outbox_relay *r)
{
    size_t w = (size_t)r->window;
    r->acked_cap = 2 * w + OUTBOX_DELETE_BATCH;
    r->ring = calloc(w, sizeof(*r->ring));
    r->acked = calloc(r->acked_cap, sizeof(*r->acked));
    r->give_back = calloc(2 * w, sizeof(*r->give_back));
    r->batch = calloc(w, sizeof(*r->batch));
    return r->ring && r->acked && r->give_back && r->batch ? WS_OK : WS_ENOMEM;
}

ws_err ws_outbox_relay_open(const ws_outbox_relay_opts *opts, ws_outbox_relay **out)
{
    if (opts == NULL || opts->db == NULL || opts->bus == NULL || out == NULL ||
        (opts->n_types > 0 && opts->types == NULL) || opts->window < 0 ||
        opts->poll_ms < 0 || opts->lease_ms < 0) {
        return WS_EINVAL;
    }
    ws_outbox_relay *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        return WS_ENOMEM;
    }
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        goto fail_mu;
    }
    if (ws_clock_cond_init(&r->wake) != 0) {
        goto fail_wake;
    }
    if (ws_clock_cond_init(&r->drained) != 0) {
        goto fail_drained;
    }
    r->db = opts->db;
    r->bus = opts->bus;
    r->types = opts->types;
    r->n_types = opts->n_types;
    r->window = opts->window ? opts->window : OUTBOX_DEFAULT_WINDOW;
    r->poll_ms = opts->poll_ms ? opts->poll_ms : OUTBOX_DEFAULT_POLL_MS;
    r->lease_ms = opts->lease_ms ? opts->lease_ms : OUTBOX_DEFAULT_LEASE_MS;
    r->sole_relay = opts->sole_relay;
    if (outbox_relay_alloc(r) != WS_OK) {
        outbox_relay_free(r);
        return WS_ENOMEM;
    }
    outbox_relay_metrics(r, opts->metrics ? opts->metrics : ws_metrics_default());
    *out = r;
    return WS_OK;

fail_drained:
    pthread_cond_destroy(&r->wake);
fail_wake:
    pthread_mutex_destroy(&r->mu);
fail_mu:
    free(r);
    return WS_ENOMEM;
}

static ws_err outbox_leases_drop_txn(ws_db_conn *c, void *arg)
{
    int64_t *n = arg;
    ws_db_stmt *s = NULL;
    ws_err err = ws_db_prepare(
        c, "UPDATE outbox SET lease_until_ms = 0 WHERE lease_until_ms > 0", &s);
    return err == WS_OK ? ws_db_run(s, n) : err;
}

ws_err ws_outbox_relay_start(ws_outbox_relay *r)
{
    if (r == NULL) {
        return WS_EINVAL;
    }
    if (r->sole_relay) {
        int64_t n = 0;
        ws_err err = ws_db_txn(r->db, outbox_leases_drop_txn, &n);
        if (err != WS_OK) {
            ws_log_warn("outbox_leases_drop_failed", "err=%s", ws_errname(err));
        } else if (n > 0) {
            ws_log_info("outbox_leases_dropped", "rows=%lld", (long long)n);
        }
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
    struct timespec ts = ws_clock_mono_after(timeout_ms);
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
    outbox_batch_clear(r);

    pthread_mutex_lock(&r->mu);
    r->closed = true;
    bool last = r->inflight == 0;
    pthread_mutex_unlock(&r->mu);
    if (last) {
        outbox_relay_free(r);
    }
}
