/*
 * The facts model of a .proto file (see facts.h): walks every message,
 * field and enum, reads our custom options (options.h), computes every C
 * name once and refuses what the header could not express.
 */
#include "facts.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"
#include "options.h"

typedef Google__Protobuf__DescriptorProto facts_msg_proto;
typedef Google__Protobuf__EnumDescriptorProto facts_enum_proto;
typedef Google__Protobuf__FieldDescriptorProto facts_field_proto;

/* Limits message field numbers (contract.proto). */
#define FACTS_LIMITS_MIN       1
#define FACTS_LIMITS_MAX       2
#define FACTS_LIMITS_MIN_ITEMS 3
#define FACTS_LIMITS_MAX_ITEMS 4

typedef struct facts_ctx {
    gen_facts *f;
    char *(*lower_of)(const char *, void *);
    void *arg;
    char *err;
    size_t err_len;
    int rc; /* 0, -1 (err set) or -2 (out of memory) */
} facts_ctx;

static void facts_fail(facts_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void facts_fail(facts_ctx *c, const char *fmt, ...)
{
    va_list ap;

    if (c->rc != 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(c->err, c->err_len, fmt, ap);
    va_end(ap);
    c->rc = -1;
}

static char *facts_take(facts_ctx *c, strbuf *sb)
{
    char *s = strbuf_take(sb);

    if (s == NULL && c->rc == 0) {
        c->rc = -2;
    }
    return s;
}

/* Grow *items (n elements of size) by one zeroed element; NULL on ENOMEM. */
static void *facts_push(facts_ctx *c, void **items, size_t *n, size_t size)
{
    char *grown = realloc(*items, (*n + 1) * size);

    if (grown == NULL) {
        c->rc = -2;
        return NULL;
    }
    memset(grown + *n * size, 0, size);
    *items = grown;
    return grown + (*n)++ * size;
}

/* "WEBSHOP_V1_" + snake(scope pieces) upper-cased: scope is the C-name
 * part so far ("ORDER_ITEM"), name the next piece (CamelCase). */
static char *facts_upper_name(facts_ctx *c, const char *scope, const char *name)
{
    strbuf snake = STRBUF_INIT;
    strbuf sb = STRBUF_INIT;

    names_snake(&snake, name);
    strbuf_printf(&sb, "%s%s", scope, scope[0] != '\0' ? "_" : "");
    names_upper(&sb, strbuf_str(&snake));
    strbuf_fini(&snake);
    return facts_take(c, &sb);
}

static bool facts_limits_read(options_bytes m, facts_limit *l)
{
    uint64_t v;
    uint32_t lo = l->list ? FACTS_LIMITS_MIN_ITEMS : FACTS_LIMITS_MIN;
    uint32_t hi = l->list ? FACTS_LIMITS_MAX_ITEMS : FACTS_LIMITS_MAX;

    if (options_msg_varint(m, lo, &v)) {
        l->min = l->list ? (int64_t)(uint32_t)v : (int64_t)v;
        l->has_min = true;
    }
    if (options_msg_varint(m, hi, &v)) {
        l->max = l->list ? (int64_t)(uint32_t)v : (int64_t)v;
        l->has_max = true;
    }
    return l->has_min || l->has_max;
}

static bool facts_field_is_number(const facts_field_proto *fd)
{
    switch (fd->type) {
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT32:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT64:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT32:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT64:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT64:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED32:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED64:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED32:
    case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64:
        return true;
    default:
        return false;
    }
}

/* One bound, read from the Limits message m (the option's payload). */
static void facts_limit_add(facts_ctx *c, options_bytes m, bool list, char *prefix,
                            const char *what)
{
    facts_limit l = {.prefix = prefix, .list = list};

    if (prefix == NULL) {
        return;
    }
    if (!facts_limits_read(m, &l)) {
        free(prefix);
        facts_fail(c, "%s: a limits option without %s", what,
                   list ? "min_items or max_items" : "min or max");
        return;
    }
    if (l.has_min && l.has_max && l.min > l.max) {
        free(prefix);
        facts_fail(c, "%s: limits min %lld is above max %lld", what, (long long)l.min,
                   (long long)l.max);
        return;
    }
    l.what = strdup(what);
    facts_limit *slot = facts_push(c, (void **)&c->f->limits, &c->f->n_limits, sizeof(l));
    if (slot == NULL || l.what == NULL) {
        free(prefix);
        free(l.what);
        c->rc = -2;
        return;
    }
    *slot = l;
}

static void facts_fields(facts_ctx *c, const facts_msg_proto *m, const char *scope,
                         const char *full)
{
    for (size_t i = 0; i < m->n_field && c->rc == 0; i++) {
        const facts_field_proto *fd = m->field[i];
        options_bytes lim;
        strbuf w = STRBUF_INIT;

        if (fd->options == NULL ||
            !options_find_bytes(&fd->options->base, FACTS_OPT_LIMITS, &lim)) {
            continue;
        }
        strbuf_printf(&w, "%s.%s", full, fd->name);
        const char *what = strbuf_str(&w);
        bool list = fd->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED;
        if (!list && !facts_field_is_number(fd)) {
            facts_fail(c, "%s: (webshop.v1.limits) applies to number fields and lists only",
                       what);
            strbuf_fini(&w);
            return;
        }
        strbuf sb = STRBUF_INIT;
        strbuf_printf(&sb, "%s_", scope);
        names_upper(&sb, fd->name);
        facts_limit_add(c, lim, list, facts_take(c, &sb), what);
        strbuf_fini(&w);
    }
}

/* A topic must be a plain MQTT topic name that fits in a C string literal. */
static bool facts_topic_ok(options_bytes t)
{
    if (t.len == 0 || t.len > 256) {
        return false;
    }
    for (size_t i = 0; i < t.len; i++) {
        uint8_t ch = t.data[i];
        if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == '\\' || ch == '+' || ch == '#') {
            return false;
        }
    }
    return true;
}

static void facts_topic_add(facts_ctx *c, const facts_msg_proto *m, const char *scope,
                            const char *full)
{
    options_bytes t;
    facts_topic *slot;
    strbuf sb = STRBUF_INIT;

    if (m->options == NULL || !options_find_bytes(&m->options->base, FACTS_OPT_TOPIC, &t)) {
        return;
    }
    if (!facts_topic_ok(t)) {
        facts_fail(c, "%s: (webshop.v1.topic) must be 1..256 printable ASCII characters "
                      "without spaces, quotes, backslashes or the wildcards + and #",
                   full);
        return;
    }
    slot = facts_push(c, (void **)&c->f->topics, &c->f->n_topics, sizeof(*slot));
    if (slot == NULL) {
        return;
    }
    strbuf_printf(&sb, "%s_TOPIC", scope);
    slot->macro = facts_take(c, &sb);
    strbuf_putn(&sb, (const char *)t.data, t.len);
    slot->topic = facts_take(c, &sb);
    slot->full = strdup(full);
    strbuf_printf(&sb, ".%s", full);
    slot->lower = c->lower_of(strbuf_str(&sb), c->arg);
    strbuf_fini(&sb);
    if (slot->full == NULL || slot->lower == NULL) {
        c->rc = -2;
    }
}

static void facts_enum_add(facts_ctx *c, const facts_enum_proto *e, const char *scope,
                           const char *full_scope)
{
    facts_enum *slot = facts_push(c, (void **)&c->f->enums, &c->f->n_enums, sizeof(*slot));
    strbuf sb = STRBUF_INIT;
    strbuf snake = STRBUF_INIT;

    if (slot == NULL) {
        return;
    }
    /* The function prefix is the lower-case form of the macro scope. */
    for (const char *p = scope; *p != '\0'; p++) {
        char ch = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
        strbuf_putn(&sb, &ch, 1);
    }
    names_snake(&snake, e->name);
    strbuf_printf(&sb, "%s%s", scope[0] != '\0' ? "_" : "", strbuf_str(&snake));
    strbuf_fini(&snake);
    slot->fn = facts_take(c, &sb);
    strbuf_printf(&sb, "%s%s%s", full_scope, full_scope[0] != '\0' ? "." : "", e->name);
    slot->full = facts_take(c, &sb);
    slot->values = calloc(e->n_value ? e->n_value : 1, sizeof(*slot->values));
    if (slot->values == NULL) {
        c->rc = -2;
        return;
    }
    slot->n_values = e->n_value;
    for (size_t i = 0; i < e->n_value; i++) {
        const Google__Protobuf__EnumValueDescriptorProto *v = e->value[i];
        uint64_t rank;

        slot->values[i].number = v->number;
        slot->values[i].name = v->name;
        if (v->options != NULL &&
            options_find_varint(&v->options->base, FACTS_OPT_RANK, &rank)) {
            slot->values[i].rank = (int32_t)rank;
            slot->ranked = true;
        }
    }
}

static void facts_message(facts_ctx *c, const facts_msg_proto *m, const char *scope,
                          const char *full_scope)
{
    char *name = facts_upper_name(c, scope, m->name);
    strbuf fb = STRBUF_INIT;
    options_bytes lim;

    if (name == NULL) {
        return;
    }
    strbuf_printf(&fb, "%s%s%s", full_scope, full_scope[0] != '\0' ? "." : "", m->name);
    char *full = facts_take(c, &fb);
    if (full == NULL) {
        free(name);
        return;
    }
    facts_topic_add(c, m, name, full);
    if (c->rc == 0 && m->options != NULL &&
        options_find_bytes(&m->options->base, FACTS_OPT_LIST_LIMITS, &lim)) {
        facts_limit_add(c, lim, true, strdup(name), full);
    }
    facts_fields(c, m, name, full);
    for (size_t i = 0; i < m->n_enum_type && c->rc == 0; i++) {
        facts_enum_add(c, m->enum_type[i], name, full);
    }
    for (size_t i = 0; i < m->n_nested_type && c->rc == 0; i++) {
        facts_message(c, m->nested_type[i], name, full);
    }
    free(full);
    free(name);
}

/* Every macro and function name of the header must be unique. */
static void facts_check_clashes(facts_ctx *c)
{
    const gen_facts *f = c->f;
    size_t n = f->n_topics + 2 * f->n_limits + 2 * f->n_enums;
    char **names = calloc(n ? n : 1, sizeof(*names));
    size_t k = 0;
    strbuf sb = STRBUF_INIT;

    if (names == NULL) {
        c->rc = -2;
        return;
    }
    for (size_t i = 0; i < f->n_topics; i++) {
        names[k++] = strdup(f->topics[i].macro);
    }
    for (size_t i = 0; i < f->n_limits; i++) {
        bool list = f->limits[i].list;
        strbuf_printf(&sb, "%s_%s", f->limits[i].prefix, list ? "MIN_ITEMS" : "MIN");
        names[k++] = facts_take(c, &sb);
        strbuf_printf(&sb, "%s_%s", f->limits[i].prefix, list ? "MAX_ITEMS" : "MAX");
        names[k++] = facts_take(c, &sb);
    }
    for (size_t i = 0; i < f->n_enums; i++) {
        strbuf_printf(&sb, "%s_name", f->enums[i].fn);
        names[k++] = facts_take(c, &sb);
        strbuf_printf(&sb, "%s_rank", f->enums[i].fn);
        names[k++] = facts_take(c, &sb);
    }
    for (size_t i = 0; i < k && c->rc == 0; i++) {
        if (names[i] == NULL) {
            c->rc = -2;
            break;
        }
        for (size_t j = i + 1; j < k; j++) {
            if (names[j] != NULL && strcmp(names[i], names[j]) == 0) {
                facts_fail(c, "%s: two declarations map to the C name %s", f->proto->name,
                           names[i]);
                break;
            }
        }
    }
    for (size_t i = 0; i < k; i++) {
        free(names[i]);
    }
    free(names);
}

static void facts_names(facts_ctx *c, const gen_file_proto *file, strbuf *scope)
{
    const char *name = file->name ? file->name : "";
    size_t len = strlen(name);
    const char *slash = strrchr(name, '/');
    const char *stem = slash ? slash + 1 : name;
    strbuf sb = STRBUF_INIT;

    if (len > 6 && strcmp(name + len - 6, ".proto") == 0) {
        len -= 6;
    }
    strbuf_putn(&sb, name, len);
    c->f->base = facts_take(c, &sb);
    strbuf_puts(&sb, "WS_GEN_");
    for (size_t i = 0; i < len; i++) {
        char ch = name[i];
        ch = (char)((ch >= 'a' && ch <= 'z') ? ch - 'a' + 'A'
                    : ((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) ? ch : '_');
        strbuf_putn(&sb, &ch, 1);
    }
    strbuf_puts(&sb, "_FACTS_H");
    c->f->guard = facts_take(c, &sb);
    names_package(scope, file->package ? file->package : "");
    strbuf s2 = STRBUF_INIT;
    names_upper(&s2, strbuf_str(scope));
    strbuf_fini(scope);
    strbuf_puts(scope, strbuf_str(&s2));
    strbuf_fini(&s2);
    strbuf_printf(&sb, "%s%s", strbuf_str(scope), strbuf_str(scope)[0] != '\0' ? "_" : "");
    for (const char *p = stem; *p != '\0' && p < name + len; p++) {
        char ch = *p;
        ch = (char)((ch >= 'a' && ch <= 'z') ? ch - 'a' + 'A'
                    : ((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) ? ch : '_');
        strbuf_putn(&sb, &ch, 1);
    }
    strbuf_puts(&sb, "_TOPICS");
    c->f->topics_macro = facts_take(c, &sb);
}

int facts_build(const gen_file_proto *file, char *(*lower_of)(const char *, void *),
                void *arg, gen_facts *out, char *err, size_t err_len)
{
    facts_ctx c = {.f = out, .lower_of = lower_of, .arg = arg, .err = err,
                   .err_len = err_len};
    strbuf scope = STRBUF_INIT;
    const char *pkg = file->package ? file->package : "";

    memset(out, 0, sizeof(*out));
    out->proto = file;
    facts_names(&c, file, &scope);
    for (size_t i = 0; i < file->n_message_type && c.rc == 0; i++) {
        facts_message(&c, file->message_type[i], strbuf_str(&scope), pkg);
    }
    for (size_t i = 0; i < file->n_enum_type && c.rc == 0; i++) {
        facts_enum_add(&c, file->enum_type[i], strbuf_str(&scope), pkg);
    }
    strbuf_fini(&scope);
    if (c.rc == 0) {
        facts_check_clashes(&c);
    }
    return c.rc;
}

void facts_fini(gen_facts *f)
{
    for (size_t i = 0; i < f->n_topics; i++) {
        free(f->topics[i].macro);
        free(f->topics[i].lower);
        free(f->topics[i].full);
        free(f->topics[i].topic);
    }
    free(f->topics);
    for (size_t i = 0; i < f->n_limits; i++) {
        free(f->limits[i].prefix);
        free(f->limits[i].what);
    }
    free(f->limits);
    for (size_t i = 0; i < f->n_enums; i++) {
        free(f->enums[i].fn);
        free(f->enums[i].full);
        free(f->enums[i].values);
    }
    free(f->enums);
    free(f->base);
    free(f->guard);
    free(f->topics_macro);
    memset(f, 0, sizeof(*f));
}
