#include "protocol/smtpd_imsg.hpp"

#include <cstring>

namespace maildict::smtpd::imsg {

namespace {

template <class T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class T>
void store(std::string& out, T v) {
  char bytes[sizeof v];
  std::memcpy(bytes, &v, sizeof v);
  out.append(bytes, sizeof v);
}

void append_header(std::string& out, std::size_t total, std::uint32_t pid) {
  store<std::uint32_t>(out, static_cast<std::uint32_t>(MessageType::ok));
  store<std::uint16_t>(out, static_cast<std::uint16_t>(total));
  store<std::uint16_t>(out, 0);  // flags: bit 0 would make smtpd look for a passed fd
  store<std::uint32_t>(out, 0);  // peerid
  store<std::uint32_t>(out, pid);
}

std::int32_t status_of(Outcome o) {
  switch (o) {
    case Outcome::found: return 1;
    case Outcome::not_found: return 0;
    case Outcome::temp_fail: return -1;
  }
  return -1;
}

DecodeError error(std::string message) { return DecodeError{std::move(message)}; }

// Reads one NUL-terminated string from the front of `rest`; nullopt if there is no NUL.
std::optional<std::string> take_cstring(std::string_view& rest) {
  const auto nul = rest.find('\0');
  if (nul == std::string_view::npos) return std::nullopt;
  std::string s(rest.substr(0, nul));
  rest.remove_prefix(nul + 1);
  return s;
}

std::variant<Request, DecodeError> decode_query(Operation op, std::string_view payload) {
  // service (C int), params count (size_t), count x (key NUL, value NUL), then the key NUL.
  constexpr std::size_t fixed = sizeof(std::uint32_t) + sizeof(std::size_t);
  if (payload.size() < fixed) return error("query message too short");
  Query q;
  q.op = op;
  q.service_id = load<std::uint32_t>(payload.data());
  q.service = service_from_id(q.service_id);
  const auto count = load<std::size_t>(payload.data() + sizeof(std::uint32_t));
  std::string_view rest = payload.substr(fixed);
  // Each pair takes at least two bytes, so a count beyond that cannot be satisfied; checking
  // first keeps a hostile count from driving a long loop.
  if (count > rest.size() / 2) return error("query params count exceeds the message");
  for (std::size_t i = 0; i < count; ++i) {
    auto name = take_cstring(rest);
    auto value = name ? take_cstring(rest) : std::nullopt;
    if (!value) return error("query param not NUL-terminated");
    q.params.emplace_back(std::move(*name), std::move(*value));
  }
  if (op == Operation::fetch) {
    if (!rest.empty()) return error("fetch message has trailing bytes");
    return Request{std::move(q)};
  }
  auto key = take_cstring(rest);
  if (!key) return error("query key not NUL-terminated");
  // A NUL inside the key leaves bytes behind: the message is not what smtpd builds.
  if (!rest.empty()) return error("query message has bytes after the key");
  q.key = std::move(*key);
  return Request{std::move(q)};
}

}  // namespace

std::variant<Request, DecodeError> decode_message(std::string_view message) {
  if (message.size() < header_size) return error("truncated imsg header");
  const auto type = load<std::uint32_t>(message.data());
  const auto len = load<std::uint16_t>(message.data() + 4);
  if (len < header_size || len > max_message_size) return error("bad imsg length");
  if (len != message.size()) return error("imsg length does not match the message");
  const std::string_view payload = message.substr(header_size);
  switch (type) {
    case static_cast<std::uint32_t>(MessageType::open): {
      if (payload.size() < sizeof(std::uint32_t)) return error("open message too short");
      const auto version = load<std::uint32_t>(payload.data());
      if (version != api_version)
        return error("unsupported table API version " + std::to_string(version) + " (want 2)");
      // The name field is NUL-padded to LINE_MAX; its size is not insisted on.
      std::string_view name = payload.substr(sizeof(std::uint32_t));
      name = name.substr(0, name.find('\0'));
      return Request{Open{std::string(name)}};
    }
    // Payloads of CLOSE and UPDATE are empty; any there are ignored rather than fatal, since
    // exiting would take smtpd down with us.
    case static_cast<std::uint32_t>(MessageType::close): return Request{Close{}};
    case static_cast<std::uint32_t>(MessageType::update): return Request{Update{}};
    case static_cast<std::uint32_t>(MessageType::check): return decode_query(Operation::check, payload);
    case static_cast<std::uint32_t>(MessageType::lookup): return decode_query(Operation::lookup, payload);
    case static_cast<std::uint32_t>(MessageType::fetch): return decode_query(Operation::fetch, payload);
    default: return error("unknown imsg type " + std::to_string(type));
  }
}

void Decoder::feed(std::string_view bytes) {
  if (error_) return;
  // Compact lazily so a stream of small messages does not shift the buffer on every one.
  if (start_ > 0 && start_ >= buffer_.size() / 2) {
    buffer_.erase(0, start_);
    start_ = 0;
  }
  buffer_.append(bytes);
}

Decoder::Result Decoder::next() {
  if (error_) return *error_;
  const std::string_view pending = std::string_view(buffer_).substr(start_);
  if (pending.size() < header_size) return NeedMore{};
  const auto len = load<std::uint16_t>(pending.data() + 4);
  // Checked before waiting for the payload: a bad length would otherwise stall forever.
  if (len < header_size || len > max_message_size) {
    error_ = error("bad imsg length " + std::to_string(len));
    return *error_;
  }
  if (pending.size() < len) return NeedMore{};
  auto decoded = decode_message(pending.substr(0, len));
  start_ += len;
  if (auto* e = std::get_if<DecodeError>(&decoded)) {
    error_ = std::move(*e);
    return *error_;
  }
  return std::get<Request>(std::move(decoded));
}

void append_open_reply(std::string& out, std::uint32_t pid) { append_header(out, header_size, pid); }

void append_update_reply(std::string& out, bool ok, std::uint32_t pid) {
  append_header(out, header_size + 4, pid);
  store<std::int32_t>(out, ok ? 1 : 0);
}

void append_check_reply(std::string& out, Outcome outcome, std::uint32_t pid) {
  append_header(out, header_size + 4, pid);
  store<std::int32_t>(out, status_of(outcome));
}

void append_lookup_reply(std::string& out, const Answer& answer, std::uint32_t pid) {
  if (answer.outcome != Outcome::found) {
    append_check_reply(out, answer.outcome, pid);
    return;
  }
  if (value_problem(answer.value) || answer.value.size() > max_value_length) {
    append_check_reply(out, Outcome::temp_fail, pid);
    return;
  }
  append_header(out, header_size + 4 + answer.value.size() + 1, pid);
  store<std::int32_t>(out, 1);
  out += answer.value;
  out.push_back('\0');
}

void append_query_reply(std::string& out, Operation op, const Answer& answer, std::uint32_t pid) {
  switch (op) {
    case Operation::check: append_check_reply(out, answer.outcome, pid); break;
    case Operation::update: append_update_reply(out, answer.outcome == Outcome::found, pid); break;
    case Operation::lookup:
    case Operation::fetch: append_lookup_reply(out, answer, pid); break;
  }
}

}  // namespace maildict::smtpd::imsg
