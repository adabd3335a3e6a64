#!/bin/sh
# Checks that the fuzz step fails when a target crashes (issue 12): runs tests/fuzz/run-fuzz.sh,
# exactly as the step runs every target, on fuzz_selftest_crash with an input that overflows a
# heap buffer, and passes only if the step exits non-zero, AddressSanitizer's report reached its
# output and the crashing input was kept.
# Usage: tests/fuzz/test-run-fuzz.sh BUILD_DIR   (a build configured with -DMAILDICT_FUZZ=ON)
set -u
build=$1
here=$(dirname "$0")
artifacts=$build/fuzz-artifacts/selftest_crash
rm -rf "$artifacts"
out=$(MAILDICT_FUZZ_SECONDS=20 sh "$here/run-fuzz.sh" "$build" selftest_crash "$here/selftest/crash" 2>&1)
status=$?
printf '%s\n' "$out" | grep -E 'SUMMARY:|fuzz_selftest_crash:'
failed=0
if [ "$status" -eq 0 ]; then
  echo "FAIL: the fuzz step exited 0 although its target crashed"
  failed=1
fi
if ! printf '%s\n' "$out" | grep -q 'SUMMARY: AddressSanitizer: heap-buffer-overflow'; then
  echo "FAIL: AddressSanitizer's report is not in the step's output"
  failed=1
fi
if ! ls "$artifacts"/crash-* >/dev/null 2>&1; then
  echo "FAIL: the crashing input was not kept in $artifacts"
  failed=1
fi
[ "$failed" -eq 0 ] && echo "ok: the fuzz step failed (exit $status) on a crashing target"
exit "$failed"
