#include "source/runtime/streamserver/resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <mutex>

#include "absl/strings/str_cat.h"

namespace crisp::streamserver {
namespace {

void initLibraryOnce() {
  static std::once_flag once;
  std::call_once(once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
}

}  // namespace

Resolver::Resolver(event::Dispatcher& dispatcher)
    : dispatcher_(dispatcher),
      result_(absl::UnavailableError("not resolved")),
      timer_(dispatcher, [this] { process(ARES_SOCKET_BAD, ARES_SOCKET_BAD); }),
      deliver_(dispatcher, [this] {
        Done done = std::move(done_);
        done_ = nullptr;
        if (done) {
          done(std::move(result_));
        }
      }) {}

Resolver::~Resolver() {
  done_ = nullptr;
  if (channel_ != nullptr) {
    // Runs the lookup's callback with ARES_EDESTRUCTION; done_ is gone by now.
    ares_destroy(channel_);
  }
  watchers_.clear();
}

void Resolver::resolve(const std::string& host, Done done) {
  initLibraryOnce();
  host_ = host;
  done_ = std::move(done);
  ares_options options{};
  options.sock_state_cb = &Resolver::onSocketState;
  options.sock_state_cb_data = this;
  const int rc = ares_init_options(&channel_, &options, ARES_OPT_SOCK_STATE_CB);
  if (rc != ARES_SUCCESS) {
    channel_ = nullptr;
    result_ = absl::UnavailableError(
        absl::StrCat("cannot resolve ", host_, ": c-ares: ", ares_strerror(rc)));
    deliver_.enable(std::chrono::milliseconds(0));
    return;
  }
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  // May call onAddrInfo() at once (a name from /etc/hosts); the result is
  // delivered from the loop either way.
  ares_getaddrinfo(channel_, host_.c_str(), nullptr, &hints, &Resolver::onAddrInfo, this);
  armTimer();
}

void Resolver::onAddrInfo(void* arg, int status, int /*timeouts*/, ares_addrinfo* result) {
  auto* self = static_cast<Resolver*>(arg);
  if (status == ARES_EDESTRUCTION) {
    return;
  }
  if (status != ARES_SUCCESS || result == nullptr) {
    self->result_ = absl::UnavailableError(
        absl::StrCat("cannot resolve ", self->host_, ": ", ares_strerror(status)));
  } else {
    std::vector<std::string> addresses;
    for (ares_addrinfo_node* node = result->nodes; node != nullptr; node = node->ai_next) {
      char text[INET6_ADDRSTRLEN] = {};
      if (node->ai_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(node->ai_addr);
        inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text));
      } else if (node->ai_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(node->ai_addr);
        inet_ntop(AF_INET6, &in6->sin6_addr, text, sizeof(text));
      } else {
        continue;
      }
      addresses.emplace_back(text);
    }
    if (addresses.empty()) {
      self->result_ = absl::UnavailableError(
          absl::StrCat("cannot resolve ", self->host_, ": no IPv4 or IPv6 address"));
    } else {
      self->result_ = std::move(addresses);
    }
  }
  if (result != nullptr) {
    ares_freeaddrinfo(result);
  }
  self->deliver_.enable(std::chrono::milliseconds(0));
}

void Resolver::onSocketState(void* arg, int fd, int readable, int writable) {
  auto* self = static_cast<Resolver*>(arg);
  short events = 0;
  if (readable != 0) {
    events |= event::FdWatcher::kRead;
  }
  if (writable != 0) {
    events |= event::FdWatcher::kWrite;
  }
  auto& watcher = self->watchers_[fd];
  if (events == 0) {
    // Kept (disabled) rather than destroyed: this may run inside its own
    // callback, and c-ares may open a socket with the same number later.
    if (watcher != nullptr) {
      watcher->setEnabled(0);
    }
    return;
  }
  if (watcher == nullptr) {
    watcher = std::make_unique<event::FdWatcher>(self->dispatcher_, fd, [self, fd](short ready) {
      self->process((ready & event::FdWatcher::kRead) != 0 ? fd : ARES_SOCKET_BAD,
                    (ready & event::FdWatcher::kWrite) != 0 ? fd : ARES_SOCKET_BAD);
    });
  }
  watcher->setEnabled(events);
}

void Resolver::process(int read_fd, int write_fd) {
  if (channel_ == nullptr) {
    return;
  }
  ares_process_fd(channel_, read_fd, write_fd);
  armTimer();
}

void Resolver::armTimer() {
  if (channel_ == nullptr) {
    return;
  }
  timeval tv{};
  if (ares_timeout(channel_, nullptr, &tv) == nullptr) {
    timer_.disable();
    return;
  }
  timer_.enable(std::chrono::milliseconds(tv.tv_sec * 1000 + tv.tv_usec / 1000));
}

}  // namespace crisp::streamserver
