// The auth policy settings of maildict.conf.
#include <doctest/doctest.h>

#include "conf/config.hpp"

using maildict::conf::ConfigError;
using maildict::conf::parse_config;

namespace {
std::string policy_error(const std::string& text) {
  try {
    parse_config(text, "p.conf");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("policy: the shipped configuration leaves the listener off and documents the defaults") {
  auto c = maildict::conf::load_config(MAILDICT_SOURCE_DIR "/conf/maildict.conf");
  maildict::server::PolicySettings defaults;
  CHECK(c.policy_listen.empty());
  CHECK(c.policy_api_header == "X-API-Key");
  CHECK(c.policy.window == defaults.window);
  CHECK(c.policy.ip_login_tarpit == defaults.ip_login_tarpit);
  CHECK(c.policy.ip_login_reject == defaults.ip_login_reject);
  CHECK(c.policy.ip_tarpit == defaults.ip_tarpit);
  CHECK(c.policy.ip_reject == defaults.ip_reject);
  CHECK(c.policy.login_tarpit == defaults.login_tarpit);
  CHECK(c.policy.login_reject == defaults.login_reject);
  CHECK(c.policy.repeats_per_failure == defaults.repeats_per_failure);
  CHECK(c.policy.tarpit_seconds == defaults.tarpit_seconds);
  CHECK(c.policy.tarpit_max_seconds == defaults.tarpit_max_seconds);
  CHECK(c.policy.reject_message == defaults.reject_message);
  CHECK(c.policy.max_entries == defaults.max_entries);
  CHECK(c.policy.max_blocks == defaults.max_blocks);
  CHECK(c.policy.allow_networks.empty());
}

TEST_CASE("policy: listener address, thresholds and allow-list") {
  auto c = parse_config(
      "policy_listen = 127.0.0.1:8642\npolicy_window = 90s\npolicy_ip_reject = 0\n"
      "policy_allow_networks = 192.0.2.0/24, 2001:db8::/48 127.0.0.1\npolicy_api_key = s3cret\n",
      "p.conf");
  CHECK(c.policy_listen == "127.0.0.1:8642");
  auto a = maildict::conf::policy_listen_address(c);
  CHECK(a.host == "127.0.0.1");
  CHECK(a.port == 8642);
  CHECK(c.policy.window == std::chrono::seconds(90));
  CHECK(c.policy.ip_reject == 0);
  REQUIRE(c.policy.allow_networks.size() == 3);
  CHECK(maildict::policy::to_string(c.policy.allow_networks[1]) == "2001:db8::/48");
  CHECK(maildict::conf::policy_listen_address(parse_config("policy_listen = [::1]:99\n", "p")).host == "::1");
}

TEST_CASE("policy: bad values name the line") {
  CHECK(policy_error("policy_listen = 0.0.0.0:8642\n").find("p.conf:1: policy_listen: must be a loopback") == 0);
  CHECK(policy_error("policy_listen = 192.0.2.1:8642\n").find("loopback") != std::string::npos);
  CHECK(policy_error("policy_listen = 127.0.0.1\n").find("ADDRESS:PORT") != std::string::npos);
  CHECK(policy_error("policy_listen = 127.0.0.1:0\n").find("ADDRESS:PORT") != std::string::npos);
  CHECK(policy_error("policy_listen = ::1:80\n").find("ADDRESS:PORT") != std::string::npos);
  CHECK(policy_error("\npolicy_allow_networks = 10.0.0.1/8\n").find("p.conf:2: policy_allow_networks: '10.0.0.1/8'") == 0);
  CHECK(policy_error("policy_ip_tarpit = 1001\n").find("at most 1000") != std::string::npos);
  CHECK(policy_error("policy_window = 10ms\n").find("at least 1s") != std::string::npos);
  CHECK(policy_error("policy_tarpit_seconds = 0\n").find("at least 1") != std::string::npos);
  CHECK(policy_error("policy_api_header = X API\n").find("header name") != std::string::npos);
  CHECK(policy_error("policy_max_body = 100\n").find("between 1k") != std::string::npos);
}
