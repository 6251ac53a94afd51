/*
 * The order service's event consumer: the four subscriptions (OrderSent on
 * public-front/order-send, CancelOrder on public-front/order-canceled,
 * InStock on inventory/on-stock, OutOfStock on inventory/out-of-stock), each
 * handler applying its event with orders.c on a connection of the
 * service's pool at the wall clock, logging one line per handled event, counting it, and
 * telling the outbox relay when rows were queued.
 *
 * Handlers run on the bus network thread; libmosquitto has acknowledged the
 * message before they run, so each commits before it returns. A handler that
 * cannot commit returns the database's error and the bus keeps the event and
 * retries it, reading nothing more from the broker meanwhile
 * (ws_bus_set_retry); an invalid event is dropped. What is lost anyway (a
 * crash, or a stop while an event is held) is healed by the recovery loops.
 */
#ifndef ORDER_CONSUMER_H
#define ORDER_CONSUMER_H

#include "bus.h"
#include "err.h"
#include "metrics.h"
#include "orders.h"
#include "db.h"

typedef struct order_consumer order_consumer;

typedef struct order_consumer_opts {
    ws_db *db; /* the service's pool; not owned, outlives the consumer */
    orders_policy policy;
    void (*queued)(void *ctx); /* rows were committed to the outbox; may be NULL */
    void *queued_ctx;
    ws_metrics *metrics; /* NULL = default registry */
} order_consumer_opts;

/* Create a consumer. */
ws_err order_consumer_open(const order_consumer_opts *opts,
                           order_consumer **out /* OUT */);

/* Subscribe the four topics on bus, with group commit and the retry policy
 * (ws_bus_set_batch, ws_bus_set_retry: both before ws_bus_start). With
 * share_group (a replica: --replica) as members of that MQTT v5 share
 * group, so each event goes to one replica; NULL: plain subscriptions. */
ws_err order_consumer_subscribe(order_consumer *c, ws_bus *bus, const char *share_group);

/* Free; c may be NULL. Close the bus first (no handler may be running, so
 * no connection is held). */
void order_consumer_close(order_consumer *c);

#endif
