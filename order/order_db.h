/*
 * The order service's ports to its database, in domain words: every read
 * and write the order domain (orders.c) and the recovery loops
 * (recovery.c) make, and nothing else. order_db.c, the one adapter, holds
 * all the SQL of the service, written once for SQLite and PostgreSQL; the
 * domain modules hold none.
 *
 * Every port runs on the caller's connection, inside the caller's
 * transaction (ws_db_txn / ws_db_conn_txn), on the caller's thread. Unless
 * a port says otherwise, READ COMMITTED (the PostgreSQL default of
 * ws_db_txn) is enough, because each write is ONE conditional statement
 * whose condition is evaluated by the database on the row's newest
 * committed version (PostgreSQL waits for a concurrent writer of the row
 * and re-checks the condition; SQLite has one writer at a time): status
 * moves only up in rank, every "first time" is a unique key with ON
 * CONFLICT DO NOTHING, and a deadline is claimed by moving it. A write
 * that "changed nothing" (*moved / *created / *claimed false) means the
 * condition did not hold any more: someone else was first. The caller then
 * reads the row again (order_db_read, a new snapshot under READ COMMITTED)
 * and acts on what is there; it never writes what it read before.
 *
 * Reads (order_db_read, the item reads) see the last committed state when
 * the statement starts, which may be older than the row a later
 * conditional write meets: decisions taken on them are always re-checked
 * by the write's condition.
 *
 * The status precedence in the SQL comes from the generated facts
 * (webshop_v1_order_status_rank over the enum's values), never from a copy
 * of the table. Ids are lower-case UUID text (the caller normalises).
 * Times are Unix milliseconds; a deadline argument < 0 stores NULL
 * ("nothing due"). Errors are lib/db's: WS_EBUSY (conflict; the txn helper
 * retries), WS_EUNAVAIL, WS_EIO, WS_ESTORE, WS_ENOMEM.
 */
#ifndef ORDER_ORDER_DB_H
#define ORDER_ORDER_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"
#include "err.h"
#include "webshop/v1/order.pb-c.h"

/* An order row as a transaction finds it (order_db_read). */
typedef struct order_db_row {
    int status;         /* Webshop__V1__OrderStatus */
    bool confirmed;     /* the inventory confirmed the cancel */
    bool tombstone;     /* only a CancelOrder created the row: not an order */
    bool check_due;     /* an outcome check is due (or claimed) */
    int check_attempts; /* outcome checks made */
    bool has_items;     /* its lines are stored */
    int64_t created_ms;
} order_db_row;

/* Read the row of id. WS_OK with *row, WS_ENOTFOUND, or an error. */
ws_err order_db_read(ws_db_conn *c, const char *id, order_db_row *row /* OUT */);

/* ---- the first event for an id -------------------------------------------- */

/* What the first event for an id stores. */
typedef struct order_db_new {
    const char *id;
    int status; /* PENDING, or CANCELED for a tombstone */
    bool tombstone;
    bool has_items;         /* the caller stores the lines next (order_db_items_put) */
    int64_t now_ms;         /* created_ms and updated_ms */
    int64_t next_resend_ms; /* < 0: NULL */
    int64_t items_due_ms;   /* < 0: NULL */
    int64_t check_due_ms;   /* < 0: NULL */
} order_db_new;

/* Insert the order the first time its id is heard of: INSERT ... ON
 * CONFLICT (id) DO NOTHING. *created false: the row exists (another event,
 * maybe a concurrent one, was first; on PostgreSQL the insert waited for
 * that transaction to end). READ COMMITTED is enough: the primary key
 * decides. */
ws_err order_db_insert(ws_db_conn *c, const order_db_new *o, bool *created /* OUT */);

/* ---- lines ----------------------------------------------------------------- */

/* Claim the right to store the lines of an order that has none: one
 * UPDATE ... WHERE has_items = 0 that marks the row as having items, clears
 * the items check (items_due_ms) and, for a PENDING order without a re-send
 * deadline (one an outcome created), sets next_resend_ms to
 * first_resend_ms. *claimed false: the row has its lines already (someone
 * else stored them first: compare with order_db_items_same). On success
 * the caller must store the lines (order_db_items_put) in the same
 * transaction; the row stays locked by it until commit on PostgreSQL, so no
 * second filler can interleave. READ COMMITTED is enough. */
ws_err order_db_items_claim(ws_db_conn *c, const char *id, int64_t now_ms,
                            int64_t first_resend_ms, bool *claimed /* OUT */);

/* Store lines 0..n-1 of an order (after order_db_insert with has_items, or
 * a successful order_db_items_claim). WS_EEXIST means a line was there:
 * the caller broke the claim rule. */
ws_err order_db_items_put(ws_db_conn *c, const char *id, size_t n,
                          Webshop__V1__OrderItem *const *items);

/* Compare the stored lines with items[0..n): *same true when equal (none
 * stored counts as different). Read only. */
ws_err order_db_items_same(ws_db_conn *c, const char *id, size_t n,
                           Webshop__V1__OrderItem *const *items, bool *same /* OUT */);

/* The stored lines, at most cap, in line order, into items[0..*n) (each
 * initialised by the port). Read only. */
ws_err order_db_items_read(ws_db_conn *c, const char *id, Webshop__V1__OrderItem *items,
                           size_t cap, size_t *n /* OUT */);

/* ---- status ---------------------------------------------------------------- */

/* One status move. */
typedef struct order_db_move {
    const char *id;
    int status;         /* the new status */
    const char *reason; /* stored reason_len bytes ("" unless UNSUCCESSFUL) */
    size_t reason_len;
    int64_t now_ms;         /* updated_ms */
    int64_t next_resend_ms; /* the new recovery deadline; < 0: NULL */
    bool need_items;        /* move only an order whose lines are stored */
} order_db_move;

/* Move the order up to m->status: ONE UPDATE ... WHERE id = $id AND
 * rank(status) < rank(m->status) [AND has_items = 1]. *moved false: the
 * order already has that rank or a higher one (or no lines, with
 * need_items): someone else was first; re-read and act on what is there.
 * READ COMMITTED is enough: PostgreSQL re-checks the rank on the newest
 * version of the row, so a late SUCCESSFUL never overwrites CANCELED. */
ws_err order_db_status_raise(ws_db_conn *c, const order_db_move *m,
                             bool *moved /* OUT */);

/* Settle an outcome check to the inventory's record (m->status SUCCESSFUL or
 * UNSUCCESSFUL; next_resend_ms ignored: cleared): ONE UPDATE that also
 * clears the check, WHERE rank(status) <= rank(m->status) (never out of
 * CANCELED) and (status, reason) differ. The one move between SUCCESSFUL
 * and UNSUCCESSFUL. *moved false: nothing to change, or CANCELED came
 * first; the caller then clears the check (order_db_check_clear). READ
 * COMMITTED is enough (as order_db_status_raise). */
ws_err order_db_status_settle(ws_db_conn *c, const order_db_move *m,
                              bool *moved /* OUT */);

/* A tombstone becomes an order (its OrderSent or an outcome came): ONE
 * UPDATE ... WHERE tombstone = 1 RETURNING status. *revealed false: it is
 * not (or no longer) a tombstone. *status (when revealed) is the status the
 * row holds now, for the status event. READ COMMITTED is enough. */
ws_err order_db_reveal(ws_db_conn *c, const char *id, int64_t now_ms,
                       bool *revealed /* OUT */, int *status /* OUT */);

/* ---- outcome checks -------------------------------------------------------- */

/* Mark the order for an outcome check due at due_ms, unless one is already
 * due (then nothing changes: the check already planned settles it).
 * READ COMMITTED is enough. */
ws_err order_db_check_arm(ws_db_conn *c, const char *id, int64_t due_ms);

/* Nothing decided: count the attempt; the check is due again at due_ms,
 * or dropped when the attempts reach max_attempts. *found false: no check
 * was due (settled meanwhile). *dropped: the check was dropped. READ
 * COMMITTED is enough (one UPDATE ... WHERE check_due_ms IS NOT NULL). */
ws_err order_db_check_rearm(ws_db_conn *c, const char *id, int64_t due_ms,
                            int max_attempts, bool *found /* OUT */,
                            bool *dropped /* OUT */);

/* The check is over with nothing to change: clear it. */
ws_err order_db_check_clear(ws_db_conn *c, const char *id);

/* ---- cancels (the inventory's confirmation) --------------------------------- */

/* Test hook and recovery step: the inventory confirmed the cancel of id;
 * nothing is due for it any more. Only a CANCELED order changes (*moved).
 * READ COMMITTED is enough. */
ws_err order_db_cancel_confirm(ws_db_conn *c, const char *id, bool *moved /* OUT */);

/* The unconfirmed cancel of id still due for a check: WS_OK with its
 * attempts so far, or WS_ENOTFOUND (confirmed, given up, or not CANCELED).
 * Read only; its decision is re-checked by the write that follows. */
ws_err order_db_cancel_due(ws_db_conn *c, const char *id, int *attempts /* OUT */);

/* OrderCanceled was re-queued: count it, next check at next_ms; or, with
 * next_ms < 0 and no count, give up. Only an unconfirmed CANCELED order
 * changes (*moved). READ COMMITTED is enough. */
ws_err order_db_cancel_next(ws_db_conn *c, const char *id, bool count, int64_t next_ms,
                            bool *moved /* OUT */);

/* ---- recovery: due rows and their claims ---------------------------------- */

/* With more outbox rows than n waiting the relay is behind. *n: rows
 * waiting (id span). Read only. */
ws_err order_db_outbox_backlog(ws_db_conn *c, int64_t *n /* OUT */);

/* One due row. */
typedef struct order_db_due {
    char id[37];
    int attempts; /* of the kind: re-sends, cancel checks, items checks */
    int64_t created_ms;
    int64_t due_ms; /* the deadline before the claim */
} order_db_due;

/* Up to cap PENDING orders with lines whose re-send is due at now_ms,
 * oldest deadline first. On PostgreSQL the rows are locked (FOR UPDATE
 * SKIP LOCKED): another replica's pass skips them, and this transaction
 * must move their deadline (order_db_resend_next) before it commits. READ
 * COMMITTED is enough: SKIP LOCKED never waits, and the deadline write is
 * conditional. */
ws_err order_db_resend_due(ws_db_conn *c, int64_t now_ms, size_t cap,
                           order_db_due *rows /* OUT */, size_t *n /* OUT */);

/* The re-send of a PENDING order: count it and set the next deadline
 * (next_ms), or give up (next_ms < 0, not counted). *moved false: the order
 * is no longer PENDING (an outcome or a cancel was first): queue nothing.
 * READ COMMITTED is enough. */
ws_err order_db_resend_next(ws_db_conn *c, const char *id, bool count, int64_t next_ms,
                            bool *moved /* OUT */);

/* The recovery checks that ask the inventory, one deadline column each. */
typedef enum order_db_due_kind {
    ORDER_DB_DUE_CANCEL, /* unconfirmed CANCELED orders (next_resend_ms) */
    ORDER_DB_DUE_ITEMS,  /* orders without lines (items_due_ms) */
    ORDER_DB_DUE_CHECK,  /* outcome checks (check_due_ms) */
} order_db_due_kind;

/* Claim up to cap rows of kind due at now_ms (oldest deadline first) for
 * one pass: their deadline moves to lease_until_ms in this transaction, so
 * no other replica works them while this one asks the inventory (outside
 * any transaction), and a replica that dies mid-pass leaves them due again
 * when the lease ends. PostgreSQL selects with FOR UPDATE SKIP LOCKED
 * (rows another pass is claiming are skipped, not waited for); SQLite runs
 * the same select and UPDATE under its single writer. READ COMMITTED is
 * enough. rows[i].due_ms is the deadline before the claim. */
ws_err order_db_claim_due(ws_db_conn *c, order_db_due_kind kind, int64_t now_ms,
                          int64_t lease_until_ms, size_t cap,
                          order_db_due *rows /* OUT */, size_t *n /* OUT */);

/* Give a claimed row back untouched (the inventory could not be asked): its
 * deadline returns to due_ms if it still holds the lease (nothing else
 * moved it meanwhile). */
ws_err order_db_unclaim(ws_db_conn *c, order_db_due_kind kind, const char *id,
                        int64_t lease_until_ms, int64_t due_ms);

/* Nothing learned about the lines: count the attempt and ask again at
 * due_ms, or stop asking at max_attempts. *found false: no items check
 * was due (the lines came meanwhile). *attempts after this one. READ
 * COMMITTED is enough. */
ws_err order_db_items_rearm(ws_db_conn *c, const char *id, int64_t due_ms,
                            int max_attempts, bool *found /* OUT */,
                            int *attempts /* OUT */);

/* ---- tombstones ------------------------------------------------------------ */

/* Delete up to limit tombstones created at or before before_ms with nothing
 * left to do (cancel confirmed or given up, no items check due), and their
 * lines. *deleted: how many. The conditions are re-checked on each row by
 * the DELETE itself (a tombstone revealed meanwhile stays); on PostgreSQL
 * the candidates are locked SKIP LOCKED. READ COMMITTED is enough. */
ws_err order_db_tombstones_expire(ws_db_conn *c, int64_t before_ms, size_t limit,
                                  size_t *deleted /* OUT */);

/* Tombstones created after after_ms (by a clock ahead of ours: the wall
 * clock stepped back) are stamped created at now_ms, so their age counts
 * from now. *n (OUT) how many. */
ws_err order_db_tombstones_restamp(ws_db_conn *c, int64_t after_ms, int64_t now_ms,
                                   size_t *n /* OUT */);

/* ---- queries --------------------------------------------------------------- */

/* Count the orders by status: counts[s] is set, for every s < n, to the
 * number of orders (not tombstones) whose status is s
 * (Webshop__V1__OrderStatus; 0 where there are none, and a status >= n is
 * not counted). One grouped SELECT, so one snapshot; read only, READ
 * COMMITTED is enough. It reads every order row (the (status, ...) index
 * on SQLite): a gauge to refresh now and then, not a per-request read. On
 * failure counts may be partly written. */
ws_err order_db_count_by_status(ws_db_conn *c, int64_t *counts /* OUT */, size_t n);

/* The order id with its lines (not a tombstone): WS_OK and *out, a malloc'ed
 * message (free with protobuf_c_message_free_unpacked), or WS_ENOTFOUND.
 * One statement (the order joined with its lines), so one snapshot: it
 * needs no transaction of its own (GetOrder runs it with
 * ws_db_txn_opts.one_statement). */
ws_err order_db_get(ws_db_conn *c, const char *id, Webshop__V1__Order **out /* OUT */);

/* One page of orders (not tombstones), newest first by (created_ms, id)
 * descending, strictly after the key (after_ms, after_id) when after_id is
 * not NULL: up to cap orders with their lines into out[0..*n) (malloc'ed
 * messages, the caller frees them), *more true when another one follows.
 * READ COMMITTED is enough (key-set paging needs no snapshot across
 * pages). */
ws_err order_db_list(ws_db_conn *c, int64_t after_ms, const char *after_id, size_t cap,
                     Webshop__V1__Order **out /* OUT */, size_t *n /* OUT */,
                     bool *more /* OUT */);

#endif
