// Binding a listening UNIX socket with the permissions an operator configured: the dict socket
// and the auth policy socket share this. Plain POSIX (no Asio here); the caller hands the
// descriptor to its acceptor.
#pragma once
#include <sys/types.h>

#include <string>

#include "server/socket_file.hpp"

namespace maildict::server {

struct UnixListenerSpec {
  std::string path;
  mode_t mode = 0660;
  std::string owner;    // empty: the daemon's own user
  std::string group;    // empty: the daemon's own group
  std::string setting;  // the configuration setting that names the path ("socket", "policy_socket")
  std::string source;   // the configuration file, for error messages
};

// Creates the parent directory when missing, removes a stale socket file left by a crash (but
// refuses to take over one that still accepts connections, or a file that is not a socket),
// binds, listens, then sets mode and owner. Returns the listening descriptor (close-on-exec);
// `file` remembers the socket so that only this very file is removed at exit. Throws
// std::runtime_error with a message naming the path and the setting.
int bind_unix_listener(const UnixListenerSpec& spec, SocketFile& file);

}  // namespace maildict::server
