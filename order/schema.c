/*
 * Migrations of the order database. `orders` holds one row per order id the
 * service has heard of, whatever event came first; `order_items` its lines,
 * filled by the first OrderSent. `next_resend_ms` is the recovery deadline:
 * for a PENDING order when OrderSent is re-published next, for a CANCELED
 * order when the inventory is asked next whether the cancel took effect;
 * NULL when nothing is due (settled, confirmed, or given up). The index on
 * (status, next_resend_ms) lets each recovery pass read only due rows; the
 * one on (created_ms DESC, id DESC) serves ListOrders pages by key set.
 * Migration 3 adds the outcome check (check_due_ms: when recovery next asks
 * the inventory which outcome holds, DESIGN.md "Flows and states, one more
 * rule") and the tombstone flag (a row only a CancelOrder created; not an
 * order, see orders.h), each with a partial index for its recovery pass.
 * Migration 4 adds has_items (the lines are stored: claimed by one
 * conditional UPDATE, order_db.h) and the outbox relay's lease. Migration 5
 * adds the outbox rows' traceparent, on both engines.
 *
 * SQLite runs every version in turn, so the files of every release upgrade.
 * PostgreSQL gets the schema of the last version from version 1 at once
 * (BIGINT for the millisecond columns, the outbox of WS_OUTBOX_SCHEMA_PG)
 * and has nothing to do for the later ones; a version added later carries
 * its own pg_sql.
 */
#include "schema.h"

#include "outbox.h"

/* The outbox as version 1 created it on SQLite (before the relay's lease,
 * which version 4 adds): released, so spelled here as it was. */
#define ORDER_OUTBOX_V1_SQLITE                                                           \
    "CREATE TABLE outbox("                                                               \
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"                                             \
    " topic TEXT NOT NULL,"                                                              \
    " type TEXT NOT NULL,"                                                               \
    " payload BLOB NOT NULL,"                                                            \
    " created_ms INTEGER NOT NULL);"

/* PostgreSQL: the schema of the last version at once. Ids sort as bytes
 * (COLLATE "C"), as on SQLite, so a page token means the same key on both;
 * flags are INTEGER 0/1 so that one SQL text serves both engines. */
#define ORDER_SCHEMA_PG                                                                  \
    "CREATE TABLE orders("                                                               \
    " id TEXT COLLATE \"C\" PRIMARY KEY NOT NULL,"                                       \
    " status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 4),"                           \
    " reason TEXT NOT NULL DEFAULT '',"                                                  \
    " created_ms BIGINT NOT NULL,"                                                       \
    " updated_ms BIGINT NOT NULL,"                                                       \
    " attempts INTEGER NOT NULL DEFAULT 0,"                                              \
    " cancel_attempts INTEGER NOT NULL DEFAULT 0,"                                       \
    " next_resend_ms BIGINT,"                                                            \
    " cancel_confirmed INTEGER NOT NULL DEFAULT 0,"                                      \
    " items_due_ms BIGINT,"                                                              \
    " items_attempts INTEGER NOT NULL DEFAULT 0,"                                        \
    " check_due_ms BIGINT,"                                                              \
    " check_attempts INTEGER NOT NULL DEFAULT 0,"                                        \
    " tombstone INTEGER NOT NULL DEFAULT 0,"                                             \
    " has_items INTEGER NOT NULL DEFAULT 0);"                                            \
    "CREATE TABLE order_items("                                                          \
    " order_id TEXT COLLATE \"C\" NOT NULL REFERENCES orders(id) ON DELETE CASCADE,"     \
    " line INTEGER NOT NULL,"                                                            \
    " inventory_id INTEGER NOT NULL CHECK (inventory_id > 0),"                           \
    " count INTEGER NOT NULL CHECK (count > 0),"                                         \
    " PRIMARY KEY (order_id, line));"                                                    \
    "CREATE INDEX orders_by_created ON orders(created_ms DESC, id DESC);"                \
    "CREATE INDEX orders_by_due ON orders(status, next_resend_ms);"                      \
    "CREATE INDEX orders_by_items_due ON orders(items_due_ms)"                           \
    " WHERE items_due_ms IS NOT NULL;"                                                   \
    "CREATE INDEX orders_by_check_due ON orders(check_due_ms)"                           \
    " WHERE check_due_ms IS NOT NULL;"                                                   \
    "CREATE INDEX orders_tombstones ON orders(created_ms) WHERE tombstone = 1;"          \
    WS_OUTBOX_SCHEMA_PG

static const ws_db_migration order_schema_steps[] = {
    {1, "CREATE TABLE orders("
        " id TEXT PRIMARY KEY NOT NULL,"
        " status INTEGER NOT NULL CHECK (status BETWEEN 1 AND 4),"
        " reason TEXT NOT NULL DEFAULT '',"
        " created_ms INTEGER NOT NULL,"
        " updated_ms INTEGER NOT NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0,"
        " cancel_attempts INTEGER NOT NULL DEFAULT 0,"
        " next_resend_ms INTEGER,"
        " cancel_confirmed INTEGER NOT NULL DEFAULT 0"
        ") WITHOUT ROWID;"
        "CREATE TABLE order_items("
        " order_id TEXT NOT NULL REFERENCES orders(id) ON DELETE CASCADE,"
        " line INTEGER NOT NULL,"
        " inventory_id INTEGER NOT NULL CHECK (inventory_id > 0),"
        " count INTEGER NOT NULL CHECK (count > 0),"
        " PRIMARY KEY (order_id, line)"
        ") WITHOUT ROWID;"
        "CREATE INDEX orders_by_created ON orders(created_ms DESC, id DESC);"
        "CREATE INDEX orders_by_due ON orders(status, "
        "next_resend_ms);" ORDER_OUTBOX_V1_SQLITE,
     ORDER_SCHEMA_PG},
    /* Orders created by an outcome or a cancel, before (or without) their
     * OrderSent, have no lines; items_due_ms is when recovery next asks the
     * inventory for them (GetReservation returns the items it saw). */
    {2, "ALTER TABLE orders ADD COLUMN items_due_ms INTEGER;"
        "ALTER TABLE orders ADD COLUMN items_attempts INTEGER NOT NULL DEFAULT 0;"
        "CREATE INDEX orders_by_items_due ON orders(items_due_ms)"
        " WHERE items_due_ms IS NOT NULL;",
     NULL},
    /* An outcome that conflicts with the recorded one, or that came before
     * the order's items, is checked against the inventory's record: at
     * check_due_ms, by recovery. A row created by a CancelOrder alone is a
     * tombstone (tombstone = 1) until its OrderSent or an outcome arrives;
     * recovery deletes old ones. Rows from before this migration keep
     * tombstone = 0 (they were visible, and stay so). */
    {3, "ALTER TABLE orders ADD COLUMN check_due_ms INTEGER;"
        "ALTER TABLE orders ADD COLUMN check_attempts INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE orders ADD COLUMN tombstone INTEGER NOT NULL DEFAULT 0;"
        "CREATE INDEX orders_by_check_due ON orders(check_due_ms)"
        " WHERE check_due_ms IS NOT NULL;"
        "CREATE INDEX orders_tombstones ON orders(created_ms) WHERE tombstone = 1;",
     NULL},
    /* has_items: whether the lines are stored, a column of the row so that
     * storing them is claimed by one conditional UPDATE (two writers never
     * both fill an order); set for the rows that have lines. The relay's
     * lease column of the outbox (several relays on one database). */
    {4, "ALTER TABLE orders ADD COLUMN has_items INTEGER NOT NULL DEFAULT 0;"
        "UPDATE orders SET has_items = 1"
        " WHERE EXISTS (SELECT 1 FROM order_items WHERE order_id = orders.id);"
        WS_OUTBOX_LEASE_SQLITE,
     NULL},
    /* The trace of the work that queued an outbox row (lib/outbox.h); a
     * no-op on a PostgreSQL table made with it by version 1. */
    {5, WS_OUTBOX_TRACE_SQLITE, WS_OUTBOX_TRACE_PG},
};

const ws_db_migration *order_schema_migrations(size_t *n)
{
    *n = sizeof order_schema_steps / sizeof order_schema_steps[0];
    return order_schema_steps;
}
