#include "source/stream/negotiation.h"

#include <string>
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

// B10 E: a WebSocket offer with a comma list. WebSocket is not served yet, so
// the server does what the kubelet does when no subprotocol matches; the
// offer is kept for the WebSocket handler to come.
TEST(NegotiationTest, WebSocketUpgradeIsRecognisedWithItsOfferInOrder) {
  const auto n = negotiate(
      requestWith({{"Connection", "Upgrade"},
                   {"Upgrade", "websocket"},
                   {"Sec-WebSocket-Version", "13"},
                   {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
                   {"Sec-WebSocket-Protocol", "base64.channel.k8s.io, v5.channel.k8s.io"}}),
      Operation::kExec);
  ASSERT_EQ(n.outcome, Outcome::kWebSocket);
  EXPECT_EQ(n.websocket_protocols,
            (std::vector<std::string>{"base64.channel.k8s.io", "v5.channel.k8s.io"}));
  EXPECT_EQ(kWebSocketForbiddenResponse, "HTTP/1.1 403 Forbidden\r\n\r\n");
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
