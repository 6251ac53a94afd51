/*
 * Emitter of the descriptors a server serves through reflection: for a
 * generated file, the serialized FileDescriptorProto of the file and of
 * every file it imports, transitively, each once, dependencies first, as
 * byte arrays in "<file>.rpc.c" and the table IDENT__files[IDENT__n_files]
 * (ProtobufCBinaryData) that the generated register function hands to
 * ws_rpc_server_add_files(). The descriptors are the ones protoc passed in
 * the request, without source_code_info (comments and spans: only bulk for
 * a client), custom options kept (protobuf-c re-packs unknown fields).
 */
#include <stdlib.h>
#include <string.h>

#include "gen.h"

/* Append file (by name) and, first, everything it imports to order[],
 * skipping those already there. False when an import is not in the request. */
static bool desc_closure(const gen_request *req, const char *name,
                         const gen_file_proto **order, size_t *n)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(order[i]->name, name) == 0) {
            return true;
        }
    }
    const gen_file_proto *f = NULL;
    for (size_t i = 0; i < req->n_proto_file; i++) {
        if (req->proto_file[i]->name != NULL &&
            strcmp(req->proto_file[i]->name, name) == 0) {
            f = req->proto_file[i];
        }
    }
    if (f == NULL) {
        return false;
    }
    for (size_t i = 0; i < f->n_dependency; i++) {
        if (!desc_closure(req, f->dependency[i], order, n)) {
            return false;
        }
    }
    order[(*n)++] = f;
    return true;
}

void emit_descriptors_decl(const gen_file *f, strbuf *out)
{
    strbuf_printf(
        out,
        "\n"
        "/* Serialized google.protobuf.FileDescriptorProtos of %s and of every\n"
        " * file it imports, dependencies first: what the register functions\n"
        " * below hand to ws_rpc_server_add_files() for reflection. */\n"
        "extern const ProtobufCBinaryData %s__files[];\n"
        "extern const size_t %s__n_files;\n",
        f->proto->name, f->ident, f->ident);
}

/* One file's bytes as a static array named IDENT__file_K. */
static bool desc_emit_one(const gen_file *f, const gen_file_proto *fp, size_t k,
                          strbuf *out)
{
    Google__Protobuf__FileDescriptorProto copy = *fp;
    copy.source_code_info = NULL;
    size_t len = google__protobuf__file_descriptor_proto__get_packed_size(&copy);
    uint8_t *b = malloc(len ? len : 1);
    if (b == NULL) {
        return false;
    }
    google__protobuf__file_descriptor_proto__pack(&copy, b);
    strbuf_printf(out, "\n/* %s */\nstatic const uint8_t %s__file_%zu[%zu] = {", fp->name,
                  f->ident, k, len ? len : 1);
    for (size_t i = 0; i < len; i++) {
        strbuf_printf(out, "%s0x%02x,", i % 16 == 0 ? "\n   " : " ", b[i]);
    }
    strbuf_puts(out, len ? "\n};\n" : "0};\n");
    free(b);
    return true;
}

bool emit_descriptors_source(const gen_file *f, strbuf *out)
{
    const gen_request *req = f->req;
    const gen_file_proto **order = calloc(req->n_proto_file + 1, sizeof(*order));
    size_t n = 0;
    if (order == NULL || !desc_closure(req, f->proto->name, order, &n)) {
        free(order);
        return false;
    }
    strbuf_puts(out, "\n/* ---- descriptors, for reflection ---- */\n");
    for (size_t k = 0; k < n; k++) {
        if (!desc_emit_one(f, order[k], k, out)) {
            free(order);
            return false;
        }
    }
    strbuf_printf(out, "\nconst ProtobufCBinaryData %s__files[] = {\n", f->ident);
    for (size_t k = 0; k < n; k++) {
        strbuf_printf(out, "    {sizeof(%s__file_%zu), (uint8_t *)%s__file_%zu},\n",
                      f->ident, k, f->ident, k);
    }
    strbuf_printf(out, "};\nconst size_t %s__n_files = %zu;\n", f->ident, n);
    free(order);
    return true;
}
