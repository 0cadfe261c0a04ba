#include "tools/devapiserver/cri_pod_source.h"

#include <map>

#include "api/runtime/v1/api.pb.h"
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace crisp::devapi {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

// Answers CRI calls from canned replies and keeps the requests it got.
class FakeRuntime {
 public:
  CriPodSource::UnaryCall caller() {
    return [this](const std::string& method, const std::string& request) {
      requests[method].push_back(request);
      const auto it = replies.find(method);
      if (it == replies.end()) {
        return absl::StatusOr<std::string>(absl::UnimplementedError(method));
      }
      return it->second;
    };
  }
  std::map<std::string, absl::StatusOr<std::string>> replies;
  std::map<std::string, std::vector<std::string>> requests;
};

constexpr char kList[] = "/runtime.v1.RuntimeService/ListContainers";
constexpr char kStatus[] = "/runtime.v1.RuntimeService/ContainerStatus";

TEST(CriPodSourceTest, ContainersBecomePods) {
  runtime::v1::ListContainersResponse list;
  runtime::v1::Container* c = list.add_containers();
  c->set_id("c1");
  c->set_pod_sandbox_id("s1");
  c->mutable_metadata()->set_name("demo");
  c->mutable_image()->set_image("busybox");
  c->set_state(runtime::v1::CONTAINER_RUNNING);
  c->set_created_at(123);
  (*c->mutable_labels())["app"] = "demo";
  (*c->mutable_annotations())["crisp.dev/tty"] = "false";
  runtime::v1::Container* exited = list.add_containers();
  exited->set_id("c2");
  exited->mutable_metadata()->set_name("job");
  exited->set_state(runtime::v1::CONTAINER_EXITED);
  list.add_containers()->set_id("nameless");

  runtime::v1::ContainerStatusResponse status;
  status.mutable_status()->set_exit_code(3);

  FakeRuntime runtime;
  runtime.replies[kList] = list.SerializeAsString();
  runtime.replies[kStatus] = status.SerializeAsString();
  CriPodSource source(runtime.caller());
  absl::StatusOr<std::vector<PodInfo>> pods = source.listPods();
  ASSERT_TRUE(pods.ok()) << pods.status();
  ASSERT_EQ(pods->size(), 2u);
  const PodInfo& demo = (*pods)[0];
  EXPECT_EQ(demo.name, "demo");
  EXPECT_EQ(demo.container_id, "c1");
  EXPECT_EQ(demo.sandbox_id, "s1");
  EXPECT_EQ(demo.image, "busybox");
  EXPECT_EQ(demo.state, ContainerState::kRunning);
  EXPECT_EQ(demo.created_at_ns, 123);
  EXPECT_THAT(demo.labels, ElementsAre(Pair("app", "demo")));
  EXPECT_THAT(demo.annotations, ElementsAre(Pair("crisp.dev/tty", "false")));
  EXPECT_EQ((*pods)[1].state, ContainerState::kExited);
  EXPECT_EQ((*pods)[1].exit_code, 3);

  // Only the exited container needed a status call, for its id.
  ASSERT_EQ(runtime.requests[kStatus].size(), 1u);
  runtime::v1::ContainerStatusRequest asked;
  ASSERT_TRUE(asked.ParseFromString(runtime.requests[kStatus][0]));
  EXPECT_EQ(asked.container_id(), "c2");
}

TEST(CriPodSourceTest, ListFailuresAndBadRepliesAreErrors) {
  FakeRuntime runtime;
  runtime.replies[kList] = absl::UnavailableError("upstream runtime /x.sock: connection refused");
  CriPodSource source(runtime.caller());
  EXPECT_EQ(source.listPods().status().code(), absl::StatusCode::kUnavailable);

  runtime.replies[kList] = std::string("\xff\xff\xff", 3);
  EXPECT_EQ(source.listPods().status().code(), absl::StatusCode::kInternal);
}

TEST(CriPodSourceTest, ExecAttachAndPortForwardRequests) {
  FakeRuntime runtime;
  runtime::v1::ExecResponse url;
  url.set_url("http://127.0.0.1:1/exec/abc");
  runtime.replies["/runtime.v1.RuntimeService/Exec"] = url.SerializeAsString();
  runtime.replies["/runtime.v1.RuntimeService/Attach"] = url.SerializeAsString();
  runtime.replies["/runtime.v1.RuntimeService/PortForward"] =
      absl::ResourceExhaustedError("maximum number of in-flight requests exceeded");
  CriPodSource source(runtime.caller());

  StreamOptions options;
  options.command = {"sh", "-c", "true"};
  options.stdin = true;
  options.stdout = true;
  options.tty = true;
  absl::StatusOr<std::string> got = source.exec("c1", options);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "http://127.0.0.1:1/exec/abc");
  runtime::v1::ExecRequest exec;
  ASSERT_TRUE(exec.ParseFromString(runtime.requests["/runtime.v1.RuntimeService/Exec"][0]));
  EXPECT_EQ(exec.container_id(), "c1");
  EXPECT_THAT(exec.cmd(), ElementsAre("sh", "-c", "true"));
  EXPECT_TRUE(exec.stdin());
  EXPECT_TRUE(exec.stdout());
  EXPECT_FALSE(exec.stderr());
  EXPECT_TRUE(exec.tty());

  options.command.clear();
  options.tty = false;
  options.stderr = true;
  ASSERT_TRUE(source.attach("c1", options).ok());
  runtime::v1::AttachRequest attach;
  ASSERT_TRUE(attach.ParseFromString(runtime.requests["/runtime.v1.RuntimeService/Attach"][0]));
  EXPECT_EQ(attach.container_id(), "c1");
  EXPECT_TRUE(attach.stdin());
  EXPECT_TRUE(attach.stderr());
  EXPECT_FALSE(attach.tty());

  absl::StatusOr<std::string> pf = source.portForward("s1", {80, 443});
  EXPECT_EQ(pf.status().code(), absl::StatusCode::kResourceExhausted);
  runtime::v1::PortForwardRequest forward;
  ASSERT_TRUE(
      forward.ParseFromString(runtime.requests["/runtime.v1.RuntimeService/PortForward"][0]));
  EXPECT_EQ(forward.pod_sandbox_id(), "s1");
  EXPECT_THAT(forward.port(), ElementsAre(80, 443));
}

}  // namespace
}  // namespace crisp::devapi
