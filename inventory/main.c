/*
 * webshop-inventory: flags and environment, wiring and signals around the
 * inventory's modules; no business rule lives here.
 *
 * One database pool for the whole service (--db-url, or --db-path as the
 * SQLite shorthand; env WEBSHOP_INVENTORY_DB_URL): the RPC handlers read on
 * it in read-only transactions, the consumer applies each group of events
 * on one connection of it, the outbox relay and the sweeper take one per
 * transaction. Its size is what can run at once: the RPC handlers, plus
 * one each for the consumer, the relay and the sweeper.
 *
 * Two bus connections: the consumer (fixed client id, persistent session) on
 * which OrderSent and OrderCanceled arrive, and the relay's publisher
 * (client id + "-outbox", clean session: the outbox table is what survives a
 * restart). Keeping them apart lets SIGTERM stop taking work (close the
 * consumer, which lets its in-flight handler finish) while the relay still
 * publishes what was committed, within --shutdown-timeout; rows it could not
 * publish stay in the table for the next start.
 *
 * The sweeper (sweeper.h) runs the periodic work on its own thread:
 * tombstone expiry (--tombstone-ttl) always, and orphan release
 * (--orphan-after-ms) when --orders-url gives it the order service's RPC
 * address to ask Orders.GetOrder.
 *
 * Faults: the database is checked before anything opens it (schema version,
 * and on SQLite PRAGMA quick_check within --db-check-timeout; a damaged one
 * exits 1). A handler that cannot commit keeps its event and the consumer
 * stops reading until a retry commits (ws_bus_set_retry); /readyz says why
 * meanwhile (ws_service_route_basics). A clean stop checkpoints the SQLite
 * WAL and truncates it.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "catalog_seed.h"
#include "config.h"
#include "db.h"
#include "events.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "outbox.h"
#include "read_api.h"
#include "rpc_client.h"
#include "rpc_server.h"
#include "schema.h"
#include "service.h"
#include "stock.h"
#include "sweeper.h"

#define INV_VERSION "0.1.0"

/* Connections besides the RPC handlers': the consumer, the relay, the
 * sweeper. */
#define INV_POOL_EXTRA 3

typedef struct inv_cfg {
    ws_service_cfg svc;         /* the settings every backend shares */
    const char *catalog;        /* --catalog FILE, or NULL for the prototype's */
    ws_config_list orders_urls; /* --orders-url (every replica), or none: no
                                   orphan release */
    int64_t orders_deadline_ms; /* --orders-deadline */
    int64_t orphan_after_ms;    /* --orphan-after-ms */
    int64_t tombstone_ttl_ms;   /* --tombstone-ttl */
} inv_cfg;

/* The inventory's own options (after the common ones). */
#define INV_N_OWN_OPTIONS 5

/* Everything main starts, closed in reverse order. */
typedef struct inv_app {
    ws_db *db; /* the one pool; closed last */
    ws_bus *pub;
    ws_bus *sub;
    ws_outbox_relay *relay;
    inv_events *events;
    inv_read_api *api;
    ws_rpc_server *rpc;
    ws_http *http;
    ws_rpc_client *orders; /* NULL without --orders-url */
    inv_sweeper *sweeper;
    ws_service_ready ready; /* what /readyz looks at */
} inv_app;

/* Open the pool (migrating the schema) and seed the catalog. */
static ws_err main_db_open(inv_app *app, const inv_cfg *icfg)
{
    const ws_service_cfg *cfg = &icfg->svc;
    size_t n_mig;
    const ws_db_migration *mig = inv_schema_migrations(&n_mig);
    int readers = cfg->rpc_workers > 0 ? (int)cfg->rpc_workers : (int)cfg->rpc_readers;
    ws_db_opts o = ws_service_db_opts(cfg, readers + INV_POOL_EXTRA, mig, n_mig);
    ws_err err = ws_service_db_open(cfg, &o, &app->db);
    if (err != WS_OK) {
        char url[512];
        ws_log_error("db_open_failed", "url=%s error=%s",
                     ws_db_url_redact(ws_service_db_url(cfg), url, sizeof(url)),
                     ws_errname(err));
        return err;
    }
    size_t inserted = 0;
    const char *file = icfg->catalog ? icfg->catalog : "(prototype)";
    err = icfg->catalog ? inv_catalog_seed_file(app->db, icfg->catalog, &inserted)
                        : inv_catalog_seed_default(app->db, &inserted);
    if (err != WS_OK) {
        ws_log_error("catalog_seed_failed", "file=%s error=%s", file, ws_errname(err));
        return err;
    }
    ws_log_info("catalog_seeded", "file=%s inserted=%zu", file, inserted);
    return WS_OK;
}

/* The publisher bus and the outbox relay on it (neither started). */
static ws_err main_relay_open(inv_app *app, const ws_service_cfg *cfg)
{
    char pub_id[256];
    snprintf(pub_id, sizeof(pub_id), "%s-outbox", cfg->client_id);
    ws_bus_opts bo = ws_service_bus_opts(cfg, pub_id, true);
    ws_err err = ws_bus_open(&bo, &app->pub);
    if (err != WS_OK) {
        return err;
    }
    ws_outbox_relay_opts ro = {
        .db = app->db,
        .bus = app->pub,
        .types = inv_outbox_types,
        .n_types = inv_outbox_n_types,
    };
    return ws_outbox_relay_open(&ro, &app->relay);
}

/* The consumers and their bus (not started). */
static ws_err main_consumer_open(inv_app *app, const ws_service_cfg *cfg)
{
    inv_events_opts eo = {.db = app->db, .relay = app->relay};
    ws_err err = inv_events_open(&eo, &app->events);
    if (err != WS_OK) {
        return err;
    }
    ws_bus_opts bo = ws_service_consumer_bus_opts(cfg);
    err = ws_bus_open(&bo, &app->sub);
    if (err == WS_OK) {
        /* The systemd watchdog beats from the consumer's loop. */
        err = ws_bus_set_loop_hook(app->sub, ws_notify_loop_hook, NULL);
    }
    return err == WS_OK ? inv_events_subscribe(app->events, app->sub, cfg->share_group)
                        : err;
}

/* The Inventory RPC server, started. nng's task threads (about two per
 * core) run the handlers when there are no workers. */
static ws_err main_rpc_start(inv_app *app, const ws_service_cfg *cfg)
{
    ws_err err = inv_read_api_open(app->db, &app->api);
    if (err != WS_OK) {
        return err;
    }
    ws_rpc_server_opts rpo = {.url = cfg->rpc_url,
                              .contexts = (int)cfg->rpc_contexts,
                              .workers = (int)cfg->rpc_workers,
                              .inline_handlers = cfg->rpc_workers == 0,
                              .max_msg = (size_t)cfg->rpc_max_msg,
                              .identities_only = cfg->rpc_url == NULL};
    err = ws_rpc_server_open(&rpo, &app->rpc);
    if (err == WS_OK) {
        err = inv_read_api_register(app->api, app->rpc);
    }
    if (err == WS_OK) {
        err = ws_service_rpc_tls_listen(&cfg->rpc_tls, app->rpc);
    }
    if (err == WS_OK) {
        err = ws_rpc_server_start(app->rpc);
    }
    if (err != WS_OK) {
        ws_service_rpc_start_failed(cfg, err);
    }
    return err;
}

/* /metrics, /healthz and /readyz, serving. */
static ws_err main_http_start(inv_app *app, const ws_service_cfg *cfg)
{
    ws_http_opts ho = {.host = cfg->http_host, .port = cfg->http_port, .threads = 4};
    ws_err err = ws_http_open(&ho, &app->http);
    if (err != WS_OK) {
        ws_service_http_failed(cfg->conf, cfg->prog, cfg->http_host, cfg->http_port, err);
        return err;
    }
    app->ready.bus = app->sub;
    app->ready.db = app->db;
    ws_service_route_basics(app->http, ws_metrics_default(), &app->ready);
    ws_http_serve(app->http);
    return WS_OK;
}

/* The Orders RPC client (with --orders-url) and the sweeper, started. */
static ws_err main_sweeper_start(inv_app *app, const inv_cfg *icfg)
{
    if (icfg->orders_urls.n > 0) {
        ws_rpc_client_opts co = {.urls = icfg->orders_urls.items,
                                 .n_urls = icfg->orders_urls.n,
                                 .max_msg = (size_t)icfg->svc.rpc_max_msg,
                                 .resend_ms = (uint32_t)(icfg->orders_deadline_ms / 2)};
        ws_service_rpc_tls_client(&icfg->svc.rpc_tls, "order", &co);
        ws_err err = ws_rpc_client_open(&co, &app->orders);
        if (err != WS_OK) {
            ws_log_error("orders_client_failed", "url=%s error=%s",
                         icfg->orders_urls.text, ws_errname(err));
            return err;
        }
    }
    inv_sweeper_opts wo = {.db = app->db,
                           .relay = app->relay,
                           .orders = app->orders,
                           .orders_deadline_ms = (uint32_t)icfg->orders_deadline_ms,
                           .orphan_after_ms = icfg->orphan_after_ms,
                           .tombstone_ttl_ms = icfg->tombstone_ttl_ms};
    ws_err err = inv_sweeper_open(&wo, &app->sweeper);
    return err == WS_OK ? inv_sweeper_start(app->sweeper) : err;
}

/* Start everything in order; on failure *what names the step (logged as
 * start_failed what=...; the caller closes what was opened). */
static ws_err main_app_start(inv_app *app, const inv_cfg *icfg, const char **what)
{
    const ws_service_cfg *cfg = &icfg->svc;
    ws_err err;
    if ((*what = "database", err = main_db_open(app, icfg)) != WS_OK ||
        (*what = "outbox", err = main_relay_open(app, cfg)) != WS_OK ||
        (*what = "bus", err = main_consumer_open(app, cfg)) != WS_OK ||
        (*what = "rpc", err = main_rpc_start(app, cfg)) != WS_OK ||
        (*what = "http", err = main_http_start(app, cfg)) != WS_OK) {
        return err;
    }
    /* Publisher and relay first, so the first outcome has a way out. */
    if ((*what = "bus", err = ws_bus_start(app->pub)) != WS_OK ||
        (*what = "outbox", err = ws_outbox_relay_start(app->relay)) != WS_OK ||
        (*what = "bus", err = ws_bus_start(app->sub)) != WS_OK ||
        (*what = "sweeper", err = main_sweeper_start(app, icfg)) != WS_OK) {
        return err;
    }
    return WS_OK;
}

/* Stop taking work, finish what is in flight, flush the outbox; after a
 * clean run (clean), checkpoint and truncate the WAL once nothing else
 * writes, then close the pool. */
static void main_app_stop(inv_app *app, const ws_service_cfg *cfg, bool clean)
{
    /* First: its /readyz looks at the consumer bus closed below. */
    ws_http_close(app->http);
    app->http = NULL;
    ws_rpc_server_close(app->rpc);
    ws_log_debug("rpc_closed", NULL);
    inv_sweeper_close(app->sweeper); /* it kicks the relay: before it goes */
    app->sweeper = NULL;
    ws_log_debug("sweeper_closed", NULL);
    ws_bus_close(app->sub); /* waits for a handler in progress */
    ws_log_debug("consumer_closed", NULL);
    /* After a failed start nothing was served: no flush, whose timeout
     * would only add a warning to the start failure. */
    if (clean && app->relay != NULL && app->pub != NULL) {
        ws_err err =
            ws_outbox_relay_flush(app->relay, (uint32_t)cfg->shutdown_timeout_ms);
        if (err != WS_OK) {
            ws_log_warn("outbox_flush_incomplete", "error=%s timeout_ms=%lld",
                        ws_errname(err), (long long)cfg->shutdown_timeout_ms);
        }
    }
    ws_outbox_relay_close(app->relay);
    ws_log_debug("outbox_closed", NULL);
    ws_bus_close(app->pub);
    ws_log_debug("publisher_closed", NULL);
    inv_events_close(app->events);
    inv_read_api_close(app->api);
    ws_rpc_client_close(app->orders);
    if (clean && app->db != NULL) {
        (void)ws_db_checkpoint(app->db, true);
    }
    ws_db_close(app->db);
}

/* Write the common options and the inventory's own, targeting cfg, into
 * opts (room for WS_SERVICE_N_OPTIONS + INV_N_OWN_OPTIONS); returns how many. */
static size_t main_options(inv_cfg *cfg, ws_config_option *opts)
{
    static const ws_service_defaults defaults = {
        .db_path = "inventory.db",
        .db_url_env = "WEBSHOP_INVENTORY_DB_URL",
        .rpc_socket = "inventory.rpc",
        .rpc_help = "where the Inventory RPC service listens (default: inventory.rpc in "
                    "the runtime directory: $WEBSHOP_RUNTIME_DIR, else "
                    "$XDG_RUNTIME_DIR/webshop, else /tmp/webshop-UID, made 0700; the "
                    "socket 0600); tcp:// needs --rpc-plaintext",
        .client_id = "webshop-inventory",
        .http_port = "7102",
    };
    const ws_config_option own[INV_N_OWN_OPTIONS] = {
        {.name = "catalog",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "JSON array of products to seed (default: the prototype's two)",
         .target.str = &cfg->catalog,
         .metavar = "FILE"},
        {.name = "orders-url",
         .type = WS_CONFIG_URL,
         .def = NULL,
         .help = "RPC address of the order service (Orders.GetOrder), a comma list "
                 "for its replicas; without it orphan reservations are never released",
         .target.list = &cfg->orders_urls,
         .choices = ws_service_rpc_schemes,
         .flags = WS_CONFIG_LIST},
        {.name = "orders-deadline",
         .type = WS_CONFIG_DURATION,
         .def = "2s",
         .help = "deadline of one Orders.GetOrder call of the orphan sweep",
         .target.i64 = &cfg->orders_deadline_ms,
         .min = 1,
         .max = 60000},
        {.name = "orphan-after-ms",
         .type = WS_CONFIG_INT,
         .def = "120000",
         .help = "release a reservation the order service does not know once it is"
                 " this old (ms; keep it far above the front's commit wait)",
         .target.i64 = &cfg->orphan_after_ms,
         .min = 100,
         .max = 86400000},
        {.name = "tombstone-ttl",
         .type = WS_CONFIG_DURATION,
         .def = "24h",
         .help = "forget a cancel whose order never came after this long",
         .target.i64 = &cfg->tombstone_ttl_ms,
         .min = 1000,
         .max = 2592000000LL},
    };
    size_t n = ws_service_options(&cfg->svc, &defaults, opts);
    memcpy(opts + n, own, sizeof own);
    return n + INV_N_OWN_OPTIONS;
}

int main(int argc, char **argv)
{
    /* Before any thread exists, so every thread inherits the mask and main
     * alone takes the stop signals. */
    sigset_t stop;
    ws_service_block_signals(&stop);
    ws_service_limit_arenas();

    inv_cfg cfg = {0};
    ws_config_option opts[WS_SERVICE_N_OPTIONS + INV_N_OWN_OPTIONS];
    size_t n = main_options(&cfg, opts);
    ws_config *c =
        ws_config_new("webshop-inventory", INV_VERSION,
                      "The stock service: reserves stock for orders.", opts, n);
    if (c == NULL) {
        fprintf(stderr, "webshop-inventory: out of memory\n");
        return 1;
    }
    int exit_code =
        ws_service_parse(c, &cfg.svc, "webshop-inventory", "inventory", argc, argv);
    if (exit_code < 0 &&
        ws_service_rpc_tls_check_dial(&cfg.svc.rpc_tls, "webshop-inventory", "orders-url",
                                      &cfg.orders_urls) != WS_OK) {
        exit_code = 2;
    }
    if (exit_code >= 0) {
        ws_config_free(c);
        return exit_code;
    }

    size_t n_mig = 0;
    (void)inv_schema_migrations(&n_mig);
    ws_err checked = ws_service_check_db(&cfg.svc, "webshop-inventory", (int)n_mig);
    if (checked != WS_OK) {
        int code = checked == WS_ECANCELED ? 0 : 1; /* SIGTERM while waiting */
        ws_log_info("stopped", "exit=%d", code);
        ws_config_free(c);
        ws_metrics_free(ws_metrics_default());
        return code;
    }

    inv_app app = {0};
    int rc = 0;
    const char *what = "database";
    ws_err err = main_app_start(&app, &cfg, &what);
    if (err != WS_OK) {
        ws_log_error("start_failed", "what=%s error=%s", what, ws_errname(err));
        rc = 1;
    } else {
        char replica[16] = "-";
        if (cfg.svc.replica >= 0) {
            snprintf(replica, sizeof(replica), "%d", cfg.svc.replica);
        }
        ws_log_info("started",
                    "http=http://%s:%d rpc=%s broker=%s client_id=%s replica=%s "
                    "bus_format=%s db=%s engine=%s orders=%s orphan_after_ms=%lld "
                    "tombstone_ttl_ms=%lld",
                    cfg.svc.http_host, ws_http_port(app.http), ws_rpc_server_url(app.rpc),
                    cfg.svc.broker, cfg.svc.client_id, replica,
                    ws_service_format_names[cfg.svc.bus_format], ws_db_url(app.db),
                    ws_db_engine_name(ws_db_engine_of(app.db)),
                    cfg.orders_urls.n > 0 ? cfg.orders_urls.text : "(off)",
                    (long long)cfg.orphan_after_ms, (long long)cfg.tombstone_ttl_ms);
        ws_notify_ready();
        int sig = ws_service_wait(&stop);
        ws_notify_stopping();
        ws_bus_hold hold = {0};
        ws_log_info("stopping", "signal=%s held_events=%zu", ws_service_signal_name(sig),
                    ws_bus_holding(app.sub, &hold) ? hold.held : (size_t)0);
    }
    main_app_stop(&app, &cfg.svc, rc == 0);
    ws_log_info("stopped", "exit=%d", rc);
    ws_config_free(c);
    ws_metrics_free(ws_metrics_default());
    return rc;
}
