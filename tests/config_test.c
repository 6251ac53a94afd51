/*
 * Tests of lib/config: every option type with good and bad values, the
 * precedence flag > environment > default, both flag forms, values read
 * from files, --help and --version, and that every bad value, unknown flag,
 * missing value and duplicate gets a message naming the flag (and the
 * variable when the value came from the environment). The environment is
 * passed explicitly, so no test touches the process environment.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

typedef struct targets {
    const char *db;
    int64_t workers;
    int port;
    bool verbose;
    int format;
    int64_t timeout;
    int64_t max_body;
    const char *rpc_url;
    const char *broker;
    const char *password;
} targets;

static const char *const formats[] = {"protobuf", "json", NULL};

#define NOPTS 10

static void options_fill(ws_config_option *o, targets *t)
{
    const ws_config_option opts[NOPTS] = {
        {.name = "db-path",
         .type = WS_CONFIG_STRING,
         .def = "webshop.db",
         .help = "SQLite file",
         .target.str = &t->db,
         .metavar = "PATH"},
        {.name = "workers",
         .type = WS_CONFIG_INT,
         .def = "4",
         .help = "Worker threads",
         .target.i64 = &t->workers,
         .min = 1,
         .max = 64},
        {.name = "http-port",
         .type = WS_CONFIG_PORT,
         .def = "8080",
         .help = "HTTP port",
         .target.i = &t->port},
        {.name = "verbose",
         .type = WS_CONFIG_BOOL,
         .def = "false",
         .help = "Chatty",
         .target.b = &t->verbose},
        {.name = "bus-format",
         .type = WS_CONFIG_ENUM,
         .def = "protobuf",
         .help = "Bus payload format",
         .target.i = &t->format,
         .choices = formats},
        {.name = "timeout",
         .type = WS_CONFIG_DURATION,
         .def = "2s",
         .help = "Deadline",
         .target.i64 = &t->timeout,
         .min = 1,
         .max = 600000},
        {.name = "max-body",
         .type = WS_CONFIG_SIZE,
         .def = "1MiB",
         .help = "Body cap",
         .target.i64 = &t->max_body,
         .min = 1,
         .max = 64 << 20},
        {.name = "rpc-url",
         .type = WS_CONFIG_URL,
         .def = "tcp://127.0.0.1:5555",
         .help = "RPC listen URL",
         .target.str = &t->rpc_url},
        {.name = "broker",
         .type = WS_CONFIG_HOSTPORT,
         .def = "127.0.0.1:1883",
         .help = "MQTT broker",
         .target.str = &t->broker},
        {.name = "password",
         .type = WS_CONFIG_STRING,
         .help = "Broker password",
         .target.str = &t->password,
         .flags = WS_CONFIG_FROM_FILE | WS_CONFIG_SECRET},
    };
    memcpy(o, opts, sizeof opts);
}

/* One parse: the options above, argv (NULL-terminated, without program
 * name) and envp (NULL-terminated or NULL for empty). */
typedef struct run {
    ws_config_option opts[NOPTS];
    targets t;
    ws_config *c;
    ws_config_result r;
    char *out; /* what --help / --version printed */
    size_t outlen;
} run;

static char *const empty_env[] = {NULL};

static void run_parse(run *x, const char *const *args, char *const *envp)
{
    memset(x, 0, sizeof *x);
    options_fill(x->opts, &x->t);
    x->c = ws_config_new("svc", "1.2.3", "A test service.", x->opts, NOPTS);
    cr_assert(x->c != NULL);
    FILE *f = open_memstream(&x->out, &x->outlen);
    cr_assert(f != NULL);
    ws_config_set_output(x->c, f);
    char *argv[64] = {"svc"};
    int argc = 1;
    for (size_t i = 0; args != NULL && args[i] != NULL; i++) {
        argv[argc++] = (char *)args[i];
    }
    argv[argc] = NULL;
    x->r = ws_config_parse(x->c, argc, argv, envp != NULL ? envp : empty_env);
    fclose(f);
}

static void run_done(run *x)
{
    ws_config_free(x->c);
    free(x->out);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define ENV(...)  ((char *const[]){__VA_ARGS__, NULL})

static void expect_error(const char *const *args, char *const *envp, const char *want)
{
    run x;
    run_parse(&x, args, envp);
    cr_expect_eq(x.r, WS_CONFIG_ERROR, "expected an error: %s", want);
    cr_expect_str_eq(ws_config_error(x.c), want);
    run_done(&x);
}

Test(config, defaults_apply_when_nothing_is_given)
{
    run x;
    run_parse(&x, NULL, NULL);
    cr_assert_eq(x.r, WS_CONFIG_OK, "%s", ws_config_error(x.c));
    cr_expect_str_eq(x.t.db, "webshop.db");
    cr_expect_eq(x.t.workers, 4);
    cr_expect_eq(x.t.port, 8080);
    cr_expect_eq(x.t.verbose, false);
    cr_expect_eq(x.t.format, 0);
    cr_expect_eq(x.t.timeout, 2000);
    cr_expect_eq(x.t.max_body, 1 << 20);
    cr_expect_str_eq(x.t.rpc_url, "tcp://127.0.0.1:5555");
    cr_expect_str_eq(x.t.broker, "127.0.0.1:1883");
    cr_expect_null(x.t.password);
    cr_expect_str_eq(ws_config_source(x.c, "http-port"), "default");
    cr_expect_str_eq(ws_config_source(x.c, "password"), "unset");
    cr_expect_null(ws_config_source(x.c, "nope"));
    run_done(&x);
}

Test(config, flag_beats_environment_beats_default)
{
    run x;
    run_parse(&x, ARGS("--http-port=9001"),
              ENV("WEBSHOP_HTTP_PORT=9002", "WEBSHOP_WORKERS=8", "OTHER=1"));
    cr_assert_eq(x.r, WS_CONFIG_OK, "%s", ws_config_error(x.c));
    cr_expect_eq(x.t.port, 9001);
    cr_expect_eq(x.t.workers, 8);
    cr_expect_eq(x.t.timeout, 2000);
    cr_expect_str_eq(ws_config_source(x.c, "http-port"), "flag");
    cr_expect_str_eq(ws_config_source(x.c, "workers"), "env");
    cr_expect_str_eq(ws_config_source(x.c, "timeout"), "default");
    run_done(&x);
}

Test(config, empty_environment_variable_counts_as_unset)
{
    run x;
    run_parse(&x, NULL, ENV("WEBSHOP_HTTP_PORT="));
    cr_assert_eq(x.r, WS_CONFIG_OK, "%s", ws_config_error(x.c));
    cr_expect_eq(x.t.port, 8080);
    run_done(&x);
}

Test(config, equals_and_separate_value_forms)
{
    run x;
    run_parse(&x,
              ARGS("--db-path", "/tmp/a b.db", "--workers=-0", "--rpc-url",
                   "ipc:///tmp/x.sock", "--workers-ignored-not"),
              NULL);
    cr_expect_eq(x.r, WS_CONFIG_ERROR); /* the last one is unknown */
    cr_expect_str_eq(ws_config_error(x.c),
                     "unknown flag \"--workers-ignored-not\" (see --help)");
    run_done(&x);

    run_parse(&x,
              ARGS("--db-path", "/tmp/a b.db", "--workers", "-3", "--rpc-url",
                   "ipc:///tmp/x.sock", "--timeout=1.5s"),
              NULL);
    /* -3 is below the minimum: still parsed as the value of --workers. */
    cr_expect_str_eq(ws_config_error(x.c),
                     "--workers: expected an integer 1..64, got \"-3\"");
    run_done(&x);

    run_parse(&x,
              ARGS("--db-path", "/tmp/a b.db", "--workers", "+7", "--rpc-url",
                   "ipc:///tmp/x.sock", "--timeout=1.5s", "--bus-format", "JSON"),
              NULL);
    cr_assert_eq(x.r, WS_CONFIG_OK, "%s", ws_config_error(x.c));
    cr_expect_str_eq(x.t.db, "/tmp/a b.db");
    cr_expect_eq(x.t.workers, 7);
    cr_expect_str_eq(x.t.rpc_url, "ipc:///tmp/x.sock");
    cr_expect_eq(x.t.timeout, 1500);
    cr_expect_eq(x.t.format, 1);
    run_done(&x);
}

Test(config, bool_forms)
{
    static const struct {
        const char *arg;
        const char *env;
        bool want;
    } cases[] = {
        {"--verbose", NULL, true},          {"--no-verbose", "WEBSHOP_VERBOSE=1", false},
        {"--verbose=yes", NULL, true},      {"--verbose=OFF", NULL, false},
        {"--verbose=0", NULL, false},       {"--verbose=true", NULL, true},
        {NULL, "WEBSHOP_VERBOSE=on", true}, {NULL, "WEBSHOP_VERBOSE=false", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run x;
        const char *args[] = {cases[i].arg, NULL};
        char *env[] = {(char *)cases[i].env, NULL};
        run_parse(&x, args, env);
        cr_assert_eq(x.r, WS_CONFIG_OK, "case %zu: %s", i, ws_config_error(x.c));
        cr_expect_eq(x.t.verbose, cases[i].want, "case %zu", i);
        run_done(&x);
    }
}

Test(config, bool_flag_does_not_take_the_next_argument)
{
    run x;
    run_parse(&x, ARGS("--verbose", "false"), NULL);
    cr_expect_str_eq(ws_config_error(x.c), "unexpected argument \"false\" (see --help)");
    run_done(&x);
}

Test(config, durations_parse_to_milliseconds)
{
    static const struct {
        const char *in;
        int64_t ms;
    } cases[] = {
        {"500ms", 500}, {"2s", 2000},   {"1m", 60000},   {"1.5s", 1500},
        {"250", 250},   {"0.25s", 250}, {"10m", 600000}, {"1.5m", 90000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run x;
        char arg[64];
        snprintf(arg, sizeof arg, "--timeout=%s", cases[i].in);
        run_parse(&x, ARGS(arg), NULL);
        cr_assert_eq(x.r, WS_CONFIG_OK, "%s: %s", cases[i].in, ws_config_error(x.c));
        cr_expect_eq(x.t.timeout, cases[i].ms, "%s", cases[i].in);
        run_done(&x);
    }
}

Test(config, sizes_parse_to_bytes)
{
    static const struct {
        const char *in;
        int64_t bytes;
    } cases[] = {
        {"1MiB", 1 << 20}, {"64KiB", 64 << 10}, {"512", 512},        {"1KB", 1000},
        {"2mib", 2 << 20}, {"100B", 100},       {"64MiB", 64 << 20}, {"3MB", 3000000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run x;
        char arg[64];
        snprintf(arg, sizeof arg, "--max-body=%s", cases[i].in);
        run_parse(&x, ARGS(arg), NULL);
        cr_assert_eq(x.r, WS_CONFIG_OK, "%s: %s", cases[i].in, ws_config_error(x.c));
        cr_expect_eq(x.t.max_body, cases[i].bytes, "%s", cases[i].in);
        run_done(&x);
    }
}

Test(config, urls_and_host_ports_accepted)
{
    static const char *const urls[] = {"tcp://127.0.0.1:1",   "tcp://[::1]:65535",
                                       "tcp4://localhost:80", "tcp6://[::1]:5555",
                                       "inproc://rpc",        "ipc:///run/x.sock",
                                       "tcp://0.0.0.0:9000"};
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        run x;
        char arg[128];
        snprintf(arg, sizeof arg, "--rpc-url=%s", urls[i]);
        run_parse(&x, ARGS(arg, "--broker", "[::1]:1883"), NULL);
        cr_assert_eq(x.r, WS_CONFIG_OK, "%s: %s", urls[i], ws_config_error(x.c));
        cr_expect_str_eq(x.t.rpc_url, urls[i]);
        cr_expect_str_eq(x.t.broker, "[::1]:1883");
        run_done(&x);
    }
}

/* Every bad value of every type, given as a flag and through the
 * environment, gets a message naming the flag (and the variable). */
Test(config, every_bad_value_gets_a_message_naming_the_flag)
{
    static const struct {
        const char *flag;
        const char *value;
        const char *expected;
    } cases[] = {
        {"http-port", "abc", "a port number 1..65535"},
        {"http-port", "0", "a port number 1..65535"},
        {"http-port", "65536", "a port number 1..65535"},
        {"http-port", "-1", "a port number 1..65535"},
        {"http-port", "80x", "a port number 1..65535"},
        {"http-port", "000080", "a port number 1..65535"},
        {"workers", "abc", "an integer 1..64"},
        {"workers", "0", "an integer 1..64"},
        {"workers", "65", "an integer 1..64"},
        {"workers", "1.5", "an integer 1..64"},
        {"workers", "99999999999999999999", "an integer 1..64"},
        {"workers", " 4", "an integer 1..64"},
        {"verbose", "maybe", "true or false"},
        {"verbose", "2", "true or false"},
        {"bus-format", "xml", "one of protobuf, json"},
        {"timeout", "2x", "a duration like 500ms, 2s or 1m, within 1ms..10m"},
        {"timeout", "-1s", "a duration like 500ms, 2s or 1m, within 1ms..10m"},
        {"timeout", "0", "a duration like 500ms, 2s or 1m, within 1ms..10m"},
        {"timeout", "11m", "a duration like 500ms, 2s or 1m, within 1ms..10m"},
        {"timeout", "0.5ms", "a duration like 500ms, 2s or 1m, within 1ms..10m"},
        {"timeout", "s", "a duration like 500ms, 2s or 1m, within 1ms..10m"},
        {"timeout", "1.s", "a duration like 500ms, 2s or 1m, within 1ms..10m"},
        {"timeout", "9999999999999999999h",
         "a duration like 500ms, 2s or 1m, within 1ms..10m"},
        {"max-body", "1PB", "a size like 512, 64KiB or 1MiB, within 1..64MiB"},
        {"max-body", "65MiB", "a size like 512, 64KiB or 1MiB, within 1..64MiB"},
        {"max-body", "0", "a size like 512, 64KiB or 1MiB, within 1..64MiB"},
        {"max-body", "1.5MiB", "a size like 512, 64KiB or 1MiB, within 1..64MiB"},
        {"max-body", "99999999999TiB", "a size like 512, 64KiB or 1MiB, within 1..64MiB"},
        {"rpc-url", "http://x:1",
         "a URL like tcp://127.0.0.1:5555, ipc:///path or inproc://name"},
        {"rpc-url", "tcp://127.0.0.1",
         "a URL like tcp://127.0.0.1:5555, ipc:///path or inproc://name"},
        {"rpc-url", "tcp://:80",
         "a URL like tcp://127.0.0.1:5555, ipc:///path or inproc://name"},
        {"rpc-url", "tcp://[::1:80",
         "a URL like tcp://127.0.0.1:5555, ipc:///path or inproc://name"},
        {"rpc-url", "tcp://h:1/path",
         "a URL like tcp://127.0.0.1:5555, ipc:///path or inproc://name"},
        {"rpc-url", "inproc://",
         "a URL like tcp://127.0.0.1:5555, ipc:///path or inproc://name"},
        {"rpc-url", "127.0.0.1:5555",
         "a URL like tcp://127.0.0.1:5555, ipc:///path or inproc://name"},
        {"broker", "localhost", "host:port with a port 1..65535 (like 127.0.0.1:8080)"},
        {"broker", "host:0", "host:port with a port 1..65535 (like 127.0.0.1:8080)"},
        {"broker", "bad host:1", "host:port with a port 1..65535 (like 127.0.0.1:8080)"},
        {"broker", "::1:1883", "host:port with a port 1..65535 (like 127.0.0.1:8080)"},
        {"broker", "[zz]:1883", "host:port with a port 1..65535 (like 127.0.0.1:8080)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char arg[128];
        char want[512];
        snprintf(arg, sizeof arg, "--%s=%s", cases[i].flag, cases[i].value);
        snprintf(want, sizeof want, "--%s: expected %s, got \"%s\"", cases[i].flag,
                 cases[i].expected, cases[i].value);
        expect_error(ARGS(arg), NULL, want);

        char env[128];
        char var[64];
        snprintf(var, sizeof var, "WEBSHOP_%s", cases[i].flag);
        for (char *p = var; *p != '\0'; p++) {
            *p = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        }
        snprintf(env, sizeof env, "%s=%s", var, cases[i].value);
        snprintf(want, sizeof want, "--%s (from %s): expected %s, got \"%s\"",
                 cases[i].flag, var, cases[i].expected, cases[i].value);
        expect_error(NULL, ENV(env), want);
    }
}

Test(config, exact_message_for_a_bad_port)
{
    expect_error(ARGS("--http-port=abc"), NULL,
                 "--http-port: expected a port number 1..65535, got \"abc\"");
    expect_error(ARGS("--http-port", "abc"), NULL,
                 "--http-port: expected a port number 1..65535, got \"abc\"");
}

Test(config, control_bytes_in_bad_values_are_escaped_in_the_message)
{
    expect_error(ARGS("--workers=1\n\"x"), NULL,
                 "--workers: expected an integer 1..64, got \"1\\x0a\\\"x\"");
}

Test(config, unknown_missing_duplicate_and_stray_arguments)
{
    expect_error(ARGS("--http-prot=1"), NULL,
                 "unknown flag \"--http-prot\" (see --help)");
    expect_error(ARGS("-p", "1"), NULL,
                 "unknown flag \"-p\" (flags are --long-names; see --help)");
    expect_error(ARGS("--http-port"), NULL,
                 "--http-port: missing value (use --http-port=VALUE)");
    expect_error(ARGS("--db-path", "--verbose"), NULL,
                 "--db-path: missing value (use --db-path=VALUE)");
    expect_error(ARGS("--http-port=1", "--http-port", "2"), NULL,
                 "--http-port given twice");
    expect_error(ARGS("--verbose", "--no-verbose"), NULL, "--no-verbose given twice");
    expect_error(ARGS("--no-verbose=1"), NULL, "--no-verbose takes no value");
    expect_error(ARGS("--no-workers"), NULL,
                 "unknown flag \"--no-workers\" (see --help)");
    expect_error(ARGS("--workers-file=/x"), NULL,
                 "unknown flag \"--workers-file\" (see --help)");
    expect_error(ARGS("stray"), NULL, "unexpected argument \"stray\" (see --help)");
}

Test(config, error_leaves_every_target_untouched)
{
    run x;
    memset(&x, 0, sizeof x);
    options_fill(x.opts, &x.t);
    x.t.port = 77;
    x.t.db = "before";
    ws_config *c = ws_config_new("svc", NULL, NULL, x.opts, NOPTS);
    char *argv[] = {"svc", "--db-path=after", "--http-port=9000", "--workers=100", NULL};
    cr_expect_eq(ws_config_parse(c, 4, argv, empty_env), WS_CONFIG_ERROR);
    cr_expect_eq(x.t.port, 77);
    cr_expect_str_eq(x.t.db, "before");
    ws_config_free(c);
}

static char *write_temp(const char *content)
{
    char *path = strdup("/tmp/config_test_XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    size_t n = strlen(content);
    cr_assert(write(fd, content, n) == (ssize_t)n);
    close(fd);
    return path;
}

Test(config, secret_read_from_the_first_line_of_a_file)
{
    char *path = write_temp("s3cret\r\nsecond line\n");
    char arg[256];
    snprintf(arg, sizeof arg, "--password-file=%s", path);
    run x;
    run_parse(&x, ARGS(arg), NULL);
    cr_assert_eq(x.r, WS_CONFIG_OK, "%s", ws_config_error(x.c));
    cr_expect_str_eq(x.t.password, "s3cret");
    cr_expect_str_eq(ws_config_source(x.c, "password"), "flag");
    run_done(&x);

    char env[256];
    snprintf(env, sizeof env, "WEBSHOP_PASSWORD_FILE=%s", path);
    run_parse(&x, NULL, ENV(env));
    cr_assert_eq(x.r, WS_CONFIG_OK, "%s", ws_config_error(x.c));
    cr_expect_str_eq(x.t.password, "s3cret");
    run_done(&x);

    /* A flag (direct) beats an environment file. */
    run_parse(&x, ARGS("--password=direct"), ENV(env));
    cr_assert_eq(x.r, WS_CONFIG_OK, "%s", ws_config_error(x.c));
    cr_expect_str_eq(x.t.password, "direct");
    run_done(&x);

    expect_error(ARGS("--password=a", arg), NULL,
                 "--password and --password-file both given; use one");
    expect_error(NULL, ENV("WEBSHOP_PASSWORD=a", env),
                 "--password: both WEBSHOP_PASSWORD and WEBSHOP_PASSWORD_FILE are set; "
                 "use one");
    unlink(path);
    free(path);
}

Test(config, unreadable_or_oversized_secret_file_is_reported)
{
    expect_error(ARGS("--password-file=/nonexistent/pw"), NULL,
                 "--password-file: cannot read \"/nonexistent/pw\": No such file or "
                 "directory");
    expect_error(NULL, ENV("WEBSHOP_PASSWORD_FILE=/nonexistent/pw"),
                 "--password-file (from WEBSHOP_PASSWORD_FILE): cannot read "
                 "\"/nonexistent/pw\": No such file or directory");
    char *big = malloc(WS_CONFIG_FILE_MAX + 10);
    memset(big, 'x', WS_CONFIG_FILE_MAX + 9);
    big[WS_CONFIG_FILE_MAX + 9] = '\0';
    char *path = write_temp(big);
    char arg[256];
    snprintf(arg, sizeof arg, "--password-file=%s", path);
    char want[512];
    snprintf(
        want, sizeof want,
        "--password-file: cannot read \"%s\": its first line is longer than %d bytes",
        path, WS_CONFIG_FILE_MAX);
    expect_error(ARGS(arg), NULL, want);
    unlink(path);
    free(path);
    free(big);
}

Test(config, help_lists_flags_env_names_and_defaults)
{
    run x;
    run_parse(&x, ARGS("--workers=1", "--help", "--bogus"), NULL);
    cr_expect_eq(x.r, WS_CONFIG_EXIT);
    cr_assert(x.out != NULL);
    cr_expect(strstr(x.out, "Usage: svc [OPTIONS]\nA test service.\n") == x.out, "%s",
              x.out);
    static const char *const want[] = {
        "  --db-path=PATH\n      SQLite file\n      env WEBSHOP_DB_PATH; default "
        "\"webshop.db\"\n",
        "  --http-port=PORT\n      HTTP port\n      env WEBSHOP_HTTP_PORT; default "
        "\"8080\"\n",
        "  --verbose[=BOOL], --no-verbose\n",
        "  --bus-format=protobuf|json\n",
        "env WEBSHOP_TIMEOUT; default \"2s\"\n",
        "env WEBSHOP_MAX_BODY; default \"1MiB\"\n",
        "env WEBSHOP_RPC_URL; default \"tcp://127.0.0.1:5555\"\n",
        "  --broker=HOST:PORT\n",
        "  --password=STRING, --password-file=PATH\n      Broker password\n      env "
        "WEBSHOP_PASSWORD or WEBSHOP_PASSWORD_FILE; no default\n",
        "  --help\n",
        "  --version\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        cr_expect(strstr(x.out, want[i]) != NULL, "missing %s in:\n%s", want[i], x.out);
    }
    run_done(&x);

    run_parse(&x, ARGS("-h"), NULL);
    cr_expect_eq(x.r, WS_CONFIG_EXIT);
    run_done(&x);
}

Test(config, version_prints_name_and_version)
{
    run x;
    run_parse(&x, ARGS("--version"), NULL);
    cr_expect_eq(x.r, WS_CONFIG_EXIT);
    cr_expect_str_eq(x.out, "svc 1.2.3\n");
    run_done(&x);
}

Test(config, required_option_without_value_is_reported)
{
    const char *v = NULL;
    ws_config_option o[] = {{.name = "api-key",
                             .type = WS_CONFIG_STRING,
                             .help = "key",
                             .target.str = &v,
                             .flags = WS_CONFIG_REQUIRED}};
    ws_config *c = ws_config_new("svc", NULL, NULL, o, 1);
    char *argv[] = {"svc", NULL};
    cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_ERROR);
    cr_expect_str_eq(ws_config_error(c),
                     "--api-key is required (or set WEBSHOP_API_KEY)");
    char *env[] = {"WEBSHOP_API_KEY=k", NULL};
    cr_expect_eq(ws_config_parse(c, 1, argv, env), WS_CONFIG_OK);
    cr_expect_str_eq(v, "k");
    ws_config_free(c);
}

Test(config, non_loopback_default_is_refused)
{
    const char *u = NULL;
    const char *h = NULL;
    ws_config_option o[] = {
        {.name = "listen",
         .type = WS_CONFIG_URL,
         .def = "tcp://0.0.0.0:80",
         .help = "l",
         .target.str = &u},
    };
    ws_config *c = ws_config_new("svc", NULL, NULL, o, 1);
    char *argv[] = {"svc", NULL};
    cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_ERROR);
    cr_expect_str_eq(
        ws_config_error(c),
        "--listen (default): the default tcp://0.0.0.0:80 must be a loopback "
        "address");
    ws_config_free(c);

    ws_config_option o2[] = {
        {.name = "broker",
         .type = WS_CONFIG_HOSTPORT,
         .def = "example.com:1883",
         .help = "b",
         .target.str = &h},
    };
    c = ws_config_new("svc", NULL, NULL, o2, 1);
    cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_ERROR);
    ws_config_free(c);

    static const char *const loopbacks[] = {"localhost:1", "127.0.0.2:1", "[::1]:1"};
    for (size_t i = 0; i < 3; i++) {
        o2[0].def = loopbacks[i];
        c = ws_config_new("svc", NULL, NULL, o2, 1);
        cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_OK, "%s",
                     ws_config_error(c));
        cr_expect_str_eq(h, loopbacks[i]);
        ws_config_free(c);
    }
}

Test(config, url_schemes_can_be_restricted)
{
    static const char *const schemes[] = {"mqtt", NULL};
    const char *u = NULL;
    ws_config_option o[] = {{.name = "bus",
                             .type = WS_CONFIG_URL,
                             .def = "mqtt://127.0.0.1:1883",
                             .help = "b",
                             .target.str = &u,
                             .choices = schemes}};
    ws_config *c = ws_config_new("svc", NULL, NULL, o, 1);
    char *bad[] = {"svc", "--bus=tcp://127.0.0.1:1", NULL};
    cr_expect_eq(ws_config_parse(c, 2, bad, empty_env), WS_CONFIG_ERROR);
    cr_expect_str_eq(ws_config_error(c),
                     "--bus: expected a URL scheme://host:port with scheme mqtt, got "
                     "\"tcp://127.0.0.1:1\"");
    char *argv[] = {"svc", NULL};
    cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_OK);
    cr_expect_str_eq(u, "mqtt://127.0.0.1:1883");
    /* A failed second parse leaves the first one's strings alive. */
    cr_expect_eq(ws_config_parse(c, 2, bad, empty_env), WS_CONFIG_ERROR);
    cr_expect_str_eq(u, "mqtt://127.0.0.1:1883");
    ws_config_free(c);
}

Test(config, bad_specs_are_reported)
{
    int64_t i = 0;
    char *argv[] = {"svc", NULL};
    ws_config_option dup[] = {
        {.name = "n", .type = WS_CONFIG_INT, .target.i64 = &i},
        {.name = "n", .type = WS_CONFIG_INT, .target.i64 = &i},
    };
    ws_config *c = ws_config_new("svc", NULL, NULL, dup, 2);
    cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_ERROR);
    cr_expect_str_eq(ws_config_error(c), "option spec --n: defined twice");
    ws_config_free(c);

    ws_config_option reserved[] = {
        {.name = "help", .type = WS_CONFIG_INT, .target.i64 = &i}};
    c = ws_config_new("svc", NULL, NULL, reserved, 1);
    cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_ERROR);
    ws_config_free(c);

    ws_config_option badname[] = {
        {.name = "Bad_Name", .type = WS_CONFIG_INT, .target.i64 = &i}};
    c = ws_config_new("svc", NULL, NULL, badname, 1);
    cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_ERROR);
    ws_config_free(c);

    ws_config_option notarget[] = {{.name = "x", .type = WS_CONFIG_INT}};
    c = ws_config_new("svc", NULL, NULL, notarget, 1);
    cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_ERROR);
    ws_config_free(c);

    int e = 0;
    ws_config_option nochoices[] = {
        {.name = "x", .type = WS_CONFIG_ENUM, .target.i = &e}};
    c = ws_config_new("svc", NULL, NULL, nochoices, 1);
    cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_ERROR);
    ws_config_free(c);

    ws_config_option baddef[] = {
        {.name = "n", .type = WS_CONFIG_INT, .def = "many", .target.i64 = &i}};
    c = ws_config_new("svc", NULL, NULL, baddef, 1);
    cr_expect_eq(ws_config_parse(c, 1, argv, empty_env), WS_CONFIG_ERROR);
    cr_expect_str_eq(ws_config_error(c),
                     "--n (default): expected an integer, got \"many\"");
    ws_config_free(c);
}

Test(config, positional_arguments_when_allowed)
{
    int64_t n = 0;
    ws_config_option o[] = {
        {.name = "n", .type = WS_CONFIG_INT, .def = "1", .target.i64 = &n}};
    ws_config *c = ws_config_new("tool", NULL, NULL, o, 1);
    ws_config_allow_args(c, true);
    char *argv[] = {"tool", "up", "--n=3", "-", "--", "--n=4", NULL};
    cr_assert_eq(ws_config_parse(c, 6, argv, empty_env), WS_CONFIG_OK, "%s",
                 ws_config_error(c));
    size_t na;
    char *const *a = ws_config_args(c, &na);
    cr_assert_eq(na, 3);
    cr_expect_str_eq(a[0], "up");
    cr_expect_str_eq(a[1], "-");
    cr_expect_str_eq(a[2], "--n=4");
    cr_expect_eq(n, 3);
    ws_config_free(c);
}

/* A listener may ask for port 0 (any free port); a place to dial may not. */
Test(config, listen_options_accept_port_0_and_dial_options_do_not)
{
    int port = -1;
    const char *rpc = NULL;
    const char *dial = NULL;
    ws_config_option o[] = {
        {.name = "http-port", .type = WS_CONFIG_PORT, .def = "8080", .help = "p",
         .target.i = &port, .flags = WS_CONFIG_LISTEN},
        {.name = "rpc-url", .type = WS_CONFIG_URL, .def = "tcp://127.0.0.1:7101",
         .help = "r", .target.str = &rpc, .flags = WS_CONFIG_LISTEN},
        {.name = "peer-url", .type = WS_CONFIG_URL, .def = "tcp://127.0.0.1:7201",
         .help = "d", .target.str = &dial},
    };
    ws_config *c = ws_config_new("svc", NULL, NULL, o, 3);
    char *argv[] = {"svc", "--http-port", "0", "--rpc-url", "tcp://127.0.0.1:0", NULL};
    cr_assert_eq(ws_config_parse(c, 5, argv, empty_env), WS_CONFIG_OK, "%s",
                 ws_config_error(c));
    cr_expect_eq(port, 0);
    cr_expect_str_eq(rpc, "tcp://127.0.0.1:0");
    ws_config_free(c);

    char *bad[][3] = {{"svc", "--peer-url", "tcp://127.0.0.1:0"},
                      {"svc", "--http-port", "00"},
                      {"svc", "--http-port", "65536"}};
    const char *want[] = {
        "--peer-url: expected a URL like tcp://127.0.0.1:5555, ipc:///path or "
        "inproc://name, got \"tcp://127.0.0.1:0\"",
        "--http-port: expected a port number 0..65535 (0: any free port), got \"00\"",
        "--http-port: expected a port number 0..65535 (0: any free port), got \"65536\""};
    for (size_t i = 0; i < 3; i++) {
        c = ws_config_new("svc", NULL, NULL, o, 3);
        char *args[] = {bad[i][0], bad[i][1], bad[i][2], NULL};
        cr_expect_eq(ws_config_parse(c, 3, args, empty_env), WS_CONFIG_ERROR);
        cr_expect_str_eq(ws_config_error(c), want[i]);
        ws_config_free(c);
    }
}

Test(config, process_environment_is_used_when_envp_is_null)
{
    int port = 0;
    ws_config_option o[] = {
        {.name = "cfgtest-port", .type = WS_CONFIG_PORT, .def = "1", .target.i = &port}};
    ws_config *c = ws_config_new("svc", NULL, NULL, o, 1);
    /* Runs in criterion's forked test process: the change does not leak. */
    cr_assert(setenv("WEBSHOP_CFGTEST_PORT", "4242", 1) == 0);
    char *argv[] = {"svc", NULL};
    cr_assert_eq(ws_config_parse(c, 1, argv, NULL), WS_CONFIG_OK);
    cr_expect_eq(port, 4242);
    ws_config_free(c);
}

/* Per-program variables: with a prefix, WEBSHOP_HTTP_PORT (another
 * program's, or the old shared name) is ignored and the program's own
 * WEBSHOP_INVENTORY_HTTP_PORT is read; an option naming its own .env keeps
 * it (the shared broker), and --NAME-file follows the prefix. */
Test(config, env_prefix_gives_each_program_its_own_variables)
{
    int port = 0;
    const char *broker = NULL;
    const char *password = NULL;
    ws_config_option o[] = {
        {.name = "http-port", .type = WS_CONFIG_PORT, .def = "7102", .target.i = &port},
        {.name = "broker", .type = WS_CONFIG_HOSTPORT, .def = "127.0.0.1:1883",
         .env = "WEBSHOP_BROKER", .target.str = &broker},
        {.name = "password", .type = WS_CONFIG_STRING, .target.str = &password,
         .flags = WS_CONFIG_FROM_FILE | WS_CONFIG_SECRET},
    };
    ws_config *c = ws_config_new("svc", NULL, NULL, o, 3);
    cr_assert(c != NULL);
    cr_expect_str_eq(ws_config_env(c, "http-port"), "WEBSHOP_HTTP_PORT");
    cr_assert_eq(ws_config_set_env_prefix(c, "WEBSHOP_INVENTORY_"), 0);
    cr_expect_str_eq(ws_config_env(c, "http-port"), "WEBSHOP_INVENTORY_HTTP_PORT");
    cr_expect_str_eq(ws_config_env(c, "broker"), "WEBSHOP_BROKER");
    cr_expect_null(ws_config_env(c, "nope"));

    char path[] = "/tmp/config_test_pwXXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    cr_assert_eq(write(fd, "s3cret\n", 7), 7);
    close(fd);
    char pw_env[64];
    snprintf(pw_env, sizeof pw_env, "WEBSHOP_INVENTORY_PASSWORD_FILE=%s", path);
    char *argv[] = {"svc", NULL};
    char *env[] = {"WEBSHOP_HTTP_PORT=8080", "WEBSHOP_PASSWORD=old",
                   "WEBSHOP_BROKER=127.0.0.1:1999", pw_env, NULL};
    cr_assert_eq(ws_config_parse(c, 1, argv, env), WS_CONFIG_OK, "%s", ws_config_error(c));
    cr_expect_eq(port, 7102, "the old shared name is not this program's");
    cr_expect_str_eq(ws_config_source(c, "http-port"), "default");
    cr_expect_str_eq(broker, "127.0.0.1:1999");
    cr_expect_str_eq(password, "s3cret");

    char *env2[] = {"WEBSHOP_INVENTORY_HTTP_PORT=0", NULL};
    cr_expect_eq(ws_config_parse(c, 1, argv, env2), WS_CONFIG_ERROR);
    cr_expect_str_eq(ws_config_error(c), "--http-port (from WEBSHOP_INVENTORY_HTTP_PORT): "
                                         "expected a port number 1..65535, got \"0\"");

    char *help_out = NULL;
    size_t help_len = 0;
    FILE *f = open_memstream(&help_out, &help_len);
    ws_config_usage(c, f);
    fclose(f);
    cr_expect(strstr(help_out, "env WEBSHOP_INVENTORY_HTTP_PORT;") != NULL, "%s", help_out);
    cr_expect(strstr(help_out, "env WEBSHOP_BROKER;") != NULL, "%s", help_out);
    cr_expect(strstr(help_out, "env WEBSHOP_INVENTORY_PASSWORD or "
                               "WEBSHOP_INVENTORY_PASSWORD_FILE;") != NULL,
              "%s", help_out);
    free(help_out);

    cr_assert_eq(ws_config_set_env_prefix(c, NULL), 0);
    cr_expect_str_eq(ws_config_env(c, "http-port"), "WEBSHOP_HTTP_PORT");
    unlink(path);
    ws_config_free(c);
}

/* A comma list (WS_CONFIG_LIST): every element checked as one value of the
 * type, blanks around elements dropped, the bad element named by position;
 * the default and the environment work as for one value. */
static ws_config_result list_parse(const char *const *args, char *const *envp,
                                   ws_config_list *out, ws_config **c)
{
    static const char *const schemes[] = {"tcp", "ipc", NULL};
    static ws_config_option o[1];
    o[0] = (ws_config_option){.name = "orders-url",
                              .type = WS_CONFIG_URL,
                              .def = "tcp://127.0.0.1:7201",
                              .help = "replicas",
                              .target.list = out,
                              .choices = schemes,
                              .flags = WS_CONFIG_LIST};
    *c = ws_config_new("svc", NULL, NULL, o, 1);
    cr_assert(*c != NULL);
    char *argv[8] = {"svc"};
    int argc = 1;
    for (size_t i = 0; args != NULL && args[i] != NULL; i++) {
        argv[argc++] = (char *)args[i];
    }
    return ws_config_parse(*c, argc, argv, envp != NULL ? envp : empty_env);
}

Test(config, url_list_splits_checks_and_names_the_bad_element)
{
    ws_config_list l = {0};
    ws_config *c = NULL;
    cr_assert_eq(list_parse(NULL, NULL, &l, &c), WS_CONFIG_OK);
    cr_expect_eq(l.n, 1);
    cr_expect_str_eq(l.items[0], "tcp://127.0.0.1:7201");
    cr_expect_str_eq(l.text, "tcp://127.0.0.1:7201");
    ws_config_free(c);

    cr_assert_eq(
        list_parse(ARGS("--orders-url", "tcp://127.0.0.1:1, ipc:///tmp/x ,tcp://[::1]:3"),
                   NULL, &l, &c),
        WS_CONFIG_OK);
    cr_expect_eq(l.n, 3);
    cr_expect_str_eq(l.items[0], "tcp://127.0.0.1:1");
    cr_expect_str_eq(l.items[1], "ipc:///tmp/x");
    cr_expect_str_eq(l.items[2], "tcp://[::1]:3");
    cr_expect_str_eq(l.text, "tcp://127.0.0.1:1, ipc:///tmp/x ,tcp://[::1]:3");
    ws_config_free(c);

    cr_assert_eq(list_parse(NULL, ENV("WEBSHOP_ORDERS_URL=tcp://a:1,tcp://b:2"), &l, &c),
                 WS_CONFIG_OK);
    cr_expect_eq(l.n, 2);
    cr_expect_str_eq(l.items[1], "tcp://b:2");
    ws_config_free(c);

    cr_expect_eq(list_parse(ARGS("--orders-url=tcp://a:1,http://b:2"), NULL, &l, &c),
                 WS_CONFIG_ERROR);
    cr_expect_str_eq(
        ws_config_error(c),
        "--orders-url: element 2 of 2: expected a URL scheme://host:port with "
        "scheme tcp, ipc, got \"http://b:2\"");
    ws_config_free(c);

    cr_expect_eq(list_parse(NULL, ENV("WEBSHOP_ORDERS_URL=tcp://a:1,"), &l, &c),
                 WS_CONFIG_ERROR);
    cr_expect_str_eq(ws_config_error(c),
                     "--orders-url (from WEBSHOP_ORDERS_URL): element 2 of 2 is empty (a "
                     "comma list: A,B,...)");
    ws_config_free(c);
}
