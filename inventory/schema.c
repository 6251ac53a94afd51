/*
 * The inventory schema (see schema.h). Migrations only ever append: a
 * released schema version is never edited, a change is a new version.
 *
 * Invariant kept by the domain code (stock.c), for every product at every
 * moment: balance + sum(count of items of reservations in status
 * 'reserved') = stock_added.
 */
#include "schema.h"

#include "outbox.h"

static const ws_migration schema_migrations[] = {
    {1, "CREATE TABLE products("
        " id INTEGER PRIMARY KEY CHECK (id > 0),"
        " name TEXT NOT NULL,"
        " price INTEGER NOT NULL CHECK (price >= 0),"
        " balance INTEGER NOT NULL CHECK (balance >= 0),"
        " stock_added INTEGER NOT NULL CHECK (stock_added >= 0));"
        "CREATE TABLE reservations("
        " order_id TEXT PRIMARY KEY,"
        " status TEXT NOT NULL"
        "  CHECK (status IN ('reserved', 'rejected', 'released', 'tombstoned')),"
        " reason TEXT NOT NULL DEFAULT '',"
        " created_ms INTEGER NOT NULL,"
        " updated_ms INTEGER NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE reservation_items("
        " order_id TEXT NOT NULL REFERENCES reservations(order_id),"
        " idx INTEGER NOT NULL,"
        " product_id INTEGER NOT NULL,"
        " count INTEGER NOT NULL,"
        " PRIMARY KEY (order_id, idx)) WITHOUT ROWID;" WS_OUTBOX_SCHEMA_SQL},
};

const ws_migration *inv_schema_migrations(size_t *n)
{
    *n = sizeof(schema_migrations) / sizeof(schema_migrations[0]);
    return schema_migrations;
}
