/*
 * webshop-inventory: flags and environment, wiring and signals around the
 * inventory's modules; no business rule lives here.
 *
 * Two bus connections: the consumer (fixed client id, persistent session) on
 * which OrderSent and OrderCanceled arrive, and the relay's publisher
 * (client id + "-outbox", clean session: the outbox table is what survives a
 * restart). Keeping them apart lets SIGTERM stop taking work (close the
 * consumer, which lets its in-flight handler finish) while the relay still
 * publishes what was committed, within --shutdown-timeout; rows it could not
 * publish stay in the table for the next start.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "catalog_seed.h"
#include "config.h"
#include "events.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "read_api.h"
#include "rpc_server.h"
#include "schema.h"
#include "service.h"
#include "stock.h"
#include "store.h"

#define INV_VERSION "0.1.0"

typedef struct inv_cfg {
    ws_service_cfg svc;  /* the settings every backend shares */
    const char *catalog; /* --catalog FILE, or NULL for the prototype's */
} inv_cfg;


/* Everything main starts, closed in reverse order. */
typedef struct inv_app {
    ws_store *store;
    ws_bus *pub;
    ws_bus *sub;
    ws_outbox_relay *relay;
    inv_events *events;
    inv_read_api *api;
    ws_rpc_server *rpc;
    ws_http *http;
} inv_app;

static ws_err main_app_start(inv_app *app, const inv_cfg *icfg)
{
    const ws_service_cfg *cfg = &icfg->svc;
    size_t n_mig;
    const ws_migration *mig = inv_schema_migrations(&n_mig);
    ws_store_opts so = {.path = cfg->db_path, .synchronous = ws_service_sync_names[cfg->db_sync]};

    ws_err err = ws_store_open(&so, mig, n_mig, &app->store);
    if (err != WS_OK) {
        return err;
    }
    size_t inserted = 0;
    err = icfg->catalog ? inv_catalog_seed_file(app->store, icfg->catalog, &inserted)
                       : inv_catalog_seed_default(app->store, &inserted);
    if (err != WS_OK) {
        ws_log_error("catalog_seed_failed", "file=%s error=%s",
                     icfg->catalog ? icfg->catalog : "(prototype)", ws_errname(err));
        return err;
    }
    ws_log_info("catalog_seeded", "file=%s inserted=%zu",
                icfg->catalog ? icfg->catalog : "(prototype)", inserted);

    char pub_id[256];
    snprintf(pub_id, sizeof(pub_id), "%s-outbox", cfg->client_id);
    ws_bus_opts bo = ws_service_bus_opts(cfg, pub_id, true);
    err = ws_bus_open(&bo, &app->pub);
    if (err != WS_OK) {
        return err;
    }
    ws_store *relay_store = NULL;
    err = ws_store_open(&so, mig, n_mig, &relay_store);
    if (err != WS_OK) {
        return err;
    }
    ws_outbox_relay_opts ro = {
        .store = relay_store,
        .bus = app->pub,
        .types = inv_outbox_types,
        .n_types = inv_outbox_n_types,
    };
    err = ws_outbox_relay_open(&ro, &app->relay);
    if (err != WS_OK) {
        ws_store_close(relay_store);
        return err;
    }

    inv_events_opts eo = {.store = app->store, .relay = app->relay};
    err = inv_events_open(&eo, &app->events);
    if (err != WS_OK) {
        return err;
    }
    app->store = NULL; /* the events module owns it now */
    bo = ws_service_bus_opts(cfg, cfg->client_id, false);
    err = ws_bus_open(&bo, &app->sub);
    if (err == WS_OK) {
        err = inv_events_subscribe(app->events, app->sub);
    }
    if (err != WS_OK) {
        return err;
    }

    /* One read connection per handler that can run at once; nng's task
     * threads (about two per core) run them without workers. */
    err = inv_read_api_open(&so, cfg->rpc_workers > 0 ? (int)cfg->rpc_workers
                                                      : (int)cfg->rpc_readers,
                            &app->api);
    if (err != WS_OK) {
        return err;
    }
    ws_rpc_server_opts rpo = {.url = cfg->rpc_url,
                              .contexts = (int)cfg->rpc_contexts,
                              .workers = (int)cfg->rpc_workers,
                              .inline_handlers = cfg->rpc_workers == 0,
                              .max_msg = (size_t)cfg->rpc_max_msg};
    err = ws_rpc_server_open(&rpo, &app->rpc);
    if (err == WS_OK) {
        err = inv_read_api_register(app->api, app->rpc);
    }
    if (err == WS_OK) {
        err = ws_rpc_server_start(app->rpc);
    }
    if (err != WS_OK) {
        ws_log_error("rpc_start_failed", "url=%s error=%s", cfg->rpc_url,
                     ws_errname(err));
        return err;
    }

    ws_http_opts ho = {.host = cfg->http_host, .port = cfg->http_port, .threads = 4};
    err = ws_http_open(&ho, &app->http);
    if (err != WS_OK) {
        ws_log_error("http_start_failed", "host=%s port=%d error=%s", cfg->http_host,
                     cfg->http_port, ws_errname(err));
        return err;
    }
    ws_http_route_basics(app->http, ws_metrics_default());
    ws_http_set_ready(app->http, ws_service_bus_ready, app->sub);

    /* Publisher and relay first, so the first outcome has a way out. */
    err = ws_bus_start(app->pub);
    if (err == WS_OK) {
        err = ws_outbox_relay_start(app->relay);
    }
    if (err == WS_OK) {
        err = ws_bus_start(app->sub);
    }
    return err;
}

/* Stop taking work, finish what is in flight, flush the outbox. */
static void main_app_stop(inv_app *app, const ws_service_cfg *cfg)
{
    /* First: its /readyz looks at the consumer bus closed below. */
    ws_http_close(app->http);
    app->http = NULL;
    ws_rpc_server_close(app->rpc);
    ws_log_debug("rpc_closed", NULL);
    ws_bus_close(app->sub); /* waits for a handler in progress */
    ws_log_debug("consumer_closed", NULL);
    if (app->relay != NULL && app->pub != NULL) {
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
    ws_http_close(app->http);
    ws_store_close(app->store);
}

int main(int argc, char **argv)
{
    /* Before any thread exists, so every thread inherits the mask and main
     * alone takes the stop signals. */
    sigset_t stop;
    ws_service_block_signals(&stop);

    inv_cfg cfg = {0};
    static const ws_service_defaults defaults = {
        .db_path = "inventory.db",
        .rpc_url = "tcp://127.0.0.1:7101",
        .rpc_help = "where the Inventory RPC service listens",
        .client_id = "webshop-inventory",
        .http_port = "7102",
    };
    ws_config_option opts[WS_SERVICE_N_OPTIONS + 1];
    size_t n = ws_service_options(&cfg.svc, &defaults, opts);
    opts[n++] = (ws_config_option){
        .name = "catalog",
        .type = WS_CONFIG_STRING,
        .def = NULL,
        .help = "JSON array of products to seed (default: the prototype's two)",
        .target.str = &cfg.catalog,
        .metavar = "FILE"};
    ws_config *c = ws_config_new("webshop-inventory", INV_VERSION,
                                 "The stock service: reserves stock for orders.", opts, n);
    if (c == NULL) {
        fprintf(stderr, "webshop-inventory: out of memory\n");
        return 1;
    }
    int exit_code =
        ws_service_parse(c, &cfg.svc, "webshop-inventory", "inventory", argc, argv);
    if (exit_code >= 0) {
        ws_config_free(c);
        return exit_code;
    }

    inv_app app = {0};
    int rc = 0;
    ws_err err = main_app_start(&app, &cfg);
    if (err != WS_OK) {
        ws_log_error("start_failed", "error=%s", ws_errname(err));
        rc = 1;
    } else {
        ws_log_info("started",
                    "db=%s rpc=%s broker=%s:%d client_id=%s format=%s http=%s:%d",
                    cfg.svc.db_path, cfg.svc.rpc_url, cfg.svc.broker_host,
                    cfg.svc.broker_port, cfg.svc.client_id,
                    ws_service_format_names[cfg.svc.bus_format], cfg.svc.http_host,
                    cfg.svc.http_port);
        int sig = ws_service_wait(&stop);
        ws_log_info("stopping", "signal=%d", sig);
    }
    main_app_stop(&app, &cfg.svc);
    ws_log_info("stopped", "rc=%d", rc);
    ws_config_free(c);
    ws_metrics_free(ws_metrics_default());
    return rc;
}
