#pragma once

// The remotecommand (exec/attach) server over WebSocket channel protocols,
// and the upgrade handler that runs it.
//
// WsRemoteCommand is one session on one WsConnection. One message carries
// one channel (websocket/channel.h): 0 stdin, 1 stdout, 2 stderr, 3 error,
// 4 resize; binary messages, or text with base64 payloads for the base64
// protocols.
// 1. Ready: right away the server sends an empty payload on stdout if the
//    ExecSpec asks for stdout, else on stderr, else on the error channel
//    (binary [0x01], base64 "1"), as the kubelet does.
// 2. Start: Runtime::startExec() at once (there is no stream creation step;
//    the stream flags come from the cached CRI request), from the event loop
//    right after the transport started, so a resize among the bytes read
//    past the request head, when the transport delivered them first, is the
//    `initial` size. Later sizes go to resize(). A failed start is reported
//    on the error channel like any error.
// 3. Pump: stdin messages -> ExecProcess::writeStdin (reading pauses while
//    the process's stdin queue is above kStdinHighWatermark, resumes on
//    onStdinDrained); resize messages -> ResizeDecoder -> resize(); process
//    output -> channel messages of at most max_output_message_bytes
//    (pauseOutput(true) while the connection's queue is above its high
//    watermark). Messages on channels the request did not ask for (stdin
//    without stdin), on stdout/stderr/error, on unknown channels, empty
//    messages and base64 that does not decode are ignored.
//    v5.channel.k8s.io only: [0xFF, 0] closes the process's stdin (output
//    goes on); [0xFF, c] for another channel is a no-op; a malformed CLOSE
//    ([0xFF] alone, longer, or c > 4) closes the connection with 1002. Under
//    the other protocols a 0xFF message is an unknown channel, ignored: stdin
//    ends only with the connection.
// 4. End: on onExit, after every byte of output, the status goes on the
//    error channel (session::errorStreamPayload(): plain text for v1 and the
//    base64 v1 protocol, nothing on success; a JSON Status for v4 and v5),
//    then the connection closes with 1000. An idle timeout (no message for
//    idle_timeout) or the end of a drain ends the same way, with a Failure
//    status that says why. The client going away (close frame, EOF,
//    transport error, protocol error) ends the exec at once by destroying
//    the ExecProcess.
//
// WsUpgradeHandler takes upgraded WebSocket connections from the HTTP/1.1
// front and owns their sessions until they end; port-forward requests go to
// an optional second handler.
//
// Threading: a session lives on the dispatcher it was created on. The handler
// may serve several dispatchers; each session is only touched on its own.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "source/codec/websocket/channel.h"
#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/session/remotecommand.h"
#include "source/session/runtime.h"
#include "source/stream/remotecommand_session.h"
#include "source/stream/transport.h"
#include "source/stream/session_registry.h"
#include "source/stream/upgrade.h"
#include "source/stream/ws_connection.h"

namespace crisp::stream {

struct WsRemoteCommandConfig {
  // Largest stdout/stderr payload per message we send, so that a ping reply
  // or the other output stream never waits behind one huge message. Messages
  // end at the segments of the output's reads below this size; at 128 KiB a
  // segment of one 64 KiB read always fits whole, so no payload byte is
  // copied, and a spliced payload takes a quarter of the system calls that
  // 32 KiB messages took.
  size_t max_output_message_bytes = 128 * 1024;
  // How long after the upgrade the command is started. client-go's WebSocket
  // executor (kubectl 1.30 to 1.33) starts reading the connection before it
  // has set up its streams and drops every message that arrives in between:
  // the first output of a command that writes at once is lost when that
  // client is slow to get there (a loaded machine). A runtime's own start
  // (tens of milliseconds for runc) usually hides the window; this wait does
  // the same for the embedded runtime, which starts a command in well under
  // a millisecond. Input sent meanwhile waits for the command.
  std::chrono::milliseconds start_delay{20};
  // Idle, keepalive, backpressure and close settings of the connection.
  WsConnectionConfig connection;
};

// The remotecommand version whose error-channel rules a channel protocol
// follows: v1 ("", channel.k8s.io, base64.channel.k8s.io), v4 (v4.*), v5.
session::RemoteCommandVersion channelRemoteCommandVersion(
    const websocket::ChannelProtocol& protocol);

// The subprotocol a negotiated WebSocket exec/attach protocol stands for
// (kWsChannel -> "channel.k8s.io", ...); nullopt for port-forward and SPDY
// protocols.
std::optional<std::string_view> remoteCommandSubprotocol(Protocol protocol);

// What a session is started with.
struct WsSessionSetup {
  uint64_t connection_id = 0;
  // The connection after the 101; not started.
  std::unique_ptr<Transport> transport;
  // The negotiated subprotocol: "", channel.k8s.io, base64.channel.k8s.io,
  // v4.channel.k8s.io, v4.base64.channel.k8s.io or v5.channel.k8s.io.
  std::string subprotocol;
  // The metric label and log text, e.g. "ws/v5.channel.k8s.io".
  std::string protocol_name;
  session::ExecSpec spec;
  // For the audit log; create() takes them from the transport.
  std::string client_address;
  std::string client_subject;
};

class WsRemoteCommand : private WsConnectionCallbacks, private RemoteCommandWire {
 public:
  // Called once, on the session's dispatcher, when the session is over and its
  // transport closed. The owner then destroys the session, deferred (the call
  // comes from inside the session).
  using DoneCallback = std::function<void(WsRemoteCommand&)>;

  // InvalidArgument when `setup.subprotocol` is not a channel protocol;
  // Internal when the connection cannot be made. `runtime` must outlive the
  // session. On failure the transport is closed (and freed later by the
  // dispatcher, so create() may run inside a transport callback).
  static absl::StatusOr<std::unique_ptr<WsRemoteCommand>> create(
      event::Dispatcher& dispatcher, session::Runtime& runtime, WsSessionSetup&& setup,
      const WsRemoteCommandConfig& config, DoneCallback on_done);
  // Ends a running exec (destroying the ExecProcess) and closes the transport
  // at once if it is still open.
  ~WsRemoteCommand() override;
  WsRemoteCommand(const WsRemoteCommand&) = delete;
  WsRemoteCommand& operator=(const WsRemoteCommand&) = delete;

  // Starts serving: the transport starts, the ready signal is queued and the
  // exec starts from the loop right after.
  void start();

  // Ends the session now (shutdown, drain): the exec is ended and the
  // connection closed with 1001; `on_done` follows once the transport is
  // closed.
  void close();
  // Ends the session at the end of a drain: the exec is ended, a Failure
  // status saying crisp is shutting down goes on the error channel, then the
  // connection closes as after an exit (1000).
  void endForShutdown();

  uint64_t connectionId() const { return connection_id_; }
  uint64_t sessionId() const { return session_id_; }
  const websocket::ChannelProtocol& channelProtocol() const { return protocol_; }
  session::RemoteCommandVersion version() const { return version_; }
  // True once the exec was started (and until it ends).
  bool processRunning() const { return core_->processRunning(); }
  const WsConnection& connection() const { return *connection_; }

 private:
  WsRemoteCommand(event::Dispatcher& dispatcher, session::Runtime& runtime, WsSessionSetup&& setup,
                  const websocket::ChannelProtocol& protocol, const WsRemoteCommandConfig& config,
                  DoneCallback on_done);

  // WsConnectionCallbacks
  void onMessage(websocket::MessageType type, Buffer& payload) override;
  void onOutputAboveHighWatermark() override;
  void onOutputBelowLowWatermark() override;
  void onConnectionClosing(WsCloseReason reason, const std::string& detail) override;
  void onConnectionClosed() override;
  bool onIdleTimeout() override;

  // RemoteCommandWire
  void pauseReading(bool paused) override;
  bool acceptsOutput(session::StreamType type) const override;
  void sendOutput(session::StreamType type, Buffer& data) override;
  size_t sendOutputFromPipe(session::StreamType type, int pipe_fd, size_t limit) override;
  void endWithStatus(const std::string& payload, bool ahead_of_output) override;
  void endWithoutStatus(const std::string& why, int close_code) override;

  void sendReadySignal();
  void sendChannel(uint8_t channel, Buffer& payload);

  event::Dispatcher& dispatcher_;
  const WsRemoteCommandConfig config_;
  DoneCallback on_done_;
  const uint64_t connection_id_;
  const uint64_t session_id_;
  // Owns the text that protocol_.name points to.
  const std::string subprotocol_;
  const websocket::ChannelProtocol protocol_;
  const session::RemoteCommandVersion version_;

  std::unique_ptr<WsConnection> connection_;
  // Declared after the connection, so the exec ends before the transport closes.
  std::unique_ptr<RemoteCommandSession> core_;
  bool started_ = false;
};

// Serves upgraded WebSocket connections: exec and attach requests on a
// channel protocol become WsRemoteCommand sessions; port-forward requests go
// to `port_forward` when given, else the connection is closed. Sessions are
// owned here until they end.
//
// onUpgrade() runs on the connection's dispatcher; sessions of different
// dispatchers are kept apart (a short lock guards only the per-dispatcher
// lookup). Destroy the handler after its dispatchers stopped running.
class WsUpgradeHandler : public UpgradeHandler {
 public:
  WsUpgradeHandler(session::Runtime& runtime, const WsRemoteCommandConfig& config,
                   UpgradeHandler* port_forward = nullptr);
  ~WsUpgradeHandler() override;

  void onUpgrade(event::Dispatcher& dispatcher, UpgradedConnection&& connection) override;
  // The exec/attach channel protocols, and the port-forward protocols that
  // `port_forward` serves (none without it).
  bool serves(Protocol protocol) const override;

  // Serves one connection whose transport and subprotocol are already known
  // (what onUpgrade() does after unpacking the upgrade). Returns false, with
  // the transport closed, when no session could be made.
  //
  // onUpgrade() closes a connection it cannot serve (a port-forward protocol
  // without `port_forward`, a non-WebSocket protocol) with close(), which
  // drops the 101 still queued in the transport, and frees the transport
  // deferred, never inside the HTTP layer's callback.
  bool serve(event::Dispatcher& dispatcher, WsSessionSetup&& setup);

  // Sessions alive on `dispatcher`. Call on that dispatcher's thread.
  size_t activeSessions(event::Dispatcher& dispatcher);
  // Ends every session of `dispatcher` (shutdown). Call on its thread.
  void closeAll(event::Dispatcher& dispatcher);
  // Ends every session of `dispatcher` with a status saying crisp is shutting
  // down (the end of a drain). Call on its thread.
  void endAllForShutdown(event::Dispatcher& dispatcher);

 private:
  session::Runtime& runtime_;
  const WsRemoteCommandConfig config_;
  UpgradeHandler* const port_forward_;
  SessionRegistry<WsRemoteCommand> sessions_;
};

}  // namespace crisp::stream
