#pragma once

// RemoteCommandSession: the wire-neutral half of one exec/attach session,
// shared by the SPDY and WebSocket adapters. It owns the ExecProcess and
// everything that does not depend on how bytes are framed:
//
// - start: Runtime::startExec() once (from the loop, after scheduleStart()),
//   with the latest terminal size seen so far, stdin that arrived early, and
//   a stdin EOF that arrived early;
// - stdin: writeStdin(), pausing the client (RemoteCommandWire::pauseReading)
//   while more than ExecProcess::kStdinHighWatermark is queued, resuming on
//   onStdinDrained();
// - output: process output to RemoteCommandWire::sendOutput() while the
//   session runs; the process is paused while the wire's queue is above its
//   high watermark;
// - resize: a ResizeDecoder; sizes before the start become the initial size;
// - end: on exit, the status payload for the version goes to
//   RemoteCommandWire::endWithStatus(); a session ended by either side
//   without a status goes to RemoteCommandWire::endWithoutStatus();
// - the crisp_session* metrics of the session, its audit lines (start, end)
//   and, for TTY sessions when recording is on, its asciicast recording.
//
// The adapter keeps what is its wire's own: stream or channel bookkeeping,
// the ready signal, the creation timeout, close codes. It forwards what its
// connection reports (data, closing, closed, watermarks) to the calls below.
//
// Threading: one dispatcher, the adapter's.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "source/audit/audit_log.h"
#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/session/remotecommand.h"
#include "source/recording/asciicast.h"
#include "source/session/runtime.h"

namespace crisp::stream {

// What the shared session asks of its wire adapter. Each call comes from the
// session's dispatcher, possibly from inside a runtime callback.
class RemoteCommandWire {
 public:
  virtual ~RemoteCommandWire() = default;

  // Stops (true) or resumes (false) reading from the client.
  virtual void pauseReading(bool paused) = 0;
  // Whether output of this type has somewhere to go (a stream the client
  // opened, a channel the request asked for). Output that has not is dropped.
  virtual bool acceptsOutput(session::StreamType type) const = 0;
  // Sends process output (kStdout or kStderr); takes the bytes.
  virtual void sendOutput(session::StreamType type, Buffer& data) = 0;
  // Whether the client's stdin can reach the process through
  // ExecProcess::stdinPipe() (SPDY over a plain socket), so that the process
  // keeps that pipe fit for it from the start.
  virtual bool canSpliceStdin() const { return false; }
  // Zero-copy output (see session::ExecCallbacks::onStdoutPipe): sends up to
  // `limit` bytes of what the pipe `pipe_fd` holds, moved by the kernel, and
  // returns how many it took; 0 when the wire cannot (not a plain socket,
  // output queued, a framing that rewrites the bytes). Bytes taken but not
  // yet written hold the wire above its high watermark until they are.
  virtual size_t sendOutputFromPipe(session::StreamType type, int pipe_fd, size_t limit) {
    (void)type;
    (void)pipe_fd;
    (void)limit;
    return 0;
  }
  // The exec ended: end the output, write `payload` (errorStreamPayload()
  // for the version, possibly empty) on the error stream and close as after
  // an exit (clients read the status only after a normal close). With
  // `ahead_of_output` the status goes out ahead of the output still queued
  // for the client (crisp ends the session: a slow reader must get the
  // status even if it is cut off before it read the rest); otherwise after it.
  virtual void endWithStatus(const std::string& payload, bool ahead_of_output) = 0;
  // The session ends without a status: close. `why` is a stable reason for
  // the log; `wire_code` is what the adapter passed to abandon().
  virtual void endWithoutStatus(const std::string& why, int wire_code) = 0;
};

class RemoteCommandSession : private session::ExecCallbacks {
 public:
  struct Identity {
    uint64_t connection_id = 0;
    uint64_t session_id = 0;
    session::RemoteCommandVersion version = session::RemoteCommandVersion::kV4;
    // The metric label and log text, e.g. "spdy/v4.channel.k8s.io".
    std::string protocol_name;
    // For the audit log: the client's "ip:port" and, over TLS with a client
    // certificate, its subject.
    std::string client_address;
    std::string client_subject;
  };

  // `runtime` and `wire` must outlive the session.
  RemoteCommandSession(event::Dispatcher& dispatcher, session::Runtime& runtime,
                       RemoteCommandWire& wire, Identity identity, session::ExecSpec spec);
  // Ends a running exec (destroying the ExecProcess at once).
  ~RemoteCommandSession() override;
  RemoteCommandSession(const RemoteCommandSession&) = delete;
  RemoteCommandSession& operator=(const RemoteCommandSession&) = delete;

  // Counts the session as started and active. Once.
  void begin();
  // Runs the start from the loop, so that bytes already read (a resize right
  // behind the request) are handled first, and no sooner than `delay`.
  void scheduleStart(std::chrono::milliseconds delay = std::chrono::milliseconds(0));

  // From the client.
  void deliverStdin(Buffer& data);
  // Zero-copy stdin: the pipe the client's stdin may be spliced into, in
  // place of deliverStdin() (see ExecProcess::stdinPipe), or -1: before the
  // start, after the end or stdin's EOF, with stdin that arrived early still
  // queued, or while recording (which needs the bytes themselves).
  int stdinPipe();
  // `bytes` of stdin went into the pipe of stdinPipe().
  void noteStdinPiped(size_t bytes);
  void closeStdin();
  // `what` names the carrier in the log ("stream", "channel").
  void deliverResize(Buffer& data, std::string_view what);

  // From the connection.
  void outputAboveHighWatermark();
  void outputBelowLowWatermark();
  // The connection is going away on its own (client close, EOF, protocol
  // error, idle timeout): the exec ends without a status.
  void connectionClosing(std::string_view reason_name, const std::string& detail,
                         bool idle_timeout);
  // The connection is closed: nothing more is sent.
  void connectionClosed();

  // Ends with `status` on the error stream; `close_reason` is why crisp
  // ended it ("ws.idle_timeout", "crisp.shutdown"), for the audit log and
  // metrics; empty when the process exited.
  // With `status_ahead`, the status overtakes the output still queued for
  // the client (RemoteCommandWire::endWithStatus).
  void finish(const session::ExitStatus& status, std::string_view close_reason = {},
              bool status_ahead = false);
  // crisp ends the session because nothing moved for `idle`: a Failure status
  // (reason Timeout) that the client shows, counted as an idle timeout.
  void endIdle(std::chrono::milliseconds idle, std::string_view close_reason);
  // crisp is shutting down and the grace period is over: a Failure status
  // (reason ServiceUnavailable) that the client shows.
  void endForShutdown(std::string_view close_reason);
  // crisp stops without (or after) a drain: a started command ends with a
  // Failure status saying so, because a client reads closed streams without
  // one as a clean exit (code 0); a session not yet started ends without one
  // (`wire_code` as for abandon()).
  void endForStop(int wire_code = 0);
  // Ends without a status.
  void abandon(const std::string& why, int wire_code = 0);

  // Before the start (the adapter still collects streams).
  bool waiting() const { return state_ == State::kWaiting; }
  // Finished or closed: nothing more is accepted.
  bool ended() const { return state_ == State::kFinished || state_ == State::kDone; }
  bool processRunning() const { return process_ != nullptr; }
  const session::ExecSpec& spec() const { return spec_; }
  const Identity& identity() const { return identity_; }
  session::SessionMetrics& metrics() { return metrics_; }

 private:
  enum class State {
    kWaiting,   // before the start
    kStarting,  // inside Runtime::startExec()
    kRunning,   // pumping
    kFinished,  // status written (or session abandoned); connection closing
    kDone,      // connection closed
  };

  // session::ExecCallbacks
  void onStdout(Buffer& data) override;
  void onStderr(Buffer& data) override;
  size_t onStdoutPipe(int pipe_fd, size_t limit) override;
  size_t onStderrPipe(int pipe_fd, size_t limit) override;
  void onExit(const session::ExitStatus& status) override;
  void onStdinDrained() override;

  void startExec();
  void sendOutput(session::StreamType type, Buffer& data);
  // What onStdoutPipe()/onStderrPipe() take for `type`.
  size_t sendOutputFromPipe(session::StreamType type, int pipe_fd, size_t limit);
  void releaseProcess();
  // Remembers why the session ended (the first reason given wins).
  void setCloseReason(std::string_view reason);
  // The audit line for the start or the end of the session.
  std::string auditLine(bool end) const;
  // Once: the end's audit line, metrics and recording.
  void recordEnd();

  event::Dispatcher& dispatcher_;
  session::Runtime& runtime_;
  RemoteCommandWire& wire_;
  const Identity identity_;
  const session::ExecSpec spec_;

  std::unique_ptr<session::ExecProcess> process_;
  event::TimerPtr start_timer_;
  State state_ = State::kWaiting;

  std::optional<session::TerminalSize> latest_size_;
  session::ResizeDecoder resize_decoder_;
  // Stdin received before the process exists.
  Buffer early_stdin_;
  bool stdin_eof_ = false;
  bool stdin_paused_ = false;
  bool output_paused_ = false;

  session::SessionMetrics& metrics_;
  stats::Gauge& active_gauge_;
  bool counted_active_ = false;

  // What the audit log, the histograms and the recording need.
  std::chrono::steady_clock::time_point began_;
  std::chrono::system_clock::time_point began_wall_;
  std::string pod_sandbox_id_;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
  std::optional<int> exit_code_;
  std::string close_reason_;
  bool ended_recorded_ = false;
  std::shared_ptr<audit::AuditLog> audit_;
  std::unique_ptr<recording::Recorder> recorder_;
};

}  // namespace crisp::stream
