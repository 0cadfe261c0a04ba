// StreamRedirect::answerExec() and answerPortForward(): the Exec and
// PortForward answers crisp gives itself with cri.backend containerd. (The redirect of the runtime's answers is covered
// end to end by //test/e2e:containerd_test.)

#include "source/cri/stream_redirect.h"

#include <cstdint>
#include <initializer_list>
#include <string>
#include <variant>
#include <vector>

#include "gtest/gtest.h"

#include "api/runtime/v1/api.pb.h"
#include "source/cache/token_cache.h"
#include "source/common/time.h"

namespace crisp::cri {
namespace {

constexpr char kBase[] = "http://127.0.0.1:10350/";

class AnswerExecTest : public ::testing::Test {
 protected:
  static std::string request(bool tty, bool in, bool out, bool err, const char* id = "c1") {
    ::runtime::v1::ExecRequest r;
    r.set_container_id(id);
    r.add_cmd("sh");
    r.add_cmd("-c");
    r.add_cmd("echo hi");
    r.set_tty(tty);
    r.set_stdin(in);
    r.set_stdout(out);
    r.set_stderr(err);
    return r.SerializeAsString();
  }

  RealTimeSource time_;
  SystemRandomSource random_;
  cache::TokenCache cache_{cache::TokenCacheOptions{}, time_, random_};
  StreamRedirect redirect_{cache_, kBase};
};

TEST_F(AnswerExecTest, KeepsTheRequestUnderCrispsUrlWithoutARuntimeUrl) {
  absl::StatusOr<std::string> answer = redirect_.answerExec(request(true, true, true, false));
  ASSERT_TRUE(answer.ok()) << answer.status();
  ::runtime::v1::ExecResponse response;
  ASSERT_TRUE(response.ParseFromString(*answer));
  const std::string prefix = std::string(kBase) + "exec/";
  ASSERT_EQ(response.url().rfind(prefix, 0), 0u) << response.url();
  auto stored = cache_.consume(response.url().substr(prefix.size()));
  ASSERT_TRUE(stored.has_value());
  const auto& spec = std::get<session::ExecSpec>(stored->spec);
  EXPECT_EQ(spec.operation, session::Operation::kExec);
  EXPECT_EQ(spec.container_id, "c1");
  EXPECT_EQ(spec.command, (std::vector<std::string>{"sh", "-c", "echo hi"}));
  EXPECT_TRUE(spec.tty);
  EXPECT_TRUE(spec.stdin);
  EXPECT_TRUE(spec.stdout);
  EXPECT_FALSE(spec.stderr);
  EXPECT_EQ(spec.upstream_url, "");
}

TEST_F(AnswerExecTest, ChecksTheStreamFlagsAsTheKubeletDoes) {
  EXPECT_EQ(redirect_.answerExec(request(false, true, true, true, "")).status().message(),
            "missing required container_id");
  EXPECT_EQ(redirect_.answerExec(request(true, false, true, true)).status().message(),
            "tty and stderr cannot both be true");
  EXPECT_EQ(redirect_.answerExec(request(false, false, false, false)).status().message(),
            "one of stdin, stdout, or stderr must be set");
  ::runtime::v1::ExecRequest no_cmd;
  no_cmd.set_container_id("c1");
  no_cmd.set_stdout(true);
  EXPECT_EQ(redirect_.answerExec(no_cmd.SerializeAsString()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(redirect_.answerExec("\xff\xff").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(AnswerExecTest, NoUrlOnceDraining) {
  redirect_.stopIssuingStreams();
  EXPECT_EQ(redirect_.answerExec(request(false, false, true, true)).status().code(),
            absl::StatusCode::kUnavailable);
}

std::string portForwardRequest(const char* sandbox, std::initializer_list<int32_t> ports) {
  ::runtime::v1::PortForwardRequest r;
  r.set_pod_sandbox_id(sandbox);
  for (int32_t port : ports) {
    r.add_port(port);
  }
  return r.SerializeAsString();
}

TEST_F(AnswerExecTest, PortForwardKeepsTheRequestUnderCrispsUrlWithoutARuntimeUrl) {
  absl::StatusOr<std::string> answer =
      redirect_.answerPortForward(portForwardRequest("sandbox-1", {8080, 443}));
  ASSERT_TRUE(answer.ok()) << answer.status();
  ::runtime::v1::PortForwardResponse response;
  ASSERT_TRUE(response.ParseFromString(*answer));
  const std::string prefix = std::string(kBase) + "portforward/";
  ASSERT_EQ(response.url().rfind(prefix, 0), 0u) << response.url();
  auto stored = cache_.consume(response.url().substr(prefix.size()));
  ASSERT_TRUE(stored.has_value());
  const auto& spec = std::get<session::PortForwardSpec>(stored->spec);
  EXPECT_EQ(spec.pod_sandbox_id, "sandbox-1");
  EXPECT_EQ(spec.ports, (std::vector<uint16_t>{8080, 443}));
  EXPECT_EQ(spec.upstream_url, "");
}

TEST_F(AnswerExecTest, PortForwardChecksAsTheKubeletDoes) {
  EXPECT_EQ(redirect_.answerPortForward(portForwardRequest("", {80})).status().message(),
            "missing required pod_sandbox_id");
  EXPECT_EQ(redirect_.answerPortForward(portForwardRequest("s", {0})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(redirect_.answerPortForward(portForwardRequest("s", {65536})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(redirect_.answerPortForward("\xff\xff").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache_.size(), 0u);
  // No ports is valid: the SPDY client names them per stream.
  EXPECT_TRUE(redirect_.answerPortForward(portForwardRequest("s", {})).ok());
}

TEST_F(AnswerExecTest, NoPortForwardUrlOnceDraining) {
  redirect_.stopIssuingStreams();
  EXPECT_EQ(redirect_.answerPortForward(portForwardRequest("s", {80})).status().code(),
            absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace crisp::cri
