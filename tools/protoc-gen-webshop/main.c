/*
 * protoc-gen-webshop: a protoc plugin that writes typed RPC client stubs and
 * server bindings ("<file>.rpc.h", "<file>.rpc.c") for the services of
 * .proto files, over the webshop RPC runtime. protoc runs it as
 *   protoc --plugin=protoc-gen-webshop=PATH --webshop_out=DIR ...
 * This file only reads the CodeGeneratorRequest from stdin and writes the
 * CodeGeneratorResponse to stdout; gen.c does the rest. Problems with the
 * .proto files travel back in CodeGeneratorResponse.error (exit 0, as the
 * plugin protocol asks); a request that cannot be read or an exhausted heap
 * is a message on stderr and exit 1. Run by hand it answers --help and
 * --version (exit 0) and refuses anything else (exit 2; plugin_cli.c).
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "gen.h"
#include "plugin_cli.h"

#ifndef WEBSHOP_VERSION
#define WEBSHOP_VERSION "0.0.0"
#endif

static const char main_help[] =
    "Writes typed RPC client stubs and server bindings, <file>.rpc.h and <file>.rpc.c,\n"
    "for the services of each .proto file, over the webshop RPC runtime (lib/rpc*.h);\n"
    "with the parameter \"facts\" (--webshop_out=facts:DIR), <file>.facts.h instead:\n"
    "the constants of the contract's options (topics, limits).\n"
    "protoc runs it and sends a CodeGeneratorRequest on stdin; it answers with a\n"
    "CodeGeneratorResponse on stdout. Problems in the .proto files are reported\n"
    "through protoc (exit 0, as the plugin protocol asks); an unreadable request is\n"
    "a message on stderr and exit 1.\n\n"
    "  -h, --help     this text\n"
    "  --version      the plugin's version\n";

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

int main(int argc, char **argv)
{
    gen_request *req;
    gen_response resp = GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
    uint8_t *in;
    uint8_t *out;
    size_t in_len = 0;
    size_t out_len;
    bool ok;
    int rc = plugin_cli("protoc-gen-webshop", WEBSHOP_VERSION, main_help, argc, argv,
                        isatty(STDIN_FILENO), stdout, stderr);

    if (rc != PLUGIN_CLI_RUN) {
        return rc;
    }
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
