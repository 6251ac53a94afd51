/*
 * UUID text checks shared by every service.
 */
#include <criterion/criterion.h>

#include "uuid_text.h"

Test(uuid_text, canonical_form_in_either_case_is_valid)
{
    cr_assert(ws_uuid_valid("0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d"));
    cr_assert(ws_uuid_valid("0B7C1D4E-5F60-4A1B-8C2D-3E4F5A6B7C8D"));
    cr_assert(ws_uuid_canonical("0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d"));
    cr_assert_not(ws_uuid_canonical("0B7C1D4E-5F60-4A1B-8C2D-3E4F5A6B7C8D"),
                  "stored and published ids are lower case");
}

Test(uuid_text, malformed_text_is_refused)
{
    const char *bad[] = {
        "",
        "0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8",   /* short */
        "0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8dd", /* long */
        "0b7c1d4e05f60-4a1b-8c2d-3e4f5a6b7c8d",  /* hyphen missing */
        "0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8g",  /* not hex */
        "{0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_not(ws_uuid_valid(bad[i]), "%s", bad[i]);
        cr_assert_not(ws_uuid_canonical(bad[i]), "%s", bad[i]);
    }
    cr_assert_not(ws_uuid_valid(NULL));
    cr_assert_not(ws_uuid_canonical(NULL));
}

Test(uuid_text, normalize_lowers_any_case_and_refuses_the_rest)
{
    char out[WS_UUID_TEXT_LEN] = "untouched";
    cr_assert(ws_uuid_normalize("0B7C1D4E-5f60-4A1B-8C2D-3E4F5A6B7C8D", out));
    cr_assert_str_eq(out, "0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d");
    cr_assert(ws_uuid_canonical(out));
    char same[WS_UUID_TEXT_LEN] = "0B7C1D4E-5F60-4A1B-8C2D-3E4F5A6B7C8D";
    cr_assert(ws_uuid_normalize(same, same), "in place");
    cr_assert_str_eq(same, "0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8d");
    char keep[WS_UUID_TEXT_LEN] = "kept";
    cr_assert_not(ws_uuid_normalize("0b7c1d4e-5f60-4a1b-8c2d-3e4f5a6b7c8", keep));
    cr_assert_not(ws_uuid_normalize(NULL, keep));
    cr_assert_str_eq(keep, "kept", "out is written only on success");
}
