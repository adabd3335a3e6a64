// Dovecot's auth policy protocol (specs/dovecot.md §3), pure: an HTTP request target and a
// JSON body in, a typed PolicyRequest out; a typed decision in, the JSON reply body out. Also
// the small admin requests (block/unblock) and IP address / network parsing, which the policy
// engine and the configuration share. No sockets, no clocks, no state.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace maildict::policy {

// A request that cannot be served: the HTTP status to answer with and a message that is safe
// to send back and to log (it never quotes the body, which may carry logins and hashes).
struct CodecError {
  int http_status = 400;
  std::string message;
};

// ---- request target -------------------------------------------------------------------------

// "/policy?command=allow", or the absolute form "http://policy.local/policy?command=allow"
// (what Dovecot 2.4 sends through an HTTP proxy socket, §3.8): path and decoded query pairs.
struct Target {
  std::string path;
  std::vector<std::pair<std::string, std::string>> query;

  // The first value of a query parameter.
  std::optional<std::string_view> param(std::string_view name) const;
};

constexpr std::size_t max_target_length = 4096;

std::variant<Target, CodecError> parse_target(std::string_view target);

// ---- policy requests ------------------------------------------------------------------------

enum class Command { allow, report };

// `command=allow` / `command=report` from the query; anything else is a 400.
std::variant<Command, CodecError> command_of(const Target& target);

struct PolicyRequest {
  Command command = Command::allow;
  std::string login;                  // lower-cased; may be empty (Dovecot sends "" when unknown)
  std::string remote;                 // as sent; "" when Dovecot does not know the client's IP
  std::optional<std::string> pwhash;  // absent when auth_policy_request_attributes leaves it out
  std::string protocol;
  bool tls = false;
  // report only
  bool success = false;
  bool policy_reject = false;
  std::string fail_type;  // Dovecot 2.4: internal, credentials, account, expired, disabled, policy
};

// Longest accepted values (Dovecot's own limits are far below these).
constexpr std::size_t max_login_length = 512;
constexpr std::size_t max_pwhash_length = 256;

// The JSON body of an allow or report request. `login` and `remote` must be present (strings),
// and a report must carry the boolean `success`; every other member is optional and members
// that maildict does not use (session_id, device_id, nested attrs) are ignored.
std::variant<PolicyRequest, CodecError> parse_policy_body(Command command, std::string_view body);

// ---- decisions ------------------------------------------------------------------------------

struct Decision {
  enum class Kind { allow, tarpit, reject };
  Kind kind = Kind::allow;
  int seconds = 0;      // tarpit only, >= 1
  std::string message;  // reject only (becomes the auth failure reason Dovecot reports)

  static Decision allow() { return {}; }
  static Decision tarpit(int s) { return {Kind::tarpit, s, {}}; }
  static Decision reject(std::string m) { return {Kind::reject, 0, std::move(m)}; }
};

// {"status":0,"msg":""}, {"status":3,"msg":""}, {"status":-1,"msg":"..."}
std::string encode_decision(const Decision& d);

// A JSON error body for 4xx/5xx answers: {"error":"..."}
std::string encode_error(std::string_view message);

// ---- IP addresses ---------------------------------------------------------------------------

struct IpAddress {
  bool v6 = false;
  std::array<std::uint8_t, 16> bytes{};  // IPv4 in the first 4 bytes

  friend bool operator==(const IpAddress&, const IpAddress&) = default;
};

// Dotted IPv4 or textual IPv6 (an IPv4-mapped IPv6 address becomes IPv4; a zone "%eth0" is
// refused).
std::optional<IpAddress> parse_ip(std::string_view text);
std::string to_string(const IpAddress& ip);

struct IpNetwork {
  IpAddress base;       // host bits zero
  unsigned prefix = 0;  // 0..32 or 0..128

  bool contains(const IpAddress& ip) const;
  friend bool operator==(const IpNetwork&, const IpNetwork&) = default;
};

// "192.0.2.0/24", "2001:db8::/48", or a single address (a /32 or /128). Host bits must be zero
// ("192.0.2.1/24" is refused: it is almost always a typo).
std::optional<IpNetwork> parse_network(std::string_view text);
std::string to_string(const IpNetwork& net);

// The network an address is counted under: IPv4 itself, IPv6 its /64 (one subscriber line
// gets a whole /64, so counting single IPv6 addresses would let one client act as billions).
IpNetwork aggregate(const IpAddress& ip);

// ---- admin requests (POST /admin/block, /admin/unblock) -------------------------------------

struct BlockRequest {
  std::optional<IpNetwork> network;  // exactly one of network and login
  std::optional<std::string> login;
  std::int64_t seconds = 0;  // 0: until unblocked
  std::string reason;
};

// {"ip":"203.0.113.0/24"} or {"login":"john@example.org"}, optional "seconds" (integer >= 0)
// and "reason" (string, at most 200 bytes). Unblock uses the same shape (seconds/reason ignored).
std::variant<BlockRequest, CodecError> parse_block_body(std::string_view body);

}  // namespace maildict::policy
