/*
 * The encoding half of the proto3 JSON mapping: walks a protobuf-c message
 * by its descriptor and appends compact JSON straight into a ws_buf. 64-bit
 * integers are written as strings, floats in their shortest round-trip form
 * (or "NaN", "Infinity", "-Infinity"), bytes as standard padded base64,
 * enums by name, maps as objects, and fields holding their default value
 * are left out unless WS_JSON_DEFAULTS asks for them. A failed encode leaves
 * the buffer as it found it.
 */
#include "json.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_int.h"
#include "json_wkt.h"
#include "proto_dyn.h"

/* A failure no inner step explained, explained by its code. */
static ws_err json_enc_note(ws__json_enc *e, ws_err err)
{
    if (err == WS_OK || e->at.err == NULL || e->at.err->text[0] != '\0') {
        return err;
    }
    switch (err) {
    case WS_ETOOBIG:
        return ws__json_fail(&e->at, err, "output past the buffer's limit");
    case WS_ENOMEM:
        return ws__json_fail(&e->at, err, "out of memory");
    case WS_EINVAL: /* every other cause says so where it happens */
        return ws__json_fail(&e->at, err, "invalid UTF-8");
    default:
        return ws__json_fail(&e->at, err, "%s", ws_strerror(err));
    }
}

ws_err ws__json_enc_string(ws_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (!ws__json_utf8_valid(s, n)) {
        return WS_EINVAL;
    }
    ws_err err = ws_buf_putc(b, '"');
    size_t run = 0; /* start of the pending run of bytes needing no escape */
    for (size_t i = 0; i < n && err == WS_OK; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t esc_len = 0;
        size_t skip = 1;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            esc_len = 2;
        } else if (c < 0x20 || c == 0x7f) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            esc_len = 6;
        } else if (c == 0xe2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
                   ((unsigned char)s[i + 2] == 0xa8 || (unsigned char)s[i + 2] == 0xa9)) {
            /* U+2028 and U+2029 are valid JSON but end a line in JavaScript. */
            memcpy(esc, (unsigned char)s[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
            esc_len = 6;
            skip = 3;
        }
        if (esc_len == 0) {
            continue;
        }
        err = ws_buf_append(b, s + run, i - run);
        if (err == WS_OK) {
            err = ws_buf_append(b, esc, esc_len);
        }
        i += skip - 1;
        run = i + 1;
    }
    if (err == WS_OK) {
        err = ws_buf_append(b, s + run, n - run);
    }
    if (err == WS_OK) {
        err = ws_buf_putc(b, '"');
    }
    return err;
}

static ws_err json_enc_base64(ws_buf *b, const uint8_t *p, size_t n)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (n > (SIZE_MAX - 3) / 4 * 3) {
        return WS_ETOOBIG;
    }
    ws_err err = ws_buf_reserve(b, (n + 2) / 3 * 4 + 2);
    if (err != WS_OK) {
        return err;
    }
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return WS_OK;
}

/* Shortest decimal text that reads back as the same float or double. */
ws_err ws__json_enc_real(ws_buf *b, double v, int is_float)
{
    if (isnan(v)) {
        return ws_buf_puts(b, "\"NaN\"");
    }
    if (isinf(v)) {
        return ws_buf_puts(b, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    }
    if (v == 0) {
        /* "-0" would read back as the integer 0 in many parsers. */
        return ws_buf_puts(b, signbit(v) ? "-0.0" : "0");
    }
    char text[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, v);
        if (is_float ? strtof(text, NULL) == (float)v : strtod(text, NULL) == v) {
            break;
        }
    }
    /* The shortest text of a float at (or next to) FLT_MAX, 3.4028235e+38,
     * reads back as that float, but as a double it is past FLT_MAX, and
     * parsers that range-check the double before narrowing (Python's
     * json_format, protobuf's own C++ and Java) refuse it. For such a float
     * write the double's shortest text instead (3.4028234663852886e+38):
     * every parser reads it as the same float and none finds it too large.
     * Every other float keeps its shortest form. */
    if (is_float && fabs(strtod(text, NULL)) > FLT_MAX) {
        for (int prec = 9; prec <= 17; prec++) {
            snprintf(text, sizeof text, "%.*g", prec, v);
            if (strtod(text, NULL) == v) {
                break;
            }
        }
    }
    return ws_buf_puts(b, text);
}

static ws_err json_enc_enum(ws_buf *b, const ProtobufCEnumDescriptor *ed, int v,
                            ws__json_enc *e)
{
    if (ws__json_wkt_is_null_enum(ed)) {
        return ws_buf_puts(b, "null"); /* google.protobuf.NullValue, any value */
    }
    if ((e->flags & WS_JSON_ENUM_INTS) == 0) {
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, v);
        if (ev != NULL) {
            /* Enum value names are identifiers; no escaping needed. */
            return ws_buf_printf(b, "\"%s\"", ev->name);
        }
    }
    return ws_buf_printf(b, "%d", v);
}

/* One value of the field's type at p. */
ws_err ws__json_enc_value(ws_buf *b, const ProtobufCFieldDescriptor *f, const void *p,
                          ws__json_enc *e, int depth)
{
    char num[WS_JSON_INT_TEXT];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        ws__json_int_text(f->type, p, num);
        return ws_buf_puts(b, num);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        /* 64-bit integers are JSON strings (proto3 mapping). */
        ws__json_int_text(f->type, p, num);
        return ws_buf_printf(b, "\"%s\"", num);
    case PROTOBUF_C_TYPE_FLOAT:
        return ws__json_enc_real(b, *(const float *)p, 1);
    case PROTOBUF_C_TYPE_DOUBLE:
        return ws__json_enc_real(b, *(const double *)p, 0);
    case PROTOBUF_C_TYPE_BOOL:
        return ws_buf_puts(b, *(const protobuf_c_boolean *)p ? "true" : "false");
    case PROTOBUF_C_TYPE_ENUM:
        return json_enc_enum(b, f->descriptor, *(const int *)p, e);
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL ? ws_buf_puts(b, "\"\"") : ws__json_enc_string(b, s, strlen(s));
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = p;
        return json_enc_base64(b, bd->data, bd->len);
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(ProtobufCMessage *const *)p;
        const ProtobufCMessageDescriptor *md = f->descriptor;
        if (sub == NULL && ws__json_wkt_of(md) != WS__JSON_WKT_NONE) {
            /* A map value left out on the wire is the type's default, and a
             * well-known type writes that in its own form (a Value as null). */
            ProtobufCMessage *dflt = malloc(md->sizeof_message);
            if (dflt == NULL) {
                return WS_ENOMEM;
            }
            ws_proto_message_init(md, dflt);
            ws_err err = ws__json_enc_message(b, dflt, e, depth + 1);
            free(dflt); /* a default message owns nothing */
            return err;
        }
        if (sub == NULL) {
            return ws_buf_puts(b, "{}");
        }
        return ws__json_enc_message(b, sub, e, depth + 1);
    }
    }
    return WS_EINVAL;
}

/* A map key: always a JSON string. */
static ws_err json_enc_map_key(ws_buf *b, ws__json_enc *e,
                               const ProtobufCFieldDescriptor *kf, const void *p)
{
    switch (kf->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL ? ws_buf_puts(b, "\"\"") : ws__json_enc_string(b, s, strlen(s));
    }
    case PROTOBUF_C_TYPE_BOOL:
        return ws_buf_puts(b, *(const protobuf_c_boolean *)p ? "\"true\"" : "\"false\"");
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return ws__json_enc_value(b, kf, p, e, 0); /* already quoted */
    default: {
        ws_err err = ws_buf_putc(b, '"');
        if (err == WS_OK) {
            err = ws__json_enc_value(b, kf, p, e, 0);
        }
        return err == WS_OK ? ws_buf_putc(b, '"') : err;
    }
    }
}

static ws_err json_enc_map(ws_buf *b, const ProtobufCFieldDescriptor *f, const void *arr,
                           size_t n, ws__json_enc *e, int depth)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0];
    const ProtobufCFieldDescriptor *vf = &ed->fields[1];
    ws_err err = ws_buf_putc(b, '{');
    for (size_t i = 0; i < n && err == WS_OK; i++) {
        const char *entry = ((const char *const *)arr)[i];
        if (entry == NULL) {
            return ws__json_fail(&e->at, WS_EINVAL, "NULL map entry");
        }
        if (i > 0) {
            err = ws_buf_putc(b, ',');
        }
        if (err == WS_OK) {
            err = json_enc_map_key(b, e, kf, entry + kf->offset);
        }
        if (err == WS_OK) {
            err = ws_buf_putc(b, ':');
        }
        if (err == WS_OK) {
            size_t plen = e->at.plen;
            char key[WS_JSON_INT_TEXT];
            const void *kp = entry + kf->offset;
            const char *ks =
                kf->type == PROTOBUF_C_TYPE_STRING ? *(char *const *)kp : key;
            if (kf->type == PROTOBUF_C_TYPE_BOOL) {
                ks = *(const protobuf_c_boolean *)kp ? "true" : "false";
            } else if (kf->type != PROTOBUF_C_TYPE_STRING &&
                       !ws__json_int_text(kf->type, kp, key)) {
                key[0] = '\0';
            }
            ws__json_push_key(&e->at, ks != NULL ? ks : "");
            err =
                json_enc_note(e, ws__json_enc_value(b, vf, entry + vf->offset, e, depth));
            if (err == WS_OK) {
                ws__json_pop(&e->at, plen);
            }
        }
    }
    return err == WS_OK ? ws_buf_putc(b, '}') : err;
}

/* The n elements of repeated field f at arr, as a JSON array. */
static ws_err json_enc_list(ws_buf *b, const ProtobufCFieldDescriptor *f, const char *arr,
                            size_t n, ws__json_enc *e, int depth)
{
    size_t sz = ws__json_type_size(f->type);
    ws_err err = ws_buf_putc(b, '[');
    for (size_t k = 0; k < n && err == WS_OK; k++) {
        if (k > 0) {
            err = ws_buf_putc(b, ',');
        }
        size_t plen = e->at.plen;
        ws__json_push_index(&e->at, k);
        if (f->type == PROTOBUF_C_TYPE_MESSAGE &&
            ((ProtobufCMessage *const *)arr)[k] == NULL) {
            err = ws__json_fail(&e->at, WS_EINVAL, "NULL element");
        }
        if (err == WS_OK) {
            err = json_enc_note(e, ws__json_enc_value(b, f, arr + k * sz, e, depth));
        }
        if (err == WS_OK) {
            ws__json_pop(&e->at, plen);
        }
    }
    return err == WS_OK ? ws_buf_putc(b, ']') : err;
}

/* Does a field hold its default value (left out of the JSON)? */
static int json_enc_is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return *(const uint32_t *)p == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)p == 0;
    /* -0.0 is not the default: protobuf's C++, Java, Go and Python compare
     * the bits and write it, and so do we, so a -0.0 survives JSON to and
     * from them. (protobuf-c's packer compares by value and drops it from
     * the binary form; that loss is its own, and documented in the README.) */
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p == 0 && !signbit(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p == 0 && !signbit(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return !*(const protobuf_c_boolean *)p;
    case PROTOBUF_C_TYPE_ENUM:
        return *(const int *)p == 0;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p == NULL;
    }
    return 1;
}

/* Whether a singular field is written: 1 yes, 0 no. */
static int json_enc_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                            ws__json_enc *e)
{
    const char *base = (const char *)m;
    const void *p = base + f->offset;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        if (*(const uint32_t *)(base + f->quantifier_offset) != f->id) {
            return 0;
        }
        return f->type != PROTOBUF_C_TYPE_MESSAGE ||
               *(ProtobufCMessage *const *)p != NULL;
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        const void *sub = *(ProtobufCMessage *const *)p;
        return sub != NULL && sub != f->default_value;
    }
    switch (f->label) {
    case PROTOBUF_C_LABEL_REQUIRED:
        return 1;
    case PROTOBUF_C_LABEL_OPTIONAL:
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            const char *s = *(char *const *)p;
            return s != NULL && s != f->default_value;
        }
        return *(const protobuf_c_boolean *)(base + f->quantifier_offset) != 0;
    default:
        return (e->flags & WS_JSON_DEFAULTS) != 0 || !json_enc_is_default(f, p);
    }
}

static ws_err json_enc_key(ws_buf *b, const char *name, ws__json_enc *e)
{
    ws_err err = ws_buf_reserve(b, strlen(name) + 3);
    if (err != WS_OK) {
        return err;
    }
    char *o = b->data + b->len;
    *o++ = '"';
    int upper_next = 0;
    for (const char *p = name; *p != '\0'; p++) {
        char c = *p;
        if ((e->flags & WS_JSON_CAMEL) && c == '_') {
            upper_next = 1;
            continue;
        }
        if (upper_next && c >= 'a' && c <= 'z') {
            c = (char)(c - 'a' + 'A');
        }
        upper_next = 0;
        *o++ = c;
    }
    *o++ = '"';
    *o++ = ':';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
    return WS_OK;
}

ws_err ws__json_enc_message(ws_buf *b, const ProtobufCMessage *m, ws__json_enc *e,
                            int depth)
{
    if (depth > WS_JSON_ENC_MAX_DEPTH) {
        return ws__json_fail(&e->at, WS_EINVAL, "nesting deeper than %d",
                             WS_JSON_ENC_MAX_DEPTH);
    }
    ws__json_wkt kind = ws__json_wkt_of(m->descriptor);
    if (kind != WS__JSON_WKT_NONE) {
        return ws__json_wkt_encode(b, m, kind, e, depth);
    }
    int first = 1;
    ws_err err = ws_buf_putc(b, '{');
    if (err == WS_OK) {
        err = ws__json_enc_members(b, m, e, depth, &first);
    }
    return err == WS_OK ? ws_buf_putc(b, '}') : err;
}

ws_err ws__json_enc_members(ws_buf *b, const ProtobufCMessage *m, ws__json_enc *e,
                            int depth, int *firstp)
{
    const ProtobufCMessageDescriptor *desc = m->descriptor;
    const char *base = (const char *)m;
    int first = *firstp;
    ws_err err = WS_OK;
    for (unsigned i = 0; i < desc->n_fields && err == WS_OK; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            if (n == 0 && (e->flags & WS_JSON_DEFAULTS) == 0) {
                continue;
            }
            const char *arr = *(char *const *)(base + f->offset);
            if (n > 0 && arr == NULL) {
                ws__json_push_key(&e->at, f->name);
                return ws__json_fail(&e->at, WS_EINVAL, "NULL array of %zu", n);
            }
            err = first ? WS_OK : ws_buf_putc(b, ',');
            if (err == WS_OK) {
                err = json_enc_key(b, f->name, e);
            }
            size_t plen = e->at.plen;
            ws__json_push_key(&e->at, f->name);
            if (err == WS_OK) {
                err = ws__json_is_map(f) ? json_enc_map(b, f, arr, n, e, depth)
                                         : json_enc_list(b, f, arr, n, e, depth);
            }
            err = json_enc_note(e, err);
            if (err == WS_OK) {
                ws__json_pop(&e->at, plen);
            }
            first = 0;
            continue;
        }
        if (!json_enc_present(m, f, e)) {
            continue;
        }
        err = first ? WS_OK : ws_buf_putc(b, ',');
        if (err == WS_OK) {
            err = json_enc_key(b, f->name, e);
        }
        size_t plen = e->at.plen;
        ws__json_push_key(&e->at, f->name);
        if (err == WS_OK) {
            err = json_enc_note(e, ws__json_enc_value(b, f, base + f->offset, e, depth));
        }
        if (err == WS_OK) {
            ws__json_pop(&e->at, plen);
        }
        first = 0;
    }
    *firstp = first;
    return err;
}

ws_err ws_json_encode_err(const ProtobufCMessage *msg, unsigned flags, ws_buf *out,
                          ws_json_error *err)
{
    if (err != NULL) {
        err->text[0] = '\0';
    }
    ws__json_enc e = {.at = {.err = err, .plen = 0}, .flags = flags};
    e.at.path[0] = '\0';
    if (msg == NULL || out == NULL || msg->descriptor == NULL ||
        msg->descriptor->magic != PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC) {
        return ws__json_fail(&e.at, WS_EINVAL, "not a protobuf-c message");
    }
    size_t start = out->len;
    ws_err rc = ws__json_enc_message(out, msg, &e, 0);
    if (rc != WS_OK) {
        out->len = start;
        if (out->data != NULL) {
            out->data[start] = '\0';
        }
        if (err != NULL && err->text[0] == '\0') {
            json_enc_note(&e, rc);
        }
    }
    return rc;
}

ws_err ws_json_encode(const ProtobufCMessage *msg, unsigned flags, ws_buf *out)
{
    return ws_json_encode_err(msg, flags, out, NULL);
}
