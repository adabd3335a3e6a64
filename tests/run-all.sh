#!/bin/sh
# The test command (README, and CI through .ci/run): installs what is missing, builds, and runs
# every test through CTest:
#   1. the normal build: unit tests and the end-to-end tests with the real Dovecot;
#   2. the unit tests again with AddressSanitizer and UndefinedBehaviorSanitizer;
#   3. the libFuzzer targets (clang), each for a short run from its seed corpus.
# Usage: tests/run-all.sh [--quick]   (--quick: step 1 only)
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
jobs=$(nproc)
fuzz_seconds=${MAILDICT_FUZZ_SECONDS:-30}

packaging/install-deps.sh test

echo "== build and test ($top/build)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$jobs"
(cd build && ctest --output-on-failure -j 1)

[ "${1:-}" = "--quick" ] && exit 0

echo "== unit tests with ASan and UBSan ($top/build-asan)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMAILDICT_SANITIZE=ON -DMAILDICT_E2E=OFF >/dev/null
cmake --build build-asan -j "$jobs" --target maildict-unit-protocol maildict-unit-storage maildict-unit-conf maildict-unit-server
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -R '^unit_')

echo "== fuzz targets, $fuzz_seconds s each ($top/build-fuzz)"
CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILDICT_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "$jobs" --target fuzz_dict_parser fuzz_smtpd_imsg fuzz_smtpd_text fuzz_policy_codec
for target in dict_parser smtpd_imsg smtpd_text policy_codec; do
  corpus=$(mktemp -d)
  cp tests/fuzz/corpus/$target/* "$corpus"/ 2>/dev/null || true
  ./build-fuzz/fuzz_$target -max_total_time="$fuzz_seconds" -max_len=4096 "$corpus" 2>&1 | tail -n 3
  rm -rf "$corpus"
done
echo "== all tests passed"
