#include "source/runtime/streamserver/upgrade_client.h"

#include <arpa/inet.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

#include "source/common/logger.h"
#include "source/runtime/streamserver/resolver.h"
#include "source/runtime/streamserver/status_json.h"
#include "source/stream/http1_response.h"
#include "source/stream/raw_socket_transport.h"
#include "source/stream/tls_transport.h"

namespace crisp::streamserver {
namespace {

bool isAddress(const std::string& host) {
  in6_addr any{};
  return inet_pton(AF_INET, host.c_str(), &any) == 1 || inet_pton(AF_INET6, host.c_str(), &any) == 1;
}

// The status code a refused upgrade maps to, as kubelet's errors map back.
absl::StatusCode codeOfHttpStatus(int status) {
  switch (status) {
    case 400:
      return absl::StatusCode::kInvalidArgument;
    case 401:
      return absl::StatusCode::kUnauthenticated;
    case 403:
      return absl::StatusCode::kPermissionDenied;
    case 404:
      return absl::StatusCode::kNotFound;
    case 429:
      return absl::StatusCode::kResourceExhausted;
    case 503:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kUnknown;
  }
}

}  // namespace

StreamServerMetrics& StreamServerMetrics::get() {
  static StreamServerMetrics* metrics = [] {
    auto& registry = stats::registry();
    return new StreamServerMetrics{
        registry.family("crisp_runtime_stream_upgrades_total",
                        "Upgrades to the runtime's stream server, by outcome.",
                        stats::Kind::kCounter, {"result"}),
        registry
            .family("crisp_runtime_stream_connections_active",
                    "Upgraded connections to the runtime's stream server now open.",
                    stats::Kind::kGauge, {})
            .gauge()};
  }();
  return *metrics;
}

std::string Url::hostPort() const {
  return host.find(':') != std::string::npos ? absl::StrCat("[", host, "]:", port)
                                             : absl::StrCat(host, ":", port);
}

absl::StatusOr<Url> parseUrl(std::string_view text_view) {
  // Debian's abseil has its own string_view: work on std::string here.
  const std::string text(text_view);
  Url url;
  absl::string_view rest = text;
  if (absl::StartsWithIgnoreCase(rest, "http://")) {
    rest.remove_prefix(7);
  } else if (absl::StartsWithIgnoreCase(rest, "https://")) {
    url.tls = true;
    rest.remove_prefix(8);
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("stream URL \"", text, "\": not an http or https URL"));
  }
  const size_t target_start = rest.find_first_of("/?");
  absl::string_view authority = rest.substr(0, target_start);
  url.target = target_start == absl::string_view::npos ? "/" : std::string(rest.substr(target_start));
  if (url.target.front() == '?') {
    url.target.insert(url.target.begin(), '/');
  }
  if (authority.find('@') != absl::string_view::npos || authority.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("stream URL \"", text, "\": bad host"));
  }
  url.authority = std::string(authority);
  absl::string_view port_text;
  if (authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("stream URL \"", text, "\": bad host"));
    }
    url.host = std::string(authority.substr(1, close - 1));
    absl::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return absl::InvalidArgumentError(absl::StrCat("stream URL \"", text, "\": bad host"));
      }
      port_text = after.substr(1);
    }
  } else {
    const size_t colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != absl::string_view::npos) {
      port_text = authority.substr(colon + 1);
    }
  }
  uint32_t port = url.tls ? 443 : 80;
  if (!port_text.empty() && (!absl::SimpleAtoi(port_text, &port) || port == 0 || port > 65535)) {
    return absl::InvalidArgumentError(absl::StrCat("stream URL \"", text, "\": bad port"));
  }
  if (url.host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("stream URL \"", text, "\": bad host"));
  }
  url.port = static_cast<uint16_t>(port);
  return url;
}

const std::string* UpgradeResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, absl::string_view(name.data(), name.size()))) {
      return &value;
    }
  }
  return nullptr;
}

// Reads one response head, and for a refusal its body, with http-parser.
class UpgradeClient::ResponseParser {
 public:
  enum class State { kNeedMore, kUpgraded, kRefused, kMalformed, kTooLarge };

  ResponseParser(size_t max_head_bytes, size_t max_body_bytes)
      : max_head_bytes_(max_head_bytes), max_body_bytes_(max_body_bytes) {
    http_parser_init(&parser_, HTTP_RESPONSE);
    parser_.data = this;
    http_parser_settings_init(&settings_);
    settings_.on_header_field = &ResponseParser::onHeaderField;
    settings_.on_header_value = &ResponseParser::onHeaderValue;
    settings_.on_headers_complete = &ResponseParser::onHeadersComplete;
    settings_.on_body = &ResponseParser::onBody;
    settings_.on_message_complete = &ResponseParser::onMessageComplete;
  }

  // Feeds bytes; `consumed` is what belonged to the response. An empty
  // `data` means the server closed the connection.
  State feed(std::string_view data, size_t& consumed) {
    consumed = http_parser_execute(&parser_, &settings_, data.data(), data.size());
    head_bytes_ += head_complete_ ? 0 : consumed;
    if (head_complete_ && status_ == 101) {
      return State::kUpgraded;
    }
    if (message_complete_ || (data.empty() && head_complete_)) {
      return State::kRefused;
    }
    if (HTTP_PARSER_ERRNO(&parser_) != HPE_OK) {
      return State::kMalformed;
    }
    if (!head_complete_ && head_bytes_ > max_head_bytes_) {
      return State::kTooLarge;
    }
    return State::kNeedMore;
  }

  int status() const { return status_; }
  HttpHeaders& headers() { return headers_; }
  const std::string& body() const { return body_; }
  const char* error() const { return http_errno_description(HTTP_PARSER_ERRNO(&parser_)); }

 private:
  static ResponseParser& self(http_parser* p) { return *static_cast<ResponseParser*>(p->data); }
  static int onHeaderField(http_parser* p, const char* at, size_t len) {
    ResponseParser& s = self(p);
    if (!s.in_field_) {
      s.headers_.emplace_back();
      s.in_field_ = true;
    }
    s.headers_.back().first.append(at, len);
    return 0;
  }
  static int onHeaderValue(http_parser* p, const char* at, size_t len) {
    ResponseParser& s = self(p);
    s.in_field_ = false;
    if (!s.headers_.empty()) {
      s.headers_.back().second.append(at, len);
    }
    return 0;
  }
  static int onHeadersComplete(http_parser* p) {
    ResponseParser& s = self(p);
    s.head_complete_ = true;
    s.status_ = static_cast<int>(p->status_code);
    // A 101 has no body: http-parser completes the message right after the
    // head, and the pause there leaves the upgraded protocol's bytes unread.
    return 0;
  }
  static int onBody(http_parser* p, const char* at, size_t len) {
    ResponseParser& s = self(p);
    const size_t room = s.max_body_bytes_ - std::min(s.max_body_bytes_, s.body_.size());
    s.body_.append(at, std::min(room, len));
    return 0;
  }
  static int onMessageComplete(http_parser* p) {
    self(p).message_complete_ = true;
    http_parser_pause(p, 1);
    return 0;
  }

  const size_t max_head_bytes_;
  const size_t max_body_bytes_;
  http_parser parser_{};
  http_parser_settings settings_{};
  HttpHeaders headers_;
  std::string body_;
  size_t head_bytes_ = 0;
  bool in_field_ = false;
  bool head_complete_ = false;
  bool message_complete_ = false;
  int status_ = 0;
};

UpgradeClient::UpgradeClient(event::Dispatcher& dispatcher, UpgradeOptions options)
    : dispatcher_(dispatcher), options_(std::move(options)) {}

UpgradeClient::~UpgradeClient() {
  done_called_ = true;
  connect_watcher_.reset();
  if (connecting_fd_ >= 0) {
    ::close(connecting_fd_);
  }
  // Destroying the transport closes it without callbacks.
  transport_.reset();
}

void UpgradeClient::start(const Url& url, std::string method, HttpHeaders headers, Done done) {
  url_ = url;
  method_ = std::move(method);
  headers_ = std::move(headers);
  done_ = std::move(done);
  timer_ = std::make_unique<event::Timer>(dispatcher_, [this] {
    if (transport_ == nullptr) {
      fail("connect_timeout", absl::StatusCode::kDeadlineExceeded,
           absl::StrCat("no connection within ", options_.connect_timeout.count(), " ms"));
    } else {
      fail("upgrade_timeout", absl::StatusCode::kDeadlineExceeded,
           absl::StrCat("no answer to the upgrade within ", options_.upgrade_timeout.count(),
                        " ms"));
    }
  });
  if (url_.tls && options_.tls == nullptr) {
    failSoon("no_tls", absl::StatusCode::kFailedPrecondition,
             "https stream URL, but no CA is configured for the runtime's stream server");
    return;
  }
  timer_->enable(options_.connect_timeout);
  if (isAddress(url_.host)) {
    addresses_.push_back(url_.host);
    // From the loop, so that `done` never runs inside start().
    fail_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] { connectNext(); });
    fail_timer_->enable(std::chrono::milliseconds(0));
    return;
  }
  resolver_ = std::make_unique<Resolver>(dispatcher_);
  resolver_->resolve(url_.host, [this](absl::StatusOr<std::vector<std::string>> addresses) {
    onResolved(std::move(addresses));
  });
}

void UpgradeClient::onResolved(absl::StatusOr<std::vector<std::string>> addresses) {
  if (!addresses.ok()) {
    fail("resolve_failed", absl::StatusCode::kUnavailable,
         std::string(addresses.status().message()));
    return;
  }
  addresses_ = std::move(addresses).value();
  connectNext();
}

void UpgradeClient::connectNext() {
  while (next_address_ < addresses_.size()) {
    const std::string& address = addresses_[next_address_++];
    sockaddr_storage storage{};
    socklen_t length = 0;
    auto* in = reinterpret_cast<sockaddr_in*>(&storage);
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&storage);
    if (inet_pton(AF_INET, address.c_str(), &in->sin_addr) == 1) {
      in->sin_family = AF_INET;
      in->sin_port = htons(url_.port);
      length = sizeof(sockaddr_in);
    } else if (inet_pton(AF_INET6, address.c_str(), &in6->sin6_addr) == 1) {
      in6->sin6_family = AF_INET6;
      in6->sin6_port = htons(url_.port);
      length = sizeof(sockaddr_in6);
    } else {
      continue;
    }
    const std::string peer = storage.ss_family == AF_INET6
                                 ? absl::StrCat("[", address, "]:", url_.port)
                                 : absl::StrCat(address, ":", url_.port);
    const int fd = ::socket(storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      last_connect_error_ = absl::StrCat("socket: ", std::strerror(errno));
      continue;
    }
    if (::connect(fd, reinterpret_cast<sockaddr*>(&storage), length) == 0) {
      onConnected(fd, peer);
      return;
    }
    if (errno != EINPROGRESS) {
      last_connect_error_ = absl::StrCat("connect to ", peer, ": ", std::strerror(errno));
      ::close(fd);
      continue;
    }
    connecting_fd_ = fd;
    connecting_peer_ = peer;
    connect_watcher_ = std::make_unique<event::FdWatcher>(dispatcher_, fd,
                                                          [this](short) { onConnectReady(); });
    connect_watcher_->setEnabled(event::FdWatcher::kWrite);
    return;
  }
  fail("connect_failed", absl::StatusCode::kUnavailable,
       last_connect_error_.empty() ? std::string("no address to connect to") : last_connect_error_);
}

void UpgradeClient::onConnectReady() {
  int error = 0;
  socklen_t length = sizeof(error);
  if (::getsockopt(connecting_fd_, SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
    error = errno;
  }
  // The watcher is replaced or dropped below; keep it alive until this
  // callback returns.
  dispatcher_.deferredDelete(std::move(connect_watcher_));
  const int fd = connecting_fd_;
  connecting_fd_ = -1;
  if (error != 0) {
    last_connect_error_ = absl::StrCat("connect to ", connecting_peer_, ": ", std::strerror(error));
    ::close(fd);
    connectNext();
    return;
  }
  onConnected(fd, connecting_peer_);
}

void UpgradeClient::onConnected(int fd, const std::string& peer) {
  CRISP_LOG(kRuntime, debug, "runtime stream server {}: connected to {}", url_.hostPort(), peer);
  if (url_.tls) {
    stream::TlsTransportOptions tls_options;
    tls_options.handshake_timeout = options_.upgrade_timeout;
    tls_options.server_name = url_.host;
    transport_ = std::make_unique<stream::TlsTransport>(dispatcher_, fd, peer, options_.tls,
                                                        tls_options);
  } else {
    transport_ = std::make_unique<stream::RawSocketTransport>(dispatcher_, fd, peer);
  }
  timer_->enable(options_.upgrade_timeout);
  parser_ = std::make_unique<ResponseParser>(options_.max_response_head_bytes,
                                             options_.max_error_body_bytes);
  std::string head = absl::StrCat(method_, " ", url_.target, " HTTP/1.1\r\nHost: ", url_.authority,
                                  "\r\n");
  for (const auto& [name, value] : headers_) {
    absl::StrAppend(&head, name, ": ", value, "\r\n");
  }
  if (method_ == "POST") {
    absl::StrAppend(&head, "Content-Length: 0\r\n");
  }
  head += "\r\n";
  Buffer out;
  out.add(head);
  transport_->setCallbacks(*this);
  transport_->start();
  transport_->write(out);
}

void UpgradeClient::onTransportData(Buffer& data) {
  if (parser_ == nullptr || done_called_) {
    data.drain(data.length());
    return;
  }
  const std::string bytes = data.toString();
  size_t consumed = 0;
  const ResponseParser::State state = parser_->feed(bytes, consumed);
  switch (state) {
    case ResponseParser::State::kNeedMore:
      return;
    case ResponseParser::State::kMalformed:
      fail("malformed", absl::StatusCode::kUnavailable,
           absl::StrCat("answered the upgrade with no valid HTTP/1.1 response: ", parser_->error()));
      return;
    case ResponseParser::State::kTooLarge:
      fail("malformed", absl::StatusCode::kUnavailable,
           absl::StrCat("answered the upgrade with a response head over ",
                        options_.max_response_head_bytes, " bytes"));
      return;
    case ResponseParser::State::kRefused:
      failRefused();
      return;
    case ResponseParser::State::kUpgraded: {
      Buffer rest;
      rest.add(std::string_view(bytes).substr(consumed));
      transport_->pauseReading(true);
      transport_->unreadInput(rest);
      UpgradeResponse response;
      response.headers = std::move(parser_->headers());
      response.transport = std::move(transport_);
      StreamServerMetrics::get().upgrades.counter({"ok"}).inc();
      finish(std::move(response));
      return;
    }
  }
}

void UpgradeClient::onTransportEof() {
  if (parser_ != nullptr && !done_called_) {
    size_t consumed = 0;
    if (parser_->feed({}, consumed) == ResponseParser::State::kRefused) {
      // A body that ends with the connection.
      failRefused();
      return;
    }
  }
  fail("closed", absl::StatusCode::kUnavailable,
       "closed the connection before answering the upgrade");
}

void UpgradeClient::onTransportError(const std::string& detail) {
  fail("closed", absl::StatusCode::kUnavailable,
       absl::StrCat("connection failed during the upgrade: ", detail));
}

void UpgradeClient::failRefused() {
  const int status = parser_->status();
  const std::string text = statusMessage(parser_->body())
                               .value_or(std::string(absl::StripAsciiWhitespace(parser_->body())));
  fail("refused", codeOfHttpStatus(status),
       absl::StrCat("refused the upgrade: ", status, " ", stream::statusReason(status),
                    text.empty() ? "" : ": ", text));
}

void UpgradeClient::fail(const char* result, absl::StatusCode code, const std::string& what) {
  StreamServerMetrics::get().upgrades.counter({result}).inc();
  finish(absl::Status(code, absl::StrCat("runtime stream server ", url_.hostPort(), ": ", what)));
}

void UpgradeClient::failSoon(const char* result, absl::StatusCode code, const std::string& what) {
  pending_failure_ = absl::Status(code, what);
  pending_result_ = result;
  fail_timer_ = std::make_unique<event::Timer>(dispatcher_, [this] {
    fail(pending_result_, pending_failure_.code(), std::string(pending_failure_.message()));
  });
  fail_timer_->enable(std::chrono::milliseconds(0));
}

void UpgradeClient::finish(absl::StatusOr<UpgradeResponse> result) {
  if (done_called_) {
    return;
  }
  done_called_ = true;
  if (timer_ != nullptr) {
    timer_->disable();
  }
  connect_watcher_.reset();
  if (connecting_fd_ >= 0) {
    ::close(connecting_fd_);
    connecting_fd_ = -1;
  }
  if (!result.ok()) {
    CRISP_LOG(kRuntime, info, "{}", std::string(result.status().message()));
    if (transport_ != nullptr) {
      transport_->close();
      // Freed later: this may run inside the transport's own callback.
      dispatcher_.deferredDelete(std::move(transport_));
    }
  }
  if (resolver_ != nullptr) {
    dispatcher_.deferredDelete(std::move(resolver_));
  }
  Done done = std::move(done_);
  done_ = nullptr;
  done(std::move(result));
}

}  // namespace crisp::streamserver
