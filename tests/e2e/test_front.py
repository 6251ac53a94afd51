"""End-to-end tests of the front (issue 5): the whole shop as real processes,
HTTP from a real client. Run: /usr/bin/python3 tests/e2e/test_front.py BUILD_DIR
"""

import concurrent.futures
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Shop, wait_until  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
ITEM1 = [{"inventoryId": 1, "count": 2}]


class FrontUseCases(unittest.TestCase):
    """The four use cases and the flows behind them, on one shop."""

    @classmethod
    def setUpClass(cls):
        cls.shop = Shop(BUILD)
        cls.shop.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.shop.__exit__(None, None, None)

    def test_catalog_lists_both_products(self):
        cat = self.shop.catalog()
        self.assertEqual(cat[1]["name"], "One Leg Web Shop Prototype")
        self.assertEqual(cat[1]["price"], 1000)
        self.assertEqual(cat[2]["name"], "One Leg Web Shop Prototype v 2.0")
        self.assertEqual(cat[2]["price"], 2000)
        self.assertIsInstance(cat[1]["balance"], int)

    def test_catalog_etag_answers_304(self):
        st, h, _ = self.shop.get("/inventory")
        self.assertEqual(st, 200)
        etag = h["etag"]
        st, h2, body = self.shop.get("/inventory", headers={"If-None-Match": etag})
        self.assertEqual(st, 304)
        self.assertEqual(body, "")

    def test_place_get_and_cancel_an_order(self):
        before = self.shop.catalog()[1]["balance"]
        st, h, body = self.shop.place(ITEM1)
        self.assertEqual(st, 201, body)
        oid = body["order_id"]
        self.assertEqual(body["status"], "COMMITTED")
        self.assertEqual(h["location"], f"/order/{oid}")
        # 201 means committed: the order is readable at once.
        self.assertIsNotNone(self.shop.order(oid))
        o = self.shop.wait_status(oid, "SUCCESSFUL")
        self.assertEqual(o["items"], [{"inventory_id": 1, "count": 2}])
        wait_until(lambda: self.shop.catalog()[1]["balance"] == before - 2, 10,
                   "stock to drop by 2")
        # 200 once the order service committed the cancel: the order itself.
        st, _, body = self.shop.request("DELETE", f"/order/{oid}")
        self.assertEqual(st, 200, body)
        self.assertEqual((body["id"], body["status"]), (oid, "CANCELED"))
        self.assertEqual(self.shop.order(oid)["status"], "CANCELED")
        wait_until(lambda: self.shop.catalog()[1]["balance"] == before, 10,
                   "stock to be restored")

    def test_out_of_stock_rejects_the_whole_order(self):
        before = self.shop.catalog()
        st, _, body = self.shop.place([{"inventoryId": 1, "count": 1},
                                       {"inventoryId": 2, "count": 1000}])
        self.assertEqual(st, 201, body)
        o = self.shop.wait_status(body["order_id"], "UNSUCCESSFUL")
        self.assertTrue(o["reason"], o)
        after = self.shop.catalog()
        self.assertEqual(after[1]["balance"], before[1]["balance"])
        self.assertEqual(after[2]["balance"], before[2]["balance"])

    def test_unknown_product_is_unsuccessful(self):
        st, _, body = self.shop.place([{"inventoryId": 999, "count": 1}])
        self.assertEqual(st, 201, body)
        o = self.shop.wait_status(body["order_id"], "UNSUCCESSFUL")
        self.assertIn("999", o["reason"])

    def test_idempotency_key_makes_one_order(self):
        before = self.shop.catalog()[2]["balance"]
        key = f"retry-{time.time_ns()}"
        ids = set()
        for _ in range(3):
            st, _, body = self.shop.place([{"inventoryId": 2, "count": 1}], key=key)
            self.assertEqual(st, 201, body)
            ids.add(body["order_id"])
        self.assertEqual(len(ids), 1)
        self.shop.wait_status(ids.pop(), "SUCCESSFUL")
        wait_until(lambda: self.shop.catalog()[2]["balance"] == before - 1, 10,
                   "stock to drop by exactly 1")
        self.assertEqual(self.shop.catalog()[2]["balance"], before - 1)

    def test_unknown_order_is_404(self):
        st, _, body = self.shop.get("/order/123e4567-e89b-12d3-a456-426614174000")
        self.assertEqual(st, 404)
        self.assertEqual(body["code"], "NOT_FOUND")

    def test_health_ready_metrics_openapi(self):
        self.assertEqual(self.shop.get("/healthz")[0], 200)
        st, _, body = self.shop.get("/readyz")
        self.assertEqual(st, 200)
        self.assertEqual(body["status"], "ok")
        st, h, text = self.shop.get("/metrics")
        self.assertEqual(st, 200)
        self.assertIn("webshop_http_requests_total", text)
        st, _, doc = self.shop.get("/openapi.json")
        self.assertEqual(st, 200)
        self.assertEqual(doc["openapi"], "3.0.3")
        self.assertIn("/order/{id}", doc["paths"])

    def test_traceparent_at_the_edge(self):
        """Every answer carries a traceparent: the caller's trace id with
        the front's own span; a new trace when none or a malformed one came;
        and the front's log lines for the request carry the trace id."""
        import re
        tp_re = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
        tid, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        given = f"00-{tid}-{parent}-01"
        uuid = "123e4567-e89b-12d3-a456-426614174000"
        for method, path, status in (("GET", "/inventory", 200), ("GET", "/healthz", 200),
                                     ("GET", "/nope", 404), ("PUT", "/inventory", 405),
                                     ("GET", f"/order/{uuid}", 404)):
            with self.subTest(path=path, method=method):
                st, h, _ = self.shop.request(method, path, headers={"traceparent": given})
                self.assertEqual(st, status)
                m = tp_re.match(h.get("traceparent", ""))
                self.assertIsNotNone(m, h)
                self.assertEqual(m.group(1), tid)
                self.assertNotIn(m.group(2), (parent, "0" * 16))
                self.assertEqual(m.group(3), "01")
        # The access log line of a traced request names its trace.
        wait_until(lambda: f"trace_id={tid}" in self.shop.procs["front"].log(), 5,
                   "a front log line with the caller's trace id")
        # A stream's head carries it too.
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.shop.http_port, timeout=10)
        try:
            c.request("GET", "/events?stock=true", headers={"traceparent": given})
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertEqual(tp_re.match(r.getheader("traceparent", "")).group(1), tid)
            r.close()
        finally:
            c.close()
        # None, or a malformed one: a new valid trace, one per request.
        seen = set()
        for bad in (None, "", "garbage", f"00-{tid.upper()}-{parent}-01",
                    f"00-{'0' * 32}-{parent}-01", f"ff-{tid}-{parent}-01",
                    f"00-{tid}-{parent}", f"00-{tid}-{parent}-0"):
            with self.subTest(traceparent=bad):
                headers = {} if bad is None else {"traceparent": bad}
                st, h, _ = self.shop.request("GET", "/healthz", headers=headers)
                self.assertEqual(st, 200)
                m = tp_re.match(h.get("traceparent", ""))
                self.assertIsNotNone(m, h)
                self.assertNotIn(m.group(1), seen | {tid, "0" * 32})
                seen.add(m.group(1))

    def test_malformed_requests(self):
        s = self.shop
        uuid = "123e4567-e89b-12d3-a456-426614174000"
        json_h = {"Content-Type": "application/json"}
        cases = [
            # (method, path, raw body, headers, status, code, message fragment)
            ("POST", "/order", b"{", json_h, 400, "INVALID_ARGUMENT", ""),
            ("POST", "/order", b"not json", json_h, 400, "INVALID_ARGUMENT", ""),
            ("POST", "/order", b"[]", json_h, 400, "INVALID_ARGUMENT", ""),
            ("POST", "/order", b"{}", json_h, 400, "INVALID_ARGUMENT", "items"),
            ("POST", "/order", b'{"items": []}', json_h, 400, "INVALID_ARGUMENT", "items"),
            ("POST", "/order", b'{"items": {}}', json_h, 400, "INVALID_ARGUMENT", "items"),
            ("POST", "/order", b'{"items": [{"inventoryId": 1, "count": 0}]}', json_h, 400,
             "INVALID_ARGUMENT", "items[0].count"),
            ("POST", "/order", b'{"items": [{"inventoryId": 1, "count": -5}]}', json_h, 400,
             "INVALID_ARGUMENT", "items[0].count"),
            ("POST", "/order", b'{"items": [{"inventoryId": 1, "count": 1000000}]}', json_h,
             400, "INVALID_ARGUMENT", "items[0].count"),
            ("POST", "/order", b'{"items": [{"inventoryId": 1, "count": 99999999999}]}',
             json_h, 400, "INVALID_ARGUMENT", "items[0].count"),
            ("POST", "/order", b'{"items": [{"inventoryId": 1, "count": 1.5}]}', json_h, 400,
             "INVALID_ARGUMENT", "items[0].count"),
            ("POST", "/order", b'{"items": [{"inventoryId": "x", "count": 1}]}', json_h, 400,
             "INVALID_ARGUMENT", "items[0].inventory"),
            ("POST", "/order", b'{"items": [{"inventoryId": 0, "count": 1}]}', json_h, 400,
             "INVALID_ARGUMENT", "items[0].inventory_id"),
            ("POST", "/order", b'{"items": [{"count": 1}]}', json_h, 400,
             "INVALID_ARGUMENT", "items[0].inventory_id"),
            ("POST", "/order", b'{"items": [{"inventoryId": 1, "count": 1, "x": 1}]}', json_h,
             400, "INVALID_ARGUMENT", "items[0].x"),
            ("POST", "/order", b'{"items": [{"inventoryId": 1, "count": 1}], "items": []}',
             json_h, 400, "INVALID_ARGUMENT", "items"),
            ("POST", "/order", b'{"items": [' + b",".join(
                [b'{"inventoryId": 1, "count": 1}'] * 101) + b"]}", json_h, 400,
             "INVALID_ARGUMENT", "at most 100"),
            ("POST", "/order", b'{"items": [{"inventoryId": 1, "count": 1}]}',
             {"Content-Type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE", "application/json"),
            ("POST", "/order", b'{"items": [{"inventoryId": 1, "count": 1}]}', {}, 415,
             "UNSUPPORTED_MEDIA_TYPE", "application/json"),
            ("POST", "/order", b"{" + b" " * (70 * 1024) + b"}", json_h, 413,
             "PAYLOAD_TOO_LARGE", "body"),
            ("POST", "/order", b'{"items": [{"inventoryId": 1, "count": 1}]}',
             {"Content-Type": "application/json", "Idempotency-Key": "k" * 300}, 400,
             "INVALID_ARGUMENT", "Idempotency-Key"),
            ("GET", "/order/not-a-uuid", None, {}, 400, "INVALID_ARGUMENT", "id"),
            ("DELETE", "/order/1234", None, {}, 400, "INVALID_ARGUMENT", "id"),
            ("PUT", "/order", b"{}", json_h, 405, "METHOD_NOT_ALLOWED", "POST"),
            ("GET", "/order", None, {}, 405, "METHOD_NOT_ALLOWED", "POST"),
            ("POST", f"/order/{uuid}", b"{}", json_h, 405, "METHOD_NOT_ALLOWED", "GET, DELETE"),
            ("DELETE", "/inventory", None, {}, 405, "METHOD_NOT_ALLOWED", "GET"),
            ("GET", "/nope", None, {}, 404, "NOT_FOUND", "/nope"),
            ("GET", f"/order/{uuid}/x", None, {}, 404, "NOT_FOUND", ""),
        ]
        self.assertGreaterEqual(len(cases), 20)
        for method, path, raw, headers, status, code, frag in cases:
            with self.subTest(method=method, path=path, body=(raw or b"")[:60]):
                st, h, body = s.request(method, path, raw=raw, headers=headers)
                self.assertEqual(st, status, body)
                self.assertIsInstance(body, dict, body)
                self.assertEqual(body["code"], code, body)
                self.assertIn(frag, body["message"], body)
                if status == 405:
                    self.assertIn("allow", h)


class FrontConcurrency(unittest.TestCase):
    def test_200_concurrent_orders_all_final_and_stock_adds_up(self):
        with Shop(BUILD) as shop:
            start = shop.catalog()
            n = 200

            def place(i):
                pid = 1 + i % 2
                st, _, body = shop.place([{"inventoryId": pid, "count": 1 + i % 3}])
                return st, body, pid, 1 + i % 3
            with concurrent.futures.ThreadPoolExecutor(max_workers=16) as ex:
                results = list(ex.map(place, range(n)))
            for st, body, _, _ in results:
                self.assertEqual(st, 201, body)
            finals = {}
            for st, body, pid, cnt in results:
                o = shop.wait_status(body["order_id"], ("SUCCESSFUL", "UNSUCCESSFUL"), 60)
                finals[body["order_id"]] = (o["status"], pid, cnt)
            used = {1: 0, 2: 0}
            for status, pid, cnt in finals.values():
                if status == "SUCCESSFUL":
                    used[pid] += cnt
            wait_until(lambda: all(shop.catalog()[p]["balance"] == start[p]["balance"] - used[p]
                                   for p in (1, 2)), 20, "balances to match the orders")


class FrontFaults(unittest.TestCase):
    def test_broker_down_answers_503_then_recovers(self):
        with Shop(BUILD, front_args=["--publish-deadline", "1s"]) as shop:
            shop.procs["broker"].stop()
            t0 = time.monotonic()
            st, h, body = shop.place(ITEM1)
            self.assertIn(st, (503, 504), body)
            self.assertLess(time.monotonic() - t0, 5)
            if st == 503:
                self.assertIn("retry-after", h)
            shop.start("broker", wait=False)

            def posts_work():
                return shop.place(ITEM1)[0] == 201
            wait_until(posts_work, 30, "POST /order to succeed after the broker returns")

    def test_backend_down_answers_503_or_504_never_hangs(self):
        with Shop(BUILD, front_args=["--rpc-deadline", "1s"]) as shop:
            shop.procs["order"].kill()
            t0 = time.monotonic()
            st, _, body = shop.get("/order/123e4567-e89b-12d3-a456-426614174000")
            self.assertIn(st, (503, 504), body)
            self.assertLess(time.monotonic() - t0, 5)
            shop.procs["inventory"].kill()
            shop.catalog_invalidated = True
            t0 = time.monotonic()
            # Reads are down, orders are not: the front still takes them
            # (202 queued without the order service), so it stays in
            # rotation, "degraded", naming what is down.
            st, _, body = shop.get("/readyz")
            self.assertEqual(st, 200, body)
            self.assertEqual(body["status"], "degraded", body)
            checks = {c["name"]: c["status"] for c in body["checks"]}
            self.assertEqual(checks["broker"], "ok", body)
            self.assertNotEqual(checks["orders"], "ok", body)
            self.assertLess(time.monotonic() - t0, 5)
            st, _, body = shop.place([{"inventoryId": 1, "count": 1}])
            self.assertEqual(st, 202, body)
            shop.procs["broker"].kill()
            wait_until(lambda: shop.get("/readyz")[0] == 503, 10,
                       "the front's /readyz to say 503 without the broker")
            shop.start("broker")
            shop.start("inventory", "order", wait=False)
            shop.wait_ready()


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
