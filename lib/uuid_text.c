/*
 * UUID text checks; see uuid_text.h.
 */
#include "uuid_text.h"

#include <stddef.h>

static bool uuid_text_valid(const char *s, bool lower_only)
{
    if (s == NULL) {
        return false;
    }
    for (int i = 0; i < 36; i++) {
        char c = s[i]; /* a shorter string fails at its NUL before any overrun */
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') {
                return false;
            }
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                     (!lower_only && c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return s[36] == '\0';
}

bool ws_uuid_valid(const char *s)
{
    return uuid_text_valid(s, false);
}

bool ws_uuid_canonical(const char *s)
{
    return uuid_text_valid(s, true);
}

bool ws_uuid_normalize(const char *s, char out[WS_UUID_TEXT_LEN])
{
    if (!ws_uuid_valid(s)) {
        return false;
    }
    for (int i = 0; i < WS_UUID_TEXT_LEN; i++) {
        char c = s[i];
        out[i] = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
    }
    return true;
}
