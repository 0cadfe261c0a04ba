// ContainerdClient against a real containerd: run by containerd_client_test.py,
// which starts a private containerd with a running container and passes
//   CONTAINERD_SOCKET  containerd's gRPC socket
//   CONTAINER_ID       a running container (command: sleep 2147483647)
//   FIFO_DIR           a directory of the test's own for the stdio FIFOs
// The shim opens the FIFOs from the host, as it would crisp's.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

#include "source/common/dispatcher.h"
#include "source/runtime/containerd/containerd_client.h"

namespace crisp::containerd {
namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

// A dispatcher on its own thread with clients living on it; the test thread
// makes each call there and blocks for its result.
class Loop {
 public:
  Loop() : thread_([this] { dispatcher_.run(); }) {
    run<bool>([this](auto done) {
      client_ = std::make_unique<ContainerdClient>(dispatcher_, env("CONTAINERD_SOCKET"));
      ContainerdClientOptions short_deadline;
      short_deadline.call_timeout = std::chrono::milliseconds(1000);
      short_client_ = std::make_unique<ContainerdClient>(dispatcher_, env("CONTAINERD_SOCKET"),
                                                         short_deadline);
      done(true);
    });
  }
  ~Loop() {
    run<bool>([this](auto done) {
      client_.reset();
      short_client_.reset();
      done(true);
    });
    dispatcher_.exit();
    thread_.join();
  }

  // Runs `start(done)` on the loop and waits for done(result).
  template <class T>
  T run(std::function<void(std::function<void(T)>)> start) {
    auto promise = std::make_shared<std::promise<T>>();
    std::future<T> future = promise->get_future();
    dispatcher_.post([start, promise] {
      start([promise](T value) { promise->set_value(std::move(value)); });
    });
    return future.get();
  }
  // Starts `start(done)` on the loop; the future gives done's result.
  template <class T>
  std::future<T> begin(std::function<void(std::function<void(T)>)> start) {
    auto promise = std::make_shared<std::promise<T>>();
    std::future<T> future = promise->get_future();
    dispatcher_.post([start, promise] {
      start([promise](T value) { promise->set_value(std::move(value)); });
    });
    return future;
  }

  ContainerdClient& client() { return *client_; }
  // call_timeout of one second: for calls that must outlast it.
  ContainerdClient& shortClient() { return *short_client_; }

 private:
  event::Dispatcher dispatcher_;
  std::unique_ptr<ContainerdClient> client_;
  std::unique_ptr<ContainerdClient> short_client_;
  std::thread thread_;
};

// A FIFO under FIFO_DIR. Output FIFOs are opened for reading before the exec
// (O_NONBLOCK: no writer yet) and read on a thread until the shim's end closes;
// poll(2) reports nothing until a writer has come, so the first EOF is real.
class OutputFifo {
 public:
  explicit OutputFifo(const std::string& name) : path_(absl::StrCat(env("FIFO_DIR"), "/", name)) {
    ::unlink(path_.c_str());
    EXPECT_EQ(::mkfifo(path_.c_str(), 0600), 0) << path_ << ": " << strerror(errno);
    fd_ = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    EXPECT_GE(fd_, 0) << path_ << ": " << strerror(errno);
    reader_ = std::async(std::launch::async, [this] { return readAll(); });
  }
  ~OutputFifo() {
    if (reader_.valid()) {
      // Ends the reader if the exec never opened the FIFO.
      int unblock = ::open(path_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
      if (unblock >= 0) {
        ::close(unblock);
      }
      reader_.wait();
    }
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  // Everything written until the shim closed its end.
  std::string contents() { return reader_.get(); }

 private:
  std::string readAll() {
    std::string out;
    char buf[65536];
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, -1) < 0) {
        if (errno == EINTR) continue;
        return out;
      }
      const ssize_t n = ::read(fd_, buf, sizeof(buf));
      if (n > 0) {
        out.append(buf, n);
      } else if (n == 0) {
        return out;
      } else if (errno != EAGAIN && errno != EINTR) {
        return out;
      }
    }
  }

  std::string path_;
  int fd_ = -1;
  std::future<std::string> reader_;
};

// The stdin FIFO: held open read-write, so that the shim's open never blocks
// and the FIFO stays open until closeWriter().
class InputFifo {
 public:
  explicit InputFifo(const std::string& name) : path_(absl::StrCat(env("FIFO_DIR"), "/", name)) {
    ::unlink(path_.c_str());
    EXPECT_EQ(::mkfifo(path_.c_str(), 0600), 0) << path_ << ": " << strerror(errno);
    fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
    EXPECT_GE(fd_, 0) << path_ << ": " << strerror(errno);
  }
  ~InputFifo() {
    closeWriter();
    ::unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }
  void write(const std::string& data) {
    size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::write(fd_, data.data() + off, data.size() - off);
      ASSERT_GT(n, 0) << strerror(errno);
      off += n;
    }
  }
  void closeWriter() {
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

 private:
  std::string path_;
  int fd_ = -1;
};

class ContainerdClientCheck : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(env("CONTAINERD_SOCKET").empty()) << "run by containerd_client_test.py";
    container_ = env("CONTAINER_ID");
  }

  absl::StatusOr<uint32_t> exec(ExecRequest request) {
    return loop_.run<absl::StatusOr<uint32_t>>(
        [&](auto done) { loop_.client().exec(request, done); });
  }
  std::future<absl::StatusOr<ProcessExit>> beginWait(ContainerdClient& client,
                                                     const std::string& exec_id) {
    return loop_.begin<absl::StatusOr<ProcessExit>>(
        [&client, c = container_, exec_id](auto done) { client.wait(c, exec_id, done); });
  }
  absl::Status unary(std::function<void(ContainerdClient&, ContainerdClient::DoneCallback)> fn) {
    return loop_.run<absl::Status>([&](auto done) {
      fn(loop_.client(), [done](const absl::Status& s) { done(s); });
    });
  }
  absl::StatusOr<ProcessExit> deleteProcess(const std::string& exec_id) {
    return loop_.run<absl::StatusOr<ProcessExit>>(
        [&](auto done) { loop_.client().deleteProcess(container_, exec_id, done); });
  }

  Loop loop_;
  std::string container_;
};

TEST_F(ContainerdClientCheck, ContainerSpecAndExecProcessComeFromTheContainer) {
  auto spec = loop_.run<absl::StatusOr<nlohmann::json>>(
      [&](auto done) { loop_.client().containerSpec(container_, done); });
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_TRUE((*spec)["ociVersion"].is_string());
  const nlohmann::json& process = (*spec)["process"];
  EXPECT_EQ(process["args"], nlohmann::json({"sleep", "2147483647"})) << process.dump();

  // The exec sees the container's env, cwd and user.
  OutputFifo out("spec-out");
  OutputFifo err("spec-err");
  ExecRequest request;
  request.container_id = container_;
  request.exec_id = ContainerdClient::newExecId();
  request.args = {"sh", "-c", "env; echo CWD=$(pwd); echo UID=$(id -u) GID=$(id -g)"};
  request.stdout_path = out.path();
  request.stderr_path = err.path();
  auto pid = exec(request);
  ASSERT_TRUE(pid.ok()) << pid.status();
  auto exit_future = beginWait(loop_.client(), request.exec_id);
  const std::string text = out.contents();
  EXPECT_EQ(err.contents(), "");
  auto exit = exit_future.get();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_status, 0u) << text;
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  for (const auto& entry : process["env"]) {
    EXPECT_NE(std::find(lines.begin(), lines.end(), entry.get<std::string>()), lines.end())
        << entry << " missing from:\n" << text;
  }
  EXPECT_NE(text.find("CWD=" + process["cwd"].get<std::string>() + "\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find(absl::StrCat("UID=", process["user"]["uid"].get<uint32_t>(),
                                   " GID=", process["user"]["gid"].get<uint32_t>(), "\n")),
            std::string::npos)
      << text;
  EXPECT_TRUE(deleteProcess(request.exec_id).ok());
}

TEST_F(ContainerdClientCheck, StdoutStderrAndExitStatus) {
  OutputFifo out("out");
  OutputFifo err("err");
  ExecRequest request;
  request.container_id = container_;
  request.exec_id = ContainerdClient::newExecId();
  request.args = {"sh", "-c", "echo out; echo err >&2; exit 7"};
  request.stdout_path = out.path();
  request.stderr_path = err.path();
  auto pid = exec(request);
  ASSERT_TRUE(pid.ok()) << pid.status();
  EXPECT_GT(*pid, 0u);
  auto exit_future = beginWait(loop_.client(), request.exec_id);
  EXPECT_EQ(out.contents(), "out\n");
  EXPECT_EQ(err.contents(), "err\n");
  auto exit = exit_future.get();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_status, 7u);
  EXPECT_GT(exit->exited_at, absl::UnixEpoch());
  auto deleted = deleteProcess(request.exec_id);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(deleted->exit_status, 7u);
  // Deleted: containerd no longer knows it.
  auto again = deleteProcess(request.exec_id);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kNotFound) << again.status();
}

TEST_F(ContainerdClientCheck, StdinThroughCatIsByteExact) {
  InputFifo in("cat-in");
  OutputFifo out("cat-out");
  OutputFifo err("cat-err");
  ExecRequest request;
  request.container_id = container_;
  request.exec_id = ContainerdClient::newExecId();
  request.args = {"cat"};
  request.stdin_path = in.path();
  request.stdout_path = out.path();
  request.stderr_path = err.path();
  auto pid = exec(request);
  ASSERT_TRUE(pid.ok()) << pid.status();
  auto exit_future = beginWait(loop_.client(), request.exec_id);

  std::string data(300 * 1024, '\0');
  std::mt19937 rng(7);
  for (char& c : data) c = static_cast<char>(rng());
  in.write(data);
  // The shim sees the end once every writer is gone and CloseIO closed its own.
  in.closeWriter();
  absl::Status closed = unary([&](ContainerdClient& c, auto done) {
    c.closeStdin(container_, request.exec_id, done);
  });
  ASSERT_TRUE(closed.ok()) << closed;
  const std::string echoed = out.contents();
  EXPECT_EQ(echoed.size(), data.size());
  EXPECT_TRUE(echoed == data) << "cat's output differs from its input";
  EXPECT_EQ(err.contents(), "");
  auto exit = exit_future.get();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_status, 0u);
  EXPECT_TRUE(deleteProcess(request.exec_id).ok());
}

TEST_F(ContainerdClientCheck, TerminalResize) {
  InputFifo in("tty-in");
  OutputFifo out("tty-out");
  ExecRequest request;
  request.container_id = container_;
  request.exec_id = ContainerdClient::newExecId();
  request.args = {"sh", "-c", "read line; echo TERM=$TERM; stty size"};
  request.terminal = true;
  request.stdin_path = in.path();
  request.stdout_path = out.path();
  auto pid = exec(request);
  ASSERT_TRUE(pid.ok()) << pid.status();
  auto exit_future = beginWait(loop_.client(), request.exec_id);
  absl::Status resized = unary([&](ContainerdClient& c, auto done) {
    c.resize(container_, request.exec_id, /*width=*/123, /*height=*/45, done);
  });
  ASSERT_TRUE(resized.ok()) << resized;
  // Only now does the shell go on to stty.
  in.write("go\n");
  const std::string text = out.contents();
  EXPECT_NE(text.find("45 123\r\n"), std::string::npos) << text;
  EXPECT_NE(text.find("TERM=xterm\r\n"), std::string::npos) << text;
  auto exit = exit_future.get();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_status, 0u);
  in.closeWriter();
  EXPECT_TRUE(deleteProcess(request.exec_id).ok());
}

TEST_F(ContainerdClientCheck, KillEndsALongWait) {
  ExecRequest request;
  request.container_id = container_;
  request.exec_id = ContainerdClient::newExecId();
  // No stdio: the shim gives the process /dev/null.
  request.args = {"sleep", "100"};
  auto pid = exec(request);
  ASSERT_TRUE(pid.ok()) << pid.status();
  // On the client whose calls have a one-second deadline: Wait has none, and
  // stays open past it.
  auto exit_future = beginWait(loop_.shortClient(), request.exec_id);
  EXPECT_EQ(exit_future.wait_for(std::chrono::seconds(3)), std::future_status::timeout);
  absl::Status killed = unary([&](ContainerdClient& c, auto done) {
    c.kill(container_, request.exec_id, SIGTERM, done);
  });
  ASSERT_TRUE(killed.ok()) << killed;
  auto exit = exit_future.get();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_status, 128u + SIGTERM);
  EXPECT_TRUE(deleteProcess(request.exec_id).ok());
}

TEST_F(ContainerdClientCheck, UnknownContainerIsNotFoundWithContainerdsMessage) {
  ExecRequest request;
  request.container_id = "crisp-no-such-container";
  request.exec_id = ContainerdClient::newExecId();
  request.args = {"true"};
  auto pid = exec(request);
  ASSERT_EQ(pid.status().code(), absl::StatusCode::kNotFound) << pid.status();
  const std::string message(pid.status().message());
  EXPECT_NE(message.find("containerd Containers/Get: "), std::string::npos) << message;
  EXPECT_NE(message.find("crisp-no-such-container"), std::string::npos) << message;
  EXPECT_NE(message.find("not found"), std::string::npos) << message;

  // An exec id the container does not have.
  absl::Status killed = unary([&](ContainerdClient& c, auto done) {
    c.kill(container_, "crisp-no-such-exec", SIGKILL, done);
  });
  EXPECT_EQ(killed.code(), absl::StatusCode::kNotFound) << killed;
  EXPECT_NE(killed.message().find("containerd Tasks/Kill: "), absl::string_view::npos) << killed;
}

TEST_F(ContainerdClientCheck, FailedStartCarriesTheShimsErrorAndFreesTheExecId) {
  // Regular files that do not exist: the shim cannot open them at Start.
  ExecRequest request;
  request.container_id = container_;
  request.exec_id = ContainerdClient::newExecId();
  request.args = {"true"};
  request.stdout_path = absl::StrCat(env("FIFO_DIR"), "/missing/out");
  request.stderr_path = absl::StrCat(env("FIFO_DIR"), "/missing/err");
  auto pid = exec(request);
  ASSERT_FALSE(pid.ok());
  const std::string message(pid.status().message());
  EXPECT_NE(message.find("containerd Tasks/Start: "), std::string::npos) << message;
  EXPECT_NE(message.find(request.stdout_path), std::string::npos) << message;
  auto deleted = deleteProcess(request.exec_id);
  EXPECT_EQ(deleted.status().code(), absl::StatusCode::kNotFound) << deleted.status();
}

TEST_F(ContainerdClientCheck, RequestsContainerdWouldRefuseAreRefusedFirst) {
  ExecRequest request;
  request.container_id = container_;
  request.exec_id = "bad id/..";
  request.args = {"true"};
  auto pid = exec(request);
  EXPECT_EQ(pid.status().code(), absl::StatusCode::kInvalidArgument) << pid.status();

  OutputFifo out("lone-out");
  request.exec_id = ContainerdClient::newExecId();
  request.stdout_path = out.path();
  pid = exec(request);
  EXPECT_EQ(pid.status().code(), absl::StatusCode::kInvalidArgument) << pid.status();
  EXPECT_NE(pid.status().message().find("stderr"), absl::string_view::npos) << pid.status();
}

TEST_F(ContainerdClientCheck, UnreachableSocketIsUnavailableNamingIt) {
  event::Dispatcher dispatcher;
  const std::string socket = absl::StrCat(env("FIFO_DIR"), "/no-such.sock");
  ContainerdClientOptions options;
  options.peer_name = socket;
  ContainerdClient client(dispatcher, socket, options);
  absl::Status result;
  client.kill(container_, "x", SIGKILL, [&](const absl::Status& s) {
    result = s;
    dispatcher.exit();
  });
  dispatcher.run();
  EXPECT_EQ(result.code(), absl::StatusCode::kUnavailable) << result;
  EXPECT_NE(result.message().find(socket), absl::string_view::npos) << result;
}

}  // namespace
}  // namespace crisp::containerd
