// Writes the seed inputs of the fuzz corpora (see README.md): SPDY sessions
// made by crisp's own encoders for every frame type, the spdystream-written
// bytes also used in test/codec/spdy, malformed frames and header blocks made
// by hand, and YAML configuration variations. Any further files named on the
// command line are raw SPDY byte streams (one direction of a connection, e.g.
// from spdystream_seeds/) and are turned into seeds of both SPDY targets.
//
//   seed_writer OUT_DIR [WIRE_FILE...]
//
// Files land in OUT_DIR/<target>/ under descriptive names; build_fuzzers.sh
// seed renames them to their SHA-256 when it copies them into the corpus.

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include <sys/stat.h>
#include <zlib.h>

#include "source/codec/spdy/codec.h"
#include "source/codec/spdy/dictionary.h"
#include "source/common/buffer.h"

namespace crisp::spdy::seeds {
namespace {

// Where the seeds go: argv[1].
const char* out_dir = nullptr;

void writeFile(const std::string& target, const std::string& name, std::string_view bytes) {
  const std::string dir = std::string(out_dir) + "/" + target;
  mkdir(dir.c_str(), 0755);
  std::ofstream out(dir + "/" + name, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "cannot write %s/%s\n", dir.c_str(), name.c_str());
    std::exit(1);
  }
}

std::string u32(uint32_t v) {
  const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                     static_cast<char>(v >> 8), static_cast<char>(v)};
  return std::string(b, 4);
}

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

// ---- spdy_codec seeds: options byte, chunk-size count and bytes, wire.

struct Steering {
  const char* suffix;
  uint8_t options;
  std::string chunks;
};

// Whole input as a server; byte by byte as a client; mixed chunks with the
// mid-sized limits and a callee that drains half of each DATA payload.
const std::vector<Steering>& steerings() {
  static const std::vector<Steering> kSteerings = {
      {"whole_server", 0x00, ""},
      {"bytes_client", 0x01, std::string(1, '\0')},
      {"chunks_limits2", 0x0C, std::string("\x06\xC8\x02\x81", 4)},
  };
  return kSteerings;
}

void writeCodecSeed(const std::string& name, std::string_view wire, bool all_steerings = true) {
  for (const Steering& s : steerings()) {
    std::string input;
    input += static_cast<char>(s.options);
    input += static_cast<char>(s.chunks.size());
    input += s.chunks;
    input += wire;
    writeFile("spdy_codec", name + "." + s.suffix, input);
    if (!all_steerings) {
      return;
    }
  }
}

// ---- spdy_header_block seeds: options byte, then 16-bit length-prefixed blocks.

std::string blockSequence(uint8_t options, const std::vector<std::string>& blocks) {
  std::string input(1, static_cast<char>(options));
  for (const std::string& block : blocks) {
    input += static_cast<char>(block.size() >> 8);
    input += static_cast<char>(block.size());
    input += block;
  }
  return input;
}

// The header blocks of a byte stream, in order, found by walking its frames.
std::vector<std::string> headerBlocksOf(std::string_view wire) {
  std::vector<std::string> blocks;
  size_t at = 0;
  while (at + 8 <= wire.size()) {
    const auto* p = reinterpret_cast<const uint8_t*>(wire.data()) + at;
    const size_t length = (static_cast<size_t>(p[5]) << 16) | (p[6] << 8) | p[7];
    if (at + 8 + length > wire.size()) {
      break;
    }
    if ((p[0] & 0x80) != 0) {
      const uint16_t type = static_cast<uint16_t>((p[2] << 8) | p[3]);
      const size_t fields = type == 1 ? 10 : (type == 2 || type == 8) ? 4 : 0;
      if (fields != 0 && length >= fields) {
        blocks.emplace_back(wire.substr(at + 8 + fields, length - fields));
      }
    }
    at += 8 + length;
  }
  return blocks;
}

void writeWireSeeds(const std::string& name, std::string_view wire) {
  writeCodecSeed(name, wire);
  const std::vector<std::string> blocks = headerBlocksOf(wire);
  if (!blocks.empty()) {
    writeFile("spdy_header_block", name + ".compressed", blockSequence(0x00, blocks));
    writeFile("spdy_header_block", name + ".compressed_limits2", blockSequence(0x04, blocks));
  }
}

// An uncompressed header block exactly as given (count need not match).
using RawPairs = std::vector<std::pair<std::string, std::string>>;
std::string rawBlock(uint32_t count, const RawPairs& pairs) {
  std::string out = u32(count);
  for (const auto& [name, value] : pairs) {
    out += u32(static_cast<uint32_t>(name.size())) + name;
    out += u32(static_cast<uint32_t>(value.size())) + value;
  }
  return out;
}
std::string rawBlock(const RawPairs& pairs) {
  return rawBlock(static_cast<uint32_t>(pairs.size()), pairs);
}

// A peer's zlib stream, for hand-made header frames.
class Deflater {
 public:
  explicit Deflater(bool dictionary = true) {
    if (deflateInit(&zs_, Z_BEST_COMPRESSION) != Z_OK) {
      std::abort();
    }
    if (dictionary) {
      const auto& dict = headerDictionary();
      deflateSetDictionary(&zs_, dict.data(), static_cast<uInt>(dict.size()));
    }
  }
  ~Deflater() { deflateEnd(&zs_); }
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;

  std::string compress(std::string_view plain, int flush = Z_SYNC_FLUSH) {
    std::string out(deflateBound(&zs_, static_cast<uLong>(plain.size())) + 64, '\0');
    zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
    zs_.avail_in = static_cast<uInt>(plain.size());
    zs_.next_out = reinterpret_cast<Bytef*>(out.data());
    zs_.avail_out = static_cast<uInt>(out.size());
    deflate(&zs_, flush);
    out.resize(out.size() - zs_.avail_out);
    return out;
  }

 private:
  z_stream zs_{};
};

std::string controlFrame(uint16_t type, uint8_t flags, std::string_view payload,
                         uint16_t version = 3) {
  std::string out;
  out += static_cast<char>(0x80 | (version >> 8));
  out += static_cast<char>(version);
  out += static_cast<char>(type >> 8);
  out += static_cast<char>(type);
  out += static_cast<char>(flags);
  out += u32(static_cast<uint32_t>(payload.size())).substr(1);
  out += payload;
  return out;
}

std::string synStream(uint32_t id, std::string_view block) {
  return controlFrame(1, 0, u32(id) + u32(0) + std::string(2, '\0') + std::string(block));
}

void writeEncoderSeeds() {
  NoCallbacks none;
  const auto fresh = [&none](Codec::Role role = Codec::Role::kClient) {
    return std::make_unique<Codec>(role, none);
  };
  Buffer b;
  Buffer payload;
  const auto take = [&b]() { return b.toString(); };

  fresh()->encodeSynStream(b, 1, 0, 0, 0, {{"streamtype", "error"}});
  writeWireSeeds("encoder_syn_stream", take());
  fresh()->encodeSynStream(b, 3, 1, 7, kFlagFin | kFlagUnidirectional,
                           {{"StreamType", "data"}, {"Port", "8080"}, {"RequestID", "0"}});
  writeWireSeeds("encoder_syn_stream_flags", take());
  fresh(Codec::Role::kServer)->encodeSynReply(b, 1, 0, {});
  writeWireSeeds("encoder_syn_reply_empty", take());
  fresh(Codec::Role::kServer)
      ->encodeSynReply(b, 1, kFlagFin, {{"x-multi", "one"}, {"x-multi", "two"}, {"e", ""}});
  writeWireSeeds("encoder_syn_reply", take());
  fresh()->encodeHeaders(b, 5, kFlagFin, {{"x-trailer", "done"}});
  writeWireSeeds("encoder_headers", take());
  payload.add("hello");
  Codec::encodeData(b, 1, payload, false);
  writeWireSeeds("encoder_data", take());
  Codec::encodeData(b, 1, payload, true);
  writeWireSeeds("encoder_data_empty_fin", take());
  Codec::encodeRstStream(b, 1, RstStatus::kCancel);
  writeWireSeeds("encoder_rst_stream", take());
  Codec::encodeSettings(b, 0, {});
  writeWireSeeds("encoder_settings_empty", take());
  Codec::encodeSettings(b, 1, {{1, 4, 100}, {2, 7, 65536}});
  writeWireSeeds("encoder_settings", take());
  Codec::encodePing(b, 1);
  writeWireSeeds("encoder_ping", take());
  Codec::encodeGoAway(b, 3, GoAwayStatus::kOk);
  writeWireSeeds("encoder_goaway", take());
  Codec::encodeWindowUpdate(b, 0, 65536);
  writeWireSeeds("encoder_window_update", take());

  // kubectl exec (v4) as the server receives it, over one zlib stream.
  {
    auto c = fresh();
    for (auto [id, type] : std::vector<std::pair<uint32_t, const char*>>{
             {1, "error"}, {3, "stdin"}, {5, "stdout"}, {7, "stderr"}}) {
      c->encodeSynStream(b, id, 0, 0, 0, {{"streamtype", type}});
    }
    payload.add("echo hi\n");
    Codec::encodeData(b, 3, payload, false);
    Codec::encodeData(b, 3, payload, true);
    Codec::encodePing(b, 1);
    writeWireSeeds("encoder_exec_client", take());
  }
  // The server's answer to it.
  {
    auto c = fresh(Codec::Role::kServer);
    for (uint32_t id : {1, 3, 5, 7}) {
      c->encodeSynReply(b, id, 0, {});
    }
    payload.add("hi\n");
    Codec::encodeData(b, 5, payload, true);
    Codec::encodeData(b, 7, payload, true);
    payload.add(R"({"metadata":{},"status":"Success"})");
    Codec::encodeData(b, 1, payload, true);
    Codec::encodeGoAway(b, 7, GoAwayStatus::kOk);
    writeWireSeeds("encoder_exec_server", take());
  }
  // Port-forward pairs, then blocks that lean on the zlib history.
  {
    auto c = fresh();
    for (uint32_t i = 0; i < 6; ++i) {
      for (const char* type : {"error", "data"}) {
        c->encodeSynStream(b, 4 * i + (type[0] == 'e' ? 1 : 3), 0, 0, 0,
                           {{"streamtype", type},
                            {"port", std::to_string(8000 + i)},
                            {"requestid", std::to_string(i)}});
      }
    }
    Codec::encodeRstStream(b, 3, RstStatus::kCancel);
    writeWireSeeds("encoder_portforward", take());
  }
  // Many and long headers in one block.
  {
    HeaderList many;
    for (int i = 0; i < 40; ++i) {
      many.emplace_back(absl::StrCat("x-h", i % 13), std::string(static_cast<size_t>(i), 'v'));
    }
    many.emplace_back("x-long", std::string(1500, 'L'));
    fresh()->encodeSynStream(b, 1, 0, 0, 0, many);
    writeWireSeeds("encoder_many_headers", take());
  }
}

void writeHandMadeSeeds() {
  // Bytes written by moby/spdystream, the same vector as codec_test.cc's.
  writeWireSeeds(
      "spdystream_capture",
      absl::HexStringToBytes(
          "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800"
          "000000ffff800300010000001700000003000000000000c22e555c92929907000000ffff80030002010000"
          "1d00000002824ab157e8e696e6946482cbf4bc548692f27c00000000ffff"));

  // Malformed framing, one seed each (server, whole input).
  const std::string ping = controlFrame(6, 0, u32(1));
  writeCodecSeed("bad_version", controlFrame(6, 0, u32(1), 2), false);
  writeCodecSeed("bad_ping_length", controlFrame(6, 0, u32(1) + "x"), false);
  writeCodecSeed("bad_settings_count", controlFrame(4, 0, u32(2) + u32(1) + u32(2)), false);
  writeCodecSeed("bad_rst_stream_id_0", controlFrame(3, 0, u32(0) + u32(1)), false);
  writeCodecSeed("bad_data_stream_id_0", std::string(4, '\0') + std::string("\x01\x00\x00\x01x", 5),
                 false);
  writeCodecSeed("bad_data_too_large",
                 std::string("\x00\x00\x00\x01\x00\xFF\xFF\xFF", 8) + "partial", false);
  writeCodecSeed("bad_control_too_large",
                 std::string("\x80\x03\x00\x01\x00\x01\x00\x01", 8) + "partial", false);
  writeCodecSeed("unknown_credential_then_ping",
                 controlFrame(10, 0, std::string(40, 'c')) + controlFrame(0x7777, 0xFF, "") + ping,
                 false);
  writeCodecSeed("bad_syn_stream_short", controlFrame(1, 0, u32(1) + u32(0)), false);
  {
    Deflater d;
    writeCodecSeed("bad_syn_stream_id_0", synStream(0, d.compress(rawBlock({{"a", "b"}}))), false);
  }
  {
    Deflater d;
    const std::string block = d.compress(rawBlock({{"Upper", "x"}}));
    writeWireSeeds("bad_block_uppercase", synStream(1, block));
  }
  {
    Deflater d;
    writeWireSeeds("bad_block_duplicate",
                   synStream(1, d.compress(rawBlock({{"a", "1"}, {"b", "2"}, {"a", "3"}}))));
  }
  {
    Deflater d;
    writeWireSeeds("bad_block_stream_end",
                   synStream(1, d.compress(rawBlock({{"a", "1"}}), Z_FINISH)) + ping);
  }
  {
    Deflater d(/*dictionary=*/false);
    writeWireSeeds("block_without_dictionary", synStream(1, d.compress(rawBlock({{"a", "1"}}))));
  }
  {
    Deflater d;
    std::string block = d.compress(rawBlock({{"streamtype", "stdout"}, {"x", "yyyyyyyy"}}));
    block.resize(block.size() - 5);
    writeWireSeeds("bad_block_truncated", synStream(1, block) + ping);
  }
  {
    // Two blocks over one stream; the second leans on the first's history.
    Deflater d;
    std::string wire = synStream(1, d.compress(rawBlock({{"streamtype", "error"}})));
    wire +=
        synStream(3, d.compress(rawBlock({{"streamtype", "error"}, {"v", std::string(3, '\0')}})));
    writeWireSeeds("block_history_and_nul_values", wire);
  }
  {
    // A small compressed block that inflates far beyond every limit.
    Deflater d;
    writeWireSeeds("bad_block_inflates_large",
                   synStream(1, d.compress(rawBlock({{"a", std::string(200000, 'a')}}))));
  }

  // Plaintext blocks for the header block target: valid, then malformed.
  const std::vector<std::pair<std::string, std::vector<std::string>>> plain = {
      {"empty_list", {rawBlock({})}},
      {"exec_streams",
       {rawBlock({{"streamtype", "error"}}), rawBlock({{"streamtype", "stdin"}}),
        rawBlock({{"streamtype", "stdout"}})}},
      {"portforward", {rawBlock({{"streamtype", "data"}, {"port", "8080"}, {"requestid", "0"}})}},
      {"nul_values", {rawBlock({{"x-multi", std::string("one\0two\0\0", 9)}, {"e", ""}})}},
      {"count_too_big", {rawBlock(7, {{"a", "b"}})}},
      {"count_too_small", {rawBlock(1, {{"a", "b"}, {"c", "d"}})}},
      {"empty_name", {rawBlock({{"", "b"}})}},
      {"nul_in_name", {rawBlock({{std::string("a\0b", 3), "c"}})}},
      {"uppercase_name", {rawBlock({{"Host", "x"}})}},
      {"duplicate_name", {rawBlock({{"a", "1"}, {"a", "2"}})}},
      {"short", {std::string("\x00\x00", 2)}},
      {"name_length_past_end", {u32(1) + u32(100) + "abc"}},
      {"value_length_past_end", {u32(1) + u32(1) + "a" + u32(100) + "abc"}},
      {"many_entries", {rawBlock({{"a", std::string(40, '\0')}})}},
  };
  for (const auto& [name, blocks] : plain) {
    writeFile("spdy_header_block", "plain_" + name, blockSequence(0x01, blocks));
    writeFile("spdy_header_block", "plain_" + name + "_limits1_fast",
              blockSequence(0x01 | 0x02 | 0x08 | 0x20, blocks));
  }
}

// ---- config seeds: variations on the shipped files (which build_fuzzers.sh
// copies in as they are).

void writeConfigSeeds() {
  const std::vector<std::pair<std::string, std::string>> configs = {
      {"minimal", "cri:\n  listen: /tmp/crisp.sock\n"},
      {"empty", ""},
      {"empty_sections", "cri:\n  listen: /tmp/c.sock\nstream:\ncache:\nadmin:\nlog:\nruntime:\n"},
      {"everything",
       "cri:\n  listen: /tmp/c.sock\n  socket_mode: \"0600\"\n"
       "stream:\n  listen: \"[::1]:0\"\n  advertise: https://[::1]:10350/base\n  workers: 64\n"
       "  stream_creation_timeout: 1h\n  stream_idle_timeout: 1h30m\n"
       "  max_header_bytes: 1048576\n  header_timeout: 500ms\n  max_sessions: 1\n"
       "cache:\n  ttl: 100ms\n  shards: 1024\n  max_in_flight: 10000000\n"
       "admin:\n  listen: 127.0.0.1:0\nlog:\n  level: trace\n"
       "runtime:\n  embedded:\n    containers:\n"
       "      - id: a.b-c_1\n        name: first\n        command: [/bin/true, -x]\n"
       "        working_dir: /\n        env: [A=1, \"B=two words\"]\n        user: \"0\"\n"
       "        tty: TRUE\n        stdin: False\n        image: busybox\n"
       "      - id: second\n        command:\n          - /bin/sh\n          - -c\n"
       "          - exit 3\n        user: root\n"},
      {"tls",
       "cri:\n  listen: /tmp/c.sock\nstream:\n  advertise: https://node:10350\n"
       "  max_frame_bytes: 65536\n  tls:\n    cert_file: /etc/crisp/cert.pem\n"
       "    key_file: /etc/crisp/key.pem\n    client_ca_file: /etc/crisp/ca.pem\n"},
      {"tls_bad",
       "cri:\n  listen: /tmp/c.sock\nstream:\n  advertise: http://node:10350\n"
       "  max_frame_bytes: 100\n  tls:\n    cert_file: cert.pem\n"},
      {"flow_style",
       "{cri: {listen: /tmp/c.sock, upstream: /tmp/u.sock}, stream: {listen: '0.0.0.0:1'},"
       " log: {level: \"off\"}}"},
      {"anchors_and_merge",
       "base: &b\n  listen: /tmp/c.sock\ncri:\n  <<: *b\n  socket_mode: '0660'\n"},
      {"alias_reuse",
       "cri: &c\n  listen: /tmp/c.sock\nruntime:\n  embedded:\n    containers:\n"
       "      - &x {id: a, command: [/bin/true]}\n      - *x\n"},
      {"self_alias", "cri: &a {listen: *a}\nruntime: &r\n  embedded:\n    containers: [*r]\n"},
      {"two_documents", "cri:\n  listen: /tmp/a.sock\n---\ncri:\n  listen: /tmp/b.sock\n"},
      {"document_markers", "%YAML 1.2\n---\ncri:\n  listen: /tmp/a.sock\n...\n"},
      {"tags",
       "cri:\n  listen: !!str /tmp/a.sock\nstream:\n  workers: !!int 2\n"
       "log: !custom\n  level: info\n"},
      {"block_scalars",
       "cri:\n  listen: |\n    /tmp/a.sock\nstream:\n  advertise: >-\n    http://h:1\n"},
      {"quoted_escapes",
       "cri:\n  listen: \"/tmp/\\x41\\u00e9\\n.sock\"\nstream:\n  listen: '1.2.3.4:''5'''\n"},
      {"crlf_and_bom",
       "\xEF\xBB\xBF"
       "cri:\r\n  listen: /tmp/a.sock\r\nlog:\r\n  level: warn\r\n"},
      {"tabs_and_comments", "# c\ncri: # c\n\tlisten: /tmp/a.sock\n"},
      {"nulls", "cri:\n  listen: ~\nstream: null\ncache: {}\nadmin: []\n"},
      {"wrong_types",
       "cri: [a, b]\nstream:\n  workers: [1]\n  listen: {a: b}\ncache:\n  ttl: 5\n"
       "  shards: -1\n  max_in_flight: 0x10\nlog:\n  level: INFO\n"},
      {"unknown_and_duplicate_keys",
       "cri:\n  listen: /tmp/a.sock\n  listen: /tmp/b.sock\n  bogus: 1\n? [complex, key]\n: v\n"},
      {"bad_values", "cri:\n  listen: relative.sock\n  upstream: /tmp/" + std::string(120, 'u') +
                         "\n  socket_mode: \"0999\"\nstream:\n  listen: host.example:80\n"
                         "  advertise: ftp://x\n  stream_creation_timeout: 1.5us\n"
                         "  stream_idle_timeout: inf\n  header_timeout: \"0\"\nadmin:\n  listen: "
                         "127.0.0.1:10350\n"},
      {"bad_containers",
       "cri:\n  listen: /tmp/a.sock\n  upstream: /tmp/b.sock\nruntime:\n  embedded:\n"
       "    containers:\n      - id: \"bad id\"\n        command: []\n      - ~\n      - [x]\n"
       "      - id: a\n        command: [\"\"]\n        env: [\"=x\", noeq]\n"
       "        user: no-such-user-here\n        working_dir: rel\n      - id: a\n"
       "        command: [/x]\n        user: \"99999999999\"\n"},
      {"deep_nesting", "cri:\n  listen: " + std::string(200, '[') + std::string(200, ']') + "\n"},
      {"deep_block_nesting",
       [] {
         std::string s = "cri:\n";
         for (int i = 1; i < 60; ++i) {
           s += std::string(static_cast<size_t>(i) * 2, ' ') + "k:\n";
         }
         return s;
       }()},
      {"syntax_error", "cri:\n  listen: [unterminated\n  other: {\n"},
      {"scalar_root", "just a string"},
      {"list_root", "- cri\n- stream\n"},
      {"binary_and_sets", "cri:\n  listen: !!binary aGVsbG8=\nlog: !!set {? a}\n"},
  };
  for (const auto& [name, text] : configs) {
    writeFile("config", name + ".yaml", text);
  }
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(1);
  }
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace
}  // namespace crisp::spdy::seeds

int main(int argc, char** argv) {
  using namespace crisp::spdy::seeds;  // NOLINT(google-build-using-namespace)
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR [WIRE_FILE...]\n", argv[0]);
    return 2;
  }
  out_dir = argv[1];
  mkdir(out_dir, 0755);
  writeEncoderSeeds();
  writeHandMadeSeeds();
  writeConfigSeeds();
  for (int i = 2; i < argc; ++i) {
    std::string name = argv[i];
    name = name.substr(name.rfind('/') + 1);
    name = name.substr(0, name.rfind('.'));
    writeWireSeeds(name, readFile(argv[i]));
  }
  return 0;
}
