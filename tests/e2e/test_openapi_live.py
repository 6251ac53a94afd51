"""The front's real answers against the OpenAPI document it serves
(issue 17): tests/openapi/live.mjs calls every documented route on a
whole shop of real processes and checks each answer's status, headers and
body against the document with ajv (tests/openapi's npm packages,
installed by tools/webshop test), so the document cannot drift from the
server.
Run: /usr/bin/python3 tests/e2e/test_openapi_live.py BUILD_DIR
"""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shop import Shop  # noqa: E402

BUILD = os.environ.get("WEBSHOP_BUILD_DIR", "build")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPENAPI_DIR = os.path.join(ROOT, "tests", "openapi")


class OpenApiLive(unittest.TestCase):
    def test_every_answer_is_what_the_document_says(self):
        if not os.path.isdir(os.path.join(OPENAPI_DIR, "node_modules", "ajv")):
            self.fail("tests/openapi's npm packages are missing: tools/webshop test installs "
                      "them (npm ci in tests/openapi)")
        with Shop(BUILD) as shop:
            r = subprocess.run(["node", "live.mjs", f"http://127.0.0.1:{shop.http_port}"],
                               cwd=OPENAPI_DIR, capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn("passed, 0 failed", r.stdout)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        BUILD = sys.argv.pop(1)
    unittest.main(verbosity=2)
