/*
 * Matching requests against a generated route table; see http_route.h.
 * Templates are walked segment by segment against the path, with no
 * allocation: a table is a handful of bindings, and a linear walk of them
 * costs less than the JSON of any answer.
 */
#include "http_route.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fill-in state of a match while its template is walked. */
typedef struct http_route_fill {
    ws_http_route_match *m; /* NULL: only test whether the path matches */
    size_t used;            /* bytes of m->text in use */
} http_route_fill;

/* Copy n bytes of s into m's text as a NUL-terminated string. */
static const char *http_route_fill_copy(http_route_fill *f, const char *s, size_t n)
{
    if (f->used + n + 1 > sizeof(f->m->text)) {
        return NULL;
    }
    char *out = f->m->text + f->used;
    memcpy(out, s, n);
    out[n] = '\0';
    f->used += n + 1;
    return out;
}

/* One {field} segment: the value q..qe (non-empty) for the name between
 * the braces of p..pe. */
static bool http_route_fill_param(http_route_fill *f, const char *p, const char *pe,
                                  const char *q, const char *qe)
{
    if (qe == q || pe - p < 3 || pe[-1] != '}') {
        return false;
    }
    if (f->m == NULL) {
        return true;
    }
    ws_http_route_match *m = f->m;
    if (m->n_params == WS_HTTP_ROUTE_MAX_PARAMS) {
        return false;
    }
    const char *name = http_route_fill_copy(f, p + 1, (size_t)(pe - p - 2));
    const char *value =
        name != NULL ? http_route_fill_copy(f, q, (size_t)(qe - q)) : NULL;
    if (value == NULL) {
        return false;
    }
    m->param_names[m->n_params] = name;
    m->param_values[m->n_params] = value;
    m->n_params++;
    return true;
}

/* Does path match the template pat? Segment by segment: each starts with
 * '/', literal segments compare bytewise, {field} takes one non-empty
 * segment; both must end together. */
static bool http_route_try(const char *pat, const char *path, http_route_fill *f)
{
    const char *p = pat;
    const char *q = path;
    if (*p != '/' || *q != '/') {
        return false;
    }
    while (*p != '\0' && *q != '\0') {
        if (*p != '/' || *q != '/') {
            return false;
        }
        p++;
        q++;
        const char *pe = p + strcspn(p, "/");
        const char *qe = q + strcspn(q, "/");
        if (*p == '{') {
            if (!http_route_fill_param(f, p, pe, q, qe)) {
                return false;
            }
        } else if (pe - p != qe - q || memcmp(p, q, (size_t)(pe - p)) != 0) {
            return false;
        }
        p = pe;
        q = qe;
    }
    return *p == '\0' && *q == '\0';
}

static bool http_route_takes(const ws_http_route_binding *b, const char *verb)
{
    return strcmp(b->verb, verb) == 0 ||
           (strcmp(verb, "HEAD") == 0 && strcmp(b->verb, "GET") == 0);
}

/* Append verb to the ", " list in allow unless it is there. */
static void http_route_allow_add(char *allow, size_t allow_len, const char *verb)
{
    size_t n = strlen(verb);
    for (const char *p = allow; *p != '\0';) {
        size_t len = strcspn(p, ",");
        if (len == n && memcmp(p, verb, n) == 0) {
            return;
        }
        p += len;
        p += strspn(p, ", ");
    }
    size_t used = strlen(allow);
    snprintf(allow + used, allow_len - used, "%s%s", used > 0 ? ", " : "", verb);
}

ws_http_route_result ws_http_route_find(const ws_http_route_table *t, const char *verb,
                                        const char *path, ws_http_route_match *out,
                                        char *allow, size_t allow_len)
{
    bool path_seen = false;
    bool get = false;
    char list[96] = "";
    for (size_t i = 0; i < t->n_bindings; i++) {
        const ws_http_route_binding *b = &t->bindings[i];
        http_route_fill probe = {NULL, 0};
        if (!http_route_try(b->pattern, path, &probe)) {
            continue;
        }
        if (http_route_takes(b, verb)) {
            ws_http_route_match *m = out;
            m->table = t;
            m->binding = b;
            m->n_params = 0;
            http_route_fill fill = {m, 0};
            if (http_route_try(b->pattern, path, &fill)) {
                return WS_HTTP_ROUTE_FOUND;
            }
            continue; /* more parameters than a match holds: no route */
        }
        path_seen = true;
        get = get || strcmp(b->verb, "GET") == 0;
        http_route_allow_add(list, sizeof(list), b->verb);
    }
    if (!path_seen) {
        return WS_HTTP_ROUTE_NO_PATH;
    }
    if (get) {
        http_route_allow_add(list, sizeof(list), "HEAD");
    }
    if (allow != NULL && allow_len > 0) {
        snprintf(allow, allow_len, "%s", list);
    }
    return WS_HTTP_ROUTE_NO_METHOD;
}

int ws_http_route_dispatch(ws_http_req *req, const ws_http_route_table *t,
                           ws_http_route_match *out)
{
    char allow[96];
    switch (ws_http_route_find(t, ws_http_method(req), ws_http_path(req), out, allow,
                               sizeof(allow))) {
    case WS_HTTP_ROUTE_FOUND:
        return 0;
    case WS_HTTP_ROUTE_NO_METHOD:
        return ws_http_reply_method_not_allowed(req, allow);
    default:
        return -1;
    }
}

const char *ws_http_route_param(const ws_http_route_match *m, const char *name)
{
    for (size_t i = 0; i < m->n_params; i++) {
        if (strcmp(m->param_names[i], name) == 0) {
            return m->param_values[i];
        }
    }
    return NULL;
}

/* ---- binding into the request message ---------------------------------- */

/* Strict decimal: the whole of s, optional '-' only when is_signed, in
 * [lo, hi] (signed) or [0, uhi] (unsigned). */
static bool http_route_int(const char *s, bool is_signed, int64_t lo, int64_t hi,
                           uint64_t uhi, int64_t *sv, uint64_t *uv)
{
    if (s[0] == '\0' || s[0] == '+' || s[0] == ' ' || (s[0] == '-' && !is_signed)) {
        return false;
    }
    char *end = NULL;
    errno = 0;
    if (is_signed) {
        long long v = strtoll(s, &end, 10);
        if (errno != 0 || *end != '\0' || v < lo || v > hi) {
            return false;
        }
        *sv = v;
    } else {
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0' || v > uhi) {
            return false;
        }
        *uv = v;
    }
    return true;
}

/* Store value into field f of msg; false when it does not fit the type. */
static bool http_route_set(ProtobufCMessage *msg, const ProtobufCFieldDescriptor *f,
                           const char *value)
{
    void *p = (char *)msg + f->offset;
    int64_t sv = 0;
    uint64_t uv = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        char *s = strdup(value);
        if (s == NULL) {
            return false;
        }
        *(char **)p = s;
        return true;
    }
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (!http_route_int(value, true, INT32_MIN, INT32_MAX, 0, &sv, &uv)) {
            return false;
        }
        *(int32_t *)p = (int32_t)sv;
        return true;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (!http_route_int(value, true, INT64_MIN, INT64_MAX, 0, &sv, &uv)) {
            return false;
        }
        *(int64_t *)p = sv;
        return true;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (!http_route_int(value, false, 0, 0, UINT32_MAX, &sv, &uv)) {
            return false;
        }
        *(uint32_t *)p = (uint32_t)uv;
        return true;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (!http_route_int(value, false, 0, 0, UINT64_MAX, &sv, &uv)) {
            return false;
        }
        *(uint64_t *)p = uv;
        return true;
    case PROTOBUF_C_TYPE_BOOL:
        if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0) {
            return false;
        }
        *(protobuf_c_boolean *)p = value[0] == 't';
        return true;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumValue *ev =
            protobuf_c_enum_descriptor_get_value_by_name(f->descriptor, value);
        if (ev == NULL) {
            if (!http_route_int(value, true, INT32_MIN, INT32_MAX, 0, &sv, &uv)) {
                return false;
            }
            ev = protobuf_c_enum_descriptor_get_value(f->descriptor, (int)sv);
        }
        if (ev == NULL) {
            return false;
        }
        *(int *)p = ev->value;
        return true;
    }
    default:
        return false; /* the generator binds no other type */
    }
}

/* The type a value must have, for the error message. */
static const char *http_route_type_word(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL:
        return "true or false";
    case PROTOBUF_C_TYPE_ENUM:
        return "one of the enum's names";
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return "an unsigned integer in range";
    default:
        return "an integer in range";
    }
}

ws_err ws_http_route_request(const ws_http_route_match *m, ProtobufCMessage **out,
                             char *err, size_t err_len)
{
    const ProtobufCMessageDescriptor *d = m->table->methods[m->binding->method].input;
    static const uint8_t empty[1] = {0};
    ProtobufCMessage *msg = protobuf_c_message_unpack(d, NULL, 0, empty);
    if (msg == NULL) {
        return WS_ENOMEM;
    }
    for (size_t i = 0; i < m->n_params; i++) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(d, m->param_names[i]);
        if (f == NULL || f->label == PROTOBUF_C_LABEL_REPEATED) {
            snprintf(err, err_len, "%s: not a field of %s", m->param_names[i], d->name);
            protobuf_c_message_free_unpacked(msg, NULL);
            return WS_EPARSE;
        }
        if (!http_route_set(msg, f, m->param_values[i])) {
            bool nomem = f->type == PROTOBUF_C_TYPE_STRING;
            if (!nomem) {
                snprintf(err, err_len, "%s: expected %s", f->name,
                         http_route_type_word(f));
            }
            protobuf_c_message_free_unpacked(msg, NULL);
            return nomem ? WS_ENOMEM : WS_EPARSE;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) != 0) {
            *(uint32_t *)((char *)msg + f->quantifier_offset) = f->id;
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL &&
                   f->type != PROTOBUF_C_TYPE_STRING) {
            *(protobuf_c_boolean *)((char *)msg + f->quantifier_offset) = 1;
        }
    }
    *out = msg;
    return WS_OK;
}

int ws_http_route_unimplemented(ws_http_req *req, const ws_http_route_match *m)
{
    return ws_http_reply_error(req, 501, "UNIMPLEMENTED", NULL,
                               "%s.%s is not served here", m->table->service,
                               m->table->methods[m->binding->method].name);
}
