"""`tools/webshop up` heals its shop and keeps its ports, with real
processes: a shop started by the launcher on --http-port P (a free run of
six ports) listens on the derived ports P..P+5 that `status` prints, writes
a Prometheus scrape config of its three /metrics targets that `promtool
check config` accepts, restarts the order service after a kill -9 (status:
order_restarts=1, order_last_exit=signal=SIGKILL; the exit and the restart
are logged) and takes an order afterwards; a second shop whose derived ports
overlap is refused naming the port; `down` takes under 2 s and leaves
nothing running, supervisors included.

Run: /usr/bin/python3 tests/e2e/test_supervise.py BUILD_DIR
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import (PORT_FLOOR, _PortReserver, ephemeral_range, http_ok, pid_alive,  # noqa: E402
                  wait_until)

BUILD = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else "build")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
WEBSHOP = os.path.join(ROOT, "tools", "webshop")
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
SERVICES = ("broker", "inventory", "order", "front")
# The scheme of tools/webshop's header: role -> offset from --http-port
# (P+2 and P+4 are RPC ports with --tls only: RPC is over ipc:// here).
OFFSETS = {"front": 0, "broker": 1, "inventory_metrics": 3, "order_metrics": 5}


def port_run():
    """(P, fd): six consecutive free ports P..P+5 outside the ephemeral
    range, by the lock protocol of shop.py. P's lock is kept (fd), as the
    bench keeps the port it gives `up`; P+1..P+5 are let go for `up` to lock."""
    lo, hi = ephemeral_range()
    start = PORT_FLOOR + int.from_bytes(os.urandom(2), "little") % 20000
    for base in range(start, 65530):
        ports = range(base, base + 6)
        if any(lo <= p <= hi for p in ports):
            continue
        fds = []
        for p in ports:
            fd = _PortReserver._lock(p)
            if fd is None or not _PortReserver._bindable(p):
                if fd is not None:
                    os.close(fd)
                break
            fds.append(fd)
        if len(fds) == 6:
            for p, fd in zip(ports[1:], fds[1:]):
                _PortReserver._drop(p, fd)
            return base, fds[0]
        for p, fd in zip(ports, fds):
            _PortReserver._drop(p, fd)
    raise AssertionError("no run of six free ports")


class Supervised(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="webshop-supervise-")
        cls.env = {k: v for k, v in os.environ.items()
                   if k not in ("WEBSHOP_STATE_DIR", "WEBSHOP_HTTP_PORT", "WEBSHOP_STORE")}
        cls.env["WEBSHOP_BUILD_DIR"] = BUILD
        cls.port, cls.port_fd = port_run()
        r = cls.webshop("up", "--http-port", str(cls.port), timeout=180)
        if r.returncode != 0:
            cls.webshop("down")
            raise AssertionError(f"up failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
                                 f"\n{cls.logs()}")
        cls.pids = set()
        cls.remember_pids()

    @classmethod
    def tearDownClass(cls):
        cls.webshop("down")
        os.close(cls.port_fd)
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def webshop(cls, *args, timeout=60, state_dir=None):
        return subprocess.run([WEBSHOP, *args, "--state-dir", state_dir or cls.dir],
                              env=cls.env, capture_output=True, text=True, timeout=timeout)

    @classmethod
    def status(cls):
        r = cls.webshop("status")
        facts = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            facts.setdefault(k, v)
        return facts

    @classmethod
    def remember_pids(cls):
        """Every service and supervisor pid seen, for the final check."""
        run = os.path.join(cls.dir, "run")
        for name in os.listdir(run):
            if name.endswith(".pid"):
                with open(os.path.join(run, name)) as f:
                    text = f.read().strip()
                if text.isdigit():
                    cls.pids.add(int(text))

    @classmethod
    def logs(cls):
        out = []
        for name in ("supervisor", *SERVICES):
            try:
                with open(os.path.join(cls.dir, "logs", name + ".log")) as f:
                    out.append(f"--- {name}.log\n" + f.read()[-3000:])
            except OSError:
                pass
        return "\n".join(out)

    def test_ports_follow_http_port_and_status_prints_them(self):
        facts = self.status()
        self.assertEqual(facts["running"], "yes")
        for role, off in OFFSETS.items():
            self.assertEqual(facts[f"{role}_port"], str(self.port + off), role)
        self.assertEqual(facts["url"], f"http://127.0.0.1:{self.port}/")
        run = os.path.join(os.path.realpath(self.dir), "run")
        self.assertEqual(facts["rpc_transport"], "ipc")
        self.assertEqual(facts["rpc_dir"], run)
        self.assertEqual(facts["order_rpc"], f"ipc://{run}/order.rpc")
        self.assertEqual(facts["inventory_rpc"], f"ipc://{run}/inventory.rpc")
        self.assertNotIn("order_rpc_port", facts)
        self.assertEqual(os.stat(run).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(f"{run}/order.rpc").st_mode & 0o777, 0o600)
        self.assertTrue(http_ok(self.port + 3, "/metrics"))
        self.assertTrue(http_ok(self.port + 5, "/metrics"))

    def test_scrape_config_names_the_three_metrics_targets(self):
        path = self.status()["prometheus_config"]
        self.assertEqual(path, os.path.join(os.path.realpath(self.dir), "prometheus.yml"))
        with open(path) as f:
            text = f.read()
        for off in (0, 3, 5):
            self.assertIn(f"'127.0.0.1:{self.port + off}'", text)
        if not os.path.exists(PROMTOOL):
            self.skipTest("promtool is missing (Debian package prometheus)")
        r = subprocess.run([PROMTOOL, "check", "config", path], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_overlapping_shop_is_refused_naming_the_port(self):
        other = tempfile.mkdtemp(prefix="webshop-supervise-other-")
        try:
            # Its broker port would be this shop's /metrics port of the
            # inventory (P+3), or an earlier one of its ports is taken.
            r = self.webshop("up", "--http-port", str(self.port + 2), state_dir=other,
                             timeout=120)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertRegex(r.stderr, r"port \d+ is (already in use|reserved)")
            self.assertRegex(r.stderr, r"it (is|would be) the .+ port")
        finally:
            self.webshop("down", state_dir=other)
            shutil.rmtree(other, ignore_errors=True)

    def test_killed_order_service_comes_back_and_takes_orders(self):
        before = self.status()
        old = int(before["order_pid"])
        os.kill(old, signal.SIGKILL)

        def restarted():
            f = self.status()
            pid = f.get("order_pid")
            return f if pid and int(pid) != old and pid_alive(int(pid)) else None
        facts = wait_until(restarted, 20, "the order service to be restarted")
        self.remember_pids()
        self.assertEqual(facts["order_restarts"], "1")
        self.assertEqual(facts["order_last_exit"], "signal=SIGKILL")
        for name in ("broker", "inventory", "front"):
            self.assertEqual(facts[f"{name}_restarts"], "0", name)
            self.assertEqual(facts[f"{name}_pid"], before[f"{name}_pid"], name)
        with open(os.path.join(self.dir, "logs", "supervisor.log")) as f:
            sup = f.read()
        self.assertIn("event=service_exited service=order signal=SIGKILL", sup)
        self.assertIn("event=service_restarting service=order restarts=1", sup)
        with open(os.path.join(self.dir, "logs", "order.log")) as f:
            self.assertIn("event=service_restarting service=order restarts=1", f.read())

        wait_until(lambda: http_ok(self.port + 5, "/readyz"), 20, "order /readyz")
        wait_until(lambda: http_ok(self.port, "/readyz"), 20, "front /readyz")
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/order", method="POST",
            data=json.dumps({"items": [{"inventoryId": 1, "count": 1}]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertIn(r.status, (201, 202))
            oid = json.load(r)["order_id"]

        def successful():
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/order/{oid}",
                                        timeout=5) as r:
                return json.load(r).get("status") == "SUCCESSFUL"
        wait_until(successful, 20, f"order {oid} to be SUCCESSFUL\n{self.logs()}")

    def test_zz_down_is_quick_and_leaves_nothing(self):
        # Last (unittest runs tests by name): the shop stops here.
        self.remember_pids()
        t0 = time.monotonic()
        r = self.webshop("down")
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(took, 2.0, f"down took {took:.2f} s")
        left = [p for p in self.pids if pid_alive(p)]
        self.assertEqual(left, [], "processes left running")
        self.assertEqual(self.status()["running"], "no")
        with open(os.path.join(self.dir, "run", "order.supervisor")) as f:
            self.assertIn("state=stopped", f.read())


if __name__ == "__main__":
    unittest.main(verbosity=2)
