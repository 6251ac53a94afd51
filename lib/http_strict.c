/*
 * What a request must look like before a handler sees it. civetweb 1.15
 * parses leniently (DESIGN.md, measured facts; its src/civetweb.c): it keeps
 * the first 64 header fields and drops the rest without a word, reads
 * Content-Length with strtoll (so "0x2f" is 0 and "+39" is 39) and takes
 * the first of two, lets Transfer-Encoding win over Content-Length, drops
 * the spaces in "Name : value", and decodes "%00" into a NUL that cuts the
 * path. Here those requests are refused instead: framing errors with 400
 * or 431 (the caller closes the connection), paths with 400 or 414.
 */
#include "http_int.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <civetweb.h>

size_t ws__http_utf8_valid_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t len;
        unsigned lo = 0x80, hi = 0xbf; /* allowed range of the 2nd byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            lo = c == 0xe0 ? 0xa0 : 0x80; /* no overlong forms */
            hi = c == 0xed ? 0x9f : 0xbf; /* no surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            lo = c == 0xf0 ? 0x90 : 0x80;
            hi = c == 0xf4 ? 0x8f : 0xbf; /* at most U+10FFFF */
        } else {
            return i;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) {
            return i;
        }
        for (size_t k = 2; k < len; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xbf) {
                return i;
            }
        }
        i += len;
    }
    return n;
}

/* RFC 9110 token characters (header names). */
static bool http_strict_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        return true;
    }
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* True when v is 1*DIGIT followed by optional blanks, at most 18 digits. */
static bool http_strict_content_length(const char *v)
{
    size_t digits = 0;
    while (v[digits] >= '0' && v[digits] <= '9') {
        digits++;
    }
    if (digits == 0 || digits > 18) {
        return false;
    }
    for (const char *p = v + digits; *p != '\0'; p++) {
        if (*p != ' ' && *p != '\t') {
            return false;
        }
    }
    return true;
}

/* A header name civetweb accepted: a token, and nothing but blanks between
 * its ':' and the value (civetweb zeroes the spaces of "Name : v", so a NUL
 * there means there were some). */
static bool http_strict_name_ok(const struct mg_header *hd)
{
    size_t n = strlen(hd->name);
    if (n == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!http_strict_tchar((unsigned char)hd->name[i])) {
            return false;
        }
    }
    const char *p = hd->name + n + 1; /* just past the ':' */
    while (p < hd->value && (*p == ' ' || *p == '\t')) {
        p++;
    }
    return p == hd->value;
}

int ws__http_check_framing(const struct mg_request_info *ri, int max_headers,
                           const char **code, char *msg, size_t msg_len)
{
    *code = "INVALID_ARGUMENT";
    if (ri->num_headers > max_headers || ri->num_headers >= MG_MAX_HEADERS) {
        *code = "HEADERS_TOO_LARGE";
        snprintf(msg, msg_len, "headers: more than %d header fields", max_headers);
        return 431;
    }
    int n_cl = 0, n_te = 0, n_host = 0;
    for (int i = 0; i < ri->num_headers; i++) {
        const struct mg_header *hd = &ri->http_headers[i];
        if (!http_strict_name_ok(hd)) {
            snprintf(msg, msg_len, "header %d: the name is not a token followed by ':'",
                     i + 1);
            return 400;
        }
        if (strcasecmp(hd->name, "Content-Length") == 0) {
            if (++n_cl > 1) {
                snprintf(msg, msg_len, "Content-Length: given more than once");
                return 400;
            }
            if (!http_strict_content_length(hd->value)) {
                snprintf(msg, msg_len, "Content-Length: not a decimal number of bytes");
                return 400;
            }
        } else if (strcasecmp(hd->name, "Transfer-Encoding") == 0) {
            if (++n_te > 1 || strcasecmp(hd->value, "chunked") != 0) {
                snprintf(msg, msg_len,
                         "Transfer-Encoding: only one, \"chunked\", is accepted");
                return 400;
            }
        } else if (strcasecmp(hd->name, "Host") == 0 && ++n_host > 1) {
            snprintf(msg, msg_len, "Host: given more than once");
            return 400;
        }
    }
    if (n_cl > 0 && n_te > 0) {
        snprintf(msg, msg_len,
                 "Content-Length and Transfer-Encoding: give one, not both");
        return 400;
    }
    if (n_te > 0 && ri->http_version != NULL && strcmp(ri->http_version, "1.0") == 0) {
        snprintf(msg, msg_len, "Transfer-Encoding: not in HTTP/1.0");
        return 400;
    }
    return 0;
}

static int http_strict_hex(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* What http_strict_decode found wrong (negative returns). */
enum {
    DECODE_TOO_LONG = -2,
    DECODE_ESCAPE = -3, /* '%' not followed by two hex digits */
    DECODE_NUL = -4,
    DECODE_CONTROL = -5,
    DECODE_UTF8 = -6,
};

/* Percent-decode src[0..n) into out (out_len); plus: '+' is a space. Sets
 * *slash when an encoded '/' was seen. Returns the length, or one of the
 * DECODE_ errors. */
static int http_strict_decode(const char *src, size_t n, bool plus, char *out,
                              size_t out_len, bool *slash)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (c == '%') {
            int h1 = i + 1 < n ? http_strict_hex(src[i + 1]) : -1;
            int h2 = i + 2 < n ? http_strict_hex(src[i + 2]) : -1;
            if (h1 < 0 || h2 < 0) {
                return DECODE_ESCAPE;
            }
            c = (unsigned char)(h1 * 16 + h2);
            if (c == '/' && slash != NULL) {
                *slash = true;
            }
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        if (c == 0) {
            return DECODE_NUL;
        }
        if (c < 0x20 || c == 0x7f) {
            return DECODE_CONTROL;
        }
        if (o + 1 >= out_len) {
            return DECODE_TOO_LONG;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    if (ws__http_utf8_valid_prefix((const unsigned char *)out, o) != o) {
        return DECODE_UTF8;
    }
    return (int)o;
}

/* True when path has a "." or ".." segment. */
static bool http_strict_dot_segment(const char *path)
{
    for (const char *p = path; *p != '\0'; p++) {
        if (*p != '/') {
            continue;
        }
        const char *s = p + 1;
        size_t len = strcspn(s, "/");
        if ((len == 1 && s[0] == '.') || (len == 2 && s[0] == '.' && s[1] == '.')) {
            return true;
        }
    }
    return false;
}

int ws__http_decode_path(const char *raw, char *out, size_t out_len, char *msg,
                         size_t msg_len)
{
    if (raw == NULL || raw[0] != '/') {
        snprintf(msg, msg_len, "path: must start with '/'");
        return 400;
    }
    bool slash = false;
    int n = http_strict_decode(raw, strlen(raw), false, out, out_len, &slash);
    static const char *const why[] = {
        [-DECODE_ESCAPE] = "an invalid percent-escape ('%' and two hex digits)",
        [-DECODE_NUL] = "a NUL byte (%00)",
        [-DECODE_CONTROL] = "a control character",
        [-DECODE_UTF8] = "bytes that are not UTF-8",
    };
    if (n == DECODE_TOO_LONG) {
        snprintf(msg, msg_len, "path: longer than %zu bytes", out_len - 1);
        return 414;
    }
    if (n < 0) {
        snprintf(msg, msg_len, "path: has %s", why[-n]);
        return 400;
    }
    if (slash) {
        snprintf(msg, msg_len, "path: an encoded '/' (%%2F) is not allowed");
        return 400;
    }
    if (http_strict_dot_segment(out)) {
        snprintf(msg, msg_len, "path: '.' and '..' segments are not allowed");
        return 400;
    }
    return 0;
}

int ws__http_query_var(const char *qs, const char *name, char *out, size_t out_len)
{
    if (qs == NULL || out_len == 0) {
        return -1;
    }
    size_t name_len = strlen(name);
    for (const char *p = qs; *p != '\0';) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        size_t key_len = eq != NULL ? (size_t)(eq - p) : len;
        if (key_len == name_len && memcmp(p, name, name_len) == 0) {
            const char *v = eq != NULL ? eq + 1 : p + len;
            int n =
                http_strict_decode(v, (size_t)(p + len - v), true, out, out_len, NULL);
            return n >= 0 || n == DECODE_TOO_LONG ? n : -3;
        }
        p += len;
        if (*p == '&') {
            p++;
        }
    }
    return -1;
}
