// maildict-admin: small administrative tasks around the directory. For now: create the demo
// directory and hash passwords the way the directory stores them.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "storage/backend_factory.hpp"
#include "storage/demo_directory.hpp"
#include "storage/password_scheme.hpp"

namespace {

void usage(std::FILE* to) {
  std::fprintf(to, R"(Usage: maildict-admin COMMAND [ARGS]

Commands:
  demo DB [--bulk N]        create (or complete) the demo directory in DB, an SQLite file
                            path or a database URI as in maildict.conf (sqlite:/path or
                            postgresql:<conninfo>); the schema is created when missing:
                            domains example.org, example.net, example.com (alias domain of
                            example.org) and disabled.example; users john@example.org
                            (password john-secret, bcrypt), jane@example.org (jane-secret,
                            SHA512-CRYPT), john_doe@example.org (doe-secret), bob@example.net
                            (bob-secret), nopw@example.net (no login), eve@example.org
                            (disabled), ghost@disabled.example (domain disabled); aliases
                            postmaster@example.org (two destinations), sales@example.org and a
                            catch-all for example.net; john may also send as sales@example.org.
                            For smtpd: relay label relay1 (relayuser / relaypass), netaddr
                            127.0.0.0/8, ::1 and local, addrname 127.0.0.1 -> mail.example.org,
                            source 127.0.0.1, relayhost relay.example ->
                            smtp+tls://relay1@smtp.relay.example:587.
                            --bulk N adds user1..userN@bulk.example
                            (password bulk-secret) for benchmarks.
  hash [--scheme S]         read a password from stdin (first line) and print its hash for
                            the users.password column. S: bcrypt (default) or sha512-crypt.
  help                      print this help
)");
}

int demo(int argc, char** argv) {
  if (argc < 1) {
    usage(stderr);
    return 2;
  }
  std::string path = argv[0];
  std::size_t bulk = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--bulk") == 0 && i + 1 < argc) {
      char* end = nullptr;
      bulk = std::strtoull(argv[++i], &end, 10);
      if (!end || *end) {
        std::fprintf(stderr, "maildict-admin: --bulk needs a number\n");
        return 2;
      }
    } else {
      std::fprintf(stderr, "maildict-admin: unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  maildict::storage::BackendOptions options;
  options.database = path.starts_with("sqlite:") || path.starts_with("postgresql:") ? path : "sqlite:" + path;
  options.application_name = "maildict-admin";
  options.statement_timeout = std::chrono::minutes(10);  // a bulk insert is one long transaction
  auto backend = maildict::storage::open_backend(options);
  maildict::storage::create_demo_directory(*backend, bulk);
  std::printf("demo directory ready in %s%s\n", maildict::storage::describe_database(options.database).c_str(),
              bulk ? (" (with " + std::to_string(bulk) + " bulk users)").c_str() : "");
  return 0;
}

int hash(int argc, char** argv) {
  std::string scheme = "bcrypt";
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--scheme") == 0 && i + 1 < argc) scheme = argv[++i];
    else {
      std::fprintf(stderr, "maildict-admin: unknown argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (isatty(STDIN_FILENO)) std::fprintf(stderr, "Password: ");
  std::string password;
  if (!std::getline(std::cin, password) || password.empty()) {
    std::fprintf(stderr, "maildict-admin: no password given on stdin\n");
    return 1;
  }
  std::printf("%s\n", maildict::storage::hash_password(password, scheme).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string command = argv[1];
  try {
    if (command == "demo") return demo(argc - 2, argv + 2);
    if (command == "hash") return hash(argc - 2, argv + 2);
    if (command == "help" || command == "--help" || command == "-h") {
      usage(stdout);
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "maildict-admin: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "maildict-admin: unknown command '%s'\n", command.c_str());
  usage(stderr);
  return 2;
}
