"""One order followed by its trace id through the logs of all three services
(issue 18): a POST /order that carries a W3C traceparent is answered with a
traceparent of the same trace, and that trace id is on the lines each
service writes about the order -- the front's access line of the POST
(http_request; the trace id is what ties it to the order), the inventory's
order_sent (the reservation, reached over the bus), the order service's
order_event for the OrderSent (PENDING) and for the inventory's InStock (the
final status, which reached it through the inventory's outbox and the bus).
A POST without one gets a new trace, which travels the same way. Work no
request started gets a trace per order: the order service's re-send of an
order left PENDING (the inventory down) has a trace of its own, and the
inventory, back, logs the re-sent OrderSent under it (the outbox row and the
bus carried it).

Run: /usr/bin/python3 tests/e2e/test_trace.py BUILD_DIR
"""

import os
import re
import secrets
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Shop, wait_until  # noqa: E402

BUILD = sys.argv.pop(1) if len(sys.argv) > 1 else "build"
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def lines_of(proc, trace_id, *needles):
    """The lines of proc's log that carry trace_id and every needle."""
    mark = f" trace_id={trace_id}"
    return [ln for ln in proc.log().splitlines()
            if mark in ln and all(n in ln for n in needles)]


class Trace(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.shop = Shop(BUILD, order_args=["--resend-after", "1s"])
        cls.shop.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.shop.__exit__(None, None, None)

    def place(self, headers):
        st, hdrs, body = self.shop.request(
            "POST", "/order", body={"items": [{"inventoryId": 1, "count": 1}]},
            headers=headers)
        self.assertIn(st, (201, 202), body)
        m = TRACEPARENT.match(hdrs.get("traceparent", ""))
        self.assertIsNotNone(m, f"no valid traceparent on the answer: {hdrs}")
        return body["order_id"], m.group(1)

    def follow(self, oid, tid):
        """Every service logged about order oid under trace tid."""
        self.shop.wait_status(oid, "SUCCESSFUL")
        procs = self.shop.procs
        want = {
            "front": (procs["front"], ("event=http_request", "method=POST",
                                       "path=/order ")),
            "inventory reservation": (procs["inventory"],
                                      ("event=order_sent", f"order_id={oid}",
                                       "result=reserved")),
            "order PENDING": (procs["order"],
                              ("event=order_event", f"order_id={oid}", "to=PENDING")),
            "order final status": (procs["order"],
                                   ("event=order_event", f"order_id={oid}",
                                    "to=SUCCESSFUL")),
        }
        for what, (proc, needles) in want.items():
            with self.subTest(line=what):
                # A line is written after its commit, which the status may
                # have been read before: poll.
                try:
                    wait_until(lambda: lines_of(proc, tid, *needles), 10,
                               f"{what} under trace {tid}")
                except AssertionError:
                    mine = [ln for ln in proc.log().splitlines() if oid in ln]
                    self.fail(f"{what}: no line with trace_id={tid} and {needles};"
                              f" the lines about {oid}:\n" + "\n".join(mine))

    def test_a_callers_traceparent_is_followed_through_every_service(self):
        tid = secrets.token_hex(16)
        sent = f"00-{tid}-{secrets.token_hex(8)}-01"
        oid, got = self.place({"traceparent": sent})
        self.assertEqual(got, tid, "the answer's traceparent is of another trace")
        self.follow(oid, tid)

    def test_a_request_without_one_gets_a_new_trace_that_travels_as_far(self):
        oid, tid = self.place({})
        self.assertNotEqual(tid, "0" * 32)
        self.follow(oid, tid)

    def test_a_resend_of_the_recovery_loop_has_a_trace_of_its_own(self):
        shop = self.shop
        self.assertEqual(shop.procs["inventory"].stop(), 0)
        try:
            tid = secrets.token_hex(16)
            oid, _ = self.place({"traceparent": f"00-{tid}-{secrets.token_hex(8)}-01"})
            resent = re.compile(r"event=order_resent trace_id=([0-9a-f]{32}) "
                                rf"order_id={re.escape(oid)} ")

            def resend_trace():
                m = resent.search(shop.procs["order"].log())
                return m.group(1) if m else None
            rid = wait_until(resend_trace, 15, f"the order service to re-send {oid}")
            self.assertNotEqual(rid, tid, "the re-send took the request's trace")
        finally:
            shop.start("inventory")
        wait_until(lambda: lines_of(shop.procs["inventory"], rid, "event=order_sent",
                                    f"order_id={oid}"), 15,
                   f"the inventory to log the re-sent OrderSent under {rid}")
        shop.wait_status(oid, "SUCCESSFUL")


if __name__ == "__main__":
    unittest.main(verbosity=2)
