// maildict's dict key namespace (DESIGN.md §4).
#include "protocol/dict_keys.hpp"

namespace maildict::dict {

namespace {

constexpr std::string_view passdb_prefix = "shared/passdb/";
constexpr std::string_view smtpd_prefix = "shared/smtpd/";

// A login is one path segment; anything deeper (e.g. "userdb/%u/quota") is a different key.
bool valid_login(std::string_view login) {
  return !login.empty() && login.find('/') == std::string_view::npos;
}

// ASCII only: Dovecot's %L lower-cases bytewise, and UTF-8 must stay untouched.
std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

}  // namespace

KeyQuestion classify_lookup_key(std::string_view key) {
  if (key.starts_with(passdb_prefix)) {
    const auto login = key.substr(passdb_prefix.size());
    if (!valid_login(login)) return UnmappedKey{};
    return PassdbQuestion{ascii_lower(login)};
  }
  if (key.starts_with(userdb_prefix)) {
    const auto login = key.substr(userdb_prefix.size());
    if (!valid_login(login)) return UnmappedKey{};
    return UserdbQuestion{ascii_lower(login)};
  }
  if (key.starts_with(smtpd_prefix)) {
    const auto rest = key.substr(smtpd_prefix.size());
    const auto slash = rest.find('/');
    if (slash == std::string_view::npos || slash == 0) return UnmappedKey{};
    // The key may be empty (smtpd can look up the null sender) or hold '/' (netaddr CIDRs).
    return SmtpdQuestion{std::string(rest.substr(0, slash)), std::string(rest.substr(slash + 1))};
  }
  return UnmappedKey{};
}

IteratePath classify_iterate_path(std::string_view path) {
  if (path == userdb_prefix || path == userdb_prefix.substr(0, userdb_prefix.size() - 1))
    return IteratePath::userdb;
  return IteratePath::unmapped;
}

}  // namespace maildict::dict
