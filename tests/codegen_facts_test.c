/*
 * The facts protoc-gen-webshop generates from the options of
 * webshop/v1/contract.proto ("<file>.facts.h"): the contract's own topics,
 * limits, enum names and ranks, and the refusals for options the generator
 * cannot serve (run through the real protoc on .proto files written here).
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "webshop/v1/events.facts.h"
#include "webshop/v1/inventory.facts.h"
#include "webshop/v1/order.facts.h"

Test(codegen_facts, topics_are_the_prototypes_and_listed_with_their_message)
{
    cr_assert_str_eq(WEBSHOP_V1_ORDER_SENT_TOPIC, "public-front/order-send");
    cr_assert_str_eq(WEBSHOP_V1_CANCEL_ORDER_TOPIC, "public-front/order-canceled");
    cr_assert_str_eq(WEBSHOP_V1_IN_STOCK_TOPIC, "inventory/on-stock");
    cr_assert_str_eq(WEBSHOP_V1_OUT_OF_STOCK_TOPIC, "inventory/out-of-stock");
    cr_assert_str_eq(WEBSHOP_V1_ORDER_CANCELED_TOPIC, "order/order-canceled");
    cr_assert_str_eq(WEBSHOP_V1_ORDER_STATUS_CHANGED_TOPIC, "order/order-status");
    cr_assert_str_eq(WEBSHOP_V1_STOCK_CHANGED_TOPIC, "inventory/stock-changed");
#define FACTS_TEST_ROW(topic, lower) {topic, &lower##__descriptor},
    static const struct {
        const char *topic;
        const ProtobufCMessageDescriptor *d;
    } rows[] = {WEBSHOP_V1_EVENTS_TOPICS(FACTS_TEST_ROW)};
#undef FACTS_TEST_ROW
    cr_assert_eq(sizeof(rows) / sizeof(rows[0]), 7);
    cr_assert_str_eq(rows[0].d->short_name, "OrderSent");
    cr_assert_str_eq(rows[5].topic, "order/order-status");
    cr_assert_str_eq(rows[5].d->short_name, "OrderStatusChanged");
}

Test(codegen_facts, limits_of_an_order)
{
    cr_assert_eq(WEBSHOP_V1_ORDER_ITEM_MIN_ITEMS, 1);
    cr_assert_eq(WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS, 100);
    cr_assert_eq(WEBSHOP_V1_ORDER_ITEM_COUNT_MIN, 1);
    cr_assert_eq(WEBSHOP_V1_ORDER_ITEM_COUNT_MAX, 1000);
    cr_assert_eq(WEBSHOP_V1_ORDER_ITEM_INVENTORY_ID_MIN, 1);
    cr_assert_eq(WEBSHOP_V1_ORDER_ITEMS_MIN_ITEMS, 0, "an order read back may have no lines yet");
    cr_assert_eq(WEBSHOP_V1_ORDER_ITEMS_MAX_ITEMS, WEBSHOP_V1_ORDER_ITEM_MAX_ITEMS);
}

Test(codegen_facts, status_names_and_precedence)
{
    cr_assert_str_eq(webshop_v1_order_status_name(WEBSHOP__V1__ORDER_STATUS__PENDING), "PENDING");
    cr_assert_str_eq(webshop_v1_order_status_name(WEBSHOP__V1__ORDER_STATUS__CANCELED),
                     "CANCELED");
    cr_assert_null(webshop_v1_order_status_name(99));
    int pending = webshop_v1_order_status_rank(WEBSHOP__V1__ORDER_STATUS__PENDING);
    int ok = webshop_v1_order_status_rank(WEBSHOP__V1__ORDER_STATUS__SUCCESSFUL);
    int bad = webshop_v1_order_status_rank(WEBSHOP__V1__ORDER_STATUS__UNSUCCESSFUL);
    int canceled = webshop_v1_order_status_rank(WEBSHOP__V1__ORDER_STATUS__CANCELED);
    cr_assert(pending > 0 && pending < ok && ok == bad && bad < canceled);
    cr_assert_eq(webshop_v1_order_status_rank(WEBSHOP__V1__ORDER_STATUS__STATUS_UNSPECIFIED), 0);
    cr_assert_eq(webshop_v1_order_status_rank(-1), 0);
    cr_assert_str_eq(webshop_v1_reservation_status_name(WEBSHOP__V1__RESERVATION_STATUS__RELEASED),
                     "RELEASED");
}

/* Run protoc with our plugin in facts mode on one .proto text; returns its
 * exit status and its stderr in err. */
static int facts_protoc(const char *proto, char *err, size_t err_len)
{
    char dir[] = "/tmp/webshop-facts-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/x.proto", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(proto, f);
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd),
             "cd %s && %s --plugin=protoc-gen-webshop=%s --proto_path=. --proto_path=%s "
             "--proto_path=/usr/include --webshop_out=facts:. x.proto 2>err.txt; echo $? >rc",
             dir, PROTOC, PLUGIN, PROTO_ROOT);
    cr_assert_eq(system(cmd), 0);
    char file[300];
    snprintf(file, sizeof(file), "%s/err.txt", dir);
    f = fopen(file, "r");
    size_t n = f != NULL ? fread(err, 1, err_len - 1, f) : 0;
    err[n] = '\0';
    if (f != NULL) {
        fclose(f);
    }
    snprintf(file, sizeof(file), "%s/rc", dir);
    f = fopen(file, "r");
    int rc = -1;
    cr_assert_eq(fscanf(f, "%d", &rc), 1);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
    return rc;
}

#define FACTS_HEAD "syntax = \"proto3\"; package t; import \"webshop/v1/contract.proto\";\n"

Test(codegen_facts, a_well_formed_file_builds)
{
    char err[2048];
    int rc = facts_protoc(FACTS_HEAD "message E { option (webshop.v1.topic) = \"a/b\"; "
                                     "int32 n = 1 [(webshop.v1.limits) = {min: -5 max: 5}]; }\n",
                          err, sizeof(err));
    cr_assert_eq(rc, 0, "%s", err);
}

Test(codegen_facts, options_it_cannot_serve_are_refused_by_name)
{
    static const struct {
        const char *proto;
        const char *says;
    } cases[] = {
        {FACTS_HEAD "message E { option (webshop.v1.topic) = \"a/#\"; }\n", "t.E: (webshop.v1.topic)"},
        {FACTS_HEAD "message E { option (webshop.v1.topic) = \"a b\"; }\n", "wildcards"},
        {FACTS_HEAD "message E { int32 n = 1 [(webshop.v1.limits) = {min: 5 max: 1}]; }\n",
         "t.E.n: limits min 5 is above max 1"},
        {FACTS_HEAD "message E { string s = 1 [(webshop.v1.limits) = {min: 1}]; }\n",
         "t.E.s: (webshop.v1.limits) applies to number fields and lists only"},
        {FACTS_HEAD "message E { int32 n = 1 [(webshop.v1.limits) = {}]; }\n",
         "t.E.n: a limits option without min or max"},
        {FACTS_HEAD "message E { option (webshop.v1.topic) = \"a\"; }\n"
                    "message E_ { message X {} }\nmessage e { option (webshop.v1.topic) = \"b\"; }\n",
         "map to the C name T_E_TOPIC"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[2048];
        int rc = facts_protoc(cases[i].proto, err, sizeof(err));
        cr_assert_neq(rc, 0, "case %zu accepted", i);
        cr_assert(strstr(err, cases[i].says) != NULL, "case %zu: wanted \"%s\" in: %s", i,
                  cases[i].says, err);
    }
}
