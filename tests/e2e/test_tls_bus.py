"""The bus over TLS with client certificates (issue 20): a real mosquitto
listening on TLS only (require_certificate, no password file), the
services, webshopctl and mosquitto_pub/sub proving their broker user with
a certificate of the shop's CA (tools/shop_ca --bus), whose CN the broker
plugin webshop_clientid makes the user and binds the client ids to.

- the saga runs end to end over the TLS-only broker (every write and read
  passes the ACL section of the certificate's identity);
- no certificate, another CA's, an expired one, or no TLS at all: refused;
- the front's certificate cannot take webshop-inventory's client id nor
  claim its user name, and the inventory keeps its connection and session;
- the front's identity does not read what its ACL section does not give it.

Run: /usr/bin/python3 tests/e2e/test_tls_bus.py BUILD_DIR
"""

import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import WEBSHOP_TOOL, Shop, wait_until  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
STOCK = json.dumps({"productId": 999, "balance": 0})
SHOP_CA = os.path.join(os.path.dirname(WEBSHOP_TOOL), "shop_ca")


class BusOverTls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.shop = Shop(BUILD, broker_tls=True)
        # Certificates nobody may connect with: webshop-front's leaf valid
        # only in 2020 (from its own identity CA) and one from a root the
        # broker does not trust.
        subprocess.run([SHOP_CA, cls.shop.tls_dir, "--expired", "webshop-front",
                        "--foreign", "webshop-front"],
                       check=True, capture_output=True, timeout=60)
        cls.shop.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.shop.__exit__(None, None, None)

    def mqtt(self, prog, *args, timeout=20):
        r = subprocess.run([prog, "-h", "127.0.0.1", "-p", str(self.shop.broker_port),
                            "-V", "5", *args], capture_output=True, text=True,
                           timeout=timeout)
        return r.returncode, (r.stdout + r.stderr).strip()

    def pub(self, *args, topic="t/probe", msg="x"):
        body = ["-m", msg] if msg is not None else []
        return self.mqtt("mosquitto_pub", "-q", "1", "-t", topic, *body, *args)

    def order_completes(self):
        st, _, body = self.shop.place([{"inventoryId": 1, "count": 1}])
        self.assertEqual(st, 201, body)
        self.shop.wait_status(body["order_id"], "SUCCESSFUL")

    def test_saga_over_tls(self):
        self.order_completes()
        log = self.shop.procs["broker"].log()
        for user in ("webshop-inventory", "webshop-order", "webshop-front"):
            self.assertIn(f"u'{user}')", log)  # the certificate's CN is the user

    def test_webshopctl_publishes_as_admin(self):
        r = subprocess.run([os.path.join(BUILD, "tools", "webshopctl"), "--broker",
                            f"127.0.0.1:{self.shop.broker_port}", "--deadline", "5s",
                            *self.shop.ctl_args(), "publish", "inventory/stock-changed",
                            json.dumps({"productId": 999, "balance": 0})],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        # Against another CA the broker's certificate does not verify.
        tls = self.shop.tls_dir
        r = subprocess.run([os.path.join(BUILD, "tools", "webshopctl"), "--broker",
                            f"127.0.0.1:{self.shop.broker_port}", "--deadline", "2s",
                            "--broker-tls-ca", f"{tls}/foreign-ca.crt",
                            "--broker-tls-cert", f"{tls}/webshop-admin.crt",
                            "--broker-tls-key", f"{tls}/webshop-admin.key",
                            "publish", "inventory/stock-changed",
                            json.dumps({"productId": 999, "balance": 0})],
                           capture_output=True, text=True, timeout=20)
        self.assertNotEqual(r.returncode, 0, r.stderr)

    def test_refused_without_a_valid_certificate(self):
        tls = self.shop.tls_dir
        ca = ["--cafile", f"{tls}/ca.crt"]
        self.assertEqual(self.pub(*self.shop.mqtt_args())[0], 0)  # the control
        cases = {
            "no TLS": [],
            "no certificate": ca,
            "another CA's": ca + ["--cert", f"{tls}/webshop-front-foreign.crt",
                                  "--key", f"{tls}/webshop-front-foreign.key"],
            "expired": ca + ["--cert", f"{tls}/webshop-front-expired.crt",
                             "--key", f"{tls}/webshop-front-expired.key"],
        }
        for what, args in cases.items():
            rc, out = self.pub(*args)
            self.assertNotEqual(rc, 0, f"{what}: {out}")

    def test_takeover_refused(self):
        inv = self.shop.procs["inventory"]
        connects = inv.log().count("event=bus_connected")
        front = self.shop.mqtt_args("webshop-front")
        for args in (["-i", "webshop-inventory"],
                     ["-i", "webshop-inventory", "-u", "webshop-inventory"],
                     ["-i", "webshop-front-x", "-u", "webshop-inventory"]):
            rc, out = self.mqtt("mosquitto_sub", "-t", "public-front/#", "-c", "-W", "5",
                                *front, *args)
            self.assertNotEqual(rc, 0, out)
            self.assertIn("Not authorized", out)
        # The holder kept its connection (no new CONNECT, so no new
        # session) and keeps consuming.
        self.order_completes()
        self.assertEqual(inv.log().count("event=bus_connected"), connects, inv.log()[-3000:])
        self.assertIn("refused client id webshop-inventory for user webshop-front",
                      self.shop.procs["broker"].log())

    def test_acl_is_per_identity(self):
        # The front reads inventory/stock-changed and order/order-status, not
        # t/probe (nor anything else). Retained messages on both (of a
        # product that does not exist) reach a new subscription at once, as
        # far as the ACL lets them: the front's identity gets one.
        admin = self.shop.mqtt_args()
        topics = ("t/probe", "inventory/stock-changed")
        for topic in topics:
            self.assertEqual(self.pub(*admin, "-r", topic=topic, msg=STOCK)[0], 0)
        try:
            rc, out = self.mqtt("mosquitto_sub", "-q", "1", "-t", topics[0], "-t", topics[1],
                                "-i", "webshop-front-acl", "-C", "2", "-W", "3", "-v",
                                *self.shop.mqtt_args("webshop-front"))
        finally:
            for topic in topics:
                self.pub(*admin, "-r", "-n", topic=topic, msg=None)
        self.assertEqual(out.splitlines()[:2], [f"inventory/stock-changed {STOCK}",
                                                "Timed out"], out)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
