// One user, two spellings (DESIGN.md §3): "user@domain" and "user_domain" name the same row.
// Pure string handling; used by every backend before it asks its database.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace maildict::storage {

struct MailboxName {
  std::string local_part;
  std::string domain;
  std::string canonical() const { return local_part + "@" + domain; }
};

// Splits a login: at the last '@' if there is one, otherwise at the last '_' (domains never
// hold '_', so "john_doe_example.org" is john_doe at example.org). Lower-cases ASCII.
// Returns nullopt when either part would be empty, or the name holds NUL, '/', whitespace or
// another ASCII control character (DEL included).
std::optional<MailboxName> split_login(std::string_view login);

// Expands %u, %n, %d and %% in a home/mail template. Any other %x is kept as written.
std::string expand_template(std::string_view tmpl, const MailboxName& name);

}  // namespace maildict::storage
