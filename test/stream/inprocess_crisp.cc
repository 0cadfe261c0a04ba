#include "test/stream/inprocess_crisp.h"

#include "api/runtime/v1/api.pb.h"
#include <stdlib.h>
#include <unistd.h>

#include "source/config/config.h"
#include "source/config/host_port.h"
#include "source/cri/grpc_client.h"

namespace crisp::stream::testing {
namespace {

absl::StatusOr<std::string> callForUrl(const std::string& socket, const std::string& method,
                                       const google::protobuf::Message& request,
                                       google::protobuf::Message& response) {
  auto bytes = cri::unaryCallBlocking(socket, "/runtime.v1.RuntimeService/" + method,
                                      request.SerializeAsString(), std::chrono::seconds(10));
  if (!bytes.ok()) {
    return bytes.status();
  }
  if (!response.ParseFromString(*bytes)) {
    return absl::InternalError(method + ": cannot parse the response");
  }
  const auto* field = response.GetDescriptor()->FindFieldByName("url");
  return response.GetReflection()->GetString(response, field);
}

}  // namespace

StreamUrl parseStreamUrl(const std::string& url) {
  StreamUrl out;
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) {
    return out;
  }
  out.scheme = url.substr(0, scheme_end);
  const std::string rest = url.substr(scheme_end + 3);
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  out.path = slash == std::string::npos ? "/" : rest.substr(slash);
  const size_t colon = authority.rfind(':');
  out.port = static_cast<uint16_t>(std::stoi(authority.substr(colon + 1)));
  out.host = authority.substr(0, colon);
  if (!out.host.empty() && out.host.front() == '[') {
    out.host = out.host.substr(1, out.host.size() - 2);
  }
  return out;
}

InProcessCrisp::InProcessCrisp(const InProcessCrispOptions& options) : ca_("crisp test CA") {
  socket_ = dir_.file("crisp.sock");

  config::Config config;
  config.cri.listen = socket_;
  absl::StatusOr<config::HostPort> listen = config::parseHostPort(options.listen);
  if (!listen.ok()) {
    status_ = listen.status();
    return;
  }
  config.stream.listen = *listen;
  config.stream.max_concurrent_streams = options.max_concurrent_streams;
  config.stream.max_header_bytes = options.max_header_bytes;
  config.stream.header_timeout = options.header_timeout;
  if (options.tls) {
    LeafSpec spec;
    spec.ip_addresses = {"127.0.0.1", "::1"};
    const TestCertificate cert = ca_.issue(spec);
    config::TlsConfig tls;
    tls.cert_file = dir_.write("tls.crt", cert.cert_pem);
    tls.key_file = dir_.write("tls.key", cert.key_pem);
    config.stream.tls = tls;
  }
  config::ContainerConfig box;
  box.id = "box";
  box.command = {"cat"};
  box.stdin = true;
  config.runtime.embedded.containers.push_back(box);
  auto server = exe::Server::create(config);
  if (!server.ok()) {
    status_ = server.status();
    return;
  }
  server_ = std::move(server).value();
  thread_ = std::thread([this] { server_->run(); });
}

InProcessCrisp::~InProcessCrisp() {
  if (server_ != nullptr) {
    server_->stop();
    thread_.join();
  }
  server_.reset();
}

absl::StatusOr<std::string> InProcessCrisp::exec(const std::vector<std::string>& cmd, bool stdin,
                                                 bool stderr) {
  runtime::v1::ExecRequest request;
  request.set_container_id("box");
  for (const std::string& arg : cmd) {
    request.add_cmd(arg);
  }
  request.set_stdin(stdin);
  request.set_stdout(true);
  request.set_stderr(stderr);
  runtime::v1::ExecResponse response;
  return callForUrl(socket_, "Exec", request, response);
}

absl::StatusOr<std::string> InProcessCrisp::attach() {
  runtime::v1::AttachRequest request;
  request.set_container_id("box");
  request.set_stdin(true);
  request.set_stdout(true);
  runtime::v1::AttachResponse response;
  return callForUrl(socket_, "Attach", request, response);
}

absl::StatusOr<std::string> InProcessCrisp::portForward(uint16_t port) {
  runtime::v1::PortForwardRequest request;
  request.set_pod_sandbox_id("box");
  request.add_port(port);
  runtime::v1::PortForwardResponse response;
  return callForUrl(socket_, "PortForward", request, response);
}

}  // namespace crisp::stream::testing
