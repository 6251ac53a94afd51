"""Chaos run (issue 6, item 1; issue 12; issue 13): a bounded load of orders
and cancels over HTTP while the inventory, the order service, the front and
the broker are killed with SIGKILL and restarted at moments drawn from a
seed; afterwards wait (bounded) until the shop is quiet and the checks can
hold, stop the shop, read both databases and check that nothing was lost or
held twice.

Storage (--store): sqlite (default) gives each backend an SQLite file in the
run's dir; postgres starts a throwaway PostgreSQL 15 cluster of the run's
own (initdb + postgres on a Unix socket, as the user "postgres" when run as
root; tests/e2e/shop.py PgCluster), gives each backend a database on it,
and adds PostgreSQL itself to the kill list: its postmaster is SIGKILLed
and started again like the other processes. Either way the checks read the
databases through lib/db, with tools/webshop-dbq (Shop.query), in SQL that
both engines take; never with python's sqlite3.

The clients behave as DESIGN.md ("What an answer promises") asks of a
client. Every POST carries an Idempotency-Key. A 201 is a promise: the order
is committed at the order service, so the client never POSTs it again, and a
GET answering 404 after it is a broken promise. A 202 only means "queued at
the broker": the client polls the order and re-POSTs with the same key when
it stays 404 for --repeat-after seconds. 503, 504 and connection errors are
retried with the same key. Cancels alike: a DELETE answered 200 is committed
and never repeated; one answered 202 (queued), 404 (the order service has
not recorded the order yet), 503, 504 or a connection error is repeated
while the order is not CANCELED. --no-client-resend turns every re-send off
(each POST and DELETE is sent once): then only 201s and 200s are promises.

Checks (each row of the final table counts violations):
  accepted_final         every order that got a 201 (or, with re-sends on, a
                         202) reached SUCCESSFUL, UNSUCCESSFUL or CANCELED
  accepted_201_durable   every order that got a 201 is final at the end
                         although the client never re-POSTed it, and no GET
                         after its 201 answered 404 (the table counts the
                         201s that would have needed a re-POST: must be 0)
  cancel_applied         every order whose DELETE got a 200 is CANCELED (and
                         no later GET showed anything else); with re-sends on,
                         every one whose DELETE got a 202 too
  no_pending             no order row at all is left PENDING
  stock_balance          per product: balance + active reservations = stock
  agree                  SUCCESSFUL <=> reservation 'reserved'; UNSUCCESSFUL
                         => nothing reserved; CANCELED => nothing held; a
                         'reserved' reservation belongs to a known order
  no_orphan_reservations no reservation is held for an order that the order
                         service does not have as SUCCESSFUL
  items_match            the order's items, the reservation's items and the
                         client's items are the same
  reserved_once          one reservation and one order per idempotency key
  http_answers           POST answered only 201/202/503/504, DELETE only
                         200/202/404/503/504 (404 never for an order that got
                         a 201 or was seen), GET only 200/404/503/504; a 404
                         must be the front's JSON NOT_FOUND
  outbox_empty           both outboxes drained
  crashes                no service exited unless the run killed it
  outbox_published_once  (--replicas > 1) no outbox row was published by two
                         replicas at once: per row id, the publishes the
                         relays log (outbox_publish id= lease_until_ms=, at
                         debug level, which the backends run at here); a
                         second replica publishing it while the first one's
                         lease still ran is a violation

Replicas (--replicas N, 2..8; implies --store postgres): N of each service
on the one PostgreSQL cluster, each with its own ports, --replica K and
broker user webshop-<service>-K, the RPC flags listing every replica; the
fronts behind HAProxy (deploy/haproxy/webshop.cfg rendered by tools/webshop
__haproxy_config), which the clients talk to. The kill list is the broker,
every replica, HAProxy and PostgreSQL.

TLS (--tls; single shop only, not with --replicas): tests/e2e/shop.py's
Shop(rpc_tls=True, broker_tls=True): the backends listen only on tls+tcp://,
one listener per caller identity (tools/shop_ca's certificates), and the
broker only on TLS, each client proving its broker user with a certificate.
Every restart reuses the process's argv, so it comes back with the same
certificates and listeners; the checks are the same.

Ports: the run picks one set of distinct ports outside the kernel's
ephemeral range (/proc/sys/net/ipv4/ip_local_port_range), each checked free
by bind, and restarts every process on its own port, so no outgoing
connection and no other port of the run can take it while a process is down.

Run: /usr/bin/python3 tools/chaos.py --build BUILD_DIR --seconds N --seed S
       [--store sqlite|postgres] [--replicas N] [--tls]
Standard library only. Exit status 0 when every check passes, 1 otherwise.
"""

import argparse
import calendar
import http.client
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from shop import PgCluster, Shop, free_port, http_ok, port_open, wait_until  # noqa: E402

FINAL = ("SUCCESSFUL", "UNSUCCESSFUL", "CANCELED")
PROCS = ("broker", "inventory", "order", "front")
# With --store postgres, the cluster's postmaster is killed too.
PG_PROC = "postgres"
# orders.status in the order database (proto enum OrderStatus).
ST_NAMES = {1: "PENDING", 2: "SUCCESSFUL", 3: "UNSUCCESSFUL", 4: "CANCELED"}
# Answers after which a client sends the same request again (None: the
# connection failed); the key names the reason in the table.
RESEND_ON = {503: "503", 504: "504", None: "conn"}
POST_OK = (201, 202)
# A 404 that is not the front's JSON NOT_FOUND error.
RAW_404 = "404 (not JSON NOT_FOUND)"
# With re-sends off, an order still 404 this long after the load (while
# every process is up) is given up by its client: a lost 202.
GIVE_UP_AFTER = 15.0
BROKER_NODELAY = "set_tcp_nodelay true\n"
HAPROXY = os.environ.get("WEBSHOP_HAPROXY", "/usr/sbin/haproxy")
WEBSHOP = os.path.join(ROOT, "tools", "webshop")
# What a relay logs when it publishes an outbox row (lib/outbox.c): the row
# id and the lease its claim wrote (wall-clock ms). Two replicas publishing
# one row while the first one's lease still ran is a double publish.
PUBLISH_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z .*event=outbox_publish\b"
                        r".*?\bid=(\d+)\b.*?\blease_until_ms=(\d+)")


def log(msg):
    print(f"chaos: {msg}", file=sys.stderr, flush=True)


def url_port(url):
    return int(url.rsplit(":", 1)[1])


def answer_id(js, hdrs):
    """The order id of a 201/202 answer: the body's order_id, else Location."""
    if isinstance(js, dict) and js.get("order_id"):
        return js["order_id"]
    loc = hdrs.get("location", "")
    return loc.rsplit("/", 1)[1] if loc.startswith("/order/") else None


def with_flags(argv, flags):
    """argv with each --flag's value replaced (--flag V or --flag=V), or the
    flag appended when argv lacks it."""
    out, seen, i = [], set(), 0
    while i < len(argv):
        a = argv[i]
        name = a.split("=", 1)[0]
        if name in flags:
            seen.add(name)
            out += [name, flags[name]]
            i += 1 if "=" in a else 2
            continue
        out.append(a)
        i += 1
    for name, value in flags.items():
        if name not in seen:
            out += [name, value]
    return out


def log_ms(date, ms):
    """A log line's UTC timestamp (lib/log.c) as wall-clock milliseconds."""
    return calendar.timegm(time.strptime(date, "%Y-%m-%dT%H:%M:%S")) * 1000 + int(ms)


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
        self.ids = set()           # order ids the front answered for this key
        self.got_201 = False       # a POST answered 201: committed, never re-POSTed
        self.got_202 = False       # a POST answered 202 (queued) before any 201
        self.last_post = 0.0
        self.last_post_answer = None
        self.missing_since = None  # first of the 404s in a row since the last POST
        self.status = None         # last status seen over HTTP
        self.seen = False          # a GET answered 200
        self.get_404_after_201 = 0
        self.given_up = False      # re-sends off: still 404 long after the load
        self.cancel_wanted = False  # the client asked to cancel it
        self.cancel_200 = False    # a DELETE answered 200: committed
        self.cancel_202 = False    # a DELETE answered 202: queued
        self.cancel_answer = None  # the last DELETE's answer
        self.last_delete = 0.0
        self.after_cancel_200 = None  # a status other than CANCELED seen after a 200

    @property
    def accepted(self):
        return self.got_201 or self.got_202

    @property
    def id(self):
        return next(iter(self.ids)) if self.ids else None

    def done(self, resend):
        """Nothing more for the client to do with this order."""
        if self.given_up:
            return True
        if not self.accepted:
            # An answer other than 503/504/connection error is final (and
            # counted under http_answers).
            return not resend or self.last_post_answer not in RESEND_ON
        if self.status not in FINAL:
            return False
        if not self.cancel_wanted or self.status == "CANCELED" or self.cancel_200:
            return True
        return not resend


class Client(threading.Thread):
    """One HTTP client: places orders, cancels some, follows them up."""

    def __init__(self, idx, run):
        super().__init__(name=f"client-{idx}", daemon=True)
        self.run_ = run
        self.resend = not run.args.no_client_resend
        self.rng = random.Random(run.seed * 1000 + idx)
        self.orders = []
        self.stats = {"requests": 0}
        self.unexpected = []  # http_answers violations

    def count(self, key, n=1):
        self.stats[key] = self.stats.get(key, 0) + n

    # -- HTTP ---------------------------------------------------------------

    def http(self, method, path, body=None, headers=None):
        """One request; (status, json or None, headers). status None: connection
        error; "budget": the request bound is used up."""
        if not self.run_.budget.take():
            return "budget", None, {}
        self.stats["requests"] += 1
        conn = http.client.HTTPConnection("127.0.0.1", self.run_.http_port, timeout=5)
        try:
            h = dict(headers or {})
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            payload = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            try:
                js = json.loads(payload) if payload else None
            except ValueError:
                js = None
            if r.status == 404 and not (isinstance(js, dict) and js.get("code") == "NOT_FOUND"):
                # Not the front's "no such order" (e.g. the HTTP library's own
                # page before the routes are installed): an unexpected answer.
                return RAW_404, payload[:60], hdrs
            return r.status, js, hdrs
        except (OSError, http.client.HTTPException):
            return None, None, {}
        finally:
            conn.close()

    def odd(self, what, o, st, js):
        msg = js.get("code") if isinstance(js, dict) else js
        self.unexpected.append(f"{what} order {o.id or o.key}: {st} {msg}")

    def pause(self):
        """A client's back-off before it sends the same request again."""
        time.sleep(self.rng.uniform(0.05, 0.3))

    # -- actions ------------------------------------------------------------

    def post(self, o, deadline, why=None):
        """POST the order (again, when why names the reason); with re-sends on,
        repeat it on 503, 504 and connection errors until deadline."""
        while True:
            if why is not None:
                self.count(f"repost_{why}")
            st, js, hdrs = self.http("POST", "/order", body={"items": o.items},
                                     headers={"Idempotency-Key": o.key})
            if st == "budget":
                return
            self.count(f"post_{RESEND_ON.get(st, st)}")
            o.last_post = time.monotonic()
            o.last_post_answer = st
            o.missing_since = None
            if st in POST_OK:
                oid = answer_id(js, hdrs)
                if oid is None:
                    self.odd("POST without an order id:", o, st, js)
                    return
                o.ids.add(oid)
                if st == 201 and not o.got_201:
                    self.count("orders_201")
                    if o.got_202:
                        self.count("orders_202_then_201")
                    o.got_201 = True
                elif st == 202 and not o.accepted:
                    self.count("orders_202")
                    o.got_202 = True
                return
            if st not in RESEND_ON:
                self.odd("POST", o, st, js)
                return
            if not self.resend or time.monotonic() > deadline:
                return
            why = RESEND_ON[st]
            self.pause()

    def place(self, deadline):
        n = self.rng.randint(1, 3)
        pids = self.rng.sample(self.run_.product_ids, n)
        items = [{"inventoryId": p, "count": self.rng.randint(1, 4)} for p in pids]
        key = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        o = Order(key, items)
        self.orders.append(o)
        self.post(o, deadline)

    def delete(self, o, deadline, why=None):
        """DELETE the order (again, when why names the reason); with re-sends
        on, repeat it on 503, 504 and connection errors until deadline."""
        o.cancel_wanted = True
        while True:
            if why is not None:
                self.count(f"redelete_{why}")
            st, js, _ = self.http("DELETE", f"/order/{o.id}")
            if st == "budget":
                return
            self.count(f"delete_{RESEND_ON.get(st, st)}")
            o.last_delete = time.monotonic()
            o.cancel_answer = st
            if st == 200:
                if not o.cancel_200:
                    self.count("cancels_200")
                o.cancel_200 = True
                if isinstance(js, dict) and js.get("status"):
                    o.status = js["status"]
                    if o.status != "CANCELED":
                        o.after_cancel_200 = o.status
                return
            if st == 202:
                if not o.cancel_202 and not o.cancel_200:
                    self.count("cancels_202")
                o.cancel_202 = True
                return
            if st == 404:
                if o.got_201 or o.seen:
                    self.odd("DELETE 404 for a recorded", o, st, js)
                return
            if st not in RESEND_ON:
                self.odd("DELETE", o, st, js)
                return
            if not self.resend or time.monotonic() > deadline:
                return
            why = RESEND_ON[st]
            self.pause()

    def follow(self, o, deadline):
        """Look at an order once and do what a client does next."""
        now = time.monotonic()
        r = self.run_
        if not o.accepted:
            if self.resend:
                self.post(o, deadline, why=RESEND_ON.get(o.last_post_answer, "other"))
            return
        st, js, _ = self.http("GET", f"/order/{o.id}")
        if st == 200 and isinstance(js, dict):
            o.status = js.get("status")
            o.seen = True
            o.missing_since = None
            if o.cancel_200 and o.status != "CANCELED":
                o.after_cancel_200 = o.status
            if self.resend and o.cancel_wanted and not o.cancel_200 and \
                    o.status != "CANCELED" and o.status in FINAL and \
                    now - o.last_delete > r.repeat_after:
                self.delete(o, deadline, why=RESEND_ON.get(o.cancel_answer, o.cancel_answer))
        elif st == 404:
            if o.got_201:
                # A 201 is a promise: count the broken one, never re-POST.
                o.get_404_after_201 += 1
                self.count("get_404_after_201")
            if o.missing_since is None:
                o.missing_since = now
            elif now - o.missing_since > r.repeat_after and self.resend and not o.got_201:
                self.post(o, deadline, why="202")
            elif now - o.missing_since > GIVE_UP_AFTER and now > r.load_end + GIVE_UP_AFTER \
                    and (o.got_201 or not self.resend):
                o.given_up = True
        elif st != "budget" and st not in RESEND_ON:
            self.odd("GET", o, st, js)

    def run(self):
        r = self.run_
        try:
            # The load may use 80 % of the request budget; the rest is kept
            # for following every accepted order up to its end.
            while time.monotonic() < r.load_end and r.budget.used < 0.8 * r.budget.limit:
                x = self.rng.random()
                open_ = [o for o in self.orders if o.accepted and not o.cancel_wanted]
                if x < 0.15 and open_:
                    self.delete(self.rng.choice(open_[-20:]), r.load_end + 5)
                elif x < 0.35:
                    todo = [o for o in self.orders if not o.done(self.resend)]
                    if todo:
                        self.follow(self.rng.choice(todo), r.load_end + 5)
                else:
                    self.place(r.load_end + 5)
                time.sleep(self.rng.uniform(0.0, r.think))
            # Drain: follow every order up until it is done, bounded.
            while time.monotonic() < r.drain_end and not r.budget_exhausted():
                todo = [o for o in self.orders if not o.done(self.resend)]
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
        # --replicas N > 1: broker, inventory-K, order-K, front-K (K 0..N-1)
        # and HAProxy, which the clients talk to.
        self.replicas = args.replicas
        if self.replicas > 1:
            self.procs = ("broker",) + tuple(f"{s}-{k}" for s in ("inventory", "order", "front")
                                             for k in range(self.replicas)) + ("haproxy",)
        else:
            self.procs = PROCS
        self.procs += (PG_PROC,) if args.store == "postgres" else ()
        self.http_port = None  # the port the clients use: the front's or HAProxy's
        self.haproxy_port = None
        self.replica_ports = []  # per replica: {inv_rpc, inv_http, ord_rpc, ord_http, front}
        self.kills = {p: 0 for p in self.procs}
        self.crashes = {p: 0 for p in self.procs}
        self.cluster = None  # PgCluster with --store postgres
        self.down = set()  # processes the run killed and has not restarted yet
        self.mu = threading.Lock()
        self.errors = []
        self.shop = None
        self.orphan_release = False  # the inventory was given --orders-url
        self.orphans_released = None
        self.product_ids = []
        self.stock = {}

    def budget_exhausted(self):
        return self.budget.used >= self.budget.limit

    # -- the shop ----------------------------------------------------------

    def inventory_has_orphan_release(self):
        exe = os.path.join(self.args.build, "inventory", "webshop-inventory")
        try:
            p = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return "orders-url" in p.stdout + p.stderr and "orphan-after-ms" in p.stdout + p.stderr

    def new_shop(self, tmp, **kw):
        """A Shop on ports reserved by tests/e2e/shop.py: distinct, outside the
        kernel's ephemeral range, locked against other runs, kept across the
        restarts of one run (checked here, so a change there fails loudly)."""
        shop = Shop(self.args.build, tmp=tmp, **kw)
        # RPC over ipc:// (sockets in the shop's temp dir) or, with
        # --tls, tls+tcp:// on reserved ports.
        rpc = [u for u in (shop.inv_rpc, shop.ord_rpc) if not u.startswith("ipc://")]
        used = [shop.broker_port, *map(url_port, rpc), shop.inv_http, shop.ord_http,
                shop.http_port]
        if len(set(used)) != len(used) or 0 in used:
            raise SystemExit(f"chaos: the shop's ports {used} are not distinct fixed ports")
        with open(shop.broker_conf) as f:
            if BROKER_NODELAY not in f.read():
                raise SystemExit(f"chaos: {shop.broker_conf} lacks {BROKER_NODELAY.strip()}")
        return shop

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
        pg_url = None
        if self.args.store == "postgres":
            self.cluster = PgCluster.create()
            self.cluster.start()
            pg_url = self.cluster.url
            log(f"postgres cluster {self.cluster.dir} (pid {self.cluster.proc.pid}),"
                f" url {pg_url}")
        self.shop = self.new_shop(tmp, order_args=order_args,
                                  inventory_args=("--catalog", cat_path, "--log-level", "warn"),
                                  front_args=("--publish-deadline", "1s"),
                                  broker_conf_extra=BROKER_NODELAY, pg_url=pg_url,
                                  rpc_tls=self.args.tls, broker_tls=self.args.tls)
        log(f"storage {self.shop.engine}: inventory {self.shop.db_urls['inventory']},"
            f" order {self.shop.db_urls['order']}")
        self.orphan_release = self.inventory_has_orphan_release()
        if self.orphan_release and self.args.tls:
            # shop.py gave the inventory its own TLS listener on the order
            # service as --orders-url (identity inventory).
            self.shop.argv["inventory"] += ["--orphan-after-ms", str(self.args.orphan_after_ms)]
        elif self.orphan_release:
            self.shop.argv["inventory"] += ["--orders-url", self.shop.ord_rpc,
                                            "--orphan-after-ms", str(self.args.orphan_after_ms)]
        else:
            log("the inventory has no --orders-url/--orphan-after-ms: orphans are not released")
        s = self.shop
        if self.replicas > 1:
            self.start_replicas()
            return
        log(f"ports broker={s.broker_port} inventory={s.inv_rpc},{s.inv_http}"
            f" order={s.ord_rpc},{s.ord_http} front={s.http_port} (reserved by shop.py)")
        self.shop.start()
        self.http_port = s.http_port

    def replica_argv(self):
        """Every replica's argv, from the shop's one-of-each argv: its own
        ports and RPC socket, --replica K, its own broker user, every replica's RPC address
        in the comma lists; and HAProxy's over the fronts."""
        s = self.shop
        ports = [{"inv_rpc": s.inv_rpc, "inv_http": s.inv_http, "ord_rpc": s.ord_rpc,
                  "ord_http": s.ord_http, "front": s.http_port}]
        for k in range(1, self.replicas):
            ports.append({"inv_rpc": f"ipc://{s.rpc_dir}/inventory-{k}.rpc",
                          "inv_http": free_port(),
                          "ord_rpc": f"ipc://{s.rpc_dir}/order-{k}.rpc",
                          "ord_http": free_port(), "front": free_port()})
        self.replica_ports = ports
        inv_urls = ",".join(p["inv_rpc"] for p in ports)
        ord_urls = ",".join(p["ord_rpc"] for p in ports)
        for k, p in enumerate(ports):
            def own(svc, k=k):
                user = f"webshop-{svc}-{k}"
                return {"--replica": str(k), "--username": user,
                        "--password-file": s.password_files[user]}
            # Debug for the backends: their relays' outbox_publish lines.
            inv = {**own("inventory"), "--rpc-url": p["inv_rpc"],
                   "--http-port": str(p["inv_http"]), "--log-level": "debug"}
            if self.orphan_release:
                inv["--orders-url"] = ord_urls
            s.argv[f"inventory-{k}"] = with_flags(s.argv["inventory"], inv)
            s.argv[f"order-{k}"] = with_flags(s.argv["order"], {
                **own("order"), "--rpc-url": p["ord_rpc"], "--http-port": str(p["ord_http"]),
                "--inventory-url": inv_urls, "--log-level": "debug"})
            s.argv[f"front-{k}"] = with_flags(s.argv["front"], {
                **own("front"), "--http-port": str(p["front"]), "--inventory-url": inv_urls,
                "--orders-url": ord_urls})
        self.haproxy_port = free_port()
        cfg = os.path.join(s.tmp, "haproxy.cfg")
        subprocess.run(["bash", WEBSHOP, "__haproxy_config", cfg, str(self.haproxy_port),
                        *[f"front-{k}={p['front']}" for k, p in enumerate(ports)]],
                       check=True, capture_output=True, timeout=60)
        s.argv["haproxy"] = [HAPROXY, "-db", "-f", cfg]

    def start_replicas(self):
        s = self.shop
        self.replica_argv()
        for k, p in enumerate(self.replica_ports):
            log(f"replica {k}: inventory={p['inv_rpc']},{p['inv_http']}"
                f" order={p['ord_rpc']},{p['ord_http']} front={p['front']}")
        log(f"broker={s.broker_port} haproxy={self.haproxy_port} (the clients' port)")
        s.start("broker")
        for n in self.procs:
            if n not in ("broker", PG_PROC):
                s.start(n, wait=False)
        self.http_port = self.haproxy_port
        self.wait_replicas_ready()

    def wait_replicas_ready(self, timeout=60):
        """Every replica answers /readyz on its own port, HAProxy on its."""
        def ready():
            for n, p in self.shop.procs.items():
                if not p.alive():
                    raise AssertionError(f"{n} exited with {p.p.returncode}:\n{p.log()[-3000:]}")
            return all(http_ok(p["inv_http"], "/readyz") and http_ok(p["ord_http"], "/readyz")
                       and http_ok(p["front"], "/readyz") for p in self.replica_ports) \
                and http_ok(self.haproxy_port, "/readyz")
        wait_until(ready, timeout, "every replica and HAProxy to answer /readyz")

    def stop_shop(self):
        """SIGTERM every process, HAProxy and the fronts first, the broker last;
        {name: exit code}."""
        if self.replicas == 1:
            return self.shop.stop_all()
        codes = {}
        procs = self.shop.procs
        for tier in (("haproxy",), ("front",), ("order",), ("inventory",), ("broker",)):
            names = [n for n in procs if n.split("-")[0] in tier]
            stoppers = []
            for n in names:
                def stop(n=n):
                    try:
                        codes[n] = procs[n].stop()
                    except AssertionError as e:
                        codes[n] = str(e)
                t = threading.Thread(target=stop)
                t.start()
                stoppers.append(t)
            for t in stoppers:
                t.join()
        return codes

    def kill(self, name):
        if name == PG_PROC:
            self.cluster.kill()
        else:
            self.shop.kill(name)

    def restart(self, name):
        shop = self.shop
        if name == PG_PROC:
            self.cluster.start()
            return
        shop.start(name, wait=False)
        if name == "broker":
            wait_until(lambda: port_open(shop.broker_port), 20, "the broker to listen")
        elif name == "haproxy":
            wait_until(lambda: port_open(self.haproxy_port), 20, "HAProxy to listen")

    def chaos(self):
        """Kill and restart processes at moments drawn from the seed."""
        t = time.monotonic()
        while True:
            t += self.rng.expovariate(1.0 / self.args.kill_every)
            name = self.rng.choice(self.procs)
            down_for = self.rng.uniform(0.0, self.args.max_down)
            if t + down_for >= self.load_end:
                break
            while time.monotonic() < t:
                self.watch()
                time.sleep(min(0.05, max(0.0, t - time.monotonic())))
            with self.mu:
                self.down.add(name)
            self.kill(name)
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
        for name in self.procs:
            with self.mu:
                if name in self.down:
                    continue
                pg_down = PG_PROC in self.down
            if name == PG_PROC:
                if not self.cluster.alive():
                    self.crashes[name] += 1
                    log(f"postgres exited by itself with {self.cluster.proc.returncode};"
                        f" restarting\n{self.cluster.log_tail(1500)}")
                    self.restart(name)
                continue
            p = self.shop.procs.get(name)
            if p is not None and not p.alive() and pg_down:
                # A backend that exits while PostgreSQL is down would only
                # exit again: count it and start it once PostgreSQL is back.
                continue
            if p is not None and not p.alive():
                self.crashes[name] += 1
                log(f"{name} exited by itself with {p.p.returncode}; restarting")
                self.restart(name)

    # -- reading state -----------------------------------------------------

    def q(self, service, sql):
        """Rows of sql on a backend's database (lib/db through webshop-dbq,
        either engine): lists of text or None."""
        return self.shop.query(service, sql)

    def ids(self, service, sql):
        return {r[0] for r in self.q(service, sql)}

    BUSY_NAMES = ("pending", "unconfirmed_cancels", "outbox_order", "outbox_inventory",
                  "lines_due", "outcome_checks_due", "orphans")

    def busy(self):
        """What the shop still has to do, as a tuple (all zero when quiet)."""
        # Read the inventory first: an order becomes SUCCESSFUL after its
        # reservation, never before, so a reservation held for an order not
        # (yet) SUCCESSFUL is counted at most once too often, never missed.
        held = self.ids("inventory", "SELECT order_id FROM reservations"
                                     " WHERE status = 'reserved'")
        known = self.ids("inventory", "SELECT DISTINCT order_id FROM reservation_items")
        ob_i = int(self.q("inventory", "SELECT count(*) FROM outbox")[0][0])
        # Pending orders, cancels the inventory has not confirmed yet, the
        # order outbox, and outcomes that conflicted (or came before the
        # items), still to be checked against the inventory's record.
        pending, unconfirmed, ob_o, checks = (int(x) for x in self.q("order", (
            "SELECT (SELECT count(*) FROM orders WHERE status = 1),"
            " (SELECT count(*) FROM orders WHERE status = 4"
            "  AND CAST(cancel_confirmed AS INTEGER) = 0 AND next_resend_ms IS NOT NULL),"
            " (SELECT count(*) FROM outbox),"
            " (SELECT count(*) FROM orders WHERE check_due_ms IS NOT NULL)"))[0])
        # Orders without lines that the inventory can still supply (the
        # order service's items recovery has not run yet).
        due = self.ids("order", "SELECT id FROM orders WHERE items_due_ms IS NOT NULL")
        ok = self.ids("order", "SELECT id FROM orders WHERE status = 2")
        return (pending, unconfirmed, ob_o, ob_i, len(due & known), checks, len(held - ok))

    def settle(self, clients):
        """Poll, bounded by --settle, until the clients are done and the shop
        has nothing left to do (see busy) for 2 s in a row."""
        deadline = time.monotonic() + self.args.settle
        quiet_since = None
        last = None
        while time.monotonic() < deadline:
            self.watch()
            clients_busy = sum(1 for c in clients if c.is_alive())
            try:
                b = self.busy()
            except (AssertionError, OSError, subprocess.TimeoutExpired, ValueError) as e:
                b = ("db", str(e))
            # Without orphan release in the inventory, orphans never clear:
            # do not wait for them (check no_orphan_reservations reports them).
            quiet = not any(b if self.orphan_release else b[:-1])
            if not clients_busy and quiet:
                if quiet_since is None:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > 2.0:
                    return True
            else:
                quiet_since = None
            if (b, clients_busy) != last:
                if len(b) == len(self.BUSY_NAMES):
                    log("settling: " + " ".join(f"{k}={n}" for k, n in zip(self.BUSY_NAMES, b))
                        + f" clients_busy={clients_busy}")
                else:
                    log(f"settling: {b}")
                last = (b, clients_busy)
            time.sleep(0.5)
        return False

    def read_orphan_metric(self):
        """webshop_inventory_orphans_released_total of the last inventory
        process (a counter since its start; summed over the replicas), or None."""
        total = None
        ports = [p["inv_http"] for p in self.replica_ports] or [self.shop.inv_http]
        for port in ports:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/metrics")
                text = conn.getresponse().read().decode("utf-8", "replace")
                conn.close()
            except (OSError, http.client.HTTPException):
                return None
            for line in text.splitlines():
                if line.startswith("webshop_inventory_orphans_released_total"):
                    try:
                        total = (total or 0) + int(float(line.split()[-1]))
                    except ValueError:
                        return None
        return total

    def check_publishes(self, v, info):
        """Per outbox row id, every publish the relays logged (outbox_publish
        id= lease_until_ms=): a row published by a second replica while the
        first one's lease still ran was published twice at once. A replica
        re-publishing its own row, or another one's after its lease ran out
        (the first replica died or was cut off), is the at-least-once the
        consumers absorb."""
        pubs = {}
        lines = 0
        for name, p in self.shop.procs.items():
            svc, _, k = name.partition("-")
            if svc not in ("inventory", "order"):
                continue
            for line in p.log().splitlines():
                m = PUBLISH_RE.match(line)
                if m:
                    lines += 1
                    pubs.setdefault((svc, int(m.group(3))), []).append(
                        (log_ms(m.group(1), m.group(2)), k or "0", int(m.group(4))))
        info["publish_lines"] = lines
        info["rows_published"] = len(pubs)
        info["rows_by_2_replicas"] = 0
        info["rows_published_twice"] = 0
        for (svc, rid), evs in pubs.items():
            evs.sort()
            info["rows_published_twice"] += len(evs) > 1
            info["rows_by_2_replicas"] += len({e[1] for e in evs}) > 1
            for (ta, ka, la), (tb, kb, _) in zip(evs, evs[1:]):
                if ka != kb and tb < la:
                    v["outbox_published_once"].append(
                        f"{svc} outbox row {rid}: replica {ka} published it at {ta} (lease"
                        f" until {la}), replica {kb} at {tb}")

    def read_final(self):
        """Both databases, as the checks need them (columns named as in the
        schemas of both engines; integers and flags read as int)."""
        orders = {}
        for oid, status, attempts, tomb in self.q("order", (
                "SELECT id, status, attempts, CAST(tombstone AS INTEGER) FROM orders")):
            orders[oid] = {"id": oid, "status": int(status), "attempts": int(attempts),
                           "tombstone": int(tomb)}
        oitems = {}
        for oid, pid, cnt in self.q("order", "SELECT order_id, inventory_id, count"
                                             " FROM order_items ORDER BY order_id, line"):
            oitems.setdefault(oid, []).append((int(pid), int(cnt)))
        products = {int(pid): {"id": int(pid), "balance": int(bal), "stock_added": int(add)}
                    for pid, bal, add in self.q("inventory", "SELECT id, balance, stock_added"
                                                             " FROM products")}
        res = {oid: {"order_id": oid, "status": st}
               for oid, st in self.q("inventory", "SELECT order_id, status FROM reservations")}
        ritems = {}
        for oid, pid, cnt in self.q("inventory", "SELECT order_id, product_id, count FROM"
                                                 " reservation_items ORDER BY order_id, idx"):
            ritems.setdefault(oid, []).append((int(pid), int(cnt)))
        outbox = (int(self.q("order", "SELECT count(*) FROM outbox")[0][0]),
                  int(self.q("inventory", "SELECT count(*) FROM outbox")[0][0]))
        return orders, oitems, products, res, ritems, outbox

    # -- checks ------------------------------------------------------------

    CHECKS = ("accepted_final", "accepted_201_durable", "cancel_applied", "no_pending",
              "stock_balance", "agree", "no_orphan_reservations", "items_match",
              "reserved_once", "http_answers", "outbox_empty", "crashes")

    def check_client_orders(self, v, info, orders, oitems, res, ritems):
        """The checks about what the clients were told."""
        resend = not self.args.no_client_resend
        all_client = [o for c in self.clients for o in c.orders]
        by_id = {}
        for o in all_client:
            if len(o.ids) > 1:
                v["reserved_once"].append(f"key {o.key} got order ids {sorted(o.ids)}")
            for oid in o.ids:
                if oid in by_id and by_id[oid] is not o:
                    v["reserved_once"].append(f"order {oid} answered for two keys")
                by_id[oid] = o
        needed = set()
        for o in all_client:
            if not o.accepted:
                continue
            row = orders.get(o.id)
            status = ST_NAMES.get(row["status"]) if row else None
            if status not in FINAL and (o.got_201 or resend):
                v["accepted_final"].append(f"order {o.id} ({201 if o.got_201 else 202}):"
                                           f" {status or 'unknown'} at the order service")
            elif status not in FINAL:
                info["lost_202"] += 1
            if o.got_201 and status not in FINAL:
                needed.add(o.id)
                v["accepted_201_durable"].append(f"order {o.id} (201, never re-POSTed):"
                                                 f" {status or 'unknown'} at the end")
            if o.got_201 and o.get_404_after_201:
                needed.add(o.id)
                v["accepted_201_durable"].append(f"order {o.id}: {o.get_404_after_201}"
                                                 f" GETs answered 404 after its 201")
            if o.cancel_200 and (status != "CANCELED" or o.after_cancel_200):
                v["cancel_applied"].append(f"order {o.id}: cancel got 200, status {status}"
                                           f" (seen after the 200: {o.after_cancel_200})")
            elif o.cancel_202 and status != "CANCELED":
                if resend:
                    v["cancel_applied"].append(f"order {o.id}: cancel got 202, status {status}")
                else:
                    info["lost_cancel_202"] += 1
            self.check_items(v, info, o, row, oitems, res, ritems)
        info["needed_repost"] = len(needed)
        info["never_accepted"] = sum(1 for o in all_client if not o.accepted)

    def check_items(self, v, info, o, row, oitems, res, ritems):
        want = sorted((it["inventoryId"], it["count"]) for it in o.items)
        if row is not None and not oitems.get(o.id):
            # OrderSent lost at the order service: recovery fills the lines
            # from the inventory's reservation. Only an order that neither
            # service ever saw (canceled first) has none anywhere.
            if ritems.get(o.id):
                v["items_match"].append(f"order {o.id}: no lines, though the inventory"
                                        f" has {ritems.get(o.id)}")
            else:
                info["no_lines"] += 1
        elif row is not None and sorted(oitems.get(o.id, [])) != want:
            v["items_match"].append(f"order {o.id}: order items {oitems.get(o.id)}"
                                    f" != client items {want}")
        r = res.get(o.id)
        if r is not None and r["status"] in ("reserved", "released") and \
                sorted(ritems.get(o.id, [])) != want:
            v["items_match"].append(f"order {o.id}: reservation items"
                                    f" {ritems.get(o.id)} != client items {want}")

    def check_stores(self, v, orders, res, ritems, products):
        """The checks that read only the two databases; returns units held."""
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
        held = {}
        for oid, r in res.items():
            if r["status"] != "reserved":
                continue
            units = ritems.get(oid, [])
            for pid, cnt in units:
                held[pid] = held.get(pid, 0) + cnt
            row = orders.get(oid)
            status = ST_NAMES.get(row["status"]) if row else None
            if row is None:
                v["agree"].append(f"reservation {oid} reserved, order unknown")
            if status != "SUCCESSFUL":
                v["no_orphan_reservations"].append(
                    f"reservation {oid} holds {sum(c for _, c in units)} units, order"
                    f" {status or 'unknown'} at the order service")
        for pid, p in products.items():
            h = held.get(pid, 0)
            if p["balance"] + h != p["stock_added"] or p["stock_added"] != self.stock.get(pid):
                v["stock_balance"].append(f"product {pid}: balance {p['balance']} + held {h}"
                                          f" != stock added {p['stock_added']}"
                                          f" (seeded {self.stock.get(pid)})")
        return held

    def check(self):
        orders, oitems, products, res, ritems, outbox = self.read_final()
        v = {k: [] for k in self.CHECKS}
        info = {"lost_202": 0, "lost_cancel_202": 0, "no_lines": 0}
        self.check_client_orders(v, info, orders, oitems, res, ritems)
        if self.replicas > 1:
            v["outbox_published_once"] = []
            self.check_publishes(v, info)
        held = self.check_stores(v, orders, res, ritems, products)
        for c in self.clients:
            v["http_answers"].extend(c.unexpected)
        if outbox != (0, 0):
            v["outbox_empty"].append(f"outbox rows left: order {outbox[0]},"
                                     f" inventory {outbox[1]}")
        for name, n in self.crashes.items():
            if n:
                v["crashes"].append(f"{name} exited {n} times without being killed")
        info.update({
            "orders_in_db": len(orders),
            "tombstones": sum(1 for r in orders.values() if r.get("tombstone")),
            "reservations": len(res),
            "status": {s: sum(1 for r in orders.values() if ST_NAMES.get(r["status"]) == s)
                       for s in ("PENDING",) + FINAL},
            "held": held,
        })
        return v, info

    # -- the whole run -------------------------------------------------------

    def main(self):
        a = self.args
        tmp = tempfile.mkdtemp(prefix="webshop-chaos-")
        ok = False
        try:
            log(f"seed {a.seed}, {a.seconds} s of load, {a.threads} clients, store {a.store},"
                f" replicas {a.replicas},"
                f" client re-sends {'off' if a.no_client_resend else 'on'}, dir {tmp}")
            self.start_shop(tmp)
            t0 = self.t0 = time.monotonic()
            self.load_end = t0 + a.seconds
            self.drain_end = self.load_end + a.settle
            self.clients = clients = [Client(i, self) for i in range(a.threads)]
            for c in clients:
                c.start()
            self.chaos()
            log("load over; every process up; waiting for quiescence")
            quiet = self.settle(clients)
            for c in clients:
                c.join(timeout=max(1.0, self.drain_end - time.monotonic() + 10))
            self.orphans_released = self.read_orphan_metric()
            codes = self.stop_shop()
            v, info = self.check()
            if not quiet:
                v.setdefault("quiescence", []).append(
                    f"not quiet after {a.settle} s")
            if self.errors:
                v.setdefault("client_errors", []).extend(self.errors)
            bad_exit = {n: c for n, c in codes.items()
                        if n not in ("broker", "haproxy") and c not in (0, None)}
            if bad_exit:
                v.setdefault("clean_sigterm", []).append(f"exit codes at SIGTERM: {bad_exit}")
            try:
                self.shop.check_logs()
            except AssertionError as e:
                v.setdefault("sanitizer", []).append(str(e)[:500])
            ok = self.report(v, info, time.monotonic() - t0)
            return 0 if ok else 1
        finally:
            if self.shop is not None:
                try:
                    self.stop_shop()
                except AssertionError:
                    pass
            keep = a.keep or not ok
            if self.cluster is not None:
                self.cluster.destroy(keep=keep)
                if keep:
                    log(f"postgres cluster kept in {self.cluster.dir} (stopped)")
            if not keep:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                log(f"state and logs kept in {tmp}")

    def report(self, v, info, elapsed):
        tot = {}
        for c in self.clients:
            for k, n in c.stats.items():
                tot[k] = tot.get(k, 0) + n

        def n(*keys):
            return " / ".join(str(tot.get(k, 0)) for k in keys)

        def other(prefix, *keys):
            """Answers counted under prefix_* that keys do not list."""
            return sum(c for k, c in tot.items() if k.startswith(prefix) and k not in keys)
        post_keys = ("post_201", "post_202", "post_503", "post_504", "post_conn")
        delete_keys = ("delete_200", "delete_202", "delete_404", "delete_503", "delete_504",
                       "delete_conn")
        a = self.args
        orphan = (f"on, after {a.orphan_after_ms} ms" if self.orphan_release
                  else "off (inventory lacks the flags)")
        rows = [
            ("seed", self.seed),
            ("storage", self.shop.engine),
            ("TLS", "RPC (mutual) and bus"
             if a.tls else "off"),
            ("replicas", self.replicas if self.replicas == 1 else
             f"{self.replicas} of each, behind HAProxy"),
            ("load seconds / total seconds", f"{a.seconds} / {elapsed:.0f}"),
            ("client re-sends", "off" if a.no_client_resend else "on"),
            ("HTTP requests", tot.get("requests", 0)),
            ("POST answers 201 / 202 / 503 / 504 / conn / other",
             n(*post_keys) + f" / {other('post_', *post_keys)}"),
            ("orders answered 201", tot.get("orders_201", 0)),
            ("orders answered 202 (queued)", tot.get("orders_202", 0)),
            ("  202 orders that got a 201 later", tot.get("orders_202_then_201", 0)),
            ("  202 orders lost (re-sends off)", info["lost_202"]),
            ("re-POSTs after 202 / 503 / 504 / conn",
             n("repost_202", "repost_503", "repost_504", "repost_conn")),
            ("201s that needed a re-POST", info["needed_repost"]),
            ("GETs answering 404 after a 201", tot.get("get_404_after_201", 0)),
            ("orders never accepted", info["never_accepted"]),
            ("DELETE answers 200 / 202 / 404 / 503 / 504 / conn / other",
             n(*delete_keys) + f" / {other('delete_', *delete_keys)}"),
            ("cancels answered 200 / 202", n("cancels_200", "cancels_202")),
            ("  202 cancels not applied (re-sends off)", info["lost_cancel_202"]),
            ("re-DELETEs after 202 / 404 / 503 / 504 / conn",
             n("redelete_202", "redelete_404", "redelete_503", "redelete_504",
               "redelete_conn")),
            ("orders in order db (of which cancel-only tombstones)",
             f"{info['orders_in_db']} ({info['tombstones']})"),
            ("  SUCCESSFUL / UNSUCCESSFUL / CANCELED / PENDING",
             " / ".join(str(info["status"][s]) for s in FINAL + ("PENDING",))),
            ("reservations in inventory db", info["reservations"]),
            ("units held at the end", sum(info["held"].values())),
            ("orphan release", orphan),
            ("orphans released (last inventory process)",
             "?" if self.orphans_released is None else self.orphans_released),
            ("orders without lines anywhere (canceled unseen)", info["no_lines"]),
        ]
        if self.replicas > 1:
            rows.append(("outbox publishes logged / rows",
                         f"{info['publish_lines']} / {info['rows_published']}"
                         if info["publish_lines"] else
                         "n/a: no outbox_publish lines in the relays' logs"))
            rows.append(("  rows published twice / by two replicas",
                         f"{info['rows_published_twice']} / {info['rows_by_2_replicas']}"))
        for p in self.procs:
            rows.append((f"kills: {p}", self.kills[p]))
        rows.append(("kills: total", sum(self.kills.values())))
        nviol = 0
        for k, items in v.items():
            rows.append((f"check {k}", "ok" if not items else f"{len(items)} VIOLATIONS"))
            nviol += len(items)
        rows.append(("violations", nviol))
        w = max(len(r[0]) for r in rows)
        vw = max(24, max(len(str(r[1])) for r in rows))
        print("+-" + "-" * w + "-+-" + "-" * vw + "-+")
        for k, val in rows:
            print(f"| {k:<{w}} | {str(val):>{vw}} |")
        print("+-" + "-" * w + "-+-" + "-" * vw + "-+")
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
                    help="a client re-POSTs a 202 order that stays 404 (re-DELETEs a"
                         " cancel that did not take) after this many seconds")
    ap.add_argument("--no-client-resend", action="store_true",
                    help="clients send every POST and DELETE once: no retry on"
                         " 503/504/connection errors, no re-POST, no re-DELETE")
    ap.add_argument("--orphan-after-ms", type=int, default=10000,
                    help="the inventory's --orphan-after-ms: a reservation whose order the"
                         " order service has not recorded is released after this long"
                         " (longer than an order can stay in flight: --max-down plus a"
                         " restart, several times over)")
    ap.add_argument("--max-requests", type=int, default=0,
                    help="bound on HTTP requests (default 400 per second of load)")
    ap.add_argument("--store", choices=("sqlite", "postgres"), default=None,
                    help="the backends' databases: SQLite files (the default), or a"
                         " PostgreSQL cluster the run starts for itself (and kills too)")
    ap.add_argument("--replicas", type=int, default=1,
                    help="N of each service (1..8) on one PostgreSQL, the fronts behind"
                         " HAProxy, which the clients use; every replica, HAProxy, the"
                         " broker and PostgreSQL are killed. Implies --store postgres")
    ap.add_argument("--tls", action="store_true",
                    help="RPC over mutual TLS (one listener per caller identity) and the"
                         " bus over TLS with client certificates (tools/shop_ca), kept"
                         " across every restart; single shop only")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    a = ap.parse_args()
    if a.seconds < 1:
        ap.error("--seconds must be at least 1")
    if not 1 <= a.replicas <= 8:
        ap.error("--replicas: 1..8")
    if a.replicas > 1 and a.store == "sqlite":
        ap.error(f"--replicas {a.replicas} needs --store postgres (the replicas of a service"
                 " share its database; an SQLite file serves one process)")
    if a.tls and a.replicas > 1:
        ap.error(f"--tls with --replicas {a.replicas}: tests/e2e/shop.py cannot run RPC"
                 " over TLS with replicas yet (rpc_tls refuses them); use one or the other")
    a.store = a.store or ("postgres" if a.replicas > 1 else "sqlite")
    if a.orphan_after_ms < 1:
        ap.error("--orphan-after-ms must be at least 1")
    return Run(a).main()


if __name__ == "__main__":
    sys.exit(main())
