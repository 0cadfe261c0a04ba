#include "source/cri/runtime_service.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "source/common/buffer.h"

namespace crisp::cri {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kBase[] = "http://127.0.0.1:10350/";
constexpr char kPrefix[] = "/runtime.v1.RuntimeService/";

class FixedTimeSource : public TimeSource {
 public:
  MonotonicTime monotonicTime() const override { return now; }
  MonotonicTime now{std::chrono::seconds(1000)};
};

// Deterministic and never repeating, so that every token differs.
class CountingRandomSource : public RandomSource {
 public:
  bool fill(void* out, size_t len) override {
    auto* bytes = static_cast<uint8_t*>(out);
    for (size_t i = 0; i < len; ++i) {
      bytes[i] = static_cast<uint8_t>(i);
    }
    ++counter_;
    std::memcpy(out, &counter_, std::min(len, sizeof(counter_)));
    return true;
  }

 private:
  uint64_t counter_ = 0;
};

// What the service did to a process the fake runtime handed out.
struct ProcessProbe {
  bool stdin_closed = false;
  bool destroyed = false;
};

class FakeProcess : public session::ExecProcess {
 public:
  explicit FakeProcess(std::shared_ptr<ProcessProbe> probe) : probe_(std::move(probe)) {}
  ~FakeProcess() override { probe_->destroyed = true; }

  void writeStdin(Buffer& data) override { data.drain(data.length()); }
  size_t stdinQueuedBytes() const override { return 0; }
  void closeStdin() override { probe_->stdin_closed = true; }
  void resize(session::TerminalSize) override {}
  void pauseOutput(bool) override {}

 private:
  std::shared_ptr<ProcessProbe> probe_;
};

// A runtime with a fixed container list. startExec() records its spec and hands
// the callbacks to `script`, which plays the process's life (typically by
// posting output and an exit to the dispatcher).
class FakeRuntime : public session::Runtime {
 public:
  using Script = std::function<void(event::Dispatcher&, session::ExecCallbacks&,
                                    std::shared_ptr<ProcessProbe>)>;

  std::vector<session::ContainerInfo> listContainers() const override { return containers; }

  absl::StatusOr<session::ContainerInfo> container(const std::string& id) const override {
    for (const auto& c : containers) {
      if (c.id == id) {
        return c;
      }
    }
    return absl::NotFoundError("no such container");
  }

  absl::StatusOr<std::unique_ptr<session::ExecProcess>> startExec(
      event::Dispatcher& dispatcher, const session::ExecSpec& spec,
      std::optional<session::TerminalSize>, session::ExecCallbacks& callbacks) override {
    started.push_back(spec);
    if (!start_error.ok()) {
      return start_error;
    }
    probe = std::make_shared<ProcessProbe>();
    auto process = std::make_unique<FakeProcess>(probe);
    if (script) {
      script(dispatcher, callbacks, probe);
    }
    return process;
  }

  std::vector<session::ContainerInfo> containers;
  std::vector<session::ExecSpec> started;
  absl::Status start_error;
  Script script;
  std::shared_ptr<ProcessProbe> probe;
};

session::ContainerInfo makeContainer(std::string id, std::string sandbox, bool running,
                                     int64_t started_at_ns) {
  session::ContainerInfo c;
  c.id = std::move(id);
  c.name = c.id + "-name";
  c.pod_sandbox_id = std::move(sandbox);
  c.image = "docker.io/library/busybox:1.36";
  c.running = running;
  c.created_at_ns = 1'700'000'000'000'000'000;
  c.started_at_ns = started_at_ns;
  return c;
}

Buffer bufferOf(std::string_view bytes) {
  Buffer b;
  b.add(bytes);
  return b;
}

// Posts `fn` to run later on the loop unless the process was destroyed first.
void postUnlessKilled(event::Dispatcher& d, const std::shared_ptr<ProcessProbe>& probe,
                      std::function<void()> fn) {
  d.post([probe, fn = std::move(fn)] {
    if (!probe->destroyed) {
      fn();
    }
  });
}

class RuntimeServiceTest : public ::testing::Test {
 protected:
  RuntimeServiceTest() : RuntimeServiceTest(cache::TokenCacheOptions{}) {}
  explicit RuntimeServiceTest(const cache::TokenCacheOptions& options)
      : cache_(options, time_, random_), service_(runtime_, cache_, kBase) {
    runtime_.containers = {
        makeContainer("c1", "pod-a", true, 1'700'000'001'000'000'000),
        makeContainer("c2", "pod-a", false, 1'700'000'002'000'000'000),
        makeContainer("c3", "pod-b", false, 0),
    };
  }

  // Takes the token out of a URL of the given kind and returns what the cache
  // stored under it.
  std::optional<session::StreamRequest> consumeUrl(const std::string& url,
                                                   const std::string& kind) {
    const std::string prefix = std::string(kBase) + kind + "/";
    EXPECT_THAT(url, StartsWith(prefix));
    const std::string token = url.substr(prefix.size());
    EXPECT_EQ(token.size(), cache::kTokenLength);
    return cache_.consume(token);
  }

  // Runs the loop until `done` fires (it must call stopLoop()), failing
  // after a bound instead of hanging.
  void runLoop(std::chrono::milliseconds bound = std::chrono::seconds(5)) {
    event::Timer guard(dispatcher_, [this] {
      ADD_FAILURE() << "the call did not finish in time";
      dispatcher_.exit();
    });
    guard.enable(bound);
    looping_ = true;
    dispatcher_.run();
    looping_ = false;
  }

  // Ends runLoop(); a no-op when the answer came before the loop ran.
  void stopLoop() {
    if (looping_) {
      dispatcher_.exit();
    }
  }

  absl::StatusOr<::runtime::v1::ExecSyncResponse> runExecSync(
      const ::runtime::v1::ExecSyncRequest& request) {
    std::optional<absl::StatusOr<::runtime::v1::ExecSyncResponse>> result;
    int calls = 0;
    service_.execSync(dispatcher_, request, [&](absl::StatusOr<::runtime::v1::ExecSyncResponse> r) {
      ++calls;
      result = std::move(r);
      stopLoop();
    });
    if (!result.has_value()) {
      runLoop();
    }
    EXPECT_EQ(calls, 1);
    if (!result.has_value()) {
      return absl::InternalError("no result");
    }
    return *result;
  }

  // Calls handle() and waits for its answer.
  absl::StatusOr<std::string> runHandle(const std::string& method, const std::string& bytes) {
    std::optional<absl::StatusOr<std::string>> result;
    const bool handled = service_.handle(std::string(kPrefix) + method, bytes, dispatcher_,
                                         [&](absl::StatusOr<std::string> r) {
                                           result = std::move(r);
                                           stopLoop();
                                         });
    EXPECT_TRUE(handled) << method;
    if (handled && !result.has_value()) {
      runLoop();
    }
    if (!result.has_value()) {
      return absl::InternalError("no result");
    }
    return *result;
  }

  bool looping_ = false;
  FixedTimeSource time_;
  CountingRandomSource random_;
  cache::TokenCache cache_;
  FakeRuntime runtime_;
  event::Dispatcher dispatcher_;
  RuntimeServiceImpl service_;
};

::runtime::v1::ExecRequest execRequest(bool tty, bool stdin, bool stdout, bool stderr) {
  ::runtime::v1::ExecRequest r;
  r.set_container_id("c1");
  r.add_cmd("sh");
  r.set_tty(tty);
  r.set_stdin(stdin);
  r.set_stdout(stdout);
  r.set_stderr(stderr);
  return r;
}

::runtime::v1::AttachRequest attachRequest(bool tty, bool stdin, bool stdout, bool stderr) {
  ::runtime::v1::AttachRequest r;
  r.set_container_id("c1");
  r.set_tty(tty);
  r.set_stdin(stdin);
  r.set_stdout(stdout);
  r.set_stderr(stderr);
  return r;
}

void expectStatus(const absl::Status& status, absl::StatusCode code, const std::string& text) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_EQ(status.message(), text);
}

// --- Exec / Attach / PortForward validation ---------------------------------

TEST_F(RuntimeServiceTest, ExecValidationMatchesKubeletTexts) {
  auto no_id = execRequest(false, false, true, false);
  no_id.clear_container_id();
  expectStatus(service_.exec(no_id).status(), absl::StatusCode::kInvalidArgument,
               "missing required container_id");
  expectStatus(service_.exec(execRequest(true, true, true, true)).status(),
               absl::StatusCode::kInvalidArgument, "tty and stderr cannot both be true");
  expectStatus(service_.exec(execRequest(false, false, false, false)).status(),
               absl::StatusCode::kInvalidArgument, "one of stdin, stdout, or stderr must be set");
  expectStatus(service_.exec(execRequest(true, false, false, false)).status(),
               absl::StatusCode::kInvalidArgument, "one of stdin, stdout, or stderr must be set");
  EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(RuntimeServiceTest, ExecValidationChecksContainerIdFirst) {
  auto r = execRequest(true, false, false, true);
  r.clear_container_id();
  expectStatus(service_.exec(r).status(), absl::StatusCode::kInvalidArgument,
               "missing required container_id");
  r = execRequest(true, false, false, false);
  r.set_stderr(true);
  r.set_stdout(false);
  // tty+stderr is reported even though stdout is unset.
  expectStatus(service_.exec(r).status(), absl::StatusCode::kInvalidArgument,
               "tty and stderr cannot both be true");
}

TEST_F(RuntimeServiceTest, AttachValidationUsesItsOwnText) {
  auto no_id = attachRequest(false, true, false, false);
  no_id.clear_container_id();
  expectStatus(service_.attach(no_id).status(), absl::StatusCode::kInvalidArgument,
               "missing required container_id");
  expectStatus(service_.attach(attachRequest(true, false, true, true)).status(),
               absl::StatusCode::kInvalidArgument, "tty and stderr cannot both be true");
  expectStatus(service_.attach(attachRequest(false, false, false, false)).status(),
               absl::StatusCode::kInvalidArgument, "one of stdin, stdout, and stderr must be set");
  EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(RuntimeServiceTest, PortForwardValidation) {
  ::runtime::v1::PortForwardRequest r;
  r.add_port(80);
  expectStatus(service_.portForward(r).status(), absl::StatusCode::kInvalidArgument,
               "missing required pod_sandbox_id");
  for (int32_t bad : {0, -1, 65536, 1 << 30}) {
    ::runtime::v1::PortForwardRequest p;
    p.set_pod_sandbox_id("c1");
    p.add_port(80);
    p.add_port(bad);
    const absl::Status status = service_.portForward(p).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(std::string(status.message()), HasSubstr(std::to_string(bad)));
    EXPECT_THAT(std::string(status.message()), HasSubstr("between 1 and 65535"));
  }
  EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(RuntimeServiceTest, UnknownContainerIsNotFound) {
  auto e = execRequest(false, false, true, false);
  e.set_container_id("nope");
  expectStatus(service_.exec(e).status(), absl::StatusCode::kNotFound,
               "container \"nope\" not found");
  auto a = attachRequest(false, true, false, false);
  a.set_container_id("nope");
  expectStatus(service_.attach(a).status(), absl::StatusCode::kNotFound,
               "container \"nope\" not found");
  ::runtime::v1::PortForwardRequest p;
  p.set_pod_sandbox_id("nope");
  expectStatus(service_.portForward(p).status(), absl::StatusCode::kNotFound,
               "pod sandbox \"nope\" not found");
  EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(RuntimeServiceTest, StoppedContainerIsFailedPrecondition) {
  auto e = execRequest(false, false, true, false);
  e.set_container_id("c2");
  expectStatus(service_.exec(e).status(), absl::StatusCode::kFailedPrecondition,
               "container \"c2\" is in CONTAINER_EXITED state");
  auto a = attachRequest(false, true, false, false);
  a.set_container_id("c3");
  expectStatus(service_.attach(a).status(), absl::StatusCode::kFailedPrecondition,
               "container \"c3\" is in CONTAINER_CREATED state");
  ::runtime::v1::PortForwardRequest p;
  p.set_pod_sandbox_id("pod-b");
  expectStatus(service_.portForward(p).status(), absl::StatusCode::kFailedPrecondition,
               "pod sandbox \"pod-b\" is not running");
  EXPECT_EQ(cache_.size(), 0u);
}

// --- Exec / Attach / PortForward results -------------------------------------

TEST_F(RuntimeServiceTest, ExecStoresSpecAndReturnsExecUrl) {
  auto r = execRequest(true, true, true, false);
  r.add_cmd("-c");
  r.add_cmd("echo hi");
  auto response = service_.exec(r);
  ASSERT_TRUE(response.ok()) << response.status();
  auto stored = consumeUrl(response->url(), "exec");
  ASSERT_TRUE(stored.has_value());
  const auto* spec = std::get_if<session::ExecSpec>(&stored->spec);
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->operation, session::Operation::kExec);
  EXPECT_EQ(spec->container_id, "c1");
  EXPECT_THAT(spec->command, ElementsAre("sh", "-c", "echo hi"));
  EXPECT_TRUE(spec->tty);
  EXPECT_TRUE(spec->stdin);
  EXPECT_TRUE(spec->stdout);
  EXPECT_FALSE(spec->stderr);
  // Single use.
  EXPECT_FALSE(consumeUrl(response->url(), "exec").has_value());
}

TEST_F(RuntimeServiceTest, EachExecGetsItsOwnToken) {
  auto a = service_.exec(execRequest(false, false, true, true));
  auto b = service_.exec(execRequest(false, false, true, true));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->url(), b->url());
  EXPECT_EQ(cache_.size(), 2u);
}

TEST_F(RuntimeServiceTest, AttachStoresSpecAndReturnsAttachUrl) {
  auto response = service_.attach(attachRequest(false, true, true, true));
  ASSERT_TRUE(response.ok()) << response.status();
  auto stored = consumeUrl(response->url(), "attach");
  ASSERT_TRUE(stored.has_value());
  const auto* spec = std::get_if<session::ExecSpec>(&stored->spec);
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->operation, session::Operation::kAttach);
  EXPECT_EQ(spec->container_id, "c1");
  EXPECT_TRUE(spec->command.empty());
  EXPECT_FALSE(spec->tty);
  EXPECT_TRUE(spec->stdin);
  EXPECT_TRUE(spec->stdout);
  EXPECT_TRUE(spec->stderr);
}

TEST_F(RuntimeServiceTest, PortForwardConvertsPorts) {
  ::runtime::v1::PortForwardRequest r;
  r.set_pod_sandbox_id("c1");
  r.add_port(1);
  r.add_port(8080);
  r.add_port(65535);
  auto response = service_.portForward(r);
  ASSERT_TRUE(response.ok()) << response.status();
  auto stored = consumeUrl(response->url(), "portforward");
  ASSERT_TRUE(stored.has_value());
  const auto* spec = std::get_if<session::PortForwardSpec>(&stored->spec);
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->pod_sandbox_id, "c1");
  EXPECT_THAT(spec->ports, ElementsAre(1, 8080, 65535));
}

TEST_F(RuntimeServiceTest, PortForwardAcceptsPodSandboxIdAndNoPorts) {
  // Ports may come later from the SPDY stream headers, so none is fine.
  ::runtime::v1::PortForwardRequest r;
  r.set_pod_sandbox_id("pod-a");
  auto response = service_.portForward(r);
  ASSERT_TRUE(response.ok()) << response.status();
  auto stored = consumeUrl(response->url(), "portforward");
  ASSERT_TRUE(stored.has_value());
  const auto* spec = std::get_if<session::PortForwardSpec>(&stored->spec);
  ASSERT_NE(spec, nullptr);
  EXPECT_EQ(spec->pod_sandbox_id, "pod-a");
  EXPECT_TRUE(spec->ports.empty());
}

// While crisp drains, no stream URL is handed out: UNAVAILABLE, naming why.
TEST_F(RuntimeServiceTest, DrainingRefusesNewStreamUrls) {
  service_.stopIssuingStreams();
  expectStatus(service_.exec(execRequest(false, false, true, true)).status(),
               absl::StatusCode::kUnavailable,
               "crisp is shutting down and accepts no new exec sessions; retry on another node "
               "or after the restart");
  expectStatus(service_.attach(attachRequest(false, true, true, true)).status(),
               absl::StatusCode::kUnavailable,
               "crisp is shutting down and accepts no new attach sessions; retry on another node "
               "or after the restart");
  ::runtime::v1::PortForwardRequest r;
  r.set_pod_sandbox_id("c1");
  expectStatus(service_.portForward(r).status(), absl::StatusCode::kUnavailable,
               "crisp is shutting down and accepts no new portforward sessions; retry on "
               "another node or after the restart");
  EXPECT_EQ(cache_.size(), 0u);
}

TEST(RuntimeServiceBaseUrlTest, ResolvesLikeARelativeReference) {
  FixedTimeSource time;
  CountingRandomSource random;
  cache::TokenCache cache({}, time, random);
  FakeRuntime runtime;
  runtime.containers = {makeContainer("c1", "c1", true, 1)};
  const std::pair<const char*, const char*> cases[] = {
      {"http://127.0.0.1:10350", "http://127.0.0.1:10350/exec/"},
      {"http://127.0.0.1:10350/", "http://127.0.0.1:10350/exec/"},
      {"https://[::1]:443/cri/stream", "https://[::1]:443/cri/exec/"},
      {"https://[::1]:443/cri/", "https://[::1]:443/cri/exec/"},
  };
  for (const auto& [base, expected] : cases) {
    RuntimeServiceImpl service(runtime, cache, base);
    auto response = service.exec(execRequest(false, false, true, false));
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_THAT(response->url(), StartsWith(expected)) << base;
    EXPECT_EQ(response->url().size(), std::strlen(expected) + cache::kTokenLength) << base;
  }
}

class FullCacheTest : public RuntimeServiceTest {
 protected:
  static cache::TokenCacheOptions twoEntries() {
    cache::TokenCacheOptions options;
    options.max_in_flight = 2;
    return options;
  }
  FullCacheTest() : RuntimeServiceTest(twoEntries()) {}
};

TEST_F(FullCacheTest, FullCacheIsResourceExhausted) {
  ASSERT_TRUE(service_.exec(execRequest(false, false, true, false)).ok());
  ASSERT_TRUE(service_.attach(attachRequest(false, true, false, false)).ok());
  const std::string text = "maximum number of in-flight requests exceeded";
  expectStatus(service_.exec(execRequest(false, false, true, false)).status(),
               absl::StatusCode::kResourceExhausted, text);
  expectStatus(service_.attach(attachRequest(false, true, false, false)).status(),
               absl::StatusCode::kResourceExhausted, text);
  ::runtime::v1::PortForwardRequest p;
  p.set_pod_sandbox_id("c1");
  expectStatus(service_.portForward(p).status(), absl::StatusCode::kResourceExhausted, text);
  // Through handle() the code and text reach the transport unchanged.
  auto handled = runHandle("Exec", execRequest(false, false, true, false).SerializeAsString());
  expectStatus(handled.status(), absl::StatusCode::kResourceExhausted, text);
}

// --- Field numbers, proven with hand-encoded requests -------------------------

// Tag byte of a varint field: (number << 3) | 0; of a length-delimited field:
// (number << 3) | 2.
std::string varintField(int number, uint8_t value) {
  return std::string{static_cast<char>(number << 3), static_cast<char>(value)};
}
std::string bytesField(int number, const std::string& value) {
  return std::string{static_cast<char>((number << 3) | 2), static_cast<char>(value.size())} + value;
}

TEST_F(RuntimeServiceTest, ExecFieldNumbersOnTheWire) {
  // container_id=1, cmd=2 (twice), tty=3, stdout=5: no stdin, no stderr.
  const std::string tty_only = bytesField(1, "c1") + bytesField(2, "ls") + bytesField(2, "-l") +
                               varintField(3, 1) + varintField(5, 1);
  auto response = runHandle("Exec", tty_only);
  ASSERT_TRUE(response.ok()) << response.status();
  ::runtime::v1::ExecResponse decoded;
  ASSERT_TRUE(decoded.ParseFromString(*response));
  auto stored = consumeUrl(decoded.url(), "exec");
  ASSERT_TRUE(stored.has_value());
  auto spec = std::get<session::ExecSpec>(stored->spec);
  EXPECT_THAT(spec.command, ElementsAre("ls", "-l"));
  EXPECT_TRUE(spec.tty);
  EXPECT_FALSE(spec.stdin);
  EXPECT_TRUE(spec.stdout);
  EXPECT_FALSE(spec.stderr);

  // stdin=4 alone.
  response = runHandle("Exec", bytesField(1, "c1") + varintField(4, 1));
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_TRUE(decoded.ParseFromString(*response));
  stored = consumeUrl(decoded.url(), "exec");
  ASSERT_TRUE(stored.has_value());
  spec = std::get<session::ExecSpec>(stored->spec);
  EXPECT_FALSE(spec.tty);
  EXPECT_TRUE(spec.stdin);
  EXPECT_FALSE(spec.stdout);
  EXPECT_FALSE(spec.stderr);

  // tty=3 with stderr=6 is the tty+stderr error.
  response = runHandle("Exec", bytesField(1, "c1") + varintField(3, 1) + varintField(6, 1));
  expectStatus(response.status(), absl::StatusCode::kInvalidArgument,
               "tty and stderr cannot both be true");
}

TEST_F(RuntimeServiceTest, AttachFieldNumbersOnTheWire) {
  // container_id=1, stdin=2, stdout=4: no tty, no stderr.
  auto response = runHandle("Attach", bytesField(1, "c1") + varintField(2, 1) + varintField(4, 1));
  ASSERT_TRUE(response.ok()) << response.status();
  ::runtime::v1::AttachResponse decoded;
  ASSERT_TRUE(decoded.ParseFromString(*response));
  auto stored = consumeUrl(decoded.url(), "attach");
  ASSERT_TRUE(stored.has_value());
  auto spec = std::get<session::ExecSpec>(stored->spec);
  EXPECT_EQ(spec.operation, session::Operation::kAttach);
  EXPECT_FALSE(spec.tty);
  EXPECT_TRUE(spec.stdin);
  EXPECT_TRUE(spec.stdout);
  EXPECT_FALSE(spec.stderr);

  // tty=3 and stderr=5 together are refused; field 3 is tty here too.
  response = runHandle("Attach", bytesField(1, "c1") + varintField(3, 1) + varintField(5, 1));
  expectStatus(response.status(), absl::StatusCode::kInvalidArgument,
               "tty and stderr cannot both be true");

  // tty=3 alone sets no stream.
  response = runHandle("Attach", bytesField(1, "c1") + varintField(3, 1));
  expectStatus(response.status(), absl::StatusCode::kInvalidArgument,
               "one of stdin, stdout, and stderr must be set");
}

TEST_F(RuntimeServiceTest, PortForwardFieldNumbersOnTheWire) {
  // pod_sandbox_id=1; port=2 packed [80, 8080] then one unpacked 443.
  const std::string packed = std::string{0x12, 0x03, 0x50, static_cast<char>(0x90), 0x3f};
  const std::string unpacked = std::string{0x10, static_cast<char>(0xbb), 0x03};
  auto response = runHandle("PortForward", bytesField(1, "c1") + packed + unpacked);
  ASSERT_TRUE(response.ok()) << response.status();
  ::runtime::v1::PortForwardResponse decoded;
  ASSERT_TRUE(decoded.ParseFromString(*response));
  auto stored = consumeUrl(decoded.url(), "portforward");
  ASSERT_TRUE(stored.has_value());
  auto spec = std::get<session::PortForwardSpec>(stored->spec);
  EXPECT_EQ(spec.pod_sandbox_id, "c1");
  EXPECT_THAT(spec.ports, ElementsAre(80, 8080, 443));
}

// --- Version, Status, ListContainers, ContainerStatus ----------------------------

TEST_F(RuntimeServiceTest, Version) {
  ::runtime::v1::VersionRequest request;
  request.set_version("v1");
  auto response = service_.version(request);
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->version(), "0.1.0");
  EXPECT_EQ(response->runtime_name(), "crisp-embedded");
  EXPECT_EQ(response->runtime_version(), kCrispVersion);
  EXPECT_EQ(response->runtime_api_version(), "v1");
}

TEST_F(RuntimeServiceTest, StatusReportsRuntimeAndNetworkReady) {
  auto response = service_.status({});
  ASSERT_TRUE(response.ok());
  std::map<std::string, bool> conditions;
  for (const auto& c : response->status().conditions()) {
    conditions[c.type()] = c.status();
  }
  EXPECT_EQ(conditions,
            (std::map<std::string, bool>{{"NetworkReady", true}, {"RuntimeReady", true}}));
}

std::vector<std::string> listIds(RuntimeServiceImpl& service,
                                 const ::runtime::v1::ListContainersRequest& request) {
  auto response = service.listContainers(request);
  EXPECT_TRUE(response.ok()) << response.status();
  std::vector<std::string> ids;
  if (response.ok()) {
    for (const auto& c : response->containers()) {
      ids.push_back(c.id());
    }
  }
  return ids;
}

TEST_F(RuntimeServiceTest, ListContainersWithoutFilterListsAll) {
  EXPECT_THAT(listIds(service_, {}), ElementsAre("c1", "c2", "c3"));
  auto response = service_.listContainers({});
  ASSERT_TRUE(response.ok());
  const auto& c1 = response->containers(0);
  EXPECT_EQ(c1.pod_sandbox_id(), "pod-a");
  EXPECT_EQ(c1.metadata().name(), "c1-name");
  EXPECT_EQ(c1.metadata().attempt(), 0u);
  EXPECT_EQ(c1.image().image(), "docker.io/library/busybox:1.36");
  EXPECT_EQ(c1.image_ref(), "docker.io/library/busybox:1.36");
  EXPECT_EQ(c1.state(), ::runtime::v1::CONTAINER_RUNNING);
  EXPECT_EQ(c1.created_at(), 1'700'000'000'000'000'000);
  EXPECT_TRUE(c1.labels().empty());
  EXPECT_EQ(response->containers(1).state(), ::runtime::v1::CONTAINER_EXITED);
  EXPECT_EQ(response->containers(2).state(), ::runtime::v1::CONTAINER_CREATED);
}

TEST_F(RuntimeServiceTest, ListContainersHonoursEachFilter) {
  ::runtime::v1::ListContainersRequest r;
  r.mutable_filter()->set_id("c2");
  EXPECT_THAT(listIds(service_, r), ElementsAre("c2"));
  r.mutable_filter()->set_id("missing");
  EXPECT_THAT(listIds(service_, r), ElementsAre());

  r.Clear();
  r.mutable_filter()->mutable_state()->set_state(::runtime::v1::CONTAINER_RUNNING);
  EXPECT_THAT(listIds(service_, r), ElementsAre("c1"));
  // CONTAINER_CREATED is the zero value; a present state filter still applies.
  r.mutable_filter()->mutable_state()->set_state(::runtime::v1::CONTAINER_CREATED);
  EXPECT_THAT(listIds(service_, r), ElementsAre("c3"));

  r.Clear();
  r.mutable_filter()->set_pod_sandbox_id("pod-a");
  EXPECT_THAT(listIds(service_, r), ElementsAre("c1", "c2"));
  r.mutable_filter()->mutable_state()->set_state(::runtime::v1::CONTAINER_EXITED);
  EXPECT_THAT(listIds(service_, r), ElementsAre("c2"));

  r.Clear();
  (*r.mutable_filter()->mutable_label_selector())["app"] = "web";
  EXPECT_THAT(listIds(service_, r), ElementsAre());

  // An empty filter message filters nothing.
  r.Clear();
  r.mutable_filter();
  EXPECT_THAT(listIds(service_, r), ElementsAre("c1", "c2", "c3"));
}

TEST_F(RuntimeServiceTest, ContainerStatus) {
  ::runtime::v1::ContainerStatusRequest r;
  r.set_container_id("c2");
  auto response = service_.containerStatus(r);
  ASSERT_TRUE(response.ok()) << response.status();
  const auto& s = response->status();
  EXPECT_EQ(s.id(), "c2");
  EXPECT_EQ(s.metadata().name(), "c2-name");
  EXPECT_EQ(s.metadata().attempt(), 0u);
  EXPECT_EQ(s.state(), ::runtime::v1::CONTAINER_EXITED);
  EXPECT_EQ(s.created_at(), 1'700'000'000'000'000'000);
  EXPECT_EQ(s.started_at(), 1'700'000'002'000'000'000);
  EXPECT_EQ(s.image().image(), "docker.io/library/busybox:1.36");
  EXPECT_EQ(s.image_ref(), "docker.io/library/busybox:1.36");

  r.set_container_id("c1");
  response = service_.containerStatus(r);
  ASSERT_TRUE(response.ok());
  EXPECT_EQ(response->status().state(), ::runtime::v1::CONTAINER_RUNNING);

  r.set_container_id("nope");
  expectStatus(service_.containerStatus(r).status(), absl::StatusCode::kNotFound,
               "container \"nope\" not found");
  r.clear_container_id();
  expectStatus(service_.containerStatus(r).status(), absl::StatusCode::kInvalidArgument,
               "missing required container_id");
}

// --- ExecSync ---------------------------------------------------------------------

::runtime::v1::ExecSyncRequest execSyncRequest(int64_t timeout) {
  ::runtime::v1::ExecSyncRequest r;
  r.set_container_id("c1");
  r.add_cmd("sh");
  r.add_cmd("-c");
  r.add_cmd("probe");
  r.set_timeout(timeout);
  return r;
}

// A script: output in two chunks per stream, then an exit.
FakeRuntime::Script outputThenExit(session::ExitStatus status) {
  return [status](event::Dispatcher& d, session::ExecCallbacks& cb,
                  std::shared_ptr<ProcessProbe> probe) {
    postUnlessKilled(d, probe, [&cb] {
      Buffer out = bufferOf("hello ");
      Buffer err = bufferOf("warn");
      cb.onStdout(out);
      cb.onStderr(err);
      EXPECT_TRUE(out.empty());
      EXPECT_TRUE(err.empty());
    });
    postUnlessKilled(d, probe, [&cb, status] {
      Buffer out = bufferOf("world\n");
      cb.onStdout(out);
      cb.onExit(status);
    });
  };
}

TEST_F(RuntimeServiceTest, ExecSyncCollectsOutputAndExitCode) {
  runtime_.script = outputThenExit(session::ExitStatus::exited(3));
  auto response = runExecSync(execSyncRequest(0));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->stdout(), "hello world\n");
  EXPECT_EQ(response->stderr(), "warn");
  EXPECT_EQ(response->exit_code(), 3);

  ASSERT_EQ(runtime_.started.size(), 1u);
  const session::ExecSpec& spec = runtime_.started[0];
  EXPECT_EQ(spec.operation, session::Operation::kExec);
  EXPECT_EQ(spec.container_id, "c1");
  EXPECT_THAT(spec.command, ElementsAre("sh", "-c", "probe"));
  EXPECT_FALSE(spec.tty);
  EXPECT_FALSE(spec.stdin);
  EXPECT_TRUE(spec.stdout);
  EXPECT_TRUE(spec.stderr);
  EXPECT_TRUE(runtime_.probe->stdin_closed);
  EXPECT_EQ(service_.execSyncInFlight(), 0u);
}

TEST_F(RuntimeServiceTest, ExecSyncSuccessIsExitCodeZero) {
  runtime_.script = outputThenExit(session::ExitStatus::success());
  auto response = runExecSync(execSyncRequest(10));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->exit_code(), 0);
  EXPECT_EQ(response->stdout(), "hello world\n");
}

TEST_F(RuntimeServiceTest, ExecSyncRuntimeErrorIsUnknown) {
  runtime_.script = outputThenExit(session::ExitStatus::error("exec: \"probe\": not found"));
  auto response = runExecSync(execSyncRequest(0));
  expectStatus(response.status(), absl::StatusCode::kUnknown,
               "failed to exec in container: exec: \"probe\": not found");
}

TEST_F(RuntimeServiceTest, ExecSyncStartFailurePassesCodeThrough) {
  runtime_.start_error = absl::UnavailableError("spawn failed");
  auto response = runExecSync(execSyncRequest(0));
  expectStatus(response.status(), absl::StatusCode::kUnavailable,
               "failed to exec in container: spawn failed");
  EXPECT_EQ(service_.execSyncInFlight(), 0u);
}

TEST_F(RuntimeServiceTest, ExecSyncExitInsideStartExec) {
  runtime_.script = [](event::Dispatcher&, session::ExecCallbacks& cb,
                       std::shared_ptr<ProcessProbe>) {
    Buffer out = bufferOf("early");
    cb.onStdout(out);
    cb.onExit(session::ExitStatus::exited(1));
  };
  auto response = runExecSync(execSyncRequest(5));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->stdout(), "early");
  EXPECT_EQ(response->exit_code(), 1);
  EXPECT_FALSE(runtime_.probe->stdin_closed);
  EXPECT_EQ(service_.execSyncInFlight(), 0u);
}

TEST_F(RuntimeServiceTest, ExecSyncTimeoutKillsAndFailsWithDeadlineExceeded) {
  // The process prints once and then never exits.
  runtime_.script = [](event::Dispatcher& d, session::ExecCallbacks& cb,
                       std::shared_ptr<ProcessProbe> probe) {
    postUnlessKilled(d, probe, [&cb] {
      Buffer out = bufferOf("partial");
      cb.onStdout(out);
    });
  };
  const auto start = std::chrono::steady_clock::now();
  auto response = runExecSync(execSyncRequest(1));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  expectStatus(response.status(), absl::StatusCode::kDeadlineExceeded,
               "failed to exec in container: timeout 1s exceeded");
  EXPECT_GE(elapsed, std::chrono::milliseconds(900));
  EXPECT_LT(elapsed, std::chrono::seconds(3));
  ASSERT_NE(runtime_.probe, nullptr);
  EXPECT_TRUE(runtime_.probe->destroyed);
  EXPECT_EQ(service_.execSyncInFlight(), 0u);
}

TEST_F(RuntimeServiceTest, ExecSyncCapsEachStreamAt16MiB) {
  constexpr size_t kChunk = 1 << 20;
  runtime_.script = [](event::Dispatcher& d, session::ExecCallbacks& cb,
                       std::shared_ptr<ProcessProbe> probe) {
    postUnlessKilled(d, probe, [&cb] {
      const std::string chunk(kChunk, 'o');
      // 17 MiB and 5 bytes of stdout, 1 byte past the limit of stderr.
      for (int i = 0; i < 17; ++i) {
        Buffer out = bufferOf(chunk);
        cb.onStdout(out);
        ASSERT_TRUE(out.empty()) << "output beyond the cap must still be taken";
      }
      Buffer tail = bufferOf("tail!");
      cb.onStdout(tail);
      Buffer err = bufferOf(std::string(kExecSyncOutputLimit + 1, 'e'));
      cb.onStderr(err);
      cb.onExit(session::ExitStatus::exited(0));
    });
  };
  auto response = runExecSync(execSyncRequest(0));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->stdout().size(), kExecSyncOutputLimit);
  EXPECT_EQ(response->stdout().find_first_not_of('o'), std::string::npos);
  EXPECT_EQ(response->stderr().size(), kExecSyncOutputLimit);
  EXPECT_EQ(response->exit_code(), 0);
}

TEST_F(RuntimeServiceTest, ExecSyncRejectsBadRequestsWithoutStarting) {
  auto r = execSyncRequest(0);
  r.clear_container_id();
  expectStatus(runExecSync(r).status(), absl::StatusCode::kInvalidArgument,
               "missing required container_id");
  r = execSyncRequest(0);
  r.clear_cmd();
  expectStatus(runExecSync(r).status(), absl::StatusCode::kInvalidArgument, "missing required cmd");
  r = execSyncRequest(-1);
  EXPECT_EQ(runExecSync(r).status().code(), absl::StatusCode::kInvalidArgument);
  r = execSyncRequest(0);
  r.set_container_id("nope");
  expectStatus(runExecSync(r).status(), absl::StatusCode::kNotFound,
               "container \"nope\" not found");
  r.set_container_id("c2");
  EXPECT_EQ(runExecSync(r).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(runtime_.started.empty());
}

TEST(RuntimeServiceLifetimeTest, CancellingAnExecSyncKillsItsCommandAndDropsItsAnswer) {
  FixedTimeSource time;
  CountingRandomSource random;
  cache::TokenCache cache({}, time, random);
  FakeRuntime runtime;
  runtime.containers = {makeContainer("c1", "c1", true, 1)};
  event::Dispatcher dispatcher;
  RuntimeServiceImpl service(runtime, cache, kBase);
  bool called = false;
  std::function<void()> cancel;
  // No timeout: only the cancellation can end this command.
  ASSERT_TRUE(service.handle(
      "/runtime.v1.RuntimeService/ExecSync", execSyncRequest(0).SerializeAsString(), dispatcher,
      [&](absl::StatusOr<std::string>) { called = true; }, &cancel));
  ASSERT_TRUE(cancel);
  ASSERT_NE(runtime.probe, nullptr);
  EXPECT_FALSE(runtime.probe->destroyed);
  EXPECT_EQ(service.execSyncInFlight(), 1u);
  cancel();
  EXPECT_TRUE(runtime.probe->destroyed);
  EXPECT_EQ(service.execSyncInFlight(), 0u);
  // Cancelling again, or after the end, is harmless.
  cancel();
  EXPECT_FALSE(called);
}

TEST(RuntimeServiceLifetimeTest, UnaryCallsNeedNoCancellation) {
  FixedTimeSource time;
  CountingRandomSource random;
  cache::TokenCache cache({}, time, random);
  FakeRuntime runtime;
  event::Dispatcher dispatcher;
  RuntimeServiceImpl service(runtime, cache, kBase);
  std::function<void()> cancel;
  ASSERT_TRUE(service.handle(
      "/runtime.v1.RuntimeService/Version", "", dispatcher, [](absl::StatusOr<std::string>) {},
      &cancel));
  EXPECT_FALSE(cancel);
}

TEST(RuntimeServiceLifetimeTest, DestroyingServiceEndsRunningExecSync) {
  FixedTimeSource time;
  CountingRandomSource random;
  cache::TokenCache cache({}, time, random);
  FakeRuntime runtime;
  runtime.containers = {makeContainer("c1", "c1", true, 1)};
  event::Dispatcher dispatcher;
  bool called = false;
  {
    RuntimeServiceImpl service(runtime, cache, kBase);
    service.execSync(dispatcher, execSyncRequest(0),
                     [&](absl::StatusOr<::runtime::v1::ExecSyncResponse>) { called = true; });
    EXPECT_EQ(service.execSyncInFlight(), 1u);
    ASSERT_NE(runtime.probe, nullptr);
    EXPECT_FALSE(runtime.probe->destroyed);
  }
  EXPECT_TRUE(runtime.probe->destroyed);
  EXPECT_FALSE(called);
}

// --- handle() ---------------------------------------------------------------------

TEST_F(RuntimeServiceTest, HandleRoutesEachAnsweredMethod) {
  auto version = runHandle("Version", "");
  ASSERT_TRUE(version.ok());
  ::runtime::v1::VersionResponse v;
  ASSERT_TRUE(v.ParseFromString(*version));
  EXPECT_EQ(v.runtime_name(), "crisp-embedded");

  auto status = runHandle("Status", "");
  ASSERT_TRUE(status.ok());
  ::runtime::v1::StatusResponse s;
  ASSERT_TRUE(s.ParseFromString(*status));
  EXPECT_EQ(s.status().conditions_size(), 2);

  ::runtime::v1::ListContainersRequest list;
  list.mutable_filter()->set_id("c3");
  auto listed = runHandle("ListContainers", list.SerializeAsString());
  ASSERT_TRUE(listed.ok());
  ::runtime::v1::ListContainersResponse l;
  ASSERT_TRUE(l.ParseFromString(*listed));
  ASSERT_EQ(l.containers_size(), 1);
  EXPECT_EQ(l.containers(0).id(), "c3");

  ::runtime::v1::ContainerStatusRequest cs;
  cs.set_container_id("nope");
  expectStatus(runHandle("ContainerStatus", cs.SerializeAsString()).status(),
               absl::StatusCode::kNotFound, "container \"nope\" not found");

  runtime_.script = outputThenExit(session::ExitStatus::exited(7));
  auto exec_sync = runHandle("ExecSync", execSyncRequest(0).SerializeAsString());
  ASSERT_TRUE(exec_sync.ok()) << exec_sync.status();
  ::runtime::v1::ExecSyncResponse es;
  ASSERT_TRUE(es.ParseFromString(*exec_sync));
  EXPECT_EQ(es.exit_code(), 7);
  EXPECT_EQ(es.stdout(), "hello world\n");
}

TEST_F(RuntimeServiceTest, HandleDeclinesOtherMethods) {
  for (const char* path : {
           "/runtime.v1.RuntimeService/RunPodSandbox",
           "/runtime.v1.RuntimeService/GetContainerEvents",
           "/runtime.v1.ImageService/ListImages",
           "/runtime.v1.RuntimeService/ExecSyncX",
           "/runtime.v1.RuntimeService/",
           "/runtime.v1.RuntimeServiceX/Exec",
           "/runtime.v1alpha2.RuntimeService/Exec",
           "runtime.v1.RuntimeService/Exec",
           "",
       }) {
    bool called = false;
    EXPECT_FALSE(service_.handle(path, "", dispatcher_, [&](absl::StatusOr<std::string>) {
      called = true;
    })) << path;
    EXPECT_FALSE(RuntimeServiceImpl::implements(path)) << path;
    EXPECT_FALSE(called) << path;
  }
  EXPECT_TRUE(RuntimeServiceImpl::implements("/runtime.v1.RuntimeService/PortForward"));
  EXPECT_EQ(unimplementedMessage("/runtime.v1.RuntimeService/RunPodSandbox"),
            "crisp's embedded runtime does not implement "
            "/runtime.v1.RuntimeService/RunPodSandbox");
}

TEST_F(RuntimeServiceTest, HandleRejectsUndecodableBytes) {
  // A length-delimited field 1 that claims 5 bytes and carries 2; then a bare
  // tag with no value; then a wire type (7) that does not exist.
  for (const std::string& bytes : {std::string("\x0a\x05"
                                               "ab"),
                                   std::string("\x08"), std::string("\x0f\x01")}) {
    for (const char* method : {"Exec", "Attach", "PortForward", "ExecSync", "ListContainers",
                               "ContainerStatus", "Version", "Status"}) {
      auto result = runHandle(method, bytes);
      EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << method;
      EXPECT_THAT(std::string(result.status().message()), HasSubstr("cannot decode request"));
    }
  }
  EXPECT_TRUE(runtime_.started.empty());
  EXPECT_EQ(cache_.size(), 0u);
}

TEST_F(RuntimeServiceTest, HandleFromAnotherThreadAnswersOnTheLoopThread) {
  std::thread::id answered_on;
  std::optional<absl::StatusOr<std::string>> result;
  const std::thread::id loop_thread = std::this_thread::get_id();
  // Hold the loop until it runs, so that the caller is off the loop thread.
  dispatcher_.post([&] {
    std::thread caller([&] {
      EXPECT_TRUE(service_.handle(std::string(kPrefix) + "Exec",
                                  execRequest(false, false, true, false).SerializeAsString(),
                                  dispatcher_, [&](absl::StatusOr<std::string> r) {
                                    answered_on = std::this_thread::get_id();
                                    result = std::move(r);
                                    stopLoop();
                                  }));
    });
    caller.join();
    EXPECT_FALSE(result.has_value()) << "answered on the caller's thread";
  });
  runLoop();
  ASSERT_TRUE(result.has_value());
  ASSERT_TRUE(result->ok()) << result->status();
  EXPECT_EQ(answered_on, loop_thread);
}

}  // namespace
}  // namespace crisp::cri
