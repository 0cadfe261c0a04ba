// loadclient: crisp's own load client. Gets stream URLs through crisp's CRI
// socket (Exec, PortForward), speaks the streaming protocols with crisp's own
// codecs, and prints one line of `key=value` figures per run, for tools/bench.
//
//   loadclient raw-tcp --bytes N --chunk C
//       reference: N bytes over one loopback TCP connection, written in pieces
//       of C, read in pieces of 64 KiB (what the client reads per call).
//   loadclient raw-relay --bytes N --chunk C [--splice]
//       a forwarded connection without crisp: a source thread writes N bytes
//       in pieces of C, this thread relays them to a sink thread (64 KiB reads
//       and sends, or with --splice, splice(2) through a pipe), all over
//       loopback TCP. Prints the relay thread's CPU time too.
//   loadclient exec-stdout --socket S --container ID [--proto spdy|ws] --bytes N --chunk C
//       `dd` in the container writes N zero bytes in writes of C; the client
//       reads them from stdout.
//   loadclient exec-stdin --socket S --container ID [--proto spdy|ws] --bytes N [--chunk C]
//       the client sends N bytes to `dd of=/dev/null` on stdin, then EOF.
//   loadclient portforward --socket S --container ID [--proto spdy|ws] --bytes N [--up]
//       runs a TCP source (or with --up, a sink) on 127.0.0.1, forwards one
//       connection to it and moves N bytes through it.
//   loadclient setup-latency --socket S --container ID [--proto spdy|ws] --count K
//       CRI Exec of `echo x` to the first stdout byte, K times in a row; the
//       reference is the same command started directly with its stdout on a
//       freshly connected loopback socket.
//   loadclient sessions --socket S --container ID --count N [--bytes-each M]
//       N SPDY exec sessions at once, each reading M bytes from `dd`.
//   loadclient idle --socket S --container ID --count N
//       opens N SPDY exec sessions (`cat`, stdin and stdout), prints
//       "ready ..." once all are open, waits for a line on its stdin, then
//       closes them all and prints the result.
//   loadclient passthrough --via S1 --direct S2 --count K
//       Version calls alternating between two CRI sockets (crisp in front of a
//       runtime, and the runtime itself), on one connection each.
//
// Exit status 0 when every session ended as expected, 1 otherwise, 2 for bad
// arguments.

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "api/runtime/v1/api.pb.h"

#include "source/common/dispatcher.h"
#include "source/cri/grpc_client.h"
#include "tools/bench/loadclient/session.h"

extern char** environ;

namespace crisp::bench {
namespace {

constexpr char kRuntimeService[] = "/runtime.v1.RuntimeService/";
constexpr size_t kReadChunk = 64 * 1024;

double secondsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// ---- arguments ---------------------------------------------------------------

struct Args {
  std::string verb;
  std::map<std::string, std::string> flags;

  bool has(const std::string& name) const { return flags.count(name) != 0; }
  std::string str(const std::string& name, const std::string& fallback = "") const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second;
  }
  uint64_t num(const std::string& name, uint64_t fallback) const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : std::strtoull(it->second.c_str(), nullptr, 10);
  }
};

bool parseArgs(int argc, char** argv, Args& out) {
  if (argc < 2) {
    return false;
  }
  out.verb = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0) {
      return false;
    }
    a = a.substr(2);
    if (a == "up" || a == "splice") {
      out.flags[a] = "1";
      continue;
    }
    if (i + 1 >= argc) {
      return false;
    }
    out.flags[a] = argv[++i];
  }
  return true;
}

// ---- CRI calls ---------------------------------------------------------------

class Cri {
 public:
  using Done = std::function<void(absl::StatusOr<std::string>)>;

  Cri(event::Dispatcher& dispatcher, const std::string& socket)
      : dispatcher_(dispatcher), client_(dispatcher, socket) {}

  void call(const std::string& method, const google::protobuf::Message& request, Done done) {
    auto pending = std::make_unique<Pending>();
    Pending* raw = pending.get();
    raw->owner = this;
    raw->done = std::move(done);
    raw->call = client_.startCall(kRuntimeService + method, {},
                                  Clock::now() + std::chrono::seconds(60), *raw);
    raw->call->sendMessage(request.SerializeAsString());
    raw->call->halfClose();
    pending_[raw] = std::move(pending);
  }

  size_t inFlight() const { return pending_.size(); }

 private:
  struct Pending : cri::ClientCall::Callbacks {
    Cri* owner = nullptr;
    Done done;
    std::unique_ptr<cri::ClientCall> call;
    std::string response;
    bool got = false;
    void onMessage(std::string message) override {
      response = std::move(message);
      got = true;
    }
    void onClose(const absl::Status& status, const cri::Metadata&) override {
      Done d = std::move(done);
      if (status.ok() && got) {
        d(std::move(response));
      } else {
        d(status.ok() ? absl::InternalError("no response message") : status);
      }
      auto it = owner->pending_.find(this);
      if (it != owner->pending_.end()) {
        owner->dispatcher_.deferredDelete(std::move(it->second));
        owner->pending_.erase(it);
      }
    }
  };

  event::Dispatcher& dispatcher_;
  cri::GrpcClient client_;
  std::map<Pending*, std::unique_ptr<Pending>> pending_;
};

runtime::v1::ExecRequest execRequest(const std::string& container, std::vector<std::string> cmd,
                                     bool stdin) {
  runtime::v1::ExecRequest request;
  request.set_container_id(container);
  for (auto& c : cmd) {
    request.add_cmd(c);
  }
  request.set_stdin(stdin);
  request.set_stdout(true);
  request.set_stderr(false);
  request.set_tty(false);
  return request;
}

// Gets a URL with `request` on `method`, then starts a session on it.
void startSessionVia(Cri& cri, const std::string& method, const google::protobuf::Message& request,
                     Session& session, std::function<void(const std::string&)> on_error) {
  const bool port_forward = method == "PortForward";
  cri.call(method, request,
           [&session, on_error, port_forward](absl::StatusOr<std::string> bytes) {
             if (!bytes.ok()) {
               on_error("CRI: " + std::string(bytes.status().message()));
               return;
             }
             std::string url;
             if (port_forward) {
               runtime::v1::PortForwardResponse response;
               response.ParseFromString(*bytes);
               url = response.url();
             } else {
               runtime::v1::ExecResponse response;
               response.ParseFromString(*bytes);
               url = response.url();
             }
             Url parsed;
             if (!parseUrl(url, parsed)) {
               on_error("bad stream URL: " + url);
               return;
             }
             session.start(parsed);
           });
}

// ---- loopback servers --------------------------------------------------------

int listenLoopback(uint16_t& port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd, 64) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("loadclient: listen");
    std::exit(1);
  }
  port = ntohs(addr.sin_port);
  return fd;
}

bool writeAll(int fd, const char* data, size_t len) {
  while (len > 0) {
    const ssize_t n = ::send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    data += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

// Writes `bytes` zeros in pieces of `chunk`, then closes.
void sourceLoop(int fd, uint64_t bytes, size_t chunk) {
  std::vector<char> buf(chunk, '\0');
  while (bytes > 0) {
    const size_t n = std::min<uint64_t>(chunk, bytes);
    if (!writeAll(fd, buf.data(), n)) {
      break;
    }
    bytes -= n;
  }
  close(fd);
}

// Reads to EOF in pieces of `chunk`; returns the count.
uint64_t sinkLoop(int fd, size_t chunk) {
  std::vector<char> buf(chunk);
  uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    total += static_cast<uint64_t>(n);
  }
  return total;
}

// One accepted connection served on a thread of its own by `serve`.
class OneShotServer {
 public:
  explicit OneShotServer(std::function<void(int)> serve) {
    listen_fd_ = listenLoopback(port_);
    thread_ = std::thread([this, serve] {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        serve(fd);
      }
    });
  }
  ~OneShotServer() {
    shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    close(listen_fd_);
  }
  uint16_t port() const { return port_; }

 private:
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

// ---- a run of sessions on one loop -------------------------------------------

class Runner : public SessionObserver {
 public:
  Runner(const std::string& socket, std::chrono::seconds timeout)
      : cri_(dispatcher_, socket), timeout_timer_(dispatcher_, [this] {
          timed_out_ = true;
          dispatcher_.exit();
        }) {
    timeout_timer_.enable(timeout);
  }

  event::Dispatcher& dispatcher() { return dispatcher_; }
  Cri& cri() { return cri_; }
  bool timedOut() const { return timed_out_; }

  Session& add(const SessionOptions& options) {
    sessions_.push_back(makeSession(dispatcher_, *this, options));
    sessions_.back()->tag = sessions_.size() - 1;
    return *sessions_.back();
  }
  std::vector<std::unique_ptr<Session>>& sessions() { return sessions_; }

  // Runs until every session is done (or exit() is called).
  void run() {
    if (done_count_ < sessions_.size()) {
      dispatcher_.run();
    }
  }

  std::function<void(Session&)> on_ready;
  std::function<void(Session&)> on_first_byte;
  std::function<void(Session&)> on_done;
  size_t ready_count = 0;
  // Sessions added one after the other (setup-latency) end the loop themselves.
  bool exit_when_all_done = true;

  // Sessions that are open or already over.
  size_t settled() const { return ready_count + done_before_ready_; }
  std::function<void()> on_progress;

  void onSessionReady(Session& s) override {
    ++ready_count;
    ready_.insert(&s);
    if (on_progress) {
      on_progress();
    }
    if (on_ready) {
      on_ready(s);
    }
  }
  void onFirstByte(Session& s) override {
    if (on_first_byte) {
      on_first_byte(s);
    }
  }
  void onSessionDone(Session& s) override {
    ++done_count_;
    if (ready_.count(&s) == 0) {
      ++done_before_ready_;
    }
    if (on_progress) {
      on_progress();
    }
    if (on_done) {
      on_done(s);
    }
    if (exit_when_all_done && done_count_ == sessions_.size()) {
      dispatcher_.exit();
    }
  }
  // A session that failed before it started (CRI error, bad URL).
  void failEarly(Session& s, const std::string& why) {
    failures_.push_back(why);
    s.abort();
    onSessionDone(s);
  }
  const std::vector<std::string>& earlyFailures() const { return failures_; }

 private:
  event::Dispatcher dispatcher_;
  Cri cri_;
  event::Timer timeout_timer_;
  bool timed_out_ = false;
  size_t done_count_ = 0;
  size_t done_before_ready_ = 0;
  std::set<Session*> ready_;
  std::vector<std::unique_ptr<Session>> sessions_;
  std::vector<std::string> failures_;
};

void printSession(const char* name, Session& s, double seconds) {
  std::printf("%s ok=%d bytes_received=%llu bytes_sent=%llu seconds=%.6f detail=\"%s\"\n", name,
              s.ok() ? 1 : 0, static_cast<unsigned long long>(s.bytesReceived()),
              static_cast<unsigned long long>(s.bytesSent()), seconds,
              s.ok() ? "" : s.detail().substr(0, 200).c_str());
}

// ---- measures ----------------------------------------------------------------

int rawTcp(const Args& args) {
  const uint64_t bytes = args.num("bytes", 1ULL << 30);
  const size_t chunk = args.num("chunk", 1 << 20);
  const Clock::time_point start = Clock::now();
  uint64_t got = 0;
  {
    OneShotServer server([bytes, chunk](int fd) { sourceLoop(fd, bytes, chunk); });
    const int fd = connectTcp("127.0.0.1", server.port());
    if (fd < 0) {
      std::perror("loadclient: connect");
      return 1;
    }
    got = sinkLoop(fd, kReadChunk);
    close(fd);
  }
  const double seconds = secondsBetween(start, Clock::now());
  std::printf("raw-tcp ok=%d bytes_received=%llu seconds=%.6f\n", got == bytes ? 1 : 0,
              static_cast<unsigned long long>(got), seconds);
  return got == bytes ? 0 : 1;
}

// Relays `in` to `out` until EOF: 64 KiB reads and sends, or splice(2) through
// a pipe. Returns the bytes relayed, or -1 on an error.
int64_t relayLoop(int in, int out, bool use_splice) {
  int64_t total = 0;
  if (use_splice) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
      return -1;
    }
    fcntl(pipe_fds[1], F_SETPIPE_SZ, 1 << 20);
    for (;;) {
      ssize_t n = splice(in, nullptr, pipe_fds[1], nullptr, 1 << 20, SPLICE_F_MOVE);
      if (n <= 0) {
        total = n == 0 ? total : -1;
        break;
      }
      total += n;
      while (n > 0) {
        const ssize_t m = splice(pipe_fds[0], nullptr, out, nullptr, static_cast<size_t>(n),
                                 SPLICE_F_MOVE);
        if (m <= 0) {
          n = -1;
          break;
        }
        n -= m;
      }
      if (n < 0) {
        total = -1;
        break;
      }
    }
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    return total;
  }
  std::vector<char> buf(kReadChunk);
  for (;;) {
    const ssize_t n = ::read(in, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return n == 0 ? total : -1;
    }
    if (!writeAll(out, buf.data(), static_cast<size_t>(n))) {
      return -1;
    }
    total += n;
  }
}

double threadCpuSeconds() {
  rusage r{};
  getrusage(RUSAGE_THREAD, &r);
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

int rawRelay(const Args& args) {
  const uint64_t bytes = args.num("bytes", 1ULL << 30);
  const size_t chunk = args.num("chunk", 1 << 20);
  const bool use_splice = args.has("splice");
  const Clock::time_point start = Clock::now();
  std::atomic<uint64_t> got{0};
  double relay_cpu = 0;
  {
    OneShotServer source([bytes, chunk](int fd) { sourceLoop(fd, bytes, chunk); });
    OneShotServer sink([&got](int fd) {
      got = sinkLoop(fd, kReadChunk);
      close(fd);
    });
    const int in = connectTcp("127.0.0.1", source.port());
    const int out = connectTcp("127.0.0.1", sink.port());
    if (in < 0 || out < 0) {
      std::perror("loadclient: connect");
      return 1;
    }
    const double cpu_before = threadCpuSeconds();
    relayLoop(in, out, use_splice);
    relay_cpu = threadCpuSeconds() - cpu_before;
    close(in);
    close(out);
  }
  const double seconds = secondsBetween(start, Clock::now());
  std::printf("raw-relay ok=%d bytes_received=%llu seconds=%.6f relay_cpu_seconds=%.6f\n",
              got.load() == bytes ? 1 : 0, static_cast<unsigned long long>(got.load()), seconds,
              relay_cpu);
  return got.load() == bytes ? 0 : 1;
}

bool protocolOf(const Args& args, bool port_forward, Protocol& protocol) {
  if (!parseProtocol(args.str("proto", "spdy"), port_forward, protocol)) {
    std::fprintf(stderr, "loadclient: --proto is spdy or ws\n");
    return false;
  }
  return true;
}

int execStream(const Args& args, bool to_stdin) {
  SessionOptions options;
  if (!protocolOf(args, false, options.protocol)) {
    return 2;
  }
  const uint64_t bytes = args.num("bytes", 1ULL << 30);
  const size_t chunk = args.num("chunk", to_stdin ? 64 * 1024 : 1 << 20);
  std::vector<std::string> cmd;
  if (to_stdin) {
    options.send_bytes = bytes;
    options.send_chunk = chunk;
    cmd = {"dd", "of=/dev/null", "bs=" + std::to_string(std::max<size_t>(chunk, 65536)),
           "status=none"};
  } else {
    if (bytes % chunk != 0) {
      std::fprintf(stderr, "loadclient: --bytes must be a multiple of --chunk\n");
      return 2;
    }
    cmd = {"dd", "if=/dev/zero", "bs=" + std::to_string(chunk),
           "count=" + std::to_string(bytes / chunk), "status=none"};
  }
  Runner runner(args.str("socket"), std::chrono::seconds(args.num("timeout", 300)));
  Session& session = runner.add(options);
  const Clock::time_point start = Clock::now();
  startSessionVia(runner.cri(), "Exec", execRequest(args.str("container"), cmd, to_stdin), session,
                  [&](const std::string& why) { runner.failEarly(session, why); });
  runner.run();
  if (runner.timedOut()) {
    std::printf("%s ok=0 detail=\"timed out\"\n", to_stdin ? "exec-stdin" : "exec-stdout");
    return 1;
  }
  const double seconds = secondsBetween(start, session.doneAt());
  printSession(to_stdin ? "exec-stdin" : "exec-stdout", session, seconds);
  const bool complete = to_stdin ? session.bytesSent() == bytes : session.bytesReceived() == bytes;
  return session.ok() && complete ? 0 : 1;
}

int portForward(const Args& args) {
  SessionOptions options;
  if (!protocolOf(args, true, options.protocol)) {
    return 2;
  }
  const uint64_t bytes = args.num("bytes", 1ULL << 30);
  const bool up = args.has("up");
  std::atomic<uint64_t> sunk{0};
  std::unique_ptr<OneShotServer> server;
  if (up) {
    server = std::make_unique<OneShotServer>([&sunk](int fd) {
      sunk = sinkLoop(fd, kReadChunk);
      close(fd);
    });
    options.send_bytes = bytes;
    options.send_chunk = args.num("chunk", 64 * 1024);
  } else {
    const size_t chunk = args.num("chunk", 1 << 20);
    server = std::make_unique<OneShotServer>(
        [bytes, chunk](int fd) { sourceLoop(fd, bytes, chunk); });
  }
  options.port = server->port();
  Runner runner(args.str("socket"), std::chrono::seconds(args.num("timeout", 300)));
  Session& session = runner.add(options);
  runtime::v1::PortForwardRequest request;
  request.set_pod_sandbox_id(args.str("container"));
  request.add_port(server->port());
  const Clock::time_point start = Clock::now();
  startSessionVia(runner.cri(), "PortForward", request, session,
                  [&](const std::string& why) { runner.failEarly(session, why); });
  runner.run();
  if (runner.timedOut()) {
    session.abort();
    std::printf("portforward ok=0 detail=\"timed out\"\n");
    return 1;
  }
  const double seconds = secondsBetween(start, session.doneAt());
  server.reset();
  printSession("portforward", session, seconds);
  const bool complete = up ? sunk.load() == bytes : session.bytesReceived() == bytes;
  if (!complete) {
    std::printf("portforward incomplete: sink=%llu\n",
                static_cast<unsigned long long>(sunk.load()));
  }
  return session.ok() && complete ? 0 : 1;
}

struct Stats {
  double median = 0;
  double p90 = 0;
  double min = 0;
};

Stats stats(std::vector<double> v) {
  Stats s;
  if (v.empty()) {
    return s;
  }
  std::sort(v.begin(), v.end());
  s.median = v[v.size() / 2];
  s.p90 = v[std::min(v.size() - 1, v.size() * 9 / 10)];
  s.min = v.front();
  return s;
}

// The direct stream: a loopback connection whose server starts the command
// with stdout on the accepted socket.
double directFirstByte(const std::vector<std::string>& cmd) {
  uint16_t port = 0;
  const int listen_fd = listenLoopback(port);
  const Clock::time_point start = Clock::now();
  std::thread server([listen_fd, &cmd] {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      return;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fd, 1);
    std::vector<char*> argv;
    for (const auto& c : cmd) {
      argv.push_back(const_cast<char*>(c.c_str()));
    }
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ) == 0) {
      close(fd);
      int status = 0;
      waitpid(pid, &status, 0);
    } else {
      close(fd);
    }
    posix_spawn_file_actions_destroy(&actions);
  });
  const int fd = connectTcp("127.0.0.1", port);
  char c;
  const ssize_t n = fd >= 0 ? ::read(fd, &c, 1) : -1;
  const double seconds = secondsBetween(start, Clock::now());
  if (fd >= 0) {
    sinkLoop(fd, 4096);
    close(fd);
  }
  server.join();
  close(listen_fd);
  return n == 1 ? seconds : -1;
}

int setupLatency(const Args& args) {
  SessionOptions options;
  if (!protocolOf(args, false, options.protocol)) {
    return 2;
  }
  const size_t count = args.num("count", 200);
  const std::vector<std::string> cmd = {"echo", "x"};
  Runner runner(args.str("socket"), std::chrono::seconds(args.num("timeout", 300)));
  std::vector<double> crisp_s;
  std::vector<double> direct_s;
  size_t failures = 0;
  std::string last_failure;
  std::vector<Clock::time_point> starts(count);
  std::function<void(size_t)> next = [&](size_t i) {
    if (i == count) {
      runner.dispatcher().exit();
      return;
    }
    // Alternate with the reference so both see the same machine.
    const double direct = directFirstByte(cmd);
    if (direct >= 0) {
      direct_s.push_back(direct);
    }
    Session& s = runner.add(options);
    starts[i] = Clock::now();
    startSessionVia(runner.cri(), "Exec", execRequest(args.str("container"), cmd, false), s,
                    [&runner, &s](const std::string& why) { runner.failEarly(s, why); });
  };
  runner.exit_when_all_done = false;
  runner.on_first_byte = [&](Session& s) {
    crisp_s.push_back(secondsBetween(starts[s.tag], s.firstByteAt()));
  };
  runner.on_done = [&](Session& s) {
    if (!s.ok()) {
      ++failures;
      last_failure = s.detail();
    }
    const size_t i = s.tag + 1;
    runner.dispatcher().post([&next, i] { next(i); });
  };
  runner.dispatcher().post([&next] { next(0); });
  runner.dispatcher().run();
  const Stats c = stats(crisp_s);
  const Stats d = stats(direct_s);
  std::printf(
      "setup-latency ok=%d count=%zu failures=%zu crisp_median_us=%.1f crisp_p90_us=%.1f "
      "direct_median_us=%.1f direct_p90_us=%.1f added_median_us=%.1f detail=\"%s\"\n",
      failures == 0 && !runner.timedOut() ? 1 : 0, crisp_s.size(), failures, c.median * 1e6,
      c.p90 * 1e6, d.median * 1e6, d.p90 * 1e6, (c.median - d.median) * 1e6,
      last_failure.substr(0, 200).c_str());
  return failures == 0 && !runner.timedOut() ? 0 : 1;
}

// Starts the runner's sessions with at most `parallel` of them being set up
// at a time (CRI call made, streams not all open yet): a token is good for a
// minute only, so a client must not ask for many more than the server can
// take up.
void startMany(Runner& runner, const std::string& container, const std::vector<std::string>& cmd,
               bool stdin, size_t parallel) {
  auto next = std::make_shared<size_t>(0);
  auto launch = [&runner, container, cmd, stdin, parallel, next] {
    while (*next < runner.sessions().size() && *next - runner.settled() < parallel) {
      Session& s = *runner.sessions()[(*next)++];
      startSessionVia(runner.cri(), "Exec", execRequest(container, cmd, stdin), s,
                      [&runner, &s](const std::string& why) { runner.failEarly(s, why); });
    }
  };
  runner.on_progress = [&runner, launch] { runner.dispatcher().post(launch); };
  runner.dispatcher().post(launch);
}

int sessions(const Args& args) {
  const size_t count = args.num("count", 1000);
  const uint64_t each = args.num("bytes-each", 1 << 20);
  const size_t chunk = 64 * 1024;
  const std::vector<std::string> cmd = {"dd", "if=/dev/zero", "bs=" + std::to_string(chunk),
                                        "count=" + std::to_string(each / chunk), "status=none"};
  Runner runner(args.str("socket"), std::chrono::seconds(args.num("timeout", 600)));
  SessionOptions options;
  for (size_t i = 0; i < count; ++i) {
    runner.add(options);
  }
  size_t max_open = 0;
  size_t open = 0;
  runner.on_ready = [&](Session&) { max_open = std::max(max_open, ++open); };
  size_t failures = 0;
  std::string last_failure;
  uint64_t bytes = 0;
  runner.on_done = [&](Session& s) {
    if (open > 0) {
      --open;
    }
    bytes += s.bytesReceived();
    if (!s.ok() || s.bytesReceived() != each) {
      ++failures;
      last_failure = s.detail();
    }
  };
  const Clock::time_point start = Clock::now();
  startMany(runner, args.str("container"), cmd, false, args.num("parallel", 256));
  runner.run();
  const double seconds = secondsBetween(start, Clock::now());
  const bool ok = failures == 0 && !runner.timedOut();
  std::printf(
      "sessions ok=%d count=%zu failures=%zu max_concurrent=%zu bytes_received=%llu "
      "seconds=%.3f detail=\"%s\"\n",
      ok ? 1 : 0, count, failures + (runner.timedOut() ? 1 : 0), max_open,
      static_cast<unsigned long long>(bytes), seconds,
      runner.timedOut() ? "timed out" : last_failure.substr(0, 200).c_str());
  return ok ? 0 : 1;
}

int idle(const Args& args) {
  const size_t count = args.num("count", 10000);
  Runner runner(args.str("socket"), std::chrono::seconds(args.num("timeout", 900)));
  SessionOptions options;
  options.stdin = true;
  for (size_t i = 0; i < count; ++i) {
    runner.add(options);
  }
  size_t failures = 0;
  std::string last_failure;
  auto check_all_open = [&] {
    if (runner.ready_count + failures == count) {
      runner.dispatcher().exit();
    }
  };
  runner.on_done = [&](Session& s) {
    ++failures;
    last_failure = s.detail();
    check_all_open();
  };
  const Clock::time_point start = Clock::now();
  runner.on_ready = [&](Session&) { check_all_open(); };
  startMany(runner, args.str("container"), {"cat"}, true, args.num("parallel", 64));
  runner.run();
  const double setup = secondsBetween(start, Clock::now());
  std::printf("ready open=%zu failures=%zu seconds=%.3f\n", runner.ready_count, failures, setup);
  std::fflush(stdout);
  // Keep the loop turning (the server's pings, if any) while the driver looks.
  std::atomic<bool> go{false};
  std::thread waiter([&] {
    char line[64];
    (void)!std::fgets(line, sizeof(line), stdin);
    go = true;
    runner.dispatcher().exit();
  });
  runner.dispatcher().run();
  waiter.join();
  const size_t failed_while_idle = failures;
  for (auto& s : runner.sessions()) {
    if (!s->done()) {
      s->abort();
    }
  }
  const bool ok = failures == 0 && runner.ready_count == count;
  std::printf("idle ok=%d count=%zu open=%zu failures=%zu detail=\"%s\"\n", ok ? 1 : 0, count,
              runner.ready_count, failed_while_idle, last_failure.substr(0, 200).c_str());
  return ok ? 0 : 1;
}

int passthrough(const Args& args) {
  const size_t count = args.num("count", 2000);
  event::Dispatcher dispatcher;
  Cri via(dispatcher, args.str("via"));
  Cri direct(dispatcher, args.str("direct"));
  runtime::v1::VersionRequest request;
  request.set_version("v1");
  std::vector<double> via_s;
  std::vector<double> direct_s;
  size_t failures = 0;
  std::string last_failure;
  std::function<void(size_t)> next = [&](size_t i) {
    if (i == 2 * count + 20) {
      dispatcher.exit();
      return;
    }
    // The first calls of each open the connections; they are not counted.
    Cri& cri = (i % 2 == 0) ? via : direct;
    std::vector<double>& out = (i % 2 == 0) ? via_s : direct_s;
    const bool counted = i >= 20;
    const Clock::time_point start = Clock::now();
    cri.call("Version", request, [&, start, counted, i](absl::StatusOr<std::string> r) {
      const double s = secondsBetween(start, Clock::now());
      runtime::v1::VersionResponse response;
      if (!r.ok() || !response.ParseFromString(*r) || response.runtime_name().empty()) {
        ++failures;
        last_failure = r.ok() ? "bad response" : std::string(r.status().message());
      } else if (counted) {
        out.push_back(s);
      }
      dispatcher.post([&next, i] { next(i + 1); });
    });
  };
  dispatcher.post([&next] { next(0); });
  dispatcher.run();
  const Stats v = stats(via_s);
  const Stats d = stats(direct_s);
  std::printf(
      "passthrough ok=%d count=%zu failures=%zu via_median_us=%.1f via_p90_us=%.1f "
      "direct_median_us=%.1f direct_p90_us=%.1f added_median_us=%.1f detail=\"%s\"\n",
      failures == 0 ? 1 : 0, via_s.size(), failures, v.median * 1e6, v.p90 * 1e6, d.median * 1e6,
      d.p90 * 1e6, (v.median - d.median) * 1e6, last_failure.substr(0, 200).c_str());
  return failures == 0 ? 0 : 1;
}

constexpr char kUsage[] =
    "usage: loadclient raw-tcp|raw-relay|exec-stdout|exec-stdin|portforward|setup-latency|sessions|idle|"
    "passthrough [--flag value]...\n"
    "  (see the comment at the top of tools/bench/loadclient/main.cc)\n";

}  // namespace
}  // namespace crisp::bench

int main(int argc, char** argv) {
  using namespace crisp::bench;
  signal(SIGPIPE, SIG_IGN);
  Args args;
  if (!parseArgs(argc, argv, args)) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const bool needs_socket =
      args.verb != "raw-tcp" && args.verb != "raw-relay" && args.verb != "passthrough";
  if (needs_socket && (!args.has("socket") || !args.has("container"))) {
    std::fputs("loadclient: --socket and --container are required\n", stderr);
    return 2;
  }
  int rc = 2;
  if (args.verb == "raw-tcp") {
    rc = rawTcp(args);
  } else if (args.verb == "raw-relay") {
    rc = rawRelay(args);
  } else if (args.verb == "exec-stdout") {
    rc = execStream(args, false);
  } else if (args.verb == "exec-stdin") {
    rc = execStream(args, true);
  } else if (args.verb == "portforward") {
    rc = portForward(args);
  } else if (args.verb == "setup-latency") {
    rc = setupLatency(args);
  } else if (args.verb == "sessions") {
    rc = sessions(args);
  } else if (args.verb == "idle") {
    rc = idle(args);
  } else if (args.verb == "passthrough") {
    if (!args.has("via") || !args.has("direct")) {
      std::fputs("loadclient: passthrough needs --via and --direct\n", stderr);
      return 2;
    }
    rc = passthrough(args);
  } else {
    std::fputs(kUsage, stderr);
  }
  std::fflush(stdout);
  return rc;
}
