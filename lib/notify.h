/*
 * Service-manager notifications over sd_notify(3): READY=1 once a service
 * serves, WATCHDOG=1 heartbeats, STOPPING=1 at a stop, and a free-text
 * STATUS=. Every call is a no-op when NOTIFY_SOCKET is unset (a service
 * started by hand, by tools/webshop or by a test), so callers never check.
 *
 * The heartbeat is only as good as the place it is sent from: call
 * ws_notify_watchdog() from the loop whose progress shows the service does
 * its job (the bus network thread for a consumer: ws_bus_set_loop_hook
 * with ws_notify_loop_hook), never from a timer thread of its own, which
 * would beat on while that loop is stuck. It may be called on every turn:
 * it sends at most once per half of WATCHDOG_USEC (systemd's advice) and
 * not at all when the manager asked for no watchdog.
 *
 * Threads: any; the watchdog's rate limit is one atomic timestamp.
 */
#ifndef WS_NOTIFY_H
#define WS_NOTIFY_H

#include <stdint.h>

/* READY=1 (with MAINPID=our pid). Call once the service serves. */
void ws_notify_ready(void);

/* WATCHDOG=1 if the watchdog is on (WATCHDOG_USEC set, and WATCHDOG_PID
 * unset or ours) and half of WATCHDOG_USEC has passed since the last beat
 * sent; otherwise nothing. Cheap enough for every loop turn. */
void ws_notify_watchdog(void);

/* The same, shaped as a loop hook (ws_bus_set_loop_hook); ctx is unused. */
void ws_notify_loop_hook(void *ctx);

/* STOPPING=1. Call when a stop signal arrives, before tearing down. */
void ws_notify_stopping(void);

/* STATUS=<text>, printf-style; the text is cut at 255 bytes. */
void ws_notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The heartbeat period this process uses: half of WATCHDOG_USEC in
 * microseconds, 0 when the watchdog is off. Read from the environment once. */
uint64_t ws_notify_watchdog_period_us(void);

/* Read NOTIFY_SOCKET and WATCHDOG_USEC again (tests that change the
 * environment). Not while other threads notify. */
void ws_notify_reset(void);

#endif
