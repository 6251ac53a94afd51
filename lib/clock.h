/*
 * The two clocks every service reads, once: wall-clock milliseconds (what is
 * stored in rows and events: created_ms, next_resend_ms, lease_until_ms;
 * they survive a restart and are compared across replicas, so they stay
 * wall clock) and monotonic milliseconds (what every in-process timer,
 * wait, backoff, timeout and duration is measured in), and a timespec
 * deadline for pthread_cond_timedwait on a condition variable set to
 * CLOCK_MONOTONIC (ws_clock_cond_init).
 *
 * The rule: nothing sleeps, waits or times out on the wall clock (a jump
 * would stretch or cut the wait by its size). A loop that compares stored
 * wall times with "now" reads the wall clock once per pass, bounds the rows
 * it acts on per pass, and paces its passes on the monotonic clock, so a
 * forward jump cannot make it act on more than its batch per interval. A
 * backward jump (deadlines written before it now lie too far ahead) is seen
 * with a ws_clock_watch, which compares the progress of both clocks between
 * two readings; the loop then reschedules what the old clock wrote.
 *
 * Tests move the wall clock with ws_clock_test_offset (the one test hook:
 * an offset added to every ws_clock_wall_ms reading, 0 in production).
 */
#ifndef WS_CLOCK_H
#define WS_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Milliseconds since the epoch (CLOCK_REALTIME, plus the test offset). */
int64_t ws_clock_wall_ms(void);

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t ws_clock_mono_ms(void);

/* Seconds of CLOCK_MONOTONIC, with its nanoseconds (durations in metrics
 * and logs). */
double ws_clock_mono_seconds(void);

/* CLOCK_MONOTONIC now plus ms, for pthread_cond_timedwait. */
struct timespec ws_clock_mono_after(int64_t ms);

/* Sleep ms milliseconds, all of them: a signal that interrupts the sleep
 * does not shorten it. For pacing a thread that has nothing to wait for;
 * a wait that something can end early is a cond wait instead. */
void ws_clock_sleep_ms(int64_t ms);

/* Initialise cv to wait on CLOCK_MONOTONIC. Returns pthread's result. */
int ws_clock_cond_init(pthread_cond_t *cv);

/* A wall-clock step larger than this between two readings of a
 * ws_clock_watch is a jump (NTP slews at most 0.5 ms/s; a pass is seconds
 * at most). */
#define WS_CLOCK_JUMP_MS 1000

/* Both clocks as last read; owned by one thread. Zero-initialise, then
 * ws_clock_watch_step at every pass. */
typedef struct ws_clock_watch {
    int64_t wall_ms;
    int64_t mono_ms;
    int started;
} ws_clock_watch;

/* Read both clocks into w and return how far the wall clock moved beyond
 * the monotonic one since the previous step (0 at the first): > 0 it
 * jumped forward, < 0 backward; |result| <= WS_CLOCK_JUMP_MS is no jump.
 * *wall_ms (OUT, may be NULL) is the wall reading. */
int64_t ws_clock_watch_step(ws_clock_watch *w, int64_t *wall_ms /* OUT */);

/* Test hook: from now on ws_clock_wall_ms reads offset_ms more than the
 * system clock (a wall-clock jump of offset_ms minus the previous offset).
 * Any thread; tests only. */
void ws_clock_test_offset(int64_t offset_ms);

#endif
