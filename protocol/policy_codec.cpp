#include "protocol/policy_codec.hpp"

#include <arpa/inet.h>

#include <boost/json.hpp>
#include <cstring>

#include "protocol/json_writer.hpp"

namespace maildict::policy {
namespace json = boost::json;

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded decoding ('+' is a space). False on a broken %-escape.
bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '+') {
      out.push_back(' ');
    } else if (c == '%') {
      if (i + 2 >= in.size()) return false;
      int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return true;
}

CodecError bad(std::string message, int status = 400) { return CodecError{status, std::move(message)}; }

std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// Parses a JSON object body with bounded depth. Boost.JSON checks UTF-8 and syntax.
std::variant<json::object, CodecError> parse_object(std::string_view body) {
  if (body.empty()) return bad("the request body is empty; a JSON object is expected");
  json::parse_options opts;
  opts.max_depth = 16;
  std::error_code ec;
  json::value v = json::parse(json::string_view(body.data(), body.size()), ec, {}, opts);
  if (ec) return bad("the request body is not valid JSON (" + ec.message() + ")");
  if (!v.is_object()) return bad("the request body must be a JSON object");
  return std::move(v.as_object());
}

// A member that must be a string when present. nullptr: absent. Sets err on a wrong type.
const json::string* string_member(const json::object& o, std::string_view name, std::optional<CodecError>& err) {
  auto it = o.find(json::string_view(name.data(), name.size()));
  if (it == o.end()) return nullptr;
  if (!it->value().is_string()) {
    err = bad("'" + std::string(name) + "' must be a JSON string", 422);
    return nullptr;
  }
  return &it->value().get_string();
}

std::optional<bool> bool_member(const json::object& o, std::string_view name, std::optional<CodecError>& err) {
  auto it = o.find(json::string_view(name.data(), name.size()));
  if (it == o.end()) return std::nullopt;
  if (!it->value().is_bool()) {
    err = bad("'" + std::string(name) + "' must be true or false", 422);
    return std::nullopt;
  }
  return it->value().get_bool();
}

std::string_view sv(const json::string& s) { return std::string_view(s.data(), s.size()); }

}  // namespace

// ---- target ---------------------------------------------------------------------------------

std::optional<std::string_view> Target::param(std::string_view name) const {
  for (const auto& [k, v] : query)
    if (k == name) return std::string_view(v);
  return std::nullopt;
}

std::variant<Target, CodecError> parse_target(std::string_view target) {
  if (target.empty()) return bad("empty request target");
  if (target.size() > max_target_length) return bad("request target too long", 414);
  for (unsigned char c : target)
    if (c <= 0x20 || c >= 0x7f) return bad("request target contains a space, control or non-ASCII byte");
  std::string_view rest = target;
  if (rest.front() != '/') {
    // absolute-form: scheme "://" authority path-abempty [ "?" query ]
    auto colon = rest.find("://");
    if (colon == std::string_view::npos || colon == 0) return bad("request target must be /path or http://host/path");
    std::string scheme = lower_ascii(rest.substr(0, colon));
    if (scheme != "http" && scheme != "https") return bad("request target has an unsupported scheme");
    rest.remove_prefix(colon + 3);
    auto path_start = rest.find_first_of("/?");
    if (path_start == 0) return bad("request target has an empty host");
    rest = path_start == std::string_view::npos ? std::string_view("/") : rest.substr(path_start);
  }
  Target t;
  auto q = rest.find('?');
  std::string_view path = rest.substr(0, q);
  if (path.empty()) path = "/";
  if (!percent_decode(path, t.path)) return bad("request target has a broken %-escape");
  if (q != std::string_view::npos) {
    std::string_view query = rest.substr(q + 1);
    auto hash = query.find('#');
    if (hash != std::string_view::npos) query = query.substr(0, hash);
    while (!query.empty()) {
      auto amp = query.find('&');
      std::string_view pair = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      if (pair.empty()) continue;  // "a=1&&b=2", or the URL Dovecot was given ended in '&'
      auto eq = pair.find('=');
      std::string key, value;
      if (!percent_decode(pair.substr(0, eq), key) ||
          (eq != std::string_view::npos && !percent_decode(pair.substr(eq + 1), value)))
        return bad("request target has a broken %-escape");
      if (t.query.size() >= 64) return bad("request target has too many query parameters");
      t.query.emplace_back(std::move(key), std::move(value));
    }
  }
  return t;
}

std::variant<Command, CodecError> command_of(const Target& target) {
  auto c = target.param("command");
  if (!c) return bad("missing command=allow or command=report in the query");
  if (*c == "allow") return Command::allow;
  if (*c == "report") return Command::report;
  return bad("unknown command (allow and report are served)");
}

// ---- body -----------------------------------------------------------------------------------

std::variant<PolicyRequest, CodecError> parse_policy_body(Command command, std::string_view body) {
  auto parsed = parse_object(body);
  if (auto* e = std::get_if<CodecError>(&parsed)) return std::move(*e);
  const auto& o = std::get<json::object>(parsed);
  std::optional<CodecError> err;
  PolicyRequest r;
  r.command = command;

  const json::string* login = string_member(o, "login", err);
  if (err) return *err;
  if (!login) return bad("missing 'login' (auth_policy_request_attributes must include login=%{requested_username})", 422);
  if (login->size() > max_login_length) return bad("'login' is too long", 422);
  r.login = lower_ascii(sv(*login));

  const json::string* remote = string_member(o, "remote", err);
  if (err) return *err;
  if (!remote) return bad("missing 'remote' (auth_policy_request_attributes must include remote=%{rip})", 422);
  if (remote->size() > 64) return bad("'remote' is too long for an IP address", 422);
  r.remote = sv(*remote);

  const json::string* pwhash = string_member(o, "pwhash", err);
  if (err) return *err;
  if (pwhash) {
    if (pwhash->size() > max_pwhash_length) return bad("'pwhash' is too long", 422);
    r.pwhash = std::string(sv(*pwhash));
  }
  if (const json::string* p = string_member(o, "protocol", err)) r.protocol = std::string(sv(*p).substr(0, 32));
  if (err) return *err;
  if (const json::string* f = string_member(o, "fail_type", err)) r.fail_type = std::string(sv(*f).substr(0, 32));
  if (err) return *err;
  if (auto tls = bool_member(o, "tls", err)) r.tls = *tls;
  if (err) return *err;

  if (command == Command::report) {
    auto success = bool_member(o, "success", err);
    if (err) return *err;
    if (!success) return bad("missing 'success' (true or false) in a report", 422);
    r.success = *success;
    if (auto pr = bool_member(o, "policy_reject", err)) r.policy_reject = *pr;
    if (err) return *err;
  }
  return r;
}

// ---- replies --------------------------------------------------------------------------------

std::string encode_decision(const Decision& d) {
  int status = 0;
  std::string_view msg;
  switch (d.kind) {
    case Decision::Kind::allow: break;
    case Decision::Kind::tarpit: status = d.seconds > 0 ? d.seconds : 1; break;
    case Decision::Kind::reject: status = -1; msg = d.message; break;
  }
  std::string out = "{\"status\":" + std::to_string(status) + ",\"msg\":";
  maildict::json::append_string(out, msg);
  out += '}';
  return out;
}

std::string encode_error(std::string_view message) {
  std::string out = "{\"error\":";
  maildict::json::append_string(out, message);
  out += "}";
  return out;
}

// ---- IP addresses ---------------------------------------------------------------------------

std::optional<IpAddress> parse_ip(std::string_view text) {
  if (text.empty() || text.size() > 45) return std::nullopt;
  char buf[46];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress ip;
  if (text.find(':') == std::string_view::npos) {
    if (::inet_pton(AF_INET, buf, ip.bytes.data()) != 1) return std::nullopt;
    return ip;
  }
  if (::inet_pton(AF_INET6, buf, ip.bytes.data()) != 1) return std::nullopt;
  static constexpr std::uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (std::memcmp(ip.bytes.data(), mapped, 12) == 0) {
    IpAddress v4;
    std::memcpy(v4.bytes.data(), ip.bytes.data() + 12, 4);
    return v4;
  }
  ip.v6 = true;
  return ip;
}

std::string to_string(const IpAddress& ip) {
  char buf[INET6_ADDRSTRLEN];
  ::inet_ntop(ip.v6 ? AF_INET6 : AF_INET, ip.bytes.data(), buf, sizeof buf);
  return buf;
}

namespace {
IpAddress masked(IpAddress ip, unsigned prefix) {
  unsigned bits = ip.v6 ? 128 : 32;
  for (unsigned i = 0; i < bits / 8; ++i) {
    unsigned keep = prefix > i * 8 ? std::min(8u, prefix - i * 8) : 0;
    std::uint8_t mask = keep == 0 ? 0 : static_cast<std::uint8_t>(0xff << (8 - keep));
    ip.bytes[i] &= mask;
  }
  return ip;
}
}  // namespace

bool IpNetwork::contains(const IpAddress& ip) const {
  return ip.v6 == base.v6 && masked(ip, prefix) == base;
}

std::optional<IpNetwork> parse_network(std::string_view text) {
  auto slash = text.find('/');
  auto ip = parse_ip(text.substr(0, slash));
  if (!ip) return std::nullopt;
  // "::ffff:192.0.2.0/120" would need its prefix shifted; refuse rather than guess.
  if (!ip->v6 && text.substr(0, slash).find(':') != std::string_view::npos && slash != std::string_view::npos)
    return std::nullopt;
  unsigned bits = ip->v6 ? 128 : 32;
  unsigned prefix = bits;
  if (slash != std::string_view::npos) {
    std::string_view p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3) return std::nullopt;
    prefix = 0;
    for (char c : p) {
      if (c < '0' || c > '9') return std::nullopt;
      prefix = prefix * 10 + static_cast<unsigned>(c - '0');
    }
    if (prefix > bits) return std::nullopt;
  }
  IpNetwork net{masked(*ip, prefix), prefix};
  if (!(net.base == *ip)) return std::nullopt;  // host bits set
  return net;
}

std::string to_string(const IpNetwork& net) {
  return to_string(net.base) + "/" + std::to_string(net.prefix);
}

IpNetwork aggregate(const IpAddress& ip) {
  if (!ip.v6) return IpNetwork{ip, 32};
  return IpNetwork{masked(ip, 64), 64};
}

// ---- admin ----------------------------------------------------------------------------------

std::variant<BlockRequest, CodecError> parse_block_body(std::string_view body) {
  auto parsed = parse_object(body);
  if (auto* e = std::get_if<CodecError>(&parsed)) return std::move(*e);
  const auto& o = std::get<json::object>(parsed);
  std::optional<CodecError> err;
  BlockRequest r;
  const json::string* ip = string_member(o, "ip", err);
  if (err) return *err;
  const json::string* login = string_member(o, "login", err);
  if (err) return *err;
  if ((ip != nullptr) == (login != nullptr)) return bad("give exactly one of 'ip' (an address or network) and 'login'", 422);
  if (ip) {
    r.network = parse_network(sv(*ip));
    if (!r.network) return bad("'ip' must be an IPv4/IPv6 address or network such as 203.0.113.0/24 (host bits zero)", 422);
  } else {
    if (login->empty() || login->size() > max_login_length) return bad("'login' must be 1 to 512 bytes", 422);
    r.login = lower_ascii(sv(*login));
  }
  if (auto it = o.find("seconds"); it != o.end()) {
    if (!it->value().is_int64() && !it->value().is_uint64()) return bad("'seconds' must be a whole number", 422);
    auto n = it->value().is_int64() ? it->value().get_int64() : static_cast<std::int64_t>(it->value().get_uint64());
    if (n < 0 || n > 100LL * 365 * 86400) return bad("'seconds' must be between 0 (until unblocked) and 100 years", 422);
    r.seconds = n;
  }
  const json::string* reason = string_member(o, "reason", err);
  if (err) return *err;
  if (reason) {
    if (reason->size() > 200) return bad("'reason' must be at most 200 bytes", 422);
    for (unsigned char c : sv(*reason))
      if (c < 0x20 || c == 0x7f) return bad("'reason' must not contain control characters", 422);
    r.reason = std::string(sv(*reason));
  }
  return r;
}

}  // namespace maildict::policy
