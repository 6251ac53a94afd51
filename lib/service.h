/*
 * What every backend service process shares, so that each main.c holds only
 * its own wiring: the common settings (database, RPC server, broker,
 * credentials, bus format, the /metrics HTTP port, limits, log level,
 * shutdown bound) as one table of config options with the same names,
 * defaults and checks in every service; the steps after parsing (split the
 * broker address, set up logging); bus options built from those settings;
 * the stop-signal handling (SIGTERM/SIGINT taken by main alone with
 * sigwait, SIGPIPE ignored); the database check before start
 * (ws_service_check_store); and /readyz with the reason when not ready
 * (ws_service_route_basics).
 *
 * Nothing here knows a domain word: a service passes its own defaults
 * (database file, RPC socket name, client id, HTTP port) and help text.
 */
#ifndef WS_SERVICE_H
#define WS_SERVICE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus.h"
#include "config.h"
#include "err.h"
#include "http.h"
#include "metrics.h"
#include "db.h"
#include "rpc_client.h"
#include "rpc_server.h"

/* ---- RPC over mutual TLS (issue 20) ------------------------------------
 * The flags every RPC end shares: --rpc-tls-cert, --rpc-tls-key and
 * --rpc-tls-ca (the shop's root, which signs every server), on a server
 * also --rpc-tls-listen ID=URL (one tls+tcp:// listener per caller identity,
 * trusting only that identity's CA, DIR/ID-ca.crt with DIR --rpc-tls-ca-dir
 * or the directory of --rpc-tls-ca: tools/shop_ca's layout) and everywhere
 * --rpc-plaintext. A plain tcp:// (tcp4, tcp6) RPC URL, listened on or
 * dialed, with TLS or without, is refused unless --rpc-plaintext is given
 * (then logged rpc_plaintext, warn): same-host calls go over ipc://, which
 * file permissions guard (the socket 0600 in a private directory), calls
 * between hosts over tls+tcp://. With TLS configured a server's default
 * --rpc-url is dropped (no plain listener); an explicit one stays. Callers
 * dial tls+tcp:// URLs presenting --rpc-tls-cert and check the server's
 * name (its identity: "inventory", "order"). */

/* ---- Same-host RPC over ipc:// (issue 19) -------------------------------
 * The default RPC URLs (a server's --rpc-url, the front's --inventory-url
 * and --orders-url, the order service's --inventory-url) are sockets in a
 * per-user runtime directory: $WEBSHOP_RUNTIME_DIR when set, else
 * $XDG_RUNTIME_DIR/webshop, else /tmp/webshop-UID (UID the effective user
 * id). When a process listens on or dials a socket in that directory, it
 * is created 0700 when missing, and refused when it is not a directory
 * owned by the user or is group- or other-writable (another user could put
 * a socket of their own there). Every ipc:// path must fit a socket
 * address: at most WS_SERVICE_IPC_PATH_MAX bytes. */

/* Longest ipc:// path (sun_path holds 108 bytes with its NUL). */
#define WS_SERVICE_IPC_PATH_MAX 107
/* Room for a default RPC URL (ws_service_rpc_default_url). */
#define WS_SERVICE_URL_CAP 1024

/* The runtime directory above into out[cap], from the process
 * environment. Returns 0, or -1 when it does not fit (out then holds as
 * much as fits). Any thread; reads getenv. */
int ws_service_runtime_dir(char *out /* OUT */, size_t cap);

/* "ipc://" + the runtime directory + "/" + name ("inventory.rpc") into
 * out[cap]: a service's default RPC URL. 0, or -1 when it does not fit. */
int ws_service_rpc_default_url(const char *name, char *out /* OUT */, size_t cap);

/* The runtime directory dir: made 0700 when missing (its parent must
 * exist), then checked (a directory, not a symbolic link, owned by the
 * effective user, not writable by group or others). WS_OK, else WS_EINVAL
 * with why ("/tmp/webshop-1000 is group- or other-writable (mode 0775)")
 * in why[cap]. */
ws_err ws_service_runtime_dir_ensure(const char *dir, char *why /* OUT */, size_t cap);

/* The schemes an RPC URL that is dialed may have: tcp, tcp4, tcp6, ipc,
 * inproc and tls+tcp (NULL-ended; the choices of a WS_CONFIG_URL option). */
extern const char *const ws_service_rpc_schemes[];

/* Most --rpc-tls-listen entries. */
#define WS_SERVICE_MAX_TLS_LISTEN 16
/* Options of a server's block, and of a client-only one (the front). */
#define WS_SERVICE_N_RPC_TLS_OPTIONS        6
#define WS_SERVICE_N_RPC_TLS_CLIENT_OPTIONS 4

typedef struct ws_service_rpc_tls {
    const char *cert;      /* --rpc-tls-cert: our chain, presented both ways */
    const char *key;       /* --rpc-tls-key */
    const char *ca;        /* --rpc-tls-ca: verifies the servers we call */
    const char *ca_dir;    /* --rpc-tls-ca-dir: where ID-ca.crt are */
    ws_config_list listen; /* --rpc-tls-listen ID=URL,... */
    bool plaintext;        /* --rpc-plaintext */
    /* Set by ws_service_rpc_tls_check: */
    bool on; /* cert, key and ca given */
    size_t n_listen;
    char listen_id[WS_SERVICE_MAX_TLS_LISTEN][72];
    const char *listen_url[WS_SERVICE_MAX_TLS_LISTEN]; /* into listen's items */
    char listen_ca[WS_SERVICE_MAX_TLS_LISTEN][1024];   /* DIR/ID-ca.crt */
} ws_service_rpc_tls;

/* Write the block's options targeting t into out: WS_SERVICE_N_RPC_TLS_OPTIONS
 * for a server, WS_SERVICE_N_RPC_TLS_CLIENT_OPTIONS (no --rpc-tls-listen,
 * --rpc-tls-ca-dir) for a client only. Returns how many. */
size_t ws_service_rpc_tls_options(ws_service_rpc_tls *t, bool server,
                                  ws_config_option *out /* OUT */);

/* After a successful parse of c (logging set up): check the combination.
 * rpc_url is the server's --rpc-url target (NULL for a client only): with
 * TLS configured and --rpc-url left at its default it is set to NULL (no
 * plain listener); what remains is checked as ws_service_rpc_url_check
 * does, and an ipc:// socket another process listens on (seen in
 * /proc/net/unix, not by connecting) is refused: "PROG: --rpc-url: URL:
 * address in use (another process listens on this socket)". On a bad
 * combination prints "PROG: --FLAG: why" to stderr and returns WS_EINVAL. */
ws_err ws_service_rpc_tls_check(ws_service_rpc_tls *t, const ws_config *c,
                                const char *prog,
                                const char **rpc_url /* IN/OUT, may be NULL */);

/* Whether url is plain TCP: tcp://, tcp4:// or tcp6:// (not tls+tcp://). */
bool ws_service_url_tcp(const char *url);

/* One RPC URL this process listens on or dials (flag names the setting,
 * "rpc-url"): tcp://, tcp4:// and tcp6:// need --rpc-plaintext (logged
 * rpc_plaintext url=... setting=--FLAG, warn), else "PROG: --FLAG: URL is
 * plaintext: use ipc://PATH (same host) or tls+tcp:// with --rpc-tls-cert,
 * or add --rpc-plaintext"; an ipc:// path must fit
 * WS_SERVICE_IPC_PATH_MAX, and one in the runtime directory makes sure of
 * that directory (ws_service_runtime_dir_ensure). Other schemes pass.
 * WS_OK, or WS_EINVAL with the message printed to stderr. */
ws_err ws_service_rpc_url_check(const ws_service_rpc_tls *t, const char *prog,
                                const char *flag, const char *url);

/* The same for a list of URLs the process dials (flag names it, "orders-url"):
 * every one tls+tcp:// or none; tls+tcp:// needs TLS configured; every URL
 * then as ws_service_rpc_url_check. */
ws_err ws_service_rpc_tls_check_dial(const ws_service_rpc_tls *t, const char *prog,
                                     const char *flag, const ws_config_list *urls);

/* Fill co's TLS options when its URLs are tls+tcp:// (checked above);
 * server_name: the identity the servers must prove ("inventory"). */
void ws_service_rpc_tls_client(const ws_service_rpc_tls *t, const char *server_name,
                               ws_rpc_client_opts *co /* IN/OUT */);

/* Open srv's identity listeners (before start): ws_rpc_server_listen_tls
 * for every --rpc-tls-listen entry. */
ws_err ws_service_rpc_tls_listen(const ws_service_rpc_tls *t, ws_rpc_server *srv);

/* The common settings; written by ws_config_parse through the options of
 * ws_service_options(). Strings are owned by the ws_config. */
typedef struct ws_service_cfg {
    const char *db_path;
    const char *db_url; /* --db-url; NULL: the SQLite file db_path */
    int db_sync;        /* index into ws_service_sync_names */
    const char *rpc_url;
    int64_t rpc_contexts; /* requests in flight */
    int64_t rpc_workers;  /* handler threads; 0 = inline on nng's threads */
    int64_t rpc_readers;  /* read-only database connections of the handlers */
    int64_t rpc_max_msg;
    const char *broker;    /* host:port, checked by config */
    char broker_host[256]; /* split from broker by ws_service_configure */
    int broker_port;
    const char *client_id;
    int bus_format; /* 0 protobuf, 1 json */
    const char *username;
    const char *password;
    const char *broker_tls_ca;   /* TLS to the broker when set (ws_bus_opts) */
    const char *broker_tls_cert; /* this service's bus certificate and key */
    const char *broker_tls_key;
    int64_t bus_max_payload;
    const char *http_host;
    int http_port;
    int log_level;
    int64_t shutdown_timeout_ms;
    int64_t db_check_ms; /* budget of the quick_check at start; 0 = skip it */
    int64_t db_wait_ms;  /* how long start waits for an unreachable database server */
    int64_t replica_arg; /* --replica as parsed (0 when unset) */
    int replica;         /* set by ws_service_parse: --replica K, or -1 when not
                            given (then nothing below is in effect) */
    int64_t replica_session_ms; /* --replica-session-expiry */
    const char *share_group;    /* set by ws_service_configure: with --replica the
                                   base --client-id (all replicas of a service share
                                   it), else NULL (plain subscriptions) */
    char share_buf[128];        /* share_group's storage */
    char client_id_buf[160];    /* with --replica, client_id = "<client-id>-K" here */
    ws_service_rpc_tls rpc_tls; /* --rpc-tls-*, --rpc-plaintext (checked by
                                   ws_service_parse) */
    char rpc_url_def[WS_SERVICE_URL_CAP]; /* --rpc-url's default, when computed
                                             from ws_service_defaults.rpc_socket */
    const ws_config *conf; /* set by ws_service_parse: names settings in messages */
    const char *prog;      /* set by ws_service_parse: "webshop-inventory" */
} ws_service_cfg;

/* A service's own defaults and words for the common options. */
typedef struct ws_service_defaults {
    const char *db_path;    /* "inventory.db" */
    const char *db_url_env; /* "WEBSHOP_INVENTORY_DB_URL": the service's own
                               variable for --db-url */
    const char *rpc_url;    /* "ipc:///run/webshop/inventory.rpc", or NULL: the
                               socket rpc_socket in the runtime directory */
    const char *rpc_socket; /* "inventory.rpc" (with rpc_url NULL) */
    const char *rpc_help;   /* "where the Inventory RPC service listens" */
    const char *client_id;  /* "webshop-inventory" */
    const char *http_port;  /* "7102" */
} ws_service_defaults;

/* How many options ws_service_options() writes. */
#define WS_SERVICE_N_OPTIONS (25 + WS_SERVICE_N_RPC_TLS_OPTIONS)

/* "OFF", "NORMAL", "FULL", "EXTRA", NULL: the choices of --db-synchronous. */
extern const char *const ws_service_sync_names[];
/* "protobuf", "json", NULL: the choices of --bus-format. */
extern const char *const ws_service_format_names[];

/* Highest --replica accepted. */
#define WS_SERVICE_MAX_REPLICA 63

/* The --replica option (INT 0..WS_SERVICE_MAX_REPLICA, no default) with
 * its help, targeting *target; the front adds it to its own table, the
 * backends get it from ws_service_options. */
ws_config_option ws_service_replica_option(int64_t *target);

/* After a successful parse of c: the replica given (--replica or its
 * variable), or -1 when it was not. value is the option's target. */
int ws_service_replica(const ws_config *c, int64_t value);

/* "<base>-K" into out[cap] for replica K >= 0, base itself for -1; -1 when
 * it does not fit, or when replica >= 0 and base cannot name a share group
 * (empty, or holds '/', '+' or '#'), else 0. */
int ws_service_replica_id(const char *base, int replica, char *out /* OUT */, size_t cap);

/* Write the WS_SERVICE_N_OPTIONS common options, targeting cfg, into out
 * (room for at least that many). d and cfg must outlive the ws_config built
 * from them. Returns WS_SERVICE_N_OPTIONS. */
size_t ws_service_options(ws_service_cfg *cfg, const ws_service_defaults *d,
                          ws_config_option *out /* OUT */);

/* After a successful parse: split the broker address, apply the replica
 * (cfg->replica >= 0: client_id becomes "<client-id>-K" and share_group
 * the plain --client-id) and set the log's service name and level. On a bad
 * value prints "PROG: --broker: ..." (or --client-id) to stderr and
 * returns WS_EINVAL. */
ws_err ws_service_configure(ws_service_cfg *cfg, const char *prog, const char *service);

/* Give c the service's own environment names: "inventory" makes --http-port
 * read WEBSHOP_INVENTORY_HTTP_PORT (ws_config_set_env_prefix
 * "WEBSHOP_INVENTORY_"); options with their own .env keep it, which among
 * the common ones only --broker has (WEBSHOP_BROKER: one broker for the
 * whole shop). 0, or -1 on ENOMEM. */
int ws_service_env_prefix(ws_config *c, const char *service);

/* Parse argv with c and configure cfg, the way every service's main does it:
 * the environment names are the service's own (ws_service_env_prefix), and
 * cfg->conf and cfg->prog are set for the messages below.
 * The RPC TLS flags are checked too (ws_service_rpc_tls_check, which may
 * drop the default --rpc-url).
 * Returns -1 to go on, or the exit code for main: 0 after --help or
 * --version, 2 on a bad flag or value (the message is printed), 1 on
 * ENOMEM. */
int ws_service_parse(ws_config *c, ws_service_cfg *cfg, const char *prog,
                     const char *service, int argc, char **argv);

/* The HTTP server (--http-port) did not start with err: log listen_failed
 * (what=http setting=--http-port env=... port=... error=... reason=...) and
 * print "PROG: --http-port 8080 (WEBSHOP_INVENTORY_HTTP_PORT): address in
 * use" to stderr. The reason comes from binding host:port once more (the
 * server library only says that it failed). c may be NULL (no variable
 * named). The caller still logs start_failed. */
void ws_service_http_failed(const ws_config *c, const char *prog, const char *host,
                            int port, ws_err err);

/* The same for the RPC server (--rpc-url URL; probed when it is tcp://). */
void ws_service_rpc_failed(const ws_config *c, const char *prog, const char *url,
                           ws_err err);

/* The RPC server of cfg did not start with err: ws_service_rpc_failed for
 * the plain --rpc-url alone; with identity listeners, "PROG:
 * --rpc-tls-listen LIST: why" on stderr (the server's
 * rpc_server_listen_failed line names the listener). */
void ws_service_rpc_start_failed(const ws_service_cfg *cfg, ws_err err);

/* Bus options from cfg for one connection: client_id and clean_start are
 * the caller's (a consumer keeps a persistent session, a relay does not). */
ws_bus_opts ws_service_bus_opts(const ws_service_cfg *cfg, const char *client_id,
                                bool clean_start);

/* Bus options of the consumer: cfg->client_id with a persistent session.
 * With --replica the session lives --replica-session-expiry after the
 * connection drops (0: none, clean start), so that a replica stopped for
 * good does not keep a share of the events queued for a day; see
 * --replica-session-expiry's help. */
ws_bus_opts ws_service_consumer_bus_opts(const ws_service_cfg *cfg);

/* A readiness check for ws_http_set_ready: ctx is a ws_bus; ready while it
 * is connected with every subscription acknowledged, i.e. events published
 * now will reach this service, and holds no event for a retry. */
bool ws_service_bus_ready(void *bus);

/* The database URL to open: --db-url when given, else --db-path (a SQLite
 * file). */
const char *ws_service_db_url(const ws_service_cfg *cfg);

/* Pool options from cfg: the URL, synchronous, the client id as the
 * PostgreSQL application name, pool_size connections, the migrations, and
 * the default WAL limits. */
ws_db_opts ws_service_db_opts(const ws_service_cfg *cfg, int pool_size,
                              const ws_db_migration *m, size_t n);

/* Before anything else opens the database: check it with ws_db_check_url
 * against want_version (the last migration) within the --db-check-timeout
 * budget. WS_OK to go on, also when the budget ran out (logged
 * db_check_incomplete). WS_ESTORE when the database is damaged or newer
 * than the code (logged db_damaged url=... detail=...), cannot be read
 * (db_unreadable) or refused its URL, also printed to stderr as "PROG: URL:
 * damaged database (DETAIL); refusing to start"; main then exits 1 instead
 * of serving errors for part of its rows. WS_EUNAVAIL when the PostgreSQL
 * server does not answer within --db-wait (logged db_waiting while it
 * waits, with backoff from 100 ms to 2 s, then db_unavailable; printed):
 * main exits 1 and its supervisor starts it again. WS_ECANCELED when
 * SIGTERM or SIGINT arrived meanwhile (they must be blocked, as
 * ws_service_block_signals does): main exits 0. */
ws_err ws_service_check_db(const ws_service_cfg *cfg, const char *prog, int want_version);

/* ws_db_open with the same wait: a server that went away between the check
 * and the open (a restart) is waited for, up to --db-wait. */
ws_err ws_service_db_open(const ws_service_cfg *cfg, const ws_db_opts *opts,
                          ws_db **out /* OUT */);

/* What /readyz of a backend looks at; it and what it points to must outlive
 * the ws_http it is routed on. Any field may be NULL. */
typedef struct ws_service_ready {
    ws_bus *bus; /* the consumer: connected, every subscription acknowledged,
                    no event held for a retry (ws_bus_holding) */
    ws_db *db;   /* the service's pool: not ready while a write fails for the
                    storage (ws_db_failing), or, on PostgreSQL, while the
                    server does not answer (ws_db_check) */
} ws_service_ready;

/* Render the readiness of r as JSON into out: {"status":"ok"|"unavailable",
 * "checks":[{"name":"bus","status":...},{"name":"events","status":...},
 * {"name":"store","status":...}]}, each status "ok" or why not, e.g.
 * "not connected", "holding 3 events for 12.5 s (first on
 * public-front/order-send, 40 attempts, last error WS_EIO)", "commit failing:
 * disk full", "unavailable: could not connect to server ...". Returns true when ready.
 * Any thread. */
bool ws_service_ready_json(const ws_service_ready *r, ws_buf *out);

/* Route /metrics (of m), /healthz and /readyz on h, /readyz answering 200
 * or 503 (Retry-After: 1) with ws_service_ready_json's body. Replaces
 * ws_http_route_basics + ws_http_set_ready for a backend. Call before
 * ws_http_serve. */
void ws_service_route_basics(ws_http *h, ws_metrics *m, const ws_service_ready *r);

/* Block SIGTERM and SIGINT in the calling thread (call before starting any
 * thread, so every thread inherits the mask) and ignore SIGPIPE; *stop is
 * the set to pass to ws_service_wait. */
void ws_service_block_signals(sigset_t *stop /* OUT */);

/* At most two malloc arenas (glibc's M_ARENA_MAX; default 8 per core),
 * before any thread exists. For the backends: each arena's heap stays
 * mapped and touched, and their few threads that allocate at once are
 * served by the per-thread cache first (measured: idle RSS -0.5 MB, peak
 * -0.7 MB, the same throughput). Not for the front, whose 64 HTTP threads
 * allocate at once. */
void ws_service_limit_arenas(void);

/* Wait for a stop signal; returns its number. */
int ws_service_wait(const sigset_t *stop);

/* "SIGTERM", "SIGINT", ... for a signal number (the one spelling every
 * service logs, as signal=NAME); "SIG?" for anything else. */
const char *ws_service_signal_name(int sig);

#endif
