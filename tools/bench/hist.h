/*
 * Latency histogram of the load generator: log-linear buckets (64 per
 * power of two, so about 1.6 % resolution) over nanoseconds, fixed size, no
 * allocation, so every load thread keeps its own and they are merged at the
 * end. Percentiles are read from the merged histogram.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define BENCH_HIST_BUCKETS 2304

typedef struct bench_hist {
    uint64_t count;                       /* values recorded */
    uint64_t max_ns;                      /* the largest value recorded */
    uint64_t buckets[BENCH_HIST_BUCKETS]; /* counts per bucket */
} bench_hist;

/* Empty h. */
void bench_hist_init(bench_hist *h);

/* Record one value in nanoseconds; values past about 36 minutes are clamped. */
void bench_hist_record(bench_hist *h, uint64_t ns);

/* Add every count of src to dst. */
void bench_hist_merge(bench_hist *dst, const bench_hist *src);

/*
 * The value (nanoseconds) at percentile p (0..100) of h, to the bucket's
 * resolution; 0 when h is empty.
 */
double bench_hist_percentile(const bench_hist *h, double p);

#endif
