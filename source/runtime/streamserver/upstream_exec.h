#pragma once

// UpstreamExec: one exec or attach session served by a runtime's stream
// server (see streamserver_runtime.h). Internal to the streamserver backend.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "source/runtime/streamserver/streamserver_runtime.h"
#include "source/runtime/streamserver/upgrade_client.h"
#include "source/session/remotecommand.h"
#include "source/stream/spdy_connection.h"

namespace crisp::streamserver {

class UpstreamExec : public session::ExecProcess, private stream::SpdyConnectionCallbacks {
 public:
  UpstreamExec(event::Dispatcher& dispatcher, const StreamServerOptions& options,
               const session::ExecSpec& spec, std::optional<session::TerminalSize> initial,
               session::ExecCallbacks& callbacks);
  // Before onExit(): the upstream connection is closed at once, which ends the
  // runtime's session (an exec's process is killed by the runtime, an attach
  // detaches).
  ~UpstreamExec() override;

  void start(const Url& url);

  // session::ExecProcess
  void writeStdin(Buffer& data) override;
  size_t stdinQueuedBytes() const override;
  void closeStdin() override;
  void resize(session::TerminalSize size) override;
  void pauseOutput(bool paused) override;

 private:
  void onUpgraded(absl::StatusOr<UpgradeResponse> response);
  uint32_t open(session::StreamType type);
  void flushStdin();
  void sendResize();
  // Finishes once the error stream and every output stream ended.
  void maybeFinish();
  // The status from what the error stream carried; `clean` when the runtime
  // ended the session in order (its streams ended, or it sent GOAWAY).
  session::ExitStatus statusFromErrorStream(bool clean, const std::string& detail) const;
  void finish(session::ExitStatus status);

  // stream::SpdyConnectionCallbacks
  bool onStreamOpen(uint32_t stream_id, const spdy::HeaderList& headers) override;
  void onStreamData(uint32_t stream_id, Buffer& data) override;
  void onStreamRemoteFin(uint32_t stream_id) override;
  void onStreamReset(uint32_t stream_id, spdy::RstStatus status) override;
  void onPeerGoAway() override { peer_went_away_ = true; }
  void onOutputAboveHighWatermark() override {}
  void onOutputBelowLowWatermark() override;
  void onConnectionClosing(stream::SpdyCloseReason reason, const std::string& detail) override;
  void onConnectionClosed() override;

  event::Dispatcher& dispatcher_;
  const StreamServerOptions& options_;
  const session::ExecSpec spec_;
  session::ExecCallbacks& callbacks_;
  std::optional<session::TerminalSize> size_;
  std::string server_;  // host:port, for messages

  std::unique_ptr<UpgradeClient> upgrade_;
  std::unique_ptr<stream::SpdyConnection> connection_;
  session::RemoteCommandVersion version_ = session::RemoteCommandVersion::kV4;

  uint32_t error_id_ = 0;
  uint32_t stdin_id_ = 0;
  uint32_t stdout_id_ = 0;
  uint32_t stderr_id_ = 0;
  uint32_t resize_id_ = 0;
  bool error_ended_ = false;
  bool stdout_ended_ = true;
  bool stderr_ended_ = true;
  bool peer_went_away_ = false;
  std::string error_data_;

  Buffer pending_stdin_;  // before the streams exist
  bool stdin_closed_ = false;
  bool stdin_fin_sent_ = false;
  bool stdin_above_ = false;
  bool output_paused_ = false;
  bool finished_ = false;
  // Cleared on destruction; the posted onExit() checks it.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace crisp::streamserver
