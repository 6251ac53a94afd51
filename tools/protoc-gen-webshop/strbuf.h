/*
 * A growable, always NUL-terminated string for the code generator. Out of
 * memory is sticky: after one failed append every later append is a no-op
 * and strbuf_failed() reports it, so emitters append freely and the driver
 * checks once per file.
 */
#ifndef GEN_STRBUF_H
#define GEN_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct strbuf {
    char *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed; data is then incomplete */
} strbuf;

#define STRBUF_INIT                                                                      \
    {                                                                                    \
        NULL, 0, 0, false                                                                \
    }

/* Append a NUL-terminated string. */
void strbuf_puts(strbuf *sb, const char *s);

/* Append len bytes of s. */
void strbuf_putn(strbuf *sb, const char *s, size_t len);

/* Append printf-style. */
void strbuf_printf(strbuf *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The text so far ("" if empty), valid until the next append. */
const char *strbuf_str(const strbuf *sb);

/* True if any append failed for lack of memory. */
bool strbuf_failed(const strbuf *sb);

/* Hand the heap string to the caller (free() it) and reset sb. NULL if an
 * append failed (the text is freed) . */
char *strbuf_take(strbuf *sb);

/* Free the text; sb may be reused afterwards. */
void strbuf_fini(strbuf *sb);

#endif
