/*
 * Tests of lib/log: the line layout, quoting and escaping of values so a
 * line always parses back into its fields, printf conversions kept in step
 * with their arguments, level filtering, and one write per line under
 * concurrent logging. stderr is redirected into a temporary file for each
 * check and read back.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "trace.h"

static int saved_stderr = -1;
static int capture_fd = -1;

/* Point fd 2 at a fresh O_APPEND temp file. */
static void capture_begin(void)
{
    char path[] = "/tmp/log_test_XXXXXX";
    capture_fd = mkstemp(path);
    cr_assert(capture_fd >= 0);
    unlink(path);
    int flags = fcntl(capture_fd, F_GETFL);
    cr_assert(fcntl(capture_fd, F_SETFL, flags | O_APPEND) == 0);
    saved_stderr = dup(STDERR_FILENO);
    cr_assert(saved_stderr >= 0);
    cr_assert(dup2(capture_fd, STDERR_FILENO) == STDERR_FILENO);
}

/* Restore fd 2 and return what was written (caller frees). */
static char *capture_end(void)
{
    cr_assert(dup2(saved_stderr, STDERR_FILENO) == STDERR_FILENO);
    close(saved_stderr);
    off_t n = lseek(capture_fd, 0, SEEK_END);
    cr_assert(n >= 0);
    char *s = malloc((size_t)n + 1);
    cr_assert(s != NULL);
    cr_assert(pread(capture_fd, s, (size_t)n, 0) == n);
    s[n] = '\0';
    close(capture_fd);
    return s;
}

/* The part of a single captured line after the timestamp and " ". */
static const char *after_time(const char *line)
{
    const char *p = strchr(line, ' ');
    cr_assert(p != NULL, "no space in %s", line);
    return p + 1;
}

static void reset_log(void)
{
    ws_log_set_level(WS_LOG_INFO);
    ws_log_set_service(NULL);
}

TestSuite(log, .init = reset_log);

Test(log, line_has_utc_millisecond_time_level_and_event)
{
    capture_begin();
    ws_log_info("started", "port=%d", 8080);
    char *out = capture_end();
    regex_t re;
    cr_assert(
        regcomp(&re,
                "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
                "level=info event=started port=8080\n$",
                REG_EXTENDED) == 0);
    cr_expect(regexec(&re, out, 0, NULL, 0) == 0, "got: %s", out);
    regfree(&re);
    free(out);
}

Test(log, service_name_follows_level)
{
    ws_log_set_service("inventory");
    capture_begin();
    ws_log_warn("slow", NULL);
    char *out = capture_end();
    cr_expect_str_eq(after_time(out), "level=warn svc=inventory event=slow\n");
    free(out);
}

Test(log, values_needing_it_are_quoted_and_escaped)
{
    static const struct {
        const char *in;
        const char *want;
    } cases[] = {
        {"plain", "v=plain"},
        {"", "v=\"\""},
        {"two words", "v=\"two words\""},
        {"say \"hi\"", "v=\"say \\\"hi\\\"\""},
        {"a=b", "v=\"a=b\""},
        {"back\\slash", "v=\"back\\\\slash\""},
        {"line\nbreak", "v=\"line\\nbreak\""},
        {"tab\there", "v=\"tab\\there\""},
        {"cr\r", "v=\"cr\\r\""},
        {"bell\x07", "v=\"bell\\x07\""},
        {"del\x7f", "v=\"del\\x7f\""},
        {"h\xc3\xa9llo", "v=h\xc3\xa9llo"},              /* valid UTF-8 stays raw */
        {"bad\xff", "v=\"bad\\xff\""},                   /* invalid byte */
        {"over\xc0\xaf", "v=\"over\\xc0\\xaf\""},        /* overlong '/' */
        {"sur\xed\xa0\x80", "v=\"sur\\xed\\xa0\\x80\""}, /* UTF-16 surrogate */
        {"cut\xe2\x82", "v=\"cut\\xe2\\x82\""},          /* truncated sequence */
        {" evil=1", "v=\" evil=1\""},                    /* cannot forge a field */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        capture_begin();
        ws_log_info("e", "v=%s", cases[i].in);
        char *out = capture_end();
        char want[256];
        snprintf(want, sizeof want, "level=info event=e %s\n", cases[i].want);
        cr_expect_str_eq(after_time(out), want, "case %zu", i);
        free(out);
    }
}

Test(log, conversions_stay_in_step_with_their_arguments)
{
    capture_begin();
    ws_log_info(
        "types",
        "i=%d l=%ld ll=%lld z=%zu u=%u x=%x f=%.2f s=%s c=%c w=%*d p=%5s pct=%d%% "
        "h=%hd hh=%hhu j=%jd e=%s",
        -1, 2L, -3LL, (size_t)4, 5u, 255u, 3.14159, "str", 'Q', 4, 7, "ab", 50, (short)-6,
        (unsigned char)200, (intmax_t)9, "end");
    char *out = capture_end();
    cr_expect_str_eq(
        after_time(out),
        "level=info event=types i=-1 l=2 ll=-3 z=4 u=5 x=ff f=3.14 s=str c=Q "
        "w=\"   7\" p=\"   ab\" pct=50% h=-6 hh=200 j=9 e=end\n");
    free(out);
}

/* %s, %d, %i and %u with at most an l, ll or z modifier skip snprintf:
 * the extremes of every integer type come out exactly as printf writes them. */
Test(log, fast_integer_conversions_match_printf_at_the_extremes)
{
    char want[512];
    snprintf(
        want, sizeof want,
        "level=info event=ints a=%d b=%d c=%u d=%ld e=%lld f=%lld g=%llu h=%zu i=%zd "
        "j=%i k=0\n",
        INT32_MIN, INT32_MAX, UINT32_MAX, LONG_MIN, LLONG_MIN, LLONG_MAX, ULLONG_MAX,
        SIZE_MAX, (ssize_t)-5, -42);
    capture_begin();
    ws_log_info("ints", "a=%d b=%d c=%u d=%ld e=%lld f=%lld g=%llu h=%zu i=%zd j=%i k=%d",
                INT32_MIN, INT32_MAX, UINT32_MAX, LONG_MIN, LLONG_MIN, LLONG_MAX,
                ULLONG_MAX, SIZE_MAX, (ssize_t)-5, -42, 0);
    char *out = capture_end();
    cr_expect_str_eq(after_time(out), want);
    free(out);
}

/* The cached time of day is per second; the milliseconds are per line. */
Test(log, lines_a_second_apart_carry_their_own_time)
{
    capture_begin();
    ws_log_info("first", NULL);
    struct timespec t0, t;
    clock_gettime(CLOCK_REALTIME, &t0);
    do { /* bounded: the wall clock reaches the next second within 1 s */
        nanosleep(&(struct timespec){0, 5 * 1000 * 1000}, NULL);
        clock_gettime(CLOCK_REALTIME, &t);
    } while (t.tv_sec == t0.tv_sec);
    ws_log_info("second", NULL);
    char *out = capture_end();
    char *nl = strchr(out, '\n');
    cr_assert(nl != NULL);
    cr_expect(strncmp(out, nl + 1, 19) != 0, "same second twice: %s", out);
    /* The line was written at t or a moment later. */
    int ok = 0;
    for (time_t sec = t.tv_sec; sec <= t.tv_sec + 1; sec++) {
        struct tm tm;
        char want[32];
        gmtime_r(&sec, &tm);
        strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%S", &tm);
        ok |= strncmp(nl + 1, want, 19) == 0;
    }
    cr_expect(ok, "second line not stamped with its own second: %s", nl + 1);
    free(out);
}

Test(log, null_string_argument_prints_null)
{
    capture_begin();
    const char *volatile nothing = NULL; /* hidden from -Wformat-overflow */
    ws_log_info("e", "a=%s b=%d", nothing, 1);
    char *out = capture_end();
    cr_expect_str_eq(after_time(out), "level=info event=e a=(null) b=1\n");
    free(out);
}

Test(log, event_name_needing_quotes_is_quoted)
{
    capture_begin();
    ws_log_info("bad event", NULL);
    char *out = capture_end();
    cr_expect_str_eq(after_time(out), "level=info event=\"bad event\"\n");
    free(out);
}

Test(log, lines_below_level_are_dropped)
{
    capture_begin();
    ws_log_set_level(WS_LOG_WARN);
    ws_log_debug("d", NULL);
    ws_log_info("i", NULL);
    ws_log_warn("w", NULL);
    ws_log_error("e", NULL);
    char *out = capture_end();
    cr_expect(strstr(out, "event=d") == NULL);
    cr_expect(strstr(out, "event=i") == NULL);
    cr_expect(strstr(out, "level=warn event=w\n") != NULL);
    cr_expect(strstr(out, "level=error event=e\n") != NULL);
    free(out);
}

Test(log, debug_shows_when_enabled)
{
    capture_begin();
    ws_log_set_level(WS_LOG_DEBUG);
    ws_log_debug("d", "k=%s", "v");
    char *out = capture_end();
    cr_expect_str_eq(after_time(out), "level=debug event=d k=v\n");
    free(out);
}

Test(log, level_names_parse)
{
    cr_expect_eq(ws_log_level_parse("debug"), WS_LOG_DEBUG);
    cr_expect_eq(ws_log_level_parse("info"), WS_LOG_INFO);
    cr_expect_eq(ws_log_level_parse("WARN"), WS_LOG_WARN);
    cr_expect_eq(ws_log_level_parse("error"), WS_LOG_ERROR);
    cr_expect_eq(ws_log_level_parse("loud"), -1);
    cr_expect_eq(ws_log_level_parse(""), -1);
    cr_expect_eq(ws_log_level_parse(NULL), -1);
}

Test(log, errno_survives_logging)
{
    capture_begin();
    errno = ENOENT;
    ws_log_info("e", "k=%s", "v");
    int e = errno;
    free(capture_end());
    cr_expect_eq(e, ENOENT);
}

Test(log, huge_value_is_cut_with_marker)
{
    size_t n = 100000;
    char *big = malloc(n + 1);
    cr_assert(big != NULL);
    memset(big, 'a', n);
    big[n] = '\0';
    capture_begin();
    ws_log_info("e", "v=%s after=%d", big, 1);
    char *out = capture_end();
    const char *v = strstr(out, "v=");
    cr_assert(v != NULL);
    size_t run = strspn(v + 2, "a");
    cr_expect_eq(run, 4096);
    cr_expect(strncmp(v + 2 + run, "... after=1\n", 12) == 0, "tail: %.20s", v + 2 + run);
    free(out);
    free(big);
}

#define LOG_THREADS 8
#define LOG_LINES   2000

static void *log_spam(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < LOG_LINES; i++) {
        ws_log_info("spam", "thread=%d i=%d text=%s", id, i,
                    "a fairly long value so that the lines have some weight to them");
    }
    return NULL;
}

Test(log, concurrent_lines_never_interleave)
{
    capture_begin();
    pthread_t t[LOG_THREADS];
    for (int i = 0; i < LOG_THREADS; i++) {
        cr_assert(pthread_create(&t[i], NULL, log_spam, (void *)(intptr_t)i) == 0);
    }
    for (int i = 0; i < LOG_THREADS; i++) {
        pthread_join(t[i], NULL);
    }
    char *out = capture_end();
    regex_t re;
    cr_assert(regcomp(&re,
                      "^[0-9T:.Z-]{24} level=info event=spam thread=[0-7] i=[0-9]+ "
                      "text=\"a fairly long value so that the lines have some weight "
                      "to them\"$",
                      REG_EXTENDED | REG_NOSUB) == 0);
    size_t lines = 0;
    char *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l != NULL;
         l = strtok_r(NULL, "\n", &save)) {
        cr_assert(regexec(&re, l, 0, NULL, 0) == 0, "mangled line: %s", l);
        lines++;
    }
    cr_expect_eq(lines, (size_t)LOG_THREADS * LOG_LINES);
    regfree(&re);
    free(out);
}

Test(log, trace_id_of_the_current_trace_follows_the_event)
{
    ws_log_set_service(NULL);
    ws_trace t;
    cr_assert(ws_trace_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 55, &t));
    ws_trace_set_current(&t);
    capture_begin();
    ws_log_info("order_placed", "n=%d", 2);
    char *out = capture_end();
    ws_trace_set_current(NULL);
    cr_expect_str_eq(after_time(out),
                     "level=info event=order_placed trace_id=4bf92f3577b34da6a3ce929d0e0e4736 n=2\n");
    free(out);
}

/* What fd 2's capture file holds so far (caller frees). */
static char *capture_peek(void)
{
    off_t n = lseek(capture_fd, 0, SEEK_END);
    cr_assert(n >= 0);
    char *s = malloc((size_t)n + 1);
    cr_assert(s != NULL);
    cr_assert(pread(capture_fd, s, (size_t)n, 0) == n);
    s[n] = '\0';
    return s;
}

Test(log, buffered_lines_wait_for_a_flush_and_keep_their_order)
{
    capture_begin();
    ws_log_buffered(WS_LOG_INFO, "http_request", "status=%d", 200);
    ws_log_buffered(WS_LOG_INFO, "http_request", "status=%d", 404);
    ws_log_buffered(WS_LOG_DEBUG, "http_request", "status=%d", 1); /* below the level */
    ws_log_info("plain", "n=%d", 1); /* written at once, beside the buffer */
    ws_log_warn("trouble", "n=%d", 2); /* a warning flushes what came before it */
    char *out = capture_end();
    const char *a = strstr(out, "event=plain");
    const char *b = strstr(out, "status=200");
    const char *c = strstr(out, "status=404");
    const char *d = strstr(out, "event=trouble");
    cr_assert(a != NULL && b != NULL && c != NULL && d != NULL, "got: %s", out);
    cr_expect(b < c && c < d, "order: %s", out); /* (the flusher may run at any time) */
    cr_expect_null(strstr(out, "status=1\n"));
    free(out);
}

Test(log, buffered_lines_reach_the_file_without_a_flush)
{
    capture_begin();
    ws_log_buffered(WS_LOG_INFO, "http_request", "status=%d", 201);
    /* The flusher writes within its 100 ms period: poll, bounded. */
    char *out = NULL;
    for (int i = 0; i < 300; i++) {
        free(out);
        out = capture_peek();
        if (strstr(out, "status=201") != NULL) {
            break;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    cr_expect_not_null(strstr(out, "status=201"), "not flushed within 3 s: %s", out);
    free(out);
    free(capture_end());
}

Test(log, a_full_buffer_is_written_whole_lines_only)
{
    capture_begin();
    char value[1000];
    memset(value, 'x', sizeof value - 1);
    value[sizeof value - 1] = '\0';
    for (int i = 0; i < 200; i++) { /* ~200 KB: the 64 KB buffer fills three times */
        ws_log_buffered(WS_LOG_INFO, "http_request", "i=%d v=%s", i, value);
    }
    ws_log_flush();
    char *out = capture_end();
    size_t lines = 0;
    char *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        cr_assert(strstr(l, "event=http_request i=") != NULL && strlen(l) > 1000,
                  "mangled line %zu", lines);
        lines++;
    }
    cr_expect_eq(lines, (size_t)200);
    free(out);
}
