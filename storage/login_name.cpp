#include "storage/login_name.hpp"

namespace maildict::storage {

namespace {

// Control characters and spaces never belong in a mail login; rejecting them here means no
// backend ever sees a name that could confuse logs, templates or path expansion (home = %d/%n).
bool forbidden_char(unsigned char c) { return c < 0x21 || c == 0x7f || c == '/'; }

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lowered(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = ascii_lower(c);
  return out;
}

}  // namespace

std::optional<MailboxName> split_login(std::string_view login) {
  for (char c : login)
    if (forbidden_char(static_cast<unsigned char>(c))) return std::nullopt;

  // '@' wins over '_' because a local part may legitimately hold '_' (john_doe@example.org),
  // while a domain never does, which is also why the '_' spelling splits at the last one.
  auto at = login.rfind('@');
  if (at == std::string_view::npos) at = login.rfind('_');
  if (at == std::string_view::npos) return std::nullopt;

  auto local = login.substr(0, at);
  auto domain = login.substr(at + 1);
  if (local.empty() || domain.empty()) return std::nullopt;
  return MailboxName{lowered(local), lowered(domain)};
}

std::optional<MailboxName> split_address(std::string_view address, std::string_view delimiters) {
  for (char c : address)
    if (forbidden_char(static_cast<unsigned char>(c))) return std::nullopt;
  auto at = address.rfind('@');
  if (at == std::string_view::npos) return std::nullopt;
  auto local = address.substr(0, at);
  auto domain = address.substr(at + 1);
  if (local.empty() || domain.empty()) return std::nullopt;
  if (!delimiters.empty()) {
    auto cut = local.find_first_of(delimiters);
    if (cut != std::string_view::npos && cut > 0) local = local.substr(0, cut);
  }
  return MailboxName{lowered(local), lowered(domain)};
}

std::string expand_template(std::string_view tmpl, const MailboxName& name) {
  std::string out;
  out.reserve(tmpl.size() + name.local_part.size() + name.domain.size());
  for (std::size_t i = 0; i < tmpl.size(); ++i) {
    char c = tmpl[i];
    if (c != '%' || i + 1 == tmpl.size()) {
      out += c;
      continue;
    }
    switch (tmpl[i + 1]) {
      case 'u': out += name.canonical(); break;
      case 'n': out += name.local_part; break;
      case 'd': out += name.domain; break;
      case '%': out += '%'; break;
      default:
        // Unknown variables stay visible in the result so a typo in the configuration shows
        // up in the path instead of silently collapsing two users into one directory.
        out += '%';
        out += tmpl[i + 1];
        break;
    }
    ++i;
  }
  return out;
}

}  // namespace maildict::storage
