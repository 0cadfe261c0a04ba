#pragma once

// AdminServer: the HTTP/1.1 admin endpoint (admin.listen).
//
//   GET /healthz   200 "ok" while the process runs
//   GET /readyz    200 "ok", or 503 "draining" after setReady(false)
//   GET /metrics   200, Prometheus text format 0.0.4 of the registry
//   anything else  404; methods other than GET and HEAD on those paths 405
//
// One request per connection: each answer carries "Connection: close". Heads
// are read with the stream server's limits (size, deadline). Runs on one
// dispatcher; create and destroy it on that thread. setReady() may be called
// from any thread.

#include <atomic>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

#include "source/admin/metrics.h"
#include "source/common/dispatcher.h"
#include "source/stream/http1_connection.h"
#include "source/stream/listener.h"

namespace crisp::admin {

struct AdminServerOptions {
  // "ip:port" or "[ipv6]:port"; port 0 picks a free one (see address()).
  std::string listen = "127.0.0.1:0";
  stream::Http1ConnectionOptions connection;
  // Rendered by /metrics; null = stats::registry(). Must outlive the server.
  const stats::Registry* registry = nullptr;
};

class AdminServer : public stream::Http1Connection::Callbacks {
 public:
  // Binds and starts serving on `dispatcher`. Errors are those of
  // stream::ListenSocket::bind(). Ready from the start.
  static absl::StatusOr<std::unique_ptr<AdminServer>> create(event::Dispatcher& dispatcher,
                                                             AdminServerOptions options);
  ~AdminServer() override;
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // The bound address with the real port, e.g. "127.0.0.1:9090".
  const std::string& address() const { return socket_->address(); }

  // Flips /readyz between 200 "ok" and 503 "draining". Thread-safe.
  void setReady(bool ready) { ready_.store(ready, std::memory_order_relaxed); }
  bool ready() const { return ready_.load(std::memory_order_relaxed); }

 private:
  AdminServer(event::Dispatcher& dispatcher, AdminServerOptions options,
              std::unique_ptr<stream::ListenSocket> socket);

  void onAccept(int fd, std::string peer);
  std::string answer(const stream::HttpRequest& request) const;

  // stream::Http1Connection::Callbacks
  void onRequestHead(stream::Http1Connection& connection, stream::HttpRequest&& request) override;
  void onHeadError(stream::Http1Connection& connection,
                   stream::Http1Connection::HeadError error) override;
  void onClosed(stream::Http1Connection& connection) override;

  event::Dispatcher& dispatcher_;
  const AdminServerOptions options_;
  const stats::Registry& registry_;
  std::atomic<bool> ready_{true};
  // Destroyed bottom up: the listener stops accepting before the connections
  // and the socket go.
  std::unique_ptr<stream::ListenSocket> socket_;
  stream::Http1ConnectionSet connections_;
  std::unique_ptr<stream::Listener> listener_;
};

}  // namespace crisp::admin
