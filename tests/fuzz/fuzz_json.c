/*
 * libFuzzer target for the JSON transcoder (lib/json*.c). The first input
 * byte picks a message type (every contract message, plus the all-types
 * test message), the second the output flags; the rest is JSON text. Any
 * text the decoder accepts must survive a round trip: its encoding decodes
 * again, to a message that packs to the same protobuf bytes and encodes to
 * the same JSON text.
 */
#include <stdint.h>
#include <string.h>

#include "alltypes.pb-c.h"
#include "buf.h"
#include "fuzz_common.h"
#include "json.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/front.pb-c.h"
#include "webshop/v1/inventory.pb-c.h"
#include "webshop/v1/order.pb-c.h"
#include "webshop/v1/rpc.pb-c.h"

static const ProtobufCMessageDescriptor *const fuzz_json_types[] = {
    &webshop_test__all_types__descriptor,
    &webshop_test__inner__descriptor,
    &webshop__v1__order_sent__descriptor,
    &webshop__v1__cancel_order__descriptor,
    &webshop__v1__in_stock__descriptor,
    &webshop__v1__out_of_stock__descriptor,
    &webshop__v1__order_canceled__descriptor,
    &webshop__v1__order_status_changed__descriptor,
    &webshop__v1__stock_changed__descriptor,
    &webshop__v1__place_order_request__descriptor,
    &webshop__v1__place_order_response__descriptor,
    &webshop__v1__error_body__descriptor,
    &webshop__v1__health_response__descriptor,
    &webshop__v1__product__descriptor,
    &webshop__v1__get_catalog_response__descriptor,
    &webshop__v1__get_reservation_response__descriptor,
    &webshop__v1__order__descriptor,
    &webshop__v1__list_orders_request__descriptor,
    &webshop__v1__list_orders_response__descriptor,
    &webshop__v1__rpc_request__descriptor,
    &webshop__v1__rpc_response__descriptor,
    &webshop__v1__list_services_response__descriptor,
};
#define FUZZ_JSON_N_TYPES (sizeof(fuzz_json_types) / sizeof(fuzz_json_types[0]))

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logs();
    return 0;
}

static uint8_t *fuzz_json_pack(const ProtobufCMessage *m, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *p = malloc(*len ? *len : 1);
    FUZZ_CHECK(p != NULL, "out of memory");
    FUZZ_CHECK(protobuf_c_message_pack(m, p) == *len, "packed size changed");
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    const ProtobufCMessageDescriptor *desc = fuzz_json_types[data[0] % FUZZ_JSON_N_TYPES];
    unsigned flags = data[1] & (WS_JSON_CAMEL | WS_JSON_DEFAULTS | WS_JSON_ENUM_INTS);
    const char *json = (const char *)data + 2;
    size_t len = size - 2;
    ProtobufCMessage *m1 = NULL, *m2 = NULL;
    ws_json_error jerr;
    ws_buf out1, out2;

    ws_err err = ws_json_decode(desc, json, len, NULL, &m1, &jerr);
    if (err != WS_OK) {
        FUZZ_CHECK(m1 == NULL, "decode failed but wrote its out-parameter");
        FUZZ_CHECK(err == WS_EPARSE || err == WS_ETOOBIG || err == WS_ENOMEM,
                   "decode returned %s", ws_errname(err));
        FUZZ_CHECK(memchr(jerr.text, '\0', sizeof(jerr.text)) != NULL,
                   "error text not terminated");
        return 0;
    }
    FUZZ_CHECK(m1 != NULL && m1->descriptor == desc, "decode gave no message of %s",
               desc->name);
    FUZZ_CHECK(protobuf_c_message_check(m1), "decoded %s fails protobuf_c_message_check",
               desc->name);

    ws_buf_init(&out1, 0);
    err = ws_json_encode(m1, flags, &out1);
    FUZZ_CHECK(err == WS_OK, "encode of a decoded %s: %s", desc->name, ws_errname(err));

    err = ws_json_decode(desc, out1.data, out1.len, NULL, &m2, &jerr);
    FUZZ_CHECK(err == WS_OK, "re-decode of %s failed: %s (%s)\n%.*s", desc->name,
               ws_errname(err), jerr.text, (int)out1.len, out1.data);

    size_t n1, n2;
    uint8_t *p1 = fuzz_json_pack(m1, &n1);
    uint8_t *p2 = fuzz_json_pack(m2, &n2);
    FUZZ_CHECK(n1 == n2 && memcmp(p1, p2, n1) == 0,
               "%s round trip changed the message (%zu vs %zu packed bytes)\n%.*s",
               desc->name, n1, n2, (int)out1.len, out1.data);

    ws_buf_init(&out2, 0);
    err = ws_json_encode(m2, flags, &out2);
    FUZZ_CHECK(err == WS_OK, "second encode of %s: %s", desc->name, ws_errname(err));
    FUZZ_CHECK(out1.len == out2.len && memcmp(out1.data, out2.data, out1.len) == 0,
               "%s encodes differently after a round trip:\n%.*s\n%.*s", desc->name,
               (int)out1.len, out1.data, (int)out2.len, out2.data);

    free(p1);
    free(p2);
    ws_buf_fini(&out1);
    ws_buf_fini(&out2);
    protobuf_c_message_free_unpacked(m1, NULL);
    protobuf_c_message_free_unpacked(m2, NULL);
    return 0;
}
