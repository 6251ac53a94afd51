"""The /metrics of the front and of both backends, after an order was
placed, read and cancelled, pass `promtool check metrics` (Debian package
prometheus: the format and the naming rules Prometheus itself lints
with), and carry the operator's series: webshop_build_info and process_*,
GET and DELETE of /order/{id} as separate series (the method label), and
webshop_event_age_seconds for the events each service consumed.

Run: /usr/bin/python3 tests/e2e/test_metrics_lint.py BUILD_DIR
"""

import os
import re
import shutil
import subprocess
import sys
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Shop, wait_until  # noqa: E402

BUILD = sys.argv.pop(1) if len(sys.argv) > 1 else "build"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
# The services that call ws_metrics_process_register at start.
PROCESS_METRICS_IN = ("front",)
PROCESS_FAMILIES = ("process_cpu_seconds_total", "process_resident_memory_bytes",
                    "process_open_fds", "process_start_time_seconds")
# Topics each service consumes (the age histogram's topic label).
CONSUMED = {
    "front": "order/order-status",
    "inventory": "public-front/order-send",
    "order": "inventory/on-stock",
}


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def value(text, series):
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


class MetricsLint(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(PROMTOOL):
            raise unittest.SkipTest("promtool is missing (Debian package prometheus)")
        cls.shop = Shop(BUILD)
        cls.shop.__enter__()
        shop = cls.shop
        st, _, _ = shop.get("/inventory")
        assert st == 200, st
        st, _, body = shop.place([{"inventoryId": 1, "count": 1}])
        assert st in (201, 202), (st, body)
        oid = body["order_id"]
        shop.wait_status(oid, "SUCCESSFUL")
        st, _, body = shop.request("DELETE", f"/order/{oid}")
        assert st in (200, 202), (st, body)
        cls.ports = {"front": shop.http_port, "inventory": shop.inv_http,
                     "order": shop.ord_http}
        # Every consumer has seen its topic (the age histogram exists).
        for name, topic in CONSUMED.items():
            series = f'webshop_event_age_seconds_count{{topic="{topic}"}}'
            wait_until(lambda: (value(scrape(cls.ports[name]), series) or 0) > 0, 10,
                       f"{name} to count {series}")

    @classmethod
    def tearDownClass(cls):
        cls.shop.__exit__(None, None, None)

    def test_promtool_check_metrics_passes_for_every_service(self):
        for name, port in self.ports.items():
            with self.subTest(service=name):
                text = scrape(port)
                r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                                   capture_output=True, text=True, timeout=30)
                self.assertEqual(r.returncode, 0,
                                 f"{name}: {r.stdout}{r.stderr}\n--- metrics:\n{text}")
                self.assertEqual(r.stdout + r.stderr, "")

    def test_build_info_and_process_metrics(self):
        for name in PROCESS_METRICS_IN:
            text = scrape(self.ports[name])
            with self.subTest(service=name):
                self.assertRegex(text, r'(?m)^webshop_build_info\{version="[^"]+"\} 1$')
                for fam in PROCESS_FAMILIES:
                    self.assertIsNotNone(value(text, fam), fam)
                self.assertGreater(value(text, "process_open_fds"), 3)
                self.assertGreater(value(text, "process_resident_memory_bytes"), 1 << 20)

    def test_get_and_delete_of_an_order_are_separate_series(self):
        text = scrape(self.ports["front"])
        get = re.search(r'(?m)^webshop_http_requests_total\{route="/order/\{id\}",'
                        r'method="GET",status="200"\} (\d+)$', text)
        delete = re.search(r'(?m)^webshop_http_requests_total\{route="/order/\{id\}",'
                           r'method="DELETE",status="20[02]"\} (\d+)$', text)
        self.assertIsNotNone(get, text)
        self.assertIsNotNone(delete, text)
        self.assertIn('webshop_http_requests_total{route="/order",method="POST",', text)
        self.assertIn('webshop_http_request_duration_seconds_count{route="/order/{id}",'
                      'method="DELETE"}', text)

    def test_event_age_is_measured_from_creation(self):
        for name, topic in CONSUMED.items():
            text = scrape(self.ports[name])
            with self.subTest(service=name):
                count = value(text, f'webshop_event_age_seconds_count{{topic="{topic}"}}')
                total = value(text, f'webshop_event_age_seconds_sum{{topic="{topic}"}}')
                self.assertGreater(count, 0)
                # On loopback, with every service up: well under a minute.
                self.assertLess(total / count, 60, text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
