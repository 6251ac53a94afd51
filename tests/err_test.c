/*
 * ws_err: every code has a message and a name; errno translation.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <string.h>

#include "err.h"

Test(err, every_code_has_message_and_name)
{
    for (int e = 0; e < WS_ERR__COUNT; e++) {
        cr_assert_not_null(ws_strerror((ws_err)e));
        cr_assert_gt(strlen(ws_strerror((ws_err)e)), 0);
        cr_assert_eq(strncmp(ws_errname((ws_err)e), "WS_", 3), 0);
    }
    cr_assert_str_eq(ws_strerror(WS_OK), "success");
    cr_assert_str_eq(ws_errname(WS_ENOMEM), "WS_ENOMEM");
}

Test(err, out_of_range_code_is_unknown)
{
    cr_assert_str_eq(ws_strerror((ws_err)9999), "unknown error");
    cr_assert_str_eq(ws_strerror((ws_err)-1), "unknown error");
}

Test(err, errno_translation)
{
    cr_assert_eq(ws_err_from_errno(0), WS_OK);
    cr_assert_eq(ws_err_from_errno(ENOMEM), WS_ENOMEM);
    cr_assert_eq(ws_err_from_errno(ETIMEDOUT), WS_ETIMEDOUT);
    cr_assert_eq(ws_err_from_errno(ECONNREFUSED), WS_EUNAVAIL);
    cr_assert_eq(ws_err_from_errno(EIO), WS_EIO);
}
