// OpenSMTPD's table services (specs/smtpd-tables.md §3.3), shared by the imsg and the text
// protocol codecs, and the name each one has in maildict's key namespace
// (`shared/smtpd/<name>/<key>`, DESIGN.md §4).
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace maildict::smtpd {

// The values are smtpd's bit flags: the imsg protocol sends them as a native int.
enum class Service : std::uint32_t {
  alias = 0x001,
  domain = 0x002,
  credentials = 0x004,
  netaddr = 0x008,
  userinfo = 0x010,
  source = 0x020,
  mailaddr = 0x040,
  addrname = 0x080,
  mailaddrmap = 0x100,
  relayhost = 0x200,
  string = 0x400,
  regex = 0x800,
  auth = 0x1000,  // 7.6+ only; never registered by us (lower-cased passwords, §4.4)
};

inline constexpr std::array<Service, 13> all_services = {
    Service::alias,    Service::domain,   Service::credentials, Service::netaddr,
    Service::userinfo, Service::source,   Service::mailaddr,    Service::addrname,
    Service::mailaddrmap, Service::relayhost, Service::string, Service::regex,
    Service::auth,
};

// The text protocol's name, which is also the dict key segment: smtpd's names are already the
// ones maildictd answers under shared/smtpd/ (both `virtual` and `alias` tables ask ALIAS, so
// one name serves both). Services maildictd has no data for (string, regex, auth, relayhost)
// still map to their own name; maildictd answers F for them, which the table passes on as a
// temporary failure rather than a silent "not found".
constexpr std::string_view service_name(Service s) {
  switch (s) {
    case Service::alias: return "alias";
    case Service::domain: return "domain";
    case Service::credentials: return "credentials";
    case Service::netaddr: return "netaddr";
    case Service::userinfo: return "userinfo";
    case Service::source: return "source";
    case Service::mailaddr: return "mailaddr";
    case Service::addrname: return "addrname";
    case Service::mailaddrmap: return "mailaddrmap";
    case Service::relayhost: return "relayhost";
    case Service::string: return "string";
    case Service::regex: return "regex";
    case Service::auth: return "auth";
  }
  return "none";
}

constexpr std::optional<Service> service_from_name(std::string_view name) {
  for (Service s : all_services)
    if (service_name(s) == name) return s;
  return std::nullopt;
}

// imsg carries the service as a C int; anything but exactly one known flag is rejected.
constexpr std::optional<Service> service_from_id(std::uint32_t id) {
  for (Service s : all_services)
    if (static_cast<std::uint32_t>(s) == id) return s;
  return std::nullopt;
}

// What the text-protocol handshake registers (§9 item 4): everything but `auth`.
inline constexpr std::array<Service, 12> registered_services = {
    Service::alias,    Service::domain,   Service::credentials, Service::netaddr,
    Service::userinfo, Service::source,   Service::mailaddr,    Service::addrname,
    Service::mailaddrmap, Service::relayhost, Service::string, Service::regex,
};

}  // namespace maildict::smtpd

namespace maildict::smtpd {

// What smtpd asks. UPDATE and the handshakes are protocol-specific; these four are common.
enum class Operation { update, check, lookup, fetch };

constexpr std::string_view operation_name(Operation op) {
  switch (op) {
    case Operation::update: return "update";
    case Operation::check: return "check";
    case Operation::lookup: return "lookup";
    case Operation::fetch: return "fetch";
  }
  return "";
}

// The three outcomes of DESIGN.md §2 rule 1, as both protocols send them.
enum class Outcome { found, not_found, temp_fail };

struct Answer {
  Outcome outcome = Outcome::temp_fail;
  std::string value;  // found lookups/fetches only; never logged (it may be a password hash)
  std::string error;  // temp_fail only: a short reason smtpd may log (text protocol)

  static Answer found(std::string v) { return {Outcome::found, std::move(v), {}}; }
  static Answer not_found() { return {Outcome::not_found, {}, {}}; }
  static Answer temp_fail(std::string why) { return {Outcome::temp_fail, {}, std::move(why)}; }
};

// smtpd itself fails keys of 1024 bytes or more (§5.1), so one that arrives is not from smtpd.
inline constexpr std::size_t max_key_length = 1023;

// Why a key must not be forwarded (nullopt: it is fine). Both protocols can carry keys smtpd
// would never send; answering them with a temporary failure is safer than guessing.
constexpr std::optional<std::string_view> key_problem(std::string_view key) {
  if (key.size() > max_key_length) return "key too long";
  for (char c : key)
    if (c == '\0' || c == '\n' || c == '\r') return "key holds a NUL or line break";
  return std::nullopt;
}

// Why a found value cannot be sent (nullopt: it can). smtpd exits on an empty found value, and
// a NUL or line break would cut or split the reply; such a value becomes a temporary failure.
constexpr std::optional<std::string_view> value_problem(std::string_view value) {
  if (value.empty()) return "empty value";
  for (char c : value)
    if (c == '\0' || c == '\n' || c == '\r') return "value holds a NUL or line break";
  return std::nullopt;
}

}  // namespace maildict::smtpd
