/*
 * The front's fan-out of live events to waiting Server-Sent-Events streams.
 * The bus network thread publishes every OrderStatusChanged and StockChanged
 * it receives into the hub; each open stream (one HTTP worker thread per
 * browser) holds a watch: the order ids it follows, whether it wants stock
 * changes, and a small bounded queue of pending events. Publishing never
 * blocks on a slow stream: a full queue marks the watch overflowed, and its
 * stream ends so the browser reconnects and starts from a fresh snapshot.
 * The number of watches is bounded, because each holds a worker thread.
 *
 * The same hub also serves waiters: a POST or DELETE /order that has just
 * published its event waits, within its own request, for the order service
 * to announce the commit (any OrderStatusChanged for the order, or one with
 * a given status). A waiter follows one id, keeps no queue (only the set of
 * statuses seen since it opened) and is not counted against the watches'
 * bound: it lives no longer than its request, so the HTTP worker threads
 * bound the waiters. Waiters are found by a hash of the id, so publishing
 * costs the same with one waiter or a thousand.
 * Thread-safe: one mutex for the hub, one condition variable per watch or
 * waiter.
 */
#ifndef FRONT_STATUS_STREAM_H
#define FRONT_STATUS_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "order_id.h"

/* Longest reason kept in an event, in bytes (cut at a UTF-8 boundary). */
#define STATUS_STREAM_REASON_MAX 255

/* Most order ids one watch follows. */
#define STATUS_STREAM_MAX_IDS 20

/* Events queued per watch before it overflows. */
#define STATUS_STREAM_QUEUE 64

typedef struct status_stream status_stream;
typedef struct status_watch status_watch;

typedef enum status_event_kind {
    STATUS_EVENT_ORDER = 1, /* an order's status changed */
    STATUS_EVENT_STOCK = 2, /* a product's balance changed */
} status_event_kind;

typedef struct status_event {
    status_event_kind kind;
    char order_id[ORDER_ID_LEN];               /* ORDER: lowercase UUID */
    int status;                                /* ORDER: webshop.v1.OrderStatus value */
    char reason[STATUS_STREAM_REASON_MAX + 1]; /* ORDER: NUL-terminated */
    int32_t product_id;                        /* STOCK */
    int32_t balance;                           /* STOCK */
} status_event;

/* What status_watch_next reports. */
typedef enum status_next {
    STATUS_NEXT_EVENT = 0,    /* *out holds the next event */
    STATUS_NEXT_TIMEOUT = 1,  /* nothing arrived in time */
    STATUS_NEXT_OVERFLOW = 2, /* events were dropped: the stream must end */
    STATUS_NEXT_CLOSED = 3,   /* the hub is shutting down: the stream must end */
} status_next;

/* A hub accepting at most max_watches open watches (>= 1). NULL on ENOMEM. */
status_stream *status_stream_new(int max_watches);

/* Free the hub. s may be NULL. Every watch must have been closed. */
void status_stream_free(status_stream *s);

/* Refuse new watches and wake every waiting one (its next call returns
 * STATUS_NEXT_CLOSED once its queue is drained). Call before stopping the
 * HTTP server, which waits for the streams' threads. Any thread; idempotent. */
void status_stream_shutdown(status_stream *s);

/* Queue an order's new status for every watch that follows order_id (any
 * case; ids that are not UUIDs are ignored). reason may be NULL. Never
 * blocks on a stream. Any thread. */
void status_stream_publish_order(status_stream *s, const char *order_id, int status,
                                 const char *reason);

/* Queue a stock change for every watch that wants stock. Any thread. */
void status_stream_publish_stock(status_stream *s, int32_t product_id, int32_t balance);

/* Open a watch on n ids (canonical UUIDs, any case; n <= STATUS_STREAM_MAX_IDS)
 * and, when stock is true, on every stock change. Events published after
 * this returns are queued for it. WS_EBUSY when max_watches are open,
 * WS_ECLOSED after shutdown, WS_EINVAL on a bad id or too many ids, WS_ENOMEM.
 * The caller owns *out and closes it with status_watch_close. */
ws_err status_watch_open(status_stream *s, const char *const *ids, size_t n, bool stock,
                         status_watch **out /* OUT */);

/* Take the next queued event, waiting at most timeout_ms. Events queued
 * before an overflow or a shutdown are still returned first. Only the
 * watch's owner calls it. */
status_next status_watch_next(status_watch *w, int timeout_ms,
                              status_event *out /* OUT */);

/* Close and free a watch; its slot is free again. w may be NULL. */
void status_watch_close(status_watch *w);

/* Open watches now (for metrics and tests). */
int status_stream_watches(status_stream *s);

/* ---- waiters -------------------------------------------------------------- */

typedef struct status_waiter status_waiter;

/* The status bit of a webshop.v1.OrderStatus value for status_waiter_wait's
 * want; STATUS_WANT_ANY: any status at all. */
#define STATUS_WANT(status) (1u << (unsigned)(status)) /* status in 0..30 */
#define STATUS_WANT_ANY (~0u)

/* Open a waiter on one order id (a canonical UUID, any case). Every status
 * published for that id after this returns is recorded for it. Not counted
 * against max_watches and never WS_EBUSY. WS_ECLOSED after shutdown,
 * WS_EINVAL on a bad id, WS_ENOMEM. The caller owns *out and closes it with
 * status_waiter_close. */
ws_err status_waiter_open(status_stream *s, const char *order_id,
                          status_waiter **out /* OUT */);

/* Wait at most timeout_ms (< 0 counts as 0) until a status whose
 * STATUS_WANT bit is in want has been published for the waiter's id since
 * it opened; returns at once if one already was. Returns STATUS_NEXT_EVENT
 * and writes that status into *status (when status is not NULL; the
 * highest such value if several), STATUS_NEXT_TIMEOUT, or
 * STATUS_NEXT_CLOSED when the hub is shutting down. Statuses outside 0..30
 * share bit 31 (reported as -1; STATUS_WANT_ANY includes it). Never busy
 * waits: it sleeps on the waiter's condition variable. Only the waiter's
 * owner calls it. */
status_next status_waiter_wait(status_waiter *w, unsigned want, int timeout_ms,
                               int *status /* OUT */);

/* Close and free a waiter. w may be NULL. */
void status_waiter_close(status_waiter *w);

/* Open waiters now (for metrics and tests). */
int status_stream_waiters(status_stream *s);

#endif
