#pragma once

// Writing to a pipe or FIFO whose reader may be gone. write(2) then raises
// SIGPIPE, which would kill crisp unless the signal is ignored. crisp's main
// ignores it for the whole process; elsewhere (tests, embedders) the write
// blocks the signal around itself and takes back a SIGPIPE it raised for this
// thread, so the caller sees EPIPE either way.

#include "source/common/buffer.h"

namespace crisp::runtime {

// Whether this process ignores SIGPIPE. Ask once per flush, not per write:
// when it does, the two sigmask calls around every write are pure cost.
bool sigpipeIgnored();

// data.writeTo(fd) that cannot raise SIGPIPE (see above). Returns what
// writeTo() returns, with errno as the write left it.
int writeWithoutSigpipe(Buffer& data, int fd, bool sigpipe_ignored);

}  // namespace crisp::runtime
