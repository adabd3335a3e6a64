#include "server/dict_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "protocol/dict_escape.hpp"

namespace maildict::table {

namespace {

using Clock = std::chrono::steady_clock;

int ms_until(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  // Rounded up so a sub-millisecond remainder still waits instead of spinning.
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left + 1, 1 << 30));
}

// Waits for `events` on fd until the deadline. Returns false on timeout; revents tells the rest.
bool wait_for(int fd, short events, Clock::time_point deadline, short& revents) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int timeout = ms_until(deadline);
    const int n = ::poll(&p, 1, timeout);
    if (n > 0) {
      revents = p.revents;
      return true;
    }
    if (n == 0) {
      if (Clock::now() >= deadline) return false;
      continue;
    }
    if (errno != EINTR) {
      revents = POLLERR;
      return true;
    }
  }
}

std::string errno_text(const char* what, int err) { return std::string(what) + ": " + std::strerror(err); }

// Why connect(2) to the socket failed, worded for the operator reading smtpd's or the
// terminal's log: a refused permission is a configuration problem (the socket's group and
// mode), not a stopped maildictd, and says who was refused.
std::string connect_error_text(const std::string& path, int err) {
  if (err == EACCES || err == EPERM)
    return "permission denied: " + path + " (uid " + std::to_string(::geteuid()) + ", gid " +
           std::to_string(::getegid()) +
           " may not connect; check socket_group/socket_mode in maildict.conf: the group must be "
           "this process's primary group)";
  return "connect " + path + ": " + std::strerror(err);
}

// A reason from the server's F line, for our log: short and on one line.
std::string server_reason(std::string_view escaped) {
  std::string reason = dict::unescape(escaped);
  // maildictd's own reasons already say "maildict: ..."; others get named for the log reader.
  if (!reason.starts_with("maildict")) reason.insert(0, "maildictd: ");
  if (reason.size() > 200) reason.resize(200);
  for (char& c : reason)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  return reason;
}

}  // namespace

DictClient::DictClient(Options options) : options_(std::move(options)) {}

DictClient::~DictClient() { disconnect(); }

void DictClient::disconnect() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  pending_.clear();
}

void DictClient::set_options(Options options) {
  options_ = std::move(options);
  disconnect();
}

bool DictClient::connect_socket(Clock::time_point deadline, std::string& error, int& err) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options_.socket_path.empty() || options_.socket_path.size() >= sizeof addr.sun_path) {
    error = "bad socket path";
    return false;
  }
  std::memcpy(addr.sun_path, options_.socket_path.data(), options_.socket_path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = errno_text("socket", errno);
    return false;
  }
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    // A full listen backlog gives EAGAIN on a non-blocking UNIX socket: the server is
    // overloaded, which is a temporary failure like any other.
    if (errno != EINPROGRESS) {
      err = errno;
      error = connect_error_text(options_.socket_path, err);
      ::close(fd);
      return false;
    }
    short revents = 0;
    if (!wait_for(fd, POLLOUT, deadline, revents)) {
      error = "connect: timed out";
      ::close(fd);
      return false;
    }
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0 || so_error != 0) {
      err = so_error ? so_error : errno;
      error = connect_error_text(options_.socket_path, err);
      ::close(fd);
      return false;
    }
  }
  fd_ = fd;
  pending_.clear();
  return true;
}

// An idle connection may have been closed by the server (idle timeout, restart). Finding out
// before sending saves a request that would otherwise fail for no reason.
bool DictClient::connection_still_usable() {
  pollfd p{fd_, POLLIN, 0};
  const int n = ::poll(&p, 1, 0);
  if (n == 0) return pending_.empty();
  // Readable while idle means EOF, an error, or bytes nobody asked for: none is usable.
  return false;
}

DictClient::Reply DictClient::attempt(std::string_view request, Clock::time_point deadline,
                                      bool& retry_on_fresh) {
  retry_on_fresh = false;
  Reply reply;
  auto fail = [&](std::string why) {
    disconnect();
    reply.status = Status::failed;
    reply.value.clear();
    reply.error = std::move(why);
    return reply;
  };

  std::size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      short revents = 0;
      if (!wait_for(fd_, POLLOUT, deadline, revents)) return fail("write: timed out");
      continue;
    }
    const int err = errno;
    retry_on_fresh = err == EPIPE || err == ECONNRESET;
    return fail(errno_text("write", err));
  }

  bool got_any = false;
  for (;;) {
    const auto lf = pending_.find('\n');
    if (lf != std::string::npos) {
      std::string line = pending_.substr(0, lf);
      pending_.erase(0, lf + 1);
      if (line.empty()) return fail("malformed reply from maildictd");
      switch (line[0]) {
        case 'O':
          reply.status = Status::found;
          reply.value = dict::unescape(std::string_view(line).substr(1));
          return reply;
        case 'N':
          if (line.size() != 1) return fail("malformed reply from maildictd");
          reply.status = Status::not_found;
          return reply;
        case 'F':
          // A well-formed answer: the stream is in step, so the connection stays.
          reply.status = Status::failed;
          reply.answered = true;
          reply.error = server_reason(std::string_view(line).substr(1));
          return reply;
        default:
          return fail("malformed reply from maildictd");
      }
    }
    if (pending_.size() > options_.max_reply_length) return fail("reply from maildictd too long");
    short revents = 0;
    if (!wait_for(fd_, POLLIN, deadline, revents)) return fail("no reply from maildictd in time");
    char buf[8192];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      got_any = true;
      pending_.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    const int err = n == 0 ? 0 : errno;
    retry_on_fresh = !got_any && (n == 0 || err == ECONNRESET);
    return fail(n == 0 ? "maildictd closed the connection" : errno_text("read", err));
  }
}

DictClient::Reply DictClient::lookup(std::string_view key) {
  const auto deadline = Clock::now() + options_.timeout;
  std::string request = "L";
  dict::append_escaped(request, key);
  request += "\t\n";

  bool reused = fd_ >= 0;
  if (reused && !connection_still_usable()) {
    disconnect();
    reused = false;
  }
  for (;;) {
    std::string wire;
    if (fd_ < 0) {
      std::string error;
      int err = 0;
      if (!connect_socket(deadline, error, err)) {
        Reply r;
        r.error = std::move(error);
        r.connect_errno = err;
        return r;
      }
      // Major 3 minor 0: in-order replies without ids, and never an M reply.
      wire = "H3\t0\t0\t\t";
      dict::append_escaped(wire, options_.client_name);
      wire += "\n";
    }
    wire += request;
    bool retry_on_fresh = false;
    Reply r = attempt(wire, deadline, retry_on_fresh);
    // A reused connection the server closed just as we wrote: lookups are idempotent, so one
    // more try on a fresh connection costs nothing but the time left.
    if (r.status == Status::failed && reused && retry_on_fresh && Clock::now() < deadline) {
      reused = false;
      continue;
    }
    return r;
  }
}

}  // namespace maildict::table
