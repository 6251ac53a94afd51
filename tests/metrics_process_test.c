/*
 * Tests of lib/metrics_process: one call registers webshop_build_info and
 * the process_* families, whose values are this process's own as /proc and
 * getrlimit tell them (read again at each scrape), and registering twice
 * renders each family once.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "metrics_process.h"

static char *scrape(ws_metrics *m)
{
    ws_buf out;
    ws_buf_init(&out, 0);
    cr_assert_eq(ws_metrics_render(m, &out), WS_OK);
    return ws_buf_steal(&out, NULL);
}

/* The value of the sample named exactly name (no labels). */
static double sample(const char *text, const char *name)
{
    char key[128];
    snprintf(key, sizeof(key), "\n%s ", name);
    const char *p = strstr(text, key);
    cr_assert(p != NULL, "no sample %s in:\n%s", name, text);
    return strtod(p + strlen(key), NULL);
}

static size_t count(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = text; (p = strstr(p, needle)) != NULL; p++) {
        n++;
    }
    return n;
}

Test(metrics_process, one_call_registers_build_info_and_process_families)
{
    ws_metrics *m = ws_metrics_new();
    cr_assert_eq(ws_metrics_process_register(m, "1.2.3"), WS_OK);
    cr_assert_eq(ws_metrics_process_register(m, "1.2.3"), WS_OK);
    char *text = scrape(m);
    cr_expect(strstr(text, "# TYPE webshop_build_info gauge\n"
                           "webshop_build_info{version=\"1.2.3\"} 1\n") != NULL,
              "%s", text);
    static const char *const families[] = {
        "process_cpu_seconds_total counter",   "process_resident_memory_bytes gauge",
        "process_virtual_memory_bytes gauge",  "process_open_fds gauge",
        "process_max_fds gauge",               "process_start_time_seconds gauge"};
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        char line[96];
        snprintf(line, sizeof(line), "# TYPE %s\n", families[i]);
        cr_expect_eq(count(text, line), 1, "%s in:\n%s", families[i], text);
    }
    double start = sample(text, "process_start_time_seconds");
    double now = (double)time(NULL);
    cr_expect(start > now - 3600 && start <= now + 1, "start=%f now=%f", start, now);
    cr_expect(sample(text, "process_resident_memory_bytes") > 100000);
    cr_expect(sample(text, "process_cpu_seconds_total") >= 0);
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    cr_expect_eq(sample(text, "process_max_fds"), (double)rl.rlim_cur);
    free(text);
    ws_metrics_free(m);
}

Test(metrics_process, open_fds_are_read_at_each_scrape)
{
    ws_metrics *m = ws_metrics_new();
    cr_assert_eq(ws_metrics_process_register(m, "x"), WS_OK);
    char *before = scrape(m);
    int fds[5];
    for (int i = 0; i < 5; i++) {
        fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        cr_assert(fds[i] >= 0);
    }
    char *after = scrape(m);
    cr_expect_eq(sample(after, "process_open_fds") - sample(before, "process_open_fds"), 5,
                 "before:\n%s\nafter:\n%s", before, after);
    for (int i = 0; i < 5; i++) {
        close(fds[i]);
    }
    free(before);
    free(after);
    ws_metrics_free(m);
}

Test(metrics_process, version_label_is_escaped_and_null_refused)
{
    ws_metrics *m = ws_metrics_new();
    cr_expect_eq(ws_metrics_process_register(m, NULL), WS_EINVAL);
    cr_assert_eq(ws_metrics_process_register(m, "1.0 \"rc\\1\""), WS_OK);
    char *text = scrape(m);
    cr_expect(strstr(text, "webshop_build_info{version=\"1.0 \\\"rc\\\\1\\\"\"} 1\n") != NULL,
              "%s", text);
    free(text);
    ws_metrics_free(m);
}

static ws_err collect_two(void *ctx, ws_buf *out)
{
    int *calls = ctx;
    (*calls)++;
    return ws_buf_puts(out, "# HELP t_x x\n# TYPE t_x gauge\nt_x 2\n");
}

static ws_err collect_fail(void *ctx, ws_buf *out)
{
    (void)ctx;
    (void)out;
    return WS_EIO;
}

Test(metrics_process, collectors_run_at_each_render_after_the_families)
{
    ws_metrics *m = ws_metrics_new();
    int calls = 0;
    ws_gauge_set(ws_gauge_get(m, "t_a", "a", NULL), 1);
    cr_assert_eq(ws_metrics_add_collector(m, collect_two, &calls), WS_OK);
    cr_assert_eq(ws_metrics_add_collector(m, collect_two, &calls), WS_OK); /* same: once */
    char *text = scrape(m);
    cr_expect_str_eq(text, "# HELP t_a a\n# TYPE t_a gauge\nt_a 1\n"
                           "# HELP t_x x\n# TYPE t_x gauge\nt_x 2\n");
    free(text);
    cr_expect_eq(calls, 1);
    cr_expect_eq(ws_metrics_add_collector(NULL, collect_two, NULL), WS_EINVAL);
    cr_expect_eq(ws_metrics_add_collector(m, NULL, NULL), WS_EINVAL);
    cr_assert_eq(ws_metrics_add_collector(m, collect_fail, NULL), WS_OK);
    ws_buf out;
    ws_buf_init(&out, 0);
    cr_expect_eq(ws_metrics_render(m, &out), WS_EIO);
    ws_buf_fini(&out);
    int dummy[WS_METRICS_MAX_COLLECTORS];
    ws_err last = WS_OK;
    for (int i = 0; i < WS_METRICS_MAX_COLLECTORS; i++) {
        last = ws_metrics_add_collector(m, collect_two, &dummy[i]);
    }
    cr_expect_eq(last, WS_ENOMEM, "the table is full");
    ws_metrics_free(m);
}
