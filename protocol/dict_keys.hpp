// maildict's dict key namespace (DESIGN.md §4): which directory question a dict key asks.
// Pure: turns key strings into typed questions; it knows nothing of storage or sockets.
#pragma once
#include <string>
#include <string_view>
#include <variant>

namespace maildict::dict {

struct PassdbQuestion { std::string login; };   // shared/passdb/<login>
struct UserdbQuestion { std::string login; };   // shared/userdb/<login>
struct SmtpdQuestion {                          // shared/smtpd/<service>/<key>
  std::string service;
  std::string key;
};
struct UnmappedKey {};                          // anything else: answered with F

using KeyQuestion = std::variant<PassdbQuestion, UserdbQuestion, SmtpdQuestion, UnmappedKey>;

// Classifies a lookup key. A login is lower-cased (ASCII) as Dovecot's auth_username_format
// does; a login that is empty or holds '/' is an UnmappedKey (it is some other key below
// passdb/ or userdb/, such as Debian's sample "userdb/%u/quota").
KeyQuestion classify_lookup_key(std::string_view key);

enum class IteratePath { userdb, unmapped };
// "shared/userdb/" (with or without the trailing '/') lists users; anything else is unmapped.
IteratePath classify_iterate_path(std::string_view path);

inline constexpr std::string_view userdb_prefix = "shared/userdb/";

}  // namespace maildict::dict
