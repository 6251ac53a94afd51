/*
 * Order ids with libuuid; see order_id.h.
 */
#include "order_id.h"

#include <ctype.h>
#include <string.h>

#include <uuid/uuid.h>

/* The namespace of Idempotency-Key derived ids: a fixed random UUID, so the
 * same key names the same order on every front replica and after restarts. */
static const char *const order_id_namespace = "6a1f3c2e-9b4d-4e8a-b7c5-0d2e4f6a8b1c";

void order_id_new(char out[ORDER_ID_LEN])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

bool order_id_from_key(const char *key, char out[ORDER_ID_LEN])
{
    size_t n = strlen(key);
    if (n == 0 || n > ORDER_ID_MAX_KEY) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c > 0x7e) {
            return false;
        }
    }
    uuid_t ns;
    uuid_t u;
    if (uuid_parse(order_id_namespace, ns) != 0) {
        return false;
    }
    uuid_generate_sha1(u, ns, key, n);
    uuid_unparse_lower(u, out);
    return true;
}

bool order_id_valid_n(const char *s, size_t len)
{
    if (len != ORDER_ID_LEN - 1) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') {
                return false;
            }
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

bool order_id_valid(const char *s)
{
    return order_id_valid_n(s, strnlen(s, ORDER_ID_LEN));
}
