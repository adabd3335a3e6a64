// libFuzzer target for the imsg table codec (protocol/smtpd_imsg.hpp). The input is a byte
// stream from "smtpd", fed to the decoder in pieces; every decoded request must re-encode to
// itself, and every reply we would send must be one well-formed OK message, whatever the
// answer holds.
//
//   mkdir -p /tmp/imsg-corpus && ./fuzz_smtpd_imsg -max_total_time=60 /tmp/imsg-corpus \
//       tests/fuzz/corpus/smtpd_imsg
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "protocol/smtpd_imsg.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace maildict::smtpd;
using namespace maildict::smtpd::imsg;

namespace {

template <class T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
void store(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}

// smtpd's side of a request: the inverse of the decoder.
std::string encode_request(const Request& request) {
  std::uint32_t type = 0;
  std::string payload;
  if (auto* o = std::get_if<Open>(&request)) {
    type = 2;
    store<std::uint32_t>(payload, api_version);
    payload += o->table_name;
    payload.push_back('\0');
  } else if (std::holds_alternative<Close>(request)) {
    type = 3;
  } else if (std::holds_alternative<Update>(request)) {
    type = 4;
  } else {
    const auto& q = std::get<Query>(request);
    type = q.op == Operation::check ? 5 : q.op == Operation::lookup ? 6 : 7;
    store<std::uint32_t>(payload, q.service_id);
    store<std::size_t>(payload, q.params.size());
    for (const auto& [k, v] : q.params) {
      payload += k;
      payload.push_back('\0');
      payload += v;
      payload.push_back('\0');
    }
    if (q.op != Operation::fetch) {
      payload += q.key;
      payload.push_back('\0');
    }
  }
  std::string out;
  store<std::uint32_t>(out, type);
  store<std::uint16_t>(out, static_cast<std::uint16_t>(header_size + payload.size()));
  store<std::uint16_t>(out, 0);
  store<std::uint32_t>(out, 0);
  store<std::uint32_t>(out, 0);
  return out + payload;
}

// smtpd's reading of a reply (table_proc.c rules, §3.4): returns the status, and the value
// when there is one.
std::int32_t check_reply(std::string_view reply, bool value_allowed, std::string* value) {
  CHECK(reply.size() >= header_size && reply.size() <= max_message_size);
  CHECK(load<std::uint32_t>(reply.data()) == 0);
  CHECK(load<std::uint16_t>(reply.data() + 4) == reply.size());
  CHECK(load<std::uint16_t>(reply.data() + 6) == 0);
  std::string_view payload = reply.substr(header_size);
  CHECK(payload.size() >= 4);
  const auto r = load<std::int32_t>(payload.data());
  CHECK(r == 1 || r == 0 || r == -1);
  payload.remove_prefix(4);
  if (r == 1 && value_allowed) {
    CHECK(payload.size() >= 2);  // a non-empty value and its NUL
    CHECK(payload.back() == '\0');
    CHECK(payload.find('\0') == payload.size() - 1);
    if (value) *value = std::string(payload.substr(0, payload.size() - 1));
  } else {
    CHECK(payload.empty());
  }
  return r;
}

void check_request(const Request& request) {
  if (auto* o = std::get_if<Open>(&request); o && o->table_name.size() + 21 > max_message_size)
    return;  // a name without its NUL that fills the message cannot be re-framed with one
  const std::string again = encode_request(request);
  auto redecoded = decode_message(again);
  CHECK(std::holds_alternative<Request>(redecoded));
  CHECK(std::get<Request>(redecoded) == request);

  const auto* q = std::get_if<Query>(&request);
  if (!q) return;
  CHECK(q->key.find('\0') == std::string::npos);
  CHECK(q->service.has_value() == (service_from_id(q->service_id).has_value()));
  if (q->op == Operation::fetch) CHECK(q->key.empty());

  // Any value, even the hostile key itself, gives a well-formed reply.
  const Answer answers[] = {Answer::found(q->key), Answer::not_found(), Answer::temp_fail(q->key),
                            Answer::found(q->key + q->key)};
  for (const Answer& a : answers) {
    std::string out;
    append_query_reply(out, q->op, a);
    std::string value;
    const auto r = check_reply(out, q->op != Operation::check, &value);
    if (a.outcome == Outcome::not_found) CHECK(r == 0);
    if (a.outcome == Outcome::temp_fail) CHECK(r == -1);
    if (a.outcome == Outcome::found) {
      const bool sendable = !value_problem(a.value) && a.value.size() <= max_value_length;
      CHECK(r == (sendable || q->op == Operation::check ? 1 : -1));
      if (r == 1 && q->op != Operation::check) CHECK(value == a.value);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  const std::string_view data(reinterpret_cast<const char*>(bytes), size);

  // The first byte picks how the stream is cut into reads, so message boundaries and read
  // boundaries fall differently.
  const std::size_t piece = size ? 1 + bytes[0] % 64 : 1;
  Decoder decoder;
  bool failed = false;
  for (std::size_t i = 0; i < size && !failed; i += piece) {
    decoder.feed(data.substr(i, piece));
    for (;;) {
      auto r = decoder.next();
      if (std::holds_alternative<Decoder::NeedMore>(r)) break;
      if (auto* e = std::get_if<DecodeError>(&r)) {
        CHECK(!e->message.empty() && e->message.size() <= 80);
        for (char c : e->message) CHECK(c >= 0x20 && c < 0x7f);
        failed = true;
        break;
      }
      const Request& request = std::get<Request>(r);
      check_request(request);
    }
  }
  if (!failed) CHECK(decoder.buffered() <= size);

  // The whole input as one message.
  auto one = decode_message(data);
  if (auto* request = std::get_if<Request>(&one)) check_request(*request);

  std::string reply;
  append_open_reply(reply);
  append_update_reply(reply, size % 2 == 0);
  CHECK(reply.size() == 36);
  return 0;
}
