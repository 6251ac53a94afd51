/*
 * The two clocks every service reads, once: wall-clock milliseconds (what is
 * stored in rows and events: created_ms, next_resend_ms) and monotonic
 * milliseconds (what deadlines, backoffs and durations are measured in),
 * and a timespec deadline for pthread_cond_timedwait on a condition
 * variable set to CLOCK_MONOTONIC (ws_clock_cond_init).
 */
#ifndef WS_CLOCK_H
#define WS_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

/* Milliseconds since the epoch (CLOCK_REALTIME). */
int64_t ws_clock_wall_ms(void);

/* Milliseconds of CLOCK_MONOTONIC. */
int64_t ws_clock_mono_ms(void);

/* CLOCK_MONOTONIC now plus ms, for pthread_cond_timedwait. */
struct timespec ws_clock_mono_after(int64_t ms);

/* Initialise cv to wait on CLOCK_MONOTONIC. Returns pthread's result. */
int ws_clock_cond_init(pthread_cond_t *cv);

#endif
