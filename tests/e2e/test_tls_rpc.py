"""RPC over mutual TLS with real processes (issue 20): a shop whose backends
listen only on tls+tcp:// (one listener per caller identity, tools/shop_ca's
certificates) runs the whole saga; webshopctl as the admin lists orders, as
the front it is refused (PERMISSION_DENIED), without a certificate, with
another CA's or with an expired one it cannot call at all (UNAVAILABLE: the
handshake fails, nng reports no reason, the call times out as unconnected);
a plain tcp:// listener is refused without --rpc-plaintext. TlsEverywhere:
RPC over mutual TLS and the bus over TLS with client certificates at once:
place and cancel an order. RpcTransport (no shop; issue 19): without TLS too
a plain tcp:// RPC URL, listened on or dialed, is refused (exit 2, naming
the flag) unless --rpc-plaintext, which logs rpc_plaintext; the default
URLs are sockets in the runtime directory, made 0700 when missing and
refused when another user could write it; the socket is 0600.
Run: /usr/bin/python3 tests/e2e/test_tls_rpc.py BUILD_DIR
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Shop, free_port, reserve_port, wait_until  # noqa: E402

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
            "no certificate": ["--plaintext", plain],
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
            (["--inventory-url=tcp://127.0.0.1:1"],
             "--inventory-url: tcp://127.0.0.1:1 is plaintext: use ipc://PATH (same host) "
             "or tls+tcp:// with --rpc-tls-cert, or add --rpc-plaintext"),
            ([*tls, listen, "--inventory-url=tcp://127.0.0.1:7101"],
             "--inventory-url: tcp://127.0.0.1:7101 is plaintext"),
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


def program(name):
    return os.path.join(BUILD, name, f"webshop-{name}")


class RpcTransport(unittest.TestCase):
    """The RPC transport rules without TLS, on processes alone (no broker
    answers: the backends serve RPC before the bus connects). ~3 s."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="webshop-rpc-")
        self.broker = f"127.0.0.1:{reserve_port()}"  # nobody listens there

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def env(self, **extra):
        e = {k: v for k, v in os.environ.items()
             if not k.startswith("WEBSHOP_") and k != "XDG_RUNTIME_DIR"}
        e.update({"WEBSHOP_BROKER": self.broker, **extra})
        return e

    def argv(self, name, *args):
        db = ["--db-path", os.path.join(self.tmp, f"{name}.db")] if name != "front" else []
        return [program(name), *db, "--http-port", "0", *args]

    def run_to_exit(self, name, *args, env=None):
        return subprocess.run(self.argv(name, *args), capture_output=True, text=True,
                              timeout=30, env=env or self.env(
                                  WEBSHOP_RUNTIME_DIR=os.path.join(self.tmp, "rt")))

    def serve(self, name, *args, env=None, while_up=None):
        """Start name, wait for its rpc_listening line, call while_up() while
        it runs, stop it; returns its log."""
        log = os.path.join(self.tmp, f"{name}.log")
        with open(log, "w") as f:
            p = subprocess.Popen(self.argv(name, *args), stdout=f, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env or self.env())

        def text():
            with open(log) as f:
                return f.read()
        try:
            wait_until(lambda: "event=rpc_listening" in text() or p.poll() is not None, 20,
                       f"{name} to listen")
            self.assertIsNone(p.poll(), text())
            if while_up is not None:
                while_up()
        finally:
            p.terminate()
            p.wait(timeout=15)
        return text()

    def test_plain_tcp_is_refused_without_the_flag(self):
        url = f"tcp://127.0.0.1:{free_port()}"
        for name, flag in (("inventory", "rpc-url"), ("order", "rpc-url"),
                           ("order", "inventory-url"), ("front", "inventory-url"),
                           ("front", "orders-url"), ("inventory", "orders-url")):
            with self.subTest(f"{name} --{flag}"):
                r = self.run_to_exit(name, f"--{flag}={url}")
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(f"webshop-{name}: --{flag}: {url} is plaintext: use ipc://PATH "
                              "(same host) or tls+tcp:// with --rpc-tls-cert, or add "
                              "--rpc-plaintext", r.stderr)

    def test_plain_tcp_with_the_flag_serves_and_warns(self):
        url = f"tcp://127.0.0.1:{free_port()}"
        log = self.serve("inventory", "--rpc-url", url, "--rpc-plaintext",
                         env=self.env(WEBSHOP_RUNTIME_DIR=os.path.join(self.tmp, "rt")))
        warn = [line for line in log.splitlines() if "event=rpc_plaintext" in line]
        self.assertEqual(len(warn), 1, log)
        self.assertIn("level=warn", warn[0])
        self.assertIn(f"event=rpc_plaintext url={url} setting=--rpc-url", warn[0])
        self.assertIn(f"event=rpc_listening url={url}", log)

    def test_default_runtime_dir_is_made_private_and_the_socket_0600(self):
        rt = os.path.join(self.tmp, "rt")  # missing: the service makes it
        sock = os.path.join(rt, "order.rpc")

        def socket_0600():
            st = os.stat(sock)
            self.assertTrue(stat.S_ISSOCK(st.st_mode))
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
            self.assertEqual(stat.S_IMODE(os.stat(rt).st_mode), 0o700)
        log = self.serve("order", env=self.env(WEBSHOP_RUNTIME_DIR=rt), while_up=socket_0600)
        self.assertIn(f"event=rpc_listening url=ipc://{sock}", log)
        self.assertNotIn("rpc_plaintext", log)

    def test_socket_in_use_is_refused_and_the_server_keeps_serving(self):
        """A second server on a socket another one serves: refused (exit 2)
        before nng binds; nng's own stale-socket check would connect and
        close at once, which stops nng 1.5's listener from accepting (nng
        issue #1518): the first server must still answer afterwards."""
        rt = os.path.join(self.tmp, "rt")
        env = self.env(WEBSHOP_RUNTIME_DIR=rt)
        url = f"ipc://{rt}/inventory.rpc"
        ctl = os.path.join(BUILD, "tools", "webshopctl")

        def second():
            argv = [program("inventory"), "--db-path", os.path.join(self.tmp, "second.db"),
                    "--http-port", "0"]
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(f"webshop-inventory: --rpc-url: {url}: address in use", r.stderr)
            r = subprocess.run([ctl, "--deadline", "5s", "list", url], capture_output=True,
                               text=True, timeout=30, env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("webshop.v1.Inventory", r.stdout)
        self.serve("inventory", env=env, while_up=second)

    def test_default_urls_follow_the_runtime_dir(self):
        xdg = os.path.join(self.tmp, "xdg")
        cases = (({"WEBSHOP_RUNTIME_DIR": "/r/w/"}, "/r/w"),
                 ({"XDG_RUNTIME_DIR": xdg}, f"{xdg}/webshop"),
                 ({}, f"/tmp/webshop-{os.geteuid()}"))
        for extra, dir_ in cases:
            for name, flag, sock in (("inventory", "rpc-url", "inventory.rpc"),
                                     ("order", "rpc-url", "order.rpc"),
                                     ("order", "inventory-url", "inventory.rpc"),
                                     ("front", "inventory-url", "inventory.rpc"),
                                     ("front", "orders-url", "order.rpc")):
                with self.subTest(f"{name} --{flag} {extra}"):
                    r = subprocess.run([program(name), "--help"], capture_output=True,
                                       text=True, timeout=10, env=self.env(**extra))
                    self.assertEqual(r.returncode, 0, r.stderr)
                    block = r.stdout.split(f"  --{flag}=", 1)[1].split("\n  --", 1)[0]
                    self.assertIn(f'default "ipc://{dir_}/{sock}"', block)
        self.assertFalse(os.path.exists(xdg))  # --help makes nothing

    def test_shared_runtime_dir_is_refused(self):
        rt = os.path.join(self.tmp, "shared")
        os.mkdir(rt)
        os.chmod(rt, 0o770)
        for name, flag in (("inventory", "rpc-url"), ("front", "inventory-url")):
            with self.subTest(name):
                r = self.run_to_exit(name, env=self.env(WEBSHOP_RUNTIME_DIR=rt))
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(f"webshop-{name}: --{flag}: ipc://{rt}/", r.stderr)
                self.assertIn(f"the runtime directory {rt} is group- or other-writable "
                              "(mode 0770)", r.stderr)
        link = os.path.join(self.tmp, "link")
        os.symlink(rt, link)
        r = self.run_to_exit("order", env=self.env(WEBSHOP_RUNTIME_DIR=link))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(f"{link} is not a directory", r.stderr)

    def test_socket_path_too_long_names_the_flag(self):
        long_dir = os.path.join(self.tmp, "d" * 100)
        r = self.run_to_exit("order", env=self.env(WEBSHOP_RUNTIME_DIR=long_dir))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("webshop-order: --rpc-url: ipc://", r.stderr)
        self.assertIn("expected 1..107 (what a socket address holds)", r.stderr)
        self.assertFalse(os.path.exists(long_dir))


if __name__ == "__main__":
    if len(sys.argv) > 1:
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
