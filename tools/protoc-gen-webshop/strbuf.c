/*
 * The generator's string builder: geometric growth, sticky failure, and a
 * printf that formats straight into the spare capacity.
 */
#include "strbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool strbuf_reserve(strbuf *sb, size_t extra)
{
    size_t need;
    size_t cap;
    char *p;

    if (sb->failed) {
        return false;
    }
    need = sb->len + extra + 1;
    if (need <= sb->cap) {
        return true;
    }
    cap = sb->cap ? sb->cap : 256;
    while (cap < need) {
        cap *= 2;
    }
    p = realloc(sb->data, cap);
    if (p == NULL) {
        sb->failed = true;
        return false;
    }
    sb->data = p;
    sb->cap = cap;
    return true;
}

void strbuf_putn(strbuf *sb, const char *s, size_t len)
{
    if (!strbuf_reserve(sb, len)) {
        return;
    }
    memcpy(sb->data + sb->len, s, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
}

void strbuf_puts(strbuf *sb, const char *s)
{
    strbuf_putn(sb, s, strlen(s));
}

void strbuf_printf(strbuf *sb, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        sb->failed = true;
        return;
    }
    if (!strbuf_reserve(sb, (size_t)n)) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

const char *strbuf_str(const strbuf *sb)
{
    return sb->data ? sb->data : "";
}

bool strbuf_failed(const strbuf *sb)
{
    return sb->failed;
}

char *strbuf_take(strbuf *sb)
{
    char *s;

    if (sb->failed) {
        strbuf_fini(sb);
        return NULL;
    }
    if (sb->data == NULL) {
        s = strdup("");
    } else {
        s = sb->data;
    }
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
    return s;
}

void strbuf_fini(strbuf *sb)
{
    free(sb->data);
    sb->data = NULL;
    sb->len = 0;
    sb->cap = 0;
    sb->failed = false;
}
