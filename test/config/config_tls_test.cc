#include <string>

#include "source/config/config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crisp::config {
namespace {

using ::testing::HasSubstr;

constexpr char kMinimal[] = "cri:\n  listen: /tmp/crisp.sock\n";

std::string errorOf(const std::string& text) {
  absl::StatusOr<Config> config = loadString(text, "t.yaml");
  if (config.ok()) {
    return "<loaded>";
  }
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(config.status().message());
}

TEST(ConfigTlsTest, AbsentMeansPlainHttp) {
  absl::StatusOr<Config> c = loadString(kMinimal, "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->stream.tls.has_value());
}

TEST(ConfigTlsTest, ReadsEveryKey) {
  absl::StatusOr<Config> c = loadString(std::string(kMinimal) +
                                            "stream:\n"
                                            "  advertise: https://node.example:10350\n"
                                            "  tls:\n"
                                            "    cert_file: /etc/crisp/tls.crt\n"
                                            "    key_file: /etc/crisp/tls.key\n"
                                            "    client_ca_file: /etc/crisp/clients.crt\n",
                                        "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->stream.tls.has_value());
  EXPECT_EQ(c->stream.tls->cert_file, "/etc/crisp/tls.crt");
  EXPECT_EQ(c->stream.tls->key_file, "/etc/crisp/tls.key");
  EXPECT_EQ(c->stream.tls->client_ca_file, "/etc/crisp/clients.crt");
}

TEST(ConfigTlsTest, ClientCaIsOptional) {
  absl::StatusOr<Config> c = loadString(std::string(kMinimal) +
                                            "stream:\n"
                                            "  tls:\n"
                                            "    cert_file: /etc/crisp/tls.crt\n"
                                            "    key_file: /etc/crisp/tls.key\n",
                                        "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->stream.tls.has_value());
  EXPECT_EQ(c->stream.tls->client_ca_file, "");
}

TEST(ConfigTlsTest, ReportsFileLineAndKey) {
  const std::string head = std::string(kMinimal) + "stream:\n  tls:\n";
  EXPECT_EQ(errorOf(head),
            "t.yaml:4: stream.tls: expected a mapping with cert_file and key_file, "
            "got nothing");
  EXPECT_EQ(errorOf(head + "    cert_file: /a.crt\n"),
            "t.yaml:4: stream.tls.key_file: required key is missing");
  EXPECT_EQ(errorOf(head + "    key_file: /a.key\n"),
            "t.yaml:4: stream.tls.cert_file: required key is missing");
  EXPECT_EQ(errorOf(head + "    cert_file: a.crt\n    key_file: /a.key\n"),
            "t.yaml:5: stream.tls.cert_file: expected an absolute file path, got \"a.crt\"");
  EXPECT_EQ(
      errorOf(head + "    cert_file: /a.crt\n    key_file: /a.key\n    client_ca_file: \"\"\n"),
      "t.yaml:7: stream.tls.client_ca_file: expected an absolute file path, got \"\"");
  EXPECT_EQ(errorOf(head + "    cert_file: [/a.crt]\n    key_file: /a.key\n"),
            "t.yaml:5: stream.tls.cert_file: expected an absolute file path, got a list");
  EXPECT_THAT(errorOf(head + "    cert_file: /a.crt\n    key_file: /a.key\n    ca: /c\n"),
              HasSubstr("t.yaml:7: stream.tls.ca: unknown key (expected one of: cert_file, "
                        "key_file, client_ca_file)"));
  EXPECT_EQ(errorOf(head + "    cert_file: /a.crt\n    key_file: \"/a\\0.key\"\n"),
            "t.yaml:6: stream.tls.key_file: expected an absolute file path, got \"/a\\x00.key\"");
  EXPECT_EQ(errorOf(std::string(kMinimal) + "stream:\n  tls: /a.crt\n"),
            "t.yaml:4: stream.tls: expected a mapping, got a single value");
}

TEST(ConfigTlsTest, PlainHttpAdvertiseIsRefusedWithTls) {
  EXPECT_EQ(errorOf(std::string(kMinimal) + "stream:\n"
                                            "  advertise: http://node.example:10350\n"
                                            "  tls:\n"
                                            "    cert_file: /a.crt\n"
                                            "    key_file: /a.key\n"),
            "t.yaml:4: stream.advertise: an http:// URL, but stream.tls is set: clients must use "
            "https://");
}

}  // namespace
}  // namespace crisp::config
