// Fuzz target for the YAML configuration loader, config::loadString().
//
// The whole input is the file's text. Properties checked:
//   - no crash, hang, leak or sanitizer report, and no exception leaves
//     loadString (libFuzzer reports an escaping exception as a crash);
//   - a failure is INVALID_ARGUMENT whose message holds one line per problem,
//     each starting with `<name>:<line>: ` where the line lies inside the text;
//   - a success is a Config that passed every documented check: each value in
//     its range, container ids valid and unique, and so on.

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

#include "source/config/config.h"

#include "test/fuzz/fuzz_check.h"

namespace crisp::config::fuzz {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

constexpr char kName[] = "fuzz.yaml";

void checkErrorLines(absl::string_view text, const absl::Status& status) {
  FUZZ_CHECK(status.code() == absl::StatusCode::kInvalidArgument,
             "failure with an unexpected code: " + status.ToString());
  FUZZ_CHECK(!status.message().empty(), "failure without a message");
  // Any line break yaml-cpp might count (LF, CR, or CR LF as one) bounds the
  // last line; a problem can also be reported just past the last break.
  size_t breaks = 0;
  for (char c : text) {
    breaks += (c == '\n' || c == '\r') ? 1 : 0;
  }
  const std::string prefix = absl::StrCat(kName, ":");
  for (absl::string_view line : absl::StrSplit(status.message(), '\n')) {
    FUZZ_CHECK(line.substr(0, prefix.size()) == prefix,
               "problem line without the file name: \"" + std::string(line) + "\"");
    line.remove_prefix(prefix.size());
    const size_t colon = line.find(": ");
    int number = 0;
    FUZZ_CHECK(colon != absl::string_view::npos && absl::SimpleAtoi(line.substr(0, colon), &number),
               "problem line without a line number: \"" + std::string(line) + "\"");
    FUZZ_CHECK(number >= 1 && static_cast<size_t>(number) <= breaks + 2,
               absl::StrCat("line number ", number, " outside a text of ", breaks + 1, " lines: \"",
                            line, "\""));
    FUZZ_CHECK(line.size() > colon + 2, "problem line without text: \"" + std::string(line) + "\"");
  }
}

bool isAbsoluteSocketPath(const std::string& path) {
  return !path.empty() && path[0] == '/' && path.size() <= 107 &&
         path.find('\0') == std::string::npos;
}

void checkConfig(const Config& c) {
  FUZZ_CHECK(c.source == kName, "source is \"" + c.source + "\"");
  FUZZ_CHECK(isAbsoluteSocketPath(c.cri.listen), "cri.listen \"" + c.cri.listen + "\" accepted");
  if (c.cri.upstream) {
    FUZZ_CHECK(isAbsoluteSocketPath(*c.cri.upstream) && *c.cri.upstream != c.cri.listen,
               "cri.upstream \"" + *c.cri.upstream + "\" accepted");
    FUZZ_CHECK(c.runtime.embedded.containers.empty(),
               "embedded containers accepted together with cri.upstream");
  }
  FUZZ_CHECK(c.cri.socket_mode <= 0777, absl::StrCat("socket_mode ", c.cri.socket_mode));
  FUZZ_CHECK(c.stream.listen.isIp(), "stream.listen " + c.stream.listen.toString());
  FUZZ_CHECK(c.stream.advertise.empty() || c.stream.advertise.rfind("http://", 0) == 0 ||
                 c.stream.advertise.rfind("https://", 0) == 0,
             "stream.advertise \"" + c.stream.advertise + "\" accepted");
  FUZZ_CHECK(c.stream.workers >= 1 && c.stream.workers <= 64,
             absl::StrCat("stream.workers ", c.stream.workers));
  FUZZ_CHECK(c.stream.stream_creation_timeout >= milliseconds(100) &&
                 c.stream.stream_creation_timeout <= hours(1),
             absl::StrCat("stream_creation_timeout ", c.stream.stream_creation_timeout.count()));
  FUZZ_CHECK(
      c.stream.stream_idle_timeout >= seconds(1) && c.stream.stream_idle_timeout <= hours(168),
      absl::StrCat("stream_idle_timeout ", c.stream.stream_idle_timeout.count()));
  FUZZ_CHECK(c.stream.max_header_bytes >= 1024 && c.stream.max_header_bytes <= (1u << 20),
             absl::StrCat("max_header_bytes ", c.stream.max_header_bytes));
  FUZZ_CHECK(c.stream.header_timeout >= milliseconds(100) && c.stream.header_timeout <= minutes(10),
             absl::StrCat("header_timeout ", c.stream.header_timeout.count()));
  FUZZ_CHECK(c.stream.max_sessions >= 1 && c.stream.max_sessions <= 1000000,
             absl::StrCat("max_sessions ", c.stream.max_sessions));
  FUZZ_CHECK(c.stream.max_frame_bytes >= 4096 && c.stream.max_frame_bytes <= (256u << 20),
             absl::StrCat("max_frame_bytes ", c.stream.max_frame_bytes));
  if (c.stream.tls) {
    const auto absolute = [](const std::string& path) {
      return !path.empty() && path[0] == '/' && path.find('\0') == std::string::npos;
    };
    FUZZ_CHECK(absolute(c.stream.tls->cert_file) && absolute(c.stream.tls->key_file) &&
                   (c.stream.tls->client_ca_file.empty() || absolute(c.stream.tls->client_ca_file)),
               "stream.tls with a relative or empty path accepted");
    FUZZ_CHECK(c.stream.advertise.rfind("http://", 0) != 0,
               "an http:// advertise URL accepted with stream.tls");
  }
  FUZZ_CHECK(c.cache.ttl >= milliseconds(100) && c.cache.ttl <= hours(1),
             absl::StrCat("cache.ttl ", c.cache.ttl.count()));
  FUZZ_CHECK(c.cache.shards >= 1 && c.cache.shards <= 1024,
             absl::StrCat("cache.shards ", c.cache.shards));
  FUZZ_CHECK(c.cache.max_in_flight >= 1 && c.cache.max_in_flight <= 10000000,
             absl::StrCat("cache.max_in_flight ", c.cache.max_in_flight));
  if (c.admin.listen) {
    FUZZ_CHECK(c.admin.listen->isIp(), "admin.listen " + c.admin.listen->toString());
    FUZZ_CHECK(c.admin.listen->port == 0 || !(*c.admin.listen == c.stream.listen),
               "admin.listen equals stream.listen: " + c.admin.listen->toString());
  }
  const std::set<std::string> levels = {"trace", "debug",    "info", "warn",
                                        "error", "critical", "off"};
  FUZZ_CHECK(levels.count(c.log.level) == 1, "log.level \"" + c.log.level + "\"");
  std::set<std::string> ids;
  for (const ContainerConfig& ctr : c.runtime.embedded.containers) {
    FUZZ_CHECK(!ctr.id.empty() &&
                   ctr.id.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                            "0123456789_.-") == std::string::npos,
               "container id \"" + ctr.id + "\" accepted");
    FUZZ_CHECK(ids.insert(ctr.id).second, "duplicate container id \"" + ctr.id + "\" accepted");
    FUZZ_CHECK(!ctr.name.empty(), "empty name of container " + ctr.id);
    FUZZ_CHECK(!ctr.command.empty() && !ctr.command[0].empty(),
               "empty command of container " + ctr.id);
    FUZZ_CHECK(!ctr.working_dir.empty() && ctr.working_dir[0] == '/',
               "working_dir \"" + ctr.working_dir + "\" of container " + ctr.id);
    for (const std::string& var : ctr.env) {
      const size_t eq = var.find('=');
      FUZZ_CHECK(eq != std::string::npos && eq > 0,
                 "env \"" + var + "\" of container " + ctr.id + " accepted");
    }
    FUZZ_CHECK(!ctr.image.empty(), "empty image of container " + ctr.id);
  }
}

}  // namespace
}  // namespace crisp::config::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace crisp::config;        // NOLINT(google-build-using-namespace)
  using namespace crisp::config::fuzz;  // NOLINT(google-build-using-namespace)
  const std::string text(reinterpret_cast<const char*>(data), size);
  const absl::StatusOr<Config> config = loadString(text, kName);
  if (config.ok()) {
    checkConfig(*config);
  } else {
    checkErrorLines(text, config.status());
  }
  return 0;
}
