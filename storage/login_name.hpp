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

// Splits a recipient address for smtpd's alias lookups: only a full "local@domain" (at the last
// '@'), lower-cased, with the sub-address cut off at the first of `delimiters` (a delimiter in
// first position is kept: "+x@d" has no base to reach). Same character rules as split_login.
std::optional<MailboxName> split_address(std::string_view address, std::string_view delimiters);

// The delivery name smtpd hands back to its userbase: "john_doe_example.org". split_login
// turns it back into the same user.
inline std::string delivery_name(const MailboxName& name) { return name.local_part + "_" + name.domain; }

// Expands %u, %n, %d and %% in a home/mail template. Any other %x is kept as written.
std::string expand_template(std::string_view tmpl, const MailboxName& name);

}  // namespace maildict::storage
