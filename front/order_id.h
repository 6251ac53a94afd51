/*
 * Order ids: UUIDs in canonical lowercase text. A new order gets a random
 * (version 4) id, or, when the client sent an Idempotency-Key, a version 5
 * id derived from the key, so a retried POST names the same order.
 */
#ifndef FRONT_ORDER_ID_H
#define FRONT_ORDER_ID_H

#include <stdbool.h>
#include <stddef.h>

/* Canonical text form: 36 characters and a NUL. */
#define ORDER_ID_LEN 37

/* Longest Idempotency-Key accepted. */
#define ORDER_ID_MAX_KEY 200

/* Write a fresh random id into out. */
void order_id_new(char out[ORDER_ID_LEN]);

/* Write the id derived from key (UUIDv5 in the front's namespace) into out.
 * Returns false, writing nothing, when key is empty, longer than
 * ORDER_ID_MAX_KEY or holds bytes outside printable ASCII. */
bool order_id_from_key(const char *key, char out[ORDER_ID_LEN]);

/* Checking an id a client sent: ws_uuid_valid() in lib/uuid_text.h. */

#endif
