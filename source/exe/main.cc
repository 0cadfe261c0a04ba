// crisp: a CRI streaming proxy.
//
//   crisp --config FILE        run with the configuration in FILE
//   crisp --check-config FILE  load and check FILE, print what is wrong, exit; with
//                              cri.backend containerd, also ask containerd's socket
//                              and check runtime.containerd.fifo_dir
//
// Exit codes: 0 after a clean stop (SIGTERM once drained, SIGINT) or a valid config, 1 when
// the configuration is invalid or crisp cannot start, 2 for bad arguments.

#include <malloc.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

#include "source/common/logger.h"
#include "source/config/config.h"
#include "source/exe/server.h"
#include "source/runtime/containerd/containerd_runtime.h"

namespace {

constexpr char kUsage[] =
    "usage: crisp --config FILE\n"
    "       crisp --check-config FILE\n";

int usage() {
  std::fputs(kUsage, stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    return usage();
  }
  const std::string flag = argv[1];
  const std::string path = argv[2];
  if (flag != "--config" && flag != "--check-config") {
    return usage();
  }

  auto config = crisp::config::loadFile(path);
  if (!config.ok()) {
    std::fprintf(stderr, "crisp: invalid configuration:\n%s\n",
                 std::string(config.status().message()).c_str());
    return 1;
  }
  if (flag == "--check-config") {
    if (config->cri.backend == crisp::config::CriBackend::kContainerd) {
      // Needs the socket: crisp will run exec sessions through it.
      absl::Status answered = crisp::containerd::ContainerdRuntime::probe(
          *config->cri.upstream, std::chrono::seconds(5));
      if (!answered.ok()) {
        std::fprintf(stderr, "crisp: %s\n", std::string(answered.message()).c_str());
        return 1;
      }
      // And a place for the sessions' FIFOs.
      absl::Status fifo_dir =
          crisp::containerd::ContainerdRuntime::checkFifoDir(config->runtime.containerd.fifo_dir);
      if (!fifo_dir.ok()) {
        std::fprintf(stderr, "crisp: %s\n", std::string(fifo_dir.message()).c_str());
        return 1;
      }
    }
    std::printf("%s: ok\n", path.c_str());
    return 0;
  }

  crisp::log::setLevel(config->log.level);
  // Streaming allocates and frees buffer segments of up to 128 KiB many
  // thousand times a second on each worker thread. With glibc's default
  // (dynamic) thresholds the worker's arena gives its top back to the kernel
  // (madvise) after nearly every burst and faults the pages in again on the
  // next read: that cost as much CPU as the payload copies themselves.
  // Keeping a few MiB per arena makes it go away.
  ::mallopt(M_MMAP_THRESHOLD, 4 << 20);
  ::mallopt(M_TRIM_THRESHOLD, 16 << 20);
  // Writes to a peer that went away must fail with EPIPE, not kill crisp.
  ::signal(SIGPIPE, SIG_IGN);

  auto server = crisp::exe::Server::create(*config);
  if (!server.ok()) {
    CRISP_LOG(kMain, critical, "cannot start: {}", std::string(server.status().message()));
    return 1;
  }
  (*server)->run();
  return 0;
}
