/*
 * Out of memory in the runtime: every allocation an operation makes is
 * failed in turn (the 0th, then the 1st, ... until the operation needs no
 * more), and each time the operation must answer WS_ENOMEM (or its own
 * "could not" result), leave nothing allocated, and not crash. The JSON
 * transcoder over every contract type both ways, the metrics registry and
 * its text, the config parser, the runtime descriptor pool, ws_buf and
 * ws_log (which drops a line it cannot build).
 */
#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "config.h"
#include "json.h"
#include "json_sample.h"
#include "log.h"
#include "metrics.h"
#include "oom_alloc.h"
#include "proto_dyn.h"

#include "google/protobuf/descriptor.pb-c.h"

#include <jansson.h>

void *__libc_malloc(size_t n);

/* An operation under test: does its work and cleans up after itself. */
typedef ws_err (*oom_op)(void *ctx);

/* Most allocations any one operation here makes, a bound for the sweep. */
#define OOM_MAX_ALLOCS 20000

/* Fail allocation 0, 1, 2, ... of op; each run must give an error in ok
 * (WS_ENOMEM, or other: WS_OK for an operation that may absorb the
 * failure, a library's own word for it) and leave the bytes in use as
 * they were; the sweep ends at the first run that no failure reached, which
 * must succeed. Returns how many allocations op needs. */
static long oom_sweep(const char *what, oom_op op, void *ctx, ws_err other)
{
    cr_assert_eq(op(ctx), WS_OK, "%s: fails without any injected failure", what);
    size_t base = oom_bytes_in_use();
    for (long n = 0; n < OOM_MAX_ALLOCS; n++) {
        oom_fail_nth(n);
        ws_err e = op(ctx);
        bool fired = oom_disarm();
        size_t now = oom_bytes_in_use();
        cr_assert_eq(now, base, "%s: %zd bytes left allocated after failing allocation %ld",
                     what, (ssize_t)(now - base), n);
        if (!fired) {
            cr_assert_eq(e, WS_OK, "%s: %s with no failure left to inject", what,
                         ws_strerror(e));
            return n;
        }
        cr_assert(e == WS_ENOMEM || e == other,
                  "%s: failing allocation %ld gave %s, not out of memory", what, n,
                  ws_strerror(e));
    }
    cr_assert_fail("%s: still allocating after %d allocations", what, OOM_MAX_ALLOCS);
    return -1;
}

/* ---- JSON ---------------------------------------------------------------- */

typedef struct json_case {
    const ProtobufCMessageDescriptor *desc;
    const ProtobufCMessage *msg;
    const char *text;
    size_t len;
} json_case;

static ws_err json_encode_op(void *ctx)
{
    json_case *c = ctx;
    ws_buf b;
    ws_buf_init(&b, 1 << 20);
    ws_err e = ws_json_encode(c->msg, 0, &b);
    ws_buf_fini(&b);
    return e;
}

static ws_err json_decode_op(void *ctx)
{
    json_case *c = ctx;
    ProtobufCMessage *m = NULL;
    ws_err e = ws_json_decode(c->desc, c->text, c->len, NULL, &m, NULL);
    if (e == WS_OK) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
    return e;
}

/* jansson 2.14 itself aborts when an allocation fails while it lexes (its
 * lexer drops the failure of growing its token buffer and then asserts:
 * akheron/jansson#362, open; fixes proposed in #735/#747). Its allocations
 * go to glibc directly here, so the sweep covers our decoder's own. */
static void *jansson_malloc(size_t n)
{
    return __libc_malloc(n);
}

static void jansson_free(void *p)
{
    free(p);
}

Test(oom, json_both_ways_over_every_contract_type)
{
    json_set_alloc_funcs(jansson_malloc, jansson_free);
    long most = 0;
    for (size_t i = 0; i < json_sample_contracts_n; i++) {
        const ProtobufCMessageDescriptor *d = json_sample_contracts[i];
        ProtobufCMessage *m = json_sample_new(d, 2);
        ws_buf b;
        ws_buf_init(&b, 1 << 20);
        cr_assert_eq(ws_json_encode(m, 0, &b), WS_OK, "%s", d->name);
        json_case c = {.desc = d, .msg = m, .text = b.data, .len = b.len};
        long n = oom_sweep(d->name, json_encode_op, &c, WS_ENOMEM);
        long k = oom_sweep(d->name, json_decode_op, &c, WS_ENOMEM);
        most = n > most ? n : most;
        most = k > most ? k : most;
        ws_buf_fini(&b);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    cr_log_info("json: at most %ld allocations per operation", most);
}

/* ---- metrics ------------------------------------------------------------- */

static ws_err metrics_op(void *ctx)
{
    (void)ctx;
    ws_metrics *m = ws_metrics_new();
    if (m == NULL) {
        return WS_ENOMEM;
    }
    ws_err e = WS_OK;
    ws_counter *c = ws_counter_get(m, "webshop_test_total", "a counter", "method=\"GetOrder\"");
    ws_gauge *g = ws_gauge_get(m, "webshop_test_rows", "a gauge", NULL);
    ws_histogram *h = ws_histogram_get(m, "webshop_test_seconds", "a histogram",
                                       "route=\"/order\"", NULL, 0);
    if (c == NULL || g == NULL || h == NULL) {
        e = WS_ENOMEM;
    } else {
        ws_counter_inc(c);
        ws_gauge_set(g, 3);
        ws_histogram_observe(h, 0.002);
        ws_buf b;
        ws_buf_init(&b, 1 << 20);
        e = ws_metrics_render(m, &b);
        if (e == WS_OK && strstr(b.data, "webshop_test_seconds_bucket") == NULL) {
            e = WS_EINVAL;
        }
        ws_buf_fini(&b);
    }
    ws_metrics_free(m);
    return e;
}

Test(oom, metrics_registry_and_its_text)
{
    oom_sweep("metrics", metrics_op, NULL, WS_ENOMEM);
}

/* ---- config -------------------------------------------------------------- */

static ws_err config_op(void *ctx)
{
    (void)ctx;
    const char *url = NULL, *name = NULL;
    int64_t timeout = 0;
    int port = 0;
    const ws_config_option opts[] = {
        {.name = "http-port", .type = WS_CONFIG_PORT, .def = "8080", .help = "port",
         .target.i = &port},
        {.name = "rpc-url", .type = WS_CONFIG_URL, .def = "tcp://127.0.0.1:1", .help = "url",
         .target.str = &url},
        {.name = "name", .type = WS_CONFIG_STRING, .def = NULL, .help = "name",
         .target.str = &name},
        {.name = "timeout", .type = WS_CONFIG_DURATION, .def = "5s", .help = "timeout",
         .target.i64 = &timeout},
    };
    ws_config *c = ws_config_new("oom", "1", "test", opts, sizeof opts / sizeof opts[0]);
    if (c == NULL) {
        return WS_ENOMEM;
    }
    ws_err e = WS_OK;
    char *const argv[] = {"oom", "--http-port", "9090", "--name", "shop", NULL};
    char *const envp[] = {"WEBSHOP_OOM_TIMEOUT=2s", NULL};
    if (ws_config_set_env_prefix(c, "WEBSHOP_OOM_") != 0) {
        e = WS_ENOMEM;
    } else if (ws_config_parse(c, 5, argv, envp) != WS_CONFIG_OK) {
        /* The parser says why in words; out of memory is the only cause here. */
        e = strstr(ws_config_error(c), "memory") != NULL ? WS_ENOMEM : WS_EINVAL;
    } else if (port != 9090 || timeout != 2000 || name == NULL || strcmp(name, "shop") != 0) {
        e = WS_EINVAL;
    }
    ws_config_free(c);
    return e;
}

Test(oom, config_parser)
{
    oom_sweep("config", config_op, NULL, WS_ENOMEM);
}

/* ---- runtime descriptors ------------------------------------------------- */

typedef struct dyn_case {
    uint8_t **files;
    size_t *lens;
    size_t n;
} dyn_case;

static ws_err dyn_op(void *ctx)
{
    dyn_case *c = ctx;
    ws_proto_dyn *p = NULL;
    ws_err e = ws_proto_dyn_new(&p);
    for (size_t i = 0; e == WS_OK && i < c->n; i++) {
        e = ws_proto_dyn_add_file(p, c->files[i], c->lens[i]);
    }
    if (e == WS_OK) {
        const char *missing = NULL;
        e = ws_proto_dyn_build(p, &missing);
    }
    ws_proto_dyn_free(p);
    return e;
}

Test(oom, runtime_descriptor_pool)
{
    FILE *f = fopen(DESC_SET, "rb");
    cr_assert_not_null(f, "%s", DESC_SET);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *set = malloc((size_t)len);
    cr_assert_eq(fread(set, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    Google__Protobuf__FileDescriptorSet *fs =
        google__protobuf__file_descriptor_set__unpack(NULL, (size_t)len, set);
    cr_assert_not_null(fs);
    dyn_case c = {.files = calloc(fs->n_file, sizeof(uint8_t *)),
                  .lens = calloc(fs->n_file, sizeof(size_t)),
                  .n = fs->n_file};
    for (size_t i = 0; i < fs->n_file; i++) {
        c.lens[i] = google__protobuf__file_descriptor_proto__get_packed_size(fs->file[i]);
        c.files[i] = malloc(c.lens[i]);
        google__protobuf__file_descriptor_proto__pack(fs->file[i], c.files[i]);
    }
    google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
    free(set);
    /* protobuf-c reports a failed allocation while unpacking as malformed. */
    long n = oom_sweep("proto_dyn", dyn_op, &c, WS_EPARSE);
    cr_log_info("proto_dyn: %ld allocations for %zu files", n, c.n);
    for (size_t i = 0; i < c.n; i++) {
        free(c.files[i]);
    }
    free(c.files);
    free(c.lens);
}

/* ---- buf and log --------------------------------------------------------- */

static ws_err buf_op(void *ctx)
{
    (void)ctx;
    ws_buf b;
    ws_buf_init(&b, 1 << 20);
    ws_err e = WS_OK;
    for (int i = 0; e == WS_OK && i < 200; i++) {
        e = ws_buf_printf(&b, "line %d of a text that grows\n", i);
    }
    size_t n = 0;
    char *s = e == WS_OK ? ws_buf_steal(&b, &n) : NULL;
    if (e == WS_OK && s == NULL) {
        e = WS_ENOMEM;
    }
    free(s);
    ws_buf_fini(&b);
    return e;
}

Test(oom, buf_grows_or_says_out_of_memory)
{
    oom_sweep("buf", buf_op, NULL, WS_ENOMEM);
}

static ws_err log_op(void *ctx)
{
    (void)ctx;
    ws_log_info("oom_probe", "text=%s n=%d", "a value with spaces", 7);
    return WS_OK;
}

Test(oom, log_drops_a_line_it_cannot_build, .init = cr_redirect_stderr)
{
    ws_log_set_service("oom");
    ws_log_set_level(WS_LOG_INFO);
    oom_sweep("log", log_op, NULL, WS_OK);
}
