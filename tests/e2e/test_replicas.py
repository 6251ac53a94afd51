"""Two of everything on one PostgreSQL (issue 14): two inventory, two order
and two front replicas (--replica K), the fronts behind HAProxy (round
robin, health check on /readyz), the backends consuming through MQTT v5
shared subscriptions, the fronts and the order replicas dialing every
replica of their backends on one RPC socket.

- Orders placed through HAProxy end final.
- An SSE stream on front A sees the status of an order written through
  front B (every front subscribes unshared).
- SIGKILL of one replica of each kind under a bounded load (each restarted
  at once, as its supervisor would): every order a client got 201 or 202
  for ends final, nothing stays PENDING.
- One inventory and one order replica stopped for good: the orders placed
  after it end final within BOUND_S (the share a stopped replica's session
  held is dropped after --replica-session-expiry, SESSION_S here, and the
  recovery loops of the replicas still up re-send what it held: the bound
  is SESSION_S + a few --resend-max-delay periods).

The clients behave as the API asks: a POST that got no answer (a front
killed mid-request) is sent again with the same Idempotency-Key, and so is
one whose order the shop does not know a few seconds after a 202.

PostgreSQL only (run under tests/support/with_pg). About 25 s.
Run: with_pg /usr/bin/python3 tests/e2e/test_replicas.py BUILD_DIR
"""

import http.client
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import TIME_SCALE, Shop, wait_until  # noqa: E402
from test_events import EventStream  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
FINAL = ("SUCCESSFUL", "UNSUCCESSFUL", "CANCELED")
SESSION_S = 2      # --replica-session-expiry of the backends
RESEND_MAX_S = 1   # --resend-max-delay of the order replicas
BOUND_S = SESSION_S + 4 * RESEND_MAX_S + 6  # stopped for good: final within this
REPOST_AFTER_S = 3  # a client re-POSTs an order still unknown this long


def request(port, method, path, body=None, headers=None, timeout=5):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read().decode("utf-8", errors="replace")
        try:
            return r.status, json.loads(text) if text else None
        except ValueError:
            return r.status, text
    finally:
        conn.close()


class Clients:
    """Orders by Idempotency-Key, as careful clients place them."""

    def __init__(self, port):
        self.port = port
        self.mu = threading.Lock()
        self.orders = {}  # key -> order id (None until a 201/202)
        self.posted = {}  # key -> monotonic time of the last POST
        self.errors = []

    def post(self, key, items=None):
        items = items or [{"inventoryId": 1 + len(key) % 2, "count": 1}]
        with self.mu:
            self.orders.setdefault(key, None)
            self.posted[key] = time.monotonic()
        try:
            st, body = request(self.port, "POST", "/order", {"items": items},
                               {"Idempotency-Key": key})
        except (OSError, http.client.HTTPException) as e:
            self.errors.append(f"{key}: {e!r}")
            return None
        if st in (201, 202) and isinstance(body, dict):
            with self.mu:
                self.orders[key] = body["order_id"]
            return body["order_id"]
        self.errors.append(f"{key}: {st} {body}")
        return None

    def settle(self, timeout):
        """Until every key's order is final: re-POST keys without an order,
        or whose order is unknown REPOST_AFTER_S after its last POST.
        Returns {key: last status} of those not final at the deadline."""
        deadline = time.monotonic() + timeout * TIME_SCALE
        left = dict.fromkeys(self.orders)
        while left and time.monotonic() < deadline:
            for key in list(left):
                oid = self.orders.get(key)
                status = None
                if oid is not None:
                    try:
                        st, body = request(self.port, "GET", f"/order/{oid}")
                        status = body.get("status") if st == 200 else st
                    except (OSError, http.client.HTTPException):
                        status = "unreachable"
                left[key] = status
                if status in FINAL:
                    del left[key]
                elif (oid is None or status == 404) and \
                        time.monotonic() - self.posted[key] > REPOST_AFTER_S:
                    self.post(key)
            if left:
                time.sleep(0.1)
        return left


class Replicas(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.shop = Shop(BUILD, replicas=2, replica_session=f"{SESSION_S}s",
                        order_args=("--resend-after", "500ms",
                                    "--resend-max-delay", f"{RESEND_MAX_S}s"),
                        front_args=("--sse-heartbeat", "1s"))
        cls.shop.__enter__()
        cls.clients = Clients(cls.shop.http_port)

    @classmethod
    def tearDownClass(cls):
        cls.shop.__exit__(None, None, None)

    def test_1_orders_through_haproxy_end_final(self):
        keys = [f"lb-{i}-{time.time_ns()}" for i in range(10)]
        for k in keys:
            self.assertIsNotNone(self.clients.post(k), self.clients.errors[-1:])
        self.assertEqual(self.clients.settle(20), {})
        # Round robin: both fronts took some of the POSTs (their access
        # lines are buffered, written within 100 ms).
        for k in range(2):
            proc = self.shop.procs[f"front-{k}"]
            wait_until(lambda: "method=POST path=/order" in proc.log(), 5,
                       f"front-{k} to log a POST")

    def test_2_stream_on_front_a_sees_order_written_on_front_b(self):
        a, b = self.shop.front_ports
        st, body = request(b, "POST", "/order", {"items": [{"inventoryId": 1, "count": 1}]},
                           {"Idempotency-Key": f"sse-{time.time_ns()}"})
        self.assertEqual(st, 201, body)
        oid = body["order_id"]
        wait_until(lambda: request(b, "GET", f"/order/{oid}")[1].get("status") in FINAL,
                   20, "the order to be final")
        s = EventStream(a, f"/events?orders={oid}")
        self.addCleanup(s.close)
        self.assertEqual(s.status, 200)
        first = s.next()
        self.assertEqual(first[0], "status")
        self.assertEqual(first[1]["status"], "SUCCESSFUL")
        # A change written through B reaches A's stream over the bus.
        st, body = request(b, "DELETE", f"/order/{oid}")
        self.assertEqual(st, 200, body)
        seen = s.until(lambda ev: ev[0] == "status" and ev[1]["status"] == "CANCELED", 10)
        self.assertEqual(seen[-1][1]["order_id"], oid)

    def test_3_sigkill_one_of_each_under_load_loses_nothing(self):
        stop = threading.Event()
        keys = []

        def load():
            i = 0
            while not stop.is_set() and i < 200:
                k = f"kill-{i}-{time.time_ns()}"
                keys.append(k)
                self.clients.post(k)
                i += 1
                time.sleep(0.02)
        threads = [threading.Thread(target=load) for _ in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: len(keys) >= 20, 20, "load to start")
        for name in ("inventory-1", "order-1", "front-1"):
            self.shop.kill(name)
        for name in ("inventory-1", "order-1", "front-1"):
            self.shop.start(name)
        n = len(keys)
        wait_until(lambda: len(keys) >= n + 40, 20, "40 more orders after the restarts")
        stop.set()
        for t in threads:
            t.join()
        errors = len(self.clients.errors)
        stuck = self.clients.settle(30)
        self.assertEqual(stuck, {}, f"{len(stuck)} of {len(keys)} orders not final")
        print(f"killed under load: {len(keys)} orders final, {errors} POSTs "
              f"unanswered and sent again", file=sys.stderr)

    def test_4_replicas_stopped_for_good_strand_nothing(self):
        for name in ("inventory-1", "order-1"):
            self.shop.procs[name].stop()
        t0 = time.monotonic()
        keys = [f"gone-{i}-{time.time_ns()}" for i in range(30)]
        for k in keys:
            self.clients.post(k)
        stuck = self.clients.settle(BOUND_S)
        took = time.monotonic() - t0
        self.assertEqual(stuck, {}, f"not final within {BOUND_S}s")
        print(f"stopped for good: {len(keys)} orders final in {took:.1f}s "
              f"(bound {BOUND_S}s)", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILD = os.environ["WEBSHOP_BUILD_DIR"] = sys.argv.pop(1)
    unittest.main(verbosity=2)
