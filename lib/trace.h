/*
 * Trace context (W3C Trace Context, "traceparent"): one trace id follows a
 * request from HTTP through RPC, the bus and the outbox, and every log line
 * written while a thread works for it carries trace_id=.
 *
 *   traceparent: 00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>
 *
 * The context is per thread: the edge that receives a request or an event
 * (the HTTP dispatch, the RPC server, the bus delivery, the outbox relay)
 * sets it for the work it runs and clears it after; whatever that work
 * sends on (an RPC call, a publish, an outbox row) reads it and carries it.
 * Nothing here allocates.
 */
#ifndef WS_TRACE_H
#define WS_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Text of a traceparent (version 00) without and with its NUL. */
#define WS_TRACEPARENT_LEN 55
#define WS_TRACEPARENT_SIZE 56
/* Name of the HTTP header and of the MQTT v5 user property. */
#define WS_TRACEPARENT_NAME "traceparent"

typedef struct ws_trace {
    char trace_id[33]; /* 32 lower-case hex digits, not all zero */
    char span_id[17];  /* 16 lower-case hex digits, not all zero */
    uint8_t flags;     /* bit 0: sampled */
} ws_trace;

/* Parse a traceparent of n bytes (s need not be NUL-terminated). Accepts
 * version 00 exactly (55 bytes) and, as the spec asks, a later version's
 * longer form ("-" and more after the flags) by its first four fields.
 * Refuses upper-case hex, all-zero ids, version ff, and anything else.
 * Returns true and fills *out, or false and leaves *out untouched. */
bool ws_trace_parse(const char *s, size_t n, ws_trace *out);

/* A new trace: random trace id and span id, flags 01 (sampled). */
void ws_trace_new(ws_trace *out);

/* A child span of parent: the same trace id and flags, a new span id. */
void ws_trace_child(const ws_trace *parent, ws_trace *out);

/* Write t as a traceparent (version 00) with its NUL into out. */
void ws_trace_format(const ws_trace *t, char out[WS_TRACEPARENT_SIZE]);

/* The calling thread's current trace, or NULL when it works for none. */
const ws_trace *ws_trace_current(void);

/* Make t (copied) the calling thread's current trace; NULL clears it. */
void ws_trace_set_current(const ws_trace *t);

/* The calling thread's current trace (or none), kept to be made current
 * again later, on this thread or another: ws_trace_save, then
 * ws_trace_restore. */
typedef struct ws_trace_saved {
    ws_trace trace; /* when had */
    bool had;
} ws_trace_saved;

void ws_trace_save(ws_trace_saved *out /* OUT */);

/* Make s's trace the current one (none when it had none). */
void ws_trace_restore(const ws_trace_saved *s);

/* Set the current trace from a traceparent text of n bytes; when it does
 * not parse (or s is NULL) the thread gets a new trace instead. Returns
 * the current trace. For the edges that take work in. */
const ws_trace *ws_trace_adopt(const char *s, size_t n);

#endif
