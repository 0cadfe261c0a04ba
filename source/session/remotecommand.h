#pragma once

// remotecommand: the wire-independent rules of Kubernetes exec/attach streaming,
// shared by every client-side adapter (SPDY streams, WebSocket channels).
//
// - RemoteCommandVersion: the sub-protocol versions v1 (channel.k8s.io) to v5.
// - expectedStreams(): which streams a client opens for a version and an ExecSpec
//   (error + stdin + stdout + stderr unless tty + resize when tty from v3 on).
// - errorStreamPayload(): the exact bytes the server writes on the error stream
//   when a session ends: plain text on failure for v1-v3 (nothing on success), a
//   metav1.Status JSON document for v4/v5, byte-for-byte as the kubelet writes it.
// - ResizeDecoder: a streaming decoder for the resize stream's JSON documents.
// - SessionMetrics: the session component's metric list.
//
// Everything here is pure (no sockets, no loop) and safe to use from any thread,
// except that one ResizeDecoder belongs to one session.
//
// Typical use by an adapter:
//   StreamSet want = expectedStreams(version, spec);
//   ... accept streams until want is satisfied, then start the exec ...
//   ResizeDecoder resize;
//   resize.feed(bytes, [&](TerminalSize s) { process->resize(s); });
//   ... on exit: std::string payload = errorStreamPayload(version, spec, status);
//   if (!payload.empty()) { write payload on the error stream; }

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

#include "source/admin/metrics.h"
#include "source/session/request.h"
#include "source/session/runtime.h"

namespace crisp::session {

// Sub-protocol versions of remotecommand. The numeric value is the version.
enum class RemoteCommandVersion { kV1 = 1, kV2 = 2, kV3 = 3, kV4 = 4, kV5 = 5 };

// The negotiation token: "channel.k8s.io", "v2.channel.k8s.io", ... "v5.channel.k8s.io".
const char* remoteCommandProtocol(RemoteCommandVersion v);

// The inverse of remoteCommandProtocol() (exact match); nullopt for anything else.
std::optional<RemoteCommandVersion> parseRemoteCommandProtocol(std::string_view token);

// v4 and v5 carry a JSON Status (with exit codes) on the error stream.
inline bool hasStructuredStatus(RemoteCommandVersion v) { return v >= RemoteCommandVersion::kV4; }
// v3 introduced the resize stream.
inline bool hasResizeStream(RemoteCommandVersion v) { return v >= RemoteCommandVersion::kV3; }

// The value of the SPDY `streamtype` header (and the role of a WebSocket channel).
enum class StreamType { kError, kStdin, kStdout, kStderr, kResize };

// "error", "stdin", "stdout", "stderr", "resize".
const char* streamTypeName(StreamType t);

// Parses a stream type, ignoring ASCII case ("STDOUT" is stdout). nullopt when
// the value names no remotecommand stream (e.g. "data", which is port-forward).
std::optional<StreamType> parseStreamType(std::string_view value);

// A set of stream types.
class StreamSet {
 public:
  StreamSet() = default;

  void add(StreamType t) { bits_ |= bit(t); }
  void remove(StreamType t) { bits_ &= static_cast<uint8_t>(~bit(t)); }
  bool contains(StreamType t) const { return (bits_ & bit(t)) != 0; }
  size_t size() const;
  bool empty() const { return bits_ == 0; }
  // True when every member of `other` is in this set.
  bool containsAll(const StreamSet& other) const { return (bits_ & other.bits_) == other.bits_; }
  bool operator==(const StreamSet& o) const { return bits_ == o.bits_; }
  bool operator!=(const StreamSet& o) const { return bits_ != o.bits_; }

  // "error,stdin,stdout" in the order of StreamType; for logs and test messages.
  std::string toString() const;

 private:
  static uint8_t bit(StreamType t) { return static_cast<uint8_t>(1u << static_cast<int>(t)); }
  uint8_t bits_ = 0;
};

// The streams a client opens for this version and request, as the kubelet
// counts them: error always; stdin, stdout if requested; stderr if requested and
// not tty (a tty merges stderr into stdout, so it is dropped, not rejected);
// resize if tty and the version is v3 or later.
StreamSet expectedStreams(RemoteCommandVersion v, const ExecSpec& spec);

// The Status `message` for a non-zero exit. A backend's own text in
// `status.message` is used when present; otherwise the text names the command
// and the code the way containerd's CRI service does, so clients and scripts
// see what they saw behind the kubelet:
//   command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3
// (the command is printed as Go prints a []string: words joined by spaces, in
// brackets, unquoted).
std::string nonZeroExitMessage(const ExecSpec& spec, const ExitStatus& status);

// Why a session whose command runs ends when crisp stops: the message of the
// status written on its error stream, which kubectl shows.
inline constexpr char kServerStoppingMessage[] = "crisp is shutting down";

// The bytes to write on the error stream when the session ends with `status`,
// or "" when nothing is to be written (v1-v3 success).
//
// v1-v3: the Status message as plain text (no trailing newline).
// v4/v5: one JSON document, no trailing newline:
//   success:  {"metadata":{},"status":"Success"}
//   exit N:   {"metadata":{},"status":"Failure","message":"<nonZeroExitMessage>",
//              "reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode",
//              "message":"N"}]}}
//   error:    {"metadata":{},"status":"Failure","message":"Internal error occurred: <p><msg>",
//              "reason":"InternalError","details":{"causes":[{"message":"<p><msg>"}]},
//              "code":500}
//   where <p> is "error executing command in container: " for exec and
//   "error attaching to container: " for attach.
//
// Attach reports no exit codes (as the kubelet): an attach that ends with a
// non-zero exit is reported as success. An exit code outside 0-255 (which
// clients reject as a protocol error) is reported as an internal error naming
// the code.
std::string errorStreamPayload(RemoteCommandVersion v, const ExecSpec& spec,
                               const ExitStatus& status);

// Appends `s` as a JSON string literal (with the quotes), escaped exactly as Go's
// encoding/json.Marshal does: \" \\ \b \f \n \r \t, other control characters as
// \u00XX (lowercase hex), '<' '>' '&' as \u003c \u003e \u0026, U+2028 and U+2029
// as \u2028 \u2029, and each byte of invalid UTF-8 as \ufffd.
void appendJsonString(std::string& out, std::string_view s);

// Decodes the resize stream: a sequence of JSON documents, each an object such
// as {"Width":80,"Height":24}, separated by optional whitespace (the client's
// json.Encoder ends each with a newline), fed in arbitrary chunks.
//
// Field names match ASCII-case-insensitively; unknown fields are skipped; a
// field's value must be an integer 0-65535 (or null, which leaves it 0); the
// document `null` is an empty size. Sizes with a zero width or height are
// consumed but not reported, as the kubelet skips them.
//
// Decoding stops for good at the first document that is not valid JSON, not an
// object or null, has a field of the wrong type, nests deeper than kMaxDepth, or
// grows beyond the buffer bound without completing: feed() then returns that
// error once and ignores all further input (the session goes on without resizes).
class ResizeDecoder {
 public:
  static constexpr size_t kDefaultMaxDocumentBytes = 4096;
  static constexpr int kMaxDepth = 32;

  explicit ResizeDecoder(size_t max_document_bytes = kDefaultMaxDocumentBytes)
      : max_document_bytes_(max_document_bytes) {}

  // Consumes `data`, calling `on_size` for each complete document, in order.
  // Returns OK while decoding goes on; InvalidArgument (with the reason) on the
  // call that hits the first bad document; OK (ignoring input) afterwards.
  absl::Status feed(std::string_view data, const std::function<void(TerminalSize)>& on_size);

  bool failed() const { return failed_; }
  // Bytes held of an incomplete document.
  size_t bufferedBytes() const { return pending_.size(); }

 private:
  const size_t max_document_bytes_;
  std::string pending_;
  bool failed_ = false;
};

// The session component's metrics, declared in one place. Labels: operation is
// "exec" or "attach"; protocol is the adapter's protocol name, e.g.
// "spdy/v4.channel.k8s.io"; reason is a session's close reason (see
// docs/operations.md, "Audit log").
#define CRISP_SESSION_METRICS(COUNTER, GAUGE, HISTOGRAM)                                    \
  GAUGE(sessions_active, "crisp_sessions_active", "Exec and attach sessions now open.",     \
        (std::vector<std::string>{"operation", "protocol"}))                                \
  COUNTER(sessions_total, "crisp_sessions_total", "Exec and attach sessions started.",      \
          (std::vector<std::string>{"operation", "protocol"}))                              \
  COUNTER(session_bytes_total, "crisp_session_bytes_total",                                 \
          "Stream payload bytes: in = from clients to processes, out = process output.",    \
          (std::vector<std::string>{"direction"}))                                          \
  COUNTER(session_timeouts_total, "crisp_session_timeouts_total",                           \
          "Timeouts hit: creation = streams of a session or of a port-forward pair not "    \
          "created in time, idle = no frame in or out for the idle timeout.",               \
          (std::vector<std::string>{"kind"}))                                               \
  COUNTER(session_ends_total, "crisp_session_ends_total",                                   \
          "Exec and attach sessions ended, by close reason.",                               \
          (std::vector<std::string>{"reason"}))                                             \
  HISTOGRAM(session_setup_seconds, "crisp_session_setup_seconds",                           \
            "Seconds from the upgraded connection to the running process.",                 \
            (std::vector<std::string>{"operation"}),                                        \
            (std::vector<double>{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,   \
                                 1, 2.5, 5, 10, 30}))                                       \
  HISTOGRAM(session_duration_seconds, "crisp_session_duration_seconds",                     \
            "Seconds from the upgraded connection to the end of the session.",              \
            (std::vector<std::string>{"operation"}),                                        \
            (std::vector<double>{0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400})) \
  HISTOGRAM(session_payload_bytes, "crisp_session_payload_bytes",                           \
            "Stream payload bytes of one session, both directions together.",               \
            (std::vector<std::string>{"operation"}),                                        \
            (std::vector<double>{0, 1024, 16384, 131072, 1048576, 8388608, 67108864,        \
                                 536870912}))

struct SessionMetrics {
#define CRISP_SESSION_METRIC_FIELD(field, name, help, labels) stats::Family& field;
#define CRISP_SESSION_HISTOGRAM_FIELD(field, name, help, labels, buckets) stats::Family& field;
  CRISP_SESSION_METRICS(CRISP_SESSION_METRIC_FIELD, CRISP_SESSION_METRIC_FIELD,
                        CRISP_SESSION_HISTOGRAM_FIELD)
#undef CRISP_SESSION_METRIC_FIELD
#undef CRISP_SESSION_HISTOGRAM_FIELD

  // Children looked up once; updates are lock-free.
  stats::Counter& bytes_in;
  stats::Counter& bytes_out;
  stats::Counter& creation_timeouts;
  stats::Counter& idle_timeouts;

  // The families registered in stats::registry(), created on first use.
  static SessionMetrics& get();
};

}  // namespace crisp::session
