/*
 * Tests of the front's status hub (front/status_stream.c): fan-out to the
 * watches that follow an order, stock to stock watchers, the bounds (ids,
 * watches, queue) and shutdown waking a waiting stream.
 */
#include <pthread.h>
#include <string.h>

#include <criterion/criterion.h>

#include "status_stream.h"

#define ID_A "123e4567-e89b-12d3-a456-426614174000"
#define ID_B "00000000-0000-4000-8000-000000000001"

Test(status_stream, event_reaches_only_the_watches_that_follow_the_order)
{
    status_stream *s = status_stream_new(4);
    cr_assert_not_null(s);
    const char *a[] = {ID_A};
    const char *b[] = {ID_B};
    status_watch *wa = NULL, *wb = NULL;
    cr_assert_eq(status_watch_open(s, a, 1, false, &wa), WS_OK);
    cr_assert_eq(status_watch_open(s, b, 1, false, &wb), WS_OK);
    /* Upper case ids match their lowercase form. */
    status_stream_publish_order(s, "123E4567-E89B-12D3-A456-426614174000", 2, "why");
    status_event ev;
    cr_assert_eq(status_watch_next(wa, 1000, &ev), STATUS_NEXT_EVENT);
    cr_assert_eq(ev.kind, STATUS_EVENT_ORDER);
    cr_assert_str_eq(ev.order_id, ID_A);
    cr_assert_eq(ev.status, 2);
    cr_assert_str_eq(ev.reason, "why");
    cr_assert_eq(status_watch_next(wb, 10, &ev), STATUS_NEXT_TIMEOUT);
    status_watch_close(wa);
    status_watch_close(wb);
    cr_assert_eq(status_stream_watches(s), 0);
    status_stream_free(s);
}

Test(status_stream, stock_goes_to_stock_watchers_only)
{
    status_stream *s = status_stream_new(2);
    const char *a[] = {ID_A};
    status_watch *orders = NULL, *stock = NULL;
    cr_assert_eq(status_watch_open(s, a, 1, false, &orders), WS_OK);
    cr_assert_eq(status_watch_open(s, NULL, 0, true, &stock), WS_OK);
    status_stream_publish_stock(s, 7, 42);
    status_event ev;
    cr_assert_eq(status_watch_next(stock, 1000, &ev), STATUS_NEXT_EVENT);
    cr_assert_eq(ev.kind, STATUS_EVENT_STOCK);
    cr_assert_eq(ev.product_id, 7);
    cr_assert_eq(ev.balance, 42);
    cr_assert_eq(status_watch_next(orders, 10, &ev), STATUS_NEXT_TIMEOUT);
    status_watch_close(orders);
    status_watch_close(stock);
    status_stream_free(s);
}

Test(status_stream, watches_beyond_the_bound_are_refused_until_one_closes)
{
    status_stream *s = status_stream_new(2);
    const char *a[] = {ID_A};
    status_watch *w1 = NULL, *w2 = NULL, *w3 = NULL;
    cr_assert_eq(status_watch_open(s, a, 1, false, &w1), WS_OK);
    cr_assert_eq(status_watch_open(s, a, 1, false, &w2), WS_OK);
    cr_assert_eq(status_watch_open(s, a, 1, false, &w3), WS_EBUSY);
    cr_assert_null(w3);
    status_watch_close(w1);
    cr_assert_eq(status_watch_open(s, a, 1, false, &w3), WS_OK);
    status_watch_close(w2);
    status_watch_close(w3);
    status_stream_free(s);
}

Test(status_stream, bad_ids_and_too_many_ids_are_refused)
{
    status_stream *s = status_stream_new(2);
    status_watch *w = NULL;
    const char *bad[] = {"not-a-uuid"};
    cr_assert_eq(status_watch_open(s, bad, 1, false, &w), WS_EINVAL);
    const char *many[STATUS_STREAM_MAX_IDS + 1];
    for (int i = 0; i <= STATUS_STREAM_MAX_IDS; i++) {
        many[i] = ID_A;
    }
    cr_assert_eq(status_watch_open(s, many, STATUS_STREAM_MAX_IDS + 1, false, &w),
                 WS_EINVAL);
    cr_assert_eq(status_watch_open(s, many, STATUS_STREAM_MAX_IDS, false, &w), WS_OK);
    status_watch_close(w);
    /* A publish for a malformed id is ignored, not a crash. */
    status_stream_publish_order(s, "garbage", 1, NULL);
    status_stream_publish_order(s, NULL, 1, NULL);
    status_stream_free(s);
}

Test(status_stream, full_queue_overflows_after_delivering_what_it_holds)
{
    status_stream *s = status_stream_new(1);
    const char *a[] = {ID_A};
    status_watch *w = NULL;
    cr_assert_eq(status_watch_open(s, a, 1, false, &w), WS_OK);
    for (int i = 0; i < STATUS_STREAM_QUEUE + 5; i++) {
        status_stream_publish_order(s, ID_A, 1, NULL);
    }
    status_event ev;
    for (int i = 0; i < STATUS_STREAM_QUEUE; i++) {
        cr_assert_eq(status_watch_next(w, 1000, &ev), STATUS_NEXT_EVENT);
    }
    cr_assert_eq(status_watch_next(w, 1000, &ev), STATUS_NEXT_OVERFLOW);
    status_watch_close(w);
    status_stream_free(s);
}

Test(status_stream, long_reason_is_cut_at_a_utf8_boundary)
{
    status_stream *s = status_stream_new(1);
    const char *a[] = {ID_A};
    status_watch *w = NULL;
    cr_assert_eq(status_watch_open(s, a, 1, false, &w), WS_OK);
    char reason[STATUS_STREAM_REASON_MAX + 10];
    memset(reason, 'x', sizeof(reason) - 1);
    reason[sizeof(reason) - 1] = '\0';
    /* A two-byte character straddling the cut. */
    reason[STATUS_STREAM_REASON_MAX - 1] = (char)0xC3;
    reason[STATUS_STREAM_REASON_MAX] = (char)0xA9;
    status_stream_publish_order(s, ID_A, 3, reason);
    status_event ev;
    cr_assert_eq(status_watch_next(w, 1000, &ev), STATUS_NEXT_EVENT);
    cr_assert_eq(strlen(ev.reason), STATUS_STREAM_REASON_MAX - 1);
    status_watch_close(w);
    status_stream_free(s);
}

static void *status_stream_test_waiter(void *arg)
{
    status_event ev;
    return (void *)(intptr_t)status_watch_next(arg, 30000, &ev);
}

Test(status_stream, shutdown_wakes_a_waiting_stream_and_refuses_new_ones)
{
    status_stream *s = status_stream_new(2);
    const char *a[] = {ID_A};
    status_watch *w = NULL;
    cr_assert_eq(status_watch_open(s, a, 1, false, &w), WS_OK);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, status_stream_test_waiter, w), 0);
    status_stream_shutdown(s);
    void *r = NULL;
    pthread_join(t, &r);
    cr_assert_eq((intptr_t)r, STATUS_NEXT_CLOSED);
    status_watch *w2 = NULL;
    cr_assert_eq(status_watch_open(s, a, 1, false, &w2), WS_ECLOSED);
    status_watch_close(w);
    status_stream_free(s);
}

Test(status_stream, publish_from_another_thread_wakes_the_waiter)
{
    status_stream *s = status_stream_new(1);
    const char *a[] = {ID_A};
    status_watch *w = NULL;
    cr_assert_eq(status_watch_open(s, a, 1, false, &w), WS_OK);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, status_stream_test_waiter, w), 0);
    status_stream_publish_order(s, ID_A, 4, "");
    void *r = NULL;
    pthread_join(t, &r);
    cr_assert_eq((intptr_t)r, STATUS_NEXT_EVENT);
    status_watch_close(w);
    status_stream_free(s);
}
