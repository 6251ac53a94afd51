/*
 * The order service's database schema, as numbered migrations for
 * ws_store_open: the orders with their items, the indexes the read side and
 * the recovery loops walk, and the transactional outbox. A migration, once
 * released, never changes; a schema change is a new migration at the end.
 */
#ifndef ORDER_SCHEMA_H
#define ORDER_SCHEMA_H

#include <stddef.h>

#include "store.h"

/* The migrations, versions 1..n in order; *n receives their number. The
 * array is static (never freed). */
const ws_migration *order_schema_migrations(size_t *n /* OUT */);

/* Open (creating if needed) the order database at path and bring it to the
 * current schema. synchronous may be NULL (NORMAL). On success *out owns
 * the connection. Errors as ws_store_open. */
ws_err order_schema_open(const char *path, const char *synchronous,
                         ws_store **out /* OUT */);

#endif
