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
#include "stock.h"
#include "store.h"

#define INV_VERSION "0.1.0"

typedef struct inv_cfg {
    const char *db_path;
    int db_sync;
    const char *rpc_url;
    int64_t rpc_workers;
    const char *broker;      /* host:port, checked by config */
    char broker_host[256];   /* split from broker */
    int broker_port;
    const char *client_id;
    int bus_format;
    const char *username;
    const char *password;
    const char *http_host;
    int http_port;
    const char *catalog;
    int log_level;
    int64_t shutdown_timeout_ms;
    int64_t rpc_max_msg;     /* request cap of the RPC server */
    int64_t bus_max_payload; /* incoming bus payload cap */
} inv_cfg;

static const char *const main_formats[] = {"protobuf", "json", NULL};
static const char *const main_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const main_syncs[] = {"NORMAL", "FULL", NULL};

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

static ws_err main_app_start(inv_app *app, const inv_cfg *cfg)
{
    size_t n_mig;
    const ws_migration *mig = inv_schema_migrations(&n_mig);
    ws_store_opts so = {.path = cfg->db_path, .synchronous = main_syncs[cfg->db_sync]};

    ws_err err = ws_store_open(&so, mig, n_mig, &app->store);
    if (err != WS_OK) {
        return err;
    }
    size_t inserted = 0;
    err = cfg->catalog ? inv_catalog_seed_file(app->store, cfg->catalog, &inserted)
                       : inv_catalog_seed_default(app->store, &inserted);
    if (err != WS_OK) {
        ws_log_error("catalog_seed_failed", "file=%s error=%s",
                     cfg->catalog ? cfg->catalog : "(prototype)", ws_errname(err));
        return err;
    }
    ws_log_info("catalog_seeded", "file=%s inserted=%zu",
                cfg->catalog ? cfg->catalog : "(prototype)", inserted);

    char pub_id[256];
    snprintf(pub_id, sizeof(pub_id), "%s-outbox", cfg->client_id);
    ws_bus_opts bo = {
        .host = cfg->broker_host,
        .port = cfg->broker_port,
        .client_id = pub_id,
        .clean_start = true,
        .username = cfg->username,
        .password = cfg->password,
        .format = cfg->bus_format == 1 ? WS_BUS_JSON : WS_BUS_PROTOBUF,
        .max_payload = (size_t)cfg->bus_max_payload,
    };
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
    bo.client_id = cfg->client_id;
    bo.clean_start = false;
    err = ws_bus_open(&bo, &app->sub);
    if (err == WS_OK) {
        err = inv_events_subscribe(app->events, app->sub);
    }
    if (err != WS_OK) {
        return err;
    }

    err = inv_read_api_open(&so, (int)cfg->rpc_workers, &app->api);
    if (err != WS_OK) {
        return err;
    }
    ws_rpc_server_opts rpo = {.url = cfg->rpc_url,
                              .workers = (int)cfg->rpc_workers,
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
static void main_app_stop(inv_app *app, const inv_cfg *cfg)
{
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
    /* Block the stop signals before any thread exists, so every thread
     * inherits the mask and main alone takes them with sigwait. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    inv_cfg cfg = {0};
    const ws_config_option opts[] = {
        {.name = "db-path",
         .type = WS_CONFIG_STRING,
         .def = "inventory.db",
         .help = "SQLite database file",
         .target.str = &cfg.db_path,
         .metavar = "PATH"},
        {.name = "db-synchronous",
         .type = WS_CONFIG_ENUM,
         .def = "NORMAL",
         .help = "SQLite synchronous (NORMAL survives a process crash)",
         .target.i = &cfg.db_sync,
         .choices = main_syncs},
        {.name = "rpc-url",
         .type = WS_CONFIG_URL,
         .def = "tcp://127.0.0.1:7101",
         .help = "where the Inventory RPC service listens",
         .target.str = &cfg.rpc_url},
        {.name = "rpc-workers",
         .type = WS_CONFIG_INT,
         .def = "4",
         .help = "RPC handler threads",
         .target.i64 = &cfg.rpc_workers,
         .min = 1,
         .max = 64},
        {.name = "broker",
         .type = WS_CONFIG_HOSTPORT,
         .def = "127.0.0.1:1883",
         .help = "MQTT broker",
         .target.str = &cfg.broker},
        {.name = "client-id",
         .type = WS_CONFIG_STRING,
         .def = "webshop-inventory",
         .help = "MQTT client id of the consumer (persistent session)",
         .target.str = &cfg.client_id},
        {.name = "bus-format",
         .type = WS_CONFIG_ENUM,
         .def = "protobuf",
         .help = "payload format of published events",
         .target.i = &cfg.bus_format,
         .choices = main_formats},
        {.name = "username",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "MQTT user name",
         .target.str = &cfg.username},
        {.name = "password",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "MQTT password",
         .target.str = &cfg.password,
         .flags = WS_CONFIG_FROM_FILE | WS_CONFIG_SECRET},
        {.name = "http-host",
         .type = WS_CONFIG_STRING,
         .def = "127.0.0.1",
         .help = "address of the /metrics and /healthz server",
         .target.str = &cfg.http_host},
        {.name = "http-port",
         .type = WS_CONFIG_PORT,
         .def = "7102",
         .help = "port of the /metrics and /healthz server",
         .target.i = &cfg.http_port},
        {.name = "catalog",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "JSON array of products to seed (default: the prototype's)",
         .target.str = &cfg.catalog,
         .metavar = "FILE"},
        {.name = "log-level",
         .type = WS_CONFIG_ENUM,
         .def = "info",
         .help = "lowest level logged",
         .target.i = &cfg.log_level,
         .choices = main_levels},
        {.name = "rpc-max-msg",
         .type = WS_CONFIG_SIZE,
         .def = "1MiB",
         .help = "largest RPC request accepted (larger ones close the connection)",
         .target.i64 = &cfg.rpc_max_msg,
         .min = 1024,
         .max = 64 << 20},
        {.name = "bus-max-payload",
         .type = WS_CONFIG_SIZE,
         .def = "256KiB",
         .help = "larger bus payloads are logged, counted and dropped",
         .target.i64 = &cfg.bus_max_payload,
         .min = 1024,
         .max = 64 << 20},
        {.name = "shutdown-timeout",
         .type = WS_CONFIG_DURATION,
         .def = "5s",
         .help = "bound on flushing the outbox at SIGTERM",
         .target.i64 = &cfg.shutdown_timeout_ms,
         .min = 0,
         .max = 600000},
    };
    ws_config *c = ws_config_new("webshop-inventory", INV_VERSION,
                                 "The stock service: reserves stock for orders.", opts,
                                 sizeof(opts) / sizeof(opts[0]));
    if (c == NULL) {
        fprintf(stderr, "webshop-inventory: out of memory\n");
        return 1;
    }
    switch (ws_config_parse(c, argc, argv, NULL)) {
    case WS_CONFIG_OK:
        break;
    case WS_CONFIG_EXIT:
        ws_config_free(c);
        return 0;
    default:
        fprintf(stderr, "webshop-inventory: %s\n", ws_config_error(c));
        ws_config_free(c);
        return 2;
    }
    if (ws_config_hostport_split(cfg.broker, cfg.broker_host, sizeof(cfg.broker_host),
                                 &cfg.broker_port) != 0) {
        fprintf(stderr, "webshop-inventory: --broker: expected HOST:PORT, got \"%s\"\n",
                cfg.broker);
        ws_config_free(c);
        return 2;
    }
    ws_log_set_service("inventory");
    ws_log_set_level((ws_log_level)cfg.log_level);

    inv_app app = {0};
    int rc = 0;
    ws_err err = main_app_start(&app, &cfg);
    if (err != WS_OK) {
        ws_log_error("start_failed", "error=%s", ws_errname(err));
        rc = 1;
    } else {
        ws_log_info(
            "started", "db=%s rpc=%s broker=%s:%d client_id=%s format=%s http=%s:%d",
            cfg.db_path, cfg.rpc_url, cfg.broker_host, cfg.broker_port, cfg.client_id,
            main_formats[cfg.bus_format], cfg.http_host, cfg.http_port);
        int sig = 0;
        sigwait(&stop, &sig);
        ws_log_info("stopping", "signal=%d", sig);
    }
    main_app_stop(&app, &cfg);
    ws_log_info("stopped", "rc=%d", rc);
    ws_config_free(c);
    ws_metrics_free(ws_metrics_default());
    return rc;
}
