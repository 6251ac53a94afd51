/*
 * webshopctl: a command-line client for the webshop's RPC and bus, in the
 * spirit of grpcurl.
 *
 *   webshopctl call URL /webshop.v1.Inventory/GetCatalog '{}'   (JSON or stdin)
 *   webshopctl list URL                                          (reflection)
 *   webshopctl describe URL webshop.v1.Order                     (reflection)
 *   webshopctl publish TOPIC '{"orderId": "..."}'                (JSON or stdin)
 *   webshopctl watch                                             (every topic)
 *
 * Request and event JSON is the proto3 JSON mapping (lib/json.h). call and
 * describe know no RPC type at compile time: they take the server's own
 * descriptors through reflection, or --protoset / --proto files, and build
 * the types at run time (webshopctl_reflect.h), so they work with any
 * service that serves reflection. Event types come from the contracts
 * (webshopctl_types.h). Output is JSON on
 * stdout: one object for call, one line {"topic": ..., "event": ...} per
 * event for watch. Every failure prints one line "webshopctl: ..." on stderr
 * and exits non-zero: 2 for a usage error, 1 for anything else (an RPC
 * status other than OK included; its name and message are printed).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "bus.h"
#include "config.h"
#include "json.h"
#include "log.h"
#include "rpc_client.h"
#include "service.h"
#include "webshop/v1/rpc.rpc.h"
#include "webshopctl_reflect.h"
#include "webshopctl_types.h"

#define WSCTL_EXIT_FAIL  1
#define WSCTL_EXIT_USAGE 2
#define WSCTL_MAX_INPUT  (1u << 20)

typedef struct wsctl_opts {
    const char *broker;  /* host:port */
    int64_t deadline_ms; /* RPC deadline, broker connect and PUBACK wait */
    int format;          /* bus payload format: index into wsctl_formats */
    bool camel;          /* lowerCamelCase JSON names on output */
    bool defaults;       /* also print fields holding default values */
    int64_t count;       /* watch: stop after this many events; 0 = never */
    int64_t duration_ms; /* watch: stop after this long; 0 = never */
    const char *client_id;
    const char *username;
    const char *password;
    const char *broker_tls_ca, *broker_tls_cert, *broker_tls_key; /* bus over TLS */
    const char *log_level;
    wsctl_types_src types; /* --protoset, --proto, --import-path */
    const char *cert;      /* --cert: mutual TLS on RPC (the admin identity) */
    const char *key;       /* --key */
    const char *ca;        /* --ca: the shop's root */
    const char *server_name; /* --server-name; default from the service called */
    bool plaintext;          /* --plaintext: plain tcp:// allowed */
} wsctl_opts;

static const char *const wsctl_formats[] = {"protobuf", "json", NULL};

static int wsctl_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int wsctl_fail(const char *fmt, ...)
{
    va_list ap;

    fputs("webshopctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return WSCTL_EXIT_FAIL;
}

static unsigned wsctl_json_flags(const wsctl_opts *o)
{
    return (o->camel ? WS_JSON_CAMEL : 0u) | (o->defaults ? WS_JSON_DEFAULTS : 0u);
}

/* The JSON argument, or stdin when it is absent or "-". *text is malloc'ed. */
static int wsctl_input_read(const char *arg, char **text, size_t *len)
{
    ws_buf b;
    char chunk[4096];
    size_t n;

    ws_buf_init(&b, WSCTL_MAX_INPUT);
    if (arg != NULL && strcmp(arg, "-") != 0) {
        if (ws_buf_puts(&b, arg) != WS_OK) {
            ws_buf_fini(&b);
            return wsctl_fail("request JSON is larger than %u bytes", WSCTL_MAX_INPUT);
        }
    } else {
        while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0) {
            if (ws_buf_append(&b, chunk, n) != WS_OK) {
                ws_buf_fini(&b);
                return wsctl_fail("JSON on stdin is larger than %u bytes",
                                  WSCTL_MAX_INPUT);
            }
        }
        if (ferror(stdin)) {
            ws_buf_fini(&b);
            return wsctl_fail("reading stdin: %s", strerror(errno));
        }
    }
    if (ws_buf_putc(&b, '\0') != WS_OK) {
        ws_buf_fini(&b);
        return wsctl_fail("out of memory");
    }
    *text = ws_buf_steal(&b, len);
    (*len)--; /* the NUL */
    ws_buf_fini(&b);
    return 0;
}

/* Decode JSON input (argument or stdin) as desc; blank input is "{}". */
static int wsctl_input_decode(const char *arg, const ProtobufCMessageDescriptor *desc,
                              const char *what, ProtobufCMessage **msg)
{
    char *text = NULL;
    size_t len = 0;
    ws_json_error jerr;
    ws_err err;
    int rc = wsctl_input_read(arg, &text, &len);

    if (rc != 0) {
        return rc;
    }
    if (strspn(text, " \t\r\n") == len) {
        /* No input at all means the empty message, as grpcurl does. */
        free(text);
        text = strdup("{}");
        len = 2;
        if (text == NULL) {
            return wsctl_fail("out of memory");
        }
    }
    err = ws_json_decode(desc, text, len, NULL, msg, &jerr);
    free(text);
    if (err != WS_OK) {
        return wsctl_fail("%s is not a valid %s: %s", what, desc->name,
                          err == WS_EPARSE ? jerr.text : ws_strerror(err));
    }
    return 0;
}

/* Print msg as one JSON line on stdout. */
static int wsctl_print_json(const ProtobufCMessage *msg, unsigned flags)
{
    ws_buf b;
    ws_err err;

    ws_buf_init(&b, 0);
    err = ws_json_encode(msg, flags, &b);
    if (err != WS_OK) {
        ws_buf_fini(&b);
        return wsctl_fail("cannot print the response as JSON: %s", ws_strerror(err));
    }
    fwrite(b.data ? b.data : "{}", 1, b.data ? b.len : 2, stdout);
    fputc('\n', stdout);
    ws_buf_fini(&b);
    if (fflush(stdout) != 0) {
        return wsctl_fail("writing stdout: %s", strerror(errno));
    }
    return 0;
}

/* The identity a server of service ("webshop.v1.Orders") proves: --server-name,
 * else the shop's name for it, else NULL. */
static const char *wsctl_server_name(const wsctl_opts *o, const char *service)
{
    static const char *const known[][2] = {
        {"webshop.v1.Inventory", "inventory"},
        {"webshop.v1.Orders", "order"},
    };
    if (o->server_name != NULL) {
        return o->server_name;
    }
    for (size_t i = 0; service != NULL && i < sizeof(known) / sizeof(known[0]); i++) {
        size_t n = strlen(known[i][0]);
        if (strncmp(service, known[i][0], n) == 0 &&
            (service[n] == '\0' || service[n] == '.')) {
            return known[i][1];
        }
    }
    return NULL;
}

/* The service's identity ("inventory", "order") for service (a full
 * name), or NULL. */
static const char *wsctl_service_identity(const char *service)
{
    wsctl_opts none = {0};
    return wsctl_server_name(&none, service);
}

/* "inventory" or "order" means that service's default socket,
 * ipc://RUNTIME_DIR/NAME.rpc (ws_service_rpc_default_url), as does no URL
 * (url NULL) for a method of webshop.v1.Inventory or Orders; "host:port"
 * without a scheme means tcp://host:port, or tls+tcp://host:port with
 * --cert. Plain tcp:// needs --plaintext. A tls+tcp:// URL presents --cert
 * and checks the server's name (service, when given, names the default). */
static int wsctl_client_open(const wsctl_opts *o, const char *url, const char *service,
                             ws_rpc_client **c)
{
    char full[WS_SERVICE_URL_CAP];
    const char *u = url;
    ws_rpc_client_opts co = {.urls = &u, .n_urls = 1};
    ws_err err;

    const char *id = url == NULL ? wsctl_service_identity(service) : url;
    if (id == NULL) {
        fprintf(stderr, "webshopctl: no URL: give one for %s\n", service);
        return WSCTL_EXIT_USAGE;
    }
    if (strcmp(id, "inventory") == 0 || strcmp(id, "order") == 0) {
        char name[32];
        snprintf(name, sizeof(name), "%s.rpc", id);
        if (ws_service_rpc_default_url(name, full, sizeof(full)) != 0) {
            return wsctl_fail("the runtime directory is too long for %s", name);
        }
        u = full;
    } else if (strstr(url, "://") == NULL) {
        if (snprintf(full, sizeof(full), "%s://%s", o->cert != NULL ? "tls+tcp" : "tcp",
                     url) >= (int)sizeof(full)) {
            return wsctl_fail("URL too long: %s", url);
        }
        u = full;
    }
    if (ws_service_url_tcp(u) && !o->plaintext && o->cert == NULL) {
        fprintf(
            stderr,
            "webshopctl: %s is plaintext: use ipc:// (same host; \"inventory\" and "
            "\"order\" name the services' default sockets) or tls+tcp:// with --cert, "
            "or add --plaintext\n",
            u);
        return WSCTL_EXIT_USAGE;
    }
    if (strncmp(u, "tls+tcp://", 10) == 0) {
        if (o->cert == NULL) {
            fprintf(stderr, "webshopctl: %s: tls+tcp:// needs --cert, --key and --ca\n",
                    u);
            return WSCTL_EXIT_USAGE;
        }
        co.tls_server_name = wsctl_server_name(o, service);
        if (co.tls_server_name == NULL) {
            fprintf(stderr,
                    "webshopctl: --server-name: needed for %s (the server's "
                    "identity: inventory, order)\n",
                    u);
            return WSCTL_EXIT_USAGE;
        }
        co.tls_cert = o->cert;
        co.tls_key = o->key;
        co.tls_ca = o->ca;
    } else if (o->cert != NULL) {
        fprintf(stderr, "webshopctl: --cert: only with a tls+tcp:// URL, got %s\n", u);
        return WSCTL_EXIT_USAGE;
    }
    err = ws_rpc_client_open(&co, c);
    if (err != WS_OK) {
        return wsctl_fail("cannot use RPC URL %s: %s", u, ws_strerror(err));
    }
    return 0;
}

/* Whether src names files (--protoset, --proto): no reflection call. */
static bool wsctl_types_local(const wsctl_types_src *src)
{
    return src->protoset != NULL || src->proto != NULL;
}

static int wsctl_cmd_call(const wsctl_opts *o, char *const *args, size_t n)
{
    char service[256], method[128], path[400], why[512];
    /* Without a URL (METHOD first): the service's default socket. */
    size_t skip = n > 0 && args[0][0] == '/' ? 0 : 1;
    const char *url = skip ? (n > 0 ? args[0] : NULL) : NULL;
    if (n < 1 + skip || n > 2 + skip) {
        fprintf(stderr, "webshopctl: usage: webshopctl call [URL] METHOD [JSON|-]\n");
        return WSCTL_EXIT_USAGE;
    }
    const char *full_method = args[skip];
    const char *input = n == 2 + skip ? args[1 + skip] : NULL;
    if (!wsctl_method_split(full_method, service, sizeof(service), method,
                            sizeof(method))) {
        fprintf(stderr, "webshopctl: %s: expected /package.Service/Method\n",
                full_method);
        return WSCTL_EXIT_USAGE;
    }
    snprintf(path, sizeof(path), "/%s/%s", service, method);
    /* Types from files first: a client closed while its connection is
     * still in the SP handshake stops nng 1.5's listener from accepting
     * (nng issue #1518), so never dial only to give up at once. */
    ws_proto_dyn *types = NULL;
    if (wsctl_types_local(&o->types)) {
        types = wsctl_types_load(&o->types, NULL, 0, service, why, sizeof(why));
        if (types == NULL) {
            return wsctl_fail("%s", why);
        }
    }
    ws_rpc_client *c = NULL;
    int rc = wsctl_client_open(o, url, service, &c);
    if (rc != 0) {
        ws_proto_dyn_free(types);
        return rc;
    }
    if (types == NULL) {
        types = wsctl_types_load(&o->types, c, (uint32_t)o->deadline_ms, service, why,
                                 sizeof(why));
    }
    const ProtobufCServiceDescriptor *sd =
        types ? ws_proto_dyn_service(types, service) : NULL;
    const ProtobufCMethodDescriptor *m =
        sd ? protobuf_c_service_descriptor_get_method_by_name(sd, method) : NULL;
    if (m == NULL) {
        ws_rpc_client_close(c);
        ws_proto_dyn_free(types);
        return types == NULL ? wsctl_fail("%s", why)
                             : wsctl_fail("%s has no method %s", service, method);
    }
    ProtobufCMessage *req = NULL, *resp = NULL;
    rc = wsctl_input_decode(input, m->input, "request", &req);
    if (rc == 0) {
        char msg[WS_RPC_MSG_LEN] = "";
        ws_rpc_code code = ws_rpc_client_call(c, path, req, m->output, &resp,
                                              (uint32_t)o->deadline_ms, msg, sizeof(msg));
        if (code != WS_RPC_OK) {
            rc = wsctl_fail("%s: %s%s%s", path, ws_rpc_code_name(code),
                            msg[0] ? ": " : "", msg);
        } else {
            rc = wsctl_print_json(resp, wsctl_json_flags(o));
        }
    }
    if (resp != NULL) {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    if (req != NULL) {
        protobuf_c_message_free_unpacked(req, NULL);
    }
    ws_rpc_client_close(c);
    ws_proto_dyn_free(types);
    return rc;
}

static int wsctl_cmd_describe(const wsctl_opts *o, char *const *args, size_t n)
{
    char why[512];
    if (n != 2) {
        fprintf(stderr, "webshopctl: usage: webshopctl describe URL SYMBOL\n");
        return WSCTL_EXIT_USAGE;
    }
    const char *sym = args[1][0] == '.' ? args[1] + 1 : args[1];
    ws_rpc_client *c = NULL;
    /* With types from files no call is made: no dial (see wsctl_cmd_call). */
    int rc = wsctl_types_local(&o->types) ? 0 : wsctl_client_open(o, args[0], sym, &c);
    if (rc != 0) {
        return rc;
    }
    ws_proto_dyn *types =
        wsctl_types_load(&o->types, c, (uint32_t)o->deadline_ms, sym, why, sizeof(why));
    ws_rpc_client_close(c);
    if (types == NULL) {
        return wsctl_fail("%s", why);
    }
    wsctl_describe(types, sym, stdout);
    ws_proto_dyn_free(types);
    if (fflush(stdout) != 0) {
        return wsctl_fail("writing stdout: %s", strerror(errno));
    }
    return 0;
}

static int wsctl_cmd_list(const wsctl_opts *o, char *const *args, size_t n)
{
    Webshop__V1__ListServicesRequest req = WEBSHOP__V1__LIST_SERVICES_REQUEST__INIT;
    Webshop__V1__ListServicesResponse *resp = NULL;
    ws_rpc_client *c = NULL;
    char msg[WS_RPC_MSG_LEN] = "";
    ws_rpc_code code;
    int rc;

    if (n != 1) {
        fprintf(stderr, "webshopctl: usage: webshopctl list URL\n");
        return WSCTL_EXIT_USAGE;
    }
    rc = wsctl_client_open(o, args[0], NULL, &c);
    if (rc != 0) {
        return rc;
    }
    code = webshop_v1_reflection_list_services_ex(
        c, &req, &resp, (uint32_t)o->deadline_ms, msg, sizeof(msg));
    ws_rpc_client_close(c);
    if (code != WS_RPC_OK) {
        return wsctl_fail("%s: %s%s%s", WEBSHOP_V1_REFLECTION_LIST_SERVICES_METHOD,
                          ws_rpc_code_name(code), msg[0] ? ": " : "", msg);
    }
    for (size_t i = 0; i < resp->n_services; i++) {
        const Webshop__V1__ServiceInfo *s = resp->services[i];

        printf("%s\n", s->name);
        for (size_t j = 0; j < s->n_methods; j++) {
            printf("  /%s/%s(%s) returns (%s)\n", s->name, s->methods[j]->name,
                   s->methods[j]->input_type, s->methods[j]->output_type);
        }
    }
    webshop__v1__list_services_response__free_unpacked(resp, NULL);
    if (fflush(stdout) != 0) {
        return wsctl_fail("writing stdout: %s", strerror(errno));
    }
    return 0;
}

/* Open a bus client on --broker and wait for the connection. */
static int wsctl_bus_open(const wsctl_opts *o, const char *role, ws_bus **bus)
{
    char host[256];
    char id[128];
    const char *colon = strrchr(o->broker, ':');
    ws_bus_opts bo;
    ws_err err;
    size_t hlen;

    if (colon == NULL || colon == o->broker) {
        return wsctl_fail("--broker: expected host:port, got \"%s\"", o->broker);
    }
    hlen = (size_t)(colon - o->broker);
    if (o->broker[0] == '[' && hlen >= 2 && o->broker[hlen - 1] == ']') {
        memcpy(host, o->broker + 1, hlen - 2 < sizeof(host) ? hlen - 2 : 0);
        host[hlen - 2 < sizeof(host) ? hlen - 2 : 0] = '\0';
    } else {
        if (hlen >= sizeof(host)) {
            return wsctl_fail("--broker: host too long");
        }
        memcpy(host, o->broker, hlen);
        host[hlen] = '\0';
    }
    if (o->client_id != NULL) {
        snprintf(id, sizeof(id), "%s", o->client_id);
    } else {
        snprintf(id, sizeof(id), "webshopctl-%s-%ld", role, (long)getpid());
    }
    memset(&bo, 0, sizeof(bo));
    bo.host = host;
    bo.port = atoi(colon + 1);
    bo.client_id = id;
    bo.clean_start = o->client_id == NULL;
    bo.session_expiry = o->client_id == NULL ? 1 : 0;
    bo.username = o->username;
    bo.password = o->password;
    bo.tls_ca = o->broker_tls_ca;
    bo.tls_cert = o->broker_tls_cert;
    bo.tls_key = o->broker_tls_key;
    bo.format = o->format == 1 ? WS_BUS_JSON : WS_BUS_PROTOBUF;
    err = ws_bus_open(&bo, bus);
    if (err != WS_OK) {
        return wsctl_fail("cannot create a bus client for %s: %s", o->broker,
                          ws_strerror(err));
    }
    return 0;
}

static int wsctl_bus_connect(const wsctl_opts *o, ws_bus *bus)
{
    ws_err err = ws_bus_start(bus);

    if (err == WS_OK) {
        err = ws_bus_wait_connected(bus, (uint32_t)o->deadline_ms);
    }
    if (err != WS_OK) {
        return wsctl_fail("cannot connect to the broker at %s: %s", o->broker,
                          ws_strerror(err));
    }
    return 0;
}

static void wsctl_topics_print(FILE *out)
{
    size_t n;
    const wsctl_topic *t = wsctl_topics(&n);

    fputs("known topics:\n", out);
    for (size_t i = 0; i < n; i++) {
        fprintf(out, "  %-30s %s\n", t[i].topic, t[i].desc->name);
    }
}

static int wsctl_cmd_publish(const wsctl_opts *o, char *const *args, size_t n)
{
    const ProtobufCMessageDescriptor *desc;
    ProtobufCMessage *msg = NULL;
    ws_bus *bus = NULL;
    ws_err err;
    int rc;

    if (n < 1 || n > 2) {
        fprintf(stderr, "webshopctl: usage: webshopctl publish TOPIC [JSON|-]\n");
        return WSCTL_EXIT_USAGE;
    }
    desc = wsctl_topic_find(args[0]);
    if (desc == NULL) {
        wsctl_fail("unknown topic %s", args[0]);
        wsctl_topics_print(stderr);
        return WSCTL_EXIT_USAGE;
    }
    rc = wsctl_input_decode(n == 2 ? args[1] : NULL, desc, "event", &msg);
    if (rc != 0) {
        return rc;
    }
    rc = wsctl_bus_open(o, "publish", &bus);
    if (rc == 0) {
        rc = wsctl_bus_connect(o, bus);
    }
    if (rc == 0) {
        err = ws_bus_publish(bus, args[0], msg, (uint32_t)o->deadline_ms);
        if (err != WS_OK) {
            rc = wsctl_fail("publish on %s: %s", args[0], ws_strerror(err));
        }
    }
    ws_bus_close(bus);
    protobuf_c_message_free_unpacked(msg, NULL);
    return rc;
}

typedef struct wsctl_watch {
    unsigned flags;
    atomic_llong seen;
    atomic_int failed; /* writing stdout failed */
} wsctl_watch;

/* On the bus's network thread: one line per event. */
static ws_err wsctl_watch_on_event(void *ctx, const ProtobufCMessage *msg,
                                   const ws_bus_msg_info *info)
{
    wsctl_watch *w = ctx;
    ws_buf b;
    ws_err err;

    ws_buf_init(&b, 0);
    err = ws_buf_puts(&b, "{\"topic\":\"");
    if (err == WS_OK) {
        err = ws_buf_puts(&b, info->topic); /* our topics need no escaping */
    }
    if (err == WS_OK) {
        err = ws_buf_puts(&b, "\",\"event\":");
    }
    if (err == WS_OK) {
        err = ws_json_encode(msg, w->flags, &b);
    }
    if (err == WS_OK) {
        err = ws_buf_puts(&b, "}\n");
    }
    if (err == WS_OK) {
        if (fwrite(b.data, 1, b.len, stdout) != b.len || fflush(stdout) != 0) {
            atomic_store(&w->failed, 1);
            err = WS_EIO;
        }
    }
    ws_buf_fini(&b);
    atomic_fetch_add(&w->seen, 1);
    return err;
}

static int wsctl_cmd_watch(const wsctl_opts *o, char *const *args, size_t n)
{
    wsctl_watch w;
    size_t nt;
    const wsctl_topic *t = wsctl_topics(&nt);
    ws_bus *bus = NULL;
    sigset_t sigs;
    struct timespec tick = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
    struct timespec start;
    ws_err err;
    int rc;

    (void)args;
    if (n != 0) {
        fprintf(stderr, "webshopctl: usage: webshopctl watch\n");
        return WSCTL_EXIT_USAGE;
    }
    memset(&w, 0, sizeof(w));
    w.flags = wsctl_json_flags(o);
    /* Block the stop signals before the bus thread exists, so only
     * sigtimedwait below receives them. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    rc = wsctl_bus_open(o, "watch", &bus);
    for (size_t i = 0; rc == 0 && i < nt; i++) {
        err = ws_bus_subscribe(bus, t[i].topic, t[i].desc, wsctl_watch_on_event, &w);
        if (err != WS_OK) {
            rc = wsctl_fail("subscribe to %s: %s", t[i].topic, ws_strerror(err));
        }
    }
    if (rc == 0) {
        rc = wsctl_bus_connect(o, bus);
    }
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (rc == 0) {
        struct timespec now;
        int64_t elapsed;

        if (sigtimedwait(&sigs, NULL, &tick) > 0) {
            break;
        }
        if (atomic_load(&w.failed)) {
            rc = wsctl_fail("writing stdout failed; stopping");
            break;
        }
        if (o->count > 0 && atomic_load(&w.seen) >= o->count) {
            break;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        elapsed = (int64_t)(now.tv_sec - start.tv_sec) * 1000 +
                  (now.tv_nsec - start.tv_nsec) / 1000000;
        if (o->duration_ms > 0 && elapsed >= o->duration_ms) {
            break;
        }
    }
    ws_bus_close(bus);
    return rc;
}

static void wsctl_usage(FILE *out)
{
    fputs(
        "Commands:\n"
        "  webshopctl call [URL] METHOD [JSON|-] call an RPC method, print the response\n"
        "  webshopctl list URL                   list a server's services (reflection)\n"
        "  webshopctl describe URL SYMBOL        print a service, method, message or "
        "enum\n"
        "                                        as .proto (the server's descriptors)\n"
        "  webshopctl publish TOPIC [JSON|-]     publish an event on the bus\n"
        "  webshopctl watch                      print every event, one JSON line each\n"
        "URL: ipc:///path; inventory or order (that service's default socket,\n"
        "ipc://RUNTIME/inventory.rpc with RUNTIME $WEBSHOP_RUNTIME_DIR, else\n"
        "$XDG_RUNTIME_DIR/webshop, else /tmp/webshop-UID; call without a URL: the one\n"
        "of the method's service); tls+tcp://host:port (mutual TLS: --cert, --key,\n"
        "--ca; the server's name is its identity, inferred for call and describe of\n"
        "webshop.v1.Inventory/Orders, else --server-name); tcp://host:port (plaintext:\n"
        "only with --plaintext); or host:port (tls+tcp with --cert, else tcp).\n"
        "JSON from stdin when absent or -.\n"
        "call and describe take their types from the server (reflection), or from\n"
        "--protoset FILE (protoc --include_imports -o FILE) or --proto FILE\n"
        "[--import-path DIR:DIR] when it serves none.\n",
        out);
    wsctl_topics_print(out);
}

int main(int argc, char **argv)
{
    wsctl_opts o;
    const ws_config_option opts[] = {
        {.name = "broker",
         .type = WS_CONFIG_HOSTPORT,
         .def = "127.0.0.1:1883",
         .help = "MQTT broker for publish and watch",
         .target.str = &o.broker},
        {.name = "deadline",
         .type = WS_CONFIG_DURATION,
         .def = "5s",
         .help = "RPC deadline; also the broker connect and PUBACK wait",
         .target.i64 = &o.deadline_ms,
         .min = 1,
         .max = 3600000},
        {.name = "format",
         .type = WS_CONFIG_ENUM,
         .def = "protobuf",
         .help = "payload format of publish: protobuf or json",
         .target.i = &o.format,
         .choices = wsctl_formats},
        {.name = "camel",
         .type = WS_CONFIG_BOOL,
         .def = "false",
         .help = "print lowerCamelCase JSON names (default: proto names)",
         .target.b = &o.camel},
        {.name = "emit-defaults",
         .type = WS_CONFIG_BOOL,
         .def = "false",
         .help = "print fields that hold their default value",
         .target.b = &o.defaults},
        {.name = "count",
         .type = WS_CONFIG_INT,
         .def = "0",
         .help = "watch: exit after this many events (0 = never)",
         .target.i64 = &o.count,
         .min = 0,
         .max = INT64_MAX},
        {.name = "duration",
         .type = WS_CONFIG_DURATION,
         .def = "0",
         .help = "watch: exit after this long (0 = never)",
         .target.i64 = &o.duration_ms,
         .min = 0,
         .max = INT64_MAX},
        {.name = "client-id",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "MQTT client id (default: a fresh one with a clean session)",
         .target.str = &o.client_id},
        {.name = "username",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "MQTT username",
         .target.str = &o.username},
        {.name = "password",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "MQTT password",
         .target.str = &o.password,
         .flags = WS_CONFIG_FROM_FILE | WS_CONFIG_SECRET},
        {.name = "broker-tls-ca",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "CA file: TLS 1.2+ to the broker, verifying it (none: plain TCP)",
         .target.str = &o.broker_tls_ca},
        {.name = "broker-tls-cert",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "client certificate for the broker (the admin identity)",
         .target.str = &o.broker_tls_cert},
        {.name = "broker-tls-key",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "key of --broker-tls-cert",
         .target.str = &o.broker_tls_key},
        {.name = "protoset",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "call/describe: types from this descriptor set instead of reflection",
         .target.str = &o.types.protoset,
         .metavar = "FILE"},
        {.name = "proto",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "call/describe: types from this .proto (compiled with protoc)",
         .target.str = &o.types.proto,
         .metavar = "FILE"},
        {.name = "import-path",
         .type = WS_CONFIG_STRING,
         .def = NULL,
         .help = "with --proto: where imports are found, DIR[:DIR...] (default .)",
         .target.str = &o.types.import_path,
         .metavar = "DIRS"},
        {.name = "cert",
         .type = WS_CONFIG_STRING,
         .help = "RPC over mutual TLS: our certificate and its chain (PEM; the admin "
                 "identity: tools/shop_ca's admin.crt)",
         .target.str = &o.cert,
         .metavar = "PATH"},
        {.name = "key",
         .type = WS_CONFIG_STRING,
         .help = "the unencrypted PEM key of --cert",
         .target.str = &o.key,
         .metavar = "PATH"},
        {.name = "ca",
         .type = WS_CONFIG_STRING,
         .help = "the shop's root CA (PEM, ca.crt) the server must chain to",
         .target.str = &o.ca,
         .metavar = "PATH"},
        {.name = "server-name",
         .type = WS_CONFIG_STRING,
         .help = "the identity the server must present (default: inventory or order, "
                 "from the service called)",
         .target.str = &o.server_name,
         .metavar = "NAME"},
        {.name = "plaintext",
         .type = WS_CONFIG_BOOL,
         .def = "false",
         .help = "allow a plain tcp:// URL (or host:port without --cert): RPC in the "
                 "clear; same-host calls go over ipc://, others over tls+tcp://",
         .target.b = &o.plaintext},
        {.name = "log-level",
         .type = WS_CONFIG_STRING,
         .def = "error",
         .help = "runtime log level on stderr: debug, info, warn, error",
         .target.str = &o.log_level},
    };
    ws_config *cfg;
    char *const *args;
    size_t nargs = 0;
    int level;
    int rc;

    memset(&o, 0, sizeof(o));
    cfg = ws_config_new("webshopctl", "0.1.0",
                        "Command-line client for the webshop's RPC and event bus.", opts,
                        sizeof(opts) / sizeof(opts[0]));
    if (cfg == NULL) {
        return wsctl_fail("out of memory");
    }
    ws_config_allow_args(cfg, true);
    switch (ws_config_parse(cfg, argc, argv, NULL)) {
    case WS_CONFIG_OK:
        break;
    case WS_CONFIG_EXIT:
        if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
            wsctl_usage(stdout);
        }
        ws_config_free(cfg);
        return 0;
    default:
        fprintf(stderr, "webshopctl: %s\n", ws_config_error(cfg));
        ws_config_free(cfg);
        return WSCTL_EXIT_USAGE;
    }
    level = ws_log_level_parse(o.log_level);
    if (level < 0) {
        fprintf(stderr,
                "webshopctl: --log-level: expected debug, info, warn or error, "
                "got \"%s\"\n",
                o.log_level);
        ws_config_free(cfg);
        return WSCTL_EXIT_USAGE;
    }
    int n_tls = (o.cert != NULL) + (o.key != NULL) + (o.ca != NULL);
    if (n_tls != 0 && n_tls != 3) {
        fprintf(stderr, "webshopctl: --cert, --key and --ca go together\n");
        ws_config_free(cfg);
        return WSCTL_EXIT_USAGE;
    }
    if (o.types.protoset != NULL && o.types.proto != NULL) {
        fprintf(stderr, "webshopctl: --protoset and --proto exclude each other\n");
        ws_config_free(cfg);
        return WSCTL_EXIT_USAGE;
    }
    ws_log_set_level((ws_log_level)level);
    ws_log_set_service("webshopctl");
    args = ws_config_args(cfg, &nargs);
    if (nargs == 0) {
        fprintf(stderr, "webshopctl: no command (see --help)\n");
        rc = WSCTL_EXIT_USAGE;
    } else if (strcmp(args[0], "call") == 0) {
        rc = wsctl_cmd_call(&o, args + 1, nargs - 1);
    } else if (strcmp(args[0], "describe") == 0) {
        rc = wsctl_cmd_describe(&o, args + 1, nargs - 1);
    } else if (strcmp(args[0], "list") == 0) {
        rc = wsctl_cmd_list(&o, args + 1, nargs - 1);
    } else if (strcmp(args[0], "publish") == 0) {
        rc = wsctl_cmd_publish(&o, args + 1, nargs - 1);
    } else if (strcmp(args[0], "watch") == 0) {
        rc = wsctl_cmd_watch(&o, args + 1, nargs - 1);
    } else {
        fprintf(stderr, "webshopctl: unknown command \"%s\" (see --help)\n", args[0]);
        rc = WSCTL_EXIT_USAGE;
    }
    ws_config_free(cfg);
    return rc;
}
