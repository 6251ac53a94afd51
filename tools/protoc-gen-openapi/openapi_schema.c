/*
 * JSON schemas of messages, enums and fields; see openapi_schema.h.
 */
#include "openapi_schema.h"

#include <string.h>

#include "openapi_text.h"
#include "options.h"
#include "webshop/v1/contract.pb-c.h"

/* contract.proto: (webshop.v1.list_limits) on messages, (webshop.v1.limits)
 * and (webshop.v1.required) on fields. */
#define OPENAPI_LIST_LIMITS_OPTION 50011
#define OPENAPI_LIMITS_OPTION      50012
#define OPENAPI_REQUIRED_OPTION    50014 /* contract.proto */

/* descriptor.proto: DescriptorProto.field = 2; EnumDescriptorProto.value = 2. */
enum { PATH_FIELD = 2, PATH_ENUM_VALUE = 2 };

#define FD(x) GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_##x

/* The JSON forms of the well-known types, as schema keys. */
static const struct {
    const char *name;
    const char *keys;
} openapi_wkt_keys[] = {
    {"Timestamp", "\"type\":\"string\",\"format\":\"date-time\""},
    {"Duration", "\"type\":\"string\",\"pattern\":\"^-?[0-9]+([.][0-9]{1,9})?s$\""},
    {"FieldMask", "\"type\":\"string\""},
    {"Empty", "\"type\":\"object\""},
    {"Struct", "\"type\":\"object\",\"additionalProperties\":true"},
    {"Value",
     "\"anyOf\":[{\"type\":\"string\"},{\"type\":\"number\"},{\"type\":\"boolean\"},"
     "{\"type\":\"object\"},{\"type\":\"array\",\"items\":{}}],\"nullable\":true"},
    {"ListValue", "\"type\":\"array\",\"items\":{}"},
    {"Any", "\"type\":\"object\",\"required\":[\"@type\"],\"properties\":{\"@type\":"
            "{\"type\":\"string\"}},\"additionalProperties\":true"},
    {"DoubleValue", "\"type\":\"number\",\"format\":\"double\",\"nullable\":true"},
    {"FloatValue", "\"type\":\"number\",\"format\":\"float\",\"nullable\":true"},
    {"Int64Value", "\"type\":\"string\",\"format\":\"int64\",\"nullable\":true"},
    {"UInt64Value", "\"type\":\"string\",\"format\":\"uint64\",\"nullable\":true"},
    {"Int32Value", "\"type\":\"integer\",\"format\":\"int32\",\"nullable\":true"},
    {"UInt32Value", "\"type\":\"integer\",\"format\":\"int64\",\"minimum\":0,"
                    "\"maximum\":4294967295,\"nullable\":true"},
    {"BoolValue", "\"type\":\"boolean\",\"nullable\":true"},
    {"StringValue", "\"type\":\"string\",\"nullable\":true"},
    {"BytesValue", "\"type\":\"string\",\"format\":\"byte\",\"nullable\":true"},
    {"NullValue", "\"type\":\"string\",\"nullable\":true,\"enum\":[null]"},
};

void openapi_schema_ref(ws_buf *out, const openapi_type *t)
{
    ws_buf_puts(out, "{\"$ref\":\"#/components/schemas/");
    ws_buf_puts(out, t->name);
    ws_buf_puts(out, "\"}");
}

/* True when one value of fd is written as a $ref (no sibling keys). */
static bool openapi_schema_is_ref(const openapi_types *ts, const field_proto *fd)
{
    if (fd->type_name == NULL || openapi_types_is_wkt(fd->type_name) ||
        openapi_types_map_entry(ts, fd) != NULL) {
        return false;
    }
    return openapi_types_find(ts, fd->type_name) != NULL;
}

/* The keys of a scalar's schema (no braces). */
static const char *openapi_schema_scalar_keys(const field_proto *fd)
{
    switch (fd->type) {
    case FD(DOUBLE):
        return "\"type\":\"number\",\"format\":\"double\"";
    case FD(FLOAT):
        return "\"type\":\"number\",\"format\":\"float\"";
    case FD(INT64):
    case FD(SINT64):
    case FD(SFIXED64):
        return "\"type\":\"string\",\"format\":\"int64\"";
    case FD(UINT64):
    case FD(FIXED64):
        return "\"type\":\"string\",\"format\":\"uint64\"";
    case FD(UINT32):
    case FD(FIXED32):
        return "\"type\":\"integer\",\"format\":\"int64\",\"minimum\":0,"
               "\"maximum\":4294967295";
    case FD(INT32):
    case FD(SINT32):
    case FD(SFIXED32):
        return "\"type\":\"integer\",\"format\":\"int32\"";
    case FD(BOOL):
        return "\"type\":\"boolean\"";
    case FD(STRING):
        return "\"type\":\"string\"";
    case FD(BYTES):
        return "\"type\":\"string\",\"format\":\"byte\"";
    default:
        return NULL;
    }
}

/* The keys of a non-$ref value schema of fd (no braces, never empty). */
static void openapi_schema_keys(ws_buf *out, const openapi_types *ts,
                                const field_proto *fd)
{
    const char *scalar = openapi_schema_scalar_keys(fd);
    if (scalar != NULL) {
        ws_buf_puts(out, scalar);
        return;
    }
    const openapi_type *entry = openapi_types_map_entry(ts, fd);
    if (entry != NULL) {
        ws_buf_puts(out, "\"type\":\"object\",\"additionalProperties\":");
        openapi_schema_value(out, ts, entry->msg->field[1]);
        return;
    }
    if (openapi_types_is_wkt(fd->type_name)) {
        const char *name = fd->type_name + strlen(".google.protobuf.");
        for (size_t i = 0; i < sizeof(openapi_wkt_keys) / sizeof(openapi_wkt_keys[0]);
             i++) {
            if (strcmp(name, openapi_wkt_keys[i].name) == 0) {
                ws_buf_puts(out, openapi_wkt_keys[i].keys);
                return;
            }
        }
    }
    ws_buf_puts(out, "\"type\":\"object\""); /* not reached for a known type */
}

void openapi_schema_value(ws_buf *out, const openapi_types *ts, const field_proto *fd)
{
    if (openapi_schema_is_ref(ts, fd)) {
        openapi_schema_ref(out, openapi_types_find(ts, fd->type_name));
        return;
    }
    ws_buf_putc(out, '{');
    openapi_schema_keys(out, ts, fd);
    ws_buf_putc(out, '}');
}

void openapi_schema_named(ws_buf *out, const openapi_types *ts, const char *full)
{
    field_proto fd = GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__INIT;
    fd.has_type = true;
    fd.type = FD(MESSAGE);
    fd.type_name = (char *)full;
    openapi_schema_value(out, ts, &fd);
}

const char *openapi_schema_field_comment(const openapi_type *owner, size_t index)
{
    if (owner->path_len == 0 || owner->path_len + 2 > OPENAPI_TYPE_PATH_MAX) {
        return NULL;
    }
    int path[OPENAPI_TYPE_PATH_MAX];
    memcpy(path, owner->path, owner->path_len * sizeof(int));
    path[owner->path_len] = PATH_FIELD;
    path[owner->path_len + 1] = (int)index;
    return openapi_text_comment(owner->file, path, owner->path_len + 2);
}

/* The Limits in extension `number` of opts, or NULL; free with
 * webshop__v1__limits__free_unpacked. */
static Webshop__V1__Limits *openapi_schema_limits_of(const void *opts, uint32_t number)
{
    options_bytes b;
    if (opts == NULL || !options_find_bytes(opts, number, &b)) {
        return NULL;
    }
    return webshop__v1__limits__unpack(NULL, b.len, b.data);
}

/* The bounds on fd: its own (webshop.v1.limits), else, for a list of
 * messages, the element's (webshop.v1.list_limits). NULL when none. */
static Webshop__V1__Limits *openapi_schema_limits(const openapi_types *ts,
                                                  const field_proto *fd)
{
    Webshop__V1__Limits *l = openapi_schema_limits_of(
        fd->options != NULL ? &fd->options->base : NULL, OPENAPI_LIMITS_OPTION);
    bool list =
        fd->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED;
    const openapi_type *u =
        fd->type_name != NULL ? openapi_types_find(ts, fd->type_name) : NULL;
    if (l == NULL && list && u != NULL && u->msg != NULL && u->msg->options != NULL) {
        l = openapi_schema_limits_of(&u->msg->options->base, OPENAPI_LIST_LIMITS_OPTION);
    }
    return l;
}

/* True when fd is a member of a oneof that is not a proto3 `optional`. */
static bool openapi_schema_in_oneof(const field_proto *fd)
{
    return fd->has_oneof_index && !(fd->has_proto3_optional && fd->proto3_optional);
}

bool openapi_schema_required(const openapi_types *ts, const field_proto *fd)
{
    uint64_t flag = 0;
    if (fd->options != NULL &&
        options_find_varint(&fd->options->base, OPENAPI_REQUIRED_OPTION, &flag) &&
        flag != 0) {
        return true;
    }
    if (openapi_schema_in_oneof(fd) || openapi_types_map_entry(ts, fd) != NULL) {
        return false;
    }
    Webshop__V1__Limits *l = openapi_schema_limits(ts, fd);
    if (l == NULL) {
        return false;
    }
    bool req;
    if (fd->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED) {
        req = l->has_min_items && l->min_items >= 1;
    } else {
        req = (l->has_min && l->min >= 1) || (l->has_max && l->max <= -1);
    }
    webshop__v1__limits__free_unpacked(l, NULL);
    return req;
}

/* ,"minItems"/"maxItems" (list) or ,"minimum"/"maximum" (a JSON number). */
static void openapi_schema_bounds(ws_buf *out, const openapi_types *ts,
                                  const field_proto *fd, bool list)
{
    Webshop__V1__Limits *l = openapi_schema_limits(ts, fd);
    if (l == NULL) {
        return;
    }
    const char *keys = openapi_schema_scalar_keys(fd);
    bool number = keys != NULL &&
                  (strstr(keys, "integer") != NULL || strstr(keys, "number") != NULL);
    if (list && l->has_min_items && l->min_items > 0) {
        ws_buf_printf(out, ",\"minItems\":%u", (unsigned)l->min_items);
    }
    if (list && l->has_max_items) {
        ws_buf_printf(out, ",\"maxItems\":%u", (unsigned)l->max_items);
    }
    if (!list && number && l->has_min) {
        ws_buf_printf(out, ",\"minimum\":%lld", (long long)l->min);
    }
    if (!list && number && l->has_max) {
        ws_buf_printf(out, ",\"maximum\":%lld", (long long)l->max);
    }
    webshop__v1__limits__free_unpacked(l, NULL);
}

/* The description of field index of owner: its comment, plus what a
 * reader of the schema alone would miss (oneof membership, map keys). */
static void openapi_schema_field_text(ws_buf *text, const openapi_types *ts,
                                      const openapi_type *owner, size_t index)
{
    const field_proto *fd = owner->msg->field[index];
    openapi_text_prose(text, openapi_schema_field_comment(owner, index));
    const openapi_type *entry = openapi_types_map_entry(ts, fd);
    if (entry != NULL && entry->msg->field[0]->type != FD(STRING)) {
        ws_buf_puts(text, text->len > 0 ? " " : "");
        ws_buf_puts(text, "(A map: each key is the decimal text of the number, as JSON "
                          "object keys are strings.)");
    }
    if (openapi_schema_in_oneof(fd) &&
        (size_t)fd->oneof_index < owner->msg->n_oneof_decl) {
        ws_buf_printf(text, "%sOne of oneof `%s`: at most one of",
                      text->len > 0 ? " " : "",
                      owner->msg->oneof_decl[fd->oneof_index]->name);
        const char *sep = " ";
        for (size_t i = 0; i < owner->msg->n_field; i++) {
            const field_proto *m = owner->msg->field[i];
            if (openapi_schema_in_oneof(m) && m->oneof_index == fd->oneof_index) {
                ws_buf_printf(text, "%s`%s`", sep, m->name);
                sep = ", ";
            }
        }
        ws_buf_puts(text, " is set.");
    }
}

void openapi_schema_field(ws_buf *out, const openapi_types *ts, const openapi_type *owner,
                          size_t index)
{
    const field_proto *fd = owner->msg->field[index];
    bool map = openapi_types_map_entry(ts, fd) != NULL;
    bool list =
        !map &&
        fd->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED;
    if (list) {
        ws_buf_puts(out, "{\"type\":\"array\",\"items\":");
        openapi_schema_value(out, ts, fd);
    } else if (openapi_schema_is_ref(ts, fd)) {
        /* A $ref may carry no siblings in OpenAPI 3.0: wrap it. */
        ws_buf_puts(out, "{\"allOf\":[");
        openapi_schema_value(out, ts, fd);
        ws_buf_putc(out, ']');
    } else {
        ws_buf_putc(out, '{');
        openapi_schema_keys(out, ts, fd);
    }
    if (!map) {
        openapi_schema_bounds(out, ts, fd, list);
    }
    ws_buf text;
    ws_buf_init(&text, 0);
    openapi_schema_field_text(&text, ts, owner, index);
    if (text.len > 0) {
        ws_buf_puts(out, ",\"description\":");
        openapi_text_json_n(out, text.data, text.len);
    }
    ws_buf_fini(&text);
    ws_buf_putc(out, '}');
}

/* One alternative per member of oneof d of m, and one for "none set":
 * exactly one of them holds for any JSON object. */
static void openapi_schema_oneof(ws_buf *out, const msg_proto *m, int d)
{
    ws_buf_puts(out, "{\"oneOf\":[");
    ws_buf none;
    ws_buf_init(&none, 0);
    for (size_t i = 0; i < m->n_field; i++) {
        const field_proto *fd = m->field[i];
        if (!openapi_schema_in_oneof(fd) || fd->oneof_index != d) {
            continue;
        }
        ws_buf_puts(out, "{\"title\":");
        openapi_text_json(out, fd->name);
        ws_buf_puts(out, ",\"required\":[");
        openapi_text_json(out, fd->name);
        ws_buf_puts(out, "]},");
        /* "none set": each member absent (present, it fails {"not":{}}). */
        ws_buf_puts(&none, none.len > 0 ? "," : "");
        openapi_text_json(&none, fd->name);
        ws_buf_puts(&none, ":{\"not\":{}}");
    }
    ws_buf_printf(out, "{\"title\":\"no %s\",\"properties\":{%s}}]}",
                  m->oneof_decl[d]->name, none.data != NULL ? none.data : "");
    ws_buf_fini(&none);
}

/* ,"allOf":[{"oneOf":...},...] for the real oneofs of m (none: nothing). */
static void openapi_schema_oneofs(ws_buf *out, const msg_proto *m)
{
    bool first = true;
    for (size_t d = 0; d < m->n_oneof_decl; d++) {
        bool real = false;
        for (size_t i = 0; i < m->n_field && !real; i++) {
            real = openapi_schema_in_oneof(m->field[i]) &&
                   (size_t)m->field[i]->oneof_index == d;
        }
        if (!real) {
            continue;
        }
        ws_buf_puts(out, first ? ",\"allOf\":[" : ",");
        first = false;
        openapi_schema_oneof(out, m, (int)d);
    }
    if (!first) {
        ws_buf_putc(out, ']');
    }
}

static void openapi_schema_message(ws_buf *out, const openapi_types *ts,
                                   const openapi_type *t)
{
    ws_buf_puts(out, "{\"type\":\"object\",\"properties\":{");
    for (size_t i = 0; i < t->msg->n_field; i++) {
        ws_buf_puts(out, i > 0 ? "," : "");
        openapi_text_json(out, t->msg->field[i]->name);
        ws_buf_putc(out, ':');
        openapi_schema_field(out, ts, t, i);
    }
    ws_buf_putc(out, '}');
    bool first = true;
    for (size_t i = 0; i < t->msg->n_field; i++) {
        if (openapi_schema_required(ts, t->msg->field[i])) {
            ws_buf_puts(out, first ? ",\"required\":[" : ",");
            first = false;
            openapi_text_json(out, t->msg->field[i]->name);
        }
    }
    if (!first) {
        ws_buf_putc(out, ']');
    }
    openapi_schema_oneofs(out, t->msg);
}

/* The enum's names, and its comment with each value's comment after it. */
static void openapi_schema_enum(ws_buf *out, const openapi_type *t, ws_buf *text)
{
    ws_buf_puts(out, "{\"type\":\"string\",\"enum\":[");
    for (size_t i = 0; i < t->en->n_value; i++) {
        ws_buf_puts(out, i > 0 ? "," : "");
        openapi_text_json(out, t->en->value[i]->name);
        if (t->path_len == 0 || t->path_len + 2 > OPENAPI_TYPE_PATH_MAX) {
            continue;
        }
        int path[OPENAPI_TYPE_PATH_MAX];
        memcpy(path, t->path, t->path_len * sizeof(int));
        path[t->path_len] = PATH_ENUM_VALUE;
        path[t->path_len + 1] = (int)i;
        const char *c = openapi_text_comment(t->file, path, t->path_len + 2);
        if (c != NULL) {
            ws_buf_printf(text, "%s- `%s`: ", text->len > 0 ? "\n" : "",
                          t->en->value[i]->name);
            openapi_text_prose(text, c);
        }
    }
    ws_buf_putc(out, ']');
}

void openapi_schema_type(ws_buf *out, const openapi_types *ts, const openapi_type *t)
{
    openapi_text_json(out, t->name);
    ws_buf_putc(out, ':');
    ws_buf text;
    ws_buf_init(&text, 0);
    openapi_text_prose(&text, openapi_text_comment(t->file, t->path, t->path_len));
    if (t->en != NULL) {
        ws_buf values;
        ws_buf_init(&values, 0);
        openapi_schema_enum(out, t, &values);
        if (values.len > 0) {
            ws_buf_puts(&text, text.len > 0 ? "\n\n" : "");
            ws_buf_append(&text, values.data, values.len);
        }
        ws_buf_fini(&values);
    } else {
        openapi_schema_message(out, ts, t);
    }
    if (text.len > 0) {
        ws_buf_puts(out, ",\"description\":");
        openapi_text_json_n(out, text.data, text.len);
    }
    ws_buf_fini(&text);
    ws_buf_putc(out, '}');
}
