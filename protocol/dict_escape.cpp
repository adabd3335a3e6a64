// Dovecot's tab-escaping (specs/dovecot.md §1.1).
#include "protocol/dict_escape.hpp"

#include <algorithm>

#include "protocol/byte_scan.hpp"

namespace maildict::dict {

namespace {

// Returns the code byte that follows \x01 for a byte that must be escaped, or 0 when the byte
// can be sent as it is. NUL is deliberately not escaped: Dovecot never produces "\x01" "0".
constexpr char escape_code(char c) {
  switch (c) {
    case '\x01': return '1';
    case '\t': return 't';
    case '\r': return 'r';
    case '\n': return 'n';
    default: return 0;
  }
}

}  // namespace

void append_escaped(std::string& out, std::string_view raw) {
  // Copy clean runs in one append each: most fields contain nothing to escape.
  // Every special byte is below 0x0e, so one word test skips nearly all text.
  const auto may_need_escape = [](std::uint64_t w) { return detail::any_below(w, 0x0e); };
  std::size_t run_start = 0;
  std::size_t i = 0;
  for (;;) {
    i = detail::skip_clean_words(raw, i, may_need_escape);
    if (i >= raw.size()) break;
    // Check the bytes of the flagged word (or the short tail) one by one.
    const std::size_t word_end = std::min(i + 8, raw.size());
    for (; i < word_end; ++i) {
      const char code = escape_code(raw[i]);
      if (code == 0) continue;
      out.append(raw.data() + run_start, i - run_start);
      out.push_back('\x01');
      out.push_back(code);
      run_start = i + 1;
    }
  }
  out.append(raw.data() + run_start, raw.size() - run_start);
}

std::string escape(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  append_escaped(out, raw);
  return out;
}

std::string unescape(std::string_view escaped) {
  const std::size_t first = escaped.find('\x01');
  if (first == std::string_view::npos) return std::string(escaped);

  std::string out;
  out.reserve(escaped.size());
  out.append(escaped.data(), first);
  for (std::size_t i = first; i < escaped.size(); ++i) {
    const char c = escaped[i];
    if (c != '\x01') {
      out.push_back(c);
      continue;
    }
    if (++i == escaped.size()) break;  // a trailing lone \x01 is dropped, as Dovecot does
    switch (escaped[i]) {
      case '0': out.push_back('\0'); break;
      case '1': out.push_back('\x01'); break;
      case 't': out.push_back('\t'); break;
      case 'r': out.push_back('\r'); break;
      case 'n': out.push_back('\n'); break;
      default: out.push_back(escaped[i]); break;
    }
  }
  return out;
}

}  // namespace maildict::dict
