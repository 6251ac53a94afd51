/*
 * One line per event on stderr: time, level, event name, then key=value
 * fields. Values that contain spaces, quotes, '=' or control bytes are
 * quoted and escaped, so a line always parses back into its fields.
 *
 *   2026-11-26T05:03:12.345Z level=info event=order_reserved order_id=... n=2
 *
 * Thread-safe: each line is written with one write(2), or, for the lines
 * of ws_log_buffered, with others in one write(2) at most LOG_FLUSH_MS later.
 */
#ifndef WS_LOG_H
#define WS_LOG_H

typedef enum ws_log_level {
    WS_LOG_DEBUG = 0,
    WS_LOG_INFO = 1,
    WS_LOG_WARN = 2,
    WS_LOG_ERROR = 3,
} ws_log_level;

/* Lines below level are dropped. Default WS_LOG_INFO. Any thread. */
void ws_log_set_level(ws_log_level level);

/* Parse "debug" / "info" / "warn" / "error"; -1 for anything else. */
int ws_log_level_parse(const char *s);

/* Set the service name written as svc=NAME on every line; NULL clears it.
 * The string is copied. Call before starting threads. */
void ws_log_set_service(const char *name);

/* Log one event. fmt is a list of key=value pairs whose values are printf
 * conversions, separated by single spaces ("order_id=%s n=%d"); each
 * formatted value is quoted if needed. fmt may be NULL for no fields. */
void ws_log(ws_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The same line, but buffered: appended to the calling thread's buffer
 * (8 KB), written when it fills, by a flusher thread every 100 ms, when the
 * thread ends, at exit (atexit), and before any ws_log line of level warn or
 * above. For lines written at a rate where one write(2) each would cost
 * more than the work they describe (the front's access lines). A crash
 * loses at most the last 100 ms of them; each line still reaches the file
 * whole. */
void ws_log_buffered(ws_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Write out what ws_log_buffered holds. Any thread. */
void ws_log_flush(void);

#define ws_log_debug(...) ws_log(WS_LOG_DEBUG, __VA_ARGS__)
#define ws_log_info(...)  ws_log(WS_LOG_INFO, __VA_ARGS__)
#define ws_log_warn(...)  ws_log(WS_LOG_WARN, __VA_ARGS__)
#define ws_log_error(...) ws_log(WS_LOG_ERROR, __VA_ARGS__)

#endif
