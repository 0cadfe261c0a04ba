#pragma once

// SpdyTestClient: a blocking SPDY/3.1 client for tests, built on spdy::Codec.
// It plays the Kubernetes client (client-go) against a server on the other end
// of a socket: opens streams with a `streamtype` header (odd ids from 1),
// sends DATA/FIN/RST/PING/GOAWAY or raw bytes, and records every frame the
// server sends, in wire order, with per-stream state.
//
// All waits are bounded: waitFor() reads until a condition holds, EOF, or the
// timeout. While a send blocks on a full socket, the client also reads (unless
// setReadWhileWriting(false)), so a server that writes while it reads cannot
// deadlock a test.
//
// Not thread-safe; use from the test's thread only.
//
// LoopThread runs an event::Dispatcher on its own thread for the server side of
// a test; run() executes a function there and waits for its result.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <vector>

#include "source/codec/spdy/codec.h"
#include "source/common/buffer.h"
#include "test/stream/socket_test_client.h"
#include "source/common/dispatcher.h"

namespace crisp::stream::testing {

class SpdyTestClient : public SocketTestClient, private spdy::CodecCallbacks {
 public:
  // A frame received from the server.
  struct Frame {
    enum class Type {
      kSynStream,
      kSynReply,
      kHeaders,
      kData,
      kRst,
      kSettings,
      kPing,
      kGoAway,
      kWindowUpdate
    };
    Type type = Type::kData;
    uint32_t stream_id = 0;
    uint8_t flags = 0;
    size_t data_size = 0;                                        // DATA payload length
    spdy::RstStatus rst_status = spdy::RstStatus::kCancel;       // kRst
    spdy::GoAwayStatus goaway_status = spdy::GoAwayStatus::kOk;  // kGoAway
    uint32_t ping_id = 0;                                        // kPing
    spdy::HeaderList headers;                                    // kSynReply, kHeaders
    bool fin() const { return (flags & spdy::kFlagFin) != 0; }
  };

  // What the server did on one stream.
  struct StreamState {
    bool replied = false;  // SYN_REPLY seen
    bool fin = false;      // the server half-closed it
    bool reset = false;    // the server reset it
    spdy::RstStatus rst_status = spdy::RstStatus::kCancel;
    std::string data;  // every payload byte, in order
  };

  // Takes ownership of `fd` (made non-blocking).
  explicit SpdyTestClient(int fd);
  SpdyTestClient(const SpdyTestClient&) = delete;
  SpdyTestClient& operator=(const SpdyTestClient&) = delete;

  // Sending. Each call writes at once (blocking up to the send timeout) unless
  // cork() is active; uncork() then writes everything in one go. A false
  // return means the bytes could not be written (error() says why).
  uint32_t openStream(std::string_view stream_type, uint8_t flags = 0);
  uint32_t openStreamWithHeaders(const spdy::HeaderList& headers, uint8_t flags = 0);
  bool synStream(uint32_t stream_id, const spdy::HeaderList& headers, uint8_t flags = 0);
  bool data(uint32_t stream_id, std::string_view payload, bool fin = false);
  bool rst(uint32_t stream_id, spdy::RstStatus status = spdy::RstStatus::kCancel);
  bool ping(uint32_t ping_id);
  bool goAway(uint32_t last_good_stream_id = 0);
  // The id the next openStream() will use.
  uint32_t nextStreamId() const { return next_stream_id_; }




  const std::vector<Frame>& frames() const { return frames_; }
  // The state of a stream (an empty state when nothing was seen on it).
  const StreamState& stream(uint32_t stream_id);
  bool goAwayReceived() const { return goaway_.has_value(); }
  std::optional<spdy::GoAwayStatus> goAwayStatus() const { return goaway_; }
  // Frames of this type received so far.
  size_t count(Frame::Type type) const;
  // Index in frames() of the first frame matching `pred`, if any.
  std::optional<size_t> find(const std::function<bool(const Frame&)>& pred) const;
  std::optional<size_t> findLast(const std::function<bool(const Frame&)>& pred) const;

 private:
  void decode() override;
  // spdy::CodecCallbacks
  void onSynStream(uint32_t stream_id, uint32_t associated_id, uint8_t priority, uint8_t flags,
                   spdy::HeaderList&& headers) override;
  void onSynReply(uint32_t stream_id, uint8_t flags, spdy::HeaderList&& headers) override;
  void onHeaders(uint32_t stream_id, uint8_t flags, spdy::HeaderList&& headers) override;
  void onData(uint32_t stream_id, Buffer& data, bool fin) override;
  void onRstStream(uint32_t stream_id, spdy::RstStatus status) override;
  void onSettings(uint8_t flags, const std::vector<spdy::SettingsEntry>& entries) override;
  void onPing(uint32_t id) override;
  void onGoAway(uint32_t last_good_stream_id, spdy::GoAwayStatus status) override;
  void onWindowUpdate(uint32_t stream_id, uint32_t delta) override;


  spdy::Codec codec_;
  uint32_t next_stream_id_ = 1;
  std::vector<Frame> frames_;
  std::map<uint32_t, StreamState> streams_;
  std::optional<spdy::GoAwayStatus> goaway_;
};

// An event loop on its own thread. Objects living on the loop must be created
// and used through run(); stop() joins the thread, after which they may be
// destroyed from the test's thread.
class LoopThread {
 public:
  LoopThread();
  ~LoopThread();
  LoopThread(const LoopThread&) = delete;
  LoopThread& operator=(const LoopThread&) = delete;

  event::Dispatcher& dispatcher() { return dispatcher_; }

  // Runs `fn` on the loop and returns its result. A loop that does not answer
  // within 10 s means the server hangs: the test binary aborts with a message.
  template <class F>
  auto run(F&& fn) -> std::invoke_result_t<F&> {
    using R = std::invoke_result_t<F&>;
    auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(fn));
    std::future<R> result = task->get_future();
    dispatcher_.post([task] { (*task)(); });
    if (result.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      std::fprintf(stderr, "LoopThread::run: the loop did not answer within 10 s\n");
      std::abort();
    }
    return result.get();
  }

  // Evaluates `pred` on the loop every millisecond until it holds (true) or
  // `timeout` passes (false).
  bool waitUntil(std::function<bool()> pred,
                 std::chrono::milliseconds timeout = std::chrono::seconds(5));

  // Stops the loop and joins the thread. Idempotent.
  void stop();

 private:
  event::Dispatcher dispatcher_;
  std::thread thread_;
};

}  // namespace crisp::stream::testing
