/*
 * Helpers shared by the JSON decoder and encoder (see json_int.h): how a
 * field's JSON name is derived, what counts as valid UTF-8, how a map
 * field is recognised in a protobuf-c descriptor, and the JSON path that
 * every error names.
 */
#include "json_int.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int ws__json_camel_eq(const char *proto_name, const char *key, size_t keylen)
{
    size_t k = 0;
    int upper_next = 0;
    for (const char *p = proto_name; *p != '\0'; p++) {
        if (*p == '_') {
            upper_next = 1;
            continue;
        }
        char c = *p;
        if (upper_next && c >= 'a' && c <= 'z') {
            c = (char)(c - 'a' + 'A');
        }
        upper_next = 0;
        if (k >= keylen || key[k] != c) {
            return 0;
        }
        k++;
    }
    return k == keylen;
}

int ws__json_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        uint32_t min;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= need) {
            return 0;
        }
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return 0;
        }
        i += need + 1;
    }
    return 1;
}

int ws__json_is_map(const ProtobufCFieldDescriptor *field)
{
    if (field->label != PROTOBUF_C_LABEL_REPEATED ||
        field->type != PROTOBUF_C_TYPE_MESSAGE) {
        return 0;
    }
    const ProtobufCMessageDescriptor *entry = field->descriptor;
    if (entry->n_fields != 2 || entry->fields[0].id != 1 || entry->fields[1].id != 2 ||
        strcmp(entry->fields[0].name, "key") != 0 ||
        strcmp(entry->fields[1].name, "value") != 0) {
        return 0;
    }
    /* protoc names the entry after the field: "stock_by_id" -> "StockByIdEntry". */
    const char *name = entry->short_name;
    size_t k = 0;
    int upper_next = 1;
    for (const char *p = field->name; *p != '\0'; p++) {
        if (*p == '_') {
            upper_next = 1;
            continue;
        }
        char c = *p;
        if (upper_next && c >= 'a' && c <= 'z') {
            c = (char)(c - 'a' + 'A');
        }
        upper_next = 0;
        if (name[k] != c) {
            return 0;
        }
        k++;
    }
    if (strcmp(name + k, "Entry") != 0) {
        return 0;
    }
    switch (entry->fields[0].type) {
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
    case PROTOBUF_C_TYPE_BYTES:
    case PROTOBUF_C_TYPE_ENUM:
    case PROTOBUF_C_TYPE_MESSAGE:
        return 0;
    default:
        return 1;
    }
}

size_t ws__json_type_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

int ws__json_int_text(ProtobufCType type, const void *p, char *buf)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        snprintf(buf, WS_JSON_INT_TEXT, "%" PRId32, *(const int32_t *)p);
        return 1;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        snprintf(buf, WS_JSON_INT_TEXT, "%" PRIu32, *(const uint32_t *)p);
        return 1;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(buf, WS_JSON_INT_TEXT, "%" PRId64, *(const int64_t *)p);
        return 1;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(buf, WS_JSON_INT_TEXT, "%" PRIu64, *(const uint64_t *)p);
        return 1;
    default:
        return 0;
    }
}

ws_err ws__json_fail(ws__json_path *d, ws_err code, const char *fmt, ...)
{
    if (d->err == NULL) {
        return code;
    }
    char what[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    /* Keep the whole complaint; shorten a long path from its start. */
    char *o = d->err->text;
    size_t cap = sizeof d->err->text;
    size_t wlen = strlen(what);
    if (d->plen > 0) {
        size_t room = cap - 1 - wlen - 2;
        const char *path = d->path;
        size_t plen = d->plen;
        if (plen > room) {
            memcpy(o, "...", 3);
            o += 3;
            path += plen - (room - 3);
            plen = room - 3;
        }
        memcpy(o, path, plen);
        o += plen;
        memcpy(o, ": ", 2);
        o += 2;
    }
    memcpy(o, what, wlen + 1);
    return code;
}

/* Copy outside text into an error message: printable ASCII only, bounded. */
void ws__json_sanitize(char *dst, size_t cap, const char *src, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (o + 4 >= cap) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o] = '\0';
}

void ws__json_push_key(ws__json_path *d, const char *key)
{
    char safe[48];
    ws__json_sanitize(safe, sizeof safe, key, strlen(key));
    int n = snprintf(d->path + d->plen, sizeof d->path - d->plen, "%s%s",
                     d->plen > 0 ? "." : "", safe);
    if (n > 0) {
        d->plen += (size_t)n;
    }
    if (d->plen >= sizeof d->path) {
        d->plen = sizeof d->path - 1;
    }
}

void ws__json_push_index(ws__json_path *d, size_t i)
{
    int n = snprintf(d->path + d->plen, sizeof d->path - d->plen, "[%zu]", i);
    if (n > 0) {
        d->plen += (size_t)n;
    }
    if (d->plen >= sizeof d->path) {
        d->plen = sizeof d->path - 1;
    }
}

void ws__json_pop(ws__json_path *d, size_t plen)
{
    d->plen = plen;
    d->path[plen] = '\0';
}
