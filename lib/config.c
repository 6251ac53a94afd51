/*
 * Flags and environment from a table of option specs; see config.h.
 *
 * Parsing runs in three passes so that a failure leaves every target as it
 * was: the argv scan records which flag gave which raw text, the resolve
 * pass picks flag, environment or default for each option and parses the
 * text into a staging slot, and only when every option has succeeded are
 * the slots copied into the targets. All text is validated by the type's
 * parser, which on failure writes what it expected ("a port number
 * 1..65535"); the caller prefixes who supplied the value, so every message
 * names the flag and, for the environment, the variable.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern char **environ;

typedef enum config_src {
    CONFIG_SRC_UNSET,
    CONFIG_SRC_DEFAULT,
    CONFIG_SRC_ENV,
    CONFIG_SRC_FLAG,
} config_src;

typedef struct config_slot {
    const char *flag_val; /* from argv, when given as a flag */
    bool flag_seen;
    bool flag_file; /* given as --NAME-file */
    config_src src;
    char *str;   /* owned: the staged string of STRING, URL, HOSTPORT */
    char *owned; /* owned: the committed string a target points to; kept
                    until the next successful parse or ws_config_free */
    int64_t i64; /* INT, DURATION, SIZE, PORT, ENUM */
    bool b;      /* BOOL */
} config_slot;

struct ws_config {
    char *prog;                   /* owned */
    char *version;                /* owned, may be NULL */
    char *summary;                /* owned, may be NULL */
    const ws_config_option *opts; /* borrowed */
    size_t n;
    config_slot *slots; /* owned, n entries */
    char *env_prefix;   /* owned: "WEBSHOP_" or what ws_config_set_env_prefix set */
    char **env;         /* owned, n variable names (derived or the option's .env) */
    char **env_file;    /* owned, n names of the _FILE variables (or NULL) */
    FILE *out;
    bool allow_args;
    char **args; /* owned array of pointers into argv */
    size_t nargs;
    char err[768];
};

static const char *const config_url_schemes[] = {"tcp", "tcp4",   "tcp6",
                                                 "ipc", "inproc", NULL};

static void config_error_set(ws_config *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void config_error_set(ws_config *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
}

/* prefix + name upper-cased with '-' as '_' + suffix. */
static char *config_env_name(const char *prefix, const char *name, const char *suffix)
{
    size_t pn = strlen(prefix);
    size_t n = strlen(name);
    size_t sn = strlen(suffix);
    char *s = malloc(pn + n + sn + 1);
    if (s == NULL) {
        return NULL;
    }
    memcpy(s, prefix, pn);
    for (size_t i = 0; i < n; i++) {
        s[pn + i] = name[i] == '-' ? '_' : (char)toupper((unsigned char)name[i]);
    }
    memcpy(s + pn + n, suffix, sn + 1);
    return s;
}

/* (Re)compute the variable names of every option from c->env_prefix: an
 * option's own .env is kept as it is. -1 on ENOMEM (c->env may then hold
 * NULLs, which ws_config_free accepts). */
static int config_env_names(ws_config *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const ws_config_option *o = &c->opts[i];
        const char *name = o->name != NULL ? o->name : "";
        free(c->env[i]);
        free(c->env_file[i]);
        c->env_file[i] = NULL;
        c->env[i] = o->env != NULL ? strdup(o->env) : config_env_name(c->env_prefix, name, "");
        if (c->env[i] == NULL) {
            return -1;
        }
        if (o->flags & WS_CONFIG_FROM_FILE) {
            c->env_file[i] = o->env != NULL ? config_env_name(o->env, "", "_FILE")
                                            : config_env_name(c->env_prefix, name, "_FILE");
            if (c->env_file[i] == NULL) {
                return -1;
            }
        }
    }
    return 0;
}

ws_config *ws_config_new(const char *prog, const char *version, const char *summary,
                         const ws_config_option *opts, size_t n)
{
    ws_config *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return NULL;
    }
    c->prog = strdup(prog != NULL ? prog : "webshop");
    c->version = version != NULL ? strdup(version) : NULL;
    c->summary = summary != NULL ? strdup(summary) : NULL;
    c->opts = opts;
    c->n = n;
    c->out = stdout;
    c->slots = calloc(n + 1, sizeof *c->slots);
    c->env = calloc(n + 1, sizeof *c->env);
    c->env_file = calloc(n + 1, sizeof *c->env_file);
    c->env_prefix = strdup("WEBSHOP_");
    if (c->prog == NULL || (version != NULL && c->version == NULL) ||
        (summary != NULL && c->summary == NULL) || c->slots == NULL || c->env == NULL ||
        c->env_file == NULL || c->env_prefix == NULL || config_env_names(c) != 0) {
        ws_config_free(c);
        return NULL;
    }
    return c;
}

int ws_config_set_env_prefix(ws_config *c, const char *prefix)
{
    char *p = strdup(prefix != NULL ? prefix : "WEBSHOP_");
    if (p == NULL) {
        return -1;
    }
    free(c->env_prefix);
    c->env_prefix = p;
    return config_env_names(c);
}

const char *ws_config_env(const ws_config *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->opts[i].name, name) == 0) {
            return c->env[i];
        }
    }
    return NULL;
}

/* Forget the staged values (not the committed strings targets use). */
static void config_slots_clear(ws_config *c)
{
    for (size_t i = 0; i < c->n; i++) {
        char *owned = c->slots[i].owned;
        free(c->slots[i].str);
        memset(&c->slots[i], 0, sizeof c->slots[i]);
        c->slots[i].owned = owned;
    }
}

void ws_config_free(ws_config *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; c->slots != NULL && i < c->n; i++) {
        free(c->slots[i].str);
        free(c->slots[i].owned);
    }
    for (size_t i = 0; c->env != NULL && i < c->n; i++) {
        free(c->env[i]);
    }
    for (size_t i = 0; c->env_file != NULL && i < c->n; i++) {
        free(c->env_file[i]);
    }
    free(c->env);
    free(c->env_file);
    free(c->env_prefix);
    free(c->slots);
    free(c->args);
    free(c->prog);
    free(c->version);
    free(c->summary);
    free(c);
}

void ws_config_set_output(ws_config *c, FILE *out)
{
    c->out = out != NULL ? out : stdout;
}

void ws_config_allow_args(ws_config *c, bool allow)
{
    c->allow_args = allow;
}

const char *ws_config_error(const ws_config *c)
{
    return c->err;
}

char *const *ws_config_args(const ws_config *c, size_t *n)
{
    if (n != NULL) {
        *n = c->nargs;
    }
    return c->args;
}

const char *ws_config_source(const ws_config *c, const char *name)
{
    static const char *const names[] = {"unset", "default", "env", "flag"};
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->opts[i].name, name) == 0) {
            return names[c->slots[i].src];
        }
    }
    return NULL;
}

/* ---- quoting values into messages ---- */

/* Write v into dst as a quoted, escaped, length-capped string. */
static void config_quote(char *dst, size_t cap, const char *v)
{
    size_t o = 0;
    size_t shown = 0;
    dst[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)v; *p != '\0'; p++) {
        if (o + 8 >= cap || shown >= 80) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (*p == '"' || *p == '\\') {
            dst[o++] = '\\';
            dst[o++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", *p);
        } else {
            dst[o++] = (char)*p;
        }
        shown++;
    }
    dst[o++] = '"';
    dst[o] = '\0';
}

/* ---- value parsers: 0 on success; -1 with *what naming the expectation ---- */

typedef struct config_value {
    char *str;
    int64_t i64;
    bool b;
} config_value;

static const char *config_range_note(char *buf, size_t cap, const ws_config_option *o,
                                     void (*fmt)(char *, size_t, int64_t))
{
    if (o->min < o->max) {
        char lo[32];
        char hi[32];
        fmt(lo, sizeof lo, o->min);
        fmt(hi, sizeof hi, o->max);
        snprintf(buf, cap, " %s..%s", lo, hi);
    } else {
        buf[0] = '\0';
    }
    return buf;
}

static void config_fmt_int(char *buf, size_t cap, int64_t v)
{
    snprintf(buf, cap, "%" PRId64, v);
}

static void config_fmt_duration(char *buf, size_t cap, int64_t ms)
{
    if (ms != 0 && ms % 3600000 == 0) {
        snprintf(buf, cap, "%" PRId64 "h", ms / 3600000);
    } else if (ms != 0 && ms % 60000 == 0) {
        snprintf(buf, cap, "%" PRId64 "m", ms / 60000);
    } else if (ms != 0 && ms % 1000 == 0) {
        snprintf(buf, cap, "%" PRId64 "s", ms / 1000);
    } else {
        snprintf(buf, cap, "%" PRId64 "ms", ms);
    }
}

static void config_fmt_size(char *buf, size_t cap, int64_t b)
{
    static const char *const units[] = {"TiB", "GiB", "MiB", "KiB"};
    for (int i = 0; i < 4; i++) {
        int64_t m = (int64_t)1 << (10 * (4 - i));
        if (b != 0 && b % m == 0) {
            snprintf(buf, cap, "%" PRId64 "%s", b / m, units[i]);
            return;
        }
    }
    snprintf(buf, cap, "%" PRId64, b);
}

/* Unsigned decimal digits at *p into *out (no sign); advances *p. -1 on no
 * digits or overflow past INT64_MAX. */
static int config_digits(const char **p, int64_t *out)
{
    const char *s = *p;
    int64_t v = 0;
    if (!isdigit((unsigned char)*s)) {
        return -1;
    }
    while (isdigit((unsigned char)*s)) {
        int d = *s - '0';
        if (v > (INT64_MAX - d) / 10) {
            return -1;
        }
        v = v * 10 + d;
        s++;
    }
    *p = s;
    *out = v;
    return 0;
}

static int config_in_range(const ws_config_option *o, int64_t v)
{
    return !(o->min < o->max) || (v >= o->min && v <= o->max);
}

static int config_parse_int(const ws_config_option *o, const char *s, config_value *v,
                            char *what, size_t cap)
{
    char r[80];
    snprintf(what, cap, "an integer%s",
             config_range_note(r, sizeof r, o, config_fmt_int));
    const char *p = s;
    bool neg = false;
    if (*p == '-' || *p == '+') {
        neg = *p == '-';
        p++;
    }
    int64_t x;
    if (config_digits(&p, &x) != 0 || *p != '\0') {
        return -1;
    }
    x = neg ? -x : x;
    if (!config_in_range(o, x)) {
        return -1;
    }
    v->i64 = x;
    return 0;
}

/* A decimal port 1..65535, or 0..65535 when zero_ok. */
static int config_parse_port_text(const char *s, size_t n, int64_t *port, bool zero_ok)
{
    int64_t x = 0;
    if (n == 0 || n > 5) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) {
            return -1;
        }
        x = x * 10 + (s[i] - '0');
    }
    if (x < (zero_ok ? 0 : 1) || x > 65535 || (x == 0 && n != 1)) {
        return -1;
    }
    *port = x;
    return 0;
}

static int config_parse_port(const ws_config_option *o, const char *s, config_value *v,
                             char *what, size_t cap)
{
    bool zero_ok = (o->flags & WS_CONFIG_LISTEN) != 0;
    snprintf(what, cap, zero_ok ? "a port number 0..65535 (0: any free port)"
                                : "a port number 1..65535");
    return config_parse_port_text(s, strlen(s), &v->i64, zero_ok);
}

static int config_parse_bool(const ws_config_option *o, const char *s, config_value *v,
                             char *what, size_t cap)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    (void)o;
    snprintf(what, cap, "true or false");
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            v->b = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            v->b = false;
            return 0;
        }
    }
    return -1;
}

/* "a, b, c" into buf. */
static void config_join(char *buf, size_t cap, const char *const *list, const char *sep)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; list != NULL && list[i] != NULL && o < cap; i++) {
        int w = snprintf(buf + o, cap - o, "%s%s", i > 0 ? sep : "", list[i]);
        if (w < 0) {
            break;
        }
        o += (size_t)w;
    }
}

static int config_parse_enum(const ws_config_option *o, const char *s, config_value *v,
                             char *what, size_t cap)
{
    char list[256];
    config_join(list, sizeof list, o->choices, ", ");
    snprintf(what, cap, "one of %s", list);
    for (size_t i = 0; o->choices[i] != NULL; i++) {
        if (strcasecmp(s, o->choices[i]) == 0) {
            v->i64 = (int64_t)i;
            return 0;
        }
    }
    return -1;
}

static int config_parse_duration(const ws_config_option *o, const char *s,
                                 config_value *v, char *what, size_t cap)
{
    char r[80];
    snprintf(what, cap, "a duration like 500ms, 2s or 1m%s%s",
             o->min < o->max ? ", within" : "",
             config_range_note(r, sizeof r, o, config_fmt_duration));
    const char *p = s;
    int64_t whole;
    if (config_digits(&p, &whole) != 0) {
        return -1;
    }
    int64_t frac = 0;
    int64_t scale = 1;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) {
            return -1;
        }
        while (isdigit((unsigned char)*p)) {
            if (scale >= 1000000000) {
                return -1; /* more precision than a millisecond can carry */
            }
            frac = frac * 10 + (*p - '0');
            scale *= 10;
            p++;
        }
    }
    int64_t mult;
    if (*p == '\0' || strcmp(p, "ms") == 0) {
        mult = 1;
    } else if (strcmp(p, "s") == 0) {
        mult = 1000;
    } else if (strcmp(p, "m") == 0 || strcmp(p, "min") == 0) {
        mult = 60000;
    } else if (strcmp(p, "h") == 0) {
        mult = 3600000;
    } else {
        return -1;
    }
    if (whole > INT64_MAX / mult || (frac * mult) % scale != 0) {
        return -1;
    }
    int64_t ms = whole * mult;
    if (ms > INT64_MAX - frac * mult / scale) {
        return -1;
    }
    ms += frac * mult / scale;
    if (!config_in_range(o, ms)) {
        return -1;
    }
    v->i64 = ms;
    return 0;
}

static int config_parse_size(const ws_config_option *o, const char *s, config_value *v,
                             char *what, size_t cap)
{
    static const struct {
        const char *suffix;
        int64_t mult;
    } units[] = {
        {"", 1},
        {"b", 1},
        {"kib", (int64_t)1 << 10},
        {"mib", (int64_t)1 << 20},
        {"gib", (int64_t)1 << 30},
        {"tib", (int64_t)1 << 40},
        {"kb", 1000},
        {"mb", 1000000},
        {"gb", 1000000000},
        {"tb", 1000000000000},
    };
    char r[80];
    snprintf(what, cap, "a size like 512, 64KiB or 1MiB%s%s",
             o->min < o->max ? ", within" : "",
             config_range_note(r, sizeof r, o, config_fmt_size));
    const char *p = s;
    int64_t x;
    if (config_digits(&p, &x) != 0) {
        return -1;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcasecmp(p, units[i].suffix) == 0) {
            if (x > INT64_MAX / units[i].mult) {
                return -1;
            }
            x *= units[i].mult;
            if (!config_in_range(o, x)) {
                return -1;
            }
            v->i64 = x;
            return 0;
        }
    }
    return -1;
}

/* Whether host (n bytes) is a plausible host: "[v6]", an IPv4 address or a
 * DNS name. */
static int config_host_valid(const char *h, size_t n)
{
    char tmp[256];
    if (n == 0 || n >= sizeof tmp) {
        return 0;
    }
    if (h[0] == '[') {
        unsigned char a[16];
        if (n < 3 || h[n - 1] != ']') {
            return 0;
        }
        memcpy(tmp, h + 1, n - 2);
        tmp[n - 2] = '\0';
        return inet_pton(AF_INET6, tmp, a) == 1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (!isalnum(ch) && ch != '.' && ch != '-' && ch != '_') {
            return 0;
        }
    }
    return 1;
}

static int config_host_loopback(const char *h, size_t n)
{
    char tmp[256];
    if (n == 0 || n >= sizeof tmp) {
        return 0;
    }
    if (h[0] == '[' && n >= 2) {
        h++;
        n -= 2;
    }
    memcpy(tmp, h, n);
    tmp[n] = '\0';
    unsigned char a[16];
    if (strcasecmp(tmp, "localhost") == 0) {
        return 1;
    }
    if (inet_pton(AF_INET, tmp, a) == 1) {
        return a[0] == 127;
    }
    if (inet_pton(AF_INET6, tmp, a) == 1) {
        static const unsigned char one[16] = {[15] = 1};
        return memcmp(a, one, 16) == 0;
    }
    return 0;
}

/* Split "host:port" (n bytes); -1 if malformed. */
static int config_split_hostport(const char *s, size_t n, size_t *hostlen, int64_t *port,
                                 bool zero_ok)
{
    const char *colon = NULL;
    for (size_t i = n; i > 0; i--) {
        if (s[i - 1] == ':') {
            colon = s + i - 1;
            break;
        }
    }
    if (colon == NULL) {
        return -1;
    }
    size_t hl = (size_t)(colon - s);
    if (!config_host_valid(s, hl) ||
        config_parse_port_text(colon + 1, n - hl - 1, port, zero_ok) != 0) {
        return -1;
    }
    *hostlen = hl;
    return 0;
}

int ws_config_hostport_split(const char *hp, char *host, size_t host_len, int *port)
{
    size_t hl;
    int64_t p;
    if (hp == NULL || config_split_hostport(hp, strlen(hp), &hl, &p, false) != 0) {
        return -1;
    }
    const char *h = hp;
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
        h++;
        hl -= 2;
    }
    if (hl >= host_len) {
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (int)p;
    return 0;
}

static int config_parse_hostport(const ws_config_option *o, const char *s,
                                 config_value *v, char *what, size_t cap)
{
    (void)o;
    size_t hl;
    int64_t port;
    snprintf(what, cap, "host:port with a port 1..65535 (like 127.0.0.1:8080)");
    if (config_split_hostport(s, strlen(s), &hl, &port, false) != 0) {
        return -1;
    }
    v->str = strdup(s);
    return v->str != NULL ? 0 : -2;
}

static int config_parse_url(const ws_config_option *o, const char *s, config_value *v,
                            char *what, size_t cap)
{
    const char *const *schemes = o->choices != NULL ? o->choices : config_url_schemes;
    if (o->choices != NULL) {
        char list[200];
        config_join(list, sizeof list, schemes, ", ");
        snprintf(what, cap, "a URL scheme://host:port with scheme %s", list);
    } else {
        snprintf(what, cap,
                 "a URL like tcp://127.0.0.1:5555, ipc:///path or inproc://name");
    }
    const char *sep = strstr(s, "://");
    if (sep == NULL) {
        return -1;
    }
    size_t sl = (size_t)(sep - s);
    bool known = false;
    for (size_t i = 0; schemes[i] != NULL; i++) {
        if (strlen(schemes[i]) == sl && strncmp(s, schemes[i], sl) == 0) {
            known = true;
        }
    }
    if (!known) {
        return -1;
    }
    const char *rest = sep + 3;
    if (strncmp(s, "ipc", sl) == 0 || strncmp(s, "inproc", sl) == 0) {
        if (*rest == '\0') {
            return -1;
        }
    } else {
        /* host:port, optionally followed by a path for other schemes. */
        size_t n = strcspn(rest, "/?#");
        size_t hl;
        int64_t port;
        if (config_split_hostport(rest, n, &hl, &port,
                                  (o->flags & WS_CONFIG_LISTEN) != 0) != 0) {
            return -1;
        }
        if (rest[n] != '\0' && strncmp(s, "tcp", 3) == 0) {
            return -1;
        }
    }
    v->str = strdup(s);
    return v->str != NULL ? 0 : -2;
}

static int config_parse_string(const ws_config_option *o, const char *s, config_value *v,
                               char *what, size_t cap)
{
    (void)o;
    (void)what;
    (void)cap;
    v->str = strdup(s);
    return v->str != NULL ? 0 : -2;
}

typedef int (*config_parser)(const ws_config_option *, const char *, config_value *,
                             char *, size_t);

static const config_parser config_parsers[] = {
    [WS_CONFIG_STRING] = config_parse_string,
    [WS_CONFIG_INT] = config_parse_int,
    [WS_CONFIG_PORT] = config_parse_port,
    [WS_CONFIG_BOOL] = config_parse_bool,
    [WS_CONFIG_ENUM] = config_parse_enum,
    [WS_CONFIG_DURATION] = config_parse_duration,
    [WS_CONFIG_SIZE] = config_parse_size,
    [WS_CONFIG_URL] = config_parse_url,
    [WS_CONFIG_HOSTPORT] = config_parse_hostport,
};

/* Whether a URL or host:port value names a loopback (or local-only) place. */
static int config_value_loopback(const ws_config_option *o, const char *s)
{
    const char *hp = s;
    if (o->type == WS_CONFIG_URL) {
        const char *sep = strstr(s, "://");
        if (strncmp(s, "ipc://", 6) == 0 || strncmp(s, "inproc://", 9) == 0) {
            return 1;
        }
        hp = sep + 3;
    }
    size_t n = strcspn(hp, "/?#");
    size_t hl;
    int64_t port;
    return config_split_hostport(hp, n, &hl, &port, (o->flags & WS_CONFIG_LISTEN) != 0) == 0 &&
           config_host_loopback(hp, hl);
}

/* ---- usage ---- */

static const char *config_metavar(const ws_config_option *o, char *buf, size_t cap)
{
    static const char *const names[] = {
        [WS_CONFIG_STRING] = "STRING",      [WS_CONFIG_INT] = "N",
        [WS_CONFIG_PORT] = "PORT",          [WS_CONFIG_BOOL] = "BOOL",
        [WS_CONFIG_ENUM] = "CHOICE",        [WS_CONFIG_DURATION] = "DURATION",
        [WS_CONFIG_SIZE] = "SIZE",          [WS_CONFIG_URL] = "URL",
        [WS_CONFIG_HOSTPORT] = "HOST:PORT",
    };
    if (o->metavar != NULL) {
        return o->metavar;
    }
    if (o->flags & WS_CONFIG_LIST) {
        snprintf(buf, cap, "%s[,%s...]", names[o->type], names[o->type]);
        return buf;
    }
    if (o->type == WS_CONFIG_ENUM) {
        config_join(buf, cap, o->choices, "|");
        return buf;
    }
    return names[o->type];
}

void ws_config_usage(const ws_config *c, FILE *out)
{
    fprintf(out, "Usage: %s [OPTIONS]%s\n", c->prog, c->allow_args ? " [ARGS...]" : "");
    if (c->summary != NULL) {
        fprintf(out, "%s\n", c->summary);
    }
    fprintf(out, "\nEvery option can also be set by the environment variable shown;\n"
                 "a flag beats the environment, which beats the default.\n\nOptions:\n");
    for (size_t i = 0; i < c->n; i++) {
        const ws_config_option *o = &c->opts[i];
        char mv[256];
        if (o->type == WS_CONFIG_BOOL) {
            fprintf(out, "  --%s[=BOOL], --no-%s", o->name, o->name);
        } else {
            fprintf(out, "  --%s=%s", o->name, config_metavar(o, mv, sizeof mv));
        }
        if (o->flags & WS_CONFIG_FROM_FILE) {
            fprintf(out, ", --%s-file=PATH", o->name);
        }
        fprintf(out, "\n      %s\n      env %s", o->help != NULL ? o->help : "",
                c->env[i]);
        if (c->env_file[i] != NULL) {
            fprintf(out, " or %s", c->env_file[i]);
        }
        if (o->def == NULL) {
            fprintf(out,
                    (o->flags & WS_CONFIG_REQUIRED) ? "; required\n" : "; no default\n");
        } else if (o->flags & WS_CONFIG_SECRET) {
            fprintf(out, "; default hidden\n");
        } else {
            char q[128];
            config_quote(q, sizeof q, o->def);
            fprintf(out, "; default %s\n", q);
        }
    }
    fprintf(out, "  --help\n      Print this help and exit.\n"
                 "  --version\n      Print the version and exit.\n");
}

/* ---- parse ---- */

static int config_spec_check(ws_config *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const ws_config_option *o = &c->opts[i];
        const char *name = o->name != NULL ? o->name : "";
        if (*name == '\0' ||
            strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(name)) {
            config_error_set(c, "option spec %zu: bad name \"%s\"", i, name);
            return -1;
        }
        if (strcmp(name, "help") == 0 || strcmp(name, "version") == 0) {
            config_error_set(c, "option spec --%s: the name is reserved", name);
            return -1;
        }
        if ((unsigned)o->type > WS_CONFIG_HOSTPORT || o->target.str == NULL) {
            config_error_set(c, "option spec --%s: bad type or no target", name);
            return -1;
        }
        if ((o->flags & WS_CONFIG_LIST) && o->type != WS_CONFIG_STRING &&
            o->type != WS_CONFIG_URL && o->type != WS_CONFIG_HOSTPORT) {
            config_error_set(c, "option spec --%s: a list of strings, URLs or host:ports",
                             name);
            return -1;
        }
        if (o->type == WS_CONFIG_ENUM && (o->choices == NULL || o->choices[0] == NULL)) {
            config_error_set(c, "option spec --%s: an enum needs choices", name);
            return -1;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->opts[j].name, name) == 0) {
                config_error_set(c, "option spec --%s: defined twice", name);
                return -1;
            }
        }
    }
    return 0;
}

/* Find the option named by the flag text name (namelen bytes). *file is set
 * for --NAME-file, *neg for --no-NAME. -1 when unknown. */
static long config_find(const ws_config *c, const char *name, size_t namelen, bool *file,
                        bool *neg)
{
    *file = false;
    *neg = false;
    for (size_t i = 0; i < c->n; i++) {
        const char *on = c->opts[i].name;
        size_t ol = strlen(on);
        if (ol == namelen && memcmp(on, name, namelen) == 0) {
            return (long)i;
        }
    }
    for (size_t i = 0; i < c->n; i++) {
        const ws_config_option *o = &c->opts[i];
        size_t ol = strlen(o->name);
        if ((o->flags & WS_CONFIG_FROM_FILE) && namelen == ol + 5 &&
            memcmp(o->name, name, ol) == 0 && memcmp(name + ol, "-file", 5) == 0) {
            *file = true;
            return (long)i;
        }
        if (o->type == WS_CONFIG_BOOL && namelen == ol + 3 &&
            memcmp(name, "no-", 3) == 0 && memcmp(name + 3, o->name, ol) == 0) {
            *neg = true;
            return (long)i;
        }
    }
    return -1;
}

static const char *config_env_get(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; envp != NULL && envp[i] != NULL; i++) {
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=') {
            const char *v = envp[i] + n + 1;
            return *v != '\0' ? v : NULL;
        }
    }
    return NULL;
}

/* Read the first line of path (without its line ending) into *out. */
static int config_read_file(const char *path, char **out, char *why, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(why, cap, "%s", strerror(errno));
        return -1;
    }
    char *buf = malloc(WS_CONFIG_FILE_MAX + 2);
    if (buf == NULL) {
        fclose(f);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    size_t n = fread(buf, 1, WS_CONFIG_FILE_MAX + 1, f);
    int rerr = ferror(f);
    fclose(f);
    if (rerr) {
        free(buf);
        snprintf(why, cap, "read error");
        return -1;
    }
    size_t line = 0;
    while (line < n && buf[line] != '\n') {
        line++;
    }
    if (line > WS_CONFIG_FILE_MAX) {
        free(buf);
        snprintf(why, cap, "its first line is longer than %d bytes", WS_CONFIG_FILE_MAX);
        return -1;
    }
    if (line > 0 && buf[line - 1] == '\r') {
        line--;
    }
    if (memchr(buf, '\0', line) != NULL) {
        free(buf);
        snprintf(why, cap, "it contains a NUL byte");
        return -1;
    }
    buf[line] = '\0';
    *out = buf;
    return 0;
}

/* Scan argv into the slots; returns WS_CONFIG_OK, _EXIT or _ERROR. */
static ws_config_result config_scan_argv(ws_config *c, int argc, char *const *argv)
{
    bool flags_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!flags_done && strcmp(a, "--") == 0) {
            flags_done = true;
            continue;
        }
        if (flags_done || a[0] != '-' || a[1] == '\0') {
            if (!c->allow_args) {
                char q[128];
                config_quote(q, sizeof q, a);
                config_error_set(c, "unexpected argument %s (see --help)", q);
                return WS_CONFIG_ERROR;
            }
            c->args[c->nargs++] = (char *)a;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            ws_config_usage(c, c->out);
            return WS_CONFIG_EXIT;
        }
        if (strcmp(a, "--version") == 0) {
            fprintf(c->out, "%s %s\n", c->prog,
                    c->version != NULL ? c->version : "(unknown version)");
            return WS_CONFIG_EXIT;
        }
        if (a[1] != '-') {
            char q[128];
            config_quote(q, sizeof q, a);
            config_error_set(c, "unknown flag %s (flags are --long-names; see --help)",
                             q);
            return WS_CONFIG_ERROR;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t namelen = eq != NULL ? (size_t)(eq - name) : strlen(name);
        bool file;
        bool neg;
        long idx = config_find(c, name, namelen, &file, &neg);
        if (idx < 0) {
            char q[128];
            char nm[128];
            snprintf(nm, sizeof nm, "--%.*s", (int)(namelen < 100 ? namelen : 100), name);
            config_quote(q, sizeof q, nm);
            config_error_set(c, "unknown flag %s (see --help)", q);
            return WS_CONFIG_ERROR;
        }
        const ws_config_option *o = &c->opts[idx];
        config_slot *s = &c->slots[idx];
        if (s->flag_seen) {
            if (s->flag_file != file) {
                config_error_set(c, "--%s and --%s-file both given; use one", o->name,
                                 o->name);
            } else {
                config_error_set(c, "--%.*s given twice", (int)namelen, name);
            }
            return WS_CONFIG_ERROR;
        }
        const char *val;
        if (neg) {
            if (eq != NULL) {
                config_error_set(c, "--no-%s takes no value", o->name);
                return WS_CONFIG_ERROR;
            }
            val = "false";
        } else if (eq != NULL) {
            val = eq + 1;
        } else if (o->type == WS_CONFIG_BOOL && !file) {
            val = "true";
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            val = argv[++i];
        } else {
            config_error_set(c, "--%.*s: missing value (use --%.*s=VALUE)", (int)namelen,
                             name, (int)namelen, name);
            return WS_CONFIG_ERROR;
        }
        s->flag_seen = true;
        s->flag_file = file;
        s->flag_val = val;
    }
    return WS_CONFIG_OK;
}

/* A WS_CONFIG_LIST value, staged as one block: n element pointers, then
 * the whole text, then the elements (NUL-terminated). */
static char *config_list_block(const char *raw, size_t n)
{
    size_t len = strlen(raw);
    char *block = malloc(n * sizeof(char *) + 2 * (len + 1));
    if (block == NULL) {
        return NULL;
    }
    char **items = (char **)(void *)block;
    char *text = block + n * sizeof(char *);
    char *elems = text + len + 1;
    memcpy(text, raw, len + 1);
    memcpy(elems, raw, len + 1);
    size_t k = 0;
    for (char *p = elems; k < n; k++) {
        char *end = p + strcspn(p, ",");
        char *next = *end == ',' ? end + 1 : end;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        while (end > p && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }
        *end = '\0';
        items[k] = p;
        p = next;
    }
    return block;
}

/* Parse raw as a WS_CONFIG_LIST of o's type into s (str = the block, i64 =
 * the count). -1 with the message set, naming the bad element. */
static int config_resolve_list(ws_config *c, const ws_config_option *o, const char *raw,
                               const char *who, config_slot *s, bool hide)
{
    size_t n = 1;
    for (const char *p = raw; *p != '\0'; p++) {
        n += *p == ',';
    }
    char *block = config_list_block(raw, n);
    if (block == NULL) {
        config_error_set(c, "%s: out of memory", who);
        return -1;
    }
    const char *const *items = (const char *const *)(void *)block;
    for (size_t k = 0; k < n; k++) {
        config_value v = {0};
        char what[320], q[128];
        int rc = items[k][0] == '\0'
                     ? -3
                     : config_parsers[o->type](o, items[k], &v, what, sizeof what);
        free(v.str);
        if (hide) {
            snprintf(q, sizeof q, "a value not shown");
        } else {
            config_quote(q, sizeof q, items[k]);
        }
        if (rc == -3) {
            config_error_set(c, "%s: element %zu of %zu is empty (a comma list: A,B,...)",
                             who, k + 1, n);
        } else if (rc == -2) {
            config_error_set(c, "%s: out of memory", who);
        } else if (rc != 0) {
            config_error_set(c, "%s: element %zu of %zu: expected %s, got %s", who, k + 1,
                             n, what, q);
        } else if (s->src == CONFIG_SRC_DEFAULT &&
                   (o->type == WS_CONFIG_URL || o->type == WS_CONFIG_HOSTPORT) &&
                   !config_value_loopback(o, items[k])) {
            config_error_set(c, "%s: the default %s must be a loopback address", who,
                             items[k]);
            rc = -1;
        }
        if (rc != 0) {
            free(block);
            return -1;
        }
    }
    s->str = block;
    s->i64 = (int64_t)n;
    return 0;
}

/* Pick and parse the value of option i into its slot. */
static int config_resolve(ws_config *c, size_t i, char *const *envp)
{
    const ws_config_option *o = &c->opts[i];
    config_slot *s = &c->slots[i];
    const char *raw = NULL;
    bool file = false;
    char who[256];
    if (s->flag_seen) {
        raw = s->flag_val;
        file = s->flag_file;
        s->src = CONFIG_SRC_FLAG;
        snprintf(who, sizeof who, "--%s%s", o->name, file ? "-file" : "");
    } else {
        const char *ev = config_env_get(envp, c->env[i]);
        const char *evf =
            c->env_file[i] != NULL ? config_env_get(envp, c->env_file[i]) : NULL;
        if (ev != NULL && evf != NULL) {
            config_error_set(c, "--%s: both %s and %s are set; use one", o->name,
                             c->env[i], c->env_file[i]);
            return -1;
        }
        if (ev != NULL || evf != NULL) {
            raw = ev != NULL ? ev : evf;
            file = evf != NULL;
            s->src = CONFIG_SRC_ENV;
            snprintf(who, sizeof who, "--%s%s (from %s)", o->name, file ? "-file" : "",
                     file ? c->env_file[i] : c->env[i]);
        } else if (o->def != NULL) {
            raw = o->def;
            s->src = CONFIG_SRC_DEFAULT;
            snprintf(who, sizeof who, "--%s (default)", o->name);
        } else if (o->flags & WS_CONFIG_REQUIRED) {
            config_error_set(c, "--%s is required (or set %s)", o->name, c->env[i]);
            return -1;
        } else {
            s->src = CONFIG_SRC_UNSET;
            return 0;
        }
    }
    char *content = NULL;
    if (file) {
        char why[160];
        char q[128];
        config_quote(q, sizeof q, raw);
        if (config_read_file(raw, &content, why, sizeof why) != 0) {
            config_error_set(c, "%s: cannot read %s: %s", who, q, why);
            return -1;
        }
        raw = content;
    }
    if (o->flags & WS_CONFIG_LIST) {
        int lrc =
            config_resolve_list(c, o, raw, who, s, (o->flags & WS_CONFIG_SECRET) || file);
        free(content);
        return lrc;
    }
    config_value v = {0};
    char what[320];
    int rc = config_parsers[o->type](o, raw, &v, what, sizeof what);
    if (rc == -2) {
        config_error_set(c, "%s: out of memory", who);
    } else if (rc != 0) {
        char q[128];
        if ((o->flags & WS_CONFIG_SECRET) || file) {
            snprintf(q, sizeof q, "a value not shown");
        } else {
            config_quote(q, sizeof q, raw);
        }
        config_error_set(c, "%s: expected %s, got %s", who, what, q);
    } else if (s->src == CONFIG_SRC_DEFAULT &&
               (o->type == WS_CONFIG_URL || o->type == WS_CONFIG_HOSTPORT) &&
               !config_value_loopback(o, raw)) {
        config_error_set(c, "%s: the default %s must be a loopback address", who, raw);
        rc = -1;
    }
    free(content);
    if (rc != 0) {
        free(v.str);
        return -1;
    }
    s->str = v.str;
    s->i64 = v.i64;
    s->b = v.b;
    return 0;
}

static void config_commit(ws_config *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const ws_config_option *o = &c->opts[i];
        config_slot *s = &c->slots[i];
        free(s->owned);
        s->owned = s->str;
        s->str = NULL;
        if (o->flags & WS_CONFIG_LIST) {
            size_t n = s->owned != NULL ? (size_t)s->i64 : 0;
            *o->target.list = (ws_config_list){
                .items = n ? (const char *const *)(void *)s->owned : NULL,
                .n = n,
                .text = n ? s->owned + n * sizeof(char *) : NULL,
            };
            continue;
        }
        switch (o->type) {
        case WS_CONFIG_STRING:
        case WS_CONFIG_URL:
        case WS_CONFIG_HOSTPORT:
            *o->target.str = s->owned;
            break;
        case WS_CONFIG_INT:
        case WS_CONFIG_DURATION:
        case WS_CONFIG_SIZE:
            *o->target.i64 = s->i64;
            break;
        case WS_CONFIG_PORT:
        case WS_CONFIG_ENUM:
            *o->target.i = (int)s->i64;
            break;
        case WS_CONFIG_BOOL:
            *o->target.b = s->b;
            break;
        }
    }
}

ws_config_result ws_config_parse(ws_config *c, int argc, char *const *argv,
                                 char *const *envp)
{
    c->err[0] = '\0';
    config_slots_clear(c);
    free(c->args);
    c->nargs = 0;
    c->args = calloc((size_t)(argc > 0 ? argc : 1), sizeof *c->args);
    if (c->args == NULL) {
        config_error_set(c, "out of memory");
        return WS_CONFIG_ERROR;
    }
    if (envp == NULL) {
        envp = environ;
    }
    if (config_spec_check(c) != 0) {
        return WS_CONFIG_ERROR;
    }
    ws_config_result r = config_scan_argv(c, argc, argv);
    if (r != WS_CONFIG_OK) {
        return r;
    }
    for (size_t i = 0; i < c->n; i++) {
        if (config_resolve(c, i, envp) != 0) {
            config_slots_clear(c);
            c->nargs = 0;
            return WS_CONFIG_ERROR;
        }
    }
    config_commit(c);
    return WS_CONFIG_OK;
}
