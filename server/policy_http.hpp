// The auth policy listener: HTTP/1.1 on a loopback TCP address (policy_listen; Dovecot 2.3
// cannot reach a UNIX socket) and/or a UNIX socket (policy_socket; Dovecot 2.4 reaches it with
// auth_policy { http_client_proxy_socket_path } and sends absolute-form targets such as
// "POST http://policy.invalid/policy?command=allow"), served by one I/O thread of its own with
// Boost.Beast.
//
//   POST <any path>?command=allow    -> 200 {"status":N,"msg":"..."}   (PolicyEngine::decide)
//   POST <any path>?command=report   -> 204                            (PolicyEngine::report)
//   GET  /metrics                    -> Prometheus text (no API key needed)
//   GET  /admin/blocks               -> {"blocks":[...]}
//   POST /admin/block   {"ip":"203.0.113.0/24"} or {"login":"..."}, optional seconds, reason
//   POST /admin/unblock {"ip":...} or {"login":...}
//
// With policy_api_key set, policy and admin requests must carry it in policy_api_header (the
// value is trimmed: Dovecot sends it with a leading space). Bad requests get a 4xx with a JSON
// {"error":"..."} body; request bodies are never logged. The engine's state is saved to the
// directory database every policy_persist_interval (and at once after a block or unblock) on a
// thread of its own, and read back at start.
#pragma once
#include <functional>
#include <memory>

#include "conf/config.hpp"
#include "server/passdb_outcomes.hpp"
#include "server/policy_engine.hpp"
#include "storage/sql_session.hpp"

namespace maildict::server {

class PolicyHttpServer {
 public:
  // `open_session` gives a write session on the directory database; it may throw (the state is
  // then kept in memory only, and opening is retried at every persist interval).
  using SessionFactory = std::function<std::unique_ptr<storage::SqlSession>()>;

  PolicyHttpServer(const conf::Config& config, PolicyEngine& engine, SessionFactory open_session);
  ~PolicyHttpServer();

  // A failed login is not counted when its passdb lookup failed temporarily a moment ago
  // (see passdb_outcomes.hpp). Set before start(); `outcomes` must outlive this server.
  void consult_passdb_outcomes(PassdbOutcomes& outcomes);

  // Binds policy_listen. Throws std::runtime_error with a clear message.
  void bind();
  // Reads the saved state back (waits for it, up to request_timeout), then serves on a thread
  // of its own until stop().
  void start();
  // Stops serving, then saves what changed since the last save.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace maildict::server
