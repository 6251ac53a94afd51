/*
 * sd_notify adapter; see notify.h. libsystemd does the socket work
 * (abstract and path sockets, credentials); this module adds the watchdog's
 * rate limit, so that a loop turning every 100 ms sends one datagram per
 * half period, and keeps libsystemd's types and codes out of our headers.
 */
#include "notify.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

static pthread_once_t notify_once = PTHREAD_ONCE_INIT;
static bool notify_on;              /* NOTIFY_SOCKET is set */
static uint64_t notify_period_us;   /* half of WATCHDOG_USEC; 0 = no watchdog */
static _Atomic int64_t notify_last_ms = INT64_MIN; /* last beat, monotonic ms */

static void notify_init(void)
{
    const char *sock = getenv("NOTIFY_SOCKET");
    notify_on = sock != NULL && sock[0] != '\0';
    notify_period_us = 0;
    uint64_t usec = 0;
    /* unset_environment = 0: the variables stay for a re-exec. */
    if (notify_on && sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        notify_period_us = usec / 2 > 0 ? usec / 2 : 1;
    }
    atomic_store(&notify_last_ms, INT64_MIN);
}

static void notify_send(const char *state)
{
    pthread_once(&notify_once, notify_init);
    if (!notify_on) {
        return;
    }
    int rc = sd_notify(0, state);
    if (rc < 0) {
        ws_log_warn("notify_failed", "state=%.32s error=%d", state, -rc);
    }
}

void ws_notify_ready(void)
{
    char msg[64];
    snprintf(msg, sizeof(msg), "READY=1\nMAINPID=%ld", (long)getpid());
    notify_send(msg);
}

uint64_t ws_notify_watchdog_period_us(void)
{
    pthread_once(&notify_once, notify_init);
    return notify_period_us;
}

void ws_notify_watchdog(void)
{
    uint64_t period_us = ws_notify_watchdog_period_us();
    if (period_us == 0) {
        return;
    }
    int64_t now = ws_clock_mono_ms();
    int64_t last = atomic_load_explicit(&notify_last_ms, memory_order_relaxed);
    if (last != INT64_MIN && (uint64_t)(now - last) * 1000u < period_us) {
        return;
    }
    /* One sender per period even if two loops race here. */
    if (!atomic_compare_exchange_strong(&notify_last_ms, &last, now)) {
        return;
    }
    notify_send("WATCHDOG=1");
}

void ws_notify_loop_hook(void *ctx)
{
    (void)ctx;
    ws_notify_watchdog();
}

void ws_notify_stopping(void)
{
    notify_send("STOPPING=1");
}

void ws_notify_status(const char *fmt, ...)
{
    char msg[sizeof("STATUS=") + 255]; /* 255 bytes of text and a NUL */
    int n = snprintf(msg, sizeof(msg), "STATUS=");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    notify_send(msg);
}

void ws_notify_reset(void)
{
    notify_once = (pthread_once_t)PTHREAD_ONCE_INIT;
}
