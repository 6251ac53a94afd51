/*
 * Log-linear latency histogram; see hist.h. Values below 128 ns have a
 * bucket each; above, each power of two is split into 64 equal buckets.
 */
#include "hist.h"

#include <string.h>

#define HIST_SUB     64
#define HIST_MAX_MSB 40

void bench_hist_init(bench_hist *h)
{
    memset(h, 0, sizeof(*h));
}

static unsigned hist_value_index(uint64_t v)
{
    if (v < 2 * HIST_SUB) {
        return (unsigned)v;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    if (msb > HIST_MAX_MSB) {
        msb = HIST_MAX_MSB;
        v = (UINT64_C(1) << (HIST_MAX_MSB + 1)) - 1;
    }
    unsigned shift = msb - 6;
    unsigned top = (unsigned)(v >> shift); /* 64..127 */
    return 2 * HIST_SUB + (shift - 1) * HIST_SUB + (top - HIST_SUB);
}

/* The middle of the values that fall into bucket i. */
static double hist_index_value(unsigned i)
{
    if (i < 2 * HIST_SUB) {
        return (double)i;
    }
    unsigned shift = (i - 2 * HIST_SUB) / HIST_SUB + 1;
    unsigned top = (i - 2 * HIST_SUB) % HIST_SUB + HIST_SUB;
    double lo = (double)((uint64_t)top << shift);
    return lo + (double)(UINT64_C(1) << shift) / 2.0;
}

void bench_hist_record(bench_hist *h, uint64_t ns)
{
    h->buckets[hist_value_index(ns)]++;
    h->count++;
    if (ns > h->max_ns) {
        h->max_ns = ns;
    }
}

void bench_hist_merge(bench_hist *dst, const bench_hist *src)
{
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        dst->buckets[i] += src->buckets[i];
    }
    dst->count += src->count;
    if (src->max_ns > dst->max_ns) {
        dst->max_ns = src->max_ns;
    }
}

double bench_hist_percentile(const bench_hist *h, double p)
{
    if (h->count == 0) {
        return 0.0;
    }
    uint64_t rank = (uint64_t)((p / 100.0) * (double)h->count + 0.5);
    if (rank < 1) {
        rank = 1;
    }
    if (rank > h->count) {
        rank = h->count;
    }
    uint64_t seen = 0;
    for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            double v = hist_index_value(i);
            return v > (double)h->max_ns ? (double)h->max_ns : v;
        }
    }
    return (double)h->max_ns;
}
