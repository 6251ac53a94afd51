/*
 * Command-line flags and WEBSHOP_* environment variables from one table of
 * option specs. Every setting has a long flag ("--db-path"), an environment
 * variable derived from it (WEBSHOP_DB_PATH; with ws_config_set_env_prefix
 * "WEBSHOP_INVENTORY_", WEBSHOP_INVENTORY_DB_PATH, so that one exported
 * variable configures one program, not every program reading the same
 * flag name) and a default; a flag beats the
 * environment, which beats the default. Every value is parsed and checked by
 * its type, and a bad one yields a message naming the flag (and the
 * variable, when the value came from the environment):
 *
 *   --http-port: expected a port number 1..65535, got "abc"
 *   --http-port (from WEBSHOP_HTTP_PORT): expected a port number 1..65535, got "0"
 *
 * Typical main():
 *
 *   struct { const char *db; int port; int64_t timeout_ms; } cfg;
 *   const ws_config_option opts[] = {
 *       {.name = "db-path", .type = WS_CONFIG_STRING, .def = "inventory.db",
 *        .help = "SQLite database file", .target.str = &cfg.db},
 *       {.name = "http-port", .type = WS_CONFIG_PORT, .def = "8080",
 *        .help = "HTTP listen port", .target.i = &cfg.port},
 *       {.name = "timeout", .type = WS_CONFIG_DURATION, .def = "2s",
 *        .help = "RPC deadline", .target.i64 = &cfg.timeout_ms},
 *   };
 *   ws_config *c = ws_config_new("inventory", "0.1.0", "The stock service.",
 *                                opts, sizeof opts / sizeof opts[0]);
 *   switch (ws_config_parse(c, argc, argv, NULL)) {
 *   case WS_CONFIG_OK: break;
 *   case WS_CONFIG_EXIT: ws_config_free(c); return 0;         // --help, --version
 *   default: fprintf(stderr, "inventory: %s\n", ws_config_error(c));
 *            ws_config_free(c); return 2;
 *   }
 *   ... use cfg (strings stay valid until ws_config_free(c)) ...
 *
 * No global state: the environment is read from the envp given to
 * ws_config_parse (NULL means the process environment), and output goes to
 * the stream set with ws_config_set_output (stdout by default).
 */
#ifndef WS_CONFIG_H
#define WS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum ws_config_type {
    WS_CONFIG_STRING,   /* target.str; any text */
    WS_CONFIG_INT,      /* target.i64; decimal, optional sign; min..max if min < max */
    WS_CONFIG_PORT,     /* target.i; 1..65535 (0..65535 with WS_CONFIG_LISTEN) */
    WS_CONFIG_BOOL,     /* target.b; true/false, yes/no, on/off, 1/0; "--x" alone is
                           true, "--no-x" false; never takes the next argument */
    WS_CONFIG_ENUM,     /* target.i = index into choices (NULL-terminated) */
    WS_CONFIG_DURATION, /* target.i64 in milliseconds; "500ms", "2s", "1.5s", "1m",
                           "1h"; a bare integer is milliseconds; min..max (ms) */
    WS_CONFIG_SIZE,     /* target.i64 in bytes; "512", "64KiB", "1MiB", "2GiB", "1KB"
                           (1000), "1MB"; min..max (bytes) */
    WS_CONFIG_URL,      /* target.str; nng-style "tcp://host:port", "tcp4://",
                           "tcp6://", "ipc:///path", "inproc://name"; choices, when
                           set, lists the accepted schemes instead */
    WS_CONFIG_HOSTPORT, /* target.str; "host:port" or "[v6addr]:port" */
} ws_config_type;

/* Option flags. */
enum {
    /* A string option that may instead be read from a file: --NAME-file=PATH
     * or PREFIX_NAME_FILE (the first line of the file, at most
     * WS_CONFIG_FILE_MAX bytes, without its line ending). For secrets. */
    WS_CONFIG_FROM_FILE = 1u << 0,
    /* Never print the value (in --help or in error messages). */
    WS_CONFIG_SECRET = 1u << 1,
    /* No default: the option must be given. */
    WS_CONFIG_REQUIRED = 1u << 2,
    /* A PORT or URL option naming where a server listens: port 0 is
     * accepted, meaning any free port (the server logs the one it got). */
    WS_CONFIG_LISTEN = 1u << 3,
    /* A comma-separated list of values of the option's type (STRING, URL or
     * HOSTPORT), each checked as one value; blanks around an element are
     * dropped, an empty element is an error naming its position. The target
     * is target.list. For a setting that names several replicas:
     * --inventory-url tcp://127.0.0.1:7101,tcp://127.0.0.1:7111. */
    WS_CONFIG_LIST = 1u << 4,
};

/* The value of a WS_CONFIG_LIST option: n elements in items, and the whole
 * value as given in text (for logs); owned by the ws_config. n is 0 and
 * items and text NULL when the option is unset. */
typedef struct ws_config_list {
    const char *const *items;
    size_t n;
    const char *text;
} ws_config_list;

#define WS_CONFIG_FILE_MAX 4096

typedef struct ws_config_option {
    const char *name; /* long flag without dashes: lower case, digits, '-' */
    ws_config_type type;
    const char *def;  /* default, as text parsed like any value; NULL means none
                         (strings then stay NULL, numbers 0, bools false) */
    const char *help; /* one line for --help */
    union {
        const char **str; /* STRING, URL, HOSTPORT; owned by the ws_config */
        int64_t *i64;     /* INT, DURATION (ms), SIZE (bytes) */
        int *i;           /* PORT, ENUM (index) */
        bool *b;          /* BOOL */
        ws_config_list *list; /* any type with WS_CONFIG_LIST */
    } target;
    int64_t min, max;           /* INT, DURATION, SIZE: checked when min < max */
    const char *const *choices; /* ENUM: the names; URL: the schemes; NULL-ended */
    unsigned flags;             /* WS_CONFIG_FROM_FILE | ... */
    const char *env;            /* the variable's name, kept whatever the prefix (for a
                                   setting shared by every program: WEBSHOP_BROKER);
                                   NULL: derived from the prefix and name */
    const char *metavar;        /* placeholder in --help ("PATH"); or NULL */
} ws_config_option;

typedef enum ws_config_result {
    WS_CONFIG_OK = 0,    /* every target written */
    WS_CONFIG_EXIT = 1,  /* --help or --version was printed; exit 0 */
    WS_CONFIG_ERROR = 2, /* ws_config_error() says why; no target written */
} ws_config_result;

typedef struct ws_config ws_config;

/* A parser for the n options in opts. prog names the program in --help and
 * --version, version and summary may be NULL. opts must outlive the
 * ws_config (it is not copied); the strings are. NULL on ENOMEM. */
ws_config *ws_config_new(const char *prog, const char *version, const char *summary,
                         const ws_config_option *opts, size_t n);

/* Derive the variable names from prefix ("WEBSHOP_INVENTORY_") instead of
 * "WEBSHOP_" (NULL restores that): --http-port reads
 * WEBSHOP_INVENTORY_HTTP_PORT, --password-file WEBSHOP_INVENTORY_PASSWORD_FILE;
 * options with their own .env keep it. Call before ws_config_parse; --help
 * shows the names. 0, or -1 on ENOMEM (c must then only be freed). */
int ws_config_set_env_prefix(ws_config *c, const char *prefix);

/* The environment variable of option name ("WEBSHOP_INVENTORY_HTTP_PORT"),
 * owned by c; NULL for an unknown name. For messages that name a setting. */
const char *ws_config_env(const ws_config *c, const char *name);

/* Free c and every string it wrote into targets; c may be NULL. */
void ws_config_free(ws_config *c);

/* Where --help and --version print; stdout by default. */
void ws_config_set_output(ws_config *c, FILE *out);

/* Allow positional arguments (default: refused as "unexpected argument").
 * "--" ends the flags. Read them with ws_config_args after parsing. */
void ws_config_allow_args(ws_config *c, bool allow);

/* Parse argv[1..argc-1] and the environment envp (a NULL-terminated
 * "NAME=value" array; NULL means the process environment). An empty
 * environment variable counts as unset. On WS_CONFIG_OK every target is
 * written; on WS_CONFIG_ERROR none is and ws_config_error() holds the
 * message; on WS_CONFIG_EXIT usage or version was printed. May be called
 * again: strings from the last successful parse stay valid until the next
 * successful one or ws_config_free. */
ws_config_result ws_config_parse(ws_config *c, int argc, char *const *argv,
                                 char *const *envp);

/* The last error message ("--http-port: expected ..."), "" if none. */
const char *ws_config_error(const ws_config *c);

/* Positional arguments after a successful parse (pointers into argv);
 * OUT n may be NULL. */
char *const *ws_config_args(const ws_config *c, size_t *n /* OUT */);

/* Where the value of option name came from: "flag", "env", "default" or
 * "unset"; NULL for an unknown name. For startup logs. */
const char *ws_config_source(const ws_config *c, const char *name);

/* Split a value checked as WS_CONFIG_HOSTPORT into its host (brackets of
 * an IPv6 address removed, NUL-terminated in host[host_len]) and port.
 * Returns 0, or -1 without writing anything when hp is malformed or the
 * host does not fit. */
int ws_config_hostport_split(const char *hp, char *host /* OUT */, size_t host_len,
                             int *port /* OUT */);

/* Write the usage text (what --help prints) to out. */
void ws_config_usage(const ws_config *c, FILE *out);

#endif
