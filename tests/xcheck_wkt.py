"""The well-known types and a random differential, for json_xcheck.py.

Python's google.protobuf.json_format and our transcoder (json_xcheck batch)
must agree, in both directions:

  edge values   every WKT (and webshop_test.WellKnown, which nests them all)
                at its edges: C's JSON parses in Python to the same message,
                Python's JSON decodes in C to the same message, and the two
                JSON texts are the same JSON (numbers compared as numbers);
  input forms   texts only ever read (offsets, short fractions, URL-safe
                base64) decode alike on both sides;
  refusals      texts both sides must refuse (out of range, malformed);
  differences   the few texts only one side accepts, each with its reason;
  random        seeded random webshop_test.AllTypes and WellKnown messages,
                through C's encoder into Python and through Python's encoder
                into C (both name styles), and Python JSON decoded and
                re-encoded by C. Bounded by WS_XCHECK_COUNT messages of each
                type (default 1000) and WS_XCHECK_SECONDS of generation
                (default 20); WS_XCHECK_SEED (default 16) reproduces a run.

Known and accepted: protobuf-c's packer drops a singular -0.0 (it compares
by value), so where C's answer is packed bytes a -0.0 compares as 0.0; the
JSON paths (enc, dec_enc) keep it and are compared bit for bit.
"""
import json
import math
import os
import random
import struct
import subprocess
import time

from google.protobuf import any_pb2
from google.protobuf import descriptor
from google.protobuf import duration_pb2
from google.protobuf import json_format
from google.protobuf import struct_pb2
from google.protobuf import symbol_database
from google.protobuf import timestamp_pb2
from google.protobuf import wrappers_pb2

WK = "webshop_test.WellKnown"
TS_MIN, TS_MAX = -62135596800, 253402300799
DUR_MAX = 315576000000
FLT_MAX = 3.4028234663852886e38
URL = "type.googleapis.com/"

# (type, JSON text) both sides must write and read alike.
EDGES = [
    ("google.protobuf.Timestamp", '"1970-01-01T00:00:00Z"'),
    ("google.protobuf.Timestamp", '"0001-01-01T00:00:00Z"'),
    ("google.protobuf.Timestamp", '"9999-12-31T23:59:59.999999999Z"'),
    ("google.protobuf.Timestamp", '"1972-01-01T10:00:20.021Z"'),
    ("google.protobuf.Timestamp", '"1969-12-31T23:59:59.000001Z"'),
    ("google.protobuf.Timestamp", '"2000-02-29T12:00:00.100Z"'),
    ("google.protobuf.Duration", '"0s"'),
    ("google.protobuf.Duration", '"1.000340012s"'),
    ("google.protobuf.Duration", '"-1.000340012s"'),
    ("google.protobuf.Duration", '"-0.500s"'),
    ("google.protobuf.Duration", '"0.000000001s"'),
    ("google.protobuf.Duration", '"315576000000.999999999s"'),
    ("google.protobuf.Duration", '"-315576000000s"'),
    ("google.protobuf.Empty", "{}"),
    ("google.protobuf.FieldMask", '""'),
    ("google.protobuf.FieldMask", '"a.bC,d"'),
    ("google.protobuf.FieldMask", '"fooBar.bazQuxX"'),
    ("google.protobuf.Struct", "{}"),
    ("google.protobuf.Struct", '{"a": 1, "b": [true, null, "x", {"c": -0.5}], "n": null}'),
    ("google.protobuf.Struct", '{"k": {"k": {"k": []}}, "": ""}'),
    ("google.protobuf.Value", "null"),
    ("google.protobuf.Value", "1"),
    ("google.protobuf.Value", "-0.0"),
    ("google.protobuf.Value", "1e+308"),
    ("google.protobuf.Value", '"NaN"'),
    ("google.protobuf.Value", "[[[]], {}]"),
    ("google.protobuf.ListValue", "[]"),
    ("google.protobuf.ListValue", '[null, 1, "a", {"b": false}]'),
    ("google.protobuf.DoubleValue", "0"),
    ("google.protobuf.DoubleValue", "-0.0"),
    ("google.protobuf.DoubleValue", "5e-324"),
    ("google.protobuf.DoubleValue", "1.7976931348623157e+308"),
    ("google.protobuf.DoubleValue", '"NaN"'),
    ("google.protobuf.DoubleValue", '"-Infinity"'),
    ("google.protobuf.FloatValue", "0"),
    ("google.protobuf.FloatValue", "3.4028234663852886e+38"),
    ("google.protobuf.FloatValue", "-3.4028234663852886e+38"),
    ("google.protobuf.FloatValue", "1e-45"),
    ("google.protobuf.FloatValue", '"Infinity"'),
    ("google.protobuf.Int64Value", '"-9223372036854775808"'),
    ("google.protobuf.Int64Value", '"9223372036854775807"'),
    ("google.protobuf.UInt64Value", '"18446744073709551615"'),
    ("google.protobuf.UInt64Value", '"0"'),
    ("google.protobuf.Int32Value", "-2147483648"),
    ("google.protobuf.Int32Value", "2147483647"),
    ("google.protobuf.UInt32Value", "4294967295"),
    ("google.protobuf.BoolValue", "false"),
    ("google.protobuf.BoolValue", "true"),
    ("google.protobuf.StringValue", '""'),
    ("google.protobuf.StringValue", '"caf\\u00e9 \\u2028 \\ud83d\\ude00 \\"q\\""'),
    ("google.protobuf.BytesValue", '""'),
    ("google.protobuf.BytesValue", '"AAH/"'),
    ("google.protobuf.Any", "{}"),
    ("google.protobuf.Any",
     '{"@type": "type.googleapis.com/webshop_test.Inner", "count": 3, "label": "x",'
     ' "child": {"count": -1}}'),
    ("google.protobuf.Any",
     '{"@type": "type.googleapis.com/google.protobuf.Timestamp",'
     ' "value": "1972-01-01T10:00:20.021Z"}'),
    ("google.protobuf.Any", '{"@type": "type.googleapis.com/google.protobuf.Empty"}'),
    ("google.protobuf.Any",
     '{"@type": "type.googleapis.com/google.protobuf.Any", "value":'
     ' {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "-1.5s"}}'),
    ("google.protobuf.Any",
     '{"@type": "type.googleapis.com/google.protobuf.FieldMask", "value": "a.bC"}'),
    ("google.protobuf.Any",
     '{"@type": "type.googleapis.com/google.protobuf.Int64Value", "value": "-1"}'),
    ("google.protobuf.Any",
     '{"@type": "type.googleapis.com/google.protobuf.Struct", "value": {"a": [1, {}]}}'),
    ("google.protobuf.Any",
     '{"@type": "type.googleapis.com/webshop_test.AllTypes", "fInt64": "-1",'
     ' "fFloat": 3.4028234663852886e+38, "mCounts": {"a": 1}}'),
    (WK, "{}"),
    (WK, '{"ts": "1972-01-01T10:00:20.021Z", "dur": "-0.000001s", "empty": {},'
         ' "mask": "a.bC", "st": {"x": [1, "y", null]}, "val": null, "list": [false],'
         ' "wDouble": -0.0, "wFloat": 0, "wInt64": "0", "wUint64": "1", "wInt32": 0,'
         ' "wUint32": 0, "wBool": false, "wString": "", "wBytes": "",'
         ' "any": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1s"},'
         ' "rTs": ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"],'
         ' "rVal": [null, {}, [], 0], "rAny": [{}],'
         ' "mVal": {"k": null, "l": {"m": 1}}, "mDur": {"z": "0s"}, "oNull": null}'),
    (WK, '{"oVal": null}'),
    (WK, '{"oTs": "1970-01-01T00:00:00Z"}'),
    ("webshop_test.AllTypes", '{"fDouble": -0.0, "fFloat": 3.4028234663852886e+38}'),
]

# (type, JSON text) read alike on both sides but written otherwise.
INPUTS = [
    ("google.protobuf.Timestamp", '"1972-01-01T11:00:20.021+01:00"'),
    ("google.protobuf.Timestamp", '"1972-01-01T09:30:20.021-00:30"'),
    ("google.protobuf.Timestamp", '"1972-01-01T10:00:20.5Z"'),
    ("google.protobuf.Timestamp", '"1972-01-01T10:00:20.0000001Z"'),
    ("google.protobuf.Duration", '"1.5s"'),
    ("google.protobuf.Duration", '"-0.1s"'),
    ("google.protobuf.BytesValue", '"AAH_"'),
    ("google.protobuf.Int64Value", "5"),
    # Python range-checks a float given as a number, not as a string.
    ("google.protobuf.FloatValue", '"3.4028235e+38"'),
    ("google.protobuf.Value", "1.0"),
    ("google.protobuf.Any", '{"@type": "example.com/x/webshop_test.Inner", "count": 1}'),
    (WK, '{"null_value": null, "w_int32": null, "mask": "", "r_val": [null]}'),
]

# (type, JSON text) both sides must refuse.
REFUSED = [
    ("google.protobuf.Timestamp", '"0000-12-31T23:59:59Z"'),
    ("google.protobuf.Timestamp", '"10000-01-01T00:00:00Z"'),
    ("google.protobuf.Timestamp", '"1972-02-30T00:00:00Z"'),
    ("google.protobuf.Timestamp", '"1972-01-01T10:00:20.1234567891Z"'),
    ("google.protobuf.Timestamp", '"1972-01-01T10:00:20"'),
    ("google.protobuf.Timestamp", '"1972-01-01t10:00:20Z"'),
    ("google.protobuf.Timestamp", "0"),
    ("google.protobuf.Duration", '"315576000001s"'),
    ("google.protobuf.Duration", '"-315576000001s"'),
    ("google.protobuf.Duration", '"1"'),
    ("google.protobuf.FieldMask", '"a_b"'),
    ("google.protobuf.Any", '{"@type": "type.googleapis.com/acme.Nope"}'),
    ("google.protobuf.Any", '{"@type": "type.googleapis.com/google.protobuf.Duration"}'),
    ("google.protobuf.Int32Value", "2147483648"),
    ("google.protobuf.FloatValue", "3.5e+38"),
    ("google.protobuf.Empty", '{"x": 1}'),
]

# (type, JSON text, the side that accepts it, why) where the two differ on
# purpose; pinned so that a change on either side is noticed.
DIVERGENT = [
    ("google.protobuf.FloatValue", "3.4028235e+38", "c",
     "FLT_MAX as Python, Java and Go write it: Python's own parser compares the "
     "double to FLT_MAX and refuses it; it is FLT_MAX, so we read it"),
    ("google.protobuf.Timestamp", '"0001-01-01T00:00:00+00:01"', "python",
     "0000-12-31T23:59:00Z in UTC: Python range-checks before the offset and "
     "would then fail to write what it read; the range is in UTC"),
    ("google.protobuf.Timestamp", '"9999-12-31T23:59:59-01:00"', "python",
     "10000-01-01T00:59:59Z in UTC, the same"),
    ("google.protobuf.Duration", '"1.1234567891s"', "python",
     "ten fractional digits do not fit in nanos; Python rounds them away"),
]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def batch(xcheck, reqs):
    """Run requests (op, name, payload) through one `json_xcheck batch`."""
    text = "".join(f"{op}\t{name}\t{payload}\n" for op, name, payload in reqs)
    r = subprocess.run([xcheck, "batch"], input=text, capture_output=True,
                       encoding="utf-8", check=True)
    lines = r.stdout.split("\n")[:-1]
    if len(lines) != len(reqs):
        raise RuntimeError(f"json_xcheck batch answered {len(lines)} of {len(reqs)}\n"
                           f"{r.stderr}")
    return [(line.split("\t", 1)[0] == "ok", line.split("\t", 1)[1]) for line in lines]


def canonical(msg, zero_sign):
    """msg with every Any's bytes repacked deterministically, so that two
    equal Anys packed by different implementations compare equal; with
    zero_sign, a singular -0.0 is made 0.0 (what protobuf-c's packer does)."""
    out = type(msg)()
    out.CopyFrom(msg)
    _canon(out, zero_sign)
    return out


REALS = (descriptor.FieldDescriptor.TYPE_DOUBLE, descriptor.FieldDescriptor.TYPE_FLOAT)


def _canon(msg, zero_sign):
    if msg.DESCRIPTOR.full_name == "google.protobuf.Any" and msg.type_url:
        cls = symbol_database.Default().GetSymbol(msg.type_url.split("/")[-1])
        inner = cls.FromString(msg.value)
        _canon(inner, zero_sign)
        msg.value = inner.SerializeToString(deterministic=True)
        return
    for f, v in msg.ListFields():
        if zero_sign and f.type in REALS and f.label != descriptor.FieldDescriptor.LABEL_REPEATED \
                and f.containing_oneof is None and v == 0:
            setattr(msg, f.name, 0.0)
        if f.type != descriptor.FieldDescriptor.TYPE_MESSAGE:
            continue
        if f.message_type.GetOptions().map_entry:
            if f.message_type.fields_by_name["value"].type == \
                    descriptor.FieldDescriptor.TYPE_MESSAGE:
                for k in v:
                    _canon(v[k], zero_sign)
        elif f.label == descriptor.FieldDescriptor.LABEL_REPEATED:
            for e in v:
                _canon(e, zero_sign)
        else:
            _canon(v, zero_sign)


def same_message(a, b, strict):
    """Equal as messages, bit for bit; not strict: a singular -0.0 is 0.0."""
    a, b = canonical(a, not strict), canonical(b, not strict)
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def same_json(a, b):
    """The same JSON value; a number equal as a double or as a float."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    num = (int, float)
    if isinstance(a, num) and isinstance(b, num) and not isinstance(a, bool) \
            and not isinstance(b, bool):
        return a == b or f32(a) == f32(b)
    return type(a) is type(b) and a == b


class Checker:
    def __init__(self, classes, xcheck, failures):
        self.classes = classes
        self.xcheck = xcheck
        self.failures = failures
        self.pending = []  # (request, callback(ok, text))

    def cls(self, name):
        if name in self.classes:
            return self.classes[name]
        return symbol_database.Default().GetSymbol(name)

    def ask(self, op, name, payload, then):
        self.pending.append(((op, name, payload), then))

    def run(self):
        answers = batch(self.xcheck, [r for r, _ in self.pending])
        for (_, then), (ok, text) in zip(self.pending, answers):
            then(ok, text)
        self.pending = []

    def fail(self, what):
        self.failures.append(what)

    def python_parse(self, name, text):
        m = self.cls(name)()
        json_format.Parse(text, m)
        return m

    def both_ways(self, name, msg, label, compare_json=False):
        """C's JSON of msg in Python, Python's JSON of msg in C."""
        hexbytes = msg.SerializeToString().hex()
        for op, keep in (("enc", True), ("enc_camel", False)):
            def after_enc(ok, text, keep=keep, op=op):
                if not ok:
                    self.fail(f"{label}: C cannot encode it: {text}\n  {msg}")
                    return
                try:
                    back = self.python_parse(name, text)
                except Exception as e:  # json_format also raises KeyError, ValueError
                    self.fail(f"{label}: Python rejects C JSON: {e}\n  {text}")
                    return
                if not same_message(back, msg, strict=True):
                    self.fail(f"{label}: Python reads C's JSON differently\n  c json: {text}"
                              f"\n  python: {back}\n  wanted: {msg}")
                if compare_json:
                    py = json_format.MessageToJson(msg, preserving_proto_field_name=keep,
                                                   indent=None)
                    if not same_json(json.loads(text), json.loads(py)):
                        self.fail(f"{label} ({op}): C and Python write different JSON\n"
                                  f"  c:      {text}\n  python: {py}")
            self.ask(op, name, hexbytes, after_enc)
        for keep in (True, False):
            py = json_format.MessageToJson(msg, preserving_proto_field_name=keep, indent=None,
                                           ensure_ascii=keep)

            def after_dec(ok, text, py=py):
                if not ok:
                    self.fail(f"{label}: C rejects Python JSON: {text}\n  {py}")
                    return
                back = self.cls(name).FromString(bytes.fromhex(text))
                if not same_message(back, msg, strict=False):
                    self.fail(f"{label}: C decodes Python JSON differently\n  json: {py}"
                              f"\n  c:    {back}")

            def after_dec_enc(ok, text, py=py):
                if not ok:
                    self.fail(f"{label}: C rejects Python JSON: {text}\n  {py}")
                    return
                try:
                    back = self.python_parse(name, text)
                except Exception as e:  # json_format also raises KeyError, ValueError
                    self.fail(f"{label}: Python rejects C's JSON of Python's JSON: {e}\n"
                              f"  python: {py}\n  c:      {text}")
                    return
                if not same_message(back, msg, strict=True):
                    self.fail(f"{label}: Python JSON through C comes back different\n"
                              f"  python: {py}\n  c:      {text}")
            self.ask("dec", name, py, after_dec)
            self.ask("dec_enc", name, py, after_dec_enc)


# ---- random messages ------------------------------------------------------

FT = descriptor.FieldDescriptor
CHARS = ["a", "Z", "0", " ", "\u00e9", '"', "\\", "/", "\n", "\t", "\x01", "\x1f", "\x7f",
         "\u2028", "\u2029", "\ufeff", "\U0001f600", "\u4e2d"]


class Gen:
    def __init__(self, rng):
        self.r = rng

    def string(self):
        return "".join(self.r.choice(CHARS) for _ in range(self.r.randint(0, 6)))

    def double(self):
        r = self.r
        pick = r.randint(0, 9)
        if pick < 5:
            return r.choice([0.0, -0.0, 5e-324, -5e-324, 1.7976931348623157e308,
                             -2.2250738585072014e-308, math.inf, -math.inf, math.nan, 0.1,
                             1e21, 1e-7, 123456789.125])
        if pick < 8:
            return r.uniform(-1e6, 1e6)
        x = struct.unpack("<d", r.getrandbits(64).to_bytes(8, "little"))[0]
        return math.nan if math.isnan(x) else x

    def float(self):
        r = self.r
        pick = r.randint(0, 9)
        if pick < 5:
            return r.choice([0.0, -0.0, FLT_MAX, -FLT_MAX, f32(1.1754943508222875e-38),
                             f32(1e-45), math.inf, -math.inf, math.nan, f32(0.1),
                             f32(FLT_MAX * 0.99999994)])
        if pick < 8:
            return f32(r.uniform(-1e6, 1e6))
        x = struct.unpack("<f", r.getrandbits(32).to_bytes(4, "little"))[0]
        return math.nan if math.isnan(x) else x

    def integer(self, lo, hi):
        r = self.r
        if r.random() < 0.5:
            return r.choice([lo, hi, 0, 1, max(lo, -1), hi // 2])
        return r.randint(lo, hi)

    def scalar(self, f):
        t = f.type
        if t in (FT.TYPE_INT32, FT.TYPE_SINT32, FT.TYPE_SFIXED32):
            return self.integer(-2**31, 2**31 - 1)
        if t in (FT.TYPE_INT64, FT.TYPE_SINT64, FT.TYPE_SFIXED64):
            return self.integer(-2**63, 2**63 - 1)
        if t in (FT.TYPE_UINT32, FT.TYPE_FIXED32):
            return self.integer(0, 2**32 - 1)
        if t in (FT.TYPE_UINT64, FT.TYPE_FIXED64):
            return self.integer(0, 2**64 - 1)
        if t == FT.TYPE_DOUBLE:
            return self.double()
        if t == FT.TYPE_FLOAT:
            return self.float()
        if t == FT.TYPE_BOOL:
            return self.r.random() < 0.5
        if t == FT.TYPE_STRING:
            return self.string()
        if t == FT.TYPE_BYTES:
            return bytes(self.r.getrandbits(8) for _ in range(self.r.randint(0, 7)))
        if t == FT.TYPE_ENUM:
            if f.enum_type.full_name == "google.protobuf.NullValue":
                return 0
            known = [v.number for v in f.enum_type.values]
            return self.r.choice(known + [7, -100])
        raise ValueError(t)

    def json_value(self, depth, no_neg_zero=False):
        r = self.r
        kinds = ["null", "num", "str", "bool"] + (["obj", "list"] if depth > 0 else [])
        k = r.choice(kinds)
        if k == "null":
            return None
        if k == "num":
            x = self.double()
            while not math.isfinite(x) or (no_neg_zero and x == 0):
                x = self.double()
            return x
        if k == "str":
            return self.string()
        if k == "bool":
            return r.random() < 0.5
        if k == "obj":
            return {self.string(): self.json_value(depth - 1, no_neg_zero)
                    for _ in range(r.randint(0, 3))}
        return [self.json_value(depth - 1, no_neg_zero) for _ in range(r.randint(0, 3))]

    def path(self):
        r = self.r
        seg = lambda: "".join(r.choice("abcxyz") + ("_" + r.choice("abq") if r.random() < 0.3
                                                    else "") for _ in range(r.randint(1, 3)))
        return ".".join(seg() for _ in range(r.randint(1, 3)))

    def fill_wkt(self, m, depth, in_any=False):
        """Fill a well-known type m; False if m is not one."""
        r = self.r
        name = m.DESCRIPTOR.full_name
        if name == "google.protobuf.Timestamp":
            m.seconds = self.integer(TS_MIN, TS_MAX)
            m.nanos = r.choice([0, r.randint(0, 999) * 1000000, r.randint(0, 999999) * 1000,
                                r.randint(0, 999999999)])
        elif name == "google.protobuf.Duration":
            m.seconds = self.integer(-DUR_MAX, DUR_MAX)
            n = r.choice([0, r.randint(0, 999) * 1000000, r.randint(0, 999999999)])
            neg = m.seconds < 0 or (m.seconds == 0 and r.random() < 0.5)
            m.nanos = -n if neg else n
        elif name == "google.protobuf.FieldMask":
            m.paths.extend(self.path() for _ in range(r.randint(0, 3)))
        elif name == "google.protobuf.Struct":
            json_format.ParseDict({self.string(): self.json_value(depth, in_any)
                                   for _ in range(r.randint(0, 3))}, m)
        elif name == "google.protobuf.Value":
            json_format.ParseDict(self.json_value(depth, in_any), m)
        elif name == "google.protobuf.ListValue":
            json_format.ParseDict([self.json_value(depth, in_any)
                                   for _ in range(r.randint(0, 3))], m)
        elif name == "google.protobuf.Any":
            self.fill_any(m, depth)
        elif name == "google.protobuf.Empty":
            pass
        elif name.startswith("google.protobuf.") and name.endswith("Value"):
            v = self.scalar(m.DESCRIPTOR.fields_by_name["value"])
            if in_any and isinstance(v, float) and v == 0:
                v = 0.0  # protobuf-c would drop a -0.0 inside the packed bytes
            m.value = v
        else:
            return False
        return True

    def fill_any(self, m, depth):
        r = self.r
        choices = [timestamp_pb2.Timestamp, duration_pb2.Duration, struct_pb2.Struct,
                   wrappers_pb2.Int64Value, wrappers_pb2.BytesValue,
                   symbol_database.Default().GetSymbol("google.protobuf.Empty"),
                   symbol_database.Default().GetSymbol("webshop_test.Inner")]
        if depth > 0:
            choices.append(any_pb2.Any)
        inner = r.choice(choices)()
        if not self.fill_wkt(inner, depth - 1, in_any=True):
            self.fill(inner, depth - 1)
        m.Pack(inner)

    def fill(self, m, depth):
        """Set a random half of m's fields, recursively down to depth."""
        r = self.r
        if self.fill_wkt(m, depth):
            return m
        chosen = {}
        for f in m.DESCRIPTOR.fields:
            if r.random() < 0.5:
                continue
            if f.containing_oneof is not None:
                if f.containing_oneof.name in chosen:
                    continue
                chosen[f.containing_oneof.name] = f
            if f.type == FT.TYPE_MESSAGE and f.message_type.GetOptions().map_entry:
                kf = f.message_type.fields_by_name["key"]
                vf = f.message_type.fields_by_name["value"]
                field = getattr(m, f.name)
                for _ in range(r.randint(0, 3)):
                    k = self.scalar(kf)
                    if vf.type == FT.TYPE_MESSAGE:
                        if depth > 0:
                            self.fill(field[k], depth - 1)
                    else:
                        field[k] = self.scalar(vf)
            elif f.label == FT.LABEL_REPEATED:
                field = getattr(m, f.name)
                for _ in range(r.randint(0, 3)):
                    if f.type == FT.TYPE_MESSAGE:
                        if depth > 0:
                            self.fill(field.add(), depth - 1)
                    else:
                        field.append(self.scalar(f))
            elif f.type == FT.TYPE_MESSAGE:
                if depth > 0:
                    self.fill(getattr(m, f.name), depth - 1)
                    getattr(m, f.name).SetInParent()
            else:
                setattr(m, f.name, self.scalar(f))
        return m


def run(classes, xcheck, failures):
    """All of the above; returns a one-line summary."""
    c = Checker(classes, xcheck, failures)
    for name, text in EDGES:
        try:
            msg = c.python_parse(name, text)
        except Exception as e:  # json_format also raises KeyError, ValueError
            failures.append(f"edge {name} {text}: Python refuses it: {e}")
            continue
        c.both_ways(name, msg, f"edge {name} {text}", compare_json=True)
    for name, text in INPUTS:
        def after(ok, got, name=name, text=text):
            if not ok:
                failures.append(f"input {name} {text}: C refuses it: {got}")
                return
            try:
                want = c.python_parse(name, text)
            except Exception as e:  # json_format also raises KeyError, ValueError
                failures.append(f"input {name} {text}: Python refuses it: {e}")
                return
            back = c.cls(name).FromString(bytes.fromhex(got))
            if not same_message(back, want, strict=False):
                failures.append(f"input {name} {text}: C reads {back}, Python {want}")
        c.ask("dec", name, json.dumps(json.loads(text)), after)
    for name, text in REFUSED:
        def after(ok, got, name=name, text=text):
            if ok:
                failures.append(f"refused {name} {text}: C accepts it")
            try:
                c.python_parse(name, text)
                failures.append(f"refused {name} {text}: Python accepts it")
            except Exception:  # json_format also raises KeyError, ValueError
                pass
        c.ask("dec", name, json.dumps(json.loads(text)), after)
    for name, text, accepts, why in DIVERGENT:
        def after(ok, got, name=name, text=text, accepts=accepts, why=why):
            try:
                c.python_parse(name, text)
                py_ok = True
            except Exception:  # json_format also raises KeyError, ValueError
                py_ok = False
            if (ok, py_ok) != (accepts == "c", accepts == "python"):
                failures.append(f"divergent {name} {text}: expected only {accepts} to accept "
                                f"it ({why}); C {'accepts' if ok else 'refuses'}, Python "
                                f"{'accepts' if py_ok else 'refuses'}")
        c.ask("dec", name, text, after)
    c.run()

    seed = int(os.environ.get("WS_XCHECK_SEED", "16"))
    count = int(os.environ.get("WS_XCHECK_COUNT", "1000"))
    budget = float(os.environ.get("WS_XCHECK_SECONDS", "20"))
    rng = random.Random(seed)
    gen = Gen(rng)
    start = time.monotonic()
    made = 0
    before = len(failures)
    for name in ("webshop_test.AllTypes", WK):
        for i in range(count):
            if time.monotonic() - start > budget:
                break
            msg = gen.fill(c.cls(name)(), 3)
            c.both_ways(name, msg, f"random {name} #{i} (WS_XCHECK_SEED={seed})")
            made += 1
    c.run()
    if len(failures) > before:
        failures.append(f"random differential failed: rerun with WS_XCHECK_SEED={seed}")
    return (f"{len(EDGES)} WKT edge values, {len(INPUTS)} input forms, "
            f"{len(REFUSED)} refusals, {len(DIVERGENT)} known differences, {made} random messages (seed {seed}, "
            f"{time.monotonic() - start:.1f}s)")
