#include "source/codec/websocket/channel.h"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "test/codec/websocket/ws_test_util.h"

namespace crisp::websocket {
namespace {

using ::testing::ElementsAre;
using ::testing::StartsWith;

ChannelProtocol protocolOf(std::string_view name) {
  std::optional<ChannelProtocol> p = channelProtocol(name);
  EXPECT_TRUE(p.has_value()) << name;
  return p.value_or(ChannelProtocol{});
}

Buffer bufferOf(std::string_view bytes) {
  Buffer b;
  b.add(bytes);
  return b;
}

absl::StatusOr<InboundMessage> decode(std::string_view protocol, MessageType type,
                                      std::string_view bytes,
                                      size_t channels = kRemoteCommandChannels,
                                      MessageTypePolicy policy = MessageTypePolicy::kAcceptAny) {
  Buffer message = bufferOf(bytes);
  absl::StatusOr<InboundMessage> out =
      decodeInbound(protocolOf(protocol), type, message, channels, policy);
  EXPECT_TRUE(message.empty());
  return out;
}

TEST(ChannelProtocolTest, KnowsTheKubernetesSubprotocols) {
  struct Row {
    std::string name;
    ChannelFraming framing;
    int version;
    bool stream_close;
  };
  const Row rows[] = {
      {"", ChannelFraming::kBinary, 1, false},
      {"channel.k8s.io", ChannelFraming::kBinary, 1, false},
      {"base64.channel.k8s.io", ChannelFraming::kBase64, 1, false},
      {"v4.channel.k8s.io", ChannelFraming::kBinary, 4, false},
      {"v4.base64.channel.k8s.io", ChannelFraming::kBase64, 4, false},
      {"v5.channel.k8s.io", ChannelFraming::kBinary, 5, true},
  };
  for (const Row& row : rows) {
    const ChannelProtocol p = protocolOf(row.name);
    EXPECT_EQ(p.name, row.name);
    EXPECT_EQ(p.framing, row.framing) << row.name;
    EXPECT_EQ(p.version, row.version) << row.name;
    EXPECT_EQ(p.stream_close, row.stream_close) << row.name;
  }
  EXPECT_FALSE(channelProtocol("v5.base64.channel.k8s.io").has_value());
  EXPECT_FALSE(channelProtocol("SPDY/3.1+portforward.k8s.io").has_value());
  EXPECT_FALSE(channelProtocol("portforward.k8s.io").has_value());
}

TEST(ChannelEncodeTest, BinaryIsChannelBytePlusPayload) {
  for (uint8_t channel : {0, 1, 2, 3, 4, 200, 255}) {
    Buffer out;
    EXPECT_EQ(encodeChannelMessage(ChannelFraming::kBinary, channel, "hi", out),
              MessageType::kBinary);
    EXPECT_EQ(out.toString(), std::string(1, static_cast<char>(channel)) + "hi");
  }
  Buffer payload = bufferOf("moved");
  Buffer out;
  encodeChannelMessage(ChannelFraming::kBinary, 1, payload, out);
  EXPECT_TRUE(payload.empty());
  EXPECT_EQ(out.toString(), "\x01moved");
  // The ready signal: an empty payload on stdout.
  encodeChannelMessage(ChannelFraming::kBinary, kChannelStdout, "", out);
  EXPECT_EQ(out.toString(), "\x01");
}

TEST(ChannelEncodeTest, Base64IsDigitPlusPaddedBase64) {
  const std::pair<uint8_t, std::string> cases[] = {
      {0, "0aGk="}, {1, "1aGk="}, {2, "2aGk="}, {3, "3aGk="}, {4, "4aGk="}};
  for (const auto& [channel, wire] : cases) {
    Buffer out;
    EXPECT_EQ(encodeChannelMessage(ChannelFraming::kBase64, channel, "hi", out),
              MessageType::kText);
    EXPECT_EQ(out.toString(), wire);
  }
  Buffer out;
  encodeChannelMessage(ChannelFraming::kBase64, kChannelStdout, "", out);
  EXPECT_EQ(out.toString(), "1");
  Buffer payload = bufferOf(std::string("\x00\xFF\x10", 3));
  encodeChannelMessage(ChannelFraming::kBase64, kChannelStderr, payload, out);
  EXPECT_TRUE(payload.empty());
  EXPECT_EQ(out.toString(), "2AP8Q");
}

TEST(ChannelDecodeTest, BinaryPerChannel) {
  for (uint8_t channel = 0; channel < kRemoteCommandChannels; ++channel) {
    absl::StatusOr<InboundMessage> m = decode("v4.channel.k8s.io", MessageType::kBinary,
                                              std::string(1, static_cast<char>(channel)) + "data");
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->kind, InboundMessage::Kind::kData);
    EXPECT_EQ(m->channel, channel);
    EXPECT_EQ(m->payload.toString(), "data");
  }
  absl::StatusOr<InboundMessage> only_channel =
      decode("", MessageType::kBinary, std::string("\x00", 1));
  ASSERT_TRUE(only_channel.ok());
  EXPECT_EQ(only_channel->kind, InboundMessage::Kind::kData);
  EXPECT_TRUE(only_channel->payload.empty());
}

TEST(ChannelDecodeTest, Base64PerChannel) {
  for (uint8_t channel = 0; channel < kRemoteCommandChannels; ++channel) {
    const std::string wire = std::string(1, static_cast<char>('0' + channel)) + "c3RkaW4K";
    absl::StatusOr<InboundMessage> m = decode("base64.channel.k8s.io", MessageType::kText, wire);
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->kind, InboundMessage::Kind::kData);
    EXPECT_EQ(m->channel, channel);
    EXPECT_EQ(m->payload.toString(), "stdin\n");
  }
  absl::StatusOr<InboundMessage> empty =
      decode("v4.base64.channel.k8s.io", MessageType::kText, "4");
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->kind, InboundMessage::Kind::kData);
  EXPECT_EQ(empty->channel, 4);
  EXPECT_TRUE(empty->payload.empty());
  // Go's decoder skips line breaks; so do we.
  absl::StatusOr<InboundMessage> folded =
      decode("base64.channel.k8s.io", MessageType::kText, "0c3Rk\r\naW4K");
  ASSERT_TRUE(folded.ok());
  EXPECT_EQ(folded->payload.toString(), "stdin\n");
}

TEST(ChannelDecodeTest, RoundTripsEveryFraming) {
  const std::string payload("\x00\x01\xFE\xFFtext\n", 9);
  for (std::string_view name : {"", "channel.k8s.io", "base64.channel.k8s.io", "v4.channel.k8s.io",
                                "v4.base64.channel.k8s.io", "v5.channel.k8s.io"}) {
    const ChannelProtocol p = protocolOf(name);
    Buffer message;
    const MessageType type = encodeChannelMessage(p.framing, kChannelStdin, payload, message);
    absl::StatusOr<InboundMessage> m = decodeInbound(p, type, message, kRemoteCommandChannels,
                                                     MessageTypePolicy::kRequireProtocolType);
    ASSERT_TRUE(m.ok()) << name << ": " << m.status();
    EXPECT_EQ(m->kind, InboundMessage::Kind::kData);
    EXPECT_EQ(m->channel, kChannelStdin);
    EXPECT_EQ(m->payload.toString(), payload) << name;
  }
}

TEST(ChannelDecodeTest, EmptyMessagesAreSkipped) {
  for (std::string_view name : {"", "base64.channel.k8s.io", "v5.channel.k8s.io"}) {
    absl::StatusOr<InboundMessage> m = decode(name, MessageType::kBinary, "");
    ASSERT_TRUE(m.ok());
    EXPECT_EQ(m->kind, InboundMessage::Kind::kEmpty);
  }
}

TEST(ChannelDecodeTest, BadBase64IsDroppedNotFatal) {
  for (std::string_view wire :
       {"0YQ", "0YQ=", "0Y===", "0YQ==YQ==", "0 YWJj", "0YWJj ", "0YW-j", "0=YQ=", "0YWJ!"}) {
    absl::StatusOr<InboundMessage> m = decode("v4.base64.channel.k8s.io", MessageType::kText, wire);
    ASSERT_TRUE(m.ok()) << wire;
    EXPECT_EQ(m->kind, InboundMessage::Kind::kMalformed) << wire;
    EXPECT_THAT(m->error, StartsWith("ws.channel.bad_base64: ")) << wire;
    EXPECT_TRUE(m->payload.empty());
  }
}

TEST(ChannelDecodeTest, OutOfRangeChannelsAreUnknownAndNotDecoded) {
  absl::StatusOr<InboundMessage> binary =
      decode("v4.channel.k8s.io", MessageType::kBinary, "\x05x");
  ASSERT_TRUE(binary.ok());
  EXPECT_EQ(binary->kind, InboundMessage::Kind::kUnknownChannel);
  EXPECT_EQ(binary->channel, 5);
  // '/' is '0' - 1: channel 255 in byte arithmetic; the bad base64 after it
  // is never looked at.
  absl::StatusOr<InboundMessage> base64 =
      decode("base64.channel.k8s.io", MessageType::kText, "/not base64");
  ASSERT_TRUE(base64.ok());
  EXPECT_EQ(base64->kind, InboundMessage::Kind::kUnknownChannel);
  EXPECT_EQ(base64->channel, 255);
  EXPECT_EQ(base64->payload.toString(), "not base64");
  // Port-forward with 2 ports has channels 0-3.
  absl::StatusOr<InboundMessage> pf = decode("v4.channel.k8s.io", MessageType::kBinary, "\x04x", 4);
  EXPECT_EQ(pf->kind, InboundMessage::Kind::kUnknownChannel);
}

TEST(ChannelDecodeTest, MessageTypePolicy) {
  // The kubelet's server reads a text message under a binary protocol as
  // bytes; so does crisp's server.
  absl::StatusOr<InboundMessage> lenient =
      decode("v4.channel.k8s.io", MessageType::kText, std::string("\x00hi", 3));
  ASSERT_TRUE(lenient.ok());
  EXPECT_EQ(lenient->kind, InboundMessage::Kind::kData);
  EXPECT_EQ(lenient->payload.toString(), "hi");
  absl::StatusOr<InboundMessage> lenient64 =
      decode("base64.channel.k8s.io", MessageType::kBinary, "1aGk=");
  ASSERT_TRUE(lenient64.ok());
  EXPECT_EQ(lenient64->payload.toString(), "hi");
  // client-go rejects them.
  absl::StatusOr<InboundMessage> strict =
      decode("v5.channel.k8s.io", MessageType::kText, "\x01hi", kRemoteCommandChannels,
             MessageTypePolicy::kRequireProtocolType);
  ASSERT_FALSE(strict.ok());
  EXPECT_THAT(std::string(strict.status().message()), StartsWith("ws.channel.unexpected_text"));
  absl::StatusOr<InboundMessage> strict64 =
      decode("base64.channel.k8s.io", MessageType::kBinary, "1aGk=", kRemoteCommandChannels,
             MessageTypePolicy::kRequireProtocolType);
  ASSERT_FALSE(strict64.ok());
  EXPECT_THAT(std::string(strict64.status().message()), StartsWith("ws.channel.unexpected_binary"));
}

// streaming-cases B09: stdin data then the v5 CLOSE of channel 0.
TEST(ChannelDecodeTest, B09StdinThenCloseUnderV5) {
  const std::string data(
      "\x00"
      "b\na\n",
      5);
  const std::string close("\xFF\x00", 2);
  absl::StatusOr<InboundMessage> first = decode("v5.channel.k8s.io", MessageType::kBinary, data);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->kind, InboundMessage::Kind::kData);
  EXPECT_EQ(first->channel, kChannelStdin);
  EXPECT_EQ(first->payload.toString(), "b\na\n");
  absl::StatusOr<InboundMessage> second = decode("v5.channel.k8s.io", MessageType::kBinary, close);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->kind, InboundMessage::Kind::kStreamClose);
  EXPECT_EQ(second->channel, kChannelStdin);
  EXPECT_TRUE(second->payload.empty());
}

// The same bytes under v4: 0xFF is just channel 255, out of range, ignored.
TEST(ChannelDecodeTest, B09CloseBytesUnderV4AreAnUnknownChannel) {
  const std::string close("\xFF\x00", 2);
  for (std::string_view name : {"v4.channel.k8s.io", "channel.k8s.io", ""}) {
    absl::StatusOr<InboundMessage> m = decode(name, MessageType::kBinary, close);
    ASSERT_TRUE(m.ok()) << name;
    EXPECT_EQ(m->kind, InboundMessage::Kind::kUnknownChannel) << name;
    EXPECT_EQ(m->channel, 255);
    EXPECT_EQ(m->payload.toString(), std::string("\x00", 1));
    Buffer message = bufferOf(close);
    absl::StatusOr<std::optional<uint8_t>> signal =
        parseStreamClose(protocolOf(name), message, kRemoteCommandChannels);
    ASSERT_TRUE(signal.ok());
    EXPECT_FALSE(signal->has_value());
    EXPECT_EQ(message.length(), 2u);  // not drained
  }
}

TEST(ChannelDecodeTest, MalformedCloseSignalsAreFatalUnderV5) {
  const std::string cases[] = {
      std::string("\xFF", 1),          // no channel
      std::string("\xFF\x00\x00", 3),  // extra byte
      std::string("\xFF\x05", 2),      // channel out of range (5 channels)
      std::string("\xFF\xFF", 2),
  };
  for (const std::string& wire : cases) {
    absl::StatusOr<InboundMessage> m = decode("v5.channel.k8s.io", MessageType::kBinary, wire);
    ASSERT_FALSE(m.ok()) << wire.size();
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(m.status().message()), StartsWith("ws.channel.bad_close_signal"));
  }
  absl::StatusOr<InboundMessage> last =
      decode("v5.channel.k8s.io", MessageType::kBinary, std::string("\xFF\x04", 2));
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(last->kind, InboundMessage::Kind::kStreamClose);
  EXPECT_EQ(last->channel, kChannelResize);
}

TEST(PortForwardPrefixTest, BinaryBytes) {
  absl::StatusOr<std::vector<std::string>> m =
      portForwardPrefixMessages(ChannelFraming::kBinary, {80, 8080, 65535});
  ASSERT_TRUE(m.ok());
  EXPECT_THAT(*m, ElementsAre(std::string("\x00\x50\x00", 3), std::string("\x01\x50\x00", 3),
                              std::string("\x02\x90\x1F", 3), std::string("\x03\x90\x1F", 3),
                              std::string("\x04\xFF\xFF", 3), std::string("\x05\xFF\xFF", 3)));
}

TEST(PortForwardPrefixTest, Base64Text) {
  absl::StatusOr<std::vector<std::string>> m =
      portForwardPrefixMessages(ChannelFraming::kBase64, {80, 8080, 65535});
  ASSERT_TRUE(m.ok());
  EXPECT_THAT(*m, ElementsAre("0UAA=", "1UAA=", "2kB8=", "3kB8=", "4//8=", "5//8="));
}

TEST(PortForwardPrefixTest, LimitsThePortCount) {
  EXPECT_TRUE(portForwardPrefixMessages(ChannelFraming::kBinary, {}).ok());
  std::vector<uint16_t> ports(kMaxPortForwardPorts, 1);
  absl::StatusOr<std::vector<std::string>> max =
      portForwardPrefixMessages(ChannelFraming::kBinary, ports);
  ASSERT_TRUE(max.ok());
  EXPECT_EQ(max->back(), std::string("\xFF\x01\x00", 3));
  ports.push_back(1);
  EXPECT_EQ(portForwardPrefixMessages(ChannelFraming::kBinary, ports).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Channel messages through a client codec into a server codec, as a base64
// client would send stdin and then the server would read it.
TEST(ChannelOverCodecTest, Base64StdinReachesTheServer) {
  using namespace ::crisp::websocket::testing;  // NOLINT(build/namespaces)
  FakeRandom random(3);
  RecordingCallbacks client_events;
  RecordingCallbacks server_events;
  CodecOptions client_options;
  client_options.role = Role::kClient;
  client_options.random = &random;
  auto client = Codec::create(client_options, client_events);
  auto server = Codec::create(CodecOptions{}, server_events);
  ASSERT_TRUE(client.ok() && server.ok());
  const ChannelProtocol p = protocolOf("v4.base64.channel.k8s.io");
  Buffer body;
  const MessageType type = encodeChannelMessage(p.framing, kChannelStdin, "ls -l\n", body);
  ASSERT_TRUE((*client)->sendMessage(type, body).ok());
  Buffer server_in;
  ASSERT_TRUE(pump(**client, **server, server_in, {FeedMode::Kind::kByteByByte, 0}).ok());
  ASSERT_EQ(server_events.events.size(), 1u);
  EXPECT_EQ(server_events.events[0], message(MessageType::kText, "0bHMgLWwK"));
  Buffer received = bufferOf(server_events.events[0].data);
  absl::StatusOr<InboundMessage> m =
      decodeInbound(p, MessageType::kText, received, kRemoteCommandChannels);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->payload.toString(), "ls -l\n");
}

}  // namespace
}  // namespace crisp::websocket
