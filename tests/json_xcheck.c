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
 *   json_xcheck batch           one request a line on stdin, one answer a
 *                               line on stdout, for many messages at once:
 *                               enc NAME HEX, enc_camel NAME HEX  -> ok JSON
 *                               dec NAME JSON                     -> ok HEX
 *                               dec_enc NAME JSON (decode, then encode
 *                               with proto names)                 -> ok JSON
 *                               or err TEXT; fields tab-separated.
 *
 * Message names are looked up with ws_json_type_find, after registering the
 * contracts and the test messages (so an Any may hold any of them).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alltypes.pb-c.h"
#include "json.h"
#include "json_sample.h"
#include "wkt.pb-c.h"

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
    return ws_json_type_find(name);
}

static void xcheck_register(void)
{
    for (size_t i = 0; i < json_sample_contracts_n; i++) {
        ws_json_register(json_sample_contracts[i]);
    }
    ws_json_register(&webshop_test__all_types__descriptor);
    ws_json_register(&webshop_test__well_known__descriptor);
}

/* Hex text to bytes, malloc'ed; NULL if malformed. */
static uint8_t *xcheck_unhex(const char *hex, size_t *n)
{
    size_t len = strlen(hex);
    if (len % 2 != 0) {
        return NULL;
    }
    uint8_t *p = malloc(len / 2 + 1);
    if (p == NULL) {
        exit(2);
    }
    for (size_t i = 0; i < len / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) {
            free(p);
            return NULL;
        }
        p[i] = (uint8_t)v;
    }
    *n = len / 2;
    return p;
}

/* One request of the batch mode (line without its newline). */
static void xcheck_batch_one(char *line)
{
    char *op = line;
    char *name = strchr(op, '\t');
    char *payload = name != NULL ? strchr(name + 1, '\t') : NULL;
    if (payload == NULL) {
        printf("err\tmalformed request\n");
        return;
    }
    *name++ = '\0';
    *payload++ = '\0';
    const ProtobufCMessageDescriptor *desc = xcheck_find(name);
    if (desc == NULL) {
        printf("err\tno message %s\n", name);
        return;
    }
    ProtobufCMessage *m = NULL;
    if (strncmp(op, "enc", 3) == 0) {
        size_t n = 0;
        uint8_t *bytes = xcheck_unhex(payload, &n);
        m = bytes != NULL ? protobuf_c_message_unpack(desc, NULL, n, bytes) : NULL;
        free(bytes);
        if (m == NULL) {
            printf("err\tbad packed bytes\n");
            return;
        }
    } else {
        ws_json_error err;
        ws_err rc = ws_json_decode(desc, payload, strlen(payload), NULL, &m, &err);
        if (rc != WS_OK) {
            printf("err\t%s: %s\n", ws_errname(rc), err.text);
            return;
        }
    }
    if (strcmp(op, "dec") == 0) {
        printf("ok\t");
        xcheck_hex(m);
        printf("\n");
    } else {
        ws_buf out;
        ws_buf_init(&out, 0);
        ws_err rc =
            ws_json_encode(m, strcmp(op, "enc_camel") == 0 ? WS_JSON_CAMEL : 0, &out);
        if (rc == WS_OK) {
            printf("ok\t%s\n", out.data);
        } else {
            printf("err\tencode: %s\n", ws_errname(rc));
        }
        ws_buf_fini(&out);
    }
    protobuf_c_message_free_unpacked(m, NULL);
}

static int xcheck_batch(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        if (line[n - 1] == '\n') {
            line[n - 1] = '\0';
        }
        xcheck_batch_one(line);
    }
    free(line);
    return 0;
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
    xcheck_register();
    if (argc == 2 && strcmp(argv[1], "batch") == 0) {
        return xcheck_batch();
    }
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
    fprintf(stderr, "usage: %s dump | decode full.MessageName < json | batch\n", argv[0]);
    return 2;
}
