// The flat JSON objects passdb/userdb values are made of (specs/dovecot.md §2.4).
#include <doctest/doctest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "protocol/json_writer.hpp"

using namespace std::string_literals;
using maildict::json::append_string;
using maildict::json::FlatObjectWriter;

namespace {
std::string quoted(std::string_view s) {
  std::string out;
  append_string(out, s);
  return out;
}
}  // namespace

TEST_CASE("append_string: plain text is only quoted") {
  CHECK(quoted("") == R"("")");
  CHECK(quoted("john@example.org") == R"("john@example.org")");
  CHECK(quoted("{BLF-CRYPT}$2y$05$gdrZ/./x") == R"("{BLF-CRYPT}$2y$05$gdrZ/./x")");
}

TEST_CASE("append_string: quote and backslash") {
  CHECK(quoted(R"(a"b)") == R"("a\"b")");
  CHECK(quoted(R"(a\b)") == R"("a\\b")");
  CHECK(quoted(R"(\")") == R"("\\\"")");
}

TEST_CASE("append_string: short escapes for the common control characters") {
  CHECK(quoted("\n") == R"("\n")");
  CHECK(quoted("\t") == R"("\t")");
  CHECK(quoted("\r") == R"("\r")");
  CHECK(quoted("\b") == R"("\b")");
  CHECK(quoted("\f") == R"("\f")");
  CHECK(quoted("caf\xc3\xa9 \\ \"q\" \t tab") == "\"caf\xc3\xa9 \\\\ \\\"q\\\" \\t tab\"");
}

TEST_CASE("append_string: other control characters as \\u00XX") {
  CHECK(quoted("\0"s) == R"("\u0000")");
  CHECK(quoted("\x01") == R"("\u0001")");
  CHECK(quoted("\x1f") == R"("\u001f")");
  CHECK(quoted("\x1b[31m") == R"("\u001b[31m")");
  CHECK(quoted("\x7f") == R"("\u007f")");
  CHECK(quoted("a\0b"s) == R"("a\u0000b")");
}

TEST_CASE("append_string: bytes >= 0x80 pass through, even invalid UTF-8") {
  CHECK(quoted("\xc3\xa9") == "\"\xc3\xa9\"");
  CHECK(quoted("\xff\x80") == "\"\xff\x80\"");
}

TEST_CASE("append_string appends to what is there") {
  std::string out = "x=";
  append_string(out, "a");
  append_string(out, "b");
  CHECK(out == R"(x="a""b")");
}

TEST_CASE("append_string: no raw control byte survives") {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  const std::string q = quoted(all);
  for (char c : q) {
    const auto u = static_cast<unsigned char>(c);
    REQUIRE(u >= 0x20);
    REQUIRE(u != 0x7f);
  }
  CHECK(q.front() == '"');
  CHECK(q.back() == '"');
}

TEST_CASE("FlatObjectWriter: an empty object") {
  FlatObjectWriter w;
  CHECK(w.finish() == "{}");
}

TEST_CASE("FlatObjectWriter: a userdb object, strings and numbers") {
  FlatObjectWriter w;
  w.add("user", "john@example.org")
      .add("uid", std::int64_t{1000})
      .add("gid", std::int64_t{1000})
      .add("home", "/var/vmail/example.org/john")
      .add("quota_rule", "*:storage=2G");
  CHECK(w.finish() ==
        R"({"user":"john@example.org","uid":1000,"gid":1000,"home":"/var/vmail/example.org/john","quota_rule":"*:storage=2G"})");
}

TEST_CASE("FlatObjectWriter: numbers at the limits, and int literals") {
  FlatObjectWriter w;
  w.add("min", std::numeric_limits<std::int64_t>::min())
      .add("max", std::numeric_limits<std::int64_t>::max())
      .add("zero", 0)
      .add("neg", -5);
  CHECK(w.finish() ==
        R"({"min":-9223372036854775808,"max":9223372036854775807,"zero":0,"neg":-5})");
}

TEST_CASE("FlatObjectWriter: names and values are escaped") {
  FlatObjectWriter w;
  w.add("pass\"word", "a\\b\nc");
  CHECK(w.finish() == R"({"pass\"word":"a\\b\nc"})");
}

TEST_CASE("FlatObjectWriter: reusable after finish") {
  FlatObjectWriter w;
  w.add("a", "1");
  CHECK(w.finish() == R"({"a":"1"})");
  w.add("b", "2");
  CHECK(w.finish() == R"({"b":"2"})");
  CHECK(w.finish() == "{}");
}

TEST_CASE("append_string: an escaped byte at every position of a long string") {
  // The writer skips clean 8-byte words; every byte that needs escaping must be found.
  for (char special : {'"', '\\', '\n', '\0', '\x1f', '\x7f'}) {
    for (std::size_t len : {1u, 7u, 8u, 9u, 16u, 17u, 33u}) {
      for (std::size_t pos = 0; pos < len; ++pos) {
        std::string raw(len, 'a');
        raw[pos] = special;
        const std::string q = quoted(raw);
        CAPTURE(len);
        CAPTURE(pos);
        REQUIRE(q[pos + 1] == '\\');
        const bool short_escape = special == '"' || special == '\\' || special == '\n';
        REQUIRE(q.size() == len + 2 + (short_escape ? 1 : 5));
      }
    }
  }
  // Bytes that are harmless stay raw, even when a word test might flag them.
  const std::string plain = "\x20\x21\x23\x5b\x5d\x7e\x80\xff\x20\x21\x23\x5b\x5d\x7e\x80\xff";
  CHECK(quoted(plain) == "\"" + plain + "\"");
}
