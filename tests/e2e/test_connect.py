"""End-to-end tests of the front's Connect endpoint (issue 17), with
clients nobody here wrote: `buf curl --protocol connect --schema proto/`
(npm @bufbuild/buf) and a @connectrpc/connect-node client over code that
@bufbuild/protoc-gen-es generates from proto/ (tests/connect/client.mjs),
in JSON and in the binary encoding. Every method of webshop.v1.Inventory
and webshop.v1.Orders must give through the front what `webshopctl call`
gets from the service itself; errors must arrive as Connect errors with
the right codes and statuses.

The npm packages are those of tests/connect/package-lock.json, installed
by `tools/webshop test` (npm ci in tests/connect).
Run: /usr/bin/python3 tests/e2e/test_connect.py BUILD_DIR
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Backends, Shop  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = os.path.join(ROOT, "proto")
CONNECT_DIR = os.path.join(ROOT, "tests", "connect")
BUF = os.path.join(CONNECT_DIR, "node_modules", ".bin", "buf")
PROTOC_GEN_ES = os.path.join(CONNECT_DIR, "node_modules", ".bin", "protoc-gen-es")
CLIENT = os.path.join(CONNECT_DIR, "client.mjs")
UNKNOWN = "123e4567-e89b-12d3-a456-426614174000"
SERVICES = {"webshop.v1.Inventory": "inventory.proto", "webshop.v1.Orders": "order.proto"}


def proto_methods():
    """Every (service, method) the .proto files declare for SERVICES."""
    out = set()
    for svc, file in SERVICES.items():
        with open(os.path.join(PROTO, "webshop", "v1", file)) as f:
            text = f.read()
        body = re.search(r"service\s+" + svc.split(".")[-1] + r"\s*\{(.*?)\n\}", text, re.S)
        for m in re.finditer(r"^\s*rpc\s+(\w+)\s*\(", body.group(1), re.M):
            out.add((svc, m.group(1)))
    return out


def camel(name):
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


def normalize(v, key=""):
    """One spelling of proto3 JSON: lowerCamelCase keys, int64 (the *Ms
    fields) as numbers."""
    if isinstance(v, dict):
        return {camel(k): normalize(x, camel(k)) for k, x in v.items()}
    if isinstance(v, list):
        return [normalize(x, key) for x in v]
    if isinstance(v, str) and key.endswith("Ms") and re.fullmatch(r"-?\d+", v):
        return int(v)
    return v


class Clients:
    """The two outside clients, pointed at one front."""

    def __init__(self, port, gen_dir):
        self.base = f"http://127.0.0.1:{port}"
        self.gen = gen_dir

    def buf_curl(self, svc, method, req, timeout_ms=None):
        """buf curl's answer: ("ok", response) or ("error", {code, message})."""
        argv = [BUF, "curl", "--protocol", "connect", "--schema", PROTO, "--emit-defaults",
                "-d", json.dumps(req), f"{self.base}/{svc}/{method}"]
        if timeout_ms is not None:
            # buf's --timeout is the call's context deadline, which
            # connect-go sends as Connect-Timeout-Ms.
            argv[2:2] = ["--timeout", f"{timeout_ms}ms"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return "ok", json.loads(r.stdout)
        try:
            return "error", json.loads(r.stderr)
        except ValueError:
            raise AssertionError(f"buf curl failed without a Connect error: {r.stderr}")

    def node(self, calls, binary=False):
        """connect-node's outcomes of calls, in order."""
        argv = ["node", CLIENT, self.base, self.gen] + (["--binary"] if binary else [])
        r = subprocess.run(argv, input=json.dumps(calls), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)


def generate_es(into):
    """protoc-gen-es's JavaScript for every contract, under into."""
    protos = sorted("webshop/v1/" + p for p in os.listdir(os.path.join(PROTO, "webshop", "v1"))
                    if p.endswith(".proto"))
    r = subprocess.run(["protoc", f"--plugin=protoc-gen-es={PROTOC_GEN_ES}", f"--es_out={into}",
                        "--es_opt=target=js,import_extension=js", f"--proto_path={PROTO}",
                        "--proto_path=/usr/include"] + protos, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr


def require_tools(test):
    for path in (BUF, PROTOC_GEN_ES):
        if not os.path.exists(path):
            test.fail(f"{path} is missing: tools/webshop test installs tests/connect's npm "
                      "packages (npm ci in tests/connect)")


def raw(port, method, path, body=b"", headers=None):
    """One request by hand: (status, headers, parsed JSON or bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if hdrs.get("content-type", "").startswith("application/json") and data:
            return r.status, hdrs, json.loads(data)
        return r.status, hdrs, data
    finally:
        conn.close()


class ConnectEveryMethod(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.shop = Shop(BUILD)
        cls.shop.__enter__()
        cls.gen = tempfile.mkdtemp(prefix=".gen-", dir=CONNECT_DIR)
        try:
            cls.backends = Backends(cls.shop)
            st, _, body = cls.shop.place([{"inventory_id": 1, "count": 2}])
            assert st in (201, 202), body
            cls.order_id = body["order_id"]
            st, _, body = cls.shop.place([{"inventory_id": 2, "count": 100000 // 100}])
            assert st in (201, 202), body
            cls.rejected_id = body["order_id"]
            cls.shop.wait_status(cls.order_id, ("SUCCESSFUL", "UNSUCCESSFUL"))
            cls.shop.wait_status(cls.rejected_id, ("SUCCESSFUL", "UNSUCCESSFUL"))
            if os.path.exists(PROTOC_GEN_ES):
                generate_es(cls.gen)
            cls.clients = Clients(cls.shop.http_port, cls.gen)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.gen, ignore_errors=True)
        cls.shop.__exit__(None, None, None)

    def setUp(self):
        require_tools(self)

    def calls(self):
        """A request for every method, and the RPC URL of its service."""
        inv, orders = self.shop.inv_rpc, self.shop.ord_rpc
        return [
            ("webshop.v1.Inventory", "GetCatalog", {}, inv),
            ("webshop.v1.Inventory", "GetProduct", {"id": 1}, inv),
            ("webshop.v1.Inventory", "GetReservation", {"orderId": self.order_id}, inv),
            ("webshop.v1.Inventory", "GetReservation", {"orderId": UNKNOWN}, inv),
            ("webshop.v1.Orders", "GetOrder", {"id": self.order_id}, orders),
            ("webshop.v1.Orders", "GetOrder", {"id": self.rejected_id}, orders),
            ("webshop.v1.Orders", "ListOrders", {"pageSize": 10}, orders),
        ]

    def test_every_method_is_called(self):
        self.assertEqual({(s, m) for s, m, _, _ in self.calls()}, proto_methods(),
                         "a method of inventory.proto or order.proto has no case here")

    def test_every_method_gives_what_webshopctl_gets_from_the_service(self):
        calls = self.calls()
        node_json = self.clients.node([{"service": s, "method": m, "request": r}
                                       for s, m, r, _ in calls])
        node_bin = self.clients.node([{"service": s, "method": m, "request": r}
                                      for s, m, r, _ in calls], binary=True)
        for i, (svc, method, req, url) in enumerate(calls):
            with self.subTest(method=f"{svc}/{method}", request=req):
                want, err = self.backends.call(url, f"/{svc}/{method}", req)
                self.assertIsNone(err)
                want = normalize(want)
                kind, got = self.clients.buf_curl(svc, method, req)
                self.assertEqual(kind, "ok", got)
                self.assertEqual(normalize(got), want, "buf curl")
                self.assertIn("response", node_json[i], node_json[i])
                self.assertEqual(normalize(node_json[i]["response"]), want, "connect-node JSON")
                self.assertIn("response", node_bin[i], node_bin[i])
                self.assertEqual(normalize(node_bin[i]["response"]), want,
                                 "connect-node binary")

    def test_errors_arrive_as_connect_errors_with_their_codes(self):
        cases = [
            ("webshop.v1.Orders", "GetOrder", {"id": UNKNOWN}, "not_found"),
            ("webshop.v1.Inventory", "GetProduct", {"id": 999999}, "not_found"),
            ("webshop.v1.Orders", "ListOrders", {"pageToken": "not a token"},
             "invalid_argument"),
        ]
        node_json = self.clients.node([{"service": s, "method": m, "request": r}
                                       for s, m, r, _ in cases])
        node_bin = self.clients.node([{"service": s, "method": m, "request": r}
                                      for s, m, r, _ in cases], binary=True)
        for i, (svc, method, req, code) in enumerate(cases):
            with self.subTest(method=f"{svc}/{method}", request=req):
                want, err = self.backends.call(
                    self.shop.inv_rpc if "Inventory" in svc else self.shop.ord_rpc,
                    f"/{svc}/{method}", req)
                self.assertIsNone(want, "the service itself answers an error")
                kind, got = self.clients.buf_curl(svc, method, req)
                self.assertEqual(kind, "error", got)
                self.assertEqual(got["code"], code, got)
                self.assertTrue(got.get("message"), got)
                self.assertEqual(node_json[i]["error"]["code"], code, node_json[i])
                self.assertEqual(node_bin[i]["error"]["code"], code, node_bin[i])
                self.assertEqual(node_json[i]["error"]["message"], got["message"])

    def test_protocol_errors_are_connect_errors_with_the_mapped_status(self):
        port = self.shop.http_port
        j = {"Content-Type": "application/json"}
        big = b'{"id": "' + b"a" * (70 * 1024) + b'"}'
        cases = [
            ("POST", "/webshop.v1.Inventory/NoSuchMethod", b"{}", j, 404, "unimplemented"),
            ("POST", "/webshop.v1.Inventory/GetCatalog/x", b"{}", j, 404, "unimplemented"),
            ("POST", "/webshop.v1.Inventory/getCatalog", b"{}", j, 404, "unimplemented"),
            ("POST", "/webshop.v1.Inventory/GetProduct", b'{"id": "x"}', j, 400,
             "invalid_argument"),
            ("POST", "/webshop.v1.Inventory/GetProduct", b'{"nope": 1}', j, 400,
             "invalid_argument"),
            ("POST", "/webshop.v1.Inventory/GetProduct", b"{", j, 400, "invalid_argument"),
            ("POST", "/webshop.v1.Orders/GetOrder", big, j, 429, "resource_exhausted"),
            ("POST", "/webshop.v1.Inventory/GetProduct", b"\xff\xff\xff",
             {"Content-Type": "application/proto"}, 400, "invalid_argument"),
            ("POST", "/webshop.v1.Inventory/GetCatalog", b"{}", {"Content-Type": "text/plain"},
             415, "invalid_argument"),
            ("POST", "/webshop.v1.Inventory/GetCatalog", b"{}",
             {"Content-Type": "application/connect+json"}, 415, "invalid_argument"),
            ("POST", "/webshop.v1.Inventory/GetCatalog", b"{}",
             dict(j, **{"Connect-Protocol-Version": "2"}), 400, "invalid_argument"),
            ("POST", "/webshop.v1.Inventory/GetCatalog", b"{}",
             dict(j, **{"Connect-Timeout-Ms": "soon"}), 400, "invalid_argument"),
            ("POST", "/webshop.v1.Inventory/GetCatalog", b"{}",
             dict(j, **{"Connect-Timeout-Ms": "12345678901"}), 400, "invalid_argument"),
            ("POST", "/webshop.v1.Inventory/GetCatalog", b"{}",
             dict(j, **{"Content-Encoding": "gzip"}), 501, "unimplemented"),
        ]
        for method, path, body, headers, status, code in cases:
            with self.subTest(path=path, headers=headers, body=body[:40]):
                st, h, got = raw(port, method, path, body, headers)
                self.assertEqual(st, status, got)
                self.assertEqual(h.get("content-type"), "application/json")
                self.assertEqual(got["code"], code, got)
                self.assertTrue(got["message"], got)
                if status == 415:
                    self.assertEqual(h.get("accept-post"), "application/json, application/proto")
        st, h, got = raw(port, "GET", "/webshop.v1.Inventory/GetCatalog")
        self.assertEqual((st, h.get("allow")), (405, "POST"), got)

    def test_the_plain_protocol_by_hand(self):
        port = self.shop.http_port
        st, h, got = raw(port, "POST", "/webshop.v1.Inventory/GetProduct", b'{"id": 2}',
                         {"Content-Type": "application/json; charset=utf-8",
                          "Connect-Protocol-Version": "1", "Connect-Timeout-Ms": "5000"})
        self.assertEqual(st, 200, got)
        self.assertEqual(h["content-type"], "application/json")
        self.assertEqual(got["product"]["id"], 2)
        # An empty body is the empty request message, in either encoding.
        for ct in ("application/json", "application/proto"):
            st, h, got = raw(port, "POST", "/webshop.v1.Inventory/GetCatalog", b"",
                             {"Content-Type": ct})
            self.assertEqual(st, 200, got)
            self.assertEqual(h["content-type"], ct)


class ConnectDeadline(unittest.TestCase):
    def setUp(self):
        require_tools(self)

    def test_connect_timeout_ms_is_the_rpc_deadline(self):
        # The order service is stopped (SIGSTOP: connected, never answering):
        # its calls wait out their deadline, which is the client's
        # Connect-Timeout-Ms, not the front's --rpc-deadline of 10 s.
        with Shop(BUILD, front_args=("--rpc-deadline", "10s")) as shop:
            gen = tempfile.mkdtemp(prefix=".gen-", dir=CONNECT_DIR)
            order = shop.procs["order"].p
            try:
                generate_es(gen)
                order.send_signal(signal.SIGSTOP)
                clients = Clients(shop.http_port, gen)
                t0 = time.monotonic()
                out = clients.node([{"service": "webshop.v1.Orders", "method": "GetOrder",
                                     "request": {"id": UNKNOWN}, "timeoutMs": 400}])
                took = time.monotonic() - t0
                self.assertEqual(out[0]["error"]["code"], "deadline_exceeded", out)
                self.assertLess(took, 5.0, "the front waited for its own --rpc-deadline")
                t0 = time.monotonic()
                st, _, got = raw(shop.http_port, "POST", "/webshop.v1.Orders/GetOrder",
                                 json.dumps({"id": UNKNOWN}).encode(),
                                 {"Content-Type": "application/json",
                                  "Connect-Timeout-Ms": "300"})
                took = time.monotonic() - t0
                self.assertEqual((st, got["code"]), (504, "deadline_exceeded"), got)
                self.assertLess(took, 5.0)
                kind, got = clients.buf_curl("webshop.v1.Orders", "GetOrder", {"id": UNKNOWN},
                                             timeout_ms=300)
                self.assertEqual((kind, got["code"]), ("error", "deadline_exceeded"), got)
                # The inventory is still served.
                kind, got = clients.buf_curl("webshop.v1.Inventory", "GetCatalog", {})
                self.assertEqual(kind, "ok", got)
            finally:
                order.send_signal(signal.SIGCONT)
                shutil.rmtree(gen, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
