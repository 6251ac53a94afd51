/*
 * The front's write routes, POST /order and DELETE /order/{id}: validate,
 * publish the event, then wait until the order service has committed what
 * the event asks for, and answer what is true at that moment (DESIGN.md
 * "What an answer promises"):
 *
 * - 201 (POST) or 200 (DELETE): the order service committed it. The front
 *   learns that from the order service's own `order/order-status` event,
 *   published in the transaction that commits (through its outbox): before
 *   publishing, the handler opens a waiter on the order id in the status
 *   hub (status_stream.h), which every front fills from its unshared
 *   subscription, so it works with any number of fronts and order-service
 *   replicas, costs one bus round trip, and never polls.
 * - 202: the broker acknowledged the event but no confirmation came within
 *   the front's accept wait (and one look-up, Orders.GetOrder, did not find
 *   it committed either, which also covers a status event the front
 *   missed while its subscription was reconnecting).
 * - POST with an Idempotency-Key first asks Orders.GetOrder: an order
 *   already recorded with the same items (in any order, or with no items
 *   known yet) answers 201 with nothing published; other items answer 422
 *   IDEMPOTENCY_KEY_REUSED. After a confirmed commit the items are checked
 *   once more, so of two racing POSTs with one key and other items the
 *   loser gets 422. When the order service cannot be asked, the POST is
 *   published anyway and answered from the wait (201/422 if it confirms,
 *   else 202): an order service that is down must not stop the shop from
 *   taking orders, and a duplicate OrderSent changes nothing anywhere (the
 *   first items of an id win at both backends).
 * - DELETE asks Orders.GetOrder first: 404 for an order the order service
 *   never recorded (nothing is published), 503/504 with Retry-After when it
 *   cannot be asked, 200 at once when already CANCELED.
 *
 * Time bound of one request: --publish-deadline + --accept-wait, plus at
 * most two order-service look-ups of ORDER_WRITE_CHECK_MS each (a DELETE's
 * first look-up has the full --rpc-deadline, like GET).
 */
#ifndef FRONT_ORDER_WRITE_H
#define FRONT_ORDER_WRITE_H

#include "front.h"
#include "order_id.h"

#include "http.h"

/* Longest order-service look-up of the write path other than DELETE's
 * first: the Idempotency-Key check before publishing and the re-check
 * after the wait (capped by --rpc-deadline too). */
#define ORDER_WRITE_CHECK_MS 500

/* POST /order on a HTTP worker thread: reads and validates the body,
 * answers and returns the HTTP status sent. */
int order_write_place(ws_http_req *req, front *f);

/* DELETE /order/{id} for id, already normalized (ws_uuid_normalize);
 * answers and returns the HTTP status sent. */
int order_write_cancel(ws_http_req *req, front *f, const char id[ORDER_ID_LEN]);

#endif
