/* The service clocks (clock.h). */
#include "clock.h"

#include <errno.h>
#include <stdatomic.h>

/* ws_clock_test_offset's offset: 0 except in tests. */
static _Atomic int64_t clock_wall_offset_ms;

int64_t ws_clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
           atomic_load_explicit(&clock_wall_offset_ms, memory_order_relaxed);
}

int64_t ws_clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double ws_clock_mono_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void ws_clock_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000),
                          .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

struct timespec ws_clock_mono_after(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ms < 0) {
        ms = 0;
    }
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int ws_clock_cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t ca;
    int rc = pthread_condattr_init(&ca);
    if (rc != 0) {
        return rc;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(cv, &ca);
    pthread_condattr_destroy(&ca);
    return rc;
}

int64_t ws_clock_watch_step(ws_clock_watch *w, int64_t *wall_ms)
{
    int64_t mono = ws_clock_mono_ms();
    int64_t wall = ws_clock_wall_ms();
    int64_t skew = w->started ? (wall - w->wall_ms) - (mono - w->mono_ms) : 0;
    w->wall_ms = wall;
    w->mono_ms = mono;
    w->started = 1;
    if (wall_ms != NULL) {
        *wall_ms = wall;
    }
    return skew;
}

void ws_clock_test_offset(int64_t offset_ms)
{
    atomic_store_explicit(&clock_wall_offset_ms, offset_ms, memory_order_relaxed);
}
