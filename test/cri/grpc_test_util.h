#pragma once

// Test helpers for the gRPC server, client and passthrough tests: a temporary
// directory for unix sockets, a loop runner bounded in time, a recording client
// callback and a recording call handler. Everything runs on the test thread's
// Dispatcher.

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <event2/event.h>
#include <stdlib.h>
#include <unistd.h>

#include "source/common/dispatcher.h"
#include "source/cri/grpc_client.h"
#include "source/cri/grpc_server.h"
#include "test/common/temp_dir.h"

namespace crisp::cri::testing {

// Unix sockets go in a directory of the test's own.
using ::crisp::testing::TempDir;

// Runs loop iterations until `done()` holds or `timeout` passes; returns done().
inline bool runUntil(event::Dispatcher& dispatcher, const std::function<bool()>& done,
                     std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  bool expired = false;
  event::Timer watchdog(dispatcher, [&] { expired = true; });
  watchdog.enable(timeout);
  while (!done() && !expired) {
    event_base_loop(dispatcher.base(), EVLOOP_ONCE);
  }
  return done();
}

// Runs the loop until nothing is left to do right now (deferred deletions,
// posted work, queued writes).
inline void settle(event::Dispatcher& dispatcher) {
  for (int i = 0; i < 20; ++i) {
    event_base_loop(dispatcher.base(), EVLOOP_NONBLOCK);
  }
}

// Client callbacks that record what arrives.
struct CallRecorder : ClientCall::Callbacks {
  void onHeaders(const Metadata& h) override { headers = h; }
  void onMessage(std::string m) override { messages.push_back(std::move(m)); }
  void onClose(const absl::Status& s, const Metadata& t) override {
    status = s;
    trailers = t;
  }
  bool closed() const { return status.has_value(); }

  std::optional<Metadata> headers;
  std::vector<std::string> messages;
  std::optional<absl::Status> status;
  Metadata trailers;
};

// One server-side call as a test handler sees it.
struct RecordedCall : ServerCall::Callbacks {
  void onMessage(std::string m) override {
    messages.push_back(std::move(m));
    if (on_message) {
      on_message(*this);
    }
  }
  void onHalfClose() override {
    half_closed = true;
    if (on_half_close) {
      on_half_close(*this);
    }
  }
  void onCancel(const absl::Status& reason) override { cancelled = reason; }

  std::unique_ptr<ServerCall> call;
  std::vector<std::string> messages;
  bool half_closed = false;
  std::optional<absl::Status> cancelled;
  std::function<void(RecordedCall&)> on_message;
  std::function<void(RecordedCall&)> on_half_close;
};

// A CallHandler keeping every call it gets; hooks script the answers.
class RecordingHandler : public CallHandler {
 public:
  void onCall(std::unique_ptr<ServerCall> call) override {
    auto recorded = std::make_unique<RecordedCall>();
    RecordedCall& rc = *recorded;
    rc.on_message = on_message;
    rc.on_half_close = on_half_close;
    rc.call = std::move(call);
    calls.push_back(std::move(recorded));
    if (on_call) {
      on_call(rc);
    }
    if (rc.call != nullptr) {
      rc.call->setCallbacks(&rc);
    }
  }

  std::vector<std::unique_ptr<RecordedCall>> calls;
  std::function<void(RecordedCall&)> on_call;
  std::function<void(RecordedCall&)> on_message;
  std::function<void(RecordedCall&)> on_half_close;
};

// Value of the first field called `name`, or nullopt.
inline std::optional<std::string> field(const Metadata& md, const std::string& name) {
  for (const auto& [n, v] : md) {
    if (n == name) {
      return v;
    }
  }
  return std::nullopt;
}

}  // namespace crisp::cri::testing
