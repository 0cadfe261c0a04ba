#include "source/runtime/streamserver/upstream_exec.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

#include "source/common/logger.h"
#include "source/runtime/streamserver/status_json.h"

namespace crisp::streamserver {
namespace {

using session::RemoteCommandVersion;
using session::StreamType;

// What kubelet's client offers a runtime, newest first. v5 is left out: no
// runtime's stream server serves it, and over SPDY it would be v4 anyway.
constexpr RemoteCommandVersion kOffered[] = {RemoteCommandVersion::kV4, RemoteCommandVersion::kV3,
                                             RemoteCommandVersion::kV2, RemoteCommandVersion::kV1};

}  // namespace

UpstreamExec::UpstreamExec(event::Dispatcher& dispatcher, const StreamServerOptions& options,
                           const session::ExecSpec& spec,
                           std::optional<session::TerminalSize> initial,
                           session::ExecCallbacks& callbacks)
    : dispatcher_(dispatcher),
      options_(options),
      spec_(spec),
      callbacks_(callbacks),
      size_(initial) {
  stdout_ended_ = !spec_.stdout;
  stderr_ended_ = !spec_.stderr || spec_.tty;
}

UpstreamExec::~UpstreamExec() {
  *alive_ = false;
  upgrade_.reset();
  internal::releaseConnection(connection_);
}

void UpstreamExec::start(const Url& url) {
  server_ = url.hostPort();
  HttpHeaders headers = {{"Connection", "Upgrade"}, {"Upgrade", "SPDY/3.1"}};
  for (RemoteCommandVersion v : kOffered) {
    headers.emplace_back("X-Stream-Protocol-Version", session::remoteCommandProtocol(v));
  }
  upgrade_ = std::make_unique<UpgradeClient>(dispatcher_, options_.upgrade);
  upgrade_->start(url, "POST", std::move(headers),
                  [this](absl::StatusOr<UpgradeResponse> response) {
                    onUpgraded(std::move(response));
                  });
}

void UpstreamExec::onUpgraded(absl::StatusOr<UpgradeResponse> response) {
  dispatcher_.deferredDelete(std::move(upgrade_));
  if (!response.ok()) {
    finish(session::ExitStatus::error(std::string(response.status().message())));
    return;
  }
  const std::string* upgrade = response->header("Upgrade");
  if (upgrade == nullptr || !absl::EqualsIgnoreCase(absl::StripAsciiWhitespace(*upgrade),
                                                    "spdy/3.1")) {
    finish(session::ExitStatus::error(absl::StrCat(
        "runtime stream server ", server_, ": answered 101 without Upgrade: SPDY/3.1")));
    return;
  }
  const std::string* chosen = response->header("X-Stream-Protocol-Version");
  if (chosen == nullptr || chosen->empty()) {
    // client-go takes a server that names no version for a v1 server.
    version_ = RemoteCommandVersion::kV1;
  } else if (auto v = session::parseRemoteCommandProtocol(
                 std::string(absl::StripAsciiWhitespace(*chosen)));
             v.has_value() && *v <= RemoteCommandVersion::kV4) {
    version_ = *v;
  } else {
    finish(session::ExitStatus::error(absl::StrCat("runtime stream server ", server_,
                                                   ": chose a protocol crisp did not offer: ",
                                                   *chosen)));
    return;
  }
  connection_ = internal::startConnection(dispatcher_, options_, std::move(response->transport),
                                          *this);
  if (output_paused_) {
    connection_->pauseReading(true);
  }
  CRISP_LOG(kRuntime, debug, "{} in container {}: runtime stream server {} speaks {}",
            session::operationName(spec_.operation), spec_.container_id, server_,
            session::remoteCommandProtocol(version_));
  // In client-go's order: error, stdin, stdout, stderr, resize.
  const session::StreamSet want = session::expectedStreams(version_, spec_);
  error_id_ = open(StreamType::kError);
  if (want.contains(StreamType::kStdin)) {
    stdin_id_ = open(StreamType::kStdin);
  }
  if (want.contains(StreamType::kStdout)) {
    stdout_id_ = open(StreamType::kStdout);
  }
  if (want.contains(StreamType::kStderr)) {
    stderr_id_ = open(StreamType::kStderr);
  }
  if (want.contains(StreamType::kResize)) {
    resize_id_ = open(StreamType::kResize);
  }
  if (error_id_ == 0) {
    return;  // the connection failed already; its callbacks finish
  }
  // The v1 error stream is never written by the client.
  sendResize();
  flushStdin();
}

uint32_t UpstreamExec::open(StreamType type) {
  return connection_->openStream({{"streamtype", session::streamTypeName(type)}});
}

void UpstreamExec::writeStdin(Buffer& data) {
  if (stdin_closed_ || finished_) {
    data.drain(data.length());
    return;
  }
  pending_stdin_.move(data);
  flushStdin();
  if (stdinQueuedBytes() > kStdinHighWatermark) {
    stdin_above_ = true;
  }
}

size_t UpstreamExec::stdinQueuedBytes() const {
  return pending_stdin_.length() + (connection_ != nullptr ? connection_->queuedOutputBytes() : 0);
}

void UpstreamExec::closeStdin() {
  stdin_closed_ = true;
  flushStdin();
}

void UpstreamExec::flushStdin() {
  if (connection_ == nullptr || error_id_ == 0) {
    return;
  }
  if (stdin_id_ == 0) {
    pending_stdin_.drain(pending_stdin_.length());
    return;
  }
  if (!pending_stdin_.empty()) {
    connection_->sendData(stdin_id_, pending_stdin_, false);
  }
  if (stdin_closed_ && !stdin_fin_sent_) {
    stdin_fin_sent_ = true;
    connection_->sendData(stdin_id_, std::string_view(), true);
  }
}

void UpstreamExec::resize(session::TerminalSize size) {
  size_ = size;
  sendResize();
}

void UpstreamExec::sendResize() {
  if (connection_ == nullptr || resize_id_ == 0 || !size_.has_value()) {
    return;
  }
  // As client-go's json.Encoder writes a TerminalSize.
  connection_->sendData(resize_id_,
                        absl::StrCat("{\"Width\":", size_->width, ",\"Height\":", size_->height,
                                     "}\n"),
                        false);
}

void UpstreamExec::pauseOutput(bool paused) {
  output_paused_ = paused;
  if (connection_ != nullptr) {
    connection_->pauseReading(paused);
  }
}

bool UpstreamExec::onStreamOpen(uint32_t /*stream_id*/, const spdy::HeaderList& /*headers*/) {
  return false;
}

void UpstreamExec::onStreamData(uint32_t stream_id, Buffer& data) {
  if (stream_id == stdout_id_) {
    callbacks_.onStdout(data);
  } else if (stream_id == stderr_id_) {
    callbacks_.onStderr(data);
  } else if (stream_id == error_id_) {
    const size_t room = options_.max_error_bytes - std::min(options_.max_error_bytes,
                                                            error_data_.size());
    const size_t take = std::min(room, data.length());
    const size_t old = error_data_.size();
    error_data_.resize(old + take);
    data.copyOut(error_data_.data() + old, take);
  }
  data.drain(data.length());
}

void UpstreamExec::onStreamRemoteFin(uint32_t stream_id) {
  if (stream_id == stdout_id_) {
    stdout_ended_ = true;
  } else if (stream_id == stderr_id_) {
    stderr_ended_ = true;
  } else if (stream_id == error_id_) {
    error_ended_ = true;
  }
  maybeFinish();
}

void UpstreamExec::onStreamReset(uint32_t stream_id, spdy::RstStatus /*status*/) {
  // The kubelet's library resets every stream it has not finished once the
  // status is written: for the reader that is the end of the stream.
  onStreamRemoteFin(stream_id);
  if (stream_id == stdin_id_) {
    stdin_id_ = 0;
  }
}

void UpstreamExec::onOutputBelowLowWatermark() {
  if (stdin_above_) {
    stdin_above_ = false;
    callbacks_.onStdinDrained();
  }
}

void UpstreamExec::maybeFinish() {
  if (error_ended_ && stdout_ended_ && stderr_ended_) {
    finish(statusFromErrorStream(true, ""));
  }
}

void UpstreamExec::onConnectionClosing(stream::SpdyCloseReason reason, const std::string& detail) {
  finish(statusFromErrorStream(peer_went_away_ || error_ended_,
                               absl::StrCat(stream::closeReasonName(reason), ": ", detail)));
}

void UpstreamExec::onConnectionClosed() {
  finish(statusFromErrorStream(peer_went_away_ || error_ended_, "connection closed"));
}

session::ExitStatus UpstreamExec::statusFromErrorStream(bool clean,
                                                        const std::string& detail) const {
  if (!error_data_.empty()) {
    if (session::hasStructuredStatus(version_)) {
      return exitStatusFromJson(error_data_, spec_.operation);
    }
    return session::ExitStatus::error(error_data_);
  }
  if (clean) {
    // v1-v3 write nothing on success.
    return session::ExitStatus::success();
  }
  return session::ExitStatus::error(absl::StrCat("runtime stream server ", server_,
                                                 ": lost the connection before the status (",
                                                 detail, ")"));
}

void UpstreamExec::finish(session::ExitStatus status) {
  if (finished_) {
    return;
  }
  finished_ = true;
  if (connection_ != nullptr) {
    connection_->close();
  }
  // From the loop: this may run inside the connection's callbacks, and the
  // adapter may destroy this object in onExit().
  dispatcher_.post([this, alive = std::weak_ptr<bool>(alive_), status = std::move(status)] {
    if (alive.expired()) {
      return;
    }
    callbacks_.onExit(status);
  });
}

}  // namespace crisp::streamserver
