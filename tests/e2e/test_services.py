"""Integration tests of the inventory and order services (issue 4): a real
mosquitto and both programs as processes, events published by webshopctl
(protobuf) and by mosquitto_pub (JSON, as another publisher would), state read
back over RPC with webshopctl.

Run: /usr/bin/python3 tests/e2e/test_services.py BUILD_DIR
"""

import json
import os
import sys
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Backends, Shop, wait_until  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
BACKENDS = ("broker", "inventory", "order")


def new_id():
    return str(uuid.uuid4())


class ServicesSaga(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.shop = Shop(BUILD, services=BACKENDS)
        cls.shop.__enter__()
        cls.b = Backends(cls.shop)
        wait_until(lambda: cls.b.call(cls.shop.inv_rpc, "/webshop.v1.Inventory/GetCatalog",
                                      {})[0] is not None, 20, "inventory RPC")
        wait_until(lambda: cls.b.call(cls.shop.ord_rpc, "/webshop.v1.Orders/ListOrders",
                                      {})[0] is not None, 20, "order RPC")

    @classmethod
    def tearDownClass(cls):
        cls.shop.__exit__(None, None, None)

    def test_happy_path(self):
        before = self.b.balance(1)
        oid = new_id()
        self.b.send(oid, [{"inventoryId": 1, "count": 3}])
        o = self.b.wait_status(oid, "SUCCESSFUL")
        self.assertEqual(o["items"], [{"inventory_id": 1, "count": 3}])
        self.assertEqual(self.b.reservation(oid)["status"], "RESERVED")
        self.assertEqual(self.b.balance(1), before - 3)

    def test_out_of_stock_reserves_nothing(self):
        b1, b2 = self.b.balance(1), self.b.balance(2)
        oid = new_id()
        self.b.send(oid, [{"inventoryId": 1, "count": 1}, {"inventoryId": 2, "count": 100000}])
        o = self.b.wait_status(oid, "UNSUCCESSFUL")
        self.assertTrue(o["reason"])
        self.assertEqual(self.b.reservation(oid)["status"], "REJECTED")
        self.assertEqual((self.b.balance(1), self.b.balance(2)), (b1, b2))

    def test_cancel_restores_balance(self):
        before = self.b.balance(2)
        oid = new_id()
        self.b.send(oid, [{"inventoryId": 2, "count": 4}])
        self.b.wait_status(oid, "SUCCESSFUL")
        self.assertEqual(self.b.balance(2), before - 4)
        self.b.publish("public-front/order-canceled", {"orderId": oid})
        self.b.wait_status(oid, "CANCELED")
        wait_until(lambda: self.b.reservation(oid)["status"] == "RELEASED", 20,
                   "the reservation to be released")
        self.assertEqual(self.b.balance(2), before)

    def test_same_event_five_times_acts_once(self):
        before = self.b.balance(1)
        oid = new_id()
        for _ in range(5):
            self.b.send(oid, [{"inventoryId": 1, "count": 2}])
        self.b.wait_status(oid, "SUCCESSFUL")
        # A later marker order proves the duplicates were all consumed.
        marker = new_id()
        self.b.send(marker, [{"inventoryId": 1, "count": 1}])
        self.b.wait_status(marker, "SUCCESSFUL")
        self.assertEqual(self.b.balance(1), before - 3)

    def test_in_stock_before_order_send(self):
        # An outcome for an order whose items the order service does not
        # know is checked against the inventory's record (issue 11.5). The
        # inventory never heard of this one: the order stays PENDING...
        oid = new_id()
        self.b.publish("inventory/on-stock", {"orderId": oid})
        o = self.b.wait_status(oid, "PENDING")
        self.assertEqual(o["items"], [])
        # ...until its OrderSent comes and the inventory reserves it.
        self.b.send(oid, [{"inventoryId": 2, "count": 1}])

        def settled():
            o = self.b.order(oid)
            return (o["status"] == "SUCCESSFUL"
                    and o["items"] == [{"inventory_id": 2, "count": 1}] and o)
        wait_until(settled, 20, "the late OrderSent to be reserved and fill in the items")
        self.assertEqual(self.b.reservation(oid)["status"], "RESERVED")

    def test_stale_out_of_stock_never_beats_the_reservation(self):
        # Issue 11.5: an OutOfStock from elsewhere arrives first; the
        # inventory then reserves the order. The first outcome used to win
        # (UNSUCCESSFUL, 3 units held for ever); the inventory's record wins.
        before = self.b.balance(1)
        oid = new_id()
        self.b.publish("inventory/out-of-stock", {"orderId": oid, "reason": "stale"})
        self.b.wait_status(oid, "PENDING")
        self.b.send(oid, [{"inventoryId": 1, "count": 3}])
        o = self.b.wait_status(oid, "SUCCESSFUL")
        self.assertEqual(o["reason"], "")
        self.assertEqual(self.b.reservation(oid)["status"], "RESERVED")
        self.assertEqual(self.b.balance(1), before - 3)

    def test_conflicting_outcome_takes_the_inventorys_record(self):
        oid = new_id()
        self.b.send(oid, [{"inventoryId": 2, "count": 100000}])
        self.b.wait_status(oid, "UNSUCCESSFUL")
        self.b.publish("inventory/on-stock", {"orderId": oid})
        # The check asks GetReservation (REJECTED): the order stays as it is.
        wait_until(lambda: self.b.order_metric(
            'webshop_order_outcome_checks_total{answer="rejected"}') >= 1, 20,
            "the outcome check")
        o = self.b.order(oid)
        self.assertEqual(o["status"], "UNSUCCESSFUL")
        self.assertEqual(self.b.reservation(oid)["status"], "REJECTED")

    def test_upper_case_id_is_the_same_order_everywhere(self):
        # Issue 11.1: any case accepted, lower case stored and answered.
        oid = new_id()
        self.b.send(oid.upper(), [{"inventoryId": 1, "count": 1}])
        o = self.b.wait_status(oid, "SUCCESSFUL")
        self.assertEqual(o["id"], oid)
        self.assertEqual(self.b.order(oid.upper())["id"], oid)
        self.b.publish("public-front/order-canceled", {"orderId": oid.upper()})
        self.b.wait_status(oid, "CANCELED")

    def test_cancel_before_order_never_reserves(self):
        before = self.b.balance(1)
        oid = new_id()
        self.b.publish("public-front/order-canceled", {"orderId": oid})
        wait_until(lambda: self.b.reservation(oid)["status"] == "TOMBSTONED", 20,
                   "the tombstone")
        # A tombstone is not an order (issue 11.6): GetOrder does not find it.
        self.assertIsNone(self.b.order(oid))
        self.b.send(oid, [{"inventoryId": 1, "count": 5}])
        marker = new_id()
        self.b.send(marker, [{"inventoryId": 1, "count": 1}])
        self.b.wait_status(marker, "SUCCESSFUL")
        self.assertEqual(self.b.balance(1), before - 1)
        # Its OrderSent made it a real order, and a canceled one.
        self.assertEqual(self.b.wait_status(oid, "CANCELED")["items"],
                         [{"inventory_id": 1, "count": 5}])

    def test_json_payloads_from_another_publisher(self):
        before = self.b.balance(2)
        oid = new_id()
        self.b.publish_json_raw("public-front/order-send", json.dumps(
            {"orderId": oid, "items": [{"inventoryId": 2, "count": 2}]}))
        self.b.wait_status(oid, "SUCCESSFUL")
        self.assertEqual(self.b.balance(2), before - 2)

    def test_garbage_payload_is_dropped_and_service_lives(self):
        self.b.publish_json_raw("public-front/order-send", "{not json")
        self.b.publish_json_raw("public-front/order-send", json.dumps(
            {"orderId": "not-a-uuid", "items": [{"inventoryId": 1, "count": 1}]}))
        oid = new_id()
        self.b.send(oid, [{"inventoryId": 1, "count": 1}])
        self.b.wait_status(oid, "SUCCESSFUL")
        self.assertTrue(self.shop.procs["inventory"].alive())
        self.assertTrue(self.shop.procs["order"].alive())


class ServicesJsonFormat(unittest.TestCase):
    def test_whole_saga_with_json_bus_format(self):
        with Shop(BUILD, bus_format="json", services=BACKENDS) as shop:
            b = Backends(shop)
            oid = new_id()
            wait_until(lambda: b.call(shop.ord_rpc, "/webshop.v1.Orders/ListOrders", {})[0]
                       is not None, 20, "order RPC")
            b.publish_json_raw("public-front/order-send", json.dumps(
                {"orderId": oid, "items": [{"inventoryId": 1, "count": 1}]}))
            b.wait_status(oid, "SUCCESSFUL")
            b.publish_json_raw("public-front/order-canceled", json.dumps({"orderId": oid}))
            b.wait_status(oid, "CANCELED")
            wait_until(lambda: b.reservation(oid)["status"] == "RELEASED", 20, "release")


class ServicesCrashes(unittest.TestCase):
    def test_inventory_killed_after_commit_before_publish_heals(self):
        with Shop(BUILD, order_args=["--resend-after", "1s"],
                  services=("broker", "order")) as shop:
            # The fault point (test builds only) makes the inventory _exit
            # right after the first reservation commits, before its outcome
            # can be published.
            shop.env = {"WEBSHOP_FAULT": "crash_after_reserve_commit"}
            shop.start("inventory", wait=False)
            b = Backends(shop)
            wait_until(lambda: b.call(shop.inv_rpc, "/webshop.v1.Inventory/GetCatalog",
                                      {})[0] is not None, 20, "inventory RPC")
            oid = new_id()
            b.send(oid, [{"inventoryId": 1, "count": 1}])
            wait_until(lambda: not shop.procs["inventory"].alive(), 20,
                       "the inventory to crash at the fault point")
            self.assertEqual(shop.procs["inventory"].p.returncode, 9)
            shop.env = {}
            shop.start("inventory", wait=False)
            b.wait_status(oid, "SUCCESSFUL", 30)
            self.assertEqual(b.reservation(oid)["status"], "RESERVED")

    def test_order_service_down_while_orders_are_placed(self):
        with Shop(BUILD, services=BACKENDS) as shop:
            b = Backends(shop)
            wait_until(lambda: b.call(shop.ord_rpc, "/webshop.v1.Orders/ListOrders", {})[0]
                       is not None, 20, "order RPC")
            shop.procs["order"].stop()
            ids = [new_id() for _ in range(20)]
            for i, oid in enumerate(ids):
                b.send(oid, [{"inventoryId": 1 + i % 2, "count": 1}])
            shop.start("order", wait=False)
            for oid in ids:
                b.wait_status(oid, "SUCCESSFUL", 30)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
