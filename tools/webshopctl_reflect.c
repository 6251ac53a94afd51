/*
 * webshopctl's run-time types (webshopctl_reflect.h): the descriptors come
 * from the server's reflection, a descriptor set file, or protoc run on
 * .proto files; lib/proto_dyn builds them. describe prints from the
 * descriptor protos themselves, so what it shows is what the server sent.
 */
#include "webshopctl_reflect.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "webshop/v1/rpc.rpc.h"

#define WSCTL_SET_MAX (64u << 20)

static void wsctl_err(char *err, size_t len, const char *fmt, const char *a,
                      const char *b)
{
    snprintf(err, len, fmt, a, b);
}

/* Add every file of a FileDescriptorSet (bytes). */
static int wsctl_set_add(ws_proto_dyn *p, const uint8_t *data, size_t len,
                         const char *what, char *err, size_t err_len)
{
    Google__Protobuf__FileDescriptorSet *fs =
        google__protobuf__file_descriptor_set__unpack(NULL, len, data);
    if (fs == NULL) {
        wsctl_err(err, err_len, "%s: not a FileDescriptorSet%s", what, "");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < fs->n_file; i++) {
        size_t n = google__protobuf__file_descriptor_proto__get_packed_size(fs->file[i]);
        uint8_t *b = malloc(n ? n : 1);
        if (b == NULL) {
            rc = -1;
            break;
        }
        google__protobuf__file_descriptor_proto__pack(fs->file[i], b);
        rc = ws_proto_dyn_add_file(p, b, n) == WS_OK ? 0 : -1;
        free(b);
    }
    google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
    if (rc != 0) {
        wsctl_err(err, err_len, "%s: a file of the set does not load%s", what, "");
    }
    return rc;
}

static int wsctl_file_read(const char *path, uint8_t **data, size_t *len, char *err,
                           size_t err_len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        wsctl_err(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    while (b != NULL) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0 || n > WSCTL_SET_MAX) {
            break;
        }
        if (n == cap) {
            uint8_t *g = realloc(b, cap * 2);
            if (g == NULL) {
                free(b);
                b = NULL;
            }
            b = g;
            cap *= 2;
        }
    }
    int bad = ferror(f) || b == NULL || n > WSCTL_SET_MAX;
    fclose(f);
    if (bad) {
        free(b);
        wsctl_err(err, err_len, "%s: cannot read it (or larger than 64 MiB)%s", path, "");
        return -1;
    }
    *data = b;
    *len = n;
    return 0;
}

/* protoc --include_imports -o TMP [-I DIR]... FILE, then load TMP. */
static int wsctl_proto_compile(ws_proto_dyn *p, const wsctl_types_src *src, char *err,
                               size_t err_len)
{
    char tmp[] = "/tmp/webshopctl-XXXXXX";
    int fd = mkstemp(tmp);
    if (fd < 0) {
        wsctl_err(err, err_len, "temp file: %s%s", strerror(errno), "");
        return -1;
    }
    close(fd);
    char out[300], *paths = strdup(src->import_path ? src->import_path : ".");
    char *argv[72];
    size_t n = 0;
    snprintf(out, sizeof(out), "--descriptor_set_out=%s", tmp);
    argv[n++] = "protoc";
    argv[n++] = "--include_imports";
    argv[n++] = out;
    static char incs[64][1024];
    size_t k = 0;
    for (char *save = NULL, *d = paths ? strtok_r(paths, ":", &save) : NULL;
         d != NULL && k < 64; d = strtok_r(NULL, ":", &save), k++) {
        snprintf(incs[k], sizeof(incs[k]), "--proto_path=%s", d);
        argv[n++] = incs[k];
    }
    argv[n++] = (char *)src->proto;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        execvp("protoc", argv);
        fprintf(stderr, "webshopctl: protoc: %s\n", strerror(errno));
        _exit(127);
    }
    int status = 0;
    int ok = pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
             WEXITSTATUS(status) == 0;
    free(paths);
    int rc = -1;
    uint8_t *data = NULL;
    size_t len = 0;
    if (!ok) {
        wsctl_err(err, err_len, "protoc could not compile %s%s", src->proto, "");
    } else if (wsctl_file_read(tmp, &data, &len, err, err_len) == 0) {
        rc = wsctl_set_add(p, data, len, src->proto, err, err_len);
        free(data);
    }
    unlink(tmp);
    return rc;
}

/* The server's descriptors of symbol, through reflection. */
static int wsctl_reflect(ws_proto_dyn *p, ws_rpc_client *c, uint32_t deadline_ms,
                         const char *symbol, char *err, size_t err_len)
{
    Webshop__V1__FileContainingSymbolRequest req =
        WEBSHOP__V1__FILE_CONTAINING_SYMBOL_REQUEST__INIT;
    Webshop__V1__FileDescriptorResponse *resp = NULL;
    char msg[WS_RPC_MSG_LEN] = "";
    req.symbol = (char *)symbol;
    ws_rpc_code code = webshop_v1_reflection_file_containing_symbol_ex(
        c, &req, &resp, deadline_ms, msg, sizeof(msg));
    if (code != WS_RPC_OK) {
        snprintf(err, err_len, "%s (%s): %s%s%s",
                 WEBSHOP_V1_REFLECTION_FILE_CONTAINING_SYMBOL_METHOD, symbol,
                 ws_rpc_code_name(code), msg[0] ? ": " : "", msg);
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < resp->n_file_descriptor_proto; i++) {
        rc = ws_proto_dyn_add_file(p, resp->file_descriptor_proto[i].data,
                                   resp->file_descriptor_proto[i].len) == WS_OK
                 ? 0
                 : -1;
    }
    webshop__v1__file_descriptor_response__free_unpacked(resp, NULL);
    if (rc != 0) {
        wsctl_err(err, err_len, "the server sent a descriptor that does not load (%s)%s",
                  symbol, "");
    }
    return rc;
}

ws_proto_dyn *wsctl_types_load(const wsctl_types_src *src, ws_rpc_client *c,
                               uint32_t deadline_ms, const char *symbol, char *err,
                               size_t err_len)
{
    ws_proto_dyn *p = NULL;
    if (ws_proto_dyn_new(&p) != WS_OK) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    int rc;
    if (src->protoset != NULL) {
        uint8_t *data = NULL;
        size_t len = 0;
        rc = wsctl_file_read(src->protoset, &data, &len, err, err_len);
        if (rc == 0) {
            rc = wsctl_set_add(p, data, len, src->protoset, err, err_len);
            free(data);
        }
    } else if (src->proto != NULL) {
        rc = wsctl_proto_compile(p, src, err, err_len);
    } else {
        rc = wsctl_reflect(p, c, deadline_ms, symbol, err, err_len);
    }
    const char *missing = NULL;
    if (rc == 0 && ws_proto_dyn_build(p, &missing) != WS_OK) {
        wsctl_err(err, err_len, "the descriptors do not resolve: %s is missing%s",
                  missing ? missing : "a type", "");
        rc = -1;
    }
    if (rc == 0 && ws_proto_dyn_proto_of(p, symbol) == NULL) {
        wsctl_err(err, err_len, "%s: no such service, method, message or enum%s", symbol,
                  "");
        rc = -1;
    }
    if (rc != 0) {
        ws_proto_dyn_free(p);
        return NULL;
    }
    return p;
}

int wsctl_method_split(const char *name, char *service, size_t service_len, char *method,
                       size_t method_len)
{
    const char *s = name[0] == '/' ? name + 1 : name;
    const char *cut = strchr(s, '/');
    if (cut == NULL) {
        cut = strrchr(s, '.');
    }
    if (cut == NULL || cut == s || cut[1] == '\0' || strchr(cut + 1, '/') != NULL ||
        (size_t)(cut - s) >= service_len || strlen(cut + 1) >= method_len) {
        return 0;
    }
    memcpy(service, s, (size_t)(cut - s));
    service[cut - s] = '\0';
    snprintf(method, method_len, "%s", cut + 1);
    return strchr(service, '.') != NULL;
}

/* ---- describe --------------------------------------------------------------- */

static const char *wsctl_scalar_name(int type)
{
    static const char *const names[] = {
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE] = "double",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT] = "float",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT64] = "int64",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT64] = "uint64",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT32] = "int32",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED64] = "fixed64",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED32] = "fixed32",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BOOL] = "bool",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_STRING] = "string",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BYTES] = "bytes",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT32] = "uint32",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED32] = "sfixed32",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64] = "sfixed64",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32] = "sint32",
        [GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT64] = "sint64",
    };
    return type > 0 && (size_t)type < sizeof(names) / sizeof(names[0]) && names[type]
               ? names[type]
               : "?";
}

static const char *wsctl_type_of(const Google__Protobuf__FieldDescriptorProto *f)
{
    if (f->type_name != NULL) {
        return f->type_name[0] == '.' ? f->type_name + 1 : f->type_name;
    }
    return wsctl_scalar_name(f->type);
}

/* The map entry a field names, when it is a map field. */
static const Google__Protobuf__DescriptorProto *
wsctl_map_entry(const ws_proto_dyn *p, const Google__Protobuf__FieldDescriptorProto *f)
{
    if (f->type != GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE ||
        f->label != GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED ||
        f->type_name == NULL) {
        return NULL;
    }
    const Google__Protobuf__DescriptorProto *e = (const void *)ws_proto_dyn_proto_of(
        p, f->type_name[0] == '.' ? f->type_name + 1 : f->type_name);
    return e != NULL && e->options != NULL && e->options->has_map_entry &&
                   e->options->map_entry && e->n_field == 2
               ? e
               : NULL;
}

static void wsctl_field_print(const ws_proto_dyn *p,
                              const Google__Protobuf__FieldDescriptorProto *f,
                              const char *indent, FILE *out)
{
    const Google__Protobuf__DescriptorProto *e = wsctl_map_entry(p, f);
    if (e != NULL) {
        fprintf(out, "%smap<%s, %s> %s = %d;\n", indent, wsctl_type_of(e->field[0]),
                wsctl_type_of(e->field[1]), f->name, f->number);
        return;
    }
    const char *label = "";
    if (f->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED) {
        label = "repeated ";
    } else if (f->has_proto3_optional && f->proto3_optional) {
        label = "optional ";
    }
    fprintf(out, "%s%s%s %s = %d;\n", indent, label, wsctl_type_of(f), f->name,
            f->number);
}

static void wsctl_message_print(const ws_proto_dyn *p,
                                const Google__Protobuf__DescriptorProto *m,
                                const char *full, FILE *out)
{
    fprintf(out, "message %s {\n", full);
    for (size_t i = 0; i < m->n_field; i++) {
        const Google__Protobuf__FieldDescriptorProto *f = m->field[i];
        int in_oneof =
            f->has_oneof_index && !(f->has_proto3_optional && f->proto3_optional);
        if (!in_oneof) {
            wsctl_field_print(p, f, "  ", out);
        }
    }
    for (size_t o = 0; o < m->n_oneof_decl; o++) {
        int any = 0;
        for (size_t i = 0; i < m->n_field; i++) {
            const Google__Protobuf__FieldDescriptorProto *f = m->field[i];
            if (f->has_oneof_index && f->oneof_index == (int32_t)o &&
                !(f->has_proto3_optional && f->proto3_optional)) {
                if (!any) {
                    fprintf(out, "  oneof %s {\n", m->oneof_decl[o]->name);
                    any = 1;
                }
                wsctl_field_print(p, f, "    ", out);
            }
        }
        if (any) {
            fputs("  }\n", out);
        }
    }
    fputs("}\n", out);
}

static void wsctl_rpc_print(const Google__Protobuf__MethodDescriptorProto *m,
                            const char *indent, FILE *out)
{
    const char *in = m->input_type[0] == '.' ? m->input_type + 1 : m->input_type;
    const char *ot = m->output_type[0] == '.' ? m->output_type + 1 : m->output_type;
    fprintf(out, "%srpc %s(%s) returns (%s);\n", indent, m->name, in, ot);
}

int wsctl_describe(const ws_proto_dyn *p, const char *symbol, FILE *out)
{
    const ProtobufCMessage *pb = ws_proto_dyn_proto_of(p, symbol);
    if (pb == NULL) {
        return -1;
    }
    const char *kind = pb->descriptor->name;
    if (strcmp(kind, "google.protobuf.DescriptorProto") == 0) {
        wsctl_message_print(p, (const void *)pb, symbol, out);
    } else if (strcmp(kind, "google.protobuf.EnumDescriptorProto") == 0) {
        const Google__Protobuf__EnumDescriptorProto *e = (const void *)pb;
        fprintf(out, "enum %s {\n", symbol);
        for (size_t i = 0; i < e->n_value; i++) {
            fprintf(out, "  %s = %d;\n", e->value[i]->name, e->value[i]->number);
        }
        fputs("}\n", out);
    } else if (strcmp(kind, "google.protobuf.ServiceDescriptorProto") == 0) {
        const Google__Protobuf__ServiceDescriptorProto *s = (const void *)pb;
        fprintf(out, "service %s {\n", symbol);
        for (size_t i = 0; i < s->n_method; i++) {
            wsctl_rpc_print(s->method[i], "  ", out);
        }
        fputs("}\n", out);
    } else {
        wsctl_rpc_print((const void *)pb, "", out);
    }
    return 0;
}
