/*
 * protoc-gen-webshop: a protoc plugin that writes typed RPC client stubs and
 * server bindings ("<file>.rpc.h", "<file>.rpc.c") for the services of
 * .proto files, over the webshop RPC runtime. protoc runs it as
 *   protoc --plugin=protoc-gen-webshop=PATH --webshop_out=DIR ...
 * This file only reads the CodeGeneratorRequest from stdin and writes the
 * CodeGeneratorResponse to stdout; gen.c does the rest. Problems with the
 * .proto files travel back in CodeGeneratorResponse.error (exit 0, as the
 * plugin protocol asks); a request that cannot be read or an exhausted heap
 * is a message on stderr and exit 1.
 */
#include <stdio.h>
#include <stdlib.h>

#include "gen.h"

static int main_fail(const char *what)
{
    fprintf(stderr, "protoc-gen-webshop: %s\n", what);
    return 1;
}

static uint8_t *main_read_all(FILE *in, size_t *len)
{
    size_t cap = 1 << 16;
    size_t n = 0;
    uint8_t *data = malloc(cap);

    while (data != NULL) {
        size_t got = fread(data + n, 1, cap - n, in);

        n += got;
        if (n < cap) {
            if (ferror(in)) {
                break;
            }
            *len = n;
            return data;
        }
        uint8_t *bigger = realloc(data, cap * 2);
        if (bigger == NULL) {
            break;
        }
        data = bigger;
        cap *= 2;
    }
    free(data);
    return NULL;
}

int main(void)
{
    gen_request *req;
    gen_response resp = GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
    uint8_t *in;
    uint8_t *out;
    size_t in_len = 0;
    size_t out_len;
    bool ok;

    in = main_read_all(stdin, &in_len);
    if (in == NULL) {
        return main_fail("cannot read the CodeGeneratorRequest from stdin");
    }
    req = google__protobuf__compiler__code_generator_request__unpack(NULL, in_len, in);
    free(in);
    if (req == NULL) {
        return main_fail("stdin is not a CodeGeneratorRequest (run me from protoc)");
    }
    ok = gen_run(req, &resp);
    google__protobuf__compiler__code_generator_request__free_unpacked(req, NULL);
    if (!ok) {
        gen_response_fini(&resp);
        return main_fail("out of memory");
    }
    out_len = google__protobuf__compiler__code_generator_response__get_packed_size(&resp);
    out = malloc(out_len ? out_len : 1);
    if (out == NULL) {
        gen_response_fini(&resp);
        return main_fail("out of memory");
    }
    google__protobuf__compiler__code_generator_response__pack(&resp, out);
    gen_response_fini(&resp);
    ok = fwrite(out, 1, out_len, stdout) == out_len && fflush(stdout) == 0;
    free(out);
    if (!ok) {
        return main_fail("cannot write the CodeGeneratorResponse to stdout");
    }
    return 0;
}
