// libFuzzer target for the dict protocol codec (protocol/dict_codec.hpp, dict_escape.hpp) and
// the JSON string writer. Every check below is an invariant that must hold for any input, so a
// crash here is either memory unsafety or a broken round trip.
//
// Run with a scratch directory first, because libFuzzer writes new inputs into the first one:
//   mkdir -p /tmp/dict-corpus && ./fuzz_dict_parser -max_total_time=60 /tmp/dict-corpus \
//       tests/fuzz/corpus/dict_parser
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/dict_codec.hpp"
#include "protocol/dict_escape.hpp"
#include "protocol/json_writer.hpp"
#include "tests/fuzz/fuzz_check.hpp"

using namespace maildict::dict;

namespace {

// ---- a client-side request encoder: the inverse of parse_line for its canonical form --------

void field(std::string& out, std::string_view raw) { append_escaped(out, raw); }
void tab(std::string& out) { out.push_back('\t'); }
template <class N>
void number(std::string& out, N n) { out += std::to_string(n); }

std::string encode_request(const Request& request) {
  std::string out;
  std::visit(
      [&](const auto& r) {
        using T = std::decay_t<decltype(r)>;
        if constexpr (std::is_same_v<T, Hello>) {
          out = "H"; number(out, r.major); tab(out); number(out, r.minor); tab(out);
          number(out, r.value_type); tab(out); field(out, r.user); tab(out); field(out, r.dict_name);
        } else if constexpr (std::is_same_v<T, Lookup>) {
          out = "L"; field(out, r.key); tab(out); field(out, r.user);
        } else if constexpr (std::is_same_v<T, Iterate>) {
          out = "I"; number(out, r.flags); tab(out); number(out, r.max_rows); tab(out);
          field(out, r.path); tab(out); field(out, r.user);
        } else if constexpr (std::is_same_v<T, Begin>) {
          out = "B"; number(out, r.id); tab(out); field(out, r.user);
          if (r.expire_secs != 0) { tab(out); number(out, r.expire_secs); }
        } else if constexpr (std::is_same_v<T, Set>) {
          out = "S"; number(out, r.id); tab(out); field(out, r.key); tab(out); field(out, r.value);
        } else if constexpr (std::is_same_v<T, Unset>) {
          out = "U"; number(out, r.id); tab(out); field(out, r.key);
        } else if constexpr (std::is_same_v<T, AtomicInc>) {
          out = "A"; number(out, r.id); tab(out); field(out, r.key); tab(out); number(out, r.diff);
        } else if constexpr (std::is_same_v<T, Timestamp>) {
          out = "T"; number(out, r.id); tab(out); number(out, r.secs); tab(out); number(out, r.nsecs);
        } else if constexpr (std::is_same_v<T, HideLogValues>) {
          out = "V"; number(out, r.id); out += r.hide ? "\tyes" : "\tno";
        } else if constexpr (std::is_same_v<T, Commit>) {
          out = r.legacy_async ? "D" : "C"; number(out, r.id);
        } else if constexpr (std::is_same_v<T, Rollback>) {
          out = "R"; number(out, r.id);
        }
      },
      request);
  return out;
}

// ---- a client-side reply decoder, as Dovecot's dict client reads our lines --------------------

struct Reply {
  std::optional<std::uint32_t> async_id;
  std::string_view body;  // code + fields, without the "+<n>\t" prefix and without LF
};

// `out` must hold exactly one line ending in LF.
Reply split_reply(std::string_view out, std::optional<std::uint32_t> async_id) {
  CHECK(!out.empty() && out.back() == '\n');
  CHECK(out.find('\n') == out.size() - 1);
  CHECK(out.find('\r') == std::string_view::npos);
  std::string_view line = out.substr(0, out.size() - 1);
  Reply r;
  if (async_id) {
    const std::string prefix = "+" + std::to_string(*async_id) + "\t";
    CHECK(line.starts_with(prefix));
    line.remove_prefix(prefix.size());
    r.async_id = async_id;
  } else {
    CHECK(!line.starts_with("+") && !line.starts_with("*"));
  }
  r.body = line;
  return r;
}

std::vector<std::string_view> split_tabs(std::string_view s) {
  std::vector<std::string_view> parts;
  for (;;) {
    const auto t = s.find('\t');
    parts.push_back(s.substr(0, t));
    if (t == std::string_view::npos) return parts;
    s.remove_prefix(t + 1);
  }
}

// Lookup replies of every kind, with the request's own strings as values.
void check_lookup_replies(const Lookup& l, std::uint32_t id_seed) {
  const std::optional<std::uint32_t> ids[] = {std::nullopt, id_seed};
  for (const auto& id : ids) {
    std::string out;
    append_lookup_found(out, id, l.key);
    Reply r = split_reply(out, id);
    CHECK(r.body.front() == 'O');
    CHECK(r.body.find('\t') == std::string_view::npos);
    CHECK(unescape(r.body.substr(1)) == l.key);

    out.clear();
    append_lookup_failed(out, id, l.user);
    r = split_reply(out, id);
    CHECK(r.body.front() == 'F');
    CHECK(unescape(r.body.substr(1)) == l.user);

    out.clear();
    append_lookup_not_found(out, id);
    CHECK(split_reply(out, id).body == "N");

    // M: unescape the whole field, split on TAB, unescape each value.
    const std::vector<std::string> values{l.key, l.user, l.key + l.user};
    out.clear();
    append_lookup_values(out, id, ReplyStyle{.async_ids = id.has_value(), .multi_ok = true}, values);
    r = split_reply(out, id);
    CHECK(r.body.front() == 'M');
    CHECK(r.body.find('\t') == std::string_view::npos);
    const std::string inner = unescape(r.body.substr(1));
    const auto parts = split_tabs(inner);
    CHECK(parts.size() == values.size());
    for (std::size_t i = 0; i < parts.size(); ++i) CHECK(unescape(parts[i]) == values[i]);

    out.clear();
    append_lookup_values(out, id, ReplyStyle{.async_ids = id.has_value(), .multi_ok = false}, values);
    r = split_reply(out, id);
    CHECK(r.body.front() == 'O');
    CHECK(unescape(r.body.substr(1)) == values[0]);
  }
}

void check_iterate_replies(const Iterate& it, std::uint32_t id_seed) {
  const std::optional<std::uint32_t> ids[] = {std::nullopt, id_seed};
  for (const auto& id : ids) {
    std::string out;
    append_iterate_row(out, id, it.path, it.user);
    Reply r = split_reply(out, id);
    CHECK(r.body.front() == 'O');
    const auto parts = split_tabs(r.body.substr(1));
    CHECK(parts.size() == 2);
    CHECK(unescape(parts[0]) == it.path);
    CHECK(unescape(parts[1]) == it.user);

    out.clear();
    append_iterate_end(out, id);
    CHECK(split_reply(out, id).body.empty());

    out.clear();
    append_iterate_failed(out, id, it.path);
    r = split_reply(out, id);
    CHECK(r.body.front() == 'F');
    CHECK(unescape(r.body.substr(1)) == it.path);
  }
}

void check_commit_replies(const Commit& c, std::string_view error, std::uint32_t id_seed) {
  const std::optional<std::uint32_t> ids[] = {std::nullopt, id_seed};
  for (const auto& id : ids) {
    for (auto result : {CommitResult::ok, CommitResult::not_found, CommitResult::failed,
                        CommitResult::write_uncertain}) {
      std::string out;
      append_commit_reply(out, id, c, result, error);
      std::string_view body = split_reply(out, id).body;
      if (c.legacy_async) {
        CHECK(body.front() == 'A');
        body.remove_prefix(1);
      }
      const char code = body.front();
      const auto parts = split_tabs(body.substr(1));
      CHECK(parts[0] == std::to_string(c.id));
      switch (result) {
        case CommitResult::ok: CHECK(code == 'O' && parts.size() == 1); break;
        case CommitResult::not_found: CHECK(code == 'N' && parts.size() == 1); break;
        case CommitResult::failed: CHECK(code == 'F' && parts.size() == 2); break;
        case CommitResult::write_uncertain: CHECK(code == 'W' && parts.size() == 2); break;
      }
      if (parts.size() == 2) CHECK(unescape(parts[1]) == error);
    }
  }
}

void check_line(std::string_view line) {
  auto result = parse_line(line);
  if (auto* e = std::get_if<ParseError>(&result)) {
    // Short, printable, and never the raw line (which may hold a password).
    CHECK(!e->message.empty() && e->message.size() <= 64);
    for (char c : e->message) CHECK(c >= 0x20 && c < 0x7f);
    return;
  }
  const Request& request = std::get<Request>(result);
  // The canonical encoding keeps the command letter and parses back to the same request.
  const std::string again = encode_request(request);
  CHECK(again.front() == line.front());
  CHECK(again.find('\n') == std::string::npos);
  auto reparsed = parse_line(again);
  CHECK(std::holds_alternative<Request>(reparsed));
  CHECK(std::get<Request>(reparsed) == request);

  const auto id_seed = static_cast<std::uint32_t>(line.size() * 2654435761u);
  if (auto* l = std::get_if<Lookup>(&request)) check_lookup_replies(*l, id_seed);
  if (auto* it = std::get_if<Iterate>(&request)) check_iterate_replies(*it, id_seed);
  if (auto* c = std::get_if<Commit>(&request)) check_commit_replies(*c, line, id_seed);
  if (auto* h = std::get_if<Hello>(&request)) {
    const auto style = reply_style_for(*h);
    CHECK(style.has_value() == (h->major == 3 || h->major == 4));
    if (style && style->multi_ok) CHECK(style->async_ids);
  }
  CHECK(expects_reply(request) == (std::holds_alternative<Lookup>(request) ||
                                   std::holds_alternative<Iterate>(request) ||
                                   std::holds_alternative<Commit>(request)));
}

void check_escape(std::string_view data) {
  const std::string e = escape(data);
  CHECK(e.find_first_of("\t\n\r") == std::string::npos);
  CHECK(unescape(e) == data);
  std::string appended = "x";
  append_escaped(appended, data);
  CHECK(std::string_view(appended).substr(1) == e);

  const std::string u = unescape(data);
  CHECK(u.size() <= data.size());
  if (data.find('\x01') == std::string_view::npos) CHECK(u == data);
  CHECK(unescape(escape(u)) == u);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Validates a JSON string literal strictly and decodes it (only \u00XX is ever produced).
void check_json(std::string_view data) {
  std::string out = "{";
  maildict::json::append_string(out, data);
  std::string_view lit = std::string_view(out).substr(1);
  CHECK(lit.size() >= 2 && lit.front() == '"' && lit.back() == '"');
  lit = lit.substr(1, lit.size() - 2);
  std::string decoded;
  for (std::size_t i = 0; i < lit.size(); ++i) {
    const auto c = static_cast<unsigned char>(lit[i]);
    CHECK(c >= 0x20 && c != 0x7f);
    CHECK(c != '"');
    if (c != '\\') {
      decoded.push_back(static_cast<char>(c));
      continue;
    }
    CHECK(i + 1 < lit.size());
    switch (lit[++i]) {
      case '"': decoded.push_back('"'); break;
      case '\\': decoded.push_back('\\'); break;
      case '/': decoded.push_back('/'); break;
      case 'b': decoded.push_back('\b'); break;
      case 'f': decoded.push_back('\f'); break;
      case 'n': decoded.push_back('\n'); break;
      case 'r': decoded.push_back('\r'); break;
      case 't': decoded.push_back('\t'); break;
      case 'u': {
        CHECK(i + 4 < lit.size());
        int v = 0;
        for (int k = 1; k <= 4; ++k) {
          const int h = hex_value(lit[i + k]);
          CHECK(h >= 0);
          v = v * 16 + h;
        }
        CHECK(v < 0x80);
        decoded.push_back(static_cast<char>(v));
        i += 4;
        break;
      }
      default: maildict::fuzz::fail("bad JSON escape");
    }
  }
  CHECK(decoded == data);

  maildict::json::FlatObjectWriter w;
  const std::string obj = w.add(data, data).add("n", static_cast<std::int64_t>(data.size())).finish();
  CHECK(obj.front() == '{' && obj.back() == '}');
  CHECK(obj.ends_with(",\"n\":" + std::to_string(data.size()) + "}"));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  const std::string_view data(reinterpret_cast<const char*>(bytes), size);
  std::string_view rest = data;
  for (;;) {
    const auto lf = rest.find('\n');
    check_line(rest.substr(0, lf));
    if (lf == std::string_view::npos) break;
    rest.remove_prefix(lf + 1);
  }
  check_escape(data);
  check_json(data);
  return 0;
}
