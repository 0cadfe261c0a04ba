#pragma once

// Resolver: host names to addresses with c-ares, on a crisp Dispatcher, so
// that a slow DNS server never blocks a loop. Used for the host of a
// runtime's stream-server URL when it is a name rather than an address.
//
//   Resolver resolver(dispatcher);
//   resolver.resolve("runtime.local", [](absl::StatusOr<std::vector<std::string>> a) { ... });
//
// `done` runs once, from the loop (never inside resolve()), with the numeric
// addresses (IPv4 and IPv6, in c-ares' order) or UNAVAILABLE naming the host
// and c-ares' reason. Destroying the resolver cancels the lookup without a
// callback. One lookup per resolver.

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "source/common/dispatcher.h"

struct ares_channeldata;
struct ares_addrinfo;

namespace crisp::streamserver {

class Resolver {
 public:
  using Done = std::function<void(absl::StatusOr<std::vector<std::string>>)>;

  explicit Resolver(event::Dispatcher& dispatcher);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  void resolve(const std::string& host, Done done);

 private:
  static void onSocketState(void* arg, int fd, int readable, int writable);
  static void onAddrInfo(void* arg, int status, int timeouts, ares_addrinfo* result);
  void process(int read_fd, int write_fd);
  void armTimer();

  event::Dispatcher& dispatcher_;
  ares_channeldata* channel_ = nullptr;
  std::string host_;
  Done done_;
  absl::StatusOr<std::vector<std::string>> result_;
  std::map<int, event::FdWatcherPtr> watchers_;
  event::Timer timer_;
  event::Timer deliver_;
};

}  // namespace crisp::streamserver
