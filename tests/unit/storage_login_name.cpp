#include <doctest/doctest.h>

#include <string>

#include "storage/login_name.hpp"

using maildict::storage::expand_template;
using maildict::storage::MailboxName;
using maildict::storage::split_login;

namespace {

void check_split(std::string_view login, const char* local, const char* domain) {
  CAPTURE(login);
  auto n = split_login(login);
  REQUIRE(n.has_value());
  CHECK(n->local_part == local);
  CHECK(n->domain == domain);
}

}  // namespace

TEST_CASE("split_login: both spellings reach the same name") {
  check_split("john@example.org", "john", "example.org");
  check_split("john_example.org", "john", "example.org");
  CHECK(split_login("john@example.org")->canonical() == "john@example.org");
  CHECK(split_login("john_example.org")->canonical() == "john@example.org");
}

TEST_CASE("split_login: '_' spelling splits at the last underscore") {
  check_split("john_doe_example.org", "john_doe", "example.org");
  check_split("a_b_c_example.org", "a_b_c", "example.org");
}

TEST_CASE("split_login: '@' wins over '_' and the last '@' splits") {
  check_split("john_doe@example.org", "john_doe", "example.org");
  check_split("x@y@example.org", "x@y", "example.org");
  // A domain never holds '_'; such a name is passed on as is and simply matches no row.
  check_split("a@b_c", "a", "b_c");
}

TEST_CASE("split_login: lower-cases ASCII only") {
  check_split("John@Example.ORG", "john", "example.org");
  check_split("JOHN_DOE_EXAMPLE.ORG", "john_doe", "example.org");
  // UTF-8 bytes pass through untouched.
  check_split("J\xC3\x89R\xC3\x94ME@example.org", "j\xC3\x89r\xC3\x94me", "example.org");
}

TEST_CASE("split_login: empty parts are rejected") {
  for (std::string_view bad : {"", "john", "@", "_", "@example.org", "john@", "_example.org", "john_",
                               "john@example.org@"}) {
    CAPTURE(bad);
    CHECK_FALSE(split_login(bad).has_value());
  }
}

TEST_CASE("split_login: NUL, '/', whitespace and control characters are rejected") {
  using namespace std::string_view_literals;
  for (std::string_view bad : {"john\0@example.org"sv, "john@example.org\0"sv, "jo hn@example.org"sv,
                               "john@example.org\n"sv, "john\t@example.org"sv, "../etc@example.org"sv,
                               "john@exa/mple.org"sv, "john\x7f@example.org"sv, "john\r_example.org"sv}) {
    CAPTURE(bad);
    CHECK_FALSE(split_login(bad).has_value());
  }
}

TEST_CASE("expand_template") {
  MailboxName n{"john", "example.org"};
  CHECK(expand_template("/var/vmail/%d/%n", n) == "/var/vmail/example.org/john");
  CHECK(expand_template("/home/%u/", n) == "/home/john@example.org/");
  CHECK(expand_template("100%%", n) == "100%");
  CHECK(expand_template("%%n", n) == "%n");
  CHECK(expand_template("a%xb", n) == "a%xb");
  CHECK(expand_template("end%", n) == "end%");
  CHECK(expand_template("", n) == "");
  CHECK(expand_template("maildir:~/Maildir", n) == "maildir:~/Maildir");
}
