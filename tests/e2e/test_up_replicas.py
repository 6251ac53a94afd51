"""`tools/webshop up --replicas 2` (issue 14), with real processes: the
launcher starts PostgreSQL, the broker, two of each service and HAProxy,
and prints HAProxy's URL as the shop's; `status` lists every process with
its supervisor's restarts; an order placed through HAProxy ends final;
HAProxy spreads requests over both fronts and keeps serving while one is
killed with SIGKILL (its supervisor restarts it: front_0_restarts=1);
`--store sqlite` with replicas is refused; `down` stops exactly those
processes, supervisors and HAProxy included.

Run: /usr/bin/python3 tests/e2e/test_up_replicas.py BUILD_DIR
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import pid_alive, wait_until  # noqa: E402

BUILD = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else "build")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
WEBSHOP = os.path.join(ROOT, "tools", "webshop")
PROCESSES = ("broker inventory-0 inventory-1 order-0 order-1 front-0 front-1 haproxy")


class UpReplicas(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="webshop-replicas-")
        cls.env = {k: v for k, v in os.environ.items()
                   if not k.startswith("WEBSHOP_") or k == "WEBSHOP_PORT_DIR"}
        cls.env["WEBSHOP_BUILD_DIR"] = BUILD
        cls.up = cls.webshop("up", "--replicas", "2", "--http-port", "0", timeout=240)
        if cls.up.returncode != 0:
            cls.webshop("down")
            raise AssertionError(f"up failed ({cls.up.returncode}):\n{cls.up.stdout}\n"
                                 f"{cls.up.stderr}")
        cls.facts = cls.status()
        cls.url = cls.facts["url"]

    @classmethod
    def tearDownClass(cls):
        cls.webshop("down")
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def webshop(cls, *args, timeout=60, state_dir=None):
        return subprocess.run([WEBSHOP, *args, "--state-dir", state_dir or cls.dir],
                              env=cls.env, capture_output=True, text=True, timeout=timeout)

    @classmethod
    def status(cls):
        facts = {}
        for line in cls.webshop("status").stdout.splitlines():
            k, _, v = line.partition("=")
            facts.setdefault(k, v)
        return facts

    def request(self, method, path, body=None, headers=None):
        req = urllib.request.Request(self.url + path.lstrip("/"), method=method,
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None
        except OSError:
            return None, None

    def haproxy_log(self):
        with open(os.path.join(self.dir, "logs", "haproxy.log")) as f:
            return f.read()

    def test_1_status_lists_every_process_and_haproxy_is_the_storefront(self):
        f = self.facts
        self.assertEqual(f["processes"], PROCESSES)
        self.assertEqual(f["replicas"], "2")
        self.assertEqual(f["store"], "postgres")
        self.assertEqual(f["postgres_ready"], "yes")
        self.assertEqual(self.url, f"http://127.0.0.1:{f['haproxy_port']}/")
        self.assertIn(f"http://127.0.0.1:{f['haproxy_port']}/", self.up.stdout)
        for name in PROCESSES.split():
            key = name.replace("-", "_")
            self.assertTrue(pid_alive(int(f[f"{key}_pid"])), name)
            self.assertEqual(f[f"{key}_restarts"], "0", name)
        self.assertEqual(len(f["inventory_rpc"].split(",")), 2)
        self.assertEqual(len(f["order_rpc"].split(",")), 2)

    def test_2_order_through_haproxy_ends_final_on_both_fronts(self):
        st, body = self.request("POST", "/order", {"items": [{"inventoryId": 1, "count": 1}]},
                                {"Idempotency-Key": str(uuid.uuid4())})
        self.assertIn(st, (201, 202), body)
        oid = body["order_id"]

        def final():
            st, js = self.request("GET", f"/order/{oid}")
            return st == 200 and js["status"] in ("SUCCESSFUL", "UNSUCCESSFUL")
        wait_until(final, 20, "the order to end final")
        for _ in range(4):
            self.assertEqual(self.request("GET", "/inventory")[0], 200)
        log = self.haproxy_log()
        self.assertIn("fronts/front-0 ", log)
        self.assertIn("fronts/front-1 ", log)

    def test_3_a_killed_front_is_restarted_and_haproxy_keeps_serving(self):
        pid = int(self.status()["front_0_pid"])
        os.kill(pid, signal.SIGKILL)
        # Every request answered meanwhile: HAProxy retries on front-1 and
        # takes front-0 out of rotation until its /readyz answers again.
        for _ in range(10):
            self.assertEqual(self.request("GET", "/inventory")[0], 200)

        def restarted():
            f = self.status()
            return (f["front_0_restarts"] == "1" and f["front_0_pid"].isdigit()
                    and int(f["front_0_pid"]) != pid) and f
        f = wait_until(restarted, 20, "front-0's supervisor to restart it")
        self.assertEqual(f["front_0_last_exit"], "signal=SIGKILL")

    def test_4_sqlite_with_replicas_is_refused(self):
        other = tempfile.mkdtemp(prefix="webshop-replicas-sqlite-")
        try:
            r = self.webshop("up", "--replicas", "2", "--store", "sqlite", state_dir=other)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("--replicas 2 needs --store postgres", r.stderr)
        finally:
            shutil.rmtree(other, ignore_errors=True)

    def test_5_down_stops_exactly_the_shop(self):
        run = os.path.join(self.dir, "run")
        pids = set()
        for name in os.listdir(run):
            if name.endswith(".pid"):
                with open(os.path.join(run, name)) as f:
                    text = f.read().strip()
                if text.isdigit():
                    pids.add(int(text))
        self.assertGreaterEqual(len(pids), 16)  # 8 processes, 8 supervisors
        r = self.webshop("down")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([p for p in pids if pid_alive(p)], [])
        f = self.status()
        self.assertEqual(f["running"], "no")
        self.assertEqual(f["postgres_pid"], "")


if __name__ == "__main__":
    unittest.main(verbosity=2)
