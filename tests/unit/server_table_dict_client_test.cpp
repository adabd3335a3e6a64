// table-maildict's dict client against a scripted fake maildictd on a UNIX socket: the three
// outcomes, every way the server can misbehave (garbage, silence, EOF, no server at all), and
// reconnection afterwards.
#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "server/dict_client.hpp"
#include "server/table_backend.hpp"

using namespace std::chrono_literals;
using maildict::table::DictClient;
using Status = DictClient::Status;

namespace {

// Answers by the last path segment of the key: found, notfound, fail, garbage, silence, close,
// split (a reply in two writes), long (a line with no end), escaped (a value with TAB and LF).
class FakeServer {
 public:
  explicit FakeServer(std::string path) : path_(std::move(path)) {
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    ::unlink(path_.c_str());
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    REQUIRE(::pipe(stop_) == 0);
    thread_ = std::thread([this] { run(); });
  }
  ~FakeServer() {
    const char c = 'x';
    (void)!::write(stop_[1], &c, 1);
    thread_.join();
    for (auto& conn : conns_) ::close(conn.fd);
    ::close(listen_fd_);
    ::close(stop_[0]);
    ::close(stop_[1]);
    ::unlink(path_.c_str());
  }

  int accepted() const { return accepted_.load(); }
  std::vector<std::string> lines() {
    std::lock_guard lock(mutex_);
    return lines_;
  }
  // Closes every open connection, as a restarted or idle-timing-out server does.
  void drop_connections() { drop_.store(true); }

 private:
  struct Conn {
    int fd;
    std::string in;
  };

  void run() {
    for (;;) {
      if (drop_.exchange(false)) {
        for (auto& conn : conns_) ::close(conn.fd);
        conns_.clear();
      }
      std::vector<pollfd> fds{{stop_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
      for (auto& conn : conns_) fds.push_back({conn.fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 20) < 0) continue;
      if (fds[0].revents) return;
      if (fds[1].revents & POLLIN) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          conns_.push_back({fd, {}});
          ++accepted_;
        }
      }
      for (std::size_t i = 2; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        Conn& conn = conns_[i - 2];
        char buf[4096];
        const ssize_t n = ::recv(conn.fd, buf, sizeof buf, 0);
        if (n <= 0) {
          ::close(conn.fd);
          conn.fd = -1;
          continue;
        }
        conn.in.append(buf, static_cast<std::size_t>(n));
        std::size_t lf;
        while (conn.fd >= 0 && (lf = conn.in.find('\n')) != std::string::npos) {
          std::string line = conn.in.substr(0, lf);
          conn.in.erase(0, lf + 1);
          {
            std::lock_guard lock(mutex_);
            lines_.push_back(line);
          }
          answer(conn, line);
        }
      }
      std::erase_if(conns_, [](const Conn& c) { return c.fd < 0; });
    }
  }

  void send(Conn& conn, std::string_view s) { (void)!::send(conn.fd, s.data(), s.size(), MSG_NOSIGNAL); }

  void answer(Conn& conn, const std::string& line) {
    if (line.starts_with("H")) return;
    const std::string what = line.substr(line.rfind('/') + 1, line.find('\t') - line.rfind('/') - 1);
    if (what == "found") send(conn, "Othe value\n");
    else if (what == "notfound") send(conn, "N\n");
    else if (what == "fail") send(conn, "Fdatabase unavailable\n");
    else if (what == "garbage") send(conn, "Xnonsense\n");
    else if (what == "silence") {}
    else if (what == "close") {
      ::close(conn.fd);
      conn.fd = -1;
    } else if (what == "split") {
      send(conn, "Oab");
      std::this_thread::sleep_for(30ms);
      send(conn, "c\n");
    } else if (what == "long") send(conn, std::string(70000, 'O'));
    else if (what == "escaped") send(conn, "Oa\x01tb\x01nc\n");
    else if (line == "Lshared/smtpd/source/\t") send(conn, "O192.0.2.2, 192.0.2.1 ,,192.0.2.3\n");
    else if (line == "Lshared/smtpd/relayhost/\t") send(conn, "O , \n");
    else send(conn, "Funknown key\n");
  }

  std::string path_;
  int listen_fd_ = -1;
  int stop_[2] = {-1, -1};
  std::thread thread_;
  std::vector<Conn> conns_;
  std::atomic<int> accepted_{0};
  std::atomic<bool> drop_{false};
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string t = (std::filesystem::temp_directory_path() / "maildict-dictclient-XXXXXX").string();
    REQUIRE(::mkdtemp(t.data()) != nullptr);
    path = t;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

DictClient::Options options(const TempDir& dir, std::chrono::milliseconds timeout = 300ms) {
  DictClient::Options o;
  o.socket_path = (dir.path / "dict.sock").string();
  o.timeout = timeout;
  return o;
}

}  // namespace

TEST_CASE("dict client: found, not found and F on one connection, with the H3 0 handshake") {
  TempDir dir;
  FakeServer server(options(dir).socket_path);
  DictClient client(options(dir));

  auto r = client.lookup("shared/smtpd/domain/found");
  CHECK(r.status == Status::found);
  CHECK(r.value == "the value");
  r = client.lookup("shared/smtpd/domain/notfound");
  CHECK(r.status == Status::not_found);
  r = client.lookup("shared/smtpd/regex/fail");
  CHECK(r.status == Status::failed);
  CHECK(r.error == "maildictd: database unavailable");
  // F is a complete answer: the connection is still in step and is kept.
  CHECK(client.connected());
  r = client.lookup("shared/smtpd/domain/found");
  CHECK(r.status == Status::found);
  CHECK(server.accepted() == 1);

  const auto lines = server.lines();
  REQUIRE(lines.size() == 5);
  CHECK(lines[0] == "H3\t0\t0\t\ttable-maildict");
  CHECK(lines[1] == "Lshared/smtpd/domain/found\t");
}

TEST_CASE("dict client: keys are escaped and values unescaped") {
  TempDir dir;
  FakeServer server(options(dir).socket_path);
  DictClient client(options(dir));
  auto r = client.lookup("shared/smtpd/alias/a\tb/escaped");
  CHECK(r.status == Status::found);
  CHECK(r.value == "a\tb\nc");
  CHECK(server.lines().at(1) == "Lshared/smtpd/alias/a\x01tb/escaped\t");
  CHECK(client.lookup("shared/smtpd/alias/split").value == "abc");
}

TEST_CASE("dict client: no server is a quick failure, and a server that appears is used") {
  TempDir dir;
  DictClient client(options(dir));
  auto r = client.lookup("shared/smtpd/domain/found");
  CHECK(r.status == Status::failed);
  CHECK(r.error.find("connect") != std::string::npos);
  CHECK(!client.connected());

  FakeServer server(options(dir).socket_path);
  r = client.lookup("shared/smtpd/domain/found");
  CHECK(r.status == Status::found);
}

TEST_CASE("dict client: garbage, EOF and an endless line fail and drop the connection") {
  TempDir dir;
  FakeServer server(options(dir).socket_path);
  DictClient client(options(dir));

  for (const std::string bad : {"garbage", "close", "long"}) {
    CAPTURE(bad);
    REQUIRE(client.lookup("shared/smtpd/domain/found").status == Status::found);
    const int before = server.accepted();
    auto r = client.lookup("shared/smtpd/alias/" + bad);
    CHECK(r.status == Status::failed);
    CHECK(r.value.empty());
    CHECK(!r.error.empty());
    CHECK(!client.connected());
    // The next lookup reconnects and works. An EOF with no reply on a reused connection looks
    // like a server that closed it just as we wrote, so that one was tried once more first.
    r = client.lookup("shared/smtpd/domain/found");
    CHECK(r.status == Status::found);
    CHECK(server.accepted() == before + (bad == "close" ? 2 : 1));
  }
}

TEST_CASE("dict client: silence ends at the deadline, and the next lookup reconnects") {
  TempDir dir;
  FakeServer server(options(dir).socket_path);
  DictClient client(options(dir, 200ms));
  const auto start = std::chrono::steady_clock::now();
  auto r = client.lookup("shared/smtpd/alias/silence");
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(r.status == Status::failed);
  CHECK(r.error.find("in time") != std::string::npos);
  CHECK(took >= 190ms);
  CHECK(took < 2s);
  CHECK(!client.connected());
  // A late reply on the old connection must not be taken as the answer to the next request.
  r = client.lookup("shared/smtpd/domain/notfound");
  CHECK(r.status == Status::not_found);
  CHECK(server.accepted() == 2);
}

TEST_CASE("dict client: a connection the server closed while idle is replaced without a failure") {
  TempDir dir;
  FakeServer server(options(dir).socket_path);
  DictClient client(options(dir));
  CHECK(client.lookup("shared/smtpd/domain/found").status == Status::found);
  server.drop_connections();
  std::this_thread::sleep_for(100ms);
  CHECK(client.lookup("shared/smtpd/domain/found").status == Status::found);
  CHECK(server.accepted() == 2);
}

TEST_CASE("dict client: a server restart between lookups") {
  TempDir dir;
  DictClient client(options(dir));
  {
    FakeServer server(options(dir).socket_path);
    CHECK(client.lookup("shared/smtpd/domain/found").status == Status::found);
  }
  CHECK(client.lookup("shared/smtpd/domain/found").status == Status::failed);
  FakeServer again(options(dir).socket_path);
  CHECK(client.lookup("shared/smtpd/domain/found").status == Status::found);
}

// ---- the backend: smtpd request -> dict key -> answer ------------------------------------------

using maildict::smtpd::Answer;
using maildict::smtpd::Operation;
using maildict::smtpd::Outcome;
using maildict::smtpd::Service;
using maildict::table::TableBackend;

TEST_CASE("table backend: dict keys and the three outcomes") {
  CHECK(TableBackend::dict_key(Service::alias, "bob@example.org") == "shared/smtpd/alias/bob@example.org");
  CHECK(TableBackend::dict_key(Service::source, "") == "shared/smtpd/source/");

  TempDir dir;
  FakeServer server(options(dir).socket_path);
  DictClient client(options(dir));
  TableBackend backend(client);

  Answer a = backend.answer(Operation::lookup, Service::alias, "found");
  CHECK(a.outcome == Outcome::found);
  CHECK(a.value == "the value");
  CHECK(backend.answer(Operation::check, Service::domain, "found").outcome == Outcome::found);
  CHECK(backend.answer(Operation::check, Service::domain, "notfound").outcome == Outcome::not_found);
  a = backend.answer(Operation::lookup, Service::credentials, "fail");
  CHECK(a.outcome == Outcome::temp_fail);
  CHECK(a.error == "maildictd: database unavailable");
  CHECK(backend.answer(Operation::lookup, Service::alias, "garbage").outcome == Outcome::temp_fail);
  CHECK(backend.answer(Operation::update, std::nullopt, "").outcome == Outcome::found);
  CHECK(server.lines().back() == "Lshared/smtpd/alias/garbage\t");
}

TEST_CASE("table backend: keys smtpd would never send are refused without asking") {
  TempDir dir;
  FakeServer server(options(dir).socket_path);
  DictClient client(options(dir));
  TableBackend backend(client);
  CHECK(backend.answer(Operation::lookup, std::nullopt, "found").outcome == Outcome::temp_fail);
  CHECK(backend.answer(Operation::lookup, Service::alias, std::string(1024, 'a')).outcome == Outcome::temp_fail);
  CHECK(backend.answer(Operation::check, Service::alias, std::string("a\0b", 3)).outcome == Outcome::temp_fail);
  CHECK(backend.answer(Operation::check, Service::auth, "bob@example.org:secret").outcome == Outcome::temp_fail);
  CHECK(server.lines().empty());
  CHECK(backend.answer(Operation::lookup, Service::alias, std::string(1023, 'a')).outcome == Outcome::temp_fail);
  CHECK(server.lines().size() == 2);  // H and the L: a 1023-byte key is asked
}

TEST_CASE("table backend: fetch goes round the list, an empty list is not found") {
  CHECK(TableBackend::split_list(" a , b,,c ,") == std::vector<std::string>{"a", "b", "c"});
  CHECK(TableBackend::split_list("").empty());
  CHECK(TableBackend::split_list(" , ").empty());

  TempDir dir;
  FakeServer server(options(dir).socket_path);
  DictClient client(options(dir));
  TableBackend backend(client);
  std::vector<std::string> got;
  for (int i = 0; i < 4; ++i) {
    Answer a = backend.answer(Operation::fetch, Service::source, "");
    REQUIRE(a.outcome == Outcome::found);
    got.push_back(a.value);
  }
  CHECK(got == std::vector<std::string>{"192.0.2.2", "192.0.2.1", "192.0.2.3", "192.0.2.2"});
  CHECK(backend.answer(Operation::fetch, Service::relayhost, "").outcome == Outcome::not_found);
}
