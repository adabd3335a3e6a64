#!/usr/bin/env python3
"""The Dovecot files maildict ships can be installed on Debian without overwriting Debian's
own, and every place that names them names the same files (issue 15, item 6).

* No file in packaging/dovecot/ has the name of a file Debian's Dovecot packages install
  (bookworm's, from dpkg's file lists on this host; trixie's too when its tree is there), in
  /etc/dovecot or conf.d: copying ours must never replace one of Debian's.
* The dict-auth file that 10-maildict.conf names exists under that name in packaging/dovecot/,
  and packaging/demo.sh and the README name that same file.
* The README's Dovecot section says to disable Debian's auth-system.conf.ext (else system
  accounts log in) and what Debian's `ssl = yes` and plaintext logins need.
Reads files only: well under a second.
"""
import glob
import os
import re
import subprocess
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
PACKAGING_DOVECOT = os.path.join(TOP, "packaging", "dovecot")
TRIXIE = os.environ.get("MAILDICT_TRIXIE_ROOT", "/opt/maildict-test/trixie")


def debian_dovecot_file_names():
    """Base names of the files Debian's installed dovecot-* packages own (their configuration
    examples live in /usr/share/dovecot and land in /etc/dovecot at install)."""
    names = set()
    lists = glob.glob("/var/lib/dpkg/info/dovecot-*.list")
    lists += glob.glob(os.path.join(TRIXIE, "var/lib/dpkg/info/dovecot-*.list"))
    for path in lists:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith(("/etc/dovecot/", "/usr/share/dovecot/")):
                    names.add(os.path.basename(line))
    return names, lists


def readme_section(title):
    with open(os.path.join(TOP, "README.md")) as f:
        text = f.read()
    start = text.index("\n## %s\n" % title)
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


class ShippedDovecotFiles(unittest.TestCase):
    def test_no_name_of_debians_own_files(self):
        debian, lists = debian_dovecot_file_names()
        self.assertTrue(lists, "no dpkg file list of a dovecot-* package on this host")
        self.assertIn("auth-system.conf.ext", debian)     # the lists are what we think
        ours = sorted(os.listdir(PACKAGING_DOVECOT))
        self.assertTrue(ours)
        clash = [n for n in ours if n in debian]
        self.assertEqual(clash, [], "packaging/dovecot/ files named like Debian's own: %s" % clash)

    def shipped_dict_auth_path(self):
        with open(os.path.join(PACKAGING_DOVECOT, "10-maildict.conf")) as f:
            args = set(re.findall(r"^\s*args\s*=\s*(\S+)", f.read(), re.M))
        self.assertEqual(len(args), 1, "passdb and userdb must name one dict-auth file: %s" % args)
        path = args.pop()
        self.assertTrue(os.path.isfile(os.path.join(PACKAGING_DOVECOT, os.path.basename(path))),
                        "10-maildict.conf names %s, which packaging/dovecot/ lacks" % path)
        return path

    def test_demo_and_readme_name_the_shipped_file(self):
        path = self.shipped_dict_auth_path()
        with open(os.path.join(TOP, "packaging", "demo.sh")) as f:
            demo = f.read()
        named = set(re.findall(r"/etc/dovecot/[\w.-]+\.conf\.ext", demo))
        self.assertEqual(named, {path}, "packaging/demo.sh names %s" % sorted(named))
        section = readme_section("Dovecot 2.3")
        self.assertIn(os.path.basename(path), section)
        self.assertIn(path, section)

    def test_readme_says_what_debians_defaults_need(self):
        section = readme_section("Dovecot 2.3")
        self.assertRegex(section, r"comment out `!include auth-system\.conf\.ext`")
        self.assertIn("ssl = yes", section)
        self.assertIn("disable_plaintext_auth", section)
        with open(os.path.join(PACKAGING_DOVECOT, "10-maildict.conf")) as f:
            self.assertIn("auth-system.conf.ext", f.read())


if __name__ == "__main__":
    unittest.main(verbosity=2)
