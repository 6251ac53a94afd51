"""The front's heartbeats to a service manager, with real processes: a fake
manager (a unix datagram socket this test binds, named in NOTIFY_SOCKET,
with WATCHDOG_USEC set as systemd sets it) sees READY=1 from the front's
pid once it serves, WATCHDOG=1 at the rate asked for, no WATCHDOG=1 while
the loop it comes from (the bus network thread) is wedged by the fault
point bus_loop_stall, the beats again once the wedge is released, and
STOPPING=1 at SIGTERM. Without fault points in the build (-Dfault_points=
false) the wedge test is skipped.

Run: /usr/bin/python3 tests/e2e/test_watchdog.py BUILD_DIR FAULT_POINTS(true|false)
"""

import os
import select
import socket
import struct
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import TIME_SCALE, Proc, Shop, wait_until  # noqa: E402

BUILD = sys.argv.pop(1) if len(sys.argv) > 1 else "build"
FAULTS = (sys.argv.pop(1) if len(sys.argv) > 1 else "true") == "true"
WATCHDOG_USEC = 400000  # the front beats every 200 ms
PERIOD = WATCHDOG_USEC / 2e6


class FakeManager:
    """NOTIFY_SOCKET's other end: datagrams with their sender's pid."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def recv(self, timeout):
        """(pid, text, arrival time) of the next datagram, or None."""
        r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
        if not r:
            return None
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        return pid, data.decode(), time.monotonic()

    def wait_for(self, pid, text, timeout):
        """Wait for text from pid (other messages are returned in the list)."""
        deadline = time.monotonic() + timeout * TIME_SCALE
        seen = []
        while time.monotonic() < deadline:
            m = self.recv(deadline - time.monotonic())
            if m is None:
                break
            seen.append(m)
            if m[0] == pid and text in m[1].split("\n"):
                return seen
        raise AssertionError(f"no {text!r} from pid {pid} within {timeout}s; got {seen}")

    def beats_during(self, pid, seconds):
        """Arrival times of WATCHDOG=1 from pid over the next seconds."""
        end = time.monotonic() + seconds
        beats = []
        while True:
            m = self.recv(end - time.monotonic())
            if m is None:
                return beats
            if m[0] == pid and m[1] == "WATCHDOG=1":
                beats.append(m[2])

    def close(self):
        self.sock.close()
        if os.path.exists(self.path):  # the shop's temp dir may be gone already
            os.unlink(self.path)


class FrontHeartbeat(unittest.TestCase):
    def setUp(self):
        self.shop = Shop(BUILD, services=("broker",))
        self.shop.__enter__()
        self.manager = FakeManager(os.path.join(self.shop.tmp, "notify.sock"))
        self.stall = os.path.join(self.shop.tmp, "stall")
        env = dict(self.shop.env, NOTIFY_SOCKET=self.manager.path,
                   WATCHDOG_USEC=str(WATCHDOG_USEC))
        if FAULTS:
            env["WEBSHOP_FAULT"] = "bus_loop_stall=" + self.stall
        self.front = Proc("front", self.shop.argv["front"], self.shop.logdir, env=env).start()
        self.shop.procs["front"] = self.front  # stopped and checked by the shop
        self.pid = self.front.p.pid

    def tearDown(self):
        try:
            if os.path.exists(self.stall):
                os.unlink(self.stall)
            self.shop.__exit__(None, None, None)
        finally:
            self.manager.close()

    def assert_beating(self, seconds=1.5):
        beats = self.manager.beats_during(self.pid, seconds * TIME_SCALE)
        want = int(seconds / PERIOD) - 2
        self.assertGreaterEqual(len(beats), want, f"beats {beats}")
        # Rate-limited to one per half period (a little slack for timers).
        gaps = [b - a for a, b in zip(beats, beats[1:])]
        self.assertTrue(all(g > PERIOD * 0.7 for g in gaps), f"gaps {gaps}")
        return beats

    def test_ready_then_watchdog_then_stopping(self):
        seen = self.manager.wait_for(self.pid, "READY=1", 20)
        ready = [m for m in seen if m[1].startswith("READY=1")][-1]
        self.assertIn(f"MAINPID={self.pid}", ready[1].split("\n"))
        self.assertTrue(any(m[1].startswith("STATUS=serving") for m in seen), seen)
        wait_until(lambda: self.shop.request("GET", "/healthz", timeout=2)[0] == 200, 10,
                   "the front to answer /healthz")
        self.assert_beating()
        self.assertEqual(self.front.stop(), 0)
        self.manager.wait_for(self.pid, "STOPPING=1", 5)

    @unittest.skipUnless(FAULTS, "built without fault points (-Dfault_points=false)")
    def test_watchdog_stops_while_the_loop_is_wedged_and_resumes_after(self):
        self.manager.wait_for(self.pid, "READY=1", 20)
        self.assert_beating(1.0)
        open(self.stall, "w").close()
        wait_until(lambda: "event=fault_point_stalled" in self.front.log_since_start(), 10,
                   "the bus loop to stall")
        # One beat may have been on its way as the loop stalled: drain it.
        self.manager.beats_during(self.pid, PERIOD)
        silent = self.manager.beats_during(self.pid, 8 * PERIOD * TIME_SCALE)
        self.assertEqual(silent, [], "WATCHDOG=1 while the loop was wedged")
        # The process itself is alive and serving HTTP meanwhile: the beat
        # follows the loop, not the process.
        self.assertEqual(self.shop.request("GET", "/healthz", timeout=5)[0], 200)
        os.unlink(self.stall)
        wait_until(lambda: "event=fault_point_resumed" in self.front.log_since_start(), 10,
                   "the bus loop to resume")
        self.manager.wait_for(self.pid, "WATCHDOG=1", 5)
        self.assert_beating(1.0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
