// Throughput of the DATA path: frames whose payloads are referenced (not
// copied) into the input, so the numbers show the codec's own cost per frame.
// Frames per second is the number to watch; bytes per second only counts the
// referenced payloads. Run: bazel run //test/codec/spdy:codec_benchmark

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

}  // namespace
}  // namespace crisp::spdy
