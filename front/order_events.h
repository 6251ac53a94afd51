/*
 * GET /events?orders=ID,ID&stock=true: live order status and stock over
 * Server-Sent Events. One stream serves many orders, so a page with several
 * live orders holds one connection (and one HTTP worker thread), not one
 * per order. The stream opens a watch on the status hub first, then asks the
 * order service for each order's current status (Orders.GetOrder) and sends
 * it, so a late subscriber misses nothing; then it forwards every change,
 * dropping any that would move an order backwards in the status precedence.
 * It sends a heartbeat comment when idle, ends with `event: end` once every
 * order is final (UNSUCCESSFUL or CANCELED) unless stock was asked for, and
 * ends without it after the front's stream bound (the browser's EventSource
 * then reconnects and starts from a fresh snapshot).
 */
#ifndef FRONT_ORDER_EVENTS_H
#define FRONT_ORDER_EVENTS_H

#include "http.h"

/* Serve GET (or HEAD) /events, once the route table matched it; ctx is
 * the front. Returns the HTTP status sent. Blocks its worker thread for the stream's lifetime. */
int order_events_serve(ws_http_req *req, void *ctx);

#endif
