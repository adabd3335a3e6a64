// maildictd: the directory daemon. Reads its configuration, binds the dict socket, drops
// privileges, opens the directory and serves until SIGTERM.
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <memory>
#include <cstring>
#include <iostream>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "conf/config.hpp"
#include "conf/query_check.hpp"
#include "server/descriptor_limit.hpp"
#include "server/dict_server.hpp"
#include "server/fault_log.hpp"
#include "server/host_checks.hpp"
#include "server/lookup_service.hpp"
#include "server/metrics.hpp"
#include "server/policy_engine.hpp"
#include "server/policy_http.hpp"
#include "server/stop_watchdog.hpp"
#include "storage/pool.hpp"
#include "storage/sql_session.hpp"
#include "storage/backend_factory.hpp"

namespace {

constexpr const char* default_config = "/etc/maildict/maildict.conf";
// A stop normally takes milliseconds; one that waits on a hung database ends after this.
constexpr std::chrono::milliseconds kStopGrace{10000};

void usage(std::FILE* to) {
  std::fprintf(to,
R"(Usage: maildictd [-c FILE] [--check-config] [--version] [--help]

maildictd owns a mail server's user directory and answers Dovecot's passdb and
userdb lookups (and OpenSMTPD's, through table-maildict) over Dovecot's dict
protocol on a UNIX socket. With policy_listen (or policy_socket) set it is also
Dovecot's auth policy server (HTTP on loopback or a UNIX socket: brute-force and
password-spray protection,
GET /metrics, /admin/block and /admin/unblock). It runs in the foreground and
logs to stderr.

Options:
  -c, --config FILE   configuration file (default %s)
      --check-config  read and check the configuration, open the database and
                      prepare every query of the operator's (sql_* settings, the
                      table-sqlite and dovecot-sql files), print a summary, exit
                      0 if it is valid and 1 (with the file and line) if not; a
                      database that is not available yet is only a warning
  -V, --version       print the version and exit
  -h, --help          print this help and exit

Signals: SIGTERM or SIGINT stop the daemon cleanly: it stops accepting, answers
the requests already in flight (a temporary failure at their deadline at the
latest), then closes (exit status 0; 1 if queries to a database that no longer
answers were still running 10 s later); SIGHUP empties the answer cache.
Example: printf 'H3\t2\t0\t\tmaildict\nLshared/passdb/john@example.org\t\n' |
           socat -t1 - UNIX-CONNECT:/run/maildict/dict.sock
)",
               default_config);
}

void drop_privileges(const std::string& user) {
  struct passwd* pw = ::getpwnam(user.c_str());
  if (!pw) throw std::runtime_error("user: no such user '" + user + "'");
  if (::getuid() == pw->pw_uid) return;
  if (::initgroups(pw->pw_name, pw->pw_gid) != 0 || ::setgid(pw->pw_gid) != 0 || ::setuid(pw->pw_uid) != 0)
    throw std::runtime_error("cannot switch to user '" + user + "': " + std::strerror(errno) +
                             " (start maildictd as root, or leave 'user' empty)");
}

void print_summary(const maildict::conf::Config& c) {
  std::printf("%s: configuration is valid\n", c.source.c_str());
  std::printf("  socket      %s (mode %04o, group %s)\n", c.socket_path.c_str(), static_cast<unsigned>(c.socket_mode),
              c.socket_group.empty() ? "-" : c.socket_group.c_str());
  std::printf("  database    %s (%u connections; from %s)\n", maildict::storage::describe_database(c.database).c_str(),
              maildict::conf::pool_size(c), c.database_origin.c_str());
  if (!c.operator_queries.empty())
    std::printf("  queries     %zu of the operator's\n", c.operator_queries.size());
  if (!c.database_replica.empty())
    std::printf("  replica     %s (lookups)\n", maildict::storage::describe_database(c.database_replica).c_str());
  std::printf("  timeouts    request %lld ms, idle %lld ms\n", static_cast<long long>(c.request_timeout.count()),
              static_cast<long long>(c.idle_timeout.count()));
  std::printf("  cache       %zu entries, ttl %lld ms\n", c.cache_entries, static_cast<long long>(c.cache_ttl.count()));
  if (!maildict::conf::policy_enabled(c)) {
    std::printf("  policy      off (policy_listen and policy_socket are empty)\n");
  } else {
    const auto& p = c.policy;
    if (!c.policy_listen.empty()) std::printf("  policy      http://%s/\n", c.policy_listen.c_str());
    if (!c.policy_socket.empty())
      std::printf("  policy      UNIX socket %s (mode %04o, group %s)\n", c.policy_socket.c_str(),
                  static_cast<unsigned>(c.policy_socket_mode),
                  c.policy_socket_group.empty() ? "-" : c.policy_socket_group.c_str());
    std::printf("              API key %s, window %lld s\n", c.policy_api_key.empty() ? "not required" : "required",
                static_cast<long long>(p.window.count() / 1000));
    std::printf("              tarpit/reject after ip+login %u/%u, ip %u/%u, login %u/%u distinct failures\n",
                p.ip_login_tarpit, p.ip_login_reject, p.ip_tarpit, p.ip_reject, p.login_tarpit, p.login_reject);
    std::printf("              %zu allow-listed network(s), at most %zu tracked keys\n", p.allow_networks.size(),
                p.max_entries);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path = default_config;
  bool check_only = false;
  static const option options[] = {
      {"config", required_argument, nullptr, 'c'}, {"check-config", no_argument, nullptr, 'k'},
      {"version", no_argument, nullptr, 'V'},      {"help", no_argument, nullptr, 'h'},
      {nullptr, 0, nullptr, 0}};
  for (int opt; (opt = getopt_long(argc, argv, "c:Vh", options, nullptr)) != -1;) {
    switch (opt) {
      case 'c': config_path = optarg; break;
      case 'k': check_only = true; break;
      case 'V': std::printf("maildictd %s\n", MAILDICT_VERSION); return 0;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    std::fprintf(stderr, "maildictd: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }

  maildict::conf::Config config;
  try {
    config = maildict::conf::load_config(config_path);
  } catch (const maildict::conf::ConfigError& e) {
    std::fprintf(stderr, "maildictd: %s\n", e.what());
    return 1;
  }
  if (check_only) {
    if (!maildict::server::report_account_problems(config)) return 1;  // names no account can have
    // Opens the database as maildictd would (without creating anything) and prepares every
    // query of the operator's: a typo in one is found now, not as an F for every lookup.
    maildict::conf::QueryCheck check;
    try {
      auto backend = maildict::storage::open_backend(maildict::conf::backend_options(config));
      check = maildict::conf::check_queries(config, *backend);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "maildictd: %s: %s\n", config.source.c_str(), e.what());
      return 1;
    }
    for (const auto& e : check.errors) std::fprintf(stderr, "maildictd: %s\n", e.c_str());
    if (!check.errors.empty()) return 1;
    for (const auto& w : check.warnings) std::fprintf(stderr, "maildictd: warning: %s\n", w.c_str());
    print_summary(config);
    return 0;
  }

  auto logger = spdlog::stderr_logger_mt("maildictd");
  logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %l %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  ::signal(SIGPIPE, SIG_IGN);

  // Every client connection is a descriptor: use all the kernel allows, and accept no more
  // connections than fit (beyond them a client is refused at once instead of hanging).
  auto descriptors = maildict::server::raise_descriptor_limit();
  if (descriptors.now != descriptors.before)
    spdlog::info("open-file limit raised from {} to {}", descriptors.before, descriptors.now);
  for (const auto& note : maildict::server::fit_connection_limits(config, descriptors.now)) spdlog::warn("{}", note);

  // A stop signal that arrives between binding the socket (which tells a supervisor or a test
  // that maildictd is up) and the moment the server's signal handling exists would kill the
  // process with the default action, leaving its socket file behind. Blocked here, before any
  // thread starts, so every thread inherits the block; DictServer::run unblocks them once it
  // handles them, and a signal that came early is then handled like any other.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&stop_signals, sig);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  try {
    // Declared first so that it outlives (and bounds) every destructor that may wait for the
    // database: the pool's threads and the change listener.
    maildict::server::StopWatchdog stop_watchdog;
    maildict::server::DictServer server(config);
    server.bind();
    // The policy listener binds before privileges are dropped too; it reaches the database
    // through the backend made below.
    maildict::storage::DirectoryBackend* backend_for_policy = nullptr;
    std::unique_ptr<maildict::server::PolicyEngine> policy_engine;
    std::unique_ptr<maildict::server::PolicyHttpServer> policy_server;
    if (maildict::conf::policy_enabled(config)) {
      policy_engine = std::make_unique<maildict::server::PolicyEngine>(config.policy);
      policy_server = std::make_unique<maildict::server::PolicyHttpServer>(
          config, *policy_engine, [&backend_for_policy] {
            return backend_for_policy->open_session(maildict::storage::SessionRole::write);
          });
      policy_server->bind();
    }
    if (!config.run_as_user.empty()) drop_privileges(config.run_as_user);

    auto options = maildict::conf::backend_options(config);
    options.on_event = [](bool ok, const std::string& message) {
      if (ok)
        spdlog::info("{}", message);
      else
        spdlog::warn("{}", message);
    };
    auto backend_ptr = maildict::storage::open_backend(options);
    auto& backend = *backend_ptr;
    backend_for_policy = &backend;
    try {
      backend.prepare_schema();
    } catch (const std::exception& e) {
      // Serving temporary failures beats refusing to start: mail is deferred, not bounced,
      // and the daemon recovers by itself once the database is back.
      spdlog::error("the directory is not available yet: {}; lookups fail temporarily until it is", e.what());
    }
    // The policy does not count a failed login whose passdb lookup could not be made.
    maildict::server::PassdbOutcomes passdb_outcomes;
    maildict::storage::Pool pool(backend, maildict::conf::pool_size(config), config.max_queued_requests,
                                 [](const std::string& message) { spdlog::error("{}", message); });
    maildict::server::LookupService service(backend, pool, config.cache_entries, config.cache_ttl,
                                            config.request_timeout, config.cache_negative_ttl,
                                            config.cache_serve_stale);
    // Temporary failures: a few lines per outage, not one per request.
    maildict::server::FaultLog faults([](maildict::server::FaultLog::Level level, const std::string& line) {
      if (level == maildict::server::FaultLog::Level::warn) spdlog::warn("{}", line);
      else spdlog::info("{}", line);
    });
    service.report_faults(faults);
    // Every stale answer is counted; the log gets at most one line a second so an outage under
    // load does not flood it.
    service.on_stale_answer([last = std::make_shared<std::atomic<std::int64_t>>(0),
                             skipped = std::make_shared<std::atomic<std::uint64_t>>(0)](
                                const std::string& key, std::chrono::milliseconds age, const std::string& why) {
      auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now().time_since_epoch())
                     .count();
      auto prev = last->load();
      if (now - prev < 1000 || !last->compare_exchange_strong(prev, now)) {
        skipped->fetch_add(1);
        return;
      }
      spdlog::warn("database unavailable ({}); served a stale answer for {} ({} ms old; {} more since the last "
                   "message)",
                   why, key, age.count(), skipped->exchange(0));
    });
    // The operator's queries are prepared now: one the database rejects would fail every
    // lookup of its kind, so maildictd refuses to start with the file, line and setting. A
    // database that is not there yet only delays the check to the lookups (they answer F).
    const auto check = maildict::conf::check_queries(config, backend);
    for (const auto& w : check.warnings) spdlog::warn("{}", w);
    if (!check.errors.empty()) {
      for (const auto& e : check.errors) spdlog::critical("{}", e);
      spdlog::critical("not starting: {} of the configured queries cannot be prepared", check.errors.size());
      return 1;
    }
    spdlog::info("maildictd {} starting: directory {} (from {})", MAILDICT_VERSION, backend.describe(),
                 config.database_origin);
    if (auto warning = backend.access_warning()) spdlog::warn("{}", *warning);
    auto& m = maildict::server::metrics();
    m.add_gauge("maildict_pool_connections", "Database connections (and threads) in the pool.",
                [n = maildict::conf::pool_size(config)] { return static_cast<double>(n); });
    m.add_gauge("maildict_pool_in_flight", "Lookups queued for or running on the pool.",
                [&service] { return static_cast<double>(service.in_flight()); });
    if (policy_server) {
      service.note_passdb_outcomes(passdb_outcomes);
      policy_server->consult_passdb_outcomes(passdb_outcomes);
      policy_server->start();
    }
    server.run(service);
    spdlog::info("stopping");
    stop_watchdog.arm(kStopGrace, 1);
    if (policy_server) policy_server->stop();  // saves the policy state while the database is open
    pool.stop();
    spdlog::info("stopped");
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
  return 0;
}
