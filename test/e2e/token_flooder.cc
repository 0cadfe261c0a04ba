// token_flooder: opens connections to crisp's stream port at a fixed rate,
// each asking for an upgrade with a random token crisp never issued, and
// counts the answers. Python's sockets top out near a thousand requests a
// second on CI's machine; this reaches the rates a hostile client can.
//
//   token_flooder --port P [--rate R] [--seconds S] [--in-flight N]   (10000, 2, 4096)
//
// Starts R * S requests, R a second, at most N at once (more would only wait
// for SYN retransmits behind a full accept queue), later than their time when
// the machine is too busy; then waits for every one to end. Prints one line:
//   started=... not_found=... other=... failed=... seconds=... offered=...
//   answered=... in_flight_cap=...
// `not_found` counts 404 answers, `other` any other answer, `failed`
// connections that ended without an answer (crisp cuts a connection whose
// head it did not get within its header timeout); `offered` is the rate the
// requests were started at, `answered` the rate of 404s over the whole run.
// Exit status 0 when no answer but 404 came and every request ended, 1
// otherwise, 2 for bad arguments.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <unordered_map>

namespace {

struct Request {
  std::string head;
  size_t written = 0;
  std::string answer;
};

struct Totals {
  long started = 0;
  long not_found = 0;
  long other = 0;
  long failed = 0;
};

// A token of the issued shape (22 characters of base64url) that crisp never
// issued: 132 random bits cannot collide with a live one.
std::string randomToken(std::mt19937_64& rng) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string token(22, 'A');
  for (char& c : token) {
    c = kAlphabet[rng() % 64];
  }
  return token;
}

class Flooder {
 public:
  Flooder(int port, int max_in_flight) : port_(port), max_in_flight_(max_in_flight) {
    epoll_ = epoll_create1(EPOLL_CLOEXEC);
  }
  ~Flooder() { close(epoll_); }

  int inFlight() const { return static_cast<int>(requests_.size()); }
  bool canStart() const { return inFlight() < max_in_flight_; }
  const Totals& totals() const { return totals_; }

  void start() {
    totals_.started++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      totals_.failed++;
      return;
    }
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 &&
        errno != EINPROGRESS) {
      close(fd);
      totals_.failed++;
      return;
    }
    Request& request = requests_[fd];
    request.head = "POST /exec/" + randomToken(rng_) +
                   " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
                   "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
                   "Content-Length: 0\r\n\r\n";
    epoll_event event{};
    event.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
    event.data.fd = fd;
    epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event);
  }

  // Handles every event that is ready, waiting at most `timeout_ms` for the
  // first. A head sent late would be cut by crisp's header timeout and look
  // like crisp's failure.
  void poll(int timeout_ms) {
    epoll_event events[256];
    int n = epoll_wait(epoll_, events, 256, timeout_ms);
    while (n > 0) {
      for (int i = 0; i < n; i++) {
        handle(events[i].data.fd, events[i].events);
      }
      n = n == 256 ? epoll_wait(epoll_, events, 256, 0) : 0;
    }
  }

 private:
  void handle(int fd, uint32_t events) {
    auto it = requests_.find(fd);
    if (it == requests_.end()) {
      return;
    }
    Request& request = it->second;
    if ((events & EPOLLOUT) != 0 && request.written < request.head.size()) {
      ssize_t n = send(fd, request.head.data() + request.written,
                       request.head.size() - request.written, MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN) {
        finish(fd, false);
        return;
      }
      if (n > 0) {
        request.written += static_cast<size_t>(n);
      }
      if (request.written == request.head.size()) {
        epoll_event event{};
        event.events = EPOLLIN | EPOLLRDHUP;
        event.data.fd = fd;
        epoll_ctl(epoll_, EPOLL_CTL_MOD, fd, &event);
      }
    }
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) == 0) {
      return;
    }
    char buffer[4096];
    for (;;) {
      ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
      if (n > 0) {
        request.answer.append(buffer, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && errno == EAGAIN) {
        return;
      }
      // EOF, or a reset once crisp has answered and closed.
      finish(fd, !request.answer.empty());
      return;
    }
  }

  void finish(int fd, bool answered) {
    const Request& request = requests_[fd];
    if (!answered) {
      totals_.failed++;
    } else if (request.answer.rfind("HTTP/1.1 404 ", 0) == 0) {
      totals_.not_found++;
    } else {
      totals_.other++;
      if (totals_.other <= 3) {
        fprintf(stderr, "unexpected answer: %.80s\n", request.answer.c_str());
      }
    }
    epoll_ctl(epoll_, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    requests_.erase(fd);
  }

  const int port_;
  const int max_in_flight_;
  int epoll_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::unordered_map<int, Request> requests_;
  Totals totals_;
};

long flagValue(int argc, char** argv, const char* name, long fallback) {
  for (int i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], name) == 0) {
      char* end = nullptr;
      long value = strtol(argv[i + 1], &end, 10);
      if (*end != '\0' || value <= 0) {
        fprintf(stderr, "%s wants a positive number, not %s\n", name, argv[i + 1]);
        exit(2);
      }
      return value;
    }
  }
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const long port = flagValue(argc, argv, "--port", 0);
  const long rate = flagValue(argc, argv, "--rate", 10000);
  const long seconds = flagValue(argc, argv, "--seconds", 2);
  long in_flight = flagValue(argc, argv, "--in-flight", 4096);
  if (port == 0 || port > 65535) {
    fprintf(stderr, "usage: token_flooder --port P [--rate R] [--seconds S] [--in-flight N]\n");
    return 2;
  }
  // Each request in flight holds a descriptor.
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    if (limit.rlim_cur < limit.rlim_max) {
      limit.rlim_cur = limit.rlim_max;
      setrlimit(RLIMIT_NOFILE, &limit);
    }
    in_flight = std::min<long>(in_flight, static_cast<long>(limit.rlim_cur) - 64);
  }
  Flooder flooder(static_cast<int>(port), static_cast<int>(in_flight));
  using Clock = std::chrono::steady_clock;
  const auto begin = Clock::now();
  const long total = rate * seconds;
  while (flooder.totals().started < total) {
    // Starts what the rate owes by now; a backlog that the in-flight cap or a
    // busy machine held back is made up as soon as it can be.
    const double elapsed = std::chrono::duration<double>(Clock::now() - begin).count();
    const long due = std::min(total, static_cast<long>(elapsed * static_cast<double>(rate)));
    // In batches, so that answers are read between them.
    for (int batch = 0; batch < 256 && flooder.totals().started < due && flooder.canStart();
         batch++) {
      flooder.start();
    }
    flooder.poll(1);
  }
  const double flood_seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  // Every started request ends: answered, or given up after 60 s (a SYN that
  // found crisp's accept queue full is sent again after 1, 3, 7, 15, 31 s).
  const auto drain_deadline = Clock::now() + std::chrono::seconds(60);
  while (flooder.inFlight() > 0 && Clock::now() < drain_deadline) {
    flooder.poll(10);
  }
  const Totals& totals = flooder.totals();
  const long unfinished = flooder.inFlight();
  const long failed = totals.failed + unfinished;
  const double elapsed = std::chrono::duration<double>(Clock::now() - begin).count();
  printf("started=%ld not_found=%ld other=%ld failed=%ld seconds=%.2f offered=%.0f "
         "answered=%.0f in_flight_cap=%ld\n",
         totals.started, totals.not_found, totals.other, failed, elapsed,
         static_cast<double>(totals.started) / flood_seconds,
         static_cast<double>(totals.not_found) / elapsed, in_flight);
  return totals.other == 0 && unfinished == 0 ? 0 : 1;
}
