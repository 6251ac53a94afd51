/*
 * The inventory's event consumers: OrderSent (public-front/order-send) and
 * OrderCanceled (order/order-canceled) from the bus, each handled by the
 * domain module in one transaction whose outbox rows the relay is then
 * kicked to publish. One log line and one counter per handled event.
 *
 * Threads: the handlers run on the bus network thread, one at a time. A
 * group of events (ws_bus_set_batch) is applied on one connection of the
 * pool, taken at the group's begin and given back at its end, in one
 * transaction (ws_db_group_begin/_end; each event a savepoint of it); an
 * event outside a group takes a connection for its own transaction.
 */
#ifndef INV_EVENTS_H
#define INV_EVENTS_H

#include "bus.h"
#include "metrics.h"
#include "outbox.h"
#include "db.h"

typedef struct inv_events inv_events;

typedef struct inv_events_opts {
    ws_db *db;              /* the service's pool; not owned, must outlive ev */
    ws_outbox_relay *relay; /* kicked after each commit; not owned; may be NULL */
    ws_metrics *metrics;    /* NULL = default registry */
} inv_events_opts;

/* Create the consumers. With fault points compiled in (lib/fault.h),
 * WEBSHOP_FAULT=crash_after_reserve_commit makes the process exit
 * WS_FAULT_EXIT (9) right after a reservation commits, before the relay is
 * kicked. */
ws_err inv_events_open(const inv_events_opts *opts, inv_events **out /* OUT */);

/* Subscribe both topics on bus before ws_bus_start (it sets the group hooks and the retry
 * policy). With share_group (a replica: --replica) as members of that MQTT
 * v5 share group, so each event goes to one replica; NULL: plain
 * subscriptions. */
ws_err inv_events_subscribe(inv_events *ev, ws_bus *bus, const char *share_group);

/* Free. ev may be NULL. The bus must be closed first (no handler may be
 * running or come later; no group is open then). */
void inv_events_close(inv_events *ev);

#endif
