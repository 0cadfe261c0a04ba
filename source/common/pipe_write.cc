#include "source/common/pipe_write.h"

#include <cerrno>
#include <csignal>
#include <ctime>

#include <fcntl.h>
#include <pthread.h>

namespace crisp {
namespace {

// Runs `write` with SIGPIPE blocked for this thread, taking back a SIGPIPE it
// raised, unless the process ignores the signal anyway.
template <typename Write>
auto withoutSigpipe(bool sigpipe_ignored, Write&& write) {
  if (sigpipe_ignored) {
    return write();
  }
  sigset_t pipe_set;
  sigset_t previous;
  ::sigemptyset(&pipe_set);
  ::sigaddset(&pipe_set, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_set, &previous);
  const auto n = write();
  const int error = errno;
  if (n < 0 && error == EPIPE) {
    const timespec zero{0, 0};
    ::sigtimedwait(&pipe_set, nullptr, &zero);
  }
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  errno = error;
  return n;
}

}  // namespace

bool sigpipeIgnored() {
  struct sigaction current {};
  return ::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_IGN;
}

int writeWithoutSigpipe(Buffer& data, int fd, bool sigpipe_ignored) {
  return withoutSigpipe(sigpipe_ignored, [&] { return data.writeTo(fd); });
}

ssize_t spliceWithoutSigpipe(int in_fd, int pipe_fd, size_t length, unsigned flags,
                             bool sigpipe_ignored) {
  return withoutSigpipe(sigpipe_ignored, [&] {
    ssize_t n;
    do {
      n = ::splice(in_fd, nullptr, pipe_fd, nullptr, length, flags);
    } while (n < 0 && errno == EINTR);
    return n;
  });
}

}  // namespace crisp
