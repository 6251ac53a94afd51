/*
 * The metrics every service exports about itself, by one call at start:
 *   webshop_build_info{version}          gauge, always 1
 *   process_cpu_seconds_total            counter, user + system CPU time
 *   process_resident_memory_bytes        gauge, resident set size
 *   process_virtual_memory_bytes         gauge, address space size
 *   process_open_fds                     gauge, open file descriptors
 *   process_max_fds                      gauge, RLIMIT_NOFILE's soft limit
 *   process_start_time_seconds           gauge, since the epoch
 * The process_* names and meanings are the Prometheus client libraries'
 * (so stock dashboards and alerts work); they are read from /proc on each
 * scrape, nothing is kept. Linux only.
 */
#ifndef WS_METRICS_PROCESS_H
#define WS_METRICS_PROCESS_H

#include "buf.h"
#include "err.h"
#include "metrics.h"

/* Register webshop_build_info{version="<version>"} 1 and the process
 * collector in m (NULL = the default registry). version is copied into the
 * label. Idempotent per registry. WS_EINVAL for a NULL version, WS_ENOMEM. */
ws_err ws_metrics_process_register(ws_metrics *m, const char *version);

/* The collector itself (what a scrape appends), for tests. */
ws_err ws_metrics_process_collect(void *ctx, ws_buf *out);

#endif
