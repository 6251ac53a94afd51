"""End-to-end tests of what the front's write answers promise (issue 12,
and 11.6, 11.7): a 201 means the order service committed the order, a 202
means it is only queued at the broker, an Idempotency-Key reused with other
items is refused with 422, a DELETE of an order nobody recorded is 404.
Real processes, a real broker, SQLite files (or, under with_pg, PostgreSQL
databases: e2e_durable_pg); HTTP from a real client.
Run: /usr/bin/python3 tests/e2e/test_durable.py BUILD_DIR
"""

import os
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import (TIME_SCALE, Proc, Shop, http_ok, listening_url, reserve_port,  # noqa: E402
                  url_port, wait_until)

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
FINAL = ("SUCCESSFUL", "UNSUCCESSFUL", "CANCELED")
# The namespace of Idempotency-Key derived ids (front/order_id.c).
KEY_NAMESPACE = uuid.UUID("6a1f3c2e-9b4d-4e8a-b7c5-0d2e4f6a8b1c")


def second_front(shop, name="front2"):
    """Another front process on the same broker and backends, on a port of
    its own (reserved; its start is confirmed by its http_listening line);
    returns (Proc, port). The caller stops it."""
    port = reserve_port()
    argv = list(shop.argv["front"])
    argv[argv.index("--http-port") + 1] = str(port)
    p = Proc(name, argv, shop.logdir).start()
    shop.procs[name] = p  # its log is checked with the shop's
    if url_port(listening_url(p, "http_listening", 30)) != port:
        raise AssertionError(f"{name} listens elsewhere than on {port}")

    def ready():
        if not p.alive():
            raise AssertionError(f"{name} exited:\n{p.log()[-3000:]}")
        return http_ok(port, "/readyz")
    wait_until(ready, 30, f"{name} to be ready")
    return p, port


def get_via(shop, port, path):
    """GET path on another front's port: (status, parsed body)."""
    saved = shop.http_port
    shop.http_port = port
    try:
        st, _, body = shop.get(path)
    finally:
        shop.http_port = saved
    return st, body


class Durable(unittest.TestCase):
    """Read-your-writes, Idempotency-Key reuse, DELETE rules, prototype
    bodies and id case, on one shop with two fronts."""

    @classmethod
    def setUpClass(cls):
        cls.shop = Shop(BUILD, order_args=["--resend-after", "1s"])
        cls.shop.__enter__()
        cls.front2, cls.port2 = second_front(cls.shop)

    @classmethod
    def tearDownClass(cls):
        code = cls.front2.stop()
        cls.shop.__exit__(None, None, None)
        assert code == 0, f"front2 exited with {code} on SIGTERM"

    def place_ok(self, items, key=None):
        st, h, body = self.shop.place(items, key=key)
        self.assertEqual(st, 201, body)
        self.assertEqual(body["status"], "COMMITTED", body)
        self.assertEqual(h["location"], f"/order/{body['order_id']}")
        return body["order_id"]

    def test_get_right_after_201_finds_the_order_500_times_through_both_fronts(self):
        n, misses, lat = 500, [], []
        deadline = time.monotonic() + 240 * TIME_SCALE
        for i in range(n):
            self.assertLess(time.monotonic(), deadline, f"only {i} of {n} rounds in time")
            t0 = time.perf_counter()
            st, h, body = self.shop.place([{"inventoryId": 1 + i % 2, "count": 1}])
            lat.append(time.perf_counter() - t0)
            self.assertEqual(st, 201, body)
            oid = body["order_id"]
            # Alternate fronts: the order is in the order service's database,
            # not in one front's memory.
            if i % 2 == 0:
                gst, _, got = self.shop.get(h["location"])
            else:
                gst, got = get_via(self.shop, self.port2, h["location"])
            if gst != 200:
                misses.append((i, gst, got))
            else:
                self.assertEqual(got["id"], oid)
        self.assertEqual(misses, [], f"{len(misses)} of {n} GETs after a 201 missed")
        lat.sort()
        print(f"\nPOST->201 over {n} sequential POSTs: p50 {lat[n // 2] * 1e3:.2f} ms, "
              f"p90 {lat[int(n * 0.9)] * 1e3:.2f} ms, p99 {lat[int(n * 0.99)] * 1e3:.2f} ms, "
              f"max {lat[-1] * 1e3:.2f} ms", flush=True)

    def test_same_key_other_items_is_422_and_touches_no_stock(self):
        key = f"reuse-{uuid.uuid4()}"
        oid = self.place_ok([{"inventoryId": 1, "count": 1}], key=key)
        self.shop.wait_status(oid, FINAL)
        before = self.shop.catalog()
        st, h, body = self.shop.place([{"inventoryId": 2, "count": 3}], key=key)
        self.assertEqual(st, 422, body)
        self.assertEqual(body["code"], "IDEMPOTENCY_KEY_REUSED", body)
        self.assertIn(key, body["message"])
        self.assertNotIn("location", h)
        # Barrier: an order placed after it is final, so anything the 422
        # had published would have been applied by now.
        barrier = self.place_ok([{"inventoryId": 1, "count": 1}])
        self.shop.wait_status(barrier, FINAL)
        after = self.shop.catalog()
        self.assertEqual(after[2]["balance"], before[2]["balance"], "product 2 untouched")
        o = self.shop.order(oid)
        self.assertEqual(o["items"], [{"inventory_id": 1, "count": 1}], o)
        # Through the other front too: the check is against the order
        # service's record, not a front's memory.
        saved = self.shop.http_port
        self.shop.http_port = self.port2
        try:
            st, _, body = self.shop.place([{"inventoryId": 2, "count": 3}], key=key)
        finally:
            self.shop.http_port = saved
        self.assertEqual(st, 422, body)

    def test_same_key_same_items_in_any_order_is_201_with_the_same_id(self):
        key = f"retry-{uuid.uuid4()}"
        items = [{"inventoryId": 1, "count": 1}, {"inventoryId": 2, "count": 2}]
        oid = self.place_ok(items, key=key)
        for again in (items, list(reversed(items))):
            self.assertEqual(self.place_ok(again, key=key), oid)
        o = self.shop.wait_status(oid, FINAL)
        self.assertEqual(len(o["items"]), 2)

    def test_delete_of_an_unknown_order_is_404_and_creates_nothing(self):
        oid = str(uuid.uuid4())
        st, _, body = self.shop.request("DELETE", f"/order/{oid}")
        self.assertEqual(st, 404, body)
        self.assertEqual(body["code"], "NOT_FOUND")
        self.assertEqual(self.shop.get(f"/order/{oid}")[0], 404)
        # Nobody can pre-cancel another client's future order: the id a key
        # will give is public (UUIDv5 in the front's namespace), but a DELETE
        # before the order exists publishes nothing.
        key = f"precancel-{uuid.uuid4()}"
        future = str(uuid.uuid5(KEY_NAMESPACE, key))
        st, _, body = self.shop.request("DELETE", f"/order/{future}")
        self.assertEqual(st, 404, body)
        self.assertEqual(self.place_ok([{"inventoryId": 2, "count": 1}], key=key), future)
        o = self.shop.wait_status(future, FINAL)
        self.assertNotEqual(o["status"], "CANCELED", o)

    def test_delete_of_a_known_order_answers_200_canceled(self):
        oid = self.place_ok([{"inventoryId": 2, "count": 1}])
        st, h, body = self.shop.request("DELETE", f"/order/{oid}")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["id"], oid)
        self.assertEqual(body["status"], "CANCELED", body)
        self.assertEqual(self.shop.order(oid)["status"], "CANCELED")
        # Again: already canceled, answered at once with the same order.
        st, _, body = self.shop.request("DELETE", f"/order/{oid}")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "CANCELED")

    def test_prototype_body_with_order_id_is_accepted_and_the_id_ignored(self):
        for oid_sent in ("", str(uuid.uuid4()).upper()):
            st, h, body = self.shop.request(
                "POST", "/order",
                body={"orderId": oid_sent, "items": [{"inventoryId": 1, "count": 1}]})
            self.assertEqual(st, 201, body)
            self.assertNotEqual(body["order_id"], oid_sent.lower())
            self.shop.wait_status(body["order_id"], FINAL)
        st, _, body = self.shop.request(
            "POST", "/order", body={"orderId": "nope", "items": [{"inventoryId": 1, "count": 1}]})
        self.assertEqual(st, 400, body)
        self.assertIn("orderId", body["message"])

    def test_upper_case_ids_name_the_same_order(self):
        oid = self.place_ok([{"inventoryId": 1, "count": 1}])
        st, _, body = self.shop.get(f"/order/{oid.upper()}")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["id"], oid)
        st, _, body = self.shop.request("DELETE", f"/order/{oid.upper()}")
        self.assertEqual(st, 200, body)
        self.assertEqual((body["id"], body["status"]), (oid, "CANCELED"))


class DurableFaults(unittest.TestCase):
    def test_order_service_down_answers_202_within_the_bound_then_final(self):
        wait_s = 1.0
        with Shop(BUILD, order_args=["--resend-after", "1s"],
                  front_args=["--accept-wait", "1s", "--rpc-deadline", "1s"]) as shop:
            shop.procs["order"].stop()
            queued = []
            for key in (None, f"down-{uuid.uuid4()}"):
                t0 = time.monotonic()
                st, h, body = shop.place([{"inventoryId": 1, "count": 1}], key=key)
                took = time.monotonic() - t0
                self.assertEqual(st, 202, body)
                self.assertEqual(body["status"], "QUEUED", body)
                self.assertEqual(h["location"], f"/order/{body['order_id']}")
                # --accept-wait plus at most two look-ups of 500 ms each.
                self.assertGreaterEqual(took, wait_s * 0.9)
                self.assertLess(took, (wait_s + 1.5) * TIME_SCALE, f"202 took {took:.2f}s")
                queued.append((key, body["order_id"]))
            # Nobody can say whether it exists: 503, and DELETE publishes nothing.
            st, h, body = shop.request("DELETE", f"/order/{queued[0][1]}")
            self.assertEqual(st, 503, body)
            self.assertIn("retry-after", h)
            shop.start("order")
            for _, oid in queued:
                shop.wait_status(oid, ("SUCCESSFUL", "UNSUCCESSFUL"), 30)
            # The client's retry after a 202 now gets the 201 of the same order.
            key, oid = queued[1]
            st, _, body = shop.place([{"inventoryId": 1, "count": 1}], key=key)
            self.assertEqual((st, body["order_id"], body["status"]), (201, oid, "COMMITTED"))

    def test_broker_killed_right_after_201_the_order_still_becomes_final(self):
        with Shop(BUILD, order_args=["--resend-after", "1s", "--resend-max-delay", "2s"],
                  inventory_args=[]) as shop:
            ids = []
            for rnd in range(3):
                for i in range(3):
                    st, _, body = shop.place([{"inventoryId": 1 + i % 2, "count": 1}])
                    self.assertEqual(st, 201, body)
                    ids.append(body["order_id"])
                shop.kill("broker")  # SIGKILL: no final persistence save
                shop.start("broker", wait=False)
                shop.wait_ready()
            for oid in ids:
                o = shop.wait_status(oid, ("SUCCESSFUL", "UNSUCCESSFUL"), 60)
                self.assertTrue(o["items"], o)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
