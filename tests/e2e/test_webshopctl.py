"""webshopctl against real processes (issue 3): call, list, publish and watch,
and its error exits. Run: /usr/bin/python3 tests/e2e/test_webshopctl.py BUILD_DIR
"""

import json
import os
import subprocess
import sys
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Shop, reserve_port, wait_until  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")


class Webshopctl(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.shop = Shop(BUILD, services=("broker", "inventory", "order"))
        cls.shop.__enter__()
        cls.ctl = os.path.join(BUILD, "tools", "webshopctl")
        cls.broker = f"127.0.0.1:{cls.shop.broker_port}"

    @classmethod
    def tearDownClass(cls):
        cls.shop.__exit__(None, None, None)

    def run_ctl(self, *args, stdin=None, timeout=20):
        return subprocess.run([self.ctl, "--broker", self.broker, "--deadline", "2s", *args],
                              input=stdin, capture_output=True, text=True, timeout=timeout)

    def test_list_uses_reflection(self):
        r = self.run_ctl("list", self.shop.inv_rpc)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("webshop.v1.Inventory", r.stdout)
        self.assertIn("GetCatalog", r.stdout)
        self.assertIn("webshop.v1.Reflection", r.stdout)

    def test_call_prints_the_response_as_json(self):
        r = self.run_ctl("call", self.shop.inv_rpc, "/webshop.v1.Inventory/GetCatalog", "{}")
        self.assertEqual(r.returncode, 0, r.stderr)
        body = json.loads(r.stdout)
        names = {p["id"]: p["name"] for p in body["products"]}
        self.assertEqual(names[1], "One Leg Web Shop Prototype")

    def test_call_reads_the_request_from_stdin(self):
        r = self.run_ctl("call", self.shop.inv_rpc, "/webshop.v1.Inventory/GetProduct",
                         stdin='{"id": 2}')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["product"]["price"], 2000)

    def test_call_not_found_exits_1_with_the_status(self):
        r = self.run_ctl("call", self.shop.inv_rpc, "/webshop.v1.Inventory/GetProduct",
                         '{"id": 999}')
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)

    def test_errors_exit_non_zero_with_a_message(self):
        cases = [
            (("call", self.shop.inv_rpc, "/webshop.v1.Inventory/Nope", "{}"), "Nope"),
            (("call", self.shop.inv_rpc, "/webshop.v1.Inventory/GetProduct", '{"id": "x"}'),
             "id"),
            (("call", self.shop.inv_rpc, "/webshop.v1.Inventory/GetProduct", "{"), ""),
            # A reserved port: held by this process, so no test listens there.
            (("--plaintext", "call", f"tcp://127.0.0.1:{reserve_port()}",
              "/webshop.v1.Inventory/GetCatalog", "{}"), "UNAVAILABLE"),
            # Plain tcp:// (or host:port) only with --plaintext.
            (("call", "tcp://127.0.0.1:1", "/webshop.v1.Inventory/GetCatalog", "{}"),
             "tcp://127.0.0.1:1 is plaintext: use ipc://"),
            (("list", "127.0.0.1:1"), "tcp://127.0.0.1:1 is plaintext"),
            (("call", "/acme.v1.Unknown/Get", "{}"), "no URL"),
            (("call", "http://x", "/webshop.v1.Inventory/GetCatalog", "{}"), ""),
            (("publish", "no/such-topic", "{}"), "no/such-topic"),
            (("publish", "public-front/order-send", '{"bogus": 1}'), "bogus"),
            (("--username", "nobody", "--password", "wrong", "publish",
              "public-front/order-canceled", '{"orderId": "x"}'), "not authorized"),
            (("frobnicate",), "frobnicate"),
            ((), ""),
        ]
        for args, frag in cases:
            with self.subTest(args=args):
                r = self.run_ctl(*args)
                self.assertNotEqual(r.returncode, 0, r.stdout)
                self.assertTrue(r.stderr.startswith("webshopctl: "), r.stderr)
                self.assertIn(frag, r.stderr)

    def test_default_sockets_need_no_url(self):
        """inventory and order name the services' default sockets in the
        runtime directory (the shop's: WEBSHOP_RUNTIME_DIR), as does a call
        without a URL; a plain tcp:// URL is refused without --plaintext."""
        self.assertEqual(self.shop.inv_rpc,
                         "ipc://" + os.path.join(os.environ["WEBSHOP_RUNTIME_DIR"],
                                                 "inventory.rpc"))
        r = self.run_ctl("call", "/webshop.v1.Inventory/GetProduct", '{"id": 2}')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["product"]["price"], 2000)
        r = self.run_ctl("list", "order")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("webshop.v1.Orders", r.stdout)
        r = self.run_ctl("call", "/webshop.v1.Orders/ListOrders", stdin="{}")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.run_ctl("call", "tcp://127.0.0.1:1", "/webshop.v1.Orders/ListOrders", "{}")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("or add --plaintext", r.stderr)

    def test_describe_prints_what_the_server_serves(self):
        r = self.run_ctl("describe", self.shop.inv_rpc, "webshop.v1.Inventory")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("service webshop.v1.Inventory {", r.stdout)
        self.assertIn("rpc GetCatalog(webshop.v1.GetCatalogRequest) returns "
                      "(webshop.v1.GetCatalogResponse);", r.stdout)
        r = self.run_ctl("describe", self.shop.ord_rpc, "webshop.v1.Order")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("message webshop.v1.Order {", r.stdout)
        self.assertIn("repeated webshop.v1.OrderItem items = ", r.stdout)
        r = self.run_ctl("describe", self.shop.ord_rpc, "webshop.v1.OrderStatus")
        self.assertIn("CANCELED = ", r.stdout)
        r = self.run_ctl("describe", self.shop.ord_rpc, "webshop.v1.Orders.GetOrder")
        self.assertTrue(r.stdout.startswith("rpc GetOrder(webshop.v1.GetOrderRequest)"),
                        r.stdout)
        # From a descriptor set instead (protoc --include_imports -o, as the
        # build writes tests/proto_dyn.pb).
        r = self.run_ctl("--protoset", os.path.join(BUILD, "tests", "proto_dyn.pb"), "call",
                         self.shop.inv_rpc, "/webshop.v1.Inventory/GetProduct", '{"id": 2}')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["product"]["price"], 2000)
        r = self.run_ctl("--protoset", "/nonexistent.pb", "describe", self.shop.inv_rpc,
                         "webshop.v1.Order")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent.pb", r.stderr)
        r = self.run_ctl("describe", self.shop.inv_rpc, "webshop.v1.NoSuch")
        self.assertEqual(r.returncode, 1)
        self.assertIn("NOT_FOUND", r.stderr)

    def test_call_and_describe_a_service_webshopctl_was_not_built_with(self):
        """examples/billing: its types exist only in the server's descriptors."""
        exe = os.path.join(BUILD, "tests", "billing-server")
        srv = subprocess.Popen([exe, "tcp://127.0.0.1:0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        try:
            url = srv.stdout.readline().strip()
            self.assertTrue(url.startswith("tcp://127.0.0.1:"), url)

            def ctl(*args):  # the example serves plain tcp://
                return self.run_ctl("--plaintext", *args)
            r = ctl("call", url, "acme.billing.v1.Billing/Charge",
                    '{"account": "ada", "cents": "250", "purpose": "PURPOSE_ORDER"}')
            self.assertEqual(r.returncode, 0, r.stderr)
            reply = json.loads(r.stdout)
            self.assertEqual(reply["balance_cents"], "250")
            # A google.protobuf.Timestamp, known by name: RFC 3339 in JSON.
            self.assertRegex(reply["charged_at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
            r = ctl("call", url, "/acme.billing.v1.Billing/GetBalance",
                    '{"account": "ada"}')
            self.assertEqual(json.loads(r.stdout), {"balance_cents": "250"})
            r = ctl("call", url, "acme.billing.v1.Billing.Charge", '{"account": ""}')
            self.assertEqual(r.returncode, 1)
            self.assertIn("INVALID_ARGUMENT", r.stderr)
            r = ctl("call", url, "acme.billing.v1.Billing/Charge", '{"nope": 1}')
            self.assertEqual(r.returncode, 1)
            self.assertIn("nope", r.stderr)
            r = ctl("describe", url, "acme.billing.v1.ChargeRequest")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("acme.billing.v1.Purpose purpose = 3;", r.stdout)
            # The same types from the .proto file, compiled by protoc.
            src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                               "examples", "billing")
            r = ctl("--proto", "billing.proto", "--import-path", src, "call", url,
                    "acme.billing.v1.Billing/GetBalance", '{"account": "ada"}')
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(json.loads(r.stdout), {"balance_cents": "250"})
        finally:
            srv.terminate()
            srv.wait(timeout=10)
            srv.stdout.close()
            srv.stderr.close()

    def test_publish_and_watch(self):
        watch = subprocess.Popen([self.ctl, "--broker", self.broker, "--count", "2",
                                  "--duration", "20s", "watch"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            oid = str(uuid.uuid4())
            # The watcher may still be subscribing: publish until it has seen
            # something, bounded by the deadline below.
            seen = []

            def published_and_seen():
                r = self.run_ctl("publish", "public-front/order-canceled",
                                 json.dumps({"orderId": oid}))
                self.assertEqual(r.returncode, 0, r.stderr)
                return watch.poll() is not None
            wait_until(published_and_seen, 20, "webshopctl watch to print two events",
                       interval=0.2)
            out, err = watch.communicate(timeout=10)
            self.assertEqual(watch.returncode, 0, err)
            for line in out.splitlines():
                seen.append(json.loads(line))
            topics = {e["topic"] for e in seen}
            self.assertTrue(topics & {"public-front/order-canceled", "order/order-canceled",
                                      "order/order-status"}, seen)
            mine = [e for e in seen if e["topic"] == "public-front/order-canceled"]
            if mine:
                self.assertEqual(mine[0]["event"]["order_id"], oid)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.communicate()


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
