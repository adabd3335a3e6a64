// Tab-escaping, from specs/dovecot.md §1.1.
#include <doctest/doctest.h>

#include <string>

#include "protocol/dict_escape.hpp"

using namespace std::string_literals;
using maildict::dict::append_escaped;
using maildict::dict::escape;
using maildict::dict::unescape;

TEST_CASE("escape: the four special bytes and nothing else") {
  CHECK(escape("\x01") == "\x01" "1");
  CHECK(escape("\t") == "\x01t");
  CHECK(escape("\r") == "\x01r");
  CHECK(escape("\n") == "\x01n");
  CHECK(escape("plain text/with:odd {chars}") == "plain text/with:odd {chars}");
  CHECK(escape("") == "");
  // NUL is never produced as \x01 '0' (C strings cannot hold it), so it passes as it is.
  CHECK(escape("a\0b"s) == "a\0b"s);
  CHECK(escape("caf\xc3\xa9") == "caf\xc3\xa9");
}

TEST_CASE("escape: the observed value with a TAB") {
  // doveadm dict set … $'val\twith tab' was sent as val\x01twith tab.
  CHECK(escape("val\twith tab") == "val\x01twith tab");
}

TEST_CASE("escape: runs, leading and trailing specials") {
  CHECK(escape("\t\t") == "\x01t\x01t");
  CHECK(escape("\na\r") == "\x01n" "a" "\x01r");
  CHECK(escape("a\x01" "1") == "a\x01" "11");
}

TEST_CASE("append_escaped appends to what is there") {
  std::string out = "O";
  append_escaped(out, "a\tb");
  append_escaped(out, "");
  append_escaped(out, "\n");
  CHECK(out == "Oa\x01tb\x01n");
}

TEST_CASE("unescape: every code") {
  CHECK(unescape("\x01" "0") == "\0"s);
  CHECK(unescape("\x01" "1") == "\x01");
  CHECK(unescape("\x01t") == "\t");
  CHECK(unescape("\x01r") == "\r");
  CHECK(unescape("\x01n") == "\n");
  CHECK(unescape("database is down\x01tbadly") == "database is down\tbadly");
  CHECK(unescape("a\x01t\x01n\x01r\x01" "1z") == "a\t\n\r\x01z");
}

TEST_CASE("unescape: any other byte after \\x01 stands for itself") {
  CHECK(unescape("\x01x") == "x");
  CHECK(unescape("\x01\x01") == "\x01");
  CHECK(unescape("\x01\t") == "\t");
  CHECK(unescape("\x01" "5") == "5");
  CHECK(unescape("a\x01\xff" "b") == "a\xff" "b");
}

TEST_CASE("unescape: a trailing lone \\x01 is dropped") {
  CHECK(unescape("\x01") == "");
  CHECK(unescape("abc\x01") == "abc");
  CHECK(unescape("abc\x01t\x01") == "abc\t");
  // \x01\x01 at the end is a complete escape, not a lone one.
  CHECK(unescape("abc\x01\x01") == "abc\x01");
}

TEST_CASE("unescape: text without \\x01 is returned as it is, NULs included") {
  CHECK(unescape("") == "");
  CHECK(unescape("shared/passdb/john@example.org") == "shared/passdb/john@example.org");
  CHECK(unescape("a\0b\tc"s) == "a\0b\tc"s);
}

TEST_CASE("unescape(escape(s)) == s for every single byte and pairs") {
  for (int a = 0; a < 256; ++a) {
    const std::string one(1, static_cast<char>(a));
    CHECK(unescape(escape(one)) == one);
    for (int b : {0, 1, 9, 10, 13, int{'x'}, 0x80, 0xff}) {
      const std::string two = one + static_cast<char>(b);
      REQUIRE(unescape(escape(two)) == two);
    }
  }
}

TEST_CASE("escape output never holds a TAB, CR or LF") {
  std::string all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<char>(i));
  const std::string e = escape(all);
  CHECK(e.find('\t') == std::string::npos);
  CHECK(e.find('\n') == std::string::npos);
  CHECK(e.find('\r') == std::string::npos);
  CHECK(e.size() == all.size() + 4);
  CHECK(unescape(e) == all);
}

TEST_CASE("escape: a special byte at every position of a long field") {
  // The escaper skips clean 8-byte words; a special byte must be found wherever it sits.
  for (char special : {'\x01', '\t', '\r', '\n'}) {
    for (std::size_t len : {1u, 7u, 8u, 9u, 15u, 16u, 17u, 40u}) {
      for (std::size_t pos = 0; pos < len; ++pos) {
        std::string raw(len, 'x');
        raw[pos] = special;
        const std::string e = escape(raw);
        CAPTURE(len);
        CAPTURE(pos);
        REQUIRE(e.size() == len + 1);
        REQUIRE(e[pos] == '\x01');
        REQUIRE(e.find_first_of("\t\r\n") == std::string::npos);
        REQUIRE(unescape(e) == raw);
      }
    }
  }
}

TEST_CASE("escape: bytes near the special ones are left alone in long fields") {
  // 0x0b, 0x0c, 0x0e, 0x80, 0xff look "small" or odd to a word test but are plain bytes.
  const std::string raw = "\x0b\x0c\x0e\x02\x00\x80\xff\x7f\x0b\x0c\x0e\x02\x00\x80\xff\x7f\x0b"s;
  CHECK(escape(raw) == raw);
}
