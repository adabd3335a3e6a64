// OpenSMTPD's table protocol 0.1 (smtpd 7.6 and later; specs/smtpd-tables.md §4): LF-ended
// lines of `|`-separated fields with no escaping. A line splitter, a parser for what smtpd
// sends (config handshake and table requests) and encoders for our lines (register handshake
// and results that echo the request id). Pure: no sockets.
#pragma once
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "protocol/smtpd_service.hpp"

namespace maildict::smtpd::text {

inline constexpr std::string_view protocol_version = "0.1";

// Bounds a line: smtpd's longest is a request with a key below 1024 bytes plus about 100 bytes
// of fixed fields. Anything much longer is not smtpd.
inline constexpr std::size_t max_line_length = 4096;

struct ConfigLine {   // config|<key>|<value>   (the value may contain '|')
  std::string key;
  std::string value;
  friend bool operator==(const ConfigLine&, const ConfigLine&) = default;
};
struct ConfigReady {  // config|ready
  friend bool operator==(const ConfigReady&, const ConfigReady&) = default;
};
// table|<version>|<sec>.<usec>|<table>|<op>|<service>|<id>|<key>, with no service or key for
// update and no key for fetch. The key is everything after the id, '|' included.
struct TableRequest {
  std::string version;               // "0.1" from every known smtpd; checked by the caller
  std::string timestamp;
  std::string table_name;
  Operation op = Operation::lookup;
  std::string service_name;          // empty for update
  std::optional<Service> service;    // nullopt for update or a name smtpd does not define
  std::string id;                    // echoed verbatim in the reply
  std::string key;
  friend bool operator==(const TableRequest&, const TableRequest&) = default;
};

using Line = std::variant<ConfigLine, ConfigReady, TableRequest>;

struct ParseError {
  std::string message;  // for the log; never contains the line (the key may be a login)
};

// Parses one line without its LF. A line smtpd cannot have sent (unknown kind or operation,
// missing fields, an id that could not be echoed safely) is an error: with no id to answer
// to, the only safe move is to stop.
std::variant<Line, ParseError> parse_line(std::string_view line);

// Splits the input stream into lines. A line longer than max_line_length is a final error.
class LineReader {
 public:
  void feed(std::string_view bytes);

  struct NeedMore {};
  struct TooLong {};
  using Result = std::variant<NeedMore, std::string, TooLong>;
  Result next();

  std::size_t buffered() const { return buffer_.size() - start_; }

 private:
  std::string buffer_;
  std::size_t start_ = 0;
  std::size_t scanned_ = 0;  // bytes after start_ already known to hold no LF
  bool too_long_ = false;
};

// ---- our lines (each appended complete, ending in LF) -----------------------------------------

void append_register(std::string& out, Service service);  // register|<service>
void append_register_ready(std::string& out);             // register|ready

// <op>-result|<id>|...: update -> ok / error|msg; check -> found / not-found / error|msg;
// lookup and fetch -> found|value / not-found / error|msg. A found value that fails
// value_problem() becomes error|..., and an error always carries a message (smtpd logs it);
// the message is cleaned of line breaks so the reply stays one line.
void append_result(std::string& out, Operation op, std::string_view id, const Answer& answer);

}  // namespace maildict::smtpd::text
