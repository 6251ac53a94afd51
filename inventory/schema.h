/*
 * The inventory's database schema, as numbered migrations for ws_db_open
 * (one form per engine):
 * products (with the stock ever added, so re-seeding can tell moved stock
 * from seeded stock), reservations (one row per order id, whose status is
 * reserved, rejected, released or tombstoned -- a cancel that came before
 * its order) with their items, and the generic outbox table. Version 2
 * adds to each reservation who released it (cancel or orphan sweep) and
 * whether the order service was seen to know the order; version 3 the
 * outbox's lease column.
 */
#ifndef INV_SCHEMA_H
#define INV_SCHEMA_H

#include <stddef.h>

#include "db.h"

/* The migrations, in version order; *n (OUT) is their count. Static data. */
const ws_db_migration *inv_schema_migrations(size_t *n /* OUT */);

#endif
