/*
 * sd_notify adapter; see notify.h. The protocol is sd_notify(3)'s, which
 * systemd documents as stable and meant to be spoken without libsystemd:
 * one datagram of "KEY=VALUE" lines to the AF_UNIX socket named in
 * $NOTIFY_SOCKET (a path, or "@name" in the abstract namespace), and the
 * watchdog period in $WATCHDOG_USEC (for $WATCHDOG_PID only, when set).
 * Speaking it here instead of linking libsystemd keeps libsystemd and the
 * five libraries it loads (~0.8 MB of RSS) out of every service. This
 * module adds the watchdog's rate limit, so that a loop turning every 100 ms
 * sends one datagram per half period.
 */
#include "notify.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

static pthread_once_t notify_once = PTHREAD_ONCE_INIT;
static bool notify_on;                 /* NOTIFY_SOCKET names a socket we can use */
static struct sockaddr_un notify_addr; /* the manager's socket */
static socklen_t notify_addr_len;
static uint64_t notify_period_us; /* half of WATCHDOG_USEC; 0 = no watchdog */
static _Atomic int64_t notify_last_ms = INT64_MIN; /* last beat, monotonic ms */

/* The manager's address from NOTIFY_SOCKET into notify_addr; false when
 * unset, or not a path or abstract name that fits (systemd's vsock form
 * is not spoken here). */
static bool notify_addr_parse(void)
{
    const char *name = getenv("NOTIFY_SOCKET");
    size_t len = name != NULL ? strlen(name) : 0;
    memset(&notify_addr, 0, sizeof(notify_addr));
    notify_addr.sun_family = AF_UNIX;
    if (len < 2 || len >= sizeof(notify_addr.sun_path) ||
        (name[0] != '/' && name[0] != '@')) {
        return false;
    }
    memcpy(notify_addr.sun_path, name, len);
    if (name[0] == '@') {
        notify_addr.sun_path[0] = '\0'; /* abstract: the length counts */
    }
    notify_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    return true;
}

/* WATCHDOG_USEC when the watchdog is meant for this process, else 0
 * (sd_watchdog_enabled's rule: WATCHDOG_PID, when set, must be ours). */
static uint64_t notify_watchdog_usec(void)
{
    const char *usec = getenv("WATCHDOG_USEC");
    const char *pid = getenv("WATCHDOG_PID");
    char *end = NULL;
    if (usec == NULL || usec[0] == '\0') {
        return 0;
    }
    errno = 0;
    unsigned long long v = strtoull(usec, &end, 10);
    if (errno != 0 || *end != '\0' || usec[0] == '-') {
        return 0;
    }
    if (pid != NULL && pid[0] != '\0') {
        long p = strtol(pid, &end, 10);
        if (*end != '\0' || p != (long)getpid()) {
            return 0;
        }
    }
    return (uint64_t)v;
}

static void notify_init(void)
{
    notify_on = notify_addr_parse();
    const char *name = getenv("NOTIFY_SOCKET");
    if (!notify_on && name != NULL && name[0] != '\0') {
        ws_log_warn("notify_unsupported", "socket=%.108s", name);
    }
    notify_period_us = 0;
    /* The variables stay set, for a re-exec. */
    uint64_t usec = notify_on ? notify_watchdog_usec() : 0;
    if (usec > 0) {
        notify_period_us = usec / 2 > 0 ? usec / 2 : 1;
    }
    atomic_store(&notify_last_ms, INT64_MIN);
}

/* One datagram to the manager; 0 or a negative errno. */
static int notify_datagram(const char *state)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
                       (const struct sockaddr *)&notify_addr, notify_addr_len);
    int rc = n < 0 ? -errno : 0;
    close(fd);
    return rc;
}

static void notify_send(const char *state)
{
    pthread_once(&notify_once, notify_init);
    if (!notify_on) {
        return;
    }
    int rc = notify_datagram(state);
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
