// Test-only main for the corpus replay tests: runs every file of the corpus
// directories named on the command line through the fuzz target linked into
// the same binary (its LLVMFuzzerTestOneInput), one gtest test per file, with
// no fuzzing engine. This keeps the corpora, and every crash found by fuzzing
// and stored there, exercised by a plain `bazel test` with gcc.
//
//   corpus_replay_test test/fuzz/corpus/spdy_codec [more dirs...] [gtest flags]
//
// Relative directories are taken from the current directory, which under
// `bazel test` is the runfiles tree of the workspace. A directory that is
// missing or empty is a failure, so that a broken data dependency cannot pass
// silently. A failed property check inside the target aborts the process; the
// last "replaying" line on stderr names the file. As libFuzzer's -timeout and
// -rss_limit_mb would, a watchdog aborts the run when one input takes longer
// than kTimeLimit or the process grows past kRssLimitBytes, naming the file,
// so that a hang or a runaway allocation fails the test instead of the machine.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace crisp::fuzz {
namespace {

// Regular files directly in `dir`, sorted by name; nothing when it cannot be read.
std::vector<std::string> listCorpus(const std::string& dir) {
  std::vector<std::string> files;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    return files;
  }
  while (const dirent* entry = readdir(d)) {
    const std::string path = dir + "/" + entry->d_name;
    struct stat st;
    // stat (not lstat): Bazel's runfiles tree holds symlinks to the sources.
    if (entry->d_name[0] != '.' && stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      files.push_back(path);
    }
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  return files;
}

constexpr std::chrono::seconds kTimeLimit{10};
constexpr size_t kRssLimitBytes = size_t{2048} << 20;

size_t residentBytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0;
  size_t resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// Watches the input being replayed from a second thread.
class Watchdog {
 public:
  Watchdog() : thread_([this] { run(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void begin(const std::string& file) {
    std::lock_guard<std::mutex> lock(mutex_);
    file_ = file;
    start_ = std::chrono::steady_clock::now();
    active_ = true;
  }
  void end() {
    std::lock_guard<std::mutex> lock(mutex_);
    active_ = false;
  }

 private:
  void run() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!wake_.wait_for(lock, std::chrono::milliseconds(50), [this] { return stop_; })) {
      if (!active_) {
        continue;
      }
      const auto elapsed = std::chrono::steady_clock::now() - start_;
      const size_t rss = residentBytes();
      if (elapsed > kTimeLimit || rss > kRssLimitBytes) {
        std::fprintf(stderr,
                     "corpus replay: %s: still running after %lld ms with %zu MiB resident "
                     "(limits %lld s, %zu MiB): a hang or runaway allocation\n",
                     file_.c_str(),
                     static_cast<long long>(
                         std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count()),
                     rss >> 20, static_cast<long long>(kTimeLimit.count()), kRssLimitBytes >> 20);
        std::fflush(stderr);
        std::abort();
      }
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool active_ = false;
  std::string file_;
  std::chrono::steady_clock::time_point start_;
  // Last: starts once the fields above exist.
  std::thread thread_;
};

class ReplayFile : public ::testing::Test {
 public:
  ReplayFile(std::string path, Watchdog& watchdog) : path_(std::move(path)), watchdog_(watchdog) {}

  void TestBody() override {
    std::ifstream in(path_, std::ios::binary);
    ASSERT_TRUE(in.good()) << "cannot open " << path_;
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                                  std::istreambuf_iterator<char>());
    std::fprintf(stderr, "replaying %s (%zu bytes)\n", path_.c_str(), bytes.size());
    // A copy of exactly the file's size, so that sanitizer builds catch reads
    // past the end as they would under libFuzzer.
    std::vector<uint8_t> input(bytes.begin(), bytes.end());
    watchdog_.begin(path_);
    const int result = LLVMFuzzerTestOneInput(input.empty() ? nullptr : input.data(), input.size());
    watchdog_.end();
    EXPECT_EQ(result, 0);
  }

 private:
  const std::string path_;
  Watchdog& watchdog_;
};

class EmptyCorpus : public ::testing::Test {
 public:
  explicit EmptyCorpus(std::string dir) : dir_(std::move(dir)) {}
  void TestBody() override { FAIL() << "no corpus files in " << dir_; }

 private:
  const std::string dir_;
};

std::string baseName(const std::string& path) { return path.substr(path.rfind('/') + 1); }

}  // namespace
}  // namespace crisp::fuzz

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR... [gtest flags]\n", argv[0]);
    return 2;
  }
  crisp::fuzz::Watchdog watchdog;
  for (int i = 1; i < argc; ++i) {
    const std::string dir = argv[i];
    const std::string suite = crisp::fuzz::baseName(dir);
    const std::vector<std::string> files = crisp::fuzz::listCorpus(dir);
    if (files.empty()) {
      ::testing::RegisterTest(
          suite.c_str(), "HasFiles", nullptr, nullptr, __FILE__, __LINE__,
          [dir]() -> ::testing::Test* { return new crisp::fuzz::EmptyCorpus(dir); });
      continue;
    }
    for (const std::string& file : files) {
      ::testing::RegisterTest(suite.c_str(), crisp::fuzz::baseName(file).c_str(), nullptr, nullptr,
                              __FILE__, __LINE__, [file, &watchdog]() -> ::testing::Test* {
                                return new crisp::fuzz::ReplayFile(file, watchdog);
                              });
    }
  }
  return RUN_ALL_TESTS();
}
