// devapiserver: a development stand-in for kube-apiserver and the kubelet, so
// that real kubectl can run get pods, exec, attach and port-forward against
// crisp on one machine. Loopback only, plain HTTP, no authentication.
//
//   devapiserver --listen 127.0.0.1:0 --cri /tmp/crisp/crisp.sock
//       --kubeconfig /tmp/dev.kubeconfig [--ready-file PATH] [--log-level debug]
//       [--stream-ca CA.crt] [--stream-cert CLIENT.crt --stream-key CLIENT.key]
//
// Prints the bound address (host:port) on stdout once it accepts connections,
// then writes the kubeconfig and the ready file (which holds the same address).

#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "source/common/logger.h"
#include "source/cri/grpc_client.h"

#include "tools/devapiserver/api_handler.h"
#include "tools/devapiserver/cri_pod_source.h"
#include "tools/devapiserver/http_server.h"
#include "tools/devapiserver/tls_upstream.h"

namespace crisp::devapi {
namespace {

constexpr char kUsage[] =
    "usage: devapiserver --listen HOST:PORT --cri SOCKET [--kubeconfig PATH]\n"
    "                    [--ready-file PATH] [--cri-timeout-ms N] [--log-level LEVEL]\n"
    "                    [--stream-ca FILE] [--stream-cert FILE --stream-key FILE]\n"
    "  --listen       loopback address to serve on, port 0 picks one (127.0.0.1:0)\n"
    "  --cri          crisp's CRI unix socket\n"
    "  --kubeconfig   write a kubeconfig for this server there\n"
    "  --ready-file   write the bound address there once serving\n"
    "  --cri-timeout-ms  limit for each CRI call (default 10000)\n"
    "  --log-level    trace, debug, info (default), warn, error\n"
    "  --stream-ca    CA certificates (PEM) an https stream URL's server must chain to;\n"
    "                 default: the system's trusted CAs\n"
    "  --stream-cert, --stream-key  client certificate and key (PEM) shown to an https\n"
    "                 stream server that asks for one\n";

struct Flags {
  std::string listen = "127.0.0.1:0";
  std::string cri;
  std::string kubeconfig;
  std::string ready_file;
  std::string log_level = "info";
  int cri_timeout_ms = 10000;
  std::string stream_ca;
  std::string stream_cert;
  std::string stream_key;
};

bool parseFlags(int argc, char** argv, Flags* flags, std::string* error) {
  const std::map<std::string, std::string*> string_flags = {
      {"--listen", &flags->listen},           {"--cri", &flags->cri},
      {"--kubeconfig", &flags->kubeconfig},   {"--ready-file", &flags->ready_file},
      {"--log-level", &flags->log_level},     {"--stream-ca", &flags->stream_ca},
      {"--stream-cert", &flags->stream_cert}, {"--stream-key", &flags->stream_key},
  };
  std::string timeout_text;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (const size_t eq = arg.find('='); absl::StartsWith(arg, "--") && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      has_value = true;
    }
    if (arg == "--help" || arg == "-h") {
      *error = "";
      return false;
    }
    std::string* target = nullptr;
    if (const auto it = string_flags.find(arg); it != string_flags.end()) {
      target = it->second;
    } else if (arg == "--cri-timeout-ms") {
      target = &timeout_text;
    } else {
      *error = absl::StrCat("unknown flag ", arg);
      return false;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        *error = absl::StrCat(arg, " needs a value");
        return false;
      }
      value = argv[++i];
    }
    *target = value;
  }
  if (!timeout_text.empty() &&
      (!absl::SimpleAtoi(timeout_text, &flags->cri_timeout_ms) || flags->cri_timeout_ms <= 0)) {
    *error = absl::StrCat("bad --cri-timeout-ms ", timeout_text);
    return false;
  }
  if (flags->stream_cert.empty() != flags->stream_key.empty()) {
    *error = "--stream-cert and --stream-key go together";
    return false;
  }
  if (flags->cri.empty()) {
    *error = "--cri is required";
    return false;
  }
  return true;
}

// Writes `content` to `path` through a temporary file and a rename, so a
// reader never sees half a file.
bool writeFileAtomically(const std::string& path, const std::string& content) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << content;
    if (!out.good()) {
      return false;
    }
  }
  return ::rename(tmp.c_str(), path.c_str()) == 0;
}

std::string kubeconfigFor(const std::string& address) {
  return absl::StrCat(
      "apiVersion: v1\n"
      "kind: Config\n"
      "clusters:\n"
      "- name: crisp-dev\n"
      "  cluster:\n"
      "    server: http://",
      address,
      "\n"
      "contexts:\n"
      "- name: crisp-dev\n"
      "  context:\n"
      "    cluster: crisp-dev\n"
      "    namespace: default\n"
      "    user: crisp-dev\n"
      "current-context: crisp-dev\n"
      "users:\n"
      "- name: crisp-dev\n"
      "  user: {}\n"
      "preferences: {}\n");
}

std::string hostName() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') {
    return "crisp-dev";
  }
  return buf;
}

int run(int argc, char** argv) {
  Flags flags;
  std::string error;
  if (!parseFlags(argc, argv, &flags, &error)) {
    if (!error.empty()) {
      std::cerr << "devapiserver: " << error << "\n";
    }
    std::cerr << kUsage;
    return error.empty() ? 0 : 2;
  }
  if (!log::setLevel(flags.log_level)) {
    std::cerr << "devapiserver: bad --log-level " << flags.log_level << "\n" << kUsage;
    return 2;
  }
  // Peers that vanish must not kill the process; writes report EPIPE instead.
  signal(SIGPIPE, SIG_IGN);

  ProxyOptions proxy_options;
  absl::StatusOr<std::shared_ptr<const TlsUpstreamContext>> tls = TlsUpstreamContext::create(
      TlsUpstreamFiles{flags.stream_ca, flags.stream_cert, flags.stream_key});
  if (!tls.ok()) {
    std::cerr << "devapiserver: stream TLS: " << tls.status().message() << "\n";
    return 1;
  }
  proxy_options.tls = std::move(tls).value();
  HttpServer server(proxy_options);
  absl::StatusOr<std::string> bound = server.listen(flags.listen);
  if (!bound.ok()) {
    std::cerr << "devapiserver: " << bound.status().message() << "\n";
    return 1;
  }

  const std::string socket_path = flags.cri;
  const std::chrono::milliseconds timeout(flags.cri_timeout_ms);
  CriPodSource pods([socket_path, timeout](const std::string& method, const std::string& request) {
    return cri::unaryCallBlocking(socket_path, method, request, timeout);
  });
  ApiOptions options;
  options.server_address = *bound;
  options.node_name = hostName();
  ApiHandler handler(pods, options);

  if (!flags.kubeconfig.empty() && !writeFileAtomically(flags.kubeconfig, kubeconfigFor(*bound))) {
    std::cerr << "devapiserver: cannot write kubeconfig " << flags.kubeconfig << "\n";
    return 1;
  }
  std::cout << *bound << std::endl;
  CRISP_LOG(kMain, info, "devapiserver serving http://{} for CRI socket {}", *bound, flags.cri);
  if (!flags.ready_file.empty() && !writeFileAtomically(flags.ready_file, *bound + "\n")) {
    std::cerr << "devapiserver: cannot write ready file " << flags.ready_file << "\n";
    return 1;
  }
  const absl::Status status = server.serve(handler);
  std::cerr << "devapiserver: " << status.message() << "\n";
  return 1;
}

}  // namespace
}  // namespace crisp::devapi

int main(int argc, char** argv) { return crisp::devapi::run(argc, argv); }
