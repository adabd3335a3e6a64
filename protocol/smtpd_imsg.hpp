// OpenSMTPD's legacy table protocol (smtpd 6.x to 7.5): imsg framing and the "proc table API
// version 2" messages (specs/smtpd-tables.md §3). An incremental decoder for what smtpd sends
// and encoders for the only replies it accepts. Pure: bytes in, typed values out.
//
// All integers are in host byte order: smtpd and its table program share the machine.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "protocol/smtpd_service.hpp"

namespace maildict::smtpd::imsg {

inline constexpr std::size_t header_size = 16;
inline constexpr std::size_t max_message_size = 16384;  // MAX_IMSGSIZE, header included
inline constexpr std::uint32_t api_version = 2;

enum class MessageType : std::uint32_t {
  ok = 0,      // the only reply type smtpd accepts
  fail = 1,    // smtpd exits on it: never sent
  open = 2,
  close = 3,
  update = 4,
  check = 5,
  lookup = 6,
  fetch = 7,
};

struct Open {
  std::string table_name;  // smtpd's table NAME (up to the first NUL of the name field)
  friend bool operator==(const Open&, const Open&) = default;
};
struct Close {
  friend bool operator==(const Close&, const Close&) = default;
};
struct Update {
  friend bool operator==(const Update&, const Update&) = default;
};
// CHECK, LOOKUP and FETCH. smtpd sends no params in practice; they are kept for completeness.
struct Query {
  Operation op = Operation::lookup;
  std::uint32_t service_id = 0;
  std::optional<Service> service;  // nullopt: an id smtpd does not define (answered -1)
  std::vector<std::pair<std::string, std::string>> params;
  std::string key;                 // empty for FETCH; may fail key_problem()
  friend bool operator==(const Query&, const Query&) = default;
};

using Request = std::variant<Open, Close, Update, Query>;

struct DecodeError {
  std::string message;  // for the log; never contains payload bytes (keys may be logins)
};

// Cuts the byte stream into messages. Errors are final: the stream cannot be resynchronised,
// and the program is expected to log the message and exit (smtpd does the same on its side).
class Decoder {
 public:
  void feed(std::string_view bytes);

  struct NeedMore {};
  using Result = std::variant<NeedMore, Request, DecodeError>;
  // The next complete request, NeedMore until one is buffered, or the (sticky) error.
  Result next();

  std::size_t buffered() const { return buffer_.size() - start_; }

 private:
  std::string buffer_;
  std::size_t start_ = 0;
  std::optional<DecodeError> error_;
};

// Decodes one whole message (header included); what Decoder::next() does per message.
std::variant<Request, DecodeError> decode_message(std::string_view message);

// ---- replies: each appends one complete OK message; `pid` is only informative --------------

// OPEN: an empty payload.
void append_open_reply(std::string& out, std::uint32_t pid = 0);
// UPDATE: 1 on success, 0 otherwise.
void append_update_reply(std::string& out, bool ok, std::uint32_t pid = 0);
// CHECK: exactly the status int (1 found, 0 not found, -1 temporary failure).
void append_check_reply(std::string& out, Outcome outcome, std::uint32_t pid = 0);
// LOOKUP and FETCH: the status int, plus the value and its NUL only when found. A found
// answer whose value fails value_problem() or does not fit a message is sent as -1 instead,
// because smtpd exits on a malformed reply.
void append_lookup_reply(std::string& out, const Answer& answer, std::uint32_t pid = 0);
// The reply for a query's operation (check or lookup/fetch shape).
void append_query_reply(std::string& out, Operation op, const Answer& answer, std::uint32_t pid = 0);

// The longest value a LOOKUP reply can carry (without its NUL).
inline constexpr std::size_t max_value_length = max_message_size - header_size - 4 - 1;

}  // namespace maildict::smtpd::imsg
