/*
 * Counters, gauges and histograms, rendered as Prometheus text exposition
 * (version 0.0.4). A registry owns its metrics; a metric is looked up or
 * created by name and label set once, then updated lock-free on hot paths
 * (atomics), so handlers keep the pointer. Names and label values are
 * validated and escaped on render.
 */
#ifndef WS_METRICS_H
#define WS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

typedef struct ws_metrics ws_metrics;     /* a registry */
typedef struct ws_counter ws_counter;     /* monotonically increasing */
typedef struct ws_gauge ws_gauge;         /* set / add, may go down */
typedef struct ws_histogram ws_histogram; /* observations into buckets */

/* The process-wide default registry, created on first use; never NULL
 * unless out of memory. Freed by ws_metrics_free(ws_metrics_default());
 * the next call then creates a fresh one. */
ws_metrics *ws_metrics_default(void);

/* A new, empty registry; NULL on ENOMEM. */
ws_metrics *ws_metrics_new(void);

/* Free a registry and every metric in it; m may be NULL. Metrics pointers
 * obtained from it are invalid afterwards. */
void ws_metrics_free(ws_metrics *m);

/* Find or create a metric. name is a Prometheus metric name
 * ("webshop_rpc_calls_total"), help its HELP text, labels a NULL or a
 * label set in Prometheus syntax without braces ("method=\"GetOrder\",code=\"OK\"").
 * The same name with the same labels returns the same pointer. All strings
 * are copied. Returns NULL on ENOMEM, if name is already registered as
 * another type, or if name, labels or bounds are malformed (a histogram may
 * not carry an "le" label). A histogram found again keeps its first bounds;
 * a name found again keeps its first help. Thread-safe. */
ws_counter *ws_counter_get(ws_metrics *m, const char *name, const char *help,
                           const char *labels);
ws_gauge *ws_gauge_get(ws_metrics *m, const char *name, const char *help,
                       const char *labels);
/* bounds: n strictly increasing upper bounds (the +Inf bucket is implicit);
 * NULL/0 uses the default latency buckets in seconds
 * (0.0001 .. 10). */
ws_histogram *ws_histogram_get(ws_metrics *m, const char *name, const char *help,
                               const char *labels, const double *bounds, size_t n);

/* Updates: any thread, lock-free. A NULL metric is ignored, so callers need
 * not check ws_*_get's result on hot paths. */
void ws_counter_add(ws_counter *c, uint64_t n);
void ws_counter_inc(ws_counter *c);
uint64_t ws_counter_value(const ws_counter *c);
void ws_gauge_set(ws_gauge *g, double v);
void ws_gauge_add(ws_gauge *g, double v);
double ws_gauge_value(const ws_gauge *g);
void ws_histogram_observe(ws_histogram *h, double v);
uint64_t ws_histogram_count(const ws_histogram *h);

/* Append the Prometheus text of every metric in m to out, grouped by name,
 * one HELP and TYPE line per name, then what each collector appends. */
ws_err ws_metrics_render(ws_metrics *m, ws_buf *out);

/* A collector: metrics whose values are read when scraped (from /proc,
 * say) rather than kept. fn appends whole families in the exposition
 * format (# HELP, # TYPE and samples) of names registered nowhere else in
 * the registry; it runs in ws_metrics_render, on the rendering thread,
 * with no registry lock held, in the order collectors were added. An error
 * it returns ends the render with that error. */
typedef ws_err (*ws_metrics_collect_fn)(void *ctx, ws_buf *out);

/* Add a collector to m (at most WS_METRICS_MAX_COLLECTORS; ctx must
 * outlive m). Adding the same fn and ctx again does nothing. WS_EINVAL for
 * a NULL m or fn, WS_ENOMEM when the table is full.
 * Thread-safe. */
#define WS_METRICS_MAX_COLLECTORS 8
ws_err ws_metrics_add_collector(ws_metrics *m, ws_metrics_collect_fn fn, void *ctx);

/* Monotonic clock in seconds, for latency observations. */
double ws_now_seconds(void);

#endif
