// The text table protocol 0.1, built from the captured smtpd 7.6.0p1 transcript in
// specs/smtpd-tables.md §4.5, plus hostile input.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "protocol/smtpd_text.hpp"

using namespace maildict::smtpd;
using namespace maildict::smtpd::text;

namespace {

Line parsed(std::string_view line) {
  auto r = parse_line(line);
  if (auto* e = std::get_if<ParseError>(&r)) FAIL("unexpected parse error: " << e->message);
  return std::get<Line>(std::move(r));
}

TableRequest request(std::string_view line) {
  Line l = parsed(line);
  REQUIRE(std::holds_alternative<TableRequest>(l));
  return std::get<TableRequest>(std::move(l));
}

bool rejected(std::string_view line) { return std::holds_alternative<ParseError>(parse_line(line)); }

std::string result(Operation op, std::string_view id, const Answer& a) {
  std::string out;
  append_result(out, op, id, a);
  return out;
}

// Every line we write is exactly one line.
void check_one_line(const std::string& out) {
  REQUIRE(!out.empty());
  CHECK(out.back() == '\n');
  CHECK(out.find('\n') == out.size() - 1);
  CHECK(out.find('\r') == std::string::npos);
  CHECK(out.find('\0') == std::string::npos);
}

}  // namespace

// ---- handshake -----------------------------------------------------------------------------------

TEST_CASE("the config handshake of smtpd 7.6.0p1") {
  CHECK(parsed("config|smtpd-version|7.6.0-portable") == Line{ConfigLine{"smtpd-version", "7.6.0-portable"}});
  CHECK(parsed("config|protocol|0.1") == Line{ConfigLine{"protocol", "0.1"}});
  CHECK(parsed("config|tablename|t") == Line{ConfigLine{"tablename", "t"}});
  CHECK(parsed("config|ready") == Line{ConfigReady{}});
}

TEST_CASE("config: unknown keys parse (to be ignored), values may hold '|'") {
  CHECK(parsed("config|future-key|a|b") == Line{ConfigLine{"future-key", "a|b"}});
  CHECK(parsed("config|flag") == Line{ConfigLine{"flag", ""}});
  CHECK(rejected("config"));
  CHECK(rejected("config|"));
}

TEST_CASE("register lines") {
  std::string out;
  for (Service s : registered_services) append_register(out, s);
  append_register_ready(out);
  CHECK(out ==
        "register|alias\nregister|domain\nregister|credentials\nregister|netaddr\n"
        "register|userinfo\nregister|source\nregister|mailaddr\nregister|addrname\n"
        "register|mailaddrmap\nregister|relayhost\nregister|string\nregister|regex\n"
        "register|ready\n");
  CHECK(out.find("auth\n") == std::string::npos);
}

// ---- the §4.5 transcript, request by request ------------------------------------------------------

TEST_CASE("lookup addrname -> found|probe.local") {
  auto r = request("table|0.1|1795320608.335867|t|lookup|addrname|31c1c54b|127.0.0.1");
  CHECK(r.version == "0.1");
  CHECK(r.timestamp == "1795320608.335867");
  CHECK(r.table_name == "t");
  CHECK(r.op == Operation::lookup);
  CHECK(r.service_name == "addrname");
  CHECK(r.service == Service::addrname);
  CHECK(r.id == "31c1c54b");
  CHECK(r.key == "127.0.0.1");
  CHECK(result(r.op, r.id, Answer::found("probe.local")) == "lookup-result|31c1c54b|found|probe.local\n");
}

TEST_CASE("check netaddr and domain -> found, without the value") {
  auto r = request("table|0.1|1795320608.339483|t|check|netaddr|148969b4|127.0.0.1");
  CHECK(r.op == Operation::check);
  CHECK(r.service == Service::netaddr);
  CHECK(result(r.op, r.id, Answer::found("anything")) == "check-result|148969b4|found\n");

  r = request("table|0.1|1795320608.339664|t|check|domain|e73f4c9b|example.org");
  CHECK(r.service == Service::domain);
  CHECK(r.key == "example.org");
  CHECK(result(r.op, r.id, Answer::found("")) == "check-result|e73f4c9b|found\n");
  CHECK(result(r.op, r.id, Answer::not_found()) == "check-result|e73f4c9b|not-found\n");
}

TEST_CASE("the virtual lookup sequence for alias") {
  struct Step { const char* line; const char* key; Answer answer; const char* reply; };
  const std::vector<Step> steps = {
      {"table|0.1|1795320608.339789|t|lookup|alias|9d85b4fa|bob+tag@example.org", "bob+tag@example.org",
       Answer::not_found(), "lookup-result|9d85b4fa|not-found\n"},
      {"table|0.1|1795320608.339912|t|lookup|alias|fa52e95b|bob@example.org", "bob@example.org",
       Answer::found("vmail"), "lookup-result|fa52e95b|found|vmail\n"},
      {"table|0.1|1795320608.339997|t|lookup|alias|0685ba09|vmail@", "vmail@", Answer::not_found(),
       "lookup-result|0685ba09|not-found\n"},
      {"table|0.1|1795320608.340048|t|lookup|alias|52a6865d|vmail", "vmail", Answer::not_found(),
       "lookup-result|52a6865d|not-found\n"},
  };
  for (const auto& s : steps) {
    auto r = request(s.line);
    CHECK(r.service == Service::alias);
    CHECK(r.key == s.key);
    CHECK(result(r.op, r.id, s.answer) == s.reply);
  }
}

TEST_CASE("userinfo, credentials, mailaddrmap, mailaddr") {
  auto r = request("table|0.1|1795320608.340098|t|lookup|userinfo|ec757203|vmail");
  CHECK(r.service == Service::userinfo);
  CHECK(result(r.op, r.id, Answer::found("65534:65534:/tmp/smtpdprobe/home/vmail")) ==
        "lookup-result|ec757203|found|65534:65534:/tmp/smtpdprobe/home/vmail\n");

  r = request("table|0.1|1795320613.888202|t|lookup|credentials|c4be0287|bob@example.org");
  CHECK(r.service == Service::credentials);
  CHECK(result(r.op, r.id, Answer::found("bob@example.org:$6$hiM113VfJKe/gkjx$m/Zi")) ==
        "lookup-result|c4be0287|found|bob@example.org:$6$hiM113VfJKe/gkjx$m/Zi\n");

  r = request("table|0.1|1795320613.890554|t|lookup|mailaddrmap|7142bad6|bob@example.org");
  CHECK(r.service == Service::mailaddrmap);
  CHECK(result(r.op, r.id, Answer::found("bob@example.org, alias@example.org")) ==
        "lookup-result|7142bad6|found|bob@example.org, alias@example.org\n");

  r = request("table|0.1|1795320613.891869|t|check|mailaddr|b23274f9|bob@example.org");
  CHECK(r.service == Service::mailaddr);
  CHECK(result(r.op, r.id, Answer::found("x")) == "check-result|b23274f9|found\n");
}

TEST_CASE("fetch source: no key, and the reply is fetch-result (the man page is wrong)") {
  auto r = request("table|0.1|1795320613.895058|t|fetch|source|7199958a");
  CHECK(r.op == Operation::fetch);
  CHECK(r.service == Service::source);
  CHECK(r.id == "7199958a");
  CHECK(r.key.empty());
  CHECK(result(r.op, r.id, Answer::found("127.0.0.1")) == "fetch-result|7199958a|found|127.0.0.1\n");
  CHECK(result(r.op, r.id, Answer::not_found()) == "fetch-result|7199958a|not-found\n");
}

TEST_CASE("temporary failure: error with a message") {
  auto r = request("table|0.1|1795320624.146398|t|lookup|alias|d4682098|tempfail@example.org");
  CHECK(result(r.op, r.id, Answer::temp_fail("backend unavailable")) ==
        "lookup-result|d4682098|error|backend unavailable\n");
  // smtpd's man page makes the message mandatory.
  CHECK(result(r.op, r.id, Answer::temp_fail("")) == "lookup-result|d4682098|error|temporary failure\n");
  CHECK(result(Operation::check, "abc", Answer::temp_fail("x")) == "check-result|abc|error|x\n");
  CHECK(result(Operation::fetch, "abc", Answer::temp_fail("x")) == "fetch-result|abc|error|x\n");
}

TEST_CASE("update: no service, no key") {
  auto r = request("table|0.1|1795320633.421894|t|update|c75d3b0b");
  CHECK(r.op == Operation::update);
  CHECK(r.id == "c75d3b0b");
  CHECK(r.service_name.empty());
  CHECK(!r.service.has_value());
  CHECK(r.key.empty());
  CHECK(result(r.op, r.id, Answer::found("")) == "update-result|c75d3b0b|ok\n");
  CHECK(result(r.op, r.id, Answer::temp_fail("no")) == "update-result|c75d3b0b|error|no\n");
  CHECK(result(r.op, r.id, Answer::not_found()).starts_with("update-result|c75d3b0b|error|"));
}

// ---- edge cases ----------------------------------------------------------------------------------

TEST_CASE("the key is everything after the id, '|' and empty included") {
  CHECK(request("table|0.1|1.2|t|lookup|alias|0a0b0c0d|a|b||c").key == "a|b||c");
  CHECK(request("table|0.1|1.2|t|check|netaddr|0a0b0c0d|").key == "");
  CHECK(request("table|0.1|1.2|t|lookup|alias|0a0b0c0d|@").key == "@");
  CHECK(request("table|0.1|1.2|my table|lookup|alias|0a0b0c0d|x").table_name == "my table");
}

TEST_CASE("an unknown service or another version parses, so it can be answered with error") {
  auto r = request("table|0.1|1.2|t|check|none|0a0b0c0d|x");
  CHECK(r.service_name == "none");
  CHECK(!r.service.has_value());
  r = request("table|0.2|1.2|t|lookup|alias|0a0b0c0d|x");
  CHECK(r.version == "0.2");
  CHECK(request("table|0.1|1.2|t|check|auth|0a0b0c0d|bob@example.org:secret").service == Service::auth);
}

TEST_CASE("hostile lines") {
  CHECK(rejected(""));
  CHECK(rejected("garbage"));
  CHECK(rejected("register|alias"));
  CHECK(rejected("table"));
  CHECK(rejected("table|0.1|1.2|t"));
  CHECK(rejected("table|0.1|1.2|t|remove|alias|0a0b0c0d|x"));  // unknown operation
  CHECK(rejected("table|0.1|1.2|t|lookup"));
  CHECK(rejected("table|0.1|1.2|t|lookup|alias"));
  CHECK(rejected("table|0.1|1.2|t|lookup|alias|0a0b0c0d"));     // no key field at all
  CHECK(rejected("table|0.1|1.2|t|lookup|alias||x"));            // empty id
  CHECK(rejected("table|0.1|1.2|t|update|"));
  CHECK(rejected("table|0.1|1.2|t|update|ab|cd"));              // an id with '|'
  CHECK(rejected("table|0.1|1.2|t|fetch|source|ab|cd"));
  CHECK(rejected("table|0.1|1.2|t|lookup|alias|0a0b\r|x"));      // an id we could not echo
  CHECK(rejected(std::string("table|0.1|1.2|t|lookup|alias|0a\0b|x", 35)));
  CHECK(rejected("table|0.1|1.2|t|lookup|alias|" + std::string(65, 'a') + "|x"));
}

TEST_CASE("a NUL, CR or oversized key parses but is flagged for an error reply") {
  auto r = request(std::string("table|0.1|1.2|t|lookup|alias|0a0b0c0d|a\0b", 41));
  CHECK(r.key == std::string("a\0b", 3));
  CHECK(key_problem(r.key));
  CHECK(key_problem(request("table|0.1|1.2|t|lookup|alias|0a0b0c0d|bob\r").key));
  CHECK(key_problem(request("table|0.1|1.2|t|lookup|alias|0a0b0c0d|" + std::string(1024, 'k')).key));
  CHECK(!key_problem(request("table|0.1|1.2|t|lookup|alias|0a0b0c0d|" + std::string(1023, 'k')).key));
}

TEST_CASE("found values that would break the line become error, never found|") {
  for (const std::string& bad : {std::string(), std::string("a\nb"), std::string("a\rb"), std::string("a\0b", 3)}) {
    const std::string out = result(Operation::lookup, "0a0b0c0d", Answer::found(bad));
    check_one_line(out);
    CHECK(out.starts_with("lookup-result|0a0b0c0d|error|"));
  }
  // Values may contain '|': smtpd takes everything after found|.
  CHECK(result(Operation::lookup, "1", Answer::found("a|b")) == "lookup-result|1|found|a|b\n");
  // Error messages are cleaned into one line.
  const std::string out = result(Operation::lookup, "1", Answer::temp_fail("line\none\rtwo"));
  check_one_line(out);
  CHECK(out == "lookup-result|1|error|line one two\n");
}

// ---- the line reader -------------------------------------------------------------------------------

TEST_CASE("LineReader: whole, split and joined lines") {
  LineReader r;
  r.feed("config|protocol|0.1\nconfig|ta");
  auto a = r.next();
  REQUIRE(std::holds_alternative<std::string>(a));
  CHECK(std::get<std::string>(a) == "config|protocol|0.1");
  CHECK(std::holds_alternative<LineReader::NeedMore>(r.next()));
  r.feed("blename|t\nconfig|ready\n\n");
  CHECK(std::get<std::string>(r.next()) == "config|tablename|t");
  CHECK(std::get<std::string>(r.next()) == "config|ready");
  CHECK(std::get<std::string>(r.next()) == "");
  CHECK(std::holds_alternative<LineReader::NeedMore>(r.next()));
  CHECK(r.buffered() == 0);
}

TEST_CASE("LineReader: an endless line is refused once it passes the bound") {
  LineReader r;
  for (int i = 0; i < 4; ++i) {
    r.feed(std::string(1000, 'x'));
    CHECK(std::holds_alternative<LineReader::NeedMore>(r.next()));
  }
  r.feed(std::string(200, 'x'));
  CHECK(std::holds_alternative<LineReader::TooLong>(r.next()));
  r.feed("\n");
  CHECK(std::holds_alternative<LineReader::TooLong>(r.next()));

  LineReader r2;
  r2.feed(std::string(max_line_length, 'y') + "\n");
  CHECK(std::get<std::string>(r2.next()).size() == max_line_length);
  r2.feed(std::string(max_line_length + 1, 'y') + "\n");
  CHECK(std::holds_alternative<LineReader::TooLong>(r2.next()));
}
