"""PostgreSQL itself goes away under the shop, and comes back (issue 13,
"Operational honesty"). PostgreSQL only: runs under tests/support/with_pg,
whose cluster (WS_TEST_PG_URL, WS_TEST_PG_DIR) holds the shop's two
databases.

With orders flowing, the cluster's postmaster is stopped the hard way
(`pg_ctl stop -m immediate`: clients cut off, no checkpoint, crash recovery
at the next start), as the cluster's owner. While it is down, and while
POSTs keep coming:
  - the front answers every POST (202: queued at the broker; the order
    service cannot commit, so no 201 can be promised);
  - both backends' /readyz answer 503, their storage check naming the
    database;
  - RPC reads answer UNAVAILABLE (Orders.GetOrder, Inventory.GetReservation,
    Inventory.GetProduct), and the front's GET /order/{id} answers 503.
Then PostgreSQL is started again (same data dir, same settings, as the
cluster's owner): both backends become ready by themselves (no restart),
and every order that got a 201 or a 202 reaches a final state; none is
lost, no order row stays PENDING, and stock adds up.

Every wait polls a condition with a deadline; nothing sleeps.
Run: tests/support/with_pg /usr/bin/python3 tests/e2e/test_pg_faults.py BUILD_DIR
"""

import json
import os
import sys
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Backends, PgCluster, Shop, http_ok, wait_until  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
PG_URL = os.environ.get("WS_TEST_PG_URL", "")
PG_DIR = os.environ.get("WS_TEST_PG_DIR", "")
FINAL = ("SUCCESSFUL", "UNSUCCESSFUL", "CANCELED")


def readyz(port):
    """(status, parsed body) of a backend's /readyz."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def storage_check_failing(port):
    """The body of a 503 /readyz with a failing storage check (not the bus's
    or the event consumer's) whose status names the database, else None."""
    st, body = readyz(port)
    if st != 503:
        return None
    bad = [c for c in body.get("checks", ())
           if c.get("status") != "ok" and c.get("name") not in ("bus", "events")
           and "database" in c.get("status", "")]
    return body if bad else None


@unittest.skipUnless(PG_URL and PG_DIR, "PostgreSQL only: run under tests/support/with_pg")
class PostgresDown(unittest.TestCase):
    def setUp(self):
        # The restarted postmaster is ours (PgCluster); with_pg removes the
        # cluster after the run.
        self.cluster = PgCluster.adopt(PG_DIR)
        self.accepted = {}  # order id -> the POST's answer (201 or 202)

    def tearDown(self):
        self.cluster.stop()

    def post(self, shop, want=(201, 202)):
        st, h, body = shop.place([{"inventoryId": 1 + len(self.accepted) % 2, "count": 1}])
        self.assertIn(st, want, body)
        self.accepted[body["order_id"]] = st
        self.assertEqual(h["location"], f"/order/{body['order_id']}")
        return body["order_id"], st

    def test_orders_outlive_postgres_stopped_and_started(self):
        with Shop(BUILD, order_args=["--resend-after", "1s", "--resend-max-delay", "2s"],
                  front_args=["--accept-wait", "1s", "--rpc-deadline", "1s"]) as shop:
            self.assertEqual(shop.engine, "postgresql")
            b = Backends(shop)
            before = [self.post(shop, want=(201,))[0] for _ in range(5)]
            for oid in before:
                shop.wait_status(oid, FINAL)

            self.cluster.stop_immediate()
            try:
                self.while_down(shop, b, before[0])
            finally:
                self.cluster.start()
            self.after_restart(shop, b)

    def while_down(self, shop, b, known):
        # Every POST is answered: queued at the broker, never committed.
        for _ in range(3):
            self.post(shop, want=(202,))

        def both_unready():
            self.post(shop, want=(202,))  # keep the load on while waiting
            return (storage_check_failing(shop.ord_http)
                    and storage_check_failing(shop.inv_http))
        wait_until(both_unready, 30, "both backends' /readyz to fail on the database",
                   interval=0.2)
        print(f"\nwhile down: order /readyz {readyz(shop.ord_http)}", flush=True)
        print(f"while down: inventory /readyz {readyz(shop.inv_http)}", flush=True)

        def unavailable(url, method, req):
            resp, err = b.call(url, method, req)
            return resp is None and "UNAVAILABLE" in (err or "")
        wait_until(lambda: unavailable(shop.ord_rpc, "/webshop.v1.Orders/GetOrder",
                                       {"id": known}), 30, "GetOrder to answer UNAVAILABLE")
        wait_until(lambda: unavailable(shop.inv_rpc, "/webshop.v1.Inventory/GetReservation",
                                       {"order_id": known}), 30,
                   "GetReservation to answer UNAVAILABLE")
        wait_until(lambda: unavailable(shop.inv_rpc, "/webshop.v1.Inventory/GetProduct",
                                       {"id": 1}), 30, "GetProduct to answer UNAVAILABLE")
        st, h, body = shop.get(f"/order/{known}")
        self.assertEqual(st, 503, body)
        self.assertIn("retry-after", h)
        for _ in range(3):
            self.post(shop, want=(202,))
        # A backend (re)started while the server is gone waits for it
        # (--db-wait) instead of exiting: a supervisor need not race it.
        shop.restart("order", wait=False)
        wait_until(lambda: "event=db_waiting" in shop.procs["order"].log(), 30,
                   "the restarted order service to wait for the database")
        self.assertTrue(shop.procs["order"].alive(), shop.procs["order"].log())

    def after_restart(self, shop, b):
        # Ready again by themselves: nobody restarted a backend.
        def ready():
            for n in ("inventory", "order"):
                shop._died(n)
            return http_ok(shop.ord_http, "/readyz") and http_ok(shop.inv_http, "/readyz")
        wait_until(ready, 60, "both backends to be ready again", interval=0.1)
        shop.wait_ready(60)
        self.post(shop, want=(201,))
        for oid, st in self.accepted.items():
            o = shop.wait_status(oid, FINAL, 60)
            self.assertTrue(o["items"], (oid, st, o))
        # In the databases themselves: no order left PENDING, every accepted
        # order has a row, and stock adds up (balance + held = stock added).
        wait_until(lambda: shop.scalar("order", "SELECT count(*) FROM orders"
                                       " WHERE status = 1") == "0", 30, "no PENDING order")
        ids = {r[0] for r in shop.query("order", "SELECT id FROM orders")}
        self.assertEqual(set(self.accepted) - ids, set(), "accepted orders with no row")
        held = {}
        for pid, cnt in shop.query("inventory", "SELECT i.product_id, i.count FROM"
                                   " reservation_items i JOIN reservations r"
                                   " ON r.order_id = i.order_id WHERE r.status = 'reserved'"):
            held[int(pid)] = held.get(int(pid), 0) + int(cnt)
        for pid, balance, added in shop.query("inventory", "SELECT id, balance, stock_added"
                                              " FROM products"):
            self.assertEqual(int(balance) + held.get(int(pid), 0), int(added), pid)
        print(f"accepted: {sum(1 for s in self.accepted.values() if s == 201)} x 201,"
              f" {sum(1 for s in self.accepted.values() if s == 202)} x 202; all final",
              flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
