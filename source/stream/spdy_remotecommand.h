#pragma once

// The remotecommand (exec/attach) server over SPDY/3.1, and the upgrade
// handler that runs it.
//
// SpdyRemoteCommand is one session on one SpdyConnection:
// 1. Streams: the client opens streams tagged by the `streamtype` header
//    (error, stdin, stdout, stderr, resize; compared ignoring case). Each is
//    accepted with an empty SYN_REPLY; unknown or duplicate types are logged
//    and not counted. The session waits for the set the version and the
//    ExecSpec call for (session::expectedStreams()), at most
//    stream_creation_timeout; on expiry it logs `timed out waiting for client
//    to create streams` and ends the connection.
// 2. Start: Runtime::startExec() with the latest terminal size received so
//    far as `initial`. A start that fails is reported on the error stream as
//    an internal error.
// 3. Pump: stdin DATA -> ExecProcess::writeStdin (reading the socket pauses
//    while the process's stdin queue is above kStdinHighWatermark and resumes
//    on onStdinDrained), or, where the backend offers the command's stdin
//    pipe (ExecProcess::stdinPipe), spliced from the socket into that pipe;
//    stdin FIN -> closeStdin (output keeps flowing); resize
//    DATA -> ResizeDecoder -> resize(); process output -> DATA frames
//    (pauseOutput(true) while the socket queue is above its high watermark).
// 4. End: on onExit, FIN stdout and stderr after their last bytes, write the
//    status on the error stream (session::errorStreamPayload() for the
//    negotiated version: the text is delivered for v1 too), FIN it, then close
//    the connection (RST_STREAM CANCEL on the rest, GOAWAY, flush, close).
//    An idle timeout (no frame for idle_timeout) or the end of a drain ends
//    the same way, with a Failure status that says why. The client going
//    away (socket closed, stdout/stderr/error stream reset, protocol error)
//    ends the exec at once by destroying the ExecProcess.
//
// SpdyUpgradeHandler takes upgraded SPDY connections from the HTTP/1.1 front
// and owns their sessions until they end.
//
// Threading: a session lives on the dispatcher it was created on. The handler
// may serve several dispatchers; each session is only touched on its own.

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/session/remotecommand.h"
#include "source/session/runtime.h"
#include "source/stream/remotecommand_session.h"
#include "source/stream/spdy_connection.h"
#include "source/stream/session_registry.h"
#include "source/stream/upgrade.h"

namespace crisp::stream {

struct SpdyRemoteCommandConfig {
  // How long the client has to open every expected stream (kubelet default).
  std::chrono::milliseconds stream_creation_timeout = std::chrono::seconds(30);
  // Socket, idle and backpressure settings of the connection.
  SpdyConnectionConfig connection;
};

// The remotecommand version of a negotiated SPDY protocol; nullopt for
// port-forward.
std::optional<session::RemoteCommandVersion> remoteCommandVersion(Protocol protocol);

class SpdyRemoteCommand : private SpdyConnectionCallbacks, private RemoteCommandWire {
 public:
  // Called once, on the session's dispatcher, when the session is over and its
  // socket closed. The owner then destroys the session, deferred (the call
  // comes from inside the session).
  using DoneCallback = std::function<void(SpdyRemoteCommand&)>;

  // `upgraded` must carry an ExecSpec and a remotecommand protocol. `runtime`
  // must outlive the session.
  SpdyRemoteCommand(event::Dispatcher& dispatcher, session::Runtime& runtime,
                    UpgradedConnection&& upgraded, const SpdyRemoteCommandConfig& config,
                    DoneCallback on_done);
  // Ends a running exec (destroying the ExecProcess) and closes the socket at
  // once if it is still open.
  ~SpdyRemoteCommand() override;
  SpdyRemoteCommand(const SpdyRemoteCommand&) = delete;
  SpdyRemoteCommand& operator=(const SpdyRemoteCommand&) = delete;

  // Starts serving: starts the connection (its transport sends the queued 101
  // and delivers the bytes it holds, from the loop), arms the stream creation
  // timer.
  void start();

  // Ends the session now (shutdown, drain): the exec is ended, streams reset,
  // GOAWAY sent; `on_done` follows once the socket is closed.
  void close();
  // Ends the session at the end of a drain: the exec is ended and a Failure
  // status saying crisp is shutting down goes on the error stream, then the
  // connection closes as after an exit.
  void endForShutdown();

  uint64_t connectionId() const { return connection_id_; }
  uint64_t sessionId() const { return session_id_; }
  session::RemoteCommandVersion version() const { return version_; }
  // True once the exec was started (and until it ends).
  bool processRunning() const { return core_->processRunning(); }
  const SpdyConnection& connection() const { return *connection_; }

 private:
  using StreamType = session::StreamType;

  // SpdyConnectionCallbacks
  bool onStreamOpen(uint32_t stream_id, const spdy::HeaderList& headers) override;
  void onStreamData(uint32_t stream_id, Buffer& data) override;
  int onStreamDataPipe(uint32_t stream_id) override;
  void onStreamDataPiped(uint32_t stream_id, size_t bytes) override;
  void onStreamRemoteFin(uint32_t stream_id) override;
  void onStreamReset(uint32_t stream_id, spdy::RstStatus status) override;
  void onOutputAboveHighWatermark() override;
  void onOutputBelowLowWatermark() override;
  void onConnectionClosing(SpdyCloseReason reason, const std::string& detail) override;
  void onConnectionClosed() override;
  bool onIdleTimeout() override;

  // RemoteCommandWire
  void pauseReading(bool paused) override;
  bool acceptsOutput(StreamType type) const override;
  void sendOutput(StreamType type, Buffer& data) override;
  size_t sendOutputFromPipe(StreamType type, int pipe_fd, size_t limit) override;
  bool canSpliceStdin() const override { return connection_->canSpliceInput(); }
  void endWithStatus(const std::string& payload, bool ahead_of_output) override;
  void endWithoutStatus(const std::string& why, int wire_code) override;

  std::optional<StreamType> typeOf(uint32_t stream_id) const;
  uint32_t streamId(StreamType type) const { return stream_ids_[static_cast<size_t>(type)]; }
  void onCreationTimeout();

  event::Dispatcher& dispatcher_;
  const SpdyRemoteCommandConfig config_;
  DoneCallback on_done_;
  const uint64_t connection_id_;
  const uint64_t session_id_;
  const session::RemoteCommandVersion version_;
  const session::StreamSet expected_;

  std::unique_ptr<SpdyConnection> connection_;
  // Declared after the connection, so the exec ends before the socket closes.
  std::unique_ptr<RemoteCommandSession> core_;
  event::TimerPtr creation_timer_;

  // Stream id per StreamType (0: not opened).
  std::array<uint32_t, 5> stream_ids_{};
  session::StreamSet received_;
};

// Serves upgraded SPDY connections: remotecommand protocols become
// SpdyRemoteCommand sessions; port-forward goes to `port_forward` when given,
// else the connection is closed. Sessions are owned here until they end.
//
// onUpgrade() runs on the connection's dispatcher; sessions of different
// dispatchers are kept apart (a short lock guards only the per-dispatcher
// lookup). Destroy the handler after its dispatchers stopped running.
class SpdyUpgradeHandler : public UpgradeHandler {
 public:
  SpdyUpgradeHandler(session::Runtime& runtime, const SpdyRemoteCommandConfig& config,
                     UpgradeHandler* port_forward = nullptr);
  ~SpdyUpgradeHandler() override;

  void onUpgrade(event::Dispatcher& dispatcher, UpgradedConnection&& connection) override;

  // Sessions alive on `dispatcher`. Call on that dispatcher's thread.
  size_t activeSessions(event::Dispatcher& dispatcher);
  // Ends every session of `dispatcher` (shutdown). Call on its thread.
  void closeAll(event::Dispatcher& dispatcher);
  // Ends every session of `dispatcher` with a status saying crisp is shutting
  // down (the end of a drain). Call on its thread.
  void endAllForShutdown(event::Dispatcher& dispatcher);

 private:
  session::Runtime& runtime_;
  const SpdyRemoteCommandConfig config_;
  UpgradeHandler* const port_forward_;
  SessionRegistry<SpdyRemoteCommand> sessions_;
};

}  // namespace crisp::stream
