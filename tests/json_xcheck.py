"""Cross-check of the C JSON transcoder against Python's google.protobuf.json_format.

Run by meson (test 'json_xcheck') with Debian's /usr/bin/python3 and its
python3-protobuf. At test time it generates Python classes with protoc from
the same .proto files the C code is built from, then for every sample the C
program prints (every contract message and the all-types test message):

  C -> Python  json_format.Parse (strict: unknown fields are errors) accepts
               the C JSON in both name styles and yields the message the C
               side packed;
  Python -> C  json_format.MessageToJson output (both name styles) decoded by
               the C side packs to the same message.

It also fails when a contract message has no C sample, so a new message
cannot be left out of the golden and cross checks.

Then the well-known types (xcheck_wkt.py): every type's edge values both
ways, the inputs both sides must refuse, and a seeded random differential
on the all-types and well-known test messages in both directions, bounded
in count and time (WS_XCHECK_SEED, WS_XCHECK_COUNT, WS_XCHECK_SECONDS
override the defaults; a failure prints the seed that reproduces it).

usage: json_xcheck.py PROTOC PROTO_ROOT TEST_PROTO_DIR GOOGLE_INCLUDE XCHECK_BIN
"""
import importlib
import os
import subprocess
import sys
import tempfile

from google.protobuf import json_format

sys.dont_write_bytecode = True  # nothing written into the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import xcheck_wkt  # noqa: E402


def load_classes(protoc, roots, files, out):
    subprocess.run([protoc] + ["--proto_path=" + r for r in roots] +
                   ["--python_out=" + out] + files, check=True)
    sys.path.insert(0, out)
    classes = {}
    contract = set()
    for f in files:
        rel = None
        for r in roots:
            if f.startswith(r + os.sep):
                rel = os.path.relpath(f, r)
                break
        mod = importlib.import_module(rel[:-len(".proto")].replace(os.sep, ".") + "_pb2")
        for name, desc in mod.DESCRIPTOR.message_types_by_name.items():
            classes[desc.full_name] = getattr(mod, name)
            if desc.full_name.startswith("webshop.v1."):
                contract.add(desc.full_name)
    return classes, contract


def messages_equal(a, b):
    # NaN != NaN, so compare deterministic bytes first, then fall back on
    # message equality (map entries may be packed in another order).
    if a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True):
        return True
    return a == b


def main():
    protoc, proto_root, test_dir, google_inc, xcheck = sys.argv[1:6]
    contract_files = sorted(
        os.path.join(proto_root, "webshop", "v1", f)
        for f in os.listdir(os.path.join(proto_root, "webshop", "v1")) if f.endswith(".proto"))
    test_files = [os.path.join(test_dir, "alltypes.proto"), os.path.join(test_dir, "wkt.proto")]
    failures = []
    with tempfile.TemporaryDirectory() as out:
        classes, contract = load_classes(
            protoc, [proto_root, test_dir, google_inc], contract_files + test_files, out)
        dump = subprocess.run([xcheck, "dump"], check=True, capture_output=True,
                              text=True).stdout
        seen = set()
        for line in dump.splitlines():
            name, plain, camel, hexbytes = line.split("\t")
            seen.add(name)
            cls = classes[name]
            packed = cls.FromString(bytes.fromhex(hexbytes))
            for style, text in (("proto names", plain), ("camel", camel)):
                parsed = cls()
                try:
                    json_format.Parse(text, parsed)
                except json_format.ParseError as e:
                    failures.append(f"{name} ({style}): Python rejects C JSON: {e}\n  {text}")
                    continue
                if not messages_equal(parsed, packed):
                    failures.append(f"{name} ({style}): Python parsed a different message\n"
                                    f"  json:   {text}\n  python: {parsed}\n  c:      {packed}")
            for keep in (True, False):
                text = json_format.MessageToJson(packed, preserving_proto_field_name=keep)
                r = subprocess.run([xcheck, "decode", name], input=text, capture_output=True,
                                   text=True)
                if r.returncode != 0:
                    failures.append(f"{name}: C rejects Python JSON: {r.stderr.strip()}\n"
                                    f"  {text}")
                    continue
                back = cls.FromString(bytes.fromhex(r.stdout.strip()))
                if not messages_equal(back, packed):
                    failures.append(f"{name}: C decoded Python JSON differently\n"
                                    f"  json: {text}\n  c:    {back}")
        for name in sorted(contract - seen):
            failures.append(f"{name}: no sample in tests/json_sample.c")
        wkt_report = xcheck_wkt.run(classes, xcheck, failures)
    for f in failures:
        print("FAIL", f)
    print(f"{len(seen)} messages checked, {wkt_report}, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
