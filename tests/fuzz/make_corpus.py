#!/usr/bin/env python3
"""Write the seed corpora of the libFuzzer targets into tests/fuzz/corpus/,
and fuzz_json.dict (every field name of the .proto files).

A handful of small valid and invalid inputs per target, written by a tiny
protobuf wire-format encoder (so no generated Python code is needed). The
output is committed; run this again only to change the seeds:

    /usr/bin/python3 tests/fuzz/make_corpus.py

Regression inputs for crashes found by fuzzing are added by hand as
corpus/<target>/regress-<what>; this script never deletes files.
"""
import base64
import glob
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
OID = "0b0c5e6e-8f3a-4d5c-9a2b-1c2d3e4f5a6b"  # known to the fuzz targets' databases


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_varint(num, v):
    return varint(num << 3) + varint(v)


def f_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b


def item(inv_id, count):
    return f_varint(1, inv_id) + f_varint(2, count)


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- fuzz_json: [type index][flags] JSON (indexes as in fuzz_json.c) ----
JSON_TYPES = ["AllTypes", "Inner", "OrderSent", "CancelOrder", "InStock", "OutOfStock",
              "OrderCanceled", "OrderStatusChanged", "StockChanged", "PlaceOrderRequest",
              "PlaceOrderResponse", "ErrorBody", "HealthResponse", "Product",
              "GetCatalogResponse", "GetReservationResponse", "Order", "ListOrdersRequest",
              "ListOrdersResponse", "RpcRequest", "RpcResponse", "ListServicesResponse"]


def json_seed(name, type_name, flags, text):
    if isinstance(text, str):
        text = text.encode()
    write("fuzz_json", name, bytes([JSON_TYPES.index(type_name), flags]) + text)


json_seed("alltypes-scalars", "AllTypes", 0,
          '{"fDouble": 1.5, "fFloat": -2.25, "fInt32": -7, "fInt64": "-9007199254740993",'
          ' "fUint32": 4294967295, "fUint64": "18446744073709551615", "fSint32": -1,'
          ' "fSint64": "-2", "fFixed32": 3, "fFixed64": "4", "fSfixed32": -5,'
          ' "fSfixed64": "-6", "fBool": true, "fString": "caf\\u00e9 \\ud83d\\ude00",'
          ' "fBytes": "AAH7/wI=", "fEnum": "INFRARED", "field2Name": 9}')
json_seed("alltypes-repeated", "AllTypes", 1,
          '{"r_double": [1, "NaN", "-Infinity", 1e300], "r_float": [0.5], "r_int32": [1, -1],'
          ' "r_int64": ["1", 2], "r_uint64": ["3"], "r_bool": [true, false],'
          ' "r_string": ["a", ""], "r_bytes": ["", "_-8="], "r_enum": ["RED", 2],'
          ' "r_inner": [{"count": 1, "label": "x", "child": {"child": {}}}]}')
json_seed("alltypes-oneof-maps", "AllTypes", 2,
          '{"oText": "t", "mCounts": {"a": 1, "b": -2}, "mInner": {"-1": {"count": 3}, "7": {}}}')
json_seed("alltypes-oneof-inner", "AllTypes", 4,
          '{"o_inner": {"label": "l", "child": {"count": 2}}, "f_inner": {}}')
json_seed("alltypes-nulls", "AllTypes", 7, '{"fInt32": null, "rInt32": null, "fInner": null}')
json_seed("bad-unknown-field", "AllTypes", 0, '{"nope": 1}')
json_seed("bad-duplicate-key", "AllTypes", 0, '{"fInt32": 1, "f_int32": 2}')
json_seed("bad-range", "AllTypes", 0, '{"fInt32": 2147483648}')
json_seed("bad-utf8", "AllTypes", 0, b'{"fString": "\xff"}')
json_seed("bad-truncated", "AllTypes", 0, '{"rInner": [{"child": {')
json_seed("inner-deep", "Inner", 0, '{"child":' * 20 + '{}' + '}' * 20)
json_seed("order-sent", "OrderSent", 1,
          '{"orderId": "%s", "items": [{"inventoryId": 1, "count": 10}]}' % OID)
json_seed("cancel-order", "CancelOrder", 0, '{"order_id": "%s"}' % OID)
json_seed("out-of-stock", "OutOfStock", 1, '{"orderId": "x", "reason": "no stock \\u00e9"}')
json_seed("status-changed", "OrderStatusChanged", 4,
          '{"order_id": "x", "status": 3, "reason": ""}')
json_seed("stock-changed", "StockChanged", 3, '{"productId": 1, "balance": -1}')
json_seed("place-order", "PlaceOrderRequest", 0,
          '{"items": [{"inventory_id": 1, "count": 2}, {"inventoryId": 2, "count": 1}]}')
json_seed("product", "Product", 2, '{"id": 1, "name": "P", "price": 1000, "balance": 200}')
json_seed("catalog", "GetCatalogResponse", 0,
          '{"products": [{"id": 1, "name": "a"}, {"id": 2, "name": "b", "price": 3}]}')
json_seed("reservation", "GetReservationResponse", 0,
          '{"order_id": "x", "status": "TOMBSTONED", "items": [], "reason": "r"}')
json_seed("order", "Order", 0,
          '{"id": "x", "status": "CANCELED", "items": [{"inventory_id": 12, "count": 23}],'
          ' "created_ms": "1700000000005", "updated_ms": 1700000000006, "attempts": 78}')
json_seed("list-orders", "ListOrdersRequest", 1, '{"pageSize": 5, "pageToken": "abc"}')
json_seed("rpc-request", "RpcRequest", 0,
          '{"method": "/webshop.v1.Inventory/GetCatalog", "payload": "AAH7/wI=",'
          ' "deadline_ms": 34, "request_id": "1700000000004"}')
json_seed("rpc-response", "RpcResponse", 2, '{"request_id": "1", "status": "NOT_FOUND",'
          ' "message": "m", "payload": ""}')
json_seed("list-services", "ListServicesResponse", 0,
          '{"services": [{"name": "s", "methods": [{"name": "m", "input_type": "a",'
          ' "output_type": "b"}]}]}')
json_seed("error-body", "ErrorBody", 0, '{"code": "bad_request", "message": "x"}')

# ---- fuzz_rpc: a packed RpcRequest --------------------------------------


def rpc(method, payload=b"", deadline=0, rid=7):
    out = f_bytes(1, method)
    if payload:
        out += f_bytes(2, payload)
    if deadline:
        out += f_varint(3, deadline)
    return out + f_varint(4, rid)


write("fuzz_rpc", "catalog", rpc("/webshop.v1.Inventory/GetCatalog"))
write("fuzz_rpc", "product", rpc("/webshop.v1.Inventory/GetProduct", f_varint(1, 1), 5000))
write("fuzz_rpc", "product-unknown", rpc("/webshop.v1.Inventory/GetProduct", f_varint(1, 99)))
write("fuzz_rpc", "reservation", rpc("/webshop.v1.Inventory/GetReservation", f_bytes(1, OID)))
write("fuzz_rpc", "reservation-bad-id",
      rpc("/webshop.v1.Inventory/GetReservation", f_bytes(1, "not-a-uuid")))
write("fuzz_rpc", "get-order", rpc("/webshop.v1.Orders/GetOrder", f_bytes(1, OID)))
write("fuzz_rpc", "list-orders",
      rpc("/webshop.v1.Orders/ListOrders", f_varint(1, 2) + f_bytes(2, "")))
write("fuzz_rpc", "list-orders-token",
      rpc("/webshop.v1.Orders/ListOrders", f_varint(1, 1) + f_bytes(2, base64.urlsafe_b64encode(("3000:" + OID).encode()).rstrip(b"="))))
write("fuzz_rpc", "reflection", rpc("/webshop.v1.Reflection/ListServices"))
write("fuzz_rpc", "unknown-method", rpc("/webshop.v1.Inventory/Nope"))
write("fuzz_rpc", "bad-payload",
      rpc("/webshop.v1.Inventory/GetProduct", b"\xff\xff\xff\xff\x0f"))
write("fuzz_rpc", "bad-envelope", b"\x0a\xff\xff\xff\xff\xff\x01\x02")
write("fuzz_rpc", "empty", b"")

# ---- fuzz_bus: [subscription index] payload (indexes as in fuzz_bus.c) --
SUBS = ["order-send", "front-cancel", "on-stock", "out-of-stock", "order-canceled",
        "order-status", "stock-changed"]


def bus_seed(name, sub, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    write("fuzz_bus", name, bytes([SUBS.index(sub)]) + payload)


OID2 = "1b0c5e6e-8f3a-4d5c-9a2b-1c2d3e4f5a6c"
bus_seed("order-send-pb", "order-send",
         f_bytes(1, OID2) + f_bytes(2, item(1, 2)) + f_bytes(2, item(2, 1)))
bus_seed("order-send-json", "order-send",
         ' {"orderId": "%s", "items": [{"inventoryId": 1, "count": 10}]}' % OID2)
bus_seed("order-send-too-much", "order-send",
         f_bytes(1, OID) + f_bytes(2, item(1, 100000)))
bus_seed("order-send-bad-id", "order-send", f_bytes(1, "x") + f_bytes(2, item(1, 1)))
bus_seed("front-cancel-pb", "front-cancel", f_bytes(1, OID2))
bus_seed("front-cancel-json", "front-cancel", '{"order_id": "%s"}' % OID2)
bus_seed("on-stock-pb", "on-stock", f_bytes(1, OID2))
bus_seed("out-of-stock-json", "out-of-stock",
         '{"orderId": "%s", "reason": "out of stock: caf\\u00e9"}' % OID)
bus_seed("out-of-stock-pb", "out-of-stock", f_bytes(1, OID) + f_bytes(2, "x" * 40))
bus_seed("order-canceled-pb", "order-canceled", f_bytes(1, OID2))
bus_seed("order-canceled-json", "order-canceled", '\n{"orderId": "%s"}' % OID)
bus_seed("order-status-pb", "order-status", f_bytes(1, OID) + f_varint(2, 2) + f_bytes(3, "r"))
bus_seed("stock-changed-json", "stock-changed", '{"productId": 2, "balance": 5}')
bus_seed("bad-pb", "order-send", b"\x0a\xff\xff")
bus_seed("bad-json", "stock-changed", '{"productId": "x"}')

# ---- fuzz_place_order: the POST /order body -------------------------------
PO = "fuzz_place_order"
write(PO, "one-item", '{"items": [{"inventoryId": 1, "count": 2}]}')
write(PO, "two-items", '{"items": [{"inventory_id": 1, "count": 1}, {"inventoryId": 2, "count": 1000}]}')
write(PO, "no-items", '{"items": []}')
write(PO, "empty-object", '{}')
write(PO, "count-zero", '{"items": [{"inventoryId": 1, "count": 0}]}')
write(PO, "count-too-big", '{"items": [{"inventoryId": 1, "count": 1001}]}')
write(PO, "negative-id", '{"items": [{"inventoryId": -1, "count": 1}]}')
write(PO, "string-count", '{"items": [{"inventoryId": 1, "count": "2"}]}')
write(PO, "unknown-field", '{"items": [{"inventoryId": 1, "count": 1}], "extra": true}')
write(PO, "many-items", '{"items": [%s]}' % ", ".join(['{"inventoryId": 1, "count": 1}'] * 101))
write(PO, "not-json", 'items=1')
write(PO, "deep", '{"items": [' * 10 + ']' * 10 + '}')

# ---- fuzz_json.dict: field names (proto and lowerCamelCase), edge tokens ----


def camel(name):
    out, up = "", False
    for c in name:
        if c == "_":
            up = True
            continue
        out += c.upper() if up else c
        up = False
    return out


def write_json_dict():
    names = set()
    protos = glob.glob(os.path.join(HERE, "../../proto/webshop/v1/*.proto"))
    protos.append(os.path.join(HERE, "../proto/webshop_test/alltypes.proto"))
    field = re.compile(r"\s*(?:repeated\s+|optional\s+)?(?:map<[^>]*>|[\w.]+)\s+(\w+)\s*=\s*-?\d+\s*;")
    for path in protos:
        with open(path) as f:
            for line in f:
                m = field.match(line)
                if m:
                    names.add(m.group(1))
    toks = set()
    for n in names:
        toks.add('"%s":' % n)
        toks.add('"%s":' % camel(n))
    toks.update(["NaN", "Infinity", "-Infinity", "true", "false", "null", "{}", "[]",
                 '":{"', '"1":', '"-1":', "\\u0000", "\\ud83d\\ude00", "1e309", "-0",
                 "18446744073709551615", "-9223372036854775808", "4294967296",
                 '"AAH7/wI="'])
    with open(os.path.join(HERE, "fuzz_json.dict"), "w") as f:
        f.write("# libFuzzer dictionary for fuzz_json, written by make_corpus.py: every\n"
                "# field name of the contracts and the all-types message (proto and\n"
                "# lowerCamelCase) and edge-case tokens.\n")
        for t in sorted(toks):
            f.write('"%s"\n' % t.replace("\\", "\\\\").replace('"', '\\"'))


write_json_dict()
