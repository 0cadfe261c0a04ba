#pragma once

// The seam between the stream server's HTTP/1.1 front and the protocol
// handlers. The HTTP layer parses one request, checks the route and the token,
// negotiates the protocol, writes the 101 response, and then hands the socket
// over as an UpgradedConnection; from then on the protocol handler owns it.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/session/request.h"

namespace crisp::stream {

// A parsed HTTP request head. Header names keep their case; look them up
// case-insensitively.
struct HttpRequest {
  std::string method;
  std::string path;   // without the query
  std::string query;  // without the '?'
  std::vector<std::pair<std::string, std::string>> headers;
  std::string peer;  // "ip:port" of the client

  // Every value of `name`, in order, each comma-separated list split and trimmed.
  std::vector<std::string> headerValues(std::string_view name) const;
};

// The protocol chosen during negotiation.
enum class Protocol {
  kSpdyRemoteCommandV1,  // channel.k8s.io
  kSpdyRemoteCommandV2,  // v2.channel.k8s.io
  kSpdyRemoteCommandV3,  // v3.channel.k8s.io
  kSpdyRemoteCommandV4,  // v4.channel.k8s.io
  kSpdyPortForward,      // portforward.k8s.io
};

// "spdy/v4.channel.k8s.io" and so on: the metric label and log text.
const char* protocolName(Protocol p);

// The wire family of a protocol; upgrade handlers are registered per family.
enum class ProtocolFamily { kSpdy, kWebSocket };

ProtocolFamily protocolFamily(Protocol p);

// A socket whose HTTP/1.1 upgrade has completed (the 101 is queued in
// `pending_output` or already written). The handler takes ownership of `fd`.
struct UpgradedConnection {
  uint64_t connection_id = 0;
  int fd = -1;
  // Bytes the client sent after the request head, already read from the socket.
  Buffer leftover_input;
  // Bytes still to write to the client before anything else (the 101 response).
  Buffer pending_output;
  HttpRequest request;
  Protocol protocol = Protocol::kSpdyRemoteCommandV4;
  session::StreamRequest stream_request;
};

// Takes over upgraded connections of one protocol family. The HTTP/1.1 front
// keeps a borrowed pointer per family; the handler must outlive it.
class UpgradeHandler {
 public:
  virtual ~UpgradeHandler() = default;

  // Called on `dispatcher`'s thread, the loop the connection lives on from now
  // on. The handler owns `connection.fd` from this call and must close it; it
  // writes `pending_output` before anything else and processes
  // `leftover_input` before reading the socket.
  virtual void onUpgrade(event::Dispatcher& dispatcher, UpgradedConnection&& connection) = 0;
};

}  // namespace crisp::stream
