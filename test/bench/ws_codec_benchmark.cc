// Throughput of the WebSocket pieces against a plain memcpy of the same size
// in the same run: server-side framing out (unmasked), server-side decoding of
// masked client frames, client-side framing (masking), base64 both ways, and
// a base64 channel message end to end on the send side.
// Run: bazel run -c opt //test/codec/websocket:ws_codec_benchmark

#include <cstring>
#include <random>
#include <string>

#include <benchmark/benchmark.h>

#include "source/codec/websocket/base64.h"
#include "source/codec/websocket/channel.h"
#include "source/codec/websocket/ws_codec.h"
#include "source/common/buffer.h"

namespace crisp::websocket {
namespace {

std::string randomBytes(size_t n) {
  std::mt19937 engine(1);
  std::string out(n, '\0');
  for (char& c : out) {
    c = static_cast<char>(engine());
  }
  return out;
}

class CountingCallbacks : public CodecCallbacks {
 public:
  void onMessage(MessageType, Buffer& payload) override {
    bytes += payload.length();
    payload.drain(payload.length());
  }
  void onClose(uint16_t, std::string_view) override {}
  size_t bytes = 0;
};

class CounterRandom : public RandomSource {
 public:
  bool fill(void* out, size_t len) override {
    auto* p = static_cast<uint8_t*>(out);
    for (size_t i = 0; i < len; ++i) {
      p[i] = static_cast<uint8_t>(++counter_ * 37);
    }
    return true;
  }

 private:
  uint32_t counter_ = 0;
};

void BM_Memcpy(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const std::string src = randomBytes(size);
  std::string dst(size, '\0');
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), size);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void BM_ServerSendBinary(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const std::string payload = randomBytes(size);
  CountingCallbacks callbacks;
  auto codec = Codec::create(CodecOptions{}, callbacks);
  for (auto _ : state) {
    if (!(*codec)->sendMessage(MessageType::kBinary, payload).ok()) {
      state.SkipWithError("send failed");
      break;
    }
    (*codec)->output().drain((*codec)->output().length());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void BM_ClientSendBinaryMasked(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const std::string payload = randomBytes(size);
  CountingCallbacks callbacks;
  CounterRandom random;
  CodecOptions options;
  options.role = Role::kClient;
  options.random = &random;
  auto codec = Codec::create(options, callbacks);
  for (auto _ : state) {
    if (!(*codec)->sendMessage(MessageType::kBinary, payload).ok()) {
      state.SkipWithError("send failed");
      break;
    }
    (*codec)->output().drain((*codec)->output().length());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void BM_ServerReceiveMasked(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  // Masked frames as a client writes them, produced by a client codec.
  CountingCallbacks sink;
  CounterRandom random;
  CodecOptions client_options;
  client_options.role = Role::kClient;
  client_options.random = &random;
  auto client = Codec::create(client_options, sink);
  if (!(*client)->sendMessage(MessageType::kBinary, randomBytes(size)).ok()) {
    state.SkipWithError("encode failed");
    return;
  }
  const std::string wire = (*client)->output().toString();

  CountingCallbacks callbacks;
  CodecOptions options;
  options.max_message_bytes = size + 1;
  auto server = Codec::create(options, callbacks);
  Buffer input;
  for (auto _ : state) {
    input.add(wire);
    if (!(*server)->dispatch(input).ok()) {
      state.SkipWithError("dispatch failed");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(callbacks.bytes));
}

void BM_Base64Encode(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const std::string payload = randomBytes(size);
  Buffer out;
  for (auto _ : state) {
    base64EncodeTo(payload, out);
    out.drain(out.length());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void BM_Base64Decode(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const std::string text = base64Encode(randomBytes(size));
  Buffer out;
  for (auto _ : state) {
    if (!base64DecodeTo(text, out).ok()) {
      state.SkipWithError("decode failed");
      break;
    }
    out.drain(out.length());
  }
  // Decoded bytes, comparable with the other rows.
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void BM_ChannelBase64Send(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const std::string payload = randomBytes(size);
  CountingCallbacks callbacks;
  auto codec = Codec::create(CodecOptions{}, callbacks);
  Buffer body;
  for (auto _ : state) {
    const MessageType type =
        encodeChannelMessage(ChannelFraming::kBase64, kChannelStdout, payload, body);
    if (!(*codec)->sendMessage(type, body).ok()) {
      state.SkipWithError("send failed");
      break;
    }
    (*codec)->output().drain((*codec)->output().length());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}

void sizes(benchmark::internal::Benchmark* b) { b->Arg(1 << 10)->Arg(32 << 10)->Arg(1 << 20); }

BENCHMARK(BM_Memcpy)->Apply(sizes);
BENCHMARK(BM_ServerSendBinary)->Apply(sizes);
BENCHMARK(BM_ClientSendBinaryMasked)->Apply(sizes);
BENCHMARK(BM_ServerReceiveMasked)->Apply(sizes);
BENCHMARK(BM_Base64Encode)->Apply(sizes);
BENCHMARK(BM_Base64Decode)->Apply(sizes);
BENCHMARK(BM_ChannelBase64Send)->Apply(sizes);

}  // namespace
}  // namespace crisp::websocket
