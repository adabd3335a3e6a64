// A small blocking client for maildictd's dict protocol, for programs that must never hang:
// table-maildict (smtpd blocks on it with no timeout of its own) and anything alike.
//
// One lookup at a time on one persistent UNIX-socket connection, handshake `H3 0` so replies
// come back in order without ids. Every lookup has one overall deadline covering connect,
// write and read; whatever goes wrong (no server, timeout, EOF, a reply that is not O/N/F)
// is a `failed` reply and the connection is dropped, to be made again on the next lookup.
// Plain poll(2) on non-blocking sockets; no threads, no signals.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

namespace maildict::table {

class DictClient {
 public:
  struct Options {
    std::string socket_path;
    std::chrono::milliseconds timeout{2000};
    std::string client_name = "table-maildict";  // the dict name in the H line, for the server's log
    std::size_t max_reply_length = 65536;        // maildictd's own line bound
  };

  enum class Status { found, not_found, failed };
  struct Reply {
    Status status = Status::failed;
    std::string value;  // found: the unescaped value (may be secret: never log it)
    std::string error;  // failed: a short reason for the log, without any value
    // failed: true when maildictd itself answered F (it runs; the fault is behind it, e.g. its
    // database), false when it could not be reached or did not answer in time.
    bool answered = false;
    // failed before a connection existed: connect(2)'s errno (ENOENT/ECONNREFUSED: maildictd
    // is not there; EACCES: it is, but this user may not connect), else 0.
    int connect_errno = 0;
  };

  explicit DictClient(Options options);
  ~DictClient();
  DictClient(const DictClient&) = delete;
  DictClient& operator=(const DictClient&) = delete;

  // Looks up one dict key (e.g. "shared/smtpd/domain/example.org") within the deadline.
  Reply lookup(std::string_view key);

  bool connected() const { return fd_ >= 0; }
  void disconnect();
  // Takes effect on the next connection (an UPDATE may have re-read the configuration).
  void set_options(Options options);
  const Options& options() const { return options_; }

 private:
  using Clock = std::chrono::steady_clock;
  Reply attempt(std::string_view request, Clock::time_point deadline, bool& retry_on_fresh);
  bool connect_socket(Clock::time_point deadline, std::string& error, int& err);
  bool connection_still_usable();

  Options options_;
  int fd_ = -1;
  std::string pending_;  // bytes read past the last reply line (none in practice)
};

}  // namespace maildict::table
