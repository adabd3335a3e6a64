// The dict key namespace (DESIGN.md §4).
#include <doctest/doctest.h>

#include <string>

#include "protocol/dict_keys.hpp"

using namespace maildict::dict;

TEST_CASE("passdb keys: the login, lower-cased") {
  auto q = classify_lookup_key("shared/passdb/john@example.org");
  REQUIRE(std::holds_alternative<PassdbQuestion>(q));
  CHECK(std::get<PassdbQuestion>(q).login == "john@example.org");

  q = classify_lookup_key("shared/passdb/John.Doe@Example.ORG");
  REQUIRE(std::holds_alternative<PassdbQuestion>(q));
  CHECK(std::get<PassdbQuestion>(q).login == "john.doe@example.org");

  q = classify_lookup_key("shared/passdb/john_doe_example.org");
  REQUIRE(std::holds_alternative<PassdbQuestion>(q));
  CHECK(std::get<PassdbQuestion>(q).login == "john_doe_example.org");
}

TEST_CASE("logins: only ASCII is lower-cased") {
  auto q = classify_lookup_key("shared/userdb/J\xc3\x89R\xc3\x94ME@EXAMPLE.ORG");
  REQUIRE(std::holds_alternative<UserdbQuestion>(q));
  CHECK(std::get<UserdbQuestion>(q).login == "j\xc3\x89r\xc3\x94me@example.org");
}

TEST_CASE("userdb keys") {
  auto q = classify_lookup_key("shared/userdb/jane@example.org");
  REQUIRE(std::holds_alternative<UserdbQuestion>(q));
  CHECK(std::get<UserdbQuestion>(q).login == "jane@example.org");
}

TEST_CASE("passdb/userdb: empty login or a deeper key is unmapped") {
  CHECK(std::holds_alternative<UnmappedKey>(classify_lookup_key("shared/passdb/")));
  CHECK(std::holds_alternative<UnmappedKey>(classify_lookup_key("shared/userdb/")));
  // Debian's sample config keeps the quota under the user: userdb/%u/quota.
  CHECK(std::holds_alternative<UnmappedKey>(
      classify_lookup_key("shared/userdb/john@example.org/quota")));
  CHECK(std::holds_alternative<UnmappedKey>(classify_lookup_key("shared/passdb/a/")));
  CHECK(std::holds_alternative<UnmappedKey>(classify_lookup_key("shared/passdb")));
  CHECK(std::holds_alternative<UnmappedKey>(classify_lookup_key("shared/userdb")));
}

TEST_CASE("smtpd keys: service and key, the key may hold '/' or be empty") {
  auto q = classify_lookup_key("shared/smtpd/alias/postmaster@example.org");
  REQUIRE(std::holds_alternative<SmtpdQuestion>(q));
  CHECK(std::get<SmtpdQuestion>(q).service == "alias");
  CHECK(std::get<SmtpdQuestion>(q).key == "postmaster@example.org");

  q = classify_lookup_key("shared/smtpd/netaddr/192.0.2.0/24");
  REQUIRE(std::holds_alternative<SmtpdQuestion>(q));
  CHECK(std::get<SmtpdQuestion>(q).service == "netaddr");
  CHECK(std::get<SmtpdQuestion>(q).key == "192.0.2.0/24");

  q = classify_lookup_key("shared/smtpd/mailaddrmap/");
  REQUIRE(std::holds_alternative<SmtpdQuestion>(q));
  CHECK(std::get<SmtpdQuestion>(q).service == "mailaddrmap");
  CHECK(std::get<SmtpdQuestion>(q).key == "");

  // smtpd keys are not lower-cased here: the service decides what a key means.
  q = classify_lookup_key("shared/smtpd/credentials/John@Example.org");
  REQUIRE(std::holds_alternative<SmtpdQuestion>(q));
  CHECK(std::get<SmtpdQuestion>(q).key == "John@Example.org");
}

TEST_CASE("smtpd keys without a service are unmapped") {
  CHECK(std::holds_alternative<UnmappedKey>(classify_lookup_key("shared/smtpd/alias")));
  CHECK(std::holds_alternative<UnmappedKey>(classify_lookup_key("shared/smtpd//x")));
  CHECK(std::holds_alternative<UnmappedKey>(classify_lookup_key("shared/smtpd/")));
  CHECK(std::holds_alternative<UnmappedKey>(classify_lookup_key("shared/smtpd")));
}

TEST_CASE("everything else is unmapped") {
  for (const char* key : {"", "shared/", "priv/quota/storage", "priv/passdb/john@example.org",
                          "shared/unmapped/key", "shared/quota/example.org/john",
                          "Shared/passdb/john@example.org", "shared/PASSDB/john@example.org",
                          "passdb/john@example.org", "/shared/passdb/x", "shared/passdbx/john"}) {
    CAPTURE(key);
    CHECK(std::holds_alternative<UnmappedKey>(classify_lookup_key(key)));
  }
}

TEST_CASE("iterate paths") {
  CHECK(classify_iterate_path("shared/userdb/") == IteratePath::userdb);
  CHECK(classify_iterate_path("shared/userdb") == IteratePath::userdb);
  CHECK(classify_iterate_path(userdb_prefix) == IteratePath::userdb);
  CHECK(classify_iterate_path("shared/nothing/") == IteratePath::unmapped);
  CHECK(classify_iterate_path("shared/userdb/john@example.org") == IteratePath::unmapped);
  CHECK(classify_iterate_path("shared/userdb//") == IteratePath::unmapped);
  CHECK(classify_iterate_path("shared/passdb/") == IteratePath::unmapped);
  CHECK(classify_iterate_path("priv/userdb/") == IteratePath::unmapped);
  CHECK(classify_iterate_path("") == IteratePath::unmapped);
  CHECK(classify_iterate_path("shared/") == IteratePath::unmapped);
}
