// cricall: a small CRI client for crisp's tests and for people trying crisp by
// hand. It makes one call on a CRI socket and prints the answer.
//
//   cricall --socket S version
//   cricall --socket S exec [--tty] [--stdin] [--no-stdout] [--stderr] CONTAINER -- CMD...
//   cricall --socket S attach [--tty] [--stdin] [--no-stdout] [--stderr] CONTAINER
//   cricall --socket S portforward SANDBOX [PORT...]
//   cricall --socket S raw METHOD_PATH      (empty request; prints the response size)
//
// version prints "<runtime_name> <runtime_version> <runtime_api_version>"; exec,
// attach and portforward print the stream URL. A failed call prints
// "<CODE>: <message>" on stderr and exits 1; bad arguments exit 2.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "api/runtime/v1/api.pb.h"

#include "source/cri/grpc_client.h"

namespace {

constexpr char kUsage[] =
    "usage: cricall --socket PATH version\n"
    "       cricall --socket PATH exec [--tty] [--stdin] [--no-stdout] [--stderr] CONTAINER -- "
    "CMD...\n"
    "       cricall --socket PATH attach [--tty] [--stdin] [--no-stdout] [--stderr] CONTAINER\n"
    "       cricall --socket PATH portforward SANDBOX [PORT...]\n"
    "       cricall --socket PATH raw METHOD_PATH\n";

constexpr char kRuntimeService[] = "/runtime.v1.RuntimeService/";
constexpr std::chrono::seconds kTimeout{10};

int usage() {
  std::fputs(kUsage, stderr);
  return 2;
}

int fail(const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

// Calls `method` with `request` and parses the answer into `response`.
int call(const std::string& socket, const std::string& method,
         const google::protobuf::Message& request, google::protobuf::Message& response) {
  auto bytes = crisp::cri::unaryCallBlocking(socket, kRuntimeService + method,
                                             request.SerializeAsString(), kTimeout);
  if (!bytes.ok()) {
    return fail(bytes.status());
  }
  if (!response.ParseFromString(*bytes)) {
    std::fprintf(stderr, "cricall: cannot parse the %s response\n", method.c_str());
    return 1;
  }
  return 0;
}

struct StreamFlags {
  bool tty = false;
  bool stdin = false;
  bool stdout = true;
  bool stderr = false;
};

// Consumes leading --flags from args[i...]; returns false on an unknown flag.
bool parseStreamFlags(const std::vector<std::string>& args, size_t& i, StreamFlags& flags) {
  for (; i < args.size() && args[i].rfind("--", 0) == 0 && args[i] != "--"; ++i) {
    if (args[i] == "--tty") {
      flags.tty = true;
    } else if (args[i] == "--stdin") {
      flags.stdin = true;
    } else if (args[i] == "--no-stdout") {
      flags.stdout = false;
    } else if (args[i] == "--stderr") {
      flags.stderr = true;
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 3 || args[0] != "--socket") {
    return usage();
  }
  const std::string socket = args[1];
  const std::string verb = args[2];
  size_t i = 3;

  if (verb == "version" && i == args.size()) {
    runtime::v1::VersionRequest request;
    request.set_version("v1");
    runtime::v1::VersionResponse response;
    if (int rc = call(socket, "Version", request, response); rc != 0) {
      return rc;
    }
    std::printf("%s %s %s\n", response.runtime_name().c_str(),
                response.runtime_version().c_str(), response.runtime_api_version().c_str());
    return 0;
  }

  if (verb == "exec" || verb == "attach") {
    StreamFlags flags;
    if (!parseStreamFlags(args, i, flags) || i >= args.size()) {
      return usage();
    }
    const std::string container = args[i++];
    int rc;
    std::string url;
    if (verb == "exec") {
      if (i >= args.size() || args[i] != "--" || i + 1 >= args.size()) {
        return usage();
      }
      runtime::v1::ExecRequest request;
      request.set_container_id(container);
      for (++i; i < args.size(); ++i) {
        request.add_cmd(args[i]);
      }
      request.set_tty(flags.tty);
      request.set_stdin(flags.stdin);
      request.set_stdout(flags.stdout);
      request.set_stderr(flags.stderr);
      runtime::v1::ExecResponse response;
      rc = call(socket, "Exec", request, response);
      url = response.url();
    } else {
      if (i != args.size()) {
        return usage();
      }
      runtime::v1::AttachRequest request;
      request.set_container_id(container);
      request.set_tty(flags.tty);
      request.set_stdin(flags.stdin);
      request.set_stdout(flags.stdout);
      request.set_stderr(flags.stderr);
      runtime::v1::AttachResponse response;
      rc = call(socket, "Attach", request, response);
      url = response.url();
    }
    if (rc == 0) {
      std::printf("%s\n", url.c_str());
    }
    return rc;
  }

  if (verb == "portforward" && i < args.size()) {
    runtime::v1::PortForwardRequest request;
    request.set_pod_sandbox_id(args[i++]);
    for (; i < args.size(); ++i) {
      request.add_port(std::atoi(args[i].c_str()));
    }
    runtime::v1::PortForwardResponse response;
    if (int rc = call(socket, "PortForward", request, response); rc != 0) {
      return rc;
    }
    std::printf("%s\n", response.url().c_str());
    return 0;
  }

  if (verb == "raw" && i + 1 == args.size()) {
    auto bytes = crisp::cri::unaryCallBlocking(socket, args[i], "", kTimeout);
    if (!bytes.ok()) {
      return fail(bytes.status());
    }
    std::printf("%zu\n", bytes->size());
    return 0;
  }
  return usage();
}
