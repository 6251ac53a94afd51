/*
 * lib/clock: ws_clock_sleep_ms sleeps all of its time even while signals
 * keep interrupting it (a handler installed without SA_RESTART, so each
 * one ends nanosleep early with EINTR).
 */
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>

#include "clock.h"

static void clock_on_usr1(int sig)
{
    (void)sig;
}

typedef struct interrupter {
    pthread_t target;
    atomic_bool stop;
    atomic_int sent;
} interrupter;

/* Signals the target every millisecond until told to stop (bounded). */
static void *interrupter_main(void *arg)
{
    interrupter *in = arg;
    for (int i = 0; i < 10000 && !atomic_load(&in->stop); i++) {
        pthread_kill(in->target, SIGUSR1);
        atomic_fetch_add(&in->sent, 1);
        struct timespec ms = {.tv_nsec = 1000000L};
        nanosleep(&ms, NULL);
    }
    return NULL;
}

Test(clock, sleep_ms_sleeps_its_whole_time_through_signals)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = clock_on_usr1; /* no SA_RESTART */
    cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    interrupter in = {.target = pthread_self()};
    atomic_init(&in.stop, false);
    atomic_init(&in.sent, 0);
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, interrupter_main, &in), 0);

    int64_t t0 = ws_clock_mono_ms();
    ws_clock_sleep_ms(200);
    int64_t took = ws_clock_mono_ms() - t0;
    atomic_store(&in.stop, true);
    pthread_join(th, NULL);
    cr_expect_geq(took, 200, "slept %lld ms of 200", (long long)took);
    cr_expect_gt(atomic_load(&in.sent), 0);
}

Test(clock, sleep_ms_of_nothing_returns_at_once)
{
    int64_t t0 = ws_clock_mono_ms();
    ws_clock_sleep_ms(0);
    ws_clock_sleep_ms(-5);
    cr_expect_lt(ws_clock_mono_ms() - t0, 100);
}
