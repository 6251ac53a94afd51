/*
 * webshop-order: the order service. Reads its settings (flags, WEBSHOP_*
 * environment), opens its database and wires the runtime around the domain
 * modules: the bus consumer (consumer.c), the transactional outbox relay,
 * the recovery loop (recovery.c, asking the inventory through
 * reservations.c), the Orders RPC server (api.c) and /metrics and /healthz
 * over HTTP. No business logic lives here. The shape: parse the settings,
 * check the database, open the app (database, bus, relay, recovery, RPC,
 * HTTP), serve, wait for a stop signal, stop.
 *
 * Database: one pool (lib/db) for the whole service, opened from --db-url
 * (WEBSHOP_ORDER_DB_URL; sqlite:PATH, a path, or postgresql://...) or
 * --db-path, the SQLite shorthand. Its connections: the RPC handlers'
 * (--rpc-readers), one for the consumer, one for the relay, one for the
 * recovery loop.
 *
 * Start: the database is checked first (ws_service_check_db: schema
 * version, and on SQLite PRAGMA quick_check within --db-check-timeout); a
 * damaged one is refused and the process exits 1.
 *
 * /readyz: 503 with the reason while the consumer is not connected, holds
 * an event it cannot commit (the bus retries it and reads nothing more), or
 * a connection of the pool cannot commit (disk full, read-only file,
 * PostgreSQL gone, ...); it recovers by itself when the fault clears.
 *
 * Shutdown on SIGTERM or SIGINT: stop taking RPC work and recovery passes
 * (in-flight calls and the pass in progress finish), flush the outbox
 * within --shutdown-timeout, then close the relay, the bus and the rest,
 * checkpoint and truncate the SQLite WAL (no large WAL is left behind), and
 * exit 0. Events that arrive during the flush are still applied; what they
 * queue after it stays in the outbox for the next start. Events held for a
 * retry when the stop comes are logged (bus_closed_holding) and lost here
 * (the broker has their PUBACK): a lost OrderSent is healed by the
 * inventory's outcome when that still waits at the broker (it creates the
 * row; the outcome check fills in the items), a lost outcome by the
 * re-send of a PENDING order, and an order of which this service got
 * nothing by the client's re-POST with its Idempotency-Key after the 202
 * (tests/e2e/test_faults.py).
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
#include "db.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
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

#define ORDER_PROG "webshop-order"

/* Connections of the pool besides the RPC handlers': the consumer's, the
 * relay's and the recovery loop's. */
#define ORDER_DB_OWN_CONNS 3

typedef struct order_cfg {
    ws_service_cfg svc; /* the settings every backend shares */
    ws_config_list inventory_urls; /* --inventory-url: every inventory replica */
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

/* How many options the order service adds to the common ones. */
enum { ORDER_N_OWN = 6 };

/* Everything the process runs, opened in this order and closed in reverse
 * (order_app_close). Owned by main; the pointers are NULL until opened. */
typedef struct order_app {
    order_cfg cfg;
    /* The option table conf borrows: it must live as long as conf. */
    ws_config_option opts[WS_SERVICE_N_OPTIONS + ORDER_N_OWN];
    ws_config *conf;
    orders_progress progress; /* outcome progress: consumer writes, recovery reads */
    orders_policy policy;     /* points at progress */
    ws_metrics *metrics;
    order_kicker kicker;
    ws_db *db;
    order_api *api;
    order_consumer *consumer;
    ws_bus *bus;
    ws_outbox_relay *relay;
    ws_rpc_client *inventory;
    order_reservations reservations;
    order_recovery *recovery;
    ws_rpc_server *server;
    ws_http *http;
    ws_service_ready ready; /* what /readyz looks at; outlives http */
} order_app;

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

/* ---- settings ---------------------------------------------------------- */

/* The order service's own options, targeting cfg, into out[ORDER_N_OWN]. */
static void order_cfg_options(order_cfg *cfg, ws_config_option *out)
{
    static char inventory_def[WS_SERVICE_URL_CAP]; /* the inventory's default */
    (void)ws_service_rpc_default_url("inventory.rpc", inventory_def,
                                     sizeof inventory_def);
    const ws_config_option own[ORDER_N_OWN] = {
        {.name = "inventory-url",
         .type = WS_CONFIG_URL,
         .def = inventory_def,
         .help = "the inventory's RPC service (GetReservation); a comma list names "
                 "every replica, all dialed on one socket (a call whose replica dies "
                 "is resent to another); default: the inventory's default --rpc-url",
         .target.list = &cfg->inventory_urls,
         .choices = ws_service_rpc_schemes,
         .flags = WS_CONFIG_LIST},
        {.name = "inventory-deadline",
         .type = WS_CONFIG_DURATION,
         .def = "2s",
         .help = "deadline of one GetReservation call",
         .target.i64 = &cfg->inventory_deadline_ms,
         .min = 1,
         .max = 60000},
        {.name = "resend-after",
         .type = WS_CONFIG_DURATION,
         .def = "5s",
         .help = "re-publish OrderSent for orders PENDING this long (and check cancels)",
         .target.i64 = &cfg->resend_after_ms,
         .min = 1,
         .max = 86400000},
        {.name = "resend-max-delay",
         .type = WS_CONFIG_DURATION,
         .def = "60s",
         .help = "cap of the doubling delay between re-sends",
         .target.i64 = &cfg->resend_cap_ms,
         .min = 1,
         .max = 86400000},
        {.name = "resend-attempts",
         .type = WS_CONFIG_INT,
         .def = "20",
         .help = "re-sends per order before it is left alone (logged)",
         .target.i64 = &cfg->resend_attempts,
         .min = 0,
         .max = 1000000},
        {.name = "tombstone-ttl",
         .type = WS_CONFIG_DURATION,
         .def = "24h",
         .help = "delete rows only a cancel created (tombstones, never shown as "
                 "orders) this long after the cancel",
         .target.i64 = &cfg->tombstone_ttl_ms,
         .min = 1000,
         .max = 30LL * 24 * 3600 * 1000},
    };
    memcpy(out, own, sizeof own);
}

/* Parse argv into app->cfg (app->conf owns the strings). Returns -1 to go
 * on, or main's exit code. */
static int order_cfg_parse(order_app *app, int argc, char **argv)
{
    static const ws_service_defaults defaults = {
        .db_path = "order.db",
        .db_url_env = "WEBSHOP_ORDER_DB_URL",
        .rpc_socket = "order.rpc",
        .rpc_help = "where the Orders RPC service listens (default: order.rpc in the "
                    "runtime directory: $WEBSHOP_RUNTIME_DIR, else "
                    "$XDG_RUNTIME_DIR/webshop, else /tmp/webshop-UID, made 0700; the "
                    "socket 0600); tcp:// needs --rpc-plaintext",
        .client_id = "webshop-order",
        .http_port = "7202",
    };
    size_t n = ws_service_options(&app->cfg.svc, &defaults, app->opts);
    order_cfg_options(&app->cfg, app->opts + n);
    n += ORDER_N_OWN;
    app->conf = ws_config_new(
        ORDER_PROG, "0.1.0",
        "The order service: order status from bus events, Orders RPC.", app->opts, n);
    if (app->conf == NULL) {
        fprintf(stderr, ORDER_PROG ": out of memory\n");
        return 1;
    }
    int rc = ws_service_parse(app->conf, &app->cfg.svc, ORDER_PROG, "order", argc, argv);
    if (rc < 0 &&
        ws_service_rpc_tls_check_dial(&app->cfg.svc.rpc_tls, ORDER_PROG, "inventory-url",
                                      &app->cfg.inventory_urls) != WS_OK) {
        rc = 2;
    }
    return rc;
}

/* ---- opening ------------------------------------------------------------ */

static ws_err order_app_open_db(order_app *app)
{
    size_t n_mig = 0;
    const ws_db_migration *mig = order_schema_migrations(&n_mig);
    ws_db_opts o = ws_service_db_opts(
        &app->cfg.svc, (int)app->cfg.svc.rpc_readers + ORDER_DB_OWN_CONNS, mig, n_mig);
    ws_err err = ws_service_db_open(&app->cfg.svc, &o, &app->db);
    if (err == WS_OK) {
        err = order_api_open(app->db, &app->api);
    }
    app->ready.db = app->db;
    return err;
}

/* The consumer on the bus, and the relay that publishes what it queues. */
static ws_err order_app_open_bus(order_app *app, const char **what)
{
    order_consumer_opts co = {.db = app->db,
                              .policy = app->policy,
                              .queued = order_kick,
                              .queued_ctx = &app->kicker,
                              .metrics = app->metrics};
    ws_bus_opts bo = ws_service_consumer_bus_opts(&app->cfg.svc);
    bo.metrics = app->metrics;
    ws_err err;
    *what = "bus";
    if ((err = order_consumer_open(&co, &app->consumer)) != WS_OK ||
        (err = ws_bus_open(&bo, &app->bus)) != WS_OK ||
        (err = order_consumer_subscribe(app->consumer, app->bus,
                                        app->cfg.svc.share_group)) != WS_OK) {
        return err;
    }
    *what = "outbox";
    ws_outbox_relay_opts ro = {.db = app->db,
                               .bus = app->bus,
                               .types = order_outbox_types,
                               .n_types = sizeof order_outbox_types /
                                          sizeof order_outbox_types[0],
                               .metrics = app->metrics};
    if ((err = ws_outbox_relay_open(&ro, &app->relay)) != WS_OK) {
        return err;
    }
    app->kicker.relay = app->relay;
    if ((err = ws_outbox_relay_start(app->relay)) != WS_OK) {
        return err;
    }
    *what = "bus";
    app->ready.bus = app->bus;
    /* The systemd watchdog beats from the consumer's loop: it stops when
     * events stop being handled. */
    if ((err = ws_bus_set_loop_hook(app->bus, ws_notify_loop_hook, NULL)) != WS_OK) {
        return err;
    }
    return ws_bus_start(app->bus);
}

/* The inventory client and the recovery loop that asks it. */
static ws_err order_app_open_recovery(order_app *app, const char **what)
{
    *what = "inventory";
    ws_rpc_client_opts io = {.urls = app->cfg.inventory_urls.items,
                             .n_urls = app->cfg.inventory_urls.n,
                             .max_msg = (size_t)app->cfg.svc.rpc_max_msg,
                             .resend_ms = (uint32_t)(app->cfg.inventory_deadline_ms / 2),
                             .metrics = app->metrics};
    ws_service_rpc_tls_client(&app->cfg.svc.rpc_tls, "inventory", &io);
    ws_err err = ws_rpc_client_open(&io, &app->inventory);
    if (err != WS_OK) {
        return err;
    }
    app->reservations.client = app->inventory;
    app->reservations.deadline_ms = (uint32_t)app->cfg.inventory_deadline_ms;
    *what = "recovery";
    order_recovery_opts rco = {.db = app->db,
                               .policy = app->policy,
                               .lookup = order_reservations_lookup,
                               .lookup_ctx = &app->reservations,
                               .queued = order_kick,
                               .queued_ctx = &app->kicker,
                               .tombstone_ttl_ms = app->cfg.tombstone_ttl_ms,
                               .metrics = app->metrics};
    if ((err = order_recovery_open(&rco, &app->recovery)) != WS_OK) {
        return err;
    }
    return order_recovery_start(app->recovery);
}

static ws_err order_app_open_rpc(order_app *app)
{
    const ws_service_cfg *svc = &app->cfg.svc;
    ws_rpc_server_opts so = {.url = svc->rpc_url,
                             .contexts = (int)svc->rpc_contexts,
                             .workers = (int)svc->rpc_workers,
                             .inline_handlers = svc->rpc_workers == 0,
                             .max_msg = (size_t)svc->rpc_max_msg,
                             .metrics = app->metrics,
                             .identities_only = svc->rpc_url == NULL};
    ws_err err = ws_rpc_server_open(&so, &app->server);
    if (err == WS_OK) {
        err = webshop_v1_orders_register(app->server, order_api_binding(app->api));
    }
    if (err == WS_OK) {
        err = ws_service_rpc_tls_listen(&svc->rpc_tls, app->server);
    }
    if (err == WS_OK) {
        err = ws_rpc_server_start(app->server);
    }
    if (err != WS_OK) {
        ws_service_rpc_start_failed(svc, err);
    }
    return err;
}

static ws_err order_app_open_http(order_app *app)
{
    ws_http_opts ho = {
        .host = app->cfg.svc.http_host, .port = app->cfg.svc.http_port, .threads = 4};
    ws_err err = ws_http_open(&ho, &app->http);
    if (err == WS_OK) {
        ws_service_route_basics(app->http, app->metrics, &app->ready);
        ws_http_serve(app->http);
    } else {
        ws_service_http_failed(app->cfg.svc.conf, app->cfg.svc.prog, ho.host, ho.port, err);
    }
    return err;
}

/* Open everything in order; on failure *what names the step (the caller
 * closes what was opened). */
static ws_err order_app_open(order_app *app, const char **what)
{
    app->policy = (orders_policy){.resend_after_ms = app->cfg.resend_after_ms,
                                  .backoff_cap_ms = app->cfg.resend_cap_ms,
                                  .max_attempts = (int)app->cfg.resend_attempts,
                                  .progress = &app->progress};
    app->metrics = ws_metrics_default();
    ws_err err;
    *what = "database";
    if ((err = order_app_open_db(app)) != WS_OK ||
        (err = order_app_open_bus(app, what)) != WS_OK ||
        (err = order_app_open_recovery(app, what)) != WS_OK) {
        return err;
    }
    *what = "rpc";
    if ((err = order_app_open_rpc(app)) != WS_OK) {
        return err;
    }
    *what = "http";
    return order_app_open_http(app);
}

/* ---- serving and stopping ------------------------------------------------- */

static void order_app_log_started(const order_app *app)
{
    const order_cfg *cfg = &app->cfg;
    char replica[16] = "-";
    if (cfg->svc.replica >= 0) {
        snprintf(replica, sizeof(replica), "%d", cfg->svc.replica);
    }
    ws_log_info(
        "started",
        "http=http://%s:%d rpc=%s broker=%s client_id=%s replica=%s bus_format=%s "
        "db=%s engine=%s inventory=%s resend_after_ms=%lld tombstone_ttl_ms=%lld",
        cfg->svc.http_host, ws_http_port(app->http), ws_rpc_server_url(app->server),
        cfg->svc.broker, cfg->svc.client_id, replica,
        ws_service_format_names[cfg->svc.bus_format], ws_db_url(app->db),
        ws_db_engine_name(ws_db_engine_of(app->db)), cfg->inventory_urls.text,
        (long long)cfg->resend_after_ms, (long long)cfg->tombstone_ttl_ms);
}

/* Stop taking work: RPC first (in-flight calls finish), then recovery; then
 * publish what is queued, within the shutdown bound. */
static void order_app_stop(order_app *app, int sig)
{
    ws_bus_hold hold = {0};
    ws_log_info("stopping", "signal=%s held_events=%zu", ws_service_signal_name(sig),
                ws_bus_holding(app->bus, &hold) ? hold.held : (size_t)0);
    ws_rpc_server_close(app->server);
    app->server = NULL;
    order_recovery_close(app->recovery);
    app->recovery = NULL;
    ws_err err =
        ws_outbox_relay_flush(app->relay, (uint32_t)app->cfg.svc.shutdown_timeout_ms);
    if (err != WS_OK) {
        ws_log_warn("outbox_flush_incomplete", "error=%s timeout_ms=%lld", ws_errname(err),
                    (long long)app->cfg.svc.shutdown_timeout_ms);
    }
}

/* Close everything opened, in reverse order. After a clean stop (every
 * writer closed, no connection held) the WAL is checkpointed and cut. */
static void order_app_close(order_app *app, bool clean)
{
    ws_http_close(app->http);
    ws_rpc_server_close(app->server);
    order_recovery_close(app->recovery);
    pthread_mutex_lock(&app->kicker.mu);
    app->kicker.relay = NULL;
    pthread_mutex_unlock(&app->kicker.mu);
    ws_outbox_relay_close(app->relay);
    ws_bus_close(app->bus);
    order_consumer_close(app->consumer);
    ws_rpc_client_close(app->inventory);
    order_api_close(app->api);
    if (clean && app->db != NULL) {
        (void)ws_db_checkpoint(app->db, true);
    }
    ws_db_close(app->db);
    ws_config_free(app->conf);
    ws_metrics_free(ws_metrics_default());
}

int main(int argc, char **argv)
{
    /* Before any thread exists, so every thread inherits the mask and main
     * alone takes the stop signals. */
    sigset_t stop;
    ws_service_block_signals(&stop);
    ws_service_limit_arenas();

    static order_app app = {.kicker = {.mu = PTHREAD_MUTEX_INITIALIZER}};
    int code = order_cfg_parse(&app, argc, argv);
    if (code >= 0) {
        ws_config_free(app.conf);
        return code;
    }
    size_t n_mig = 0;
    (void)order_schema_migrations(&n_mig);
    ws_err checked = ws_service_check_db(&app.cfg.svc, ORDER_PROG, (int)n_mig);
    if (checked != WS_OK) {
        int code = checked == WS_ECANCELED ? 0 : 1; /* SIGTERM while waiting */
        ws_log_info("stopped", "exit=%d", code);
        order_app_close(&app, false);
        return code;
    }
    const char *what = "database";
    ws_err err = order_app_open(&app, &what);
    if (err != WS_OK) {
        ws_log_error("start_failed", "what=%s error=%s", what, ws_errname(err));
        order_app_close(&app, false);
        ws_log_info("stopped", "exit=%d", 1);
        return 1;
    }
    order_app_log_started(&app);
    ws_notify_ready();
    int sig = ws_service_wait(&stop);
    ws_notify_stopping();
    order_app_stop(&app, sig);
    order_app_close(&app, true);
    ws_log_info("stopped", "exit=%d", 0);
    return 0;
}
