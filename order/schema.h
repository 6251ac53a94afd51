/*
 * The order service's database schema, as numbered migrations for
 * ws_db_open, one form per engine: the orders with their items, the
 * indexes the read side and the recovery loops walk, and the transactional
 * outbox. A migration, once released, never changes; a schema change is a
 * new migration at the end. SQLite files of every earlier release open and
 * upgrade; a PostgreSQL database gets the whole current schema from
 * version 1 (the later versions have nothing to do there).
 */
#ifndef ORDER_SCHEMA_H
#define ORDER_SCHEMA_H

#include <stddef.h>

#include "db.h"

/* The migrations, versions 1..n in order; *n receives their number. The
 * array is static (never freed). */
const ws_db_migration *order_schema_migrations(size_t *n /* OUT */);

#endif
