/*
 * ws_buf: growth, limits, printf, steal.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

Test(buf, grows_and_stays_nul_terminated)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq(ws_buf_puts(&b, "abc"), WS_OK);
    }
    cr_assert_eq(b.len, 3000);
    cr_assert_eq(b.data[3000], '\0');
    cr_assert_eq(ws_buf_printf(&b, "%d-%s", 42, "x"), WS_OK);
    cr_assert_str_eq(b.data + 3000, "42-x");
    ws_buf_fini(&b);
    ws_buf_fini(NULL);
}

Test(buf, limit_refuses_and_leaves_content)
{
    ws_buf b;
    ws_buf_init(&b, 5);
    cr_assert_eq(ws_buf_puts(&b, "abcd"), WS_OK);
    cr_assert_eq(ws_buf_puts(&b, "ef"), WS_ETOOBIG);
    cr_assert_str_eq(b.data, "abcd");
    cr_assert_eq(ws_buf_putc(&b, 'e'), WS_OK);
    cr_assert_eq(ws_buf_printf(&b, "%s", "x"), WS_ETOOBIG);
    ws_buf_fini(&b);
}

Test(buf, long_printf)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    char big[1000];
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cr_assert_eq(ws_buf_printf(&b, "<%s>", big), WS_OK);
    cr_assert_eq(b.len, 1001);
    cr_assert_eq(b.data[1000], '>');
    ws_buf_fini(&b);
}

Test(buf, steal_hands_over_storage)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    size_t n = 99;
    char *s = ws_buf_steal(&b, &n);
    cr_assert_str_eq(s, "");
    cr_assert_eq(n, 0);
    free(s);
    ws_buf_puts(&b, "hello");
    s = ws_buf_steal(&b, &n);
    cr_assert_str_eq(s, "hello");
    cr_assert_eq(n, 5);
    cr_assert_null(b.data);
    free(s);
}
