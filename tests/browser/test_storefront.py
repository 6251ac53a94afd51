"""The storefront in a real browser (issues 8 and 12): starts a whole shop
with tests/e2e/shop.py, then runs tests/browser/storefront.test.mjs in node
(playwright-core driving Debian's /usr/bin/chromium) against it.

The shop gets a catalog of its own (CATALOG: a product out of stock, one
with little stock, one with more stock than an order may hold) and a front
whose per-item limit (--max-count FRONT_MAX_COUNT) is below the page's
1000, so that the front refuses an order the page allowed and the page
must say why in shop words.

The node script can stop and start the backends while it runs: it prints
"@@control stop NAME" or "@@control start NAME" (NAME: inventory or order)
on its stdout and reads "ok" or "error: ..." on its stdin. Every other
line it prints is passed through.

Run: /usr/bin/python3 tests/browser/test_storefront.py BUILD_DIR SCREENSHOT_DIR
Needs `npm ci` in tests/browser (tools/webshop test does it) and chromium.
"""

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from shop import TIME_SCALE, Shop  # noqa: E402

CATALOG = [
    {"id": 1, "name": "Coffee", "price": 450, "balance": 50},
    {"id": 2, "name": "Tea", "price": 300, "balance": 1500},
    {"id": 3, "name": "Mug", "price": 1200, "balance": 0},
    {"id": 4, "name": "Cake", "price": 250, "balance": 3},
]
FRONT_MAX_COUNT = 900
RUN_SECONDS = 240
CONTROLLED = ("inventory", "order")


def missing_tools():
    missing = []
    if shutil.which("node") is None:
        missing.append("node (apt-get install nodejs npm)")
    if not os.path.isfile(os.path.join(HERE, "node_modules", "playwright-core", "package.json")):
        missing.append("playwright-core (cd tests/browser && npm ci)")
    if not os.access("/usr/bin/chromium", os.X_OK):
        missing.append("/usr/bin/chromium (apt-get install chromium)")
    return missing


def control(shop, line):
    """Run one "@@control VERB NAME" request; return the reply line."""
    words = line.split()
    if len(words) != 3 or words[1] not in ("stop", "start") or words[2] not in CONTROLLED:
        return f"error: bad control request {line!r}"
    verb, name = words[1], words[2]
    try:
        if verb == "stop":
            shop.procs[name].stop()
        else:
            shop.start(name)  # waits until the service is ready
    except Exception as e:  # noqa: BLE001 - reported to the script
        return f"error: {verb} {name}: {e}"
    return "ok"


def run_script(shop, argv, timeout):
    """Run the node script, serving its control requests from this (the
    main) thread, so restarted services die with the test. Returns its
    exit code; kills it after timeout seconds."""
    p = subprocess.Popen(argv, cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    pending = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"storefront.test.mjs still running after {timeout}s")
            if not sel.select(timeout=left):
                continue
            chunk = os.read(p.stdout.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                raw, pending = pending.split(b"\n", 1)
                line = raw.decode("utf-8", errors="replace")
                if line.startswith("@@control "):
                    reply = control(shop, line)
                    print(f"# control: {line[len('@@control '):]} -> {reply}", flush=True)
                    p.stdin.write((reply + "\n").encode())
                    p.stdin.flush()
                else:
                    print(line, flush=True)
        if pending:
            print(pending.decode("utf-8", errors="replace"), flush=True)
        return p.wait(timeout=30)
    finally:
        sel.close()
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    build, shots = os.path.abspath(argv[1]), os.path.abspath(argv[2])
    missing = missing_tools()
    if missing:
        print("browser test cannot run; missing: " + "; ".join(missing) +
              " -- tools/webshop test installs them")
        return 1
    if os.path.isdir(shots):
        for f in os.listdir(shots):
            if f.endswith(".png"):
                os.remove(os.path.join(shots, f))
    work = tempfile.mkdtemp(prefix="webshop-browser-")
    try:
        catalog = os.path.join(work, "catalog.json")
        with open(catalog, "w") as f:
            json.dump(CATALOG, f)
        config = json.dumps({"catalog": CATALOG, "frontMaxCount": FRONT_MAX_COUNT})
        with Shop(build, inventory_args=("--catalog", catalog),
                  front_args=("--max-count", str(FRONT_MAX_COUNT))) as shop:
            url = f"http://127.0.0.1:{shop.http_port}/"
            rc = run_script(shop, [shutil.which("node"), os.path.join(HERE, "storefront.test.mjs"),
                                   url, shots, config], RUN_SECONDS * TIME_SCALE)
            if rc != 0:
                raise AssertionError(f"storefront.test.mjs failed ({rc}); "
                                     f"screenshots in {shots}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"screenshots: {shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
