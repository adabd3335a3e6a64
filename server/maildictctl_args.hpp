// maildictctl's command line, parsed into a typed command without touching files, terminals or
// databases, so every rule (which options a command takes, how many names, no password on
// argv) is unit-tested on its own.
#pragma once
#include <chrono>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "storage/directory_admin.hpp"

namespace maildict::ctl {

// Exit codes (documented in --help): sysexits-style where one fits.
enum ExitCode : int {
  exit_ok = 0,
  exit_usage = 1,        // bad command line or bad input (invalid name, password on argv, ...)
  exit_not_found = 2,    // the domain, user, alias or sender right does not exist
  exit_conflict = 3,     // it exists already, an alias loop, rows still depend on it, disabled domain
  exit_db_error = 4,     // the database refused permanently (schema missing, wrong kind of file)
  exit_tempfail = 75,    // EX_TEMPFAIL: database or maildictd unreachable, locked or timed out
  exit_config = 78,      // EX_CONFIG: the configuration file cannot be read or is invalid
};

int exit_code_for(storage::AdminStatus status);

inline constexpr const char* kDefaultConfig = "/etc/maildict/maildict.conf";
inline constexpr unsigned long kDefaultBcryptCost = 12;

struct Command {
  std::string config_path = kDefaultConfig;
  std::string object;  // domain, user, alias, sender, lookup, help, version
  std::string verb;    // add, list, show, ... (empty for lookup, help, version)
  std::vector<std::string> args;

  // options (each accepted only by the commands that use it)
  std::optional<std::string> alias_for;  // domain add --alias-for
  bool disabled = false;                 // domain add / user add --disabled
  bool force = false;                    // domain remove, user remove, alias add --force
  bool no_password = false;              // user add / passwd --no-password
  bool show_secrets = false;             // user show, lookup --show-secrets
  std::string scheme = "bcrypt";         // user add / passwd --scheme
  unsigned long cost = 0;                // --cost; 0: kDefaultBcryptCost for bcrypt, else the scheme's default
  storage::UserAttributes attributes;    // user add / set --quota --uid --gid --home --mail
  std::optional<std::chrono::milliseconds> timeout;  // --timeout

  // The cost to hash with: --cost, or the default for the scheme.
  unsigned long effective_cost() const;
};

struct ParseResult {
  std::optional<Command> command;  // set when the command line is valid
  std::string error;               // otherwise: one sentence, without the program name
};

// args: argv[1..] (without the program name).
ParseResult parse_args(std::span<const std::string> args);

// The full --help text (man-page style).
const char* help_text();

}  // namespace maildict::ctl
