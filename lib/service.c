/*
 * Backend service scaffolding; see service.h.
 */
#include "service.h"

#include <signal.h>

#include <ctype.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "clock.h"
#include "log.h"
#include "metrics_process.h"
#include "rpc_tls.h"

const char *const ws_service_sync_names[] = {"OFF", "NORMAL", "FULL", "EXTRA", NULL};
const char *const ws_service_format_names[] = {"protobuf", "json", NULL};
static const char *const service_levels[] = {"debug", "info", "warn", "error", NULL};

size_t ws_service_options(ws_service_cfg *cfg, const ws_service_defaults *d,
                          ws_config_option *out)
{
    const char *rpc_def = d->rpc_url;
    if (rpc_def == NULL && d->rpc_socket != NULL) {
        /* Too long a directory still yields a default: the check after the
         * parse names it (ws_service_rpc_url_check). */
        (void)ws_service_rpc_default_url(d->rpc_socket, cfg->rpc_url_def,
                                         sizeof(cfg->rpc_url_def));
        rpc_def = cfg->rpc_url_def;
    }
    const ws_config_option opts[WS_SERVICE_N_OPTIONS - WS_SERVICE_N_RPC_TLS_OPTIONS] = {
        {.name = "db-path",
         .type = WS_CONFIG_STRING,
         .def = d->db_path,
         .help = "SQLite database file (shorthand for --db-url sqlite:PATH)",
         .target.str = &cfg->db_path,
         .metavar = "PATH"},
        {.name = "db-url",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .env = d->db_url_env,
         .help = "database: sqlite:PATH, postgresql://USER@HOST/DB or a libpq keyword "
                 "string (\"host=/run/postgresql dbname=shop\"); wins over --db-path",
         .target.str = &cfg->db_url,
         .metavar = "URL",
         .flags = WS_CONFIG_SECRET | WS_CONFIG_FROM_FILE},
        {.name = "db-synchronous",
         .type = WS_CONFIG_ENUM,
         .def = "NORMAL",
         .help = "SQLite synchronous (NORMAL survives a process crash, not a power cut)",
         .target.i = &cfg->db_sync,
         .choices = ws_service_sync_names},
        {.name = "rpc-url",
         .type = WS_CONFIG_URL,
         .def = rpc_def,
         .help = d->rpc_help,
         .target.str = &cfg->rpc_url,
         .flags = WS_CONFIG_LISTEN},
        {.name = "rpc-contexts",
         .type = WS_CONFIG_INT,
         .def = "16",
         .help = "RPC requests served concurrently (nng contexts)",
         .target.i64 = &cfg->rpc_contexts,
         .min = 1,
         .max = 1024},
        {.name = "rpc-workers",
         .type = WS_CONFIG_INT,
         .def = "0",
         .help = "RPC handler threads; 0 runs each handler on the nng thread that "
                 "received it (one thread hop less per call; handlers are short reads)",
         .target.i64 = &cfg->rpc_workers,
         .min = 0,
         .max = 64},
        {.name = "rpc-readers",
         .type = WS_CONFIG_INT,
         .def = "4",
         .help = "read-only database connections shared by the RPC handlers",
         .target.i64 = &cfg->rpc_readers,
         .min = 1,
         .max = 64},
        {.name = "rpc-max-msg",
         .type = WS_CONFIG_SIZE,
         .def = "1MiB",
         .help = "largest RPC message accepted (requests served, responses read)",
         .target.i64 = &cfg->rpc_max_msg,
         .min = 1024,
         .max = 64 << 20},
        {.name = "broker",
         .type = WS_CONFIG_HOSTPORT,
         .def = "127.0.0.1:1883",
         .env = "WEBSHOP_BROKER", /* one broker for every process of the shop */
         .help = "MQTT broker",
         .target.str = &cfg->broker},
        {.name = "client-id",
         .type = WS_CONFIG_STRING,
         .def = d->client_id,
         .help = "fixed MQTT client id of the consumer (persistent session); the outbox "
                 "relay connects as CLIENT_ID-outbox",
         .target.str = &cfg->client_id},
        {.name = "bus-format",
         .type = WS_CONFIG_ENUM,
         .def = "protobuf",
         .help = "payload format of published events (both are accepted)",
         .target.i = &cfg->bus_format,
         .choices = ws_service_format_names},
        {.name = "username",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "MQTT user name (none: anonymous)",
         .target.str = &cfg->username},
        {.name = "password",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "MQTT password",
         .target.str = &cfg->password,
         .flags = WS_CONFIG_FROM_FILE | WS_CONFIG_SECRET},
        /* Bus over TLS (ws_bus_opts.tls_*): the broker's user is the
         * certificate's identity, so --username/--password are then unused. */
        {.name = "broker-tls-ca",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "CA file: TLS 1.2+ to the broker, verifying its certificate and name "
                 "(none: plain TCP)",
         .target.str = &cfg->broker_tls_ca},
        {.name = "broker-tls-cert",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "client certificate for the broker (PEM, leaf then chain)",
         .target.str = &cfg->broker_tls_cert},
        {.name = "broker-tls-key",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "key of --broker-tls-cert",
         .target.str = &cfg->broker_tls_key},
        {.name = "bus-max-payload",
         .type = WS_CONFIG_SIZE,
         .def = "256KiB",
         .help = "larger bus payloads are logged, counted and dropped",
         .target.i64 = &cfg->bus_max_payload,
         .min = 1024,
         .max = 64 << 20},
        {.name = "http-host",
         .type = WS_CONFIG_STRING,
         .def = "127.0.0.1",
         .help = "address of the /metrics and /healthz server",
         .target.str = &cfg->http_host},
        {.name = "http-port",
         .type = WS_CONFIG_PORT,
         .def = d->http_port,
         .help = "port of the /metrics and /healthz server (0: any free port, logged "
                 "as http_listening)",
         .target.i = &cfg->http_port,
         .flags = WS_CONFIG_LISTEN},
        {.name = "log-level",
         .type = WS_CONFIG_ENUM,
         .def = "info",
         .help = "lowest level logged",
         .target.i = &cfg->log_level,
         .choices = service_levels},
        {.name = "shutdown-timeout",
         .type = WS_CONFIG_DURATION,
         .def = "5s",
         .help = "bound on flushing the outbox at SIGTERM",
         .target.i64 = &cfg->shutdown_timeout_ms,
         .min = 0,
         .max = 600000},
        {.name = "db-check-timeout",
         .type = WS_CONFIG_DURATION,
         .def = "10s",
         .help = "bound on the integrity check (PRAGMA quick_check) of the database at "
                 "start, about 10 ms per 10 MB; a damaged database is refused (exit 1); "
                 "0 skips the check",
         .target.i64 = &cfg->db_check_ms,
         .min = 0,
         .max = 3600000},
        {.name = "db-wait",
         .type = WS_CONFIG_DURATION,
         .def = "5m",
         .help =
             "at start, how long to wait for a database server that does not "
             "answer (PostgreSQL restarting) before exiting 1; SIGTERM stops the wait",
         .target.i64 = &cfg->db_wait_ms,
         .min = 0,
         .max = 86400000},
        ws_service_replica_option(&cfg->replica_arg),
        {.name = "replica-session-expiry",
         .type = WS_CONFIG_DURATION,
         .def = "30s",
         .help = "with --replica: how long the broker keeps a replica's session after "
                 "its connection drops, and with it the share of the events handed to "
                 "it meanwhile (Mosquitto 2.0.11 hands shares round robin without "
                 "checking who is connected): a replica back within it gets them; "
                 "after it they are dropped and the recovery loops of the replicas "
                 "still up heal those orders. 0: no session (a dead replica's share "
                 "goes to the others at once, but what is published while every "
                 "replica is down finds no consumer)",
         .target.i64 = &cfg->replica_session_ms,
         .min = 0,
         .max = 86400000},
    };
    memcpy(out, opts, sizeof(opts));
    size_t n = sizeof(opts) / sizeof(opts[0]);
    return n + ws_service_rpc_tls_options(&cfg->rpc_tls, true, out + n);
}

ws_config_option ws_service_replica_option(int64_t *target)
{
    ws_config_option o = {
        .name = "replica",
        .type = WS_CONFIG_INT,
        .def = NULL,
        .help = "run as replica K (0..63) of several on one PostgreSQL database: the "
                "bus client id becomes CLIENT_ID-K and the events are consumed through "
                "MQTT v5 shared subscriptions $share/CLIENT_ID/TOPIC (each event goes "
                "to one replica; subscribed again on every CONNACK). Without it, plain "
                "persistent subscriptions: with a single replica a shared one would "
                "lose what is published between a broker restart and the resubscribe "
                "(Mosquitto 2.0.11 restores plain subscriptions, not shared ones)",
        .target.i64 = target,
        .min = 0,
        .max = WS_SERVICE_MAX_REPLICA,
        .metavar = "K",
    };
    return o;
}

int ws_service_replica(const ws_config *c, int64_t value)
{
    const char *src = c != NULL ? ws_config_source(c, "replica") : NULL;
    return src == NULL || strcmp(src, "unset") == 0 ? -1 : (int)value;
}

int ws_service_replica_id(const char *base, int replica, char *out, size_t cap)
{
    if (base == NULL ||
        (replica >= 0 && (base[0] == '\0' || strpbrk(base, "/+#") != NULL))) {
        return -1;
    }
    int n = replica >= 0 ? snprintf(out, cap, "%s-%d", base, replica)
                         : snprintf(out, cap, "%s", base);
    return n >= 0 && (size_t)n < cap ? 0 : -1;
}

ws_err ws_service_configure(ws_service_cfg *cfg, const char *prog, const char *service)
{
    if (ws_config_hostport_split(cfg->broker, cfg->broker_host, sizeof(cfg->broker_host),
                                 &cfg->broker_port) != 0) {
        fprintf(stderr, "%s: --broker: expected HOST:PORT, got \"%s\"\n", prog,
                cfg->broker != NULL ? cfg->broker : "");
        return WS_EINVAL;
    }
    if (cfg->replica >= 0) {
        if (ws_service_replica_id(cfg->client_id, cfg->replica, cfg->client_id_buf,
                                  sizeof(cfg->client_id_buf)) != 0 ||
            strlen(cfg->client_id) >= sizeof(cfg->share_buf)) {
            fprintf(stderr,
                    "%s: --client-id: with --replica it names the share group: at most "
                    "%zu bytes, not empty, no '/', '+' or '#', got \"%s\"\n",
                    prog, sizeof(cfg->share_buf) - 1, cfg->client_id);
            return WS_EINVAL;
        }
        snprintf(cfg->share_buf, sizeof(cfg->share_buf), "%s", cfg->client_id);
        cfg->share_group = cfg->share_buf;
        cfg->client_id = cfg->client_id_buf;
    } else {
        cfg->share_group = NULL;
    }
    ws_log_set_service(service);
    ws_log_set_level((ws_log_level)cfg->log_level);
    return WS_OK;
}

int ws_service_env_prefix(ws_config *c, const char *service)
{
    char prefix[64];
    size_t o = (size_t)snprintf(prefix, sizeof(prefix), "WEBSHOP_");
    for (const char *p = service; *p != '\0' && o + 2 < sizeof(prefix); p++) {
        prefix[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    }
    prefix[o++] = '_';
    prefix[o] = '\0';
    return ws_config_set_env_prefix(c, prefix);
}

int ws_service_parse(ws_config *c, ws_service_cfg *cfg, const char *prog,
                     const char *service, int argc, char **argv)
{
    if (ws_service_env_prefix(c, service) != 0) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return 1;
    }
    cfg->conf = c;
    cfg->prog = prog;
    switch (ws_config_parse(c, argc, argv, NULL)) {
    case WS_CONFIG_OK:
        break;
    case WS_CONFIG_EXIT:
        return 0;
    default:
        fprintf(stderr, "%s: %s\n", prog, ws_config_error(c));
        return 2;
    }
    cfg->replica = ws_service_replica(c, cfg->replica_arg);
    if (ws_service_configure(cfg, prog, service) != WS_OK ||
        ws_service_rpc_tls_check(&cfg->rpc_tls, c, prog, &cfg->rpc_url) != WS_OK) {
        return 2;
    }
    return -1;
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
        .tls_ca = cfg->broker_tls_ca,
        .tls_cert = cfg->broker_tls_cert,
        .tls_key = cfg->broker_tls_key,
        .format = cfg->bus_format == 1 ? WS_BUS_JSON : WS_BUS_PROTOBUF,
        .max_payload = (size_t)cfg->bus_max_payload,
    };
    return o;
}

ws_bus_opts ws_service_consumer_bus_opts(const ws_service_cfg *cfg)
{
    ws_bus_opts o = ws_service_bus_opts(cfg, cfg->client_id, false);
    if (cfg->replica >= 0) {
        if (cfg->replica_session_ms == 0) {
            o.clean_start = true; /* and session_expiry 0: none */
        } else {
            o.session_expiry = (uint32_t)((cfg->replica_session_ms + 999) / 1000);
        }
    }
    return o;
}

bool ws_service_bus_ready(void *bus)
{
    return ws_bus_ready_epoch(bus) != 0 && !ws_bus_holding(bus, NULL);
}

const char *ws_service_db_url(const ws_service_cfg *cfg)
{
    return cfg->db_url != NULL && cfg->db_url[0] != '\0' ? cfg->db_url : cfg->db_path;
}

ws_db_opts ws_service_db_opts(const ws_service_cfg *cfg, int pool_size,
                              const ws_db_migration *m, size_t n)
{
    ws_db_opts o = {
        .url = ws_service_db_url(cfg),
        .pool_size = pool_size,
        .synchronous = ws_service_sync_names[cfg->db_sync],
        .app_name = cfg->client_id,
        .migrations = m,
        .n_migrations = n,
    };
    return o;
}

/* Why host:port cannot be listened on, found by binding it once ourselves
 * (the HTTP and RPC libraries report only that they failed): "address in
 * use" and the like, or NULL when the probe binds. */
static const char *service_listen_probe(const char *host, int port, char *buf, size_t cap)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char serv[16];
    snprintf(serv, sizeof(serv), "%d", port);
    int gai = getaddrinfo(host, serv, &hints, &res);
    if (gai != 0) {
        snprintf(buf, cap, "cannot resolve %s: %s", host, gai_strerror(gai));
        return buf;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
    int rc = fd >= 0 ? 0 : -1;
    int on = 1;
    if (rc == 0) {
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        rc = bind(fd, res->ai_addr, res->ai_addrlen);
    }
    int e = errno;
    if (fd >= 0) {
        close(fd);
    }
    freeaddrinfo(res);
    if (rc == 0) {
        return NULL;
    }
    switch (e) {
    case EADDRINUSE:
        return "address in use";
    case EACCES:
        return "permission denied (a port below 1024 needs privileges)";
    case EADDRNOTAVAIL:
        return "address not available on this host";
    default:
        snprintf(buf, cap, "%s", strerror(e));
        return buf;
    }
}

/* The listener of option (its value as text) failed with err at host:port
 * (host NULL: no probe): log listen_failed and print the setting. */
static void service_listen_failed(const ws_config *c, const char *prog, const char *what,
                                  const char *option, const char *value,
                                  const char *host, int port, ws_err err)
{
    char buf[256];
    const char *reason = host != NULL && port > 0
                             ? service_listen_probe(host, port, buf, sizeof(buf))
                             : NULL;
    if (reason == NULL) {
        reason = ws_strerror(err);
    }
    const char *env = c != NULL ? ws_config_env(c, option) : NULL;
    const char *src = c != NULL ? ws_config_source(c, option) : NULL;
    ws_log_error("listen_failed",
                 "what=%s setting=--%s env=%s source=%s value=%s port=%d error=%s "
                 "reason=%s",
                 what, option, env != NULL ? env : "-", src != NULL ? src : "-", value,
                 port, ws_errname(err), reason);
    const char *how = src == NULL                    ? ""
                      : strcmp(src, "env") == 0      ? ", from the environment"
                      : strcmp(src, "default") == 0  ? ", the default"
                                                     : "";
    fprintf(stderr, "%s: --%s %s (%s%s): %s\n", prog, option, value,
            env != NULL ? env : "no variable", how, reason);
}

void ws_service_http_failed(const ws_config *c, const char *prog, const char *host,
                            int port, ws_err err)
{
    char value[16];
    snprintf(value, sizeof(value), "%d", port);
    service_listen_failed(c, prog, "http", "http-port", value,
                          host != NULL ? host : "127.0.0.1", port, err);
}

void ws_service_rpc_failed(const ws_config *c, const char *prog, const char *url,
                           ws_err err)
{
    char host[256];
    int port = 0;
    const char *sep = url != NULL ? strstr(url, "://") : NULL;
    bool tcp = sep != NULL && strncmp(url, "tcp", 3) == 0;
    if (!tcp || ws_config_hostport_split(sep + 3, host, sizeof(host), &port) != 0) {
        port = 0;
    }
    service_listen_failed(c, prog, "rpc", "rpc-url", url != NULL ? url : "",
                          port > 0 ? host : NULL, port, err);
}

/* One step of the wait for an unreachable database: false when the wait is
 * over (SIGTERM/SIGINT pending: *canceled, or the deadline passed). */
static bool service_db_wait(const ws_service_cfg *cfg, const char *safe,
                            const char *detail, int64_t t0_ms, int *delay_ms,
                            int64_t *next_log_ms, bool *canceled)
{
    sigset_t pending;
    int64_t now = ws_clock_mono_ms();
    if (sigpending(&pending) == 0 &&
        (sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1)) {
        *canceled = true;
        return false;
    }
    if (now - t0_ms >= cfg->db_wait_ms) {
        return false;
    }
    if (now >= *next_log_ms) {
        ws_log_warn("db_waiting", "url=%s waited_ms=%lld wait_ms=%lld detail=%s", safe,
                    (long long)(now - t0_ms), (long long)cfg->db_wait_ms, detail);
        *next_log_ms = now + 10000;
    }
    struct timespec ts = {*delay_ms / 1000, (long)(*delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    *delay_ms = *delay_ms * 2 > 2000 ? 2000 : *delay_ms * 2;
    return true;
}

ws_err ws_service_check_db(const ws_service_cfg *cfg, const char *prog, int want_version)
{
    char detail[512], safe[512];
    const char *url = ws_service_db_url(cfg);
    ws_db_url_redact(url, safe, sizeof(safe));
    int64_t t0 = ws_clock_mono_ms(), next_log = t0;
    int delay = 100;
    bool canceled = false;
    ws_err err;
    do {
        err = ws_db_check_url(url, want_version, (uint32_t)cfg->db_check_ms, detail,
                              sizeof(detail));
    } while (err == WS_EUNAVAIL &&
             service_db_wait(cfg, safe, detail, t0, &delay, &next_log, &canceled));
    long long took_ms = (long long)(ws_clock_mono_ms() - t0);
    if (canceled) {
        ws_log_info("db_wait_canceled", "url=%s waited_ms=%lld", safe, took_ms);
        return WS_ECANCELED;
    }
    if (err == WS_ETIMEDOUT) {
        ws_log_warn("db_check_incomplete", "url=%s detail=%s", safe, detail);
        return WS_OK;
    }
    if (err == WS_EUNAVAIL) {
        ws_log_error("db_unavailable", "url=%s waited_ms=%lld detail=%s", safe, took_ms,
                     detail);
        fprintf(stderr, "%s: %s: database unavailable (%s)\n", prog, safe, detail);
        return WS_EUNAVAIL;
    }
    if (err == WS_ENOTFOUND) { /* the engine's module (db_engine_unavailable, logged) */
        fprintf(stderr, "%s: %s: %s; refusing to start\n", prog, safe, detail);
        return WS_ESTORE;
    }
    if (err != WS_OK) {
        const char *what = err == WS_EIO ? "unreadable" : "damaged";
        ws_log_error(err == WS_EIO ? "db_unreadable" : "db_damaged", "url=%s detail=%s",
                     safe, detail);
        fprintf(stderr, "%s: %s: %s database (%s); refusing to start\n", prog, safe, what,
                detail);
        return WS_ESTORE;
    }
    ws_log_info("db_checked", "url=%s took_ms=%lld budget_ms=%lld", safe, took_ms,
                (long long)cfg->db_check_ms);
    return WS_OK;
}

ws_err ws_service_db_open(const ws_service_cfg *cfg, const ws_db_opts *opts, ws_db **out)
{
    char safe[512];
    ws_db_url_redact(opts->url, safe, sizeof(safe));
    int64_t t0 = ws_clock_mono_ms(), next_log = t0;
    int delay = 100;
    bool canceled = false;
    ws_err err;
    do {
        err = ws_db_open(opts, out);
    } while (err == WS_EUNAVAIL && service_db_wait(cfg, safe, "server unavailable", t0,
                                                   &delay, &next_log, &canceled));
    return canceled ? WS_ECANCELED : err;
}

/* Append one {"name":..,"status":..} to out; status is escaped. */
static void service_check_put(ws_buf *out, bool first, const char *name,
                              const char *status)
{
    ws_buf_printf(out, "%s{\"name\":\"%s\",\"status\":\"", first ? "" : ",", name);
    for (const char *p = status; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\') {
            ws_buf_putc(out, '\\');
            ws_buf_putc(out, (char)c);
        } else if (c < 0x20) {
            ws_buf_putc(out, ' ');
        } else {
            ws_buf_putc(out, (char)c);
        }
    }
    ws_buf_puts(out, "\"}");
}

/* The bus and events checks: "ok" or why not, into text. */
static bool service_bus_checks(ws_bus *bus, char *bus_text, char *ev_text, size_t cap)
{
    snprintf(bus_text, cap, "ok");
    snprintf(ev_text, cap, "ok");
    if (bus == NULL) {
        return true;
    }
    bool ok = true;
    if (!ws_bus_connected(bus)) {
        snprintf(bus_text, cap, "not connected");
        ok = false;
    } else if (ws_bus_ready_epoch(bus) == 0) {
        snprintf(bus_text, cap, "subscribing");
        ok = false;
    }
    ws_bus_hold h;
    if (ws_bus_holding(bus, &h)) {
        snprintf(
            ev_text, cap,
            "holding %zu event%s for %.1f s (first on %s, %u attempts, last error %s)",
            h.held, h.held == 1 ? "" : "s", (double)h.held_ms / 1000.0, h.topic,
            h.attempts, ws_errname(h.error));
        ok = false;
    }
    return ok;
}

bool ws_service_ready_json(const ws_service_ready *r, ws_buf *out)
{
    char bus_text[256], ev_text[256], store_text[320] = "ok";
    bool ok = service_bus_checks(r != NULL ? r->bus : NULL, bus_text, ev_text,
                                 sizeof(bus_text));
    char why[128];
    ws_db_error e = {0};
    if (r != NULL && ws_db_failing(r->db, why, sizeof(why))) {
        snprintf(store_text, sizeof(store_text), "commit failing: %s", why);
        ok = false;
    } else if (r != NULL && r->db != NULL && ws_db_engine_of(r->db) == WS_DB_POSTGRES &&
               ws_db_check(r->db, &e) != WS_OK) {
        snprintf(store_text, sizeof(store_text), "unavailable: %s", e.message);
        ok = false;
    }
    ws_buf_printf(out, "{\"status\":\"%s\",\"checks\":[", ok ? "ok" : "unavailable");
    service_check_put(out, true, "bus", bus_text);
    service_check_put(out, false, "events", ev_text);
    service_check_put(out, false, "store", store_text);
    ws_buf_puts(out, "]}");
    return ok;
}

static int service_readyz(ws_http_req *req, void *ctx)
{
    ws_buf b;
    ws_buf_init(&b, 256);
    bool ok = ws_service_ready_json(ctx, &b);
    int st = ws_http_reply(req, ok ? 200 : 503, "application/json", b.data, b.len,
                           ok ? NULL : "Retry-After: 1\r\n");
    ws_buf_fini(&b);
    return st;
}

void ws_service_route_basics(ws_http *h, ws_metrics *m, const ws_service_ready *r)
{
    (void)ws_metrics_process_register(m, WEBSHOP_VERSION);
    /* The first route that matches wins: this /readyz, not the basic one. */
    ws_http_route(h, "/readyz$", "GET", service_readyz, (void *)r);
    ws_http_route_basics(h, m);
}

void ws_service_limit_arenas(void)
{
    (void)mallopt(M_ARENA_MAX, 2);
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

const char *ws_service_signal_name(int sig)
{
    switch (sig) {
    case SIGTERM:
        return "SIGTERM";
    case SIGINT:
        return "SIGINT";
    case SIGHUP:
        return "SIGHUP";
    case SIGQUIT:
        return "SIGQUIT";
    default:
        return "SIG?";
    }
}

/* ---- RPC over mutual TLS ----------------------------------------------- */

const char *const ws_service_rpc_schemes[] = {"tcp",    "tcp4",    "tcp6", "ipc",
                                              "inproc", "tls+tcp", NULL};

size_t ws_service_rpc_tls_options(ws_service_rpc_tls *t, bool server,
                                  ws_config_option *out)
{
    const ws_config_option opts[WS_SERVICE_N_RPC_TLS_OPTIONS] = {
        {.name = "rpc-tls-cert",
         .type = WS_CONFIG_STRING,
         .help = "RPC over mutual TLS: this service's certificate, then its chain (PEM, "
                 "tools/shop_ca's ID.crt), presented to the services it calls and by "
                 "its --rpc-tls-listen listeners",
         .target.str = &t->cert,
         .metavar = "PATH"},
        {.name = "rpc-tls-key",
         .type = WS_CONFIG_STRING,
         .help = "the unencrypted PEM key of --rpc-tls-cert (keep it 0600)",
         .target.str = &t->key,
         .metavar = "PATH"},
        {.name = "rpc-tls-ca",
         .type = WS_CONFIG_STRING,
         .help = "the shop's root CA (PEM, ca.crt): the services called must chain to it "
                 "and present their identity (inventory, order) as name",
         .target.str = &t->ca,
         .metavar = "PATH"},
        {.name = "rpc-plaintext",
         .type = WS_CONFIG_BOOL,
         .def = "false",
         .help = "allow plain tcp:// RPC URLs, listened on or dialed (logged "
                 "rpc_plaintext, warn); without it they are refused: use ipc:// on one "
                 "host (a 0600 socket in a private directory) or tls+tcp:// between "
                 "hosts",
         .target.b = &t->plaintext},
        {.name = "rpc-tls-listen",
         .type = WS_CONFIG_STRING,
         .help = "one TLS listener per caller identity, ID=tls+tcp://HOST:PORT, a comma "
                 "list (front=tls+tcp://127.0.0.1:7131,admin=...): a call is the "
                 "identity's whose listener it came in on, checked against the methods' "
                 "(webshop.v1.allow) table; each listener trusts DIR/ID-ca.crt only",
         .target.list = &t->listen,
         .flags = WS_CONFIG_LIST,
         .metavar = "ID=URL"},
        {.name = "rpc-tls-ca-dir",
         .type = WS_CONFIG_STRING,
         .help = "DIR of the identity CAs (ID-ca.crt) of --rpc-tls-listen (default: the "
                 "directory of --rpc-tls-ca)",
         .target.str = &t->ca_dir,
         .metavar = "DIR"},
    };
    size_t n =
        server ? WS_SERVICE_N_RPC_TLS_OPTIONS : WS_SERVICE_N_RPC_TLS_CLIENT_OPTIONS;
    memcpy(out, opts, n * sizeof(opts[0]));
    if (!server) {
        out[0].help = "RPC over mutual TLS: this process's certificate, then its chain "
                      "(PEM, tools/shop_ca's ID.crt), presented to the services it calls "
                      "over tls+tcp://";
    }
    return n;
}

static ws_err service_tls_fail(const char *prog, const char *flag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static ws_err service_tls_fail(const char *prog, const char *flag, const char *fmt, ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: --%s: %s\n", prog, flag, why);
    return WS_EINVAL;
}

/* cert, key and ca: all three or none; each readable. */
static ws_err service_tls_files(ws_service_rpc_tls *t, const char *prog)
{
    const char *names[3] = {"rpc-tls-cert", "rpc-tls-key", "rpc-tls-ca"};
    const char *vals[3] = {t->cert, t->key, t->ca};
    int set = (t->cert != NULL) + (t->key != NULL) + (t->ca != NULL);
    t->on = set == 3;
    for (int i = 0; i < 3; i++) {
        if (set > 0 && vals[i] == NULL) {
            return service_tls_fail(prog, names[i],
                                    "needed with the other --rpc-tls-cert, --rpc-tls-key "
                                    "and --rpc-tls-ca (all three or none)");
        }
        if (vals[i] != NULL && access(vals[i], R_OK) != 0) {
            return service_tls_fail(prog, names[i], "%s: %s", vals[i], strerror(errno));
        }
    }
    return WS_OK;
}

/* One --rpc-tls-listen entry ID=URL into slot i. */
static ws_err service_tls_listen_entry(ws_service_rpc_tls *t, const char *prog,
                                       const char *dir, const char *entry, size_t i)
{
    const char *eq = strchr(entry, '=');
    size_t idl = eq != NULL ? (size_t)(eq - entry) : 0;
    if (eq == NULL || idl == 0 || idl >= sizeof(t->listen_id[i])) {
        return service_tls_fail(prog, "rpc-tls-listen",
                                "expected ID=tls+tcp://HOST:PORT, "
                                "got \"%s\"",
                                entry);
    }
    memcpy(t->listen_id[i], entry, idl);
    t->listen_id[i][idl] = '\0';
    if (!ws__rpc_identity_valid(t->listen_id[i])) {
        return service_tls_fail(prog, "rpc-tls-listen",
                                "identity \"%s\": a-z, 0-9 and '-' only",
                                t->listen_id[i]);
    }
    for (size_t j = 0; j < i; j++) {
        if (strcmp(t->listen_id[j], t->listen_id[i]) == 0) {
            return service_tls_fail(prog, "rpc-tls-listen", "identity %s given twice",
                                    t->listen_id[i]);
        }
    }
    t->listen_url[i] = eq + 1;
    if (strncmp(eq + 1, "tls+tcp://", 10) != 0 || eq[11] == '\0') {
        return service_tls_fail(prog, "rpc-tls-listen",
                                "%s: expected a tls+tcp:// URL, "
                                "got \"%s\"",
                                t->listen_id[i], eq + 1);
    }
    int n = snprintf(t->listen_ca[i], sizeof(t->listen_ca[i]), "%s/%s-ca.crt", dir,
                     t->listen_id[i]);
    if (n < 0 || (size_t)n >= sizeof(t->listen_ca[i])) {
        return service_tls_fail(prog, "rpc-tls-ca-dir", "path too long: %s", dir);
    }
    if (access(t->listen_ca[i], R_OK) != 0) {
        return service_tls_fail(prog, "rpc-tls-listen",
                                "%s: the identity's CA %s: %s (see --rpc-tls-ca-dir)",
                                t->listen_id[i], t->listen_ca[i], strerror(errno));
    }
    return WS_OK;
}

/* The --rpc-tls-listen entries, with their CA files. */
static ws_err service_tls_listeners(ws_service_rpc_tls *t, const char *prog)
{
    t->n_listen = 0;
    if (t->ca_dir != NULL && t->listen.n == 0) {
        return service_tls_fail(prog, "rpc-tls-ca-dir", "only with --rpc-tls-listen");
    }
    if (t->listen.n == 0) {
        return WS_OK;
    }
    if (!t->on) {
        return service_tls_fail(prog, "rpc-tls-listen",
                                "needs --rpc-tls-cert, --rpc-tls-key and --rpc-tls-ca");
    }
    if (t->listen.n > WS_SERVICE_MAX_TLS_LISTEN) {
        return service_tls_fail(prog, "rpc-tls-listen", "at most %d identities",
                                WS_SERVICE_MAX_TLS_LISTEN);
    }
    char dir[1024];
    if (t->ca_dir != NULL) {
        snprintf(dir, sizeof(dir), "%s", t->ca_dir);
    } else {
        const char *slash = strrchr(t->ca, '/');
        snprintf(dir, sizeof(dir), "%.*s", slash != NULL ? (int)(slash - t->ca) : 1,
                 slash != NULL ? t->ca : ".");
        if (slash == t->ca) {
            snprintf(dir, sizeof(dir), "/");
        }
    }
    for (size_t i = 0; i < t->listen.n; i++) {
        if (service_tls_listen_entry(t, prog, dir, t->listen.items[i], i) != WS_OK) {
            return WS_EINVAL;
        }
        t->n_listen = i + 1;
    }
    return WS_OK;
}

static bool service_ipc_listening(const char *path);

bool ws_service_url_tcp(const char *url)
{
    return strncmp(url, "tcp://", 6) == 0 || strncmp(url, "tcp4://", 7) == 0 ||
           strncmp(url, "tcp6://", 7) == 0;
}

ws_err ws_service_rpc_tls_check(ws_service_rpc_tls *t, const ws_config *c,
                                const char *prog, const char **rpc_url)
{
    if (service_tls_files(t, prog) != WS_OK || service_tls_listeners(t, prog) != WS_OK) {
        return WS_EINVAL;
    }
    if (rpc_url == NULL) {
        return WS_OK;
    }
    if (t->on) {
        const char *src = ws_config_source(c, "rpc-url");
        if (src != NULL && strcmp(src, "default") == 0) {
            *rpc_url = NULL; /* TLS on: only the identity listeners */
        }
        if (*rpc_url == NULL && t->n_listen == 0) {
            return service_tls_fail(prog, "rpc-tls-listen",
                                    "a server with --rpc-tls-cert needs at least one "
                                    "(or an explicit --rpc-url ipc://PATH)");
        }
    }
    if (*rpc_url == NULL) {
        return WS_OK;
    }
    if (ws_service_rpc_url_check(t, prog, "rpc-url", *rpc_url) != WS_OK) {
        return WS_EINVAL;
    }
    if (strncmp(*rpc_url, "ipc://", 6) == 0 && service_ipc_listening(*rpc_url + 6)) {
        return service_tls_fail(prog, "rpc-url",
                                "%s: address in use (another process listens on this "
                                "socket)",
                                *rpc_url);
    }
    return WS_OK;
}

ws_err ws_service_rpc_tls_check_dial(const ws_service_rpc_tls *t, const char *prog,
                                     const char *flag, const ws_config_list *urls)
{
    size_t n_tls = 0;
    for (size_t i = 0; i < urls->n; i++) {
        n_tls += strncmp(urls->items[i], "tls+tcp://", 10) == 0;
    }
    if (n_tls > 0 && n_tls < urls->n) {
        return service_tls_fail(prog, flag, "every URL tls+tcp:// or none, got %s",
                                urls->text);
    }
    if (n_tls > 0 && !t->on) {
        return service_tls_fail(prog, flag,
                                "tls+tcp:// needs --rpc-tls-cert, --rpc-tls-key and "
                                "--rpc-tls-ca");
    }
    for (size_t i = 0; i < urls->n; i++) {
        if (ws_service_rpc_url_check(t, prog, flag, urls->items[i]) != WS_OK) {
            return WS_EINVAL;
        }
    }
    return WS_OK;
}

/* ---- Same-host RPC over ipc:// ----------------------------------------- */

int ws_service_runtime_dir(char *out, size_t cap)
{
    const char *w = getenv("WEBSHOP_RUNTIME_DIR");
    const char *x = getenv("XDG_RUNTIME_DIR");
    int n;
    if (w != NULL && w[0] != '\0') {
        size_t len = strlen(w);
        while (len > 1 && w[len - 1] == '/') {
            len--; /* "DIR/" names the same directory as "DIR" */
        }
        n = snprintf(out, cap, "%.*s", (int)len, w);
    } else if (x != NULL && x[0] == '/') {
        n = snprintf(out, cap, "%s/webshop", x);
    } else {
        n = snprintf(out, cap, "/tmp/webshop-%lu", (unsigned long)geteuid());
    }
    return n >= 0 && (size_t)n < cap ? 0 : -1;
}

int ws_service_rpc_default_url(const char *name, char *out, size_t cap)
{
    char dir[WS_SERVICE_URL_CAP];
    int rc = ws_service_runtime_dir(dir, sizeof(dir));
    int n = snprintf(out, cap, "ipc://%s/%s", dir, name);
    return rc == 0 && n >= 0 && (size_t)n < cap ? 0 : -1;
}

ws_err ws_service_runtime_dir_ensure(const char *dir, char *why, size_t cap)
{
    struct stat st;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(why, cap, "%s cannot be made (%s)", dir, strerror(errno));
        return WS_EINVAL;
    }
    if (lstat(dir, &st) != 0) {
        snprintf(why, cap, "%s cannot be read (%s)", dir, strerror(errno));
        return WS_EINVAL;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, cap, "%s is not a directory (a symbolic link or a file)", dir);
        return WS_EINVAL;
    }
    if (st.st_uid != geteuid()) {
        snprintf(why, cap, "%s is owned by uid %lu, not by this user (uid %lu)", dir,
                 (unsigned long)st.st_uid, (unsigned long)geteuid());
        return WS_EINVAL;
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        snprintf(why, cap, "%s is group- or other-writable (mode %04o)", dir,
                 (unsigned)(st.st_mode & 07777));
        return WS_EINVAL;
    }
    return WS_OK;
}

/* An ipc:// URL's path: fits a socket address; in the runtime directory,
 * that directory is ours alone. */
static ws_err service_ipc_check(const char *prog, const char *flag, const char *url)
{
    const char *path = url + 6;
    size_t len = strlen(path);
    if (len == 0 || len > WS_SERVICE_IPC_PATH_MAX) {
        return service_tls_fail(
            prog, flag,
            "%s: the socket path is %zu bytes, expected 1..%d (what a "
            "socket address holds): use a shorter path (the default's "
            "directory: WEBSHOP_RUNTIME_DIR)",
            url, len, WS_SERVICE_IPC_PATH_MAX);
    }
    char dir[WS_SERVICE_URL_CAP];
    const char *slash = strrchr(path, '/');
    if (slash == NULL || ws_service_runtime_dir(dir, sizeof(dir)) != 0 ||
        (size_t)(slash - path) != strlen(dir) ||
        strncmp(path, dir, (size_t)(slash - path)) != 0) {
        return WS_OK;
    }
    char why[WS_SERVICE_URL_CAP + 128];
    if (ws_service_runtime_dir_ensure(dir, why, sizeof(why)) != WS_OK) {
        return service_tls_fail(prog, flag,
                                "%s: the runtime directory %s: another user could put a "
                                "socket there; make it yours and 0700, or set "
                                "WEBSHOP_RUNTIME_DIR to a private directory",
                                url, why);
    }
    return WS_OK;
}

/* Whether a process listens on the Unix socket path, read from
 * /proc/net/unix (false when it cannot be read). Not by connecting: with
 * nng 1.5 a peer that closes during the SP handshake stops the listener
 * from taking connections (nng issue #1518), and nng's own check for a
 * stale socket file, when a second server binds the path, is such a
 * connect; so a server first looks here and leaves a live one alone. */
static bool service_ipc_listening(const char *path)
{
    FILE *f = fopen("/proc/net/unix", "r");
    if (f == NULL) {
        return false;
    }
    char line[4352];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        /* Num RefCount Protocol Flags Type St Inode Path */
        unsigned long flags = 0;
        int at = 0;
        if (sscanf(line, "%*s %*s %*s %lx %*s %*s %*s %n", &flags, &at) != 1 || at == 0) {
            continue;
        }
        line[strcspn(line, "\n")] = '\0';
        found = (flags & 0x10000) != 0 /* __SO_ACCEPTCON: listening */ &&
                strcmp(line + at, path) == 0;
    }
    fclose(f);
    return found;
}

ws_err ws_service_rpc_url_check(const ws_service_rpc_tls *t, const char *prog,
                                const char *flag, const char *url)
{
    if (ws_service_url_tcp(url)) {
        if (!t->plaintext) {
            return service_tls_fail(
                prog, flag,
                "%s is plaintext: use ipc://PATH (same host) or "
                "tls+tcp:// with --rpc-tls-cert, or add --rpc-plaintext",
                url);
        }
        ws_log_warn("rpc_plaintext", "url=%s setting=--%s", url, flag);
        return WS_OK;
    }
    return strncmp(url, "ipc://", 6) == 0 ? service_ipc_check(prog, flag, url) : WS_OK;
}

void ws_service_rpc_tls_client(const ws_service_rpc_tls *t, const char *server_name,
                               ws_rpc_client_opts *co)
{
    if (t->on && co->n_urls > 0 && strncmp(co->urls[0], "tls+tcp://", 10) == 0) {
        co->tls_cert = t->cert;
        co->tls_key = t->key;
        co->tls_ca = t->ca;
        co->tls_server_name = server_name;
    }
}

ws_err ws_service_rpc_tls_listen(const ws_service_rpc_tls *t, ws_rpc_server *srv)
{
    for (size_t i = 0; i < t->n_listen; i++) {
        ws_err err = ws_rpc_server_listen_tls(srv, t->listen_url[i], t->listen_id[i],
                                              t->cert, t->key, t->listen_ca[i]);
        if (err != WS_OK) {
            return err;
        }
    }
    return WS_OK;
}

void ws_service_rpc_start_failed(const ws_service_cfg *cfg, ws_err err)
{
    const ws_service_rpc_tls *t = &cfg->rpc_tls;
    if (t->n_listen == 0) {
        ws_service_rpc_failed(cfg->conf, cfg->prog, cfg->rpc_url, err);
        return;
    }
    fprintf(stderr,
            "%s: %s%s%s--rpc-tls-listen %s: cannot listen (%s; the log's "
            "rpc_server_listen_failed names the address)\n",
            cfg->prog, cfg->rpc_url != NULL ? "--rpc-url " : "",
            cfg->rpc_url != NULL ? cfg->rpc_url : "", cfg->rpc_url != NULL ? " or " : "",
            t->listen.text, ws_strerror(err));
}
