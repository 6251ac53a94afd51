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
 */
#include "schema.h"

#include "outbox.h"

static const ws_migration order_schema_steps[] = {
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
        "next_resend_ms);" WS_OUTBOX_SCHEMA_SQL},
    /* Orders created by an outcome or a cancel, before (or without) their
     * OrderSent, have no lines; items_due_ms is when recovery next asks the
     * inventory for them (GetReservation returns the items it saw). */
    {2, "ALTER TABLE orders ADD COLUMN items_due_ms INTEGER;"
        "ALTER TABLE orders ADD COLUMN items_attempts INTEGER NOT NULL DEFAULT 0;"
        "CREATE INDEX orders_by_items_due ON orders(items_due_ms)"
        " WHERE items_due_ms IS NOT NULL;"},
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
        "CREATE INDEX orders_tombstones ON orders(created_ms) WHERE tombstone = 1;"},
};

const ws_migration *order_schema_migrations(size_t *n)
{
    *n = sizeof order_schema_steps / sizeof order_schema_steps[0];
    return order_schema_steps;
}

ws_err order_schema_open(const char *path, const char *synchronous, ws_store **out)
{
    size_t n;
    const ws_migration *m = order_schema_migrations(&n);
    ws_store_opts opts = {.path = path, .synchronous = synchronous};
    return ws_store_open(&opts, m, n, out);
}
