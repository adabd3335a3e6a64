// A writer for the flat JSON objects that Dovecot's passdb/userdb dict driver reads
// (specs/dovecot.md §2.4: strings and numbers only, no nesting). Pure and allocation-light.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace maildict::json {

// Appends `s` as a JSON string literal (quotes included), escaping '"', '\\', and every control
// character; bytes >= 0x80 are passed through (UTF-8 stays as it is).
void append_string(std::string& out, std::string_view s);

class FlatObjectWriter {
 public:
  FlatObjectWriter& add(std::string_view name, std::string_view value);
  FlatObjectWriter& add(std::string_view name, std::int64_t value);
  // Done: returns the object text, e.g. {"user":"john@example.org","uid":1000}
  std::string finish();

 private:
  void begin_member(std::string_view name);
  std::string out_ = "{";
};

}  // namespace maildict::json
