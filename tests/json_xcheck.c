/*
 * The C side of the cross-implementation check (json_xcheck.py): prints a
 * populated sample of every contract message (and of the all-types test
 * message) with its JSON in both name styles and its packed bytes, and
 * decodes JSON written by Python's json_format back into packed bytes.
 *
 *   json_xcheck dump            one line per message:
 *                               full.Name <TAB> json <TAB> camelJson <TAB> hex
 *   json_xcheck decode NAME     JSON on stdin -> hex of the packed message on
 *                               stdout; exit 1 with the error on stderr
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alltypes.pb-c.h"
#include "json.h"
#include "json_sample.h"

static void xcheck_hex(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *p = malloc(n + 1);
    if (p == NULL) {
        exit(2);
    }
    protobuf_c_message_pack(m, p);
    for (size_t i = 0; i < n; i++) {
        printf("%02x", p[i]);
    }
    free(p);
}

static int xcheck_dump_one(const ProtobufCMessageDescriptor *desc, int depth)
{
    ProtobufCMessage *m = json_sample_new(desc, depth);
    ws_buf plain, camel;
    ws_buf_init(&plain, 0);
    ws_buf_init(&camel, 0);
    if (ws_json_encode(m, 0, &plain) != WS_OK ||
        ws_json_encode(m, WS_JSON_CAMEL, &camel) != WS_OK) {
        fprintf(stderr, "encode %s failed\n", desc->name);
        return 1;
    }
    printf("%s\t%s\t%s\t", desc->name, plain.data, camel.data);
    xcheck_hex(m);
    printf("\n");
    ws_buf_fini(&plain);
    ws_buf_fini(&camel);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

static const ProtobufCMessageDescriptor *xcheck_find(const char *name)
{
    if (strcmp(name, webshop_test__all_types__descriptor.name) == 0) {
        return &webshop_test__all_types__descriptor;
    }
    for (size_t i = 0; i < json_sample_contracts_n; i++) {
        if (strcmp(name, json_sample_contracts[i]->name) == 0) {
            return json_sample_contracts[i];
        }
    }
    return NULL;
}

static int xcheck_decode(const char *name)
{
    const ProtobufCMessageDescriptor *desc = xcheck_find(name);
    if (desc == NULL) {
        fprintf(stderr, "no message %s\n", name);
        return 1;
    }
    ws_buf in;
    ws_buf_init(&in, 0);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, stdin)) > 0) {
        if (ws_buf_append(&in, chunk, n) != WS_OK) {
            return 2;
        }
    }
    ProtobufCMessage *m = NULL;
    ws_json_error err;
    ws_err rc =
        ws_json_decode(desc, in.data != NULL ? in.data : "", in.len, NULL, &m, &err);
    ws_buf_fini(&in);
    if (rc != WS_OK) {
        fprintf(stderr, "%s: %s\n", ws_errname(rc), err.text);
        return 1;
    }
    xcheck_hex(m);
    printf("\n");
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "dump") == 0) {
        int rc = 0;
        for (size_t i = 0; i < json_sample_contracts_n; i++) {
            rc |= xcheck_dump_one(json_sample_contracts[i], JSON_SAMPLE_DEPTH);
        }
        rc |= xcheck_dump_one(&webshop_test__all_types__descriptor, 2);
        return rc;
    }
    if (argc == 3 && strcmp(argv[1], "decode") == 0) {
        return xcheck_decode(argv[2]);
    }
    fprintf(stderr, "usage: %s dump | decode full.MessageName < json\n", argv[0]);
    return 2;
}
