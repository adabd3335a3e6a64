// Flat JSON objects for Dovecot's passdb/userdb dict driver (specs/dovecot.md §2.4).
#include "protocol/json_writer.hpp"

#include <algorithm>
#include <charconv>

#include "protocol/byte_scan.hpp"

namespace maildict::json {

namespace {

constexpr bool needs_escape(unsigned char c) { return c < 0x20 || c == '"' || c == '\\' || c == 0x7f; }

}  // namespace

void append_string(std::string& out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  const auto may_need_escape = [](std::uint64_t w) {
    return detail::any_below(w, 0x20) || detail::any_equal(w, '"') ||
           detail::any_equal(w, '\\') || detail::any_equal(w, 0x7f);
  };
  out.push_back('"');
  std::size_t run_start = 0;
  std::size_t i = 0;
  for (;;) {
    i = detail::skip_clean_words(s, i, may_need_escape);
    if (i >= s.size()) break;
    const std::size_t word_end = std::min(i + 8, s.size());
    for (; i < word_end; ++i) {
      const auto c = static_cast<unsigned char>(s[i]);
      if (!needs_escape(c)) continue;
      out.append(s.data() + run_start, i - run_start);
      run_start = i + 1;
      switch (c) {
        case '"': out.append("\\\""); break;
        case '\\': out.append("\\\\"); break;
        case '\n': out.append("\\n"); break;
        case '\t': out.append("\\t"); break;
        case '\r': out.append("\\r"); break;
        case '\b': out.append("\\b"); break;
        case '\f': out.append("\\f"); break;
        default: {
          // DEL is legal raw JSON, but escaping it keeps log lines and terminals clean.
          const char esc[] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xf]};
          out.append(esc, sizeof esc);
          break;
        }
      }
    }
  }
  out.append(s.data() + run_start, s.size() - run_start);
  out.push_back('"');
}

void FlatObjectWriter::begin_member(std::string_view name) {
  if (out_.size() > 1) out_.push_back(',');
  append_string(out_, name);
  out_.push_back(':');
}

FlatObjectWriter& FlatObjectWriter::add(std::string_view name, std::string_view value) {
  begin_member(name);
  append_string(out_, value);
  return *this;
}

FlatObjectWriter& FlatObjectWriter::add(std::string_view name, std::int64_t value) {
  begin_member(name);
  char buf[24];
  const auto res = std::to_chars(buf, buf + sizeof buf, value);
  out_.append(buf, res.ptr);
  return *this;
}

std::string FlatObjectWriter::finish() {
  out_.push_back('}');
  std::string done = std::move(out_);
  out_ = "{";  // a writer can be reused for the next object
  return done;
}

}  // namespace maildict::json
