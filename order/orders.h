/*
 * The order domain on the service's own database: applying the four events
 * the order service consumes (OrderSent, InStock, OutOfStock, CancelOrder),
 * settling an outcome against the inventory's record, and answering the two
 * queries of the Orders RPC service.
 *
 * Order ids: any case is accepted and means the same order; every id that
 * comes in (events, GetOrder, page tokens) goes through ws_uuid_normalize and
 * the lower-case spelling is what is stored, published and answered.
 *
 * Status precedence (DESIGN.md "Flows and states"): CANCELED > SUCCESSFUL =
 * UNSUCCESSFUL > PENDING. Applying an event moves an order to the higher of
 * its current status and the event's status, so the final status does not
 * depend on arrival order. CANCELED is never left.
 *
 * Outcomes are checked, not trusted blindly (DESIGN.md "Flows and states,
 * one more rule"). An outcome (InStock/OutOfStock) is applied as it comes
 * only to a PENDING order whose items are known (its OrderSent came first,
 * the normal flow). Two cases instead mark the order for a check
 * (check_due_ms; the check itself, an Inventory.GetReservation call, is made
 * by the recovery loop, never on the bus thread):
 *  - a conflict: the order holds one outcome and receives the other; the
 *    status held stays until the check;
 *  - an outcome for an order whose items are not known (it arrived before
 *    the OrderSent, or the OrderSent was lost here): the order is created
 *    (or stays) PENDING until the check.
 * orders_settle applies the inventory's record: RESERVED makes the order
 * SUCCESSFUL, REJECTED UNSUCCESSFUL with the inventory's reason, RELEASED and
 * TOMBSTONED UNSUCCESSFUL with ORDERS_REASON_RELEASED (or leave it CANCELED),
 * RESERVATION_UNKNOWN leaves it as it is and asks again later (backoff of
 * the policy; after max_attempts the check is dropped, logged). Settling is
 * the one move allowed between SUCCESSFUL and UNSUCCESSFUL; it never leaves
 * CANCELED and never goes back to PENDING. The inventory records exactly one
 * outcome per order, so the record, not the order of arrival, decides.
 *
 * The reason is kept only while the status is UNSUCCESSFUL (a cancel clears
 * it), so the final reason, too, is independent of order.
 *
 * Tombstones. A CancelOrder for an order never seen creates a row that is
 * only a tombstone for bus races (the cancel overtook its OrderSent): it is
 * stored CANCELED, queues OrderCanceled (so the inventory leaves its own
 * tombstone and never reserves the late order) but no OrderStatusChanged,
 * since it is not an order. orders_get answers WS_ENOTFOUND for it and
 * orders_list skips it. Once its OrderSent (or an outcome) arrives it
 * becomes a real CANCELED order: visible, and its CANCELED status is queued
 * then. Tombstones are bounded: the recovery loop deletes tombstone-only
 * rows older than a bound (--tombstone-ttl, default 24 h) whose cancel the
 * inventory has confirmed (or that recovery gave up on) and whose items
 * check is over. Consequence: a cancel that overtook its OrderSent by more
 * than the bound is forgotten here. The late OrderSent creates a new PENDING
 * order; if the inventory still holds its own tombstone it refuses the order
 * (OutOfStock "canceled") and the order ends UNSUCCESSFUL holding nothing,
 * and if the inventory forgot it too (its --tombstone-ttl, same default) it
 * reserves and the order ends SUCCESSFUL. Either way both services agree.
 *
 * A row created by an OrderSent or an outcome is a real order and visible at
 * once (the inventory's orphan sweep and the front's GetOrder find it).
 *
 * An event for an unseen order creates the row; a late OrderSent fills in the
 * items of a row created by an outcome or a cancel and changes no status.
 * The first items recorded are kept; a later OrderSent with other items is a
 * conflict and changes nothing.
 *
 * Status events (what the front waits for): the first commit of every row
 * that is an order queues OrderStatusChanged in the same transaction
 * (PENDING for a row created by an OrderSent or an outcome), and so does
 * every later status change and a tombstone becoming an order; becoming
 * CANCELED also queues OrderCanceled on order/order-canceled. A duplicate
 * event changes nothing and queues nothing, with one exception: a duplicate
 * CancelOrder while the inventory has not yet confirmed the cancel re-queues
 * OrderCanceled. That costs one idempotent message at the inventory and
 * heals a lost OrderCanceled at once instead of at the next recovery pass;
 * once confirmed, a duplicate CancelOrder queues nothing.
 *
 * Many writers (several replicas on one PostgreSQL, or two connections):
 * every move above is one conditional statement of order_db.h (a status
 * moves only up in rank, the first event for an id is a unique key, the
 * lines are stored by whoever claims them first), so two events for one
 * order applied at the same moment end as they would one after the other,
 * in either order. A write that changed nothing means another event was
 * first: the row is read again and the rules above are applied to what is
 * there (an outcome that finds the other outcome asks the inventory, as
 * always).
 *
 * Time is a parameter (now_ms, Unix milliseconds) so tests need no clock.
 * Every function runs on the caller's connection and thread. The apply
 * functions and orders_settle run their own transaction on it
 * (ws_db_conn_txn: READ COMMITTED on PostgreSQL, which the conditional
 * statements make enough; inside a consumer's group commit a savepoint);
 * the caller holds no transaction open. orders_get and orders_list only
 * read, in the caller's transaction if one is open (a read-only one, for
 * the RPC handlers).
 */
#ifndef ORDER_ORDERS_H
#define ORDER_ORDERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "db.h"
#include "trace.h"
#include "uuid_text.h"
#include "webshop/v1/events.facts.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/inventory.facts.h"
#include "webshop/v1/inventory.pb-c.h"
#include "webshop/v1/order.facts.h"
#include "webshop/v1/order.pb-c.h"

/* Topics come from the contract (events.facts.h: WEBSHOP_V1_*_TOPIC; the
 * order service publishes OrderCanceled and OrderStatusChanged, and re-sends
 * OrderSent from its recovery loop), and so do an order's limits
 * (order.facts.h: 1..WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS lines of
 * 1..WEBSHOP_V1_ORDER_ITEM_COUNT_MAX units, the front's own), and the status
 * precedence (webshop_v1_order_status_rank). */
#define ORDERS_MAX_REASON 512 /* bytes of an OutOfStock reason kept */

/* The reason of an order settled UNSUCCESSFUL because the inventory's record
 * says the reservation was released (or canceled before it was made). */
#define ORDERS_REASON_RELEASED "the inventory released the reservation"
/* The reason when the inventory rejected the order without saying why. */
#define ORDERS_REASON_REJECTED "rejected by the inventory"
#define ORDERS_PAGE_DEFAULT    50
#define ORDERS_PAGE_MAX        1000

/* How far the outcome stream (InStock/OutOfStock) has got in this process:
 * the newest created_ms of an order that received an outcome, and the now_ms
 * of the last outcome applied; 0 before any. Written by the consumer thread
 * (orders_apply_*), read by the recovery thread (orders_progress_read); a
 * heuristic, so relaxed atomics suffice (a value from a transaction that
 * later rolled back only makes one pass re-send). One per service, owned by
 * its app state (main.c); zero-initialise it. */
typedef struct orders_progress {
    _Atomic int64_t outcome_created_ms;
    _Atomic int64_t outcome_seen_ms;
} orders_progress;

/* Recovery timing, shared with recovery.c: the first re-send (or cancel
 * check) is due resend_after_ms after the event that made the order PENDING
 * (or CANCELED); after the n-th attempt the next is due
 * min(resend_after_ms << n, backoff_cap_ms) later; after max_attempts the
 * order is left alone (and logged). Outcome checks are due at once, then
 * follow the same backoff and bound. */
typedef struct orders_policy {
    int64_t resend_after_ms;   /* default 5000 */
    int64_t backoff_cap_ms;    /* default 60000 */
    int max_attempts;          /* default 20 */
    orders_progress *progress; /* outcome progress, noted by the apply
                                  functions; NULL = not tracked (default) */
    /* Queue no OrderStatusChanged: the apply functions report the status
     * to publish in orders_effect.owed instead, and the caller, which holds
     * a group open, queues the last one of each order (orders_queue_owed)
     * before the group commits. So an order placed and decided in one
     * group publishes its final status only, not PENDING first. false by
     * default. */
    bool defer_status;
} orders_policy;

/* The defaults above. */
orders_policy orders_policy_default(void);

/* The delay before the attempt that follows attempt number `done` (0 = the
 * first one): min(resend_after_ms << done, backoff_cap_ms), never negative. */
int64_t orders_policy_delay(const orders_policy *p, int done);

/* An OrderStatusChanged owed (orders_policy.defer_status): the order, the
 * status and reason to publish, and the trace of the event that set it. */
typedef struct orders_owed {
    char id[WS_UUID_TEXT_LEN];
    int status;
    char reason[ORDERS_MAX_REASON + 1];
    ws_trace_saved trace; /* of the event (or none) */
} orders_owed;

/* Queue owed[0..n) in one transaction on c (a savepoint in a group), each
 * row under its own trace. *queued (OUT) the rows queued. Database errors
 * with nothing queued. */
ws_err orders_queue_owed(ws_db_conn *c, const orders_owed *owed, size_t n,
                         unsigned *queued /* OUT */);

/* Whether an order (or tombstone) with this id (any case) is recorded, read
 * in one transaction on c (a savepoint in a group) that takes no lock, so
 * it does not wait for a writer that has not committed. *known (OUT).
 * WS_EINVAL for an id that is not a UUID; database errors. */
ws_err orders_known(ws_db_conn *c, const char *id, bool *known /* OUT */);

/* What applying one event did, for the caller's one log line. */
typedef struct orders_effect {
    bool created;        /* the event created the order row */
    bool tombstone;      /* the row is a tombstone after the event (not an order) */
    bool revealed;       /* a tombstone became an order (CANCELED queued) */
    bool items_filled;   /* this OrderSent (or record) stored the items */
    bool conflict;       /* other outcome already recorded, or other items */
    bool check;          /* the order is (now) due for an outcome check */
    bool settled;        /* orders_settle: the check is done (not re-armed) */
    int old_status;      /* Webshop__V1__OrderStatus before; 0 if no row */
    int new_status;      /* after */
    unsigned queued;     /* outbox rows queued */
    const char *invalid; /* on WS_EINVAL: which field is wrong (static text) */
    bool owes;           /* defer_status: owed holds the status to publish */
    orders_owed owed;
} orders_effect;

/* Apply one event at now_ms. ev is not retained. Returns WS_OK (*out, which
 * may be NULL, says what changed; a duplicate changes nothing), WS_EINVAL for
 * an invalid event (nothing written; out->invalid names the field), or a
 * database error (WS_EBUSY after the retries, WS_EUNAVAIL, WS_EIO,
 * WS_ESTORE, WS_ENOMEM; nothing written). Validation:
 * the order id is a UUID in either case (stored lower case); an OrderSent
 * has 1 to WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS items, each with a positive inventory_id and a
 * count of 1 to WEBSHOP_V1_ORDER_ITEM_COUNT_MAX; an OutOfStock reason is cut to
 * ORDERS_MAX_REASON bytes (on a UTF-8 boundary). */
ws_err orders_apply_sent(ws_db_conn *c, const orders_policy *p,
                         const Webshop__V1__OrderSent *ev, int64_t now_ms,
                         orders_effect *out /* OUT, may be NULL */);
ws_err orders_apply_in_stock(ws_db_conn *c, const orders_policy *p,
                             const Webshop__V1__InStock *ev, int64_t now_ms,
                             orders_effect *out /* OUT, may be NULL */);
ws_err orders_apply_out_of_stock(ws_db_conn *c, const orders_policy *p,
                                 const Webshop__V1__OutOfStock *ev, int64_t now_ms,
                                 orders_effect *out /* OUT, may be NULL */);
ws_err orders_apply_cancel(ws_db_conn *c, const orders_policy *p,
                           const Webshop__V1__CancelOrder *ev, int64_t now_ms,
                           orders_effect *out /* OUT, may be NULL */);

/* Settle the outcome check of order id (any case) with rec, the inventory's
 * record (GetReservation answer; not retained), at now_ms, in one
 * transaction, as the file comment says: fill in the items the record
 * carries if the order has none (valid ones only, as an OrderSent), then
 * move the status to the record's (rank-guarded: CANCELED stays), or, for
 * RESERVATION_UNKNOWN, re-arm the check with backoff (out->settled false;
 * dropped after max_attempts: out->settled true, out->check false). A status
 * change queues OrderStatusChanged. An order not due for a check (settled
 * meanwhile, or unknown) is left alone: WS_OK, out->check false and
 * out->settled false. WS_EINVAL for an invalid id; database errors as above. */
ws_err orders_settle(ws_db_conn *c, const orders_policy *p, const char *id,
                     const Webshop__V1__GetReservationResponse *rec, int64_t now_ms,
                     orders_effect *out /* OUT, may be NULL */);

/* The order id (any case). On WS_OK *out is a malloc'ed message (free with
 * protobuf_c_message_free_unpacked(*out, NULL)). WS_EINVAL for an invalid
 * id, WS_ENOTFOUND for an order never heard of or only a tombstone, database
 * errors. */
ws_err orders_get(ws_db_conn *c, const char *id, Webshop__V1__Order **out /* OUT */);

/* One page of orders, newest first (created_ms descending, then id
 * descending); tombstones are not orders and are never listed. page_size 0 means
 * ORDERS_PAGE_DEFAULT, larger than ORDERS_PAGE_MAX means ORDERS_PAGE_MAX, negative is
 * WS_EINVAL. page_token is NULL or "" for the first page, else a next_page_token of an
 * earlier response (opaque: base64url of "created_ms:id"); anything else is WS_EINVAL.
 * next_page_token is "" on the last page. On WS_OK *out is a malloc'ed message as for
 * orders_get. */
ws_err orders_list(ws_db_conn *c, int32_t page_size, const char *page_token,
                   Webshop__V1__ListOrdersResponse **out /* OUT */);

/* Read p (see orders_progress): *outcome_created_ms and *outcome_seen_ms
 * (OUT); both 0 when p is NULL. The recovery loop re-sends an order only
 * when the stream has passed it or has been quiet for a whole resend
 * period, so an order whose outcome is merely queued behind a backlog is
 * not re-sent. Any thread. */
void orders_progress_read(orders_progress *p, int64_t *outcome_created_ms /* OUT */,
                          int64_t *outcome_seen_ms /* OUT */);

/* "PENDING", "SUCCESSFUL", ...; "UNSPECIFIED" for anything else. */
const char *orders_status_name(int status);

#endif
