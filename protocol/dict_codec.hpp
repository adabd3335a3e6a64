// The Dovecot dict ("proxy") protocol, majors 3 (Dovecot 2.3) and 4 (Dovecot 2.4):
// a parser from one input line to a typed request, and encoders from typed replies to bytes.
// Pure: no sockets, no database. The wire facts are in specs/dovecot.md §1.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace maildict::dict {

// ---- requests (client -> server) -----------------------------------------------------------

struct Hello {            // H<major>\t<minor>\t<value_type>\t<user>\t<dict_name>
  unsigned major = 0;
  unsigned minor = 0;
  unsigned value_type = 0;
  std::string user;
  std::string dict_name;
  friend bool operator==(const Hello&, const Hello&) = default;
};
struct Lookup {           // L<key>\t<user>
  std::string key;
  std::string user;
  friend bool operator==(const Lookup&, const Lookup&) = default;
};
enum IterateFlag : unsigned {
  iterate_recurse = 0x01,
  iterate_sort_by_key = 0x02,
  iterate_sort_by_value = 0x04,
  iterate_no_value = 0x08,
  iterate_exact_key = 0x10,
  iterate_async = 0x20,
};
struct Iterate {          // I<flags>\t<max_rows>\t<path>\t<user>
  unsigned flags = 0;
  std::uint64_t max_rows = 0;  // 0 = unlimited
  std::string path;
  std::string user;
  friend bool operator==(const Iterate&, const Iterate&) = default;
};
struct Begin {            // B<id>\t<user>[\t<expire_secs>]   (the third field is 2.4's)
  std::uint32_t id = 0;
  std::string user;
  std::uint64_t expire_secs = 0;
  friend bool operator==(const Begin&, const Begin&) = default;
};
struct Set {              // S<id>\t<key>\t<value>
  std::uint32_t id = 0;
  std::string key;
  std::string value;
  friend bool operator==(const Set&, const Set&) = default;
};
struct Unset {            // U<id>\t<key>
  std::uint32_t id = 0;
  std::string key;
  friend bool operator==(const Unset&, const Unset&) = default;
};
struct AtomicInc {        // A<id>\t<key>\t<diff>
  std::uint32_t id = 0;
  std::string key;
  std::int64_t diff = 0;
  friend bool operator==(const AtomicInc&, const AtomicInc&) = default;
};
struct Timestamp {        // T<id>\t<secs>\t<nsecs>
  std::uint32_t id = 0;
  std::int64_t secs = 0;
  std::uint32_t nsecs = 0;
  friend bool operator==(const Timestamp&, const Timestamp&) = default;
};
struct HideLogValues {    // V<id>\tyes|no   (2.4 only)
  std::uint32_t id = 0;
  bool hide = false;
  friend bool operator==(const HideLogValues&, const HideLogValues&) = default;
};
struct Commit {           // C<id>, or the legacy D<id> ("commit async", reply prefixed with 'A')
  std::uint32_t id = 0;
  bool legacy_async = false;
  friend bool operator==(const Commit&, const Commit&) = default;
};
struct Rollback {         // R<id>
  std::uint32_t id = 0;
  friend bool operator==(const Rollback&, const Rollback&) = default;
};

using Request = std::variant<Hello, Lookup, Iterate, Begin, Set, Unset, AtomicInc, Timestamp,
                             HideLogValues, Commit, Rollback>;

// Whether a request gets a reply at all (only L, I, C/D do; spec §1.3).
bool expects_reply(const Request& request);

struct ParseError {
  std::string message;  // for logs and F replies; never contains the raw line
};

// Parses one line without its trailing LF. Fields are split on TAB and then unescaped.
// Any malformed line (unknown letter, wrong field count, bad number) is a ParseError.
std::variant<Request, ParseError> parse_line(std::string_view line);

// ---- reply style, chosen per connection from the handshake (spec §1.4, §1.8) ---------------

struct ReplyStyle {
  bool async_ids = false;  // "*<n>" at arrival, "+<n>\t<reply>" when ready (3.x minor>=1, 4.x)
  bool multi_ok = false;   // 'M' replies allowed (3.x minor>=2, 4.x)
};
// Returns nullopt for a handshake the server must refuse (major not 3 or 4).
std::optional<ReplyStyle> reply_style_for(const Hello& hello);

// ---- reply encoders (server -> client). `async_id` is set when the connection uses ids. ------
// Each appends exactly one complete line (ending in LF) to `out`.

void append_async_id(std::string& out, std::uint32_t async_id);                        // *<n>
void append_lookup_found(std::string& out, std::optional<std::uint32_t> async_id,
                         std::string_view value);                                       // O<v>
// Several values: 'M' with the double escaping when the style allows it; otherwise only the
// first value as 'O' (a 3.0 client cannot take 'M'). An empty list is 'N'.
void append_lookup_values(std::string& out, std::optional<std::uint32_t> async_id,
                          const ReplyStyle& style, std::span<const std::string> values);
void append_lookup_not_found(std::string& out, std::optional<std::uint32_t> async_id); // N
void append_lookup_failed(std::string& out, std::optional<std::uint32_t> async_id,
                          std::string_view error);                                      // F<e>
// One iteration row: O<key>\t<value> (the TAB is there even when value is empty).
void append_iterate_row(std::string& out, std::optional<std::uint32_t> async_id,
                        std::string_view key, std::string_view value);
void append_iterate_end(std::string& out, std::optional<std::uint32_t> async_id);       // empty first field
void append_iterate_failed(std::string& out, std::optional<std::uint32_t> async_id,
                           std::string_view error);                                     // F<e>

enum class CommitResult { ok, not_found, failed, write_uncertain };  // O N F W
void append_commit_reply(std::string& out, std::optional<std::uint32_t> async_id,
                         const Commit& commit, CommitResult result, std::string_view error);

}  // namespace maildict::dict
