// Fuzz target for what the kubelet sends crisp on the CRI socket once HTTP/2
// has delivered a stream's DATA: the gRPC message framing
// (GrpcMessageDecoder) and the protobuf decoding and handling of every call
// crisp answers itself (RuntimeServiceImpl::handle()), Exec, Attach and
// PortForward above all, which turn a request into a token.
//
// Input layout (test/fuzz/fuzz_input.h): byte 0 options, byte 1 and the chunk
// sizes, then the DATA bytes of one request stream. Options:
//   bits 0-2    the method: Exec, Attach, PortForward, ExecSync, Version,
//               Status, ListContainers, ContainerStatus
//   bit 3       message size limit: 16 MiB or 64 bytes
//   bit 4       the token cache holds one request at most (else 1000)
// The runtime behind it is a fixed list of containers ("demo" and "tty" run,
// "stopped" does not; "demo" and "tty" share the sandbox "pod") that refuses
// to start processes.
//
// Properties checked on every input:
//   - no crash, leak or sanitizer report, whatever the bytes;
//   - feeding in chunks gives the same messages, status and held bytes as
//     feeding the whole input at once; a declared length above the limit is
//     RESOURCE_EXHAUSTED, a compressed message INTERNAL;
//   - every message gets exactly one answer; a failure has a gRPC code the
//     call documents and a message; a success decodes as the call's response;
//   - Exec, Attach and PortForward answer <base><operation>/<token> with a
//     token of 22 base64url characters, and that token gives back, once, the
//     very container, command, flags and ports of the request.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "api/runtime/v1/api.pb.h"

#include "source/admin/metrics.h"
#include "source/cache/token_cache.h"
#include "source/common/dispatcher.h"
#include "source/common/time.h"
#include "source/cri/grpc_common.h"
#include "source/cri/runtime_service.h"

#include "test/fuzz/fuzz_check.h"
#include "test/fuzz/fuzz_input.h"

namespace crisp::cri::fuzz {
namespace {

constexpr char kBase[] = "http://127.0.0.1:10350/";

constexpr const char* kMethods[] = {"Exec",   "Attach", "PortForward",    "ExecSync",
                                    "Version", "Status", "ListContainers", "ContainerStatus"};

class FixedRuntime : public session::Runtime {
 public:
  FixedRuntime() {
    for (const auto& [id, sandbox, running] :
         {std::tuple{"demo", "pod", true}, {"tty", "pod", true}, {"stopped", "other", false}}) {
      session::ContainerInfo c;
      c.id = id;
      c.name = id;
      c.pod_sandbox_id = sandbox;
      c.running = running;
      containers_.push_back(c);
    }
  }
  std::vector<session::ContainerInfo> listContainers() const override { return containers_; }
  absl::StatusOr<session::ContainerInfo> container(const std::string& id) const override {
    for (const auto& c : containers_) {
      if (c.id == id) {
        return c;
      }
    }
    return absl::NotFoundError("no such container");
  }
  absl::StatusOr<std::unique_ptr<session::ExecProcess>> startExec(
      event::Dispatcher&, const session::ExecSpec&, std::optional<session::TerminalSize>,
      session::ExecCallbacks&) override {
    return absl::UnavailableError("the fuzzing runtime starts no process");
  }
  absl::StatusOr<std::unique_ptr<session::PortConnection>> connectPort(
      event::Dispatcher&, const std::string&, uint16_t, session::PortCallbacks&) override {
    return absl::UnavailableError("the fuzzing runtime connects nowhere");
  }

 private:
  std::vector<session::ContainerInfo> containers_;
};

class CountingRandom : public RandomSource {
 public:
  bool fill(void* out, size_t len) override {
    auto* bytes = static_cast<uint8_t*>(out);
    for (size_t i = 0; i < len; ++i) {
      bytes[i] = static_cast<uint8_t>(next_++ * 131 + 7);
    }
    return true;
  }

 private:
  uint64_t next_ = 0;
};

struct Decoded {
  std::vector<std::string> messages;
  absl::Status status;
  size_t buffered = 0;
};

Decoded decode(std::string_view wire, const std::vector<size_t>& chunks, size_t limit) {
  GrpcMessageDecoder decoder(limit);
  Decoded out;
  crisp::fuzz::feedInChunks(wire, chunks, [&](std::string_view piece) {
    const absl::Status s =
        decoder.decode(reinterpret_cast<const uint8_t*>(piece.data()), piece.size(), out.messages);
    if (out.status.ok()) {
      out.status = s;
    } else {
      FUZZ_CHECK(s == out.status, "a failed decoder changed its status");
    }
    return true;
  });
  out.buffered = decoder.bufferedBytes();
  if (out.status.ok()) {
    const absl::Status end = decoder.finish();
    FUZZ_CHECK(end.ok() == (out.buffered == 0), "finish() and bufferedBytes() disagree");
  }
  return out;
}

bool isTokenChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

// The request stored under the token at the end of `url`, checked against the
// URL's shape.
session::StreamRequest takeToken(cache::TokenCache& cache, const std::string& url,
                                 std::string_view operation) {
  const std::string prefix = std::string(kBase) + std::string(operation) + "/";
  FUZZ_CHECK(absl::StartsWith(url, prefix), "URL " + crisp::fuzz::hexEscaped(url));
  const std::string token = url.substr(prefix.size());
  FUZZ_CHECK(token.size() == cache::kTokenLength, "token length in " + url);
  for (char c : token) {
    FUZZ_CHECK(isTokenChar(c), "token character in " + url);
  }
  std::optional<session::StreamRequest> request = cache.consume(token);
  FUZZ_CHECK(request.has_value(), "the token of " + url + " is not in the cache");
  FUZZ_CHECK(!cache.consume(token).has_value(), "a token consumed twice");
  return std::move(*request);
}

template <class Request>
void checkExecSpec(const session::StreamRequest& stored, const Request& request,
                   session::Operation op) {
  const auto* spec = std::get_if<session::ExecSpec>(&stored.spec);
  FUZZ_CHECK(spec != nullptr && spec->operation == op, "stored request of another kind");
  FUZZ_CHECK(spec->container_id == request.container_id() && spec->tty == request.tty() &&
                 spec->stdin == request.stdin() && spec->stdout == request.stdout() &&
                 spec->stderr == request.stderr(),
             "stored container or flags differ from the request");
}

void checkAnswer(int method, const std::string& message, const absl::StatusOr<std::string>& answer,
                 cache::TokenCache& cache) {
  using namespace ::runtime::v1;  // NOLINT(google-build-using-namespace)
  if (!answer.ok()) {
    const absl::StatusCode code = answer.status().code();
    FUZZ_CHECK(!answer.status().message().empty(), "a failure without a message");
    const bool documented =
        code == absl::StatusCode::kInvalidArgument || code == absl::StatusCode::kNotFound ||
        code == absl::StatusCode::kFailedPrecondition ||
        code == absl::StatusCode::kResourceExhausted ||
        (method == 3 && code == absl::StatusCode::kUnavailable);
    FUZZ_CHECK(documented, absl::StrCat(kMethods[method], ": ", answer.status().ToString()));
    return;
  }
  switch (method) {
    case 0: {
      ExecRequest request;
      FUZZ_CHECK(request.ParseFromString(message), "Exec answered an undecodable request");
      ExecResponse response;
      FUZZ_CHECK(response.ParseFromString(*answer), "ExecResponse does not decode");
      const session::StreamRequest stored = takeToken(cache, response.url(), "exec");
      checkExecSpec(stored, request, session::Operation::kExec);
      const auto& command = std::get<session::ExecSpec>(stored.spec).command;
      FUZZ_CHECK(std::equal(command.begin(), command.end(), request.cmd().begin(),
                            request.cmd().end()),
                 "stored command differs from the request");
      break;
    }
    case 1: {
      AttachRequest request;
      FUZZ_CHECK(request.ParseFromString(message), "Attach answered an undecodable request");
      AttachResponse response;
      FUZZ_CHECK(response.ParseFromString(*answer), "AttachResponse does not decode");
      const session::StreamRequest stored = takeToken(cache, response.url(), "attach");
      checkExecSpec(stored, request, session::Operation::kAttach);
      FUZZ_CHECK(std::get<session::ExecSpec>(stored.spec).command.empty(),
                 "attach stored a command");
      break;
    }
    case 2: {
      PortForwardRequest request;
      FUZZ_CHECK(request.ParseFromString(message), "PortForward answered an undecodable request");
      PortForwardResponse response;
      FUZZ_CHECK(response.ParseFromString(*answer), "PortForwardResponse does not decode");
      const session::StreamRequest stored = takeToken(cache, response.url(), "portforward");
      const auto* spec = std::get_if<session::PortForwardSpec>(&stored.spec);
      FUZZ_CHECK(spec != nullptr && spec->pod_sandbox_id == request.pod_sandbox_id(),
                 "stored sandbox differs from the request");
      FUZZ_CHECK(spec->ports.size() == static_cast<size_t>(request.port_size()),
                 "stored ports differ from the request");
      for (int i = 0; i < request.port_size(); ++i) {
        FUZZ_CHECK(spec->ports[i] == request.port(i), "stored ports differ from the request");
      }
      break;
    }
    case 3: {
      ExecSyncResponse response;
      FUZZ_CHECK(response.ParseFromString(*answer), "ExecSyncResponse does not decode");
      break;
    }
    case 4: {
      VersionResponse response;
      FUZZ_CHECK(response.ParseFromString(*answer) && response.runtime_api_version() == "v1",
                 "VersionResponse");
      break;
    }
    case 5: {
      StatusResponse response;
      FUZZ_CHECK(response.ParseFromString(*answer), "StatusResponse does not decode");
      break;
    }
    case 6: {
      ListContainersResponse response;
      FUZZ_CHECK(response.ParseFromString(*answer) && response.containers_size() <= 3,
                 "ListContainersResponse");
      break;
    }
    case 7: {
      ContainerStatusResponse response;
      FUZZ_CHECK(response.ParseFromString(*answer), "ContainerStatusResponse does not decode");
      break;
    }
  }
}

}  // namespace
}  // namespace crisp::cri::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace crisp;             // NOLINT(google-build-using-namespace)
  using namespace crisp::cri;        // NOLINT(google-build-using-namespace)
  using namespace crisp::cri::fuzz;  // NOLINT(google-build-using-namespace)
  std::optional<crisp::fuzz::SteeredInput> in = crisp::fuzz::splitInput(data, size);
  if (!in) {
    return 0;
  }
  const int method = in->options & 7;
  const size_t limit = (in->options & 8) != 0 ? 64 : kDefaultMaxMessageBytes;

  const Decoded chunked = decode(in->wire, in->chunks, limit);
  const Decoded whole = decode(in->wire, {}, limit);
  FUZZ_CHECK(chunked.messages == whole.messages,
             absl::StrCat("chunked feed gave ", chunked.messages.size(), " messages, whole feed ",
                          whole.messages.size()));
  FUZZ_CHECK(chunked.status == whole.status, "chunked feed ended with " +
                                                 chunked.status.ToString() + ", whole feed with " +
                                                 whole.status.ToString());
  FUZZ_CHECK(!whole.status.ok() || chunked.buffered == whole.buffered, "held bytes differ");
  FUZZ_CHECK(whole.status.ok() || whole.status.code() == absl::StatusCode::kResourceExhausted ||
                 whole.status.code() == absl::StatusCode::kInternal,
             whole.status.ToString());
  for (const std::string& m : whole.messages) {
    FUZZ_CHECK(m.size() <= limit, "a message above the limit");
  }

  static crisp::event::Dispatcher dispatcher;
  static RealTimeSource time;
  CountingRandom random;
  stats::Registry registry;
  cache::TokenCacheOptions options;
  options.max_in_flight = (in->options & 0x10) != 0 ? 1 : 1000;
  options.registry = &registry;
  cache::TokenCache cache(options, time, random);
  FixedRuntime runtime;
  {
    RuntimeServiceImpl service(runtime, cache, kBase);
    const std::string path = absl::StrCat("/runtime.v1.RuntimeService/", kMethods[method]);
    FUZZ_CHECK(RuntimeServiceImpl::implements(path), path);
    for (const std::string& message : whole.messages) {
      int answers = 0;
      absl::StatusOr<std::string> answer;
      service.handle(path, message, dispatcher, [&](absl::StatusOr<std::string> r) {
        ++answers;
        answer = std::move(r);
      });
      // Anything the call posted runs before the loop stops.
      dispatcher.post([] { dispatcher.exit(); });
      dispatcher.run();
      FUZZ_CHECK(answers == 1, absl::StrCat(path, " answered ", answers, " times"));
      checkAnswer(method, message, answer, cache);
    }
    FUZZ_CHECK(service.execSyncInFlight() == 0, "an ExecSync still running");
  }
  FUZZ_CHECK(cache.size() == 0, "a token left in the cache");
  return 0;
}
