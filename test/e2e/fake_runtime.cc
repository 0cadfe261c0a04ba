// fake_runtime: a stand-in for a container runtime's CRI socket, for tests of
// crisp's passthrough. It answers Version with runtime_name "fake-runtime" and
// every other method with UNIMPLEMENTED naming the method, so a test can tell
// which side answered a call.
//
//   fake_runtime SOCKET_PATH

#include <cstdio>
#include <string>

#include "api/runtime/v1/api.pb.h"

#include "source/common/dispatcher.h"
#include "source/cri/grpc_server.h"

namespace {

class Unimplemented : public crisp::cri::CallHandler {
 public:
  void onCall(std::unique_ptr<crisp::cri::ServerCall> call) override {
    call->finish(absl::UnimplementedError("fake-runtime does not implement " + call->path()));
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fputs("usage: fake_runtime SOCKET_PATH\n", stderr);
    return 2;
  }
  crisp::event::Dispatcher dispatcher;
  crisp::cri::GrpcServer server(dispatcher);
  Unimplemented unimplemented;
  server.registerUnary("/runtime.v1.RuntimeService/Version",
                       [](std::string request, crisp::cri::GrpcServer::UnaryDone done) {
                         runtime::v1::VersionRequest in;
                         if (!in.ParseFromString(request)) {
                           done(absl::InvalidArgumentError("bad VersionRequest"));
                           return;
                         }
                         runtime::v1::VersionResponse out;
                         out.set_version("0.1.0");
                         out.set_runtime_name("fake-runtime");
                         out.set_runtime_version("9.9.9");
                         out.set_runtime_api_version("v1");
                         done(out.SerializeAsString());
                       });
  server.setFallback(&unimplemented);
  if (auto s = server.listenUnix(argv[1], 0600); !s.ok()) {
    std::fprintf(stderr, "fake_runtime: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  std::printf("listening on %s\n", argv[1]);
  std::fflush(stdout);
  dispatcher.run();
  return 0;
}
