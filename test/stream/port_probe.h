#pragma once

// PortProbeRuntime: a session::Runtime for port-forward tests that hands
// connectPort() to a real runtime (the embedded one, connecting to servers
// the test runs on loopback) and watches the pod connections it returns:
// how many were asked for, the deepest write queue seen, and how often
// reading was paused and resumed. Counters may be read from any thread.

#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "source/runtime/embedded/embedded_runtime.h"
#include "source/session/runtime.h"

namespace crisp::stream::testing {

class PortProbeRuntime : public session::Runtime {
 public:
  explicit PortProbeRuntime(session::Runtime& inner) : inner_(inner) {}

  std::vector<session::ContainerInfo> listContainers() const override {
    return inner_.listContainers();
  }
  absl::StatusOr<session::ContainerInfo> container(const std::string& id) const override {
    return inner_.container(id);
  }
  absl::StatusOr<std::unique_ptr<session::ExecProcess>> startExec(
      event::Dispatcher&, const session::ExecSpec&, std::optional<session::TerminalSize>,
      session::ExecCallbacks&) override {
    return absl::UnimplementedError("port-forward tests run no commands");
  }
  absl::StatusOr<std::unique_ptr<session::PortConnection>> connectPort(
      event::Dispatcher& dispatcher, const std::string& pod_sandbox_id, uint16_t port,
      session::PortCallbacks& callbacks) override {
    ++connects;
    auto inner = inner_.connectPort(dispatcher, pod_sandbox_id, port, callbacks);
    if (!inner.ok()) {
      return inner.status();
    }
    return std::unique_ptr<session::PortConnection>(
        std::make_unique<Watched>(*this, std::move(inner).value()));
  }

  std::atomic<int> connects{0};
  std::atomic<size_t> max_queued{0};
  std::atomic<int> pauses{0};
  std::atomic<int> resumes{0};

 private:
  class Watched : public session::PortConnection {
   public:
    Watched(PortProbeRuntime& owner, std::unique_ptr<session::PortConnection> inner)
        : owner_(owner), inner_(std::move(inner)) {}
    void write(Buffer& data) override {
      inner_->write(data);
      size_t seen = owner_.max_queued.load();
      while (inner_->queuedBytes() > seen &&
             !owner_.max_queued.compare_exchange_weak(seen, inner_->queuedBytes())) {
      }
    }
    size_t queuedBytes() const override { return inner_->queuedBytes(); }
    void shutdownWrite() override { inner_->shutdownWrite(); }
    void pauseReading(bool paused) override {
      ++(paused ? owner_.pauses : owner_.resumes);
      inner_->pauseReading(paused);
    }

   private:
    PortProbeRuntime& owner_;
    std::unique_ptr<session::PortConnection> inner_;
  };

  session::Runtime& inner_;
};

// The embedded runtime port-forward tests connect through: one container,
// "demo", whose sandbox is crisp's own network (the test's loopback
// servers). Started; null when it cannot start.
inline std::unique_ptr<runtime::EmbeddedRuntime> startDemoRuntime() {
  runtime::EmbeddedContainerConfig c;
  c.id = "demo";
  auto embedded =
      std::make_unique<runtime::EmbeddedRuntime>(std::vector<runtime::EmbeddedContainerConfig>{c});
  return embedded->start().ok() ? std::move(embedded) : nullptr;
}

}  // namespace crisp::stream::testing
