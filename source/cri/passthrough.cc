#include "source/cri/passthrough.h"

#include "source/common/logger.h"

namespace crisp::cri {
namespace {

// Queued bytes on one side above which the other side is paused.
constexpr size_t kPauseAboveBytes = 1024 * 1024;

GrpcClientOptions withPeerName(GrpcClientOptions options, const std::string& socket) {
  if (options.peer_name.empty()) {
    options.peer_name = "upstream runtime " + socket;
  }
  return options;
}

// Fields a proxy must not copy from one hop to the next. grpc-timeout is not
// copied but re-encoded by the client from the deadline.
bool dropWhenForwarding(const std::string& name) {
  return isHopByHopHeader(name) || name == "grpc-timeout" || name == "grpc-encoding" ||
         name == "grpc-accept-encoding";
}

Metadata forwardable(const Metadata& in) {
  Metadata out;
  out.reserve(in.size());
  for (const auto& field : in) {
    if (!dropWhenForwarding(field.first)) {
      out.push_back(field);
    }
  }
  return out;
}

}  // namespace

// Joins one front call to one upstream call. Owned by the Passthrough, released
// once both sides are over.
class Passthrough::ForwardedCall : public ServerCall::Callbacks {
 public:
  ForwardedCall(Passthrough& parent, std::unique_ptr<ServerCall> front,
                const ResponseRewrite* rewrite)
      : parent_(parent), front_(std::move(front)), upstream_side_(*this), rewrite_(rewrite) {}

  void start() {
    upstream_ = parent_.client_.startCall(front_->path(), forwardable(front_->metadata()),
                                          front_->deadline(), upstream_side_);
    front_->setCallbacks(this);
  }

  // Ends both sides when the Passthrough goes away.
  void shutdown() {
    done_ = true;
    upstream_->cancel();
    front_->finish(absl::UnavailableError("crisp is shutting down"));
  }

  // ServerCall::Callbacks: from the client.
  void onMessage(std::string message) override {
    if (rewrite_ != nullptr && !have_request_) {
      have_request_ = true;
      request_ = message;
    }
    if (!upstream_->sendMessage(message)) {
      return;
    }
    if (upstream_->bufferedBytes() > kPauseAboveBytes) {
      front_->pauseReading(true);
      upstream_->notifyWhenDrained([this] { front_->pauseReading(false); });
    }
  }

  void onHalfClose() override { upstream_->halfClose(); }

  void onCancel(const absl::Status& reason) override {
    CRISP_CONN_LOG(kCri, debug, front_->connectionId(), "{} ended before the upstream answered: {}",
                   front_->path(), reason.ToString());
    upstream_->cancel();
    end();
  }

  // From the upstream runtime (through UpstreamSide).
  void onUpstreamHeaders(const Metadata& headers) { front_->sendHeaders(forwardable(headers)); }

  void onUpstreamMessage(std::string message) {
    if (rewrite_ != nullptr) {
      absl::StatusOr<std::string> rewritten = (*rewrite_)(request_, std::move(message));
      if (!rewritten.ok()) {
        CRISP_CONN_LOG(kCri, debug, front_->connectionId(), "{}: answer not forwarded: {}",
                       front_->path(), rewritten.status().ToString());
        upstream_->cancel();
        front_->finish(rewritten.status());
        end();
        return;
      }
      message = std::move(rewritten).value();
    }
    if (!front_->sendMessage(message)) {
      return;
    }
    if (front_->bufferedBytes() > kPauseAboveBytes) {
      upstream_->pauseReading(true);
      front_->notifyWhenDrained([this] { upstream_->pauseReading(false); });
    }
  }

  void onUpstreamClose(const absl::Status& status, const Metadata& trailers) {
    front_->finish(status, trailers);
    end();
  }

 private:
  class UpstreamSide : public ClientCall::Callbacks {
   public:
    explicit UpstreamSide(ForwardedCall& call) : call_(call) {}
    void onHeaders(const Metadata& headers) override { call_.onUpstreamHeaders(headers); }
    void onMessage(std::string message) override { call_.onUpstreamMessage(std::move(message)); }
    void onClose(const absl::Status& status, const Metadata& trailers) override {
      call_.onUpstreamClose(status, trailers);
    }

   private:
    ForwardedCall& call_;
  };

  void end() {
    if (!done_) {
      done_ = true;
      parent_.release(this);
    }
  }

  Passthrough& parent_;
  std::unique_ptr<ServerCall> front_;
  UpstreamSide upstream_side_;
  std::unique_ptr<ClientCall> upstream_;
  // Null unless the call's responses are rewritten.
  const ResponseRewrite* rewrite_;
  std::string request_;
  bool have_request_ = false;
  bool done_ = false;
};

Passthrough::Passthrough(event::Dispatcher& dispatcher, std::string upstream_socket,
                         GrpcClientOptions client_options)
    : dispatcher_(dispatcher),
      client_(dispatcher, upstream_socket,
              withPeerName(std::move(client_options), upstream_socket)) {}

Passthrough::~Passthrough() {
  std::map<ForwardedCall*, std::unique_ptr<ForwardedCall>> calls;
  calls.swap(calls_);
  for (auto& [raw, call] : calls) {
    call->shutdown();
  }
}

void Passthrough::onCall(std::unique_ptr<ServerCall> call) {
  auto rewrite = rewrites_.find(call->path());
  auto forwarded = std::make_unique<ForwardedCall>(
      *this, std::move(call), rewrite != rewrites_.end() ? &rewrite->second : nullptr);
  ForwardedCall* raw = forwarded.get();
  calls_[raw] = std::move(forwarded);
  raw->start();
}

void Passthrough::rewriteResponses(const std::string& path, ResponseRewrite rewrite) {
  rewrites_[path] = std::move(rewrite);
}

void Passthrough::release(ForwardedCall* call) {
  auto it = calls_.find(call);
  if (it == calls_.end()) {
    return;
  }
  // Called from the call's own callbacks: delete it once they have returned.
  std::unique_ptr<ForwardedCall> owned = std::move(it->second);
  calls_.erase(it);
  dispatcher_.deferredDelete(std::move(owned));
}

}  // namespace crisp::cri
