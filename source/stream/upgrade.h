#pragma once

// The seam between the stream server's HTTP/1.1 front and the protocol
// handlers. The HTTP layer parses one request, checks the route and the token,
// negotiates the protocol, queues the 101 response, and then hands the
// connection's Transport over as an UpgradedConnection; from then on the
// protocol handler owns it.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "source/common/dispatcher.h"
#include "source/session/request.h"
#include "source/stream/transport.h"

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
  // SPDY/3.1, by X-Stream-Protocol-Version.
  kSpdyRemoteCommandV1,  // channel.k8s.io
  kSpdyRemoteCommandV2,  // v2.channel.k8s.io
  kSpdyRemoteCommandV3,  // v3.channel.k8s.io
  kSpdyRemoteCommandV4,  // v4.channel.k8s.io
  kSpdyPortForward,      // portforward.k8s.io

  // WebSocket exec/attach, by Sec-WebSocket-Protocol.
  kWsChannel,          // channel.k8s.io, or no subprotocol (same binary v1 framing)
  kWsBase64Channel,    // base64.channel.k8s.io
  kWsV4Channel,        // v4.channel.k8s.io
  kWsV4Base64Channel,  // v4.base64.channel.k8s.io
  kWsV5Channel,        // v5.channel.k8s.io
  // WebSocket port-forward.
  kWsPortForwardBinary,      // no subprotocol
  kWsPortForwardV4,          // v4.channel.k8s.io
  kWsPortForwardV4Base64,    // v4.base64.channel.k8s.io
  kWsSpdyTunnelPortForward,  // SPDY/3.1+portforward.k8s.io: SPDY frames in binary messages
};

// "spdy/v4.channel.k8s.io", "ws/v5.channel.k8s.io", "ws/portforward",
// "ws/portforward/v4.channel.k8s.io" and so on: the metric label and log text.
const char* protocolName(Protocol p);

// The wire family of a protocol; upgrade handlers are registered per family.
enum class ProtocolFamily { kSpdy, kWebSocket };

ProtocolFamily protocolFamily(Protocol p);

// A connection whose HTTP/1.1 upgrade has completed.
struct UpgradedConnection {
  uint64_t connection_id = 0;
  // The byte stream to the client, on the dispatcher onUpgrade() runs on. The
  // 101 response is already queued in it (or written), and the bytes the
  // client sent after the request head are held in it, delivered first.
  // Reading is paused until the new owner's start().
  TransportPtr transport;
  HttpRequest request;
  Protocol protocol = Protocol::kSpdyRemoteCommandV4;
  session::StreamRequest stream_request;
};

// Refuses an upgraded connection: closes its transport now and frees it on a
// later loop iteration. Handlers call this instead of destroying the transport,
// because the HTTP front hands connections over from inside the transport's
// own callback.
void discardUpgrade(event::Dispatcher& dispatcher, TransportPtr transport);

// Takes over upgraded connections of one protocol family. The HTTP/1.1 front
// keeps a borrowed pointer per family; the handler must outlive it.
class UpgradeHandler {
 public:
  virtual ~UpgradeHandler() = default;

  // Called on `dispatcher`'s thread, the loop the connection lives on from now
  // on. The handler owns `connection.transport` from this call: before it
  // returns it must either call transport->setCallbacks() (and start() then
  // or later) or destroy the transport, which closes the connection.
  virtual void onUpgrade(event::Dispatcher& dispatcher, UpgradedConnection&& connection) = 0;

  // Whether onUpgrade() serves `protocol`. The HTTP/1.1 front offers a
  // WebSocket client only the subprotocols its handler serves, so a request
  // for anything else gets the refusal that makes kubectl fall back (never a
  // 101 followed by a close). Any thread; must not change while registered.
  virtual bool serves(Protocol protocol) const {
    (void)protocol;
    return true;
  }
};

}  // namespace crisp::stream
