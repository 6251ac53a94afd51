/*
 * The text rules of lib/db, free of any driver: which engine a URL names,
 * how a password is kept out of log lines, and the SQL scanner that finds
 * $N placeholders, bare '?', and statement boundaries outside string
 * literals ('..', E'..'), quoted identifiers ("..") , dollar quotes ($x$..$x$)
 * and comments (-- and non-nested / * * /). The SQLite engine uses the
 * scanner to rewrite $N as ?N; the neutral layer uses it to refuse texts
 * that would not mean the same on both engines.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "db_int.h"

#define DB_PARAM_MAX 65535 /* PostgreSQL's limit on parameters */

/* ---- URLs ---------------------------------------------------------------- */

static int db_text_is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\f' ||
           ch == '\v';
}

/* "scheme:" at the start: a letter, then letters, digits, + - . */
static size_t db_text_scheme_len(const char *s)
{
    if (!isalpha((unsigned char)s[0])) {
        return 0;
    }
    size_t i = 1;
    while (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.') {
        i++;
    }
    return s[i] == ':' ? i : 0;
}

/* A libpq keyword string starts with "keyword =". */
static int db_text_is_keywords(const char *s)
{
    while (db_text_is_space(*s)) {
        s++;
    }
    if (!isalpha((unsigned char)*s) && *s != '_') {
        return 0;
    }
    while (isalnum((unsigned char)*s) || *s == '_') {
        s++;
    }
    while (db_text_is_space(*s)) {
        s++;
    }
    return *s == '=';
}

ws__db_url_kind ws__db_url_classify(const char *url, const char **path, const char **why)
{
    *path = NULL;
    *why = NULL;
    const char *p = url;
    while (p != NULL && db_text_is_space(*p)) {
        p++;
    }
    if (p == NULL || *p == '\0') {
        *why = "empty database URL";
        return WS__DB_URL_BAD;
    }
    if (strncasecmp(url, "sqlite:", 7) == 0) {
        const char *rest = url + 7;
        if (strncmp(rest, "//", 2) == 0) {
            if (rest[2] != '/') {
                *why = "sqlite://HOST is not a path: write sqlite:PATH or "
                       "sqlite:///ABS/PATH";
                return WS__DB_URL_BAD;
            }
            rest += 2;
        }
        if (*rest == '\0') {
            *why = "sqlite: URL without a path";
            return WS__DB_URL_BAD;
        }
        *path = rest;
        return WS__DB_URL_SQLITE;
    }
    if (strncasecmp(url, "postgresql://", 13) == 0 ||
        strncasecmp(url, "postgres://", 11) == 0) {
        return WS__DB_URL_PG;
    }
    if (db_text_scheme_len(url) > 0) {
        *why = "unknown URL scheme: use sqlite:PATH, a path, postgresql://... or a libpq "
               "keyword string";
        return WS__DB_URL_BAD;
    }
    if (db_text_is_keywords(url)) {
        return WS__DB_URL_PG;
    }
    *path = url;
    return WS__DB_URL_SQLITE;
}

/* Append n bytes of s to out[*o .. len-1], keeping room for the NUL. */
static void db_text_put(char *out, size_t len, size_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *o + 1 < len; i++) {
        out[(*o)++] = s[i];
    }
}

/* postgresql://user:PASSWORD@host/db?password=PASSWORD&... */
static void db_text_redact_uri(const char *url, char *out, size_t len)
{
    size_t o = 0;
    const char *auth = strstr(url, "://") + 3;
    size_t auth_len = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *q = auth; q < auth + auth_len; q++) {
        if (*q == '@') {
            at = q;
        }
    }
    const char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
    const char *p = url;
    if (colon != NULL) {
        db_text_put(out, len, &o, url, (size_t)(colon + 1 - url));
        db_text_put(out, len, &o, "***", 3);
        p = at;
    }
    const char *query = strchr(p, '?');
    while (query != NULL) {
        const char *kv = query + 1;
        db_text_put(out, len, &o, p, (size_t)(kv - p));
        p = kv;
        if (strncasecmp(kv, "password=", 9) == 0) {
            db_text_put(out, len, &o, kv, 9);
            db_text_put(out, len, &o, "***", 3);
            p = kv + 9 + strcspn(kv + 9, "&#");
        }
        query = strchr(p, '&');
    }
    db_text_put(out, len, &o, p, strlen(p));
    out[o] = '\0';
}

/* host=... password=SECRET or password = 'SEC RET' */
static void db_text_redact_keywords(const char *url, char *out, size_t len)
{
    size_t o = 0;
    const char *p = url;
    while (*p != '\0') {
        int at_word = p == url || db_text_is_space(p[-1]);
        if (at_word && strncasecmp(p, "password", 8) == 0) {
            const char *q = p + 8;
            while (db_text_is_space(*q)) {
                q++;
            }
            if (*q == '=') {
                q++;
                while (db_text_is_space(*q)) {
                    q++;
                }
                db_text_put(out, len, &o, "password=***", 12);
                if (*q == '\'') {
                    for (q++; *q != '\0' && *q != '\''; q++) {
                        if (*q == '\\' && q[1] != '\0') {
                            q++;
                        }
                    }
                    q += *q == '\'';
                } else {
                    while (*q != '\0' && !db_text_is_space(*q)) {
                        q++;
                    }
                }
                p = q;
                continue;
            }
        }
        db_text_put(out, len, &o, p, 1);
        p++;
    }
    out[o] = '\0';
}

char *ws_db_url_redact(const char *url, char *out, size_t len)
{
    if (out == NULL || len == 0) {
        return out;
    }
    out[0] = '\0';
    if (url == NULL) {
        return out;
    }
    const char *path = NULL;
    const char *why = NULL;
    switch (ws__db_url_classify(url, &path, &why)) {
    case WS__DB_URL_PG:
        if (strstr(url, "://") != NULL && db_text_scheme_len(url) > 0) {
            db_text_redact_uri(url, out, len);
        } else {
            db_text_redact_keywords(url, out, len);
        }
        break;
    case WS__DB_URL_SQLITE:
        snprintf(out, len, "%s", url);
        break;
    default:
        /* Refused, but it may still be a mistyped secret: keep the scheme
         * only. */
        snprintf(out, len, "%.*s%s", (int)db_text_scheme_len(url), url,
                 db_text_scheme_len(url) > 0 ? ":..." : "(unparsed)");
        break;
    }
    return out;
}

/* ---- SQL scanner --------------------------------------------------------- */

static int db_text_ident_char(char ch)
{
    return isalnum((unsigned char)ch) || ch == '_' || ch == '$' ||
           (unsigned char)ch >= 0x80;
}

/* Skip a quoted run starting at s[0] == q, where a doubled q is an escaped
 * one (and a backslash escapes when bs). Returns the index after the
 * closing quote, or 0 when it never closes. */
static size_t db_text_skip_quoted(const char *s, char q, int bs)
{
    for (size_t i = 1; s[i] != '\0'; i++) {
        if (bs && s[i] == '\\' && s[i + 1] != '\0') {
            i++;
        } else if (s[i] == q) {
            if (s[i + 1] != q) {
                return i + 1;
            }
            i++;
        }
    }
    return 0;
}

/* At s[0] == '$' (not inside an identifier): a dollar-quote opening
 * ($$ or $tag$)? Returns the index after its closing tag, 0 when s is not
 * a dollar quote, (size_t)-1 when it never closes. */
static size_t db_text_skip_dollar(const char *s)
{
    size_t t = 1;
    if (isalpha((unsigned char)s[1]) || s[1] == '_') {
        while (isalnum((unsigned char)s[t]) || s[t] == '_') {
            t++;
        }
    }
    if (s[t] != '$') {
        return 0;
    }
    size_t taglen = t + 1;
    const char *end = s + taglen;
    for (;;) {
        end = strchr(end, '$');
        if (end == NULL) {
            return (size_t)-1;
        }
        if (strncmp(end, s, taglen) == 0) {
            return (size_t)(end - s) + taglen;
        }
        end++;
    }
}

/* Skip a comment at s (-- or / *); 0 when s is not one, (size_t)-1 when a
 * block comment never closes. */
static size_t db_text_skip_comment(const char *s)
{
    if (s[0] == '-' && s[1] == '-') {
        return 2 + strcspn(s + 2, "\n");
    }
    if (s[0] == '/' && s[1] == '*') {
        const char *end = strstr(s + 2, "*/");
        return end ? (size_t)(end - s) + 2 : (size_t)-1;
    }
    return 0;
}

/* A $N placeholder at s[0] == '$' followed by a digit: its number, and the
 * index after it in *used. */
static long db_text_param(const char *s, size_t *used)
{
    long n = 0;
    size_t i = 1;
    while (isdigit((unsigned char)s[i])) {
        if (n <= DB_PARAM_MAX) {
            n = n * 10 + (s[i] - '0');
        }
        i++;
    }
    *used = i;
    return n;
}

/* The length of a non-code run at sql[i] (literal, identifier, comment,
 * dollar quote), 0 when sql[i] starts none; (size_t)-1 when it never ends. */
static size_t db_text_skip_run(const char *sql, size_t i)
{
    const char *s = sql + i;
    int prev_ident = i > 0 && db_text_ident_char(sql[i - 1]);
    if (s[0] == '\'') {
        int e = i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e') &&
                !(i > 1 && db_text_ident_char(sql[i - 2]));
        size_t n = db_text_skip_quoted(s, '\'', e);
        return n ? n : (size_t)-1;
    }
    if (s[0] == '"') {
        size_t n = db_text_skip_quoted(s, '"', 0);
        return n ? n : (size_t)-1;
    }
    if (s[0] == '$' && !prev_ident && !isdigit((unsigned char)s[1])) {
        return db_text_skip_dollar(s);
    }
    return db_text_skip_comment(s);
}

void ws__db_sql_scan(const char *sql, ws__db_sql_info *info, char *rewrite)
{
    memset(info, 0, sizeof(*info));
    size_t len = strlen(sql);
    if (rewrite != NULL) {
        memcpy(rewrite, sql, len + 1);
    }
    int content = 0;
    for (size_t i = 0; i < len;) {
        size_t run = db_text_skip_run(sql, i);
        if (run == (size_t)-1) {
            info->unterminated = 1;
            break;
        }
        if (run > 0) {
            content |= sql[i] != '-' && sql[i] != '/';
            i += run;
            continue;
        }
        char ch = sql[i];
        if (ch == '$' && isdigit((unsigned char)sql[i + 1]) &&
            !(i > 0 && db_text_ident_char(sql[i - 1]))) {
            size_t used = 0;
            long n = db_text_param(sql + i, &used);
            if (n < 1 || n > DB_PARAM_MAX) {
                info->bad_param = 1;
            } else if (n > info->max_param) {
                info->max_param = (int)n;
            }
            if (rewrite != NULL) {
                rewrite[i] = '?';
            }
            content = 1;
            i += used;
            continue;
        }
        if (ch == '?') {
            info->qmarks++;
        }
        if (ch == ';') {
            info->statements += content;
            content = 0;
        } else if (!db_text_is_space(ch)) {
            content = 1;
        }
        i++;
    }
    info->statements += content;
}
