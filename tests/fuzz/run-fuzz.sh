#!/bin/sh
# Runs one libFuzzer target for a short time from its seed corpus, as the fuzz step of the test
# command does (CMakeLists.txt registers one CTest test per target with this script). The exit
# status is the fuzzer's: a crash, a sanitizer report, a broken invariant or a hang fails the
# step. (The old loop piped the fuzzer into `tail` under /bin/sh, which has no pipefail, so a
# crash printed its report and passed.) tests/fuzz/test-run-fuzz.sh checks this.
#
# Usage: tests/fuzz/run-fuzz.sh BUILD_DIR TARGET [SEED_DIR]
#   runs BUILD_DIR/fuzz_TARGET for $MAILDICT_FUZZ_SECONDS (default 30) seconds from a scratch
#   copy of SEED_DIR (default tests/fuzz/corpus/TARGET); an input that fails is kept in
#   BUILD_DIR/fuzz-artifacts/TARGET/ to reproduce with `BUILD_DIR/fuzz_TARGET FILE`.
set -u
if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR TARGET [SEED_DIR]" >&2
  exit 2
fi
build=$1
target=$2
seeds=${3:-$(dirname "$0")/corpus/$target}
seconds=${MAILDICT_FUZZ_SECONDS:-30}
fuzzer=$build/fuzz_$target
if [ ! -x "$fuzzer" ]; then
  echo "run-fuzz: $fuzzer is not built" >&2
  exit 2
fi
if [ ! -d "$seeds" ]; then
  echo "run-fuzz: no seed corpus $seeds" >&2
  exit 2
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
cp "$seeds"/* "$work/corpus"/
artifacts=$build/fuzz-artifacts/$target
mkdir -p "$artifacts"

# libFuzzer writes new inputs into its first corpus directory: the scratch copy, never the
# seeds in the repository. -timeout: one input running longer than a minute is a hang.
status=0
"$fuzzer" -max_total_time="$seconds" -max_len=4096 -timeout=60 -artifact_prefix="$artifacts/" \
  "$work/corpus" >"$work/log" 2>&1 || status=$?
if [ "$status" -eq 0 ]; then
  tail -n 2 "$work/log"
  echo "fuzz_$target: passed ($seconds s)"
else
  # The sanitizer's verdict first (its shadow-memory legend would push it out of a short tail).
  grep -E '^==[0-9]+==ERROR|^SUMMARY:|invariant broken|ERROR: libFuzzer|runtime error:' "$work/log" | head -n 20
  echo "-- last lines of the fuzzer's output:"
  tail -n 40 "$work/log"
  echo "fuzz_$target: FAILED with exit status $status; the failing input is in $artifacts/"
fi
exit "$status"
