// maildictctl's command line: which commands and options exist, how many names each takes, and
// above all that a password is never accepted from argv.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "server/maildictctl_args.hpp"

using namespace maildict::ctl;
using maildict::storage::Change;

namespace {

ParseResult parse(std::vector<std::string> args) { return parse_args(args); }

Command ok(std::vector<std::string> args) {
  auto r = parse(args);
  INFO(r.error);
  REQUIRE(r.command);
  return *r.command;
}

std::string refused(std::vector<std::string> args) {
  auto r = parse(args);
  CHECK_FALSE(r.command);
  CHECK_FALSE(r.error.empty());
  return r.error;
}

bool mentions(const std::string& text, const std::string& word) { return text.find(word) != std::string::npos; }

}  // namespace

TEST_CASE("maildictctl args: commands, names and the config file") {
  auto c = ok({"domain", "add", "example.org"});
  CHECK(c.object == "domain");
  CHECK(c.verb == "add");
  CHECK(c.args == std::vector<std::string>{"example.org"});
  CHECK(c.config_path == "/etc/maildict/maildict.conf");

  c = ok({"-c", "/tmp/x.conf", "user", "list"});
  CHECK(c.config_path == "/tmp/x.conf");
  CHECK(c.args.empty());
  // options anywhere, --opt=value too
  c = ok({"user", "list", "example.org", "--config=/tmp/y.conf"});
  CHECK(c.config_path == "/tmp/y.conf");
  CHECK(c.args == std::vector<std::string>{"example.org"});

  c = ok({"alias", "add", "@example.org", "a@example.org", "b@example.net", "--force"});
  CHECK(c.args.size() == 3);
  CHECK(c.force);
  c = ok({"lookup", "john@example.org", "example.org", "--show-secrets", "--timeout", "500ms"});
  CHECK(c.verb.empty());
  CHECK(c.args.size() == 2);
  CHECK(c.show_secrets);
  REQUIRE(c.timeout);
  CHECK(c.timeout->count() == 500);
  c = ok({"domain", "add", "example.com", "--alias-for", "example.org", "--disabled"});
  CHECK(c.alias_for == "example.org");
  CHECK(c.disabled);
  // "--" ends the options
  c = ok({"alias", "remove", "--", "a@example.org"});
  CHECK(c.args == std::vector<std::string>{"a@example.org"});

  CHECK(ok({"--help"}).object == "help");
  CHECK(ok({"user", "add", "-h"}).object == "help");
  CHECK(ok({"help"}).object == "help");
  CHECK(ok({"--version"}).object == "version");
}

TEST_CASE("maildictctl args: a password on argv is refused, whatever the spelling") {
  for (auto args : std::vector<std::vector<std::string>>{
           {"user", "add", "john@example.org", "secret"},
           {"user", "passwd", "john@example.org", "new-secret"},
           {"user", "add", "john@example.org", "--password", "secret"},
           {"user", "add", "john@example.org", "--password=secret"},
           {"user", "passwd", "john@example.org", "-p", "secret"},
           {"user", "passwd", "john@example.org", "-psecret"},
           {"user", "add", "john@example.org", "--pass=secret"},
           {"user", "add", "john@example.org", "--hash", "$2b$12$abc"},
           {"domain", "list", "--password=x"},
       }) {
    INFO(args.back());
    auto why = refused(args);
    CHECK(mentions(why, "password on the command line"));
    // the refusal never repeats the secret
    CHECK_FALSE(mentions(why, "secret"));
  }
  // an unknown option's value is not echoed either
  auto why = refused({"user", "add", "john@example.org", "--pasword=hunter2"});
  CHECK(mentions(why, "--pasword"));
  CHECK_FALSE(mentions(why, "hunter2"));
}

TEST_CASE("maildictctl args: hashing and user attributes") {
  auto c = ok({"user", "add", "john@example.org"});
  CHECK(c.scheme == "bcrypt");
  CHECK(c.effective_cost() == 12);
  c = ok({"user", "add", "john@example.org", "--cost", "4"});
  CHECK(c.effective_cost() == 4);
  c = ok({"user", "passwd", "john@example.org", "--scheme", "SHA512-CRYPT"});
  CHECK(c.scheme == "sha512-crypt");
  CHECK(c.effective_cost() == 0);  // libxcrypt's default rounds
  c = ok({"user", "add", "john@example.org", "--scheme=yescrypt", "--cost=7"});
  CHECK(c.effective_cost() == 7);
  CHECK(ok({"user", "add", "nopw@example.org", "--no-password"}).no_password);

  c = ok({"user", "add", "john@example.org", "--quota", "2G", "--uid", "2000", "--gid", "2000", "--home", "/srv/j",
          "--mail", "maildir:~/Maildir"});
  CHECK(c.attributes.quota_bytes.kind == Change<std::int64_t>::Kind::set);
  CHECK(c.attributes.quota_bytes.value == 2ll << 30);
  CHECK(c.attributes.uid.value == "2000");
  CHECK(c.attributes.home.value == "/srv/j");
  c = ok({"user", "set", "john@example.org", "--quota", "none", "--home", "default"});
  CHECK(c.attributes.quota_bytes.kind == Change<std::int64_t>::Kind::reset);
  CHECK(c.attributes.home.kind == Change<std::string>::Kind::reset);
  CHECK(c.attributes.uid.kind == Change<std::string>::Kind::keep);

  CHECK(mentions(refused({"user", "add", "j@example.org", "--scheme", "md5"}), "unknown scheme"));
  CHECK(mentions(refused({"user", "add", "j@example.org", "--cost", "3"}), "out of range"));
  CHECK(mentions(refused({"user", "add", "j@example.org", "--scheme", "yescrypt", "--cost", "12"}), "out of range"));
  CHECK(mentions(refused({"user", "add", "j@example.org", "--cost", "x"}), "--cost"));
  CHECK(mentions(refused({"user", "add", "j@example.org", "--no-password", "--scheme", "bcrypt"}), "--no-password"));
  CHECK(mentions(refused({"user", "add", "j@example.org", "--quota", "lots"}), "--quota"));
  CHECK(mentions(refused({"user", "set", "j@example.org"}), "at least one"));
}

TEST_CASE("maildictctl args: wrong commands, counts and options") {
  CHECK(mentions(refused({}), "no command"));
  CHECK(mentions(refused({"frobnicate"}), "unknown command"));
  CHECK(mentions(refused({"domain"}), "needs a subcommand"));
  CHECK(mentions(refused({"domain", "explode", "x"}), "unknown subcommand"));
  CHECK(mentions(refused({"domain", "add"}), "missing argument"));
  CHECK(mentions(refused({"domain", "add", "a.org", "b.org"}), "too many"));
  CHECK(mentions(refused({"alias", "add", "a@example.org"}), "missing argument"));
  CHECK(mentions(refused({"lookup"}), "missing argument"));
  CHECK(mentions(refused({"domain", "list", "--force"}), "does not apply"));
  CHECK(mentions(refused({"user", "disable", "j@example.org", "--quota", "1G"}), "does not apply"));
  CHECK(mentions(refused({"domain", "remove", "a.org", "--force", "--force"}), "twice"));
  CHECK(mentions(refused({"domain", "add", "a.org", "--alias-for"}), "needs a value"));
  CHECK(mentions(refused({"domain", "remove", "a.org", "--force=yes"}), "takes no value"));
  CHECK(mentions(refused({"-c"}), "file name"));
  CHECK(mentions(refused({"user", "list", "--timeout", "soon"}), "--timeout"));
}

TEST_CASE("maildictctl args: exit codes and the help text") {
  using maildict::storage::AdminStatus;
  CHECK(exit_code_for(AdminStatus::ok) == 0);
  CHECK(exit_code_for(AdminStatus::bad_input) == 1);
  CHECK(exit_code_for(AdminStatus::not_found) == 2);
  CHECK(exit_code_for(AdminStatus::conflict) == 3);
  CHECK(exit_code_for(AdminStatus::db_error) == 4);
  CHECK(exit_code_for(AdminStatus::temp_fail) == 75);
  std::string help = help_text();
  for (const char* word : {"domain add", "user passwd", "alias add", "sender add", "lookup KEY", "EXIT STATUS", "75",
                           "--show-secrets", "--cost", "catch-all"})
    CHECK(mentions(help, word));
}
