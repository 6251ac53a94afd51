/*
 * End-to-end order timing: every order the bench POSTs is recorded with the
 * time it was meant to be sent, and an MQTT subscriber on
 * `order/order-status` records when each order reached a final status
 * (SUCCESSFUL, UNSUCCESSFUL or CANCELED). Posts and events are matched by
 * order id afterwards, so an event that arrives before the POST's answer is
 * read still counts.
 */
#ifndef BENCH_ORDERS_H
#define BENCH_ORDERS_H

#include <stddef.h>
#include <stdint.h>

#include "hist.h"

typedef struct bench_orders bench_orders;

/*
 * Subscribe to order/order-status at QoS 1 on the broker at host:port as
 * user (NULL or empty: anonymous) with password; returns once the
 * subscription is acknowledged, NULL on failure (message on stderr).
 */
bench_orders *bench_orders_open(const char *host, int port, const char *user,
                                const char *password);

/* Disconnect and free o; NULL is allowed. */
void bench_orders_close(bench_orders *o);

/* Record that order id (len bytes) was POSTed at t_sent. Thread-safe. */
void bench_orders_posted(bench_orders *o, const char *id, size_t len, double t_sent);

/* Orders recorded so far. */
size_t bench_orders_count(bench_orders *o);

/* The id of recorded order i (< count); valid until the next posted call. */
const char *bench_orders_id(bench_orders *o, size_t i);

/*
 * Wait until as many final events arrived as orders were posted, or none
 * arrived for quiet_s seconds, or max_s seconds passed.
 */
void bench_orders_drain(bench_orders *o, double quiet_s, double max_s);

typedef struct bench_e2e {
    uint64_t posted;       /* orders of the phase */
    uint64_t completed;    /* of those, orders that reached a final status */
    uint64_t successful;   /* completed as SUCCESSFUL */
    uint64_t unsuccessful; /* completed as UNSUCCESSFUL (out of stock) */
    double per_sec;        /* completed / (last completion - phase start) */
    bench_hist hist;       /* POST sent -> final status event received */
} bench_e2e;

/* Match the orders recorded from index `from` on, of a phase started at t0. */
void bench_orders_match(bench_orders *o, size_t from, double t0, bench_e2e *out);

#endif
