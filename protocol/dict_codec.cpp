// The Dovecot dict protocol codec (specs/dovecot.md §1). This runs once per request, so the
// parser splits into string_views and only builds the strings the typed request must own.
#include "protocol/dict_codec.hpp"

#include <array>
#include <charconv>
#include <type_traits>

#include "protocol/dict_escape.hpp"

namespace maildict::dict {

namespace {

using ParseResult = std::variant<Request, ParseError>;

// H has the most fields (5); anything beyond that is only ever counted, never kept.
constexpr std::size_t max_fields = 5;

struct Fields {
  std::array<std::string_view, max_fields> at{};
  std::size_t count = 0;  // fields kept, at most max_fields
  bool more = false;      // the line holds more than max_fields fields
};

// A line "X" has one (empty) field, so count is never 0.
Fields split_fields(std::string_view s) {
  Fields f;
  for (;;) {
    if (f.count == max_fields) {
      f.more = true;
      return f;
    }
    const auto tab = s.find('\t');
    if (tab == std::string_view::npos) {
      f.at[f.count++] = s;
      return f;
    }
    f.at[f.count++] = s.substr(0, tab);
    s.remove_prefix(tab + 1);
  }
}

ParseError error(char command, std::string_view what) {
  ParseError e;
  e.message.reserve(3 + what.size());
  e.message.push_back(command);
  e.message.append(": ");
  e.message.append(what);
  return e;
}

// Whether the line has between lo and hi fields (hi <= max_fields).
bool count_in(const Fields& f, std::size_t lo, std::size_t hi) {
  return !f.more && f.count >= lo && f.count <= hi;
}

template <class T>
ParseResult ok(T&& request) {
  return ParseResult{std::in_place_index<0>, std::forward<T>(request)};
}

// Parses a whole decimal field (a '-' only for signed types; no '+', spaces or junk).
// Escapes are undone first because the protocol unescapes every field before reading it.
template <class T>
bool parse_number(std::string_view field, T& out) {
  std::string unescaped;
  if (field.find('\x01') != std::string_view::npos) {
    unescaped = unescape(field);
    field = unescaped;
  }
  if (field.empty()) return false;
  const char* end = field.data() + field.size();
  const auto res = std::from_chars(field.data(), end, out);
  return res.ec == std::errc{} && res.ptr == end;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != b[i]) return false;
  }
  return true;
}

ParseResult parse_hello(const Fields& f) {
  // Lenient on purpose: a handshake missing the obsolete user or the name is still usable,
  // and extra fields from a future minor version are ignored.
  if (f.count < 3) return error('H', "too few fields");
  Hello h;
  if (!parse_number(f.at[0], h.major)) return error('H', "bad major version");
  if (!parse_number(f.at[1], h.minor)) return error('H', "bad minor version");
  if (!parse_number(f.at[2], h.value_type)) return error('H', "bad value type");
  if (f.count > 3) h.user = unescape(f.at[3]);
  if (f.count > 4) h.dict_name = unescape(f.at[4]);
  return ok(std::move(h));
}

ParseResult parse_lookup(const Fields& f) {
  if (!count_in(f, 1, 2)) return error('L', "wrong number of fields");
  Lookup l;
  l.key = unescape(f.at[0]);
  if (f.count == 2) l.user = unescape(f.at[1]);
  return ok(std::move(l));
}

ParseResult parse_iterate(const Fields& f) {
  if (!count_in(f, 3, 4)) return error('I', "wrong number of fields");
  Iterate it;
  if (!parse_number(f.at[0], it.flags)) return error('I', "bad flags");
  if (!parse_number(f.at[1], it.max_rows)) return error('I', "bad max_rows");
  it.path = unescape(f.at[2]);
  if (f.count == 4) it.user = unescape(f.at[3]);
  return ok(std::move(it));
}

ParseResult parse_begin(const Fields& f) {
  if (!count_in(f, 2, 3)) return error('B', "wrong number of fields");
  Begin b;
  if (!parse_number(f.at[0], b.id)) return error('B', "bad transaction id");
  b.user = unescape(f.at[1]);
  if (f.count == 3 && !parse_number(f.at[2], b.expire_secs)) return error('B', "bad expire_secs");
  return ok(std::move(b));
}

ParseResult parse_set(const Fields& f) {
  if (!count_in(f, 3, 3)) return error('S', "wrong number of fields");
  Set s;
  if (!parse_number(f.at[0], s.id)) return error('S', "bad transaction id");
  s.key = unescape(f.at[1]);
  s.value = unescape(f.at[2]);
  return ok(std::move(s));
}

ParseResult parse_unset(const Fields& f) {
  if (!count_in(f, 2, 2)) return error('U', "wrong number of fields");
  Unset u;
  if (!parse_number(f.at[0], u.id)) return error('U', "bad transaction id");
  u.key = unescape(f.at[1]);
  return ok(std::move(u));
}

ParseResult parse_atomic_inc(const Fields& f) {
  if (!count_in(f, 3, 3)) return error('A', "wrong number of fields");
  AtomicInc a;
  if (!parse_number(f.at[0], a.id)) return error('A', "bad transaction id");
  a.key = unescape(f.at[1]);
  if (!parse_number(f.at[2], a.diff)) return error('A', "bad diff");
  return ok(std::move(a));
}

ParseResult parse_timestamp(const Fields& f) {
  if (!count_in(f, 3, 3)) return error('T', "wrong number of fields");
  Timestamp t;
  if (!parse_number(f.at[0], t.id)) return error('T', "bad transaction id");
  if (!parse_number(f.at[1], t.secs)) return error('T', "bad seconds");
  if (!parse_number(f.at[2], t.nsecs)) return error('T', "bad nanoseconds");
  return ok(t);
}

ParseResult parse_hide_log_values(const Fields& f) {
  if (!count_in(f, 2, 2)) return error('V', "wrong number of fields");
  HideLogValues v;
  if (!parse_number(f.at[0], v.id)) return error('V', "bad transaction id");
  const std::string value = unescape(f.at[1]);
  if (iequals(value, "yes") || iequals(value, "y") || value == "1")
    v.hide = true;
  else if (iequals(value, "no") || iequals(value, "n") || value == "0")
    v.hide = false;
  else
    return error('V', "value must be yes or no");
  return ok(v);
}

// C, D and R carry only a transaction id.
template <class T>
ParseResult parse_id_only(char command, const Fields& f, T request) {
  if (!count_in(f, 1, 1)) return error(command, "wrong number of fields");
  if (!parse_number(f.at[0], request.id)) return error(command, "bad transaction id");
  return ok(request);
}

// Appends "+<n>\t" when the connection uses async ids.
void append_prefix(std::string& out, std::optional<std::uint32_t> async_id) {
  if (!async_id) return;
  char buf[16];
  buf[0] = '+';
  const auto res = std::to_chars(buf + 1, buf + sizeof buf - 1, *async_id);
  *res.ptr = '\t';
  out.append(buf, res.ptr + 1);
}

void append_uint(std::string& out, std::uint32_t n) {
  char buf[16];
  const auto res = std::to_chars(buf, buf + sizeof buf, n);
  out.append(buf, res.ptr);
}

// escape(escape(v)) in one pass, for the values inside an 'M' reply.
void append_double_escaped(std::string& out, std::string_view raw) {
  std::size_t run_start = 0;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    char code;
    switch (raw[i]) {
      case '\x01': code = '1'; break;
      case '\t': code = 't'; break;
      case '\r': code = 'r'; break;
      case '\n': code = 'n'; break;
      default: continue;
    }
    out.append(raw.data() + run_start, i - run_start);
    // The inner escape gives \x01 <code>; the outer escape turns that \x01 into \x01 '1'.
    const char seq[] = {'\x01', '1', code};
    out.append(seq, sizeof seq);
    run_start = i + 1;
  }
  out.append(raw.data() + run_start, raw.size() - run_start);
}

}  // namespace

bool expects_reply(const Request& request) {
  return std::holds_alternative<Lookup>(request) || std::holds_alternative<Iterate>(request) ||
         std::holds_alternative<Commit>(request);
}

std::variant<Request, ParseError> parse_line(std::string_view line) {
  if (line.empty()) return ParseError{"empty line"};
  const char command = line.front();
  const Fields f = split_fields(line.substr(1));
  switch (command) {
    case 'H': return parse_hello(f);
    case 'L': return parse_lookup(f);
    case 'I': return parse_iterate(f);
    case 'B': return parse_begin(f);
    case 'S': return parse_set(f);
    case 'U': return parse_unset(f);
    case 'A': return parse_atomic_inc(f);
    case 'T': return parse_timestamp(f);
    case 'V': return parse_hide_log_values(f);
    case 'C': return parse_id_only('C', f, Commit{});
    case 'D': return parse_id_only('D', f, Commit{.id = 0, .legacy_async = true});
    case 'R': return parse_id_only('R', f, Rollback{});
    default: break;
  }
  // Name the byte only when it is printable, so a log line never carries control bytes.
  const auto c = static_cast<unsigned char>(command);
  if (c > 0x20 && c < 0x7f) return ParseError{std::string("unknown command '") + command + "'"};
  static constexpr char hex[] = "0123456789abcdef";
  return ParseError{std::string("unknown command byte 0x") + hex[c >> 4] + hex[c & 0xf]};
}

std::optional<ReplyStyle> reply_style_for(const Hello& hello) {
  switch (hello.major) {
    case 3: return ReplyStyle{.async_ids = hello.minor >= 1, .multi_ok = hello.minor >= 2};
    case 4: return ReplyStyle{.async_ids = true, .multi_ok = true};
    default: return std::nullopt;
  }
}

void append_async_id(std::string& out, std::uint32_t async_id) {
  out.push_back('*');
  append_uint(out, async_id);
  out.push_back('\n');
}

void append_lookup_found(std::string& out, std::optional<std::uint32_t> async_id,
                         std::string_view value) {
  append_prefix(out, async_id);
  out.push_back('O');
  append_escaped(out, value);
  out.push_back('\n');
}

void append_lookup_values(std::string& out, std::optional<std::uint32_t> async_id,
                          const ReplyStyle& style, std::span<const std::string> values) {
  if (values.empty()) return append_lookup_not_found(out, async_id);
  if (values.size() == 1 || !style.multi_ok) return append_lookup_found(out, async_id, values[0]);
  append_prefix(out, async_id);
  out.push_back('M');
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i != 0) out.append("\x01t");  // the separating TAB, escaped once by the outer escape
    append_double_escaped(out, values[i]);
  }
  out.push_back('\n');
}

void append_lookup_not_found(std::string& out, std::optional<std::uint32_t> async_id) {
  append_prefix(out, async_id);
  out.append("N\n");
}

void append_lookup_failed(std::string& out, std::optional<std::uint32_t> async_id,
                          std::string_view error) {
  append_prefix(out, async_id);
  out.push_back('F');
  append_escaped(out, error);
  out.push_back('\n');
}

void append_iterate_row(std::string& out, std::optional<std::uint32_t> async_id,
                        std::string_view key, std::string_view value) {
  append_prefix(out, async_id);
  out.push_back('O');
  append_escaped(out, key);
  out.push_back('\t');  // required even for an empty value: "Okey" alone breaks the client
  append_escaped(out, value);
  out.push_back('\n');
}

void append_iterate_end(std::string& out, std::optional<std::uint32_t> async_id) {
  append_prefix(out, async_id);
  out.push_back('\n');
}

void append_iterate_failed(std::string& out, std::optional<std::uint32_t> async_id,
                           std::string_view error) {
  append_lookup_failed(out, async_id, error);
}

void append_commit_reply(std::string& out, std::optional<std::uint32_t> async_id,
                         const Commit& commit, CommitResult result, std::string_view error) {
  append_prefix(out, async_id);
  if (commit.legacy_async) out.push_back('A');
  bool with_error = false;
  switch (result) {
    case CommitResult::ok: out.push_back('O'); break;
    case CommitResult::not_found: out.push_back('N'); break;
    case CommitResult::failed: out.push_back('F'); with_error = true; break;
    case CommitResult::write_uncertain: out.push_back('W'); with_error = true; break;
  }
  append_uint(out, commit.id);
  if (with_error) {
    out.push_back('\t');
    append_escaped(out, error);
  }
  out.push_back('\n');
}

}  // namespace maildict::dict
