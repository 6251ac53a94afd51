/*
 * Growing byte buffer; see buf.h.
 */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ws_buf_init(ws_buf *b, size_t limit)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->limit = limit;
}

void ws_buf_fini(ws_buf *b)
{
    if (b == NULL) {
        return;
    }
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void ws_buf_reset(ws_buf *b)
{
    b->len = 0;
    if (b->data != NULL) {
        b->data[0] = '\0';
    }
}

ws_err ws_buf_reserve(ws_buf *b, size_t n)
{
    if (n > SIZE_MAX / 2 - b->len - 1) {
        return WS_ETOOBIG;
    }
    size_t need = b->len + n + 1;
    if (b->limit != 0 && b->len + n > b->limit) {
        return WS_ETOOBIG;
    }
    if (need <= b->cap) {
        return WS_OK;
    }
    size_t cap = b->cap < 64 ? 64 : b->cap;
    while (cap < need) {
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        return WS_ENOMEM;
    }
    if (b->data == NULL) {
        p[0] = '\0';
    }
    b->data = p;
    b->cap = cap;
    return WS_OK;
}

ws_err ws_buf_append(ws_buf *b, const void *p, size_t n)
{
    ws_err err = ws_buf_reserve(b, n);
    if (err != WS_OK) {
        return err;
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    b->data[b->len] = '\0';
    return WS_OK;
}

ws_err ws_buf_puts(ws_buf *b, const char *s)
{
    return ws_buf_append(b, s, strlen(s));
}

ws_err ws_buf_putc(ws_buf *b, char c)
{
    return ws_buf_append(b, &c, 1);
}

ws_err ws_buf_vprintf(ws_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0) {
        return WS_EINVAL;
    }
    if ((size_t)n < sizeof(small)) {
        return ws_buf_append(b, small, (size_t)n);
    }
    ws_err err = ws_buf_reserve(b, (size_t)n);
    if (err != WS_OK) {
        return err;
    }
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return WS_OK;
}

ws_err ws_buf_printf(ws_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ws_err err = ws_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return err;
}

char *ws_buf_steal(ws_buf *b, size_t *len)
{
    char *p = b->data;
    size_t n = b->len;
    if (p == NULL) {
        p = calloc(1, 1);
        if (p == NULL) {
            return NULL;
        }
        n = 0;
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    if (len != NULL) {
        *len = n;
    }
    return p;
}
