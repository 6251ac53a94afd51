/*
 * Generic sample messages for the JSON tests; see json_sample.h. Values are
 * derived from the field number and element index only, so the golden files
 * stay stable as long as the contracts do.
 */
#include "json_sample.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webshop/v1/auth_options.pb-c.h"
#include "webshop/v1/contract.pb-c.h"
#include "webshop/v1/events.pb-c.h"
#include "webshop/v1/front.pb-c.h"
#include "webshop/v1/http.pb-c.h"
#include "webshop/v1/inventory.pb-c.h"
#include "webshop/v1/order.pb-c.h"
#include "webshop/v1/rpc.pb-c.h"

const ProtobufCMessageDescriptor *const json_sample_contracts[] = {
    &webshop__v1__order_sent__descriptor,
    &webshop__v1__cancel_order__descriptor,
    &webshop__v1__in_stock__descriptor,
    &webshop__v1__out_of_stock__descriptor,
    &webshop__v1__order_canceled__descriptor,
    &webshop__v1__order_status_changed__descriptor,
    &webshop__v1__stock_changed__descriptor,
    &webshop__v1__place_order_request__descriptor,
    &webshop__v1__place_order_response__descriptor,
    &webshop__v1__cancel_order_request__descriptor,
    &webshop__v1__cancel_order_response__descriptor,
    &webshop__v1__error_body__descriptor,
    &webshop__v1__health_request__descriptor,
    &webshop__v1__health_check__descriptor,
    &webshop__v1__health_response__descriptor,
    &webshop__v1__watch_events_request__descriptor,
    &webshop__v1__http_rule__descriptor,
    &webshop__v1__http_api__descriptor,
    &webshop__v1__limits__descriptor,
    &webshop__v1__product__descriptor,
    &webshop__v1__get_catalog_request__descriptor,
    &webshop__v1__get_catalog_response__descriptor,
    &webshop__v1__get_product_request__descriptor,
    &webshop__v1__get_product_response__descriptor,
    &webshop__v1__get_reservation_request__descriptor,
    &webshop__v1__get_reservation_response__descriptor,
    &webshop__v1__order_item__descriptor,
    &webshop__v1__order__descriptor,
    &webshop__v1__get_order_request__descriptor,
    &webshop__v1__get_order_response__descriptor,
    &webshop__v1__list_orders_request__descriptor,
    &webshop__v1__list_orders_response__descriptor,
    &webshop__v1__rpc_request__descriptor,
    &webshop__v1__rpc_response__descriptor,
    &webshop__v1__list_services_request__descriptor,
    &webshop__v1__method_info__descriptor,
    &webshop__v1__service_info__descriptor,
    &webshop__v1__list_services_response__descriptor,
    &webshop__v1__file_containing_symbol_request__descriptor,
    &webshop__v1__file_by_filename_request__descriptor,
    &webshop__v1__file_descriptor_response__descriptor,
    &webshop__v1__allow__descriptor,
};
const size_t json_sample_contracts_n =
    sizeof json_sample_contracts / sizeof json_sample_contracts[0];

static void *sample_xmalloc(size_t n)
{
    void *p = calloc(1, n > 0 ? n : 1);
    if (p == NULL) {
        abort();
    }
    return p;
}

/* One value of f's type, element i, into p. */
static void sample_value(const ProtobufCFieldDescriptor *f, size_t i, void *p, int depth)
{
    int32_t k = (int32_t)f->id;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        *(int32_t *)p = i == 0 ? k * 11 + 1 : INT32_MIN;
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *(uint32_t *)p = i == 0 ? (uint32_t)k * 11 + 1 : UINT32_MAX;
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *(int64_t *)p = i == 0 ? 1700000000000 + k : INT64_MIN;
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)p = i == 0 ? 1700000000000u + (uint64_t)k : UINT64_MAX;
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        *(float *)p = i == 0 ? 1.5f + (float)k : -INFINITY;
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        *(double *)p = i == 0 ? 0.1 * k : -1.7976931348623157e308;
        break;
    case PROTOBUF_C_TYPE_BOOL:
        *(protobuf_c_boolean *)p = i == 0;
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        *(int *)p = ed->values[(ed->n_values - 1 + i) % ed->n_values].value;
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        char text[128];
        if (i == 0) {
            snprintf(text, sizeof text, "%s-%d", f->name, (int)k);
        } else {
            snprintf(text, sizeof text,
                     "caf\xc3\xa9 \"q\" \\ / \n\t\x01\x7f \xe2\x80\xa8 \xf0\x9f\x98\x80");
        }
        *(char **)p = strdup(text);
        if (*(char **)p == NULL) {
            abort();
        }
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *bd = p;
        static const uint8_t raw[] = {0x00, 0x01, 0xfb, 0xff, 0x3e};
        bd->len = i == 0 ? sizeof raw : 2;
        bd->data = sample_xmalloc(bd->len);
        memcpy(bd->data, i == 0 ? raw : (const uint8_t *)"hi", bd->len);
        if (i == 0) {
            bd->data[4] = (uint8_t)k;
        }
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        *(ProtobufCMessage **)p = json_sample_new(f->descriptor, depth - 1);
        break;
    }
}

ProtobufCMessage *json_sample_new(const ProtobufCMessageDescriptor *desc, int depth)
{
    ProtobufCMessage *m = sample_xmalloc(desc->sizeof_message);
    protobuf_c_message_init(desc, m);
    char *base = (char *)m;
    for (unsigned i = 0; i < desc->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &desc->fields[i];
        void *p = base + f->offset;
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && depth <= 0) {
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t sz = f->type == PROTOBUF_C_TYPE_MESSAGE  ? sizeof(void *)
                        : f->type == PROTOBUF_C_TYPE_STRING ? sizeof(char *)
                        : f->type == PROTOBUF_C_TYPE_BYTES  ? sizeof(ProtobufCBinaryData)
                        : f->type == PROTOBUF_C_TYPE_DOUBLE ? 8
                        : (f->type == PROTOBUF_C_TYPE_INT64 ||
                           f->type == PROTOBUF_C_TYPE_SINT64 ||
                           f->type == PROTOBUF_C_TYPE_SFIXED64 ||
                           f->type == PROTOBUF_C_TYPE_UINT64 ||
                           f->type == PROTOBUF_C_TYPE_FIXED64)
                            ? 8
                            : 4;
            char *arr = sample_xmalloc(2 * sz);
            for (size_t k = 0; k < 2; k++) {
                sample_value(f, k, arr + k * sz, depth);
            }
            *(char **)p = arr;
            *(size_t *)(base + f->quantifier_offset) = 2;
            const ProtobufCMessageDescriptor *ed = f->descriptor;
            if (f->type == PROTOBUF_C_TYPE_MESSAGE && ed->n_fields == 2 &&
                strcmp(ed->fields[0].name, "key") == 0 &&
                strcmp(ed->fields[1].name, "value") == 0) {
                /* A map entry: give the second entry its own key. */
                char *entry = ((char **)arr)[1];
                void *key = entry + ed->fields[0].offset;
                if (ed->fields[0].type == PROTOBUF_C_TYPE_STRING) {
                    free(*(char **)key);
                }
                sample_value(&ed->fields[0], 1, key, depth);
            }
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
            if (*which != 0) {
                continue; /* the first member of the oneof is set */
            }
            *which = f->id;
            sample_value(f, 0, p, depth);
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_STRING &&
            f->type != PROTOBUF_C_TYPE_MESSAGE) {
            /* Explicit presence: set, and to zero, which must still be written. */
            *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
            continue;
        }
        sample_value(f, 0, p, depth);
    }
    return m;
}
