"""Each service's settings are its own (issue 18): the front, the inventory
and the order service read WEBSHOP_FRONT_*, WEBSHOP_INVENTORY_* and
WEBSHOP_ORDER_* (--http-port from WEBSHOP_INVENTORY_HTTP_PORT, ...); only
the broker address, which every process of the shop shares, keeps one name
(WEBSHOP_BROKER). With the old shared names exported (WEBSHOP_HTTP_PORT=a
busy port, as a shell set up for another service has them) every service
still starts; with its own name on a busy port it exits 1 saying which
setting and which port. The same runs check the log vocabulary on the
lines the three processes really write: started, stopping, stopped,
start_failed and listen_failed carry the same keys for the same facts
(tests/log_vocabulary_test.py checks the sources for the rest).

No broker is needed: every service starts without one (it keeps trying to
connect), and none of this depends on the bus.

Run: /usr/bin/python3 tests/e2e/test_settings.py BUILD_DIR
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Proc, reserve_port, wait_until  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
SERVICES = ("front", "inventory", "order")
BACKENDS = ("inventory", "order")

_FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def program(name):
    return os.path.join(BUILD, name, "webshop-" + name)


def log_events(text, event):
    """The key=value fields of every `event` line in text, as dicts."""
    found = []
    for line in text.splitlines():
        if f" event={event} " in line + " ":
            fields = {k: v.strip('"') for k, v in _FIELD.findall(line)}
            if fields.get("event") == event:
                found.append(fields)
    return found


class BusyPort:
    """A loopback port something listens on, for the test's duration."""

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        return self

    def __exit__(self, *exc):
        self.sock.close()


class Settings(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="webshop-settings-")
        self.broker = f"127.0.0.1:{reserve_port()}"  # nobody listens there

    def argv(self, name):
        argv = [program(name)]
        if name in BACKENDS:
            argv += ["--db-path", os.path.join(self.tmp, name + ".db")]
        return argv

    def run_to_exit(self, name, env, timeout=30):
        full = {k: v for k, v in os.environ.items() if not k.startswith("WEBSHOP_")}
        full["WEBSHOP_RUNTIME_DIR"] = os.path.join(self.tmp, "run")  # the default sockets
        full.update(env)
        return subprocess.run(self.argv(name), env=full, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def test_old_shared_names_are_ignored(self):
        """Old names on a busy port and a bad client id: ignored; own names and
        WEBSHOP_BROKER are read. Then the lifecycle lines of the three
        services are compared."""
        with BusyPort() as busy:
            procs = {}
            try:
                for n in SERVICES:
                    up = n.upper()
                    env = {
                        # What a shell set up for the old names exports.
                        "WEBSHOP_HTTP_PORT": str(busy.port),
                        "WEBSHOP_RPC_URL": f"tcp://127.0.0.1:{busy.port}",
                        "WEBSHOP_DB_PATH": "/nonexistent/dir/x.db",
                        "WEBSHOP_CLIENT_ID": "not-mine",
                        "WEBSHOP_LOG_LEVEL": "error",
                        # The service's own, and the shared broker.
                        f"WEBSHOP_{up}_HTTP_PORT": "0",
                        f"WEBSHOP_{up}_CLIENT_ID": f"own-{n}",
                        "WEBSHOP_BROKER": self.broker,
                        "WEBSHOP_RUNTIME_DIR": os.path.join(self.tmp, "run"),
                    }
                    if n in BACKENDS:
                        env[f"WEBSHOP_{up}_RPC_URL"] = "tcp://127.0.0.1:0"
                        env[f"WEBSHOP_{up}_RPC_PLAINTEXT"] = "1"
                    procs[n] = Proc(n, self.argv(n), self.tmp, env=env).start()
                started = {}
                for n, p in procs.items():
                    def seen(p=p):
                        if not p.alive():
                            raise AssertionError(f"{p.name} exited {p.p.returncode}:\n"
                                                 + p.log()[-3000:])
                        lines = log_events(p.log(), "started")
                        return lines[0] if lines else None
                    started[n] = wait_until(seen, 20, f"{n} to log started")
                codes = {n: p.stop() for n, p in procs.items()}
            finally:
                for p in procs.values():
                    p.kill()
        self.assertEqual(codes, {n: 0 for n in SERVICES})
        for n in SERVICES:
            self.assertEqual(started[n]["client_id"], f"own-{n}")
            self.assertEqual(started[n]["broker"], self.broker)
            self.assertNotEqual(started[n]["http"].rsplit(":", 1)[1], str(busy.port))
        self.check_lifecycle_vocabulary(started, {n: procs[n].log() for n in SERVICES})

    def check_lifecycle_vocabulary(self, started, logs):
        core = {"http", "broker", "client_id", "bus_format"}
        for n in SERVICES:
            want = core | ({"rpc", "db", "engine"} if n in BACKENDS else set())
            self.assertLessEqual(want, set(started[n]), f"{n} started: {started[n]}")
            self.assertRegex(started[n]["http"], r"^https?://", f"{n} started http=")
            self.assertIn(started[n]["bus_format"], ("protobuf", "json"))
            if n in BACKENDS:
                self.assertRegex(started[n]["rpc"], r"^tcp://")
        stopping = {n: log_events(logs[n], "stopping") for n in SERVICES}
        stopped = {n: log_events(logs[n], "stopped") for n in SERVICES}
        for n in SERVICES:
            self.assertEqual(len(stopping[n]), 1, f"{n}: {stopping[n]}")
            self.assertEqual(stopping[n][0]["signal"], "SIGTERM", n)
            self.assertEqual(len(stopped[n]), 1, f"{n}: {stopped[n]}")
            self.assertEqual(stopped[n][0]["exit"], "0", n)
        keysets = {n: sorted(stopped[n][0]) for n in SERVICES}
        self.assertEqual(len({tuple(k) for k in keysets.values()}), 1,
                         f"stopped keys differ: {keysets}")

    def test_own_http_port_busy_names_setting_and_port(self):
        with BusyPort() as busy:
            failed = {}
            for n in SERVICES:
                up = n.upper()
                env = {f"WEBSHOP_{up}_HTTP_PORT": str(busy.port), "WEBSHOP_BROKER": self.broker}
                if n in BACKENDS:
                    env[f"WEBSHOP_{up}_RPC_URL"] = "tcp://127.0.0.1:0"
                    env[f"WEBSHOP_{up}_RPC_PLAINTEXT"] = "1"
                r = self.run_to_exit(n, env)
                self.assertEqual(r.returncode, 1, f"{n}:\n{r.stderr[-3000:]}")
                self.assertIn(f"webshop-{n}: --http-port {busy.port} (WEBSHOP_{up}_HTTP_PORT, "
                              "from the environment): address in use", r.stderr)
                self.assertNotIn("outbox_flush_incomplete", r.stderr, n)
                failed[n] = r.stderr
        self.check_failure_vocabulary(failed, "http")

    def test_own_rpc_url_busy_names_setting_and_port(self):
        with BusyPort() as busy:
            failed = {}
            for n in BACKENDS:
                up = n.upper()
                url = f"tcp://127.0.0.1:{busy.port}"
                env = {f"WEBSHOP_{up}_RPC_URL": url, f"WEBSHOP_{up}_HTTP_PORT": "0",
                       f"WEBSHOP_{up}_RPC_PLAINTEXT": "1", "WEBSHOP_BROKER": self.broker}
                r = self.run_to_exit(n, env)
                self.assertEqual(r.returncode, 1, f"{n}:\n{r.stderr[-3000:]}")
                self.assertIn(f"webshop-{n}: --rpc-url {url} (WEBSHOP_{up}_RPC_URL, "
                              "from the environment): address in use", r.stderr)
                self.assertNotIn("outbox_flush_incomplete", r.stderr, n)
                failed[n] = r.stderr
        self.check_failure_vocabulary(failed, "rpc")

    def check_failure_vocabulary(self, logs, what):
        listen = {n: log_events(t, "listen_failed") for n, t in logs.items()}
        start = {n: log_events(t, "start_failed") for n, t in logs.items()}
        stopped = {n: log_events(t, "stopped") for n, t in logs.items()}
        for n in logs:
            self.assertEqual(len(listen[n]), 1, f"{n}: {logs[n][-2000:]}")
            self.assertEqual(listen[n][0]["what"], what)
            self.assertEqual(listen[n][0]["reason"], "address in use")
            self.assertEqual(len(start[n]), 1, f"{n}: {logs[n][-2000:]}")
            self.assertEqual(start[n][0]["what"], what)
            self.assertRegex(start[n][0]["error"], r"^WS_E")
            self.assertEqual([s["exit"] for s in stopped[n]], ["1"], n)
        for lines in (listen, start):
            keysets = {n: tuple(sorted(v[0])) for n, v in lines.items()}
            self.assertEqual(len(set(keysets.values())), 1, f"keys differ: {keysets}")

    def test_help_names_each_services_own_variables(self):
        for n in SERVICES:
            r = subprocess.run([program(n), "--help"], capture_output=True, text=True,
                               timeout=10)
            self.assertEqual(r.returncode, 0, n)
            names = re.findall(r"^      env (\S+?)(?:;| or (\S+?);)", r.stdout, re.M)
            self.assertGreater(len(names), 10, r.stdout)
            for env, env_file in names:
                for v in filter(None, (env, env_file)):
                    if v != "WEBSHOP_BROKER":
                        self.assertTrue(v.startswith(f"WEBSHOP_{n.upper()}_"),
                                        f"{n} --help: {v}")
            self.assertIn("env WEBSHOP_BROKER;", r.stdout, n)
            self.assertIn(f"WEBSHOP_{n.upper()}_PASSWORD_FILE", r.stdout, n)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
