// The invariant check of every libFuzzer target here: a broken invariant prints
// "invariant broken: <condition>" (the line run-fuzz.sh picks out of the fuzzer's output) and
// aborts, which libFuzzer reports as a crash and keeps the input that caused it.
#pragma once
#include <cstdio>
#include <cstdlib>

namespace maildict::fuzz {

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "invariant broken: %s\n", what);
  std::abort();
}

}  // namespace maildict::fuzz

#define CHECK(cond)                                      \
  do {                                                   \
    if (!(cond)) ::maildict::fuzz::fail(#cond);          \
  } while (0)
