#pragma once

// Server: crisp assembled from a checked Config. It owns every thread:
//
//   control loop   the CRI gRPC front (unix socket) and the admin endpoint
//   stream workers one loop each, sharing one listening socket: HTTP/1.1 heads,
//                  then the upgraded SPDY sessions, whose exec processes live on
//                  the same loop
//   runtime        the embedded runtime's own loop for container main processes
//
// The token cache is the only structure the control loop and the workers share.
//
//   auto server = Server::create(config);   // binds everything, or fails
//   server.value()->run();                  // until stop() or a signal
//
// create() and run() are called on the main thread; stop() from any thread.

#include <memory>
#include <string>

#include "absl/status/statusor.h"

#include "source/config/config.h"

namespace crisp::exe {

class Server {
 public:
  // Builds and binds everything (CRI socket, stream and admin listeners) and
  // starts the runtime. Errors name what could not be set up.
  static absl::StatusOr<std::unique_ptr<Server>> create(const config::Config& config);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Runs the control loop on the calling thread until stop(). SIGTERM drains
  // (not ready, no new sessions, running ones get stream.drain_grace_period,
  // then a status saying crisp is shutting down) and then stops; a second
  // SIGTERM, or SIGINT, calls stop() at once. SIGHUP reads the configuration
  // file again and applies what can change live, and reloads the stream.tls
  // files (which are also checked for changes every few seconds). See
  // docs/operations.md.
  void run();
  // Thread-safe.
  void stop();

  // The stream server's bound address ("127.0.0.1:43127") and the base URL
  // handed out in CRI replies ("http://127.0.0.1:43127/").
  const std::string& streamAddress() const;
  const std::string& streamBaseUrl() const;
  // The admin endpoint's bound address, empty when there is none.
  const std::string& adminAddress() const;

 private:
  class Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace crisp::exe
