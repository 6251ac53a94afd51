/*
 * lib/proto_dyn against protoc-c: for every contract message and the
 * all-types test message, a sample with every field set is packed with the
 * compiled descriptor, unpacked with the descriptor built at run time from
 * protoc's FileDescriptorSet, and must pack back to the same bytes and write
 * the same JSON; JSON read with the dynamic descriptor packs to the compiled
 * bytes too. Also: services and lookups, a missing dependency, bad bytes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alltypes.pb-c.h"
#include "buf.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "json.h"
#include "json_sample.h"
#include "proto_dyn.h"

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* A pool of every file of the descriptor set the build wrote. */
static ws_proto_dyn *pool_from_set(size_t skip_first)
{
    size_t len = 0;
    uint8_t *set = read_file(DESC_SET, &len);
    Google__Protobuf__FileDescriptorSet *fs =
        google__protobuf__file_descriptor_set__unpack(NULL, len, set);
    cr_assert_not_null(fs);
    ws_proto_dyn *p = NULL;
    cr_assert_eq(ws_proto_dyn_new(&p), WS_OK);
    for (size_t i = skip_first; i < fs->n_file; i++) {
        size_t n = google__protobuf__file_descriptor_proto__get_packed_size(fs->file[i]);
        uint8_t *b = malloc(n);
        google__protobuf__file_descriptor_proto__pack(fs->file[i], b);
        cr_assert_eq(ws_proto_dyn_add_file(p, b, n), WS_OK);
        free(b);
    }
    google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
    free(set);
    return p;
}

static char *json_of(const ProtobufCMessage *m)
{
    ws_buf b;
    ws_buf_init(&b, 1 << 20);
    cr_assert_eq(ws_json_encode(m, 0, &b), WS_OK, "%s", m->descriptor->name);
    char *s = strndup(b.data, b.len);
    ws_buf_fini(&b);
    return s;
}

static void same_as_compiled(ws_proto_dyn *p, const ProtobufCMessageDescriptor *cd)
{
    const ProtobufCMessageDescriptor *dd = ws_proto_dyn_message(p, cd->name);
    cr_assert_not_null(dd, "%s not in the pool", cd->name);
    cr_assert_neq(dd, cd);
    cr_assert_eq(dd->n_fields, cd->n_fields, "%s", cd->name);
    ProtobufCMessage *m = json_sample_new(cd, JSON_SAMPLE_DEPTH);
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *want = malloc(n + 1);
    protobuf_c_message_pack(m, want);

    ProtobufCMessage *dm = protobuf_c_message_unpack(dd, NULL, n, want);
    cr_assert_not_null(dm, "%s: the dynamic descriptor cannot unpack", cd->name);
    size_t dn = protobuf_c_message_get_packed_size(dm);
    uint8_t *got = malloc(dn + 1);
    protobuf_c_message_pack(dm, got);
    cr_assert_eq(dn, n, "%s: %zu bytes packed back, %zu expected", cd->name, dn, n);
    cr_assert(memcmp(got, want, n) == 0, "%s: other bytes packed back", cd->name);

    char *jc = json_of(m), *jd = json_of(dm);
    cr_assert_str_eq(jd, jc, "%s", cd->name);

    ProtobufCMessage *fromjson = NULL;
    ws_json_error e;
    cr_assert_eq(ws_json_decode(dd, jc, strlen(jc), NULL, &fromjson, &e), WS_OK, "%s: %s",
                 cd->name, e.text);
    size_t jn = protobuf_c_message_get_packed_size(fromjson);
    uint8_t *jb = malloc(jn + 1);
    protobuf_c_message_pack(fromjson, jb);
    cr_assert_eq(jn, n, "%s: JSON read dynamically packs to %zu bytes, %zu expected",
                 cd->name, jn, n);
    cr_assert(memcmp(jb, want, n) == 0, "%s", cd->name);

    protobuf_c_message_free_unpacked(fromjson, NULL);
    protobuf_c_message_free_unpacked(dm, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    free(jc);
    free(jd);
    free(jb);
    free(got);
    free(want);
}

Test(proto_dyn, every_contract_message_packs_and_writes_json_as_compiled)
{
    ws_proto_dyn *p = pool_from_set(0);
    const char *missing = NULL;
    cr_assert_eq(ws_proto_dyn_build(p, &missing), WS_OK, "missing %s", missing);
    for (size_t i = 0; i < json_sample_contracts_n; i++) {
        same_as_compiled(p, json_sample_contracts[i]);
    }
    ws_proto_dyn_free(p);
}

Test(proto_dyn, all_types_with_maps_oneofs_optionals_and_nesting)
{
    ws_proto_dyn *p = pool_from_set(0);
    cr_assert_eq(ws_proto_dyn_build(p, NULL), WS_OK);
    same_as_compiled(p, &webshop_test__all_types__descriptor);
    ws_proto_dyn_free(p);
}

Test(proto_dyn, services_methods_enums_and_files_are_found)
{
    ws_proto_dyn *p = pool_from_set(0);
    cr_assert_eq(ws_proto_dyn_build(p, NULL), WS_OK);
    const ProtobufCServiceDescriptor *s = ws_proto_dyn_service(p, "webshop.v1.Inventory");
    cr_assert_not_null(s);
    cr_assert_geq(s->n_methods, 2);
    int seen = 0;
    for (unsigned i = 0; i < s->n_methods; i++) {
        if (strcmp(s->methods[i].name, "GetCatalog") == 0) {
            cr_assert_str_eq(s->methods[i].input->name, "webshop.v1.GetCatalogRequest");
            cr_assert_eq(s->methods[i].output,
                         ws_proto_dyn_message(p, "webshop.v1.GetCatalogResponse"));
            seen = 1;
        }
    }
    cr_assert(seen);
    const ProtobufCEnumDescriptor *e = ws_proto_dyn_enum(p, ".webshop.v1.OrderStatus");
    cr_assert_not_null(e);
    cr_assert_not_null(protobuf_c_enum_descriptor_get_value_by_name(e, "CANCELED"));
    const Google__Protobuf__FileDescriptorProto *f =
        (const void *)ws_proto_dyn_file_of(p, "webshop.v1.Orders.GetOrder");
    cr_assert_not_null(f);
    cr_assert_str_eq(f->name, "webshop/v1/order.proto");
    cr_assert_null(ws_proto_dyn_message(p, "webshop.v1.NoSuch"));
    cr_assert_null(ws_proto_dyn_file_of(p, "no.such.Thing"));
    ws_proto_dyn_free(p);
}

Test(proto_dyn, a_missing_dependency_and_bad_bytes_are_refused)
{
    /* The set lists dependencies first: without the first file (the
     * descriptor.proto of the options), a later file's types do not
     * resolve if they use it; without all but the last, surely not. */
    size_t len = 0;
    uint8_t *set = read_file(DESC_SET, &len);
    Google__Protobuf__FileDescriptorSet *fs =
        google__protobuf__file_descriptor_set__unpack(NULL, len, set);
    ws_proto_dyn *p = NULL;
    cr_assert_eq(ws_proto_dyn_new(&p), WS_OK);
    const Google__Protobuf__FileDescriptorProto *last = NULL;
    for (size_t i = 0; i < fs->n_file; i++) {
        if (strcmp(fs->file[i]->name, "webshop/v1/inventory.proto") == 0) {
            last = fs->file[i];
        }
    }
    cr_assert_not_null(last);
    size_t n = google__protobuf__file_descriptor_proto__get_packed_size(last);
    uint8_t *b = malloc(n);
    google__protobuf__file_descriptor_proto__pack(last, b);
    cr_assert_eq(ws_proto_dyn_add_file(p, b, n), WS_OK);
    cr_assert_eq(ws_proto_dyn_add_file(p, b, n), WS_OK, "a file twice is skipped");
    const char *missing = NULL;
    cr_assert_eq(ws_proto_dyn_build(p, &missing), WS_ENOTFOUND);
    cr_assert_not_null(missing);
    cr_assert(strstr(missing, "webshop.v1.") != NULL, "%s", missing);
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    cr_assert_eq(ws_proto_dyn_add_file(p, junk, sizeof(junk)), WS_EPARSE);
    free(b);
    ws_proto_dyn_free(p);
    google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
    free(set);
}
