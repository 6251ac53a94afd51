/*
 * webshop-front: the JSON/HTTP gateway. Wires flags, the RPC clients of
 * inventory and orders, the bus, the catalog cache and the HTTP server, then
 * waits for SIGTERM or SIGINT. No business logic here: see routes.c.
 *
 * Supervision (lib/notify): READY=1 once the HTTP server serves,
 * STOPPING=1 at the stop signal, and WATCHDOG=1 from the bus network
 * thread's loop (ws_bus_set_loop_hook). That loop is the front's consumer:
 * it invalidates the catalog cache and confirms every POST and DELETE
 * /order to its waiting request; stuck, the front serves a stale catalog
 * and answers every write 202 after --accept-wait, and only a restart
 * helps. It turns at least every 100 ms while connected and at every
 * reconnect attempt when not (so a broker outage, which a restart would
 * not cure, does not stop the beat). The HTTP side is watched from
 * outside: HAProxy's health check on /readyz takes a front that does not
 * answer out of rotation.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "service.h"
#include "http.h"
#include "log.h"
#include "metrics_process.h"
#include "notify.h"
#include "openapi_doc.h"
#include "routes.h"
#include "webshop/v1/events.facts.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/order.facts.h"

/* A number macro as flag default text. */
#define FRONT_STR_(x) #x
#define FRONT_STR(x) FRONT_STR_(x)

/* Strict-Transport-Security max-age with --hsts: one year. */
#define FRONT_HSTS_MAX_AGE_S 31536000L

#ifndef WEBSHOP_VERSION
#define WEBSHOP_VERSION "0.1.0"
#endif

static const char *const front_formats[] = {"protobuf", "json", NULL};
static const char *const front_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const front_schemes[] = {"tcp", "tcp4", "tcp6", "ipc", "tls+tcp", NULL};

typedef struct front_cfg {
    const char *http_host;
    int http_port;
    int64_t http_threads;
    int64_t request_timeout_ms;
    int64_t keep_alive_ms;
    int64_t body_timeout_ms;
    int64_t http_reserve;
    int64_t busy_grace_ms;
    int64_t max_headers;
    int64_t max_conns_per_addr;
    bool hsts;
    ws_config_list inventory_urls; /* every inventory replica */
    ws_config_list orders_urls;    /* every order replica */
    char inventory_def[WS_SERVICE_URL_CAP]; /* the defaults of --inventory-url and */
    char orders_def[WS_SERVICE_URL_CAP];    /* --orders-url: the backends' sockets */
    int64_t replica_arg;           /* --replica as parsed */
    const char *broker;
    const char *client_id;
    int bus_format;
    const char *username;
    const char *password;
    const char *broker_tls_ca; /* bus over TLS (ws_bus_opts.tls_*) */
    const char *broker_tls_cert;
    const char *broker_tls_key;
    int64_t rpc_deadline_ms;
    int64_t publish_deadline_ms;
    int64_t accept_wait_ms;
    int64_t max_body;
    int64_t max_items;
    int64_t max_count;
    const char *tls_cert;
    const char *tls_key;
    int64_t rpc_max_msg;
    int64_t bus_max_payload;
    bool access_log;
    int log_level;
    int64_t sse_max_streams;
    int64_t sse_heartbeat_ms;
    int64_t sse_max_ms;
    ws_service_rpc_tls rpc_tls; /* --rpc-tls-cert/key/ca, --rpc-plaintext */
} front_cfg;

/* What the bus handlers feed: the catalog cache and the live streams. */
typedef struct front_live {
    catalog_cache *catalog;
    status_stream *statuses;
} front_live;

/* Invalidate the catalog cache on every stock change; push it to streams. */
static ws_err front_on_stock_changed(void *ctx, const ProtobufCMessage *msg,
                                     const ws_bus_msg_info *info)
{
    front_live *live = ctx;
    const Webshop__V1__StockChanged *m = (const Webshop__V1__StockChanged *)msg;
    (void)info;
    catalog_cache_invalidate(live->catalog);
    status_stream_publish_stock(live->statuses, m->product_id, m->balance);
    return WS_OK;
}

/* Push every order status change to the streams that follow the order and
 * to the POST/DELETE /order requests waiting for its commit. */
static ws_err front_on_order_status(void *ctx, const ProtobufCMessage *msg,
                                    const ws_bus_msg_info *info)
{
    front_live *live = ctx;
    const Webshop__V1__OrderStatusChanged *m = (const Webshop__V1__OrderStatusChanged *)msg;
    (void)info;
    status_stream_publish_order(live->statuses, m->order_id, (int)m->status, m->reason);
    return WS_OK;
}

/* The RPC client of one backend (every replica in urls; TLS as configured,
 * verifying server_name); start_failed what=WHAT when it cannot open. */
static ws_err front_rpc_open(const front_cfg *cfg, const ws_config_list *urls,
                             const char *server_name, const char *what, ws_metrics *metrics,
                             ws_rpc_client **out)
{
    ws_rpc_client_opts co = {.urls = urls->items,
                             .n_urls = urls->n,
                             .max_msg = (size_t)cfg->rpc_max_msg,
                             .resend_ms = (uint32_t)(cfg->rpc_deadline_ms / 2),
                             .metrics = metrics};
    ws_service_rpc_tls_client(&cfg->rpc_tls, server_name, &co);
    ws_err err = ws_rpc_client_open(&co, out);
    if (err != WS_OK) {
        ws_log_error("start_failed", "what=%s error=%s", what, ws_errname(err));
    }
    return err;
}

/* --replica as the backends have it, with the front's meaning: the front
 * never shares a subscription (every front must see every event for its
 * streams and its waiting writes), so K only names its client id. */
static ws_config_option front_replica_option(int64_t *target)
{
    ws_config_option o = ws_service_replica_option(target);
    o.help = "run as front K (0..63) of several behind a load balancer: the bus "
             "client id becomes CLIENT_ID-K (webshop-front-K); every front subscribes "
             "unshared, so each sees every event";
    return o;
}

int main(int argc, char **argv)
{
    front_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    (void)ws_service_rpc_default_url("inventory.rpc", cfg.inventory_def,
                                     sizeof(cfg.inventory_def));
    (void)ws_service_rpc_default_url("order.rpc", cfg.orders_def, sizeof(cfg.orders_def));
    const ws_config_option opts[] = {
        {.name = "http-host", .type = WS_CONFIG_STRING, .def = "127.0.0.1",
         .help = "HTTP listen address", .target.str = &cfg.http_host},
        {.name = "http-port", .type = WS_CONFIG_PORT, .def = "8080",
         .help = "HTTP listen port (0: any free port, logged as http_listening)",
         .target.i = &cfg.http_port, .flags = WS_CONFIG_LISTEN},
        {.name = "http-threads", .type = WS_CONFIG_INT, .def = "64", .min = 1, .max = 1024,
         .help = "HTTP worker threads = concurrent connections served",
         .target.i64 = &cfg.http_threads},
        {.name = "request-timeout", .type = WS_CONFIG_DURATION, .def = "5s", .min = 100,
         .max = 600000,
         .help = "time a new connection has to send its request line and headers "
                 "(then 408, or a close if nothing came)",
         .target.i64 = &cfg.request_timeout_ms},
        {.name = "body-timeout", .type = WS_CONFIG_DURATION, .def = "5s", .min = 100,
         .max = 600000,
         .help = "time a request's body has to arrive, from the end of its headers "
                 "(then 408 and the connection is closed)",
         .target.i64 = &cfg.body_timeout_ms},
        {.name = "keep-alive", .type = WS_CONFIG_DURATION, .def = "2s", .min = 100,
         .max = 600000,
         .help = "how long an idle connection is kept for its next request (its headers "
                 "included)",
         .target.i64 = &cfg.keep_alive_ms},
        {.name = "http-reserve", .type = WS_CONFIG_INT, .def = "0", .min = 0, .max = 1024,
         .help = "HTTP workers kept free: with fewer free, idle and slow connections are "
                 "cut after --busy-grace (0: --http-threads / 8, at least 1)",
         .target.i64 = &cfg.http_reserve},
        {.name = "busy-grace", .type = WS_CONFIG_DURATION, .def = "100ms", .min = 10,
         .max = 600000,
         .help = "under load (fewer than --http-reserve workers free), how long a "
                 "connection may stay idle or send its request slowly",
         .target.i64 = &cfg.busy_grace_ms},
        {.name = "max-headers", .type = WS_CONFIG_INT, .def = FRONT_STR(WS_HTTP_MAX_HEADERS),
         .min = 8, .max = WS_HTTP_MAX_HEADERS,
         .help = "most header fields in a request (more: 431)",
         .target.i64 = &cfg.max_headers},
        {.name = "max-conns-per-addr", .type = WS_CONFIG_INT,
         .def = FRONT_STR(WS_HTTP_MAX_CONNS_PER_ADDR), .min = 0, .max = 1024,
         .help = "HTTP workers one client address may hold at once; over it: 503 "
                 "TOO_MANY_CONNECTIONS, or closed if idle (0: no cap; 127.0.0.1 and ::1 "
                 "are never counted)",
         .target.i64 = &cfg.max_conns_per_addr},
        {.name = "hsts", .type = WS_CONFIG_BOOL, .def = "true",
         .help = "with --tls-cert, send Strict-Transport-Security: max-age=31536000",
         .target.b = &cfg.hsts},
        {.name = "inventory-url", .type = WS_CONFIG_URL, .def = cfg.inventory_def,
         .help = "RPC address of the inventory service (default: its default --rpc-url, "
                 "inventory.rpc in the runtime directory: $WEBSHOP_RUNTIME_DIR, else "
                 "$XDG_RUNTIME_DIR/webshop, else /tmp/webshop-UID); a comma list names "
                 "every replica, all dialed on one socket (a call whose replica dies is "
                 "resent to another); tcp:// needs --rpc-plaintext",
         .target.list = &cfg.inventory_urls, .choices = front_schemes,
         .flags = WS_CONFIG_LIST},
        {.name = "orders-url", .type = WS_CONFIG_URL, .def = cfg.orders_def,
         .help = "RPC address of the order service (default: order.rpc in the runtime "
                 "directory); a comma list names every replica",
         .target.list = &cfg.orders_urls, .choices = front_schemes,
         .flags = WS_CONFIG_LIST},
        {.name = "broker", .type = WS_CONFIG_HOSTPORT, .def = "127.0.0.1:1883",
         .env = "WEBSHOP_BROKER", /* one broker for every process of the shop */
         .help = "MQTT broker", .target.str = &cfg.broker},
        {.name = "client-id", .type = WS_CONFIG_STRING, .def = NULL,
         .help = "MQTT client id (default: webshop-front-<pid>; with --replica K, "
                 "CLIENT_ID-K, webshop-front-K by default)",
         .target.str = &cfg.client_id},
        front_replica_option(&cfg.replica_arg),
        {.name = "bus-format", .type = WS_CONFIG_ENUM, .def = "protobuf",
         .help = "payload format of published events", .target.i = &cfg.bus_format,
         .choices = front_formats},
        {.name = "username", .type = WS_CONFIG_STRING, .def = NULL,
         .help = "MQTT username", .target.str = &cfg.username},
        {.name = "password", .type = WS_CONFIG_STRING, .def = NULL, .help = "MQTT password",
         .target.str = &cfg.password, .flags = WS_CONFIG_FROM_FILE | WS_CONFIG_SECRET},
        /* Bus over TLS: the broker's user is the certificate's identity. */
        {.name = "broker-tls-ca", .type = WS_CONFIG_STRING, .def = NULL,
         .help = "CA file: connect to the broker over TLS 1.2+, verifying its certificate "
                 "and name (none: plain TCP)",
         .target.str = &cfg.broker_tls_ca},
        {.name = "broker-tls-cert", .type = WS_CONFIG_STRING, .def = NULL,
         .help = "client certificate for the broker (PEM, leaf then chain)",
         .target.str = &cfg.broker_tls_cert},
        {.name = "broker-tls-key", .type = WS_CONFIG_STRING, .def = NULL,
         .help = "key of --broker-tls-cert", .target.str = &cfg.broker_tls_key},
        {.name = "rpc-deadline", .type = WS_CONFIG_DURATION, .def = "2s", .min = 1,
         .max = 60000, .help = "deadline of a read RPC", .target.i64 = &cfg.rpc_deadline_ms},
        {.name = "publish-deadline", .type = WS_CONFIG_DURATION, .def = "2s", .min = 1,
         .max = 60000, .help = "how long a write waits for the broker's PUBACK",
         .target.i64 = &cfg.publish_deadline_ms},
        {.name = "accept-wait", .type = WS_CONFIG_DURATION, .def = "2s", .min = 1,
         .max = 60000,
         .help = "after the broker's PUBACK, how long POST and DELETE /order wait for the "
                 "order service's commit before answering 202 (queued); a write answers "
                 "within publish-deadline + accept-wait + 1s",
         .target.i64 = &cfg.accept_wait_ms},
        {.name = "max-body", .type = WS_CONFIG_SIZE, .def = "64KiB", .min = 64,
         .max = 16 << 20, .help = "largest request body", .target.i64 = &cfg.max_body},
        /* The contract's limits are the defaults and the most allowed: a
         * front may be stricter than the backends, never laxer. */
        {.name = "max-items", .type = WS_CONFIG_INT,
         .def = FRONT_STR(WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS), .min = WEBSHOP_V1_ORDER_ITEM_MIN_ITEMS,
         .max = WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS,
         .help = "most items in one order (at most the contract's)", .target.i64 = &cfg.max_items},
        {.name = "max-count", .type = WS_CONFIG_INT,
         .def = FRONT_STR(WEBSHOP_V1_ORDER_ITEM_COUNT_MAX), .min = WEBSHOP_V1_ORDER_ITEM_COUNT_MIN,
         .max = WEBSHOP_V1_ORDER_ITEM_COUNT_MAX,
         .help = "most units of one item (at most the contract's)", .target.i64 = &cfg.max_count},
        {.name = "tls-cert", .type = WS_CONFIG_STRING, .def = NULL,
         .help = "PEM certificate (chain) file: serve HTTPS; may hold the key too",
         .target.str = &cfg.tls_cert},
        {.name = "tls-key", .type = WS_CONFIG_STRING, .def = NULL,
         .help = "PEM private key file (default: the key is in --tls-cert)",
         .target.str = &cfg.tls_key},
        {.name = "rpc-max-msg", .type = WS_CONFIG_SIZE, .def = "1MiB", .min = 1024,
         .max = 64 << 20, .help = "largest RPC response accepted from a backend",
         .target.i64 = &cfg.rpc_max_msg},
        {.name = "bus-max-payload", .type = WS_CONFIG_SIZE, .def = "256KiB", .min = 1024,
         .max = 64 << 20, .help = "larger bus payloads are dropped unread",
         .target.i64 = &cfg.bus_max_payload},
        {.name = "access-log", .type = WS_CONFIG_BOOL, .def = "true",
         .help = "log one line per request", .target.b = &cfg.access_log},
        {.name = "log-level", .type = WS_CONFIG_ENUM, .def = "info", .help = "least level logged",
         .target.i = &cfg.log_level, .choices = front_levels},
        {.name = "sse-max-streams", .type = WS_CONFIG_INT, .def = "16", .min = 1, .max = 512,
         .help = "most open GET /events streams; each holds an HTTP thread (at most half "
                 "of --http-threads are used)",
         .target.i64 = &cfg.sse_max_streams},
        {.name = "sse-heartbeat", .type = WS_CONFIG_DURATION, .def = "15s", .min = 10,
         .max = 600000, .help = "idle time before an event stream sends a heartbeat",
         .target.i64 = &cfg.sse_heartbeat_ms},
        {.name = "sse-max-duration", .type = WS_CONFIG_DURATION, .def = "5m", .min = 100,
         .max = 86400000, .help = "longest life of an event stream; browsers reconnect",
         .target.i64 = &cfg.sse_max_ms},
    };
    /* The RPC TLS block after the front's own options. */
    enum { FRONT_N_BASE = sizeof(opts) / sizeof(opts[0]) };
    ws_config_option all[FRONT_N_BASE + WS_SERVICE_N_RPC_TLS_CLIENT_OPTIONS];
    memcpy(all, opts, sizeof(opts));
    size_t n_all = FRONT_N_BASE + ws_service_rpc_tls_options(&cfg.rpc_tls, false,
                                                              all + FRONT_N_BASE);
    ws_config *conf = ws_config_new("webshop-front", WEBSHOP_VERSION,
                                    "The webshop's JSON/HTTP gateway.", all, n_all);
    /* The front's own variables (WEBSHOP_FRONT_HTTP_PORT, ...), as the
     * backends' ws_service_parse gives theirs. */
    if (conf == NULL || ws_service_env_prefix(conf, "front") != 0) {
        fprintf(stderr, "webshop-front: out of memory\n");
        ws_config_free(conf);
        return 1;
    }
    switch (ws_config_parse(conf, argc, argv, NULL)) {
    case WS_CONFIG_OK:
        break;
    case WS_CONFIG_EXIT:
        ws_config_free(conf);
        return 0;
    default:
        fprintf(stderr, "webshop-front: %s\n", ws_config_error(conf));
        ws_config_free(conf);
        return 2;
    }
    ws_log_set_service("front");
    ws_log_set_level((ws_log_level)cfg.log_level);
    if (ws_service_rpc_tls_check(&cfg.rpc_tls, conf, "webshop-front", NULL) != WS_OK ||
        ws_service_rpc_tls_check_dial(&cfg.rpc_tls, "webshop-front", "inventory-url",
                                      &cfg.inventory_urls) != WS_OK ||
        ws_service_rpc_tls_check_dial(&cfg.rpc_tls, "webshop-front", "orders-url",
                                      &cfg.orders_urls) != WS_OK) {
        ws_config_free(conf);
        return 2;
    }

    /* Block the stop signals in every thread; main waits for them. */
    sigset_t stop;
    ws_service_block_signals(&stop);

    int rc = 1;
    ws_metrics *metrics = ws_metrics_default();
    ws_rpc_client *inventory = NULL;
    ws_rpc_client *orders = NULL;
    ws_bus *bus = NULL;
    ws_http *http = NULL;
    catalog_cache *catalog = catalog_cache_new();
    route_stats *stats = metrics != NULL ? route_stats_new(metrics) : NULL;
    /* Streams hold a worker thread each: keep half the threads for the API. */
    int64_t max_streams = cfg.sse_max_streams;
    if (max_streams > cfg.http_threads / 2) {
        max_streams = cfg.http_threads / 2 > 0 ? cfg.http_threads / 2 : 1;
        ws_log_warn("sse_max_streams_clamped", "asked=%lld used=%lld http_threads=%lld",
                    (long long)cfg.sse_max_streams, (long long)max_streams,
                    (long long)cfg.http_threads);
    }
    status_stream *statuses = status_stream_new((int)max_streams);
    front_live live = {.catalog = catalog, .statuses = statuses};
    char host[256];
    int port = 0;
    char client_id[160];
    ws_err err;

    if (catalog == NULL || metrics == NULL || statuses == NULL || stats == NULL ||
        ws_metrics_process_register(metrics, WEBSHOP_VERSION) != WS_OK) {
        ws_log_error("start_failed", "what=memory error=%s", ws_errname(WS_ENOMEM));
        goto fail;
    }
    if ((err = front_rpc_open(&cfg, &cfg.inventory_urls, "inventory", "inventory", metrics,
                              &inventory)) != WS_OK ||
        (err = front_rpc_open(&cfg, &cfg.orders_urls, "order", "orders", metrics,
                              &orders)) != WS_OK) {
        goto fail;
    }
    if (ws_config_hostport_split(cfg.broker, host, sizeof(host), &port) != 0) {
        ws_log_error("start_failed", "what=broker error=%s value=%s", ws_errname(WS_EINVAL),
                     cfg.broker);
        goto fail;
    }
    int replica = ws_service_replica(conf, cfg.replica_arg);
    char replica_text[16] = "-";
    if (replica >= 0) {
        snprintf(replica_text, sizeof(replica_text), "%d", replica);
        if (ws_service_replica_id(cfg.client_id != NULL ? cfg.client_id : "webshop-front",
                                  replica, client_id, sizeof(client_id)) != 0) {
            ws_log_error("start_failed", "what=bus error=%s value=%s",
                         ws_errname(WS_EINVAL), cfg.client_id);
            goto fail;
        }
    } else if (cfg.client_id == NULL) {
        snprintf(client_id, sizeof(client_id), "webshop-front-%ld", (long)getpid());
    } else {
        snprintf(client_id, sizeof(client_id), "%s", cfg.client_id);
    }
    /* The front keeps no session: it publishes, and its subscriptions only
     * invalidate a cache, feed live streams (a stream starts from a
     * GetOrder snapshot, so nothing missed while down stays missed) and
     * confirm writes (a write whose confirmation was missed asks GetOrder
     * before answering 202). Every replica has its own id and subscribes
     * unshared, so each sees every order's status. */
    ws_bus_opts bo = {.host = host,
                      .port = port,
                      .client_id = client_id,
                      .clean_start = true,
                      .username = cfg.username,
                      .password = cfg.password,
                      .tls_ca = cfg.broker_tls_ca,
                      .tls_cert = cfg.broker_tls_cert,
                      .tls_key = cfg.broker_tls_key,
                      .format = cfg.bus_format == 1 ? WS_BUS_JSON : WS_BUS_PROTOBUF,
                      .max_payload = (size_t)cfg.bus_max_payload,
                      .metrics = metrics};
    if ((err = ws_bus_open(&bo, &bus)) != WS_OK) {
        ws_log_error("start_failed", "what=bus error=%s", ws_errname(err));
        goto fail;
    }
    if ((err = ws_bus_subscribe(bus, WEBSHOP_V1_STOCK_CHANGED_TOPIC,
                                &webshop__v1__stock_changed__descriptor, front_on_stock_changed,
                                &live)) != WS_OK ||
        (err = ws_bus_subscribe(bus, WEBSHOP_V1_ORDER_STATUS_CHANGED_TOPIC,
                                &webshop__v1__order_status_changed__descriptor,
                                front_on_order_status, &live)) != WS_OK ||
        (err = ws_bus_set_loop_hook(bus, ws_notify_loop_hook, NULL)) != WS_OK ||
        (err = ws_bus_start(bus)) != WS_OK) {
        ws_log_error("start_failed", "what=bus error=%s", ws_errname(err));
        goto fail;
    }

    front f = {.inventory = inventory,
               .orders = orders,
               .bus = bus,
               .catalog = catalog,
               .metrics = metrics,
               .stats = stats,
               .rpc_deadline_ms = (uint32_t)cfg.rpc_deadline_ms,
               .publish_deadline_ms = (uint32_t)cfg.publish_deadline_ms,
               .accept_wait_ms = (int)cfg.accept_wait_ms,
               .max_body = (size_t)cfg.max_body,
               .limits = {.max_items = (int)cfg.max_items, .max_count = (int)cfg.max_count},
               .openapi = webshop_v1_front_openapi_json,
               .openapi_len = webshop_v1_front_openapi_json_len,
               .access_log = cfg.access_log,
               .statuses = statuses,
               .sse_heartbeat_ms = (int)cfg.sse_heartbeat_ms,
               .sse_max_ms = (int)cfg.sse_max_ms};
    ws_http_opts ho = {.host = cfg.http_host,
                       .port = cfg.http_port,
                       .threads = (int)cfg.http_threads,
                       .request_timeout_ms = (int)cfg.request_timeout_ms,
                       .keep_alive_ms = (int)cfg.keep_alive_ms,
                       .body_timeout_ms = (int)cfg.body_timeout_ms,
                       .reserve = (int)cfg.http_reserve,
                       .busy_grace_ms = (int)cfg.busy_grace_ms,
                       .max_headers = (int)cfg.max_headers,
                       .max_conns_per_addr = (int)cfg.max_conns_per_addr,
                       .tls_cert = cfg.tls_cert,
                       .tls_key = cfg.tls_key,
                       .hsts_max_age_s = cfg.hsts ? FRONT_HSTS_MAX_AGE_S : 0};
    if ((err = ws_http_open(&ho, &http)) != WS_OK) {
        ws_service_http_failed(conf, "webshop-front", cfg.http_host, cfg.http_port, err);
        ws_log_error("start_failed", "what=http error=%s", ws_errname(err));
        goto fail;
    }
    routes_install(http, &f);
    ws_http_serve(http);
    ws_log_info("started",
                "http=%s://%s:%d broker=%s client_id=%s replica=%s bus_format=%s "
                "inventory=%s orders=%s",
                cfg.tls_cert != NULL ? "https" : "http", cfg.http_host, ws_http_port(http),
                cfg.broker, client_id, replica_text, front_formats[cfg.bus_format],
                cfg.inventory_urls.text, cfg.orders_urls.text);
    ws_notify_status("serving http port %d", ws_http_port(http));
    ws_notify_ready();

    int sig = ws_service_wait(&stop);
    ws_notify_stopping();
    ws_log_info("stopping", "signal=%s", ws_service_signal_name(sig));
    rc = 0;
fail:
    if (statuses != NULL) {
        status_stream_shutdown(statuses); /* ends the streams mg_stop waits for */
    }
    ws_http_close(http); /* first: no handler may run past this */
    ws_bus_close(bus);
    ws_rpc_client_close(orders);
    ws_rpc_client_close(inventory);
    catalog_cache_free(catalog);
    route_stats_free(stats);
    status_stream_free(statuses); /* after the bus: its handlers publish here */
    ws_metrics_free(ws_metrics_default());
    ws_config_free(conf);
    ws_log_info("stopped", "exit=%d", rc);
    return rc;
}
