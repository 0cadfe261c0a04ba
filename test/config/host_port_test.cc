#include "source/config/host_port.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crisp::config {
namespace {

using ::testing::HasSubstr;

TEST(HostPortTest, ParsesIpv4) {
  absl::StatusOr<HostPort> a = parseHostPort("127.0.0.1:10350");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 10350);
  EXPECT_EQ(a->kind, HostKind::kIpv4);
  EXPECT_TRUE(a->isIp());
  EXPECT_EQ(a->toString(), "127.0.0.1:10350");
}

TEST(HostPortTest, ParsesBracketedIpv6) {
  absl::StatusOr<HostPort> a = parseHostPort("[::1]:0");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "::1");
  EXPECT_EQ(a->port, 0);
  EXPECT_EQ(a->kind, HostKind::kIpv6);
  EXPECT_EQ(a->toString(), "[::1]:0");

  absl::StatusOr<HostPort> b = parseHostPort("[2001:db8::10]:65535");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->host, "2001:db8::10");
  EXPECT_EQ(b->port, 65535);
}

TEST(HostPortTest, ParsesHostNames) {
  absl::StatusOr<HostPort> a = parseHostPort("node-1.example:443");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "node-1.example");
  EXPECT_EQ(a->kind, HostKind::kName);
  EXPECT_FALSE(a->isIp());
  EXPECT_TRUE(parseHostPort("localhost:1").ok());
}

TEST(HostPortTest, RejectsMalformedAddresses) {
  struct Case {
    const char* text;
    const char* reason;
  };
  const Case cases[] = {
      {"", "missing ':port'"},
      {"abc", "missing ':port'"},
      {":80", "missing host"},
      {"127.0.0.1:", "port must be a number from 0 to 65535, got \"\""},
      {"127.0.0.1:65536", "port must be a number from 0 to 65535, got \"65536\""},
      {"127.0.0.1:-1", "port must be a number from 0 to 65535, got \"-1\""},
      {"127.0.0.1:+80", "port must be a number from 0 to 65535, got \"+80\""},
      {"127.0.0.1:0x50", "port must be a number from 0 to 65535, got \"0x50\""},
      {"127.0.0.1:123456", "port must be a number from 0 to 65535, got \"123456\""},
      {"::1:80", "an IPv6 address must be written in brackets"},
      {"[::1]", "expected ':port' after ']'"},
      {"[::1]80", "expected ':port' after ']'"},
      {"[::1:80", "missing ']'"},
      {"[127.0.0.1]:80", "\"127.0.0.1\" is not an IPv6 address"},
      {"[fe80::1%eth0]:80", "is not an IPv6 address"},
      {"256.1.1.1:80", "\"256.1.1.1\" is not an IPv4 address"},
      {"1.2.3:80", "\"1.2.3\" is not an IPv4 address"},
      {"bad_name:80", "neither an IP address nor a host name"},
      {"-bad.example:80", "neither an IP address nor a host name"},
      {"a..b:80", "neither an IP address nor a host name"},
      {"host name:80", "neither an IP address nor a host name"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<HostPort> a = parseHostPort(c.text);
    ASSERT_FALSE(a.ok()) << c.text;
    EXPECT_EQ(a.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(a.status().message()), HasSubstr(c.reason)) << c.text;
  }
}

TEST(DialableAddressTest, UnspecifiedBecomesLoopbackOfTheSameFamily) {
  const auto dialable = [](std::string_view text) {
    return dialableAddress(*parseHostPort(text)).toString();
  };
  EXPECT_EQ(dialable("0.0.0.0:10350"), "127.0.0.1:10350");
  EXPECT_EQ(dialable("[::]:10350"), "[::1]:10350");
  EXPECT_EQ(dialable("[0:0::0]:443"), "[::1]:443");
  EXPECT_EQ(dialable("[::1]:80"), "[::1]:80");
  EXPECT_EQ(dialable("[2001:db8::7]:80"), "[2001:db8::7]:80");
  EXPECT_EQ(dialable("10.1.2.3:80"), "10.1.2.3:80");
  EXPECT_EQ(dialable("node.example:80"), "node.example:80");
}

}  // namespace
}  // namespace crisp::config
