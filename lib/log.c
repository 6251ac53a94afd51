/*
 * Structured one-line logging; see log.h. A line is assembled in a local
 * buffer and handed to the kernel with a single write(2) on stderr, so lines
 * from different threads never interleave (pipes guarantee it up to
 * PIPE_BUF bytes; lines are capped well above that only for huge values).
 *
 * How the fields are formatted: the fmt string is walked token by token
 * ("key=value-format", separated by spaces). Each printf conversion in a
 * value is formatted on its own: this file reads the argument with va_arg
 * according to the conversion's length modifier and type, and passes it to
 * snprintf together with that single conversion spec. Formatting the whole
 * string first and re-quoting afterwards would be wrong, since a formatted
 * value may itself contain " k=v" and could not be told apart from a real
 * field; and handing the same va_list to vsnprintf repeatedly is undefined.
 * Reading each argument ourselves keeps the va_list in step with the fmt.
 */
#include "log.h"
#include "trace.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#include "buf.h"
#include "clock.h"

/* A formatted value longer than this is cut and marked with "...". */
#define LOG_VALUE_MAX 4096
/* A whole line never exceeds this (the buffer refuses to grow past it). */
#define LOG_LINE_MAX 65536

static atomic_int log_level = WS_LOG_INFO;
/* Written only by ws_log_set_service, which the contract says runs before
 * threads start. */
static char log_service[64];

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

void ws_log_set_level(ws_log_level level)
{
    atomic_store_explicit(&log_level, (int)level, memory_order_relaxed);
}

int ws_log_level_parse(const char *s)
{
    if (s == NULL) {
        return -1;
    }
    for (size_t i = 0; i < sizeof log_level_names / sizeof log_level_names[0]; i++) {
        if (strcasecmp(s, log_level_names[i]) == 0) {
            return (int)i;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        return WS_LOG_WARN;
    }
    return -1;
}

void ws_log_set_service(const char *name)
{
    if (name == NULL) {
        log_service[0] = '\0';
        return;
    }
    snprintf(log_service, sizeof log_service, "%s", name);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0 if the
 * bytes there are not one (overlong, surrogate, past U+10FFFF, truncated). */
static size_t log_utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return len;
}

/* Whether v must be quoted to parse back as one value. */
static int log_value_needs_quotes(const char *v, size_t n)
{
    if (n == 0) {
        return 1;
    }
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)v[i];
        if (c <= 0x20 || c == 0x7f || c == '"' || c == '=' || c == '\\') {
            return 1;
        }
        size_t l = log_utf8_len((const unsigned char *)v + i, n - i);
        if (l == 0) {
            return 1;
        }
        i += l;
    }
    return 0;
}

/* Append v (n bytes) to out, quoted and escaped if needed. Valid UTF-8 is
 * kept as is; control bytes and invalid bytes become \n, \t, \r or \xNN. */
static void log_value_append(ws_buf *out, const char *v, size_t n)
{
    if (!log_value_needs_quotes(v, n)) {
        (void)ws_buf_append(out, v, n);
        return;
    }
    (void)ws_buf_putc(out, '"');
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)v[i];
        size_t l = log_utf8_len((const unsigned char *)v + i, n - i);
        if (c == '"' || c == '\\') {
            (void)ws_buf_putc(out, '\\');
            (void)ws_buf_putc(out, (char)c);
        } else if (c == '\n') {
            (void)ws_buf_puts(out, "\\n");
        } else if (c == '\r') {
            (void)ws_buf_puts(out, "\\r");
        } else if (c == '\t') {
            (void)ws_buf_puts(out, "\\t");
        } else if (c < 0x20 || c == 0x7f || l == 0) {
            (void)ws_buf_printf(out, "\\x%02x", c);
            i++;
            continue;
        } else {
            (void)ws_buf_append(out, v + i, l);
            i += l;
            continue;
        }
        i++;
    }
    (void)ws_buf_putc(out, '"');
}

/* Append the decimal form of v (negative if neg) to val. */
static void log_append_decimal(ws_buf *val, unsigned long long v, int neg)
{
    char d[24];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    if (neg) {
        d[--i] = '-';
    }
    (void)ws_buf_append(val, d + i, sizeof d - i);
}

/* The conversions most log calls use -- a bare %s, or %d/%i/%u with no
 * flag, width or precision and an l, ll or z modifier at most -- done
 * without snprintf, which costs more than the rest of the line together
 * on a per-request log. Returns 0 (nothing consumed) for any other spec. */
static int log_conv_fast(ws_buf *val, const char *spec, size_t speclen, va_list *ap)
{
    char conv = spec[speclen - 1];
    const char *mod = spec + 1;
    size_t modlen = speclen - 2;

    if (conv == 's' && modlen == 0) {
        const char *s = va_arg(*ap, const char *);
        (void)ws_buf_puts(val, s != NULL ? s : "(null)");
        return 1;
    }
    if (conv != 'd' && conv != 'i' && conv != 'u') {
        return 0;
    }
    int l = modlen == 1 && mod[0] == 'l';
    int ll = modlen == 2 && mod[0] == 'l' && mod[1] == 'l';
    int z = modlen == 1 && mod[0] == 'z';
    if (modlen != 0 && !l && !ll && !z) {
        return 0;
    }
    if (conv == 'u') {
        unsigned long long v = ll  ? va_arg(*ap, unsigned long long)
                               : l ? va_arg(*ap, unsigned long)
                               : z ? va_arg(*ap, size_t)
                                   : va_arg(*ap, unsigned int);
        log_append_decimal(val, v, 0);
        return 1;
    }
    long long v = ll  ? va_arg(*ap, long long)
                  : l ? va_arg(*ap, long)
                  : z ? va_arg(*ap, ssize_t)
                      : va_arg(*ap, int);
    /* -(v + 1) + 1 avoids negating LLONG_MIN. */
    log_append_decimal(
        val, v < 0 ? (unsigned long long)(-(v + 1)) + 1 : (unsigned long long)v, v < 0);
    return 1;
}

/* Format one printf conversion spec (spec[0] == '%', speclen bytes, ending
 * with the conversion character) by fetching its argument(s) from *ap, and
 * append the result to val. Handles '*' width and precision. */
static void log_conv_format(ws_buf *val, const char *spec, size_t speclen, va_list *ap)
{
    char f[64];
    if (log_conv_fast(val, spec, speclen, ap)) {
        return;
    }
    char conv = spec[speclen - 1];
    int stars[2];
    int nstars = 0;
    if (speclen >= sizeof f) {
        (void)ws_buf_puts(val, "<bad-format>");
        return;
    }
    memcpy(f, spec, speclen);
    f[speclen] = '\0';
    for (size_t i = 1; i + 1 < speclen; i++) {
        if (f[i] == '*' && nstars < 2) {
            stars[nstars++] = va_arg(*ap, int);
        }
    }
    /* The length modifier sits right before the conversion character. */
    const char *lm = f + speclen - 1;
    while (lm > f + 1 && strchr("hljztL", lm[-1]) != NULL) {
        lm--;
    }
    size_t lmlen = (size_t)(f + speclen - 1 - lm);
    char mod[3] = {0};
    memcpy(mod, lm, lmlen < 3 ? lmlen : 2);

#define LOG_EMIT(arg)                                                                    \
    do {                                                                                 \
        if (nstars == 0) {                                                               \
            (void)ws_buf_printf(val, f, arg);                                            \
        } else if (nstars == 1) {                                                        \
            (void)ws_buf_printf(val, f, stars[0], arg);                                  \
        } else {                                                                         \
            (void)ws_buf_printf(val, f, stars[0], stars[1], arg);                        \
        }                                                                                \
    } while (0)

/* The spec is only known at run time; the argument types are matched to it
 * by hand above and below. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
#pragma GCC diagnostic ignored "-Wformat-security"
    switch (conv) {
    case 'd':
    case 'i':
        if (strcmp(mod, "ll") == 0) {
            LOG_EMIT(va_arg(*ap, long long));
        } else if (strcmp(mod, "l") == 0) {
            LOG_EMIT(va_arg(*ap, long));
        } else if (strcmp(mod, "j") == 0) {
            LOG_EMIT(va_arg(*ap, intmax_t));
        } else if (strcmp(mod, "z") == 0) {
            LOG_EMIT(va_arg(*ap, ssize_t));
        } else if (strcmp(mod, "t") == 0) {
            LOG_EMIT(va_arg(*ap, ptrdiff_t));
        } else {
            LOG_EMIT(va_arg(*ap, int)); /* also hh, h: promoted to int */
        }
        break;
    case 'u':
    case 'o':
    case 'x':
    case 'X':
        if (strcmp(mod, "ll") == 0) {
            LOG_EMIT(va_arg(*ap, unsigned long long));
        } else if (strcmp(mod, "l") == 0) {
            LOG_EMIT(va_arg(*ap, unsigned long));
        } else if (strcmp(mod, "j") == 0) {
            LOG_EMIT(va_arg(*ap, uintmax_t));
        } else if (strcmp(mod, "z") == 0) {
            LOG_EMIT(va_arg(*ap, size_t));
        } else if (strcmp(mod, "t") == 0) {
            LOG_EMIT(va_arg(*ap, ptrdiff_t));
        } else {
            LOG_EMIT(va_arg(*ap, unsigned int));
        }
        break;
    case 'f':
    case 'F':
    case 'e':
    case 'E':
    case 'g':
    case 'G':
    case 'a':
    case 'A':
        if (strcmp(mod, "L") == 0) {
            LOG_EMIT(va_arg(*ap, long double));
        } else {
            LOG_EMIT(va_arg(*ap, double));
        }
        break;
    case 'c':
        if (strcmp(mod, "l") == 0) {
            LOG_EMIT(va_arg(*ap, wint_t));
        } else {
            LOG_EMIT(va_arg(*ap, int));
        }
        break;
    case 's':
        if (strcmp(mod, "l") == 0) {
            const wchar_t *ws = va_arg(*ap, const wchar_t *);
            if (ws == NULL) {
                (void)ws_buf_puts(val, "(null)");
            } else {
                LOG_EMIT(ws);
            }
        } else {
            const char *s = va_arg(*ap, const char *);
            if (s == NULL) {
                (void)ws_buf_puts(val, "(null)");
            } else {
                LOG_EMIT(s);
            }
        }
        break;
    case 'p':
        LOG_EMIT(va_arg(*ap, void *));
        break;
    case 'n':
        /* Never written through: a log call has no business doing it. */
        (void)va_arg(*ap, void *);
        break;
    default:
        (void)ws_buf_puts(val, "<bad-format>");
        break;
    }
#pragma GCC diagnostic pop
#undef LOG_EMIT
}

/* Expand the printf conversions of tok (toklen bytes, no spaces) into val. */
static void log_token_expand(ws_buf *val, const char *tok, size_t toklen, va_list *ap)
{
    size_t i = 0;
    while (i < toklen) {
        if (tok[i] != '%') {
            size_t j = i;
            while (j < toklen && tok[j] != '%') {
                j++;
            }
            (void)ws_buf_append(val, tok + i, j - i);
            i = j;
            continue;
        }
        if (i + 1 < toklen && tok[i + 1] == '%') {
            (void)ws_buf_putc(val, '%');
            i += 2;
            continue;
        }
        size_t j = i + 1;
        while (j < toklen && strchr("#0- +'*.0123456789hljztL", tok[j]) != NULL) {
            j++;
        }
        if (j >= toklen) {
            (void)ws_buf_puts(val, "<bad-format>");
            return;
        }
        log_conv_format(val, tok + i, j - i + 1, ap);
        i = j + 1;
    }
}

/* Append " key=value" for every token of fmt. */
static void log_fields_append(ws_buf *line, const char *fmt, va_list *ap)
{
    ws_buf val;
    ws_buf_init(&val, 0);
    const char *p = fmt;
    while (*p != '\0') {
        while (*p == ' ') {
            p++;
        }
        if (*p == '\0') {
            break;
        }
        const char *end = p;
        while (*end != '\0' && *end != ' ') {
            end++;
        }
        const char *eq = memchr(p, '=', (size_t)(end - p));
        (void)ws_buf_putc(line, ' ');
        const char *vstart = p;
        if (eq != NULL) {
            (void)ws_buf_append(line, p, (size_t)(eq - p + 1));
            vstart = eq + 1;
        }
        ws_buf_reset(&val);
        log_token_expand(&val, vstart, (size_t)(end - vstart), ap);
        const char *v = val.data != NULL ? val.data : "";
        size_t vlen = val.len;
        if (vlen > LOG_VALUE_MAX) {
            /* Cut on a character boundary so the marker is not glued to a
             * partial UTF-8 sequence. */
            vlen = LOG_VALUE_MAX;
            while (vlen > 0 && ((unsigned char)v[vlen] & 0xc0) == 0x80) {
                vlen--;
            }
            val.len = vlen;
            (void)ws_buf_puts(&val, "...");
            v = val.data;
            vlen = val.len;
        }
        log_value_append(line, v, vlen);
        p = end;
    }
    ws_buf_fini(&val);
}

static void log_write_all(const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* The line of one event into line (ending in '\n'); false when the
 * buffer could not be had. */
static bool log_format_line(ws_buf *line, ws_log_level level, const char *event,
                            const char *fmt, va_list *ap)
{
    /* Room for a typical line at once, instead of growing it in steps. */
    (void)ws_buf_reserve(line, 256);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* The date and time to the second, formatted once per second per
     * thread: gmtime_r and strftime on every line cost more than all the
     * fields of a short line. */
    static _Thread_local time_t tcache_sec = (time_t)-1;
    static _Thread_local char tcache[32];
    if (ts.tv_sec != tcache_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(tcache, sizeof tcache, "%Y-%m-%dT%H:%M:%S", &tm);
        tcache_sec = ts.tv_sec;
    }
    long ms = ts.tv_nsec / 1000000L;
    char frac[6] = {'.',
                    (char)('0' + ms / 100),
                    (char)('0' + ms / 10 % 10),
                    (char)('0' + ms % 10),
                    'Z',
                    '\0'};
    const char *lname = ((unsigned)level < 4) ? log_level_names[level] : "unknown";
    (void)ws_buf_puts(line, tcache);
    (void)ws_buf_puts(line, frac);
    (void)ws_buf_puts(line, " level=");
    (void)ws_buf_puts(line, lname);
    if (log_service[0] != '\0') {
        (void)ws_buf_puts(line, " svc=");
        log_value_append(line, log_service, strlen(log_service));
    }
    (void)ws_buf_puts(line, " event=");
    const char *ev = event != NULL ? event : "";
    log_value_append(line, ev, strlen(ev));
    const ws_trace *trace = ws_trace_current();
    if (trace != NULL) {
        (void)ws_buf_puts(line, " trace_id=");
        (void)ws_buf_puts(line, trace->trace_id);
    }
    if (fmt != NULL) {
        log_fields_append(line, fmt, ap);
    }
    if (ws_buf_putc(line, '\n') != WS_OK && line->data != NULL) {
        /* At the cap: end the (cut) line anyway so the next one starts fresh. */
        line->data[line->len - 1] = '\n';
    }
    return line->data != NULL;
}

/* ---- the buffers of ws_log_buffered --------------------------------------- */

/* One buffer per thread that logs buffered lines, so that the hot path
 * takes only its own, uncontended mutex (one process-wide buffer under one
 * lock halved GET /inventory with 64 civetweb threads); the flusher and a
 * warning take each in turn through the registry. */
#define LOG_TBUF_CAP (8 * 1024)
#define LOG_FLUSH_MS 100

typedef struct log_tbuf {
    pthread_mutex_t mu;
    size_t len;            /* under mu */
    struct log_tbuf *next; /* under log_reg_mu */
    char data[LOG_TBUF_CAP];
} log_tbuf;

static pthread_mutex_t log_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static log_tbuf *log_reg;        /* every thread's buffer, under log_reg_mu */
static atomic_bool log_buf_used; /* something was ever buffered */
static pthread_once_t log_buf_once = PTHREAD_ONCE_INIT;
static pthread_key_t log_buf_key; /* the thread's buffer, for its exit */
static _Thread_local log_tbuf *log_mine;

static void log_tbuf_write_locked(log_tbuf *b)
{
    log_write_all(b->data, b->len);
    b->len = 0;
}

void ws_log_flush(void)
{
    if (!atomic_load_explicit(&log_buf_used, memory_order_relaxed)) {
        return;
    }
    pthread_mutex_lock(&log_reg_mu);
    for (log_tbuf *b = log_reg; b != NULL; b = b->next) {
        pthread_mutex_lock(&b->mu);
        log_tbuf_write_locked(b);
        pthread_mutex_unlock(&b->mu);
    }
    pthread_mutex_unlock(&log_reg_mu);
}

/* A thread ends: its lines out, its buffer gone. */
static void log_tbuf_release(void *arg)
{
    log_tbuf *b = arg;
    pthread_mutex_lock(&log_reg_mu);
    for (log_tbuf **pp = &log_reg; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    }
    pthread_mutex_unlock(&log_reg_mu);
    log_write_all(b->data, b->len);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static void *log_flusher_main(void *arg)
{
    (void)arg;
    for (;;) {
        ws_clock_sleep_ms(LOG_FLUSH_MS);
        ws_log_flush();
    }
    return NULL;
}

/* The key, the flusher (detached, for the process's life, with every
 * signal blocked so they stay the service's) and the flush at exit. */
static void log_buf_init(void)
{
    if (pthread_key_create(&log_buf_key, log_tbuf_release) != 0) {
        return;
    }
    pthread_t t;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&t, NULL, log_flusher_main, NULL) == 0) {
        pthread_detach(t);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    atexit(ws_log_flush);
    atomic_store(&log_buf_used, true);
}

/* This thread's buffer, made and registered on first use; NULL without. */
static log_tbuf *log_tbuf_mine(void)
{
    if (log_mine != NULL) {
        return log_mine;
    }
    pthread_once(&log_buf_once, log_buf_init);
    if (!atomic_load(&log_buf_used)) {
        return NULL;
    }
    log_tbuf *b = malloc(sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    pthread_mutex_init(&b->mu, NULL);
    b->len = 0;
    pthread_mutex_lock(&log_reg_mu);
    b->next = log_reg;
    log_reg = b;
    pthread_mutex_unlock(&log_reg_mu);
    (void)pthread_setspecific(log_buf_key, b);
    log_mine = b;
    return b;
}

static void log_buffer_put(const char *p, size_t n)
{
    log_tbuf *b = log_tbuf_mine();
    if (b == NULL) {
        log_write_all(p, n); /* no buffer: as ws_log would */
        return;
    }
    pthread_mutex_lock(&b->mu);
    if (b->len + n > sizeof b->data) {
        log_tbuf_write_locked(b);
    }
    if (n > sizeof b->data) {
        log_write_all(p, n);
    } else {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    }
    pthread_mutex_unlock(&b->mu);
}

static void log_emit(bool buffered, ws_log_level level, const char *event,
                     const char *fmt, va_list *ap)
{
    int saved_errno = errno;
    ws_buf line;
    ws_buf_init(&line, LOG_LINE_MAX);
    if (log_format_line(&line, level, event, fmt, ap)) {
        if (buffered) {
            log_buffer_put(line.data, line.len);
        } else {
            if (level >= WS_LOG_WARN) {
                ws_log_flush(); /* what came before it, first */
            }
            log_write_all(line.data, line.len);
        }
    }
    ws_buf_fini(&line);
    errno = saved_errno;
}

void ws_log(ws_log_level level, const char *event, const char *fmt, ...)
{
    if ((int)level < atomic_load_explicit(&log_level, memory_order_relaxed)) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    log_emit(false, level, event, fmt, &ap);
    va_end(ap);
}

void ws_log_buffered(ws_log_level level, const char *event, const char *fmt, ...)
{
    if ((int)level < atomic_load_explicit(&log_level, memory_order_relaxed)) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    log_emit(true, level, event, fmt, &ap);
    va_end(ap);
}
