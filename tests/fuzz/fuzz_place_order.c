/*
 * libFuzzer target for the POST /order body validation
 * (front/place_order.c): the input is the body. An accepted body must give
 * an OrderSent that obeys every rule place_order.h promises (1..max_items
 * items, positive ids, counts in 1..max_count, the order id copied) and
 * that packs and encodes to JSON as the front publishes it; a rejected one
 * must leave the out-parameter alone and explain itself in a terminated
 * message.
 */
#include <stdint.h>
#include <string.h>

#include "buf.h"
#include "fuzz_common.h"
#include "json.h"
#include "place_order.h"

#define FUZZ_ORDER_ID "0b0c5e6e-8f3a-4d5c-9a2b-1c2d3e4f5a6b"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet_logs();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    Webshop__V1__OrderSent *ev = NULL;
    char msg[200];
    place_order_limits lim = {.max_items = 0, .max_count = 0};

    memset(msg, 'x', sizeof(msg));
    int rc = place_order_parse((const char *)data, size, FUZZ_ORDER_ID, &lim, &ev, msg,
                               sizeof(msg));
    if (rc != 0) {
        FUZZ_CHECK(rc == -1, "rc %d", rc);
        FUZZ_CHECK(ev == NULL, "rejected body wrote the out-parameter");
        FUZZ_CHECK(memchr(msg, '\0', sizeof(msg)) != NULL && msg[0] != '\0',
                   "no error message");
        return 0;
    }
    FUZZ_CHECK(ev != NULL, "accepted body gave no event");
    FUZZ_CHECK(strcmp(ev->order_id, FUZZ_ORDER_ID) == 0, "order id not copied");
    FUZZ_CHECK(ev->n_items >= 1 && ev->n_items <= 100, "%zu items", ev->n_items);
    for (size_t i = 0; i < ev->n_items; i++) {
        FUZZ_CHECK(ev->items[i]->inventory_id > 0, "item %zu id", i);
        FUZZ_CHECK(ev->items[i]->count >= 1 && ev->items[i]->count <= 1000,
                   "item %zu count", i);
    }
    FUZZ_CHECK(protobuf_c_message_check(&ev->base), "OrderSent fails the check");
    size_t n = webshop__v1__order_sent__get_packed_size(ev);
    uint8_t *packed = malloc(n ? n : 1);
    FUZZ_CHECK(packed != NULL, "out of memory");
    webshop__v1__order_sent__pack(ev, packed);
    Webshop__V1__OrderSent *back = webshop__v1__order_sent__unpack(NULL, n, packed);
    FUZZ_CHECK(back != NULL && back->n_items == ev->n_items, "OrderSent does not unpack");
    ws_buf json;
    ws_buf_init(&json, 0);
    FUZZ_CHECK(ws_json_encode(&ev->base, WS_JSON_CAMEL, &json) == WS_OK,
               "OrderSent does not encode");
    ws_buf_fini(&json);
    webshop__v1__order_sent__free_unpacked(back, NULL);
    free(packed);
    webshop__v1__order_sent__free_unpacked(ev, NULL);
    return 0;
}
