/*
 * The decoding half of the proto3 JSON mapping. The text is size-checked and
 * depth-checked by a cheap scan, parsed by jansson (which validates UTF-8,
 * escapes, surrogates and duplicate keys), and then walked against the
 * message descriptor, building the message with protobuf-c's default
 * allocator so that protobuf_c_message_free_unpacked releases any partial
 * result. Every rejection names the JSON path of the offending value.
 *
 * Known limit: jansson stores integer literals as int64, so a JSON number
 * above 9223372036854775807 is rejected at parse time ("too big integer");
 * uint64 values that large must be written as strings, which is their
 * canonical proto3 JSON form anyway.
 */
#include "json.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_int.h"
#include "json_wkt.h"
#include "proto_dyn.h"

/* The scan before jansson: nesting depth outside strings. */
static ws_err json_dec_prescan(const char *s, size_t n, int max_depth, ws_json_error *err)
{
    int depth = 0;
    int in_string = 0;
    int line = 1;
    size_t line_start = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_string = 0;
            }
            continue;
        }
        if (c == '"') {
            in_string = 1;
        } else if (c == '\n') {
            line++;
            line_start = i + 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth) {
                if (err != NULL) {
                    snprintf(err->text, sizeof err->text,
                             "line %d column %zu: nesting deeper than %d", line,
                             i - line_start + 1, max_depth);
                }
                return WS_ETOOBIG;
            }
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return WS_OK;
}

/* jansson's complaint, made printable; for a duplicate key, name the key. */
static ws_err json_dec_parse_error(const char *s, size_t n, const json_error_t *je,
                                   ws_json_error *err)
{
    if (json_error_code(je) == json_error_out_of_memory) {
        if (err != NULL) {
            snprintf(err->text, sizeof err->text, "out of memory");
        }
        return WS_ENOMEM;
    }
    if (err == NULL) {
        return WS_EPARSE;
    }
    char text[160];
    ws__json_sanitize(text, sizeof text, je->text, strlen(je->text));
    if (json_error_code(je) == json_error_duplicate_key && je->position > 1 &&
        (size_t)je->position <= n && s[je->position - 1] == '"') {
        /* position is just past the key's closing quote; find its opening one. */
        size_t end = (size_t)je->position - 1;
        size_t begin = end;
        while (begin > 0) {
            begin--;
            if (s[begin] != '"') {
                continue;
            }
            size_t bs = 0;
            while (begin >= bs + 1 && s[begin - bs - 1] == '\\') {
                bs++;
            }
            if (bs % 2 == 0) {
                break;
            }
        }
        char key[64];
        ws__json_sanitize(key, sizeof key, s + begin + 1, end - begin - 1);
        snprintf(err->text, sizeof err->text, "line %d column %d: duplicate key \"%s\"",
                 je->line, je->column, key);
        return WS_EPARSE;
    }
    if (json_error_code(je) == json_error_null_character) {
        /* Not jansson's wording: it names a flag of its own API. */
        snprintf(text, sizeof text, "\\u0000 is not allowed in strings");
    }
    snprintf(err->text, sizeof err->text, "line %d column %d: %s", je->line, je->column,
             text);
    return WS_EPARSE;
}

/* Strict decimal integer text: optional '-', then digits only. */
static int json_dec_int_text(const char *s, int allow_minus)
{
    if (*s == '-' && allow_minus) {
        s++;
    }
    if (*s == '\0') {
        return 0;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return 0;
        }
    }
    return 1;
}

static ws_err json_dec_signed(ws__json_path *d, const json_t *v, int64_t min, int64_t max,
                              const char *type, int64_t *out)
{
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double r = json_real_value(v);
        if (r != floor(r)) {
            return ws__json_fail(d, WS_EPARSE, "expected integer");
        }
        if (!(r >= -9223372036854775808.0 && r < 9223372036854775808.0)) {
            return ws__json_fail(d, WS_EPARSE, "out of range for %s", type);
        }
        x = (int64_t)r;
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!json_dec_int_text(s, 1)) {
            return ws__json_fail(d, WS_EPARSE, "expected integer");
        }
        errno = 0;
        long long ll = strtoll(s, NULL, 10);
        if (errno == ERANGE) {
            return ws__json_fail(d, WS_EPARSE, "out of range for %s", type);
        }
        x = ll;
    } else {
        return ws__json_fail(d, WS_EPARSE, "expected integer");
    }
    if (x < min || x > max) {
        return ws__json_fail(d, WS_EPARSE, "out of range for %s", type);
    }
    *out = x;
    return WS_OK;
}

static ws_err json_dec_unsigned(ws__json_path *d, const json_t *v, uint64_t max,
                                const char *type, uint64_t *out)
{
    uint64_t x;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0) {
            return ws__json_fail(d, WS_EPARSE, "out of range for %s", type);
        }
        x = (uint64_t)i;
    } else if (json_is_real(v)) {
        double r = json_real_value(v);
        if (r != floor(r)) {
            return ws__json_fail(d, WS_EPARSE, "expected integer");
        }
        if (!(r >= 0 && r < 18446744073709551616.0)) {
            return ws__json_fail(d, WS_EPARSE, "out of range for %s", type);
        }
        x = (uint64_t)r;
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (s[0] == '-' && json_dec_int_text(s, 1)) {
            return ws__json_fail(d, WS_EPARSE, "out of range for %s", type);
        }
        if (!json_dec_int_text(s, 0)) {
            return ws__json_fail(d, WS_EPARSE, "expected integer");
        }
        errno = 0;
        unsigned long long ull = strtoull(s, NULL, 10);
        if (errno == ERANGE) {
            return ws__json_fail(d, WS_EPARSE, "out of range for %s", type);
        }
        x = ull;
    } else {
        return ws__json_fail(d, WS_EPARSE, "expected integer");
    }
    if (x > max) {
        return ws__json_fail(d, WS_EPARSE, "out of range for %s", type);
    }
    *out = x;
    return WS_OK;
}

static ws_err json_dec_real(ws__json_path *d, const json_t *v, int is_float, double *out)
{
    double r;
    if (json_is_integer(v)) {
        r = (double)json_integer_value(v);
    } else if (json_is_real(v)) {
        r = json_real_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "NaN") == 0) {
            *out = NAN;
            return WS_OK;
        }
        if (strcmp(s, "Infinity") == 0) {
            *out = INFINITY;
            return WS_OK;
        }
        if (strcmp(s, "-Infinity") == 0) {
            *out = -INFINITY;
            return WS_OK;
        }
        /* A number in a string: digits, sign, point and exponent only. */
        if (s[0] == '\0' || strspn(s, "0123456789+-.eE") != strlen(s)) {
            return ws__json_fail(d, WS_EPARSE, "expected number");
        }
        char *end;
        errno = 0;
        r = strtod(s, &end);
        if (*end != '\0') {
            return ws__json_fail(d, WS_EPARSE, "expected number");
        }
        if (errno == ERANGE && isinf(r)) {
            return ws__json_fail(d, WS_EPARSE, "out of range for %s",
                                 is_float ? "float" : "double");
        }
    } else {
        return ws__json_fail(d, WS_EPARSE, "expected number");
    }
    /* Past FLT_MAX by less than half an ulp still rounds to FLT_MAX. */
    if (is_float && isfinite(r) && isinf((float)r)) {
        return ws__json_fail(d, WS_EPARSE, "out of range for float");
    }
    *out = r;
    return WS_OK;
}

static int json_dec_b64_digit(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+' || c == '-') {
        return 62;
    }
    if (c == '/' || c == '_') {
        return 63;
    }
    return -1;
}

/* Standard or URL-safe base64, padded or not. */
static ws_err json_dec_base64(ws__json_path *d, const json_t *v, ProtobufCBinaryData *out)
{
    if (!json_is_string(v)) {
        return ws__json_fail(d, WS_EPARSE, "expected base64 string");
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    size_t pad = 0;
    while (n > 0 && s[n - 1] == '=' && pad < 2) {
        n--;
        pad++;
    }
    if (n % 4 == 1 || (pad > 0 && (n + pad) % 4 != 0)) {
        return ws__json_fail(d, WS_EPARSE, "invalid base64");
    }
    size_t cap = n / 4 * 3 + 3;
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int x = json_dec_b64_digit((unsigned char)s[i]);
        if (x < 0) {
            free(buf);
            return ws__json_fail(d, WS_EPARSE, "invalid base64");
        }
        acc = (acc << 6) | (uint32_t)x;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (o == 0) {
        free(buf);
        buf = NULL;
    }
    out->data = buf;
    out->len = o;
    return WS_OK;
}

/* One value of field f's type from v into p; v is null only where null is
 * a value (google.protobuf.Value and NullValue, ws__json_wkt_takes_null). */
ws_err ws__json_dec_value(ws__json_path *d, const ProtobufCFieldDescriptor *f,
                          const json_t *v, void *p)
{
    int64_t s64;
    uint64_t u64;
    double r;
    ws_err err;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        err = json_dec_signed(d, v, INT32_MIN, INT32_MAX, "int32", &s64);
        if (err == WS_OK) {
            *(int32_t *)p = (int32_t)s64;
        }
        return err;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        err = json_dec_unsigned(d, v, UINT32_MAX, "uint32", &u64);
        if (err == WS_OK) {
            *(uint32_t *)p = (uint32_t)u64;
        }
        return err;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_dec_signed(d, v, INT64_MIN, INT64_MAX, "int64", (int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return json_dec_unsigned(d, v, UINT64_MAX, "uint64", (uint64_t *)p);
    case PROTOBUF_C_TYPE_FLOAT:
        err = json_dec_real(d, v, 1, &r);
        if (err == WS_OK) {
            *(float *)p = (float)r;
        }
        return err;
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_dec_real(d, v, 0, (double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) {
            return ws__json_fail(d, WS_EPARSE, "expected boolean");
        }
        *(protobuf_c_boolean *)p = json_is_true(v);
        return WS_OK;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        if (json_is_null(v) && ws__json_wkt_is_null_enum(ed)) {
            *(int *)p = 0; /* NULL_VALUE */
            return WS_OK;
        }
        if (json_is_string(v)) {
            const ProtobufCEnumValue *ev =
                protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
            if (ev == NULL) {
                char name[48];
                ws__json_sanitize(name, sizeof name, json_string_value(v),
                                  json_string_length(v));
                return ws__json_fail(d, WS_EPARSE, "unknown value \"%s\" for enum %s",
                                     name, ed->name);
            }
            *(int *)p = ev->value;
            return WS_OK;
        }
        if (!json_is_number(v)) {
            return ws__json_fail(d, WS_EPARSE, "expected enum name or number");
        }
        err = json_dec_signed(d, v, INT32_MIN, INT32_MAX, "enum", &s64);
        if (err == WS_OK) {
            *(int *)p = (int)s64; /* proto3 enums are open: any number is kept */
        }
        return err;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(v)) {
            return ws__json_fail(d, WS_EPARSE, "expected string");
        }
        /* jansson has validated the UTF-8 and refused \u0000. */
        char *s = strdup(json_string_value(v));
        if (s == NULL) {
            return ws__json_fail(d, WS_ENOMEM, "out of memory");
        }
        *(char **)p = s;
        return WS_OK;
    }
    case PROTOBUF_C_TYPE_BYTES:
        return json_dec_base64(d, v, p);
    case PROTOBUF_C_TYPE_MESSAGE:
        return ws__json_dec_message(d, f->descriptor, v, (ProtobufCMessage **)p);
    }
    return ws__json_fail(d, WS_EINTERNAL, "unsupported field type");
}

/* A map key from its JSON object key text into entry field kf at p. */
static ws_err json_dec_map_key(ws__json_path *d, const ProtobufCFieldDescriptor *kf,
                               const char *key, void *p)
{
    if (kf->type == PROTOBUF_C_TYPE_STRING) {
        char *s = strdup(key);
        if (s == NULL) {
            return ws__json_fail(d, WS_ENOMEM, "out of memory");
        }
        *(char **)p = s;
        return WS_OK;
    }
    if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        if (strcmp(key, "true") != 0 && strcmp(key, "false") != 0) {
            return ws__json_fail(d, WS_EPARSE, "expected boolean map key");
        }
        *(protobuf_c_boolean *)p = strcmp(key, "true") == 0;
        return WS_OK;
    }
    json_t *text = json_string(key);
    if (text == NULL) {
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    ws_err err = ws__json_dec_value(d, kf, text, p);
    json_decref(text);
    return err;
}

/* A map field: a JSON object whose members become *Entry messages. */
static ws_err json_dec_map(ws__json_path *d, const ProtobufCFieldDescriptor *f,
                           const json_t *v, ProtobufCMessage *m)
{
    if (!json_is_object(v)) {
        return ws__json_fail(d, WS_EPARSE, "expected object");
    }
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    size_t n = json_object_size(v);
    if (n == 0) {
        return WS_OK;
    }
    ProtobufCMessage **arr = calloc(n, sizeof *arr);
    if (arr == NULL) {
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    /* Owned by m from here on: free_unpacked skips NULL slots. */
    *(ProtobufCMessage ***)((char *)m + f->offset) = arr;
    *(size_t *)((char *)m + f->quantifier_offset) = n;
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        size_t plen = d->plen;
        ws__json_push_key(d, key);
        ProtobufCMessage *e = malloc(ed->sizeof_message);
        if (e == NULL) {
            return ws__json_fail(d, WS_ENOMEM, "out of memory");
        }
        ws_proto_message_init(ed, e);
        arr[i++] = e;
        ws_err err =
            json_dec_map_key(d, &ed->fields[0], key, (char *)e + ed->fields[0].offset);
        /* Integer keys only in the form the encoder writes: "01" and "1"
         * would otherwise be two entries with key 1 that jansson's
         * duplicate-key check cannot see, and our own output (two "1"
         * members) would then be refused. */
        char canon[WS_JSON_INT_TEXT];
        if (err == WS_OK &&
            ws__json_int_text(ed->fields[0].type, (char *)e + ed->fields[0].offset, canon) &&
            strcmp(canon, key) != 0) {
            err = ws__json_fail(d, WS_EPARSE, "map key must be written \"%s\"", canon);
        }
        if (err == WS_OK && json_is_null(val) &&
            !ws__json_wkt_takes_null(&ed->fields[1])) {
            err = ws__json_fail(d, WS_EPARSE, "null is not allowed as a map value");
        }
        if (err == WS_OK) {
            err = ws__json_dec_value(d, &ed->fields[1], val,
                                     (char *)e + ed->fields[1].offset);
        }
        if (err != WS_OK) {
            return err;
        }
        ws__json_pop(d, plen);
    }
    return WS_OK;
}

static ws_err json_dec_repeated(ws__json_path *d, const ProtobufCFieldDescriptor *f,
                                const json_t *v, ProtobufCMessage *m)
{
    if (!json_is_array(v)) {
        return ws__json_fail(d, WS_EPARSE, "expected array");
    }
    size_t n = json_array_size(v);
    if (n == 0) {
        return WS_OK;
    }
    size_t sz = ws__json_type_size(f->type);
    char *arr = calloc(n, sz);
    if (arr == NULL) {
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    /* Owned by m from here on: free_unpacked skips zeroed slots. */
    *(char **)((char *)m + f->offset) = arr;
    *(size_t *)((char *)m + f->quantifier_offset) = n;
    for (size_t i = 0; i < n; i++) {
        size_t plen = d->plen;
        ws__json_push_index(d, i);
        const json_t *e = json_array_get(v, i);
        if (json_is_null(e) && !ws__json_wkt_takes_null(f)) {
            return ws__json_fail(d, WS_EPARSE, "null is not allowed in a repeated field");
        }
        ws_err err = ws__json_dec_value(d, f, e, arr + i * sz);
        if (err != WS_OK) {
            return err;
        }
        ws__json_pop(d, plen);
    }
    return WS_OK;
}

/* The field named key, by proto name or lowerCamelCase name. */
static const ProtobufCFieldDescriptor *
json_dec_field_find(const ProtobufCMessageDescriptor *desc, const char *key,
                    int *by_camel)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(desc, key);
    if (f != NULL) {
        *by_camel = 0;
        return f;
    }
    size_t keylen = strlen(key);
    for (unsigned i = 0; i < desc->n_fields; i++) {
        if (ws__json_camel_eq(desc->fields[i].name, key, keylen)) {
            *by_camel = 1;
            return &desc->fields[i];
        }
    }
    return NULL;
}

/* The name to quote for field f given earlier in the other spelling. */
static void json_dec_camel_name(const char *name, char *out, size_t cap)
{
    size_t o = 0;
    int upper_next = 0;
    for (const char *p = name; *p != '\0' && o + 1 < cap; p++) {
        if (*p == '_') {
            upper_next = 1;
            continue;
        }
        out[o++] = (char)(upper_next && *p >= 'a' && *p <= 'z' ? *p - 'a' + 'A' : *p);
        upper_next = 0;
    }
    out[o] = '\0';
}

static ws_err json_dec_field(ws__json_path *d, const ProtobufCFieldDescriptor *f,
                             const json_t *v, ProtobufCMessage *m)
{
    char *base = (char *)m;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        if (json_is_null(v)) {
            return WS_OK;
        }
        return ws__json_is_map(f) ? json_dec_map(d, f, v, m)
                                  : json_dec_repeated(d, f, v, m);
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
        if (*which != 0 && *which != f->id) {
            const ProtobufCFieldDescriptor *other =
                protobuf_c_message_descriptor_get_field(m->descriptor, *which);
            return ws__json_fail(d, WS_EPARSE, "oneof already set by \"%s\"",
                                 other != NULL ? other->name : "?");
        }
        if (json_is_null(v) && !ws__json_wkt_takes_null(f)) {
            return WS_OK;
        }
        /* Select the case only once the value is in place: free_unpacked
         * frees the selected member alone, and a member that failed to
         * decode has left nothing behind. */
        ws_err err = ws__json_dec_value(d, f, v, base + f->offset);
        if (err == WS_OK) {
            *which = f->id;
        }
        return err;
    }
    if (json_is_null(v) && !ws__json_wkt_takes_null(f)) {
        return WS_OK;
    }
    ws_err err = ws__json_dec_value(d, f, v, base + f->offset);
    if (err == WS_OK && f->label == PROTOBUF_C_LABEL_OPTIONAL &&
        f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING) {
        *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
    }
    return err;
}

ws_err ws__json_dec_message(ws__json_path *d, const ProtobufCMessageDescriptor *desc,
                            const json_t *obj, ProtobufCMessage **out)
{
    ws__json_wkt kind = ws__json_wkt_of(desc);
    if (kind != WS__JSON_WKT_NONE) {
        return ws__json_wkt_decode(d, desc, kind, obj, out);
    }
    if (!json_is_object(obj)) {
        return ws__json_fail(d, WS_EPARSE, "expected object");
    }
    ProtobufCMessage *m = malloc(desc->sizeof_message);
    if (m == NULL) {
        return ws__json_fail(d, WS_ENOMEM, "out of memory");
    }
    ws_proto_message_init(desc, m);
    /* How each field was named so far: 0 not seen, 1 proto name, 2 camel. */
    unsigned char seen_small[64];
    unsigned char *seen = seen_small;
    if (desc->n_fields > sizeof seen_small) {
        seen = calloc(desc->n_fields, 1);
        if (seen == NULL) {
            free(m);
            return ws__json_fail(d, WS_ENOMEM, "out of memory");
        }
    } else {
        memset(seen_small, 0, sizeof seen_small);
    }
    ws_err err = WS_OK;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        size_t plen = d->plen;
        ws__json_push_key(d, key);
        int by_camel = 0;
        const ProtobufCFieldDescriptor *f = json_dec_field_find(desc, key, &by_camel);
        if (f == NULL) {
            err = ws__json_fail(d, WS_EPARSE, "unknown field");
            break;
        }
        size_t idx = (size_t)(f - desc->fields);
        if (seen[idx] != 0) {
            char other[64];
            if (by_camel) {
                snprintf(other, sizeof other, "%s", f->name);
            } else {
                json_dec_camel_name(f->name, other, sizeof other);
            }
            err = ws__json_fail(d, WS_EPARSE, "duplicate field (also given as \"%s\")",
                                other);
            break;
        }
        seen[idx] = by_camel ? 2 : 1;
        err = json_dec_field(d, f, val, m);
        if (err != WS_OK) {
            break;
        }
        ws__json_pop(d, plen);
    }
    if (seen != seen_small) {
        free(seen);
    }
    if (err != WS_OK) {
        protobuf_c_message_free_unpacked(m, NULL);
        return err;
    }
    *out = m;
    return WS_OK;
}

/* Checks and parsing common to both entry points. */
static ws_err json_dec_load(const char *json, size_t len, const ws_json_limits *limits,
                            json_t **root, ws_json_error *err)
{
    size_t max_bytes = WS_JSON_DEFAULT_MAX_BYTES;
    int max_depth = WS_JSON_DEFAULT_MAX_DEPTH;
    if (limits != NULL && limits->max_bytes != 0) {
        max_bytes = limits->max_bytes;
    }
    if (limits != NULL && limits->max_depth > 0) {
        max_depth = limits->max_depth;
    }
    if (err != NULL) {
        err->text[0] = '\0';
    }
    if (len > max_bytes) {
        if (err != NULL) {
            snprintf(err->text, sizeof err->text,
                     "input of %zu bytes exceeds the limit of %zu", len, max_bytes);
        }
        return WS_ETOOBIG;
    }
    if (len == 0) {
        if (err != NULL) {
            snprintf(err->text, sizeof err->text, "empty input");
        }
        return WS_EPARSE;
    }
    ws_err rc = json_dec_prescan(json, len, max_depth, err);
    if (rc != WS_OK) {
        return rc;
    }
    json_error_t je;
    *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (*root == NULL) {
        return json_dec_parse_error(json, len, &je, err);
    }
    return WS_OK;
}

ws_err ws_json_decode(const ProtobufCMessageDescriptor *desc, const char *json,
                      size_t len, const ws_json_limits *limits, ProtobufCMessage **out,
                      ws_json_error *err)
{
    json_t *root;
    ws_err rc = json_dec_load(json, len, limits, &root, err);
    if (rc != WS_OK) {
        return rc;
    }
    ws__json_path d = {.err = err, .plen = 0};
    d.path[0] = '\0';
    ProtobufCMessage *m = NULL;
    rc = ws__json_dec_message(&d, desc, root, &m);
    json_decref(root);
    if (rc == WS_OK) {
        *out = m;
    }
    return rc;
}

ws_err ws_json_decode_array(const ProtobufCMessageDescriptor *desc, const char *json,
                            size_t len, const ws_json_limits *limits,
                            ProtobufCMessage ***out, size_t *n, ws_json_error *err)
{
    json_t *root;
    ws_err rc = json_dec_load(json, len, limits, &root, err);
    if (rc != WS_OK) {
        return rc;
    }
    ws__json_path d = {.err = err, .plen = 0};
    d.path[0] = '\0';
    if (!json_is_array(root)) {
        json_decref(root);
        return ws__json_fail(&d, WS_EPARSE, "expected array");
    }
    size_t count = json_array_size(root);
    ProtobufCMessage **arr = calloc(count > 0 ? count : 1, sizeof *arr);
    if (arr == NULL) {
        json_decref(root);
        return ws__json_fail(&d, WS_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < count && rc == WS_OK; i++) {
        ws__json_push_index(&d, i);
        rc = ws__json_dec_message(&d, desc, json_array_get(root, i), &arr[i]);
        ws__json_pop(&d, 0);
    }
    json_decref(root);
    if (rc != WS_OK) {
        for (size_t i = 0; i < count; i++) {
            protobuf_c_message_free_unpacked(arr[i], NULL);
        }
        free(arr);
        return rc;
    }
    *out = arr;
    *n = count;
    return WS_OK;
}
