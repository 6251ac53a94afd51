/*
 * The inventory's domain: stock reservations on a ws_store, each decision in
 * one SQLite transaction together with the events it queues in the outbox.
 *
 * OrderSent reserves every item or none: each decrement is the statement
 * `UPDATE products SET balance = balance - n WHERE id = ? AND balance >= n`,
 * so two orders racing for the last units can never oversell, and a failed
 * item rolls back the items before it (a savepoint). The outcome is recorded
 * under the order id and InStock or OutOfStock is queued, plus one
 * StockChanged per product whose balance moved. A repeated OrderSent
 * re-queues the recorded outcome and changes nothing else.
 *
 * OrderCanceled releases a reservation exactly once, restoring the balances
 * (StockChanged queued). A cancel for an order not seen yet leaves a
 * tombstone: a later OrderSent for that id is never reserved; it gets an
 * OutOfStock with reason "canceled", so every OrderSent has an outcome (the
 * order service ranks CANCELED above UNSUCCESSFUL, so this is harmless).
 *
 * Invariant for every product at every moment:
 * balance + items held by reservations in status reserved = stock_added.
 *
 * Every function takes the caller's store and runs on the caller's thread;
 * any number of threads may work on the same database file, each with its
 * own store.
 */
#ifndef INV_STOCK_H
#define INV_STOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/inventory.pb-c.h"

/* Topics the inventory publishes (through its outbox) and consumes. */
#define INV_TOPIC_ORDER_SENT     "public-front/order-send"
#define INV_TOPIC_ORDER_CANCELED "order/order-canceled"
#define INV_TOPIC_IN_STOCK       "inventory/on-stock"
#define INV_TOPIC_OUT_OF_STOCK   "inventory/out-of-stock"
#define INV_TOPIC_STOCK_CHANGED  "inventory/stock-changed"

/* Most items one order may hold; a larger order is rejected. */
#define INV_MAX_ITEMS 100

/* Room for a rejection reason. */
#define INV_REASON_LEN 96

/* The message types the inventory puts in its outbox, for the relay. */
extern const ProtobufCMessageDescriptor *const inv_outbox_types[];
extern const size_t inv_outbox_n_types;

/* What handling one OrderSent did. */
typedef enum inv_order_action {
    INV_ORDER_RESERVED,   /* every item reserved now; InStock queued */
    INV_ORDER_REJECTED,   /* rejected now, nothing held; OutOfStock queued */
    INV_ORDER_DUPLICATE,  /* already decided; the recorded outcome re-queued */
    INV_ORDER_TOMBSTONED, /* canceled before it came; OutOfStock "canceled" */
    INV_ORDER_BAD_ID,     /* the order id is not a UUID: nothing recorded;
                             OutOfStock "bad order id" queued if the id is
                             printable and at most 64 bytes, else nothing */
} inv_order_action;

typedef struct inv_order_outcome {
    inv_order_action action;
    Webshop__V1__ReservationStatus status; /* recorded status after the call */
    char reason[INV_REASON_LEN];           /* rejection reason, "" otherwise */
    size_t n_items;
    size_t n_queued; /* events queued in the outbox */
} inv_order_outcome;

/* What handling one OrderCanceled did. */
typedef enum inv_cancel_action {
    INV_CANCEL_RELEASED,   /* a reservation was released; StockChanged queued */
    INV_CANCEL_TOMBSTONED, /* order not seen yet: tombstone left */
    INV_CANCEL_NOOP,       /* already released, tombstoned, or rejected */
} inv_cancel_action;

typedef struct inv_cancel_outcome {
    inv_cancel_action action;
    Webshop__V1__ReservationStatus status; /* recorded status after the call */
    size_t n_queued;
} inv_cancel_outcome;

/* Handle one OrderSent in one transaction (see the file comment). *out
 * (OUT) says what happened. WS_OK whenever the event was handled, rejected
 * orders included; WS_EINVAL for an event that could not be handled at all
 * (bad order id, see INV_ORDER_BAD_ID -- *out is still written);
 * WS_EBUSY/WS_ESTORE/WS_ENOMEM from the store, with nothing changed. */
ws_err inv_stock_order_sent(ws_store *s, const Webshop__V1__OrderSent *ev,
                            inv_order_outcome *out /* OUT */);

/* Handle one OrderCanceled in one transaction. WS_EINVAL (nothing changed,
 * *out untouched) for an order id that is not a UUID; store errors as
 * above. */
ws_err inv_stock_order_canceled(ws_store *s, const Webshop__V1__OrderCanceled *ev,
                                inv_cancel_outcome *out /* OUT */);

/* The catalog ordered by id. On success *out is malloc'ed with everything
 * it points to; free it with protobuf_c_message_free_unpacked(*out, NULL). */
ws_err inv_stock_catalog(ws_store *s, Webshop__V1__GetCatalogResponse **out /* OUT */);

/* One product, allocated as above. WS_ENOTFOUND for an unknown id. */
ws_err inv_stock_product(ws_store *s, int32_t id, Webshop__V1__Product **out /* OUT */);

/* What the inventory decided for order_id, allocated as above: status
 * RESERVATION_UNKNOWN with no items for an order never seen. WS_EINVAL for
 * an order id that is not a UUID. */
ws_err inv_stock_reservation(ws_store *s, const char *order_id,
                             Webshop__V1__GetReservationResponse **out /* OUT */);

/* For tests and checks: *held (OUT) = units of product_id held by
 * reservations in status reserved; *balance and *added (OUT) its columns.
 * WS_ENOTFOUND for an unknown product. */
ws_err inv_stock_levels(ws_store *s, int32_t product_id, int64_t *balance /* OUT */,
                        int64_t *held /* OUT */, int64_t *added /* OUT */);

#endif
