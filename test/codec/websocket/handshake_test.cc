#include "source/codec/websocket/handshake.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace crisp::websocket {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

constexpr char kRfcKey[] = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr char kRfcAccept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// The kubelet's exec/attach server map (KS remotecommand/websocket.go).
const std::vector<std::string> kRemoteCommand = {"", "channel.k8s.io", "base64.channel.k8s.io",
                                                 "v4.channel.k8s.io", "v4.base64.channel.k8s.io"};
// The same plus v5, as the apiserver's translator offers it.
const std::vector<std::string> kRemoteCommandV5 = {"v5.channel.k8s.io", "",
                                                   "channel.k8s.io",    "base64.channel.k8s.io",
                                                   "v4.channel.k8s.io", "v4.base64.channel.k8s.io"};
// Port-forward (KS portforward/websocket.go).
const std::vector<std::string> kPortForward = {"", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"};

HeaderList baseRequest() {
  return {{"Host", "127.0.0.1:10250"},
          {"Upgrade", "websocket"},
          {"Connection", "Upgrade"},
          {"Sec-WebSocket-Key", kRfcKey},
          {"Sec-WebSocket-Version", "13"}};
}

HeaderList withHeader(HeaderList headers, std::string name, std::string value) {
  headers.emplace_back(std::move(name), std::move(value));
  return headers;
}

HeaderList without(HeaderList headers, std::string_view name) {
  HeaderList out;
  for (auto& h : headers) {
    if (h.first != name) {
      out.push_back(std::move(h));
    }
  }
  return out;
}

int countOf(const std::string& haystack, const std::string& needle) {
  int n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

TEST(HandshakeTest, AcceptKeyOfTheRfc6455Example) { EXPECT_EQ(computeAccept(kRfcKey), kRfcAccept); }

TEST(HandshakeTest, KeyMustBeBase64OfSixteenBytes) {
  EXPECT_TRUE(isValidKey(kRfcKey));
  EXPECT_TRUE(isValidKey("AAAAAAAAAAAAAAAAAAAAAA=="));
  EXPECT_FALSE(isValidKey(""));
  EXPECT_FALSE(isValidKey("dGhlIHNhbXBsZQ=="));              // 11 bytes
  EXPECT_FALSE(isValidKey("dGhlIHNhbXBsZSBub25jZSE="));      // 17 bytes
  EXPECT_FALSE(isValidKey("dGhlIHNhbXBsZSBub25jZQ"));        // unpadded
  EXPECT_FALSE(isValidKey("dGhlIHNhbXBsZSBub25jZ!=="));      // bad character
  EXPECT_FALSE(isValidKey("dGhlIHNhbXBsZSBub25j\r\nZQ=="));  // newlines are not skipped here
}

TEST(HandshakeTest, AcceptsWithoutSubprotocolWhenTheServerListHasEmpty) {
  const HandshakeResult r = serverHandshake("GET", baseRequest(), kRemoteCommand);
  ASSERT_TRUE(r.accepted);
  EXPECT_EQ(r.status, 101);
  EXPECT_EQ(r.subprotocol, "");
  EXPECT_EQ(r.response,
            "HTTP/1.1 101 Switching Protocols\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
            "\r\n");
}

TEST(HandshakeTest, NoOfferIsRefusedWhenTheServerListLacksEmpty) {
  const HandshakeResult r = serverHandshake("GET", baseRequest(), {"v5.channel.k8s.io"});
  EXPECT_FALSE(r.accepted);
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.response, "HTTP/1.1 403 Forbidden\r\n\r\n");
}

// streaming-cases B10 case E.
TEST(HandshakeTest, CommaJoinedOfferEchoesExactlyOneSupportedValue) {
  const HeaderList request = withHeader(baseRequest(), "Sec-WebSocket-Protocol",
                                        "base64.channel.k8s.io, v5.channel.k8s.io");
  for (const auto* server : {&kRemoteCommand, &kRemoteCommandV5}) {
    const HandshakeResult r = serverHandshake("GET", request, *server);
    ASSERT_TRUE(r.accepted);
    // The client's order wins: base64 comes first in its list.
    EXPECT_EQ(r.subprotocol, "base64.channel.k8s.io");
    EXPECT_EQ(countOf(r.response, "Sec-WebSocket-Protocol:"), 1);
    EXPECT_NE(r.response.find("\r\nSec-WebSocket-Protocol: base64.channel.k8s.io\r\n"),
              std::string::npos);
  }
  // Reversed: v5 only where the server has it.
  const HeaderList reversed = withHeader(baseRequest(), "Sec-WebSocket-Protocol",
                                         "v5.channel.k8s.io,base64.channel.k8s.io");
  EXPECT_EQ(serverHandshake("GET", reversed, kRemoteCommand).subprotocol, "base64.channel.k8s.io");
  EXPECT_EQ(serverHandshake("GET", reversed, kRemoteCommandV5).subprotocol, "v5.channel.k8s.io");
}

TEST(HandshakeTest, RepeatedProtocolHeadersAreOneListInOrder) {
  HeaderList request = withHeader(baseRequest(), "Sec-WebSocket-Protocol", "x.example, ,");
  request = withHeader(request, "sec-websocket-protocol", "  v4.base64.channel.k8s.io \t");
  request = withHeader(request, "SEC-WEBSOCKET-PROTOCOL", "v4.channel.k8s.io");
  const HandshakeResult r = serverHandshake("GET", request, kPortForward);
  ASSERT_TRUE(r.accepted);
  EXPECT_EQ(r.subprotocol, "v4.base64.channel.k8s.io");
  EXPECT_EQ(
      headerTokens(request, "Sec-WebSocket-Protocol"),
      (std::vector<std::string>{"x.example", "v4.base64.channel.k8s.io", "v4.channel.k8s.io"}));
}

TEST(HandshakeTest, OfferOfOnlyEmptyElementsCountsAsNoOffer) {
  const HeaderList request = withHeader(baseRequest(), "Sec-WebSocket-Protocol", " , ");
  const HandshakeResult r = serverHandshake("GET", request, kRemoteCommand);
  ASSERT_TRUE(r.accepted);
  EXPECT_EQ(r.subprotocol, "");
  EXPECT_EQ(countOf(r.response, "Sec-WebSocket-Protocol"), 0);
}

TEST(HandshakeTest, UnmatchedOfferGetsTheRaw403) {
  const HeaderList request =
      withHeader(baseRequest(), "Sec-WebSocket-Protocol", "v5.channel.k8s.io");
  const HandshakeResult r = serverHandshake("GET", request, kRemoteCommand);
  EXPECT_FALSE(r.accepted);
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.reason, "ws.handshake.no_subprotocol");
  EXPECT_EQ(r.response, "HTTP/1.1 403 Forbidden\r\n\r\n");
  EXPECT_EQ(r.response, kForbiddenResponse);
}

TEST(HandshakeTest, OtherVersionsGet400NamingVersion13) {
  for (const char* version : {"12", "8", "", "13, 8", "14"}) {
    HeaderList request = without(baseRequest(), "Sec-WebSocket-Version");
    request = withHeader(request, "Sec-WebSocket-Version", version);
    const HandshakeResult r = serverHandshake("GET", request, kRemoteCommand);
    EXPECT_FALSE(r.accepted) << version;
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.reason, "ws.handshake.bad_version");
    EXPECT_EQ(r.response,
              "HTTP/1.1 400 Bad Request\r\nSec-WebSocket-Version: 13\r\n\r\n"
              "missing or bad WebSocket Version");
  }
  const HandshakeResult missing =
      serverHandshake("GET", without(baseRequest(), "Sec-WebSocket-Version"), kRemoteCommand);
  EXPECT_EQ(missing.reason, "ws.handshake.bad_version");
}

TEST(HandshakeTest, KeyProblemsGet400) {
  const HandshakeResult missing =
      serverHandshake("GET", without(baseRequest(), "Sec-WebSocket-Key"), kRemoteCommand);
  EXPECT_EQ(missing.status, 400);
  EXPECT_EQ(missing.reason, "ws.handshake.missing_key");
  EXPECT_EQ(missing.response, "HTTP/1.1 400 Bad Request\r\n\r\nmismatch challenge/response");

  HeaderList bad = without(baseRequest(), "Sec-WebSocket-Key");
  bad = withHeader(bad, "Sec-WebSocket-Key", "dGhlIHNhbXBsZQ==");
  const HandshakeResult short_key = serverHandshake("GET", bad, kRemoteCommand);
  EXPECT_EQ(short_key.status, 400);
  EXPECT_EQ(short_key.reason, "ws.handshake.bad_key");
}

TEST(HandshakeTest, UpgradeAndConnectionAreCaseInsensitiveTokens) {
  HeaderList request = without(without(baseRequest(), "Upgrade"), "Connection");
  request = withHeader(request, "upgrade", "WebSocket");
  request = withHeader(request, "connection", "keep-alive, UPGRADE");
  EXPECT_TRUE(serverHandshake("GET", request, kRemoteCommand).accepted);

  HeaderList two_lines = without(baseRequest(), "Connection");
  two_lines = withHeader(two_lines, "Connection", "keep-alive");
  two_lines = withHeader(two_lines, "Connection", "Upgrade");
  EXPECT_TRUE(serverHandshake("GET", two_lines, kRemoteCommand).accepted);
}

TEST(HandshakeTest, NonWebSocketRequestsGet400) {
  HeaderList no_token = without(baseRequest(), "Connection");
  no_token = withHeader(no_token, "Connection", "keep-alive");
  HeaderList spdy = without(baseRequest(), "Upgrade");
  spdy = withHeader(spdy, "Upgrade", "SPDY/3.1");
  for (const HeaderList& request : {no_token, spdy, without(baseRequest(), "Upgrade")}) {
    const HandshakeResult r = serverHandshake("GET", request, kRemoteCommand);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.reason, "ws.handshake.not_websocket");
    EXPECT_EQ(r.response, "HTTP/1.1 400 Bad Request\r\n\r\nnot websocket protocol");
  }
}

TEST(HandshakeTest, MethodOtherThanGetGets405) {
  const HandshakeResult r = serverHandshake("POST", baseRequest(), kRemoteCommand);
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.reason, "ws.handshake.bad_method");
  EXPECT_EQ(r.response, "HTTP/1.1 405 Method Not Allowed\r\n\r\nbad method");
}

TEST(HandshakeTest, ChooseSubprotocol) {
  EXPECT_EQ(chooseSubprotocol({}, {"", "a"}), std::optional<std::string>(""));
  EXPECT_EQ(chooseSubprotocol({}, {"a"}), std::nullopt);
  EXPECT_EQ(chooseSubprotocol({"b", "a"}, {"a", "b"}), std::optional<std::string>("b"));
  EXPECT_EQ(chooseSubprotocol({"c"}, {"", "a"}), std::nullopt);
  EXPECT_EQ(chooseSubprotocol({"A"}, {"a"}), std::nullopt);  // exact match, as Go compares
}

HeaderList h2Request(std::string version, std::vector<std::string> protocols) {
  HeaderList out = {{"sec-websocket-version", std::move(version)}};
  for (std::string& p : protocols) {
    out.emplace_back("sec-websocket-protocol", std::move(p));
  }
  return out;
}

TEST(ExtendedConnectTest, AcceptsWith200AndTheChosenProtocol) {
  const ExtendedConnectResult r = extendedConnectHandshake(
      "websocket", h2Request("13", {"v5.channel.k8s.io, v4.channel.k8s.io"}), kRemoteCommand);
  ASSERT_TRUE(r.accepted);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.subprotocol, "v4.channel.k8s.io");
  EXPECT_THAT(r.headers, ElementsAre(Pair(":status", "200"),
                                     Pair("sec-websocket-protocol", "v4.channel.k8s.io")));
}

TEST(ExtendedConnectTest, NoOfferGivesNoProtocolHeader) {
  const ExtendedConnectResult r =
      extendedConnectHandshake("WebSocket", h2Request("13", {}), kRemoteCommand);
  ASSERT_TRUE(r.accepted);
  EXPECT_EQ(r.subprotocol, "");
  EXPECT_THAT(r.headers, ElementsAre(Pair(":status", "200")));
}

TEST(ExtendedConnectTest, Refusals) {
  const ExtendedConnectResult version =
      extendedConnectHandshake("websocket", h2Request("12", {}), kRemoteCommand);
  EXPECT_FALSE(version.accepted);
  EXPECT_EQ(version.reason, "ws.handshake.bad_version");
  EXPECT_THAT(version.headers,
              ElementsAre(Pair(":status", "400"), Pair("sec-websocket-version", "13")));

  const ExtendedConnectResult no_version =
      extendedConnectHandshake("websocket", HeaderList{}, kRemoteCommand);
  EXPECT_EQ(no_version.status, 400);

  const ExtendedConnectResult protocol =
      extendedConnectHandshake("connect-udp", h2Request("13", {}), kRemoteCommand);
  EXPECT_EQ(protocol.status, 400);
  EXPECT_EQ(protocol.reason, "ws.handshake.bad_protocol");

  const ExtendedConnectResult unmatched =
      extendedConnectHandshake("websocket", h2Request("13", {"v5.channel.k8s.io"}), kRemoteCommand);
  EXPECT_EQ(unmatched.status, 403);
  EXPECT_EQ(unmatched.reason, "ws.handshake.no_subprotocol");
  EXPECT_THAT(unmatched.headers, ElementsAre(Pair(":status", "403")));
}

}  // namespace
}  // namespace crisp::websocket
