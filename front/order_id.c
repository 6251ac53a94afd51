/*
 * Order ids: random version-4 UUIDs from getrandom(2), name-based
 * (version 5) ones with libuuid; see order_id.h.
 */
#include "order_id.h"

#include <string.h>
#include <sys/random.h>

#include <uuid/uuid.h>

/* The namespace of Idempotency-Key derived ids: a fixed random UUID, so the
 * same key names the same order on every front replica and after restarts. */
static const char *const order_id_namespace = "6a1f3c2e-9b4d-4e8a-b7c5-0d2e4f6a8b1c";

/* Random bytes for ids, drawn from the kernel ORDER_ID_POOL at a time per
 * thread. uuid_generate_random re-seeds a userspace generator on every
 * call (gettimeofday, srandom and a few dozen random() calls), which cost
 * more than the rest of a POST's id handling; getrandom(2) is the same
 * kernel CSPRNG libuuid reads, one call per ORDER_ID_POOL / 16 ids. */
#define ORDER_ID_POOL 512

static _Thread_local unsigned char order_id_pool[ORDER_ID_POOL];
static _Thread_local size_t order_id_pool_left;

/* 16 fresh random bytes into u; false if the kernel would not give any. */
static bool order_id_random16(uuid_t u)
{
    if (order_id_pool_left < 16) {
        ssize_t n = getrandom(order_id_pool, sizeof(order_id_pool), 0);
        if (n != (ssize_t)sizeof(order_id_pool)) {
            order_id_pool_left = 0;
            return false;
        }
        order_id_pool_left = sizeof(order_id_pool);
    }
    order_id_pool_left -= 16;
    memcpy(u, order_id_pool + order_id_pool_left, 16);
    /* Used bytes never serve twice. */
    memset(order_id_pool + order_id_pool_left, 0, 16);
    return true;
}

void order_id_new(char out[ORDER_ID_LEN])
{
    uuid_t u;
    if (order_id_random16(u)) {
        u[6] = (unsigned char)((u[6] & 0x0f) | 0x40); /* version 4 */
        u[8] = (unsigned char)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    } else {
        uuid_generate_random(u);
    }
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
