/*
 * A transactional outbox: a service never publishes from inside a handler.
 * It writes each event into the `outbox` table of its own database in the
 * same transaction as the state change (ws_outbox_put inside ws_store_txn),
 * and a relay publishes the rows at QoS 1 and deletes each one when the
 * broker's PUBACK arrives. Nothing is lost between a commit and a publish:
 * after a crash the relay resumes from the table (at least once; the same
 * event may be published twice, which every subscriber tolerates).
 *
 * Rows hold the event in protobuf binary with its message type name; the
 * relay unpacks each row with the descriptor of that name and publishes it
 * through ws_bus_publish_async, so the bus encodes it in its own format
 * (protobuf or JSON). The table knows no domain word.
 *
 * Order: rows are published in id order with up to `window` publishes in
 * flight. If a publish fails (connection lost), the relay waits for the
 * publishes still in flight, then starts again from the oldest row left:
 * after a failure, rows may go out of order by at most one window, and some
 * may go out twice.
 *
 * Threads: the relay has its own thread and its own ws_store connection.
 * ws_outbox_put, ws_outbox_scan, ws_outbox_delete and ws_outbox_count run on
 * the caller's store, on the caller's thread.
 */
#ifndef WS_OUTBOX_H
#define WS_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "bus.h"
#include "err.h"
#include "metrics.h"
#include "store.h"

/* The outbox table. Include this SQL in one of the service's migrations.
 * `type` is the message's full protobuf name ("webshop.v1.InStock"),
 * `payload` its protobuf binary, `created_ms` the wall clock at put. */
#define WS_OUTBOX_SCHEMA_SQL                                                             \
    "CREATE TABLE outbox("                                                               \
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"                                             \
    " topic TEXT NOT NULL,"                                                              \
    " type TEXT NOT NULL,"                                                               \
    " payload BLOB NOT NULL,"                                                            \
    " created_ms INTEGER NOT NULL);"

/* Queue msg for publication on topic. Call inside the caller's ws_store_txn
 * so the event commits (or rolls back) with the state change. The message
 * is packed; the caller keeps ownership of msg and topic. WS_EINVAL for a
 * NULL or empty topic or NULL msg, WS_ENOMEM, WS_ESTORE/WS_EBUSY from SQLite. */
ws_err ws_outbox_put(ws_store *s, const char *topic, const ProtobufCMessage *msg);

/* One row as ws_outbox_scan shows it; the pointers are valid only during
 * the callback. */
typedef struct ws_outbox_row {
    int64_t id;
    const char *topic;
    const char *type; /* full protobuf name of the message */
    const void *payload;
    size_t len;
    int64_t created_ms;
} ws_outbox_row;

/* Row visitor: return WS_OK to go on; anything else stops the scan, which
 * then returns that value. */
typedef ws_err (*ws_outbox_row_fn)(void *ctx, const ws_outbox_row *row);

/* Call fn for up to limit rows with id > after_id, in id order. *visited
 * (may be NULL) is set to the number of rows passed to fn, on success and
 * when fn stopped the scan. */
ws_err ws_outbox_scan(ws_store *s, int64_t after_id, size_t limit, ws_outbox_row_fn fn,
                      void *ctx, size_t *visited /* OUT, may be NULL */);

/* Delete the row id (no error if it is already gone). */
ws_err ws_outbox_delete(ws_store *s, int64_t id);

/* Number of rows waiting. */
ws_err ws_outbox_count(ws_store *s, int64_t *n /* OUT */);

/* Unpack a row into a message of the matching type among types[0..n), by
 * full name. On success *out is freed with
 * protobuf_c_message_free_unpacked(*out, NULL). WS_ENOTFOUND for a type not
 * in the list, WS_EPARSE for a payload that does not unpack. */
ws_err ws_outbox_row_unpack(const ws_outbox_row *row,
                            const ProtobufCMessageDescriptor *const *types, size_t n,
                            ProtobufCMessage **out /* OUT */);

typedef struct ws_outbox_relay ws_outbox_relay;

typedef struct ws_outbox_relay_opts {
    /* The relay's own connection to the service's database (already
     * migrated). Ownership passes to the relay when open succeeds. */
    ws_store *store;
    /* The bus to publish on; not owned; must outlive the relay's thread
     * (close the relay, or at least flush it, before the bus). */
    ws_bus *bus;
    /* Every message type the service puts in its outbox; the array and
     * descriptors must outlive the relay. A row of another type is logged,
     * counted as dropped and deleted. */
    const ProtobufCMessageDescriptor *const *types;
    size_t n_types;
    int window;          /* publishes in flight; 0 = 100 */
    int poll_ms;         /* look at the table at least this often; 0 = 1000 */
    ws_metrics *metrics; /* NULL = default registry */
} ws_outbox_relay_opts;

/* Create a relay (its thread is not running yet). On success *out owns it
 * and the store; on failure the caller still owns the store. */
ws_err ws_outbox_relay_open(const ws_outbox_relay_opts *opts,
                            ws_outbox_relay **out /* OUT */);

/* Start the relay thread; it publishes every row already in the table,
 * then whatever is queued later. WS_EINVAL if already started. */
ws_err ws_outbox_relay_start(ws_outbox_relay *r);

/* Tell the relay that rows were committed; any thread (handlers on the
 * bus network thread included); never blocks on I/O. */
void ws_outbox_relay_kick(ws_outbox_relay *r);

/* Block until every row committed before this call has been published and
 * acknowledged (and deleted), or timeout_ms passes: WS_OK, WS_ETIMEDOUT,
 * WS_EINVAL if the relay is not started. Any thread except the bus network
 * thread. For a clean SIGTERM: stop taking work, then flush. */
ws_err ws_outbox_relay_flush(ws_outbox_relay *r, uint32_t timeout_ms);

/* Stop the thread, close the store, free. Rows not yet acknowledged stay in
 * the table for the next start. Publishes still in flight are forgotten
 * (their callbacks, when the bus delivers them, touch only memory the relay
 * keeps alive until then). r may be NULL. Not from the bus network thread. */
void ws_outbox_relay_close(ws_outbox_relay *r);

#endif
