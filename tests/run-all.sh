#!/bin/sh
# The test command (README, and CI through .ci/run): installs what is missing, builds, and runs
# every test through CTest. Each step is a shell function below and one `step` line at the end;
# a step fails the command when any of its commands fails (set -e), and its time is printed.
#   build_and_test  the normal build: unit tests and the end-to-end tests with the real daemons;
#   asan_tests      the unit tests and the bad-input and fault suites again with AddressSanitizer
#                   and UndefinedBehaviorSanitizer;
#   fuzz_tests      the libFuzzer targets (clang), each for a short run from its seed corpus.
# Usage: tests/run-all.sh [--quick]   (--quick: the first step only)
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
jobs=$(nproc)
# A test that cannot find Dovecot, smtpd or PostgreSQL fails here instead of skipping
# (tests/e2e/harness.py, needs_peer); by hand, without it, such a test skips and says so.
export MAILDICT_REQUIRE_PEERS=1
# Seconds per fuzz target; tests/fuzz/run-fuzz.sh reads it.
export MAILDICT_FUZZ_SECONDS="${MAILDICT_FUZZ_SECONDS:-30}"

build_and_test() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j "$jobs"
  (cd build && ctest --output-on-failure -j 1)
}

# The unit tests, and the end-to-end suites that feed maildictd hostile input and faults, against
# programs built with ASan and UBSan: CTest points the harness at build-asan's programs
# (MAILDICT_BUILD_DIR). A sanitizer report stops the program (halt_on_error; UBSan is built
# with -fno-sanitize-recover) and fails the test through its exit status, and the harness also
# fails a test whose logs hold a report (tests/e2e/harness.py, sanitizer_report).
asan_suites='^(unit_.*|e2e_test_(bad_input|db_unavailable|pg_restart|config_check|sanitizer_reports))$'
asan_tests() {
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMAILDICT_SANITIZE=ON -DMAILDICT_E2E=ON >/dev/null
  cmake --build build-asan -j "$jobs" --target maildict-unit-protocol maildict-unit-storage maildict-unit-conf \
    maildict-unit-server maildictd maildict-admin maildictctl table-maildict
  (cd build-asan &&
    ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0 \
    LSAN_OPTIONS="suppressions=$top/tests/sanitizers/lsan.supp:print_suppressions=0" \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure -R "$asan_suites")
}

# CTest in the fuzz build runs every target through tests/fuzz/run-fuzz.sh (whose exit status is
# the fuzzer's) and checks that a crashing target fails this step (fuzz_step_fails_on_crash).
fuzz_tests() {
  CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILDICT_FUZZ=ON >/dev/null
  cmake --build build-fuzz -j "$jobs"
  (cd build-fuzz && ctest --output-on-failure -j "$jobs")  # one core per fuzzer
}

# step NAME FUNCTION: runs one step and notes its time for the summary.
timings=""
step() {
  echo "== $1"
  started=$(date +%s)
  "$2"
  seconds=$(($(date +%s) - started))
  timings="$timings  $1: ${seconds} s
"
  echo "== $1: passed in ${seconds} s"
}

packaging/install-deps.sh test

step "build and test ($top/build)" build_and_test
if [ "${1:-}" != "--quick" ]; then
  step "unit tests and bad-input/fault suites with ASan and UBSan ($top/build-asan)" asan_tests
  step "fuzz targets, $MAILDICT_FUZZ_SECONDS s each ($top/build-fuzz)" fuzz_tests
fi
printf '== all tests passed\n%s' "$timings"
