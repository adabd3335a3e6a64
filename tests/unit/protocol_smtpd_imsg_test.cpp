// The imsg table codec, built from the captured transcripts in specs/smtpd-tables.md §3.6
// (smtpd 6.8.0p2 and 7.4.0p1, x86-64 little-endian), plus hostile input smtpd never sends.
#include <doctest/doctest.h>

#include <bit>
#include <cstring>
#include <string>

#include "protocol/smtpd_imsg.hpp"

using namespace maildict::smtpd;
using namespace maildict::smtpd::imsg;

namespace {

// Hex as the spec prints it: spaces and '|' separate groups and mean nothing.
std::string hex(std::string_view h) {
  std::string out;
  int high = -1;
  for (char c : h) {
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else continue;
    if (high < 0) {
      high = v;
    } else {
      out.push_back(static_cast<char>(high * 16 + v));
      high = -1;
    }
  }
  REQUIRE(high < 0);
  return out;
}

std::string le32(std::uint32_t v) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &v, 4);
  return s;
}
std::string le16(std::uint16_t v) {
  std::string s(2, '\0');
  std::memcpy(s.data(), &v, 2);
  return s;
}

// A message as smtpd frames it: type, total length, flags 0, peerid 0, pid 0x2eda.
std::string message(std::uint32_t type, std::string_view payload) {
  return le32(type) + le16(static_cast<std::uint16_t>(16 + payload.size())) + le16(0) + le32(0) +
         le32(0x2eda) + std::string(payload);
}

std::string query_payload(std::uint32_t service, std::string_view key_with_nul) {
  return le32(service) + std::string(8, '\0') + std::string(key_with_nul);
}

Request decoded(std::string_view bytes) {
  Decoder d;
  d.feed(bytes);
  auto r = d.next();
  if (auto* e = std::get_if<DecodeError>(&r)) FAIL("unexpected decode error: " << e->message);
  REQUIRE(std::holds_alternative<Request>(r));
  CHECK(d.buffered() == 0);
  return std::get<Request>(std::move(r));
}

Query decoded_query(std::string_view bytes) {
  Request r = decoded(bytes);
  REQUIRE(std::holds_alternative<Query>(r));
  return std::get<Query>(std::move(r));
}

std::string decode_error(std::string_view bytes) {
  Decoder d;
  d.feed(bytes);
  auto r = d.next();
  REQUIRE(std::holds_alternative<DecodeError>(r));
  // Sticky: nothing after a framing error can be trusted.
  d.feed(message(4, ""));
  CHECK(std::holds_alternative<DecodeError>(d.next()));
  return std::get<DecodeError>(r).message;
}

// Our replies carry pid 0; the captured ones carry the probe's pid. Compare all but the pid.
void check_reply(const std::string& ours, std::string_view captured_hex) {
  std::string want = hex(captured_hex);
  REQUIRE(ours.size() == want.size());
  CHECK(ours.substr(0, 12) == want.substr(0, 12));
  CHECK(ours.substr(16) == want.substr(16));
}

}  // namespace

TEST_CASE("the transcripts are little-endian, as the codec's host order here") {
  REQUIRE(std::endian::native == std::endian::little);
}

// ---- OPEN ---------------------------------------------------------------------------------------

TEST_CASE("OPEN: 2068 bytes, version 2, table name \"t\" NUL-padded to LINE_MAX") {
  std::string open = hex("02000000 1408 0000 00000000 da2e0000 | 02000000 74") + std::string(2047, '\0');
  REQUIRE(open.size() == 2068);
  CHECK(decoded(open) == Request{Open{"t"}});

  std::string reply;
  append_open_reply(reply, 0x2ee2);
  CHECK(reply == hex("00000000 1000 0000 00000000 e22e0000"));
}

TEST_CASE("OPEN: a short name field without padding is accepted") {
  CHECK(decoded(message(2, le32(2) + "users")) == Request{Open{"users"}});
  CHECK(decoded(message(2, le32(2))) == Request{Open{""}});
}

TEST_CASE("OPEN: another API version is refused") {
  CHECK(decode_error(message(2, le32(1) + "t")).find("version") != std::string::npos);
  CHECK(decode_error(message(2, le32(3) + "t")).find("version") != std::string::npos);
  CHECK(!decode_error(message(2, "\x02")).empty());
}

TEST_CASE("OPEN arriving in small pieces (one read is not one message)") {
  std::string open = hex("02000000 1408 0000 00000000 da2e0000 | 02000000 74") + std::string(2047, '\0');
  Decoder d;
  for (std::size_t i = 0; i < open.size(); i += 7) {
    CHECK(std::holds_alternative<Decoder::NeedMore>(d.next()));
    d.feed(std::string_view(open).substr(i, 7));
  }
  auto r = d.next();
  REQUIRE(std::holds_alternative<Request>(r));
  CHECK(std::get<Request>(r) == Request{Open{"t"}});
  CHECK(std::holds_alternative<Decoder::NeedMore>(d.next()));
}

// ---- LOOKUP / CHECK / FETCH from §3.6 -----------------------------------------------------------

TEST_CASE("LOOKUP ADDRNAME 127.0.0.1 -> probe.local") {
  auto q = decoded_query(hex("06000000 2600 0000 00000000 da2e0000 | 80000000 | 0000000000000000 | 3132372e302e302e3100"));
  CHECK(q.op == Operation::lookup);
  CHECK(q.service == Service::addrname);
  CHECK(q.service_id == 0x80);
  CHECK(q.params.empty());
  CHECK(q.key == "127.0.0.1");

  std::string reply;
  append_query_reply(reply, q.op, Answer::found("probe.local"));
  check_reply(reply, "00000000 2000 0000 00000000 e22e0000 | 01000000 | 70726f62652e6c6f63616c00");
}

TEST_CASE("CHECK NETADDR and CHECK DOMAIN -> 1, exactly four bytes") {
  auto q = decoded_query(hex("05000000 2600 0000 00000000 da2e0000 | 08000000 | 0000000000000000 | 3132372e302e302e3100"));
  CHECK(q.op == Operation::check);
  CHECK(q.service == Service::netaddr);
  CHECK(q.key == "127.0.0.1");

  q = decoded_query(hex("05000000 2800 0000 00000000 da2e0000 | 02000000 | 0000000000000000 | 6578616d706c652e6f726700"));
  CHECK(q.service == Service::domain);
  CHECK(q.key == "example.org");

  // A check never carries the value, even when the lookup behind it found one.
  std::string reply;
  append_query_reply(reply, Operation::check, Answer::found("example.org"));
  check_reply(reply, "00000000 1400 0000 00000000 e22e0000 | 01000000");
}

TEST_CASE("LOOKUP ALIAS: found, not found, temporary failure") {
  auto q = decoded_query(hex("06000000 2c00 0000 00000000 da2e0000 | 01000000 | 0000000000000000 | 626f62406578616d706c652e6f726700"));
  CHECK(q.service == Service::alias);
  CHECK(q.key == "bob@example.org");

  std::string reply;
  append_query_reply(reply, Operation::lookup, Answer::found("vmail"));
  check_reply(reply, "00000000 1a00 0000 00000000 e22e0000 | 01000000 | 766d61696c00");

  reply.clear();
  append_query_reply(reply, Operation::lookup, Answer::not_found());
  check_reply(reply, "00000000 1400 0000 00000000 e22e0000 | 00000000");

  reply.clear();
  append_query_reply(reply, Operation::lookup, Answer::temp_fail("backend unavailable"));
  check_reply(reply, "00000000 1400 0000 00000000 2a390000 | ffffffff");
}

TEST_CASE("LOOKUP USERINFO vmail") {
  auto q = decoded_query(hex("06000000 2200 0000 00000000 da2e0000 | 10000000 | 0000000000000000 | 766d61696c00"));
  CHECK(q.service == Service::userinfo);
  CHECK(q.key == "vmail");
  std::string reply;
  append_lookup_reply(reply, Answer::found("65534:65534:/tmp/smtpdprobe/home/vmail"));
  CHECK(reply.size() == 0x3b);
  CHECK(reply.substr(16) == le32(1) + std::string("65534:65534:/tmp/smtpdprobe/home/vmail") + '\0');
}

TEST_CASE("FETCH SOURCE: 28 bytes, no key") {
  auto q = decoded_query(hex("07000000 1c00 0000 00000000 25390000 | 20000000 | 0000000000000000"));
  CHECK(q.op == Operation::fetch);
  CHECK(q.service == Service::source);
  CHECK(q.key.empty());
  std::string reply;
  append_query_reply(reply, q.op, Answer::found("127.0.0.1"));
  CHECK(reply.size() == 0x1e);
  CHECK(reply.substr(16) == le32(1) + std::string("127.0.0.1") + '\0');

  reply.clear();
  append_query_reply(reply, q.op, Answer::not_found());  // an empty list
  CHECK(reply.substr(16) == le32(0));
}

TEST_CASE("LOOKUP CREDENTIALS: relay label and listener AUTH") {
  auto q = decoded_query(hex("06000000 2400 0000 00000000 da2e0000 | 04000000 | 0000000000000000 | 6d796c6162656c00"));
  CHECK(q.service == Service::credentials);
  CHECK(q.key == "mylabel");
  std::string reply;
  append_lookup_reply(reply, Answer::found("remoteuser:remotepass"));
  CHECK(reply.size() == 0x2a);

  q = decoded_query(hex("06000000 2c00 0000 00000000 da2e0000 | 04000000 | 0000000000000000 | 626f62406578616d706c652e6f726700"));
  CHECK(q.key == "bob@example.org");
}

TEST_CASE("MAILADDRMAP lookup and MAILADDR check") {
  auto q = decoded_query(message(6, query_payload(0x100, std::string("bob@example.org") + '\0')));
  CHECK(q.service == Service::mailaddrmap);
  std::string reply;
  append_lookup_reply(reply, Answer::found("bob@example.org, alias@example.org"));
  CHECK(reply.substr(16) == le32(1) + std::string("bob@example.org, alias@example.org") + '\0');

  q = decoded_query(message(5, query_payload(0x40, std::string("bob@example.org") + '\0')));
  CHECK(q.op == Operation::check);
  CHECK(q.service == Service::mailaddr);
}

TEST_CASE("UPDATE and CLOSE") {
  CHECK(decoded(hex("04000000 1000 0000 00000000 25390000")) == Request{Update{}});
  std::string reply;
  append_update_reply(reply, true, 0x392a);
  CHECK(reply == hex("00000000 1400 0000 00000000 2a390000 | 01000000"));
  reply.clear();
  append_update_reply(reply, false);
  CHECK(reply.substr(16) == le32(0));

  CHECK(decoded(message(3, "")) == Request{Close{}});
}

TEST_CASE("several messages in one read come out one by one") {
  std::string stream = message(6, query_payload(1, std::string("a@b") + '\0')) +
                       message(5, query_payload(2, std::string("b") + '\0')) + message(4, "");
  Decoder d;
  d.feed(stream.substr(0, 20));
  d.feed(stream.substr(20));
  auto r1 = d.next();
  auto r2 = d.next();
  auto r3 = d.next();
  REQUIRE(std::holds_alternative<Request>(r1));
  REQUIRE(std::holds_alternative<Request>(r2));
  REQUIRE(std::holds_alternative<Request>(r3));
  CHECK(std::get<Query>(std::get<Request>(r1)).key == "a@b");
  CHECK(std::get<Query>(std::get<Request>(r2)).service == Service::domain);
  CHECK(std::get<Request>(r3) == Request{Update{}});
  CHECK(std::holds_alternative<Decoder::NeedMore>(d.next()));
}

TEST_CASE("params, never sent by smtpd, are read and skipped") {
  std::string payload = le32(1);
  const std::size_t count = 2;
  payload.append(reinterpret_cast<const char*>(&count), 8);
  payload += std::string("k1\0v1\0k2\0\0key\0", 14);
  auto q = decoded_query(message(6, payload));
  REQUIRE(q.params.size() == 2);
  CHECK(q.params[0] == std::pair<std::string, std::string>{"k1", "v1"});
  CHECK(q.params[1] == std::pair<std::string, std::string>{"k2", ""});
  CHECK(q.key == "key");
}

// ---- hostile input --------------------------------------------------------------------------------

TEST_CASE("bad imsg length: below the header, above MAX_IMSGSIZE") {
  std::string m = message(6, query_payload(1, std::string("x") + '\0'));
  m[4] = 15;
  m[5] = 0;
  CHECK(decode_error(m).find("length") != std::string::npos);
  // Known from the header alone: the decoder must not wait for 20000 bytes that never come.
  std::string big = le32(6) + le16(20000) + le16(0) + le32(0) + le32(0);
  CHECK(decode_error(big).find("length") != std::string::npos);
  std::string zero = le32(2) + le16(0) + le16(0) + le32(0) + le32(0);
  CHECK(!decode_error(zero).empty());
}

TEST_CASE("a truncated header or payload waits for more, and EOF then leaves bytes behind") {
  Decoder d;
  d.feed(std::string_view("\x06\x00\x00\x00\x26", 5));
  CHECK(std::holds_alternative<Decoder::NeedMore>(d.next()));
  CHECK(d.buffered() == 5);
  std::string m = message(6, query_payload(1, std::string("x") + '\0'));
  Decoder d2;
  d2.feed(std::string_view(m).substr(0, m.size() - 1));
  CHECK(std::holds_alternative<Decoder::NeedMore>(d2.next()));
  CHECK(d2.buffered() == m.size() - 1);

  CHECK(!std::get<DecodeError>(decode_message(std::string_view(m).substr(0, 10))).message.empty());
}

TEST_CASE("unknown type, and the reply types smtpd never sends") {
  CHECK(decode_error(message(8, "")).find("type") != std::string::npos);
  CHECK(decode_error(message(0xffffffff, "")).find("type") != std::string::npos);
  CHECK(decode_error(message(0, "")).find("type") != std::string::npos);
  CHECK(decode_error(message(1, "")).find("type") != std::string::npos);
}

TEST_CASE("malformed query payloads") {
  CHECK(!decode_error(message(6, le32(1))).empty());                                    // no count
  CHECK(!decode_error(message(6, query_payload(1, "no-nul"))).empty());                 // key without NUL
  CHECK(!decode_error(message(6, query_payload(1, ""))).empty());                       // no key at all
  CHECK(!decode_error(message(6, query_payload(1, std::string("a\0b\0", 4)))).empty()); // NUL in key
  CHECK(!decode_error(message(7, query_payload(0x20, std::string("x\0", 2)))).empty()); // fetch with bytes
  std::string huge_count = le32(1) + std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "k" + '\0';
  CHECK(decode_error(message(6, huge_count)).find("count") != std::string::npos);
  std::string odd_param = le32(1) + std::string("\x01\0\0\0\0\0\0\0", 8) + std::string("k\0", 2);
  CHECK(!decode_error(message(6, odd_param)).empty());
}

TEST_CASE("an unknown service id decodes, for a -1 answer rather than an exit") {
  auto q = decoded_query(message(6, query_payload(0x3, std::string("x") + '\0')));
  CHECK(q.service_id == 3);
  CHECK(!q.service.has_value());
  q = decoded_query(message(6, query_payload(0x1000, std::string("x") + '\0')));
  CHECK(q.service == Service::auth);
}

TEST_CASE("a key of 1024 bytes or more decodes but is flagged") {
  auto q = decoded_query(message(6, query_payload(1, std::string(1023, 'a') + '\0')));
  CHECK(!key_problem(q.key));
  q = decoded_query(message(6, query_payload(1, std::string(1024, 'a') + '\0')));
  CHECK(key_problem(q.key));
  q = decoded_query(message(6, query_payload(1, std::string(16384 - 16 - 12 - 1, 'a') + '\0')));
  CHECK(key_problem(q.key));
}

TEST_CASE("found values that cannot be sent become -1, never a malformed reply") {
  for (const std::string& bad : {std::string(), std::string("a\0b", 3), std::string("a\nb"),
                                 std::string(max_value_length + 1, 'v')}) {
    std::string reply;
    append_lookup_reply(reply, Answer::found(bad));
    CHECK(reply.size() == 20);
    CHECK(reply.substr(16) == le32(0xffffffff));
  }
  std::string reply;
  append_lookup_reply(reply, Answer::found(std::string(max_value_length, 'v')));
  CHECK(reply.size() == max_message_size);
  std::uint16_t len;
  std::memcpy(&len, reply.data() + 4, 2);
  CHECK(len == max_message_size);
}
