/*
 * The well-known types' JSON forms (see json_wkt.h): one encoder and one
 * decoder per type, called by the generic transcoder for every message of
 * these types wherever it appears (top level, field, list, map value, Any).
 * Messages are recognised by full name and read through the structs
 * protoc-c generates for the google/protobuf protos, whose layout does not
 * depend on who compiled them. Calendar arithmetic is proleptic Gregorian in
 * UTC without leap seconds, as Timestamp defines it.
 */
#include "json_wkt.h"

#include "proto_dyn.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"

/* 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z in Unix seconds. */
#define WKT_TS_MIN INT64_C(-62135596800)
#define WKT_TS_MAX INT64_C(253402300799)
/* 10000 years of 365.25 days, Duration's limit either way. */
#define WKT_DUR_MAX INT64_C(315576000000)
#define WKT_NANOS   1000000000

static const struct {
    const char *name; /* after "google.protobuf." */
    ws__json_wkt kind;
} wkt_names[] = {
    {"Timestamp", WS__JSON_WKT_TIMESTAMP},
    {"Duration", WS__JSON_WKT_DURATION},
    {"FieldMask", WS__JSON_WKT_FIELD_MASK},
    {"Struct", WS__JSON_WKT_STRUCT},
    {"Value", WS__JSON_WKT_VALUE},
    {"ListValue", WS__JSON_WKT_LIST_VALUE},
    {"Any", WS__JSON_WKT_ANY},
    {"DoubleValue", WS__JSON_WKT_WRAPPER},
    {"FloatValue", WS__JSON_WKT_WRAPPER},
    {"Int64Value", WS__JSON_WKT_WRAPPER},
    {"UInt64Value", WS__JSON_WKT_WRAPPER},
    {"Int32Value", WS__JSON_WKT_WRAPPER},
    {"UInt32Value", WS__JSON_WKT_WRAPPER},
    {"BoolValue", WS__JSON_WKT_WRAPPER},
    {"StringValue", WS__JSON_WKT_WRAPPER},
    {"BytesValue", WS__JSON_WKT_WRAPPER},
};

#define WKT_PREFIX          "google.protobuf."
#define WKT_PREFIX_LEN      (sizeof WKT_PREFIX - 1)
#define WKT_TYPE_URL_PREFIX "type.googleapis.com/"

ws__json_wkt ws__json_wkt_of(const ProtobufCMessageDescriptor *desc)
{
    const char *n = desc->name;
    if (n == NULL || strncmp(n, WKT_PREFIX, WKT_PREFIX_LEN) != 0) {
        return WS__JSON_WKT_NONE;
    }
    n += WKT_PREFIX_LEN;
    for (size_t i = 0; i < sizeof wkt_names / sizeof wkt_names[0]; i++) {
        if (strcmp(wkt_names[i].name, n) == 0) {
            return wkt_names[i].kind;
        }
    }
    return WS__JSON_WKT_NONE;
}

int ws__json_wkt_is_null_enum(const ProtobufCEnumDescriptor *ed)
{
    return ed != NULL && strcmp(ed->name, WKT_PREFIX "NullValue") == 0;
}

int ws__json_wkt_takes_null(const ProtobufCFieldDescriptor *f)
{
    if (f->type == PROTOBUF_C_TYPE_ENUM) {
        return ws__json_wkt_is_null_enum(f->descriptor);
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        const ProtobufCMessageDescriptor *md = f->descriptor;
        return ws__json_wkt_of(md) == WS__JSON_WKT_VALUE;
    }
    return 0;
}

/* ---- calendar ---------------------------------------------------------- */

/* Days since 1970-01-01 of a civil date (H. Hinnant's days_from_civil). */
static int64_t wkt_days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* The civil date of a day count since 1970-01-01. */
static void wkt_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned wkt_days_in_month(int64_t y, unsigned m)
{
    static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : days[m - 1];
}

/* Exactly n decimal digits at s, as a number; -1 if any is not a digit. */
static int64_t wkt_digits(const char *s, size_t n)
{
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -1;
        }
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* The fraction after a '.', 1 to 9 digits, as nanoseconds; *len its
 * digits. -1 when there are none or more than nine. */
static int32_t wkt_fraction(const char *s, size_t *len)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 9) {
        return -1;
    }
    int64_t v = wkt_digits(s, n);
    for (size_t i = n; i < 9; i++) {
        v *= 10;
    }
    *len = n;
    return (int32_t)v;
}

/* The ".fff", ".ffffff" or ".fffffffff" of nanos (0..999999999): as few
 * groups of three digits as hold it exactly, none for 0. */
static void wkt_fraction_text(int32_t nanos, char *out /* at least 11 bytes */)
{
    if (nanos == 0) {
        out[0] = '\0';
    } else if (nanos % 1000000 == 0) {
        snprintf(out, 11, ".%03" PRId32, nanos / 1000000);
    } else if (nanos % 1000 == 0) {
        snprintf(out, 11, ".%06" PRId32, nanos / 1000);
    } else {
        snprintf(out, 11, ".%09" PRId32, nanos);
    }
}

/* ---- Timestamp --------------------------------------------------------- */

static ws_err wkt_enc_timestamp(ws_buf *b, ws__json_enc *e,
                                const Google__Protobuf__Timestamp *t)
{
    if (t->seconds < WKT_TS_MIN || t->seconds > WKT_TS_MAX) {
        return ws__json_fail(&e->at, WS_ERANGE,
                             "timestamp out of range (years 0001 to 9999 in UTC)");
    }
    if (t->nanos < 0 || t->nanos >= WKT_NANOS) {
        return ws__json_fail(&e->at, WS_ERANGE,
                             "timestamp nanos out of range (0 to 999999999)");
    }
    int64_t days = t->seconds / 86400;
    int64_t sod = t->seconds % 86400;
    if (sod < 0) {
        sod += 86400;
        days--;
    }
    int64_t y;
    unsigned m, d;
    wkt_civil_from_days(days, &y, &m, &d);
    char frac[11];
    wkt_fraction_text(t->nanos, frac);
    return ws_buf_printf(b, "\"%04" PRId64 "-%02u-%02uT%02d:%02d:%02d%sZ\"", y, m, d,
                         (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60), frac);
}

/* "YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+HH:MM|-HH:MM)" into Unix seconds and
 * nanos; 0 if the text is not of that form or names no real date or time. */
static int wkt_parse_rfc3339(const char *s, int64_t *secs, int32_t *nanos)
{
    if (strlen(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
        s[16] != ':') {
        return 0;
    }
    int64_t y = wkt_digits(s, 4), mo = wkt_digits(s + 5, 2), d = wkt_digits(s + 8, 2);
    int64_t h = wkt_digits(s + 11, 2), mi = wkt_digits(s + 14, 2);
    int64_t se = wkt_digits(s + 17, 2);
    if (y < 0 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 ||
        se < 0 || se > 59 || d > wkt_days_in_month(y, (unsigned)mo)) {
        return 0;
    }
    const char *p = s + 19;
    int32_t ns = 0;
    if (*p == '.') {
        size_t n;
        ns = wkt_fraction(p + 1, &n);
        if (ns < 0) {
            return 0;
        }
        p += 1 + n;
    }
    int64_t offset = 0;
    if (p[0] == 'Z' && p[1] == '\0') {
        offset = 0;
    } else if ((p[0] == '+' || p[0] == '-') && strlen(p) == 6 && p[3] == ':') {
        int64_t oh = wkt_digits(p + 1, 2), om = wkt_digits(p + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59) {
            return 0;
        }
        offset = (oh * 60 + om) * 60 * (p[0] == '-' ? -1 : 1);
    } else {
        return 0;
    }
    *secs = wkt_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 +
            mi * 60 + se - offset;
    *nanos = ns;
    return 1;
}

static ws_err wkt_dec_timestamp(ws__json_path *d, const json_t *v,
                                Google__Protobuf__Timestamp *t)
{
    int64_t secs;
    int32_t nanos;
    if (!json_is_string(v) || !wkt_parse_rfc3339(json_string_value(v), &secs, &nanos)) {
        return ws__json_fail(
            d, WS_EPARSE, "expected RFC 3339 timestamp (\"1972-01-01T10:00:20.021Z\")");
    }
    if (secs < WKT_TS_MIN || secs > WKT_TS_MAX) {
        return ws__json_fail(d, WS_EPARSE,
                             "timestamp out of range (years 0001 to 9999 in UTC)");
    }
    t->seconds = secs;
    t->nanos = nanos;
    return WS_OK;
}

/* ---- Duration ---------------------------------------------------------- */

static ws_err wkt_enc_duration(ws_buf *b, ws__json_enc *e,
                               const Google__Protobuf__Duration *du)
{
    int64_t s = du->seconds;
    int32_t n = du->nanos;
    if (s < -WKT_DUR_MAX || s > WKT_DUR_MAX) {
        return ws__json_fail(&e->at, WS_ERANGE,
                             "duration out of range (at most 315576000000s either way)");
    }
    if (n <= -WKT_NANOS || n >= WKT_NANOS) {
        return ws__json_fail(&e->at, WS_ERANGE,
                             "duration nanos out of range (-999999999 to 999999999)");
    }
    if ((s < 0 && n > 0) || (s > 0 && n < 0)) {
        return ws__json_fail(&e->at, WS_ERANGE,
                             "duration seconds and nanos differ in sign");
    }
    int neg = s < 0 || n < 0;
    char frac[11];
    wkt_fraction_text(neg ? -n : n, frac);
    return ws_buf_printf(b, "\"%s%" PRId64 "%ss\"", neg ? "-" : "", neg ? -s : s, frac);
}

static ws_err wkt_dec_duration(ws__json_path *d, const json_t *v,
                               Google__Protobuf__Duration *du)
{
    static const char what[] = "expected duration (\"1.5s\", \"-0.000001s\")";
    if (!json_is_string(v)) {
        return ws__json_fail(d, WS_EPARSE, what);
    }
    const char *s = json_string_value(v);
    int neg = *s == '-';
    const char *p = s + neg;
    size_t n = strspn(p, "0123456789");
    if (n == 0) {
        return ws__json_fail(d, WS_EPARSE, what);
    }
    /* More than 12 digits is past the limit (and might overflow). */
    int64_t secs = n > 12 ? WKT_DUR_MAX + 1 : wkt_digits(p, n);
    p += n;
    int32_t nanos = 0;
    if (*p == '.') {
        size_t fl;
        nanos = wkt_fraction(p + 1, &fl);
        if (nanos < 0) {
            return ws__json_fail(d, WS_EPARSE, what);
        }
        p += 1 + fl;
    }
    if (p[0] != 's' || p[1] != '\0') {
        return ws__json_fail(d, WS_EPARSE, what);
    }
    if (secs > WKT_DUR_MAX) {
        return ws__json_fail(d, WS_EPARSE,
                             "duration out of range (at most 315576000000s either way)");
    }
    du->seconds = neg ? -secs : secs;
    du->nanos = neg ? -nanos : nanos;
    return WS_OK;
}

/* ---- FieldMask --------------------------------------------------------- */

/* A path in lowerCamelCase, as protobuf writes it: "a.b_c" -> "a.bC". A
 * path that would not read back the same (an upper-case letter, a '_' not
 * followed by a lower-case letter) has no JSON form: WS_EINVAL. */
static ws_err wkt_enc_path(ws_buf *b, const char *path)
{
    for (const char *p = path; *p != '\0'; p++) {
        if (*p >= 'A' && *p <= 'Z') {
            return WS_EINVAL;
        }
        if (*p == '_') {
            if (p[1] < 'a' || p[1] > 'z') {
                return WS_EINVAL;
            }
            p++;
            ws_err err = ws_buf_putc(b, (char)(*p - 'a' + 'A'));
            if (err != WS_OK) {
                return err;
            }
            continue;
        }
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) {
            return WS_EINVAL; /* no field name holds these */
        }
        ws_err err = ws_buf_putc(b, *p);
        if (err != WS_OK) {
            return err;
        }
    }
    return WS_OK;
}

static ws_err wkt_enc_field_mask(ws_buf *b, ws__json_enc *e,
                                 const Google__Protobuf__FieldMask *fm)
{
    ws_err err = ws_buf_putc(b, '"');
    for (size_t i = 0; i < fm->n_paths && err == WS_OK; i++) {
        if (i > 0) {
            err = ws_buf_putc(b, ',');
        }
        const char *path = fm->paths[i] != NULL ? fm->paths[i] : "";
        if (err == WS_OK) {
            err = wkt_enc_path(b, path);
        }
        if (err == WS_EINVAL) {
            char safe[64];
            ws__json_sanitize(safe, sizeof safe, path, strlen(path));
            size_t plen = e->at.plen;
            ws__json_push_index(&e->at, i);
            ws__json_fail(&e->at, err, "path \"%s\" has no lowerCamelCase form", safe);
            ws__json_pop(&e->at, plen);
        }
    }
    return err == WS_OK ? ws_buf_putc(b, '"') : err;
}

/* One comma-separated path s[0..n) back in snake_case: "bC" -> "b_c". */
static char *wkt_dec_path(const char *s, size_t n)
{
    size_t upper = 0;
    for (size_t i = 0; i < n; i++) {
        upper += s[i] >= 'A' && s[i] <= 'Z';
    }
    char *out = malloc(n + upper + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] >= 'A' && s[i] <= 'Z') {
            out[o++] = '_';
            out[o++] = (char)(s[i] - 'A' + 'a');
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

static ws_err wkt_dec_field_mask(ws__json_path *d, const json_t *v,
                                 Google__Protobuf__FieldMask *fm)
{
    if (!json_is_string(v)) {
        return ws__json_fail(d, WS_EPARSE, "expected field mask (\"a.bC,d\")");
    }
    const char *s = json_string_value(v);
    if (strchr(s, '_') != NULL) {
        return ws__json_fail(d, WS_EPARSE,
                             "field mask paths are lowerCamelCase: no '_' allowed");
    }
    if (*s == '\0') {
        return WS_OK;
    }
    size_t n = 1;
    for (const char *p = s; *p != '\0'; p++) {
        n += *p == ',';
    }
    fm->paths = calloc(n, sizeof *fm->paths);
    if (fm->paths == NULL) {
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    fm->n_paths = n; /* owned by fm: free_unpacked skips NULL slots */
    const char *p = s;
    for (size_t i = 0; i < n; i++) {
        size_t len = strcspn(p, ",");
        fm->paths[i] = wkt_dec_path(p, len);
        if (fm->paths[i] == NULL) {
            return ws__json_fail(d, WS_ENOMEM, "out of memory");
        }
        p += len + 1;
    }
    return WS_OK;
}

/* ---- Struct, Value, ListValue ----------------------------------------- */

static ws_err wkt_enc_json_value(ws_buf *b, ws__json_enc *e,
                                 const Google__Protobuf__Value *v, int depth);

/* Past the encoder's depth limit: the error, else WS_OK. */
static ws_err wkt_enc_depth(ws__json_enc *e, int depth)
{
    if (depth > WS_JSON_ENC_MAX_DEPTH) {
        return ws__json_fail(&e->at, WS_EINVAL, "nesting deeper than %d",
                             WS_JSON_ENC_MAX_DEPTH);
    }
    return WS_OK;
}

static ws_err wkt_enc_struct(ws_buf *b, ws__json_enc *e,
                             const Google__Protobuf__Struct *st, int depth)
{
    if (wkt_enc_depth(e, depth) != WS_OK) {
        return WS_EINVAL;
    }
    ws_err err = ws_buf_putc(b, '{');
    for (size_t i = 0; i < st->n_fields && err == WS_OK; i++) {
        const Google__Protobuf__Struct__FieldsEntry *entry = st->fields[i];
        if (entry == NULL) {
            return ws__json_fail(&e->at, WS_EINVAL, "NULL entry");
        }
        if (i > 0) {
            err = ws_buf_putc(b, ',');
        }
        const char *key = entry->key != NULL ? entry->key : "";
        size_t plen = e->at.plen;
        ws__json_push_key(&e->at, key);
        if (err == WS_OK) {
            err = ws__json_enc_string(b, key, strlen(key));
        }
        if (err == WS_OK) {
            err = ws_buf_putc(b, ':');
        }
        if (err == WS_OK) {
            err = wkt_enc_json_value(b, e, entry->value, depth + 1);
        }
        if (err == WS_OK) {
            ws__json_pop(&e->at, plen);
        }
    }
    return err == WS_OK ? ws_buf_putc(b, '}') : err;
}

static ws_err wkt_enc_list(ws_buf *b, ws__json_enc *e,
                           const Google__Protobuf__ListValue *l, int depth)
{
    if (wkt_enc_depth(e, depth) != WS_OK) {
        return WS_EINVAL;
    }
    ws_err err = ws_buf_putc(b, '[');
    for (size_t i = 0; i < l->n_values && err == WS_OK; i++) {
        if (i > 0) {
            err = ws_buf_putc(b, ',');
        }
        size_t plen = e->at.plen;
        ws__json_push_index(&e->at, i);
        if (err == WS_OK) {
            err = wkt_enc_json_value(b, e, l->values[i], depth + 1);
        }
        if (err == WS_OK) {
            ws__json_pop(&e->at, plen);
        }
    }
    return err == WS_OK ? ws_buf_putc(b, ']') : err;
}

/* A Value with no kind set is written as null, as protobuf's own
 * implementations do (it reads back as null_value). A number that is not
 * finite has no JSON form as a number, and as a string it would read back
 * as string_value: refused. */
static ws_err wkt_enc_json_value(ws_buf *b, ws__json_enc *e,
                                 const Google__Protobuf__Value *v, int depth)
{
    if (v == NULL) {
        return ws_buf_puts(b, "null");
    }
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        if (!isfinite(v->number_value)) {
            return ws__json_fail(&e->at, WS_EINVAL, "a Value's number must be finite");
        }
        return ws__json_enc_real(b, v->number_value, 0);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE: {
        const char *s = v->string_value != NULL ? v->string_value : "";
        return ws__json_enc_string(b, s, strlen(s));
    }
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return ws_buf_puts(b, v->bool_value ? "true" : "false");
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        if (v->struct_value == NULL) {
            return ws_buf_puts(b, "{}");
        }
        return wkt_enc_struct(b, e, v->struct_value, depth);
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
        if (v->list_value == NULL) {
            return ws_buf_puts(b, "[]");
        }
        return wkt_enc_list(b, e, v->list_value, depth);
    default:
        return ws_buf_puts(b, "null");
    }
}

static ws_err wkt_dec_json_value(ws__json_path *d, const json_t *v,
                                 Google__Protobuf__Value **out);

/* Each member of object v as an entry of st (which owns what is built so
 * far, for free_unpacked). */
static ws_err wkt_dec_struct(ws__json_path *d, const json_t *v,
                             Google__Protobuf__Struct *st)
{
    if (!json_is_object(v)) {
        return ws__json_fail(d, WS_EPARSE, "expected object");
    }
    size_t n = json_object_size(v);
    if (n == 0) {
        return WS_OK;
    }
    st->fields = calloc(n, sizeof *st->fields);
    if (st->fields == NULL) {
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    st->n_fields = n;
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        size_t plen = d->plen;
        ws__json_push_key(d, key);
        Google__Protobuf__Struct__FieldsEntry *e = malloc(sizeof *e);
        if (e == NULL) {
            return ws__json_fail(d, WS_ENOMEM, "out of memory");
        }
        google__protobuf__struct__fields_entry__init(e);
        st->fields[i++] = e;
        e->key = strdup(key);
        if (e->key == NULL) {
            return ws__json_fail(d, WS_ENOMEM, "out of memory");
        }
        ws_err err = wkt_dec_json_value(d, val, &e->value);
        if (err != WS_OK) {
            return err;
        }
        ws__json_pop(d, plen);
    }
    return WS_OK;
}

static ws_err wkt_dec_list(ws__json_path *d, const json_t *v,
                           Google__Protobuf__ListValue *l)
{
    if (!json_is_array(v)) {
        return ws__json_fail(d, WS_EPARSE, "expected array");
    }
    size_t n = json_array_size(v);
    if (n == 0) {
        return WS_OK;
    }
    l->values = calloc(n, sizeof *l->values);
    if (l->values == NULL) {
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    l->n_values = n;
    for (size_t i = 0; i < n; i++) {
        size_t plen = d->plen;
        ws__json_push_index(d, i);
        ws_err err = wkt_dec_json_value(d, json_array_get(v, i), &l->values[i]);
        if (err != WS_OK) {
            return err;
        }
        ws__json_pop(d, plen);
    }
    return WS_OK;
}

/* Fill value (kind not yet set) from any JSON value v. */
static ws_err wkt_dec_kind(ws__json_path *d, const json_t *v,
                           Google__Protobuf__Value *value)
{
    switch (json_typeof(v)) {
    case JSON_NULL:
        value->null_value = GOOGLE__PROTOBUF__NULL_VALUE__NULL_VALUE;
        value->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        return WS_OK;
    case JSON_TRUE:
    case JSON_FALSE:
        value->bool_value = json_is_true(v);
        value->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE;
        return WS_OK;
    case JSON_INTEGER:
    case JSON_REAL:
        value->number_value = json_number_value(v);
        value->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
        return WS_OK;
    case JSON_STRING:
        value->string_value = strdup(json_string_value(v));
        if (value->string_value == NULL) {
            return ws__json_fail(d, WS_ENOMEM, "out of memory");
        }
        value->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
        return WS_OK;
    case JSON_OBJECT: {
        Google__Protobuf__Struct *st = malloc(sizeof *st);
        if (st == NULL) {
            return ws__json_fail(d, WS_ENOMEM, "out of memory");
        }
        google__protobuf__struct__init(st);
        value->struct_value = st;
        value->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE;
        return wkt_dec_struct(d, v, st);
    }
    case JSON_ARRAY: {
        Google__Protobuf__ListValue *l = malloc(sizeof *l);
        if (l == NULL) {
            return ws__json_fail(d, WS_ENOMEM, "out of memory");
        }
        google__protobuf__list_value__init(l);
        value->list_value = l;
        value->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE;
        return wkt_dec_list(d, v, l);
    }
    }
    return ws__json_fail(d, WS_EINTERNAL, "unknown JSON type");
}

static ws_err wkt_dec_json_value(ws__json_path *d, const json_t *v,
                                 Google__Protobuf__Value **out)
{
    Google__Protobuf__Value *value = malloc(sizeof *value);
    if (value == NULL) {
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    google__protobuf__value__init(value);
    *out = value; /* owned by the caller's message from here on */
    return wkt_dec_kind(d, v, value);
}

/* ---- Any --------------------------------------------------------------- */

/* The type an Any's URL names: what follows its last '/'. */
static const ProtobufCMessageDescriptor *wkt_any_type(const char *url)
{
    const char *slash = strrchr(url, '/');
    return ws_json_type_find(slash != NULL ? slash + 1 : url);
}

static ws_err wkt_enc_any(ws_buf *b, const Google__Protobuf__Any *a, ws__json_enc *e,
                          int depth)
{
    const char *url = a->type_url != NULL ? a->type_url : "";
    if (*url == '\0' && a->value.len == 0) {
        return ws_buf_puts(b, "{}"); /* the empty Any, as protobuf writes it */
    }
    const ProtobufCMessageDescriptor *desc = wkt_any_type(url);
    char safe[96];
    ws__json_sanitize(safe, sizeof safe, url, strlen(url));
    if (desc == NULL) {
        return ws__json_fail(&e->at, WS_EINVAL, "unknown type \"%s\" in type_url", safe);
    }
    ProtobufCMessage *inner =
        protobuf_c_message_unpack(desc, NULL, a->value.len, a->value.data);
    if (inner == NULL) {
        return ws__json_fail(&e->at, WS_EINVAL, "value is not a packed %s", desc->name);
    }
    ws_err err = ws_buf_puts(b, "{\"@type\":");
    if (err == WS_OK) {
        err = ws__json_enc_string(b, url, strlen(url));
    }
    if (err == WS_OK && ws__json_wkt_of(desc) != WS__JSON_WKT_NONE) {
        err = ws_buf_puts(b, ",\"value\":");
        if (err == WS_OK) {
            err = ws__json_enc_message(b, inner, e, depth + 1);
        }
    } else if (err == WS_OK) {
        int first = 0;
        err = ws__json_enc_members(b, inner, e, depth + 1, &first);
    }
    protobuf_c_message_free_unpacked(inner, NULL);
    return err == WS_OK ? ws_buf_putc(b, '}') : err;
}

/* The message an Any holds, from the Any's JSON object minus "@type". */
static ws_err wkt_dec_any_inner(ws__json_path *d, const ProtobufCMessageDescriptor *desc,
                                const json_t *v, ProtobufCMessage **inner)
{
    if (ws__json_wkt_of(desc) != WS__JSON_WKT_NONE) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val)
        {
            if (strcmp(key, "@type") != 0 && strcmp(key, "value") != 0) {
                size_t plen = d->plen;
                ws__json_push_key(d, key);
                ws_err err = ws__json_fail(d, WS_EPARSE, "unknown field");
                ws__json_pop(d, plen);
                return err;
            }
        }
        const json_t *value = json_object_get(v, "value");
        if (value == NULL) {
            return ws__json_fail(d, WS_EPARSE, "missing \"value\" for %s", desc->name);
        }
        size_t plen = d->plen;
        ws__json_push_key(d, "value");
        ws_err err = ws__json_dec_message(d, desc, value, inner);
        ws__json_pop(d, plen);
        return err;
    }
    json_t *fields = json_copy((json_t *)v);
    if (fields == NULL || json_object_del(fields, "@type") != 0) {
        json_decref(fields);
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    ws_err err = ws__json_dec_message(d, desc, fields, inner);
    json_decref(fields);
    return err;
}

static ws_err wkt_dec_any(ws__json_path *d, const json_t *v, Google__Protobuf__Any *a)
{
    if (!json_is_object(v)) {
        return ws__json_fail(d, WS_EPARSE, "expected object");
    }
    if (json_object_size(v) == 0) {
        return WS_OK;
    }
    const json_t *type = json_object_get(v, "@type");
    if (!json_is_string(type)) {
        return ws__json_fail(d, WS_EPARSE, "expected \"@type\" naming the type");
    }
    const char *url = json_string_value(type);
    const ProtobufCMessageDescriptor *desc = wkt_any_type(url);
    if (desc == NULL) {
        char safe[96];
        size_t n = strlen(url);
        snprintf(safe, sizeof safe, "%.*s%s", n > 80 ? 80 : (int)n, url,
                 n > 80 ? "..." : "");
        for (char *p = safe; *p != '\0'; p++) {
            *p = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
        }
        return ws__json_fail(d, WS_EPARSE, "unknown type \"%s\" in @type", safe);
    }
    ProtobufCMessage *inner = NULL;
    ws_err err = wkt_dec_any_inner(d, desc, v, &inner);
    if (err != WS_OK) {
        return err;
    }
    size_t n = protobuf_c_message_get_packed_size(inner);
    a->type_url = strdup(url);
    a->value.data = n > 0 ? malloc(n) : NULL;
    if (a->type_url == NULL || (n > 0 && a->value.data == NULL)) {
        protobuf_c_message_free_unpacked(inner, NULL);
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    a->value.len = n > 0 ? protobuf_c_message_pack(inner, a->value.data) : 0;
    protobuf_c_message_free_unpacked(inner, NULL);
    return WS_OK;
}

/* ---- dispatch ---------------------------------------------------------- */

ws_err ws__json_wkt_encode(ws_buf *b, const ProtobufCMessage *m, ws__json_wkt kind,
                           ws__json_enc *e, int depth)
{
    switch (kind) {
    case WS__JSON_WKT_TIMESTAMP:
        return wkt_enc_timestamp(b, e, (const Google__Protobuf__Timestamp *)m);
    case WS__JSON_WKT_DURATION:
        return wkt_enc_duration(b, e, (const Google__Protobuf__Duration *)m);
    case WS__JSON_WKT_FIELD_MASK:
        return wkt_enc_field_mask(b, e, (const Google__Protobuf__FieldMask *)m);
    case WS__JSON_WKT_STRUCT:
        return wkt_enc_struct(b, e, (const Google__Protobuf__Struct *)m, depth);
    case WS__JSON_WKT_VALUE:
        return wkt_enc_json_value(b, e, (const Google__Protobuf__Value *)m, depth);
    case WS__JSON_WKT_LIST_VALUE:
        return wkt_enc_list(b, e, (const Google__Protobuf__ListValue *)m, depth);
    case WS__JSON_WKT_WRAPPER: {
        const ProtobufCFieldDescriptor *f = &m->descriptor->fields[0];
        return ws__json_enc_value(b, f, (const char *)m + f->offset, e, depth);
    }
    case WS__JSON_WKT_ANY:
        return wkt_enc_any(b, (const Google__Protobuf__Any *)m, e, depth);
    case WS__JSON_WKT_NONE:
        break;
    }
    return WS_EINVAL;
}

/* Fill m, a fresh message of type kind, from v. */
static ws_err wkt_dec_into(ws__json_path *d, ws__json_wkt kind, const json_t *v,
                           ProtobufCMessage *m)
{
    switch (kind) {
    case WS__JSON_WKT_TIMESTAMP:
        return wkt_dec_timestamp(d, v, (Google__Protobuf__Timestamp *)m);
    case WS__JSON_WKT_DURATION:
        return wkt_dec_duration(d, v, (Google__Protobuf__Duration *)m);
    case WS__JSON_WKT_FIELD_MASK:
        return wkt_dec_field_mask(d, v, (Google__Protobuf__FieldMask *)m);
    case WS__JSON_WKT_STRUCT:
        return wkt_dec_struct(d, v, (Google__Protobuf__Struct *)m);
    case WS__JSON_WKT_VALUE:
        return wkt_dec_kind(d, v, (Google__Protobuf__Value *)m);
    case WS__JSON_WKT_LIST_VALUE:
        return wkt_dec_list(d, v, (Google__Protobuf__ListValue *)m);
    case WS__JSON_WKT_WRAPPER: {
        const ProtobufCFieldDescriptor *f = &m->descriptor->fields[0];
        if (json_is_null(v)) {
            return ws__json_fail(d, WS_EPARSE, "null is not a %s", m->descriptor->name);
        }
        return ws__json_dec_value(d, f, v, (char *)m + f->offset);
    }
    case WS__JSON_WKT_ANY:
        return wkt_dec_any(d, v, (Google__Protobuf__Any *)m);
    case WS__JSON_WKT_NONE:
        break;
    }
    return ws__json_fail(d, WS_EINTERNAL, "not a well-known type");
}

ws_err ws__json_wkt_decode(ws__json_path *d, const ProtobufCMessageDescriptor *desc,
                           ws__json_wkt kind, const json_t *v, ProtobufCMessage **out)
{
    ProtobufCMessage *m = malloc(desc->sizeof_message);
    if (m == NULL) {
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    ws_proto_message_init(desc, m);
    ws_err err = wkt_dec_into(d, kind, v, m);
    if (err != WS_OK) {
        protobuf_c_message_free_unpacked(m, NULL);
        return err;
    }
    *out = m;
    return WS_OK;
}
