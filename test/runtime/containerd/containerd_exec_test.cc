// startExec() against crisp's gRPC server playing containerd, with the test
// playing the shim's side of the FIFOs: the orders a real containerd does not
// let a test choose (exit before the output's end, a close during Start, the
// moment of CloseIO). Against a real containerd: //test/e2e:containerd_exec_test.

#include "source/runtime/containerd/containerd_exec.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "gtest/gtest.h"

#include "api/containerd/services/tasks/v1/tasks.pb.h"
#include "api/containerd/services/containers/v1/containers.pb.h"
#include "source/common/dispatcher.h"
#include "source/cri/grpc_server.h"
#include "test/cri/grpc_test_util.h"

namespace crisp::containerd {
namespace {

namespace tasks_v1 = ::containerd::services::tasks::v1;
using cri::testing::RecordedCall;
using cri::testing::RecordingHandler;
using cri::testing::runUntil;
using cri::testing::settle;
using cri::testing::TempDir;
using session::ExitStatus;

constexpr char kTasks[] = "/containerd.services.tasks.v1.Tasks/";

std::vector<std::string> listDir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
        names.push_back(e->d_name);
      }
    }
    ::closedir(d);
  }
  return names;
}

struct Recorder : session::ExecCallbacks {
  void onStdout(Buffer& data) override {
    EXPECT_FALSE(exit.has_value()) << "output after onExit";
    out += data.toString();
  }
  void onStderr(Buffer& data) override {
    EXPECT_FALSE(exit.has_value()) << "output after onExit";
    err += data.toString();
  }
  void onExit(const ExitStatus& status) override {
    EXPECT_FALSE(exit.has_value()) << "onExit twice";
    exit = status;
    if (on_exit) {
      on_exit();
    }
  }
  void onStdinDrained() override { ++drained; }

  std::string out;
  std::string err;
  std::optional<ExitStatus> exit;
  int drained = 0;
  std::function<void()> on_exit;
};

// The gRPC server answers as containerd; Start opens the FIFOs as the shim
// would (and holds a writer of stdin, closed by CloseIO). Start and Wait are
// answered when the test says so.
class ContainerdExecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.setFallback(&handler_);
    ASSERT_TRUE(server_.listenUnix(dir_.file("containerd.sock"), 0600).ok());
    handler_.on_half_close = [this](RecordedCall& call) { answer(call); };
    options_.fifo_dir = dir_.file("fifos");
    ASSERT_EQ(::mkdir(options_.fifo_dir.c_str(), 0700), 0);
    client_ = std::make_unique<ContainerdClient>(dispatcher_, dir_.file("containerd.sock"));
  }
  void TearDown() override {
    for (int* fd : {&shim_stdin_, &shim_stdin_writer_, &shim_stdout_, &shim_stderr_}) {
      if (*fd >= 0) {
        ::close(*fd);
      }
    }
  }

  void answer(RecordedCall& call) {
    const std::string& path = call.call->path();
    calls_.push_back(path.substr(path.rfind('/') + 1));
    if (path == "/containerd.services.containers.v1.Containers/Get") {
      ::containerd::services::containers::v1::GetContainerResponse response;
      response.mutable_container()->set_id("c1");
      response.mutable_container()->mutable_spec()->set_value(
          R"({"process":{"args":["sleep"],"cwd":"/","env":[]}})");
      (*response.mutable_container()->mutable_labels())[kKindLabel] = "container";
      call.call->sendMessage(response.SerializeAsString());
      call.call->finish(absl::OkStatus());
    } else if (path == std::string(kTasks) + "Exec") {
      ASSERT_TRUE(exec_.ParseFromString(call.messages.at(0)));
      call.call->sendMessage("");
      call.call->finish(absl::OkStatus());
    } else if (path == std::string(kTasks) + "Start") {
      start_ = &call;
      if (answer_start_) {
        answerStart();
      }
    } else if (path == std::string(kTasks) + "Wait") {
      wait_ = &call;
    } else if (path == std::string(kTasks) + "Kill") {
      tasks_v1::KillRequest kill;
      ASSERT_TRUE(kill.ParseFromString(call.messages.at(0)));
      killed_with_ = kill.signal();
      call.call->sendMessage("");
      call.call->finish(absl::OkStatus());
    } else if (path == std::string(kTasks) + "CloseIO") {
      ::close(shim_stdin_writer_);
      shim_stdin_writer_ = -1;
      call.call->sendMessage("");
      call.call->finish(absl::OkStatus());
    } else {
      call.call->sendMessage("");
      call.call->finish(absl::OkStatus());
    }
  }

  void answerStart() {
    // The shim's opens: output FIFOs for writing (crisp reads already),
    // stdin for reading plus a writer of its own.
    if (!exec_.stdin().empty() && !shim_opens_stdin_late_) {
      shimOpenStdin();
    }
    if (!exec_.stdout().empty()) {
      shim_stdout_ = ::open(exec_.stdout().c_str(), O_WRONLY | O_NONBLOCK);
      ASSERT_GE(shim_stdout_, 0) << std::strerror(errno);
    }
    if (!exec_.stderr().empty()) {
      shim_stderr_ = ::open(exec_.stderr().c_str(), O_WRONLY | O_NONBLOCK);
    }
    tasks_v1::StartResponse response;
    response.set_pid(4242);
    start_->call->sendMessage(response.SerializeAsString());
    start_->call->finish(absl::OkStatus());
  }

  void shimOpenStdin() {
    shim_stdin_ = ::open(exec_.stdin().c_str(), O_RDONLY | O_NONBLOCK);
    shim_stdin_writer_ = ::open(exec_.stdin().c_str(), O_WRONLY | O_NONBLOCK);
  }

  void answerWait(uint32_t exit_status) {
    ASSERT_NE(wait_, nullptr);
    tasks_v1::WaitResponse response;
    response.set_exit_status(exit_status);
    wait_->call->sendMessage(response.SerializeAsString());
    wait_->call->finish(absl::OkStatus());
  }

  void shimWrite(int fd, const std::string& data) {
    ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  }
  void shimClose(int& fd) {
    ::close(fd);
    fd = -1;
  }

  std::unique_ptr<session::ExecProcess> start(const session::ExecSpec& spec) {
    auto process = startExec(dispatcher_, *client_, options_, spec, std::nullopt, recorder_);
    EXPECT_TRUE(process.ok()) << process.status();
    return process.ok() ? std::move(*process) : nullptr;
  }

  static session::ExecSpec spec(bool in, bool out, bool err) {
    session::ExecSpec s;
    s.container_id = "c1";
    s.command = {"sh"};
    s.stdin = in;
    s.stdout = out;
    s.stderr = err;
    return s;
  }

  event::Dispatcher dispatcher_;
  TempDir dir_{"crisp-cdexec"};
  RecordingHandler handler_;
  cri::GrpcServer server_{dispatcher_};
  std::unique_ptr<ContainerdClient> client_;
  ContainerdExecOptions options_;
  Recorder recorder_;

  std::vector<std::string> calls_;
  tasks_v1::ExecProcessRequest exec_;
  RecordedCall* start_ = nullptr;
  RecordedCall* wait_ = nullptr;
  bool answer_start_ = true;
  // The real shim opens its ends of the stdin FIFO asynchronously, possibly
  // after Start has returned.
  bool shim_opens_stdin_late_ = false;
  std::optional<uint32_t> killed_with_;
  int shim_stdin_ = -1;
  int shim_stdin_writer_ = -1;
  int shim_stdout_ = -1;
  int shim_stderr_ = -1;
};

TEST_F(ContainerdExecTest, ExitBeforeTheEndOfOutputWaitsForIt) {
  auto process = start(spec(false, true, true));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return wait_ != nullptr; }));
  // One session directory with both outputs (the runc shim takes both).
  const std::vector<std::string> sessions = listDir(options_.fifo_dir);
  ASSERT_EQ(sessions.size(), 1u);
  EXPECT_EQ(exec_.exec_id(), sessions[0]);
  EXPECT_EQ(exec_.stdout(), options_.fifo_dir + "/" + sessions[0] + "/stdout");
  EXPECT_EQ(exec_.stderr(), options_.fifo_dir + "/" + sessions[0] + "/stderr");
  EXPECT_EQ(exec_.stdin(), "");

  shimWrite(shim_stdout_, "hello ");
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return recorder_.out == "hello "; }));
  // Paused, the wait for the output's end has no time limit.
  process->pauseOutput(true);
  answerWait(3);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return client_->activeCalls() == 0; }));
  settle(dispatcher_);
  EXPECT_FALSE(recorder_.exit.has_value()) << "exit before the output's end";
  process->pauseOutput(false);
  shimWrite(shim_stdout_, "world");
  shimWrite(shim_stderr_, "err");
  shimClose(shim_stdout_);
  shimClose(shim_stderr_);
  bool deleted_before_exit = false;
  bool files_gone_at_exit = false;
  recorder_.on_exit = [&] {
    deleted_before_exit = !calls_.empty() && calls_.back() == "DeleteProcess";
    files_gone_at_exit = listDir(options_.fifo_dir).empty();
  };
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return recorder_.exit.has_value(); }));
  EXPECT_EQ(recorder_.out, "hello world");
  EXPECT_EQ(recorder_.err, "err");
  EXPECT_EQ(recorder_.exit->kind, ExitStatus::Kind::kNonZeroExit);
  EXPECT_EQ(recorder_.exit->exit_code, 3);
  EXPECT_TRUE(deleted_before_exit);
  EXPECT_TRUE(files_gone_at_exit);
}

TEST_F(ContainerdExecTest, OutputEndBeforeExitWaitsForTheExit) {
  auto process = start(spec(false, true, false));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return wait_ != nullptr; }));
  shimWrite(shim_stdout_, "all");
  shimClose(shim_stdout_);
  shimClose(shim_stderr_);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return recorder_.out == "all"; }));
  settle(dispatcher_);
  EXPECT_FALSE(recorder_.exit.has_value());
  answerWait(0);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return recorder_.exit.has_value(); }));
  EXPECT_EQ(recorder_.exit->kind, ExitStatus::Kind::kSuccess);
  EXPECT_EQ(recorder_.err, "");
}

TEST_F(ContainerdExecTest, CloseDuringStartKillsDeletesAndCallsNothing) {
  answer_start_ = false;
  auto process = start(spec(true, true, true));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return start_ != nullptr; }));
  process.reset();
  settle(dispatcher_);
  EXPECT_FALSE(killed_with_.has_value()) << "killed before it exists";
  answerStart();
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return killed_with_.has_value() && wait_ != nullptr; }));
  EXPECT_EQ(*killed_with_, static_cast<uint32_t>(SIGKILL));
  EXPECT_FALSE(listDir(options_.fifo_dir).empty()) << "FIFOs removed while the shim has them";
  shimClose(shim_stdout_);
  shimClose(shim_stderr_);
  answerWait(128 + SIGKILL);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return listDir(options_.fifo_dir).empty(); }));
  EXPECT_EQ(calls_.back(), "DeleteProcess");
  settle(dispatcher_);
  EXPECT_FALSE(recorder_.exit.has_value());
}

TEST_F(ContainerdExecTest, StdinCloseDeliversEveryQueuedByteThenEof) {
  auto process = start(spec(true, true, true));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return wait_ != nullptr && shim_stdin_ >= 0; }));
  const std::string data(3 * session::ExecProcess::kStdinHighWatermark, 'x');
  Buffer b;
  b.add(data);
  process->writeStdin(b);
  EXPECT_GT(process->stdinQueuedBytes(), session::ExecProcess::kStdinHighWatermark);
  process->closeStdin();
  // The shim reads slowly; CloseIO must not come before the last byte.
  size_t read_total = 0;
  bool eof = false;
  std::vector<char> chunk(65536);
  for (int round = 0; !eof && round < 100000; ++round) {
    settle(dispatcher_);
    const bool closed = std::find(calls_.begin(), calls_.end(), "CloseIO") != calls_.end();
    if (closed) {
      EXPECT_EQ(process->stdinQueuedBytes(), 0u);
    }
    const ssize_t n = ::read(shim_stdin_, chunk.data(), chunk.size());
    if (n > 0) {
      read_total += n;
    } else if (n == 0) {
      eof = true;  // every writer gone: crisp's end and, after CloseIO, the shim's
    } else {
      ASSERT_EQ(errno, EAGAIN);
    }
  }
  EXPECT_TRUE(eof);
  EXPECT_EQ(read_total, data.size());
  EXPECT_EQ(recorder_.drained, 1);
  shimClose(shim_stdout_);
  shimClose(shim_stderr_);
  answerWait(0);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return recorder_.exit.has_value(); }));
}

TEST_F(ContainerdExecTest, StdinWaitsForAShimThatOpensItsReaderAfterStart) {
  shim_opens_stdin_late_ = true;
  auto process = start(spec(true, true, true));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return wait_ != nullptr; }));
  Buffer b;
  b.add("x\n");
  process->writeStdin(b);
  process->closeStdin();
  for (int i = 0; i < 20; ++i) {
    settle(dispatcher_);
    ::usleep(1000);
  }
  // Neither written into a FIFO nobody reads (EPIPE, the bytes lost) nor
  // ended before the shim could see it.
  EXPECT_EQ(std::find(calls_.begin(), calls_.end(), "CloseIO"), calls_.end());
  EXPECT_EQ(process->stdinQueuedBytes(), 2u);
  shimOpenStdin();
  ASSERT_GE(shim_stdin_, 0);
  std::string got;
  bool eof = false;
  char buf[16];
  ASSERT_TRUE(runUntil(dispatcher_, [&] {
    const ssize_t n = ::read(shim_stdin_, buf, sizeof(buf));
    if (n > 0) {
      got.append(buf, n);
    }
    eof = n == 0;
    return eof;
  }));
  EXPECT_EQ(got, "x\n");
  EXPECT_NE(std::find(calls_.begin(), calls_.end(), "CloseIO"), calls_.end());
  shimClose(shim_stdout_);
  shimClose(shim_stderr_);
  answerWait(0);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return recorder_.exit.has_value(); }));
}

TEST_F(ContainerdExecTest, StdinStaysOpenAfterTheOutputsEnd) {
  auto process = start(spec(true, true, true));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return wait_ != nullptr && shim_stdin_ >= 0; }));
  shimClose(shim_stdout_);
  shimClose(shim_stderr_);
  settle(dispatcher_);
  Buffer b;
  b.add("later");
  process->writeStdin(b);
  settle(dispatcher_);
  char buf[16];
  EXPECT_EQ(::read(shim_stdin_, buf, sizeof(buf)), 5);
  EXPECT_EQ(std::find(calls_.begin(), calls_.end(), "CloseIO"), calls_.end());
  answerWait(0);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return recorder_.exit.has_value(); }));
}

TEST_F(ContainerdExecTest, WithoutAFifoDirectoryTheSessionIsRefused) {
  options_.fifo_dir = dir_.file("missing");
  auto process = startExec(dispatcher_, *client_, options_, spec(true, true, false), std::nullopt,
                           recorder_);
  ASSERT_FALSE(process.ok());
  EXPECT_NE(process.status().message().find(dir_.file("missing")), absl::string_view::npos)
      << process.status();
  settle(dispatcher_);
  EXPECT_TRUE(calls_.empty());
}

TEST_F(ContainerdExecTest, NoStreamsNoFifos) {
  auto process = start(spec(false, false, false));
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return wait_ != nullptr; }));
  EXPECT_EQ(exec_.stdout(), "");
  EXPECT_EQ(exec_.stderr(), "");
  EXPECT_TRUE(listDir(options_.fifo_dir).empty());
  answerWait(0);
  ASSERT_TRUE(runUntil(dispatcher_, [&] { return recorder_.exit.has_value(); }));
  EXPECT_EQ(recorder_.exit->kind, ExitStatus::Kind::kSuccess);
}

}  // namespace
}  // namespace crisp::containerd
