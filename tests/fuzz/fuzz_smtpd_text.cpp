// libFuzzer target for the text table protocol 0.1 codec (protocol/smtpd_text.hpp). The input
// is a stream from "smtpd"; every parsed request must re-encode to itself, and every reply we
// would send must be one line that smtpd parses back to the same outcome, id and value.
//
//   mkdir -p /tmp/text-corpus && ./fuzz_smtpd_text -max_total_time=60 /tmp/text-corpus \
//       tests/fuzz/corpus/smtpd_text
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/smtpd_text.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace maildict::smtpd;
using namespace maildict::smtpd::text;

namespace {

std::string encode_request(const TableRequest& r) {
  std::string out = "table|" + r.version + "|" + r.timestamp + "|" + r.table_name + "|" +
                    std::string(operation_name(r.op));
  if (r.op != Operation::update) out += "|" + r.service_name;
  out += "|" + r.id;
  if (r.op == Operation::check || r.op == Operation::lookup) out += "|" + r.key;
  return out;
}

// smtpd's reading of our reply line (§4.3).
void check_reply(const std::string& out, const TableRequest& r, const Answer& a) {
  CHECK(!out.empty() && out.back() == '\n');
  CHECK(out.find('\n') == out.size() - 1);
  CHECK(out.find('\r') == std::string::npos);
  CHECK(out.find('\0') == std::string::npos);
  const std::string prefix = std::string(operation_name(r.op)) + "-result|" + r.id + "|";
  CHECK(out.starts_with(prefix));
  const std::string_view rest = std::string_view(out).substr(prefix.size(), out.size() - prefix.size() - 1);
  const bool is_error = rest.starts_with("error|") && rest.size() > 6;
  switch (a.outcome) {
    case Outcome::temp_fail: CHECK(is_error); break;
    case Outcome::not_found: CHECK(r.op == Operation::update ? is_error : rest == "not-found"); break;
    case Outcome::found:
      if (r.op == Operation::update) CHECK(rest == "ok");
      else if (r.op == Operation::check) CHECK(rest == "found");
      else if (value_problem(a.value)) CHECK(is_error);
      else CHECK(rest == "found|" + a.value);
      break;
  }
}

void check_line(std::string_view line) {
  auto parsed = parse_line(line);
  if (auto* e = std::get_if<ParseError>(&parsed)) {
    CHECK(!e->message.empty() && e->message.size() <= 64);
    for (char c : e->message) CHECK(c >= 0x20 && c < 0x7f);
    return;
  }
  const Line& l = std::get<Line>(parsed);
  if (auto* c = std::get_if<ConfigLine>(&l)) {
    CHECK(!c->key.empty() && c->key.find('|') == std::string::npos);
    CHECK(line == "config|" + c->key + (c->value.empty() && !line.ends_with("|") ? "" : "|" + c->value));
    return;
  }
  if (std::holds_alternative<ConfigReady>(l)) {
    CHECK(line == "config|ready");
    return;
  }
  const auto& r = std::get<TableRequest>(l);
  CHECK(encode_request(r) == line);
  CHECK(!r.id.empty() && r.id.find_first_of("|\r\n") == std::string::npos);
  CHECK(r.service.has_value() == (service_from_name(r.service_name).has_value()));
  const Answer answers[] = {Answer::found(r.key), Answer::not_found(), Answer::temp_fail(r.key),
                            Answer::temp_fail(""), Answer::found(std::string(line))};
  for (const Answer& a : answers) {
    std::string out;
    append_result(out, r.op, r.id, a);
    check_reply(out, r, a);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  const std::string_view data(reinterpret_cast<const char*>(bytes), size);
  const std::size_t piece = size ? 1 + bytes[0] % 64 : 1;
  LineReader reader;
  bool too_long = false;
  for (std::size_t i = 0; i < size && !too_long; i += piece) {
    reader.feed(data.substr(i, piece));
    for (;;) {
      auto r = reader.next();
      if (std::holds_alternative<LineReader::NeedMore>(r)) break;
      if (std::holds_alternative<LineReader::TooLong>(r)) {
        too_long = true;
        break;
      }
      const auto& line = std::get<std::string>(r);
      CHECK(line.size() <= max_line_length);
      CHECK(line.find('\n') == std::string::npos);
      check_line(line);
    }
  }
  if (!too_long) CHECK(reader.buffered() <= max_line_length);
  // Each line of the input on its own, also the last one without LF.
  std::string_view rest = data;
  for (;;) {
    const auto lf = rest.find('\n');
    check_line(rest.substr(0, lf));
    if (lf == std::string_view::npos) break;
    rest.remove_prefix(lf + 1);
  }
  return 0;
}
