#include "tools/devapiserver/http_server.h"

#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "source/common/logger.h"

namespace crisp::devapi {
namespace {

constexpr size_t kReadChunk = 16 * 1024;

enum class ReadResult { kRequest, kClosed, kBadRequest, kHeadTooLarge, kBodyTooLarge };

// Reads requests one at a time from a blocking socket. Bytes past the end of
// a request stay buffered for the next one (or, after an upgrade request, for
// the proxy).
class RequestReader {
 public:
  RequestReader(int fd, const ServerLimits& limits) : fd_(fd), limits_(limits) {
    http_parser_init(&parser_, HTTP_REQUEST);
    parser_.data = this;
    http_parser_settings_init(&settings_);
    settings_.on_message_begin = [](http_parser* p) { return self(p)->onMessageBegin(); };
    settings_.on_url = [](http_parser* p, const char* at, size_t len) {
      return self(p)->onUrl(at, len);
    };
    settings_.on_header_field = [](http_parser* p, const char* at, size_t len) {
      return self(p)->onHeaderField(at, len);
    };
    settings_.on_header_value = [](http_parser* p, const char* at, size_t len) {
      return self(p)->onHeaderValue(at, len);
    };
    settings_.on_headers_complete = [](http_parser* p) { return self(p)->onHeadersComplete(); };
    settings_.on_body = [](http_parser* p, const char*, size_t len) {
      return self(p)->onBody(len);
    };
    settings_.on_message_complete = [](http_parser* p) { return self(p)->onMessageComplete(); };
  }

  // The next complete request. kClosed when the peer closed (or went idle)
  // between requests.
  ReadResult next(HttpRequest* out, bool* keep_alive) {
    for (;;) {
      if (!buffered_.empty()) {
        const size_t used =
            http_parser_execute(&parser_, &settings_, buffered_.data(), buffered_.size());
        buffered_.erase(0, used);
        const http_errno err = HTTP_PARSER_ERRNO(&parser_);
        if (complete_) {
          if (err == HPE_PAUSED) {
            http_parser_pause(&parser_, 0);
          }
          complete_ = false;
          request_.upgrade = parser_.upgrade != 0;
          *keep_alive = http_should_keep_alive(&parser_) != 0 && !request_.upgrade;
          *out = std::move(request_);
          request_ = HttpRequest{};
          return ReadResult::kRequest;
        }
        if (err != HPE_OK) {
          if (err == HPE_HEADER_OVERFLOW || head_too_large_) {
            return ReadResult::kHeadTooLarge;
          }
          return body_too_large_ ? ReadResult::kBodyTooLarge : ReadResult::kBadRequest;
        }
      }
      const auto timeout =
          std::chrono::duration_cast<std::chrono::milliseconds>(limits_.idle_timeout);
      absl::StatusOr<std::string> chunk = recvSome(fd_, kReadChunk, timeout);
      if (!chunk.ok() || chunk->empty()) {
        return in_message_ ? ReadResult::kBadRequest : ReadResult::kClosed;
      }
      buffered_ += *chunk;
    }
  }

  // Bytes received after the last request returned by next().
  std::string takeBuffered() { return std::move(buffered_); }

 private:
  static RequestReader* self(http_parser* p) { return static_cast<RequestReader*>(p->data); }

  int onMessageBegin() {
    in_message_ = true;
    head_bytes_ = 0;
    body_bytes_ = 0;
    last_was_value_ = false;
    return 0;
  }

  bool countHead(size_t len) {
    head_bytes_ += len;
    head_too_large_ = head_bytes_ > limits_.max_head_bytes;
    return !head_too_large_;
  }

  int onUrl(const char* at, size_t len) {
    if (!countHead(len)) {
      return 1;
    }
    request_.target.append(at, len);
    return 0;
  }

  int onHeaderField(const char* at, size_t len) {
    if (!countHead(len)) {
      return 1;
    }
    if (last_was_value_ || request_.headers.empty()) {
      request_.headers.emplace_back();
    }
    last_was_value_ = false;
    request_.headers.back().first.append(at, len);
    return 0;
  }

  int onHeaderValue(const char* at, size_t len) {
    if (!countHead(len)) {
      return 1;
    }
    last_was_value_ = true;
    request_.headers.back().second.append(at, len);
    return 0;
  }

  int onHeadersComplete() {
    request_.method = http_method_str(static_cast<http_method>(parser_.method));
    const size_t q = request_.target.find('?');
    request_.path = request_.target.substr(0, q);
    request_.query = q == std::string::npos ? "" : request_.target.substr(q + 1);
    return 0;
  }

  int onBody(size_t len) {
    body_bytes_ += len;
    body_too_large_ = body_bytes_ > limits_.max_body_bytes;
    return body_too_large_ ? 1 : 0;
  }

  int onMessageComplete() {
    complete_ = true;
    in_message_ = false;
    // One request at a time: the caller answers it before the next is parsed.
    http_parser_pause(&parser_, 1);
    return 0;
  }

  const int fd_;
  const ServerLimits& limits_;
  http_parser parser_;
  http_parser_settings settings_;
  std::string buffered_;
  HttpRequest request_;
  bool complete_ = false;
  bool in_message_ = false;
  bool last_was_value_ = false;
  bool head_too_large_ = false;
  bool body_too_large_ = false;
  size_t head_bytes_ = 0;
  size_t body_bytes_ = 0;
};

void sendPlain(int fd, int status, absl::string_view text) {
  HttpResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "text/plain; charset=utf-8");
  r.body = std::string(text);
  (void)sendAll(fd, serializeResponse(r, false));
}

}  // namespace

void serveConnection(int fd, ApiHandler& handler, const ProxyOptions& proxy_options,
                     const ServerLimits& limits) {
  UniqueFd conn(fd);
  const uint64_t id = log::nextId();
  RequestReader reader(conn.get(), limits);
  for (;;) {
    HttpRequest request;
    bool keep_alive = false;
    switch (reader.next(&request, &keep_alive)) {
      case ReadResult::kRequest:
        break;
      case ReadResult::kClosed:
        return;
      case ReadResult::kBadRequest:
        sendPlain(conn.get(), 400, "400 Bad Request");
        return;
      case ReadResult::kHeadTooLarge:
        sendPlain(conn.get(), 431, "431 Request Header Fields Too Large");
        return;
      case ReadResult::kBodyTooLarge:
        sendPlain(conn.get(), 413, "413 Payload Too Large");
        return;
    }
    CRISP_CONN_LOG(kMain, debug, id, "{} {}{}", request.method, request.target,
                   request.upgrade ? " (upgrade)" : "");
    HandlerResult result = handler.handle(request);
    if (auto* target = std::get_if<ProxyTarget>(&result)) {
      CRISP_CONN_LOG(kMain, info, id, "{} {} -> proxied to the stream server", request.method,
                     request.path);
      proxyStream(conn.release(), request, reader.takeBuffered(), target->url, id, proxy_options);
      return;
    }
    const HttpResponse& response = std::get<HttpResponse>(result);
    if (response.status >= 400) {
      CRISP_CONN_LOG(kMain, info, id, "{} {} -> {}", request.method, request.target,
                     response.status);
    }
    std::string bytes = serializeResponse(response, keep_alive);
    if (request.method == "HEAD") {
      bytes.resize(bytes.size() - response.body.size());
    }
    if (!sendAll(conn.get(), bytes).ok() || !keep_alive) {
      return;
    }
  }
}

HttpServer::HttpServer(ProxyOptions proxy_options, ServerLimits limits)
    : proxy_options_(proxy_options), limits_(limits) {}

absl::StatusOr<std::string> HttpServer::listen(absl::string_view address) {
  std::string bound;
  absl::StatusOr<UniqueFd> fd = listenLoopback(address, &bound);
  if (!fd.ok()) {
    return fd.status();
  }
  listener_ = *std::move(fd);
  return bound;
}

absl::Status HttpServer::serve(ApiHandler& handler) {
  for (;;) {
    const int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE ||
          errno == ENOBUFS || errno == ENOMEM) {
        // Transient: the client went away, or we are out of descriptors for a moment.
        if (errno != EINTR && errno != ECONNABORTED) {
          CRISP_LOG(kMain, warn, "accept: {}", strerror(errno));
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        continue;
      }
      return absl::InternalError(absl::StrCat("accept: ", strerror(errno)));
    }
    if (connections_.load() >= limits_.max_connections) {
      CRISP_LOG(kMain, warn, "refusing a connection: {} connections are open", connections_.load());
      sendPlain(fd, 503, "503 too many connections");
      ::close(fd);
      continue;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    connections_.fetch_add(1);
    try {
      std::thread([fd, &handler, this] {
        serveConnection(fd, handler, proxy_options_, limits_);
        connections_.fetch_sub(1);
      }).detach();
    } catch (const std::system_error& e) {
      // Out of threads: this connection is dropped, the server goes on.
      CRISP_LOG(kMain, warn, "cannot start a connection thread: {}", e.what());
      connections_.fetch_sub(1);
      ::close(fd);
    }
  }
}

}  // namespace crisp::devapi
