/*
 * Tests of the front's status hub (front/status_stream.c): fan-out to the
 * watches that follow an order, stock to stock watchers, the bounds (ids,
 * watches, queue) and shutdown waking a waiting stream; and the waiters of
 * POST/DELETE /order: a status published after a waiter opened is never
 * missed, a waiter sleeps (no polling) until it comes or the time is up,
 * waiters are outside the streams' bound, and each sees only its own id.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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

/* ---- waiters ----------------------------------------------------------- */

#define ST_PENDING 1
#define ST_SUCCESSFUL 2
#define ST_CANCELED 4

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

Test(status_waiter, status_published_before_the_wait_is_not_missed)
{
    status_stream *s = status_stream_new(1);
    status_waiter *w = NULL;
    /* Opened in upper case, published in lower case: the same order. */
    cr_assert_eq(status_waiter_open(s, "123E4567-E89B-12D3-A456-426614174000", &w), WS_OK);
    status_stream_publish_order(s, ID_A, ST_PENDING, NULL);
    int st = 0;
    double t0 = now_ms();
    cr_assert_eq(status_waiter_wait(w, STATUS_WANT_ANY, 5000, &st), STATUS_NEXT_EVENT);
    cr_assert_lt(now_ms() - t0, 1000.0, "answered at once, not at the deadline");
    cr_assert_eq(st, ST_PENDING);
    /* What was seen stays seen: a second wait returns at once too. */
    cr_assert_eq(status_waiter_wait(w, STATUS_WANT(ST_PENDING), 0, &st), STATUS_NEXT_EVENT);
    status_waiter_close(w);
    cr_assert_eq(status_stream_waiters(s), 0);
    status_stream_free(s);
}

Test(status_waiter, status_published_before_it_opened_does_not_count)
{
    status_stream *s = status_stream_new(1);
    status_stream_publish_order(s, ID_A, ST_PENDING, NULL);
    status_waiter *w = NULL;
    cr_assert_eq(status_waiter_open(s, ID_A, &w), WS_OK);
    cr_assert_eq(status_waiter_wait(w, STATUS_WANT_ANY, 20, NULL), STATUS_NEXT_TIMEOUT);
    status_waiter_close(w);
    status_stream_free(s);
}

Test(status_waiter, waits_for_the_status_it_wants_and_reports_the_highest)
{
    status_stream *s = status_stream_new(1);
    status_waiter *w = NULL;
    cr_assert_eq(status_waiter_open(s, ID_A, &w), WS_OK);
    status_stream_publish_order(s, ID_A, ST_PENDING, NULL);
    status_stream_publish_order(s, ID_A, ST_SUCCESSFUL, NULL);
    int st = -7;
    cr_assert_eq(status_waiter_wait(w, STATUS_WANT(ST_CANCELED), 30, &st),
                 STATUS_NEXT_TIMEOUT);
    cr_assert_eq(st, -7, "status untouched on timeout");
    cr_assert_eq(status_waiter_wait(w, STATUS_WANT_ANY, 0, &st), STATUS_NEXT_EVENT);
    cr_assert_eq(st, ST_SUCCESSFUL);
    status_stream_publish_order(s, ID_A, ST_CANCELED, "");
    cr_assert_eq(status_waiter_wait(w, STATUS_WANT(ST_CANCELED), 1000, &st),
                 STATUS_NEXT_EVENT);
    cr_assert_eq(st, ST_CANCELED);
    /* A value outside the enum's bits still counts for "any". */
    status_waiter *w2 = NULL;
    cr_assert_eq(status_waiter_open(s, ID_B, &w2), WS_OK);
    status_stream_publish_order(s, ID_B, 99, NULL);
    cr_assert_eq(status_waiter_wait(w2, STATUS_WANT(ST_PENDING), 0, NULL),
                 STATUS_NEXT_TIMEOUT);
    cr_assert_eq(status_waiter_wait(w2, STATUS_WANT_ANY, 0, &st), STATUS_NEXT_EVENT);
    cr_assert_eq(st, -1);
    status_waiter_close(w);
    status_waiter_close(w2);
    status_stream_free(s);
}

Test(status_waiter, timeout_sleeps_the_whole_time_and_no_longer)
{
    status_stream *s = status_stream_new(1);
    status_waiter *w = NULL;
    cr_assert_eq(status_waiter_open(s, ID_A, &w), WS_OK);
    status_stream_publish_order(s, ID_B, ST_PENDING, NULL); /* another order */
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    double t0 = now_ms();
    cr_assert_eq(status_waiter_wait(w, STATUS_WANT_ANY, 200, NULL), STATUS_NEXT_TIMEOUT);
    double waited = now_ms() - t0;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double cpu = (double)(c1.tv_sec - c0.tv_sec) * 1e3 + (double)(c1.tv_nsec - c0.tv_nsec) / 1e6;
    cr_assert_geq(waited, 199.0, "waited %.1f ms", waited);
    cr_assert_lt(waited, 2000.0, "waited %.1f ms", waited);
    /* Asleep, not polling: a few milliseconds of CPU at most (sanitizers
     * included). */
    cr_assert_lt(cpu, 50.0, "used %.1f ms of CPU while waiting", cpu);
    status_waiter_close(w);
    status_stream_free(s);
}

Test(status_waiter, waiters_are_not_counted_against_the_stream_bound)
{
    enum { N = 300 };
    status_stream *s = status_stream_new(1);
    const char *a[] = {ID_A};
    status_watch *sse = NULL, *refused = NULL;
    cr_assert_eq(status_watch_open(s, a, 1, false, &sse), WS_OK);
    static status_waiter *ws[N];
    for (int i = 0; i < N; i++) {
        cr_assert_eq(status_waiter_open(s, ID_A, &ws[i]), WS_OK, "waiter %d", i);
    }
    cr_assert_eq(status_stream_waiters(s), N);
    cr_assert_eq(status_stream_watches(s), 1);
    cr_assert_eq(status_watch_open(s, a, 1, false, &refused), WS_EBUSY);
    /* One event reaches the stream and every waiter on the id. */
    status_stream_publish_order(s, ID_A, ST_PENDING, NULL);
    status_event ev;
    cr_assert_eq(status_watch_next(sse, 1000, &ev), STATUS_NEXT_EVENT);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(status_waiter_wait(ws[i], STATUS_WANT_ANY, 1000, NULL), STATUS_NEXT_EVENT);
        status_waiter_close(ws[i]);
    }
    cr_assert_eq(status_stream_waiters(s), 0);
    status_watch_close(sse);
    status_stream_free(s);
}

/* Many ids share the 64 buckets: each waiter sees its own id only, and
 * closing waiters in any order keeps the buckets' lists intact. */
Test(status_waiter, each_waiter_sees_only_its_own_id)
{
    enum { N = 500 };
    static char ids[N][ORDER_ID_LEN];
    static status_waiter *ws[N];
    status_stream *s = status_stream_new(1);
    for (int i = 0; i < N; i++) {
        snprintf(ids[i], ORDER_ID_LEN, "00000000-0000-4000-8000-%012d", i);
        cr_assert_eq(status_waiter_open(s, ids[i], &ws[i]), WS_OK);
    }
    for (int i = 0; i < N; i += 2) {
        status_stream_publish_order(s, ids[i], ST_PENDING, NULL);
    }
    for (int i = 1; i < N; i += 4) { /* close some odd ones first */
        cr_assert_eq(status_waiter_wait(ws[i], STATUS_WANT_ANY, 0, NULL), STATUS_NEXT_TIMEOUT);
        status_waiter_close(ws[i]);
        ws[i] = NULL;
    }
    for (int i = 0; i < N; i++) {
        if (ws[i] == NULL) {
            continue;
        }
        status_next want = i % 2 == 0 ? STATUS_NEXT_EVENT : STATUS_NEXT_TIMEOUT;
        cr_assert_eq(status_waiter_wait(ws[i], STATUS_WANT_ANY, 0, NULL), want, "waiter %d", i);
    }
    for (int i = N - 1; i >= 0; i--) {
        status_waiter_close(ws[i]);
    }
    cr_assert_eq(status_stream_waiters(s), 0);
    status_stream_free(s);
}

Test(status_waiter, bad_id_is_refused)
{
    status_stream *s = status_stream_new(1);
    status_waiter *w = NULL;
    cr_assert_eq(status_waiter_open(s, "not-a-uuid", &w), WS_EINVAL);
    cr_assert_eq(status_waiter_open(s, NULL, &w), WS_EINVAL);
    cr_assert_null(w);
    cr_assert_eq(status_stream_waiters(s), 0);
    status_waiter_close(NULL);
    status_stream_free(s);
}

typedef struct waiter_arg {
    status_waiter *w;
    unsigned want;
    int status;
    double waited_ms;
} waiter_arg;

static void *status_waiter_thread(void *arg)
{
    waiter_arg *a = arg;
    double t0 = now_ms();
    status_next r = status_waiter_wait(a->w, a->want, 30000, &a->status);
    a->waited_ms = now_ms() - t0;
    return (void *)(intptr_t)r;
}

Test(status_waiter, publish_from_another_thread_wakes_it_at_once)
{
    status_stream *s = status_stream_new(1);
    waiter_arg a = {.want = STATUS_WANT(ST_CANCELED), .status = 0};
    cr_assert_eq(status_waiter_open(s, ID_A, &a.w), WS_OK);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, status_waiter_thread, &a), 0);
    status_stream_publish_order(s, ID_A, ST_PENDING, NULL); /* not wanted */
    status_stream_publish_order(s, ID_A, ST_CANCELED, NULL);
    void *r = NULL;
    pthread_join(t, &r);
    cr_assert_eq((intptr_t)r, STATUS_NEXT_EVENT);
    cr_assert_eq(a.status, ST_CANCELED);
    cr_assert_lt(a.waited_ms, 10000.0);
    status_waiter_close(a.w);
    status_stream_free(s);
}

Test(status_waiter, shutdown_wakes_a_waiter_and_refuses_new_ones)
{
    status_stream *s = status_stream_new(1);
    waiter_arg a = {.want = STATUS_WANT_ANY};
    cr_assert_eq(status_waiter_open(s, ID_A, &a.w), WS_OK);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, status_waiter_thread, &a), 0);
    status_stream_shutdown(s);
    void *r = NULL;
    pthread_join(t, &r);
    cr_assert_eq((intptr_t)r, STATUS_NEXT_CLOSED);
    status_waiter *w2 = NULL;
    cr_assert_eq(status_waiter_open(s, ID_A, &w2), WS_ECLOSED);
    cr_assert_null(w2);
    status_waiter_close(a.w);
    status_stream_free(s);
}
