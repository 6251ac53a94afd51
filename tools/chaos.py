"""Chaos run (issue 6, item 1): a bounded load of orders and cancels over
HTTP while the inventory, the order service, the front and the broker are
killed with SIGKILL and restarted at moments drawn from a seed; afterwards
wait (bounded) for quiescence, stop the shop, read both SQLite databases
read-only and check that nothing was lost or held twice.

The clients behave as DESIGN.md asks of a client: every POST carries an
Idempotency-Key and is retried with the same key on 503, 504 and connection
errors until it gets a 201; an order that answers 404 for long after its 201
(its OrderSent was lost by both backends, e.g. in a broker killed between two
snapshots) is re-POSTed with the same key; a cancel (DELETE, 202) is repeated
while the order is not CANCELED, since a 202 only means the broker took it.

Checks (each row of the final table counts violations):
  accepted_final   every order that got a 201 reached SUCCESSFUL,
                   UNSUCCESSFUL or CANCELED at the order service
  cancel_applied   every order whose cancel got a 202 is CANCELED
  no_pending       no order row at all is left PENDING
  stock_balance    per product: balance + active reservations = stock added
  agree            SUCCESSFUL <=> reservation 'reserved'; UNSUCCESSFUL =>
                   nothing reserved; CANCELED => nothing held; a 'reserved'
                   reservation belongs to a SUCCESSFUL order
  items_match      the order's items, the reservation's items and the
                   client's items are the same
  reserved_once    one reservation and one order per idempotency key
  outbox_empty     both outboxes drained
  crashes          no service exited unless the run killed it

Run: /usr/bin/python3 tools/chaos.py --build BUILD_DIR --seconds N --seed S
Standard library only. Exit status 0 when every check passes, 1 otherwise.
"""

import argparse
import http.client
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from shop import Shop, port_open, wait_until  # noqa: E402

FINAL = ("SUCCESSFUL", "UNSUCCESSFUL", "CANCELED")
PROCS = ("broker", "inventory", "order", "front")
# orders.status in the order database (proto enum OrderStatus).
ST_NAMES = {1: "PENDING", 2: "SUCCESSFUL", 3: "UNSUCCESSFUL", 4: "CANCELED"}


def log(msg):
    print(f"chaos: {msg}", file=sys.stderr, flush=True)


class Budget:
    """A shared bound on HTTP requests."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self.mu = threading.Lock()

    def take(self):
        with self.mu:
            if self.used >= self.limit:
                return False
            self.used += 1
            return True


class Order:
    def __init__(self, key, items):
        self.key = key
        self.items = items
        self.ids = set()          # order ids the front answered for this key
        self.accepted = False     # got a 201
        self.last_post = 0.0
        self.missing_since = None  # first 404 after the last POST
        self.status = None        # last status seen over HTTP
        self.cancel = False       # a DELETE got a 202
        self.last_delete = 0.0
        self.reposts = 0
        self.redeletes = 0

    @property
    def id(self):
        return next(iter(self.ids)) if self.ids else None

    def done(self):
        if not self.accepted or self.status not in FINAL:
            return False
        return not self.cancel or self.status == "CANCELED"


class Client(threading.Thread):
    """One HTTP client: places orders, cancels some, follows them up."""

    def __init__(self, idx, run):
        super().__init__(name=f"client-{idx}", daemon=True)
        self.run_ = run
        self.rng = random.Random(run.seed * 1000 + idx)
        self.orders = []
        self.stats = {"requests": 0, "retries": 0, "posts_201": 0, "deletes_202": 0,
                      "reposts": 0, "redeletes": 0, "gave_up_post": 0}

    # -- HTTP ---------------------------------------------------------------

    def http(self, method, path, body=None, headers=None):
        """One request; (status, json or None). status None: connection error."""
        if not self.run_.budget.take():
            return "budget", None
        self.stats["requests"] += 1
        conn = http.client.HTTPConnection("127.0.0.1", self.run_.shop.http_port, timeout=5)
        try:
            h = dict(headers or {})
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            payload = r.read()
            try:
                return r.status, json.loads(payload) if payload else None
            except ValueError:
                return r.status, None
        except (OSError, http.client.HTTPException):
            return None, None
        finally:
            conn.close()

    def retrying(self, method, path, ok, deadline, body=None, headers=None):
        """Repeat a request on 503, 504 and connection errors until it answers
        ok or something else, or deadline passes."""
        while True:
            st, js = self.http(method, path, body, headers)
            if st == "budget":
                return None, None
            if st == ok or st not in (None, 502, 503, 504):
                return st, js
            self.stats["retries"] += 1
            if time.monotonic() > deadline:
                return st, js
            time.sleep(self.rng.uniform(0.05, 0.3))

    # -- actions ------------------------------------------------------------

    def post(self, o, deadline):
        st, js = self.retrying("POST", "/order", 201, deadline, body={"items": o.items},
                               headers={"Idempotency-Key": o.key})
        o.last_post = time.monotonic()
        o.missing_since = None
        if st == 201 and js and js.get("order_id"):
            if not o.accepted:
                self.stats["posts_201"] += 1
            o.accepted = True
            o.ids.add(js["order_id"])
            return True
        return False

    def place(self, deadline):
        n = self.rng.randint(1, 3)
        pids = self.rng.sample(self.run_.product_ids, n)
        items = [{"inventoryId": p, "count": self.rng.randint(1, 4)} for p in pids]
        key = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        o = Order(key, items)
        self.orders.append(o)
        if not self.post(o, deadline):
            self.stats["gave_up_post"] += 1

    def delete(self, o, deadline):
        st, _ = self.retrying("DELETE", f"/order/{o.id}", 202, deadline)
        o.last_delete = time.monotonic()
        if st == 202:
            if not o.cancel:
                self.stats["deletes_202"] += 1
            o.cancel = True

    def follow(self, o, deadline):
        """Look at an order once and do what a client does next."""
        now = time.monotonic()
        if not o.accepted:
            if self.post(o, deadline):
                return
            return
        st, js = self.http("GET", f"/order/{o.id}")
        if st == 200 and js:
            o.status = js.get("status")
            o.missing_since = None
            if o.cancel and o.status != "CANCELED" and o.status in FINAL and \
                    now - o.last_delete > self.run_.repeat_after:
                o.redeletes += 1
                self.stats["redeletes"] += 1
                self.delete(o, deadline)
        elif st == 404:
            if o.missing_since is None:
                o.missing_since = now
            elif now - o.missing_since > self.run_.repeat_after:
                o.reposts += 1
                self.stats["reposts"] += 1
                self.post(o, deadline)

    def run(self):
        r = self.run_
        try:
            # The load may use 80 % of the request budget; the rest is kept
            # for following every accepted order up to its end.
            while time.monotonic() < r.load_end and r.budget.used < 0.8 * r.budget.limit:
                x = self.rng.random()
                open_ = [o for o in self.orders if o.accepted and not o.cancel]
                if x < 0.15 and open_:
                    self.delete(self.rng.choice(open_[-20:]), r.load_end + 5)
                elif x < 0.35:
                    todo = [o for o in self.orders if not o.done()]
                    if todo:
                        self.follow(self.rng.choice(todo), r.load_end + 5)
                else:
                    self.place(r.load_end + 5)
                time.sleep(self.rng.uniform(0.0, r.think))
            # Drain: follow every order up until it is done, bounded.
            while time.monotonic() < r.drain_end and not r.budget_exhausted():
                todo = [o for o in self.orders if not o.done()]
                if not todo:
                    break
                for o in todo:
                    if time.monotonic() > r.drain_end:
                        break
                    self.follow(o, r.drain_end)
                time.sleep(0.2)
        except Exception as e:  # noqa: BLE001 - reported as a failure
            r.errors.append(f"{self.name}: {e!r}")


class Run:
    def __init__(self, args):
        self.args = args
        self.seed = args.seed
        self.rng = random.Random(args.seed)
        self.think = 0.03
        self.repeat_after = args.repeat_after
        self.budget = Budget(args.max_requests or max(4000, 400 * args.seconds))
        self.kills = {p: 0 for p in PROCS}
        self.crashes = {p: 0 for p in PROCS}
        self.down = set()  # processes the run killed and has not restarted yet
        self.mu = threading.Lock()
        self.errors = []
        self.shop = None
        self.product_ids = []
        self.stock = {}

    def budget_exhausted(self):
        return self.budget.used >= self.budget.limit

    # -- the shop ----------------------------------------------------------

    def start_shop(self, tmp):
        # Product 1 runs out early (out-of-stock outcomes and cancels that
        # restore stock); the others last the whole run.
        n = max(10, self.args.seconds)
        catalog = [{"id": i, "name": f"chaos product {i}", "price": 100 * i,
                    "balance": (5 if i == 1 else 60) * n} for i in range(1, 7)]
        self.product_ids = [p["id"] for p in catalog]
        self.stock = {p["id"]: p["balance"] for p in catalog}
        cat_path = os.path.join(tmp, "catalog.json")
        with open(cat_path, "w") as f:
            json.dump(catalog, f)
        # Quick recovery loops, so the run settles in seconds, not minutes.
        order_args = ("--resend-after", "1s", "--resend-max-delay", "4s",
                      "--resend-attempts", "1000", "--inventory-deadline", "1s",
                      "--log-level", "warn")
        self.shop = Shop(self.args.build, tmp=tmp, order_args=order_args,
                         inventory_args=("--catalog", cat_path, "--log-level", "warn"),
                         front_args=("--publish-deadline", "1s"))
        self.shop.start()

    def restart(self, name):
        shop = self.shop
        shop.start(name, wait=False)
        if name == "broker":
            wait_until(lambda: port_open(shop.broker_port), 20, "the broker to listen")

    def chaos(self):
        """Kill and restart processes at moments drawn from the seed."""
        t = time.monotonic()
        while True:
            t += self.rng.expovariate(1.0 / self.args.kill_every)
            name = self.rng.choice(PROCS)
            down_for = self.rng.uniform(0.0, self.args.max_down)
            if t + down_for >= self.load_end:
                break
            while time.monotonic() < t:
                self.watch()
                time.sleep(min(0.05, max(0.0, t - time.monotonic())))
            with self.mu:
                self.down.add(name)
            self.shop.kill(name)
            self.kills[name] += 1
            log(f"t={time.monotonic() - self.t0:6.2f} killed {name}; down {down_for:.2f} s")
            end = time.monotonic() + down_for
            while time.monotonic() < end:
                self.watch()
                time.sleep(0.05)
            self.restart(name)
            with self.mu:
                self.down.discard(name)
            log(f"t={time.monotonic() - self.t0:6.2f} restarted {name}")
        while time.monotonic() < self.load_end:
            self.watch()
            time.sleep(0.05)

    def watch(self):
        """A process that died unless killed is a crash: count and restart it."""
        for name in PROCS:
            p = self.shop.procs.get(name)
            with self.mu:
                if name in self.down:
                    continue
            if p is not None and not p.alive():
                self.crashes[name] += 1
                log(f"{name} exited by itself with {p.p.returncode}; restarting")
                self.restart(name)

    # -- reading state -----------------------------------------------------

    def db(self, name):
        path = os.path.join(self.shop.tmp, f"{name}.db")
        c = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        c.row_factory = sqlite3.Row
        return c

    def busy(self):
        """What the shop still has to do, as a tuple (all zero when quiet)."""
        o = self.db("order")
        i = self.db("inventory")
        try:
            pending = o.execute("SELECT count(*) FROM orders WHERE status = 1").fetchone()[0]
            unconfirmed = o.execute(
                "SELECT count(*) FROM orders WHERE status = 4 AND cancel_confirmed = 0"
                " AND next_resend_ms IS NOT NULL").fetchone()[0]
            ob_o = o.execute("SELECT count(*) FROM outbox").fetchone()[0]
            ob_i = i.execute("SELECT count(*) FROM outbox").fetchone()[0]
            # Orders without lines that the inventory can still supply
            # (the order service's items recovery has not run yet).
            due = {r[0] for r in o.execute(
                "SELECT id FROM orders WHERE items_due_ms IS NOT NULL")}
            known = {r[0] for r in i.execute("SELECT DISTINCT order_id FROM reservation_items")}
            return (pending, unconfirmed, ob_o, ob_i, len(due & known))
        finally:
            o.close()
            i.close()

    def settle(self, clients):
        deadline = time.monotonic() + self.args.settle
        quiet_since = None
        last = None
        while time.monotonic() < deadline:
            self.watch()
            clients_busy = any(c.is_alive() for c in clients)
            try:
                b = self.busy()
            except sqlite3.Error as e:
                b = ("db", str(e))
            if not clients_busy and b == (0, 0, 0, 0, 0):
                if quiet_since is None:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > 2.0:
                    return True
            else:
                quiet_since = None
            if b != last:
                log(f"settling: pending={b[0]} unconfirmed_cancels={b[1]}"
                    f" outbox_order={b[2]} outbox_inventory={b[3]} lines_due={b[4]}"
                    f" clients_busy={clients_busy}" if len(b) == 5 else f"settling: {b}")
                last = b
            time.sleep(0.5)
        return False

    def read_final(self):
        o = self.db("order")
        i = self.db("inventory")
        try:
            orders = {r["id"]: dict(r) for r in o.execute("SELECT * FROM orders")}
            oitems = {}
            for r in o.execute("SELECT order_id, inventory_id, count FROM order_items"
                               " ORDER BY order_id, line"):
                oitems.setdefault(r["order_id"], []).append((r["inventory_id"], r["count"]))
            products = {r["id"]: dict(r) for r in i.execute("SELECT * FROM products")}
            res = {r["order_id"]: dict(r) for r in i.execute("SELECT * FROM reservations")}
            ritems = {}
            for r in i.execute("SELECT order_id, product_id, count FROM reservation_items"
                               " ORDER BY order_id, idx"):
                ritems.setdefault(r["order_id"], []).append((r["product_id"], r["count"]))
            outbox = (o.execute("SELECT count(*) FROM outbox").fetchone()[0],
                      i.execute("SELECT count(*) FROM outbox").fetchone()[0])
            return orders, oitems, products, res, ritems, outbox
        finally:
            o.close()
            i.close()

    # -- checks ------------------------------------------------------------

    def check(self, clients):
        orders, oitems, products, res, ritems, outbox = self.read_final()
        v = {k: [] for k in ("accepted_final", "cancel_applied", "no_pending", "stock_balance",
                             "agree", "items_match", "reserved_once", "outbox_empty",
                             "crashes")}
        notes = []
        all_client = [o for c in clients for o in c.orders]
        by_id = {}
        for o in all_client:
            if len(o.ids) > 1:
                v["reserved_once"].append(f"key {o.key} got order ids {sorted(o.ids)}")
            for oid in o.ids:
                if oid in by_id and by_id[oid] is not o:
                    v["reserved_once"].append(f"order {oid} answered for two keys")
                by_id[oid] = o
        for o in all_client:
            if not o.accepted:
                continue
            row = orders.get(o.id)
            status = ST_NAMES.get(row["status"]) if row else None
            if status not in FINAL:
                v["accepted_final"].append(f"order {o.id} (201): {status or 'unknown'}"
                                           f" at the order service")
            if o.cancel and status != "CANCELED":
                v["cancel_applied"].append(f"order {o.id}: cancel got 202, status {status}")
            want = sorted((it["inventoryId"], it["count"]) for it in o.items)
            if row is not None and not oitems.get(o.id):
                # OrderSent lost at the order service: recovery fills the
                # lines from the inventory's reservation. Only an order that
                # neither service ever saw (canceled first) has none anywhere.
                if ritems.get(o.id):
                    v["items_match"].append(f"order {o.id}: no lines, though the inventory"
                                            f" has {ritems.get(o.id)}")
                else:
                    notes.append(o.id)
            elif row is not None and sorted(oitems.get(o.id, [])) != want:
                v["items_match"].append(f"order {o.id}: order items {oitems.get(o.id)}"
                                        f" != client items {want}")
            r = res.get(o.id)
            if r is not None and r["status"] in ("reserved", "released") and \
                    sorted(ritems.get(o.id, [])) != want:
                v["items_match"].append(f"order {o.id}: reservation items"
                                        f" {ritems.get(o.id)} != client items {want}")
        for oid, row in orders.items():
            status = ST_NAMES.get(row["status"], str(row["status"]))
            if status == "PENDING":
                v["no_pending"].append(f"order {oid} PENDING (attempts {row['attempts']})")
            r = res.get(oid)
            rs = r["status"] if r else None
            if status == "SUCCESSFUL" and rs != "reserved":
                v["agree"].append(f"order {oid} SUCCESSFUL, reservation {rs}")
            if status == "UNSUCCESSFUL" and rs == "reserved":
                v["agree"].append(f"order {oid} UNSUCCESSFUL, reservation reserved")
            if status == "CANCELED" and rs == "reserved":
                v["agree"].append(f"order {oid} CANCELED, reservation still reserved")
        for oid, r in res.items():
            if r["status"] == "reserved":
                row = orders.get(oid)
                if row is None:
                    v["agree"].append(f"reservation {oid} reserved, order unknown")
        held = {}
        for oid, r in res.items():
            if r["status"] == "reserved":
                for pid, cnt in ritems.get(oid, []):
                    held[pid] = held.get(pid, 0) + cnt
        for pid, p in products.items():
            h = held.get(pid, 0)
            if p["balance"] + h != p["stock_added"] or p["stock_added"] != self.stock.get(pid):
                v["stock_balance"].append(f"product {pid}: balance {p['balance']} + held {h}"
                                          f" != stock added {p['stock_added']}"
                                          f" (seeded {self.stock.get(pid)})")
        if outbox != (0, 0):
            v["outbox_empty"].append(f"outbox rows left: order {outbox[0]},"
                                     f" inventory {outbox[1]}")
        for name, n in self.crashes.items():
            if n:
                v["crashes"].append(f"{name} exited {n} times without being killed")
        summary = {
            "orders_in_db": len(orders),
            "reservations": len(res),
            "status": {s: sum(1 for r in orders.values() if ST_NAMES.get(r["status"]) == s)
                       for s in ("PENDING",) + FINAL},
            "held": held,
            "no_lines": len(notes),
        }
        return v, summary

    # -- the whole run -------------------------------------------------------

    def main(self):
        a = self.args
        tmp = tempfile.mkdtemp(prefix="webshop-chaos-")
        ok = False
        try:
            log(f"seed {a.seed}, {a.seconds} s of load, {a.threads} clients, dir {tmp}")
            self.start_shop(tmp)
            t0 = self.t0 = time.monotonic()
            self.load_end = t0 + a.seconds
            self.drain_end = self.load_end + a.settle
            clients = [Client(i, self) for i in range(a.threads)]
            for c in clients:
                c.start()
            self.chaos()
            log("load over; every process up; waiting for quiescence")
            quiet = self.settle(clients)
            for c in clients:
                c.join(timeout=max(1.0, self.drain_end - time.monotonic() + 10))
            codes = self.shop.stop_all()
            v, summary = self.check(clients)
            if not quiet:
                v.setdefault("quiescence", []).append(
                    f"not quiet after {a.settle} s")
            if self.errors:
                v.setdefault("client_errors", []).extend(self.errors)
            bad_exit = {n: c for n, c in codes.items() if n != "broker" and c not in (0, None)}
            if bad_exit:
                v.setdefault("clean_sigterm", []).append(f"exit codes at SIGTERM: {bad_exit}")
            try:
                self.shop.check_logs()
            except AssertionError as e:
                v.setdefault("sanitizer", []).append(str(e)[:500])
            ok = self.report(clients, v, summary, time.monotonic() - t0)
            return 0 if ok else 1
        finally:
            if self.shop is not None:
                try:
                    self.shop.stop_all()
                except AssertionError:
                    pass
            if ok and not a.keep:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                log(f"state and logs kept in {tmp}")

    def report(self, clients, v, summary, elapsed):
        tot = {}
        for c in clients:
            for k, n in c.stats.items():
                tot[k] = tot.get(k, 0) + n
        accepted = sum(1 for c in clients for o in c.orders if o.accepted)
        rows = [
            ("seed", self.seed),
            ("load seconds / total seconds", f"{self.args.seconds} / {elapsed:.0f}"),
            ("HTTP requests (retries)", f"{tot.get('requests', 0)} ({tot.get('retries', 0)})"),
            ("orders accepted (201)", accepted),
            ("cancels accepted (202)", tot.get("deletes_202", 0)),
            ("re-POSTs after 404 / re-DELETEs", f"{tot.get('reposts', 0)} / "
                                                 f"{tot.get('redeletes', 0)}"),
            ("orders never accepted", tot.get("gave_up_post", 0)),
            ("orders in order db", summary["orders_in_db"]),
            ("  SUCCESSFUL / UNSUCCESSFUL / CANCELED / PENDING",
             " / ".join(str(summary["status"][s]) for s in FINAL + ("PENDING",))),
            ("reservations in inventory db", summary["reservations"]),
            ("orders without lines anywhere (canceled unseen)", summary["no_lines"]),
        ]
        for p in PROCS:
            rows.append((f"kills: {p}", self.kills[p]))
        rows.append(("kills: total", sum(self.kills.values())))
        nviol = 0
        for k, items in v.items():
            rows.append((f"check {k}", "ok" if not items else f"{len(items)} VIOLATIONS"))
            nviol += len(items)
        rows.append(("violations", nviol))
        w = max(len(r[0]) for r in rows)
        print("+-" + "-" * w + "-+-" + "-" * 24 + "-+")
        for k, val in rows:
            print(f"| {k:<{w}} | {str(val):>24} |")
        print("+-" + "-" * w + "-+-" + "-" * 24 + "-+")
        for k, items in v.items():
            for it in items[:20]:
                print(f"VIOLATION {k}: {it}")
            if len(items) > 20:
                print(f"VIOLATION {k}: ... and {len(items) - 20} more")
        sys.stdout.flush()
        return nviol == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.environ.get("WEBSHOP_BUILD_DIR",
                                                      os.path.join(ROOT, "build")))
    ap.add_argument("--seconds", type=int, default=60, help="seconds of load and kills")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=4, help="HTTP client threads")
    ap.add_argument("--kill-every", type=float, default=4.0,
                    help="mean seconds between two kills")
    ap.add_argument("--max-down", type=float, default=2.0,
                    help="longest time a killed process stays down")
    ap.add_argument("--settle", type=int, default=120,
                    help="bound on the wait for quiescence after the load")
    ap.add_argument("--repeat-after", type=float, default=3.0,
                    help="a client re-POSTs after 404 (re-DELETEs) for this long")
    ap.add_argument("--max-requests", type=int, default=0,
                    help="bound on HTTP requests (default 400 per second of load)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    a = ap.parse_args()
    if a.seconds < 1:
        ap.error("--seconds must be at least 1")
    return Run(a).main()


if __name__ == "__main__":
    sys.exit(main())
