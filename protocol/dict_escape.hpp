// Dovecot's tab-escaping, applied to every field of a dict-protocol line on its own
// (specs/dovecot.md §1.1): 0x01 -> \x01 '1', TAB -> \x01 't', CR -> \x01 'r', LF -> \x01 'n'.
#pragma once
#include <string>
#include <string_view>

namespace maildict::dict {

// Appends `raw` to `out` escaped, so it can stand as one field of a line.
void append_escaped(std::string& out, std::string_view raw);
std::string escape(std::string_view raw);

// Reverses the escaping: \x01 followed by '0' gives NUL, '1' gives 0x01, 't' TAB, 'r' CR,
// 'n' LF, any other byte X gives X; a trailing lone \x01 is dropped (as Dovecot does).
std::string unescape(std::string_view escaped);

}  // namespace maildict::dict
