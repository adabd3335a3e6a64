// A fuzz target that crashes on purpose, for tests/fuzz/test-run-fuzz.sh: it proves that the
// fuzz step of the test command (tests/fuzz/run-fuzz.sh) fails when a target crashes, instead of
// printing the crash and passing. Its seed input (tests/fuzz/selftest/crash/) reads one byte
// past a heap buffer, as a real parser bug would, so AddressSanitizer is what stops it.
#include <cstdint>
#include <cstring>
#include <memory>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  if (size >= 5 && std::memcmp(bytes, "crash", 5) == 0) {
    auto buffer = std::make_unique<char[]>(size);
    std::memcpy(buffer.get(), bytes, size);
    volatile char past_the_end = buffer[size];  // heap-buffer-overflow
    (void)past_the_end;
  }
  return 0;
}
