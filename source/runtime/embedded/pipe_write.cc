#include "source/runtime/embedded/pipe_write.h"

#include <cerrno>
#include <csignal>
#include <ctime>

#include <pthread.h>

namespace crisp::runtime {

bool sigpipeIgnored() {
  struct sigaction current {};
  return ::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_IGN;
}

int writeWithoutSigpipe(Buffer& data, int fd, bool sigpipe_ignored) {
  if (sigpipe_ignored) {
    return data.writeTo(fd);
  }
  sigset_t pipe_set;
  sigset_t previous;
  ::sigemptyset(&pipe_set);
  ::sigaddset(&pipe_set, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_set, &previous);
  const int n = data.writeTo(fd);
  const int error = errno;
  if (n < 0 && error == EPIPE) {
    const timespec zero{0, 0};
    ::sigtimedwait(&pipe_set, nullptr, &zero);
  }
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  errno = error;
  return n;
}

}  // namespace crisp::runtime
