/*
 * Process metrics read from /proc/self at scrape time; see
 * metrics_process.h. /proc/self/stat gives CPU ticks, start time (ticks
 * after boot), virtual size and resident pages; /proc/stat's btime turns
 * the start into epoch seconds; /proc/self/fd is counted for open fds. A
 * value that cannot be read is left out of the scrape rather than shown as
 * 0, which an alert would take at face value.
 */
#include "metrics_process.h"

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#define PROCESS_BUILD_INFO "webshop_build_info"

typedef struct process_stat {
    double cpu_seconds;
    double start_seconds; /* after boot */
    double vsize_bytes;
    double rss_bytes;
} process_stat;

/* Fields 14, 15 (utime, stime), 22 (starttime), 23 (vsize), 24 (rss) of
 * /proc/self/stat, counted after the ")" that ends the command name. */
static bool process_stat_read(process_stat *st)
{
    char text[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL) {
        return false;
    }
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    char *p = strrchr(text, ')');
    if (p == NULL) {
        return false;
    }
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
    long long rss = 0;
    int got = sscanf(p + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                     "%*d %*d %llu %llu %lld",
                     &utime, &stime, &start, &vsize, &rss);
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (got != 5 || tck <= 0 || page <= 0) {
        return false;
    }
    st->cpu_seconds = (double)(utime + stime) / (double)tck;
    st->start_seconds = (double)start / (double)tck;
    st->vsize_bytes = (double)vsize;
    st->rss_bytes = (double)rss * (double)page;
    return true;
}

/* The boot time in epoch seconds (/proc/stat "btime"), or -1. */
static long long process_boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL) {
        return -1;
    }
    char line[256];
    long long btime = -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (sscanf(line, "btime %lld", &btime) == 1) {
            break;
        }
    }
    fclose(f);
    return btime;
}

/* Entries of /proc/self/fd but the one opendir holds, or -1. */
static long process_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -1;
    }
    long n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1;
}

static ws_err process_family(ws_buf *out, const char *name, const char *type,
                             const char *help, double v)
{
    return ws_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n%s %.15g\n", name, help, name,
                         type, name, v);
}

ws_err ws_metrics_process_collect(void *ctx, ws_buf *out)
{
    (void)ctx;
    ws_err err = WS_OK;
    process_stat st;
    if (process_stat_read(&st)) {
        err = process_family(out, "process_cpu_seconds_total", "counter",
                             "Total user and system CPU time spent in seconds.",
                             st.cpu_seconds);
        if (err == WS_OK) {
            err = process_family(out, "process_resident_memory_bytes", "gauge",
                                 "Resident memory size in bytes.", st.rss_bytes);
        }
        if (err == WS_OK) {
            err = process_family(out, "process_virtual_memory_bytes", "gauge",
                                 "Virtual memory size in bytes.", st.vsize_bytes);
        }
        long long boot = process_boot_time();
        if (err == WS_OK && boot >= 0) {
            err = process_family(out, "process_start_time_seconds", "gauge",
                                 "Start time of the process since unix epoch in seconds.",
                                 (double)boot + st.start_seconds);
        }
    }
    long fds = process_open_fds();
    if (err == WS_OK && fds >= 0) {
        err = process_family(out, "process_open_fds", "gauge",
                             "Number of open file descriptors.", (double)fds);
    }
    struct rlimit rl;
    if (err == WS_OK && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        err = process_family(out, "process_max_fds", "gauge",
                             "Maximum number of open file descriptors.", (double)rl.rlim_cur);
    }
    return err;
}

ws_err ws_metrics_process_register(ws_metrics *m, const char *version)
{
    if (version == NULL) {
        return WS_EINVAL;
    }
    if (m == NULL && (m = ws_metrics_default()) == NULL) {
        return WS_ENOMEM;
    }
    /* The label value goes through the registry's parser: escape it. */
    ws_buf labels;
    ws_buf_init(&labels, 0);
    ws_err err = ws_buf_puts(&labels, "version=\"");
    for (const char *p = version; *p != '\0' && err == WS_OK; p++) {
        if (*p == '"' || *p == '\\') {
            err = ws_buf_putc(&labels, '\\');
        }
        if (err == WS_OK) {
            err = ws_buf_putc(&labels, *p == '\n' ? ' ' : *p);
        }
    }
    if (err == WS_OK) {
        err = ws_buf_putc(&labels, '"');
    }
    ws_gauge *g = NULL;
    if (err == WS_OK) {
        g = ws_gauge_get(m, PROCESS_BUILD_INFO,
                         "Always 1; the labels say which build of the webshop runs",
                         labels.data);
        err = g != NULL ? WS_OK : WS_ENOMEM;
    }
    ws_buf_fini(&labels);
    if (err != WS_OK) {
        return err;
    }
    ws_gauge_set(g, 1);
    return ws_metrics_add_collector(m, ws_metrics_process_collect, NULL);
}
