#include "source/config/config.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_split.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace crisp::config {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kMinimal[] = "cri:\n  listen: /tmp/crisp.sock\n";

// The message of a failed load, or a marker that it loaded.
std::string errorOf(const std::string& text) {
  absl::StatusOr<Config> config = loadString(text, "t.yaml");
  if (config.ok()) {
    return "<loaded>";
  }
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(config.status().message());
}

// The minimal valid file with `extra` appended.
std::string withMinimal(const std::string& extra) { return std::string(kMinimal) + extra; }

TEST(ConfigTest, MinimalFileTakesEveryDefault) {
  absl::StatusOr<Config> c = loadString(kMinimal, "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source, "t.yaml");
  EXPECT_EQ(c->cri.listen, "/tmp/crisp.sock");
  EXPECT_FALSE(c->cri.upstream.has_value());
  EXPECT_EQ(c->cri.socket_mode, 0660u);
  EXPECT_EQ(c->stream.listen.toString(), "127.0.0.1:10350");
  EXPECT_EQ(c->stream.advertise, "");
  EXPECT_EQ(c->stream.workers, 1u);
  EXPECT_EQ(c->stream.stream_creation_timeout, seconds(30));
  EXPECT_EQ(c->stream.stream_idle_timeout, hours(4));
  EXPECT_EQ(c->stream.max_header_bytes, 16384u);
  EXPECT_EQ(c->stream.header_timeout, seconds(10));
  EXPECT_EQ(c->stream.max_sessions, 10000u);
  EXPECT_EQ(c->cache.ttl, minutes(1));
  EXPECT_EQ(c->cache.shards, 16u);
  EXPECT_EQ(c->cache.max_in_flight, 1000u);
  EXPECT_FALSE(c->admin.listen.has_value());
  EXPECT_EQ(c->log.level, "info");
  EXPECT_TRUE(c->runtime.embedded.containers.empty());
}

TEST(ConfigTest, EmptySectionsTakeDefaults) {
  absl::StatusOr<Config> c =
      loadString(withMinimal("stream:\ncache:\nadmin:\nlog:\nruntime:\n"), "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cache.shards, 16u);
  EXPECT_FALSE(c->admin.listen.has_value());
}

TEST(ConfigTest, ReadsEveryKey) {
  const std::string text = R"(cri:
  listen: /run/crisp/crisp.sock
  upstream: /run/containerd/containerd.sock
  socket_mode: "0600"
stream:
  listen: "[::1]:0"
  advertise: https://node.example:8443/cri/
  workers: 4
  stream_creation_timeout: 500ms
  stream_idle_timeout: 1h30m
  max_header_bytes: 1024
  header_timeout: 2s
  max_sessions: 7
cache:
  ttl: 45s
  shards: 1024
  max_in_flight: 1
admin:
  listen: 0.0.0.0:9000
log:
  level: trace
)";
  absl::StatusOr<Config> c = loadString(text, "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cri.listen, "/run/crisp/crisp.sock");
  EXPECT_EQ(c->cri.upstream, "/run/containerd/containerd.sock");
  EXPECT_EQ(c->cri.socket_mode, 0600u);
  EXPECT_EQ(c->stream.listen.host, "::1");
  EXPECT_EQ(c->stream.listen.port, 0);
  EXPECT_EQ(c->stream.listen.kind, HostKind::kIpv6);
  EXPECT_EQ(c->stream.advertise, "https://node.example:8443/cri/");
  EXPECT_EQ(c->stream.workers, 4u);
  EXPECT_EQ(c->stream.stream_creation_timeout, milliseconds(500));
  EXPECT_EQ(c->stream.stream_idle_timeout, minutes(90));
  EXPECT_EQ(c->stream.max_header_bytes, 1024u);
  EXPECT_EQ(c->stream.header_timeout, seconds(2));
  EXPECT_EQ(c->stream.max_sessions, 7u);
  EXPECT_EQ(c->cache.ttl, seconds(45));
  EXPECT_EQ(c->cache.shards, 1024u);
  EXPECT_EQ(c->cache.max_in_flight, 1u);
  ASSERT_TRUE(c->admin.listen.has_value());
  EXPECT_EQ(c->admin.listen->toString(), "0.0.0.0:9000");
  EXPECT_EQ(c->log.level, "trace");
}

TEST(ConfigTest, ReadsEmbeddedContainers) {
  const std::string text = withMinimal(R"(runtime:
  embedded:
    containers:
      - id: demo
        command: ["/bin/sh", "-l"]
      - id: web_1.a-b
        name: Web
        command:
          - /usr/bin/env
        working_dir: /srv
        env: ["A=1", "B=", "C=x=y"]
        user: root
        tty: true
        stdin: True
        image: busybox
        network_namespace: /run/netns/web
      - id: numeric
        command: [/bin/true]
        user: "4242"
        tty: false
)");
  absl::StatusOr<Config> c = loadString(text, "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  const auto& containers = c->runtime.embedded.containers;
  ASSERT_EQ(containers.size(), 3u);
  EXPECT_EQ(containers[0].id, "demo");
  EXPECT_EQ(containers[0].name, "demo");  // defaults to the id
  EXPECT_EQ(containers[0].command, (std::vector<std::string>{"/bin/sh", "-l"}));
  EXPECT_EQ(containers[0].working_dir, "/");
  EXPECT_TRUE(containers[0].env.empty());
  EXPECT_EQ(containers[0].user, "");
  EXPECT_FALSE(containers[0].tty);
  EXPECT_FALSE(containers[0].stdin);
  EXPECT_EQ(containers[0].image, "host");
  EXPECT_EQ(containers[0].network_namespace, "");

  EXPECT_EQ(containers[1].id, "web_1.a-b");
  EXPECT_EQ(containers[1].name, "Web");
  EXPECT_EQ(containers[1].command, (std::vector<std::string>{"/usr/bin/env"}));
  EXPECT_EQ(containers[1].working_dir, "/srv");
  EXPECT_EQ(containers[1].env, (std::vector<std::string>{"A=1", "B=", "C=x=y"}));
  EXPECT_EQ(containers[1].user, "root");
  EXPECT_TRUE(containers[1].tty);
  EXPECT_TRUE(containers[1].stdin);
  EXPECT_EQ(containers[1].image, "busybox");
  EXPECT_EQ(containers[1].network_namespace, "/run/netns/web");

  EXPECT_EQ(containers[2].user, "4242");
}

TEST(ConfigTest, ReadsTheCriBackendAndTheContainerdFifoDirectory) {
  absl::StatusOr<Config> c = loadString(
      "cri:\n  listen: /tmp/a.sock\n  upstream: /tmp/b.sock\n  backend: containerd\n"
      "runtime:\n  containerd:\n    fifo_dir: /run/x/fifos\n",
      "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cri.backend, CriBackend::kContainerd);
  EXPECT_EQ(c->runtime.containerd.fifo_dir, "/run/x/fifos");

  c = loadString("cri:\n  listen: /tmp/a.sock\n  upstream: /tmp/b.sock\n  backend: stream-server\n",
                 "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cri.backend, CriBackend::kStreamServer);

  const Config defaults = *loadString(kMinimal, "t.yaml");
  EXPECT_EQ(defaults.cri.backend, CriBackend::kStreamServer);
  EXPECT_EQ(defaults.runtime.containerd.fifo_dir, "/run/crisp/exec-fifos");

  EXPECT_THAT(errorOf(withMinimal("  backend: containerd\n")),
              HasSubstr("t.yaml:3: cri.backend: containerd needs cri.upstream"));
  EXPECT_THAT(errorOf(withMinimal("  upstream: /tmp/b.sock\n  backend: cri-o\n")),
              HasSubstr("t.yaml:4: cri.backend: expected one of stream-server, containerd, got "
                        "\"cri-o\""));
  EXPECT_THAT(errorOf(withMinimal("runtime:\n  containerd:\n    fifo_dir: fifos\n")),
              HasSubstr("t.yaml:5: runtime.containerd.fifo_dir: expected an absolute path"));
}

TEST(ConfigTest, ReadsTheRuntimesStreamServerClient) {
  absl::StatusOr<Config> c = loadString(
      "cri:\n  listen: /tmp/a.sock\n  upstream: /tmp/b.sock\nruntime:\n  stream_server:\n"
      "    ca_file: /etc/crisp/ca.pem\n    connect_timeout: 3s\n    upgrade_timeout: 250ms\n",
      "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->runtime.stream_server.ca_file, "/etc/crisp/ca.pem");
  EXPECT_EQ(c->runtime.stream_server.connect_timeout, std::chrono::seconds(3));
  EXPECT_EQ(c->runtime.stream_server.upgrade_timeout, std::chrono::milliseconds(250));

  const Config defaults = *loadString(kMinimal, "t.yaml");
  EXPECT_EQ(defaults.runtime.stream_server.ca_file, "");
  EXPECT_EQ(defaults.runtime.stream_server.connect_timeout, std::chrono::seconds(10));
  EXPECT_EQ(defaults.runtime.stream_server.upgrade_timeout, std::chrono::seconds(10));

  EXPECT_THAT(errorOf(withMinimal("runtime:\n  stream_server:\n    ca_file: ca.pem\n")),
              HasSubstr("runtime.stream_server.ca_file: expected an absolute file path, got "
                        "\"ca.pem\""));
  EXPECT_THAT(errorOf(withMinimal("runtime:\n  stream_server:\n    connect_timeout: 1h\n")),
              HasSubstr("runtime.stream_server.connect_timeout"));
  EXPECT_THAT(errorOf(withMinimal("runtime:\n  stream_server:\n    protocol: h3\n")),
              HasSubstr("runtime.stream_server.protocol"));
}

TEST(ConfigTest, AcceptsSocketModeWithAndWithoutQuotes) {
  absl::StatusOr<Config> plain =
      loadString("cri:\n  listen: /tmp/a.sock\n  socket_mode: 0666\n", "t.yaml");
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->cri.socket_mode, 0666u);
  absl::StatusOr<Config> short_form =
      loadString("cri:\n  listen: /tmp/a.sock\n  socket_mode: \"600\"\n", "t.yaml");
  ASSERT_TRUE(short_form.ok()) << short_form.status();
  EXPECT_EQ(short_form->cri.socket_mode, 0600u);
}

TEST(ConfigTest, SocketGroupIsANameOrAGid) {
  absl::StatusOr<Config> by_number =
      loadString("cri:\n  listen: /tmp/a.sock\n  socket_group: \"4242\"\n", "t.yaml");
  ASSERT_TRUE(by_number.ok()) << by_number.status();
  EXPECT_EQ(by_number->cri.socket_gid, 4242u);
  // Group 0 is "root" on every Linux host.
  absl::StatusOr<Config> by_name =
      loadString("cri:\n  listen: /tmp/a.sock\n  socket_group: root\n", "t.yaml");
  ASSERT_TRUE(by_name.ok()) << by_name.status();
  EXPECT_EQ(by_name->cri.socket_gid, 0u);
  absl::StatusOr<Config> absent = loadString(kMinimal, "t.yaml");
  ASSERT_TRUE(absent.ok());
  EXPECT_FALSE(absent->cri.socket_gid.has_value());
  EXPECT_EQ(errorOf(withMinimal("  socket_group: no-such-group-here\n")),
            "t.yaml:3: cri.socket_group: group \"no-such-group-here\" does not exist on this "
            "host");
  EXPECT_EQ(errorOf(withMinimal("  socket_group: \"99999999999\"\n")),
            "t.yaml:3: cri.socket_group: gid 99999999999 is out of range");
}

struct ErrorCase {
  const char* name;
  std::string text;
  std::string message;
};

class ConfigErrorTest : public ::testing::TestWithParam<ErrorCase> {};

TEST_P(ConfigErrorTest, ReportsFileLineAndKey) {
  EXPECT_EQ(errorOf(GetParam().text), GetParam().message);
}

const std::string kLongPath = "/tmp/" + std::string(103, 'x');  // 108 bytes

INSTANTIATE_TEST_SUITE_P(
    Cri, ConfigErrorTest,
    ::testing::Values(
        ErrorCase{"RelativeListen", "cri:\n  listen: crisp.sock\n",
                  "t.yaml:2: cri.listen: expected an absolute unix socket path, got "
                  "\"crisp.sock\""},
        ErrorCase{"ListenTooLong", "cri:\n  listen: " + kLongPath + "\n",
                  "t.yaml:2: cri.listen: unix socket path is 108 bytes long; at most 107 fit"},
        ErrorCase{"ListenMissing", "cri:\n  socket_mode: \"0600\"\n",
                  "t.yaml:1: cri.listen: required key is missing"},
        ErrorCase{"ListenEmptyValue", "cri:\n  listen:\n",
                  "t.yaml:2: cri.listen: missing value, expected a unix socket path"},
        ErrorCase{"UpstreamRelative", withMinimal("  upstream: run/containerd.sock\n"),
                  "t.yaml:3: cri.upstream: expected an absolute unix socket path, got "
                  "\"run/containerd.sock\""},
        ErrorCase{"UpstreamSameAsListen", withMinimal("  upstream: /tmp/crisp.sock\n"),
                  "t.yaml:3: cri.upstream: same path as cri.listen"},
        ErrorCase{"SocketModeNotOctal", withMinimal("  socket_mode: \"0980\"\n"),
                  "t.yaml:3: cri.socket_mode: expected an octal mode such as \"0660\" (at most "
                  "0777), got \"0980\""},
        ErrorCase{"SocketModeTooLarge", withMinimal("  socket_mode: \"4755\"\n"),
                  "t.yaml:3: cri.socket_mode: expected an octal mode such as \"0660\" (at most "
                  "0777), got \"4755\""},
        ErrorCase{"SocketModeWords", withMinimal("  socket_mode: rw-rw----\n"),
                  "t.yaml:3: cri.socket_mode: expected an octal mode such as \"0660\" (at most "
                  "0777), got \"rw-rw----\""},
        ErrorCase{"CriMissing", "log:\n  level: info\n",
                  "t.yaml:1: cri: required section is missing"}),
    [](const auto& info) { return std::string(info.param.name); });

INSTANTIATE_TEST_SUITE_P(
    Stream, ConfigErrorTest,
    ::testing::Values(
        ErrorCase{"ListenNoPort", withMinimal("stream:\n  listen: abc\n"),
                  "t.yaml:4: stream.listen: expected host:port, got \"abc\" (missing ':port')"},
        ErrorCase{"ListenHostName", withMinimal("stream:\n  listen: localhost:10350\n"),
                  "t.yaml:4: stream.listen: expected an IP address and port, got "
                  "\"localhost:10350\" (host names are not resolved here)"},
        ErrorCase{"ListenUnbracketedIpv6", withMinimal("stream:\n  listen: \"::1:80\"\n"),
                  "t.yaml:4: stream.listen: expected host:port, got \"::1:80\" (an IPv6 "
                  "address must be written in brackets, as [::1]:0)"},
        ErrorCase{"ListenPortTooLarge", withMinimal("stream:\n  listen: 127.0.0.1:65536\n"),
                  "t.yaml:4: stream.listen: expected host:port, got \"127.0.0.1:65536\" (port "
                  "must be a number from 0 to 65535, got \"65536\")"},
        ErrorCase{"AdvertiseScheme", withMinimal("stream:\n  advertise: ftp://node:1\n"),
                  "t.yaml:4: stream.advertise: expected an http:// or https:// URL, got "
                  "\"ftp://node:1\" (the scheme must be http or https)"},
        ErrorCase{"AdvertiseQuery", withMinimal("stream:\n  advertise: http://node:1/?a=b\n"),
                  "t.yaml:4: stream.advertise: expected an http:// or https:// URL, got "
                  "\"http://node:1/?a=b\" (no query or fragment allowed)"},
        ErrorCase{"AdvertiseNoHost", withMinimal("stream:\n  advertise: http:///x\n"),
                  "t.yaml:4: stream.advertise: expected an http:// or https:// URL, got "
                  "\"http:///x\" (missing host)"},
        ErrorCase{"AdvertiseUserInfo", withMinimal("stream:\n  advertise: http://u@node/\n"),
                  "t.yaml:4: stream.advertise: expected an http:// or https:// URL, got "
                  "\"http://u@node/\" (no user information allowed)"},
        ErrorCase{"AdvertisePortZero", withMinimal("stream:\n  advertise: http://node:0\n"),
                  "t.yaml:4: stream.advertise: expected an http:// or https:// URL, got "
                  "\"http://node:0\" (port 0 cannot be connected to)"},
        ErrorCase{"AdvertiseBadHost", withMinimal("stream:\n  advertise: http://no_de:80\n"),
                  "t.yaml:4: stream.advertise: expected an http:// or https:// URL, got "
                  "\"http://no_de:80\" (\"no_de\" is neither an IP address nor a host name)"},
        ErrorCase{"AdvertiseSpace", withMinimal("stream:\n  advertise: \"http://node/a b\"\n"),
                  "t.yaml:4: stream.advertise: expected an http:// or https:// URL, got "
                  "\"http://node/a b\" (spaces and control or non-ASCII characters must be "
                  "percent-encoded)"},
        ErrorCase{"WorkersZero", withMinimal("stream:\n  workers: 0\n"),
                  "t.yaml:4: stream.workers: expected an integer from 1 to 64, got \"0\""},
        ErrorCase{"WorkersTooMany", withMinimal("stream:\n  workers: 65\n"),
                  "t.yaml:4: stream.workers: expected an integer from 1 to 64, got \"65\""},
        ErrorCase{"WorkersNegative", withMinimal("stream:\n  workers: -1\n"),
                  "t.yaml:4: stream.workers: expected an integer from 1 to 64, got \"-1\""},
        ErrorCase{"WorkersHuge", withMinimal("stream:\n  workers: 99999999999999999999\n"),
                  "t.yaml:4: stream.workers: expected an integer from 1 to 64, got "
                  "\"99999999999999999999\""},
        ErrorCase{"HeaderBytesTooSmall", withMinimal("stream:\n  max_header_bytes: 1023\n"),
                  "t.yaml:4: stream.max_header_bytes: expected an integer from 1024 to "
                  "1048576, got \"1023\""},
        ErrorCase{"HeaderBytesTooLarge", withMinimal("stream:\n  max_header_bytes: 1048577\n"),
                  "t.yaml:4: stream.max_header_bytes: expected an integer from 1024 to "
                  "1048576, got \"1048577\""},
        ErrorCase{"MaxSessionsZero", withMinimal("stream:\n  max_sessions: 0\n"),
                  "t.yaml:4: stream.max_sessions: expected an integer from 1 to 1000000, got "
                  "\"0\""},
        ErrorCase{"DurationWithoutUnit", withMinimal("stream:\n  header_timeout: 10\n"),
                  "t.yaml:4: stream.header_timeout: expected a duration such as 500ms, 30s, 1m "
                  "or 4h, got \"10\""},
        ErrorCase{"DurationNegative", withMinimal("stream:\n  stream_creation_timeout: -1s\n"),
                  "t.yaml:4: stream.stream_creation_timeout: must be from 100ms to 1h, got "
                  "\"-1s\""},
        ErrorCase{"DurationZero", withMinimal("stream:\n  stream_idle_timeout: 0s\n"),
                  "t.yaml:4: stream.stream_idle_timeout: must be from 1s to 168h, got \"0s\""},
        ErrorCase{"DurationInfinite", withMinimal("stream:\n  stream_idle_timeout: inf\n"),
                  "t.yaml:4: stream.stream_idle_timeout: expected a duration such as 500ms, "
                  "30s, 1m or 4h, got \"inf\""},
        ErrorCase{"DurationSubMillisecond",
                  withMinimal("stream:\n  header_timeout: 1500us\n  workers: 2\n"),
                  "t.yaml:4: stream.header_timeout: must be from 100ms to 10m, got \"1500us\""},
        ErrorCase{"DurationFraction", withMinimal("stream:\n  header_timeout: 1.0005s\n"),
                  "t.yaml:4: stream.header_timeout: must be a whole number of milliseconds, got "
                  "\"1.0005s\""},
        ErrorCase{"DurationWords", withMinimal("stream:\n  header_timeout: ten seconds\n"),
                  "t.yaml:4: stream.header_timeout: expected a duration such as 500ms, 30s, 1m "
                  "or 4h, got \"ten seconds\""}),
    [](const auto& info) { return std::string(info.param.name); });

INSTANTIATE_TEST_SUITE_P(
    CacheAdminLog, ConfigErrorTest,
    ::testing::Values(
        ErrorCase{"TtlTooLong", withMinimal("cache:\n  ttl: 2h\n"),
                  "t.yaml:4: cache.ttl: must be from 100ms to 1h, got \"2h\""},
        ErrorCase{"ShardsZero", withMinimal("cache:\n  shards: 0\n"),
                  "t.yaml:4: cache.shards: expected an integer from 1 to 1024, got \"0\""},
        ErrorCase{"ShardsTooMany", withMinimal("cache:\n  shards: 1025\n"),
                  "t.yaml:4: cache.shards: expected an integer from 1 to 1024, got \"1025\""},
        ErrorCase{"MaxInFlightZero", withMinimal("cache:\n  max_in_flight: 0\n"),
                  "t.yaml:4: cache.max_in_flight: expected an integer from 1 to 10000000, got "
                  "\"0\""},
        ErrorCase{"AdminSameAsStream",
                  withMinimal("stream:\n  listen: 127.0.0.1:9000\nadmin:\n  listen: "
                              "127.0.0.1:9000\n"),
                  "t.yaml:6: admin.listen: same address as stream.listen"},
        ErrorCase{"AdminBad", withMinimal("admin:\n  listen: 127.0.0.1\n"),
                  "t.yaml:4: admin.listen: expected host:port, got \"127.0.0.1\" (missing "
                  "':port')"},
        ErrorCase{"LogLevel", withMinimal("log:\n  level: verbose\n"),
                  "t.yaml:4: log.level: expected one of trace, debug, info, warn, error, "
                  "critical, off, got \"verbose\""}),
    [](const auto& info) { return std::string(info.param.name); });

std::string withContainer(const std::string& body) {
  return withMinimal("runtime:\n  embedded:\n    containers:\n" + body);
}

INSTANTIATE_TEST_SUITE_P(
    Containers, ConfigErrorTest,
    ::testing::Values(
        ErrorCase{"IdMissing", withContainer("      - command: [/bin/sh]\n"),
                  "t.yaml:6: runtime.embedded.containers[0].id: required key is missing"},
        ErrorCase{"IdBadCharacters", withContainer("      - id: a/b\n        command: [x]\n"),
                  "t.yaml:6: runtime.embedded.containers[0].id: expected letters, digits, '_', "
                  "'.' or '-', got \"a/b\""},
        ErrorCase{"IdDuplicate",
                  withContainer("      - id: demo\n        command: [x]\n"
                                "      - id: demo\n        command: [y]\n"),
                  "t.yaml:8: runtime.embedded.containers[1].id: duplicate container id "
                  "\"demo\" (first at line 6)"},
        ErrorCase{"CommandMissing", withContainer("      - id: demo\n"),
                  "t.yaml:6: runtime.embedded.containers[0].command: required key is missing"},
        ErrorCase{"CommandNotAList", withContainer("      - id: demo\n        command: /bin/sh\n"),
                  "t.yaml:7: runtime.embedded.containers[0].command: expected a list of "
                  "strings, got a single value"},
        ErrorCase{"CommandEmpty", withContainer("      - id: demo\n        command: []\n"),
                  "t.yaml:7: runtime.embedded.containers[0].command: must hold at least the "
                  "program to run"},
        ErrorCase{"CommandEmptyProgram",
                  withContainer("      - id: demo\n        command:\n          - \"\"\n"),
                  "t.yaml:8: runtime.embedded.containers[0].command[0]: the program must not be "
                  "empty"},
        ErrorCase{"CommandNestedList",
                  withContainer("      - id: demo\n        command:\n          - /bin/sh\n"
                                "          - [a]\n"),
                  "t.yaml:9: runtime.embedded.containers[0].command[1]: expected a string, got "
                  "a list"},
        ErrorCase{"EnvWithoutEquals",
                  withContainer("      - id: demo\n        command: [x]\n        env:\n"
                                "          - A=1\n          - JUSTNAME\n"),
                  "t.yaml:10: runtime.embedded.containers[0].env[1]: expected KEY=value, got "
                  "\"JUSTNAME\""},
        ErrorCase{"EnvEmptyKey",
                  withContainer("      - id: demo\n        command: [x]\n        env: [\"=v\"]\n"),
                  "t.yaml:8: runtime.embedded.containers[0].env[0]: expected KEY=value, got "
                  "\"=v\""},
        ErrorCase{"WorkingDirRelative",
                  withContainer("      - id: demo\n        command: [x]\n        working_dir: "
                                "tmp\n"),
                  "t.yaml:8: runtime.embedded.containers[0].working_dir: expected an absolute "
                  "path, got \"tmp\""},
        ErrorCase{"NetworkNamespaceRelative",
                  withContainer("      - id: demo\n        command: [x]\n        "
                                "network_namespace: netns/x\n"),
                  "t.yaml:8: runtime.embedded.containers[0].network_namespace: expected an "
                  "absolute path, got \"netns/x\""},
        ErrorCase{"NetworkNamespaceList",
                  withContainer("      - id: demo\n        command: [x]\n        "
                                "network_namespace: [/run/netns/x]\n"),
                  "t.yaml:8: runtime.embedded.containers[0].network_namespace: expected an "
                  "absolute path, got a list"},
        ErrorCase{"UserUnknown",
                  withContainer("      - id: demo\n        command: [x]\n        user: "
                                "no-such-user-crisp\n"),
                  "t.yaml:8: runtime.embedded.containers[0].user: user "
                  "\"no-such-user-crisp\" does not exist on this host"},
        ErrorCase{"UidOutOfRange",
                  withContainer("      - id: demo\n        command: [x]\n        user: "
                                "\"4294967295\"\n"),
                  "t.yaml:8: runtime.embedded.containers[0].user: uid 4294967295 is out of "
                  "range"},
        ErrorCase{"TtyNotBool",
                  withContainer("      - id: demo\n        command: [x]\n        tty: yes\n"),
                  "t.yaml:8: runtime.embedded.containers[0].tty: expected true or false, got "
                  "\"yes\""},
        ErrorCase{"NameEmpty",
                  withContainer("      - id: demo\n        command: [x]\n        name: \"\"\n"),
                  "t.yaml:8: runtime.embedded.containers[0].name: must not be empty"},
        ErrorCase{"ItemNotAMapping", withContainer("      - demo\n"),
                  "t.yaml:6: runtime.embedded.containers[0]: expected a mapping, got a single "
                  "value"},
        ErrorCase{"ContainersNotAList",
                  "cri:\n  listen: /tmp/a.sock\nruntime:\n  embedded:\n"
                  "    containers: {id: demo}\n",
                  "t.yaml:5: runtime.embedded.containers: expected a list, got a mapping"},
        ErrorCase{"ContainersWithUpstream",
                  "cri:\n  listen: /tmp/a.sock\n  upstream: /tmp/b.sock\nruntime:\n  embedded:\n"
                  "    containers:\n      - id: demo\n        command: [x]\n",
                  "t.yaml:6: runtime.embedded.containers: only used by the embedded runtime, "
                  "but cri.upstream is set"}),
    [](const auto& info) { return std::string(info.param.name); });

INSTANTIATE_TEST_SUITE_P(
    Structure, ConfigErrorTest,
    ::testing::Values(
        ErrorCase{"UnknownTopLevelKey", withMinimal("streams:\n  listen: 127.0.0.1:1\n"),
                  "t.yaml:3: streams: unknown key (expected one of: cri, stream, cache, admin, "
                  "log, runtime, audit, recording)"},
        ErrorCase{"UnknownNestedKey", withMinimal("cache:\n  ttl: 1m\n  size: 10\n"),
                  "t.yaml:5: cache.size: unknown key (expected one of: ttl, shards, "
                  "max_in_flight)"},
        ErrorCase{"UnknownContainerKey",
                  withContainer("      - id: demo\n        command: [x]\n        args: [y]\n"),
                  "t.yaml:8: runtime.embedded.containers[0].args: unknown key (expected one of: "
                  "id, name, command, working_dir, env, user, tty, stdin, image, "
                  "network_namespace)"},
        ErrorCase{"DuplicateKey", withMinimal("cache:\n  shards: 2\n  shards: 4\n"),
                  "t.yaml:5: cache.shards: duplicate key (first at line 4)"},
        ErrorCase{"SectionIsAScalar", withMinimal("stream: fast\n"),
                  "t.yaml:3: stream: expected a mapping, got a single value"},
        ErrorCase{"SectionIsAList", withMinimal("log:\n  - level: info\n"),
                  "t.yaml:4: log: expected a mapping, got a list"},
        ErrorCase{"IntegerIsAList", withMinimal("cache:\n  shards: [1]\n"),
                  "t.yaml:4: cache.shards: expected an integer from 1 to 1024, got a list"},
        ErrorCase{"IntegerIsAMapping", withMinimal("cache:\n  shards: {n: 1}\n"),
                  "t.yaml:4: cache.shards: expected an integer from 1 to 1024, got a mapping"},
        ErrorCase{"IntegerIsText", withMinimal("cache:\n  shards: many\n"),
                  "t.yaml:4: cache.shards: expected an integer from 1 to 1024, got \"many\""},
        ErrorCase{"StringIsAList", "cri:\n  listen: [/tmp/a.sock]\n",
                  "t.yaml:2: cri.listen: expected a unix socket path, got a list"},
        ErrorCase{"NonScalarKey", withMinimal("? [a, b]\n: 1\n"),
                  "t.yaml:3: keys must be plain names"},
        ErrorCase{"TopLevelScalar", "hello\n", "t.yaml:1: expected a mapping, got a single value"},
        ErrorCase{"TopLevelList", "- cri\n", "t.yaml:1: expected a mapping, got a list"},
        ErrorCase{"EmptyFile", "", "t.yaml:1: cri: required section is missing"},
        ErrorCase{"OnlyComments", "# nothing here\n\n",
                  "t.yaml:1: cri: required section is missing"},
        ErrorCase{"TwoDocuments", withMinimal("---\ncri:\n  listen: /tmp/b.sock\n"),
                  "t.yaml:3: a config file holds one YAML document; a second one starts here"},
        ErrorCase{"EveryProblemIsListed",
                  withMinimal("cache:\n  shards: 0\n  ttl: 0s\nlog:\n  level: loud\n"),
                  "t.yaml:4: cache.shards: expected an integer from 1 to 1024, got \"0\"\n"
                  "t.yaml:5: cache.ttl: must be from 100ms to 1h, got \"0s\"\n"
                  "t.yaml:7: log.level: expected one of trace, debug, info, warn, error, "
                  "critical, off, got \"loud\""}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(ConfigTest, MalformedYamlNamesTheLine) {
  // An unclosed flow sequence: the parser gives up where the file ends.
  std::string error = errorOf("cri:\n  listen: /tmp/a.sock\nstream:\n  listen: [127.0.0.1\n");
  EXPECT_THAT(error, StartsWith("t.yaml:5: syntax error at column 1: ")) << error;

  // A second value on one line.
  error = errorOf("cri:\n  listen: /tmp/a.sock\ncache:\n  ttl: 1m: 2m\n");
  EXPECT_THAT(error, StartsWith("t.yaml:4: syntax error at column 10: ")) << error;
  EXPECT_THAT(error, HasSubstr("illegal map value"));

  // A tab used for indentation.
  error = errorOf("cri:\n\tlisten: /tmp/a.sock\n");
  EXPECT_THAT(error, StartsWith("t.yaml:2: syntax error at column ")) << error;

  // An alias to an anchor that does not exist.
  error = errorOf("cri:\n  listen: *nowhere\n");
  EXPECT_THAT(error, StartsWith("t.yaml:2: syntax error at column 11: ")) << error;
}

TEST(ConfigTest, AnchorsAndAliasesWork) {
  absl::StatusOr<Config> c = loadString(
      "cri:\n  listen: &sock /tmp/a.sock\nruntime:\n  embedded:\n    containers:\n"
      "      - id: a\n        command: &cmd [/bin/sh]\n      - id: b\n        command: *cmd\n",
      "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->runtime.embedded.containers[1].command, (std::vector<std::string>{"/bin/sh"}));
}

TEST(ConfigTest, DeepNestingIsAnErrorNotACrash) {
  const std::string text =
      withMinimal("stream: " + std::string(5000, '[') + std::string(5000, ']') + "\n");
  const std::string error = errorOf(text);
  EXPECT_THAT(error, StartsWith("t.yaml:3: syntax error at column ")) << error.substr(0, 200);
  EXPECT_THAT(error, HasSubstr("nested too deeply")) << error.substr(0, 200);
}

std::string writeTemp(const std::string& name, const std::string& text) {
  const char* dir = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(ConfigTest, LoadFileNamesTheFileInErrors) {
  const std::string path = writeTemp("bad.yaml", withMinimal("cache:\n  shards: 0\n"));
  absl::StatusOr<Config> c = loadFile(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().message(),
            path + ":4: cache.shards: expected an integer from 1 to 1024, got \"0\"");
}

TEST(ConfigTest, LoadFileReadsAGoodFile) {
  const std::string path = writeTemp("good.yaml", kMinimal);
  absl::StatusOr<Config> c = loadFile(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->source, path);
  EXPECT_EQ(c->cri.listen, "/tmp/crisp.sock");
}

TEST(ConfigTest, LoadFileReportsMissingAndUnreadableFiles) {
  absl::StatusOr<Config> missing = loadFile("/nonexistent/crisp.yaml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            "/nonexistent/crisp.yaml: cannot open: No such file or directory");

  const char* dir = std::getenv("TEST_TMPDIR");
  absl::StatusOr<Config> directory = loadFile(dir != nullptr ? dir : "/tmp");
  ASSERT_FALSE(directory.ok());
  EXPECT_THAT(std::string(directory.status().message()), HasSubstr("not a regular file"));
}

TEST(ConfigTest, LoadFileRefusesHugeFiles) {
  const std::string path =
      writeTemp("huge.yaml", std::string(kMinimal) + "#" + std::string(2 << 20, 'x') + "\n");
  absl::StatusOr<Config> c = loadFile(path);
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()), HasSubstr("larger than 1048576 bytes"));
}

TEST(ConfigTest, ShippedLocalConfigLoads) {
  absl::StatusOr<Config> c = loadFile("configs/crisp-local.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cri.listen, "/tmp/crisp/crisp.sock");
  EXPECT_FALSE(c->cri.upstream.has_value());
  EXPECT_EQ(c->stream.listen.toString(), "127.0.0.1:10350");
  ASSERT_TRUE(c->admin.listen.has_value());
  EXPECT_EQ(c->admin.listen->toString(), "127.0.0.1:10351");
  ASSERT_EQ(c->runtime.embedded.containers.size(), 1u);
  const ContainerConfig& demo = c->runtime.embedded.containers[0];
  EXPECT_EQ(demo.id, "demo");
  EXPECT_EQ(demo.command, (std::vector<std::string>{"/bin/sh"}));
  EXPECT_TRUE(demo.tty);
  EXPECT_TRUE(demo.stdin);
}

TEST(ConfigTest, ShippedUpstreamExampleLoads) {
  absl::StatusOr<Config> c = loadFile("configs/crisp-upstream.example.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->cri.upstream, "/run/containerd/containerd.sock");
  EXPECT_TRUE(c->runtime.embedded.containers.empty());
}

// Drain, audit and recording keys: read, defaulted, checked.
TEST(ConfigTest, ReadsDrainAuditAndRecordingKeys) {
  absl::StatusOr<Config> c = loadString(withMinimal("stream:\n  drain_grace_period: 45s\n"
                                                    "audit:\n  path: /var/log/crisp/audit.log\n"
                                                    "  max_bytes: 65536\n  max_files: 2\n"
                                                    "recording:\n  dir: /var/lib/crisp/rec\n"
                                                    "  max_bytes: 4096\n  retention: 168h\n"
                                                    "  input: true\n"),
                                        "t.yaml");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->stream.drain_grace_period, seconds(45));
  ASSERT_TRUE(c->audit.has_value());
  EXPECT_EQ(c->audit->path, "/var/log/crisp/audit.log");
  EXPECT_EQ(c->audit->max_bytes, 65536u);
  EXPECT_EQ(c->audit->max_files, 2u);
  ASSERT_TRUE(c->recording.has_value());
  EXPECT_EQ(c->recording->dir, "/var/lib/crisp/rec");
  EXPECT_EQ(c->recording->max_bytes, 4096u);
  EXPECT_EQ(c->recording->retention_age, hours(168));
  EXPECT_EQ(c->recording->retention_count, 0u);
  EXPECT_TRUE(c->recording->input);

  absl::StatusOr<Config> d =
      loadString(withMinimal("audit:\nrecording:\n  dir: /r\n  retention: 20\n"), "t.yaml");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->stream.drain_grace_period, seconds(30));
  ASSERT_TRUE(d->audit.has_value());
  EXPECT_EQ(d->audit->path, "");  // standard output
  EXPECT_EQ(d->audit->max_files, 5u);
  EXPECT_EQ(d->recording->retention_count, 20u);
  EXPECT_EQ(d->recording->retention_age, milliseconds(0));
  EXPECT_FALSE(loadString(kMinimal, "t.yaml")->audit.has_value());
}

TEST(ConfigTest, RefusesBadDrainAuditAndRecordingValues) {
  EXPECT_THAT(errorOf(withMinimal("stream:\n  drain_grace_period: 2h\n")),
              HasSubstr("t.yaml:4: stream.drain_grace_period: must be from 0 to 1h"));
  EXPECT_THAT(errorOf(withMinimal("audit:\n  path: audit.log\n")),
              HasSubstr("audit.path: expected an absolute path, got \"audit.log\""));
  EXPECT_THAT(errorOf(withMinimal("audit:\n  max_files: 0\n")),
              HasSubstr("audit.max_files: expected an integer from 1 to 1000"));
  EXPECT_THAT(errorOf(withMinimal("recording:\n  max_bytes: 10\n")),
              HasSubstr("recording.dir: required key is missing"));
  EXPECT_THAT(errorOf(withMinimal("recording:\n  dir: /r\n  retention: forever\n")),
              HasSubstr("recording.retention: expected a number of recordings (100) or an age"));
  EXPECT_THAT(errorOf(withMinimal("recording:\n  dir: /r\n  input: yes\n")),
              HasSubstr("recording.input: expected true or false"));
}

}  // namespace
TEST(ConfigTest, TrailingCommaAfterAFlowMappingIsOneClearErrorNotARunaway) {
  // yaml-cpp's LoadAll() allocates without end on this text (found by fuzzing).
  auto c = loadString("{cri: {listen: /tmp/crisp.sock}},\n", "t.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("t.yaml:"), absl::string_view::npos) << c.status();
}

TEST(ConfigTest, SecondDocumentIsNamedByItsLine) {
  auto c = loadString("cri:\n  listen: /tmp/a.sock\n---\ncri:\n  listen: /tmp/b.sock\n", "t.yaml");
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("t.yaml:3: "), absl::string_view::npos) << c.status();
}

TEST(ConfigTest, ControlCharactersInKeysAndValuesAreEscapedInMessages) {
  // Each problem stays one line: a newline written in a quoted key or value is
  // shown as \n, other control bytes as \xNN (found by fuzzing).
  auto c = loadString("\"cri\\nstream\": 1\n", "t.yaml");
  ASSERT_FALSE(c.ok());
  const std::string message(c.status().message());
  EXPECT_NE(message.find("cri\\nstream"), std::string::npos) << message;
  for (const absl::string_view line : absl::StrSplit(message, '\n')) {
    EXPECT_EQ(line.rfind("t.yaml:", 0), 0u) << line;
  }
}

}  // namespace crisp::config
