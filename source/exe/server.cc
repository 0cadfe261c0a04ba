#include "source/exe/server.h"

#include <event2/event.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "source/admin/admin_server.h"
#include "source/audit/audit_log.h"
#include "source/cache/token_cache.h"
#include "source/common/dispatcher.h"
#include "source/common/logger.h"
#include "source/common/time.h"
#include "source/config/host_port.h"
#include "source/cri/grpc_server.h"
#include "source/cri/passthrough.h"
#include "source/cri/runtime_service.h"
#include "source/runtime/containerd/containerd_orphans.h"
#include "source/runtime/containerd/containerd_runtime.h"
#include "source/cri/stream_redirect.h"
#include "source/recording/asciicast.h"
#include "source/runtime/embedded/embedded_runtime.h"
#include "source/runtime/streamserver/streamserver_runtime.h"
#include "source/session/portforward.h"
#include "source/session/remotecommand.h"
#include "source/stream/close_linger.h"
#include "source/stream/http1_server.h"
#include "source/stream/listener.h"
#include "source/stream/spdy_portforward.h"
#include "source/stream/stream_metrics.h"
#include "source/stream/spdy_remotecommand.h"
#include "source/stream/stream_limits.h"
#include "source/stream/tls_context.h"
#include "source/stream/tls_transport.h"
#include "source/stream/ws_portforward.h"
#include "source/stream/ws_remotecommand.h"

namespace crisp::exe {
namespace {

// Answers every call crisp neither serves nor forwards, naming the method.
class UnimplementedHandler : public cri::CallHandler {
 public:
  void onCall(std::unique_ptr<cri::ServerCall> call) override {
    call->finish(absl::UnimplementedError(cri::unimplementedMessage(call->path())));
  }
};

// Creates the directory holding the CRI socket when it is missing (one level:
// the parent must exist).
absl::Status ensureSocketDirectory(const std::string& socket_path) {
  const auto slash = socket_path.rfind('/');
  if (slash == std::string::npos || slash == 0) {
    return absl::OkStatus();
  }
  const std::string dir = socket_path.substr(0, slash);
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::UnavailableError(
        absl::StrCat("cri.listen: cannot create directory ", dir, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

runtime::EmbeddedContainerConfig toEmbedded(const config::ContainerConfig& c) {
  runtime::EmbeddedContainerConfig out;
  out.id = c.id;
  out.name = c.name;
  out.image = c.image;
  out.command = c.command;
  out.working_dir = c.working_dir;
  out.env = c.env;
  out.user = c.user;
  out.tty = c.tty;
  out.stdin = c.stdin;
  out.network_namespace = c.network_namespace;
  return out;
}

audit::AuditOptions toAudit(const config::AuditConfig& c) {
  return audit::AuditOptions{c.path, c.max_bytes, c.max_files};
}

std::shared_ptr<const recording::RecordingOptions> toRecording(
    const std::optional<config::RecordingConfig>& c) {
  if (!c) {
    return nullptr;
  }
  return std::make_shared<const recording::RecordingOptions>(recording::RecordingOptions{
      c->dir, c->max_bytes, c->retention_count, c->retention_age, c->input});
}

// The keys a reload cannot change, each with its value as text; a reload that
// changes one keeps the running value and says so.
std::vector<std::pair<std::string, std::string>> restartOnlyKeys(const config::Config& c) {
  std::vector<std::pair<std::string, std::string>> keys = {
      {"cri.listen", c.cri.listen},
      {"cri.upstream", c.cri.upstream.value_or("(none)")},
      {"cri.backend",
       c.cri.backend == config::CriBackend::kContainerd ? "containerd" : "stream-server"},
      {"cri.socket_mode", absl::StrCat(c.cri.socket_mode)},
      {"stream.listen", c.stream.listen.toString()},
      {"stream.advertise", c.stream.advertise},
      {"stream.workers", absl::StrCat(c.stream.workers)},
      {"stream.tls", c.stream.tls ? absl::StrCat(c.stream.tls->cert_file, ",",
                                                 c.stream.tls->key_file, ",",
                                                 c.stream.tls->client_ca_file)
                                  : "(none)"},
      {"stream.stream_creation_timeout", absl::StrCat(c.stream.stream_creation_timeout.count())},
      {"stream.stream_idle_timeout", absl::StrCat(c.stream.stream_idle_timeout.count())},
      {"stream.max_header_bytes", absl::StrCat(c.stream.max_header_bytes)},
      {"stream.header_timeout", absl::StrCat(c.stream.header_timeout.count())},
      {"stream.max_frame_bytes", absl::StrCat(c.stream.max_frame_bytes)},
      {"cache.shards", absl::StrCat(c.cache.shards)},
      {"admin.listen", c.admin.listen ? c.admin.listen->toString() : "(none)"},
  };
  std::string containers;
  for (const auto& ct : c.runtime.embedded.containers) {
    absl::StrAppend(&containers, ct.id, "=", absl::StrJoin(ct.command, " "), ";");
  }
  keys.emplace_back("runtime.embedded.containers", containers);
  return keys;
}

// The server's own metrics, declared in one place (docs/metrics.md).
#define CRISP_SERVER_METRICS(COUNTER)                                                       \
  COUNTER(reload_results_, "crisp_config_reloads_total",                                    \
          "Configuration reloads (SIGHUP): applied, partial (a key that needs a restart "   \
          "kept its value), refused (the file did not load).",                              \
          (std::vector<std::string>{"result"}))

// The CRI methods crisp answers itself for its embedded runtime.
constexpr char kExecPath[] = "/runtime.v1.RuntimeService/Exec";
constexpr char kPortForwardPath[] = "/runtime.v1.RuntimeService/PortForward";

constexpr const char* kEmbeddedMethods[] = {
    "/runtime.v1.RuntimeService/Version",       "/runtime.v1.RuntimeService/Status",
    "/runtime.v1.RuntimeService/ListContainers", "/runtime.v1.RuntimeService/ContainerStatus",
    "/runtime.v1.RuntimeService/ExecSync",      "/runtime.v1.RuntimeService/Exec",
    "/runtime.v1.RuntimeService/Attach",        "/runtime.v1.RuntimeService/PortForward",
};

// How often the TLS files are checked for changes (see docs/configuration.md).
constexpr std::chrono::seconds kTlsFileCheckInterval{5};
// How long the start may spend ending the execs a killed crisp left running
// (cri.backend containerd): listing, SIGKILL, waiting and deleting each takes
// milliseconds against a healthy containerd.
constexpr std::chrono::seconds kOrphanSweepTimeout{10};
// While draining: how often the live sessions are counted, and how long
// sessions ended at the end of the grace period get to close: the allowance,
// then on while their connections still make progress (a slow reader taking
// its last bytes; none for kDrainCloseQuiet ends the wait), up to the limit.
// Once a proxy in between has taken every byte, a slow reader behind it is
// seen only by its pings, every 5 s from kubectl's WebSocket client; the
// quiet period is longer than that.
constexpr std::chrono::milliseconds kDrainPollInterval{100};
constexpr std::chrono::seconds kDrainCloseAllowance{5};
constexpr std::chrono::seconds kDrainCloseQuiet{6};
constexpr std::chrono::seconds kDrainCloseLimit{10};
// When the control loop has stopped: how long the stream workers keep running
// so that the sessions they end can write their status and close; and how
// often they look.
constexpr std::chrono::seconds kShutdownFlushTime{2};
constexpr std::chrono::milliseconds kShutdownPollInterval{10};

// One stream server worker: a loop of its own, accepting from the shared socket.
struct Worker {
  event::Dispatcher dispatcher;
  std::unique_ptr<stream::Http1Server> http;
  std::unique_ptr<stream::Listener> listener;
  std::thread thread;
  // Re-checks, while crisp stops, whether the worker's sessions are gone.
  event::TimerPtr drain_timer;
};

}  // namespace

class Server::Impl {
 public:
  explicit Impl(const config::Config& config)
      : config_(config),
        cache_(cache::TokenCacheOptions{config.cache.ttl, config.cache.shards,
                                        config.cache.max_in_flight},
               time_source_, random_source_),
        session_limiter_(config.stream.max_sessions) {}

  ~Impl() {
    // Workers whose loops ran were torn down on their own threads by run();
    // what is left here never ran a loop, so it may be destroyed from this one.
    for (auto& worker : workers_) {
      tearDown(*worker);
    }
    spdy_.reset();
    port_forward_.reset();
    ws_.reset();
    ws_port_forward_.reset();
    grpc_.reset();
    passthrough_.reset();
    service_.reset();
    admin_.reset();
    if (embedded_) {
      embedded_->stop();
    }
    audit::setCurrent(nullptr);
    recording::setCurrentOptions(nullptr);
  }

  // Ends a worker's sessions and connections and stops accepting. Runs on the
  // worker's thread (or before its loop ever ran).
  void tearDown(Worker& worker) {
    if (spdy_) {
      spdy_->closeAll(worker.dispatcher);
    }
    if (port_forward_) {
      port_forward_->closeAll(worker.dispatcher);
    }
    if (ws_) {
      ws_->closeAll(worker.dispatcher);
    }
    if (ws_port_forward_) {
      ws_port_forward_->closeAll(worker.dispatcher);
    }
    worker.listener.reset();
    worker.http.reset();
  }

  // Ends the worker's sessions (a running command's with a status its client
  // shows), then keeps the loop running until their connections have written
  // what they queued and closed, for at most kShutdownFlushTime. Runs on the
  // worker's thread.
  void drainAndExit(Worker& worker) {
    tearDown(worker);
    const auto deadline = std::chrono::steady_clock::now() + kShutdownFlushTime;
    worker.drain_timer = std::make_unique<event::Timer>(worker.dispatcher, [this, &worker,
                                                                            deadline] {
      if (sessionsOn(worker.dispatcher) == 0 || std::chrono::steady_clock::now() >= deadline) {
        worker.dispatcher.exit();
        return;
      }
      worker.drain_timer->enable(kShutdownPollInterval);
    });
    worker.drain_timer->enable(std::chrono::milliseconds(0));
  }

  size_t sessionsOn(event::Dispatcher& dispatcher) {
    size_t n = 0;
    n += spdy_ ? spdy_->activeSessions(dispatcher) : 0;
    n += port_forward_ ? port_forward_->activeSessions(dispatcher) : 0;
    n += ws_ ? ws_->activeSessions(dispatcher) : 0;
    n += ws_port_forward_ ? ws_port_forward_->activeSessions(dispatcher) : 0;
    // The kill and delete of exec sessions that just ended.
    n += containerd_ ? containerd_->activeCalls(dispatcher) : 0;
    return n;
  }

  absl::Status init() {
    // Every metric list is registered up front, so that /metrics names each
    // family (with its help) before its first event.
    session::SessionMetrics::get();
    stream::registerStreamMetrics(stats::registry());
    session::PortForwardMetrics::get();
    audit::AuditMetrics::get();
    recording::RecordingMetrics::get();
    if (config_.audit) {
      auto log = audit::AuditLog::open(toAudit(*config_.audit));
      if (!log.ok()) {
        return log.status();
      }
      audit::setCurrent(std::move(log).value());
    }
    recording::setCurrentOptions(toRecording(config_.recording));
    if (!config_.cri.upstream) {
      std::vector<runtime::EmbeddedContainerConfig> containers;
      for (const auto& c : config_.runtime.embedded.containers) {
        containers.push_back(toEmbedded(c));
      }
      embedded_ = std::make_unique<runtime::EmbeddedRuntime>(std::move(containers));
      if (auto s = embedded_->start(); !s.ok()) {
        return absl::Status(s.code(), absl::StrCat("embedded runtime: ", s.message()));
      }
      runtime_ = embedded_.get();
    } else {
      const config::StreamServerClientConfig& client = config_.runtime.stream_server;
      streamserver::StreamServerOptions options;
      options.upgrade.connect_timeout = client.connect_timeout;
      options.upgrade.upgrade_timeout = client.upgrade_timeout;
      if (!client.ca_file.empty()) {
        auto tls = stream::TlsContext::loadClient(client.ca_file);
        if (!tls.ok()) {
          return absl::Status(tls.status().code(), absl::StrCat("runtime.stream_server.ca_file: ",
                                                                tls.status().message()));
        }
        options.upgrade.tls = std::move(tls).value();
      }
      options.connection.idle_timeout = config_.stream.stream_idle_timeout;
      options.connection.codec_limits = stream::spdyLimits(config_.stream.max_frame_bytes);
      stream_server_ = std::make_unique<streamserver::StreamServerRuntime>(std::move(options));
      runtime_ = stream_server_.get();
      if (config_.cri.backend == config::CriBackend::kContainerd) {
        const std::string& fifo_dir = config_.runtime.containerd.fifo_dir;
        if (auto s = containerd::ContainerdRuntime::prepareFifoDir(fifo_dir); !s.ok()) {
          return s;
        }
        // No session of this crisp exists yet: every crisp exec still
        // running is one a killed crisp left. A containerd that does not
        // answer in time only costs the sweep, not the start.
        auto swept = containerd::killOrphanedExecs(*config_.cri.upstream, kOrphanSweepTimeout);
        if (!swept.ok()) {
          CRISP_LOG(kMain, warn, "containerd: execs left by an earlier crisp not ended: {}",
                    std::string(swept.status().message()));
        } else if (swept->found > 0) {
          CRISP_LOG(kMain, info, "containerd: ended {} of {} execs an earlier crisp left running",
                    swept->ended, swept->found);
        }
        containerd_ = std::make_unique<containerd::ContainerdRuntime>(
            *config_.cri.upstream, containerd::ContainerdExecOptions{fifo_dir}, *stream_server_);
        runtime_ = containerd_.get();
      }
    }

    if (config_.stream.tls) {
      auto tls = stream::TlsContextHolder::create(stream::TlsFiles{
          config_.stream.tls->cert_file, config_.stream.tls->key_file,
          config_.stream.tls->client_ca_file});
      if (!tls.ok()) {
        return absl::Status(tls.status().code(),
                            absl::StrCat("stream.tls: ", tls.status().message()));
      }
      tls_ = std::move(tls).value();
      // The handshake counts against the time allowed for the request head.
      tls_transport_options_.handshake_timeout = config_.stream.header_timeout;
    }

    // Stream server: one listening socket shared by every worker.
    auto socket = stream::ListenSocket::bind(config_.stream.listen.toString());
    if (!socket.ok()) {
      return absl::Status(socket.status().code(),
                          absl::StrCat("stream.listen: ", socket.status().message()));
    }
    stream_socket_ = std::move(socket).value();
    stream_address_ = stream_socket_->address();
    if (config_.stream.advertise.empty()) {
      // A wildcard listener names no address a client can use: the URLs
      // name loopback, which the kubelet on this node reaches.
      absl::StatusOr<config::HostPort> bound = config::parseHostPort(stream_address_);
      const std::string host =
          bound.ok() ? config::dialableAddress(*bound).toString() : stream_address_;
      if (host != stream_address_) {
        CRISP_LOG(kMain, warn,
                  "stream.listen {} names every address; URLs handed out use {} (set "
                  "stream.advertise for another)",
                  stream_address_, host);
      }
      base_url_ = absl::StrCat(tls_ ? "https://" : "http://", host, "/");
    } else {
      base_url_ = config_.stream.advertise;
    }
    if (base_url_.back() != '/') {
      base_url_ += '/';
    }

    if (runtime_ != nullptr) {
      stream::SpdyRemoteCommandConfig spdy_config;
      spdy_config.stream_creation_timeout = config_.stream.stream_creation_timeout;
      spdy_config.connection.idle_timeout = config_.stream.stream_idle_timeout;
      spdy_config.connection.codec_limits = stream::spdyLimits(config_.stream.max_frame_bytes);
      stream::SpdyPortForwardConfig port_forward_config;
      port_forward_config.stream_creation_timeout = config_.stream.stream_creation_timeout;
      port_forward_config.connection.idle_timeout = config_.stream.stream_idle_timeout;
      port_forward_config.connection.codec_limits =
          stream::spdyLimits(config_.stream.max_frame_bytes);
      port_forward_ =
          std::make_unique<stream::SpdyPortForwardHandler>(*runtime_, port_forward_config);
      spdy_ = std::make_unique<stream::SpdyUpgradeHandler>(*runtime_, spdy_config,
                                                           port_forward_.get());
      stream::WsPortForwardConfig ws_port_forward_config;
      ws_port_forward_config.connection.idle_timeout = config_.stream.stream_idle_timeout;
      ws_port_forward_config.connection.max_message_bytes = config_.stream.max_frame_bytes;
      ws_port_forward_config.tunnel_transport.connection.max_message_bytes =
          config_.stream.max_frame_bytes;
      ws_port_forward_config.tunnel = port_forward_config;
      ws_port_forward_config.tunnel_transport.connection.idle_timeout =
          config_.stream.stream_idle_timeout;
      ws_port_forward_ =
          std::make_unique<stream::WsPortForwardHandler>(*runtime_, ws_port_forward_config);
      stream::WsRemoteCommandConfig ws_config;
      ws_config.connection.idle_timeout = config_.stream.stream_idle_timeout;
      ws_config.connection.max_message_bytes = config_.stream.max_frame_bytes;
      ws_ = std::make_unique<stream::WsUpgradeHandler>(*runtime_, ws_config,
                                                       ws_port_forward_.get());
    }
    stream::Http1ServerOptions http_options;
    http_options.connection.max_header_bytes = config_.stream.max_header_bytes;
    http_options.connection.header_timeout = config_.stream.header_timeout;
    http_options.session_limiter = &session_limiter_;
    http_options.http2.max_concurrent_streams = config_.stream.max_concurrent_streams;
    http_options.http2.max_header_list_bytes = config_.stream.max_header_bytes;
    http_options.http2.idle_timeout = config_.stream.header_timeout;
    for (uint32_t i = 0; i < config_.stream.workers; ++i) {
      auto worker = std::make_unique<Worker>();
      worker->http = std::make_unique<stream::Http1Server>(worker->dispatcher, cache_, http_options);
      if (spdy_) {
        worker->http->setUpgradeHandler(stream::ProtocolFamily::kSpdy, spdy_.get());
      }
      if (ws_) {
        worker->http->setUpgradeHandler(stream::ProtocolFamily::kWebSocket, ws_.get());
      }
      stream::Http1Server* http = worker->http.get();
      event::Dispatcher* dispatcher = &worker->dispatcher;
      worker->listener = std::make_unique<stream::Listener>(
          worker->dispatcher, *stream_socket_, [this, http, dispatcher](int fd, std::string peer) {
            accept(*dispatcher, *http, fd, std::move(peer));
          });
      workers_.push_back(std::move(worker));
    }

    // CRI front.
    if (auto s = ensureSocketDirectory(config_.cri.listen); !s.ok()) {
      return s;
    }
    grpc_ = std::make_unique<cri::GrpcServer>(control_);
    if (embedded_) {
      service_ = std::make_unique<cri::RuntimeServiceImpl>(*embedded_, cache_, base_url_);
      for (const char* path : kEmbeddedMethods) {
        grpc_->registerCancellableUnary(
            path, [this, path](std::string request, cri::GrpcServer::UnaryDone done) {
              std::function<void()> cancel;
              service_->handle(path, request, control_, std::move(done), &cancel);
              return cancel;
            });
      }
      grpc_->setFallback(&unimplemented_);
    } else {
      // Exec, Attach and PortForward go to the runtime too; their answers are
      // redirected to crisp's stream server, whose backend then connects to
      // the runtime's URL.
      passthrough_ = std::make_unique<cri::Passthrough>(control_, *config_.cri.upstream);
      redirect_ = std::make_unique<cri::StreamRedirect>(cache_, base_url_);
      redirect_->install(*passthrough_);
      if (containerd_) {
        // crisp runs exec and port-forward sessions itself: it answers Exec
        // and PortForward too.
        grpc_->registerUnary(kExecPath,
                             [this](std::string request, cri::GrpcServer::UnaryDone done) {
                               done(redirect_->answerExec(request));
                             });
        grpc_->registerUnary(kPortForwardPath,
                             [this](std::string request, cri::GrpcServer::UnaryDone done) {
                               done(redirect_->answerPortForward(request));
                             });
      }
      grpc_->setFallback(passthrough_.get());
    }
    if (auto s = grpc_->listenUnix(config_.cri.listen, config_.cri.socket_mode,
                                    config_.cri.socket_gid); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("cri.listen: ", s.message()));
    }

    if (config_.admin.listen) {
      admin::AdminServerOptions admin_options;
      admin_options.listen = config_.admin.listen->toString();
      auto admin = admin::AdminServer::create(control_, admin_options);
      if (!admin.ok()) {
        return absl::Status(admin.status().code(),
                            absl::StrCat("admin.listen: ", admin.status().message()));
      }
      admin_ = std::move(admin).value();
      admin_address_ = admin_->address();
    }
    return absl::OkStatus();
  }

  // A new stream connection on a worker: over TLS when configured, with the
  // TLS context current at this moment.
  void accept(event::Dispatcher& dispatcher, stream::Http1Server& http, int fd, std::string peer) {
    if (tls_) {
      http.onAcceptTransport(std::make_unique<stream::TlsTransport>(
          dispatcher, fd, std::move(peer), tls_->current(), tls_transport_options_));
      return;
    }
    http.onAccept(fd, std::move(peer));
  }

  void run() {
    for (auto& worker : workers_) {
      event::Dispatcher* d = &worker->dispatcher;
      worker->thread = std::thread([d] { d->run(); });
    }
    ::event* sigterm = evsignal_new(control_.base(), SIGTERM, &Impl::onTermSignal, this);
    ::event* sigint = evsignal_new(control_.base(), SIGINT, &Impl::onSignal, this);
    evsignal_add(sigterm, nullptr);
    evsignal_add(sigint, nullptr);
    ::event* sighup = evsignal_new(control_.base(), SIGHUP, &Impl::onReloadSignal, this);
    evsignal_add(sighup, nullptr);
    std::unique_ptr<stream::TlsFileWatcher> tls_watcher;
    if (tls_) {
      tls_watcher =
          std::make_unique<stream::TlsFileWatcher>(control_, *tls_, kTlsFileCheckInterval);
    }
    CRISP_LOG(kMain, info, "crisp ready: cri {} ({}), stream {} (base URL {}), admin {}",
              config_.cri.listen, embedded_ ? "embedded runtime" : *config_.cri.upstream,
              stream_address_, base_url_, admin_address_.empty() ? "off" : admin_address_);
    control_.run();
    tls_watcher.reset();
    drain_poll_.reset();
    drain_grace_.reset();
    event_free(sighup);
    event_free(sigterm);
    event_free(sigint);
    CRISP_LOG(kMain, info, "crisp stopping");
    if (admin_) {
      admin_->setReady(false);
    }
    for (auto& worker : workers_) {
      Worker* w = worker.get();
      w->dispatcher.post([this, w] { drainAndExit(*w); });
      w->thread.join();
      if (containerd_) {
        containerd_->releaseDispatcher(w->dispatcher);
      }
    }
    if (containerd_) {
      // While the workers' dispatchers still exist to take what it posts.
      containerd_->stop();
    }
  }

  void stop() { control_.exit(); }

  static void onSignal(evutil_socket_t signal, short, void* arg) {
    CRISP_LOG(kMain, info, "received signal {}", static_cast<int>(signal));
    static_cast<Impl*>(arg)->stop();
  }

  // SIGTERM: drain, then stop. A second SIGTERM stops at once.
  static void onTermSignal(evutil_socket_t, short, void* arg) {
    auto* impl = static_cast<Impl*>(arg);
    if (impl->draining_) {
      CRISP_LOG(kMain, info, "received SIGTERM while draining: stopping now");
      impl->stop();
      return;
    }
    impl->beginDrain();
  }

  // Not ready, no new stream URLs, no new stream connections; running
  // sessions go on for the grace period, then are ended with a status.
  void beginDrain() {
    draining_ = true;
    CRISP_LOG(kMain, info,
              "received SIGTERM: draining; {} sessions running, new ones refused, grace period "
              "{} ms",
              session_limiter_.active(), live_.stream.drain_grace_period.count());
    if (admin_) {
      admin_->setReady(false);
    }
    if (service_) {
      service_->stopIssuingStreams();
    }
    if (redirect_) {
      redirect_->stopIssuingStreams();
    }
    auto remaining = std::make_shared<std::atomic<size_t>>(workers_.size());
    for (auto& worker : workers_) {
      Worker* w = worker.get();
      w->dispatcher.post([this, w, remaining] {
        w->listener.reset();
        if (remaining->fetch_sub(1) == 1) {
          // Every worker stopped accepting: close the socket, so that new
          // connections are refused rather than left in the backlog.
          control_.post([this] { stream_socket_.reset(); });
        }
      });
    }
    drain_poll_ = std::make_unique<event::Timer>(control_, [this] { checkDrained(); });
    drain_poll_->enable(kDrainPollInterval);
    drain_grace_ = std::make_unique<event::Timer>(control_, [this] { endSessionsForShutdown(); });
    drain_grace_->enable(live_.stream.drain_grace_period);
  }

  void checkDrained() {
    const uint32_t active = session_limiter_.active();
    if (active == 0) {
      CRISP_LOG(kMain, info, "drained: no session left");
      stop();
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (drain_deadline_.has_value() && now > *drain_deadline_) {
      const bool progressing = now - stream::lastCloseProgress() < kDrainCloseQuiet;
      if (!progressing || now > *drain_deadline_ - kDrainCloseAllowance + kDrainCloseLimit) {
        CRISP_LOG(kMain, info, "{} sessions still closing after the grace period; stopping",
                  active);
        stop();
        return;
      }
    }
    drain_poll_->enable(kDrainPollInterval);
  }

  // The grace period is over: sessions still running are told crisp is
  // shutting down; port-forwards are closed.
  void endSessionsForShutdown() {
    CRISP_LOG(kMain, info, "drain grace period over: ending {} sessions",
              session_limiter_.active());
    drain_deadline_ = std::chrono::steady_clock::now() + kDrainCloseAllowance;
    for (auto& worker : workers_) {
      Worker* w = worker.get();
      w->dispatcher.post([this, w] {
        if (spdy_) {
          spdy_->endAllForShutdown(w->dispatcher);
        }
        if (ws_) {
          ws_->endAllForShutdown(w->dispatcher);
        }
        if (port_forward_) {
          port_forward_->closeAll(w->dispatcher);
        }
        if (ws_port_forward_) {
          ws_port_forward_->closeAll(w->dispatcher);
        }
      });
    }
  }

  // SIGHUP: reads the configuration file again and applies what can change
  // while sessions run; then loads the TLS files again (the current ones stay
  // on failure).
  static void onReloadSignal(evutil_socket_t, short, void* arg) {
    auto* impl = static_cast<Impl*>(arg);
    CRISP_LOG(kMain, info, "received SIGHUP: reloading {}", impl->live_.source);
    impl->reload();
    if (impl->tls_) {
      // Success and failure are both logged by the holder.
      impl->tls_->reload().IgnoreError();
    }
  }

  void reload() {
    absl::StatusOr<config::Config> loaded = config::loadFile(live_.source);
    if (!loaded.ok()) {
      CRISP_LOG(kMain, warn, "reload refused, the running configuration stays: {}",
                std::string(loaded.status().message()));
      reload_results_.counter({"refused"}).inc();
      return;
    }
    config::Config next = std::move(loaded).value();
    const auto before = restartOnlyKeys(live_);
    const auto after = restartOnlyKeys(next);
    bool kept_any = false;
    for (size_t i = 0; i < before.size(); ++i) {
      if (before[i].second != after[i].second) {
        kept_any = true;
        CRISP_LOG(kMain, warn,
                  "reload: {} cannot change while crisp runs (restart to apply it); still "
                  "\"{}\", not \"{}\"",
                  before[i].first, before[i].second, after[i].second);
      }
    }
    std::vector<std::string> changed;
    if (next.log.level != live_.log.level) {
      log::setLevel(next.log.level);
      changed.push_back(absl::StrCat("log.level=", next.log.level));
    }
    if (next.cache.ttl != live_.cache.ttl) {
      cache_.setTtl(next.cache.ttl);
      changed.push_back(absl::StrCat("cache.ttl=", next.cache.ttl.count(), "ms"));
    }
    if (next.cache.max_in_flight != live_.cache.max_in_flight) {
      cache_.setMaxInFlight(next.cache.max_in_flight);
      changed.push_back(absl::StrCat("cache.max_in_flight=", next.cache.max_in_flight));
    }
    if (next.stream.max_sessions != live_.stream.max_sessions) {
      session_limiter_.setMax(next.stream.max_sessions);
      changed.push_back(absl::StrCat("stream.max_sessions=", next.stream.max_sessions));
    }
    if (next.stream.drain_grace_period != live_.stream.drain_grace_period) {
      changed.push_back(
          absl::StrCat("stream.drain_grace_period=", next.stream.drain_grace_period.count(), "ms"));
    }
    const bool audit_changed =
        next.audit.has_value() != live_.audit.has_value() ||
        (next.audit && (next.audit->path != live_.audit->path ||
                        next.audit->max_bytes != live_.audit->max_bytes ||
                        next.audit->max_files != live_.audit->max_files));
    if (audit_changed) {
      if (!next.audit) {
        audit::setCurrent(nullptr);
        changed.push_back("audit=off");
      } else if (auto log = audit::AuditLog::open(toAudit(*next.audit)); log.ok()) {
        audit::setCurrent(std::move(log).value());
        changed.push_back(absl::StrCat(
            "audit.path=", next.audit->path.empty() ? "(standard output)" : next.audit->path));
      } else {
        kept_any = true;
        CRISP_LOG(kMain, warn, "reload: the new audit log cannot be opened, the current one "
                  "stays: {}", std::string(log.status().message()));
        next.audit = live_.audit;
      }
    }
    const bool recording_changed =
        next.recording.has_value() != live_.recording.has_value() ||
        (next.recording &&
         (next.recording->dir != live_.recording->dir ||
          next.recording->max_bytes != live_.recording->max_bytes ||
          next.recording->retention_count != live_.recording->retention_count ||
          next.recording->retention_age != live_.recording->retention_age ||
          next.recording->input != live_.recording->input));
    if (recording_changed) {
      recording::setCurrentOptions(toRecording(next.recording));
      changed.push_back(next.recording ? absl::StrCat("recording.dir=", next.recording->dir)
                                       : std::string("recording=off"));
    }
    // The keys that cannot change keep their running values.
    next.cri = live_.cri;
    next.stream.listen = live_.stream.listen;
    next.stream.advertise = live_.stream.advertise;
    next.stream.workers = live_.stream.workers;
    next.stream.tls = live_.stream.tls;
    next.stream.stream_creation_timeout = live_.stream.stream_creation_timeout;
    next.stream.stream_idle_timeout = live_.stream.stream_idle_timeout;
    next.stream.max_header_bytes = live_.stream.max_header_bytes;
    next.stream.header_timeout = live_.stream.header_timeout;
    next.stream.max_frame_bytes = live_.stream.max_frame_bytes;
    next.cache.shards = live_.cache.shards;
    next.admin = live_.admin;
    next.runtime = live_.runtime;
    live_ = std::move(next);
    reload_results_.counter({kept_any ? "partial" : "applied"}).inc();
    CRISP_LOG(kMain, info, "reload applied{}{}", changed.empty() ? ": nothing changed" : ": ",
              absl::StrJoin(changed, ", "));
  }

  const config::Config config_;
  // The configuration in effect, as reloads changed it. Control loop only.
  config::Config live_ = config_;
#define CRISP_SERVER_METRIC_FAMILY(field, name, help, labels) \
  stats::Family& field = stats::registry().family(name, help, stats::Kind::kCounter, labels);
  CRISP_SERVER_METRICS(CRISP_SERVER_METRIC_FAMILY)
#undef CRISP_SERVER_METRIC_FAMILY
  RealTimeSource time_source_;
  SystemRandomSource random_source_;
  cache::TokenCache cache_;
  // Shared by every worker's Http1Server; declared before the workers and
  // handlers so that it outlives every transport holding one of its permits.
  stream::SessionLimiter session_limiter_;
  event::Dispatcher control_;
  std::unique_ptr<runtime::EmbeddedRuntime> embedded_;
  // With cri.upstream: sessions are served by the runtime's stream server.
  std::unique_ptr<streamserver::StreamServerRuntime> stream_server_;
  // With cri.backend containerd: exec and port-forward through containerd's
  // API, attach by stream_server_.
  std::unique_ptr<containerd::ContainerdRuntime> containerd_;
  // The backend of every stream session: one of the above.
  session::Runtime* runtime_ = nullptr;
  std::unique_ptr<stream::ListenSocket> stream_socket_;
  std::string stream_address_;
  std::string base_url_;
  // Null without stream.tls. Used by the workers' accept callbacks.
  std::unique_ptr<stream::TlsContextHolder> tls_;
  stream::TlsTransportOptions tls_transport_options_;
  std::string admin_address_;
  // Borrowed by spdy_, so declared (and destroyed) around it.
  std::unique_ptr<stream::SpdyPortForwardHandler> port_forward_;
  std::unique_ptr<stream::SpdyUpgradeHandler> spdy_;
  // Borrowed by ws_, so declared (and destroyed) around it.
  std::unique_ptr<stream::WsPortForwardHandler> ws_port_forward_;
  std::unique_ptr<stream::WsUpgradeHandler> ws_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<cri::GrpcServer> grpc_;
  std::unique_ptr<cri::RuntimeServiceImpl> service_;
  // Outlives passthrough_, which calls it.
  std::unique_ptr<cri::StreamRedirect> redirect_;
  std::unique_ptr<cri::Passthrough> passthrough_;
  UnimplementedHandler unimplemented_;
  std::unique_ptr<admin::AdminServer> admin_;
  // Drain state; control loop only.
  bool draining_ = false;
  event::TimerPtr drain_poll_;
  event::TimerPtr drain_grace_;
  std::optional<std::chrono::steady_clock::time_point> drain_deadline_;
};

absl::StatusOr<std::unique_ptr<Server>> Server::create(const config::Config& config) {
  auto impl = std::make_unique<Impl>(config);
  if (auto s = impl->init(); !s.ok()) {
    return s;
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;
void Server::run() { impl_->run(); }
void Server::stop() { impl_->stop(); }
const std::string& Server::streamAddress() const { return impl_->stream_address_; }
const std::string& Server::streamBaseUrl() const { return impl_->base_url_; }
const std::string& Server::adminAddress() const { return impl_->admin_address_; }

}  // namespace crisp::exe
