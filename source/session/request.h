#pragma once

// The streaming requests crisp keeps between the CRI call that asks for a URL
// and the client that later connects to it. Plain data: no protocol, no socket.

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace crisp::session {

enum class Operation { kExec, kAttach, kPortForward };

// "exec", "attach" or "portforward": the URL path segment and the metric label.
const char* operationName(Operation op);

// An Exec or Attach request as the CRI call carried it. The stream flags come
// from here, never from the URL the client later presents.
struct ExecSpec {
  Operation operation = Operation::kExec;  // kExec or kAttach
  std::string container_id;
  std::vector<std::string> command;  // empty for attach
  bool tty = false;
  bool stdin = false;
  bool stdout = false;
  bool stderr = false;
  // With a runtime's stream server behind crisp: the URL the runtime answered
  // the forwarded Exec/Attach call with, where the session is served. Empty
  // for the embedded runtime. (Initialized so that brace-initializing the
  // fields before it stays warning-free.)
  std::string upstream_url{};
};

struct PortForwardSpec {
  std::string pod_sandbox_id;
  std::vector<uint16_t> ports;
  // As ExecSpec::upstream_url, for PortForward.
  std::string upstream_url{};
};

struct StreamRequest {
  std::variant<ExecSpec, PortForwardSpec> spec;

  Operation operation() const {
    if (const auto* exec = std::get_if<ExecSpec>(&spec)) {
      return exec->operation;
    }
    return Operation::kPortForward;
  }
};

}  // namespace crisp::session
