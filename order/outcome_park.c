/* The outcome park; see outcome_park.h. */
#include "outcome_park.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "clock.h"

typedef struct park_entry {
    outcome_parked e;
    int64_t due_ms; /* monotonic */
} park_entry;

/* A FIFO ring in the order outcomes came (one parked again after a failed
 * apply waits at the tail), filled by put and emptied by the thread, under
 * mu. */
struct outcome_park {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    park_entry ring[OUTCOME_PARK_MAX];
    size_t head, n;
    atomic_bool on; /* the thread runs; read without mu by running */
    bool stop;      /* the thread applies what is left and ends */
    pthread_t thread;
    outcome_park_apply_fn apply;
    void *ctx;
    ws_counter *parked;
};

ws_err outcome_park_open(ws_metrics *m, outcome_park_apply_fn apply, void *ctx,
                         outcome_park **out)
{
    if (apply == NULL || out == NULL) {
        return WS_EINVAL;
    }
    outcome_park *pk = calloc(1, sizeof *pk);
    if (pk == NULL) {
        return WS_ENOMEM;
    }
    pthread_mutex_init(&pk->mu, NULL);
    ws_clock_cond_init(&pk->cv);
    pk->apply = apply;
    pk->ctx = ctx;
    pk->parked = ws_counter_get(
        m != NULL ? m : ws_metrics_default(), "webshop_order_outcomes_parked_total",
        "Outcomes that came before their order was recorded and waited for it (replicas)",
        NULL);
    *out = pk;
    return WS_OK;
}

/* Append under mu; false when full. */
static bool park_push_locked(outcome_park *pk, const outcome_parked *e, int64_t wait_ms)
{
    if (pk->n >= OUTCOME_PARK_MAX) {
        return false;
    }
    park_entry *slot = &pk->ring[(pk->head + pk->n++) % OUTCOME_PARK_MAX];
    slot->e = *e;
    slot->due_ms = ws_clock_mono_ms() + wait_ms;
    pthread_cond_signal(&pk->cv);
    return true;
}

bool outcome_park_put(outcome_park *pk, const outcome_parked *e)
{
    if (pk == NULL || e == NULL) {
        return false;
    }
    pthread_mutex_lock(&pk->mu);
    bool taken = pk->on && !pk->stop && park_push_locked(pk, e, OUTCOME_PARK_MS);
    pthread_mutex_unlock(&pk->mu);
    if (taken) {
        ws_counter_inc(pk->parked);
    }
    return taken;
}

bool outcome_park_running(const outcome_park *pk)
{
    return pk != NULL && atomic_load(&pk->on);
}

/* Apply one entry outside mu, under its trace; park it again when the
 * database failed (unless stopping). */
static void park_apply(outcome_park *pk, park_entry *p, bool stopping)
{
    ws_trace_set_current(&p->e.trace);
    ws_err err = pk->apply(pk->ctx, &p->e);
    ws_trace_set_current(NULL);
    if (err == WS_OK || err == WS_EINVAL || stopping) {
        return;
    }
    pthread_mutex_lock(&pk->mu);
    (void)park_push_locked(pk, &p->e, OUTCOME_PARK_RETRY_MS);
    pthread_mutex_unlock(&pk->mu);
}

static void *park_main(void *arg)
{
    outcome_park *pk = arg;
    pthread_mutex_lock(&pk->mu);
    for (;;) {
        if (pk->n == 0) {
            if (pk->stop) {
                break;
            }
            pthread_cond_wait(&pk->cv, &pk->mu);
            continue;
        }
        park_entry p = pk->ring[pk->head];
        int64_t wait = p.due_ms - ws_clock_mono_ms();
        if (wait > 0 && !pk->stop) {
            struct timespec ts = ws_clock_mono_after(wait);
            pthread_cond_timedwait(&pk->cv, &pk->mu, &ts);
            continue;
        }
        pk->head = (pk->head + 1) % OUTCOME_PARK_MAX;
        pk->n--;
        bool stopping = pk->stop;
        pthread_mutex_unlock(&pk->mu);
        park_apply(pk, &p, stopping);
        pthread_mutex_lock(&pk->mu);
    }
    pthread_mutex_unlock(&pk->mu);
    return NULL;
}

void outcome_park_start(outcome_park *pk)
{
    if (pk == NULL || pk->on) {
        return;
    }
    pthread_mutex_lock(&pk->mu);
    pk->on = pthread_create(&pk->thread, NULL, park_main, pk) == 0;
    pthread_mutex_unlock(&pk->mu);
}

void outcome_park_close(outcome_park *pk)
{
    if (pk == NULL) {
        return;
    }
    if (pk->on) {
        pthread_mutex_lock(&pk->mu);
        pk->stop = true;
        pthread_cond_signal(&pk->cv);
        pthread_mutex_unlock(&pk->mu);
        pthread_join(pk->thread, NULL);
        pk->on = false;
    }
    pthread_cond_destroy(&pk->cv);
    pthread_mutex_destroy(&pk->mu);
    free(pk);
}
