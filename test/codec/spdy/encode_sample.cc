// Writes a fixed session of frames made by crisp's encoder to stdout, for
// checking that a real peer decodes them (see go_peer/main.go). Not a test by
// itself; `bazel build //test/codec/spdy:encode_sample`.

#include <string>

#include <unistd.h>

#include "source/codec/spdy/codec.h"
#include "source/common/buffer.h"

namespace crisp::spdy {
namespace {

class NoCallbacks : public CodecCallbacks {
 public:
  void onSynStream(uint32_t, uint32_t, uint8_t, uint8_t, HeaderList&&) override {}
  void onSynReply(uint32_t, uint8_t, HeaderList&&) override {}
  void onHeaders(uint32_t, uint8_t, HeaderList&&) override {}
  void onData(uint32_t, Buffer&, bool) override {}
  void onRstStream(uint32_t, RstStatus) override {}
  void onSettings(uint8_t, const std::vector<SettingsEntry>&) override {}
  void onPing(uint32_t) override {}
  void onGoAway(uint32_t, GoAwayStatus) override {}
  void onWindowUpdate(uint32_t, uint32_t) override {}
};

int run() {
  NoCallbacks callbacks;
  Codec codec(Codec::Role::kServer, callbacks);
  Buffer out;
  codec.encodeSynReply(out, 1, 0, {{"Content-Type", "text/plain"}});
  codec.encodeSynStream(out, 2, 1, 3, kFlagUnidirectional,
                        {{"streamtype", "error"}, {"X-Multi", "one"}, {"x-multi", "two"}});
  codec.encodeHeaders(out, 2, kFlagFin, {{"x-trailer", "done"}});
  // Enough blocks, one of them large, that back-references slide past our
  // 2 KiB deflate window.
  std::string big;
  for (int i = 0; i < 6000; ++i) {
    big += static_cast<char>('a' + (i * 31) % 26);
  }
  codec.encodeSynStream(out, 4, 0, 0, 0, {{"x-big", big}});
  for (uint32_t i = 0; i < 300; ++i) {
    codec.encodeSynStream(out, 6 + 2 * i, 0, 0, 0,
                          {{"streamtype", i % 2 == 0 ? "data" : "error"},
                           {"port", std::to_string(1000 + i)},
                           {"requestid", std::to_string(i)}});
  }
  Buffer data;
  data.add("hello from crisp");
  Codec::encodeData(out, 1, data, false);
  Codec::encodeData(out, 1, data, true);
  Codec::encodeRstStream(out, 3, RstStatus::kCancel);
  Codec::encodeSettings(out, 0, {{0, 7, 65536}});
  Codec::encodePing(out, 2);
  Codec::encodeWindowUpdate(out, 1, 1024);
  Codec::encodeGoAway(out, 5, GoAwayStatus::kOk);
  while (!out.empty()) {
    if (out.writeTo(STDOUT_FILENO) <= 0) {
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace crisp::spdy

int main() { return crisp::spdy::run(); }
