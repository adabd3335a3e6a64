// libFuzzer target for the auth policy codec (protocol/policy_codec.hpp). The first input byte
// picks what the rest is: a request target, an allow or report body, an admin block body, an IP
// address or a network. Beyond "no crash, no leak, no UB", parsed values must keep their
// documented bounds and re-encode to something that parses back to the same value.
//
//   mkdir -p /tmp/policy-corpus && ./fuzz_policy_codec -max_total_time=60 /tmp/policy-corpus \
//       tests/fuzz/corpus/policy_codec
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "protocol/json_writer.hpp"
#include "protocol/policy_codec.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace maildict::policy;

namespace {

void check_error(const CodecError& e) {
  CHECK(e.http_status >= 400 && e.http_status < 500);
  CHECK(!e.message.empty());
  CHECK(encode_error(e.message).front() == '{');
}

void check_body(Command command, std::string_view body) {
  auto r = parse_policy_body(command, body);
  if (auto* e = std::get_if<CodecError>(&r)) return check_error(*e);
  const auto& p = std::get<PolicyRequest>(r);
  CHECK(p.command == command);
  CHECK(p.login.size() <= max_login_length);
  for (char c : p.login) CHECK(!(c >= 'A' && c <= 'Z'));
  CHECK(p.remote.size() <= 64);
  CHECK(!p.pwhash || p.pwhash->size() <= max_pwhash_length);
  // What was read re-encodes (as Dovecot would send it) and reads back the same.
  std::string again = "{\"login\":";
  maildict::json::append_string(again, p.login);
  again += ",\"remote\":";
  maildict::json::append_string(again, p.remote);
  if (p.pwhash) {
    again += ",\"pwhash\":";
    maildict::json::append_string(again, *p.pwhash);
  }
  again += std::string(",\"tls\":") + (p.tls ? "true" : "false");
  if (command == Command::report)
    again += std::string(",\"success\":") + (p.success ? "true" : "false") + ",\"policy_reject\":" +
             (p.policy_reject ? "true" : "false");
  again += "}";
  auto r2 = parse_policy_body(command, again);
  CHECK(std::holds_alternative<PolicyRequest>(r2));
  const auto& q = std::get<PolicyRequest>(r2);
  CHECK(q.login == p.login && q.remote == p.remote && q.pwhash == p.pwhash && q.tls == p.tls &&
        q.success == p.success && q.policy_reject == p.policy_reject);
  if (auto ip = parse_ip(p.remote)) {
    auto net = aggregate(*ip);
    CHECK(net.contains(*ip));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  switch (data[0] % 6) {
    case 0: {
      auto t = parse_target(in);
      if (auto* e = std::get_if<CodecError>(&t)) {
        check_error(*e);
        break;
      }
      const auto& target = std::get<Target>(t);
      CHECK(!target.path.empty());
      CHECK(target.query.size() <= 64);
      auto c = command_of(target);
      if (auto* e = std::get_if<CodecError>(&c)) check_error(*e);
      break;
    }
    case 1: check_body(Command::allow, in); break;
    case 2: check_body(Command::report, in); break;
    case 3: {
      auto b = parse_block_body(in);
      if (auto* e = std::get_if<CodecError>(&b)) {
        check_error(*e);
        break;
      }
      const auto& r = std::get<BlockRequest>(b);
      CHECK(r.network.has_value() != r.login.has_value());
      CHECK(r.seconds >= 0);
      CHECK(r.reason.size() <= 200);
      if (r.network) CHECK(parse_network(to_string(*r.network)) == r.network);
      break;
    }
    case 4: {
      if (auto ip = parse_ip(in)) {
        auto again = parse_ip(to_string(*ip));
        CHECK(again && *again == *ip);
      }
      break;
    }
    case 5: {
      if (auto net = parse_network(in)) {
        CHECK(net->prefix <= (net->base.v6 ? 128u : 32u));
        CHECK(net->contains(net->base));
        CHECK(parse_network(to_string(*net)) == net);
      }
      auto d = in.size() % 3 == 0 ? Decision::allow() : in.size() % 3 == 1 ? Decision::tarpit(static_cast<int>(in.size()))
                                                                            : Decision::reject(std::string(in));
      auto out = encode_decision(d);
      CHECK(out.starts_with("{\"status\":") && out.back() == '}');
      break;
    }
  }
  return 0;
}
