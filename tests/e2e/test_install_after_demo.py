#!/usr/bin/env python3
"""`cmake --install build --prefix /usr` works after packaging/demo.sh (issue 15, item 4).

demo.sh builds only the targets it names; `cmake --install` then needs every program the
install rules name. Checked without building again (seconds, not minutes):
  * a fresh build tree is configured from this source (Unix Makefiles), and the targets
    demo.sh builds must, through the dependencies CMake wrote (CMakeFiles/Makefile2), reach
    every program that tree's cmake_install.cmake installs;
  * `cmake --install` of this build (everything built) into a temporary prefix succeeds and
    puts the programs where the README says (sbin, libexec/opensmtpd).
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

DEMO = os.path.join(h.SOURCE_DIR, "packaging", "demo.sh")


def demo_targets():
    with open(DEMO) as f:
        lines = [l for l in f if re.match(r"\s*cmake --build build\b", l)]
    assert len(lines) == 1, "packaging/demo.sh must build with one `cmake --build build` line: %r" % lines
    m = re.search(r"--target((?: [\w.-]+)+)", lines[0])
    assert m, "packaging/demo.sh builds no named target: %r" % lines[0]
    return m.group(1).split()


class InstallAfterDemo(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="maildict-install-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_demo_builds_every_installed_program(self):
        tree = os.path.join(self.tmp, "build")
        r = subprocess.run(["cmake", "-S", h.SOURCE_DIR, "-B", tree, "-G", "Unix Makefiles",
                            "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                           capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        edges = {}
        with open(os.path.join(tree, "CMakeFiles", "Makefile2")) as f:
            for line in f:
                m = re.match(r"CMakeFiles/([^/]+)\.dir/all: CMakeFiles/([^/]+)\.dir/all\s*$", line)
                if m:
                    edges.setdefault(m.group(1), set()).add(m.group(2))
        built, todo = set(), list(demo_targets())
        while todo:
            t = todo.pop()
            if t not in built:
                built.add(t)
                todo.extend(edges.get(t, ()))
        with open(os.path.join(tree, "cmake_install.cmake")) as f:
            installed = re.findall(r'FILES "%s/([^"/]+)"' % re.escape(tree), f.read())
        self.assertIn("maildictctl", installed)      # what the rules install is what we think
        self.assertIn("table-maildict", installed)
        missing = sorted(set(installed) - built)
        self.assertEqual(missing, [], "packaging/demo.sh (targets %s) does not build %s, which "
                         "`cmake --install` needs" % (demo_targets(), missing))

    def test_install_into_a_prefix(self):
        prefix = os.path.join(self.tmp, "usr")
        r = subprocess.run(["cmake", "--install", h.BUILD_DIR, "--prefix", prefix],
                           capture_output=True, text=True, timeout=h.COMMAND_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for path in ("sbin/maildictd", "sbin/maildictctl", "bin/maildict-admin",
                     "libexec/opensmtpd/table-maildict",
                     "share/maildict/examples/maildict.conf",
                     "share/maildict/examples/dovecot/10-maildict.conf"):
            self.assertTrue(os.path.exists(os.path.join(prefix, path)), path)


if __name__ == "__main__":
    unittest.main(verbosity=2)
