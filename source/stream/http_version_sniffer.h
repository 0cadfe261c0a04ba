#pragma once

// HttpVersionSniffer: decides whether a new stream server connection speaks
// HTTP/1.1 or HTTP/2, before either front reads it.
//
// - With TLS, ALPN decides: "h2" is HTTP/2, "http/1.1" is HTTP/1.1 (the
//   transport's handshake is over by the time the first byte arrives).
// - Without ALPN (plain TCP, or a TLS client that offered none), the client
//   connection preface decides (RFC 9113 3.4, prior knowledge): HTTP/2 when
//   the first bytes are "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", HTTP/1.1 as soon
//   as a byte differs from it. An HTTP/1.1 request differs at its first byte.
//
// The bytes read are handed back (Transport::unreadInput()), reading paused,
// so the front that takes the transport over reads them first. A client that
// sends nothing decisive within `timeout`, or goes away, is reported too.
//
// Lives on one dispatcher; the owner destroys it after done, through
// Dispatcher::deferredDelete.

#include <chrono>
#include <cstdint>
#include <functional>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/stream/transport.h"

namespace crisp::stream {

class HttpVersionSniffer : private TransportCallbacks {
 public:
  enum class Result { kHttp1, kHttp2, kTimeout, kClosed };
  // Called once, from the loop. With kHttp1 or kHttp2 the owner takes the
  // transport (releaseTransport()); otherwise it is closed.
  using Done = std::function<void(HttpVersionSniffer& sniffer, Result result)>;

  // Takes ownership of `transport` (not started) and starts reading.
  HttpVersionSniffer(event::Dispatcher& dispatcher, TransportPtr transport,
                     std::chrono::milliseconds timeout, Done done);
  ~HttpVersionSniffer() override;
  HttpVersionSniffer(const HttpVersionSniffer&) = delete;
  HttpVersionSniffer& operator=(const HttpVersionSniffer&) = delete;

  // After done: the transport, reading paused, the bytes read handed back.
  TransportPtr releaseTransport();
  Transport* transport() { return transport_.get(); }

 private:
  // TransportCallbacks
  void onTransportData(Buffer& data) override;
  void onTransportEof() override;
  void onTransportDrained() override {}
  void onTransportError(const std::string& detail) override;

  void finish(Result result);

  TransportPtr transport_;
  Done done_;
  Buffer seen_;
  bool finished_ = false;
  event::Timer deadline_;
};

}  // namespace crisp::stream
