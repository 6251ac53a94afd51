/*
 * libFuzzer target for every bus payload decoder: the first input byte
 * picks one of the subscriptions the services make (topic and message
 * type, as in DESIGN.md's event table), the rest is the payload, decoded by
 * ws__bus_decode() exactly as lib/bus.c decodes a received message
 * (protobuf, or proto3 JSON when the first non-blank byte is '{'). A
 * decoded event is then handed to the domain function its subscriber
 * calls -- the inventory's reservation and release, the order service's
 * status updates -- on in-memory databases, and the stock invariant
 * balance + held = added is checked for every product the event names.
 */
#include <stdint.h>
#include <string.h>

#include "bus_int.h"
#include "fuzz_common.h"
#include "json.h"
#include "db.h"
#include "webshop/v1/events.pb-c.h"

#include "inventory/catalog_seed.h"
#include "inventory/schema.h"
#include "inventory/stock.h"
#include "order/orders.h"
#include "order/schema.h"

#define FUZZ_BUS_MAX_PAYLOAD (256u * 1024u)

typedef enum fuzz_bus_apply {
    FUZZ_BUS_ORDER_SENT,
    FUZZ_BUS_CANCEL_ORDER,
    FUZZ_BUS_IN_STOCK,
    FUZZ_BUS_OUT_OF_STOCK,
    FUZZ_BUS_ORDER_CANCELED,
    FUZZ_BUS_DECODE_ONLY,
} fuzz_bus_apply;

static const struct {
    const char *topic;
    const ProtobufCMessageDescriptor *desc;
    fuzz_bus_apply apply;
} fuzz_bus_subs[] = {
    {"public-front/order-send", &webshop__v1__order_sent__descriptor,
     FUZZ_BUS_ORDER_SENT},
    {"public-front/order-canceled", &webshop__v1__cancel_order__descriptor,
     FUZZ_BUS_CANCEL_ORDER},
    {"inventory/on-stock", &webshop__v1__in_stock__descriptor, FUZZ_BUS_IN_STOCK},
    {"inventory/out-of-stock", &webshop__v1__out_of_stock__descriptor,
     FUZZ_BUS_OUT_OF_STOCK},
    {"order/order-canceled", &webshop__v1__order_canceled__descriptor,
     FUZZ_BUS_ORDER_CANCELED},
    {"order/order-status", &webshop__v1__order_status_changed__descriptor,
     FUZZ_BUS_DECODE_ONLY},
    {"inventory/stock-changed", &webshop__v1__stock_changed__descriptor,
     FUZZ_BUS_DECODE_ONLY},
};
#define FUZZ_BUS_N_SUBS (sizeof(fuzz_bus_subs) / sizeof(fuzz_bus_subs[0]))

static ws_db *fuzz_bus_inv; /* sqlite::memory:, one connection each */
static ws_db *fuzz_bus_ord;
static int64_t fuzz_bus_now_ms = 1000;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_bus_cleanup(void)
{
    ws_db_close(fuzz_bus_inv);
    ws_db_close(fuzz_bus_ord);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logs();
    ws_db_opts o = {.url = "sqlite::memory:", .pool_size = 1};
    o.migrations = inv_schema_migrations(&o.n_migrations);
    FUZZ_CHECK(ws_db_open(&o, &fuzz_bus_inv) == WS_OK, "inventory db");
    FUZZ_CHECK(inv_catalog_seed_default(fuzz_bus_inv, NULL) == WS_OK, "catalog seed");
    o.migrations = order_schema_migrations(&o.n_migrations);
    FUZZ_CHECK(ws_db_open(&o, &fuzz_bus_ord) == WS_OK, "order db");
    atexit(fuzz_bus_cleanup);
    return 0;
}

/* balance + held = added for product id, if the catalog has it. */
static void fuzz_bus_check_stock(int32_t id)
{
    int64_t balance, held, added;
    ws_err err = inv_stock_levels(fuzz_bus_inv, id, &balance, &held, &added);
    if (err == WS_ENOTFOUND) {
        return;
    }
    FUZZ_CHECK(err == WS_OK, "levels of %d: %s", (int)id, ws_errname(err));
    FUZZ_CHECK(balance >= 0 && balance + held == added,
               "product %d: balance %lld + held %lld != added %lld", (int)id,
               (long long)balance, (long long)held, (long long)added);
}

static void fuzz_bus_check_order_err(ws_err err, const orders_effect *eff,
                                     const char *what)
{
    FUZZ_CHECK(err == WS_OK || err == WS_EINVAL, "%s: %s", what, ws_errname(err));
    FUZZ_CHECK(err != WS_EINVAL || eff->invalid != NULL, "%s: EINVAL without a field",
               what);
}

static void fuzz_bus_apply_event(fuzz_bus_apply apply, const ProtobufCMessage *msg)
{
    orders_policy p = orders_policy_default();
    orders_effect eff = {0};
    ws_err err;

    fuzz_bus_now_ms += 10;
    ws_db_conn *inv = NULL, *ord = NULL;
    FUZZ_CHECK(ws_db_acquire(fuzz_bus_ord, &ord) == WS_OK, "order connection");
    switch (apply) {
    case FUZZ_BUS_ORDER_SENT: {
        const Webshop__V1__OrderSent *ev = (const Webshop__V1__OrderSent *)msg;
        inv_order_outcome out;
        FUZZ_CHECK(ws_db_acquire(fuzz_bus_inv, &inv) == WS_OK, "inventory connection");
        err = inv_stock_order_sent(inv, ev, &out);
        ws_db_release(inv);
        FUZZ_CHECK(err == WS_OK || err == WS_EINVAL, "inventory order sent: %s",
                   ws_errname(err));
        for (size_t i = 0; i < ev->n_items; i++) {
            fuzz_bus_check_stock(ev->items[i]->inventory_id);
        }
        err = orders_apply_sent(ord, &p, ev, fuzz_bus_now_ms, &eff);
        fuzz_bus_check_order_err(err, &eff, "orders sent");
        break;
    }
    case FUZZ_BUS_CANCEL_ORDER:
        err = orders_apply_cancel(ord, &p, (const Webshop__V1__CancelOrder *)msg,
                                  fuzz_bus_now_ms, &eff);
        fuzz_bus_check_order_err(err, &eff, "orders cancel");
        break;
    case FUZZ_BUS_IN_STOCK:
        err = orders_apply_in_stock(ord, &p, (const Webshop__V1__InStock *)msg,
                                    fuzz_bus_now_ms, &eff);
        fuzz_bus_check_order_err(err, &eff, "orders in stock");
        break;
    case FUZZ_BUS_OUT_OF_STOCK:
        err = orders_apply_out_of_stock(ord, &p,
                                        (const Webshop__V1__OutOfStock *)msg,
                                        fuzz_bus_now_ms, &eff);
        fuzz_bus_check_order_err(err, &eff, "orders out of stock");
        break;
    case FUZZ_BUS_ORDER_CANCELED: {
        inv_cancel_outcome out;
        FUZZ_CHECK(ws_db_acquire(fuzz_bus_inv, &inv) == WS_OK, "inventory connection");
        err = inv_stock_order_canceled(inv, (const Webshop__V1__OrderCanceled *)msg, &out);
        ws_db_release(inv);
        FUZZ_CHECK(err == WS_OK || err == WS_EINVAL, "inventory cancel: %s",
                   ws_errname(err));
        for (int32_t id = 1; id <= 4; id++) {
            fuzz_bus_check_stock(id);
        }
        break;
    }
    case FUZZ_BUS_DECODE_ONLY:
        break;
    }
    ws_db_release(ord);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    size_t k = data[0] % FUZZ_BUS_N_SUBS;
    const void *payload = data + 1;
    size_t len = size - 1;
    bool json = ws__bus_is_json(payload, len);

    ProtobufCMessage *msg = ws__bus_decode(fuzz_bus_subs[k].desc, fuzz_bus_subs[k].topic,
                                           payload, len, json, FUZZ_BUS_MAX_PAYLOAD);
    if (msg == NULL) {
        return 0;
    }
    FUZZ_CHECK(msg->descriptor == fuzz_bus_subs[k].desc, "wrong type");
    FUZZ_CHECK(protobuf_c_message_check(msg), "decoded %s fails protobuf_c_message_check",
               fuzz_bus_subs[k].desc->name);
    fuzz_bus_apply_event(fuzz_bus_subs[k].apply, msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    return 0;
}
