/*
 * webshop-order: the order service. Reads its settings (flags, WEBSHOP_*
 * environment), opens its database and wires the runtime around the domain
 * modules: the bus consumer (consumer.c), the transactional outbox relay,
 * the recovery loop (recovery.c, asking the inventory through
 * reservations.c), the Orders RPC server (api.c) and /metrics and /healthz
 * over HTTP. No business logic lives here.
 *
 * Start: the database is checked first (ws_service_check_store: schema
 * version and PRAGMA quick_check within --db-check-timeout); a damaged one
 * is refused with store_damaged and exit 1.
 *
 * /readyz: 503 with the reason while the consumer is not connected, holds
 * an event it cannot commit (the bus retries it and reads nothing more), or
 * the consumer's or the relay's connection cannot commit (disk full,
 * read-only file, ...); it recovers by itself when the fault clears.
 *
 * Shutdown on SIGTERM or SIGINT: stop taking RPC work and recovery passes
 * (in-flight calls and the pass in progress finish), flush the outbox
 * within --shutdown-timeout, then close the relay, the bus and the rest,
 * truncate the WAL (no large WAL is left behind), and exit 0. Events that
 * arrive during the flush are still applied; what they queue after it stays
 * in the outbox for the next start. Events held for a retry when the stop
 * comes are logged (bus_closed_holding) and lost here (the broker has their
 * PUBACK): a lost OrderSent is healed by the inventory's outcome when that
 * still waits at the broker (it creates the row; the outcome check fills in
 * the items), a lost outcome by the re-send of a PENDING order, and an order
 * of which this service got nothing by the client's re-POST with its
 * Idempotency-Key after the 202 (tests/e2e/test_faults.py).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "bus.h"
#include "config.h"
#include "consumer.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "orders.h"
#include "outbox.h"
#include "recovery.h"
#include "reservations.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "schema.h"
#include "service.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/order.rpc.h"

typedef struct order_cfg {
    ws_service_cfg svc; /* the settings every backend shares */
    const char *inventory_url;
    int64_t inventory_deadline_ms;
    int64_t resend_after_ms;
    int64_t resend_cap_ms;
    int64_t resend_attempts;
    int64_t tombstone_ttl_ms;
} order_cfg;

/* The relay as the consumer and the recovery loop see it: kicking stops
 * before the relay is closed, since bus handlers may still run then. */
typedef struct order_kicker {
    pthread_mutex_t mu;
    ws_outbox_relay *relay; /* NULL once detached */
} order_kicker;

static void order_kick(void *ctx)
{
    order_kicker *k = ctx;
    pthread_mutex_lock(&k->mu);
    if (k->relay != NULL) {
        ws_outbox_relay_kick(k->relay);
    }
    pthread_mutex_unlock(&k->mu);
}


static const ProtobufCMessageDescriptor *const order_outbox_types[] = {
    &webshop__v1__order_status_changed__descriptor,
    &webshop__v1__order_canceled__descriptor,
    &webshop__v1__order_sent__descriptor,
};

int main(int argc, char **argv)
{
    /* Before any thread exists, so every thread inherits the mask and main
     * alone takes the stop signals. */
    sigset_t stop;
    ws_service_block_signals(&stop);

    order_cfg cfg = {0};
    static const ws_service_defaults defaults = {
        .db_path = "order.db",
        .rpc_url = "tcp://127.0.0.1:7201",
        .rpc_help = "where the Orders RPC service listens",
        .client_id = "webshop-order",
        .http_port = "7202",
    };
    const ws_config_option own[] = {
        {.name = "inventory-url",
         .type = WS_CONFIG_URL,
         .def = "tcp://127.0.0.1:7101",
         .help = "the inventory's RPC service (GetReservation)",
         .target.str = &cfg.inventory_url},
        {.name = "inventory-deadline",
         .type = WS_CONFIG_DURATION,
         .def = "2s",
         .help = "deadline of one GetReservation call",
         .target.i64 = &cfg.inventory_deadline_ms,
         .min = 1,
         .max = 60000},
        {.name = "resend-after",
         .type = WS_CONFIG_DURATION,
         .def = "5s",
         .help = "re-publish OrderSent for orders PENDING this long (and check cancels)",
         .target.i64 = &cfg.resend_after_ms,
         .min = 1,
         .max = 86400000},
        {.name = "resend-max-delay",
         .type = WS_CONFIG_DURATION,
         .def = "60s",
         .help = "cap of the doubling delay between re-sends",
         .target.i64 = &cfg.resend_cap_ms,
         .min = 1,
         .max = 86400000},
        {.name = "resend-attempts",
         .type = WS_CONFIG_INT,
         .def = "20",
         .help = "re-sends per order before it is left alone (logged)",
         .target.i64 = &cfg.resend_attempts,
         .min = 0,
         .max = 1000000},
        {.name = "tombstone-ttl",
         .type = WS_CONFIG_DURATION,
         .def = "24h",
         .help = "delete rows only a cancel created (tombstones, never shown as "
                 "orders) this long after the cancel",
         .target.i64 = &cfg.tombstone_ttl_ms,
         .min = 1000,
         .max = 30LL * 24 * 3600 * 1000},
    };
    enum { ORDER_N_OWN = sizeof own / sizeof own[0] };
    ws_config_option opts[WS_SERVICE_N_OPTIONS + ORDER_N_OWN];
    size_t n = ws_service_options(&cfg.svc, &defaults, opts);
    memcpy(opts + n, own, sizeof own);
    n += ORDER_N_OWN;
    ws_config *conf =
        ws_config_new("webshop-order", "0.1.0",
                      "The order service: order status from bus events, Orders RPC.", opts, n);
    if (conf == NULL) {
        fprintf(stderr, "webshop-order: out of memory\n");
        return 1;
    }
    int exit_code = ws_service_parse(conf, &cfg.svc, "webshop-order", "order", argc, argv);
    if (exit_code >= 0) {
        ws_config_free(conf);
        return exit_code;
    }
    const char *db_sync = ws_service_sync_names[cfg.svc.db_sync];
    size_t n_mig = 0;
    (void)order_schema_migrations(&n_mig);
    if (ws_service_check_store(&cfg.svc, "webshop-order", (int)n_mig) != WS_OK) {
        ws_log_info("stopped", "exit=%d", 1);
        ws_config_free(conf);
        ws_metrics_free(ws_metrics_default());
        return 1;
    }

    /* Outcome progress: written by the consumer, read by recovery. */
    orders_progress progress = {0};
    orders_policy policy = {.resend_after_ms = cfg.resend_after_ms,
                            .backoff_cap_ms = cfg.resend_cap_ms,
                            .max_attempts = (int)cfg.resend_attempts,
                            .progress = &progress};
    ws_metrics *metrics = ws_metrics_default();
    order_kicker kicker = {.mu = PTHREAD_MUTEX_INITIALIZER};
    int rc = 1;
    ws_err err;
    const char *what = "database";
    ws_store *consumer_store = NULL, *relay_store = NULL, *recovery_store = NULL;
    order_consumer *consumer = NULL;
    order_api *api = NULL;
    ws_bus *bus = NULL;
    ws_outbox_relay *relay = NULL;
    ws_rpc_client *inventory = NULL;
    order_recovery *recovery = NULL;
    ws_rpc_server *server = NULL;
    ws_http *http = NULL;
    order_reservations reservations = {.deadline_ms =
                                           (uint32_t)cfg.inventory_deadline_ms};
    ws_service_ready ready = {0}; /* what /readyz looks at; outlives http */

    /* The first open applies the migrations; the others find them done. */
    if ((err = order_schema_open(cfg.svc.db_path, db_sync, &consumer_store)) !=
            WS_OK ||
        (err = order_schema_open(cfg.svc.db_path, db_sync, &relay_store)) !=
            WS_OK ||
        (err = order_schema_open(cfg.svc.db_path, db_sync, &recovery_store)) !=
            WS_OK ||
        (err = order_api_open(cfg.svc.db_path, (int)cfg.svc.rpc_readers, &api)) != WS_OK) {
        goto done;
    }
    order_consumer_opts co = {.store = consumer_store,
                              .policy = policy,
                              .queued = order_kick,
                              .queued_ctx = &kicker,
                              .metrics = metrics};
    if ((err = order_consumer_open(&co, &consumer)) != WS_OK) {
        goto done;
    }
    consumer_store = NULL;
    ready.stores[0] = order_consumer_store(consumer);
    ready.stores[1] = relay_store;

    what = "bus";
    ws_bus_opts bo = ws_service_bus_opts(&cfg.svc, cfg.svc.client_id, false);
    bo.metrics = metrics;
    if ((err = ws_bus_open(&bo, &bus)) != WS_OK ||
        (err = order_consumer_subscribe(consumer, bus)) != WS_OK) {
        goto done;
    }
    what = "outbox";
    ws_outbox_relay_opts ro = {.store = relay_store,
                               .bus = bus,
                               .types = order_outbox_types,
                               .n_types = sizeof order_outbox_types /
                                          sizeof order_outbox_types[0],
                               .metrics = metrics};
    if ((err = ws_outbox_relay_open(&ro, &relay)) != WS_OK) {
        goto done;
    }
    relay_store = NULL;
    kicker.relay = relay;
    if ((err = ws_outbox_relay_start(relay)) != WS_OK) {
        goto done;
    }
    what = "bus";
    if ((err = ws_bus_start(bus)) != WS_OK) {
        goto done;
    }

    what = "inventory";
    const char *inv_urls[] = {cfg.inventory_url};
    ws_rpc_client_opts io = {.urls = inv_urls,
                             .n_urls = 1,
                             .max_msg = (size_t)cfg.svc.rpc_max_msg,
                             .metrics = metrics};
    if ((err = ws_rpc_client_open(&io, &inventory)) != WS_OK) {
        goto done;
    }
    reservations.client = inventory;
    what = "recovery";
    order_recovery_opts rco = {.store = recovery_store,
                               .policy = policy,
                               .lookup = order_reservations_lookup,
                               .lookup_ctx = &reservations,
                               .queued = order_kick,
                               .queued_ctx = &kicker,
                               .tombstone_ttl_ms = cfg.tombstone_ttl_ms,
                               .metrics = metrics};
    if ((err = order_recovery_open(&rco, &recovery)) != WS_OK) {
        goto done;
    }
    recovery_store = NULL;
    if ((err = order_recovery_start(recovery)) != WS_OK) {
        goto done;
    }

    what = "rpc";
    ws_rpc_server_opts so = {.url = cfg.svc.rpc_url,
                             .contexts = (int)cfg.svc.rpc_contexts,
                             .workers = (int)cfg.svc.rpc_workers,
                             .inline_handlers = cfg.svc.rpc_workers == 0,
                             .max_msg = (size_t)cfg.svc.rpc_max_msg,
                             .metrics = metrics};
    if ((err = ws_rpc_server_open(&so, &server)) != WS_OK ||
        (err = webshop_v1_orders_register(server, order_api_binding(api))) != WS_OK ||
        (err = ws_rpc_server_start(server)) != WS_OK) {
        goto done;
    }

    what = "http";
    ws_http_opts ho = {.host = cfg.svc.http_host, .port = cfg.svc.http_port, .threads = 4};
    if ((err = ws_http_open(&ho, &http)) != WS_OK) {
        goto done;
    }
    ready.bus = bus;
    ws_service_route_basics(http, metrics, &ready);
    ws_http_serve(http);

    ws_log_info(
        "started",
        "db=%s rpc=%s inventory=%s broker=%s client_id=%s bus_format=%s http=%s:%d "
        "resend_after_ms=%lld tombstone_ttl_ms=%lld",
        cfg.svc.db_path, ws_rpc_server_url(server), cfg.inventory_url, cfg.svc.broker, cfg.svc.client_id,
        ws_service_format_names[cfg.svc.bus_format], cfg.svc.http_host, ws_http_port(http),
        (long long)cfg.resend_after_ms, (long long)cfg.tombstone_ttl_ms);

    int sig = ws_service_wait(&stop);
    ws_bus_hold hold = {0};
    ws_log_info("stopping", "signal=%s held_events=%zu", ws_service_signal_name(sig),
                ws_bus_holding(bus, &hold) ? hold.held : (size_t)0);

    /* Stop taking work: RPC first (in-flight calls finish), then recovery. */
    ws_rpc_server_close(server);
    server = NULL;
    order_recovery_close(recovery);
    recovery = NULL;
    err = ws_outbox_relay_flush(relay, (uint32_t)cfg.svc.shutdown_timeout_ms);
    if (err != WS_OK) {
        ws_log_warn("outbox_flush_incomplete", "err=%s timeout_ms=%lld", ws_errname(err),
                    (long long)cfg.svc.shutdown_timeout_ms);
    }
    err = WS_OK;
    rc = 0;

done:
    if (err != WS_OK) {
        ws_log_error("startup_failed", "what=%s err=%s", what, ws_errname(err));
    }
    ws_http_close(http);
    ws_rpc_server_close(server);
    order_recovery_close(recovery);
    pthread_mutex_lock(&kicker.mu);
    kicker.relay = NULL;
    pthread_mutex_unlock(&kicker.mu);
    ws_outbox_relay_close(relay);
    ws_bus_close(bus);
    if (rc == 0) {
        /* Every writer but this one is closed and the readers are idle. */
        (void)ws_store_checkpoint(order_consumer_store(consumer), true);
    }
    order_consumer_close(consumer);
    ws_rpc_client_close(inventory);
    order_api_close(api);
    ws_store_close(recovery_store);
    ws_store_close(relay_store);
    ws_store_close(consumer_store);
    ws_log_info("stopped", "exit=%d", rc);
    ws_config_free(conf);
    ws_metrics_free(ws_metrics_default());
    return rc;
}
