"""Start a whole shop for end-to-end tests: a real mosquitto on a reserved
loopback port, the real inventory, order and front processes, their
databases (see Storage); talk HTTP to it with a real client (http.client).

Storage. By default each backend gets an SQLite file in the shop's temp
dir (--db-path). When WS_TEST_PG_URL names a PostgreSQL cluster (the test
runs under tests/support/with_pg, which exports it), or a Shop is given
pg_url=, each shop gets two fresh databases on that cluster, one per
backend, with unique names, and the backends are started with --db-url.
Tests read the databases through Shop.query (tools/webshop-dbq: lib/db,
the services' own seam), never with python's sqlite3, so one test reads
either engine.

Ports. A Shop's processes are killed and restarted by tests (and by
tools/chaos.py) and must come back where the others dial them, so each
address is a reserved port (reserve_port: unique in this process, outside
the kernel's ephemeral range, locked against every other test process on the
machine, free by bind when handed out). A start is confirmed by the
process's own log line -- `event=rpc_listening url=...` and
`event=http_listening url=...` from the services, "running" from mosquitto
-- not by a port that answers, which could be someone else. A process whose
address nobody needs in advance listens on port 0 and the test reads the
port from that line (listening_url).

Standard library only, run with Debian's /usr/bin/python3. Every wait polls a
condition with a deadline; nothing sleeps to let something happen.
"""

import atexit
import ctypes
import fcntl
import http.client
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request

MOSQUITTO = os.environ.get("WS_MOSQUITTO", "/usr/sbin/mosquitto")
# The broker's users, passwords, ACL and client id binding come from
# tools/webshop __broker_auth, as for tools/webshop up: webshop-front,
# webshop-inventory, webshop-order, their replicas webshop-<service>-K
# (K 0..7) and webshop-admin.
WEBSHOP_TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                            "webshop")
HAPROXY = os.environ.get("WS_HAPROXY", "/usr/sbin/haproxy")

# WEBSHOP_WRAPPER prefixes every service's argv (not the broker's), e.g.
# "valgrind --tool=memcheck ..."; WEBSHOP_TIME_SCALE multiplies every wait
# for programs that run that much slower under it.
WRAPPER = shlex.split(os.environ.get("WEBSHOP_WRAPPER", ""))
TIME_SCALE = float(os.environ.get("WEBSHOP_TIME_SCALE", "1") or "1")

# PostgreSQL's programs (pg_ctl, postgres) for tests that stop and start
# the cluster; tests/support/pg_cluster.c reads the same variable.
PG_BINDIR = os.environ.get("WS_PG_BINDIR") or "/usr/lib/postgresql/15/bin"

# Sanitizer reports in a service's log make the test fail.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
# ... and so does a memcheck summary with errors (under WEBSHOP_WRAPPER=valgrind).
VALGRIND_ERRORS = re.compile(r"ERROR SUMMARY: [1-9]")


def _die_with_parent():
    """In the child: get SIGKILL when the test process dies, so a crashed or
    killed test leaves no service behind. Linux sends it when the *thread*
    that started the child exits: start processes from the main thread (or one
    that outlives the shop)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


# -- ports -------------------------------------------------------------------

# The lock protocol shared with tests/support/harness.c and tools/webshop: a
# port is taken while its holder keeps an flock on PORT_DIR/PORT.lock; the
# holder removes the file (still locked) when it lets go; a lock dies with
# its process. Ports come from [PORT_FLOOR, 65535] minus the ephemeral range.
PORT_DIR = os.environ.get("WEBSHOP_PORT_DIR") or "/tmp/webshop-ports"
PORT_FLOOR = 20000


def ephemeral_range():
    """The kernel's ephemeral port range (lo, hi): outgoing connections get
    their local port from it, so a reserved port never lies in it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


class _PortReserver:
    def __init__(self):
        self.mu = threading.Lock()
        self.held = {}     # port -> fd holding its lock
        self.given = set()  # every port handed out by this process
        self.pool = None
        self.cursor = 0
        self.pid = None

    def _init(self):
        lo, hi = ephemeral_range()
        self.pool = [p for p in range(PORT_FLOOR, 65536) if not lo <= p <= hi]
        self.cursor = int.from_bytes(os.urandom(4), "little") % len(self.pool)
        self.pid = os.getpid()
        os.makedirs(PORT_DIR, exist_ok=True)
        try:
            os.chmod(PORT_DIR, 0o1777)  # other users' runs share it
        except OSError:
            pass

    @staticmethod
    def _lock(port):
        """The fd holding PORT_DIR/port.lock, or None when another holds it
        (or removed the file meanwhile: then the lock is on a stale file)."""
        path = os.path.join(PORT_DIR, f"{port}.lock")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held, named = os.fstat(fd), os.stat(path)
            if (held.st_ino, held.st_dev) == (named.st_ino, named.st_dev):
                return fd
        except OSError:
            pass
        os.close(fd)
        return None

    @staticmethod
    def _drop(port, fd):
        try:
            os.unlink(os.path.join(PORT_DIR, f"{port}.lock"))
        except OSError:
            pass
        os.close(fd)

    @staticmethod
    def _bindable(port):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False

    def reserve(self):
        with self.mu:
            if self.pool is None:
                self._init()
            elif self.pid != os.getpid():
                self.held, self.pid = {}, os.getpid()  # a fork: those locks are the parent's
            for _ in range(len(self.pool)):
                p = self.pool[self.cursor]
                self.cursor = (self.cursor + 1) % len(self.pool)
                if p in self.given:
                    continue
                fd = self._lock(p)
                if fd is None:
                    continue
                if not self._bindable(p):
                    self._drop(p, fd)
                    continue
                self.given.add(p)
                self.held[p] = fd
                return p
        raise AssertionError(f"no port left to reserve outside the ephemeral range "
                             f"(lock dir {PORT_DIR})")

    def release_all(self):
        with self.mu:
            if self.pid == os.getpid():
                for p, fd in self.held.items():
                    self._drop(p, fd)
                self.held.clear()


_ports = _PortReserver()
atexit.register(_ports.release_all)


def reserve_port():
    """A loopback port reserved for this process until it exits: never the
    same twice, outside the ephemeral range, locked against other test
    processes, free to bind now. For a server told its port in advance; one
    whose port nobody needs beforehand should listen on port 0 instead."""
    return _ports.reserve()


def free_port():
    """Kept for older callers: the same as reserve_port()."""
    return reserve_port()


_LISTENING = re.compile(r" event=(http_listening|rpc_listening) (?:.* )?url=(\S+)")


def listening_urls(text):
    """{event: [url, ...]} of the listening lines in a service's log text."""
    found = {}
    for m in _LISTENING.finditer(text):
        found.setdefault(m.group(1), []).append(m.group(2))
    return found


def listening_url(proc, event, timeout=10.0):
    """The URL of the first `event` line (http_listening or rpc_listening)
    the process logged since its last start, polled with a deadline; fails at
    once if it exits first. Services log it at info level: do not start
    them with --log-level warn or error when you need it."""
    def seen():
        urls = listening_urls(proc.log_since_start()).get(event)
        if urls:
            return urls[0]
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited with {proc.p.returncode} before "
                                 f"logging {event}:\n{proc.log()[-3000:]}")
        return None
    return wait_until(seen, timeout, f"{proc.name} to log {event}")


def url_port(url):
    """The port of "tcp://127.0.0.1:PORT" or "http://127.0.0.1:PORT"."""
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def rpc_url_logged(url, logged):
    """Whether an rpc_listening URL in logged is url: the same ipc:// URL,
    or for tcp:// the same port (a port 0 URL logs the one bound)."""
    if not url.startswith(("tcp://", "tcp4://", "tcp6://")):
        return url in logged
    return any(u.startswith(("tcp://", "tcp4://", "tcp6://")) and url_port(u) == url_port(url)
               for u in logged)


def rpc_url_open(url):
    """Whether something listens at an RPC URL: a tcp port that accepts, an
    ipc socket a process listens on; None is open."""
    if url is None:
        return True
    if url.startswith("ipc://"):
        return ipc_listening(url[len("ipc://"):])
    return port_open(url_port(url))


def ipc_listening(path):
    """Whether a process listens on the Unix socket path (/proc/net/unix).
    Never by connecting: a peer that closes before the SP handshake stops
    nng 1.5's ipc listener from accepting anyone (nng issue #1518)."""
    with open("/proc/net/unix") as f:
        for line in f.readlines()[1:]:
            cols = line.split(None, 7)
            if len(cols) == 8 and int(cols[3], 16) & 0x10000 and cols[7].rstrip("\n") == path:
                return True
    return False


def wait_until(cond, timeout=10.0, what="condition", interval=0.02):
    """Poll cond() until it returns a truthy value; return that value."""
    timeout *= TIME_SCALE
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def http_ok(port, path):
    """True when GET path on 127.0.0.1:port answers 200."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            r.read()
            return r.status == 200
        finally:
            conn.close()
    except OSError:
        return False


def pid_alive(pid):
    """True while pid runs; a zombie (an orphan pid 1 has not reaped yet)
    counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Proc:
    """One child process with its output in a log file."""

    def __init__(self, name, argv, logdir, env=None):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(logdir, name + ".log")
        self.env = env
        self.p = None
        self.log_offset = 0  # size of the log when the last start began

    def start(self):
        try:
            self.log_offset = os.path.getsize(self.log_path)
        except OSError:
            self.log_offset = 0
        log = open(self.log_path, "ab")
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.p = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=env,
                                  preexec_fn=_die_with_parent)
        log.close()
        return self

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def kill(self):
        if self.alive():
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(timeout=10)

    def stop(self, timeout=15.0):
        """SIGTERM and wait; return the exit code (None if never started)."""
        if self.p is None:
            return None
        timeout *= TIME_SCALE
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=10)
                raise AssertionError(f"{self.name} did not exit within {timeout}s of SIGTERM")
        return self.p.returncode

    def log(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def log_since_start(self):
        """What the process logged since its last start (the log is appended
        to across restarts)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""


# -- storage -------------------------------------------------------------

def dbq_path(build_dir):
    """tools/webshop-dbq of the build: one SQL statement through lib/db."""
    return os.path.join(build_dir, "tools", "webshop-dbq")


def db_query(build_dir, url, sql, timeout=30):
    """Run one statement on the database at url (any form lib/db opens) with
    webshop-dbq; the rows as lists of text or None. Fails with the tool's
    message when the database cannot be opened or the statement fails."""
    r = subprocess.run([dbq_path(build_dir), url, sql], capture_output=True, text=True,
                       timeout=timeout * TIME_SCALE)
    if r.returncode != 0:
        raise AssertionError(f"webshop-dbq failed ({r.returncode}): {r.stderr.strip()}")
    return [json.loads(line) for line in r.stdout.splitlines() if line]


def pg_database_url(cluster_url, name):
    """The URL of database name on the cluster of cluster_url (a libpq
    keyword string, where a later dbname= wins, or a postgresql:// URI)."""
    if cluster_url.startswith(("postgresql://", "postgres://")):
        head, sep, query = cluster_url.partition("?")
        scheme, rest = head.split("://", 1)
        host = rest.split("/", 1)[0]
        return f"{scheme}://{host}/{name}" + (sep + query if sep else "")
    return f"{cluster_url} dbname={name}"


_db_seq = 0


def pg_fresh_database(build_dir, cluster_url, label):
    """CREATE DATABASE with a name unique on the cluster (pid, a counter and
    random bits); returns its URL."""
    global _db_seq
    _db_seq += 1
    name = f"shop_{os.getpid()}_{_db_seq}_{os.urandom(3).hex()}_{label}"
    db_query(build_dir, cluster_url, f"CREATE DATABASE {name} TEMPLATE template0")
    return pg_database_url(cluster_url, name)


class PgCluster:
    """A PostgreSQL cluster in a dir of its own, laid out as
    tests/support/pg_cluster.c makes it: DIR/data, the Unix socket in DIR, no
    TCP listener, trust auth, superuser "webshop", URL "host=DIR
    dbname=postgres user=webshop". initdb and postgres refuse root, so when
    we are root both run as the data dir's owner ("postgres"). create()
    makes a new one (tools/chaos.py); adopt() takes the one with_pg started
    (WS_TEST_PG_DIR), to stop and start it under a running shop. A
    postmaster started here is our child, in its own session, with SIGQUIT
    as its parent-death signal (set after setuid, which clears it): it dies
    with the test. Start it from the thread that outlives it."""

    SETTINGS = ("listen_addresses=", "fsync=off", "full_page_writes=off",
                "shared_buffers=16MB", "max_connections=100")

    def __init__(self, pg_dir, owned=False):
        self.dir = pg_dir
        self.data = os.path.join(pg_dir, "data")
        self.url = f"host={pg_dir} dbname=postgres user=webshop"
        self.log_path = os.path.join(pg_dir, "postgres.log")
        self.owned = owned  # made here: destroy() removes the dir
        st = os.stat(pg_dir)
        self.uid, self.gid = st.st_uid, st.st_gid
        self.proc = None    # the postmaster, when we started it

    @classmethod
    def create(cls):
        """initdb a new cluster in a new temp dir (not started)."""
        d = tempfile.mkdtemp(prefix="webshop-pg-")
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(d, pw.pw_uid, pw.pw_gid)
        c = cls(d, owned=True)
        r = subprocess.run([os.path.join(PG_BINDIR, "initdb"), "--no-sync", "-D", c.data,
                            "-A", "trust", "-U", "webshop", "-E", "UTF8", "--locale=C"],
                           capture_output=True, text=True, preexec_fn=c._as_owner,
                           timeout=120)
        if r.returncode != 0:
            shutil.rmtree(d, ignore_errors=True)
            raise AssertionError(f"initdb failed ({r.returncode}): {r.stdout}{r.stderr}")
        return c

    @classmethod
    def adopt(cls, pg_dir=None):
        """The cluster with_pg runs (WS_TEST_PG_DIR)."""
        return cls(pg_dir or os.environ["WS_TEST_PG_DIR"])

    def _as_owner(self):
        """preexec_fn: become the cluster's owner when we are root."""
        if os.geteuid() == 0 and self.uid != 0:
            os.setgroups([])
            os.setgid(self.gid)
            os.setuid(self.uid)

    def _postmaster_child(self):
        os.setsid()  # a signal to the test's process group does not reach it
        self._as_owner()
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGQUIT)
        except OSError:
            pass

    def argv(self):
        """The settings of the postmaster's last start (postmaster.opts,
        which it writes itself), else ours."""
        try:
            with open(os.path.join(self.data, "postmaster.opts")) as f:
                return shlex.split(f.read())
        except OSError:
            pass
        argv = [os.path.join(PG_BINDIR, "postgres"), "-D", self.data,
                "-c", f"unix_socket_directories={self.dir}"]
        for kv in self.SETTINGS:
            argv += ["-c", kv]
        return argv

    def ready(self):
        """The 8th line of postmaster.pid says "ready" (what pg_ctl -w and
        pg_cluster.c wait for), and the file is our postmaster's (a killed
        one leaves its own behind, "ready" included)."""
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                lines = f.read().splitlines()
        except OSError:
            return False
        if self.proc is not None and (not lines or lines[0].strip() != str(self.proc.pid)):
            return False
        return len(lines) >= 8 and lines[7].startswith("ready")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=60):
        """Start the postmaster and wait until it takes connections. After a
        SIGKILL its old backends may still hold the shared memory for a
        moment ("pre-existing shared memory block is still in use"): a start
        that exits is tried again until the deadline."""
        def up():
            if self.proc is not None and self.proc.poll() is not None:
                self.proc = None  # exited at start: try again
            if self.proc is None:
                log = open(self.log_path, "ab")
                try:
                    self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                                 stdout=log, stderr=subprocess.STDOUT,
                                                 preexec_fn=self._postmaster_child)
                finally:
                    log.close()
            return self.ready() and self.alive()
        try:
            wait_until(up, timeout, "PostgreSQL to take connections", interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log_tail()}") from None

    def kill(self):
        """SIGKILL the postmaster we started (its backends notice and exit)."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)
        self.proc = None

    def pg_ctl(self, *args):
        r = subprocess.run([os.path.join(PG_BINDIR, "pg_ctl"), "-D", self.data, *args],
                           capture_output=True, text=True, preexec_fn=self._as_owner,
                           timeout=60 * TIME_SCALE)
        if r.returncode != 0:
            raise AssertionError(f"pg_ctl {' '.join(args)} failed ({r.returncode}):"
                                 f" {r.stdout}{r.stderr}")

    def stop_immediate(self):
        """`pg_ctl stop -m immediate` (whoever started it), waiting until the
        postmaster is gone: clients cut off, crash recovery at the next start."""
        self.pg_ctl("stop", "-m", "immediate", "-w", "-t", "60")
        if self.proc is not None:
            self.proc.wait(timeout=60)
            self.proc = None

    def stop(self):
        """Fast shutdown of the postmaster we started, if it runs."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60 * TIME_SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def destroy(self, keep=False):
        """Stop it; remove the dir of a cluster create() made (unless keep)."""
        self.stop()
        if self.owned and not keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n=3000):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""


class Shop:
    """A whole shop on loopback. Use as a context manager."""

    def __init__(self, build_dir, tmp=None, broker_conf_extra="", bus_format="protobuf",
                 order_args=(), inventory_args=(), front_args=(), env=None,
                 services=("broker", "inventory", "order", "front"), auth=True, tls_ca=None,
                 pg_url=None, replicas=None, replica_session="30s", rpc_tls=False,
                 broker_tls=False, rpc_transport="ipc"):
        """replicas=N (PostgreSQL only): N of each service as replicas
        (--replica K) on one database per backend, named "inventory-K",
        "order-K", "front-K", each on its own reserved ports; the fronts and
        the order replicas dial every replica of their backends, and
        "haproxy" balances the fronts (round robin, health check on
        /readyz): self.http_port is HAProxy's, self.front_ports the fronts'.
        replica_session is the backends' --replica-session-expiry.
        Without it, the single shop: one of each, the names above without
        -K. rpc_tls=True: RPC over mutual TLS only (see _rpc_tls_argv).
        broker_tls=True: the broker listens on TLS only and every client
        proves its broker user with a certificate (_broker_tls_conf).
        rpc_transport: "ipc" (the default, as the services' own defaults):
        the backends listen on sockets in TMP/run (0700), self.inv_rpc =
        "ipc://TMP/run/inventory.rpc"; "tcp": reserved loopback ports, every
        service with --rpc-plaintext (plain tcp:// is refused without it)."""
        self.build = build_dir
        self.tmp = tmp or tempfile.mkdtemp(prefix="webshop-e2e-")
        self.own_tmp = tmp is None
        self.logdir = os.path.join(self.tmp, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        # Reserved ports, so that a process killed or restarted by a test
        # comes back where the others dial it. Taken through the module's
        # free_port, which tools/chaos.py substitutes with its own picker.
        self.broker_port = free_port()
        self.rpc_transport = rpc_transport
        if rpc_transport not in ("ipc", "tcp"):
            raise AssertionError(f"rpc_transport: ipc or tcp, not {rpc_transport!r}")
        # The services' runtime directory (their default RPC sockets), also
        # for processes a test starts itself: what they dial by default is
        # this shop, never the machine's /tmp/webshop-UID.
        self.rpc_dir = os.path.join(self.tmp, "run")
        os.makedirs(self.rpc_dir, mode=0o700, exist_ok=True)
        os.environ["WEBSHOP_RUNTIME_DIR"] = self.rpc_dir
        self.inv_rpc = self._rpc_url("inventory")
        self.ord_rpc = self._rpc_url("order")
        self.inv_http = free_port()
        self.ord_http = free_port()
        self.http_port = free_port()
        self.replicas = replicas
        # What each backend's rpc_listening line must name (see _listens_on).
        self.rpc_urls = {"inventory": self.inv_rpc, "order": self.ord_rpc}
        self.http_ports = {"inventory": self.inv_http, "order": self.ord_http,
                           "front": self.http_port}
        if replicas:
            for kind in ("inventory", "order", "front"):
                for k in range(replicas):
                    if kind != "front":
                        self.rpc_urls[f"{kind}-{k}"] = self._rpc_url(f"{kind}-{k}")
                    self.http_ports[f"{kind}-{k}"] = free_port()
            self.inv_rpcs = [self.rpc_urls[f"inventory-{k}"] for k in range(replicas)]
            self.ord_rpcs = [self.rpc_urls[f"order-{k}"] for k in range(replicas)]
            self.inv_rpc, self.ord_rpc = self.inv_rpcs[0], self.ord_rpcs[0]
            self.front_ports = [self.http_ports[f"front-{k}"] for k in range(replicas)]
            self.http_ports["haproxy"] = self.http_port
            if services == ("broker", "inventory", "order", "front"):
                services = ("broker",) + tuple(
                    f"{kind}-{k}" for kind in ("inventory", "order", "front")
                    for k in range(replicas)) + ("haproxy",)
        self.bus_format = bus_format
        # With front_args --tls-cert: the CA file that verifies it; HTTP
        # requests then go over HTTPS.
        self.tls_ca = tls_ca
        self.env = env or {}
        self.broker_conf_extra = broker_conf_extra
        self.procs = {}
        self.services = services
        # Storage (see the module comment): the cluster, the engine, each
        # backend's database URL and its flags.
        self.pg_url = pg_url or os.environ.get("WS_TEST_PG_URL") or None
        self.engine = "postgresql" if self.pg_url else "sqlite"
        db_flags = {}
        self.db_urls = {}
        for n in ("inventory", "order"):
            if self.pg_url:
                self.db_urls[n] = pg_fresh_database(build_dir, self.pg_url, n)
                db_flags[n] = ["--db-url", self.db_urls[n]]
            else:
                path = os.path.join(self.tmp, f"{n}.db")
                self.db_urls[n] = f"sqlite:{path}"
                db_flags[n] = ["--db-path", path]
        conf = os.path.join(self.tmp, "mosquitto.conf")
        os.makedirs(os.path.join(self.tmp, "mosquitto"), exist_ok=True)
        # Broker authentication and ACLs (auth=False: anonymous, no ACL).
        self.auth = auth
        self.passwords = {}       # user -> password
        self.password_files = {}  # user -> file holding it (mode 0600)
        auth_conf = "allow_anonymous true\n"
        for var in ("WEBSHOP_USERNAME", "WEBSHOP_PASSWORD_FILE"):
            os.environ.pop(var, None)
        self.broker_tls = broker_tls
        if broker_tls:
            auth_conf = self._broker_tls_conf()
        elif auth:
            auth_conf = self._write_broker_auth()
            # Tools the test runs (webshopctl) connect as the admin; the
            # services get their own user by flag, which beats these.
            os.environ["WEBSHOP_USERNAME"] = "webshop-admin"
            os.environ["WEBSHOP_PASSWORD_FILE"] = self.password_files["webshop-admin"]
        with open(conf, "w") as f:
            f.write(f"listener {self.broker_port} 127.0.0.1\n"
                    + auth_conf +
                    "persistence true\n"
                    f"persistence_location {self.tmp}/mosquitto/\n"
                    "autosave_interval 1\n"
                    "max_inflight_messages 1000\n"
                    "max_queued_messages 1000000\n"
                    # Nagle off (mosquitto's default is on): an event
                    # relayed through the broker would wait ~40 ms for a
                    # delayed ACK (DESIGN.md, measured facts).
                    "set_tcp_nodelay true\n"
                    "log_dest stderr\n"
                    # As root, mosquitto would drop to user mosquitto, which
                    # cannot write the temp dir.
                    + ("user root\n" if os.geteuid() == 0 else "")
                    + broker_conf_extra)
        self.broker_conf = conf
        broker = f"127.0.0.1:{self.broker_port}"

        def creds(service, replica=None):
            # A replica connects as its own user (webshop-inventory-0): the
            # broker binds client ids to users (tools/broker_clientid.c).
            user = f"webshop-{service}" + (f"-{replica}" if replica is not None else "")
            if broker_tls:
                return self.broker_tls_args(user, "--broker-tls-")
            if not auth:
                return []
            return ["--username", user, "--password-file", self.password_files[user]]
        self.argv = {
            "broker": [MOSQUITTO, "-c", conf],
            "inventory": [os.path.join(build_dir, "inventory", "webshop-inventory"),
                          *db_flags["inventory"],
                          "--rpc-url", self.inv_rpc, "--broker", broker,
                          "--http-port", str(self.inv_http), "--bus-format", bus_format,
                          *creds("inventory"), *inventory_args],
            "order": [os.path.join(build_dir, "order", "webshop-order"),
                      *db_flags["order"],
                      "--rpc-url", self.ord_rpc, "--inventory-url", self.inv_rpc,
                      "--broker", broker, "--http-port", str(self.ord_http),
                      "--bus-format", bus_format, *creds("order"), *order_args],
            "front": [os.path.join(build_dir, "front", "webshop-front"),
                      "--http-port", str(self.http_port), "--inventory-url", self.inv_rpc,
                      "--orders-url", self.ord_rpc, "--broker", broker, *creds("front"),
                      *front_args],
        }
        if replicas:
            self._replica_argv(replicas, broker, db_flags, creds, replica_session,
                               order_args, inventory_args, front_args)
        self.rpc_tls = rpc_tls
        if rpc_tls:
            self._rpc_tls_argv()
        for n in list(self.argv):
            if n != "broker" and n != "haproxy":
                if rpc_transport == "tcp":
                    self.argv[n].append("--rpc-plaintext")
                self.argv[n] = WRAPPER + self.argv[n]

    def _rpc_url(self, name):
        """Where backend name ("inventory", "order-1") listens for RPC."""
        if self.rpc_transport == "tcp":
            return f"tcp://127.0.0.1:{free_port()}"
        path = os.path.join(self.rpc_dir, f"{name}.rpc")
        if len(path.encode()) > 107:
            raise AssertionError(f"{path}: too long for a socket address; a shorter TMPDIR")
        return f"ipc://{path}"

    def _replica_argv(self, n, broker, db_flags, creds, session, order_args,
                      inventory_args, front_args):
        """The argv of every replica and of HAProxy (see __init__)."""
        if not self.pg_url:
            raise AssertionError("replicas need PostgreSQL (WS_TEST_PG_URL or pg_url=)")
        inv_urls, ord_urls = ",".join(self.inv_rpcs), ",".join(self.ord_rpcs)
        for k in range(n):
            common = ["--broker", broker, "--bus-format", self.bus_format, "--replica", str(k)]
            self.argv[f"inventory-{k}"] = [
                os.path.join(self.build, "inventory", "webshop-inventory"),
                *db_flags["inventory"], "--rpc-url", self.inv_rpcs[k],
                "--http-port", str(self.http_ports[f"inventory-{k}"]), *common,
                "--replica-session-expiry", session, *creds("inventory", k), *inventory_args]
            self.argv[f"order-{k}"] = [
                os.path.join(self.build, "order", "webshop-order"),
                *db_flags["order"], "--rpc-url", self.ord_rpcs[k], "--inventory-url", inv_urls,
                "--http-port", str(self.http_ports[f"order-{k}"]), *common,
                "--replica-session-expiry", session, *creds("order", k), *order_args]
            self.argv[f"front-{k}"] = [
                os.path.join(self.build, "front", "webshop-front"),
                "--http-port", str(self.front_ports[k]), "--inventory-url", inv_urls,
                "--orders-url", ord_urls, "--broker", broker, "--replica", str(k),
                *creds("front", k), *front_args]
        conf = os.path.join(self.tmp, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write("global\n  maxconn 512\n"
                    "defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n"
                    "  timeout server 30s\n  timeout http-request 5s\n"
                    "  option http-buffer-request\n"
                    f"frontend shop\n  bind 127.0.0.1:{self.http_port}\n"
                    "  default_backend fronts\n"
                    "backend fronts\n  balance roundrobin\n  option httpchk GET /readyz\n"
                    "  retries 2\n  option redispatch\n"
                    "  default-server inter 300ms fall 1 rise 1 maxconn 64\n"
                    + "".join(f"  server front{k} 127.0.0.1:{p} check\n"
                              for k, p in enumerate(self.front_ports)))
        self.argv["haproxy"] = [HAPROXY, "-db", "-f", conf]

    def _rpc_tls_argv(self):
        """RPC over mutual TLS, single shop only: tools/shop_ca makes the
        certificates in TMP/tls (self.tls_dir; also admin-expired and
        admin-foreign for tests); each backend listens only on one
        tls+tcp:// listener per caller identity (self.rpc_tls_urls[server]
        [identity]) and the callers dial theirs. self.inv_rpc and
        self.ord_rpc become the admin's listeners, for webshopctl with
        self.rpc_tls_args()."""
        if self.replicas:
            raise AssertionError("rpc_tls=True does not combine with replicas yet")
        self.tls_dir = os.path.join(self.tmp, "tls")
        subprocess.run([os.path.join(os.path.dirname(WEBSHOP_TOOL), "shop_ca"), self.tls_dir,
                        "--expired", "admin", "--foreign", "admin"],
                       check=True, capture_output=True, timeout=60)
        callers = {"inventory": ("front", "order", "admin"),
                   "order": ("front", "inventory", "admin")}
        self.rpc_tls_urls = {srv: {who: f"tls+tcp://127.0.0.1:{free_port()}" for who in ids}
                             for srv, ids in callers.items()}
        dials = {"inventory": {"--orders-url": self.rpc_tls_urls["order"]["inventory"]},
                 "order": {"--inventory-url": self.rpc_tls_urls["inventory"]["order"]},
                 "front": {"--inventory-url": self.rpc_tls_urls["inventory"]["front"],
                           "--orders-url": self.rpc_tls_urls["order"]["front"]}}
        for n, flags in dials.items():
            argv = self.argv[n]
            if "--rpc-url" in argv:  # the default is dropped with TLS: no plain listener
                i = argv.index("--rpc-url")
                del argv[i:i + 2]
            for flag, url in flags.items():
                if flag in argv:
                    argv[argv.index(flag) + 1] = url
                else:
                    argv += [flag, url]
            argv += [f"--rpc-tls-{k}={self.tls_dir}/{f}" for k, f in
                     (("cert", f"{n}.crt"), ("key", f"{n}.key"), ("ca", "ca.crt"))]
            if n in callers:
                argv.append("--rpc-tls-listen=" + ",".join(
                    f"{who}={url}" for who, url in self.rpc_tls_urls[n].items()))
                self.rpc_urls[n] = None  # RPC starts before HTTP: /readyz will do
        self.inv_rpc = self.rpc_tls_urls["inventory"]["admin"]
        self.ord_rpc = self.rpc_tls_urls["order"]["admin"]

    def rpc_tls_args(self, name="admin"):
        """webshopctl's --cert/--key/--ca for the leaf name ("admin",
        "front", "admin-expired", "admin-foreign")."""
        return [f"--cert={self.tls_dir}/{name}.crt", f"--key={self.tls_dir}/{name}.key",
                f"--ca={self.tls_dir}/ca.crt"]

    @staticmethod
    def kind(name):
        """"inventory" for "inventory" and "inventory-1", and so on."""
        return name.split("-", 1)[0]

    def _write_broker_auth(self):
        """Every broker user of tools/webshop __broker_auth (the services', one
        per replica 0..7, the admin) with a random password in a file of mode
        0600, the hashed password file, the ACL and the client id plugin
        (build/tools/webshop_clientid.so); returns the config lines."""
        secrets = os.path.join(self.tmp, "secrets")
        plugin = os.path.join(self.build, "tools", "webshop_clientid.so")
        r = subprocess.run(["bash", WEBSHOP_TOOL, "__broker_auth", secrets, "all", plugin],
                           check=True, capture_output=True, text=True, timeout=60)
        for name in sorted(os.listdir(secrets)):
            if name.endswith(".password"):
                user = name[:-len(".password")]
                path = os.path.join(secrets, name)
                with open(path) as f:
                    self.passwords[user] = f.read().strip()
                self.password_files[user] = path
        return r.stdout

    def _broker_tls_conf(self):
        """The bus over TLS: tools/shop_ca --bus makes the certificates in
        TMP/tls (self.tls_dir: broker.crt, webshop-<service>[-K].crt for
        replicas 0..7, webshop-admin.crt), tools/webshop __broker_tls_auth
        the ACL and the TLS-only listener's lines (no password file; the
        certificate's CN is the broker user)."""
        self.tls_dir = os.path.join(self.tmp, "tls")
        subprocess.run([os.path.join(os.path.dirname(WEBSHOP_TOOL), "shop_ca"), self.tls_dir,
                        "--bus", str(self.replicas or 1)],
                       check=True, capture_output=True, timeout=60)
        r = subprocess.run(["bash", WEBSHOP_TOOL, "__broker_tls_auth",
                            os.path.join(self.tmp, "secrets"), str(self.replicas or 1),
                            os.path.join(self.build, "tools", "webshop_clientid.so"),
                            self.tls_dir], check=True, capture_output=True, text=True,
                           timeout=60)
        return r.stdout

    def broker_tls_args(self, name="webshop-admin", prefix="--"):
        """CA, certificate and key flags for the leaf name of self.tls_dir:
        prefix "--" for mosquitto_pub/sub (--cafile, --cert, --key),
        "--broker-tls-" for the services and webshopctl."""
        ca = "cafile" if prefix == "--" else "ca"
        return [f"{prefix}{ca}", os.path.join(self.tls_dir, "ca.crt"),
                f"{prefix}cert", os.path.join(self.tls_dir, f"{name}.crt"),
                f"{prefix}key", os.path.join(self.tls_dir, f"{name}.key")]

    # -- storage ---------------------------------------------------------------

    def query(self, service, sql):
        """Rows of one SQL statement on a backend's database ("inventory" or
        "order"), through lib/db whatever the engine: each row a list of
        text or None. Write SQL both engines take."""
        return db_query(self.build, self.db_urls[service], sql)

    def scalar(self, service, sql):
        """The first column of the only row of sql, as text or None."""
        rows = self.query(service, sql)
        if len(rows) != 1 or not rows[0]:
            raise AssertionError(f"{sql!r} on {service}: {len(rows)} rows, want one")
        return rows[0][0]

    # -- broker credentials for tools ----------------------------------------

    def mqtt_args(self, user="webshop-admin"):
        """mosquitto_pub/mosquitto_sub flags to connect as user ([] without auth)."""
        if self.broker_tls:
            return self.broker_tls_args(user)
        return ["-u", user, "-P", self.passwords[user]] if self.auth else []

    def ctl_args(self, user="webshop-admin"):
        """webshopctl flags to connect to the broker as user ([] without auth)."""
        if self.broker_tls:
            return self.broker_tls_args(user, "--broker-tls-")
        return (["--username", user, "--password-file", self.password_files[user]]
                if self.auth else [])

    # -- lifecycle ---------------------------------------------------------

    def start(self, *names, wait=True):
        names = names or ("broker", "inventory", "order", "front")
        for n in names:
            p = Proc(n, self.argv[n], self.logdir, env=self.env)
            self.procs[n] = p.start()
            if n == "broker":
                # Ours once it logs that it runs (its listener is bound).
                wait_until(lambda: (self._broker_running() and port_open(self.broker_port))
                           or self._died("broker"), 10, "mosquitto to listen")
            elif n == "haproxy":
                wait_until(lambda: port_open(self.http_port) or self._died(n), 10,
                           "haproxy to listen")
            elif self.kind(n) in ("inventory", "order") and wait:
                rpc, hp = self.rpc_urls[n], self.http_ports[n]
                # /readyz: RPC is up and the consumer's subscriptions are
                # acknowledged, so an event published now reaches it.
                wait_until(lambda: (self._listens_on(n, rpc, hp) and http_ok(hp, "/readyz"))
                           or self._died(n), 20, f"{n} to be ready")
            elif self.kind(n) == "front" and wait:
                hp = self.http_ports[n]
                wait_until(lambda: self._listens_on(n, None, hp) or self._died(n),
                           20, f"{n} to listen")
        if wait and ("front" in names or "haproxy" in names):
            self.wait_ready()
        return self

    def _broker_running(self):
        # A config that chose its own log types may not print the line.
        if "log_type" in self.broker_conf_extra or "log_dest" in self.broker_conf_extra:
            return True
        return " running" in self.procs["broker"].log_since_start()

    def _listens_on(self, name, rpc_url, http_port):
        """True once the process logged that it listens on exactly this RPC
        URL and HTTP port (so what answers there is ours); with a log level
        above info there are no such lines, and an open port (or socket)
        has to do."""
        p = self.procs[name]
        argv = p.argv
        level = {**os.environ, **self.env}.get(
            f"WEBSHOP_{self.kind(name).upper()}_LOG_LEVEL", "info")
        for i, a in enumerate(argv):
            if a == "--log-level" and i + 1 < len(argv):
                level = argv[i + 1]
            elif a.startswith("--log-level="):
                level = a.split("=", 1)[1]
        if level in ("warn", "warning", "error"):
            return rpc_url_open(rpc_url) and port_open(http_port)
        urls = listening_urls(p.log_since_start())
        rpc_ok = rpc_url is None or rpc_url_logged(rpc_url, urls.get("rpc_listening", ()))
        return rpc_ok and any(url_port(u) == http_port for u in urls.get("http_listening", ()))

    def _died(self, name):
        p = self.procs.get(name)
        if p is not None and not p.alive():
            raise AssertionError(f"{name} exited with {p.p.returncode}:\n{p.log()[-3000:]}")
        return False

    def wait_ready(self, timeout=30):
        def ready():
            for n in self.procs:
                self._died(n)
            return self.request("GET", "/readyz", timeout=2)[0] == 200
        wait_until(ready, timeout, "the front's /readyz to answer 200")

    def kill(self, name):
        self.procs[name].kill()

    def restart(self, name, wait=True):
        p = self.procs.get(name)
        if p is not None:
            p.stop()
        self.start(name, wait=False)
        if wait and self.kind(name) == "front":
            self.wait_ready()

    def stop_all(self):
        """Stop every process with SIGTERM; return {name: exit code}."""
        codes = {}
        rank = {"haproxy": 0, "front": 1, "order": 2, "inventory": 3, "broker": 4}
        for n in sorted(self.procs, key=lambda n: rank.get(self.kind(n), 5)):
            codes[n] = self.procs[n].stop()
        return codes

    def check_logs(self):
        for n, p in self.procs.items():
            text = p.log()
            for mark in SANITIZER_MARKS:
                if mark in text:
                    raise AssertionError(f"{n}: sanitizer report in its log:\n{text[-5000:]}")
            if VALGRIND_ERRORS.search(text):
                raise AssertionError(f"{n}: memcheck errors in its log:\n{text[-8000:]}")

    def __enter__(self):
        try:
            return self.start(*self.services)
        except BaseException:
            self.__exit__(AssertionError, None, None)
            raise

    def __exit__(self, exc_type, exc, tb):
        try:
            codes = self.stop_all()
            if exc_type is None:
                bad = {n: c for n, c in codes.items()
                       if n not in ("broker", "haproxy") and c not in (0, None)}
                if bad:
                    raise AssertionError(f"services exited badly on SIGTERM: {bad}\n"
                                         + "\n".join(self.procs[n].log()[-2000:] for n in bad))
                self.check_logs()
        finally:
            if exc_type is not None:
                for n, p in self.procs.items():
                    print(f"---- {n} log (tail) ----\n{p.log()[-4000:]}")
            if self.own_tmp and exc_type is None and not os.environ.get("WEBSHOP_KEEP_TMP"):
                shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    # -- HTTP --------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=10, raw=None):
        """One HTTP request. Returns (status, headers dict, parsed JSON or text)."""
        if self.tls_ca is not None:
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.http_port, timeout=timeout,
                context=ssl.create_default_context(cafile=self.tls_ca))
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            h = dict(headers or {})
            data = raw
            if body is not None:
                data = json.dumps(body).encode()
                h.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            payload = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            text = payload.decode("utf-8", errors="replace")
            if hdrs.get("content-type", "").startswith("application/json") and text:
                return r.status, hdrs, json.loads(text)
            return r.status, hdrs, text
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def place(self, items, key=None):
        headers = {"Idempotency-Key": key} if key else None
        return self.request("POST", "/order", body={"items": items}, headers=headers)

    def catalog(self):
        st, _, body = self.get("/inventory")
        assert st == 200, (st, body)
        return {p["id"]: p for p in body}

    def order(self, order_id):
        st, _, body = self.get(f"/order/{order_id}")
        return body if st == 200 else None

    def wait_status(self, order_id, statuses, timeout=20):
        if isinstance(statuses, str):
            statuses = (statuses,)

        def done():
            o = self.order(order_id)
            return o if o is not None and o.get("status") in statuses else None
        return wait_until(done, timeout, f"order {order_id} to reach {statuses}")


class Backends:
    """RPC and bus access to a shop's backends through webshopctl."""

    def __init__(self, shop):
        self.shop = shop
        self.ctl = os.path.join(shop.build, "tools", "webshopctl")
        self.broker = f"127.0.0.1:{shop.broker_port}"

    def call(self, url, method, req):
        r = subprocess.run([self.ctl, "--deadline", "2s", "--emit-defaults", "call", url,
                            method, json.dumps(req)],
                           capture_output=True, text=True, timeout=20)
        if r.returncode != 0:
            return None, r.stderr.strip()
        return json.loads(r.stdout), None

    def publish(self, topic, event):
        r = subprocess.run([self.ctl, "--broker", self.broker, "--deadline", "5s", "publish",
                            topic, json.dumps(event)],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr

    def publish_json_raw(self, topic, text):
        r = subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p",
                            str(self.shop.broker_port), *self.shop.mqtt_args(), "-q", "1",
                            "-t", topic, "-m", text],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, r.stderr

    def order(self, oid):
        resp, _ = self.call(self.shop.ord_rpc, "/webshop.v1.Orders/GetOrder", {"id": oid})
        return resp["order"] if resp else None

    def reservation(self, oid):
        resp, err = self.call(self.shop.inv_rpc, "/webshop.v1.Inventory/GetReservation",
                              {"order_id": oid})
        assert resp is not None, err
        return resp

    def balance(self, pid):
        resp, err = self.call(self.shop.inv_rpc, "/webshop.v1.Inventory/GetProduct",
                              {"id": pid})
        assert resp is not None, err
        return resp["product"]["balance"]

    def wait_status(self, oid, statuses, timeout=20):
        if isinstance(statuses, str):
            statuses = (statuses,)

        def done():
            o = self.order(oid)
            return o if o is not None and o["status"] in statuses else None
        return wait_until(done, timeout, f"order {oid} to reach {statuses}")

    def metric(self, http_port, series):
        """The value of one series (name{labels}) on the /metrics of the
        service whose HTTP port is http_port; 0 if absent."""
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics",
                                    timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(series + " "):
                    return float(line.split()[-1])
        return 0.0

    def order_metric(self, series):
        """A series of the order service's /metrics (0 if absent)."""
        return self.metric(self.shop.ord_http, series)

    def inventory_metric(self, name, labels=""):
        """A sample of the inventory's /metrics (0 if absent)."""
        return self.metric(self.shop.inv_http, name + ("{" + labels + "}" if labels else ""))

    def send(self, oid, items):
        self.publish("public-front/order-send", {"orderId": oid, "items": items})
