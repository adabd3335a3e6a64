#include "server/unix_listener.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace maildict::server {
namespace {

std::string errno_text() { return std::strerror(errno); }

sockaddr_un address_of(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) throw std::runtime_error(path + ": too long for a UNIX socket path");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// Whether something accepts connections on `path` right now.
bool answers(const sockaddr_un& addr) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

int bind_unix_listener(const UnixListenerSpec& spec, SocketFile& file) {
  namespace fs = std::filesystem;
  const std::string& p = spec.path;
  fs::path path(p);
  std::error_code fec;
  fs::create_directories(path.parent_path(), fec);
  if (fec) throw std::runtime_error("cannot create the socket directory " + path.parent_path().string() + ": " + fec.message());
  const sockaddr_un addr = address_of(p);

  // A socket file may be left from a crash; one that still accepts belongs to a live instance.
  if (fs::is_socket(path, fec)) {
    if (answers(addr)) throw std::runtime_error(p + " is in use by a running maildictd (or another server)");
    ::unlink(p.c_str());
  } else if (fs::exists(path, fec)) {
    throw std::runtime_error(p + " exists and is not a socket; refusing to replace it");
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("cannot create a socket for " + p + ": " + errno_text());
  auto fail = [&](const std::string& what) {
    std::string message = what + ": " + errno_text();
    ::close(fd);
    return std::runtime_error(message);
  };
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) throw fail("cannot bind " + p);
  file.bound(p);
  if (::listen(fd, SOMAXCONN) != 0) throw fail("cannot listen on " + p);
  if (::chmod(p.c_str(), spec.mode) != 0) throw fail("cannot set the mode of " + p);
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  if (!spec.owner.empty()) {
    struct passwd* pw = ::getpwnam(spec.owner.c_str());
    if (!pw) {
      ::close(fd);
      throw std::runtime_error(spec.source + ": " + spec.setting + "_owner: no such user '" + spec.owner + "'");
    }
    uid = pw->pw_uid;
  }
  if (!spec.group.empty()) {
    struct group* gr = ::getgrnam(spec.group.c_str());
    if (!gr) {
      ::close(fd);
      throw std::runtime_error(spec.source + ": " + spec.setting + "_group: no such group '" + spec.group + "'");
    }
    gid = gr->gr_gid;
  }
  if ((uid != static_cast<uid_t>(-1) || gid != static_cast<gid_t>(-1)) && ::chown(p.c_str(), uid, gid) != 0)
    throw fail("cannot set the owner of " + p);
  return fd;
}

}  // namespace maildict::server
