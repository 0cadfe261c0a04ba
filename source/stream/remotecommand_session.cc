#include "source/stream/remotecommand_session.h"

#include <cstdio>
#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"

namespace crisp::stream {
namespace {

using session::ExecProcess;
using session::ExitStatus;
using session::StreamType;

const char* exitKindName(ExitStatus::Kind kind) {
  switch (kind) {
    case ExitStatus::Kind::kSuccess:
      return "success";
    case ExitStatus::Kind::kNonZeroExit:
      return "non-zero exit";
    case ExitStatus::Kind::kError:
      return "error";
    case ExitStatus::Kind::kEndedByServer:
      return "ended by crisp";
  }
  return "unknown";
}

// "4h", "90s", "1500ms": how the configuration writes it.
std::string durationText(std::chrono::milliseconds d) {
  const int64_t ms = d.count();
  if (ms % 3600000 == 0) {
    return absl::StrCat(ms / 3600000, "h");
  }
  if (ms % 60000 == 0) {
    return absl::StrCat(ms / 60000, "m");
  }
  if (ms % 1000 == 0) {
    return absl::StrCat(ms / 1000, "s");
  }
  return absl::StrCat(ms, "ms");
}

}  // namespace

RemoteCommandSession::RemoteCommandSession(event::Dispatcher& dispatcher,
                                           session::Runtime& runtime, RemoteCommandWire& wire,
                                           Identity identity, session::ExecSpec spec)
    : dispatcher_(dispatcher),
      runtime_(runtime),
      wire_(wire),
      identity_(std::move(identity)),
      spec_(std::move(spec)),
      metrics_(session::SessionMetrics::get()),
      active_gauge_(metrics_.sessions_active.gauge(
          {session::operationName(spec_.operation), identity_.protocol_name})) {
  start_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] { startExec(); });
}

RemoteCommandSession::~RemoteCommandSession() {
  start_timer_.reset();
  process_.reset();
  if (counted_active_) {
    setCloseReason("crisp.closed");
    recordEnd();
    active_gauge_.dec();
  }
}

void RemoteCommandSession::begin() {
  if (counted_active_) {
    return;
  }
  metrics_.sessions_total
      .counter({session::operationName(spec_.operation), identity_.protocol_name})
      .inc();
  active_gauge_.inc();
  counted_active_ = true;
  began_ = std::chrono::steady_clock::now();
  began_wall_ = std::chrono::system_clock::now();
  if (absl::StatusOr<session::ContainerInfo> c = runtime_.container(spec_.container_id); c.ok()) {
    pod_sandbox_id_ = c->pod_sandbox_id;
  }
  audit_ = audit::current();
  if (audit_ != nullptr) {
    audit_->write(auditLine(false));
  }
}

void RemoteCommandSession::setCloseReason(std::string_view reason) {
  if (close_reason_.empty()) {
    close_reason_ = std::string(reason.substr(0, reason.find(':')));
  }
}

std::string RemoteCommandSession::auditLine(bool end) const {
  const auto wall = end ? std::chrono::system_clock::now() : began_wall_;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch());
  const std::time_t seconds = static_cast<std::time_t>(ms.count() / 1000);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char stamp[40];
  const size_t n = std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(stamp + n, sizeof(stamp) - n, ".%03dZ", static_cast<int>(ms.count() % 1000));

  std::string out = "{\"time\":\"";
  out += stamp;
  out += "\",\"event\":";
  out += end ? "\"session_end\"" : "\"session_start\"";
  absl::StrAppend(&out, ",\"session_id\":", identity_.session_id,
                  ",\"connection_id\":", identity_.connection_id, ",\"operation\":\"",
                  session::operationName(spec_.operation), "\",\"protocol\":");
  session::appendJsonString(out, identity_.protocol_name);
  out += ",\"pod_sandbox_id\":";
  session::appendJsonString(out, pod_sandbox_id_);
  out += ",\"container_id\":";
  session::appendJsonString(out, spec_.container_id);
  out += ",\"command\":[";
  for (size_t i = 0; i < spec_.command.size(); ++i) {
    if (i > 0) {
      out += ',';
    }
    session::appendJsonString(out, spec_.command[i]);
  }
  absl::StrAppend(&out, "],\"tty\":", spec_.tty ? "true" : "false", ",\"stdin\":",
                  spec_.stdin ? "true" : "false", ",\"client_address\":");
  session::appendJsonString(out, identity_.client_address);
  out += ",\"client_subject\":";
  if (identity_.client_subject.empty()) {
    out += "null";
  } else {
    session::appendJsonString(out, identity_.client_subject);
  }
  if (end) {
    const double duration =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - began_).count();
    char duration_text[32];
    std::snprintf(duration_text, sizeof(duration_text), "%.3f", duration);
    absl::StrAppend(&out, ",\"bytes_in\":", bytes_in_, ",\"bytes_out\":", bytes_out_,
                    ",\"exit_code\":",
                    exit_code_.has_value() ? std::to_string(*exit_code_) : std::string("null"),
                    ",\"duration_seconds\":", duration_text, ",\"close_reason\":");
    session::appendJsonString(out, close_reason_.empty() ? "unknown" : close_reason_);
    if (recorder_ != nullptr) {
      out += ",\"recording\":";
      session::appendJsonString(out, recorder_->path());
    }
  }
  out += '}';
  return out;
}

void RemoteCommandSession::recordEnd() {
  if (ended_recorded_ || !counted_active_) {
    return;
  }
  ended_recorded_ = true;
  const char* operation = session::operationName(spec_.operation);
  metrics_.session_ends_total.counter({close_reason_.empty() ? "unknown" : close_reason_}).inc();
  metrics_.session_duration_seconds.histogram({operation})
      .observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - began_).count());
  metrics_.session_payload_bytes.histogram({operation})
      .observe(static_cast<double>(bytes_in_ + bytes_out_));
  if (audit_ != nullptr) {
    audit_->write(auditLine(true));
  }
  recorder_.reset();
}

void RemoteCommandSession::scheduleStart(std::chrono::milliseconds delay) {
  if (state_ == State::kWaiting) {
    start_timer_->enable(delay);
  }
}

void RemoteCommandSession::deliverStdin(Buffer& data) {
  const size_t len = data.length();
  metrics_.bytes_in.inc(len);
  bytes_in_ += len;
  if (recorder_ != nullptr && len > 0) {
    recorder_->input(
        std::string_view(reinterpret_cast<const char*>(data.linearize(len)), len));
  }
  if (stdin_eof_) {
    data.drain(len);
    return;
  }
  switch (state_) {
    case State::kRunning:
      process_->writeStdin(data);
      if (!stdin_paused_ && process_ != nullptr &&
          process_->stdinQueuedBytes() > ExecProcess::kStdinHighWatermark) {
        stdin_paused_ = true;
        wire_.pauseReading(true);
      }
      return;
    case State::kWaiting:
    case State::kStarting:
      early_stdin_.move(data);
      if (!stdin_paused_ && early_stdin_.length() > ExecProcess::kStdinHighWatermark) {
        stdin_paused_ = true;
        wire_.pauseReading(true);
      }
      return;
    default:
      data.drain(len);
      return;
  }
}

int RemoteCommandSession::stdinPipe() {
  if (state_ != State::kRunning || process_ == nullptr || recorder_ != nullptr || stdin_eof_ ||
      !early_stdin_.empty()) {
    return -1;
  }
  return process_->stdinPipe();
}

void RemoteCommandSession::noteStdinPiped(size_t bytes) {
  metrics_.bytes_in.inc(bytes);
  bytes_in_ += bytes;
}

void RemoteCommandSession::closeStdin() {
  if (stdin_eof_) {
    return;
  }
  stdin_eof_ = true;
  if (state_ == State::kRunning && process_ != nullptr) {
    process_->closeStdin();
  }
  // Otherwise startExec() closes it after writing the early stdin.
}

void RemoteCommandSession::deliverResize(Buffer& data, std::string_view what) {
  const size_t len = data.length();
  if (len == 0) {
    return;
  }
  const auto* bytes = reinterpret_cast<const char*>(data.linearize(len));
  const absl::Status status =
      resize_decoder_.feed(std::string_view(bytes, len), [this](session::TerminalSize size) {
        if (state_ == State::kRunning && process_ != nullptr) {
          process_->resize(size);
          if (recorder_ != nullptr) {
            recorder_->resize(size.width, size.height);
          }
        } else if (state_ == State::kWaiting || state_ == State::kStarting) {
          latest_size_ = size;
        }
      });
  data.drain(len);
  if (!status.ok()) {
    CRISP_SESSION_LOG(kSession, info, identity_.connection_id, identity_.session_id,
                      "ignoring the resize {} from now on: {}", what, status.ToString());
  }
}

void RemoteCommandSession::outputAboveHighWatermark() {
  output_paused_ = true;
  if (process_ != nullptr) {
    process_->pauseOutput(true);
  }
}

void RemoteCommandSession::outputBelowLowWatermark() {
  output_paused_ = false;
  if (process_ != nullptr) {
    process_->pauseOutput(false);
  }
}

void RemoteCommandSession::connectionClosing(std::string_view reason_name,
                                             const std::string& detail, bool idle_timeout) {
  if (idle_timeout) {
    metrics_.idle_timeouts.inc();
  }
  if (ended()) {
    return;
  }
  CRISP_SESSION_LOG(kSession, debug, identity_.connection_id, identity_.session_id,
                    "connection ended ({}): {}; ending the {}", reason_name, detail,
                    session::operationName(spec_.operation));
  setCloseReason(reason_name);
  state_ = State::kFinished;
  start_timer_->disable();
  releaseProcess();
}

void RemoteCommandSession::connectionClosed() {
  state_ = State::kDone;
  start_timer_->disable();
  releaseProcess();
  setCloseReason("connection_closed");
  recordEnd();
  if (counted_active_) {
    active_gauge_.dec();
    counted_active_ = false;
  }
  CRISP_SESSION_LOG(kSession, debug, identity_.connection_id, identity_.session_id,
                    "session closed");
}

void RemoteCommandSession::onStdout(Buffer& data) { sendOutput(StreamType::kStdout, data); }

void RemoteCommandSession::onStderr(Buffer& data) { sendOutput(StreamType::kStderr, data); }

size_t RemoteCommandSession::onStdoutPipe(int pipe_fd, size_t limit) {
  return sendOutputFromPipe(StreamType::kStdout, pipe_fd, limit);
}

size_t RemoteCommandSession::onStderrPipe(int pipe_fd, size_t limit) {
  return sendOutputFromPipe(StreamType::kStderr, pipe_fd, limit);
}

size_t RemoteCommandSession::sendOutputFromPipe(StreamType type, int pipe_fd, size_t limit) {
  // A recording needs the bytes themselves; before the start or after the end
  // the Buffer path drops them.
  if (state_ != State::kRunning || process_ == nullptr || recorder_ != nullptr ||
      !wire_.acceptsOutput(type)) {
    return 0;
  }
  const size_t taken = wire_.sendOutputFromPipe(type, pipe_fd, limit);
  metrics_.bytes_out.inc(taken);
  bytes_out_ += taken;
  return taken;
}

void RemoteCommandSession::sendOutput(StreamType type, Buffer& data) {
  if ((state_ != State::kRunning && state_ != State::kStarting) || !wire_.acceptsOutput(type)) {
    data.drain(data.length());
    return;
  }
  const size_t len = data.length();
  metrics_.bytes_out.inc(len);
  bytes_out_ += len;
  if (recorder_ != nullptr && len > 0) {
    recorder_->output(std::string_view(reinterpret_cast<const char*>(data.linearize(len)), len));
  }
  wire_.sendOutput(type, data);
}

void RemoteCommandSession::onExit(const ExitStatus& status) { finish(status); }

void RemoteCommandSession::onStdinDrained() {
  if (stdin_paused_) {
    stdin_paused_ = false;
    wire_.pauseReading(false);
  }
}

void RemoteCommandSession::startExec() {
  if (state_ != State::kWaiting) {
    return;
  }
  if (!spec_.stdin && !spec_.stdout && !spec_.stderr) {
    finish(ExitStatus::error("one of stdin, stdout, or stderr must be set"));
    return;
  }
  state_ = State::kStarting;
  CRISP_SESSION_LOG(
      kSession, debug, identity_.connection_id, identity_.session_id,
      "starting (tty={}, initial size {})", spec_.tty,
      latest_size_.has_value()
          ? std::to_string(latest_size_->width) + "x" + std::to_string(latest_size_->height)
          : std::string("unknown"));
  absl::StatusOr<std::unique_ptr<ExecProcess>> started =
      runtime_.startExec(dispatcher_, spec_, latest_size_, *this);
  if (!started.ok()) {
    CRISP_SESSION_LOG(kSession, info, identity_.connection_id, identity_.session_id,
                      "start failed: {}", started.status().ToString());
    finish(ExitStatus::error(std::string(started.status().message())));
    return;
  }
  std::unique_ptr<ExecProcess> process = std::move(started).value();
  if (state_ != State::kStarting || process == nullptr) {
    // It ended (or the client left) while starting.
    if (process != nullptr) {
      dispatcher_.deferredDelete(std::move(process));
    }
    if (state_ == State::kStarting) {
      finish(ExitStatus::error("the runtime returned no process"));
    }
    return;
  }
  process_ = std::move(process);
  state_ = State::kRunning;
  metrics_.session_setup_seconds.histogram({session::operationName(spec_.operation)})
      .observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - began_).count());
  if (spec_.tty) {
    if (std::shared_ptr<const recording::RecordingOptions> options = recording::currentOptions()) {
      // Without a size from the client yet, the terminal's usual default.
      const session::TerminalSize size = latest_size_.value_or(session::TerminalSize{80, 24});
      recorder_ = recording::Recorder::start(*options, spec_.container_id, identity_.session_id,
                                             size.width, size.height, spec_.command);
    }
  }
  // Each call below may end the process synchronously (onExit), so check
  // after each one.
  if (output_paused_) {
    process_->pauseOutput(true);
  }
  if (process_ != nullptr && spec_.stdin && recorder_ == nullptr && wire_.canSpliceStdin()) {
    // Asked once now, the process keeps its stdin pipe fit for splicing even
    // while the early stdin below is copied into it.
    (void)process_->stdinPipe();
  }
  if (process_ != nullptr && !early_stdin_.empty()) {
    process_->writeStdin(early_stdin_);
  }
  if (process_ != nullptr && stdin_eof_) {
    process_->closeStdin();
  }
  if (process_ != nullptr && stdin_paused_ &&
      process_->stdinQueuedBytes() <= ExecProcess::kStdinHighWatermark) {
    stdin_paused_ = false;
    wire_.pauseReading(false);
  }
}

void RemoteCommandSession::finish(const ExitStatus& status, std::string_view close_reason,
                                  bool status_ahead) {
  if (state_ != State::kWaiting && state_ != State::kStarting && state_ != State::kRunning) {
    return;
  }
  state_ = State::kFinished;
  start_timer_->disable();
  switch (status.kind) {
    case ExitStatus::Kind::kSuccess:
      exit_code_ = 0;
      break;
    case ExitStatus::Kind::kNonZeroExit:
      exit_code_ = status.exit_code;
      break;
    case ExitStatus::Kind::kError:
    case ExitStatus::Kind::kEndedByServer:
      break;
  }
  if (!close_reason.empty()) {
    setCloseReason(close_reason);
  } else {
    setCloseReason(status.kind == ExitStatus::Kind::kError ? "error" : "exited");
  }
  CRISP_SESSION_LOG(kSession, debug, identity_.connection_id, identity_.session_id,
                    "{} ended: {} {} {}", session::operationName(spec_.operation),
                    exitKindName(status.kind), status.exit_code, status.message);
  releaseProcess();
  wire_.endWithStatus(session::errorStreamPayload(identity_.version, spec_, status),
                      status_ahead);
}

void RemoteCommandSession::endIdle(std::chrono::milliseconds idle, std::string_view close_reason) {
  metrics_.idle_timeouts.inc();
  finish(ExitStatus::endedByServer(
             absl::StrCat("crisp ended the session: no input or output for ", durationText(idle),
                          " (stream.stream_idle_timeout)"),
             "Timeout", 504),
         close_reason);
}

void RemoteCommandSession::endForShutdown(std::string_view close_reason) {
  finish(ExitStatus::endedByServer(
             "crisp is shutting down: the session was ended at the end of the drain grace "
             "period (stream.drain_grace_period)",
             "ServiceUnavailable", 503),
         close_reason, /*status_ahead=*/true);
}

void RemoteCommandSession::endForStop(int wire_code) {
  if (state_ != State::kStarting && state_ != State::kRunning) {
    abandon("crisp.closed: closed by the server", wire_code);
    return;
  }
  finish(ExitStatus::endedByServer(
             absl::StrCat(session::kServerStoppingMessage, ": the session was ended as crisp stopped"),
             "ServiceUnavailable", 503),
         "crisp.shutdown", /*status_ahead=*/true);
}

void RemoteCommandSession::abandon(const std::string& why, int wire_code) {
  if (ended()) {
    return;
  }
  CRISP_SESSION_LOG(kSession, debug, identity_.connection_id, identity_.session_id,
                    "ending the session: {}", why);
  setCloseReason(why);
  state_ = State::kFinished;
  start_timer_->disable();
  releaseProcess();
  wire_.endWithoutStatus(why, wire_code);
}

void RemoteCommandSession::releaseProcess() {
  if (process_ != nullptr) {
    // Deferred: this may run inside one of the process's own callbacks.
    dispatcher_.deferredDelete(std::move(process_));
  }
}

}  // namespace crisp::stream
