/*
 * W3C traceparent: parse, make, format, and the per-thread current trace.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

#include "trace.h"

static const char good[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

Test(trace, parses_and_formats_a_version_00_traceparent)
{
    ws_trace t;
    cr_assert(ws_trace_parse(good, strlen(good), &t));
    cr_assert_str_eq(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    cr_assert_str_eq(t.span_id, "00f067aa0ba902b7");
    cr_assert_eq(t.flags, 1);
    char out[WS_TRACEPARENT_SIZE];
    ws_trace_format(&t, out);
    cr_assert_str_eq(out, good);
}

Test(trace, refuses_what_the_spec_refuses)
{
    const char *bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* 00 is exact */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero span */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ws_trace t;
        cr_assert_not(ws_trace_parse(bad[i], strlen(bad[i]), &t), "%s", bad[i]);
    }
    ws_trace t;
    cr_assert(ws_trace_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later",
                             61, &t),
              "a later version's longer form is read by its first fields");
}

Test(trace, new_traces_differ_and_children_keep_the_trace_id)
{
    ws_trace a, b, c;
    ws_trace_new(&a);
    ws_trace_new(&b);
    cr_assert_str_neq(a.trace_id, b.trace_id);
    ws_trace_child(&a, &c);
    cr_assert_str_eq(c.trace_id, a.trace_id);
    cr_assert_str_neq(c.span_id, a.span_id);
    char text[WS_TRACEPARENT_SIZE];
    ws_trace_format(&a, text);
    ws_trace back;
    cr_assert(ws_trace_parse(text, strlen(text), &back));
    cr_assert_str_eq(back.trace_id, a.trace_id);
}

static void *other_thread(void *arg)
{
    (void)arg;
    return (void *)ws_trace_current();
}

Test(trace, current_trace_is_per_thread)
{
    cr_assert_null(ws_trace_current());
    const ws_trace *t = ws_trace_adopt(good, strlen(good));
    cr_assert_str_eq(t->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    pthread_t th;
    void *seen = (void *)1;
    cr_assert(pthread_create(&th, NULL, other_thread, NULL) == 0);
    cr_assert(pthread_join(th, &seen) == 0);
    cr_assert_null(seen, "another thread works for no trace");
    t = ws_trace_adopt("garbage", 7);
    cr_assert_str_neq(t->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736",
                      "a bad traceparent starts a new trace");
    ws_trace_set_current(NULL);
    cr_assert_null(ws_trace_current());
}

Test(trace, saved_trace_comes_back_and_so_does_none)
{
    ws_trace a;
    ws_trace_new(&a);
    ws_trace_set_current(&a);
    ws_trace_saved s;
    ws_trace_save(&s);
    ws_trace_set_current(NULL);
    ws_trace_restore(&s);
    cr_assert_not_null(ws_trace_current());
    cr_expect_str_eq(ws_trace_current()->trace_id, a.trace_id);
    cr_expect_str_eq(ws_trace_current()->span_id, a.span_id);

    ws_trace_set_current(NULL);
    ws_trace_saved none;
    ws_trace_save(&none);
    ws_trace_set_current(&a);
    ws_trace_restore(&none);
    cr_expect_null(ws_trace_current());
}
