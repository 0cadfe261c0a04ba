// fake_cri: a test-only CRI runtime service on a unix socket, for testing
// devapiserver without crisp. It serves a fixed container list and answers
// Exec, Attach and PortForward with a configured URL, recording each request.
//
//   fake_cri --socket /tmp/x/cri.sock --stream-url http://127.0.0.1:4000/exec/t
//       --container demo,cid1,sid1,running --annotation cid1,crisp.dev/tty=false
//       --record /tmp/x/calls.jsonl --ready-file /tmp/x/ready
//
// --container NAME,ID,SANDBOX,STATE   STATE: created, running, exited, unknown
// --label ID,KEY=VALUE / --annotation ID,KEY=VALUE
// --exit-code ID,N                    ContainerStatus exit code of an exited container
// --fail ID,CODE,MESSAGE              Exec/Attach/PortForward for that container (or its
//                                     sandbox) fail with gRPC code CODE (a number)
// --record FILE                       one JSON line per streaming call:
//                                     {"method":"Exec","request":{...proto JSON...}}

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "api/runtime/v1/api.pb.h"
#include <google/protobuf/util/json_util.h>
#include <signal.h>
#include <stdio.h>

#include "source/common/dispatcher.h"
#include "source/cri/grpc_server.h"

namespace crisp::devapi {
namespace {

struct Failure {
  absl::StatusCode code = absl::StatusCode::kOk;
  std::string message;
};

struct Config {
  std::string socket;
  std::string stream_url;
  std::string record;
  std::string ready_file;
  runtime::v1::ListContainersResponse containers;
  std::map<std::string, int32_t> exit_codes;
  std::map<std::string, Failure> failures;  // by container id
};

bool splitKeyValue(const std::string& text, std::string* id, std::string* key, std::string* value) {
  const std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits(',', 1));
  if (parts.size() != 2) {
    return false;
  }
  const size_t eq = parts[1].find('=');
  if (eq == std::string::npos) {
    return false;
  }
  *id = parts[0];
  *key = parts[1].substr(0, eq);
  *value = parts[1].substr(eq + 1);
  return true;
}

runtime::v1::Container* findContainer(Config& config, const std::string& id) {
  for (auto& c : *config.containers.mutable_containers()) {
    if (c.id() == id) {
      return &c;
    }
  }
  return nullptr;
}

bool parseArgs(int argc, char** argv, Config* config, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) {
      *error = absl::StrCat(flag, " needs a value");
      return false;
    }
    const std::string value = argv[++i];
    if (flag == "--socket") {
      config->socket = value;
    } else if (flag == "--stream-url") {
      config->stream_url = value;
    } else if (flag == "--record") {
      config->record = value;
    } else if (flag == "--ready-file") {
      config->ready_file = value;
    } else if (flag == "--container") {
      const std::vector<std::string> parts = absl::StrSplit(value, ',');
      if (parts.size() != 4) {
        *error = "--container needs NAME,ID,SANDBOX,STATE";
        return false;
      }
      runtime::v1::Container* c = config->containers.add_containers();
      c->mutable_metadata()->set_name(parts[0]);
      c->set_id(parts[1]);
      c->set_pod_sandbox_id(parts[2]);
      c->mutable_image()->set_image("registry.example/fake:1");
      // A fixed creation time keeps listings reproducible: 2024-01-01T00:00:00Z.
      c->set_created_at(1704067200LL * 1000000000LL);
      const std::map<std::string, runtime::v1::ContainerState> states = {
          {"created", runtime::v1::CONTAINER_CREATED},
          {"running", runtime::v1::CONTAINER_RUNNING},
          {"exited", runtime::v1::CONTAINER_EXITED},
          {"unknown", runtime::v1::CONTAINER_UNKNOWN}};
      const auto it = states.find(parts[3]);
      if (it == states.end()) {
        *error = absl::StrCat("unknown state ", parts[3]);
        return false;
      }
      c->set_state(it->second);
    } else if (flag == "--label" || flag == "--annotation") {
      std::string id, key, v;
      runtime::v1::Container* c = nullptr;
      if (!splitKeyValue(value, &id, &key, &v) || (c = findContainer(*config, id)) == nullptr) {
        *error = absl::StrCat(flag, " needs ID,KEY=VALUE of a container given before");
        return false;
      }
      (flag == "--label" ? *c->mutable_labels() : *c->mutable_annotations())[key] = v;
    } else if (flag == "--exit-code") {
      const std::vector<std::string> parts = absl::StrSplit(value, ',');
      int32_t code = 0;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[1], &code)) {
        *error = "--exit-code needs ID,N";
        return false;
      }
      config->exit_codes[parts[0]] = code;
    } else if (flag == "--fail") {
      const std::vector<std::string> parts = absl::StrSplit(value, absl::MaxSplits(',', 2));
      int code = 0;
      if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &code) || code <= 0 || code > 16) {
        *error = "--fail needs ID,CODE,MESSAGE with CODE 1-16";
        return false;
      }
      config->failures[parts[0]] = {static_cast<absl::StatusCode>(code), parts[2]};
    } else {
      *error = absl::StrCat("unknown flag ", flag);
      return false;
    }
  }
  if (config->socket.empty() || config->stream_url.empty()) {
    *error = "--socket and --stream-url are required";
    return false;
  }
  return true;
}

class FakeRuntime {
 public:
  explicit FakeRuntime(Config config) : config_(std::move(config)) {}

  void registerOn(cri::GrpcServer& server) {
    const std::string prefix = "/runtime.v1.RuntimeService/";
    server.registerUnary(prefix + "ListContainers",
                         [this](std::string request, cri::GrpcServer::UnaryDone done) {
                           runtime::v1::ListContainersRequest req;
                           if (!req.ParseFromString(request)) {
                             done(absl::InvalidArgumentError("bad ListContainersRequest"));
                             return;
                           }
                           done(config_.containers.SerializeAsString());
                         });
    server.registerUnary(prefix + "ContainerStatus", [this](std::string request,
                                                            cri::GrpcServer::UnaryDone done) {
      runtime::v1::ContainerStatusRequest req;
      req.ParseFromString(request);
      runtime::v1::Container* c = findContainer(config_, req.container_id());
      if (c == nullptr) {
        done(absl::NotFoundError(absl::StrCat("container \"", req.container_id(), "\" not found")));
        return;
      }
      runtime::v1::ContainerStatusResponse resp;
      resp.mutable_status()->set_id(c->id());
      *resp.mutable_status()->mutable_metadata() = c->metadata();
      resp.mutable_status()->set_state(c->state());
      resp.mutable_status()->set_exit_code(config_.exit_codes[c->id()]);
      done(resp.SerializeAsString());
    });
    server.registerUnary(prefix + "Exec",
                         [this](std::string request, cri::GrpcServer::UnaryDone done) {
                           stream<runtime::v1::ExecRequest, runtime::v1::ExecResponse>(
                               "Exec", request, std::move(done),
                               [](const runtime::v1::ExecRequest& r) { return r.container_id(); });
                         });
    server.registerUnary(
        prefix + "Attach", [this](std::string request, cri::GrpcServer::UnaryDone done) {
          stream<runtime::v1::AttachRequest, runtime::v1::AttachResponse>(
              "Attach", request, std::move(done),
              [](const runtime::v1::AttachRequest& r) { return r.container_id(); });
        });
    server.registerUnary(
        prefix + "PortForward", [this](std::string request, cri::GrpcServer::UnaryDone done) {
          stream<runtime::v1::PortForwardRequest, runtime::v1::PortForwardResponse>(
              "PortForward", request, std::move(done),
              [this](const runtime::v1::PortForwardRequest& r) {
                for (const auto& c : config_.containers.containers()) {
                  if (c.pod_sandbox_id() == r.pod_sandbox_id()) {
                    return c.id();
                  }
                }
                return std::string();
              });
        });
  }

 private:
  template <typename Request, typename Response, typename IdOf>
  void stream(const char* method, const std::string& bytes, cri::GrpcServer::UnaryDone done,
              IdOf id_of) {
    Request request;
    if (!request.ParseFromString(bytes)) {
      done(absl::InvalidArgumentError(absl::StrCat("bad ", method, "Request")));
      return;
    }
    record(method, request);
    const std::string id = id_of(request);
    if (const auto it = config_.failures.find(id); it != config_.failures.end()) {
      done(absl::Status(it->second.code, it->second.message));
      return;
    }
    if (id.empty() || findContainer(config_, id) == nullptr) {
      done(absl::NotFoundError(absl::StrCat("no container for ", method)));
      return;
    }
    Response response;
    response.set_url(config_.stream_url);
    done(response.SerializeAsString());
  }

  void record(const char* method, const google::protobuf::Message& request) {
    if (config_.record.empty()) {
      return;
    }
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    options.always_print_primitive_fields = true;
    (void)google::protobuf::util::MessageToJsonString(request, &json, options);
    std::ofstream out(config_.record, std::ios::app);
    out << "{\"method\":\"" << method << "\",\"request\":" << json << "}\n";
  }

  Config config_;
};

int run(int argc, char** argv) {
  Config config;
  std::string error;
  if (!parseArgs(argc, argv, &config, &error)) {
    std::cerr << "fake_cri: " << error << "\n";
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  event::Dispatcher dispatcher;
  cri::GrpcServer server(dispatcher);
  const std::string ready_file = config.ready_file;
  const std::string socket = config.socket;
  FakeRuntime runtime(std::move(config));
  runtime.registerOn(server);
  if (absl::Status s = server.listenUnix(socket, 0600); !s.ok()) {
    std::cerr << "fake_cri: " << s.message() << "\n";
    return 1;
  }
  if (!ready_file.empty()) {
    // Written aside and renamed, so a waiting test never reads half of it.
    const std::string tmp = ready_file + ".tmp";
    std::ofstream(tmp) << socket << "\n";
    std::rename(tmp.c_str(), ready_file.c_str());
  }
  dispatcher.run();
  return 0;
}

}  // namespace
}  // namespace crisp::devapi

int main(int argc, char** argv) { return crisp::devapi::run(argc, argv); }
