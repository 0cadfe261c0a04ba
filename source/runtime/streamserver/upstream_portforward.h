#pragma once

// UpstreamPortForward: one client port-forward session served by a runtime's
// stream server (see streamserver_runtime.h): one SPDY connection to it,
// opened with the first forwarded connection, and a stream pair per forwarded
// connection. Internal to the streamserver backend.

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "source/runtime/streamserver/streamserver_runtime.h"
#include "source/runtime/streamserver/upgrade_client.h"
#include "source/stream/spdy_connection.h"

namespace crisp::streamserver {

class UpstreamPortConnection;

class UpstreamPortForward : public session::PortForwardSession,
                            private stream::SpdyConnectionCallbacks {
 public:
  UpstreamPortForward(event::Dispatcher& dispatcher, const StreamServerOptions& options,
                      session::PortForwardSpec spec);
  // Closes the upstream connection at once; connections still alive are
  // detached (they report nothing more).
  ~UpstreamPortForward() override;

  absl::StatusOr<std::unique_ptr<session::PortConnection>> connectPort(
      uint16_t port, session::PortCallbacks& callbacks) override;

  // Forwarded connections alive (tests).
  size_t connectionCount() const { return connections_.size(); }

 private:
  friend class UpstreamPortConnection;
  enum class State { kIdle, kUpgrading, kOpen, kFailed };

  void onUpgraded(absl::StatusOr<UpgradeResponse> response);
  void openPair(UpstreamPortConnection& connection);
  // Every connection fails with `message`, and so do later ones.
  void failAll(const std::string& message);
  void forget(UpstreamPortConnection& connection);
  void updateReadPause();

  // stream::SpdyConnectionCallbacks
  bool onStreamOpen(uint32_t stream_id, const spdy::HeaderList& headers) override;
  void onStreamReply(uint32_t stream_id) override;
  void onStreamData(uint32_t stream_id, Buffer& data) override;
  void onStreamRemoteFin(uint32_t stream_id) override;
  void onStreamReset(uint32_t stream_id, spdy::RstStatus status) override;
  void onOutputAboveHighWatermark() override {}
  void onOutputBelowLowWatermark() override;
  void onConnectionClosing(stream::SpdyCloseReason reason, const std::string& detail) override;
  void onConnectionClosed() override;

  event::Dispatcher& dispatcher_;
  const StreamServerOptions& options_;
  const session::PortForwardSpec spec_;
  std::string server_;
  State state_ = State::kIdle;
  std::string failure_;
  std::unique_ptr<UpgradeClient> upgrade_;
  std::unique_ptr<stream::SpdyConnection> connection_;
  uint64_t next_request_id_ = 0;
  // Every live connection, and the streams of those with a pair open.
  std::map<UpstreamPortConnection*, bool> connections_;
  std::map<uint32_t, UpstreamPortConnection*> streams_;
  size_t paused_readers_ = 0;
};

}  // namespace crisp::streamserver
