/*
 * The order domain (order/orders.c) on a fresh database of the run's engine
 * (tests/support/test_db.h: SQLite, or PostgreSQL under with_pg), no broker:
 * precedence and idempotence of the four events over every arrival order,
 * conflicting outcomes settled by the inventory's record (every arrival
 * order again, against every kind of record), tombstones, what each event
 * queues in the outbox, the id rule and the limits, and the two queries.
 * The clock is a parameter, so nothing sleeps. The races at the end apply
 * two events to one order from two threads, each on its own connection, at
 * the same moment, many times: the rank rule and the unique keys must hold
 * with two writers (PostgreSQL READ COMMITTED; SQLite's one writer).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "orders.h"
#include "outbox.h"
#include "schema.h"
#include "test_db.h"
#include "uuid_text.h"

#define IN  WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL
#define OUT WEBSHOP__V1__ORDER_STATUS__UNSUCCESSFUL

static char url[512];
static ws_db *db;
static ws_db_conn *conn; /* the test's own connection, held throughout */
static orders_policy pol;

static void setup(void)
{
    cr_assert_eq(test_db_fresh(url, sizeof url), 0);
    size_t n;
    const ws_db_migration *m = order_schema_migrations(&n);
    ws_db_opts o = {.url = url,
                    .pool_size = 3,
                    .synchronous = "OFF",
                    .migrations = m,
                    .n_migrations = n};
    cr_assert_eq(ws_db_open(&o, &db), WS_OK, "%s", url);
    cr_assert_eq(ws_db_acquire(db, &conn), WS_OK);
    pol = orders_policy_default();
}

static void teardown(void)
{
    ws_db_release(conn);
    ws_db_close(db);
    test_db_cleanup(url);
}

TestSuite(order_orders, .init = setup, .fini = teardown);

static void new_id(char id[37])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, id);
}

/* ---- outbox inspection --------------------------------------------------- */

typedef struct drained {
    int n_status;
    int last_status;
    char last_reason[600];
    char last_status_id[40];
    int n_canceled;
    int n_sent;
    size_t n_sent_items;
    int n_rows;
} drained;

typedef struct drain_ctx {
    ws_db_conn *s;
    drained d;
    int64_t ids[4096];
    size_t n_ids;
} drain_ctx;

static const ProtobufCMessageDescriptor *const out_types[] = {
    &webshop__v1__order_status_changed__descriptor,
    &webshop__v1__order_canceled__descriptor,
    &webshop__v1__order_sent__descriptor,
};

static ws_err drain_row(void *ctx, const ws_outbox_row *row)
{
    drain_ctx *c = ctx;
    ProtobufCMessage *m;
    cr_assert_eq(ws_outbox_row_unpack(row, out_types, 3, &m), WS_OK);
    c->d.n_rows++;
    if (m->descriptor == &webshop__v1__order_status_changed__descriptor) {
        Webshop__V1__OrderStatusChanged *e = (Webshop__V1__OrderStatusChanged *)m;
        cr_assert_str_eq(row->topic, WEBSHOP_V1_ORDER_STATUS_CHANGED_TOPIC);
        c->d.n_status++;
        c->d.last_status = e->status;
        snprintf(c->d.last_status_id, sizeof c->d.last_status_id, "%s", e->order_id);
        snprintf(c->d.last_reason, sizeof c->d.last_reason, "%s", e->reason);
    } else if (m->descriptor == &webshop__v1__order_canceled__descriptor) {
        cr_assert_str_eq(row->topic, WEBSHOP_V1_ORDER_CANCELED_TOPIC);
        c->d.n_canceled++;
    } else {
        Webshop__V1__OrderSent *e = (Webshop__V1__OrderSent *)m;
        cr_assert_str_eq(row->topic, "public-front/order-send");
        c->d.n_sent++;
        c->d.n_sent_items = e->n_items;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    cr_assert_lt(c->n_ids, 4096);
    c->ids[c->n_ids++] = row->id;
    return WS_OK;
}

/* Read every outbox row, sum them up, and delete them. */
static drained drain(void)
{
    static drain_ctx c;
    memset(&c, 0, sizeof c);
    c.s = conn;
    cr_assert_eq(ws_outbox_scan(conn, 0, 4096, drain_row, &c, NULL), WS_OK);
    for (size_t i = 0; i < c.n_ids; i++) {
        cr_assert_eq(ws_outbox_delete(conn, c.ids[i]), WS_OK);
    }
    return c.d;
}

/* ---- events --------------------------------------------------------------- */

static Webshop__V1__OrderItem item1 = {
    PROTOBUF_C_MESSAGE_INIT(&webshop__v1__order_item__descriptor), 1, 2};
static Webshop__V1__OrderItem item2 = {
    PROTOBUF_C_MESSAGE_INIT(&webshop__v1__order_item__descriptor), 2, 5};
static Webshop__V1__OrderItem *two_items[] = {&item1, &item2};

static ws_err send_ev(const char *id, int64_t now, orders_effect *eff)
{
    Webshop__V1__OrderSent e = WEBSHOP__V1__ORDER_SENT__INIT;
    e.order_id = (char *)id;
    e.n_items = 2;
    e.items = two_items;
    return orders_apply_sent(conn, &pol, &e, now, eff);
}

static ws_err in_ev(const char *id, int64_t now, orders_effect *eff)
{
    Webshop__V1__InStock e = WEBSHOP__V1__IN_STOCK__INIT;
    e.order_id = (char *)id;
    return orders_apply_in_stock(conn, &pol, &e, now, eff);
}

static ws_err out_ev(const char *id, const char *reason, int64_t now, orders_effect *eff)
{
    Webshop__V1__OutOfStock e = WEBSHOP__V1__OUT_OF_STOCK__INIT;
    e.order_id = (char *)id;
    e.reason = (char *)reason;
    return orders_apply_out_of_stock(conn, &pol, &e, now, eff);
}

static ws_err cancel_ev(const char *id, int64_t now, orders_effect *eff)
{
    Webshop__V1__CancelOrder e = WEBSHOP__V1__CANCEL_ORDER__INIT;
    e.order_id = (char *)id;
    return orders_apply_cancel(conn, &pol, &e, now, eff);
}

/* The inventory's record as GetReservation answers it; items are the two of
 * send_ev when `items`. Not retained by orders_settle, so the stack does. */
static ws_err settle_ev(const char *id, Webshop__V1__ReservationStatus st,
                        const char *reason, bool items, int64_t now, orders_effect *eff)
{
    Webshop__V1__GetReservationResponse r = WEBSHOP__V1__GET_RESERVATION_RESPONSE__INIT;
    r.order_id = (char *)id;
    r.status = st;
    r.reason = (char *)reason;
    if (items) {
        r.n_items = 2;
        r.items = two_items;
    }
    return orders_settle(conn, &pol, id, &r, now, eff);
}

/* Whether the order's row is marked for an outcome check. */
static bool check_due(const char *id)
{
    ws_db_stmt *st;
    cr_assert_eq(ws_db_prepare(conn,
                               "SELECT CASE WHEN check_due_ms IS NULL THEN 0 ELSE 1 END"
                               " FROM orders WHERE id = $1",
                               &st),
                 WS_OK);
    ws_db_bind_text(st, 1, id);
    bool row = false;
    cr_assert_eq(ws_db_step(st, &row), WS_OK);
    bool due = row && ws_db_column_int64(st, 0) != 0;
    ws_db_reset(st);
    return due;
}

/* Rows under id (0 or 1). */
static int64_t rows_of(const char *id)
{
    ws_db_stmt *st;
    cr_assert_eq(ws_db_prepare(conn, "SELECT count(*) FROM orders WHERE id = $1", &st),
                 WS_OK);
    ws_db_bind_text(st, 1, id);
    bool row = false;
    cr_assert_eq(ws_db_step(st, &row), WS_OK);
    cr_assert(row);
    int64_t n = ws_db_column_int64(st, 0);
    ws_db_reset(st);
    return n;
}

/* What GetOrder shows of an order: status 0 when it is not found. */
typedef struct shown {
    int status;
    char reason[600];
    size_t n_items;
    int64_t created_ms;
} shown;

static shown look(const char *id)
{
    shown v = {0};
    Webshop__V1__Order *o = NULL;
    ws_err err = orders_get(conn, id, &o);
    if (err == WS_ENOTFOUND) {
        return v;
    }
    cr_assert_eq(err, WS_OK);
    cr_assert_str_eq(o->id, id);
    v.status = o->status;
    snprintf(v.reason, sizeof v.reason, "%s", o->reason);
    v.n_items = o->n_items;
    v.created_ms = o->created_ms;
    if (o->n_items == 2) {
        cr_assert_eq(o->items[1]->inventory_id, 2);
        cr_assert_eq(o->items[1]->count, 5);
    }
    protobuf_c_message_free_unpacked(&o->base, NULL);
    return v;
}

static int rank(int status)
{
    return status == WEBSHOP__V1__ORDER_STATUS__CANCELED  ? 3
           : status == IN || status == OUT                ? 2
           : status == WEBSHOP__V1__ORDER_STATUS__PENDING ? 1
                                                          : 0;
}

/* The status events of one step agree with what GetOrder shows: exactly
 * one OrderStatusChanged (lower-case id, the new status and reason) when
 * the shown (status, reason) changed, none otherwise. */
static void step_check(const char *what, const char *id, const shown *before,
                       const shown *after)
{
    drained d = drain();
    bool changed =
        after->status != before->status || strcmp(after->reason, before->reason) != 0;
    cr_assert_eq(d.n_status, changed ? 1 : 0, "%s: %d status events", what, d.n_status);
    if (changed) {
        cr_assert_eq(d.last_status, after->status, "%s", what);
        cr_assert_str_eq(d.last_reason, after->reason, "%s", what);
        cr_assert_str_eq(d.last_status_id, id, "%s", what);
    }
}

/* 'S' OrderSent, 'O' the outcome (in or out of stock), 'I' InStock, 'U'
 * OutOfStock, 'C' CancelOrder. */
static void apply_char(char ev, int outcome, const char *id, int64_t now)
{
    ws_err err;
    if (ev == 'O') {
        ev = outcome == IN ? 'I' : 'U';
    }
    switch (ev) {
    case 'S':
        err = send_ev(id, now, NULL);
        break;
    case 'I':
        err = in_ev(id, now, NULL);
        break;
    case 'U':
        err = out_ev(id, "not enough stock", now, NULL);
        break;
    default:
        err = cancel_ev(id, now, NULL);
        break;
    }
    cr_assert_eq(err, WS_OK, "event %c: %s", ev, ws_errname(err));
}

static int cmp_char(const void *a, const void *b)
{
    return *(const char *)a - *(const char *)b;
}

/* Next lexicographic permutation of s[0..n); false after the last. */
static bool next_perm(char *s, size_t n)
{
    if (n < 2) {
        return false;
    }
    size_t i = n - 1;
    while (i > 0 && s[i - 1] >= s[i]) {
        i--;
    }
    if (i == 0) {
        return false;
    }
    size_t j = n - 1;
    while (s[j] <= s[i - 1]) {
        j--;
    }
    char t = s[i - 1];
    s[i - 1] = s[j];
    s[j] = t;
    for (size_t a = i, b = n - 1; a < b; a++, b--) {
        t = s[a];
        s[a] = s[b];
        s[b] = t;
    }
    return true;
}

/* One outcome kind, each event once or twice, every arrival order; then
 * the check, if one is due, settled by the inventory's record of that
 * outcome (as the real inventory records it: one outcome per order). */
Test(order_orders, every_permutation_of_events_ends_in_same_state)
{
    const char kinds[] = {'S', 'O', 'C'};
    int permutations = 0;
    for (int outcome = IN; outcome <= OUT; outcome++) {
        for (int present = 1; present < 8; present++) {
            for (int dup = 0; dup < 8; dup++) {
                if ((dup & ~present) != 0) {
                    continue;
                }
                char seq[7];
                size_t n = 0;
                for (int k = 0; k < 3; k++) {
                    if (present & (1 << k)) {
                        seq[n++] = kinds[k];
                    }
                    if (dup & (1 << k)) {
                        seq[n++] = kinds[k];
                    }
                }
                seq[n] = '\0';
                qsort(seq, n, 1, cmp_char);
                bool has_s = present & 1, has_o = present & 2, has_c = present & 4;
                bool only_cancel = !has_s && !has_o; /* a tombstone, not an order */
                int want = only_cancel ? 0
                           : has_c     ? WEBSHOP__V1__ORDER_STATUS__CANCELED
                           : has_o     ? outcome
                                       : WEBSHOP__V1__ORDER_STATUS__PENDING;
                const char *want_reason = want == OUT ? "not enough stock" : "";
                do {
                    char id[37];
                    new_id(id);
                    for (size_t i = 0; i < n; i++) {
                        shown before = look(id);
                        apply_char(seq[i], outcome, id, 1000 + (int64_t)i);
                        shown after = look(id);
                        step_check(seq, id, &before, &after);
                        cr_assert(after.status == before.status ||
                                      rank(after.status) > rank(before.status),
                                  "%s: event %zu moved %d to %d", seq, i, before.status,
                                  after.status);
                    }
                    bool checked = check_due(id);
                    if (checked) {
                        shown before = look(id);
                        cr_assert_eq(
                            settle_ev(id,
                                      outcome == IN
                                          ? WEBSHOP__V1__RESERVATION_STATUS__RESERVED
                                          : WEBSHOP__V1__RESERVATION_STATUS__REJECTED,
                                      "not enough stock", true, 4000, NULL),
                            WS_OK);
                        shown after = look(id);
                        step_check(seq, id, &before, &after);
                        cr_assert(!check_due(id), "%s: settled", seq);
                    }
                    shown v = look(id);
                    cr_assert_eq(v.status, want, "%s: status %d, want %d", seq, v.status,
                                 want);
                    cr_assert_str_eq(v.reason, want_reason, "%s", seq);
                    cr_assert_eq(v.n_items, has_s || checked ? 2u : 0u, "%s", seq);
                    if (!only_cancel) {
                        cr_assert_eq(v.created_ms, 1000);
                    }

                    /* Replaying everything changes nothing and queues no
                     * status (only the unconfirmed cancel is re-queued). */
                    for (size_t i = 0; i < n; i++) {
                        apply_char(seq[i], outcome, id, 5000);
                    }
                    drained d = drain();
                    cr_assert_eq(d.n_status, 0, "%s: replay queued a status", seq);
                    int n_c = 0;
                    for (size_t i = 0; i < n; i++) {
                        n_c += seq[i] == 'C';
                    }
                    cr_assert_eq(d.n_canceled, n_c,
                                 "%s: one OrderCanceled per replayed cancel", seq);
                    cr_assert_eq(look(id).status, want);
                    cr_assert(!check_due(id), "%s: a replay asked for a check", seq);
                    permutations++;
                } while (next_perm(seq, n));
            }
        }
    }
    cr_assert_gt(permutations, 400);
}

/* ---- conflicting outcomes: the inventory's record decides ---------------- */

typedef struct record_case {
    Webshop__V1__ReservationStatus status;
    const char *reason;
    bool items;
} record_case;

static const record_case conflict_records[] = {
    {WEBSHOP__V1__RESERVATION_STATUS__RESERVED, "", true},
    {WEBSHOP__V1__RESERVATION_STATUS__REJECTED, "not enough stock for product 2", false},
    {WEBSHOP__V1__RESERVATION_STATUS__RELEASED, "", true},
    {WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED, "", false},
    {WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN, "", false},
};
#define N_RECORDS (sizeof conflict_records / sizeof conflict_records[0])

/* What an order must end as once the record r settled it (not canceled). */
static void record_want(const record_case *r, int *status, const char **reason)
{
    switch (r->status) {
    case WEBSHOP__V1__RESERVATION_STATUS__RESERVED:
        *status = IN;
        *reason = "";
        break;
    case WEBSHOP__V1__RESERVATION_STATUS__REJECTED:
        *status = OUT;
        *reason = r->reason;
        break;
    default:
        *status = OUT;
        *reason = ORDERS_REASON_RELEASED;
        break;
    }
}

/* What a sequence of events is, as the rule of orders.h sees it. */
typedef struct seq_facts {
    bool s, i, u, c;
    bool decided_by_record; /* not canceled; both outcomes, or one before the items */
    int direct;             /* else: the status the events alone give */
} seq_facts;

static seq_facts seq_facts_of(const char *seq)
{
    seq_facts f = {0};
    bool outcome_first = false;
    for (const char *p = seq; *p; p++) {
        if ((*p == 'I' || *p == 'U') && !f.s) {
            outcome_first = true;
        }
        f.s |= *p == 'S';
        f.i |= *p == 'I';
        f.u |= *p == 'U';
        f.c |= *p == 'C';
    }
    f.decided_by_record = !f.c && ((f.i && f.u) || outcome_first);
    f.direct = f.c   ? WEBSHOP__V1__ORDER_STATUS__CANCELED
               : f.i ? IN
               : f.u ? OUT
                     : WEBSHOP__V1__ORDER_STATUS__PENDING;
    return f;
}

/* Settle with r, checking the status events of the step; returns the
 * effect. */
static orders_effect settle_step(const char *seq, const char *id, const record_case *r,
                                 int64_t now)
{
    shown before = look(id);
    orders_effect eff;
    cr_assert_eq(settle_ev(id, r->status, r->reason, r->items, now, &eff), WS_OK);
    shown after = look(id);
    step_check(seq, id, &before, &after);
    cr_assert(before.status != WEBSHOP__V1__ORDER_STATUS__CANCELED ||
                  after.status == before.status,
              "%s: settling left CANCELED", seq);
    return eff;
}

/* One run: the events of seq in that order, then the check settled by r. */
static void conflict_run(const char *seq, const record_case *r)
{
    seq_facts f = seq_facts_of(seq);
    char id[37];
    new_id(id);
    size_t n = strlen(seq);
    for (size_t i = 0; i < n; i++) {
        shown before = look(id);
        apply_char(seq[i], 0, id, 1000 + (int64_t)i);
        shown after = look(id);
        step_check(seq, id, &before, &after);
        /* Events never move between SUCCESSFUL and UNSUCCESSFUL, never
         * down, and never out of CANCELED. */
        cr_assert(after.status == before.status ||
                      rank(after.status) > rank(before.status),
                  "%s: event %zu moved %d to %d", seq, i, before.status, after.status);
    }
    if (f.decided_by_record) {
        cr_assert(check_due(id), "%s: no check due", seq);
    }
    bool checked = check_due(id);
    shown held = look(id);
    orders_effect eff = settle_step(seq, id, r, 2000);
    const record_case *final = r;
    if (checked && r->status == WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN) {
        /* Nothing decided: kept as it was, asked again later. */
        cr_assert(!eff.settled && eff.check, "%s", seq);
        cr_assert(check_due(id), "%s: unknown record dropped the check", seq);
        cr_assert_eq(look(id).status, held.status, "%s", seq);
        final = &conflict_records[0];
        settle_step(seq, id, final, 3000);
    }
    cr_assert(!check_due(id), "%s: check left due", seq);

    int want = f.direct;
    const char *want_reason = want == OUT ? "not enough stock" : "";
    if (f.decided_by_record) {
        record_want(final, &want, &want_reason);
    }
    bool only_cancel = !f.s && !f.i && !f.u;
    shown v = look(id);
    cr_assert_eq(v.status, only_cancel ? 0 : want, "%s %d: status %d, want %d", seq,
                 r->status, v.status, want);
    cr_assert_str_eq(v.reason, only_cancel ? "" : want_reason, "%s %d", seq, r->status);
    size_t want_items = f.s || (checked && final->items) ? 2 : 0;
    cr_assert_eq(v.n_items, want_items, "%s %d: %zu items", seq, r->status, v.n_items);
    /* The chaos check `agree`, for this order. */
    if (v.status == IN) {
        cr_assert(!checked || final->status == WEBSHOP__V1__RESERVATION_STATUS__RESERVED,
                  "%s: SUCCESSFUL against record %d", seq, final->status);
    }

    /* Replays queue no status and change nothing, once settled again. */
    for (size_t i = 0; i < n; i++) {
        apply_char(seq[i], 0, id, 5000);
    }
    drained d = drain();
    cr_assert_eq(d.n_status, 0, "%s: replay queued a status", seq);
    if (check_due(id)) {
        settle_step(seq, id, final, 6000);
    }
    shown again = look(id);
    cr_assert_eq(again.status, v.status, "%s: replay moved the status", seq);
    cr_assert_str_eq(again.reason, v.reason, "%s", seq);
}

Test(order_orders, every_permutation_of_conflicting_outcomes_agrees_with_the_record)
{
    const char kinds[] = {'C', 'I', 'S', 'U'}; /* sorted */
    int runs = 0;
    for (int present = 1; present < 16; present++) {
        for (int dup = -1; dup < 4; dup++) {
            if (dup >= 0 && !(present & (1 << dup))) {
                continue;
            }
            char seq[6];
            size_t n = 0;
            for (int k = 0; k < 4; k++) {
                if (present & (1 << k)) {
                    seq[n++] = kinds[k];
                }
                if (k == dup) {
                    seq[n++] = kinds[k];
                }
            }
            seq[n] = '\0';
            do {
                seq_facts f = seq_facts_of(seq);
                for (size_t r = 0; r < N_RECORDS; r++) {
                    const record_case *rc = &conflict_records[r];
                    /* A single outcome after its OrderSent is trusted: only
                     * the record that outcome came from can exist. */
                    if (!f.c && !f.decided_by_record && (f.i || f.u) &&
                        rc->status != (f.i ? WEBSHOP__V1__RESERVATION_STATUS__RESERVED
                                           : WEBSHOP__V1__RESERVATION_STATUS__REJECTED)) {
                        continue;
                    }
                    conflict_run(seq, rc);
                    runs++;
                }
            } while (next_perm(seq, n));
        }
    }
    cr_assert_gt(runs, 1000, "%d runs", runs);
}

Test(order_orders, conflicting_outcome_is_held_until_the_record_settles_it)
{
    char a[37];
    new_id(a);
    orders_effect eff;
    cr_assert_eq(send_ev(a, 1, NULL), WS_OK);
    cr_assert_eq(out_ev(a, "first", 2, &eff), WS_OK);
    cr_assert(!eff.check);
    drain();
    cr_assert_eq(in_ev(a, 3, &eff), WS_OK);
    cr_assert(eff.conflict);
    cr_assert(eff.check);
    cr_assert_eq(eff.new_status, OUT, "held until the check");
    cr_assert_eq(eff.queued, 0);
    cr_assert(check_due(a));
    /* The inventory reserved it: the order is SUCCESSFUL, the stock held
     * for it is accounted for. */
    cr_assert_eq(
        settle_ev(a, WEBSHOP__V1__RESERVATION_STATUS__RESERVED, "", true, 4, &eff),
        WS_OK);
    cr_assert(eff.settled);
    cr_assert_eq(eff.old_status, OUT);
    cr_assert_eq(eff.new_status, IN);
    cr_assert(!eff.items_filled, "its own items are kept");
    shown v = look(a);
    cr_assert_eq(v.status, IN);
    cr_assert_str_eq(v.reason, "");
    drained d = drain();
    cr_assert_eq(d.n_status, 1);
    cr_assert_eq(d.last_status, IN);
    /* Settling again (no check due) does nothing. */
    cr_assert_eq(
        settle_ev(a, WEBSHOP__V1__RESERVATION_STATUS__REJECTED, "x", false, 5, &eff),
        WS_OK);
    cr_assert(!eff.settled && !eff.check);
    cr_assert_eq(look(a).status, IN);
    cr_assert_eq(drain().n_rows, 0);
}

Test(order_orders, outcome_before_items_stays_pending_until_the_record_settles_it)
{
    char id[37];
    new_id(id);
    orders_effect eff;
    cr_assert_eq(in_ev(id, 42, &eff), WS_OK);
    cr_assert(eff.created);
    cr_assert(eff.check);
    cr_assert(!eff.tombstone);
    cr_assert_eq(eff.old_status, 0);
    cr_assert_eq(eff.new_status, WEBSHOP__V1__ORDER_STATUS__PENDING);
    shown v = look(id);
    cr_assert_eq(v.status, WEBSHOP__V1__ORDER_STATUS__PENDING, "a real order, visible");
    cr_assert_eq(v.n_items, 0);
    cr_assert_eq(v.created_ms, 42);
    drained d = drain();
    cr_assert_eq(d.n_rows, 1, "the first commit queues its status");
    cr_assert_eq(d.last_status, WEBSHOP__V1__ORDER_STATUS__PENDING);
    /* The inventory never heard of it: it stays PENDING, asked again. */
    cr_assert_eq(settle_ev(id, WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN, "",
                           false, 50, &eff),
                 WS_OK);
    cr_assert(!eff.settled && eff.check);
    cr_assert_eq(look(id).status, WEBSHOP__V1__ORDER_STATUS__PENDING);
    cr_assert_eq(drain().n_rows, 0);
    /* It rejected it: UNSUCCESSFUL with its reason, its items filled in. */
    cr_assert_eq(settle_ev(id, WEBSHOP__V1__RESERVATION_STATUS__REJECTED,
                           "unknown product", true, 60, &eff),
                 WS_OK);
    cr_assert(eff.settled && eff.items_filled);
    v = look(id);
    cr_assert_eq(v.status, OUT);
    cr_assert_str_eq(v.reason, "unknown product");
    cr_assert_eq(v.n_items, 2);
    d = drain();
    cr_assert_eq(d.n_status, 1);
    cr_assert_str_eq(d.last_reason, "unknown product");
}

Test(order_orders, released_record_makes_an_uncanceled_order_unsuccessful)
{
    char a[37], b[37];
    new_id(a);
    new_id(b);
    cr_assert_eq(in_ev(a, 1, NULL), WS_OK);
    cr_assert_eq(
        settle_ev(a, WEBSHOP__V1__RESERVATION_STATUS__RELEASED, "", true, 2, NULL),
        WS_OK);
    shown v = look(a);
    cr_assert_eq(v.status, OUT);
    cr_assert_str_eq(v.reason, ORDERS_REASON_RELEASED);
    /* Canceled meanwhile: CANCELED is never left, whatever the record. */
    cr_assert_eq(in_ev(b, 1, NULL), WS_OK);
    cr_assert_eq(cancel_ev(b, 2, NULL), WS_OK);
    drain();
    orders_effect eff;
    cr_assert_eq(
        settle_ev(b, WEBSHOP__V1__RESERVATION_STATUS__RESERVED, "", true, 3, &eff),
        WS_OK);
    cr_assert(eff.settled);
    cr_assert(eff.items_filled);
    cr_assert_eq(look(b).status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
    cr_assert_eq(drain().n_status, 0);
    cr_assert(!check_due(b));
}

Test(order_orders, unknown_record_is_asked_again_with_backoff_then_dropped)
{
    pol.max_attempts = 3;
    char id[37];
    new_id(id);
    cr_assert_eq(in_ev(id, 0, NULL), WS_OK);
    orders_effect eff;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(settle_ev(id, WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN,
                               "", false, 10, &eff),
                     WS_OK);
        cr_assert(eff.check && !eff.settled, "attempt %d", i);
    }
    cr_assert_eq(settle_ev(id, WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN, "",
                           false, 10, &eff),
                 WS_OK);
    cr_assert(!eff.check && eff.settled, "dropped after max_attempts");
    cr_assert(!check_due(id));
    cr_assert_eq(look(id).status, WEBSHOP__V1__ORDER_STATUS__PENDING);
    /* A new outcome asks again. */
    cr_assert_eq(out_ev(id, "x", 20, &eff), WS_OK);
    cr_assert(eff.check);
    cr_assert(check_due(id));
}

Test(order_orders, late_order_sent_fills_items_only)
{
    char id[37];
    new_id(id);
    cr_assert_eq(send_ev(id, 10, NULL), WS_OK);
    cr_assert_eq(out_ev(id, "unknown product", 15, NULL), WS_OK);
    char late[37];
    new_id(late);
    cr_assert_eq(out_ev(late, "unknown product", 10, NULL), WS_OK);
    drain();
    orders_effect eff;
    cr_assert_eq(send_ev(late, 20, &eff), WS_OK);
    cr_assert(!eff.created);
    cr_assert(eff.items_filled);
    cr_assert_eq(eff.old_status, WEBSHOP__V1__ORDER_STATUS__PENDING);
    cr_assert_eq(eff.new_status, WEBSHOP__V1__ORDER_STATUS__PENDING);
    cr_assert_eq(eff.queued, 0);
    shown v = look(late);
    cr_assert_eq(v.n_items, 2);
    cr_assert_eq(v.created_ms, 10);
    cr_assert_eq(drain().n_rows, 0);

    /* A second OrderSent with other items is a conflict and changes nothing. */
    Webshop__V1__OrderSent e = WEBSHOP__V1__ORDER_SENT__INIT;
    e.order_id = id;
    e.n_items = 1;
    e.items = two_items;
    cr_assert_eq(orders_apply_sent(conn, &pol, &e, 30, &eff), WS_OK);
    cr_assert(eff.conflict);
    cr_assert(!eff.items_filled);
    Webshop__V1__Order *o;
    cr_assert_eq(orders_get(conn, id, &o), WS_OK);
    cr_assert_eq(o->n_items, 2);
    cr_assert_eq(o->status, OUT);
    cr_assert_str_eq(o->reason, "unknown product");
    cr_assert_eq(o->updated_ms, 15);
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order_orders, deferred_status_is_owed_and_the_last_one_is_queued)
{
    char id[37];
    new_id(id);
    drain();
    pol.defer_status = true;
    orders_effect sent, in;
    cr_assert_eq(ws_db_group_begin(conn), WS_OK);
    cr_assert_eq(send_ev(id, 10, &sent), WS_OK);
    cr_assert(sent.created);
    cr_assert(sent.owes);
    cr_assert_eq(sent.queued, 0, "the status is owed, not queued");
    cr_assert_str_eq(sent.owed.id, id);
    cr_assert_eq(sent.owed.status, WEBSHOP__V1__ORDER_STATUS__PENDING);
    cr_assert_eq(out_ev(id, "no stock", 11, &in), WS_OK);
    cr_assert(in.owes);
    cr_assert_eq(in.owed.status, OUT);
    cr_assert_str_eq(in.owed.reason, "no stock");
    unsigned queued = 0;
    cr_assert_eq(orders_queue_owed(conn, &in.owed, 1, &queued), WS_OK);
    cr_assert_eq(queued, 1);
    cr_assert_eq(ws_db_group_end(conn), WS_OK);
    pol.defer_status = false;
    drained d = drain();
    cr_assert_eq(d.n_rows, 1, "UNSUCCESSFUL only, no PENDING before it");
    cr_assert_eq(d.last_status, OUT);
    cr_assert_str_eq(d.last_status_id, id);
    cr_assert_str_eq(d.last_reason, "no stock");
}

Test(order_orders, cancel_queues_order_canceled_with_the_status_change)
{
    char id[37];
    new_id(id);
    cr_assert_eq(send_ev(id, 1, NULL), WS_OK);
    cr_assert_eq(in_ev(id, 2, NULL), WS_OK);
    drain();
    orders_effect eff;
    cr_assert_eq(cancel_ev(id, 3, &eff), WS_OK);
    cr_assert_eq(eff.old_status, IN);
    cr_assert_eq(eff.new_status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
    cr_assert_eq(eff.queued, 2);
    drained d = drain();
    cr_assert_eq(d.n_canceled, 1);
    cr_assert_eq(d.n_status, 1);
    cr_assert_eq(d.last_status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
}

Test(order_orders, duplicate_cancel_requeues_only_until_confirmed)
{
    char id[37];
    new_id(id);
    cr_assert_eq(cancel_ev(id, 1, NULL), WS_OK);
    drain();
    orders_effect eff;
    cr_assert_eq(cancel_ev(id, 2, &eff), WS_OK);
    cr_assert_eq(eff.queued, 1);
    drained d = drain();
    cr_assert_eq(d.n_canceled, 1);
    cr_assert_eq(d.n_status, 0);
    /* What the recovery loop does when the inventory confirms. */
    char sql[200];
    snprintf(sql, sizeof sql, "UPDATE orders SET cancel_confirmed = 1 WHERE id = '%s'",
             id);
    cr_assert_eq(ws_db_exec(conn, sql), WS_OK);
    cr_assert_eq(cancel_ev(id, 3, &eff), WS_OK);
    cr_assert_eq(eff.queued, 0);
    cr_assert_eq(drain().n_rows, 0);
}

/* ---- tombstones ------------------------------------------------------------ */

Test(order_orders, cancel_of_an_unseen_order_is_a_tombstone_not_an_order)
{
    char id[37];
    new_id(id);
    orders_effect eff;
    cr_assert_eq(cancel_ev(id, 7, &eff), WS_OK);
    cr_assert(eff.created);
    cr_assert(eff.tombstone);
    drained d = drain();
    cr_assert_eq(d.n_canceled, 1, "the inventory is told, to leave its own tombstone");
    cr_assert_eq(d.n_status, 0, "no status: it is not an order");
    Webshop__V1__Order *o = NULL;
    cr_assert_eq(orders_get(conn, id, &o), WS_ENOTFOUND);
    cr_assert_null(o);
    Webshop__V1__ListOrdersResponse *r;
    cr_assert_eq(orders_list(conn, 0, NULL, &r), WS_OK);
    cr_assert_eq(r->n_orders, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    /* A duplicate cancel keeps it a tombstone. */
    cr_assert_eq(cancel_ev(id, 8, &eff), WS_OK);
    cr_assert(eff.tombstone);
    cr_assert_eq(drain().n_status, 0);
    cr_assert_eq(orders_get(conn, id, &o), WS_ENOTFOUND);
}

Test(order_orders, tombstone_becomes_a_canceled_order_when_its_order_sent_comes)
{
    char id[37];
    new_id(id);
    cr_assert_eq(cancel_ev(id, 7, NULL), WS_OK);
    drain();
    orders_effect eff;
    cr_assert_eq(send_ev(id, 9, &eff), WS_OK);
    cr_assert(eff.revealed);
    cr_assert(!eff.tombstone);
    cr_assert(eff.items_filled);
    drained d = drain();
    cr_assert_eq(d.n_status, 1, "it publishes when it becomes an order");
    cr_assert_eq(d.last_status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
    cr_assert_eq(d.n_canceled, 0);
    shown v = look(id);
    cr_assert_eq(v.status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
    cr_assert_eq(v.n_items, 2);
    cr_assert_eq(v.created_ms, 7);
    Webshop__V1__ListOrdersResponse *r;
    cr_assert_eq(orders_list(conn, 0, NULL, &r), WS_OK);
    cr_assert_eq(r->n_orders, 1);
    cr_assert_str_eq(r->orders[0]->id, id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    cr_assert_eq(send_ev(id, 10, &eff), WS_OK);
    cr_assert(!eff.revealed);
    cr_assert_eq(drain().n_rows, 0);
}

Test(order_orders, tombstone_becomes_a_canceled_order_when_an_outcome_comes)
{
    char a[37], b[37];
    new_id(a);
    new_id(b);
    cr_assert_eq(cancel_ev(a, 1, NULL), WS_OK);
    cr_assert_eq(cancel_ev(b, 1, NULL), WS_OK);
    drain();
    orders_effect eff;
    cr_assert_eq(out_ev(a, "canceled", 2, &eff), WS_OK);
    cr_assert(eff.revealed);
    cr_assert(!eff.check, "CANCELED is final: nothing to check");
    cr_assert_eq(in_ev(b, 2, &eff), WS_OK);
    cr_assert(eff.revealed);
    drained d = drain();
    cr_assert_eq(d.n_status, 2);
    cr_assert_eq(d.last_status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
    cr_assert_eq(look(a).status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
    cr_assert_str_eq(look(a).reason, "");
    cr_assert_eq(look(b).status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
}

/* ---- the id rule and the limits ------------------------------------------ */

static void upper(char *dst, const char *src)
{
    for (; *src; src++, dst++) {
        *dst = *src >= 'a' && *src <= 'f' ? (char)(*src - 'a' + 'A') : *src;
    }
    *dst = '\0';
}

/* Mixed case: every other hex letter upper case. */
static void mixed(char *dst, const char *src)
{
    int k = 0;
    for (; *src; src++, dst++) {
        bool letter = *src >= 'a' && *src <= 'f';
        *dst = letter && (k++ & 1) ? (char)(*src - 'a' + 'A') : *src;
    }
    *dst = '\0';
}

Test(order_orders, ids_in_any_case_are_one_order_stored_in_lower_case)
{
    char id[37], up[37], mx[37];
    do {
        new_id(id);
        upper(up, id);
    } while (strcmp(up, id) == 0); /* an id without a letter proves nothing */
    mixed(mx, id);
    orders_effect eff;
    cr_assert_eq(send_ev(up, 1, &eff), WS_OK);
    cr_assert(eff.created);
    drained d = drain();
    cr_assert_str_eq(d.last_status_id, id, "published in lower case");
    cr_assert_eq(in_ev(mx, 2, &eff), WS_OK);
    cr_assert(!eff.created, "the same order");
    cr_assert_eq(eff.new_status, IN);
    cr_assert_str_eq(drain().last_status_id, id);
    cr_assert_eq(out_ev(up, "x", 3, &eff), WS_OK);
    cr_assert(eff.conflict, "the same order, other outcome");
    cr_assert_eq(
        settle_ev(mx, WEBSHOP__V1__RESERVATION_STATUS__RESERVED, "", true, 4, &eff),
        WS_OK);
    cr_assert(eff.settled);
    cr_assert_eq(cancel_ev(mx, 5, &eff), WS_OK);
    cr_assert_eq(eff.old_status, IN);
    cr_assert_eq(eff.new_status, WEBSHOP__V1__ORDER_STATUS__CANCELED);
    cr_assert_str_eq(drain().last_status_id, id);

    Webshop__V1__Order *o;
    cr_assert_eq(orders_get(conn, up, &o), WS_OK);
    cr_assert_str_eq(o->id, id, "answered in lower case");
    protobuf_c_message_free_unpacked(&o->base, NULL);
    cr_assert_eq(orders_get(conn, mx, &o), WS_OK);
    protobuf_c_message_free_unpacked(&o->base, NULL);
    Webshop__V1__ListOrdersResponse *r;
    cr_assert_eq(orders_list(conn, 0, NULL, &r), WS_OK);
    cr_assert_eq(r->n_orders, 1, "one row for three spellings");
    cr_assert_str_eq(r->orders[0]->id, id);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* Each event creates its row under the lower-case id, too. */
    const char kinds[] = "SIUC";
    for (int k = 0; k < 4; k++) {
        char lo[37], in[37];
        new_id(lo);
        mixed(in, lo);
        apply_char(kinds[k], 0, in, 10);
        cr_assert(check_due(lo) || kinds[k] != 'I', "row under the lower-case id");
        cr_assert_eq(rows_of(lo), 1, "event %c", kinds[k]);
        if (kinds[k] != 'C') {
            cr_assert_str_eq(drain().last_status_id, lo, "event %c", kinds[k]);
        }
    }
}

Test(order_orders, page_token_with_an_upper_case_id_is_the_same_key)
{
    char id[37];
    for (int i = 0; i < 3; i++) {
        new_id(id);
        cr_assert_eq(send_ev(id, 100 + i, NULL), WS_OK);
    }
    /* The token "101:<ID>" of the second newest, its id in upper case. */
    Webshop__V1__ListOrdersResponse *r;
    char raw[80], up[37];
    cr_assert_eq(orders_list(conn, 2, NULL, &r), WS_OK);
    char second[37];
    snprintf(second, sizeof second, "%s", r->orders[1]->id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    upper(up, second);
    snprintf(raw, sizeof raw, "101:%s", up);
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    char tok[128];
    size_t n = strlen(raw), o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)raw[i] << 16;
        v |= i + 1 < n ? (uint32_t)(unsigned char)raw[i + 1] << 8 : 0;
        v |= i + 2 < n ? (uint32_t)(unsigned char)raw[i + 2] : 0;
        tok[o++] = b64[(v >> 18) & 63];
        tok[o++] = b64[(v >> 12) & 63];
        if (i + 1 < n) {
            tok[o++] = b64[(v >> 6) & 63];
        }
        if (i + 2 < n) {
            tok[o++] = b64[v & 63];
        }
    }
    tok[o] = '\0';
    cr_assert_eq(orders_list(conn, 10, tok, &r), WS_OK);
    cr_assert_eq(r->n_orders, 1, "only the oldest is after the second newest");
    cr_assert_eq(r->orders[0]->created_ms, 100);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

Test(order_orders, limits_are_the_fronts_at_and_past_the_bound)
{
    static Webshop__V1__OrderItem lines[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS + 1];
    static Webshop__V1__OrderItem *ptrs[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS + 1];
    for (int i = 0; i <= WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS; i++) {
        webshop__v1__order_item__init(&lines[i]);
        lines[i].inventory_id = i + 1;
        lines[i].count = WEBSHOP_V1_ORDER_ITEM_COUNT_MAX;
        ptrs[i] = &lines[i];
    }
    cr_assert_eq(WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS, 100);
    cr_assert_eq(WEBSHOP_V1_ORDER_ITEM_COUNT_MAX, 1000);
    char id[37];
    new_id(id);
    Webshop__V1__OrderSent e = WEBSHOP__V1__ORDER_SENT__INIT;
    e.order_id = id;
    e.items = ptrs;
    orders_effect eff;
    e.n_items = WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS + 1;
    cr_assert_eq(orders_apply_sent(conn, &pol, &e, 1, &eff), WS_EINVAL);
    cr_assert_str_eq(eff.invalid, "items");
    lines[0].count = WEBSHOP_V1_ORDER_ITEM_COUNT_MAX + 1;
    e.n_items = WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS;
    cr_assert_eq(orders_apply_sent(conn, &pol, &e, 1, &eff), WS_EINVAL);
    cr_assert_str_eq(eff.invalid, "items.count");
    cr_assert_eq(look(id).status, 0, "nothing written");
    /* 100 lines of 1000 units: the largest order the front accepts. */
    lines[0].count = WEBSHOP_V1_ORDER_ITEM_COUNT_MAX;
    cr_assert_eq(orders_apply_sent(conn, &pol, &e, 1, &eff), WS_OK);
    cr_assert(eff.created);
    Webshop__V1__Order *o;
    cr_assert_eq(orders_get(conn, id, &o), WS_OK);
    cr_assert_eq(o->n_items, WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS);
    cr_assert_eq(o->items[WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS - 1]->count,
                 WEBSHOP_V1_ORDER_ITEM_COUNT_MAX);
    protobuf_c_message_free_unpacked(&o->base, NULL);
    /* The smallest: one line of one unit. */
    new_id(id);
    lines[0].count = 1;
    e.n_items = 1;
    cr_assert_eq(orders_apply_sent(conn, &pol, &e, 1, &eff), WS_OK);
    /* A record with lines past the bound fills nothing in. */
    new_id(id);
    cr_assert_eq(in_ev(id, 1, NULL), WS_OK);
    Webshop__V1__GetReservationResponse rec = WEBSHOP__V1__GET_RESERVATION_RESPONSE__INIT;
    rec.order_id = id;
    rec.status = WEBSHOP__V1__RESERVATION_STATUS__RESERVED;
    rec.items = ptrs;
    rec.n_items = WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS + 1;
    cr_assert_eq(orders_settle(conn, &pol, id, &rec, 2, &eff), WS_OK);
    cr_assert(eff.settled);
    cr_assert(!eff.items_filled);
    cr_assert_eq(look(id).n_items, 0);
    cr_assert_eq(look(id).status, IN);
}

Test(order_orders, invalid_events_are_refused_and_write_nothing)
{
    orders_effect eff;
    cr_assert_eq(in_ev("not-a-uuid", 1, &eff), WS_EINVAL);
    cr_assert_str_eq(eff.invalid, "order_id");
    cr_assert_eq(in_ev("6F9619FF-8B86-D011-B42D-00C04FC964F", 1, &eff), WS_EINVAL);
    cr_assert_eq(in_ev("6F9619FF-8B86-D011-B42D-00C04FC964FFF", 1, &eff), WS_EINVAL);
    cr_assert_eq(in_ev("6G9619FF-8B86-D011-B42D-00C04FC964FF", 1, &eff), WS_EINVAL);
    cr_assert_eq(cancel_ev("", 1, &eff), WS_EINVAL);
    cr_assert_eq(out_ev("6f9619ff-8b86-d011-b42d-00c04fc964f", "x", 1, &eff), WS_EINVAL);
    cr_assert_eq(
        settle_ev("nope", WEBSHOP__V1__RESERVATION_STATUS__RESERVED, "", false, 1, &eff),
        WS_EINVAL);

    char id[37];
    new_id(id);
    Webshop__V1__OrderSent e = WEBSHOP__V1__ORDER_SENT__INIT;
    e.order_id = id;
    cr_assert_eq(orders_apply_sent(conn, &pol, &e, 1, &eff), WS_EINVAL);
    cr_assert_str_eq(eff.invalid, "items");
    Webshop__V1__OrderItem bad_count = WEBSHOP__V1__ORDER_ITEM__INIT;
    bad_count.inventory_id = 1;
    bad_count.count = 0;
    Webshop__V1__OrderItem *items[] = {&item1, &bad_count};
    e.items = items;
    e.n_items = 2;
    cr_assert_eq(orders_apply_sent(conn, &pol, &e, 1, &eff), WS_EINVAL);
    cr_assert_str_eq(eff.invalid, "items.count");
    Webshop__V1__OrderItem bad_id = WEBSHOP__V1__ORDER_ITEM__INIT;
    bad_id.inventory_id = -3;
    bad_id.count = 1;
    items[1] = &bad_id;
    cr_assert_eq(orders_apply_sent(conn, &pol, &e, 1, &eff), WS_EINVAL);
    cr_assert_str_eq(eff.invalid, "items.inventory_id");

    Webshop__V1__Order *o;
    cr_assert_eq(orders_get(conn, id, &o), WS_ENOTFOUND);
    cr_assert_eq(drain().n_rows, 0);
}

Test(order_orders, long_reason_is_cut_on_a_utf8_boundary)
{
    char reason[1200];
    size_t n = 0;
    while (n + 2 < sizeof reason - 1) {
        reason[n++] = '\xc3'; /* "é" */
        reason[n++] = '\xa9';
    }
    reason[n] = '\0';
    memmove(reason + 1, reason, n + 1); /* shift by one: the cut falls mid-sequence */
    reason[0] = 'x';
    char id[37], rec[37];
    new_id(id);
    new_id(rec);
    cr_assert_eq(send_ev(id, 0, NULL), WS_OK);
    cr_assert_eq(out_ev(id, reason, 1, NULL), WS_OK);
    /* The same cut for a reason from the inventory's record. */
    cr_assert_eq(in_ev(rec, 0, NULL), WS_OK);
    cr_assert_eq(
        settle_ev(rec, WEBSHOP__V1__RESERVATION_STATUS__REJECTED, reason, false, 1, NULL),
        WS_OK);
    const char *ids[] = {id, rec};
    for (int i = 0; i < 2; i++) {
        Webshop__V1__Order *o;
        cr_assert_eq(orders_get(conn, ids[i], &o), WS_OK);
        size_t len = strlen(o->reason);
        cr_assert_leq(len, ORDERS_MAX_REASON);
        cr_assert_geq(len, ORDERS_MAX_REASON - 1);
        cr_assert_eq(len % 2, 1, "cut inside a two-byte sequence");
        protobuf_c_message_free_unpacked(&o->base, NULL);
    }
}

Test(order_orders, get_unknown_or_malformed_id)
{
    Webshop__V1__Order *o = NULL;
    cr_assert_eq(orders_get(conn, "6f9619ff-8b86-d011-b42d-00c04fc964ff", &o),
                 WS_ENOTFOUND);
    cr_assert_eq(orders_get(conn, "bogus", &o), WS_EINVAL);
    cr_assert_null(o);
}

/* Walk every page of size page_size; return how many orders were seen and
 * check they come newest first without repeats. */
static size_t walk_pages(int32_t page_size, size_t expect_pages)
{
    char *token = strdup("");
    size_t seen = 0, pages = 0;
    int64_t prev_ms = INT64_MAX;
    char prev_id[37] = "~";
    for (;;) {
        Webshop__V1__ListOrdersResponse *r;
        cr_assert_eq(orders_list(conn, page_size, token, &r), WS_OK);
        free(token);
        pages++;
        for (size_t i = 0; i < r->n_orders; i++) {
            Webshop__V1__Order *o = r->orders[i];
            bool older = o->created_ms < prev_ms ||
                         (o->created_ms == prev_ms && strcmp(o->id, prev_id) < 0);
            cr_assert(older, "page %zu row %zu out of order", pages, i);
            prev_ms = o->created_ms;
            snprintf(prev_id, sizeof prev_id, "%s", o->id);
            seen++;
        }
        token = strdup(r->next_page_token);
        bool last = r->next_page_token[0] == '\0';
        if (!last) {
            cr_assert_eq(r->n_orders, (size_t)page_size);
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (last) {
            break;
        }
        cr_assert_lt(pages, 10000);
    }
    free(token);
    if (expect_pages) {
        cr_assert_eq(pages, expect_pages);
    }
    return seen;
}

Test(order_orders, list_pages_newest_first_across_equal_timestamps)
{
    char id[37];
    for (int i = 0; i < 23; i++) {
        new_id(id);
        cr_assert_eq(send_ev(id, i < 11 ? 100 : 200 + i / 5, NULL), WS_OK);
    }
    cr_assert_eq(walk_pages(3, 8), 23);
    cr_assert_eq(walk_pages(23, 1), 23);
    cr_assert_eq(walk_pages(1, 23), 23);
    cr_assert_eq(walk_pages(0, 1), 23);
}

Test(order_orders, list_page_size_default_and_cap)
{
    char id[37];
    for (int i = 0; i < ORDERS_PAGE_MAX + 5; i++) {
        new_id(id);
        cr_assert_eq(in_ev(id, i, NULL), WS_OK);
    }
    Webshop__V1__ListOrdersResponse *r;
    cr_assert_eq(orders_list(conn, 0, NULL, &r), WS_OK);
    cr_assert_eq(r->n_orders, ORDERS_PAGE_DEFAULT);
    cr_assert_eq(r->orders[0]->created_ms, ORDERS_PAGE_MAX + 4);
    cr_assert_neq(r->next_page_token[0], '\0');
    protobuf_c_message_free_unpacked(&r->base, NULL);
    cr_assert_eq(orders_list(conn, 1 << 30, NULL, &r), WS_OK);
    cr_assert_eq(r->n_orders, ORDERS_PAGE_MAX);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    cr_assert_eq(walk_pages(ORDERS_PAGE_MAX, 2), ORDERS_PAGE_MAX + 5);
}

Test(order_orders, list_refuses_bad_tokens_and_sizes)
{
    Webshop__V1__ListOrdersResponse *r = NULL;
    cr_assert_eq(orders_list(conn, -1, NULL, &r), WS_EINVAL);
    const char *bad[] = {
        "!!!",        /* not base64url */
        "a",          /* impossible length */
        "MTIz",       /* "123": no colon */
        "MTIzOmFiYw", /* "123:abc": not a uuid */
        "LTE6NmY5NjE5ZmYtOGI4Ni1kMDExLWI0MmQtMDBjMDRmYzk2NGZm", /* "-1:<uuid>" */
        "OjZmOTYxOWZmLThiODYtZDAxMS1iNDJkLTAwYzA0ZmM5NjRmZg",   /* ":<uuid>" */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(orders_list(conn, 10, bad[i], &r), WS_EINVAL, "token %s", bad[i]);
    }
    cr_assert_null(r);
    /* The good form of the same: "1:<uuid>". */
    cr_assert_eq(
        orders_list(conn, 10, "MTo2Zjk2MTlmZi04Yjg2LWQwMTEtYjQyZC0wMGMwNGZjOTY0ZmY", &r),
        WS_OK);
    cr_assert_eq(r->n_orders, 0);
    protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* ---- two writers at once ---------------------------------------------------- */

#define RACE_ROUNDS 50

/* One writer of a race: its own connection, taken before the start line. */
typedef struct racer {
    char kind; /* as apply_char: 'S', 'I', 'C' */
    const char *id;
    int64_t now;
    pthread_barrier_t *start;
    ws_err err;
    orders_effect eff;
} racer;

static void *racer_main(void *arg)
{
    racer *r = arg;
    ws_db_conn *c = NULL;
    r->err = ws_db_acquire(db, &c);
    pthread_barrier_wait(r->start);
    if (r->err != WS_OK) {
        return NULL;
    }
    if (r->kind == 'S') {
        Webshop__V1__OrderSent e = WEBSHOP__V1__ORDER_SENT__INIT;
        e.order_id = (char *)r->id;
        e.n_items = 2;
        e.items = two_items;
        r->err = orders_apply_sent(c, &pol, &e, r->now, &r->eff);
    } else if (r->kind == 'I') {
        Webshop__V1__InStock e = WEBSHOP__V1__IN_STOCK__INIT;
        e.order_id = (char *)r->id;
        r->err = orders_apply_in_stock(c, &pol, &e, r->now, &r->eff);
    } else {
        Webshop__V1__CancelOrder e = WEBSHOP__V1__CANCEL_ORDER__INIT;
        e.order_id = (char *)r->id;
        r->err = orders_apply_cancel(c, &pol, &e, r->now, &r->eff);
    }
    ws_db_release(c);
    return NULL;
}

/* Apply events a and b to id from two threads at the same moment. */
static void race(char a, char b, const char *id, int64_t now, racer out[2])
{
    pthread_barrier_t start;
    cr_assert_eq(pthread_barrier_init(&start, NULL, 2), 0);
    out[0] = (racer){.kind = a, .id = id, .now = now, .start = &start};
    out[1] = (racer){.kind = b, .id = id, .now = now, .start = &start};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(pthread_create(&t[i], NULL, racer_main, &out[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    pthread_barrier_destroy(&start);
    cr_assert_eq(out[0].err, WS_OK, "%c: %s", a, ws_errname(out[0].err));
    cr_assert_eq(out[1].err, WS_OK, "%c: %s", b, ws_errname(out[1].err));
}

/* Cancel vs in-stock on a PENDING order with its items: CANCELED ranks
 * higher, so it is the final status whichever commits first; the outbox
 * holds exactly one OrderCanceled and status events that end in CANCELED
 * (SUCCESSFUL before it only when the in-stock won the race). */
Test(order_orders, cancel_and_in_stock_at_once_end_canceled, .timeout = 60)
{
    int in_first = 0;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        char id[37];
        new_id(id);
        cr_assert_eq(send_ev(id, 10, NULL), WS_OK);
        drain();
        racer r[2];
        race(round % 2 ? 'C' : 'I', round % 2 ? 'I' : 'C', id, 20, r);
        shown v = look(id);
        cr_assert_eq(v.status, WEBSHOP__V1__ORDER_STATUS__CANCELED, "round %d: %s", round,
                     orders_status_name(v.status));
        drained d = drain();
        cr_assert_eq(d.n_canceled, 1, "round %d", round);
        cr_assert(d.n_status == 1 || d.n_status == 2, "round %d: %d status events", round,
                  d.n_status);
        cr_assert_eq(d.last_status, WEBSHOP__V1__ORDER_STATUS__CANCELED,
                     "round %d: the last status event", round);
        in_first += d.n_status == 2;
    }
    cr_log_info("%s: in-stock first in %d of %d rounds", test_db_engine(), in_first,
                RACE_ROUNDS);
}

/* The same OrderSent twice at once for an unseen id: one order, its items
 * stored once, one PENDING status event; one of the two created it. */
Test(order_orders, same_order_sent_twice_at_once_makes_one_order, .timeout = 60)
{
    for (int round = 0; round < RACE_ROUNDS; round++) {
        char id[37];
        new_id(id);
        racer r[2];
        race('S', 'S', id, 10, r);
        cr_assert_eq(r[0].eff.created + r[1].eff.created, 1, "round %d", round);
        cr_assert_eq(rows_of(id), 1);
        shown v = look(id);
        cr_assert_eq(v.status, WEBSHOP__V1__ORDER_STATUS__PENDING);
        cr_assert_eq(v.n_items, 2);
        drained d = drain();
        cr_assert_eq(d.n_status, 1, "round %d: %d status events", round, d.n_status);
        cr_assert_eq(d.last_status, WEBSHOP__V1__ORDER_STATUS__PENDING);
        cr_assert_eq(d.n_rows, 1);
    }
}

/* A cancel and an OrderSent at once for an unseen id: whichever comes
 * first, one row, CANCELED, with its items, visible as an order; the
 * outbox ends with its CANCELED status and holds one OrderCanceled at
 * least (the tombstone queues one, and so does the cancel of an order). */
Test(order_orders, cancel_and_order_sent_at_once_for_an_unseen_order, .timeout = 60)
{
    for (int round = 0; round < RACE_ROUNDS; round++) {
        char id[37];
        new_id(id);
        racer r[2];
        race('C', 'S', id, 10, r);
        cr_assert_eq(r[0].eff.created + r[1].eff.created, 1, "round %d", round);
        shown v = look(id);
        cr_assert_eq(v.status, WEBSHOP__V1__ORDER_STATUS__CANCELED, "round %d: %s", round,
                     orders_status_name(v.status));
        cr_assert_eq(v.n_items, 2);
        drained d = drain();
        cr_assert_geq(d.n_canceled, 1, "round %d", round);
        cr_assert_eq(d.last_status, WEBSHOP__V1__ORDER_STATUS__CANCELED, "round %d",
                     round);
    }
}

/* ---- a file of the previous release ------------------------------------------ */

/* An SQLite file at schema version 3 (what the previous release made),
 * holding an order with its lines and an outbox row, opens and upgrades:
 * the order is known to have its lines (has_items), the outbox row gets
 * the relay's lease column and an empty traceparent, and the order behaves
 * as it did. */
Test(order_orders, sqlite_file_of_the_previous_release_upgrades)
{
    if (test_db_is_pg()) {
        cr_skip_test("SQLite files only");
    }
    char old_url[512];
    cr_assert_eq(test_db_fresh(old_url, sizeof old_url), 0);
    size_t n;
    const ws_db_migration *m = order_schema_migrations(&n);
    cr_assert_eq(n, 5);
    ws_db_opts o = {.url = old_url, .pool_size = 1, .migrations = m, .n_migrations = 3};
    ws_db *old;
    cr_assert_eq(ws_db_open(&o, &old), WS_OK);
    ws_db_conn *c;
    cr_assert_eq(ws_db_acquire(old, &c), WS_OK);
    char id[37], sql[600];
    new_id(id);
    snprintf(sql, sizeof sql,
             "INSERT INTO orders(id, status, created_ms, updated_ms, next_resend_ms)"
             " VALUES ('%s', 1, 5, 5, 5005);"
             "INSERT INTO order_items VALUES ('%s', 0, 1, 2), ('%s', 1, 2, 5);"
             "INSERT INTO outbox(topic, type, payload, created_ms)"
             " VALUES ('t', 'webshop.v1.OrderSent', x'', 5);",
             id, id, id);
    cr_assert_eq(ws_db_exec(c, sql), WS_OK);
    ws_db_release(c);
    ws_db_close(old);

    o.n_migrations = n;
    cr_assert_eq(ws_db_open(&o, &old), WS_OK);
    cr_assert_eq(ws_db_schema_version(old), 5);
    cr_assert_eq(ws_db_acquire(old, &c), WS_OK);
    ws_db_stmt *st;
    cr_assert_eq(ws_db_prepare(c,
                               "SELECT has_items, (SELECT lease_until_ms FROM outbox),"
                               " (SELECT traceparent IS NULL FROM outbox)"
                               " FROM orders WHERE id = $1",
                               &st),
                 WS_OK);
    ws_db_bind_text(st, 1, id);
    bool row = false;
    cr_assert_eq(ws_db_step(st, &row), WS_OK);
    cr_assert(row);
    cr_assert_eq(ws_db_column_int64(st, 0), 1, "the lines are known");
    cr_assert_eq(ws_db_column_int64(st, 1), 0, "the lease column, free");
    cr_assert_eq(ws_db_column_int64(st, 2), 1, "the trace column, empty");
    ws_db_reset(st);
    /* An outcome for it is applied as for any order with lines. */
    Webshop__V1__InStock e = WEBSHOP__V1__IN_STOCK__INIT;
    e.order_id = id;
    orders_effect eff;
    cr_assert_eq(orders_apply_in_stock(c, &pol, &e, 10, &eff), WS_OK);
    cr_assert_eq(eff.new_status, IN);
    cr_assert_not(eff.check);
    ws_db_release(c);
    ws_db_close(old);
    test_db_cleanup(old_url);
}
