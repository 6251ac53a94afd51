"""The storefront in a real browser (issue 8): starts a whole shop with
tests/e2e/shop.py, then runs tests/browser/storefront.test.mjs in node
(playwright-core driving Debian's /usr/bin/chromium) against it.

Run: /usr/bin/python3 tests/browser/test_storefront.py BUILD_DIR SCREENSHOT_DIR
Needs `npm ci` in tests/browser (tools/webshop test does it) and chromium.
"""

import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from shop import Shop  # noqa: E402


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    build, shots = os.path.abspath(argv[1]), os.path.abspath(argv[2])
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node (apt-get install nodejs npm)")
    if not os.path.isfile(os.path.join(HERE, "node_modules", "playwright-core", "package.json")):
        missing.append("playwright-core (cd tests/browser && npm ci)")
    if not os.access("/usr/bin/chromium", os.X_OK):
        missing.append("/usr/bin/chromium (apt-get install chromium)")
    if missing:
        print("browser test cannot run; missing: " + "; ".join(missing) +
              " -- tools/webshop test installs them")
        return 1
    if os.path.isdir(shots):
        for f in os.listdir(shots):
            if f.endswith(".png"):
                os.remove(os.path.join(shots, f))
    with Shop(build) as shop:
        url = f"http://127.0.0.1:{shop.http_port}/"
        r = subprocess.run([node, os.path.join(HERE, "storefront.test.mjs"), url, shots],
                           cwd=HERE, timeout=240, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise AssertionError(f"storefront.test.mjs failed ({r.returncode}); "
                                 f"screenshots in {shots}")
    print(f"screenshots: {shots}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
