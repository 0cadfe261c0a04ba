#pragma once

// BufferingRelay: a stand-in for an API server's or kubelet's upgrade proxy
// between a test client and a server, on its own thread. It behaves as such
// a proxy does toward a slow reader:
// - it takes everything the server sends at once (the server sees every byte
//   delivered and acknowledged) and hands it to the client no faster than
//   `bytes_per_second`, as a client reading at that pace would take it;
// - it forwards the client's bytes to the server as they come;
// - a half-close travels on (server EOF becomes the client's EOF once the
//   buffer is handed over; client EOF becomes the server's);
// - when a write toward the server fails (the server closed its socket), it
//   ends both directions at once, dropping what it still holds for the
//   client, as the Kubernetes upgrade proxy ends a connection once either
//   half of its copy ends.
// Sockets are AF_UNIX stream socketpairs made here; the two ends handed out
// belong to the caller.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>

namespace crisp::stream::testing {

class BufferingRelay {
 public:
  explicit BufferingRelay(size_t bytes_per_second);
  // Stops the thread; closes the relay's own ends.
  ~BufferingRelay();
  BufferingRelay(const BufferingRelay&) = delete;
  BufferingRelay& operator=(const BufferingRelay&) = delete;

  // The ends for the server and for the client; each is taken once.
  int takeServerFd();
  int takeClientFd();
  // Starts relaying.
  void start();

  // Whether the relay ended both directions because the server's side failed.
  bool tornDown() const { return torn_down_.load(); }
  // Bytes the server sent that the relay took, and bytes it gave the client.
  uint64_t fromServer() const { return from_server_.load(); }
  uint64_t toClient() const { return to_client_.load(); }

 private:
  void run();

  const size_t bytes_per_second_;
  int server_fd_ = -1;  // the server's end (handed out)
  int client_fd_ = -1;  // the client's end (handed out)
  int up_ = -1;         // the relay's end toward the server
  int down_ = -1;       // the relay's end toward the client
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> torn_down_{false};
  std::atomic<uint64_t> from_server_{0};
  std::atomic<uint64_t> to_client_{0};
};

}  // namespace crisp::stream::testing
