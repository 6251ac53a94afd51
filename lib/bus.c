/*
 * The MQTT v5 event bus over libmosquitto 2.0 (see bus.h for the contract):
 * the session. Opening and closing a bus, its network thread, connecting
 * and reconnecting, and readiness. The other jobs live in their own files
 * (bus_int.h lists them).
 *
 * The bus runs its own network thread around mosquitto_loop() instead of
 * mosquitto_loop_start(), for three reasons: libmosquitto's built-in
 * reconnect delay has a granularity of whole seconds (the contract is
 * 100 ms doubling to 5 s); every (re)connect goes through
 * mosquitto_connect_bind_v5() with our CONNECT properties, so the session
 * expiry interval is sent on every reconnect whatever the library version
 * (eclipse/mosquitto #1846); and close can wake the backoff sleep at once.
 *
 * Locking: bus->mu guards the subscription list, the publish waiters and the
 * connection state. It is taken inside libmosquitto callbacks (which hold
 * only libmosquitto's callback mutex), never held across a publish or a log
 * call, and released while user handlers and async publish callbacks run.
 * While messages are held for a retry the thread does not read (bus_hold.c).
 */
#include "bus.h"
#include "bus_int.h"

#include <errno.h>
#include <mqtt_protocol.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "fault.h"
#include "log.h"

#define BUS_DEFAULT_HOST         "127.0.0.1"
#define BUS_DEFAULT_PORT         1883
#define BUS_DEFAULT_KEEPALIVE    30
#define BUS_DEFAULT_EXPIRY       86400u
#define BUS_DEFAULT_MAX_PAYLOAD  (256u * 1024u)
#define BUS_DEFAULT_MAX_INFLIGHT 1000
#define BUS_BACKOFF_MIN_MS       100
#define BUS_BACKOFF_MAX_MS       5000
#define BUS_LOOP_TIMEOUT_MS      100

/* libmosquitto's global state, held while any bus is open: init with the
 * first, cleanup with the last (libmosquitto 2.0 keeps an OpenSSL UI method
 * from its first TLS connection until mosquitto_lib_cleanup). Not at exit:
 * OpenSSL's own atexit cleanup may already have run by then. */
static pthread_mutex_t bus_lib_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned bus_lib_users;

static void bus_lib_acquire(void)
{
    pthread_mutex_lock(&bus_lib_mu);
    if (bus_lib_users++ == 0) {
        mosquitto_lib_init();
    }
    pthread_mutex_unlock(&bus_lib_mu);
}

static void bus_lib_release(void)
{
    pthread_mutex_lock(&bus_lib_mu);
    if (bus_lib_users > 0 && --bus_lib_users == 0) {
        mosquitto_lib_cleanup();
    }
    pthread_mutex_unlock(&bus_lib_mu);
}

/* libmosquitto 2.0 initialises its TLS globals (an OpenSSL UI method) on a
 * process's first TLS connect without a lock: two buses connecting at once
 * both make one, and one leaks. TLS connects are serialised until one has
 * succeeded; after that the globals exist and connects run in parallel. */
static pthread_mutex_t bus_tls_first_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool bus_tls_inited;

static int bus_connect(ws_bus *bus)
{
    bool serial = bus->tls && !atomic_load(&bus_tls_inited);
    if (serial) {
        pthread_mutex_lock(&bus_tls_first_mu);
    }
    int rc = mosquitto_connect_bind_v5(bus->mosq, bus->host, bus->port, bus->keepalive,
                                       NULL, bus->connect_props);
    if (serial) {
        if (rc == MOSQ_ERR_SUCCESS) {
            atomic_store(&bus_tls_inited, true);
        }
        pthread_mutex_unlock(&bus_tls_first_mu);
    }
    return rc;
}

ws_err ws__bus_err_from_mosq(int rc)
{
    switch (rc) {
    case MOSQ_ERR_SUCCESS:
        return WS_OK;
    case MOSQ_ERR_NOMEM:
        return WS_ENOMEM;
    case MOSQ_ERR_INVAL:
    case MOSQ_ERR_MALFORMED_UTF8:
    case MOSQ_ERR_DUPLICATE_PROPERTY:
    case MOSQ_ERR_QOS_NOT_SUPPORTED:
        return WS_EINVAL;
    case MOSQ_ERR_NO_CONN:
    case MOSQ_ERR_CONN_LOST:
    case MOSQ_ERR_CONN_REFUSED:
        return WS_EUNAVAIL;
    case MOSQ_ERR_PAYLOAD_SIZE:
    case MOSQ_ERR_OVERSIZE_PACKET:
        return WS_ETOOBIG;
    case MOSQ_ERR_AUTH:
    case MOSQ_ERR_ACL_DENIED:
        return WS_EAUTH;
    case MOSQ_ERR_ERRNO:
        return ws_err_from_errno(errno);
    case MOSQ_ERR_PROTOCOL:
    case MOSQ_ERR_MALFORMED_PACKET:
        return WS_EPROTO;
    default:
        return WS_EINTERNAL;
    }
}

/* ---- libmosquitto callbacks (network thread) ---------------------------- */

static void bus_on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
                           const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    ws_bus *bus = obj;
    if (rc != 0) {
        pthread_mutex_lock(&bus->mu);
        bus->last_refusal = rc;
        pthread_cond_broadcast(&bus->cond); /* ws_bus_wait_connected says why */
        pthread_mutex_unlock(&bus->mu);
        ws_log_warn("bus_connect_refused", "reason=%d text=%s", rc,
                    mosquitto_reason_string(rc));
        return;
    }
    pthread_mutex_lock(&bus->mu);
    bus->gen++;
    bus->last_refusal = 0;
    if (bus->ever_connected) {
        ws_counter_inc(bus->reconnects);
    }
    bus->ever_connected = true;
    /* Renew every subscription, even when the broker kept the session. */
    int src = ws__bus_resubscribe_locked(bus);
    atomic_store(&bus->connected, true);
    ws_gauge_set(bus->connected_gauge, 1);
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
    if (src != MOSQ_ERR_SUCCESS) {
        ws_log_error("bus_resubscribe_failed", "error=%s", mosquitto_strerror(src));
    }
    ws_log_info("bus_connected", "host=%s port=%d session_present=%d", bus->host,
                bus->port, (flags & 1) != 0);
}

static void bus_on_disconnect(struct mosquitto *mosq, void *obj, int rc,
                              const mosquitto_property *props)
{
    (void)mosq;
    (void)props;
    ws_bus *bus = obj;
    pthread_mutex_lock(&bus->mu);
    bool was = atomic_exchange(&bus->connected, false);
    ws_gauge_set(bus->connected_gauge, 0);
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
    if (was && !atomic_load(&bus->closing)) {
        ws_log_warn("bus_disconnected", "reason=%d", rc);
    }
}

static void bus_on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
    (void)mosq;
    (void)obj;
    if (level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) {
        ws_log_warn("bus_mosquitto", "text=%s", str);
    }
}

/* ---- network thread ----------------------------------------------------- */

/* Sleep ms or until close; true if closing. */
bool ws__bus_backoff_sleep(ws_bus *bus, int ms)
{
    struct timespec ts = ws_clock_mono_after(ms);
    pthread_mutex_lock(&bus->mu);
    while (!atomic_load(&bus->closing)) {
        if (pthread_cond_timedwait(&bus->cond, &bus->mu, &ts) == ETIMEDOUT) {
            break;
        }
    }
    pthread_mutex_unlock(&bus->mu);
    return atomic_load(&bus->closing);
}

/* Once per turn of the network loop, connected or not: the loop hook (the
 * watchdog's heartbeat), after the stall fault point that wedges the loop
 * for the watchdog tests. */
static void bus_loop_turn(ws_bus *bus)
{
    WS_FAULT_STALL("bus_loop_stall");
    if (bus->loop_hook != NULL) {
        bus->loop_hook(bus->loop_hook_ctx);
    }
}

/* One connection: the loop until it drops or the bus closes. While
 * messages are held it does not read (ws__bus_hold_step). */
static int bus_connection_run(ws_bus *bus)
{
    int rc = MOSQ_ERR_SUCCESS;
    while (!atomic_load(&bus->closing)) {
        bus_loop_turn(bus);
        if (ws__bus_holding(bus)) {
            rc = ws__bus_hold_step(bus, true);
        } else {
            /* With a group open, wait at most a millisecond for more:
             * what arrives meanwhile shares the commit. */
            uint64_t seen = bus->batch_seen;
            rc = mosquitto_loop(bus->mosq, bus->batch_open ? 1 : BUS_LOOP_TIMEOUT_MS, 1);
            ws__bus_batch_after_loop(bus, seen, rc != MOSQ_ERR_SUCCESS);
        }
        if (rc != MOSQ_ERR_SUCCESS) {
            break;
        }
    }
    ws__bus_batch_close(bus);
    return rc;
}

/* Say goodbye properly so the broker keeps the session without a will and
 * logs a clean disconnect; bounded. With messages held, nothing more is
 * read (a message read now would be acknowledged and then lost). */
static void bus_goodbye(ws_bus *bus)
{
    if (!atomic_load(&bus->connected)) {
        return;
    }
    if (mosquitto_disconnect_v5(bus->mosq, 0, NULL) != MOSQ_ERR_SUCCESS) {
        return;
    }
    for (int i = 0; i < 20; i++) {
        int rc = ws__bus_holding(bus) ? mosquitto_loop_write(bus->mosq, 64)
                                      : mosquitto_loop(bus->mosq, 50, 1);
        if (rc != MOSQ_ERR_SUCCESS ||
            (ws__bus_holding(bus) && !mosquitto_want_write(bus->mosq))) {
            break;
        }
    }
}

static void *bus_thread_main(void *arg)
{
    ws_bus *bus = arg;
    int backoff = BUS_BACKOFF_MIN_MS;
    while (!atomic_load(&bus->closing)) {
        bus_loop_turn(bus);
        if (ws__bus_holding(bus)) {
            /* Disconnected with messages held: apply them before the broker
             * may redeliver anything. */
            ws__bus_hold_step(bus, false);
            continue;
        }
        pthread_mutex_lock(&bus->mu);
        uint64_t gen_before = bus->gen;
        pthread_mutex_unlock(&bus->mu);

        int rc = bus_connect(bus);
        if (rc == MOSQ_ERR_SUCCESS) {
            rc = bus_connection_run(bus);
        }
        if (atomic_load(&bus->closing)) {
            break;
        }
        /* A connection that got as far as CONNACK restarts the backoff. */
        pthread_mutex_lock(&bus->mu);
        bool got_connack = bus->gen != gen_before;
        pthread_mutex_unlock(&bus->mu);
        if (got_connack) {
            backoff = BUS_BACKOFF_MIN_MS;
        }
        if (ws__bus_holding(bus)) {
            continue; /* the hold has its own backoff */
        }
        ws_log_debug("bus_connect_retry", "error=%s delay_ms=%d", mosquitto_strerror(rc),
                     backoff);
        if (ws__bus_backoff_sleep(bus, backoff)) {
            break;
        }
        backoff = backoff * 2 > BUS_BACKOFF_MAX_MS ? BUS_BACKOFF_MAX_MS : backoff * 2;
    }
    bus_goodbye(bus);
    ws__bus_hold_abandon(bus);
    atomic_store(&bus->connected, false);
    ws_gauge_set(bus->connected_gauge, 0);
    return NULL;
}

/* ---- public API --------------------------------------------------------- */

/* The CONNECT properties, sent on every connect: the session expiry, and
 * the largest packet we accept (the payload limit plus headroom for the
 * topic and properties; the payload check in on_message stays). */
static ws_err bus_open_props(ws_bus *bus, const ws_bus_opts *opts)
{
    uint32_t expiry =
        opts->session_expiry > 0 ? opts->session_expiry : BUS_DEFAULT_EXPIRY;
    if (mosquitto_property_add_int32(
            &bus->connect_props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
            opts->clean_start && opts->session_expiry == 0 ? 0 : expiry) !=
        MOSQ_ERR_SUCCESS) {
        return WS_ENOMEM;
    }
    size_t max_packet = bus->max_payload + 65536 + 1024;
    if (max_packet > 268435455u) {
        max_packet = 268435455u;
    }
    if (mosquitto_property_add_int32(&bus->connect_props, MQTT_PROP_MAXIMUM_PACKET_SIZE,
                                     (uint32_t)max_packet) != MOSQ_ERR_SUCCESS) {
        mosquitto_property_free_all(&bus->connect_props);
        return WS_ENOMEM;
    }
    return WS_OK;
}

/* TLS to the broker when opts->tls_ca is set: verify the broker (chain and
 * name, libmosquitto's default unless tls_insecure), TLS 1.2 or later, our
 * certificate when given. A certificate without its key, or the reverse,
 * is invalid. */
static int bus_open_tls(ws_bus *bus, const ws_bus_opts *opts)
{
    if (opts->tls_ca == NULL) {
        return opts->tls_cert != NULL || opts->tls_key != NULL ? MOSQ_ERR_INVAL
                                                               : MOSQ_ERR_SUCCESS;
    }
    if ((opts->tls_cert == NULL) != (opts->tls_key == NULL)) {
        return MOSQ_ERR_INVAL;
    }
    bus->tls = true;
    int rc = mosquitto_tls_set(bus->mosq, opts->tls_ca, NULL, opts->tls_cert,
                               opts->tls_key, NULL);
    if (rc == MOSQ_ERR_SUCCESS) {
        rc = mosquitto_tls_opts_set(bus->mosq, 1 /* SSL_VERIFY_PEER */, "tlsv1.2", NULL);
    }
    if (rc == MOSQ_ERR_SUCCESS) {
        rc = mosquitto_tls_insecure_set(bus->mosq, false);
    }
    return rc;
}

/* The libmosquitto client: options, credentials, callbacks. */
static ws_err bus_open_mosq(ws_bus *bus, const ws_bus_opts *opts)
{
    bus->mosq = mosquitto_new(opts->client_id, opts->clean_start, bus);
    if (bus->mosq == NULL) {
        return errno == EINVAL ? WS_EINVAL : WS_ENOMEM;
    }
    mosquitto_int_option(bus->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(bus->mosq, MOSQ_OPT_SEND_MAXIMUM, bus->max_inflight);
    mosquitto_int_option(bus->mosq, MOSQ_OPT_RECEIVE_MAXIMUM, bus->max_inflight);
    mosquitto_int_option(bus->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_threaded_set(bus->mosq, true);
    int rc = bus_open_tls(bus, opts);
    if (rc == MOSQ_ERR_SUCCESS && opts->username != NULL) {
        rc = mosquitto_username_pw_set(bus->mosq, opts->username, opts->password);
    }
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_destroy(bus->mosq);
        bus->mosq = NULL;
        return ws__bus_err_from_mosq(rc);
    }
    mosquitto_connect_v5_callback_set(bus->mosq, bus_on_connect);
    mosquitto_disconnect_v5_callback_set(bus->mosq, bus_on_disconnect);
    mosquitto_subscribe_v5_callback_set(bus->mosq, ws__bus_on_subscribe);
    mosquitto_publish_v5_callback_set(bus->mosq, ws__bus_on_publish);
    mosquitto_message_v5_callback_set(bus->mosq, ws__bus_on_message);
    mosquitto_log_callback_set(bus->mosq, bus_on_log);
    return WS_OK;
}

static void bus_open_metrics(ws_bus *bus)
{
    bus->acked = ws_counter_get(bus->metrics, "webshop_bus_acked_total",
                                "QoS 1 publishes acknowledged by the broker", NULL);
    bus->redelivered = ws_counter_get(bus->metrics, "webshop_bus_redelivered_total",
                                      "Messages received again after a reconnect", NULL);
    bus->reconnects = ws_counter_get(bus->metrics, "webshop_bus_reconnects_total",
                                     "Connections to the broker after the first", NULL);
    bus->publish_failed =
        ws_counter_get(bus->metrics, "webshop_bus_publish_refused_total",
                       "Publishes the broker refused with an error reason code", NULL);
    bus->connected_gauge = ws_gauge_get(bus->metrics, "webshop_bus_connected",
                                        "1 while connected to the broker", NULL);
    ws_gauge_set(bus->connected_gauge, 0);
}

/* The settings of opts with their defaults; false when opts is invalid. */
static bool bus_open_settings(ws_bus *bus, const ws_bus_opts *opts)
{
    if (!opts->clean_start && (opts->client_id == NULL || opts->client_id[0] == '\0')) {
        return false; /* a persistent session needs a fixed id */
    }
    if (opts->format != WS_BUS_PROTOBUF && opts->format != WS_BUS_JSON) {
        return false;
    }
    if (opts->share_group != NULL &&
        !ws__bus_share_name_valid(opts->share_group, strlen(opts->share_group))) {
        return false;
    }
    bus->port = opts->port > 0 ? opts->port : BUS_DEFAULT_PORT;
    bus->keepalive = opts->keepalive > 0 ? opts->keepalive : BUS_DEFAULT_KEEPALIVE;
    if (bus->keepalive < 5) {
        bus->keepalive = 5; /* libmosquitto refuses less */
    }
    bus->format = opts->format;
    bus->max_payload =
        opts->max_payload > 0 ? opts->max_payload : BUS_DEFAULT_MAX_PAYLOAD;
    bus->max_inflight =
        opts->max_inflight > 0 ? opts->max_inflight : BUS_DEFAULT_MAX_INFLIGHT;
    if (bus->max_inflight > 65535) {
        bus->max_inflight = 65535;
    }
    bus->metrics = opts->metrics != NULL ? opts->metrics : ws_metrics_default();
    atomic_init(&bus->closing, false);
    atomic_init(&bus->connected, false);
    return true;
}

/* The names opts gives, copied. */
static ws_err bus_open_names(ws_bus *bus, const ws_bus_opts *opts)
{
    bus->host = strdup(opts->host != NULL ? opts->host : BUS_DEFAULT_HOST);
    if (bus->host == NULL) {
        return WS_ENOMEM;
    }
    if (opts->share_group != NULL) {
        bus->share_group = strdup(opts->share_group);
        if (bus->share_group == NULL) {
            free(bus->host);
            return WS_ENOMEM;
        }
    }
    return WS_OK;
}

static void bus_names_free(ws_bus *bus)
{
    free(bus->share_group);
    free(bus->host);
}

/* bus->mu, bus->send_mu and bus->cond (on CLOCK_MONOTONIC). */
static ws_err bus_open_locks(ws_bus *bus)
{
    if (ws_clock_cond_init(&bus->cond) != 0) {
        return WS_ENOMEM;
    }
    if (pthread_mutex_init(&bus->mu, NULL) != 0) {
        pthread_cond_destroy(&bus->cond);
        return WS_ENOMEM;
    }
    if (pthread_mutex_init(&bus->send_mu, NULL) != 0) {
        pthread_mutex_destroy(&bus->mu);
        pthread_cond_destroy(&bus->cond);
        return WS_ENOMEM;
    }
    return WS_OK;
}

static void bus_locks_destroy(ws_bus *bus)
{
    pthread_mutex_destroy(&bus->send_mu);
    pthread_mutex_destroy(&bus->mu);
    pthread_cond_destroy(&bus->cond);
}

ws_err ws_bus_open(const ws_bus_opts *opts, ws_bus **out)
{
    if (opts == NULL || out == NULL) {
        return WS_EINVAL;
    }
    ws_bus *bus = calloc(1, sizeof(*bus));
    if (bus == NULL) {
        return WS_ENOMEM;
    }
    if (!bus_open_settings(bus, opts)) {
        free(bus);
        return WS_EINVAL;
    }
    bus_lib_acquire();
    ws_err err = bus_open_names(bus, opts);
    if (err != WS_OK) {
        goto fail_bus;
    }
    err = bus_open_locks(bus);
    if (err != WS_OK) {
        goto fail_names;
    }
    err = bus_open_props(bus, opts);
    if (err != WS_OK) {
        goto fail_locks;
    }
    err = bus_open_mosq(bus, opts);
    if (err != WS_OK) {
        goto fail_props;
    }
    bus_open_metrics(bus);
    *out = bus;
    return WS_OK;

fail_props:
    mosquitto_property_free_all(&bus->connect_props);
fail_locks:
    bus_locks_destroy(bus);
fail_names:
    bus_names_free(bus);
fail_bus:
    free(bus);
    bus_lib_release();
    return err;
}

ws_err ws_bus_set_loop_hook(ws_bus *bus, void (*fn)(void *ctx), void *ctx)
{
    if (bus == NULL || bus->thread_started) {
        return WS_EINVAL;
    }
    bus->loop_hook = fn;
    bus->loop_hook_ctx = ctx;
    return WS_OK;
}

ws_err ws_bus_start(ws_bus *bus)
{
    if (bus == NULL) {
        return WS_EINVAL;
    }
    if (bus->thread_started) {
        return WS_EINVAL;
    }
    int rc = pthread_create(&bus->thread, NULL, bus_thread_main, bus);
    if (rc != 0) {
        return ws_err_from_errno(rc);
    }
    bus->thread_started = true;
    return WS_OK;
}

bool ws_bus_connected(const ws_bus *bus)
{
    return bus != NULL && atomic_load(&((ws_bus *)bus)->connected);
}

ws_err ws_bus_wait_connected(ws_bus *bus, uint32_t timeout_ms)
{
    if (bus == NULL) {
        return WS_EINVAL;
    }
    struct timespec ts = ws_clock_mono_after(timeout_ms);
    ws_err err = WS_OK;
    pthread_mutex_lock(&bus->mu);
    while (!ws__bus_ready_locked(bus)) {
        if (atomic_load(&bus->closing)) {
            err = WS_ECLOSED;
            break;
        }
        /* MQTT v5 reasons 134 (bad user name or password) and 135 (not
         * authorized): the same credentials will not do better by waiting.
         * The bus still retries in the background. */
        if (bus->last_refusal == 134 || bus->last_refusal == 135) {
            err = WS_EAUTH;
            break;
        }
        if (pthread_cond_timedwait(&bus->cond, &bus->mu, &ts) == ETIMEDOUT) {
            err = ws__bus_ready_locked(bus) ? WS_OK : WS_ETIMEDOUT;
            break;
        }
    }
    pthread_mutex_unlock(&bus->mu);
    return err;
}

uint64_t ws_bus_ready_epoch(ws_bus *bus)
{
    if (bus == NULL) {
        return 0;
    }
    pthread_mutex_lock(&bus->mu);
    uint64_t epoch = ws__bus_ready_locked(bus) ? bus->gen : 0;
    pthread_mutex_unlock(&bus->mu);
    return epoch;
}

void ws_bus_close(ws_bus *bus)
{
    if (bus == NULL) {
        return;
    }
    pthread_mutex_lock(&bus->mu);
    atomic_store(&bus->closing, true);
    pthread_cond_broadcast(&bus->cond);
    pthread_mutex_unlock(&bus->mu);
    if (bus->thread_started) {
        pthread_join(bus->thread, NULL);
    }
    /* No callback runs any more: fail what still waits for a PUBACK. */
    ws__bus_publish_fini(bus);
    mosquitto_destroy(bus->mosq);
    mosquitto_property_free_all(&bus->connect_props);
    ws__bus_subs_free(bus);
    ws_gauge_set(bus->connected_gauge, 0);
    ws__bus_batch_free(bus);
    free(bus->pend);
    bus_locks_destroy(bus);
    bus_names_free(bus);
    free(bus);
    bus_lib_release();
}
