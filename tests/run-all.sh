#!/bin/sh
# The test command (README, and CI through .ci/run): installs what is missing, builds, and runs
# every test through CTest. Each step is a shell function below and one `step` line at the end;
# a step fails the command when any of its commands fails (set -e), and its time is printed.
#   build_and_test  the normal build: unit tests and the end-to-end tests with the real daemons;
#   asan_tests      the unit tests again with AddressSanitizer and UndefinedBehaviorSanitizer;
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

asan_tests() {
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMAILDICT_SANITIZE=ON -DMAILDICT_E2E=OFF >/dev/null
  cmake --build build-asan -j "$jobs" --target maildict-unit-protocol maildict-unit-storage maildict-unit-conf maildict-unit-server
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -R '^unit_')
}

# CTest in the fuzz build runs every target through tests/fuzz/run-fuzz.sh (whose exit status is
# the fuzzer's) and checks that a crashing target fails this step (fuzz_step_fails_on_crash).
fuzz_tests() {
  CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILDICT_FUZZ=ON >/dev/null
  cmake --build build-fuzz -j "$jobs"
  (cd build-fuzz && ctest --output-on-failure)
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
  step "unit tests with ASan and UBSan ($top/build-asan)" asan_tests
  step "fuzz targets, $MAILDICT_FUZZ_SECONDS s each ($top/build-fuzz)" fuzz_tests
fi
printf '== all tests passed\n%s' "$timings"
