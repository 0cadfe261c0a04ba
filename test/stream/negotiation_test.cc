#include "source/stream/negotiation.h"

#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

namespace crisp::stream {
namespace {

using session::Operation;
using Outcome = Negotiation::Outcome;

HttpRequest requestWith(std::vector<std::pair<std::string, std::string>> headers) {
  HttpRequest r;
  r.method = "POST";
  r.path = "/exec/tok";
  r.headers = std::move(headers);
  return r;
}

constexpr char kSwitchToV4[] =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Connection: Upgrade\r\n"
    "Upgrade: SPDY/3.1\r\n"
    "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
    "\r\n";

// B10 A: one comma-joined header line.
TEST(NegotiationTest, CommaJoinedVersionLineNegotiatesV4) {
  const auto n = negotiate(
      requestWith({{"Host", "x"},
                   {"Connection", "Upgrade"},
                   {"Upgrade", "SPDY/3.1"},
                   {"X-Stream-Protocol-Version",
                    "v4.channel.k8s.io, v3.channel.k8s.io, v2.channel.k8s.io, channel.k8s.io"}}),
      Operation::kExec);
  ASSERT_EQ(n.outcome, Outcome::kSpdy);
  EXPECT_EQ(n.protocol, Protocol::kSpdyRemoteCommandV4);
  EXPECT_EQ(n.status, 101);
  EXPECT_EQ(n.response, kSwitchToV4);
}

// B10 B: the same values on four separate lines.
TEST(NegotiationTest, SeparateVersionLinesNegotiateV4) {
  const auto n = negotiate(requestWith({{"Connection", "Upgrade"},
                                        {"Upgrade", "SPDY/3.1"},
                                        {"X-Stream-Protocol-Version", "v4.channel.k8s.io"},
                                        {"X-Stream-Protocol-Version", "v3.channel.k8s.io"},
                                        {"X-Stream-Protocol-Version", "v2.channel.k8s.io"},
                                        {"X-Stream-Protocol-Version", "channel.k8s.io"}}),
                           Operation::kAttach);
  ASSERT_EQ(n.outcome, Outcome::kSpdy);
  EXPECT_EQ(n.protocol, Protocol::kSpdyRemoteCommandV4);
  EXPECT_EQ(n.response, kSwitchToV4);
}

// B10 C: lower-case names, lower-case upgrade token.
TEST(NegotiationTest, HeaderNamesAndUpgradeValuesAreCaseInsensitive) {
  const auto n = negotiate(requestWith({{"connection", "keep-alive, UPGRADE"},
                                        {"upgrade", "spdy/3.1"},
                                        {"x-stream-protocol-version", "v4.channel.k8s.io"}}),
                           Operation::kExec);
  ASSERT_EQ(n.outcome, Outcome::kSpdy);
  EXPECT_EQ(n.response, kSwitchToV4);
}

TEST(NegotiationTest, ClientOrderWinsAndV5FallsToV4) {
  auto n = negotiate(requestWith({{"Connection", "Upgrade"},
                                  {"Upgrade", "SPDY/3.1"},
                                  {"X-Stream-Protocol-Version", "v2.channel.k8s.io"},
                                  {"X-Stream-Protocol-Version", "v4.channel.k8s.io"}}),
                     Operation::kExec);
  ASSERT_EQ(n.outcome, Outcome::kSpdy);
  EXPECT_EQ(n.protocol, Protocol::kSpdyRemoteCommandV2);
  EXPECT_NE(n.response.find("\r\nX-Stream-Protocol-Version: v2.channel.k8s.io\r\n"),
            std::string::npos);

  // What client-go 1.29+ offers.
  n = negotiate(requestWith({{"Connection", "Upgrade"},
                             {"Upgrade", "SPDY/3.1"},
                             {"X-Stream-Protocol-Version", "v5.channel.k8s.io"},
                             {"X-Stream-Protocol-Version", "v4.channel.k8s.io"},
                             {"X-Stream-Protocol-Version", "v3.channel.k8s.io"},
                             {"X-Stream-Protocol-Version", "v2.channel.k8s.io"},
                             {"X-Stream-Protocol-Version", "channel.k8s.io"}}),
                Operation::kExec);
  ASSERT_EQ(n.outcome, Outcome::kSpdy);
  EXPECT_EQ(n.protocol, Protocol::kSpdyRemoteCommandV4);

  n = negotiate(requestWith({{"Connection", "Upgrade"},
                             {"Upgrade", "SPDY/3.1"},
                             {"X-Stream-Protocol-Version", "channel.k8s.io"}}),
                Operation::kExec);
  ASSERT_EQ(n.outcome, Outcome::kSpdy);
  EXPECT_EQ(n.protocol, Protocol::kSpdyRemoteCommandV1);
}

TEST(NegotiationTest, PortForwardAcceptsOnlyPortForwardProtocol) {
  auto n = negotiate(requestWith({{"Connection", "Upgrade"},
                                  {"Upgrade", "SPDY/3.1"},
                                  {"X-Stream-Protocol-Version", "portforward.k8s.io"}}),
                     Operation::kPortForward);
  ASSERT_EQ(n.outcome, Outcome::kSpdy);
  EXPECT_EQ(n.protocol, Protocol::kSpdyPortForward);
  EXPECT_EQ(n.response,
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            "X-Stream-Protocol-Version: portforward.k8s.io\r\n\r\n");

  n = negotiate(requestWith({{"Connection", "Upgrade"},
                             {"Upgrade", "SPDY/3.1"},
                             {"X-Stream-Protocol-Version", "v4.channel.k8s.io"}}),
                Operation::kPortForward);
  ASSERT_EQ(n.outcome, Outcome::kRejected);
  EXPECT_EQ(n.status, 403);
  // And a remote-command route does not accept the port-forward protocol.
  n = negotiate(requestWith({{"Connection", "Upgrade"},
                             {"Upgrade", "SPDY/3.1"},
                             {"X-Stream-Protocol-Version", "portforward.k8s.io"}}),
                Operation::kExec);
  EXPECT_EQ(n.status, 403);
}

// B10 D: nothing in common.
TEST(NegotiationTest, NoCommonVersionIs403NamingBothLists) {
  const auto n = negotiate(requestWith({{"Connection", "Upgrade"},
                                        {"Upgrade", "SPDY/3.1"},
                                        {"X-Stream-Protocol-Version", "v9.channel.k8s.io"}}),
                           Operation::kExec);
  ASSERT_EQ(n.outcome, Outcome::kRejected);
  EXPECT_EQ(n.status, 403);
  const std::string body =
      "unable to upgrade: unable to negotiate protocol: client supports [v9.channel.k8s.io], "
      "server accepts [v4.channel.k8s.io v3.channel.k8s.io v2.channel.k8s.io channel.k8s.io]\n";
  EXPECT_EQ(n.response,
            "HTTP/1.1 403 Forbidden\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io\r\n"
            "X-Accepted-Stream-Protocol-Versions: v3.channel.k8s.io\r\n"
            "X-Accepted-Stream-Protocol-Versions: v2.channel.k8s.io\r\n"
            "X-Accepted-Stream-Protocol-Versions: channel.k8s.io\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "Content-Length: " +
                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
}

TEST(NegotiationTest, NoCommonVersionListsEverySplitClientValue) {
  const auto n = negotiate(
      requestWith({{"Connection", "Upgrade"},
                   {"Upgrade", "SPDY/3.1"},
                   {"X-Stream-Protocol-Version", " v9.channel.k8s.io ,, v8.channel.k8s.io"},
                   {"X-Stream-Protocol-Version", "v7.channel.k8s.io"}}),
      Operation::kPortForward);
  EXPECT_EQ(n.status, 403);
  EXPECT_NE(n.response.find("client supports [v9.channel.k8s.io v8.channel.k8s.io "
                            "v7.channel.k8s.io], server accepts [portforward.k8s.io]\n"),
            std::string::npos);
  EXPECT_NE(n.response.find("\r\nX-Accepted-Stream-Protocol-Versions: portforward.k8s.io\r\n"),
            std::string::npos);
}

TEST(NegotiationTest, MissingVersionHeaderIs400CountingHeadersLikeGo) {
  // Go's header map: Host is taken out, repeated names count once.
  const auto n = negotiate(requestWith({{"Host", "x"},
                                        {"Connection", "Upgrade"},
                                        {"Upgrade", "SPDY/3.1"},
                                        {"X-Forwarded-For", "a"},
                                        {"x-forwarded-for", "b"}}),
                           Operation::kExec);
  ASSERT_EQ(n.outcome, Outcome::kRejected);
  EXPECT_EQ(n.status, 400);
  const std::string body =
      "unable to upgrade: header X-Stream-Protocol-Version does not exist in request with 3 "
      "headers\n";
  EXPECT_EQ(n.response,
            "HTTP/1.1 400 Bad Request\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "Content-Length: " +
                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
}

TEST(NegotiationTest, OnlyEmptyVersionValuesIs400) {
  const auto n = negotiate(requestWith({{"Connection", "Upgrade"},
                                        {"Upgrade", "SPDY/3.1"},
                                        {"X-Stream-Protocol-Version", ", ,"},
                                        {"X-Stream-Protocol-Version", ""}}),
                           Operation::kExec);
  EXPECT_EQ(n.status, 400);
  EXPECT_NE(n.response.find("\r\n\r\nunable to upgrade: header X-Stream-Protocol-Version "
                            "contains [, , ], but no valid protocols\n"),
            std::string::npos);
}

TEST(NegotiationTest, MatchWithoutUpgradeHeadersIs400ShowingTheRequestHeaders) {
  const auto n = negotiate(requestWith({{"Host", "x"},
                                        {"X-Stream-Protocol-Version", "v4.channel.k8s.io"},
                                        {"user-agent", "kubectl/v1.27.0"},
                                        {"Accept", "say \"hi\"\\"}}),
                           Operation::kExec);
  ASSERT_EQ(n.outcome, Outcome::kRejected);
  EXPECT_EQ(n.status, 400);
  const std::string body =
      "unable to upgrade: missing upgrade headers in request: http.Header{"
      "\"Accept\":[]string{\"say \\\"hi\\\"\\\\\"}, "
      "\"User-Agent\":[]string{\"kubectl/v1.27.0\"}, "
      "\"X-Stream-Protocol-Version\":[]string{\"v4.channel.k8s.io\"}}\n";
  EXPECT_EQ(n.response,
            "HTTP/1.1 400 Bad Request\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            "X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
            "Content-Length: " +
                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
}

TEST(NegotiationTest, UpgradeMustNameSpdyAndConnectionMustNameUpgrade) {
  const std::pair<std::string, std::string> version = {"X-Stream-Protocol-Version",
                                                       "v4.channel.k8s.io"};
  // Go reads only the first line of each (Header.Get).
  for (const auto& headers : std::vector<std::vector<std::pair<std::string, std::string>>>{
           {{"Connection", "keep-alive"}, {"Upgrade", "SPDY/3.1"}, version},
           {{"Connection", "Upgrade"}, {"Upgrade", "h2c"}, version},
           {{"Connection", "Upgrade"}, {"Upgrade", "h2c"}, {"Upgrade", "SPDY/3.1"}, version},
           {{"Connection", "close"}, {"Connection", "Upgrade"}, {"Upgrade", "SPDY/3.1"}, version},
           {{"Upgrade", "SPDY/3.1"}, version},
       }) {
    const auto n = negotiate(requestWith(headers), Operation::kExec);
    EXPECT_EQ(n.status, 400);
    EXPECT_NE(n.response.find("unable to upgrade: missing upgrade headers in request: "),
              std::string::npos);
  }
}

// A WebSocket upgrade as client-go sends it (GET, the RFC 6455 sample key),
// offering `protocols` (no header when empty).
HttpRequest webSocketRequest(const std::string& protocols, const std::string& method = "GET",
                             const std::string& version = "13") {
  HttpRequest r = requestWith({{"Connection", "Upgrade"},
                               {"Upgrade", "websocket"},
                               {"Sec-WebSocket-Version", version},
                               {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}});
  r.method = method;
  if (!protocols.empty()) {
    r.headers.emplace_back("Sec-WebSocket-Protocol", protocols);
  }
  return r;
}

// The 101 for the sample key, with `protocol` echoed (none when empty).
std::string webSocket101(const std::string& protocol) {
  std::string out =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n";
  if (!protocol.empty()) {
    out += "Sec-WebSocket-Protocol: " + protocol + "\r\n";
  }
  return out + "\r\n";
}

// B10 E: a WebSocket offer as one comma-joined line: the first offered value
// the server supports wins, and exactly that one is echoed.
TEST(NegotiationTest, WebSocketCommaJoinedOfferEchoesExactlyOneSupportedValue) {
  const auto n =
      negotiate(webSocketRequest("base64.channel.k8s.io, v5.channel.k8s.io"), Operation::kExec);
  ASSERT_EQ(n.outcome, Outcome::kWebSocket);
  EXPECT_EQ(n.protocol, Protocol::kWsBase64Channel);
  EXPECT_EQ(n.subprotocol, "base64.channel.k8s.io");
  EXPECT_EQ(n.status, 101);
  EXPECT_EQ(n.response, webSocket101("base64.channel.k8s.io"));
  EXPECT_EQ(protocolFamily(n.protocol), ProtocolFamily::kWebSocket);

  // Client order, across lines too; unknown offers are skipped.
  HttpRequest lines = webSocketRequest("v9.channel.k8s.io");
  lines.headers.emplace_back("sec-websocket-protocol", "v5.channel.k8s.io, channel.k8s.io");
  const auto m = negotiate(lines, Operation::kAttach);
  ASSERT_EQ(m.outcome, Outcome::kWebSocket);
  EXPECT_EQ(m.protocol, Protocol::kWsV5Channel);
  EXPECT_EQ(m.response, webSocket101("v5.channel.k8s.io"));
}

TEST(NegotiationTest, WebSocketRemoteCommandSubprotocols) {
  const std::vector<std::pair<std::string, Protocol>> cases = {
      {"channel.k8s.io", Protocol::kWsChannel},
      {"base64.channel.k8s.io", Protocol::kWsBase64Channel},
      {"v4.channel.k8s.io", Protocol::kWsV4Channel},
      {"v4.base64.channel.k8s.io", Protocol::kWsV4Base64Channel},
      {"v5.channel.k8s.io", Protocol::kWsV5Channel},
  };
  for (const auto& [offer, protocol] : cases) {
    const auto n = negotiate(webSocketRequest(offer), Operation::kExec);
    ASSERT_EQ(n.outcome, Outcome::kWebSocket) << offer;
    EXPECT_EQ(n.protocol, protocol) << offer;
    EXPECT_EQ(n.response, webSocket101(offer));
  }
  // No offer: binary v1 framing and no Sec-WebSocket-Protocol in the reply.
  const auto none = negotiate(webSocketRequest(""), Operation::kExec);
  ASSERT_EQ(none.outcome, Outcome::kWebSocket);
  EXPECT_EQ(none.protocol, Protocol::kWsChannel);
  EXPECT_EQ(none.subprotocol, "");
  EXPECT_EQ(none.response, webSocket101(""));
  // Names only port-forward (or nobody) speaks.
  for (const char* offer : {"SPDY/3.1+portforward.k8s.io", "v5.base64.channel.k8s.io",
                            "portforward.k8s.io", "V4.CHANNEL.K8S.IO"}) {
    const auto n = negotiate(webSocketRequest(offer), Operation::kExec);
    EXPECT_EQ(n.outcome, Outcome::kRejected) << offer;
    EXPECT_EQ(n.status, 403) << offer;
  }
}

TEST(NegotiationTest, WebSocketPortForwardSubprotocols) {
  const std::vector<std::pair<std::string, Protocol>> cases = {
      {"", Protocol::kWsPortForwardBinary},
      {"v4.channel.k8s.io", Protocol::kWsPortForwardV4},
      {"v4.base64.channel.k8s.io", Protocol::kWsPortForwardV4Base64},
      {"SPDY/3.1+portforward.k8s.io", Protocol::kWsSpdyTunnelPortForward},
  };
  for (const auto& [offer, protocol] : cases) {
    const auto n = negotiate(webSocketRequest(offer), Operation::kPortForward);
    ASSERT_EQ(n.outcome, Outcome::kWebSocket) << offer;
    EXPECT_EQ(n.protocol, protocol) << offer;
    EXPECT_EQ(n.response, webSocket101(offer));
  }
  for (const char* offer :
       {"channel.k8s.io", "base64.channel.k8s.io", "v5.channel.k8s.io", "portforward.k8s.io"}) {
    const auto n = negotiate(webSocketRequest(offer), Operation::kPortForward);
    EXPECT_EQ(n.outcome, Outcome::kRejected) << offer;
    EXPECT_EQ(n.status, 403) << offer;
  }
}

// Subprotocols without a handler are not offered: the client's next choice
// wins, and with nothing left the bare 403 makes kubectl fall back to SPDY
// (a 101 followed by a close would not).
TEST(NegotiationTest, WebSocketOffersOnlyServedProtocols) {
  const ServedProtocols tunnel_only = [](Protocol p) {
    return p == Protocol::kWsSpdyTunnelPortForward;
  };
  auto n = negotiate(webSocketRequest("v4.channel.k8s.io, SPDY/3.1+portforward.k8s.io"),
                     Operation::kPortForward, tunnel_only);
  ASSERT_EQ(n.outcome, Outcome::kWebSocket);
  EXPECT_EQ(n.protocol, Protocol::kWsSpdyTunnelPortForward);
  EXPECT_EQ(n.response, webSocket101("SPDY/3.1+portforward.k8s.io"));
  for (const char* offer : {"v4.channel.k8s.io", "v4.base64.channel.k8s.io", ""}) {
    n = negotiate(webSocketRequest(offer), Operation::kPortForward, tunnel_only);
    EXPECT_EQ(n.outcome, Outcome::kRejected) << offer;
    EXPECT_EQ(n.response, kWebSocketForbiddenResponse) << offer;
    EXPECT_EQ(n.reason, "ws.handshake.no_subprotocol") << offer;
  }
  const ServedProtocols nothing = [](Protocol) { return false; };
  n = negotiate(webSocketRequest("v5.channel.k8s.io"), Operation::kExec, nothing);
  EXPECT_EQ(n.response, kWebSocketForbiddenResponse);
  // The handshake's own checks come first, as before.
  n = negotiate(webSocketRequest("v5.channel.k8s.io", "GET", "8"), Operation::kExec, nothing);
  EXPECT_EQ(n.status, 400);
  // SPDY is not filtered here.
  n = negotiate(requestWith({{"Connection", "Upgrade"},
                             {"Upgrade", "SPDY/3.1"},
                             {"X-Stream-Protocol-Version", "v4.channel.k8s.io"}}),
                Operation::kExec, nothing);
  EXPECT_EQ(n.outcome, Outcome::kSpdy);
  // An empty function serves everything.
  n = negotiate(webSocketRequest("v4.base64.channel.k8s.io"), Operation::kPortForward, {});
  EXPECT_EQ(n.protocol, Protocol::kWsPortForwardV4Base64);
}

// golang.org/x/net/websocket's answers, byte for byte.
TEST(NegotiationTest, WebSocketFailuresAnswerAsXNetWebsocket) {
  auto n = negotiate(webSocketRequest("v9.channel.k8s.io"), Operation::kExec);
  EXPECT_EQ(n.outcome, Outcome::kRejected);
  EXPECT_EQ(n.status, 403);
  EXPECT_EQ(n.response, "HTTP/1.1 403 Forbidden\r\n\r\n");
  EXPECT_EQ(n.response, kWebSocketForbiddenResponse);
  EXPECT_EQ(n.reason, "ws.handshake.no_subprotocol");

  n = negotiate(webSocketRequest("v5.channel.k8s.io", "GET", "8"), Operation::kExec);
  EXPECT_EQ(n.outcome, Outcome::kRejected);
  EXPECT_EQ(n.status, 400);
  EXPECT_EQ(n.response,
            "HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n\r\n"
            "missing or bad WebSocket Version");
  EXPECT_EQ(n.reason, "ws.handshake.bad_version");

  // The kubelet routes POST too, but x/net/websocket takes GET only.
  n = negotiate(webSocketRequest("v5.channel.k8s.io", "POST"), Operation::kExec);
  EXPECT_EQ(n.outcome, Outcome::kRejected);
  EXPECT_EQ(n.status, 405);
  EXPECT_EQ(n.response, "HTTP/1.1 405 Method Not Allowed\r\n\r\nbad method");

  HttpRequest no_key = webSocketRequest("v5.channel.k8s.io");
  no_key.headers.erase(no_key.headers.begin() + 3);
  n = negotiate(no_key, Operation::kExec);
  EXPECT_EQ(n.outcome, Outcome::kRejected);
  EXPECT_EQ(n.status, 400);
  EXPECT_EQ(n.reason, "ws.handshake.missing_key");
}

TEST(NegotiationTest, WebSocketServerListsNameEverySupportedSubprotocol) {
  EXPECT_EQ(
      websocketServerProtocols(Operation::kExec),
      (std::vector<std::string>{"", "channel.k8s.io", "base64.channel.k8s.io", "v4.channel.k8s.io",
                                "v4.base64.channel.k8s.io", "v5.channel.k8s.io"}));
  EXPECT_EQ(websocketServerProtocols(Operation::kAttach),
            websocketServerProtocols(Operation::kExec));
  EXPECT_EQ(websocketServerProtocols(Operation::kPortForward),
            (std::vector<std::string>{"", "v4.channel.k8s.io", "v4.base64.channel.k8s.io",
                                      "SPDY/3.1+portforward.k8s.io"}));
  // Every entry maps to a protocol of the WebSocket family with its own label.
  for (Operation op : {Operation::kExec, Operation::kPortForward}) {
    for (const std::string& p : websocketServerProtocols(op)) {
      const auto protocol = websocketProtocol(op, p);
      ASSERT_TRUE(protocol.has_value()) << p;
      EXPECT_EQ(protocolFamily(*protocol), ProtocolFamily::kWebSocket);
      EXPECT_EQ(std::string(protocolName(*protocol)).rfind("ws/", 0), 0u);
    }
  }
  EXPECT_STREQ(protocolName(Protocol::kWsV5Channel), "ws/v5.channel.k8s.io");
  EXPECT_STREQ(protocolName(Protocol::kWsPortForwardV4), "ws/portforward/v4.channel.k8s.io");
  EXPECT_STRNE(protocolName(Protocol::kWsV4Channel), protocolName(Protocol::kWsPortForwardV4));
}

TEST(NegotiationTest, WebSocketDetection) {
  EXPECT_TRUE(isWebSocketRequest(
      requestWith({{"connection", "keep-alive, Upgrade"}, {"upgrade", "WebSocket"}})));
  EXPECT_TRUE(isWebSocketRequest(requestWith(
      {{"Connection", "keep-alive"}, {"Connection", "upgrade"}, {"Upgrade", "websocket"}})));
  // Not WebSocket: handled as SPDY (and then refused for lack of a version).
  EXPECT_FALSE(isWebSocketRequest(requestWith({{"Upgrade", "websocket"}})));
  EXPECT_FALSE(isWebSocketRequest(
      requestWith({{"Connection", "Upgrade"}, {"Upgrade", "websocket, SPDY/3.1"}})));
  EXPECT_FALSE(
      isWebSocketRequest(requestWith({{"Connection", "Upgrade"}, {"Upgrade", "SPDY/3.1"}})));
  const auto n = negotiate(requestWith({{"Upgrade", "websocket"}}), Operation::kExec);
  EXPECT_EQ(n.outcome, Outcome::kRejected);
  EXPECT_EQ(n.status, 400);
}

TEST(NegotiationTest, ServerListsAreKubeletsInOrder) {
  EXPECT_EQ(spdyServerProtocols(Operation::kExec),
            (std::vector<std::string>{"v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                                      "channel.k8s.io"}));
  EXPECT_EQ(spdyServerProtocols(Operation::kAttach), spdyServerProtocols(Operation::kExec));
  EXPECT_EQ(spdyServerProtocols(Operation::kPortForward),
            (std::vector<std::string>{"portforward.k8s.io"}));
}

}  // namespace
}  // namespace crisp::stream
