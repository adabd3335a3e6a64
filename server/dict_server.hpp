// maildictd's dict-protocol listener: a UNIX socket, a few I/O threads each running its own
// event loop, one coroutine per connection. Lines are parsed by protocol/dict_codec and
// answered through LookupService; this file owns only I/O, ordering and limits.
#pragma once
#include <memory>

#include "conf/config.hpp"
#include "server/lookup_service.hpp"

namespace maildict::server {

class DictServer {
 public:
  explicit DictServer(const conf::Config& config);
  ~DictServer();

  // Creates, binds and listens on the socket, then sets its mode and owner. Removes a stale
  // socket file left by a crashed instance, but refuses to steal one that still answers.
  // Throws std::runtime_error with a clear message. Call before dropping privileges.
  void bind();

  // Serves until SIGTERM or SIGINT. Returns when every I/O thread has stopped.
  void run(LookupService& service);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace maildict::server
