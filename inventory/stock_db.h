/*
 * The inventory's ports: every database operation its domain (stock.c,
 * stock_read.c, stock_sweep.c, catalog_seed.c) needs, in domain words. The
 * adapter (stock_db.c) holds all of the inventory's SQL, written once for
 * SQLite and PostgreSQL; nothing else in inventory/ knows a table or a
 * column.
 *
 * Every port runs on the caller's connection inside the caller's
 * transaction (ws_db_txn / ws_db_conn_txn, or a group's savepoint): a port
 * never begins, commits or retries. Errors are lib/db's (WS_EBUSY,
 * WS_EUNAVAIL, WS_EIO, WS_ESTORE, ...) unless a port says otherwise; after
 * one the caller's transaction is failed and must roll back.
 *
 * Isolation. READ COMMITTED (the PostgreSQL default of ws_db_txn) is
 * enough for every port, because none of them decides on a value it read
 * earlier: each state change is one conditional statement (a stock move
 * with `balance >= count` in its WHERE, a status move with the status it
 * leaves in its WHERE) or an INSERT ... ON CONFLICT DO NOTHING on a unique
 * key. PostgreSQL re-evaluates such a WHERE on the newest committed version
 * of a row it had to wait for, and an INSERT that meets a key another
 * transaction is inserting waits for that transaction's end; so of two
 * writers racing, exactly one changes the row and the other sees "changed
 * nothing". SQLite is serializable anyway (one writer at a time).
 *
 * "Changed nothing" is reported as a bool (*taken, *first, *released ...
 * false) with WS_OK, never as an error: it means someone else was first
 * (another event, another replica, the sweep), and the caller reads what
 * is there now and acts on that.
 */
#ifndef INV_STOCK_DB_H
#define INV_STOCK_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "stock.h"

/* One line of an order: count units of product_id. */
typedef struct inv_db_line {
    int32_t product_id;
    int32_t count;
} inv_db_line;

/* A reservation record as stored. */
typedef struct inv_db_reservation {
    Webshop__V1__ReservationStatus status; /* RESERVATION_UNKNOWN: no record */
    bool orphan;                 /* released by the orphan sweep (not a cancel) */
    char reason[INV_REASON_LEN]; /* rejection or orphan-release reason, or "" */
} inv_db_reservation;

/* A product as stored; name is valid until the next port call on c. */
typedef struct inv_db_product {
    int32_t id;
    const char *name;
    int32_t price;
    int64_t balance;
} inv_db_product;

/* Product visitor: WS_OK to go on, anything else stops (and is returned). */
typedef ws_err (*inv_db_product_fn)(void *ctx, const inv_db_product *p);

/* ---- stock ------------------------------------------------------------ */

/* Take count units of product_id if its balance allows, in one statement
 * (`balance >= count` in the UPDATE): *taken (OUT) true when it did. False
 * means the units are not there now (another reservation was first) or the
 * product does not exist; the balance never goes below 0. The row stays
 * locked until the caller's transaction ends (PostgreSQL), so nobody else
 * moves it meanwhile. */
ws_err inv_db_stock_take(ws_db_conn *c, int32_t product_id, int32_t count,
                         bool *taken /* OUT */);

/* Put count units of product_id back (a release, or undoing a take of the
 * same transaction). WS_ESTORE when the product does not exist (products
 * are never deleted: the caller's record is inconsistent). */
ws_err inv_db_stock_restock(ws_db_conn *c, int32_t product_id, int32_t count);

/* The balance of product_id as this transaction sees it (its own moves
 * included). WS_ENOTFOUND for an unknown product. */
ws_err inv_db_stock_balance(ws_db_conn *c, int32_t product_id,
                            int64_t *balance /* OUT */);

/* For tests and checks: the balance, the stock ever added, and the units
 * held by reservations in status reserved, read in one statement (one
 * snapshot on both engines). WS_ENOTFOUND for an unknown product. */
ws_err inv_db_stock_levels(ws_db_conn *c, int32_t product_id, int64_t *balance /* OUT */,
                           int64_t *held /* OUT */, int64_t *added /* OUT */);

/* ---- reservations ------------------------------------------------------- */

/* Record a reservation for order_id the first time: status (reserved,
 * rejected or tombstoned), reason, created and updated at now_ms, with
 * INSERT ... ON CONFLICT DO NOTHING on the order id. *first (OUT) true when
 * this call recorded it; false when a record exists (another event for the
 * id was first: read it with inv_db_reservation_get). A concurrent insert
 * of the same id makes this wait for that transaction's end. */
ws_err inv_db_reservation_record(ws_db_conn *c, const char *order_id,
                                 Webshop__V1__ReservationStatus status,
                                 const char *reason, int64_t now_ms,
                                 bool *first /* OUT */);

/* The items of an order recorded by this transaction, lines[0..n) as idx
 * 0..n-1 (the event's order). */
ws_err inv_db_reservation_items_record(ws_db_conn *c, const char *order_id,
                                       const inv_db_line *lines, size_t n);

/* A record this transaction has just recorded as reserved becomes rejected
 * with reason (its stock could not be had). WS_ESTORE when it is not a
 * reserved record (the caller recorded it: an inconsistency). */
ws_err inv_db_reservation_reject(ws_db_conn *c, const char *order_id, const char *reason,
                                 int64_t now_ms);

/* Read the record of order_id (*out status RESERVATION_UNKNOWN: none).
 * WS_ESTORE for a status the schema forbids. */
ws_err inv_db_reservation_get(ws_db_conn *c, const char *order_id,
                              inv_db_reservation *out /* OUT */);

/* The items of order_id in their recorded order into lines[0..cap); *n
 * (OUT) how many. WS_ESTORE when there are more than cap (a record never
 * holds more than an order may). */
ws_err inv_db_reservation_items(ws_db_conn *c, const char *order_id,
                                inv_db_line *lines /* OUT */, size_t cap,
                                size_t *n /* OUT */);

/* Release order_id's reservation because it was canceled: status reserved
 * -> released, release kind "canceled", reason "", updated at now_ms, in
 * one statement conditional on status reserved. *released (OUT) false when
 * it was not held (already released by a cancel or the sweep, rejected,
 * tombstoned, or no record). The caller restocks the items only when true. */
ws_err inv_db_reservation_release(ws_db_conn *c, const char *order_id, int64_t now_ms,
                                  bool *released /* OUT */);

/* ---- the orphan sweep --------------------------------------------------- */

/* The held (reserved), unconfirmed reservations created at or before
 * cutoff_ms, oldest first, into out[0..limit); *n (OUT) how many. Reads
 * only: the answer may be stale by the time it is used; every settle port
 * below re-checks in its own statement. */
ws_err inv_db_orphan_candidates(ws_db_conn *c, int64_t cutoff_ms,
                                inv_orphan_candidate *out /* OUT */, size_t limit,
                                size_t *n /* OUT */);

/* *due (OUT) true when order_id is still held, unconfirmed and created at
 * or before cutoff_ms. Reads only (for an answer that changes nothing). */
ws_err inv_db_orphan_due(ws_db_conn *c, const char *order_id, int64_t cutoff_ms,
                         bool *due /* OUT */);

/* Mark order_id confirmed (the order service knows it), conditional on
 * its being due as above. *confirmed (OUT) false when it no longer was. */
ws_err inv_db_orphan_confirm(ws_db_conn *c, const char *order_id, int64_t cutoff_ms,
                             bool *confirmed /* OUT */);

/* Release order_id as an orphan: status reserved -> released, release kind
 * "orphan", reason, updated at now_ms, conditional on its being due as
 * above in the same statement, so a cancel or another sweeper racing it
 * leaves exactly one release. *released (OUT) false when it was not due
 * any more. The caller restocks the items only when true. */
ws_err inv_db_orphan_release(ws_db_conn *c, const char *order_id, const char *reason,
                             int64_t now_ms, int64_t cutoff_ms, bool *released /* OUT */);

/* Delete at most limit tombstones updated at or before cutoff_ms, oldest
 * first; *n (OUT) how many went. Two sweepers racing delete each tombstone
 * once between them (the second finds it gone: not counted). */
ws_err inv_db_tombstones_expire(ws_db_conn *c, int64_t cutoff_ms, size_t limit,
                                size_t *n /* OUT */);

/* Re-stamp what a clock ahead of ours wrote: the held, unconfirmed
 * reservations created, and the tombstones updated, after after_ms get
 * now_ms instead (the age the sweep judges them by starts again from 0,
 * never more than their true age). *n (OUT) how many rows changed. */
ws_err inv_db_restamp_future(ws_db_conn *c, int64_t after_ms, int64_t now_ms,
                             size_t *n /* OUT */);

/* ---- catalog ------------------------------------------------------------ */

/* Visit every product in id order. */
ws_err inv_db_catalog_each(ws_db_conn *c, inv_db_product_fn fn, void *ctx);

/* Visit product id. WS_ENOTFOUND when there is none. */
ws_err inv_db_product_get(ws_db_conn *c, int32_t id, inv_db_product_fn fn, void *ctx);

/* *n (OUT) the number of products. */
ws_err inv_db_catalog_count(ws_db_conn *c, int64_t *n /* OUT */);

/* Seed one product: the first time its id is seen (INSERT ... ON CONFLICT
 * DO NOTHING) with its balance as the balance and the stock added; for a
 * known id only the name and the price are set, never the stock (it may
 * have moved). *inserted (OUT) true when the product is new. Two replicas
 * seeding at once insert it once. */
ws_err inv_db_product_seed(ws_db_conn *c, const Webshop__V1__Product *p,
                           bool *inserted /* OUT */);

#endif
