#include "source/runtime/containerd/containerd_port_forward.h"

#include <utility>

#include "absl/strings/str_cat.h"

#include "source/common/buffer.h"
#include "source/common/logger.h"

namespace crisp::containerd {
namespace {

using session::PortError;

// A port connection whose namespace is still being looked up, then a
// forwarder to the socket connection made in it.
class SandboxPortConnection : public session::PortConnection {
 public:
  SandboxPortConnection(event::Dispatcher& dispatcher, ContainerdClient& client,
                        runtime::NetnsSocketFactory& netns, std::string pod_sandbox_id,
                        uint16_t port, session::PortCallbacks& callbacks)
      : dispatcher_(dispatcher),
        client_(client),
        netns_(netns),
        pod_sandbox_id_(std::move(pod_sandbox_id)),
        port_(port),
        callbacks_(callbacks) {}

  ~SandboxPortConnection() override {
    if (lookup_ != 0) {
      client_.cancel(lookup_);
    }
  }

  void start() {
    lookup_ =
        client_.sandboxNetwork(pod_sandbox_id_, [this](absl::StatusOr<SandboxNetwork> network) {
          lookup_ = 0;
          onNetwork(std::move(network));
        });
  }

  // session::PortConnection
  void write(Buffer& data) override {
    if (socket_ != nullptr) {
      socket_->write(data);
      return;
    }
    if (failed_ || shutdown_) {
      data.drain(data.length());
      return;
    }
    pending_.move(data);
  }

  size_t queuedBytes() const override {
    return socket_ != nullptr ? socket_->queuedBytes() : pending_.length();
  }

  void shutdownWrite() override {
    if (socket_ != nullptr) {
      socket_->shutdownWrite();
      return;
    }
    shutdown_ = true;
  }

  void pauseReading(bool paused) override {
    if (socket_ != nullptr) {
      socket_->pauseReading(paused);
      return;
    }
    paused_ = paused;
  }

 private:
  // From the client's callback, on the loop: callbacks may be called here.
  void onNetwork(absl::StatusOr<SandboxNetwork> network) {
    if (!network.ok()) {
      fail(std::string(network.status().message()));
      return;
    }
    CRISP_LOG(kRuntime, trace, "pod sandbox {}: port {} in network namespace {} (pid {})",
              pod_sandbox_id_, port_, network->namespace_path, network->pid);
    runtime::PortTarget target;
    target.pod_sandbox_id = pod_sandbox_id_;
    target.network_namespace = network->namespace_path;
    target.port = port_;
    auto socket = runtime::connectLoopbackPort(dispatcher_, target, &netns_, callbacks_);
    if (!socket.ok()) {
      fail(std::string(socket.status().message()));
      return;
    }
    socket_ = std::move(socket).value();
    // What the caller did meanwhile, in the order that keeps its meaning: the
    // bytes before the half-close.
    if (!pending_.empty()) {
      socket_->write(pending_);
    }
    if (paused_) {
      socket_->pauseReading(true);
    }
    if (shutdown_) {
      socket_->shutdownWrite();
    }
  }

  void fail(const std::string& detail) {
    failed_ = true;
    pending_.drain(pending_.length());
    PortError error{
        PortError::Kind::kConnectFailed,
        absl::StrCat("failed to connect to localhost:", port_, " in the network of pod sandbox \"",
                     pod_sandbox_id_, "\": ", detail)};
    CRISP_LOG(kRuntime, debug, "pod sandbox {}: {}", pod_sandbox_id_, error.message);
    callbacks_.onError(error);
  }

  event::Dispatcher& dispatcher_;
  ContainerdClient& client_;
  runtime::NetnsSocketFactory& netns_;
  const std::string pod_sandbox_id_;
  const uint16_t port_;
  session::PortCallbacks& callbacks_;

  ContainerdClient::CallId lookup_ = 0;
  std::unique_ptr<session::PortConnection> socket_;
  // Until socket_ exists.
  Buffer pending_;
  bool shutdown_ = false;
  bool paused_ = false;
  bool failed_ = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<session::PortConnection>> connectSandboxPort(
    event::Dispatcher& dispatcher, ContainerdClient& client, runtime::NetnsSocketFactory& netns,
    const std::string& pod_sandbox_id, uint16_t port, session::PortCallbacks& callbacks) {
  if (port == 0) {
    return absl::InvalidArgumentError("port 0 cannot be forwarded");
  }
  auto connection = std::make_unique<SandboxPortConnection>(dispatcher, client, netns,
                                                            pod_sandbox_id, port, callbacks);
  connection->start();
  return std::unique_ptr<session::PortConnection>(std::move(connection));
}

}  // namespace crisp::containerd
