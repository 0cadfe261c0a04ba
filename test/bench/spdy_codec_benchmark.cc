// The SPDY/3.1 codec alone. DATA frames: payloads referenced (not copied)
// into the input, so the numbers show the codec's own cost per frame; frames
// per second is the figure to watch, beside a memcpy of the same payload in
// the same run (BM_MemcpyReference). Control frames: SYN_STREAM and SYN_REPLY
// header blocks through the per-connection zlib streams (the header set
// client-go sends), encode alone and encode plus decode.
// Run: bazel run //test/bench:spdy_codec_benchmark

#include <cstring>
#include <string>

#include <benchmark/benchmark.h>
#include <event2/buffer.h>

#include "source/codec/spdy/codec.h"
#include "source/common/buffer.h"

namespace crisp::spdy {
namespace {

class DrainingCallbacks : public CodecCallbacks {
 public:
  size_t bytes = 0;
  void onSynStream(uint32_t, uint32_t, uint8_t, uint8_t, HeaderList&&) override {}
  void onSynReply(uint32_t, uint8_t, HeaderList&&) override {}
  void onHeaders(uint32_t, uint8_t, HeaderList&&) override {}
  void onData(uint32_t, Buffer& data, bool) override {
    bytes += data.length();
    data.drain(data.length());
  }
  void onRstStream(uint32_t, RstStatus) override {}
  void onSettings(uint8_t, const std::vector<SettingsEntry>&) override {}
  void onPing(uint32_t) override {}
  void onGoAway(uint32_t, GoAwayStatus) override {}
  void onWindowUpdate(uint32_t, uint32_t) override {}
};

void BM_DecodeDataFrames(benchmark::State& state) {
  const size_t frame_size = static_cast<size_t>(state.range(0));
  const std::string payload(frame_size, 'x');
  constexpr int kFramesPerBatch = 64;
  DrainingCallbacks callbacks;
  Codec codec(Codec::Role::kServer, callbacks);
  Buffer input;
  for (auto _ : state) {
    for (int i = 0; i < kFramesPerBatch; ++i) {
      const uint8_t header[8] = {0,
                                 0,
                                 0,
                                 1,
                                 0,
                                 static_cast<uint8_t>(frame_size >> 16),
                                 static_cast<uint8_t>(frame_size >> 8),
                                 static_cast<uint8_t>(frame_size)};
      input.add(header, sizeof(header));
      evbuffer_add_reference(input.raw(), payload.data(), payload.size(), nullptr, nullptr);
    }
    if (!codec.dispatch(input).ok()) {
      state.SkipWithError("dispatch failed");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(callbacks.bytes));
  state.SetItemsProcessed(state.iterations() * kFramesPerBatch);
}
BENCHMARK(BM_DecodeDataFrames)->Arg(1024)->Arg(16 * 1024)->Arg(1024 * 1024);

void BM_EncodeDataFrames(benchmark::State& state) {
  const size_t frame_size = static_cast<size_t>(state.range(0));
  const std::string payload(frame_size, 'x');
  Buffer out;
  Buffer data;
  size_t bytes = 0;
  for (auto _ : state) {
    evbuffer_add_reference(data.raw(), payload.data(), payload.size(), nullptr, nullptr);
    Codec::encodeData(out, 1, data, false);
    bytes += out.length();
    out.drain(out.length());
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}
BENCHMARK(BM_EncodeDataFrames)->Arg(1024)->Arg(16 * 1024);

void BM_MemcpyReference(benchmark::State& state) {
  const size_t size = static_cast<size_t>(state.range(0));
  const std::string src(size, 'x');
  std::string dst(size, '\0');
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), size);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
}
BENCHMARK(BM_MemcpyReference)->Arg(1024)->Arg(16 * 1024)->Arg(1024 * 1024);

// What client-go puts in the SYN_STREAM of an exec stream.
const HeaderList& execStreamHeaders() {
  static const HeaderList headers = {{"streamtype", "stdout"}};
  return headers;
}

// What client-go puts in the SYN_STREAM of a port-forward data stream.
const HeaderList& portForwardHeaders() {
  static const HeaderList headers = {
      {"streamtype", "data"}, {"port", "8080"}, {"requestid", "12345"}};
  return headers;
}

void BM_EncodeSynStream(benchmark::State& state) {
  const HeaderList& headers = state.range(0) == 0 ? execStreamHeaders() : portForwardHeaders();
  DrainingCallbacks callbacks;
  Codec client(Codec::Role::kClient, callbacks);
  Buffer out;
  uint32_t id = 1;
  for (auto _ : state) {
    client.encodeSynStream(out, id, 0, 0, 0, headers);
    id = id >= 0x7ffffffd ? 1 : id + 2;
    out.drain(out.length());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_EncodeSynStream)->ArgName("portforward")->Arg(0)->Arg(1);

// Client encodes, server decodes (and answers with an empty SYN_REPLY, as
// crisp does): one stream's worth of header compression on both sides.
void BM_SynStreamRoundTrip(benchmark::State& state) {
  const HeaderList& headers = state.range(0) == 0 ? execStreamHeaders() : portForwardHeaders();
  DrainingCallbacks client_callbacks;
  DrainingCallbacks server_callbacks;
  Codec client(Codec::Role::kClient, client_callbacks);
  Codec server(Codec::Role::kServer, server_callbacks);
  Buffer wire;
  Buffer reply;
  const HeaderList empty;
  uint32_t id = 1;
  for (auto _ : state) {
    client.encodeSynStream(wire, id, 0, 0, 0, headers);
    if (!server.dispatch(wire).ok()) {
      state.SkipWithError("dispatch failed");
      break;
    }
    server.encodeSynReply(reply, id, 0, empty);
    if (!client.dispatch(reply).ok()) {
      state.SkipWithError("reply dispatch failed");
      break;
    }
    id += 2;
    if (id > 0x7ffffff0) {
      state.SkipWithError("stream ids exhausted");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_SynStreamRoundTrip)->ArgName("portforward")->Arg(0)->Arg(1);

// Setting up a connection's two zlib streams (with the SPDY/3 dictionary),
// which every session pays once.
void BM_CodecCreate(benchmark::State& state) {
  DrainingCallbacks callbacks;
  for (auto _ : state) {
    Codec codec(Codec::Role::kServer, callbacks);
    benchmark::DoNotOptimize(&codec);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_CodecCreate);

}  // namespace
}  // namespace crisp::spdy
