"""End-to-end tests of GET /events (issue 8): live order status and stock
over Server-Sent Events, on a whole shop of real processes.
Run: /usr/bin/python3 tests/e2e/test_events.py BUILD_DIR
"""

import http.client
import json
import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Shop, wait_until  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
UNKNOWN = "123e4567-e89b-12d3-a456-426614174000"


class EventStream:
    """One SSE stream read with http.client: events as (name, data) and
    comment lines, each read bounded by a socket timeout."""

    def __init__(self, port, path, timeout=10):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", path, headers={"Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.comments = 0
        self.retry = None

    def next(self, deadline_s=10):
        """The next event as (name, parsed data), or None at end of stream."""
        deadline = time.monotonic() + deadline_s
        name, data = "message", []
        while time.monotonic() < deadline:
            try:
                raw = self.resp.readline()
            except (socket.timeout, TimeoutError):
                raise AssertionError("no event line within the socket timeout")
            if raw == b"":
                return None
            line = raw.decode().rstrip("\n")
            if line == "":
                if data:
                    return name, json.loads("\n".join(data))
                name, data = "message", []
                continue
            if line.startswith(":"):
                self.comments += 1
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line.startswith("retry: "):
                self.retry = int(line[7:])
        raise AssertionError(f"no event within {deadline_s}s")

    def until(self, pred, deadline_s=20):
        """Read events until pred(event) is true; return them all."""
        seen = []
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            ev = self.next(max(0.1, deadline - time.monotonic()))
            if ev is None:
                raise AssertionError(f"stream ended early after {seen}")
            seen.append(ev)
            if pred(ev):
                return seen
        raise AssertionError(f"condition not met within {deadline_s}s; saw {seen}")

    def close(self):
        self.resp.close()  # the response holds the socket too
        self.conn.close()


class Events(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A short heartbeat so the test sees one without waiting long.
        cls.shop = Shop(BUILD, front_args=("--sse-heartbeat", "300ms",
                                           "--sse-max-streams", "3"))
        cls.shop.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.shop.__exit__(None, None, None)

    def stream(self, query):
        s = EventStream(self.shop.http_port, "/events?" + query)
        self.addCleanup(s.close)
        return s

    def test_first_event_is_current_status_then_changes_then_end(self):
        st, _, body = self.shop.place([{"inventoryId": 1, "count": 1}])
        self.assertEqual(st, 201, body)
        oid = body["order_id"]
        self.shop.wait_status(oid, "SUCCESSFUL")
        s = self.stream(f"orders={oid}")
        self.assertEqual(s.status, 200)
        self.assertTrue(s.headers["content-type"].startswith("text/event-stream"))
        self.assertEqual(s.headers.get("cache-control"), "no-store")
        first = s.next()
        self.assertEqual(first, ("status", {"order_id": oid, "status": "SUCCESSFUL",
                                            "reason": ""}))
        self.assertEqual(s.retry, 2000)
        # Idle: heartbeat comments keep the connection alive.
        wait_until(lambda: self._read_comment(s), 5, "a heartbeat comment")
        st, _, body = self.shop.request("DELETE", f"/order/{oid}")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "CANCELED")
        ev = s.next()
        self.assertEqual(ev, ("status", {"order_id": oid, "status": "CANCELED", "reason": ""}))
        self.assertEqual(s.next(), ("end", {}))
        self.assertIsNone(s.next(), "the stream ends after the final status")

    def _read_comment(self, s):
        raw = s.resp.readline()
        if raw.startswith(b":"):
            s.comments += 1
        return s.comments > 0

    def test_late_subscriber_before_the_order_exists_misses_nothing(self):
        # Subscribe to an id before the order is placed: its PENDING (or
        # later) status arrives through the stream.
        key = f"sse-{time.time_ns()}"
        st, _, body = self.shop.place([{"inventoryId": 2, "count": 1}], key=key)
        self.assertEqual(st, 201, body)
        oid = body["order_id"]
        s = self.stream(f"orders={oid.upper()}")
        self.assertEqual(s.status, 200)
        seen = s.until(lambda ev: ev[0] == "status" and ev[1]["status"] == "SUCCESSFUL")
        statuses = [ev[1]["status"] for ev in seen if ev[0] == "status"]
        self.assertEqual(statuses[-1], "SUCCESSFUL")
        self.assertTrue(set(statuses) <= {"PENDING", "SUCCESSFUL"}, statuses)
        self.assertEqual(len(statuses), len(set(statuses)), "no status sent twice")

    def test_out_of_stock_ends_the_stream_with_the_reason(self):
        st, _, body = self.shop.place([{"inventoryId": 1, "count": 1000}])
        self.assertEqual(st, 201, body)
        oid = body["order_id"]
        s = self.stream(f"orders={oid}")
        seen = s.until(lambda ev: ev[0] == "end")
        last = [ev for ev in seen if ev[0] == "status"][-1][1]
        self.assertEqual(last["status"], "UNSUCCESSFUL")
        self.assertTrue(last["reason"], last)
        self.assertIsNone(s.next())

    def test_stock_changes_stream_to_stock_watchers(self):
        before = self.shop.catalog()[2]["balance"]
        s = self.stream("stock=true")
        self.assertEqual(s.status, 200)
        st, _, body = self.shop.place([{"inventoryId": 2, "count": 2}])
        self.assertEqual(st, 201, body)
        seen = s.until(lambda ev: ev[0] == "stock" and ev[1]["product_id"] == 2
                       and ev[1]["balance"] == before - 2)
        self.assertTrue(all(ev[0] == "stock" for ev in seen), seen)

    def test_bad_requests_are_refused_in_words(self):
        cases = [
            ("/events", 400, "orders"),
            ("/events?orders=nope", 400, "not an order id"),
            ("/events?stock=maybe", 400, "stock"),
            ("/events?orders=" + ",".join([UNKNOWN[:-2] + f"{i:02d}" for i in range(21)]),
             400, "at most 20"),
        ]
        for path, status, frag in cases:
            with self.subTest(path=path[:60]):
                st, _, body = self.shop.get(path)
                self.assertEqual(st, status, body)
                self.assertIn(frag, body["message"])
        st, h, body = self.shop.request("POST", "/events?stock=true", raw=b"")
        self.assertEqual(st, 405)

    def open_streams(self):
        text = self.shop.get("/metrics")[2]
        for line in text.splitlines():
            if line.startswith("webshop_sse_streams "):
                return int(float(line.split()[1]))
        return 0

    def test_streams_are_bounded(self):
        # Streams of earlier tests end at their next heartbeat.
        wait_until(lambda: self.open_streams() == 0, 10, "earlier streams to end")
        streams = [self.stream(f"orders={UNKNOWN}") for _ in range(3)]
        for s in streams:
            self.assertEqual(s.status, 200)
        st, h, body = self.shop.get(f"/events?orders={UNKNOWN}")
        self.assertEqual(st, 503, body)
        self.assertIn("retry-after", h)
        self.assertIn("poll", body["message"])
        for s in streams:
            s.close()
        # A closed stream's slot frees once its thread notices (next heartbeat).

        def slot_free():
            s = EventStream(self.shop.http_port, f"/events?orders={UNKNOWN}")
            s.close()
            return s.status == 200
        wait_until(slot_free, 10, "a stream slot to free")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
