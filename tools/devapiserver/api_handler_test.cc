#include "tools/devapiserver/api_handler.h"

#include "absl/status/status.h"
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace crisp::devapi {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

constexpr int64_t kNow = 1700000000LL * 1000000000LL;

// A PodSource that serves a fixed list and records every streaming call.
class FakePods : public PodSource {
 public:
  struct Call {
    std::string kind;  // exec, attach, portforward
    std::string id;    // container or sandbox id
    StreamOptions options;
    std::vector<int32_t> ports;
  };

  absl::StatusOr<std::vector<PodInfo>> listPods() override {
    if (!list_status.ok()) {
      return list_status;
    }
    return pods;
  }
  absl::StatusOr<std::string> exec(const std::string& id, const StreamOptions& o) override {
    calls.push_back({"exec", id, o, {}});
    return reply;
  }
  absl::StatusOr<std::string> attach(const std::string& id, const StreamOptions& o) override {
    calls.push_back({"attach", id, o, {}});
    return reply;
  }
  absl::StatusOr<std::string> portForward(const std::string& id,
                                          const std::vector<int32_t>& ports) override {
    calls.push_back({"portforward", id, {}, ports});
    return reply;
  }

  std::vector<PodInfo> pods;
  absl::Status list_status;
  absl::StatusOr<std::string> reply = std::string("http://127.0.0.1:9/exec/tok12345");
  std::vector<Call> calls;
};

PodInfo pod(const std::string& name, ContainerState state = ContainerState::kRunning) {
  PodInfo p;
  p.name = name;
  p.container_id = "cid-" + name;
  p.sandbox_id = "sid-" + name;
  p.image = "busybox:1";
  p.state = state;
  p.created_at_ns = kNow - 90LL * 1000000000LL;
  return p;
}

HttpRequest request(const std::string& method, const std::string& target, HeaderList headers = {}) {
  HttpRequest r;
  r.method = method;
  r.target = target;
  const size_t q = target.find('?');
  r.path = target.substr(0, q);
  r.query = q == std::string::npos ? "" : target.substr(q + 1);
  r.headers = std::move(headers);
  return r;
}

HttpRequest upgradeRequest(const std::string& target) {
  HttpRequest r = request("POST", target,
                          {{"Connection", "Upgrade"},
                           {"Upgrade", "SPDY/3.1"},
                           {"X-Stream-Protocol-Version", "v4.channel.k8s.io"}});
  r.upgrade = true;
  return r;
}

class ApiHandlerTest : public ::testing::Test {
 protected:
  ApiHandlerTest() : handler_(fake_, options()) {}

  static ApiOptions options() {
    ApiOptions o;
    o.server_address = "127.0.0.1:4321";
    o.node_name = "node-a";
    o.now_ns = [] { return kNow; };
    return o;
  }

  HttpResponse get(const std::string& target, HeaderList headers = {}) {
    HandlerResult result = handler_.handle(request("GET", target, std::move(headers)));
    EXPECT_TRUE(std::holds_alternative<HttpResponse>(result));
    return std::get<HttpResponse>(result);
  }

  FakePods fake_;
  ApiHandler handler_;
};

const std::string* contentType(const HttpResponse& r) {
  for (const auto& [k, v] : r.headers) {
    if (k == "Content-Type") {
      return &v;
    }
  }
  return nullptr;
}

TEST_F(ApiHandlerTest, ApiVersionsListsV1AndTheServerAddress) {
  // kubectl asks for aggregated discovery first; it gets the legacy document.
  HttpResponse r = get("/api?timeout=32s",
                       {{"Accept",
                         "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
                         "application/json"}});
  EXPECT_EQ(r.status, 200);
  ASSERT_NE(contentType(r), nullptr);
  EXPECT_EQ(*contentType(r), "application/json");
  EXPECT_EQ(r.body, R"({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":)"
                    R"([{"clientCIDR":"0.0.0.0/0","serverAddress":"127.0.0.1:4321"}]})");
}

TEST_F(ApiHandlerTest, ApiGroupListIsEmpty) {
  HttpResponse r = get("/apis");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"kind":"APIGroupList","apiVersion":"v1","groups":[]})");
}

TEST_F(ApiHandlerTest, ResourceListHasPodsSubresourcesAndNamespaces) {
  HttpResponse r = get("/api/v1");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr(R"("kind":"APIResourceList","groupVersion":"v1")"));
  EXPECT_THAT(r.body, HasSubstr(R"({"name":"pods","singularName":"pod","namespaced":true,)"
                                R"("kind":"Pod","verbs":["get","list"])"));
  for (const char* sub : {"pods/exec", "pods/attach", "pods/portforward"}) {
    EXPECT_THAT(r.body, HasSubstr(std::string(R"({"name":")") + sub)) << sub;
  }
  EXPECT_THAT(r.body, HasSubstr(R"("verbs":["create","get"])"));
  EXPECT_THAT(r.body, HasSubstr(R"({"name":"namespaces","singularName":"namespace",)"
                                R"("namespaced":false)"));
}

TEST_F(ApiHandlerTest, VersionReportsAVersion) {
  HttpResponse r = get("/version");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr(R"("major":"1")"));
  EXPECT_THAT(r.body, HasSubstr(R"("gitVersion":"v1.)"));
}

TEST_F(ApiHandlerTest, UnknownPathIsNotFoundStatus) {
  HttpResponse r = get("/apis/apps/v1");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",)"
                    R"("message":"the server could not find the requested resource",)"
                    R"("reason":"NotFound","details":{},"code":404})");
}

TEST_F(ApiHandlerTest, UnknownPodIsNotFoundWithTheApiserversText) {
  HttpResponse r = get("/api/v1/namespaces/default/pods/nosuch");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, R"({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",)"
                    R"("message":"pods \"nosuch\" not found","reason":"NotFound",)"
                    R"("details":{"name":"nosuch","kind":"pods"},"code":404})");
}

TEST_F(ApiHandlerTest, PodShowsContainerStateAndStreamFlags) {
  fake_.pods.push_back(pod("demo"));
  PodInfo quiet = pod("quiet");
  quiet.annotations["crisp.dev/stdin"] = "false";
  quiet.annotations["crisp.dev/tty"] = "FALSE";
  quiet.labels["app"] = "q";
  fake_.pods.push_back(quiet);

  HttpResponse r = get("/api/v1/namespaces/default/pods/demo");
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr(R"({"kind":"Pod","apiVersion":"v1","metadata":{"name":"demo",)"
                                R"("namespace":"default","uid":"cid-demo")"));
  EXPECT_THAT(r.body, HasSubstr(R"("containers":[{"name":"demo","image":"busybox:1",)"
                                R"("resources":{},"stdin":true,"tty":true}])"));
  EXPECT_THAT(r.body, HasSubstr(R"("phase":"Running")"));
  EXPECT_THAT(r.body, HasSubstr(R"("containerStatuses":[{"name":"demo","state":{"running":{}},)"
                                R"("ready":true,"restartCount":0)"));
  EXPECT_THAT(r.body, HasSubstr(R"("creationTimestamp":"2023-11-14T22:11:50Z")"));

  r = get("/api/v1/namespaces/default/pods/quiet");
  EXPECT_THAT(r.body, HasSubstr(R"("stdin":false,"tty":false)"));
  EXPECT_THAT(r.body, HasSubstr(R"("labels":{"app":"q"})"));
}

TEST_F(ApiHandlerTest, PhasesFollowTheContainerState) {
  fake_.pods.push_back(pod("new", ContainerState::kCreated));
  PodInfo ok = pod("ok", ContainerState::kExited);
  PodInfo bad = pod("bad", ContainerState::kExited);
  bad.exit_code = 3;
  fake_.pods.push_back(ok);
  fake_.pods.push_back(bad);
  EXPECT_THAT(get("/api/v1/namespaces/default/pods/new").body, HasSubstr(R"("phase":"Pending")"));
  EXPECT_THAT(get("/api/v1/namespaces/default/pods/ok").body, HasSubstr(R"("phase":"Succeeded")"));
  const std::string failed = get("/api/v1/namespaces/default/pods/bad").body;
  EXPECT_THAT(failed, HasSubstr(R"("phase":"Failed")"));
  EXPECT_THAT(failed, HasSubstr(R"("terminated":{"exitCode":3,"reason":"Error"})"));
}

TEST_F(ApiHandlerTest, RunningContainerWinsOverAnExitedOneOfTheSameName) {
  PodInfo old = pod("web", ContainerState::kExited);
  old.container_id = "old";
  old.created_at_ns = kNow;  // newer, but exited
  PodInfo current = pod("web");
  current.container_id = "current";
  fake_.pods = {old, current};
  EXPECT_THAT(get("/api/v1/namespaces/default/pods/web").body, HasSubstr(R"("uid":"current")"));
  // The list shows the name once.
  const std::string list = get("/api/v1/namespaces/default/pods").body;
  EXPECT_THAT(list, HasSubstr(R"("uid":"current")"));
  EXPECT_THAT(list, Not(HasSubstr(R"("uid":"old")")));
}

TEST_F(ApiHandlerTest, PodListAndSelectors) {
  PodInfo a = pod("a");
  a.labels["app"] = "x";
  PodInfo b = pod("b");
  b.labels["app"] = "y";
  fake_.pods = {a, b};
  std::string list = get("/api/v1/namespaces/default/pods?limit=500").body;
  EXPECT_THAT(list, HasSubstr(R"({"kind":"PodList","apiVersion":"v1",)"));
  EXPECT_THAT(list, HasSubstr(R"("name":"a")"));
  EXPECT_THAT(list, HasSubstr(R"("name":"b")"));

  list = get("/api/v1/namespaces/default/pods?labelSelector=app%3Dx").body;
  EXPECT_THAT(list, HasSubstr(R"("name":"a")"));
  EXPECT_THAT(list, Not(HasSubstr(R"("name":"b")")));
  list = get("/api/v1/namespaces/default/pods?labelSelector=app!%3Dx").body;
  EXPECT_THAT(list, Not(HasSubstr(R"("name":"a")")));
  EXPECT_THAT(list, HasSubstr(R"("name":"b")"));
  list = get("/api/v1/pods?fieldSelector=metadata.name%3Db").body;
  EXPECT_THAT(list, Not(HasSubstr(R"("name":"a")")));
  EXPECT_THAT(list, HasSubstr(R"("name":"b")"));
  EXPECT_EQ(get("/api/v1/pods?labelSelector=app+in+(x)").status, 400);

  // Other namespaces exist for listing (empty) but hold no pods.
  list = get("/api/v1/namespaces/kube-system/pods").body;
  EXPECT_THAT(list, HasSubstr(R"("items":[])"));
  EXPECT_EQ(get("/api/v1/namespaces/kube-system/pods/a").status, 404);
}

TEST_F(ApiHandlerTest, TableWhenTheClientAsksForOne) {
  fake_.pods.push_back(pod("demo"));
  const HeaderList accept = {
      {"Accept",
       "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
       "g=meta.k8s.io,application/json"}};
  HttpResponse r = get("/api/v1/namespaces/default/pods?limit=500", accept);
  EXPECT_EQ(r.status, 200);
  EXPECT_THAT(r.body, HasSubstr(R"({"kind":"Table","apiVersion":"meta.k8s.io/v1",)"));
  EXPECT_THAT(r.body, HasSubstr(R"("cells":["demo","1/1","Running","0","90s","<none>",)"
                                R"("node-a","<none>","<none>"])"));
  EXPECT_THAT(r.body, HasSubstr(R"("object":{"kind":"PartialObjectMetadata")"));

  // A single pod asked for as a table is a one-row table.
  r = get("/api/v1/namespaces/default/pods/demo", accept);
  EXPECT_THAT(r.body, HasSubstr(R"("kind":"Table")"));
  EXPECT_EQ(get("/api/v1/namespaces/default/pods/nope", accept).status, 404);
}

TEST_F(ApiHandlerTest, NamespaceDefaultOnly) {
  EXPECT_THAT(get("/api/v1/namespaces/default").body,
              HasSubstr(R"({"kind":"Namespace","apiVersion":"v1","metadata":{"name":"default")"));
  EXPECT_THAT(get("/api/v1/namespaces").body, HasSubstr(R"("kind":"NamespaceList")"));
  HttpResponse r = get("/api/v1/namespaces/other");
  EXPECT_EQ(r.status, 404);
  EXPECT_THAT(r.body, HasSubstr(R"("message":"namespaces \"other\" not found")"));
}

TEST_F(ApiHandlerTest, WritesAndWatchesAreRefused) {
  fake_.pods.push_back(pod("demo"));
  HandlerResult r = handler_.handle(request("DELETE", "/api/v1/namespaces/default/pods/demo"));
  EXPECT_EQ(std::get<HttpResponse>(r).status, 405);
  EXPECT_EQ(get("/api/v1/namespaces/default/pods?watch=true").status, 405);
}

TEST_F(ApiHandlerTest, RuntimeListFailureIsAStatus) {
  fake_.list_status = absl::UnavailableError("connect: no such file");
  HttpResponse r = get("/api/v1/namespaces/default/pods");
  EXPECT_EQ(r.status, 500);
  EXPECT_THAT(r.body, HasSubstr("connect: no such file"));
}

TEST_F(ApiHandlerTest, ExecPassesCommandAndFlagsToTheRuntime) {
  fake_.pods.push_back(pod("demo"));
  HandlerResult r = handler_.handle(upgradeRequest(
      "/api/v1/namespaces/default/pods/demo/exec?command=sh&command=-c&command=echo+a%26b"
      "&container=demo&stdin=true&stdout=true&stderr=true&tty=false"));
  ASSERT_TRUE(std::holds_alternative<ProxyTarget>(r));
  EXPECT_EQ(std::get<ProxyTarget>(r).url, "http://127.0.0.1:9/exec/tok12345");
  ASSERT_EQ(fake_.calls.size(), 1u);
  const FakePods::Call& call = fake_.calls[0];
  EXPECT_EQ(call.kind, "exec");
  EXPECT_EQ(call.id, "cid-demo");
  EXPECT_THAT(call.options.command, ElementsAre("sh", "-c", "echo a&b"));
  EXPECT_TRUE(call.options.stdin);
  EXPECT_TRUE(call.options.stdout);
  EXPECT_TRUE(call.options.stderr);
  EXPECT_FALSE(call.options.tty);
}

TEST_F(ApiHandlerTest, TtyDropsStderrAndKubeletStyleFlagsWork) {
  fake_.pods.push_back(pod("demo"));
  handler_.handle(upgradeRequest(
      "/api/v1/namespaces/default/pods/demo/exec?command=sh&input=1&output=1&error=1&tty=1"));
  ASSERT_EQ(fake_.calls.size(), 1u);
  EXPECT_TRUE(fake_.calls[0].options.stdin);
  EXPECT_TRUE(fake_.calls[0].options.stdout);
  EXPECT_FALSE(fake_.calls[0].options.stderr);
  EXPECT_TRUE(fake_.calls[0].options.tty);
}

TEST_F(ApiHandlerTest, AttachUsesTheContainerId) {
  fake_.pods.push_back(pod("demo"));
  HandlerResult r = handler_.handle(upgradeRequest(
      "/api/v1/namespaces/default/pods/demo/attach?container=demo&stdin=true&stdout=true"
      "&stderr=false&tty=false"));
  ASSERT_TRUE(std::holds_alternative<ProxyTarget>(r));
  ASSERT_EQ(fake_.calls.size(), 1u);
  EXPECT_EQ(fake_.calls[0].kind, "attach");
  EXPECT_EQ(fake_.calls[0].id, "cid-demo");
  EXPECT_THAT(fake_.calls[0].options.command, IsEmpty());
  EXPECT_FALSE(fake_.calls[0].options.stderr);
}

TEST_F(ApiHandlerTest, PortForwardUsesTheSandboxAndPorts) {
  fake_.pods.push_back(pod("demo"));
  HandlerResult r = handler_.handle(
      upgradeRequest("/api/v1/namespaces/default/pods/demo/portforward?ports=80&ports=8080,9090"));
  ASSERT_TRUE(std::holds_alternative<ProxyTarget>(r));
  ASSERT_EQ(fake_.calls.size(), 1u);
  EXPECT_EQ(fake_.calls[0].kind, "portforward");
  EXPECT_EQ(fake_.calls[0].id, "sid-demo");
  EXPECT_THAT(fake_.calls[0].ports, ElementsAre(80, 8080, 9090));

  r = handler_.handle(
      upgradeRequest("/api/v1/namespaces/default/pods/demo/portforward?ports=70000"));
  EXPECT_EQ(std::get<HttpResponse>(r).status, 400);
  EXPECT_EQ(fake_.calls.size(), 1u);
}

TEST_F(ApiHandlerTest, StreamRequestsAreValidatedBeforeTheRuntimeIsAsked) {
  fake_.pods.push_back(pod("demo"));
  const std::string base = "/api/v1/namespaces/default/pods/";
  struct Case {
    std::string target;
    bool upgrade;
    int status;
    std::string message;
  };
  const Case cases[] = {
      {base + "nosuch/exec?command=sh", true, 404, R"(pods \"nosuch\" not found)"},
      {base + "demo/exec?stdout=true", true, 400, "at least one command"},
      {base + "demo/exec?command=sh&stdout=false&stderr=false", true, 400, "at least 1 of"},
      {base + "demo/exec?command=sh&container=other", true, 400,
       "container other is not valid for pod demo"},
      {base + "demo/exec?command=sh", false, 400, "Upgrade request required"},
  };
  for (const Case& c : cases) {
    HttpRequest req = upgradeRequest(c.target);
    req.upgrade = c.upgrade;
    HandlerResult r = handler_.handle(req);
    ASSERT_TRUE(std::holds_alternative<HttpResponse>(r)) << c.target;
    EXPECT_EQ(std::get<HttpResponse>(r).status, c.status) << c.target;
    EXPECT_THAT(std::get<HttpResponse>(r).body, HasSubstr(c.message)) << c.target;
  }
  EXPECT_THAT(fake_.calls, IsEmpty());
}

TEST_F(ApiHandlerTest, RuntimeErrorsMapToHttpStatus) {
  fake_.pods.push_back(pod("demo"));
  struct Case {
    absl::Status status;
    int http;
    std::string reason;
  };
  const Case cases[] = {
      {absl::NotFoundError("container gone"), 404, "NotFound"},
      {absl::InvalidArgumentError("tty and stderr cannot both be true"), 400, "BadRequest"},
      {absl::ResourceExhaustedError("maximum number of in-flight requests exceeded"), 429,
       "TooManyRequests"},
      {absl::UnavailableError("socket closed"), 500, "InternalError"},
  };
  for (const Case& c : cases) {
    fake_.reply = c.status;
    HandlerResult r =
        handler_.handle(upgradeRequest("/api/v1/namespaces/default/pods/demo/exec?command=x"));
    ASSERT_TRUE(std::holds_alternative<HttpResponse>(r));
    const HttpResponse& resp = std::get<HttpResponse>(r);
    EXPECT_EQ(resp.status, c.http);
    EXPECT_THAT(resp.body, HasSubstr(std::string(c.status.message())));
    EXPECT_THAT(resp.body, HasSubstr("\"reason\":\"" + c.reason + "\""));
    bool retry_after = false;
    for (const auto& [k, v] : resp.headers) {
      retry_after = retry_after || (k == "Retry-After" && v == "60");
    }
    EXPECT_EQ(retry_after, c.http == 429);
  }
}

TEST(HumanDurationTest, MatchesKubernetesAges) {
  EXPECT_EQ(humanDuration(-5), "<invalid>");
  EXPECT_EQ(humanDuration(-1), "0s");
  EXPECT_EQ(humanDuration(0), "0s");
  EXPECT_EQ(humanDuration(119), "119s");
  EXPECT_EQ(humanDuration(120), "2m");
  EXPECT_EQ(humanDuration(192), "3m12s");
  EXPECT_EQ(humanDuration(600), "10m");
  EXPECT_EQ(humanDuration(179 * 60 + 59), "179m");
  EXPECT_EQ(humanDuration(3 * 3600), "3h");
  EXPECT_EQ(humanDuration(5 * 3600 + 7 * 60), "5h7m");
  EXPECT_EQ(humanDuration(47 * 3600), "47h");
  EXPECT_EQ(humanDuration(3 * 86400 + 4 * 3600), "3d4h");
  EXPECT_EQ(humanDuration(30 * 86400), "30d");
  EXPECT_EQ(humanDuration(800LL * 86400), "2y70d");
  EXPECT_EQ(humanDuration(9LL * 365 * 86400), "9y");
}

}  // namespace
}  // namespace crisp::devapi
