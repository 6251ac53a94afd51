"""The systemd units of deploy/systemd, as `meson install` installs them,
pass `systemd-analyze verify`, and each says what the project promises
(Type=notify where the program notifies, a watchdog on our services,
Restart=on-failure, the hardening options).

No running systemd is needed: the build is installed with DESTDIR into a
temp dir that becomes --root, with a copy of the host's own units
(sysinit.target and the rest verify resolves dependencies against) and of
the programs the units run that the shop does not build (mosquitto,
haproxy, kill). A program the host lacks (HAProxy is not a build
dependency) is a stub there: verify checks that an Exec program is an
executable file, and a missing one is reported below, not hidden.

usage: units_verify.py BUILD_DIR
"""

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest

BUILD = os.path.abspath(sys.argv.pop(1))
OUR_SERVICES = ("webshop-inventory", "webshop-order", "webshop-front")
ALL_SERVICES = OUR_SERVICES + ("webshop-broker", "webshop-haproxy")
HARDENING = ("ProtectSystem=strict", "NoNewPrivileges=yes", "DynamicUser=yes",
             "ProtectHome=yes", "PrivateTmp=yes", "Restart=on-failure")


def exec_programs(text):
    """The programs of every Exec*= line (after systemd's prefixes @-:+!)."""
    progs = []
    for m in re.finditer(r"^Exec\w+=(.*)$", text, re.M):
        words = shlex.split(m.group(1))
        if words:
            progs.append(words[0].lstrip("@-:+!"))
    return progs


class Units(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="webshop-units-")
        cls.root = os.path.join(cls.tmp, "root")
        env = dict(os.environ, DESTDIR=cls.root)
        r = subprocess.run(["meson", "install", "-C", BUILD, "--no-rebuild", "--quiet"],
                           env=env, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise AssertionError("meson install failed:\n" + r.stdout + r.stderr)
        found = glob.glob(os.path.join(cls.root, "**", "systemd", "system", "*.service"),
                          recursive=True)
        if not found:
            raise AssertionError("meson install put no unit under " + cls.root)
        cls.unit_dir = os.path.dirname(found[0])
        cls.units = {os.path.basename(p)[:-len(".service")]: p for p in found}
        # The host's units (a copy: links inside point at absolute paths,
        # which verify would resolve inside the root).
        host_units = "/usr/lib/systemd/system"
        if not os.path.isdir(host_units):
            host_units = "/lib/systemd/system"
        shutil.copytree(host_units, cls.root + "/usr/lib/systemd/system", symlinks=True)
        if not os.path.lexists(cls.root + "/lib"):
            os.symlink("usr/lib", cls.root + "/lib")
        cls.stubbed = []
        for path in found:
            with open(path) as f:
                text = f.read()
            for prog in exec_programs(text):
                target = cls.root + prog
                if os.path.exists(target):
                    continue
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if os.path.exists(prog):
                    shutil.copy(prog, target)
                else:
                    with open(target, "w") as f:
                        f.write("#!/bin/sh\n# stub: not installed on the test host\nexit 1\n")
                    os.chmod(target, 0o755)
                    cls.stubbed.append(prog)
        if cls.stubbed:
            print("units_verify: not on this host, verified against a stub:",
                  " ".join(sorted(set(cls.stubbed))), file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def unit_text(self, name):
        with open(self.units[name]) as f:
            return f.read()

    def test_every_unit_is_installed(self):
        self.assertEqual(sorted(self.units), sorted(ALL_SERVICES))
        self.assertTrue(os.path.exists(os.path.join(self.unit_dir, "webshop.target")))

    def test_systemd_analyze_verify_passes_for_every_unit(self):
        names = sorted(os.path.basename(p) for p in self.units.values()) + ["webshop.target"]
        for name in names:
            with self.subTest(unit=name):
                r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                                    "--generators=no", "--root=" + self.root,
                                    os.path.join(self.unit_dir, name)],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                self.assertNotIn(name, r.stderr, "verify warned about the unit:\n" + r.stderr)

    def test_programs_of_our_units_are_what_meson_installs(self):
        for name in OUR_SERVICES:
            with self.subTest(unit=name):
                prog = exec_programs(self.unit_text(name))[0]
                self.assertEqual(os.path.basename(prog), name)
                self.assertTrue(os.access(self.root + prog, os.X_OK), prog)
                self.assertNotIn(prog, self.stubbed)

    def test_notify_watchdog_restart_and_hardening(self):
        for name in ALL_SERVICES:
            text = self.unit_text(name)
            with self.subTest(unit=name):
                self.assertIn("Type=notify\n", text)
                for line in HARDENING:
                    self.assertIn(line + "\n", text)
                self.assertRegex(text, r"(?m)^(StateDirectory|RuntimeDirectory)=\S+")
                # Only programs that send WATCHDOG=1 may have a watchdog.
                if name in OUR_SERVICES:
                    self.assertRegex(text, r"(?m)^WatchdogSec=\d+s$")
                else:
                    self.assertNotIn("WatchdogSec=", text)


if __name__ == "__main__":
    unittest.main(verbosity=2)
