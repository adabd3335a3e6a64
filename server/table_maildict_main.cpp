// table-maildict: the table program OpenSMTPD spawns for `table NAME maildict:/path/maildict.conf`
// (specs/smtpd-tables.md §2). smtpd writes requests on fd 0; the first byte tells the protocol
// (§9): 0x02 is the imsg OPEN of smtpd <= 7.5 (replies go back on fd 0, fd 1 is not the
// socket there), 'c' is the `config|` handshake of the text protocol of smtpd >= 7.6 (replies
// on fd 1). Each request becomes one dict lookup to maildictd (server/table_backend.hpp).
//
// smtpd blocks on every answer with no timeout and exits for good when this program exits or
// writes anything malformed, so: every request is answered within request_timeout; maildictd
// being down, slow or confused is a temporary failure, never an exit; the only exits are EOF
// on fd 0, CLOSE, and input that cannot have come from smtpd (then smtpd is broken anyway).
// Logs go to syslog and to stderr (smtpd's own log when it runs in the foreground) and never
// hold a key's value.
#include <poll.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "conf/config.hpp"
#include "protocol/smtpd_imsg.hpp"
#include "protocol/smtpd_text.hpp"
#include "server/dict_client.hpp"
#include "server/table_backend.hpp"

namespace {

using namespace maildict;
using smtpd::Answer;
using smtpd::Operation;
using smtpd::Outcome;

constexpr const char* kDefaultConfig = "/etc/maildict/maildict.conf";

// ---- fd I/O ---------------------------------------------------------------------------------

// Appends what is readable on fd, waiting as long as it takes (smtpd may be idle for hours).
// Returns false on EOF or a read error.
bool read_some(int fd, std::string& into) {
  char buf[16384];
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0) {
      if (errno == EINTR) continue;
      syslog(LOG_ERR, "poll on the smtpd socket: %s", std::strerror(errno));
      return false;
    }
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      into.append(buf, static_cast<std::size_t>(n));
      return true;
    }
    if (n == 0) return false;
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    syslog(LOG_ERR, "read from smtpd: %s", std::strerror(errno));
    return false;
  }
}

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd, POLLOUT, 0};
      (void)::poll(&p, 1, -1);
      continue;
    }
    syslog(LOG_ERR, "write to smtpd: %s", n < 0 ? std::strerror(errno) : "nothing written");
    return false;
  }
  return true;
}

// ---- the table ----------------------------------------------------------------------------------

class Table {
 public:
  explicit Table(std::string config_path)
      : config_path_(std::move(config_path)), client_(DictClient::Options{}), backend_(client_) {
    (void)load_config();
  }

  // Re-reads the configuration (UPDATE). On failure the previous one stays in use.
  bool load_config() {
    try {
      // Only the socket and the deadline matter here; the files an existing schema names are
      // maildictd's to read (they may hold database passwords smtpd's user must not see).
      const conf::Config c = conf::load_config(config_path_, /*read_referenced_files=*/false);
      table::DictClient::Options o;
      o.socket_path = c.socket_path;
      o.timeout = c.request_timeout;
      o.max_reply_length = c.max_line_length;
      client_.set_options(std::move(o));
      configured_ = true;
      syslog(LOG_INFO, "%s: using maildictd at %s, deadline %lld ms", name(), c.socket_path.c_str(),
             static_cast<long long>(c.request_timeout.count()));
      return true;
    } catch (const std::exception& e) {
      syslog(LOG_ERR, "%s: cannot load the configuration: %s", name(), e.what());
      return false;
    }
  }

  Answer answer(Operation op, std::optional<smtpd::Service> service, std::string_view key) {
    Answer a = configured_ ? backend_.answer(op, service, key)
                           : Answer::temp_fail("table-maildict has no configuration");
    note(op, service, a);
    return a;
  }

  void set_name(std::string name) { name_ = std::move(name); }
  const char* name() const { return name_.empty() ? "table-maildict" : name_.c_str(); }

 private:
  using DictClient = table::DictClient;
  using Clock = std::chrono::steady_clock;

  // Failures come in storms when maildictd is down (every RCPT asks several times): the first
  // one of a kind is logged, repeats once a minute with a count, and recovery once.
  void note(Operation op, std::optional<smtpd::Service> service, const Answer& a) {
    const auto now = Clock::now();
    if (a.outcome != Outcome::temp_fail) {
      if (failing_) {
        syslog(LOG_NOTICE, "%s: lookups work again (%lu failed meanwhile)", name(), failures_);
        failing_ = false;
        failures_ = 0;
        last_reason_.clear();
      }
      return;
    }
    ++failures_;
    if (failing_ && a.error == last_reason_ && now - last_logged_ < std::chrono::minutes(1)) return;
    syslog(LOG_WARNING, "%s: %s %s: temporary failure: %s (%lu so far)", name(),
           std::string(smtpd::operation_name(op)).c_str(),
           service ? std::string(smtpd::service_name(*service)).c_str() : "unknown-service",
           a.error.c_str(), failures_);
    failing_ = true;
    last_reason_ = a.error;
    last_logged_ = now;
  }

  std::string config_path_;
  std::string name_;
  bool configured_ = false;
  DictClient client_;
  table::TableBackend backend_;
  bool failing_ = false;
  unsigned long failures_ = 0;
  std::string last_reason_;
  Clock::time_point last_logged_{};
};

// ---- imsg: smtpd <= 7.5 -------------------------------------------------------------------------

int run_imsg(Table& table, std::string first) {
  smtpd::imsg::Decoder decoder;
  decoder.feed(first);
  const auto pid = static_cast<std::uint32_t>(::getpid());
  std::string in;
  for (;;) {
    for (;;) {
      auto next = decoder.next();
      if (std::holds_alternative<smtpd::imsg::Decoder::NeedMore>(next)) break;
      if (auto* e = std::get_if<smtpd::imsg::DecodeError>(&next)) {
        syslog(LOG_ERR, "%s: malformed message from smtpd (%s), exiting", table.name(), e->message.c_str());
        return EXIT_FAILURE;
      }
      std::string out;
      const auto& request = std::get<smtpd::imsg::Request>(next);
      if (auto* open = std::get_if<smtpd::imsg::Open>(&request)) {
        table.set_name(open->table_name);
        syslog(LOG_INFO, "%s: smtpd opened the table (imsg protocol, API version 2)", table.name());
        smtpd::imsg::append_open_reply(out, pid);
      } else if (std::holds_alternative<smtpd::imsg::Close>(request)) {
        syslog(LOG_INFO, "%s: smtpd closed the table", table.name());
        return EXIT_SUCCESS;
      } else if (std::holds_alternative<smtpd::imsg::Update>(request)) {
        smtpd::imsg::append_update_reply(out, table.load_config(), pid);
      } else {
        const auto& q = std::get<smtpd::imsg::Query>(request);
        smtpd::imsg::append_query_reply(out, q.op, table.answer(q.op, q.service, q.key), pid);
      }
      if (!write_all(STDIN_FILENO, out)) return EXIT_FAILURE;
    }
    in.clear();
    if (!read_some(STDIN_FILENO, in)) {
      if (decoder.buffered() > 0)
        syslog(LOG_WARNING, "%s: smtpd went away in the middle of a message", table.name());
      syslog(LOG_INFO, "%s: end of input, exiting", table.name());
      return EXIT_SUCCESS;
    }
    decoder.feed(in);
  }
}

// ---- text: smtpd >= 7.6 -------------------------------------------------------------------------

int run_text(Table& table, std::string first) {
  smtpd::text::LineReader reader;
  reader.feed(first);
  bool ready = false;
  std::string in;
  for (;;) {
    for (;;) {
      auto next = reader.next();
      if (std::holds_alternative<smtpd::text::LineReader::NeedMore>(next)) break;
      if (std::holds_alternative<smtpd::text::LineReader::TooLong>(next)) {
        syslog(LOG_ERR, "%s: line from smtpd longer than %zu bytes, exiting", table.name(),
               smtpd::text::max_line_length);
        return EXIT_FAILURE;
      }
      auto parsed = smtpd::text::parse_line(std::get<std::string>(next));
      if (auto* e = std::get_if<smtpd::text::ParseError>(&parsed)) {
        syslog(LOG_ERR, "%s: malformed line from smtpd (%s), exiting", table.name(), e->message.c_str());
        return EXIT_FAILURE;
      }
      const auto& line = std::get<smtpd::text::Line>(parsed);
      std::string out;
      if (auto* c = std::get_if<smtpd::text::ConfigLine>(&line)) {
        // Unknown keys are for future smtpd versions: ignored, as the protocol asks.
        if (ready) continue;
        if (c->key == "tablename") table.set_name(c->value);
        if (c->key == "protocol" && c->value != smtpd::text::protocol_version)
          syslog(LOG_WARNING, "%s: smtpd speaks table protocol %s, this program %s", table.name(),
                 c->value.c_str(), std::string(smtpd::text::protocol_version).c_str());
        continue;
      }
      if (std::holds_alternative<smtpd::text::ConfigReady>(line)) {
        if (ready) continue;
        for (auto s : smtpd::registered_services) smtpd::text::append_register(out, s);
        smtpd::text::append_register_ready(out);
        ready = true;
        syslog(LOG_INFO, "%s: smtpd opened the table (text protocol %s)", table.name(),
               std::string(smtpd::text::protocol_version).c_str());
      } else {
        const auto& r = std::get<smtpd::text::TableRequest>(line);
        if (!ready) {
          syslog(LOG_ERR, "%s: request from smtpd before the handshake ended, exiting", table.name());
          return EXIT_FAILURE;
        }
        Answer a;
        if (r.version != smtpd::text::protocol_version)
          a = Answer::temp_fail("unsupported table protocol version");
        else if (r.op == Operation::update)
          a = table.load_config() ? Answer::found({}) : Answer::temp_fail("configuration not reloaded");
        else
          a = table.answer(r.op, r.service, r.key);
        smtpd::text::append_result(out, r.op, r.id, a);
      }
      if (!write_all(STDOUT_FILENO, out)) return EXIT_FAILURE;
    }
    in.clear();
    if (!read_some(STDIN_FILENO, in)) {
      syslog(LOG_INFO, "%s: end of input, exiting", table.name());
      return EXIT_SUCCESS;
    }
    reader.feed(in);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // LOG_PERROR: every line also goes to stderr, which is smtpd's own output when it runs in
  // the foreground (smtpd -d); a socket smtpd's user may not reach would otherwise only say
  // 451 there. (A daemonized smtpd gives its tables /dev/null: syslog remains.)
  // stderr is never a protocol fd (smtpd talks on fd 0 and, >= 7.6, fd 1).
  ::openlog("table-maildict", LOG_PID | LOG_PERROR, LOG_MAIL);
  // A vanished smtpd or maildictd must show up as a write error, not kill us.
  std::signal(SIGPIPE, SIG_IGN);

  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::printf(
        "usage: table-maildict [CONFIG]\n"
        "OpenSMTPD table backend: smtpd.conf `table NAME maildict:CONFIG` runs it with CONFIG\n"
        "(default %s); it reads `socket` and `request_timeout` from there and\n"
        "asks maildictd for every lookup. It talks smtpd's protocol on fd 0/1.\n",
        kDefaultConfig);
    return EXIT_SUCCESS;
  }
  // A configuration that cannot be read leaves the program running: it answers every lookup
  // with a temporary failure (so mail waits instead of bouncing) and an UPDATE retries it.
  Table table(argc > 1 ? argv[1] : kDefaultConfig);

  std::string first;
  if (!read_some(STDIN_FILENO, first)) return EXIT_SUCCESS;
  if (first[0] == '\x02') return run_imsg(table, std::move(first));
  if (first[0] == 'c') return run_text(table, std::move(first));
  syslog(LOG_ERR, "unknown table protocol (first byte 0x%02x), exiting",
         static_cast<unsigned>(static_cast<unsigned char>(first[0])));
  return EXIT_FAILURE;
}
