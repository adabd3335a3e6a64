#include "protocol/smtpd_text.hpp"

namespace maildict::smtpd::text {

namespace {

ParseError error(std::string message) { return ParseError{std::move(message)}; }

// Cuts the field before the next '|' off `rest`; nullopt when there is no further '|'.
std::optional<std::string_view> take_field(std::string_view& rest) {
  const auto bar = rest.find('|');
  if (bar == std::string_view::npos) return std::nullopt;
  std::string_view field = rest.substr(0, bar);
  rest.remove_prefix(bar + 1);
  return field;
}

// smtpd sends `%08x`; anything printable and short is echoed, but an id with a control byte
// or '|' would make our reply something smtpd cannot parse.
bool echoable_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '|') return false;
  }
  return true;
}

std::optional<Operation> operation_from_name(std::string_view name) {
  for (Operation op : {Operation::update, Operation::check, Operation::lookup, Operation::fetch})
    if (operation_name(op) == name) return op;
  return std::nullopt;
}

std::variant<Line, ParseError> parse_table_request(std::string_view rest) {
  TableRequest r;
  const auto version = take_field(rest);
  const auto timestamp = version ? take_field(rest) : std::nullopt;
  const auto table = timestamp ? take_field(rest) : std::nullopt;
  if (!table) return error("table request with too few fields");
  r.version = *version;
  r.timestamp = *timestamp;
  r.table_name = *table;

  // update ends at its id, so the op is the last field only there.
  const auto bar = rest.find('|');
  const std::string_view op_name = rest.substr(0, bar);
  const auto op = operation_from_name(op_name);
  if (!op) return error("table request with an unknown operation");
  r.op = *op;
  rest = bar == std::string_view::npos ? std::string_view{} : rest.substr(bar + 1);
  if (bar == std::string_view::npos) return error("table request without an id");

  std::string_view id;
  if (r.op == Operation::update) {
    id = rest;
  } else {
    const auto service = take_field(rest);
    if (!service) return error("table request without an id");
    r.service_name = *service;
    r.service = service_from_name(*service);
    if (r.op == Operation::fetch) {
      id = rest;
    } else {
      const auto key_id = take_field(rest);
      if (!key_id) return error("table request without a key");
      id = *key_id;
      r.key = rest;
    }
  }
  if (!echoable_id(id)) return error("table request with a malformed id");
  r.id = id;
  return Line{std::move(r)};
}

void append_clean(std::string& out, std::string_view s) {
  for (char c : s) out.push_back(c == '\n' || c == '\r' || c == '\0' ? ' ' : c);
}

}  // namespace

std::variant<Line, ParseError> parse_line(std::string_view line) {
  std::string_view rest = line;
  const auto kind = take_field(rest);
  if (!kind) {
    if (line == "config") return error("config line without a key");
    return error("line without a known kind");
  }
  if (*kind == "config") {
    if (rest == "ready") return Line{ConfigReady{}};
    const auto bar = rest.find('|');
    ConfigLine c;
    c.key = rest.substr(0, bar);
    if (bar != std::string_view::npos) c.value = rest.substr(bar + 1);
    if (c.key.empty()) return error("config line without a key");
    return Line{std::move(c)};
  }
  if (*kind == "table") return parse_table_request(rest);
  return error("line without a known kind");
}

void LineReader::feed(std::string_view bytes) {
  if (too_long_) return;
  if (start_ > 0 && start_ >= buffer_.size() / 2) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  buffer_.append(bytes);
}

LineReader::Result LineReader::next() {
  if (too_long_) return TooLong{};
  const std::string_view pending = std::string_view(buffer_).substr(start_);
  const auto lf = pending.find('\n', scanned_);
  if (lf == std::string_view::npos) {
    scanned_ = pending.size();
    if (pending.size() > max_line_length) {
      too_long_ = true;
      return TooLong{};
    }
    return NeedMore{};
  }
  if (lf > max_line_length) {
    too_long_ = true;
    return TooLong{};
  }
  std::string line(pending.substr(0, lf));
  start_ += lf + 1;
  scanned_ = 0;
  return line;
}

void append_register(std::string& out, Service service) {
  out += "register|";
  out += service_name(service);
  out.push_back('\n');
}

void append_register_ready(std::string& out) { out += "register|ready\n"; }

void append_result(std::string& out, Operation op, std::string_view id, const Answer& answer) {
  out += operation_name(op);
  out += "-result|";
  out += id;
  out.push_back('|');

  auto fail = [&](std::string_view why) {
    out += "error|";
    append_clean(out, why.empty() ? std::string_view("temporary failure") : why);
    out.push_back('\n');
  };

  switch (answer.outcome) {
    case Outcome::temp_fail: fail(answer.error); return;
    case Outcome::not_found:
      // update has no "not found": an update that did nothing failed.
      if (op == Operation::update) fail("update failed");
      else out += "not-found\n";
      return;
    case Outcome::found:
      if (op == Operation::update) {
        out += "ok\n";
      } else if (op == Operation::check) {
        out += "found\n";
      } else if (const auto problem = value_problem(answer.value)) {
        fail(*problem);
      } else {
        out += "found|";
        out += answer.value;
        out.push_back('\n');
      }
      return;
  }
}

}  // namespace maildict::smtpd::text
