/*
 * The well-known types in the JSON transcoder (lib/json_wkt.c): each type's
 * canonical form both ways with its edge values, the inputs only accepted
 * (offsets, short fractions), the range checks with errors naming the field,
 * the registry behind Any, and the two float edges (FLT_MAX written so that
 * every parser accepts it, a singular -0.0 kept in JSON). Run under ASan,
 * every rejection is also a leak check.
 */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alltypes.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/field_mask.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/timestamp.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "json.h"
#include "wkt.pb-c.h"

static const ProtobufCMessageDescriptor *const wk = &webshop_test__well_known__descriptor;

/* Decode text as desc; assert success. */
static ProtobufCMessage *dec_ok(const ProtobufCMessageDescriptor *desc, const char *text)
{
    ProtobufCMessage *m = NULL;
    ws_json_error err;
    ws_err rc = ws_json_decode(desc, text, strlen(text), NULL, &m, &err);
    cr_assert_eq(rc, WS_OK, "decode of %s failed: %s", text, err.text);
    return m;
}

/* Decode text as desc; assert WS_EPARSE with exactly the error want. */
static void dec_fails(const ProtobufCMessageDescriptor *desc, const char *text,
                      const char *want)
{
    ProtobufCMessage *m = NULL;
    ws_json_error err;
    ws_err rc = ws_json_decode(desc, text, strlen(text), NULL, &m, &err);
    cr_assert_eq(rc, WS_EPARSE, "%s: rc %s", text, ws_errname(rc));
    cr_assert_null(m);
    cr_assert_str_eq(err.text, want, "%s", text);
}

/* Encode m; assert the text. */
static void enc_is(const ProtobufCMessage *m, const char *want)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    ws_err rc = ws_json_encode(m, 0, &b);
    cr_assert_eq(rc, WS_OK, "encode failed: %s (want %s)", ws_errname(rc), want);
    cr_assert_str_eq(b.data, want);
    ws_buf_fini(&b);
}

/* Encode m; assert it fails with rc and the error text, and leaves the
 * buffer as it was. */
static void enc_fails_with(const ProtobufCMessage *m, ws_err want, const char *text)
{
    ws_buf b;
    ws_buf_init(&b, 0);
    cr_assert_eq(ws_buf_puts(&b, "kept"), WS_OK);
    cr_assert_eq(ws_json_encode(m, 0, &b), want);
    cr_assert_str_eq(b.data, "kept");
    ws_json_error err;
    cr_assert_eq(ws_json_encode_err(m, 0, &b, &err), want);
    cr_assert_str_eq(b.data, "kept");
    if (text != NULL) {
        cr_assert_str_eq(err.text, text);
    }
    ws_buf_fini(&b);
}

#define enc_fails(m, want) enc_fails_with(m, want, NULL)

/* text decodes as desc and encodes back as canon (text itself when NULL). */
static void canon(const ProtobufCMessageDescriptor *desc, const char *text,
                  const char *out)
{
    ProtobufCMessage *m = dec_ok(desc, text);
    enc_is(m, out != NULL ? out : text);
    protobuf_c_message_free_unpacked(m, NULL);
}

Test(json_wkt, timestamp_writes_utc_with_0_3_6_or_9_digits)
{
    static const struct {
        int64_t s;
        int32_t n;
        const char *text;
    } cases[] = {
        {0, 0, "\"1970-01-01T00:00:00Z\""},
        {63108020, 21000000, "\"1972-01-01T10:00:20.021Z\""},
        {1, 1000, "\"1970-01-01T00:00:01.000001Z\""},
        {1, 1, "\"1970-01-01T00:00:01.000000001Z\""},
        {1, 100000000, "\"1970-01-01T00:00:01.100Z\""},
        {-1, 999999999, "\"1969-12-31T23:59:59.999999999Z\""},
        {951782400, 0, "\"2000-02-29T00:00:00Z\""},
        {-62135596800, 0, "\"0001-01-01T00:00:00Z\""},
        {253402300799, 999999999, "\"9999-12-31T23:59:59.999999999Z\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        t.seconds = cases[i].s;
        t.nanos = cases[i].n;
        enc_is(&t.base, cases[i].text);
        Google__Protobuf__Timestamp *back =
            (void *)dec_ok(t.base.descriptor, cases[i].text);
        cr_assert_eq(back->seconds, t.seconds, "%s", cases[i].text);
        cr_assert_eq(back->nanos, t.nanos, "%s", cases[i].text);
        protobuf_c_message_free_unpacked(&back->base, NULL);
    }
}

Test(json_wkt, timestamp_reads_any_offset_and_fraction)
{
    const ProtobufCMessageDescriptor *d = &google__protobuf__timestamp__descriptor;
    canon(d, "\"1972-01-01T11:00:20.021+01:00\"", "\"1972-01-01T10:00:20.021Z\"");
    canon(d, "\"1972-01-01T09:30:20.021-00:30\"", "\"1972-01-01T10:00:20.021Z\"");
    canon(d, "\"1972-01-01T10:00:20.5Z\"", "\"1972-01-01T10:00:20.500Z\"");
    canon(d, "\"1972-01-01T10:00:20.0000001Z\"", "\"1972-01-01T10:00:20.000000100Z\"");
    canon(d, "\"1972-01-01T10:00:20.000Z\"", "\"1972-01-01T10:00:20Z\"");
    /* Inside the range only once the offset is applied. */
    canon(d, "\"0000-12-31T23:30:00-01:00\"", "\"0001-01-01T00:30:00Z\"");
    canon(d, "\"9999-12-31T23:59:59.999Z\"", NULL);
}

Test(json_wkt, timestamp_out_of_range_or_malformed_names_the_field)
{
    const char *range = "ts: timestamp out of range (years 0001 to 9999 in UTC)";
    const char *form = "ts: expected RFC 3339 timestamp (\"1972-01-01T10:00:20.021Z\")";
    dec_fails(wk, "{\"ts\":\"0000-12-31T23:59:59Z\"}", range);
    dec_fails(wk, "{\"ts\":\"0001-01-01T00:00:00+00:01\"}", range);
    dec_fails(wk, "{\"ts\":\"9999-12-31T23:59:59-01:00\"}", range);
    dec_fails(wk, "{\"r_ts\":[\"1970-01-01T00:00:00Z\",\"0000-01-01T00:00:00Z\"]}",
              "r_ts[1]: timestamp out of range (years 0001 to 9999 in UTC)");
    static const char *const bad[] = {
        "\"1972-02-30T00:00:00Z\"",     "\"1971-02-29T00:00:00Z\"",
        "\"1972-01-01T24:00:00Z\"",     "\"1972-01-01T23:59:60Z\"",
        "\"1972-01-01 10:00:20Z\"",     "\"1972-01-01t10:00:20Z\"",
        "\"1972-01-01T10:00:20z\"",     "\"1972-01-01T10:00:20\"",
        "\"1972-01-01T10:00:20.Z\"",    "\"1972-01-01T10:00:20.1234567891Z\"",
        "\"1972-01-01T10:00:20+0100\"", "\"1972-01-01T10:00:20+24:00\"",
        "\"10000-01-01T00:00:00Z\"",    "\"1972-1-01T10:00:20Z\"",
        "\"1972-01-01T10:00:20ZZ\"",    "63108020",
        "{\"seconds\":\"63108020\"}",   "\"\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[96];
        snprintf(text, sizeof text, "{\"ts\":%s}", bad[i]);
        dec_fails(wk, text, form);
    }
    Google__Protobuf__Timestamp t = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    t.seconds = 253402300800;
    enc_fails_with(&t.base, WS_ERANGE,
                   "timestamp out of range (years 0001 to 9999 in UTC)");
    t.seconds = -62135596801;
    enc_fails(&t.base, WS_ERANGE);
    t.seconds = 0;
    t.nanos = -1;
    enc_fails_with(&t.base, WS_ERANGE, "timestamp nanos out of range (0 to 999999999)");
    t.nanos = 1000000000;
    enc_fails(&t.base, WS_ERANGE);
    /* Inside a message the error names the field. */
    Google__Protobuf__Timestamp ok = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    Google__Protobuf__Timestamp *list[] = {&ok, &t};
    WebshopTest__WellKnown m = WEBSHOP_TEST__WELL_KNOWN__INIT;
    m.r_ts = list;
    m.n_r_ts = 2;
    enc_fails_with(&m.base, WS_ERANGE,
                   "r_ts[1]: timestamp nanos out of range (0 to 999999999)");
    m.n_r_ts = 0;
    m.pick_case = WEBSHOP_TEST__WELL_KNOWN__PICK_O_TS;
    m.o_ts = &t;
    enc_fails_with(&m.base, WS_ERANGE,
                   "o_ts: timestamp nanos out of range (0 to 999999999)");
}

Test(json_wkt, duration_both_ways_with_its_limits)
{
    static const struct {
        int64_t s;
        int32_t n;
        const char *text;
    } cases[] = {
        {0, 0, "\"0s\""},
        {1, 340012, "\"1.000340012s\""},
        {-1, -340012, "\"-1.000340012s\""},
        {0, -500000000, "\"-0.500s\""},
        {0, 1000, "\"0.000001s\""},
        {315576000000, 999999999, "\"315576000000.999999999s\""},
        {-315576000000, -999999999, "\"-315576000000.999999999s\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Google__Protobuf__Duration du = GOOGLE__PROTOBUF__DURATION__INIT;
        du.seconds = cases[i].s;
        du.nanos = cases[i].n;
        enc_is(&du.base, cases[i].text);
        Google__Protobuf__Duration *back =
            (void *)dec_ok(du.base.descriptor, cases[i].text);
        cr_assert_eq(back->seconds, du.seconds, "%s", cases[i].text);
        cr_assert_eq(back->nanos, du.nanos, "%s", cases[i].text);
        protobuf_c_message_free_unpacked(&back->base, NULL);
    }
    canon(&google__protobuf__duration__descriptor, "\"1.5s\"", "\"1.500s\"");
    canon(&google__protobuf__duration__descriptor, "\"-0.0000001s\"",
          "\"-0.000000100s\"");
    dec_fails(wk, "{\"dur\":\"315576000001s\"}",
              "dur: duration out of range (at most 315576000000s either way)");
    dec_fails(wk, "{\"m_dur\":{\"k\":\"-99999999999999999999s\"}}",
              "m_dur.k: duration out of range (at most 315576000000s either way)");
    static const char *const bad[] = {
        "\"1\"",    "\"1s \"",  "\"+1s\"", "\".5s\"", "\"1.s\"", "\"1.1234567891s\"",
        "\"1e3s\"", "\"--1s\"", "1.5",     "\"s\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "{\"dur\":%s}", bad[i]);
        dec_fails(wk, text, "dur: expected duration (\"1.5s\", \"-0.000001s\")");
    }
    Google__Protobuf__Duration du = GOOGLE__PROTOBUF__DURATION__INIT;
    du.seconds = 1;
    du.nanos = -1; /* the signs disagree */
    enc_fails_with(&du.base, WS_ERANGE, "duration seconds and nanos differ in sign");
    du.seconds = -1;
    du.nanos = 1;
    enc_fails(&du.base, WS_ERANGE);
    du.seconds = 0;
    du.nanos = 1000000000;
    enc_fails(&du.base, WS_ERANGE);
    du.seconds = 315576000001;
    du.nanos = 0;
    enc_fails(&du.base, WS_ERANGE);
    /* A map value's error names its key. */
    Google__Protobuf__Duration *pdu = &du;
    WebshopTest__WellKnown__MDurEntry entry = WEBSHOP_TEST__WELL_KNOWN__MDUR_ENTRY__INIT;
    entry.key = "slow";
    entry.value = pdu;
    WebshopTest__WellKnown__MDurEntry *entries[] = {&entry};
    WebshopTest__WellKnown m = WEBSHOP_TEST__WELL_KNOWN__INIT;
    m.m_dur = entries;
    m.n_m_dur = 1;
    enc_fails_with(
        &m.base, WS_ERANGE,
        "m_dur.slow: duration out of range (at most 315576000000s either way)");
}

Test(json_wkt, empty_is_an_empty_object)
{
    canon(wk, "{\"empty\":{}}", NULL);
    dec_fails(wk, "{\"empty\":{\"x\":1}}", "empty.x: unknown field");
    dec_fails(wk, "{\"empty\":[]}", "empty: expected object");
}

Test(json_wkt, field_mask_paths_in_lower_camel_case)
{
    char *paths[] = {"a.b_c", "d", "foo_bar.baz_qux_x"};
    Google__Protobuf__FieldMask fm = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    fm.paths = paths;
    fm.n_paths = 3;
    enc_is(&fm.base, "\"a.bC,d,fooBar.bazQuxX\"");
    Google__Protobuf__FieldMask *back =
        (void *)dec_ok(fm.base.descriptor, "\"a.bC,d,fooBar.bazQuxX\"");
    cr_assert_eq(back->n_paths, 3);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_str_eq(back->paths[i], paths[i]);
    }
    protobuf_c_message_free_unpacked(&back->base, NULL);
    canon(fm.base.descriptor, "\"\"", NULL);
    dec_fails(wk, "{\"mask\":\"a.b_c\"}",
              "mask: field mask paths are lowerCamelCase: no '_' allowed");
    dec_fails(wk, "{\"mask\":[\"a\"]}", "mask: expected field mask (\"a.bC,d\")");
    /* Paths that would not read back as themselves have no JSON form. */
    char *unwritable[] = {"aB", "a_", "a__b", "a_1"};
    for (size_t i = 0; i < 4; i++) {
        fm.paths = &unwritable[i];
        fm.n_paths = 1;
        enc_fails(&fm.base, WS_EINVAL);
    }
    char *second_bad[] = {"ok", "a_B"};
    fm.paths = second_bad;
    fm.n_paths = 2;
    enc_fails_with(&fm.base, WS_EINVAL, "[1]: path \"a_B\" has no lowerCamelCase form");
}

Test(json_wkt, struct_value_and_list_are_plain_json)
{
    canon(wk,
          "{\"st\":{\"a\":1,\"b\":[true,null,\"x\",{\"c\":-0.5}],\"n\":null,\"e\":{}},"
          "\"val\":[1,[2,[]]],\"list\":[{\"k\":false},\"s\",2.5e+20]}",
          NULL);
    /* null is a Value, wherever a Value stands. */
    canon(wk, "{\"val\":null}", NULL);
    canon(wk, "{\"r_val\":[null,1,null]}", NULL);
    canon(wk, "{\"m_val\":{\"k\":null}}", NULL);
    canon(wk, "{\"o_val\":null}", NULL);
    canon(&google__protobuf__value__descriptor, "\"text\"", NULL);
    canon(&google__protobuf__value__descriptor, "null", NULL);
    canon(&google__protobuf__list_value__descriptor, "[]", NULL);
    canon(&google__protobuf__struct__descriptor, "{\"\":\"\"}", NULL);
    /* Integers are numbers (doubles), written in their shortest form. */
    canon(wk, "{\"val\":1.0}", "{\"val\":1}");
    dec_fails(wk, "{\"st\":[1]}", "st: expected object");
    dec_fails(wk, "{\"list\":{}}", "list: expected array");
    /* A Value with no kind is written as null; a number that is not finite
     * has no JSON form (as a string it would read back as a string). */
    Google__Protobuf__Value v = GOOGLE__PROTOBUF__VALUE__INIT;
    enc_is(&v.base, "null");
    v.kind_case = GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE;
    v.number_value = INFINITY;
    enc_fails(&v.base, WS_EINVAL);
    v.number_value = NAN;
    enc_fails_with(&v.base, WS_EINVAL, "a Value's number must be finite");
    WebshopTest__WellKnown *m = (void *)dec_ok(wk, "{\"st\":{\"a\":[0,{\"b\":1}]}}");
    m->st->fields[0]
        ->value->list_value->values[1]
        ->struct_value->fields[0]
        ->value->number_value = -INFINITY;
    enc_fails_with(&m->base, WS_EINVAL, "st.a[1].b: a Value's number must be finite");
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

Test(json_wkt, null_value_is_null)
{
    WebshopTest__WellKnown *m =
        (void *)dec_ok(wk, "{\"null_value\":null,\"o_null\":null}");
    cr_assert_eq(m->pick_case, WEBSHOP_TEST__WELL_KNOWN__PICK_O_NULL);
    enc_is(&m->base, "{\"o_null\":null}"); /* a singular NullValue is its default */
    protobuf_c_message_free_unpacked(&m->base, NULL);
    canon(wk, "{\"null_value\":\"NULL_VALUE\"}", "{}");
    canon(wk, "{\"null_value\":0}", "{}");
    dec_fails(wk, "{\"null_value\":\"NONE\"}",
              "null_value: unknown value \"NONE\" for enum google.protobuf.NullValue");
}

Test(json_wkt, wrappers_are_their_bare_value_zero_included)
{
    canon(wk,
          "{\"w_double\":0,\"w_float\":-0.0,\"w_int64\":\"-9223372036854775808\","
          "\"w_uint64\":\"18446744073709551615\",\"w_int32\":-2147483648,"
          "\"w_uint32\":4294967295,\"w_bool\":false,\"w_string\":\"\",\"w_bytes\":\"AAH/"
          "\"}",
          NULL);
    canon(wk, "{\"w_int64\":5,\"w_double\":\"NaN\",\"w_bytes\":\"AAH_\"}",
          "{\"w_double\":\"NaN\",\"w_int64\":\"5\",\"w_bytes\":\"AAH/\"}");
    canon(wk, "{\"w_int32\":null,\"w_string\":null}", "{}"); /* absent */
    dec_fails(wk, "{\"w_int32\":2147483648}", "w_int32: out of range for int32");
    dec_fails(wk, "{\"w_bool\":{\"value\":true}}", "w_bool: expected boolean");
    canon(&google__protobuf__string_value__descriptor, "\"x\"", NULL);
}

Test(json_wkt, any_holds_registered_and_well_known_types)
{
    const char *inner = "{\"any\":{\"@type\":\"type.googleapis.com/webshop_test.Inner\","
                        "\"count\":3,\"label\":\"x\",\"child\":{\"count\":1}}}";
    dec_fails(wk, inner,
              "any: unknown type \"type.googleapis.com/webshop_test.Inner\" in @type");
    cr_assert_null(ws_json_type_find("webshop_test.Inner"));
    /* Registering AllTypes registers every type it nests, Inner among them. */
    cr_assert_eq(ws_json_register(&webshop_test__all_types__descriptor), WS_OK);
    cr_assert_eq(ws_json_type_find("webshop_test.Inner"),
                 &webshop_test__inner__descriptor);
    cr_assert_eq(ws_json_register(&webshop_test__all_types__descriptor), WS_OK);
    cr_assert_eq(ws_json_register(NULL), WS_EINVAL);
    canon(wk, inner, NULL);
    /* Any URL prefix is kept; the name after the last '/' is looked up. */
    canon(wk, "{\"any\":{\"@type\":\"example.com/x/webshop_test.Inner\"}}", NULL);
    /* A well-known type inside is {"@type", "value"}; Empty is an ordinary
     * message; an Any may hold an Any. */
    canon(
        wk,
        "{\"r_any\":[{\"@type\":\"type.googleapis.com/google.protobuf.Timestamp\","
        "\"value\":\"1972-01-01T10:00:20.021Z\"},"
        "{\"@type\":\"type.googleapis.com/google.protobuf.Empty\"},"
        "{\"@type\":\"type.googleapis.com/google.protobuf.Int64Value\",\"value\":\"-1\"},"
        "{\"@type\":\"type.googleapis.com/google.protobuf.Struct\",\"value\":{\"a\":[]}},"
        "{\"@type\":\"type.googleapis.com/google.protobuf.Any\",\"value\":"
        "{\"@type\":\"type.googleapis.com/google.protobuf.Duration\",\"value\":\"1s\"}},"
        "{}]}",
        NULL);
    dec_fails(wk,
              "{\"any\":{\"@type\":\"type.googleapis.com/google.protobuf.Duration\"}}",
              "any: missing \"value\" for google.protobuf.Duration");
    dec_fails(wk,
              "{\"any\":{\"@type\":\"type.googleapis.com/google.protobuf.Duration\","
              "\"value\":\"1\"}}",
              "any.value: expected duration (\"1.5s\", \"-0.000001s\")");
    dec_fails(wk,
              "{\"any\":{\"@type\":\"type.googleapis.com/google.protobuf.Duration\","
              "\"value\":\"1s\",\"x\":1}}",
              "any.x: unknown field");
    dec_fails(
        wk, "{\"any\":{\"@type\":\"type.googleapis.com/webshop_test.Inner\",\"nope\":1}}",
        "any.nope: unknown field");
    dec_fails(wk, "{\"any\":{\"count\":1}}", "any: expected \"@type\" naming the type");
    /* An Any the process cannot read has no JSON form. */
    Google__Protobuf__Any a = GOOGLE__PROTOBUF__ANY__INIT;
    a.type_url = "type.googleapis.com/acme.Unknown";
    enc_fails_with(&a.base, WS_EINVAL,
                   "unknown type \"type.googleapis.com/acme.Unknown\" in type_url");
    uint8_t garbage[] = {0xff};
    a.type_url = "type.googleapis.com/webshop_test.Inner";
    a.value.data = garbage;
    a.value.len = 1;
    enc_fails_with(&a.base, WS_EINVAL, "value is not a packed webshop_test.Inner");
}

Test(json_wkt, map_value_missing_on_the_wire_is_the_default_in_its_form)
{
    /* Entry 1 of m_val and of m_dur with the value field left out. */
    static const uint8_t wire[] = {0xc2, 0x01, 0x03, 0x0a, 0x01, 'k',
                                   0xca, 0x01, 0x03, 0x0a, 0x01, 'd'};
    ProtobufCMessage *m = protobuf_c_message_unpack(wk, NULL, sizeof wire, wire);
    cr_assert_not_null(m);
    enc_is(m, "{\"m_val\":{\"k\":null},\"m_dur\":{\"d\":\"0s\"}}");
    protobuf_c_message_free_unpacked(m, NULL);
}

Test(json_wkt, top_level_well_known_types_are_bare_values)
{
    canon(&google__protobuf__timestamp__descriptor, "\"1970-01-01T00:00:00Z\"", NULL);
    canon(&google__protobuf__int64_value__descriptor, "\"7\"", NULL);
    canon(&google__protobuf__bytes_value__descriptor, "\"\"", NULL);
    dec_fails(&google__protobuf__int32_value__descriptor, "null",
              "null is not a google.protobuf.Int32Value");
}

/* A float at FLT_MAX: its shortest text 3.4028235e+38 is past FLT_MAX as a
 * double, and parsers that range-check the double (Python's json_format,
 * protobuf's C++ and Java) refuse it. We write the double's own shortest text,
 * which every parser reads as FLT_MAX, and we read both. */
Test(json_wkt, float_max_is_written_so_every_parser_accepts_it)
{
    Google__Protobuf__FloatValue f = GOOGLE__PROTOBUF__FLOAT_VALUE__INIT;
    f.value = FLT_MAX;
    enc_is(&f.base, "3.4028234663852886e+38");
    f.value = -FLT_MAX;
    enc_is(&f.base, "-3.4028234663852886e+38");
    f.value = nextafterf(FLT_MAX, 0); /* the next float down keeps its short form */
    enc_is(&f.base, "3.4028233e+38");
    f.value = FLT_MIN;
    enc_is(&f.base, "1.1754944e-38");
    static const char *const reads_max[] = {"3.4028235e+38", "3.4028234663852886e+38",
                                            "\"3.4028235e+38\"", "3.40282356e38"};
    for (size_t i = 0; i < 4; i++) {
        Google__Protobuf__FloatValue *back =
            (void *)dec_ok(&google__protobuf__float_value__descriptor, reads_max[i]);
        cr_assert_eq(back->value, FLT_MAX, "%s", reads_max[i]);
        protobuf_c_message_free_unpacked(&back->base, NULL);
    }
    dec_fails(wk, "{\"w_float\":3.4028236e+38}", "w_float: out of range for float");
    WebshopTest__AllTypes m = WEBSHOP_TEST__ALL_TYPES__INIT;
    m.f_float = FLT_MAX;
    enc_is(&m.base, "{\"f_float\":3.4028234663852886e+38}");
}

/* A singular -0.0 is not the default: JSON keeps it both ways, as
 * protobuf's C++, Java, Go and Python do. protobuf-c's packer compares by
 * value and drops it from the binary form; this test pins that loss so that
 * a protobuf-c that fixes it is noticed. */
Test(json_wkt, singular_negative_zero_survives_json)
{
    WebshopTest__AllTypes m = WEBSHOP_TEST__ALL_TYPES__INIT;
    m.f_double = -0.0;
    m.f_float = -0.0f;
    enc_is(&m.base, "{\"f_double\":-0.0,\"f_float\":-0.0}");
    WebshopTest__AllTypes *back = (void *)dec_ok(&webshop_test__all_types__descriptor,
                                                 "{\"f_double\":-0.0,\"fFloat\":-0.0}");
    cr_assert(back->f_double == 0 && signbit(back->f_double));
    cr_assert(back->f_float == 0 && signbit(back->f_float));
    cr_assert_eq(protobuf_c_message_get_packed_size(&back->base), 0);
    protobuf_c_message_free_unpacked(&back->base, NULL);
    m.f_double = 0.0;
    m.f_float = 0.0f;
    enc_is(&m.base, "{}");
}
