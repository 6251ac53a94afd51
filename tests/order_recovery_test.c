/*
 * The order service's recovery loops (order/recovery.c) on a fresh database
 * of the run's engine (tests/support/test_db.h) with a fake inventory: which orders each
 * pass picks, when, with what backoff and bound, what the GetReservation answer does to a
 * cancel and to an outcome check, and which tombstones expire. The passes take the clock
 * as a parameter; the thread tests poll with a deadline. Two replicas' passes at once
 * claim disjoint rows.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "orders.h"
#include "outbox.h"
#include "recovery.h"
#include "clock.h"
#include "schema.h"
#include "test_db.h"
#include "uuid_text.h"

static char url[512];
static ws_db *db;
static ws_db_conn *conn; /* the test's own connection, held throughout */
static orders_policy pol;
static orders_progress progress;

static void setup(void)
{
    cr_assert_eq(test_db_fresh(url, sizeof url), 0);
    size_t n;
    const ws_db_migration *m = order_schema_migrations(&n);
    ws_db_opts o = {.url = url,
                    .pool_size = 4,
                    .synchronous = "OFF",
                    .migrations = m,
                    .n_migrations = n};
    cr_assert_eq(ws_db_open(&o, &db), WS_OK, "%s", url);
    cr_assert_eq(ws_db_acquire(db, &conn), WS_OK);
    memset(&progress, 0, sizeof progress);
    pol = (orders_policy){.resend_after_ms = 1000,
                          .backoff_cap_ms = 5000,
                          .max_attempts = 4,
                          .progress = &progress};
}

static void teardown(void)
{
    ws_clock_test_offset(0);
    ws_db_release(conn);
    ws_db_close(db);
    test_db_cleanup(url);
}

TestSuite(order_recovery, .init = setup, .fini = teardown);

static void new_id(char id[37])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, id);
}

static Webshop__V1__OrderItem item1 = {
    PROTOBUF_C_MESSAGE_INIT(&webshop__v1__order_item__descriptor), 7, 3};
static Webshop__V1__OrderItem *items[] = {&item1};

static void place(const char *id, int64_t now)
{
    Webshop__V1__OrderSent e = WEBSHOP__V1__ORDER_SENT__INIT;
    e.order_id = (char *)id;
    e.n_items = 1;
    e.items = items;
    cr_assert_eq(orders_apply_sent(conn, &pol, &e, now, NULL), WS_OK);
}

static void cancel(const char *id, int64_t now)
{
    Webshop__V1__CancelOrder e = WEBSHOP__V1__CANCEL_ORDER__INIT;
    e.order_id = (char *)id;
    cr_assert_eq(orders_apply_cancel(conn, &pol, &e, now, NULL), WS_OK);
}

static void in_stock(const char *id, int64_t now)
{
    Webshop__V1__InStock e = WEBSHOP__V1__IN_STOCK__INIT;
    e.order_id = (char *)id;
    cr_assert_eq(orders_apply_in_stock(conn, &pol, &e, now, NULL), WS_OK);
}

static void out_of_stock(const char *id, int64_t now)
{
    Webshop__V1__OutOfStock e = WEBSHOP__V1__OUT_OF_STOCK__INIT;
    e.order_id = (char *)id;
    e.reason = "not enough stock";
    cr_assert_eq(orders_apply_out_of_stock(conn, &pol, &e, now, NULL), WS_OK);
}

/* Rows under id in the orders table (tombstones included). */
static int rows(const char *id)
{
    ws_db_stmt *st;
    cr_assert_eq(ws_db_prepare(conn, "SELECT count(*) FROM orders WHERE id = $1", &st),
                 WS_OK);
    ws_db_bind_text(st, 1, id);
    bool row = false;
    cr_assert_eq(ws_db_step(st, &row), WS_OK);
    cr_assert(row);
    int n = (int)ws_db_column_int64(st, 0);
    ws_db_reset(st);
    return n;
}

typedef struct counted {
    int sent, canceled;
    char last_sent_id[37];
    int64_t ids[1024];
    size_t n;
} counted;

static const ProtobufCMessageDescriptor *const types[] = {
    &webshop__v1__order_status_changed__descriptor,
    &webshop__v1__order_canceled__descriptor,
    &webshop__v1__order_sent__descriptor,
};

static ws_err count_row(void *ctx, const ws_outbox_row *row)
{
    counted *c = ctx;
    ProtobufCMessage *m;
    cr_assert_eq(ws_outbox_row_unpack(row, types, 3, &m), WS_OK);
    if (m->descriptor == &webshop__v1__order_sent__descriptor) {
        Webshop__V1__OrderSent *s = (Webshop__V1__OrderSent *)m;
        cr_assert_eq(s->n_items, 1);
        cr_assert_eq(s->items[0]->inventory_id, 7);
        cr_assert_eq(s->items[0]->count, 3);
        snprintf(c->last_sent_id, sizeof c->last_sent_id, "%s", s->order_id);
        c->sent++;
    } else if (m->descriptor == &webshop__v1__order_canceled__descriptor) {
        c->canceled++;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    c->ids[c->n++] = row->id;
    return WS_OK;
}

/* Count the OrderSent and OrderCanceled rows queued so far, and empty the
 * outbox. */
static counted drain(void)
{
    static counted c;
    memset(&c, 0, sizeof c);
    cr_assert_eq(ws_outbox_scan(conn, 0, 1024, count_row, &c, NULL), WS_OK);
    for (size_t i = 0; i < c.n; i++) {
        cr_assert_eq(ws_outbox_delete(conn, c.ids[i]), WS_OK);
    }
    return c;
}

static int resend_at(int64_t now)
{
    order_recovery_stats st = {0};
    cr_assert_eq(order_recovery_resend_pending(conn, &pol, now, 100, &st), WS_OK);
    counted c = drain();
    cr_assert_eq((size_t)c.sent, st.resent);
    return c.sent;
}

Test(order_recovery, pending_order_is_resent_after_resend_after_not_before)
{
    char a[37], b[37];
    new_id(a);
    new_id(b);
    place(a, 0);
    place(b, 500);
    drain();
    cr_assert_eq(resend_at(999), 0);
    cr_assert_eq(resend_at(1000), 1);
    cr_assert_eq(resend_at(1499), 0);
    cr_assert_eq(resend_at(1500), 1);
}

Test(order_recovery, resend_backoff_doubles_up_to_the_cap_then_gives_up)
{
    char a[37];
    new_id(a);
    place(a, 0);
    drain();
    /* Delays: first 1000, then 2000, 4000, 5000 (cap), 5000, ... */
    int64_t due[] = {1000, 3000, 7000, 12000};
    int64_t now = 0;
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(resend_at(due[i] - 1), 0, "attempt %zu early", i + 1);
        cr_assert_eq(resend_at(due[i]), 1, "attempt %zu", i + 1);
        now = due[i];
    }
    Webshop__V1__Order *o;
    cr_assert_eq(orders_get(conn, a, &o), WS_OK);
    cr_assert_eq(o->attempts, 4);
    protobuf_c_message_free_unpacked(&o->base, NULL);
    /* max_attempts = 4: the next due pass gives up and leaves it. */
    order_recovery_stats st = {0};
    cr_assert_eq(order_recovery_resend_pending(conn, &pol, now + 5000, 100, &st), WS_OK);
    cr_assert_eq(st.resent, 0);
    cr_assert_eq(st.resend_gave_up, 1);
    cr_assert_eq(resend_at(INT64_MAX / 2), 0);
    cr_assert_eq(orders_get(conn, a, &o), WS_OK);
    cr_assert_eq(o->status, WEBSHOP__V1__ORDER_STATUS__PENDING);
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order_recovery, settled_or_canceled_orders_are_not_resent)
{
    char a[37], b[37];
    new_id(a);
    new_id(b);
    place(a, 0);
    place(b, 0);
    in_stock(a, 10);
    cancel(b, 10);
    drain();
    cr_assert_eq(resend_at(100000), 0);
}

Test(order_recovery, resend_pass_is_bounded_by_its_limit)
{
    char id[37];
    for (int i = 0; i < 7; i++) {
        new_id(id);
        place(id, i);
    }
    drain();
    order_recovery_stats st = {0};
    cr_assert_eq(order_recovery_resend_pending(conn, &pol, 5000, 3, &st), WS_OK);
    cr_assert_eq(st.resent, 3);
    cr_assert_eq(drain().sent, 3);
    cr_assert_eq(resend_at(5000), 4);
}

typedef struct fake_inventory {
    Webshop__V1__ReservationStatus answer;
    size_t n_items; /* items in the answer: ids 1..n, count 2 each */
    ws_err err;
    int calls;
} fake_inventory;

static ws_err fake_lookup(void *ctx, const char *order_id,
                          Webshop__V1__GetReservationResponse **out)
{
    fake_inventory *f = ctx;
    cr_assert(ws_uuid_canonical(order_id));
    f->calls++;
    if (f->err != WS_OK) {
        return f->err;
    }
    Webshop__V1__GetReservationResponse *r = malloc(sizeof(*r));
    cr_assert_not_null(r);
    webshop__v1__get_reservation_response__init(r);
    r->order_id = strdup(order_id);
    r->status = f->answer;
    if (f->n_items > 0) {
        r->items = calloc(f->n_items, sizeof(*r->items));
        r->n_items = f->n_items;
        for (size_t i = 0; i < f->n_items; i++) {
            r->items[i] = malloc(sizeof(**r->items));
            webshop__v1__order_item__init(r->items[i]);
            r->items[i]->inventory_id = (int32_t)(i + 1);
            r->items[i]->count = 2;
        }
    }
    *out = r;
    return WS_OK;
}

static order_recovery_stats check_at(fake_inventory *f, int64_t now)
{
    order_recovery_stats st = {0};
    cr_assert_eq(order_recovery_check_cancels(conn, &pol, fake_lookup, f, now, 100, &st),
                 WS_OK);
    return st;
}

Test(order_recovery, cancel_is_confirmed_when_the_inventory_holds_nothing)
{
    Webshop__V1__ReservationStatus settled[] = {
        WEBSHOP__V1__RESERVATION_STATUS__RELEASED,
        WEBSHOP__V1__RESERVATION_STATUS__REJECTED,
        WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED,
    };
    for (size_t i = 0; i < 3; i++) {
        char id[37];
        new_id(id);
        cancel(id, 0);
        drain();
        fake_inventory f = {.answer = settled[i]};
        cr_assert_eq(check_at(&f, 999).cancels_confirmed, 0);
        cr_assert_eq(f.calls, 0, "not due yet: no lookup");
        order_recovery_stats st = check_at(&f, 1000);
        cr_assert_eq(st.cancels_confirmed, 1);
        cr_assert_eq(st.cancels_resent, 0);
        cr_assert_eq(drain().canceled, 0);
        /* Confirmed: never checked again, and a duplicate cancel queues nothing. */
        cr_assert_eq(check_at(&f, 100000).cancels_confirmed, 0);
        cr_assert_eq(f.calls, 1);
        cancel(id, 200000);
        cr_assert_eq(drain().canceled, 0);
    }
}

Test(order_recovery, cancel_is_resent_while_reserved_or_unknown)
{
    Webshop__V1__ReservationStatus open[] = {
        WEBSHOP__V1__RESERVATION_STATUS__RESERVED,
        WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN,
    };
    for (size_t i = 0; i < 2; i++) {
        char id[37];
        new_id(id);
        place(id, 0);
        cancel(id, 0);
        drain();
        fake_inventory f = {.answer = open[i]};
        cr_assert_eq(check_at(&f, 1000).cancels_resent, 1);
        cr_assert_eq(drain().canceled, 1);
        cr_assert_eq(check_at(&f, 2999).cancels_resent, 0);
        cr_assert_eq(check_at(&f, 3000).cancels_resent, 1);
        cr_assert_eq(drain().canceled, 1);
        f.answer = WEBSHOP__V1__RESERVATION_STATUS__RELEASED;
        cr_assert_eq(check_at(&f, 7000).cancels_confirmed, 1);
        cr_assert_eq(drain().canceled, 0);
    }
}

Test(order_recovery,
     unreachable_inventory_costs_one_lookup_per_pass_and_cancels_are_resent)
{
    char id[37];
    for (int i = 0; i < 5; i++) {
        new_id(id);
        cancel(id, 0);
    }
    drain();
    fake_inventory f = {.err = WS_EUNAVAIL};
    order_recovery_stats st = check_at(&f, 1000);
    cr_assert_eq(f.calls, 1);
    cr_assert_eq(st.lookups_failed, 5);
    cr_assert_eq(st.cancels_resent, 5);
    cr_assert_eq(drain().canceled, 5);
}

Test(order_recovery, unconfirmed_cancel_gives_up_after_max_attempts)
{
    char id[37];
    new_id(id);
    cancel(id, 0);
    drain();
    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__RESERVED};
    int resent = 0, gave_up = 0;
    for (int64_t now = 1000; now <= 100000; now += 1000) {
        order_recovery_stats st = check_at(&f, now);
        resent += (int)st.cancels_resent;
        gave_up += (int)st.cancel_gave_up;
    }
    cr_assert_eq(resent, pol.max_attempts);
    cr_assert_eq(gave_up, 1);
}

static order_recovery_stats fill_at(fake_inventory *f, int64_t now)
{
    order_recovery_stats st = {0};
    cr_assert_eq(order_recovery_fill_items(conn, &pol, fake_lookup, f, now, 100, &st),
                 WS_OK);
    return st;
}

static size_t stored_items(const char *id, Webshop__V1__OrderStatus *status)
{
    Webshop__V1__Order *o = NULL;
    cr_assert_eq(orders_get(conn, id, &o), WS_OK);
    size_t n = o->n_items;
    *status = o->status;
    webshop__v1__order__free_unpacked(o, NULL);
    return n;
}

Test(order_recovery, lines_lost_with_order_sent_come_back_from_the_inventory)
{
    char id[37];
    new_id(id);
    cancel(id, 0); /* OrderSent lost here: a tombstone, no lines */
    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__RELEASED,
                        .n_items = 2};
    cr_assert_eq(fill_at(&f, 999).items_filled, 0, "not due yet");
    cr_assert_eq(f.calls, 0);
    Webshop__V1__Order *o = NULL;
    cr_assert_eq(orders_get(conn, id, &o), WS_ENOTFOUND, "a tombstone");
    drain();
    order_recovery_stats st = fill_at(&f, 1000);
    cr_assert_eq(st.items_filled, 1);
    /* The inventory saw the order: the tombstone is a real CANCELED order. */
    Webshop__V1__OrderStatus status;
    cr_assert_eq(stored_items(id, &status), 2);
    cr_assert_eq(status, WEBSHOP__V1__ORDER_STATUS__CANCELED, "status kept");
    f.calls = 0;
    cr_assert_eq(fill_at(&f, 100000).items_filled, 0,
                 "filled orders are not asked again");
    cr_assert_eq(f.calls, 0);
}

Test(order_recovery, orders_with_their_lines_are_never_asked_about)
{
    char id[37];
    new_id(id);
    place(id, 0);
    in_stock(id, 1);
    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__RESERVED,
                        .n_items = 1};
    fill_at(&f, 100000);
    cr_assert_eq(f.calls, 0);
}

Test(order_recovery, unknown_lines_are_asked_again_with_backoff_then_left)
{
    char id[37];
    new_id(id);
    cancel(id, 0); /* canceled before anyone saw the order: no lines anywhere */
    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED};
    int64_t now = 1000;
    int asked = 0;
    order_recovery_stats total = {0};
    for (int i = 0; i < 50; i++, now += 1000) {
        int before = f.calls;
        order_recovery_stats st = fill_at(&f, now);
        total.items_gave_up += st.items_gave_up;
        asked += f.calls - before;
    }
    cr_assert_eq(asked, pol.max_attempts, "asked %d times", asked);
    cr_assert_eq(total.items_gave_up, 1);
    Webshop__V1__Order *o = NULL;
    cr_assert_eq(orders_get(conn, id, &o), WS_ENOTFOUND, "still only a tombstone");
    cr_assert_eq(rows(id), 1);
}

Test(order_recovery, unreachable_inventory_leaves_lines_due)
{
    char id[37];
    new_id(id);
    cancel(id, 0);
    fake_inventory f = {.err = WS_EUNAVAIL};
    order_recovery_stats st = fill_at(&f, 5000);
    cr_assert_eq(st.lookups_failed, 1);
    f = (fake_inventory){.answer = WEBSHOP__V1__RESERVATION_STATUS__RELEASED,
                         .n_items = 1};
    cr_assert_eq(fill_at(&f, 5001).items_filled, 1, "asked again on the next pass");
}

/* ---- outcome checks -------------------------------------------------------- */

static order_recovery_stats settle_at(fake_inventory *f, int64_t now)
{
    order_recovery_stats st = {0};
    cr_assert_eq(order_recovery_check_outcomes(conn, &pol, fake_lookup, f, now, 100, &st),
                 WS_OK);
    return st;
}

static Webshop__V1__Order *get(const char *id)
{
    Webshop__V1__Order *o = NULL;
    cr_assert_eq(orders_get(conn, id, &o), WS_OK);
    return o;
}

Test(order_recovery, outcome_checks_are_due_at_once_and_take_the_inventorys_record)
{
    char early[37], conflict[37], plain[37];
    new_id(early);
    new_id(conflict);
    new_id(plain);
    in_stock(early, 100); /* before its OrderSent: PENDING until checked */
    place(conflict, 0);
    in_stock(conflict, 1);
    out_of_stock(conflict, 2); /* the other outcome: held SUCCESSFUL */
    place(plain, 0);
    in_stock(plain, 1); /* the normal flow: nothing to check */
    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__REJECTED,
                        .n_items = 1};
    cr_assert_eq(settle_at(&f, 1).checks_settled, 0);
    cr_assert_eq(f.calls, 0, "nothing due yet");
    order_recovery_stats st = settle_at(&f, 200);
    cr_assert_eq(f.calls, 2);
    cr_assert_eq(st.checks_settled, 2);
    cr_assert_eq(st.checks_moved, 2);
    cr_assert_eq(st.checks_by_record[WEBSHOP__V1__RESERVATION_STATUS__REJECTED], 2);
    Webshop__V1__Order *o = get(early);
    cr_assert_eq(o->status, WEBSHOP__V1__ORDER_STATUS__UNSUCCESSFUL);
    cr_assert_str_eq(o->reason, ORDERS_REASON_REJECTED, "the record gave no reason");
    cr_assert_eq(o->n_items, 1, "the record's lines filled in");
    protobuf_c_message_free_unpacked(&o->base, NULL);
    o = get(conflict);
    cr_assert_eq(o->status, WEBSHOP__V1__ORDER_STATUS__UNSUCCESSFUL);
    cr_assert_eq(o->n_items, 1);
    cr_assert_eq(o->items[0]->inventory_id, 7, "its own lines kept");
    protobuf_c_message_free_unpacked(&o->base, NULL);
    o = get(plain);
    cr_assert_eq(o->status, WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL);
    protobuf_c_message_free_unpacked(&o->base, NULL);
    f.calls = 0;
    cr_assert_eq(settle_at(&f, 100000).checks_settled, 0, "settled: never asked again");
    cr_assert_eq(f.calls, 0);
}

Test(order_recovery, unknown_record_is_asked_again_with_backoff_then_given_up)
{
    char id[37];
    new_id(id);
    in_stock(id, 0);
    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__RESERVATION_UNKNOWN};
    /* Due at 0, then after 1000, 2000, 4000: asked max_attempts times. */
    int64_t due[] = {0, 1000, 3000, 7000};
    for (size_t i = 0; i < 4; i++) {
        if (due[i] > 0) {
            cr_assert_eq(settle_at(&f, due[i] - 1).checks_unknown, 0, "early %zu", i);
        }
        order_recovery_stats st = settle_at(&f, due[i]);
        cr_assert_eq(st.checks_unknown + st.checks_gave_up, 1, "attempt %zu", i);
        cr_assert_eq(st.checks_gave_up, i == 3 ? 1u : 0u, "attempt %zu", i);
    }
    cr_assert_eq(f.calls, 4);
    settle_at(&f, 1000000);
    cr_assert_eq(f.calls, 4, "given up: left alone");
    Webshop__V1__Order *o = get(id);
    cr_assert_eq(o->status, WEBSHOP__V1__ORDER_STATUS__PENDING);
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order_recovery, unreachable_inventory_leaves_checks_due)
{
    char a[37], b[37];
    new_id(a);
    new_id(b);
    in_stock(a, 0);
    out_of_stock(b, 0);
    fake_inventory f = {.err = WS_ETIMEDOUT};
    order_recovery_stats st = settle_at(&f, 10);
    cr_assert_eq(f.calls, 1, "one deadline per pass");
    cr_assert_eq(st.lookups_failed, 2);
    cr_assert_eq(st.checks_settled, 0);
    f = (fake_inventory){.answer = WEBSHOP__V1__RESERVATION_STATUS__RESERVED,
                         .n_items = 1};
    st = settle_at(&f, 11);
    cr_assert_eq(st.checks_settled, 2, "asked again on the next pass");
    Webshop__V1__Order *o = get(b);
    cr_assert_eq(o->status, WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL,
                 "the record, not the event");
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order_recovery, checked_order_with_late_lines_is_resent_while_unknown)
{
    char id[37];
    new_id(id);
    in_stock(id, 0); /* no lines: nothing to re-send */
    cr_assert_eq(resend_at(100000), 0);
    place(id, 100000); /* the late OrderSent: now it has something to re-send */
    drain();
    cr_assert_eq(resend_at(100999), 0);
    cr_assert_eq(resend_at(101000), 1);
}

/* ---- tombstones ------------------------------------------------------------ */

static size_t expire_at(int64_t ttl, int64_t now, size_t limit)
{
    order_recovery_stats st = {0};
    cr_assert_eq(order_recovery_expire_tombstones(conn, ttl, now, limit, &st), WS_OK);
    return st.tombstones_expired;
}

/* Run the cancel and items passes until nothing is left to do for id. */
static void settle_tombstone(fake_inventory *f, int64_t *now)
{
    for (int i = 0; i < 50; i++, *now += 1000) {
        check_at(f, *now);
        fill_at(f, *now);
    }
}

Test(order_recovery, tombstones_expire_after_the_ttl_once_nothing_is_left_to_do)
{
    char t[37], revealed[37], outcome[37], order[37];
    new_id(t);
    new_id(revealed);
    new_id(outcome);
    new_id(order);
    cancel(t, 0);
    cancel(revealed, 0);
    place(revealed, 1); /* its OrderSent came: a real CANCELED order */
    in_stock(outcome, 0);
    place(order, 0);
    cancel(order, 1);
    cr_assert_eq(expire_at(1000, 100000, 100), 0, "cancel and items checks still due");
    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED};
    int64_t now = 1000;
    settle_tombstone(&f, &now);
    cr_assert_eq(expire_at(now + 1, now, 100), 0, "younger than the ttl");
    cr_assert_eq(expire_at(now, now, 100), 1);
    cr_assert_eq(rows(t), 0, "the tombstone is gone");
    cr_assert_eq(rows(revealed), 1, "an order, not a tombstone");
    cr_assert_eq(rows(outcome), 1);
    cr_assert_eq(rows(order), 1);
    cr_assert_eq(expire_at(1, now + 1000000, 100), 0);
    /* A late OrderSent for the expired one is a new order. */
    place(t, now);
    Webshop__V1__Order *o = get(t);
    cr_assert_eq(o->status, WEBSHOP__V1__ORDER_STATUS__PENDING);
    protobuf_c_message_free_unpacked(&o->base, NULL);
}

Test(order_recovery, tombstone_expiry_is_bounded_and_validated)
{
    char id[37];
    for (int i = 0; i < 5; i++) {
        new_id(id);
        cancel(id, i);
    }
    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__TOMBSTONED};
    int64_t now = 1000;
    settle_tombstone(&f, &now);
    cr_assert_eq(expire_at(1, now, 3), 3);
    cr_assert_eq(expire_at(1, now, 3), 2);
    cr_assert_eq(expire_at(1, now, 0), 0);
    order_recovery_stats st = {0};
    cr_assert_eq(order_recovery_expire_tombstones(conn, 0, now, 10, &st), WS_EINVAL);
    cr_assert_eq(order_recovery_expire_tombstones(conn, -5, now, 10, &st), WS_EINVAL);
}

static int64_t wall_ms(void)
{
    return ws_clock_mono_ms();
}

static void queued_cb(void *ctx)
{
    __atomic_add_fetch((int *)ctx, 1, __ATOMIC_SEQ_CST);
}

Test(order_recovery, loop_thread_resends_due_orders_and_stops)
{
    pol.resend_after_ms = 1;
    char id[37];
    new_id(id);
    place(id, ws_clock_wall_ms() - 10000); /* long overdue */
    drain();

    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__RELEASED};
    int kicks = 0;
    order_recovery_opts o = {.db = db,
                             .policy = pol,
                             .lookup = fake_lookup,
                             .lookup_ctx = &f,
                             .queued = queued_cb,
                             .queued_ctx = &kicks,
                             .interval_ms = 10};
    order_recovery *r;
    cr_assert_eq(order_recovery_open(&o, &r), WS_OK);
    cr_assert_eq(order_recovery_start(r), WS_OK);
    cr_assert_eq(order_recovery_start(r), WS_EINVAL);
    int64_t deadline = wall_ms() + 5000;
    while (__atomic_load_n(&kicks, __ATOMIC_SEQ_CST) == 0 && wall_ms() < deadline) {
        struct timespec d = {0, 2000000};
        nanosleep(&d, NULL);
    }
    order_recovery_close(r);
    cr_assert_gt(kicks, 0, "no resend within 5 s");
    cr_assert_geq(drain().sent, 1);
    order_recovery_close(NULL);
}

Test(order_recovery, pending_order_behind_a_backlog_waits_until_outcomes_pass_it)
{
    char old[37], a[37], newer[37];
    new_id(old);
    new_id(a);
    new_id(newer);
    place(old, 0);
    place(a, 100);
    /* Outcomes are still arriving, but only for orders older than a. */
    in_stock(old, 1050);
    drain();
    cr_assert_eq(resend_at(1100), 0);
    /* An outcome for an order created after a: a's outcome is overdue. */
    place(newer, 150);
    in_stock(newer, 1150);
    drain();
    cr_assert_eq(resend_at(1200), 1);
}

Test(order_recovery, pending_order_is_resent_once_outcomes_have_been_quiet)
{
    char old[37], a[37];
    new_id(old);
    new_id(a);
    place(old, 0);
    place(a, 100);
    in_stock(old, 1050);
    drain();
    cr_assert_eq(resend_at(2049), 0);
    cr_assert_eq(resend_at(2050), 1);
}

Test(order_recovery, loop_thread_settles_checks_expires_tombstones_and_counts)
{
    int64_t now = ws_clock_wall_ms();
    char checked[37], old[37];
    new_id(checked);
    new_id(old);
    in_stock(checked, now);
    cancel(old, now - 100000);
    /* Its cancel confirmed and its items given up long ago. */
    char sql[200];
    snprintf(sql, sizeof sql,
             "UPDATE orders SET cancel_confirmed = 1, next_resend_ms = NULL,"
             " items_due_ms = NULL WHERE id = '%s'",
             old);
    cr_assert_eq(ws_db_exec(conn, sql), WS_OK);

    ws_metrics *m = ws_metrics_new();
    cr_assert_not_null(m);
    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__RESERVED,
                        .n_items = 1};
    int kicks = 0;
    order_recovery_opts o = {.db = db,
                             .policy = pol,
                             .lookup = fake_lookup,
                             .lookup_ctx = &f,
                             .queued = queued_cb,
                             .queued_ctx = &kicks,
                             .interval_ms = 10,
                             .tombstone_ttl_ms = 1000,
                             .metrics = m};
    order_recovery *r;
    cr_assert_eq(order_recovery_open(&o, &r), WS_OK);
    cr_assert_eq(order_recovery_start(r), WS_OK);
    ws_counter *reserved = ws_counter_get(m, "webshop_order_outcome_checks_total", NULL,
                                          "answer=\"reserved\"");
    ws_counter *expired =
        ws_counter_get(m, "webshop_order_tombstones_expired_total", NULL, "");
    int64_t deadline = wall_ms() + 5000;
    while ((ws_counter_value(reserved) == 0 || ws_counter_value(expired) == 0) &&
           wall_ms() < deadline) {
        struct timespec d = {0, 2000000};
        nanosleep(&d, NULL);
    }
    order_recovery_close(r);
    cr_assert_eq(ws_counter_value(reserved), 1, "check not settled within 5 s");
    cr_assert_eq(ws_counter_value(expired), 1, "tombstone not expired within 5 s");
    cr_assert_gt(kicks, 0, "the settled status was queued: the relay is kicked");
    Webshop__V1__Order *got = get(checked);
    cr_assert_eq(got->status, WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL);
    protobuf_c_message_free_unpacked(&got->base, NULL);
    cr_assert_eq(rows(old), 0);
    ws_metrics_free(m);
}

/* ---- two replicas at once ----------------------------------------------------- */

#define CLAIM_ORDERS 30

/* A thread-safe inventory that answers RESERVED and counts the questions
 * per order. */
typedef struct shared_inventory {
    pthread_mutex_t mu;
    char ids[2 * CLAIM_ORDERS][37];
    int asked[2 * CLAIM_ORDERS];
    size_t n;
} shared_inventory;

static ws_err shared_lookup(void *ctx, const char *order_id,
                            Webshop__V1__GetReservationResponse **out)
{
    shared_inventory *f = ctx;
    pthread_mutex_lock(&f->mu);
    size_t i = 0;
    while (i < f->n && strcmp(f->ids[i], order_id) != 0) {
        i++;
    }
    if (i == f->n && f->n < 2 * CLAIM_ORDERS) {
        snprintf(f->ids[f->n++], 37, "%s", order_id);
    }
    if (i < 2 * CLAIM_ORDERS) {
        f->asked[i]++;
    }
    pthread_mutex_unlock(&f->mu);
    Webshop__V1__GetReservationResponse *r = malloc(sizeof(*r));
    if (r == NULL) {
        return WS_ENOMEM;
    }
    webshop__v1__get_reservation_response__init(r);
    r->order_id = strdup(order_id);
    r->status = WEBSHOP__V1__RESERVATION_STATUS__RESERVED;
    *out = r;
    return WS_OK;
}

typedef struct replica {
    shared_inventory *inv;
    pthread_barrier_t *start;
    order_recovery_stats st;
    ws_err err;
} replica;

static void *replica_main(void *arg)
{
    replica *r = arg;
    ws_db_conn *c = NULL;
    r->err = ws_db_acquire(db, &c);
    pthread_barrier_wait(r->start);
    if (r->err == WS_OK) {
        r->err = order_recovery_check_outcomes(c, &pol, shared_lookup, r->inv, 10,
                                               CLAIM_ORDERS, &r->st);
        ws_db_release(c);
    }
    return NULL;
}

/* Two replicas' outcome-check passes at the same moment over the same due
 * rows: each order is asked about once and settled once (the claim moves
 * its deadline to a lease; PostgreSQL skips the rows the other pass has
 * locked), and every check is done. */
Test(order_recovery, two_replicas_at_once_work_each_due_row_once, .timeout = 60)
{
    for (int round = 0; round < 5; round++) {
        char ids[CLAIM_ORDERS][37];
        for (int i = 0; i < CLAIM_ORDERS; i++) {
            new_id(ids[i]);
            in_stock(ids[i], 0); /* unseen: PENDING, a check due at once */
        }
        drain();
        shared_inventory inv = {.mu = PTHREAD_MUTEX_INITIALIZER};
        pthread_barrier_t start;
        cr_assert_eq(pthread_barrier_init(&start, NULL, 2), 0);
        replica r[2] = {{.inv = &inv, .start = &start}, {.inv = &inv, .start = &start}};
        pthread_t t[2];
        for (int i = 0; i < 2; i++) {
            cr_assert_eq(pthread_create(&t[i], NULL, replica_main, &r[i]), 0);
        }
        for (int i = 0; i < 2; i++) {
            pthread_join(t[i], NULL);
            cr_assert_eq(r[i].err, WS_OK, "replica %d: %s", i, ws_errname(r[i].err));
        }
        pthread_barrier_destroy(&start);
        cr_assert_eq(inv.n, CLAIM_ORDERS, "round %d: %zu orders asked about", round,
                     inv.n);
        for (size_t i = 0; i < inv.n; i++) {
            cr_assert_eq(inv.asked[i], 1, "round %d: %s asked %d times", round,
                         inv.ids[i], inv.asked[i]);
        }
        cr_assert_eq(r[0].st.checks_settled + r[1].st.checks_settled, CLAIM_ORDERS);
        for (int i = 0; i < CLAIM_ORDERS; i++) {
            Webshop__V1__Order *o = get(ids[i]);
            cr_assert_eq(o->status, WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL);
            protobuf_c_message_free_unpacked(&o->base, NULL);
        }
        fake_inventory none = {.answer = WEBSHOP__V1__RESERVATION_STATUS__RESERVED};
        cr_assert_eq(settle_at(&none, 100000).checks_settled, 0, "nothing left due");
        cr_assert_eq(none.calls, 0);
        drain();
    }
}

/* ---- wall-clock jumps ------------------------------------------------------ */

/* What the loop queued, seen from its queued callback after each round. */
typedef struct jump_watch {
    ws_db *db;
    int64_t total;     /* outbox rows after the last round that queued */
    int64_t max_round; /* most rows one round queued */
} jump_watch;

static void jump_queued(void *ctx)
{
    jump_watch *w = ctx;
    ws_db_conn *c;
    cr_assert_eq(ws_db_acquire(w->db, &c), WS_OK);
    ws_db_stmt *st;
    cr_assert_eq(ws_db_prepare(c, "SELECT count(*) FROM outbox", &st), WS_OK);
    bool row = false;
    cr_assert_eq(ws_db_step(st, &row), WS_OK);
    int64_t n = ws_db_column_int64(st, 0);
    ws_db_reset(st);
    ws_db_release(c);
    int64_t round = n - __atomic_load_n(&w->total, __ATOMIC_SEQ_CST);
    if (round > w->max_round) {
        __atomic_store_n(&w->max_round, round, __ATOMIC_SEQ_CST);
    }
    __atomic_store_n(&w->total, n, __ATOMIC_SEQ_CST);
}

/* Start the loop with batch rows per pass, move the wall clock by jump_ms,
 * and wait (monotonic deadline of 10 s) until want rows are queued. */
static jump_watch jump_run(size_t batch, int64_t jump_ms, int64_t want)
{
    static fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__RELEASED};
    jump_watch w = {.db = db};
    order_recovery_opts o = {.db = db,
                             .policy = pol,
                             .lookup = fake_lookup,
                             .lookup_ctx = &f,
                             .queued = jump_queued,
                             .queued_ctx = &w,
                             .interval_ms = 20,
                             .batch = batch};
    order_recovery *r;
    cr_assert_eq(order_recovery_open(&o, &r), WS_OK);
    cr_assert_eq(order_recovery_start(r), WS_OK);
    ws_clock_test_offset(jump_ms);
    int64_t deadline = ws_clock_mono_ms() + 10000;
    while (__atomic_load_n(&w.total, __ATOMIC_SEQ_CST) < want &&
           ws_clock_mono_ms() < deadline) {
        struct timespec d = {0, 2000000};
        nanosleep(&d, NULL);
    }
    order_recovery_close(r);
    return w;
}

Test(order_recovery, wall_clock_jump_forward_resends_no_more_than_a_batch_per_round)
{
    pol.resend_after_ms = 30000; /* not due for 30 s without the jump */
    pol.backoff_cap_ms = 60000;
    enum { N = 12, BATCH = 3 };
    int64_t now = ws_clock_wall_ms();
    for (int i = 0; i < N; i++) {
        char id[37];
        new_id(id);
        place(id, now);
    }
    drain();
    jump_watch w = jump_run(BATCH, 3600 * 1000LL, N);
    cr_assert_eq(w.total, N, "every order re-sent once: %lld", (long long)w.total);
    cr_assert_leq(w.max_round, BATCH, "a round re-sent %lld", (long long)w.max_round);
    cr_assert_eq(drain().sent, N);
}

Test(order_recovery, wall_clock_jump_back_does_not_stall_resends)
{
    pol.resend_after_ms = 200;
    enum { N = 5 };
    int64_t now = ws_clock_wall_ms();
    for (int i = 0; i < N; i++) {
        char id[37];
        new_id(id);
        place(id, now); /* due in 200 ms, or in 1 h 200 ms after the jump */
    }
    drain();
    int64_t t0 = ws_clock_mono_ms();
    jump_watch w = jump_run(100, -3600 * 1000LL, N);
    cr_assert_geq(w.total, N, "re-sent within 10 s: %lld", (long long)w.total);
    cr_assert_lt(ws_clock_mono_ms() - t0, 10000);
    cr_assert_geq(drain().sent, N);
}

/* A tombstone created at created_ms with nothing left to do (its cancel
 * confirmed, its items given up): only its TTL keeps it. */
static void tombstone_done(const char *id, int64_t created_ms)
{
    cancel(id, created_ms);
    char sql[200];
    snprintf(sql, sizeof sql,
             "UPDATE orders SET cancel_confirmed = 1, next_resend_ms = NULL,"
             " items_due_ms = NULL WHERE id = '%s'",
             id);
    cr_assert_eq(ws_db_exec(conn, sql), WS_OK);
}

#define JUMP_TTL_MS 800

static order_recovery *tomb_loop(jump_watch *w)
{
    static fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__RELEASED};
    order_recovery_opts o = {.db = db,
                             .policy = pol,
                             .lookup = fake_lookup,
                             .lookup_ctx = &f,
                             .queued = jump_queued,
                             .queued_ctx = w,
                             .interval_ms = 10,
                             .tombstone_ttl_ms = JUMP_TTL_MS};
    order_recovery *r;
    cr_assert_eq(order_recovery_open(&o, &r), WS_OK);
    cr_assert_eq(order_recovery_start(r), WS_OK);
    return r;
}

/* Poll (monotonic deadline of 10 s) until id's row is gone; true if it went. */
static bool gone_within_10s(const char *id)
{
    int64_t deadline = ws_clock_mono_ms() + 10000;
    while (rows(id) != 0 && ws_clock_mono_ms() < deadline) {
        struct timespec d = {0, 5000000};
        nanosleep(&d, NULL);
    }
    return rows(id) == 0;
}

Test(order_recovery, wall_clock_jump_forward_expires_no_young_tombstone)
{
    pol.resend_after_ms = 30000; /* p is due only after the jump */
    pol.backoff_cap_ms = 60000;
    char t[37], p[37];
    new_id(t);
    new_id(p);
    int64_t born = ws_clock_mono_ms();
    int64_t now = ws_clock_wall_ms();
    tombstone_done(t, now);
    place(p, now);
    drain();
    jump_watch w = {.db = db};
    order_recovery *r = tomb_loop(&w);
    int64_t jumped = ws_clock_mono_ms();
    ws_clock_test_offset(3600 * 1000LL); /* t now looks an hour old */
    int64_t deadline = jumped + 10000;
    while (__atomic_load_n(&w.total, __ATOMIC_SEQ_CST) < 1 &&
           ws_clock_mono_ms() < deadline) {
        struct timespec d = {0, 2000000};
        nanosleep(&d, NULL);
    }
    cr_assert_geq(w.total, 1, "a round after the jump re-sent p");
    cr_assert_eq(rows(t), 1, "that round's tombstone pass kept the young tombstone");
    cr_assert(gone_within_10s(t), "the tombstone expires a TTL after the jump");
    cr_assert_geq(ws_clock_mono_ms() - born, JUMP_TTL_MS, "not before its TTL");
    order_recovery_close(r);
    drain();
}

Test(order_recovery, wall_clock_jump_back_does_not_keep_tombstones_for_the_jump)
{
    char t[37];
    new_id(t);
    int64_t t0 = ws_clock_mono_ms();
    tombstone_done(t, ws_clock_wall_ms());
    jump_watch w = {.db = db};
    order_recovery *r = tomb_loop(&w);
    ws_clock_test_offset(-3600 * 1000LL); /* t now looks an hour in the future */
    cr_assert(gone_within_10s(t), "expired within 10 s, not after the hour");
    cr_assert_geq(ws_clock_mono_ms() - t0, JUMP_TTL_MS, "not before its TTL");
    order_recovery_close(r);
}

Test(order_recovery, reschedule_moves_back_only_deadlines_beyond_the_horizon)
{
    const int64_t back = 3600 * 1000LL;
    char ahead[37], near[37], canceled[37];
    new_id(ahead);
    new_id(near);
    new_id(canceled);
    place(ahead, back + 500); /* written by a clock 1 h ahead: due at back + 1500 */
    place(near, 0);           /* due at 1000: within the horizon */
    place(canceled, back + 500);
    cancel(canceled, back + 500); /* its check is due at back + 1500 */
    drain();
    cr_assert_eq(resend_at(1000), 1, "only near is due on our clock");
    size_t moved = 0;
    bool more = true;
    cr_assert_eq(order_recovery_reschedule(conn, &pol, 1000, back, 100, &moved, &more),
                 WS_OK);
    cr_assert_not(more);
    cr_assert_eq(moved, 2, "ahead's re-send and canceled's check: %zu", moved);
    cr_assert_eq(resend_at(1400), 0, "ahead is due at 1500, not before");
    cr_assert_eq(resend_at(1500), 1);
    fake_inventory f = {.answer = WEBSHOP__V1__RESERVATION_STATUS__RELEASED};
    cr_assert_eq(check_at(&f, 1500).cancels_confirmed, 1);
    bool m2 = false;
    cr_assert_eq(order_recovery_reschedule(conn, &pol, 1000, -1, 100, &moved, &m2),
                 WS_EINVAL);
}
