#include "tools/devapiserver/stream_proxy.h"

#include <atomic>
#include <mutex>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "source/common/logger.h"

#include "tools/devapiserver/api_handler.h"
#include "tools/devapiserver/socket_util.h"

namespace crisp::devapi {
namespace {

// Bytes moved per splice() call; the pipe is enlarged to match when allowed.
constexpr size_t kSpliceChunk = 1 << 20;
constexpr size_t kHeadReadChunk = 16 * 1024;

// Tracks the runtime's response head: its status, and where it ends when the
// runtime switched protocols.
struct ResponseState {
  int status = 0;
  bool headers_done = false;
  bool message_done = false;
};

int onResponseHeadersComplete(http_parser* parser) {
  auto* state = static_cast<ResponseState*>(parser->data);
  state->status = static_cast<int>(parser->status_code);
  state->headers_done = true;
  // 2: neither a body nor a further response; what follows is the new protocol.
  return parser->status_code == 101 ? 2 : 0;
}

int onResponseMessageComplete(http_parser* parser) {
  static_cast<ResponseState*>(parser->data)->message_done = true;
  return 0;
}

enum class PumpEnd { kEof, kError };

// Copies `src` to `dst` through a pipe with splice() until `src` ends or an
// error occurs; counts the bytes in `moved`.
PumpEnd pump(int src, int dst, std::atomic<uint64_t>& moved) {
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) < 0) {
    return PumpEnd::kError;
  }
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  // Best effort: a larger pipe means fewer system calls for bulk transfers.
  fcntl(write_end.get(), F_SETPIPE_SZ, static_cast<int>(kSpliceChunk));

  for (;;) {
    const ssize_t in = splice(src, nullptr, write_end.get(), nullptr, kSpliceChunk, SPLICE_F_MOVE);
    if (in < 0) {
      if (errno == EINTR) {
        continue;
      }
      return PumpEnd::kError;
    }
    if (in == 0) {
      return PumpEnd::kEof;
    }
    size_t left = static_cast<size_t>(in);
    while (left > 0) {
      const ssize_t out = splice(read_end.get(), nullptr, dst, nullptr, left, SPLICE_F_MOVE);
      if (out < 0) {
        if (errno == EINTR) {
          continue;
        }
        return PumpEnd::kError;
      }
      left -= static_cast<size_t>(out);
    }
    moved.fetch_add(static_cast<uint64_t>(in), std::memory_order_relaxed);
  }
}

void sendError(int fd, const HttpResponse& response) {
  // The client may be gone already; nothing more to do then.
  (void)sendAll(fd, serializeResponse(response, false));
}

}  // namespace

absl::StatusOr<ParsedUrl> parseUrl(absl::string_view url) {
  ParsedUrl out;
  const size_t scheme_end = url.find("://");
  if (scheme_end == absl::string_view::npos || scheme_end == 0) {
    return absl::InvalidArgumentError(absl::StrCat("not an absolute URL: \"", url, "\""));
  }
  out.scheme = absl::AsciiStrToLower(url.substr(0, scheme_end));
  absl::string_view rest = url.substr(scheme_end + 3);
  const size_t path_start = rest.find_first_of("/?#");
  absl::string_view authority = rest.substr(0, path_start);
  absl::string_view path = path_start == absl::string_view::npos ? "" : rest.substr(path_start);
  if (const size_t hash = path.find('#'); hash != absl::string_view::npos) {
    path = path.substr(0, hash);
  }
  if (const size_t at = authority.rfind('@'); at != absl::string_view::npos) {
    authority = authority.substr(at + 1);
  }
  if (authority.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("URL without a host: \"", url, "\""));
  }
  out.host_header = std::string(authority);
  absl::string_view port;
  if (authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("bad IPv6 host in \"", url, "\""));
    }
    out.host = std::string(authority.substr(1, close - 1));
    absl::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return absl::InvalidArgumentError(absl::StrCat("bad host in \"", url, "\""));
      }
      port = after.substr(1);
    }
  } else {
    const size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != absl::string_view::npos) {
      port = authority.substr(colon + 1);
    }
  }
  if (out.host.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("URL without a host: \"", url, "\""));
  }
  if (port.empty()) {
    out.port = out.scheme == "https" ? "443" : "80";
  } else {
    for (const char c : port) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
        return absl::InvalidArgumentError(absl::StrCat("bad port in \"", url, "\""));
      }
    }
    out.port = std::string(port);
  }
  out.path_query =
      path.empty() || path.front() == '?' ? absl::StrCat("/", path) : std::string(path);
  return out;
}

std::string upstreamRequestHead(const HttpRequest& request, const ParsedUrl& url) {
  std::string head = absl::StrCat(request.method, " ", url.path_query, " HTTP/1.1\r\n");
  absl::StrAppend(&head, "Host: ", url.host_header, "\r\n");
  for (const auto& [key, value] : request.headers) {
    if (absl::EqualsIgnoreCase(key, "Host")) {
      continue;
    }
    absl::StrAppend(&head, key, ": ", value, "\r\n");
  }
  head += "\r\n";
  return head;
}

void proxyStream(int client_fd, const HttpRequest& request, std::string leftover,
                 const std::string& url, uint64_t conn_id, const ProxyOptions& options) {
  // splice() into a socket has no MSG_NOSIGNAL: a vanished peer must show up as
  // EPIPE, not as a signal that ends the process.
  static std::once_flag ignore_sigpipe;
  std::call_once(ignore_sigpipe, [] { signal(SIGPIPE, SIG_IGN); });
  UniqueFd client(client_fd);
  absl::StatusOr<ParsedUrl> parsed = parseUrl(url);
  if (!parsed.ok()) {
    CRISP_CONN_LOG(kMain, warn, conn_id, "runtime returned an unusable URL: {}",
                   std::string(parsed.status().message()));
    sendError(client.get(), statusResponse(502, "InternalError",
                                           absl::StrCat("error proxying to the runtime: ",
                                                        parsed.status().message())));
    return;
  }
  if (parsed->scheme == "https" && options.tls == nullptr) {
    sendError(client.get(), statusResponse(502, "InternalError",
                                           "the runtime returned an https streaming URL and no "
                                           "TLS settings are configured for it"));
    return;
  }
  if (parsed->scheme != "http" && parsed->scheme != "https") {
    sendError(client.get(),
              statusResponse(502, "InternalError",
                             absl::StrCat("the runtime returned a ", parsed->scheme,
                                          " streaming URL; only http and https are supported "
                                          "here")));
    return;
  }

  absl::StatusOr<UniqueFd> upstream =
      connectTcp(parsed->host, parsed->port, options.upstream_timeout);
  if (!upstream.ok()) {
    CRISP_CONN_LOG(kMain, warn, conn_id, "cannot reach the stream server: {}",
                   std::string(upstream.status().message()));
    sendError(client.get(), statusResponse(502, "InternalError",
                                           absl::StrCat("error dialing the stream server: ",
                                                        upstream.status().message())));
    return;
  }
  const int up = upstream->get();

  // https: TLS on the connection; everything below goes through it.
  std::unique_ptr<TlsUpstream> tls;
  if (parsed->scheme == "https") {
    absl::StatusOr<std::unique_ptr<TlsUpstream>> session =
        options.tls->connect(up, parsed->host, options.upstream_timeout);
    if (!session.ok()) {
      CRISP_CONN_LOG(kMain, warn, conn_id, "no TLS with the stream server: {}",
                     std::string(session.status().message()));
      sendError(client.get(), statusResponse(502, "InternalError",
                                             absl::StrCat("error dialing the stream server: ",
                                                          session.status().message())));
      return;
    }
    tls = std::move(session).value();
  }
  const auto sendUp = [&](absl::string_view data) {
    return tls ? tls->sendAll(data, options.upstream_timeout) : sendAll(up, data);
  };

  // The request head, then whatever the client already sent after it.
  if (absl::Status s = sendUp(upstreamRequestHead(request, *parsed)); !s.ok()) {
    sendError(client.get(),
              statusResponse(502, "InternalError",
                             absl::StrCat("error writing to the stream server: ", s.message())));
    return;
  }
  if (!leftover.empty()) {
    if (absl::Status s = sendUp(leftover); !s.ok()) {
      return;
    }
  }

  // Read the runtime's response head; relay it whatever it says.
  http_parser parser;
  http_parser_init(&parser, HTTP_RESPONSE);
  ResponseState state;
  parser.data = &state;
  http_parser_settings settings;
  http_parser_settings_init(&settings);
  settings.on_headers_complete = onResponseHeadersComplete;
  settings.on_message_complete = onResponseMessageComplete;
  bool upstream_eof = false;
  bool forwarded = false;  // some of the response already reached the client
  while (!(state.headers_done && state.status == 101) && !state.message_done) {
    absl::StatusOr<std::string> chunk =
        tls ? tls->recvSome(kHeadReadChunk, options.upstream_timeout)
            : recvSome(up, kHeadReadChunk, options.upstream_timeout);
    if (!chunk.ok()) {
      CRISP_CONN_LOG(kMain, warn, conn_id, "stream server did not answer: {}",
                     std::string(chunk.status().message()));
      if (!forwarded) {
        sendError(
            client.get(),
            statusResponse(
                chunk.status().code() == absl::StatusCode::kDeadlineExceeded ? 504 : 502,
                "InternalError",
                absl::StrCat("error reading from the stream server: ", chunk.status().message())));
      }
      return;
    }
    if (chunk->empty()) {
      upstream_eof = true;
      http_parser_execute(&parser, &settings, nullptr, 0);
      if (!forwarded) {
        sendError(client.get(),
                  statusResponse(502, "InternalError",
                                 "the stream server closed the connection without a response"));
        return;
      }
      break;
    }
    http_parser_execute(&parser, &settings, chunk->data(), chunk->size());
    if (HTTP_PARSER_ERRNO(&parser) != HPE_OK && !(state.headers_done && state.status == 101)) {
      CRISP_CONN_LOG(kMain, warn, conn_id, "bad response from the stream server: {}",
                     http_errno_description(HTTP_PARSER_ERRNO(&parser)));
      if (!forwarded) {
        sendError(client.get(), statusResponse(502, "InternalError",
                                               "malformed response from the stream server"));
      }
      return;
    }
    // The head and any bytes of the new protocol after it go to the client as they are.
    if (!sendAll(client.get(), *chunk).ok()) {
      return;
    }
    forwarded = true;
  }
  if (state.status != 101) {
    // A refused upgrade (403, 404, 400, ...): relayed complete; the client retries, if at
    // all, with a new request that needs a new URL.
    CRISP_CONN_LOG(kMain, debug, conn_id, "stream server answered {} {}", state.status,
                   upstream_eof ? "and closed" : "");
    ::shutdown(client.get(), SHUT_WR);
    return;
  }
  CRISP_CONN_LOG(kMain, debug, conn_id, "upgraded; copying both ways");
  if (tls) {
    uint64_t to_runtime = 0;
    uint64_t to_client = 0;
    const absl::Status ended = tls->relay(client.get(), &to_runtime, &to_client);
    CRISP_CONN_LOG(kMain, debug, conn_id,
                   "TLS stream ended ({}): {} bytes to the runtime, {} to the client",
                   ended.ok() ? "both directions closed" : std::string(ended.message()),
                   to_runtime, to_client);
    return;
  }

  // Both directions run until their source ends; a half-close is passed on
  // with shutdown(SHUT_WR) so the other direction keeps going.
  std::atomic<uint64_t> to_client{0};
  std::atomic<uint64_t> to_upstream{0};
  const int cl = client.get();
  std::thread down([cl, up, &to_client] {
    if (pump(up, cl, to_client) == PumpEnd::kEof) {
      ::shutdown(cl, SHUT_WR);
    } else {
      ::shutdown(cl, SHUT_RDWR);
      ::shutdown(up, SHUT_RDWR);
    }
  });
  if (pump(cl, up, to_upstream) == PumpEnd::kEof) {
    ::shutdown(up, SHUT_WR);
  } else {
    ::shutdown(cl, SHUT_RDWR);
    ::shutdown(up, SHUT_RDWR);
  }
  down.join();
  CRISP_CONN_LOG(kMain, debug, conn_id, "stream ended: {} bytes to the runtime, {} to the client",
                 to_upstream.load(), to_client.load());
}

}  // namespace crisp::devapi
