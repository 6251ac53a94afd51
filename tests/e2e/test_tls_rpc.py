"""RPC over mutual TLS with real processes (issue 20): a shop whose backends
listen only on tls+tcp:// (one listener per caller identity, tools/shop_ca's
certificates) runs the whole saga; webshopctl as the admin lists orders, as
the front it is refused (PERMISSION_DENIED), without a certificate, with
another CA's or with an expired one it cannot call at all (UNAVAILABLE: the
handshake fails, nng reports no reason, the call times out as unconnected);
a plain tcp:// listener is refused without --rpc-plaintext. TlsEverywhere:
RPC over mutual TLS and the bus over TLS with client certificates at once:
place and cancel an order.
Run: /usr/bin/python3 tests/e2e/test_tls_rpc.py BUILD_DIR
"""

import json
import os
import subprocess
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Shop, free_port, wait_until  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
ITEM1 = [{"inventoryId": 1, "count": 2}]
LIST = "/webshop.v1.Orders/ListOrders"


def metric(port, series):
    """The value of series on the /metrics of 127.0.0.1:port; 0 if absent."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
    return 0


class TlsRpc(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Short recovery and orphan bounds, so that the backends' own calls
        # (order -> Inventory.GetReservation, inventory -> Orders.GetOrder)
        # happen within the test.
        cls.shop = Shop(BUILD, rpc_tls=True, order_args=["--resend-after", "300ms"],
                        inventory_args=["--orphan-after-ms", "1000"])
        cls.shop.__enter__()
        cls.ctl = os.path.join(BUILD, "tools", "webshopctl")

    @classmethod
    def tearDownClass(cls):
        cls.shop.__exit__(None, None, None)

    def run_ctl(self, *args, deadline="2s"):
        return subprocess.run([self.ctl, "--deadline", deadline, *args],
                              capture_output=True, text=True, timeout=30)

    def test_whole_saga_over_tls(self):
        before = self.shop.catalog()[1]["balance"]
        st, _, body = self.shop.place(ITEM1)
        self.assertEqual(st, 201, body)
        oid = body["order_id"]
        self.shop.wait_status(oid, "SUCCESSFUL")
        wait_until(lambda: self.shop.catalog()[1]["balance"] == before - 2, 10,
                   "stock to drop by 2")
        # The inventory's sweeper asks the order service over TLS (identity
        # inventory) whether the order it holds stock for exists.
        wait_until(lambda: metric(self.shop.inv_http,
                                  'webshop_inventory_orphan_checks_total{result="found"}') >= 1,
                   15, "the orphan sweep to find the order over TLS")
        st, _, body = self.shop.request("DELETE", f"/order/{oid}")
        self.assertEqual((st, body["status"]), (200, "CANCELED"), body)
        wait_until(lambda: self.shop.catalog()[1]["balance"] == before, 10,
                   "stock to be restored")
        # The order service's cancel check asks the inventory (identity order).
        wait_until(lambda: metric(self.shop.ord_http, 'webshop_rpc_client_calls_total{method='
                                  '"/webshop.v1.Inventory/GetReservation",code="OK"}') >= 1,
                   15, "the order service to call GetReservation over TLS")

    def test_admin_lists_orders(self):
        r = self.run_ctl(*self.shop.rpc_tls_args("admin"), "call", self.shop.ord_rpc, LIST,
                         "{}")
        self.assertEqual(r.returncode, 0, r.stderr)
        json.loads(r.stdout)
        r = self.run_ctl(*self.shop.rpc_tls_args("admin"), "call", self.shop.inv_rpc,
                         "/webshop.v1.Inventory/GetCatalog", "{}")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_front_identity_may_not_list_orders(self):
        url = self.shop.rpc_tls_urls["order"]["front"]
        # The types come through reflection, open to every identity.
        r = self.run_ctl(*self.shop.rpc_tls_args("front"), "call", url, LIST, "{}")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("PERMISSION_DENIED", r.stderr)
        wait_until(lambda: any("event=rpc_permission_denied" in line and "identity=front" in line
                               for line in self.shop.procs["order"].log().splitlines()), 10,
                   "the order service to log the refusal with the identity")
        # The front's certificate on the admin's listener: not its CA.
        r = self.run_ctl(*self.shop.rpc_tls_args("front"), "call", self.shop.ord_rpc, LIST,
                         "{}", deadline="1s")
        self.assertEqual(r.returncode, 1)
        self.assertIn("UNAVAILABLE", r.stderr)

    def test_no_foreign_or_expired_certificate_cannot_call(self):
        url = self.shop.ord_rpc
        plain = url.replace("tls+tcp://", "tcp://")
        cases = {
            "no certificate": [plain],
            "another CA": [*self.shop.rpc_tls_args("admin-foreign"), url],
            "expired": [*self.shop.rpc_tls_args("admin-expired"), url],
        }
        for what, head in cases.items():
            with self.subTest(what):
                r = self.run_ctl(*head[:-1], "call", head[-1], LIST, "{}", deadline="1s")
                self.assertEqual(r.returncode, 1, r.stdout)
                self.assertIn("UNAVAILABLE", r.stderr)

    def test_bad_combinations_name_the_flag(self):
        d = self.shop.tls_dir
        tls = [f"--rpc-tls-cert={d}/order.crt", f"--rpc-tls-key={d}/order.key",
               f"--rpc-tls-ca={d}/ca.crt"]
        inv = "--inventory-url=" + self.shop.rpc_tls_urls["inventory"]["order"]
        listen = "--rpc-tls-listen=admin=tls+tcp://127.0.0.1:0"
        cases = [
            ([tls[0], inv], "--rpc-tls-key: needed with"),
            ([f"--rpc-tls-cert={d}/nope.crt", *tls[1:], inv], "nope.crt: No such file"),
            ([listen], "--rpc-tls-listen: needs --rpc-tls-cert"),
            ([*tls, inv], "--rpc-tls-listen: a server with --rpc-tls-cert needs at least one"),
            ([*tls, inv, "--rpc-tls-listen=nobody=tls+tcp://127.0.0.1:0"],
             "nobody-ca.crt: No such file"),
            ([*tls, inv, "--rpc-tls-listen=admin=tcp://127.0.0.1:0"],
             "admin: expected a tls+tcp:// URL"),
            ([*tls, inv, listen + ",admin=tls+tcp://127.0.0.1:0"], "identity admin given twice"),
            ([*tls, inv, listen, f"--rpc-tls-ca-dir={self.shop.tmp}"], "admin-ca.crt"),
            (["--rpc-tls-ca-dir=/tmp"], "--rpc-tls-ca-dir: only with --rpc-tls-listen"),
            (["--rpc-plaintext"], "--rpc-plaintext: only with --rpc-tls-cert"),
            ([*tls, listen], "--inventory-url: tcp://127.0.0.1:7101 is plaintext"),
            ([*tls, listen, inv + ",tcp://127.0.0.1:1"], "--inventory-url: every URL tls+tcp://"),
        ]
        for args, want in cases:
            with self.subTest(want):
                r = subprocess.run([os.path.join(BUILD, "order", "webshop-order"), *args],
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(want, r.stderr)

    def test_plain_tcp_listener_needs_rpc_plaintext(self):
        d = self.shop.tls_dir
        base = [os.path.join(BUILD, "order", "webshop-order"),
                f"--rpc-tls-cert={d}/order.crt", f"--rpc-tls-key={d}/order.key",
                f"--rpc-tls-ca={d}/ca.crt",
                f"--rpc-url=tcp://127.0.0.1:{free_port()}",
                "--db-path", os.path.join(self.shop.tmp, "x.db")]
        r = subprocess.run(base, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--rpc-url", r.stderr)
        self.assertIn("--rpc-plaintext", r.stderr)
        # With --rpc-plaintext it serves, and says so (rpc_plaintext, warn).
        log = os.path.join(self.shop.tmp, "plaintext.log")
        with open(log, "w") as f:
            p = subprocess.Popen(base + ["--rpc-plaintext", "--http-port", "0",
                                         f"--broker=127.0.0.1:{self.shop.broker_port}",
                                         "--inventory-url", self.shop.rpc_tls_urls[
                                             "inventory"]["order"]],
                                 stdout=f, stderr=subprocess.STDOUT)
        try:
            def logged():
                with open(log) as f:
                    text = f.read()
                return "event=rpc_plaintext" in text and "event=rpc_listening" in text
            wait_until(lambda: logged() or p.poll() is not None, 15, "rpc_plaintext")
            with open(log) as f:
                self.assertTrue(logged(), f.read())
        finally:
            p.terminate()
            p.wait(timeout=15)
        # tls+tcp:// to the backends without the TLS flags: refused by name.
        r = subprocess.run([os.path.join(BUILD, "front", "webshop-front"),
                            "--inventory-url", self.shop.rpc_tls_urls["inventory"]["front"]],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--inventory-url: tls+tcp:// needs --rpc-tls-cert", r.stderr)


class TlsEverywhere(unittest.TestCase):
    """RPC over mutual TLS and the bus over TLS with client certificates at
    once (one tools/shop_ca directory for both): an order is placed, reserved
    over the bus, and canceled, its stock restored."""

    def test_saga_with_rpc_and_bus_over_tls(self):
        with Shop(BUILD, rpc_tls=True, broker_tls=True) as shop:
            self.assertTrue(all(u.startswith("tls+tcp://") for u in (shop.inv_rpc, shop.ord_rpc)))
            before = shop.catalog()[1]["balance"]
            st, _, body = shop.place(ITEM1)
            self.assertEqual(st, 201, body)
            oid = body["order_id"]
            shop.wait_status(oid, "SUCCESSFUL")
            wait_until(lambda: shop.catalog()[1]["balance"] == before - 2, 10,
                       "stock to drop by 2")
            st, _, body = shop.request("DELETE", f"/order/{oid}")
            self.assertEqual((st, body["status"]), (200, "CANCELED"), body)
            wait_until(lambda: shop.catalog()[1]["balance"] == before, 10,
                       "stock to be restored")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
