#pragma once

// Writing to a pipe or FIFO whose reader may be gone. write(2) and splice(2)
// then raise SIGPIPE, which would kill crisp unless the signal is ignored.
// crisp's main ignores it for the whole process; elsewhere (tests, embedders)
// the write blocks the signal around itself and takes back a SIGPIPE it raised
// for this thread, so the caller sees EPIPE either way.

#include <cstddef>

#include <sys/types.h>

#include "source/common/buffer.h"

namespace crisp {

// Whether this process ignores SIGPIPE. Ask once per flush, not per write:
// when it does, the two sigmask calls around every write are pure cost.
bool sigpipeIgnored();

// data.writeTo(fd) that cannot raise SIGPIPE (see above). Returns what
// writeTo() returns, with errno as the write left it.
int writeWithoutSigpipe(Buffer& data, int fd, bool sigpipe_ignored);

// splice(2) of up to `length` bytes from `in_fd` into the pipe `pipe_fd`
// that cannot raise SIGPIPE. Returns what splice() returns, with its errno.
ssize_t spliceWithoutSigpipe(int in_fd, int pipe_fd, size_t length, unsigned flags,
                             bool sigpipe_ignored);

}  // namespace crisp
