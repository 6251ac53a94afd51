/*
 * The inventory's domain: stock reservations on a ws_db (SQLite or
 * PostgreSQL), each decision in one transaction together with the events it
 * queues in the outbox. The SQL is behind the ports of stock_db.h; this
 * module only decides.
 *
 * Order ids: any case is accepted and means the same order; every id that
 * comes in (OrderSent, OrderCanceled, GetReservation) is normalized with
 * ws_uuid_normalize, and the lower-case form is what is stored, published
 * and answered. An upper-case OrderSent and a lower-case OrderCanceled of the
 * same UUID hit the same record.
 *
 * Many writers (several threads, or replicas on one PostgreSQL): every
 * "first time" is a unique key. OrderSent first records the reservation
 * under its order id (INSERT ... ON CONFLICT DO NOTHING); the one event
 * that recorded it decides, and any other for the same id -- a duplicate,
 * even one running at the same moment on another connection -- finds the
 * record and re-queues what it says. A cancel that finds no record leaves
 * a tombstone the same way.
 *
 * OrderSent reserves every item or none: each line is taken with one
 * statement that moves stock only when `balance >= count` holds in it, so
 * two orders racing for the last units can never oversell. Lines are taken
 * in product-id order (two multi-line orders on PostgreSQL then lock their
 * rows in the same order and cannot deadlock); when one cannot be had, the
 * lines already taken are put back in the same transaction and the record
 * becomes rejected. (Undoing rather than a savepoint: inside a consumer's
 * group the transaction already is a savepoint of the group's, lib/db has
 * no nested one to offer, and the undo is the same restock port a release
 * uses; nobody sees the units meanwhile, since a PostgreSQL row stays
 * locked until commit and SQLite has one writer.) InStock or OutOfStock is
 * queued, plus one StockChanged per product whose balance moved.
 *
 * A repeated OrderSent changes nothing and re-queues the *current* state of
 * the record, never a stale outcome:
 *   reserved                 -> InStock
 *   rejected                 -> OutOfStock with the recorded reason
 *   released by a cancel     -> nothing at all (the order is canceled; no
 *                               event may say it is in stock)
 *   released as an orphan    -> OutOfStock "reservation released: the order
 *                               service did not know the order within N s"
 *   tombstoned               -> OutOfStock "canceled"; never reserved
 *
 * OrderCanceled releases a reservation exactly once, restoring the balances
 * (StockChanged queued): the status moves reserved -> released in one
 * conditional statement, and only the caller whose statement moved it puts
 * the items back. A cancel for an order not seen yet leaves a
 * tombstone: a later OrderSent for that id is never reserved; it gets an
 * OutOfStock with reason "canceled", so every OrderSent has an outcome (the
 * order service ranks CANCELED above UNSUCCESSFUL, so this is harmless).
 *
 * Tombstones are bounded in time: inv_stock_tombstones_expire (run by the
 * sweeper, inventory/sweeper.h, with --tombstone-ttl, default 24 h) deletes
 * tombstones older than the bound. Consequence: a cancel older than the
 * bound whose order never came is forgotten; if that order's OrderSent
 * arrives later still, it is reserved like a new order. Tombstones exist
 * only for bus races (a cancel overtaking its order by milliseconds to
 * seconds), so a day is far beyond any real race, and the order service's
 * cancel recovery re-sends OrderCanceled for a canceled order until
 * GetReservation shows nothing held.
 *
 * Orphan reservations (an OrderSent the inventory got and the order service
 * never recorded, e.g. lost with a killed broker) are found by the sweep:
 * inv_stock_orphan_candidates lists reservations still held, not yet
 * confirmed, and older than orphan_after_ms (--orphan-after-ms, default
 * 120 s); the sweeper asks Orders.GetOrder for each, outside any
 * transaction, and inv_stock_orphan_settle applies the answer: found ->
 * confirmed (never asked again); NOT_FOUND -> released in one transaction
 * exactly as a cancel releases (balances restored, StockChanged queued),
 * recorded as release kind "orphan" with the reason above; no answer ->
 * left for the next pass.
 *
 * Why this cannot release an order that got 201: the front answers 201 only
 * after the order service committed the order, and it waits for that commit
 * for at most its bounded wait (about 2 s) after publishing the OrderSent,
 * which is before the inventory reserved it. A reservation older than the
 * bound therefore belongs to an order that, if it got 201, was committed
 * before the question is asked, and GetOrder finds it (rows the order
 * service created from an outcome event are found too). orphan_after_ms must
 * stay well above the front's wait; 120 s is 60 times the default. An order
 * whose OrderSent reached the order service only after the bound (it got
 * 202, or was lost and re-POSTed late) finds its reservation released: the
 * order service's re-sent OrderSent is a duplicate here and gets the
 * OutOfStock above, so the order ends UNSUCCESSFUL and the stock stays
 * consistent. GetReservation answers such a record RELEASED with that
 * reason (a cancel's release has an empty reason).
 *
 * Invariant for every product at every moment:
 * balance + items held by reservations in status reserved = stock_added.
 *
 * The event decisions (inv_stock_order_sent, inv_stock_order_canceled) run
 * in a transaction on the caller's connection (ws_db_conn_txn: a savepoint
 * when the caller has a group open, ws_db_group_begin); everything else
 * takes the pool and runs its own transaction on a connection of it (the
 * reads read-only). Every function runs on the caller's thread; any number
 * of threads and processes may work on the same database, each thread on
 * its own connection. READ COMMITTED is enough on PostgreSQL (stock_db.h
 * says why).
 */
#ifndef INV_STOCK_H
#define INV_STOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "uuid_text.h"
#include "webshop/v1/events.facts.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/inventory.pb-c.h"
#include "webshop/v1/order.facts.h"

/* Topics (events.facts.h) and an order's limits (order.facts.h) come from
 * the contract: WEBSHOP_V1_*_TOPIC, WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS, ... */

/* Room for a rejection reason. */
#define INV_REASON_LEN 96

/* The message types the inventory puts in its outbox, for the relay. */
extern const ProtobufCMessageDescriptor *const inv_outbox_types[];
extern const size_t inv_outbox_n_types;

/* What handling one OrderSent did. */
typedef enum inv_order_action {
    INV_ORDER_RESERVED,           /* every item reserved now; InStock queued */
    INV_ORDER_REJECTED,           /* rejected now, nothing held; OutOfStock queued */
    INV_ORDER_DUPLICATE,          /* already reserved or rejected: that outcome
                                     re-queued (InStock, or OutOfStock + reason) */
    INV_ORDER_TOMBSTONED,         /* canceled before it came; OutOfStock "canceled" */
    INV_ORDER_BAD_ID,             /* the order id is not a UUID: nothing recorded;
                                     OutOfStock "bad order id" queued if the id is
                                     printable and at most 64 bytes, else nothing */
    INV_ORDER_DUPLICATE_CANCELED, /* released by a cancel: nothing queued */
    INV_ORDER_DUPLICATE_ORPHAN,   /* released as an orphan: OutOfStock with
                                     the release reason queued */
} inv_order_action;

/* Number of inv_order_action values, for tables indexed by them. */
#define INV_ORDER_N_ACTIONS 7

typedef struct inv_order_outcome {
    inv_order_action action;
    Webshop__V1__ReservationStatus status; /* recorded status after the call */
    char reason[INV_REASON_LEN];           /* rejection reason, "" otherwise */
    char order_id[WS_UUID_TEXT_LEN];       /* the id as stored (lower case);
                                              "" for INV_ORDER_BAD_ID */
    size_t n_items;
    size_t n_queued; /* events queued in the outbox */
    /* With inv_stock_opts.defer_changed: the products whose balance moved
     * (ascending, each once), whose StockChanged the caller owes. */
    int32_t moved[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS];
    size_t n_moved;
} inv_order_outcome;

/* What handling one OrderCanceled did. */
typedef enum inv_cancel_action {
    INV_CANCEL_RELEASED,   /* a reservation was released; StockChanged queued */
    INV_CANCEL_TOMBSTONED, /* order not seen yet: tombstone left */
    INV_CANCEL_NOOP,       /* already released, tombstoned, or rejected */
} inv_cancel_action;

/* Number of inv_cancel_action values. */
#define INV_CANCEL_N_ACTIONS 3

typedef struct inv_cancel_outcome {
    inv_cancel_action action;
    Webshop__V1__ReservationStatus status; /* recorded status after the call */
    char order_id[WS_UUID_TEXT_LEN];       /* the id as stored (lower case) */
    size_t n_queued;
    int32_t moved[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS]; /* as in inv_order_outcome */
    size_t n_moved;
} inv_cancel_outcome;

/* How an event decision runs; NULL means every field zero. */
typedef struct inv_stock_opts {
    /* Queue no StockChanged; list the products whose balance moved in the
     * outcome's moved[] instead. The caller then queues them, one per
     * product for any number of events, with inv_stock_changed_queue in
     * the same transaction (a group), before it commits. */
    bool defer_changed;
} inv_stock_opts;

/* Handle one OrderSent in one transaction on c (see the file comment). *out
 * (OUT) says what happened. WS_OK whenever the event was handled, rejected
 * orders included; WS_EINVAL for an event that could not be handled at all
 * (bad order id, see INV_ORDER_BAD_ID -- *out is still written); the
 * database's errors (WS_EBUSY, WS_EUNAVAIL, WS_EIO, WS_ESTORE, ...) with
 * nothing changed. */
ws_err inv_stock_order_sent(ws_db_conn *c, const Webshop__V1__OrderSent *ev,
                            inv_order_outcome *out /* OUT */);
ws_err inv_stock_order_sent_with(ws_db_conn *c, const Webshop__V1__OrderSent *ev,
                                 const inv_stock_opts *opts,
                                 inv_order_outcome *out /* OUT */);

/* Handle one OrderCanceled in one transaction on c. WS_EINVAL (nothing
 * changed, *out untouched) for an order id that is not a UUID; database
 * errors as above. */
ws_err inv_stock_order_canceled(ws_db_conn *c, const Webshop__V1__OrderCanceled *ev,
                                inv_cancel_outcome *out /* OUT */);
ws_err inv_stock_order_canceled_with(ws_db_conn *c, const Webshop__V1__OrderCanceled *ev,
                                     const inv_stock_opts *opts,
                                     inv_cancel_outcome *out /* OUT */);

/* Queue one StockChanged for each distinct product of ids[0..n), with the
 * balance this transaction sees, in one transaction on c (a savepoint in a
 * group). *n_queued (OUT) the events queued. Database errors as above,
 * with nothing queued. */
ws_err inv_stock_changed_queue(ws_db_conn *c, const int32_t *ids, size_t n,
                               size_t *n_queued /* OUT */);

/* The catalog ordered by id, read in a read-only transaction on db. On success *out is
 * malloc'ed with everything it points to; free it with
 * protobuf_c_message_free_unpacked(*out, NULL). */
ws_err inv_stock_catalog(ws_db *db, Webshop__V1__GetCatalogResponse **out /* OUT */);

/* One product, read and allocated as above. WS_ENOTFOUND for an unknown id. */
ws_err inv_stock_product(ws_db *db, int32_t id, Webshop__V1__Product **out /* OUT */);

/* What the inventory decided for order_id (any case; the answer carries
 * the lower-case id), read and allocated as above: status RESERVATION_UNKNOWN with
 * no items for an order never seen; reason set for a rejection or an
 * orphan release. WS_EINVAL for an order id that is not a UUID. */
ws_err inv_stock_reservation(ws_db *db, const char *order_id,
                             Webshop__V1__GetReservationResponse **out /* OUT */);

/* For tests and checks: *held (OUT) = units of product_id held by
 * reservations in status reserved; *balance and *added (OUT) its columns.
 * WS_ENOTFOUND for an unknown product. */
ws_err inv_stock_levels(ws_db *db, int32_t product_id, int64_t *balance /* OUT */,
                        int64_t *held /* OUT */, int64_t *added /* OUT */);

/* ---- the sweep's domain steps (called by inventory/sweeper.c) --------- */

/* One reservation the orphan sweep should ask the order service about. */
typedef struct inv_orphan_candidate {
    char order_id[WS_UUID_TEXT_LEN];
    int64_t created_ms; /* when it was reserved (wall clock, ms) */
} inv_orphan_candidate;

/* Write into out[0..limit) the reservations still held (status reserved),
 * not confirmed, and reserved at or before now_ms - orphan_after_ms, oldest
 * first; *n (OUT) how many. Reads only (a read-only transaction). WS_EINVAL for a
 * negative bound. */
ws_err inv_stock_orphan_candidates(ws_db *db, int64_t now_ms, int64_t orphan_after_ms,
                                   inv_orphan_candidate *out /* OUT */, size_t limit,
                                   size_t *n /* OUT */);

/* What the order service answered about an order. */
typedef enum inv_order_lookup {
    INV_LOOKUP_FOUND,     /* GetOrder answered the order */
    INV_LOOKUP_NOT_FOUND, /* GetOrder answered NOT_FOUND */
    INV_LOOKUP_FAILED,    /* no answer: unavailable, deadline, any other error */
} inv_order_lookup;

/* What settling one candidate did. */
typedef enum inv_orphan_action {
    INV_ORPHAN_CONFIRMED, /* the order service knows it: marked confirmed */
    INV_ORPHAN_RELEASED,  /* it does not: released as an orphan */
    INV_ORPHAN_LEFT,      /* no answer: left for the next pass */
    INV_ORPHAN_SKIPPED,   /* no longer a held, unconfirmed reservation older
                             than the bound (canceled meanwhile, already
                             settled, or too young): nothing done */
} inv_orphan_action;

typedef struct inv_orphan_outcome {
    inv_orphan_action action;
    char reason[INV_REASON_LEN]; /* the recorded release reason, "" otherwise */
    size_t n_items;              /* items whose stock came back (released) */
    size_t n_queued;             /* StockChanged events queued */
} inv_orphan_outcome;

/* Apply the order service's answer about order_id -- the id exactly as
 * inv_stock_orphan_candidates listed it (a record kept from before the id
 * rule may be stored in upper case: see schema.c) -- in one transaction
 * on db whose statements re-check the record (status reserved, not
 * confirmed, reserved at or before now_ms - orphan_after_ms, in the same
 * statement that moves it; otherwise INV_ORPHAN_SKIPPED):
 * FOUND marks it confirmed; NOT_FOUND releases it as a cancel would
 * (balances restored, StockChanged queued) with release kind "orphan" and
 * the reason "reservation released: the order service did not know the
 * order within N s" (orphan_after_ms written as s, or ms when not whole
 * seconds); FAILED changes nothing. *out (OUT) says what happened.
 * WS_EINVAL for a bad id or bound; database errors with nothing changed. */
ws_err inv_stock_orphan_settle(ws_db *db, const char *order_id, inv_order_lookup found,
                               int64_t now_ms, int64_t orphan_after_ms,
                               inv_orphan_outcome *out /* OUT */);

/* Delete at most limit tombstones recorded at or before now_ms - ttl_ms
 * (oldest first) in one transaction on db; *n_expired (OUT) how many. The id is
 * then forgotten: see the file comment for what that means. WS_EINVAL for
 * a negative ttl. */
ws_err inv_stock_tombstones_expire(ws_db *db, int64_t now_ms, int64_t ttl_ms,
                                   size_t limit, size_t *n_expired /* OUT */);

/* The wall clock stepped back (clock.h): the held, unconfirmed
 * reservations and the tombstones stamped more than WS_CLOCK_JUMP_MS after
 * now_ms were stamped by a clock ahead of ours; in one transaction they
 * are stamped now_ms, so their age (by which the sweep releases and
 * expires them) counts from now instead of staying negative for as long as
 * the jump was. Never makes a row look older than it is. *n (OUT) how many
 * rows. */
ws_err inv_stock_restamp_future(ws_db *db, int64_t now_ms, size_t *n /* OUT */);

#endif
