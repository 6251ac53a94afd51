/*
 * The front's fan-out of live events to waiting Server-Sent-Events streams.
 * The bus network thread publishes every OrderStatusChanged and StockChanged
 * it receives into the hub; each open stream (one civetweb worker thread per
 * browser) holds a watch: the order ids it follows, whether it wants stock
 * changes, and a small bounded queue of pending events. Publishing never
 * blocks on a slow stream: a full queue marks the watch overflowed, and its
 * stream ends so the browser reconnects and starts from a fresh snapshot.
 * The number of watches is bounded, because each holds a worker thread.
 * Thread-safe: one mutex for the hub, one condition variable per watch.
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

#endif
