"""End-to-end test of orphan reservations (issue 12, "No stock held for an
order nobody knows") and of what a duplicate OrderSent says afterwards
(issue 11.4), with real processes: mosquitto, the inventory started with
--orders-url and a short --orphan-after-ms, and later the order service.

An OrderSent reaches the inventory while the order service has never
subscribed (so the broker never queues it for the order service): the order
is lost at the order service only, as when a broker kill loses it there.
While the order service is down the sweep cannot ask and releases nothing;
once it runs and answers NOT_FOUND, the reservation is released and the
balance restored. An order the order service knows is never released.

Events are published with webshopctl, state read back over RPC with
webshopctl and from the inventory's /metrics.

Run: /usr/bin/python3 tests/e2e/test_orphans.py BUILD_DIR
"""

import os
import re
import subprocess
import sys
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Backends, Shop, wait_until  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
ORPHAN_AFTER_MS = 500
REASON = "reservation released: the order service did not know the order within 500 ms"


def new_id():
    return str(uuid.uuid4())


def swept(log, event, oid):
    """The sweep logged event about oid, under a trace of its own (each
    candidate is one: trace_id= right after event=)."""
    return re.search(rf"event={event} trace_id=[0-9a-f]{{32}} order_id={re.escape(oid)} ",
                     log) is not None


class OrphanReservations(unittest.TestCase):
    def test_reservation_unknown_to_the_order_service_is_released(self):
        shop = Shop(BUILD, services=("broker", "inventory"))
        # The order service's RPC address is known before it runs.
        shop.argv["inventory"] += ["--orders-url", shop.ord_rpc,
                                   "--orphan-after-ms", str(ORPHAN_AFTER_MS)]
        with shop:
            c = Backends(shop)
            wait_until(lambda: c.call(shop.inv_rpc, "/webshop.v1.Inventory/GetCatalog",
                                      {})[0] is not None, 20, "inventory RPC")
            before = c.balance(1)

            # The orphan, sent with an upper-case id (any case is one order).
            orphan = new_id()
            c.send(orphan.upper(), [{"inventoryId": 1, "count": 5}])
            wait_until(lambda: c.reservation(orphan)["status"] == "RESERVED", 20,
                       "the inventory to reserve the orphan")
            self.assertEqual(c.reservation(orphan)["order_id"], orphan)
            self.assertEqual(c.balance(1), before - 5)

            # The order service is down: the sweep asks, gets no answer,
            # and releases nothing.
            failed = c.inventory_metric("webshop_inventory_orphan_checks_total", 'result="failed"')
            wait_until(lambda: c.inventory_metric("webshop_inventory_orphan_checks_total",
                                        'result="failed"') >= failed + 2,
                       20, "two sweeps to find the order service unavailable")
            self.assertEqual(c.reservation(orphan)["status"], "RESERVED")
            self.assertEqual(c.balance(1), before - 5)

            # The order service comes up (it never subscribed, so it never
            # gets the orphan's OrderSent) and answers NOT_FOUND.
            shop.start("order")
            wait_until(lambda: c.reservation(orphan)["status"] == "RELEASED", 20,
                       "the orphan to be released")
            r = c.reservation(orphan)
            self.assertEqual(r["reason"], REASON)
            self.assertEqual(r["items"], [{"inventory_id": 1, "count": 5}])
            self.assertEqual(c.balance(1), before)
            self.assertGreaterEqual(c.inventory_metric("webshop_inventory_orphans_released_total"), 1)
            self.assertTrue(swept(shop.procs["inventory"].log(), "orphan_released", orphan))

            # The orphan's OrderSent reaches the order service late (a
            # re-POST): the inventory's duplicate answer is OutOfStock with
            # the release reason, so the order ends UNSUCCESSFUL, nothing is
            # reserved again.
            c.send(orphan, [{"inventoryId": 1, "count": 5}])

            def unsuccessful():
                o = c.order(orphan)
                return o if o is not None and o["status"] == "UNSUCCESSFUL" else None
            o = wait_until(unsuccessful, 20, "the late order to become UNSUCCESSFUL")
            # The OutOfStock's reason; or the order service's own words if
            # the outcome overtook the OrderSent there and it asked
            # GetReservation (RELEASED) instead.
            self.assertIn("released", o["reason"])
            self.assertEqual(c.reservation(orphan)["status"], "RELEASED")
            self.assertEqual(c.balance(1), before)

            # Orders the order service knows: it holds the row (created by an
            # outcome event) before the inventory reserves, so the sweep finds
            # it, confirms it, and never releases it or asks again.
            before2 = c.balance(2)
            known = self.known_order(c, shop, 3)
            found = c.inventory_metric("webshop_inventory_orphan_checks_total", 'result="found"')
            self.assertGreaterEqual(found, 1)
            # A later known order is confirmed by a later pass, which did not
            # ask about the first one again.
            self.known_order(c, shop, 1)
            self.assertEqual(c.inventory_metric("webshop_inventory_orphan_checks_total",
                                      'result="found"'), found + 1)
            self.assertEqual(c.reservation(known)["status"], "RESERVED")
            self.assertEqual(c.balance(2), before2 - 4)
            self.assertEqual(c.balance(1), before)

    def known_order(self, c, shop, count):
        oid = new_id()
        c.publish("inventory/on-stock", {"orderId": oid})
        wait_until(lambda: c.order(oid) is not None, 20,
                   "the order service to record the known order")
        c.send(oid, [{"inventoryId": 2, "count": count}])
        wait_until(lambda: swept(shop.procs["inventory"].log(), "reservation_confirmed", oid),
                   20,
                   "the sweep to confirm the known order")
        self.assertEqual(c.reservation(oid)["status"], "RESERVED")
        return oid

    def test_flags_are_validated(self):
        exe = os.path.join(BUILD, "inventory", "webshop-inventory")
        for args, flag in ((["--orphan-after-ms", "50"], "--orphan-after-ms"),
                           (["--orphan-after-ms", "soon"], "--orphan-after-ms"),
                           (["--orders-url", "http://x"], "--orders-url"),
                           (["--tombstone-ttl", "0s"], "--tombstone-ttl")):
            r = subprocess.run([exe, *args], capture_output=True, text=True, timeout=20)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertTrue(re.search(re.escape(flag) + r"\b", r.stderr), r.stderr)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
