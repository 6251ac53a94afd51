/*
 * The order domain on the service's own database: applying the four events
 * the order service consumes (OrderSent, InStock, OutOfStock, CancelOrder)
 * and answering the two queries of the Orders RPC service.
 *
 * Status precedence (DESIGN.md "Flows and states"): CANCELED > SUCCESSFUL =
 * UNSUCCESSFUL > PENDING. Applying an event moves an order to the higher of
 * its current status and the event's status, so the final status does not
 * depend on arrival order. Between SUCCESSFUL and UNSUCCESSFUL (equal rank)
 * the first one recorded wins and the other is ignored (reported as a
 * conflict): the inventory records exactly one outcome per order and a
 * duplicate OrderSent re-publishes that same recorded outcome, so both can
 * only arrive together if something outside the design published one; the
 * first recorded is then the one the customer may already have seen.
 *
 * The reason is kept only while the status is UNSUCCESSFUL (a cancel clears
 * it), so the final reason, too, is independent of order.
 *
 * An event for an unseen order creates the row; a late OrderSent fills in the
 * items of a row created by an outcome or a cancel and changes nothing else.
 * The first items recorded are kept; a later OrderSent with other items is a
 * conflict and changes nothing.
 *
 * Every status change (creation included) queues OrderStatusChanged on
 * order/order-status in the same transaction; becoming CANCELED also queues
 * OrderCanceled on order/order-canceled. A duplicate event changes nothing
 * and queues nothing, with one exception: a duplicate CancelOrder while the
 * inventory has not yet confirmed the cancel re-queues OrderCanceled. That
 * costs one idempotent message at the inventory and heals a lost
 * OrderCanceled at once instead of at the next recovery pass; once confirmed,
 * a duplicate CancelOrder queues nothing.
 *
 * Time is a parameter (now_ms, Unix milliseconds) so tests need no clock.
 * Every function runs on the caller's ws_store and thread; writes run in
 * their own ws_store_txn.
 */
#ifndef ORDER_ORDERS_H
#define ORDER_ORDERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/order.pb-c.h"

/* Topics the order service publishes on (through its outbox). OrderSent is
 * the front's topic: the recovery loop re-publishes on it. */
#define ORDERS_TOPIC_CANCELED   "order/order-canceled"
#define ORDERS_TOPIC_ORDER_SEND "public-front/order-send"
#define ORDERS_TOPIC_STATUS     "order/order-status"

/* Limits on what an event may carry. */
#define ORDERS_MAX_ITEMS    1000 /* lines in one OrderSent */
#define ORDERS_MAX_REASON   512  /* bytes of an OutOfStock reason kept */
#define ORDERS_PAGE_DEFAULT 50
#define ORDERS_PAGE_MAX     1000

/* Recovery timing, shared with recovery.c: the first re-send (or cancel
 * check) is due resend_after_ms after the event that made the order PENDING
 * (or CANCELED); after the n-th attempt the next is due
 * min(resend_after_ms << n, backoff_cap_ms) later; after max_attempts the
 * order is left alone (and logged). */
typedef struct orders_policy {
    int64_t resend_after_ms; /* default 5000 */
    int64_t backoff_cap_ms;  /* default 60000 */
    int max_attempts;        /* default 20 */
} orders_policy;

/* The defaults above. */
orders_policy orders_policy_default(void);

/* The delay before the attempt that follows attempt number `done` (0 = the
 * first one): min(resend_after_ms << done, backoff_cap_ms), never negative. */
int64_t orders_policy_delay(const orders_policy *p, int done);

/* What applying one event did, for the caller's one log line. */
typedef struct orders_effect {
    bool created;        /* the event created the order row */
    bool items_filled;   /* this OrderSent stored the items */
    bool conflict;       /* ignored: other outcome already recorded, or other items */
    int old_status;      /* Webshop__V1__OrderStatus before; 0 if no row */
    int new_status;      /* after */
    unsigned queued;     /* outbox rows queued */
    const char *invalid; /* on WS_EINVAL: which field is wrong (static text) */
} orders_effect;

/* Apply one event at now_ms. ev is not retained. Returns WS_OK (*out, which
 * may be NULL, says what changed; a duplicate changes nothing), WS_EINVAL for
 * an invalid event (nothing written; out->invalid names the field), or a
 * store error (WS_EBUSY, WS_ESTORE, WS_ENOMEM; nothing written). Validation:
 * the order id is a canonical lowercase UUID; an OrderSent has 1 to
 * ORDERS_MAX_ITEMS items, each with a positive inventory_id and count; an
 * OutOfStock reason is cut to ORDERS_MAX_REASON bytes (on a UTF-8 boundary). */
ws_err orders_apply_sent(ws_store *s, const orders_policy *p,
                         const Webshop__V1__OrderSent *ev, int64_t now_ms,
                         orders_effect *out /* OUT, may be NULL */);
ws_err orders_apply_in_stock(ws_store *s, const orders_policy *p,
                             const Webshop__V1__InStock *ev, int64_t now_ms,
                             orders_effect *out /* OUT, may be NULL */);
ws_err orders_apply_out_of_stock(ws_store *s, const orders_policy *p,
                                 const Webshop__V1__OutOfStock *ev, int64_t now_ms,
                                 orders_effect *out /* OUT, may be NULL */);
ws_err orders_apply_cancel(ws_store *s, const orders_policy *p,
                           const Webshop__V1__CancelOrder *ev, int64_t now_ms,
                           orders_effect *out /* OUT, may be NULL */);

/* The order id. On WS_OK *out is a malloc'ed message (free with
 * protobuf_c_message_free_unpacked(*out, NULL)). WS_EINVAL for an invalid
 * id, WS_ENOTFOUND for an order never heard of, store errors. */
ws_err orders_get(ws_store *s, const char *id, Webshop__V1__Order **out /* OUT */);

/* One page of orders, newest first (created_ms descending, then id
 * descending). page_size 0 means ORDERS_PAGE_DEFAULT, larger than
 * ORDERS_PAGE_MAX means ORDERS_PAGE_MAX, negative is WS_EINVAL. page_token
 * is NULL or "" for the first page, else a next_page_token of an earlier
 * response (opaque: base64url of "created_ms:id"); anything else is
 * WS_EINVAL. next_page_token is "" on the last page. On WS_OK *out is a
 * malloc'ed message as for orders_get. */
ws_err orders_list(ws_store *s, int32_t page_size, const char *page_token,
                   Webshop__V1__ListOrdersResponse **out /* OUT */);

/* How far the outcome stream (InStock/OutOfStock) has got in this process:
 * *outcome_created_ms (OUT) the newest created_ms of an order that received
 * an outcome, *outcome_seen_ms (OUT) the now_ms of the last outcome applied;
 * 0 before any. The recovery loop re-sends an order only when the stream
 * has passed it or has been quiet for a whole resend period, so an order
 * whose outcome is merely queued behind a backlog is not re-sent. Any
 * thread. */
void orders_progress(int64_t *outcome_created_ms /* OUT */,
                     int64_t *outcome_seen_ms /* OUT */);

/* "PENDING", "SUCCESSFUL", ...; "UNSPECIFIED" for anything else. */
const char *orders_status_name(int status);

#endif
