/*
 * Backend service scaffolding; see service.h.
 */
#include "service.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

const char *const ws_service_sync_names[] = {"OFF", "NORMAL", "FULL", "EXTRA", NULL};
const char *const ws_service_format_names[] = {"protobuf", "json", NULL};
static const char *const service_levels[] = {"debug", "info", "warn", "error", NULL};

size_t ws_service_options(ws_service_cfg *cfg, const ws_service_defaults *d,
                          ws_config_option *out)
{
    const ws_config_option opts[WS_SERVICE_N_OPTIONS] = {
        {.name = "db-path", .type = WS_CONFIG_STRING, .def = d->db_path,
         .help = "SQLite database file", .target.str = &cfg->db_path, .metavar = "PATH"},
        {.name = "db-synchronous", .type = WS_CONFIG_ENUM, .def = "NORMAL",
         .help = "SQLite synchronous (NORMAL survives a process crash, not a power cut)",
         .target.i = &cfg->db_sync, .choices = ws_service_sync_names},
        {.name = "rpc-url", .type = WS_CONFIG_URL, .def = d->rpc_url, .help = d->rpc_help,
         .target.str = &cfg->rpc_url, .flags = WS_CONFIG_LISTEN},
        {.name = "rpc-contexts", .type = WS_CONFIG_INT, .def = "16",
         .help = "RPC requests served concurrently (nng contexts)",
         .target.i64 = &cfg->rpc_contexts, .min = 1, .max = 1024},
        {.name = "rpc-workers", .type = WS_CONFIG_INT, .def = "0",
         .help = "RPC handler threads; 0 runs each handler on the nng thread that "
                 "received it (one thread hop less per call; handlers are short reads)",
         .target.i64 = &cfg->rpc_workers, .min = 0, .max = 64},
        {.name = "rpc-readers", .type = WS_CONFIG_INT, .def = "4",
         .help = "read-only database connections shared by the RPC handlers",
         .target.i64 = &cfg->rpc_readers, .min = 1, .max = 64},
        {.name = "rpc-max-msg", .type = WS_CONFIG_SIZE, .def = "1MiB",
         .help = "largest RPC message accepted (requests served, responses read)",
         .target.i64 = &cfg->rpc_max_msg, .min = 1024, .max = 64 << 20},
        {.name = "broker", .type = WS_CONFIG_HOSTPORT, .def = "127.0.0.1:1883",
         .help = "MQTT broker", .target.str = &cfg->broker},
        {.name = "client-id", .type = WS_CONFIG_STRING, .def = d->client_id,
         .help = "fixed MQTT client id of the consumer (persistent session); the outbox "
                 "relay connects as CLIENT_ID-outbox",
         .target.str = &cfg->client_id},
        {.name = "bus-format", .type = WS_CONFIG_ENUM, .def = "protobuf",
         .help = "payload format of published events (both are accepted)",
         .target.i = &cfg->bus_format, .choices = ws_service_format_names},
        {.name = "username", .type = WS_CONFIG_STRING, .def = NULL,
         .help = "MQTT user name (none: anonymous)", .target.str = &cfg->username},
        {.name = "password", .type = WS_CONFIG_STRING, .def = NULL, .help = "MQTT password",
         .target.str = &cfg->password, .flags = WS_CONFIG_FROM_FILE | WS_CONFIG_SECRET},
        {.name = "bus-max-payload", .type = WS_CONFIG_SIZE, .def = "256KiB",
         .help = "larger bus payloads are logged, counted and dropped",
         .target.i64 = &cfg->bus_max_payload, .min = 1024, .max = 64 << 20},
        {.name = "http-host", .type = WS_CONFIG_STRING, .def = "127.0.0.1",
         .help = "address of the /metrics and /healthz server", .target.str = &cfg->http_host},
        {.name = "http-port", .type = WS_CONFIG_PORT, .def = d->http_port,
         .help = "port of the /metrics and /healthz server (0: any free port, logged "
                 "as http_listening)",
         .target.i = &cfg->http_port, .flags = WS_CONFIG_LISTEN},
        {.name = "log-level", .type = WS_CONFIG_ENUM, .def = "info",
         .help = "lowest level logged", .target.i = &cfg->log_level,
         .choices = service_levels},
        {.name = "shutdown-timeout", .type = WS_CONFIG_DURATION, .def = "5s",
         .help = "bound on flushing the outbox at SIGTERM",
         .target.i64 = &cfg->shutdown_timeout_ms, .min = 0, .max = 600000},
    };
    memcpy(out, opts, sizeof(opts));
    return WS_SERVICE_N_OPTIONS;
}

ws_err ws_service_configure(ws_service_cfg *cfg, const char *prog, const char *service)
{
    if (ws_config_hostport_split(cfg->broker, cfg->broker_host, sizeof(cfg->broker_host),
                                 &cfg->broker_port) != 0) {
        fprintf(stderr, "%s: --broker: expected HOST:PORT, got \"%s\"\n", prog,
                cfg->broker != NULL ? cfg->broker : "");
        return WS_EINVAL;
    }
    ws_log_set_service(service);
    ws_log_set_level((ws_log_level)cfg->log_level);
    return WS_OK;
}

int ws_service_parse(ws_config *c, ws_service_cfg *cfg, const char *prog, const char *service,
                     int argc, char **argv)
{
    switch (ws_config_parse(c, argc, argv, NULL)) {
    case WS_CONFIG_OK:
        break;
    case WS_CONFIG_EXIT:
        return 0;
    default:
        fprintf(stderr, "%s: %s\n", prog, ws_config_error(c));
        return 2;
    }
    return ws_service_configure(cfg, prog, service) == WS_OK ? -1 : 2;
}

ws_bus_opts ws_service_bus_opts(const ws_service_cfg *cfg, const char *client_id,
                                bool clean_start)
{
    ws_bus_opts o = {
        .host = cfg->broker_host,
        .port = cfg->broker_port,
        .client_id = client_id,
        .clean_start = clean_start,
        .username = cfg->username,
        .password = cfg->password,
        .format = cfg->bus_format == 1 ? WS_BUS_JSON : WS_BUS_PROTOBUF,
        .max_payload = (size_t)cfg->bus_max_payload,
    };
    return o;
}

bool ws_service_bus_ready(void *bus)
{
    return ws_bus_ready_epoch(bus) != 0;
}

void ws_service_block_signals(sigset_t *stop)
{
    sigemptyset(stop);
    sigaddset(stop, SIGTERM);
    sigaddset(stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, stop, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int ws_service_wait(const sigset_t *stop)
{
    int sig = 0;
    sigwait(stop, &sig);
    return sig;
}
