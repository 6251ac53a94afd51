/*
 * Metrics registry; see metrics.h. A registry is a list of families (one per
 * metric name, holding its HELP text and type), each a list of series (one
 * per label set). The registry mutex guards only these lists: it is taken to
 * look up or create a metric and to render. Updates touch nothing but the
 * series' own atomics, so hot paths never lock. Families and series are
 * rendered in registration order, which keeps the output stable.
 *
 * Label sets are parsed when a metric is created and kept as (name, raw
 * value) pairs; the canonical text used to compare label sets and the text
 * rendered are both produced from the pairs, so escaping is applied exactly
 * once, on the way out.
 */
#include "metrics.h"

#include <math.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"

typedef enum metrics_type {
    METRICS_COUNTER,
    METRICS_GAUGE,
    METRICS_HISTOGRAM,
} metrics_type;

struct ws_counter {
    _Atomic uint64_t value;
};

struct ws_gauge {
    _Atomic uint64_t bits; /* a double's bit pattern */
};

struct ws_histogram {
    size_t n;                  /* finite bounds; buckets has n + 1 slots */
    double *bounds;            /* owned, strictly increasing */
    _Atomic uint64_t *buckets; /* owned; per-bucket (not cumulative) counts */
    _Atomic uint64_t sum_bits; /* a double's bit pattern */
    _Atomic uint64_t count;
};

typedef struct metrics_series {
    char *labels; /* owned; canonical rendering without braces, "" if none */
    union {
        ws_counter counter;
        ws_gauge gauge;
        ws_histogram histogram;
    } u;
} metrics_series;

typedef struct metrics_family {
    char *name; /* owned */
    char *help; /* owned; raw, escaped on render */
    metrics_type type;
    metrics_series **series; /* owned array of owned series */
    size_t nseries;
    size_t capseries;
} metrics_family;

typedef struct metrics_collector {
    ws_metrics_collect_fn fn;
    void *ctx;
} metrics_collector;

struct ws_metrics {
    pthread_mutex_t mu; /* guards families, nfamilies, capfamilies, collectors */
    metrics_family **families;
    size_t nfamilies;
    size_t capfamilies;
    metrics_collector collectors[WS_METRICS_MAX_COLLECTORS];
    size_t ncollectors;
};

static const double metrics_default_bounds[] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};

static _Atomic(ws_metrics *) metrics_default_registry;
static pthread_mutex_t metrics_default_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t metrics_double_bits(double v)
{
    uint64_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

static double metrics_bits_double(uint64_t b)
{
    double v;
    memcpy(&v, &b, sizeof v);
    return v;
}

ws_metrics *ws_metrics_new(void)
{
    ws_metrics *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return NULL;
    }
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

ws_metrics *ws_metrics_default(void)
{
    ws_metrics *m = atomic_load_explicit(&metrics_default_registry, memory_order_acquire);
    if (m != NULL) {
        return m;
    }
    pthread_mutex_lock(&metrics_default_mu);
    m = atomic_load_explicit(&metrics_default_registry, memory_order_relaxed);
    if (m == NULL) {
        m = ws_metrics_new();
        atomic_store_explicit(&metrics_default_registry, m, memory_order_release);
    }
    pthread_mutex_unlock(&metrics_default_mu);
    return m;
}

static void metrics_series_free(metrics_series *s, metrics_type type)
{
    if (type == METRICS_HISTOGRAM) {
        free(s->u.histogram.bounds);
        free((void *)s->u.histogram.buckets);
    }
    free(s->labels);
    free(s);
}

static void metrics_family_free(metrics_family *f)
{
    for (size_t i = 0; i < f->nseries; i++) {
        metrics_series_free(f->series[i], f->type);
    }
    free(f->series);
    free(f->name);
    free(f->help);
    free(f);
}

void ws_metrics_free(ws_metrics *m)
{
    if (m == NULL) {
        return;
    }
    /* Freeing the default registry resets it, so a later
     * ws_metrics_default() creates a fresh one instead of a dangling one. */
    pthread_mutex_lock(&metrics_default_mu);
    if (atomic_load_explicit(&metrics_default_registry, memory_order_relaxed) == m) {
        atomic_store_explicit(&metrics_default_registry, NULL, memory_order_release);
    }
    pthread_mutex_unlock(&metrics_default_mu);
    for (size_t i = 0; i < m->nfamilies; i++) {
        metrics_family_free(m->families[i]);
    }
    free(m->families);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int metrics_name_valid(const char *s, int colon_ok)
{
    if (s == NULL || *s == '\0') {
        return 0;
    }
    for (size_t i = 0; s[i] != '\0'; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (colon_ok && c == ':') || (i > 0 && c >= '0' && c <= '9');
        if (!ok) {
            return 0;
        }
    }
    return 1;
}

/* Append v escaped as a label value (\\, \", \n). */
static ws_err metrics_label_value_append(ws_buf *out, const char *v, size_t n)
{
    ws_err err = WS_OK;
    for (size_t i = 0; i < n && err == WS_OK; i++) {
        if (v[i] == '\\') {
            err = ws_buf_puts(out, "\\\\");
        } else if (v[i] == '"') {
            err = ws_buf_puts(out, "\\\"");
        } else if (v[i] == '\n') {
            err = ws_buf_puts(out, "\\n");
        } else {
            err = ws_buf_putc(out, v[i]);
        }
    }
    return err;
}

/* Parse a label set in Prometheus syntax (name="value",...; the value's
 * escapes \\ \" \n are decoded, any other backslash kept) and rewrite it in
 * canonical form into *out (allocated). "le" is refused when forbid_le.
 * WS_EPARSE on bad syntax, WS_ENOMEM. */
static ws_err metrics_labels_canonical(const char *labels, int forbid_le, char **out)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    ws_buf raw;
    ws_buf_init(&raw, 0);
    ws_err err = WS_OK;
    const char *p = labels != NULL ? labels : "";
    while (*p == ' ') {
        p++;
    }
    while (*p != '\0' && err == WS_OK) {
        const char *name = p;
        while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
               (p > name && *p >= '0' && *p <= '9')) {
            p++;
        }
        size_t namelen = (size_t)(p - name);
        if (namelen == 0 || p[0] != '=' || p[1] != '"') {
            err = WS_EPARSE;
            break;
        }
        if (forbid_le && namelen == 2 && memcmp(name, "le", 2) == 0) {
            err = WS_EPARSE;
            break;
        }
        p += 2;
        ws_buf_reset(&raw);
        while (*p != '"' && *p != '\0' && err == WS_OK) {
            if (*p == '\\' && (p[1] == '\\' || p[1] == '"' || p[1] == 'n')) {
                err = ws_buf_putc(&raw, p[1] == 'n' ? '\n' : p[1]);
                p += 2;
            } else {
                err = ws_buf_putc(&raw, *p);
                p++;
            }
        }
        if (err != WS_OK) {
            break;
        }
        if (*p != '"') {
            err = WS_EPARSE;
            break;
        }
        p++;
        if (b.len > 0) {
            err = ws_buf_putc(&b, ',');
        }
        if (err == WS_OK) {
            err = ws_buf_append(&b, name, namelen);
        }
        if (err == WS_OK) {
            err = ws_buf_puts(&b, "=\"");
        }
        if (err == WS_OK) {
            err =
                metrics_label_value_append(&b, raw.data != NULL ? raw.data : "", raw.len);
        }
        if (err == WS_OK) {
            err = ws_buf_putc(&b, '"');
        }
        while (*p == ' ') {
            p++;
        }
        if (*p == ',') {
            p++;
            while (*p == ' ') {
                p++;
            }
            if (*p == '\0') {
                break; /* a trailing comma is allowed by the format */
            }
        } else if (*p != '\0') {
            err = WS_EPARSE;
        }
    }
    ws_buf_fini(&raw);
    if (err != WS_OK) {
        ws_buf_fini(&b);
        return err;
    }
    char *s = ws_buf_steal(&b, NULL);
    if (s == NULL) {
        return WS_ENOMEM;
    }
    *out = s;
    return WS_OK;
}

/* Find the family of name, or NULL. Caller holds m->mu. */
static metrics_family *metrics_family_find(ws_metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nfamilies; i++) {
        if (strcmp(m->families[i]->name, name) == 0) {
            return m->families[i];
        }
    }
    return NULL;
}

/* Find or create the family; NULL on ENOMEM or a type clash. Caller holds
 * m->mu. */
static metrics_family *metrics_family_get(ws_metrics *m, const char *name,
                                          const char *help, metrics_type type)
{
    metrics_family *f = metrics_family_find(m, name);
    if (f != NULL) {
        return f->type == type ? f : NULL;
    }
    if (m->nfamilies == m->capfamilies) {
        size_t cap = m->capfamilies != 0 ? m->capfamilies * 2 : 8;
        metrics_family **nf = realloc(m->families, cap * sizeof *nf);
        if (nf == NULL) {
            return NULL;
        }
        m->families = nf;
        m->capfamilies = cap;
    }
    f = calloc(1, sizeof *f);
    if (f == NULL) {
        return NULL;
    }
    f->name = strdup(name);
    f->help = strdup(help != NULL ? help : "");
    f->type = type;
    if (f->name == NULL || f->help == NULL) {
        free(f->name);
        free(f->help);
        free(f);
        return NULL;
    }
    m->families[m->nfamilies++] = f;
    return f;
}

/* The shared body of the three ws_*_get: returns the series of (name,
 * labels), creating it (and its family) if needed. */
static metrics_series *metrics_series_get(ws_metrics *m, const char *name,
                                          const char *help, const char *labels,
                                          metrics_type type, const double *bounds,
                                          size_t n)
{
    if (m == NULL || !metrics_name_valid(name, 1)) {
        return NULL;
    }
    if (type == METRICS_HISTOGRAM) {
        if (bounds == NULL || n == 0) {
            bounds = metrics_default_bounds;
            n = sizeof metrics_default_bounds / sizeof metrics_default_bounds[0];
        }
        for (size_t i = 0; i < n; i++) {
            if (isnan(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1])) ||
                isinf(bounds[i])) {
                return NULL;
            }
        }
    }
    char *canon = NULL;
    if (metrics_labels_canonical(labels, type == METRICS_HISTOGRAM, &canon) != WS_OK) {
        return NULL;
    }
    metrics_series *s = NULL;
    pthread_mutex_lock(&m->mu);
    metrics_family *f = metrics_family_get(m, name, help, type);
    if (f == NULL) {
        goto out;
    }
    for (size_t i = 0; i < f->nseries; i++) {
        if (strcmp(f->series[i]->labels, canon) == 0) {
            s = f->series[i];
            goto out;
        }
    }
    if (f->nseries == f->capseries) {
        size_t cap = f->capseries != 0 ? f->capseries * 2 : 4;
        metrics_series **ns = realloc(f->series, cap * sizeof *ns);
        if (ns == NULL) {
            goto out;
        }
        f->series = ns;
        f->capseries = cap;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        goto out;
    }
    if (type == METRICS_HISTOGRAM) {
        ws_histogram *h = &s->u.histogram;
        h->n = n;
        h->bounds = malloc(n * sizeof *h->bounds);
        h->buckets = calloc(n + 1, sizeof *h->buckets);
        if (h->bounds == NULL || h->buckets == NULL) {
            free(h->bounds);
            free((void *)h->buckets);
            free(s);
            s = NULL;
            goto out;
        }
        memcpy(h->bounds, bounds, n * sizeof *h->bounds);
        atomic_init(&h->sum_bits, metrics_double_bits(0.0));
    } else if (type == METRICS_GAUGE) {
        atomic_init(&s->u.gauge.bits, metrics_double_bits(0.0));
    }
    s->labels = canon;
    canon = NULL;
    f->series[f->nseries++] = s;
out:
    pthread_mutex_unlock(&m->mu);
    free(canon);
    return s;
}

ws_counter *ws_counter_get(ws_metrics *m, const char *name, const char *help,
                           const char *labels)
{
    metrics_series *s =
        metrics_series_get(m, name, help, labels, METRICS_COUNTER, NULL, 0);
    return s != NULL ? &s->u.counter : NULL;
}

ws_gauge *ws_gauge_get(ws_metrics *m, const char *name, const char *help,
                       const char *labels)
{
    metrics_series *s = metrics_series_get(m, name, help, labels, METRICS_GAUGE, NULL, 0);
    return s != NULL ? &s->u.gauge : NULL;
}

ws_histogram *ws_histogram_get(ws_metrics *m, const char *name, const char *help,
                               const char *labels, const double *bounds, size_t n)
{
    metrics_series *s =
        metrics_series_get(m, name, help, labels, METRICS_HISTOGRAM, bounds, n);
    return s != NULL ? &s->u.histogram : NULL;
}

void ws_counter_add(ws_counter *c, uint64_t n)
{
    if (c != NULL) {
        atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
    }
}

void ws_counter_inc(ws_counter *c)
{
    ws_counter_add(c, 1);
}

uint64_t ws_counter_value(const ws_counter *c)
{
    if (c == NULL) {
        return 0;
    }
    return atomic_load_explicit(&((ws_counter *)c)->value, memory_order_relaxed);
}

void ws_gauge_set(ws_gauge *g, double v)
{
    if (g != NULL) {
        atomic_store_explicit(&g->bits, metrics_double_bits(v), memory_order_relaxed);
    }
}

/* Add v to the double stored in *bits, lock-free. */
static void metrics_double_add(_Atomic uint64_t *bits, double v)
{
    uint64_t old = atomic_load_explicit(bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(
        bits, &old, metrics_double_bits(metrics_bits_double(old) + v),
        memory_order_relaxed, memory_order_relaxed)) {
    }
}

void ws_gauge_add(ws_gauge *g, double v)
{
    if (g != NULL) {
        metrics_double_add(&g->bits, v);
    }
}

double ws_gauge_value(const ws_gauge *g)
{
    if (g == NULL) {
        return 0.0;
    }
    return metrics_bits_double(
        atomic_load_explicit(&((ws_gauge *)g)->bits, memory_order_relaxed));
}

void ws_histogram_observe(ws_histogram *h, double v)
{
    if (h == NULL) {
        return;
    }
    /* Bucket i counts observations with bounds[i-1] < v <= bounds[i]; NaN
     * and values above the last bound land in the +Inf slot. */
    size_t lo = 0;
    size_t hi = h->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= h->bounds[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    if (isnan(v)) {
        lo = h->n;
    }
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    metrics_double_add(&h->sum_bits, v);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

uint64_t ws_histogram_count(const ws_histogram *h)
{
    if (h == NULL) {
        return 0;
    }
    return atomic_load_explicit(&((ws_histogram *)h)->count, memory_order_relaxed);
}

/* Append a float in the exposition format: shortest round-tripping decimal,
 * +Inf, -Inf, NaN. */
static ws_err metrics_double_append(ws_buf *out, double v)
{
    if (isnan(v)) {
        return ws_buf_puts(out, "NaN");
    }
    if (isinf(v)) {
        return ws_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
    }
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) {
            break;
        }
    }
    return ws_buf_puts(out, tmp);
}

static ws_err metrics_help_append(ws_buf *out, const char *help)
{
    ws_err err = WS_OK;
    for (const char *p = help; *p != '\0' && err == WS_OK; p++) {
        if (*p == '\\') {
            err = ws_buf_puts(out, "\\\\");
        } else if (*p == '\n') {
            err = ws_buf_puts(out, "\\n");
        } else {
            err = ws_buf_putc(out, *p);
        }
    }
    return err;
}

/* "{labels}" or "" when there are none; extra (already escaped, e.g.
 * le="0.5") is appended after the series' own labels. */
static ws_err metrics_labelset_append(ws_buf *out, const char *labels, const char *extra)
{
    int has = labels[0] != '\0';
    int hasx = extra != NULL;
    if (!has && !hasx) {
        return WS_OK;
    }
    ws_err err = ws_buf_putc(out, '{');
    if (err == WS_OK && has) {
        err = ws_buf_puts(out, labels);
    }
    if (err == WS_OK && has && hasx) {
        err = ws_buf_putc(out, ',');
    }
    if (err == WS_OK && hasx) {
        err = ws_buf_puts(out, extra);
    }
    if (err == WS_OK) {
        err = ws_buf_putc(out, '}');
    }
    return err;
}

static ws_err metrics_histogram_render(ws_buf *out, const metrics_family *f,
                                       const metrics_series *s)
{
    const ws_histogram *h = &s->u.histogram;
    uint64_t cum = 0;
    ws_err err = WS_OK;
    for (size_t i = 0; i <= h->n && err == WS_OK; i++) {
        cum +=
            atomic_load_explicit(&((ws_histogram *)h)->buckets[i], memory_order_relaxed);
        ws_buf le;
        ws_buf_init(&le, 0);
        err = ws_buf_puts(&le, "le=\"");
        if (err == WS_OK) {
            err = i < h->n ? metrics_double_append(&le, h->bounds[i])
                           : ws_buf_puts(&le, "+Inf");
        }
        if (err == WS_OK) {
            err = ws_buf_putc(&le, '"');
        }
        if (err == WS_OK) {
            err = ws_buf_printf(out, "%s_bucket", f->name);
        }
        if (err == WS_OK) {
            err = metrics_labelset_append(out, s->labels, le.data);
        }
        if (err == WS_OK) {
            err = ws_buf_printf(out, " %llu\n", (unsigned long long)cum);
        }
        ws_buf_fini(&le);
    }
    /* _count is the +Inf bucket, so the two always agree even while other
     * threads observe during the render. */
    if (err == WS_OK) {
        err = ws_buf_printf(out, "%s_sum", f->name);
    }
    if (err == WS_OK) {
        err = metrics_labelset_append(out, s->labels, NULL);
    }
    if (err == WS_OK) {
        err = ws_buf_putc(out, ' ');
    }
    if (err == WS_OK) {
        err = metrics_double_append(
            out, metrics_bits_double(atomic_load_explicit(&((ws_histogram *)h)->sum_bits,
                                                          memory_order_relaxed)));
    }
    if (err == WS_OK) {
        err = ws_buf_printf(out, "\n%s_count", f->name);
    }
    if (err == WS_OK) {
        err = metrics_labelset_append(out, s->labels, NULL);
    }
    if (err == WS_OK) {
        err = ws_buf_printf(out, " %llu\n", (unsigned long long)cum);
    }
    return err;
}

static ws_err metrics_family_render(ws_buf *out, const metrics_family *f)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    ws_err err = ws_buf_printf(out, "# HELP %s ", f->name);
    if (err == WS_OK) {
        err = metrics_help_append(out, f->help);
    }
    if (err == WS_OK) {
        err = ws_buf_printf(out, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    }
    for (size_t i = 0; i < f->nseries && err == WS_OK; i++) {
        const metrics_series *s = f->series[i];
        if (f->type == METRICS_HISTOGRAM) {
            err = metrics_histogram_render(out, f, s);
            continue;
        }
        err = ws_buf_puts(out, f->name);
        if (err == WS_OK) {
            err = metrics_labelset_append(out, s->labels, NULL);
        }
        if (err == WS_OK) {
            err = ws_buf_putc(out, ' ');
        }
        if (err == WS_OK) {
            if (f->type == METRICS_COUNTER) {
                err = ws_buf_printf(out, "%llu",
                                    (unsigned long long)ws_counter_value(&s->u.counter));
            } else {
                err = metrics_double_append(out, ws_gauge_value(&s->u.gauge));
            }
        }
        if (err == WS_OK) {
            err = ws_buf_putc(out, '\n');
        }
    }
    return err;
}

ws_err ws_metrics_render(ws_metrics *m, ws_buf *out)
{
    if (m == NULL || out == NULL) {
        return WS_EINVAL;
    }
    ws_err err = WS_OK;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nfamilies && err == WS_OK; i++) {
        err = metrics_family_render(out, m->families[i]);
    }
    /* Collectors read files: run them on a copy, without the lock. */
    metrics_collector cs[WS_METRICS_MAX_COLLECTORS];
    size_t n = m->ncollectors;
    memcpy(cs, m->collectors, n * sizeof(cs[0]));
    pthread_mutex_unlock(&m->mu);
    for (size_t i = 0; i < n && err == WS_OK; i++) {
        err = cs[i].fn(cs[i].ctx, out);
    }
    return err;
}

ws_err ws_metrics_add_collector(ws_metrics *m, ws_metrics_collect_fn fn, void *ctx)
{
    if (m == NULL || fn == NULL) {
        return WS_EINVAL;
    }
    ws_err err = WS_OK;
    pthread_mutex_lock(&m->mu);
    bool found = false;
    for (size_t i = 0; i < m->ncollectors; i++) {
        found = found || (m->collectors[i].fn == fn && m->collectors[i].ctx == ctx);
    }
    if (!found && m->ncollectors == WS_METRICS_MAX_COLLECTORS) {
        err = WS_ENOMEM;
    } else if (!found) {
        m->collectors[m->ncollectors++] = (metrics_collector){.fn = fn, .ctx = ctx};
    }
    pthread_mutex_unlock(&m->mu);
    return err;
}

double ws_now_seconds(void)
{
    return ws_clock_mono_seconds();
}
