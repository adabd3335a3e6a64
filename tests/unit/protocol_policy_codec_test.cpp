// The auth policy codec, from the bodies captured from Dovecot 2.3.19 (specs/dovecot.md §3.3,
// §3.9) and the request targets it sends (§3.2, §3.8).
#include <doctest/doctest.h>

#include <string>

#include "protocol/policy_codec.hpp"

using namespace maildict::policy;

namespace {

Target target(std::string_view t) {
  auto r = parse_target(t);
  REQUIRE(std::holds_alternative<Target>(r));
  return std::get<Target>(r);
}

int target_error(std::string_view t) {
  auto r = parse_target(t);
  REQUIRE(std::holds_alternative<CodecError>(r));
  return std::get<CodecError>(r).http_status;
}

PolicyRequest body(Command c, std::string_view b) {
  auto r = parse_policy_body(c, b);
  if (auto* e = std::get_if<CodecError>(&r)) FAIL("unexpected error: " << e->message);
  return std::get<PolicyRequest>(r);
}

CodecError body_error(Command c, std::string_view b) {
  auto r = parse_policy_body(c, b);
  REQUIRE(std::holds_alternative<CodecError>(r));
  return std::get<CodecError>(r);
}

constexpr std::string_view captured_allow =
    R"({"device_id":"","login":"john@example.org","protocol":"imap","pwhash":"0834","remote":"192.0.2.10","session_id":"S3ss10nID","tls":false})";
constexpr std::string_view captured_report =
    R"({"device_id":"","login":"john@example.org","protocol":"imap","pwhash":"0834","remote":"192.0.2.10","session_id":"S3ss10nID","success":true,"policy_reject":false,"tls":false})";
constexpr std::string_view captured_custom =
    R"({"attrs":{"local":"192.0.2.1","service":"imap"},"login":"john@example.org","protocol":"imap","pwhash":"8347d72ac99724c75babec39e6b7b96e5db6505bf0fba2ebba023824bf74513b","remote":"192.0.2.10","zz":{"deep":{"deep/x":"192.0.2.10"}},"tls":false})";

}  // namespace

TEST_CASE("target: origin form as Dovecot 2.3 sends it") {
  auto t = target("/policy?command=allow");
  CHECK(t.path == "/policy");
  CHECK(t.param("command") == "allow");
  auto c = command_of(t);
  REQUIRE(std::holds_alternative<Command>(c));
  CHECK(std::get<Command>(c) == Command::allow);
  CHECK(std::get<Command>(command_of(target("/policy?command=report"))) == Command::report);
}

TEST_CASE("target: a URL ending in '&' and extra parameters") {
  auto t = target("/v1/check?tenant=a&command=allow");
  CHECK(t.path == "/v1/check");
  CHECK(t.param("tenant") == "a");
  CHECK(t.param("command") == "allow");
  CHECK(target("/x?&&command=report&").param("command") == "report");
}

TEST_CASE("target: absolute form (Dovecot 2.4 through a proxy socket)") {
  auto t = target("http://policy.local/check?command=allow");
  CHECK(t.path == "/check");
  CHECK(t.param("command") == "allow");
  CHECK(target("HTTP://127.0.0.1:8642?command=report").path == "/");
  CHECK(target("http://127.0.0.1:8642?command=report").param("command") == "report");
  CHECK(target("https://h").path == "/");
}

TEST_CASE("target: percent escapes are decoded") {
  auto t = target("/a%2Fb?command=%61llow&x=a+b");
  CHECK(t.path == "/a/b");
  CHECK(t.param("command") == "allow");
  CHECK(t.param("x") == "a b");
}

TEST_CASE("target: refused forms") {
  CHECK(target_error("") == 400);
  CHECK(target_error("*") == 400);
  CHECK(target_error("policy?command=allow") == 400);
  CHECK(target_error("ftp://h/x") == 400);
  CHECK(target_error("http:///x") == 400);
  CHECK(target_error("/a b") == 400);
  CHECK(target_error("/a%zz") == 400);
  CHECK(target_error("/a?x=%4") == 400);
  CHECK(target_error("/a?x=%") == 400);
  CHECK(target_error(std::string(5000, '/')) == 414);
}

TEST_CASE("command: missing or unknown") {
  CHECK(std::holds_alternative<CodecError>(command_of(target("/policy"))));
  CHECK(std::holds_alternative<CodecError>(command_of(target("/policy?command=reset"))));
  CHECK(std::holds_alternative<CodecError>(command_of(target("/policy?command=ALLOW"))));
}

TEST_CASE("body: the captured allow request") {
  auto r = body(Command::allow, captured_allow);
  CHECK(r.command == Command::allow);
  CHECK(r.login == "john@example.org");
  CHECK(r.remote == "192.0.2.10");
  REQUIRE(r.pwhash);
  CHECK(*r.pwhash == "0834");
  CHECK(r.protocol == "imap");
  CHECK_FALSE(r.tls);
}

TEST_CASE("body: the captured report request") {
  auto r = body(Command::report, captured_report);
  CHECK(r.success);
  CHECK_FALSE(r.policy_reject);
  auto f = body(Command::report,
                R"({"login":"a","remote":"","pwhash":"0b78","success":false,"policy_reject":true,"tls":true})");
  CHECK_FALSE(f.success);
  CHECK(f.policy_reject);
  CHECK(f.tls);
  CHECK(f.remote.empty());
}

TEST_CASE("body: nested attributes and full-length hashes are accepted") {
  auto r = body(Command::allow, captured_custom);
  CHECK(r.pwhash->size() == 64);
  CHECK(r.remote == "192.0.2.10");
}

TEST_CASE("body: login is lower-cased, pwhash optional, fail_type kept") {
  auto r = body(Command::report, R"({"login":"John@Example.ORG","remote":"::1","success":false,"fail_type":"internal"})");
  CHECK(r.login == "john@example.org");
  CHECK_FALSE(r.pwhash);
  CHECK(r.fail_type == "internal");
}

TEST_CASE("body: not JSON, not an object, wrong types, missing fields") {
  CHECK(body_error(Command::allow, "").http_status == 400);
  CHECK(body_error(Command::allow, "login=john").http_status == 400);
  CHECK(body_error(Command::allow, R"({"login":"a","remote":"1.2.3.4")").http_status == 400);
  CHECK(body_error(Command::allow, R"(["login"])").http_status == 400);
  CHECK(body_error(Command::allow, "\"x\"").http_status == 400);
  CHECK(body_error(Command::allow, "{\"login\":\"\xff\",\"remote\":\"\"}").http_status == 400);  // not UTF-8
  CHECK(body_error(Command::allow, R"({"remote":"1.2.3.4"})").http_status == 422);
  CHECK(body_error(Command::allow, R"({"login":"a"})").http_status == 422);
  CHECK(body_error(Command::allow, R"({"login":5,"remote":""})").http_status == 422);
  CHECK(body_error(Command::allow, R"({"login":"a","remote":"","tls":"yes"})").http_status == 422);
  CHECK(body_error(Command::allow, R"({"login":"a","remote":"","pwhash":12})").http_status == 422);
  CHECK(body_error(Command::report, R"({"login":"a","remote":""})").http_status == 422);
  CHECK(body_error(Command::report, R"({"login":"a","remote":"","success":"true"})").http_status == 422);
  CHECK(body_error(Command::allow, R"({"login":")" + std::string(600, 'a') + R"(","remote":""})").http_status == 422);
  // error messages never quote the body
  auto e = body_error(Command::allow, R"({"login":"secret-login","remote":5})");
  CHECK(e.message.find("secret-login") == std::string::npos);
}

TEST_CASE("body: nesting depth is bounded") {
  std::string deep = R"({"login":"a","remote":"","x":)" + std::string(100, '[') + std::string(100, ']') + "}";
  CHECK(body_error(Command::allow, deep).http_status == 400);
}

TEST_CASE("decisions encode as Dovecot reads them") {
  CHECK(encode_decision(Decision::allow()) == R"({"status":0,"msg":""})");
  CHECK(encode_decision(Decision::tarpit(3)) == R"({"status":3,"msg":""})");
  CHECK(encode_decision(Decision::reject("Go \"away\"")) == R"({"status":-1,"msg":"Go \"away\""})");
  CHECK(encode_error("bad\n") == R"({"error":"bad\n"})");
}

TEST_CASE("IP addresses and the /64 aggregation") {
  auto v4 = parse_ip("192.0.2.10");
  REQUIRE(v4);
  CHECK_FALSE(v4->v6);
  CHECK(to_string(*v4) == "192.0.2.10");
  CHECK(to_string(aggregate(*v4)) == "192.0.2.10/32");
  auto mapped = parse_ip("::ffff:192.0.2.10");
  REQUIRE(mapped);
  CHECK(*mapped == *v4);
  auto v6 = parse_ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
  REQUIRE(v6);
  CHECK(to_string(aggregate(*v6)) == "2001:db8:1:2::/64");
  CHECK(aggregate(*v6) == aggregate(*parse_ip("2001:db8:1:2::1")));
  CHECK_FALSE(aggregate(*v6) == aggregate(*parse_ip("2001:db8:1:3::1")));
  for (auto bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "fe80::1%eth0", "x", "1.2.3.4 ", "::g"})
    CHECK_FALSE(parse_ip(bad));
}

TEST_CASE("networks") {
  auto n = parse_network("192.0.2.0/24");
  REQUIRE(n);
  CHECK(n->contains(*parse_ip("192.0.2.200")));
  CHECK_FALSE(n->contains(*parse_ip("192.0.3.1")));
  CHECK_FALSE(n->contains(*parse_ip("::1")));
  CHECK(to_string(*n) == "192.0.2.0/24");
  CHECK(to_string(*parse_network("10.1.2.3")) == "10.1.2.3/32");
  CHECK(parse_network("0.0.0.0/0")->contains(*parse_ip("8.8.8.8")));
  auto v6 = parse_network("2001:db8::/32");
  REQUIRE(v6);
  CHECK(v6->contains(*parse_ip("2001:db8:ffff::1")));
  CHECK(parse_network("2001:db8:0:2::/63")->contains(*parse_ip("2001:db8:0:3::5")));
  CHECK_FALSE(parse_network("2001:db8:0:1::/63"));
  for (auto bad : {"192.0.2.1/24", "192.0.2.0/33", "192.0.2.0/", "192.0.2.0/x", "2001:db8::/129", "::ffff:1.2.3.0/120"})
    CHECK_FALSE(parse_network(bad));
}

TEST_CASE("admin block bodies") {
  auto r = parse_block_body(R"({"ip":"203.0.113.0/24","seconds":3600,"reason":"ticket 42"})");
  REQUIRE(std::holds_alternative<BlockRequest>(r));
  auto& b = std::get<BlockRequest>(r);
  REQUIRE(b.network);
  CHECK(to_string(*b.network) == "203.0.113.0/24");
  CHECK(b.seconds == 3600);
  CHECK(b.reason == "ticket 42");
  auto l = std::get<BlockRequest>(parse_block_body(R"({"login":"John@Example.org"})"));
  CHECK(*l.login == "john@example.org");
  CHECK(l.seconds == 0);
  for (auto bad : {R"({})", R"({"ip":"1.2.3.4","login":"a"})", R"({"ip":"1.2.3.4/8"})", R"({"ip":"1.2.3.4","seconds":-1})",
                   R"({"ip":"1.2.3.4","seconds":1.5})", R"({"login":""})", R"({"login":"a","reason":"x\ny"})", "nope"})
    CHECK(std::holds_alternative<CodecError>(parse_block_body(bad)));
}

// Dovecot 2.4.1 through auth_policy { http_client_proxy_socket_path }: absolute-form targets
// with the URL's own host, and fail_type in every body (transcript policy-unix-proxy.log).
TEST_CASE("Dovecot 2.4 over a proxy socket: targets and bodies as captured") {
  auto allow_target = target("http://policy.invalid/policy?command=allow");
  CHECK(allow_target.path == "/policy");
  CHECK(std::get<Command>(command_of(allow_target)) == Command::allow);
  CHECK(std::get<Command>(command_of(target("http://policy.invalid/policy?command=report"))) == Command::report);

  auto allow = body(Command::allow,
                    R"({"device_id":"","fail_type":"","login":"john@example.org","protocol":"doveadm","pwhash":"0834","remote":"192.0.2.10","session_id":"","tls":false})");
  CHECK(allow.login == "john@example.org");
  CHECK(allow.remote == "192.0.2.10");
  CHECK(allow.fail_type.empty());

  auto rejected = body(Command::report,
                       R"({"device_id":"","fail_type":"policy","login":"blocked@example.org","protocol":"doveadm","pwhash":"0b78","remote":"192.0.2.10","session_id":"","success":false,"policy_reject":true,"tls":false})");
  CHECK_FALSE(rejected.success);
  CHECK(rejected.policy_reject);
  CHECK(rejected.fail_type == "policy");

  auto internal = body(Command::report,
                       R"({"device_id":"","fail_type":"internal","login":"fail@example.org","protocol":"doveadm","pwhash":"0319","remote":"","session_id":"","success":false,"policy_reject":false,"tls":false})");
  CHECK(internal.fail_type == "internal");
  CHECK(internal.remote.empty());

  for (const char* kind : {"credentials", "account"}) {
    std::string b = std::string(R"({"fail_type":")") + kind +
                    R"(","login":"x@example.org","pwhash":"0abc","remote":"192.0.2.1","success":false})";
    CHECK(body(Command::report, b).fail_type == kind);
  }
}
