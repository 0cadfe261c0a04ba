#pragma once

// The port-forward server over SPDY/3.1 (`portforward.k8s.io`), and the
// upgrade handler that runs it.
//
// SpdyPortForward is one session on one SpdyConnection; it forwards any number
// of TCP connections, each a pair of client-opened streams:
// 1. Admission, before the SYN_REPLY: a stream needs a `port` header (decimal
//    1-65535) and a `streamType` of exactly "error" or "data"; anything else
//    is refused with RST_STREAM CANCEL (the reason is only logged), as is a
//    stream beyond max_pairs.
// 2. Pairing by the `requestID` header. Without one, an error stream's pair is
//    its own id and a data stream's is its id - 2 (the kubelet's rule for old
//    clients). A second stream of a kind the pair already has is refused and
//    the kubelet's "error processing stream for request <id>: error stream
//    already assigned" goes on the pair's error stream. A partner that does
//    not arrive within stream_creation_timeout: the kubelet's "(conn=<id>,
//    request=<id>) timed out waiting for streams" on the error stream (FIN),
//    the lone data stream reset, counted in
//    crisp_session_timeouts_total{kind="creation"}. A requestID may be used again as soon as its
//    pair is complete.
// 3. A complete pair: Runtime::connectPort(sandbox, data stream's port). Bytes
//    the client sent on the data stream meanwhile are queued for the port.
//    A connect that fails (refused, unreachable, unknown sandbox): "error
//    forwarding port <port> to pod <sandbox>, uid : <why>" on the error stream
//    with FIN, and the data stream reset.
// 4. Forwarding: data stream DATA -> the port; the port's bytes -> DATA.
//    Backpressure both ways: every pod connection stops reading while the
//    SPDY output is above its high watermark; the SPDY connection stops
//    reading while any pod connection's queue is above
//    PortConnection::kWriteHighWatermark. Half-closes: client FIN on data ->
//    FIN toward the port; port EOF -> FIN on the data stream and on the
//    (empty) error stream, while the client's bytes still flow to the port
//    (kubectl 1.27 only closes its local connection once the error stream
//    ended).
// 5. End of a pair, which never ends the connection (no GOAWAY, no close):
//    - both directions closed, or the client reset the data stream (client-go
//      does once it read our FIN): the error stream is FIN'd empty if it was
//      not yet.
//    - the application in the pod reset the connection after it was made:
//      what it sent before is delivered, the data stream and the error stream
//      are FIN'd, and nothing is written on the error stream (see
//      session::writesErrorText(): text there makes kubectl drop every
//      forward).
//    Finished pairs leave every table at once, so a session that carries
//    many short connections does not grow.
//
// SpdyPortForwardHandler takes upgraded `portforward.k8s.io` SPDY connections
// (SpdyUpgradeHandler hands them over) and owns their sessions until they end.
//
// Threading: a session lives on the dispatcher it was created on. The handler
// may serve several dispatchers; each session is only touched on its own.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "source/admin/metrics.h"
#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/session/portforward.h"
#include "source/session/remotecommand.h"
#include "source/session/runtime.h"
#include "source/stream/spdy_connection.h"
#include "source/stream/session_registry.h"
#include "source/stream/upgrade.h"

namespace crisp::stream {

struct SpdyPortForwardConfig {
  // How long the second stream of a pair may take after the first (kubelet
  // default).
  std::chrono::milliseconds stream_creation_timeout = std::chrono::seconds(30);
  // Pairs per connection (waiting, connecting or forwarding); streams of more
  // are refused.
  size_t max_pairs = 4096;
  // Bytes a data stream may carry before its error stream arrived; more
  // resets it (FLOW_CONTROL_ERROR) instead of buffering without end.
  size_t max_early_data_bytes = 1024 * 1024;
  // Transport, idle and backpressure settings of the connection.
  SpdyConnectionConfig connection;
};

class SpdyPortForward : private SpdyConnectionCallbacks {
 public:
  // Called once, on the session's dispatcher, when the session is over and its
  // transport closed. The owner then destroys the session, deferred (the call
  // comes from inside the session).
  using DoneCallback = std::function<void(SpdyPortForward&)>;

  // `upgraded` must carry a PortForwardSpec. `runtime` must outlive the
  // session.
  SpdyPortForward(event::Dispatcher& dispatcher, session::Runtime& runtime,
                  UpgradedConnection&& upgraded, const SpdyPortForwardConfig& config,
                  DoneCallback on_done);
  // Closes every pod connection and the transport at once if still open.
  ~SpdyPortForward() override;
  SpdyPortForward(const SpdyPortForward&) = delete;
  SpdyPortForward& operator=(const SpdyPortForward&) = delete;

  // Starts serving streams.
  void start();

  // Ends the session now (shutdown, drain): pod connections are closed,
  // streams reset, GOAWAY sent; `on_done` follows once the transport closed.
  void close();

  uint64_t connectionId() const { return connection_id_; }
  uint64_t sessionId() const { return session_id_; }
  const std::string& podSandboxId() const { return pod_sandbox_id_; }
  // Pairs in the table: waiting for a partner, connecting, or forwarding.
  size_t pairCount() const { return pairs_.size(); }
  // Pairs whose pod connection was made, and pairs finished, so far.
  uint64_t pairsConnected() const { return pairs_connected_; }
  uint64_t pairsFinished() const { return pairs_finished_; }
  const SpdyConnection& connection() const { return *connection_; }

 private:
  class Pair;
  friend class Pair;

  enum class State { kOpen, kClosing, kDone };

  // SpdyConnectionCallbacks
  bool onStreamOpen(uint32_t stream_id, const spdy::HeaderList& headers) override;
  void onStreamData(uint32_t stream_id, Buffer& data) override;
  void onStreamRemoteFin(uint32_t stream_id) override;
  void onStreamReset(uint32_t stream_id, spdy::RstStatus status) override;
  void onOutputAboveHighWatermark() override;
  void onOutputBelowLowWatermark() override;
  void onConnectionClosing(SpdyCloseReason reason, const std::string& detail) override;
  void onConnectionClosed() override;

  Pair* pairOf(uint32_t stream_id) const;
  void startPair(Pair& pair);
  void onPairCreationTimeout(Pair& pair);
  // Pair events from the runtime (session::PortCallbacks of a Pair).
  void onPairConnected(Pair& pair);
  void onPairData(Pair& pair, Buffer& data);
  // Zero-copy DATA for the pair (session::PortCallbacks::onDataPipe()).
  bool canTakePairPipe(const Pair& pair) const;
  size_t onPairDataPipe(Pair& pair, int pipe_fd, size_t limit);
  void onPairRemoteEof(Pair& pair);
  void onPairWriteDrained(Pair& pair);
  void onPairClosed(Pair& pair);
  void onPairError(Pair& pair, const session::PortError& error);
  // Writes `text` (with FIN) on the error stream, resets the data stream and
  // removes the pair.
  void failPair(Pair& pair, const std::string& text);
  // Removes the pair from every table and closes its pod connection; the
  // error stream is FIN'd empty when `fin_error` and still open.
  void endPair(Pair& pair, bool fin_error);
  void deliverToPod(Pair& pair, Buffer& data);
  void setInputBlocked(Pair& pair, bool blocked);
  void abandonAll();

  event::Dispatcher& dispatcher_;
  session::Runtime& runtime_;
  const SpdyPortForwardConfig config_;
  DoneCallback on_done_;
  const uint64_t connection_id_;
  const uint64_t session_id_;
  const std::string protocol_name_;
  const std::string pod_sandbox_id_;
  // Outlives the pairs' pod connections (destroyed first, in the destructor).
  std::unique_ptr<session::PortForwardSession> port_session_;
  std::unique_ptr<SpdyConnection> connection_;
  State state_ = State::kOpen;

  // Owned pairs, and the two lookups: waiting pairs by request id, every
  // pair by each of its stream ids.
  std::unordered_map<Pair*, std::unique_ptr<Pair>> pairs_;
  std::unordered_map<std::string, Pair*> waiting_;
  std::unordered_map<uint32_t, Pair*> by_stream_;

  bool output_paused_ = false;
  // Pairs whose pod queue is above its high watermark; the SPDY connection is
  // not read while there is any.
  size_t input_blocked_pairs_ = 0;
  uint64_t pairs_connected_ = 0;
  uint64_t pairs_finished_ = 0;

  session::SessionMetrics& session_metrics_;
  session::PortForwardMetrics& metrics_;
  stats::Gauge& active_gauge_;
  bool counted_active_ = false;
};

// Serves upgraded `portforward.k8s.io` SPDY connections. Sessions are owned
// here until they end.
//
// onUpgrade() runs on the connection's dispatcher; sessions of different
// dispatchers are kept apart (a short lock guards only the per-dispatcher
// lookup). Destroy the handler after its dispatchers stopped running.
class SpdyPortForwardHandler : public UpgradeHandler {
 public:
  SpdyPortForwardHandler(session::Runtime& runtime, const SpdyPortForwardConfig& config);
  ~SpdyPortForwardHandler() override;

  void onUpgrade(event::Dispatcher& dispatcher, UpgradedConnection&& connection) override;

  // Sessions alive on `dispatcher`. Call on that dispatcher's thread.
  size_t activeSessions(event::Dispatcher& dispatcher);
  // Ends every session of `dispatcher` (shutdown). Call on its thread.
  void closeAll(event::Dispatcher& dispatcher);

 private:
  session::Runtime& runtime_;
  const SpdyPortForwardConfig config_;
  SessionRegistry<SpdyPortForward> sessions_;
};

}  // namespace crisp::stream
