/*
 * The inventory schema (see schema.h). Migrations only ever append: a
 * released schema version is never edited, a change is a new version.
 *
 * Invariant kept by the domain code (stock.c), for every product at every
 * moment: balance + sum(count of items of reservations in status
 * 'reserved') = stock_added.
 *
 * Version 2 (orphan release, tombstone expiry): release_kind says who
 * released a 'released' reservation ('canceled' by an OrderCanceled,
 * 'orphan' by the sweep because the order service did not know the order;
 * '' for any other status), confirmed = 1 once the order service was seen
 * to know the order (the sweep never asks about it again). Two partial
 * indexes keep the sweep's two scans (held and unconfirmed by age,
 * tombstones by age) from reading the whole table. Ids stored in upper case
 * by version 1 code are renamed to lower case (the id rule, stock.h).
 */
#include "schema.h"

#include "outbox.h"

/* The outbox table as version 1 created it on SQLite (before the lease
 * column); a released version is never edited, so it stays spelled out
 * here although lib/outbox.h has moved on. */
#define SCHEMA_OUTBOX_V1_SQLITE                                                          \
    "CREATE TABLE outbox("                                                               \
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"                                             \
    " topic TEXT NOT NULL,"                                                              \
    " type TEXT NOT NULL,"                                                               \
    " payload BLOB NOT NULL,"                                                            \
    " created_ms INTEGER NOT NULL);"

/* The whole schema of the last version, for a new PostgreSQL database. */
#define SCHEMA_PG_V1                                                                     \
    "CREATE TABLE products("                                                             \
    " id INTEGER PRIMARY KEY CHECK (id > 0),"                                            \
    " name TEXT NOT NULL,"                                                               \
    " price INTEGER NOT NULL CHECK (price >= 0),"                                        \
    " balance INTEGER NOT NULL CHECK (balance >= 0),"                                    \
    " stock_added INTEGER NOT NULL CHECK (stock_added >= 0));"                           \
    "CREATE TABLE reservations("                                                         \
    " order_id TEXT PRIMARY KEY,"                                                        \
    " status TEXT NOT NULL"                                                              \
    "  CHECK (status IN ('reserved', 'rejected', 'released', 'tombstoned')),"            \
    " reason TEXT NOT NULL DEFAULT '',"                                                  \
    " created_ms BIGINT NOT NULL,"                                                       \
    " updated_ms BIGINT NOT NULL,"                                                       \
    " release_kind TEXT NOT NULL DEFAULT ''"                                             \
    "  CHECK (release_kind IN ('', 'canceled', 'orphan')),"                              \
    " confirmed INTEGER NOT NULL DEFAULT 0 CHECK (confirmed IN (0, 1)));"                \
    "CREATE TABLE reservation_items("                                                    \
    " order_id TEXT NOT NULL REFERENCES reservations(order_id),"                         \
    " idx INTEGER NOT NULL,"                                                             \
    " product_id INTEGER NOT NULL,"                                                      \
    " count INTEGER NOT NULL,"                                                           \
    " PRIMARY KEY (order_id, idx));"                                                     \
    "CREATE INDEX reservations_unconfirmed ON reservations(created_ms)"                  \
    " WHERE status = 'reserved' AND confirmed = 0;"                                      \
    "CREATE INDEX reservations_tombstones ON reservations(updated_ms)"                   \
    " WHERE status = 'tombstoned';" WS_OUTBOX_SCHEMA_PG

static const ws_db_migration schema_migrations[] = {
    {1,
     "CREATE TABLE products("
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
     " PRIMARY KEY (order_id, idx)) WITHOUT ROWID;" SCHEMA_OUTBOX_V1_SQLITE,
     SCHEMA_PG_V1},
    {2,
     "ALTER TABLE reservations ADD COLUMN release_kind TEXT NOT NULL DEFAULT ''"
     "  CHECK (release_kind IN ('', 'canceled', 'orphan'));"
     "ALTER TABLE reservations ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 0"
     "  CHECK (confirmed IN (0, 1));"
     "UPDATE reservations SET release_kind = 'canceled' WHERE status = 'released';"
     "CREATE INDEX reservations_unconfirmed ON reservations(created_ms)"
     " WHERE status = 'reserved' AND confirmed = 0;"
     "CREATE INDEX reservations_tombstones ON reservations(updated_ms)"
     " WHERE status = 'tombstoned';"
     /* The id rule: rename records an older version stored under an
      * upper-case id, unless another record holds the same UUID (then
      * both stay as they are; the orphan sweep still finds the one that
      * holds stock by its stored id). */
     "DROP TABLE IF EXISTS temp.inv_legacy_ids;"
     "CREATE TEMP TABLE inv_legacy_ids(old_id TEXT PRIMARY KEY, new_id TEXT NOT NULL);"
     "INSERT INTO inv_legacy_ids SELECT order_id, lower(order_id) FROM reservations"
     " WHERE order_id <> lower(order_id);"
     "DELETE FROM inv_legacy_ids WHERE new_id IN (SELECT order_id FROM main.reservations)"
     " OR new_id IN (SELECT new_id FROM inv_legacy_ids GROUP BY new_id"
     " HAVING count(*) > 1);"
     "PRAGMA defer_foreign_keys = ON;"
     "UPDATE reservation_items SET order_id = lower(order_id)"
     " WHERE order_id IN (SELECT old_id FROM inv_legacy_ids);"
     "UPDATE reservations SET order_id = lower(order_id)"
     " WHERE order_id IN (SELECT old_id FROM inv_legacy_ids);"
     "DROP TABLE temp.inv_legacy_ids;",
     NULL},
    {3, WS_OUTBOX_LEASE_SQLITE, NULL},
    /* The trace of the work that queued an outbox row (lib/outbox.h); a
     * no-op on a PostgreSQL table made with it by version 1. */
    {4, WS_OUTBOX_TRACE_SQLITE, WS_OUTBOX_TRACE_PG},
};

const ws_db_migration *inv_schema_migrations(size_t *n)
{
    *n = sizeof(schema_migrations) / sizeof(schema_migrations[0]);
    return schema_migrations;
}
