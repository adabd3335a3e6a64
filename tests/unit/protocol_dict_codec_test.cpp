// The dict protocol parser and encoders, built from the transcripts in specs/dovecot.md §1.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "protocol/dict_codec.hpp"

using namespace std::string_literals;
using namespace maildict::dict;

namespace {

Request parsed(std::string_view line) {
  auto r = parse_line(line);
  if (auto* e = std::get_if<ParseError>(&r)) FAIL_CHECK("unexpected parse error: " << e->message);
  REQUIRE(std::holds_alternative<Request>(r));
  return std::get<Request>(std::move(r));
}

template <class T>
T parsed_as(std::string_view line) {
  Request r = parsed(line);
  REQUIRE(std::holds_alternative<T>(r));
  return std::get<T>(std::move(r));
}

std::string parse_error(std::string_view line) {
  auto r = parse_line(line);
  REQUIRE(std::holds_alternative<ParseError>(r));
  return std::get<ParseError>(r).message;
}

bool rejected(std::string_view line) { return std::holds_alternative<ParseError>(parse_line(line)); }

constexpr std::optional<std::uint32_t> plain = std::nullopt;

Hello hello(unsigned major, unsigned minor) {
  Hello h;
  h.major = major;
  h.minor = minor;
  return h;
}

}  // namespace

// ---- handshake ---------------------------------------------------------------------------------

TEST_CASE("H: the Dovecot 2.3 handshake") {
  CHECK(parsed("H3\t2\t0\t\tauthdict") ==
        Request{Hello{.major = 3, .minor = 2, .value_type = 0, .user = "", .dict_name = "authdict"}});
}

TEST_CASE("H: the Dovecot 2.4 handshake and a minor-0 client") {
  CHECK(parsed_as<Hello>("H4\t0\t0\t\tauthsql") ==
        Hello{.major = 4, .minor = 0, .value_type = 0, .user = "", .dict_name = "authsql"});
  CHECK(parsed_as<Hello>("H3\t0\t0\t\tauthsql").minor == 0);
}

TEST_CASE("H: a dict name with ':' and an escaped TAB") {
  auto h = parsed_as<Hello>("H3\t2\t0\tobsolete\tname:with:colons\x01tx");
  CHECK(h.user == "obsolete");
  CHECK(h.dict_name == "name:with:colons\tx");
}

TEST_CASE("H: lenient about missing user and name") {
  CHECK(parsed_as<Hello>("H3\t2\t0") == hello(3, 2));
  auto h = parsed_as<Hello>("H3\t1\t0\tu");
  CHECK(h.minor == 1);
  CHECK(h.user == "u");
  CHECK(h.dict_name == "");
}

TEST_CASE("H: extra fields are ignored") {
  auto h = parsed_as<Hello>("H3\t2\t0\t\tauthdict\tfuture\tmore");
  CHECK(h.dict_name == "authdict");
}

TEST_CASE("H: malformed") {
  CHECK(rejected("H"));
  CHECK(rejected("H3"));
  CHECK(rejected("H3\t2"));
  CHECK(rejected("H\t2\t0\t\tx"));
  CHECK(rejected("Hx\t2\t0\t\tx"));
  CHECK(rejected("H3\t-2\t0\t\tx"));
  CHECK(rejected("H3\t2\t\t\tx"));
  CHECK(rejected("H3\t+2\t0\t\tx"));
  CHECK(rejected("H 3\t2\t0\t\tx"));
  CHECK(rejected("H3.0\t2\t0\t\tx"));
  CHECK(rejected("H4294967296\t0\t0\t\tx"));
  CHECK(parse_error("H3\t2").rfind("H: ", 0) == 0);
}

// ---- reply style ---------------------------------------------------------------------------------

TEST_CASE("reply_style_for") {
  auto s30 = reply_style_for(hello(3, 0));
  REQUIRE(s30);
  CHECK_FALSE(s30->async_ids);
  CHECK_FALSE(s30->multi_ok);

  auto s31 = reply_style_for(hello(3, 1));
  REQUIRE(s31);
  CHECK(s31->async_ids);
  CHECK_FALSE(s31->multi_ok);

  auto s32 = reply_style_for(parsed_as<Hello>("H3\t2\t0\t\tauthdict"));
  REQUIRE(s32);
  CHECK(s32->async_ids);
  CHECK(s32->multi_ok);

  auto s39 = reply_style_for(hello(3, 9));
  REQUIRE(s39);
  CHECK(s39->async_ids);
  CHECK(s39->multi_ok);

  for (unsigned minor : {0u, 1u, 7u}) {
    auto s4 = reply_style_for(hello(4, minor));
    REQUIRE(s4);
    CHECK(s4->async_ids);
    CHECK(s4->multi_ok);
  }

  for (unsigned major : {0u, 1u, 2u, 5u, 300u}) {
    CAPTURE(major);
    CHECK_FALSE(reply_style_for(hello(major, 2)));
  }
}

// ---- lookup ----------------------------------------------------------------------------------

TEST_CASE("L: the auth passdb lookup") {
  CHECK(parsed("Lshared/passdb/john@example.org\tjohn@example.org") ==
        Request{Lookup{.key = "shared/passdb/john@example.org", .user = "john@example.org"}});
}

TEST_CASE("L: empty user, missing user, priv key") {
  CHECK(parsed_as<Lookup>("Lshared/userdb/nosuch@example.org\t") ==
        Lookup{.key = "shared/userdb/nosuch@example.org", .user = ""});
  CHECK(parsed_as<Lookup>("Lshared/userdb/x") == Lookup{.key = "shared/userdb/x", .user = ""});
  CHECK(parsed_as<Lookup>("Lpriv/quota/storage\tjohn@example.org") ==
        Lookup{.key = "priv/quota/storage", .user = "john@example.org"});
}

TEST_CASE("L: fields are unescaped after splitting on TAB") {
  CHECK(parsed_as<Lookup>("Lpriv/some key\x01twith\x01ntab\tjo\x01" "1hn") ==
        Lookup{.key = "priv/some key\twith\ntab", .user = "jo\x01hn"});
}

TEST_CASE("L: too many fields") {
  CHECK(rejected("Lkey\tuser\textra"));
  CHECK(rejected("Lkey\tuser\t"));
  CHECK(parse_error("La\tb\tc\td\te\tf\tg") == "L: wrong number of fields");
}

TEST_CASE("L: NUL bytes and a lone trailing \\x01 are taken as data") {
  CHECK(parsed_as<Lookup>("Lsha\0red\tus\0er"s) == Lookup{.key = "sha\0red"s, .user = "us\0er"s});
  CHECK(parsed_as<Lookup>("Lkey\x01\tuser\x01") == Lookup{.key = "key", .user = "user"});
  CHECK(parsed_as<Lookup>("Lkey\x01" "0x\tu") == Lookup{.key = "key\0x"s, .user = "u"});
}

// ---- iterate ---------------------------------------------------------------------------------

TEST_CASE("I: auth user iteration with the user mask") {
  CHECK(parsed("I0\t0\tshared/userdb/\t*") ==
        Request{Iterate{.flags = 0, .max_rows = 0, .path = "shared/userdb/", .user = "*"}});
  CHECK(parsed_as<Iterate>("I0\t0\tshared/userdb/\tj*").user == "j*");
}

TEST_CASE("I: doveadm flags") {
  auto it = parsed_as<Iterate>("I24\t0\tshared/userdb/john@example.org\t");
  CHECK(it.flags == (iterate_exact_key | iterate_no_value));
  CHECK(it.path == "shared/userdb/john@example.org");

  it = parsed_as<Iterate>("I8\t1\tshared/userdb/\t");
  CHECK(it.flags == iterate_no_value);
  CHECK(it.max_rows == 1);

  it = parsed_as<Iterate>("I1\t0\tshared/userdb/\t");
  CHECK(it.flags == iterate_recurse);
}

TEST_CASE("I: a missing user field is an empty user; big max_rows") {
  CHECK(parsed_as<Iterate>("I0\t0\tshared/userdb/") ==
        Iterate{.flags = 0, .max_rows = 0, .path = "shared/userdb/", .user = ""});
  CHECK(parsed_as<Iterate>("I0\t18446744073709551615\tp\t").max_rows == 18446744073709551615ull);
}

TEST_CASE("I: malformed") {
  CHECK(rejected("I"));
  CHECK(rejected("I0"));
  CHECK(rejected("I0\t0"));
  CHECK(rejected("I0\t0\tp\tu\textra"));
  CHECK(rejected("Ix\t0\tp\tu"));
  CHECK(rejected("I0\t-1\tp\tu"));
  CHECK(rejected("I\t0\tp\tu"));
  CHECK(rejected("I0\t\tp\tu"));
  CHECK(rejected("I4294967296\t0\tp\tu"));
  CHECK(rejected("I0\t18446744073709551616\tp\tu"));
  CHECK(rejected("I0x10\t0\tp\tu"));
  CHECK(parse_error("I0\tz\tp\tu") == "I: bad max_rows");
}

// ---- transactions (§1.9 (d) and §1.4 Commit) ------------------------------------------------

TEST_CASE("doveadm dict set: B, S with an escaped TAB, C") {
  CHECK(parsed("B1\tjohn@example.org") == Request{Begin{.id = 1, .user = "john@example.org"}});
  CHECK(parsed("S1\tpriv/some key\tval\x01twith tab") ==
        Request{Set{.id = 1, .key = "priv/some key", .value = "val\twith tab"}});
  CHECK(parsed("C1") == Request{Commit{.id = 1, .legacy_async = false}});
}

TEST_CASE("doveadm dict unset / inc") {
  CHECK(parsed_as<Begin>("B1\t") == Begin{.id = 1, .user = "", .expire_secs = 0});
  CHECK(parsed_as<Unset>("U1\tshared/x") == Unset{.id = 1, .key = "shared/x"});
  CHECK(parsed_as<AtomicInc>("A1\tshared/counter\t5") ==
        AtomicInc{.id = 1, .key = "shared/counter", .diff = 5});
}

TEST_CASE("the commit transcript: S with TAB and LF, A on a missing row, rollback") {
  CHECK(parsed_as<Set>("S1\tpriv/tabbed\ta\x01tb\x01nc") ==
        Set{.id = 1, .key = "priv/tabbed", .value = "a\tb\nc"});
  CHECK(parsed_as<Set>("S1\tpriv/counter\t10").value == "10");
  CHECK(parsed_as<AtomicInc>("A3\tpriv/missing\t1").diff == 1);
  CHECK(parsed_as<Commit>("C3").id == 3);
  CHECK(parsed_as<Set>("S6\tshared/passdb/x\tfoo") ==
        Set{.id = 6, .key = "shared/passdb/x", .value = "foo"});
  CHECK(parsed("R5") == Request{Rollback{.id = 5}});
}

TEST_CASE("B: the 2.4 form with expire_secs") {
  CHECK(parsed_as<Begin>("B7\tjohn@example.org\t3600") ==
        Begin{.id = 7, .user = "john@example.org", .expire_secs = 3600});
  CHECK(parsed_as<Begin>("B7\t\t0").expire_secs == 0);
}

TEST_CASE("B: malformed") {
  CHECK(rejected("B"));
  CHECK(rejected("B1"));
  CHECK(rejected("B1\tu\t1\textra"));
  CHECK(rejected("B\tu"));
  CHECK(rejected("B-1\tu"));
  CHECK(rejected("B1\tu\t-5"));
  CHECK(rejected("B1\tu\t"));
  CHECK(rejected("B4294967296\tu"));
  CHECK(parse_error("Bx\tu") == "B: bad transaction id");
}

TEST_CASE("ids: the whole uint32 range, leading zeros") {
  CHECK(parsed_as<Commit>("C4294967295").id == 4294967295u);
  CHECK(parsed_as<Commit>("C0").id == 0);
  CHECK(parsed_as<Commit>("C007").id == 7);
  CHECK(rejected("C4294967296"));
  CHECK(rejected("C99999999999999999999999999999"));
}

TEST_CASE("S, U: exact field counts") {
  CHECK(rejected("S1\tkey"));
  CHECK(rejected("S1\tkey\tvalue\textra"));
  CHECK(rejected("S1"));
  CHECK(parsed_as<Set>("S1\t\t") == Set{.id = 1, .key = "", .value = ""});
  CHECK(rejected("U1"));
  CHECK(rejected("U1\tkey\textra"));
  CHECK(rejected("Ux\tkey"));
  CHECK(parse_error("S1\tk") == "S: wrong number of fields");
}

TEST_CASE("A: a signed 64-bit diff") {
  CHECK(parsed_as<AtomicInc>("A1\tk\t-1").diff == -1);
  CHECK(parsed_as<AtomicInc>("A1\tk\t0").diff == 0);
  CHECK(parsed_as<AtomicInc>("A1\tk\t9223372036854775807").diff == INT64_MAX);
  CHECK(parsed_as<AtomicInc>("A1\tk\t-9223372036854775808").diff == INT64_MIN);
  CHECK(rejected("A1\tk\t9223372036854775808"));
  CHECK(rejected("A1\tk\t-9223372036854775809"));
  CHECK(rejected("A1\tk\t"));
  CHECK(rejected("A1\tk\t-"));
  CHECK(rejected("A1\tk\t+5"));
  CHECK(rejected("A1\tk\t5x"));
  CHECK(rejected("A1\tk\t 5"));
  CHECK(rejected("A1\tk\t5 "));
  CHECK(rejected("A1\tk\t1.5"));
  CHECK(rejected("A1\tk\t0x10"));
  CHECK(rejected("A1\tk\t5\0"s));
  CHECK(rejected("A1\tk"));
  CHECK(rejected("A1\tk\t5\t6"));
  CHECK(parse_error("A1\tk\tlots") == "A: bad diff");
}

TEST_CASE("numbers are read after unescaping, like every field") {
  CHECK(parsed_as<AtomicInc>("A1\tk\t\x01" "5").diff == 5);
  CHECK(rejected("A1\tk\t\x01t5"));
  CHECK(parsed_as<Commit>("C1\x01").id == 1);  // lone trailing \x01 dropped
}

TEST_CASE("T: timestamp") {
  CHECK(parsed_as<Timestamp>("T1\t1795320234\t909068") ==
        Timestamp{.id = 1, .secs = 1795320234, .nsecs = 909068});
  CHECK(parsed_as<Timestamp>("T1\t-1\t0").secs == -1);
  CHECK(rejected("T1\t5"));
  CHECK(rejected("T1\t5\t6\t7"));
  CHECK(rejected("T1\t5\t-6"));
  CHECK(rejected("T1\t5\t4294967296"));
  CHECK(rejected("T1\tnow\t0"));
}

TEST_CASE("V: yes/y/1 and no/n/0 in any case") {
  for (const char* yes : {"V2\tyes", "V2\tYES", "V2\tYeS", "V2\ty", "V2\tY", "V2\t1"}) {
    CAPTURE(yes);
    CHECK(parsed_as<HideLogValues>(yes) == HideLogValues{.id = 2, .hide = true});
  }
  for (const char* no : {"V2\tno", "V2\tNO", "V2\tnO", "V2\tn", "V2\tN", "V2\t0"}) {
    CAPTURE(no);
    CHECK(parsed_as<HideLogValues>(no) == HideLogValues{.id = 2, .hide = false});
  }
  for (const char* bad : {"V2\t", "V2\tyess", "V2\ttrue", "V2\t2", "V2\tnope", "V2", "V2\tyes\tno",
                          "V\tyes", "V2\t yes"}) {
    CAPTURE(bad);
    CHECK(rejected(bad));
  }
}

TEST_CASE("C, D, R: exactly one field") {
  CHECK(parsed("D7") == Request{Commit{.id = 7, .legacy_async = true}});
  for (const char* bad : {"C", "C\t", "C1\t", "C1\t2", "D", "Dx", "D1\t", "R", "R1\tx", "R-1",
                          "C+1", "C 1", "C1 "}) {
    CAPTURE(bad);
    CHECK(rejected(bad));
  }
}

// ---- errors ------------------------------------------------------------------------------------

TEST_CASE("empty line and unknown commands") {
  CHECK(parse_error("") == "empty line");
  CHECK(parse_error("Xfoo") == "unknown command 'X'");
  CHECK(parse_error("lshared/passdb/x\ty") == "unknown command 'l'");
  CHECK(parse_error("\0Lkey"s) == "unknown command byte 0x00");
  CHECK(parse_error("\tLkey") == "unknown command byte 0x09");
  CHECK(parse_error("\xff") == "unknown command byte 0xff");
  CHECK(parse_error(" L") == "unknown command byte 0x20");
  // Reply codes are not commands.
  CHECK(rejected("O1"));
  CHECK(rejected("*1"));
  CHECK(rejected("+1\tO"));
  CHECK(rejected("\r"));
}

TEST_CASE("error messages never echo the line") {
  const std::string secret = "hunter2-secret-password";
  for (std::string line : {"S1\tshared/passdb/x\t" + secret + "\textra", "S" + secret,
                           "A1\tk\t" + secret, "V1\t" + secret, "H" + secret + "\t1\t0",
                           "I" + secret + "\t0\tp", "C" + secret, "Q" + secret,
                           "L" + secret + "\ta\tb"}) {
    CAPTURE(line);
    const std::string msg = parse_error(line);
    CHECK(msg.find("hunter2") == std::string::npos);
    CHECK(msg.size() < 40);
  }
}

TEST_CASE("a huge line is handled without trouble") {
  const std::string key(1 << 16, 'k');
  CHECK(parsed_as<Lookup>("L" + key + "\tu").key == key);
  const std::string many_tabs(1 << 16, '\t');
  CHECK(rejected("L" + many_tabs));
  CHECK(rejected("C" + std::string(10000, '9')));
}

TEST_CASE("expects_reply: only L, I, C and D") {
  CHECK(expects_reply(parsed("Lk\tu")));
  CHECK(expects_reply(parsed("I0\t0\tshared/userdb/\t")));
  CHECK(expects_reply(parsed("C1")));
  CHECK(expects_reply(parsed("D1")));
  for (const char* line : {"H3\t2\t0\t\tx", "B1\tu", "S1\tk\tv", "U1\tk", "A1\tk\t1", "T1\t1\t1",
                           "V1\tyes", "R1"}) {
    CAPTURE(line);
    CHECK_FALSE(expects_reply(parsed(line)));
  }
}

// ---- encoders ----------------------------------------------------------------------------------

TEST_CASE("async id line") {
  std::string out;
  append_async_id(out, 1);
  append_async_id(out, 4294967295u);
  CHECK(out == "*1\n*4294967295\n");
}

TEST_CASE("lookup replies: plain FIFO, as §1.9 (a) and (b)") {
  std::string out;
  append_lookup_found(out, plain, R"({"password": "{SHA512-CRYPT}$6$JoBp"})");
  CHECK(out == "O{\"password\": \"{SHA512-CRYPT}$6$JoBp\"}\n");
  out.clear();
  append_lookup_found(out, plain, "5G");
  append_lookup_not_found(out, plain);
  CHECK(out == "O5G\nN\n");
}

TEST_CASE("lookup replies: with async ids, as from Dovecot's dict-sql") {
  std::string out;
  append_async_id(out, 1);
  append_lookup_found(out, 1, R"({"password":"{BLF-CRYPT}$2y$05$gdrZ"})");
  CHECK(out == "*1\n+1\tO{\"password\":\"{BLF-CRYPT}$2y$05$gdrZ\"}\n");
  out.clear();
  append_lookup_not_found(out, 2);
  CHECK(out == "+2\tN\n");
  out.clear();
  append_lookup_failed(out, 3, "sql dict lookup: Invalid/unmapped key: shared/unmapped/key");
  CHECK(out == "+3\tFsql dict lookup: Invalid/unmapped key: shared/unmapped/key\n");
}

TEST_CASE("lookup replies: values and errors are escaped") {
  std::string out;
  append_lookup_failed(out, 1, "database is down\tbadly");
  CHECK(out == "+1\tFdatabase is down\x01tbadly\n");
  out.clear();
  append_lookup_found(out, plain, "a\nb\rc\x01" "d\te");
  CHECK(out == "Oa\x01nb\x01rc\x01" "1d\x01te\n");
  out.clear();
  append_lookup_found(out, plain, "");
  CHECK(out == "O\n");
}

TEST_CASE("M reply: the observed bytes for [\"v1\", \"v\\t2\"]") {
  const std::vector<std::string> values{"v1", "v\t2"};
  std::string out;
  append_lookup_values(out, 1, ReplyStyle{.async_ids = true, .multi_ok = true}, values);
  CHECK(out == "+1\tMv1\x01tv\x01" "1t2\n");
}

TEST_CASE("M reply: double escaping of every special byte") {
  const std::vector<std::string> values{"\x01", "\n\r", "", "x"};
  std::string out;
  append_lookup_values(out, plain, ReplyStyle{.async_ids = false, .multi_ok = true}, values);
  // inner: "\x011" "\x01n\x01r" "" "x" joined by TAB; the outer escape doubles every \x01.
  CHECK(out == "M\x01" "11" "\x01t" "\x01" "1n\x01" "1r" "\x01t" "\x01t" "x\n");
  CHECK(out.find('\t') == std::string::npos);
}

TEST_CASE("append_lookup_values: one value is O, none is N, no M for a 3.0 client") {
  const ReplyStyle multi{.async_ids = true, .multi_ok = true};
  const ReplyStyle v30{.async_ids = false, .multi_ok = false};
  std::string out;
  const std::vector<std::string> one{"only\tone"};
  append_lookup_values(out, 5, multi, one);
  CHECK(out == "+5\tOonly\x01tone\n");
  out.clear();
  append_lookup_values(out, 5, multi, std::span<const std::string>{});
  CHECK(out == "+5\tN\n");
  out.clear();
  const std::vector<std::string> two{"first", "second"};
  append_lookup_values(out, plain, v30, two);
  CHECK(out == "Ofirst\n");
  out.clear();
  append_lookup_values(out, 2, ReplyStyle{.async_ids = true, .multi_ok = false}, two);
  CHECK(out == "+2\tOfirst\n");
}

TEST_CASE("iteration: plain rows and end, as §1.9 (c)") {
  std::string out;
  append_iterate_row(out, plain, "shared/userdb/john@example.org", "{}");
  append_iterate_row(out, plain, "shared/userdb/jane@example.org", "{}");
  append_iterate_end(out, plain);
  CHECK(out == "Oshared/userdb/john@example.org\t{}\nOshared/userdb/jane@example.org\t{}\n\n");
}

TEST_CASE("iteration: async rows, NO_VALUE row keeps its TAB, end line") {
  std::string out;
  append_async_id(out, 2);
  append_iterate_row(out, 2, "shared/userdb/jane@example.org", "");
  append_iterate_end(out, 2);
  CHECK(out == "*2\n+2\tOshared/userdb/jane@example.org\t\n+2\t\n");
}

TEST_CASE("iteration: escaped key and value, failure") {
  std::string out;
  append_iterate_row(out, 1, "k\te", "v\nv");
  CHECK(out == "+1\tOk\x01te\tv\x01nv\n");
  out.clear();
  append_iterate_failed(out, 3, "sql dict iterate failed for shared/nothing/: Invalid/unmapped path");
  CHECK(out == "+3\tFsql dict iterate failed for shared/nothing/: Invalid/unmapped path\n");
  out.clear();
  append_iterate_failed(out, plain, "a\tb");
  CHECK(out == "Fa\x01tb\n");
}

TEST_CASE("commit replies") {
  std::string out;
  const Commit c1{.id = 1};
  append_commit_reply(out, 1, c1, CommitResult::ok, "ignored");
  CHECK(out == "+1\tO1\n");
  out.clear();
  append_commit_reply(out, 5, Commit{.id = 3}, CommitResult::not_found, "");
  CHECK(out == "+5\tN3\n");
  out.clear();
  append_commit_reply(out, 7, Commit{.id = 6}, CommitResult::failed,
                      "sql dict: commit failed: NOT NULL constraint failed: users.userdb");
  CHECK(out == "+7\tF6\tsql dict: commit failed: NOT NULL constraint failed: users.userdb\n");
  out.clear();
  append_commit_reply(out, plain, Commit{.id = 9}, CommitResult::write_uncertain, "timeout\there");
  CHECK(out == "W9\ttimeout\x01there\n");
  out.clear();
  append_commit_reply(out, plain, Commit{.id = 4294967295u}, CommitResult::failed, "");
  CHECK(out == "F4294967295\t\n");
}

TEST_CASE("commit replies for the legacy D command carry an 'A' before the code") {
  const Commit d = parsed_as<Commit>("D7");
  std::string out;
  append_commit_reply(out, plain, d, CommitResult::ok, "");
  CHECK(out == "AO7\n");
  out.clear();
  append_commit_reply(out, 2, d, CommitResult::failed, "no");
  CHECK(out == "+2\tAF7\tno\n");
  out.clear();
  append_commit_reply(out, plain, d, CommitResult::not_found, "");
  append_commit_reply(out, plain, d, CommitResult::write_uncertain, "w");
  CHECK(out == "AN7\nAW7\tw\n");
}

TEST_CASE("encoders append exactly one line") {
  std::string out = "previous\n";
  append_lookup_found(out, 12, "x\ny");
  CHECK(out == "previous\n+12\tOx\x01ny\n");
}

TEST_CASE("a reply value survives the round trip through escaping") {
  // What a client does with an O reply: strip the code, unescape.
  const std::string value = "{\"a\":\"b\tc\"}\r\n\x01";
  std::string out;
  append_lookup_found(out, plain, value);
  REQUIRE(out.back() == '\n');
  REQUIRE(out.find('\n') == out.size() - 1);
  auto line = std::string_view(out).substr(0, out.size() - 1);
  // Re-use the request parser's unescaping through an L line with the same field bytes.
  auto l = parsed_as<Lookup>("L" + std::string(line.substr(1)));
  CHECK(l.key == value);
}

// ---- Dovecot 2.4.1's own dict client ---------------------------------------------------------
// Every line the real 2.4.1 client sent in the captured session (doveadm dict get/iter/set/inc
// through `dict proxy { }`, and the last_login plugin): major 4, an empty handshake user, and
// B with its third field, expire_secs.

TEST_CASE("the Dovecot 2.4.1 dict client transcript") {
  auto h = parsed_as<Hello>("H4\t0\t0\t\tauthdict");
  CHECK(h == Hello{.major = 4, .minor = 0, .value_type = 0, .user = "", .dict_name = "authdict"});
  auto style = reply_style_for(h);
  REQUIRE(style);
  CHECK(style->async_ids);   // the 2.4 client accepted both plain and *<id>/+<id> replies
  CHECK(parsed_as<Hello>("H4\t0\t0\t\tlastlogin").dict_name == "lastlogin");

  // doveadm dict get "" <key>: the user field is empty; with -u it is the user
  CHECK(parsed("Lshared/passdb/jane@example.org\t") ==
        Request{Lookup{.key = "shared/passdb/jane@example.org", .user = ""}});
  CHECK(parsed("Lshared/quota/example.org/john\tjohn@example.org") ==
        Request{Lookup{.key = "shared/quota/example.org/john", .user = "john@example.org"}});
  // doveadm dict iter
  CHECK(parsed("I0\t0\tshared/userdb/\t") ==
        Request{Iterate{.flags = 0, .max_rows = 0, .path = "shared/userdb/", .user = ""}});
  // doveadm dict set / inc, and last_login's transaction
  CHECK(parsed_as<Begin>("B1\tjohn@example.org\t0") ==
        Begin{.id = 1, .user = "john@example.org", .expire_secs = 0});
  CHECK(parsed_as<Begin>("B1\t\t0") == Begin{.id = 1, .user = "", .expire_secs = 0});
  CHECK(parsed_as<Set>("S1\tpriv/foo\tbar") == Set{.id = 1, .key = "priv/foo", .value = "bar"});
  CHECK(parsed_as<Set>("S1\tshared/last-login/john@example.org\t1796395949").value == "1796395949");
  CHECK(parsed_as<Commit>("C1").id == 1);
  CHECK(parsed_as<AtomicInc>("A1\tshared/counter\t5") ==
        AtomicInc{.id = 1, .key = "shared/counter", .diff = 5});
}

TEST_CASE("the 2.4 replies maildict sends: async ids, an F for a key it does not serve") {
  std::string out;
  append_async_id(out, 1);
  append_lookup_failed(out, 1, "maildict: unmapped key: shared/quota/example.org/john");
  CHECK(out == "*1\n+1\tFmaildict: unmapped key: shared/quota/example.org/john\n");
}
