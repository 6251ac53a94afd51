/*
 * A growing byte buffer, the one place output is assembled (JSON, Prometheus
 * text, HTTP bodies). It grows geometrically, never shrinks, and can be
 * capped so that output built from outside input stays bounded. The content
 * is always NUL-terminated (the NUL is not counted in len).
 */
#ifndef WS_BUF_H
#define WS_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "err.h"

typedef struct ws_buf {
    char *data;   /* owned; NULL until the first append; NUL-terminated */
    size_t len;   /* bytes used, excluding the NUL */
    size_t cap;   /* bytes allocated */
    size_t limit; /* maximum len; 0 means no limit */
} ws_buf;

/* Initialise an empty buffer; limit 0 means unbounded. Allocates nothing. */
void ws_buf_init(ws_buf *b, size_t limit);

/* Free the storage; b may be NULL. b is empty (and reusable) afterwards. */
void ws_buf_fini(ws_buf *b);

/* Forget the content, keep the storage. */
void ws_buf_reset(ws_buf *b);

/* Make room for n more bytes. WS_ETOOBIG past the limit, WS_ENOMEM. */
ws_err ws_buf_reserve(ws_buf *b, size_t n);

/* Append n bytes / a NUL-terminated string / one byte / printf output.
 * On error the buffer is unchanged. */
ws_err ws_buf_append(ws_buf *b, const void *p, size_t n);
ws_err ws_buf_puts(ws_buf *b, const char *s);
ws_err ws_buf_putc(ws_buf *b, char c);
ws_err ws_buf_printf(ws_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
ws_err ws_buf_vprintf(ws_buf *b, const char *fmt, va_list ap);

/* Hand the storage to the caller (free() it); the buffer becomes empty.
 * Returns an allocated empty string for an empty buffer, NULL on ENOMEM.
 * OUT len may be NULL. */
char *ws_buf_steal(ws_buf *b, size_t *len /* OUT */);

#endif
