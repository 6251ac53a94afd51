/*
 * The facts a .proto file declares with the custom options of
 * webshop/v1/contract.proto, as a model for the emitter of "<file>.facts.h"
 * (emit_facts.c): the topic of each event message, the bounds of number
 * fields and of lists of a message type, and for each enum its value names
 * and ranks. Every name is computed once here and checked for clashes
 * before anything is printed, as for the RPC model in gen.h.
 */
#ifndef GEN_FACTS_H
#define GEN_FACTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gen.h"

/* Option field numbers, as declared in proto/webshop/v1/contract.proto. */
#define FACTS_OPT_TOPIC       50010 /* MessageOptions: string */
#define FACTS_OPT_LIST_LIMITS 50011 /* MessageOptions: Limits */
#define FACTS_OPT_LIMITS      50012 /* FieldOptions: Limits */
#define FACTS_OPT_RANK        50013 /* EnumValueOptions: int32 */

/* Event message -> topic: #define <macro> "<topic>". Strings owned. */
typedef struct facts_topic {
    char *macro; /* WEBSHOP_V1_ORDER_SENT_TOPIC */
    char *lower; /* protoc-c lower name: webshop__v1__order_sent */
    char *full;  /* webshop.v1.OrderSent */
    char *topic; /* public-front/order-send */
} facts_topic;

/* A bound: #define <prefix>_MIN / _MAX (numbers) or _MIN_ITEMS / _MAX_ITEMS
 * (lists). Strings owned. */
typedef struct facts_limit {
    char *prefix; /* WEBSHOP_V1_ORDER_ITEM_COUNT or WEBSHOP_V1_ORDER_ITEM */
    char *what;   /* webshop.v1.OrderItem.count, for the comment */
    bool list;    /* list_limits on a message: bounds are item counts */
    bool has_min; /* only the bounds the option gives are emitted */
    bool has_max;
    int64_t min;
    int64_t max;
} facts_limit;

typedef struct facts_enum_value {
    int32_t number;
    const char *name; /* borrowed from the request */
    int32_t rank;     /* 0 when the value has no rank option */
} facts_enum_value;

/* One enum: <fn>_name(value) and, when any value has a rank, <fn>_rank(value). */
typedef struct facts_enum {
    char *fn;   /* webshop_v1_order_status */
    char *full; /* webshop.v1.OrderStatus */
    facts_enum_value *values;
    size_t n_values;
    bool ranked;
} facts_enum;

typedef struct gen_facts {
    const gen_file_proto *proto;
    char *base;         /* "webshop/v1/events" */
    char *guard;        /* WS_GEN_WEBSHOP_V1_EVENTS_FACTS_H */
    char *topics_macro; /* WEBSHOP_V1_EVENTS_TOPICS: X-macro over topics */
    facts_topic *topics;
    size_t n_topics;
    facts_limit *limits;
    size_t n_limits;
    facts_enum *enums;
    size_t n_enums;
} gen_facts;

/* Build the model of file. lower_of(full_name, arg) gives protoc-c's lower
 * name of a message of the request (owned result, NULL when out of memory).
 * Returns 0, or -1 with a message in err (an option protoc accepted but we
 * cannot serve: a bound on a non-number field, min > max, a topic with MQTT
 * wildcards or quotes, two facts with one C name), or -2 when out of
 * memory. Whatever the result, free the model with facts_fini(). */
int facts_build(const gen_file_proto *file, char *(*lower_of)(const char *, void *),
                void *arg, gen_facts *out /* OUT */, char *err, size_t err_len);

void facts_fini(gen_facts *f);

/* The text of "<file>.facts.h". */
void emit_facts_header(const gen_facts *f, strbuf *out);

#endif
