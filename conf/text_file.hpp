// Small text helpers shared by the configuration readers (maildict.conf and the operator's
// smtpd table and dovecot-sql files).
#pragma once
#include <string>
#include <string_view>

namespace maildict::conf {

// Without leading and trailing spaces, tabs and carriage returns.
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// The whole file; throws ConfigError "PATH: cannot read WHAT" (conf/config.hpp).
std::string read_text_file(const std::string& path, const char* what = "the file");

}  // namespace maildict::conf
