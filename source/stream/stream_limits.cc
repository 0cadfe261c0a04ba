#include "source/stream/stream_limits.h"

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>

#include "source/stream/stream_metrics.h"

namespace crisp::stream {
namespace {

bool startsWith(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// Forwards everything to the transport it wraps; holds a session slot.
class PermitTransport : public Transport {
 public:
  PermitTransport(TransportPtr inner, SessionPermit permit)
      : inner_(std::move(inner)), permit_(std::move(permit)) {}

  // Transport
  void setCallbacks(TransportCallbacks& callbacks) override { inner_->setCallbacks(callbacks); }
  void start() override { inner_->start(); }
  void write(Buffer& data) override { inner_->write(data); }
  bool writeFromPipe(Buffer& header, int pipe_fd, size_t length) override {
    return inner_->writeFromPipe(header, pipe_fd, length);
  }
  bool canWriteFromPipe() const override { return inner_->canWriteFromPipe(); }
  size_t pipeBytesPending() const override { return inner_->pipeBytesPending(); }
  bool readIntoPipe(int pipe_fd, size_t length) override {
    return inner_->readIntoPipe(pipe_fd, length);
  }
  void limitNextRead(size_t bytes) override { inner_->limitNextRead(bytes); }
  bool canReadIntoPipe() const override { return inner_->canReadIntoPipe(); }
  size_t pipeInputPending() const override { return inner_->pipeInputPending(); }
  void cancelReadIntoPipe() override { inner_->cancelReadIntoPipe(); }
  size_t queuedBytes() const override { return inner_->queuedBytes(); }
  void pauseReading(bool paused) override { inner_->pauseReading(paused); }
  void failOnPeerCloseWhilePaused() override { inner_->failOnPeerCloseWhilePaused(); }
  void unreadInput(Buffer& data) override { inner_->unreadInput(data); }
  void shutdownWrite() override { inner_->shutdownWrite(); }
  void close() override {
    // A closed connection is no longer a live session, even while its
    // owner still holds the object for a deferred delete.
    permit_.reset();
    inner_->close();
  }
  const std::string& peerAddress() const override { return inner_->peerAddress(); }
  std::string peerIdentity() const override { return inner_->peerIdentity(); }
  std::string alpnProtocol() const override { return inner_->alpnProtocol(); }

 private:
  TransportPtr inner_;
  SessionPermit permit_;
};

}  // namespace

const char* streamLimitName(StreamLimit limit) {
  switch (limit) {
#define CRISP_STREAM_LIMIT_NAME(name, label) \
  case StreamLimit::name:                    \
    return label;
    CRISP_STREAM_LIMITS(CRISP_STREAM_LIMIT_NAME)
#undef CRISP_STREAM_LIMIT_NAME
  }
  return "unknown";
}

stats::Counter& limitHitCounter(StreamLimit limit, stats::Registry* registry) {
  stats::Registry& r = registry != nullptr ? *registry : stats::registry();
  return limitHitsFamily(r).counter({streamLimitName(limit)});
}

std::string_view protocolErrorReason(std::string_view message) {
  const size_t end = message.find(':');
  const std::string_view name = message.substr(0, end);
  // A name: lowercase words joined by dots, at least one dot; anything else
  // is not one of ours and must not become a label value.
  const bool valid = !name.empty() && name.size() <= 64 &&
                     name.find('.') != std::string_view::npos && name.front() != '.' &&
                     name.back() != '.' && std::all_of(name.begin(), name.end(), [](char c) {
                       return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
                              c == '.';
                     });
  return valid ? name : std::string_view("other");
}

stats::Counter& protocolErrorCounter(std::string_view reason, stats::Registry* registry) {
  stats::Registry& r = registry != nullptr ? *registry : stats::registry();
  return protocolErrorsFamily(r).counter({std::string(reason)});
}

stats::Counter& clientPingCounter(std::string_view protocol) {
  return clientPingsFamily(stats::registry()).counter({std::string(protocol)});
}

void countProtocolError(std::string_view message, stats::Registry* registry) {
  protocolErrorCounter(protocolErrorReason(message), registry).inc();
}

std::optional<StreamLimit> limitOfCodecError(const absl::Status& status) {
  const std::string_view message(status.message().data(), status.message().size());
  if (startsWith(message, "spdy.frame_too_large") || startsWith(message, "ws.message_too_big")) {
    return StreamLimit::kFrameBytes;
  }
  if (startsWith(message, "spdy.header_block_too_large")) {
    return StreamLimit::kHeaderBlockBytes;
  }
  return std::nullopt;
}

spdy::Limits spdyLimits(uint32_t max_frame_bytes) {
  // The DATA length field has 24 bits.
  constexpr uint32_t kWireMax = 0xFFFFFF;
  spdy::Limits limits;
  limits.max_data_frame_bytes = std::min(max_frame_bytes, kWireMax);
  limits.max_control_frame_bytes = std::min(max_frame_bytes, limits.max_control_frame_bytes);
  return limits;
}

SessionPermit& SessionPermit::operator=(SessionPermit&& other) noexcept {
  if (this != &other) {
    reset();
    limiter_ = other.limiter_;
    other.limiter_ = nullptr;
  }
  return *this;
}

void SessionPermit::reset() {
  if (limiter_ != nullptr) {
    limiter_->release();
    limiter_ = nullptr;
  }
}

SessionPermit SessionLimiter::tryAcquire() {
  uint32_t taken = active_.load(std::memory_order_acquire);
  // Never past the maximum, not even for a moment: a plain fetch_add and
  // undo could refuse a request while another one is being undone.
  while (taken < max()) {
    if (active_.compare_exchange_weak(taken, taken + 1, std::memory_order_acq_rel)) {
      return SessionPermit(this);
    }
  }
  return SessionPermit();
}

TransportPtr holdSessionPermit(TransportPtr inner, SessionPermit permit) {
  return std::make_unique<PermitTransport>(std::move(inner), std::move(permit));
}

}  // namespace crisp::stream
