#include "source/stream/http1_connection.h"

#include <algorithm>

namespace crisp::stream {
namespace {

// Bytes handed to the head parser at a time. The parser keeps no copy of them
// and stops one byte past the size limit, so little is ever copied.
constexpr size_t kParseChunk = 16384;

}  // namespace

Http1Connection::Http1Connection(event::Dispatcher& dispatcher, TransportPtr transport, uint64_t id,
                                 const Http1ConnectionOptions& options, Callbacks& callbacks)
    : transport_(std::move(transport)),
      peer_(transport_->peerAddress()),
      id_(id),
      options_(options),
      callbacks_(callbacks),
      parser_(options.max_header_bytes),
      deadline_(dispatcher, [this] { onDeadline(); }) {
  transport_->setCallbacks(*this);
  transport_->start();
  deadline_.enable(options_.header_timeout);
}

Http1Connection::~Http1Connection() {
  // Destroying the transport closes it without callbacks.
  transport_.reset();
}

void Http1Connection::onTransportData(Buffer& data) {
  if (phase_ == Phase::kReadingHead) {
    parseHead(data);
    return;
  }
  // Input after a response is read only to be dropped (see the header).
  data.drain(data.length());
}

void Http1Connection::parseHead(Buffer& data) {
  char chunk[kParseChunk];
  const size_t total = data.length();
  size_t offset = 0;
  while (offset < total) {
    const size_t n = data.copyOut(chunk, std::min(sizeof(chunk), total - offset), offset);
    size_t used = 0;
    const Http1HeadParser::State state = parser_.feed(std::string_view(chunk, n), used);
    if (state == Http1HeadParser::State::kNeedMore) {
      offset += n;
      continue;
    }
    deadline_.disable();
    transport_->pauseReading(true);
    phase_ = Phase::kWaitingForOwner;
    if (state == Http1HeadParser::State::kComplete) {
      // What follows the head belongs to the protocol the client upgrades to:
      // it goes back into the transport, to be read by its next owner.
      data.drain(offset + used);
      transport_->unreadInput(data);
      HttpRequest request = std::move(parser_.request());
      request.peer = peer_;
      callbacks_.onRequestHead(*this, std::move(request));
      return;
    }
    data.drain(data.length());
    callbacks_.onHeadError(*this, state == Http1HeadParser::State::kTooLarge
                                      ? HeadError::kTooLarge
                                      : HeadError::kMalformed);
    return;
  }
  data.drain(total);
}

void Http1Connection::onTransportEof() {
  switch (phase_) {
    case Phase::kReadingHead:
      deadline_.disable();
      phase_ = Phase::kWaitingForOwner;
      callbacks_.onHeadError(*this, HeadError::kPeerClosed);
      return;
    case Phase::kWriting:
      // A half-closed client may still read the response.
      peer_eof_ = true;
      return;
    case Phase::kLingering:
      finish();
      return;
    case Phase::kWaitingForOwner:
    case Phase::kDone:
      return;
  }
}

void Http1Connection::onTransportDrained() {
  if (phase_ != Phase::kWriting || transport_->queuedBytes() != 0) {
    return;
  }
  phase_ = Phase::kLingering;
  deadline_.enable(options_.close_linger);
  if (peer_eof_) {
    finish();
  }
}

void Http1Connection::onTransportError(const std::string& /*detail*/) {
  switch (phase_) {
    case Phase::kReadingHead:
      deadline_.disable();
      phase_ = Phase::kWaitingForOwner;
      callbacks_.onHeadError(*this, HeadError::kPeerClosed);
      return;
    case Phase::kWriting:
    case Phase::kLingering:
      finish();
      return;
    case Phase::kWaitingForOwner:
    case Phase::kDone:
      return;
  }
}

void Http1Connection::onDeadline() {
  if (phase_ == Phase::kReadingHead) {
    transport_->pauseReading(true);
    phase_ = Phase::kWaitingForOwner;
    callbacks_.onHeadError(*this, HeadError::kTimeout);
    return;
  }
  finish();
}

void Http1Connection::respond(std::string bytes) {
  if (phase_ == Phase::kDone || transport_ == nullptr) {
    return;
  }
  phase_ = Phase::kWriting;
  deadline_.enable(options_.header_timeout);
  Buffer out;
  out.add(bytes);
  transport_->write(out);
  transport_->shutdownWrite();
  // Read on (and drop) so that the client's close is seen.
  transport_->pauseReading(false);
  if (bytes.empty()) {
    phase_ = Phase::kLingering;
    deadline_.enable(options_.close_linger);
  }
}

void Http1Connection::close() { finish(); }

TransportPtr Http1Connection::releaseTransport() {
  deadline_.disable();
  phase_ = Phase::kDone;
  return std::move(transport_);
}

void Http1Connection::finish() {
  if (phase_ == Phase::kDone) {
    return;
  }
  phase_ = Phase::kDone;
  deadline_.disable();
  if (transport_ != nullptr) {
    transport_->close();
  }
  callbacks_.onClosed(*this);
}

Http1Connection& Http1ConnectionSet::add(std::unique_ptr<Http1Connection> connection) {
  Http1Connection& ref = *connection;
  connections_.emplace(&ref, std::move(connection));
  return ref;
}

bool Http1ConnectionSet::remove(Http1Connection& connection) {
  auto it = connections_.find(&connection);
  if (it == connections_.end()) {
    return false;
  }
  dispatcher_.deferredDelete(std::move(it->second));
  connections_.erase(it);
  return true;
}

}  // namespace crisp::stream
