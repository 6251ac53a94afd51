"""A protoc plugin run by hand (tools/protoc-gen-webshop/plugin_cli.c):
--help and -h print the help on stdout and exit 0, --version prints
"NAME VERSION" and exits 0, any other argument is a message on stderr and
exit 2, and with no argument and a terminal on stdin it says what it is
(exit 2) instead of waiting for a CodeGeneratorRequest. Under protoc (no
arguments, a pipe on stdin) it still answers with a CodeGeneratorResponse.

Run: /usr/bin/python3 tests/plugin_cli_test.py PLUGIN VERSION
"""

import os
import select
import subprocess
import sys
import time
import unittest

PLUGIN = os.path.abspath(sys.argv.pop(1))
VERSION = sys.argv.pop(1)
NAME = os.path.basename(PLUGIN)


def run(*args, stdin=subprocess.DEVNULL):
    return subprocess.run([PLUGIN, *args], stdin=stdin, capture_output=True, timeout=20)


class PluginCli(unittest.TestCase):
    def test_help_and_h_print_help_on_stdout(self):
        for flag in ("--help", "-h"):
            with self.subTest(flag=flag):
                r = run(flag)
                self.assertEqual(r.returncode, 0, r.stderr)
                out = r.stdout.decode()
                self.assertTrue(out.startswith(f"usage: protoc --plugin={NAME}=PATH"), out)
                self.assertIn("--help", out)
                self.assertIn("--version", out)
                self.assertEqual(r.stderr, b"")

    def test_version(self):
        r = run("--version")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode(), f"{NAME} {VERSION}\n")
        self.assertEqual(r.stderr, b"")

    def test_other_arguments_exit_2_with_a_message_on_stderr(self):
        for args in (["--bogus"], ["x.proto"], ["--help", "--version"], ["-"]):
            with self.subTest(args=args):
                r = run(*args)
                self.assertEqual(r.returncode, 2)
                self.assertEqual(r.stdout, b"")
                err = r.stderr.decode()
                self.assertTrue(err.startswith(NAME + ": "), err)
                self.assertIn("--help", err)

    def test_a_terminal_on_stdin_is_not_read(self):
        leader, follower = os.openpty()
        try:
            p = subprocess.Popen([PLUGIN], stdin=follower, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
            try:
                out, err = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                self.fail("the plugin waited for a request on a terminal")
        finally:
            os.close(leader)
            os.close(follower)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(out, b"")
        self.assertIn(b"protoc", err)

    def test_under_protoc_it_still_answers_a_request(self):
        # An empty CodeGeneratorRequest (zero bytes) on a pipe: a response,
        # binary, on stdout; what it says is the generator's business.
        r = subprocess.run([PLUGIN], input=b"", capture_output=True, timeout=20)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        if r.returncode == 0:
            self.assertNotIn(b"usage:", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
