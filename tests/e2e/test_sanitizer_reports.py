#!/usr/bin/env python3
"""A sanitizer report in a program's log fails the test (issue 12).

The test command runs the bad-input and fault suites against an ASan+UBSan build of maildictd
(tests/run-all.sh, asan_tests). A report there does not always stop the program (LeakSanitizer
reports at exit; a report in a child process), so the harness reads the logs: Maildictd.stop()
reads maildictd's, TempDir.cleanup() every *.log in the test's directory. This checks the
second with a report of each kind written into a log, and that a clean log passes. No daemon;
well under a second.
"""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

REPORTS = {
    "asan": "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010\n"
            "READ of size 1 at 0x602000000010 thread T3\n    #0 0x55 in maildict::dict::parse_line\n",
    "ubsan": "protocol/dict_codec.cpp:120:9: runtime error: signed integer overflow: "
             "2147483647 + 1 cannot be represented in type 'int'\n",
    "lsan": "==4242==ERROR: LeakSanitizer: detected memory leaks\n\nDirect leak of 64 byte(s)\n",
}


class SanitizerReports(unittest.TestCase):
    def test_report_in_a_log_fails_cleanup_and_keeps_the_directory(self):
        for kind, report in REPORTS.items():
            with self.subTest(kind=kind):
                tmp = h.TempDir()
                try:
                    sub = os.path.join(tmp.path, "dovecot")
                    os.mkdir(sub)
                    with open(os.path.join(tmp.path, "maildictd.log"), "w") as f:
                        f.write("maildictd: serving /tmp/x/dict.sock\n")
                    with open(os.path.join(sub, "table.log"), "w") as f:
                        f.write("starting\n" + report + "more lines\n")
                    with self.assertRaises(AssertionError) as raised:
                        tmp.cleanup()
                    self.assertIn("table.log", str(raised.exception))
                    self.assertIn(report.splitlines()[0], str(raised.exception))
                    self.assertTrue(os.path.isdir(tmp.path), "the directory is kept for diagnosis")
                finally:
                    h.shutil.rmtree(tmp.path, ignore_errors=True)

    def test_clean_logs_pass(self):
        tmp = h.TempDir()
        with open(os.path.join(tmp.path, "maildictd.log"), "w") as f:
            f.write("maildictd: lookup failed: database error (temporary failure)\n")
        tmp.cleanup()
        self.assertFalse(os.path.exists(tmp.path))


if __name__ == "__main__":
    unittest.main(verbosity=2)
