#pragma once

// RawSocketTransport: a Transport over a connected stream socket (TCP, or a
// unix socket in tests) watched on an event::Dispatcher.
//
//   auto transport = std::make_unique<RawSocketTransport>(dispatcher, fd, "10.0.0.7:51234");
//   transport->setCallbacks(owner);
//   transport->start();
//
// - It owns the descriptor from construction (made non-blocking, TCP_NODELAY
//   set where it applies) and closes it on close() or destruction.
// - `initial_input` is delivered first, from the loop after start();
//   `initial_output` is written before anything queued later.
// - Reading: at most read_budget_bytes per wake-up, in chunks of up to
//   read_chunk_bytes, each delivered as it is read, so one busy connection
//   cannot hold the loop and a pause takes effect between chunks. A read of 0
//   is onTransportEof() (after every byte before it); the socket is not read
//   again.
// - Writing: write() only queues; the bytes go out from the loop with
//   sendmsg(MSG_NOSIGNAL) over the queue's segments (a broken peer is an
//   error, never SIGPIPE), at most write_budget_bytes per wake-up.
//   onTransportDrained() follows every write that made progress, inside the
//   write loop, so an owner that refills its share keeps the socket busy.
//   The socket is watched for writability only while the kernel refuses more.
// - writeFromPipe(): the frame header is sent with MSG_MORE and the payload
//   spliced from the pipe, as far as the socket takes it inside the call; a
//   payload the socket did not take whole is finished from the loop (through
//   a dup of the pipe) before the bytes written after it.
// - readIntoPipe(): the payload is spliced from the socket into the pipe
//   (through a dup of it) from the loop, within the read budget; a progress
//   callback may ask for the next read's limit before that read. When the
//   socket holds bytes and the pipe takes none, the pipe is watched for
//   writability instead of the socket for input, and (with
//   failOnPeerCloseWhilePaused()) the peer's close is looked for as while
//   paused.
// - shutdownWrite(): shutdown(SHUT_WR) once the queue is empty.
// - A failed read or write (reset, broken pipe) closes the socket and reports
//   onTransportError("read: Connection reset by peer", ...). While reading is
//   paused and nothing is queued the socket is not watched at all, so a peer's
//   reset is noticed on the next write or resume.
//
// Lives on one dispatcher; create, use and destroy it on that thread.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "source/common/buffer.h"
#include "source/common/dispatcher.h"
#include "source/stream/paused_peer_check.h"
#include "source/stream/transport.h"

namespace crisp::stream {

struct RawSocketTransportOptions {
  // Most bytes read per wake-up of the loop.
  size_t read_budget_bytes = 256 * 1024;
  // Most bytes asked of one read(2).
  size_t read_chunk_bytes = 64 * 1024;
  // Most bytes written per wake-up of the loop.
  size_t write_budget_bytes = 1024 * 1024;
};

class RawSocketTransport : public Transport {
 public:
  // Takes ownership of `fd`, a connected stream socket. Nothing is read or
  // written before start().
  RawSocketTransport(event::Dispatcher& dispatcher, int fd, std::string peer_address,
                     Buffer&& initial_input = Buffer(), Buffer&& initial_output = Buffer(),
                     const RawSocketTransportOptions& options = {});
  ~RawSocketTransport() override;
  RawSocketTransport(const RawSocketTransport&) = delete;
  RawSocketTransport& operator=(const RawSocketTransport&) = delete;

  // Transport
  void setCallbacks(TransportCallbacks& callbacks) override { callbacks_ = &callbacks; }
  void start() override;
  void write(Buffer& data) override;
  bool writeFromPipe(Buffer& header, int pipe_fd, size_t length) override;
  bool canWriteFromPipe() const override { return true; }
  size_t pipeBytesPending() const override { return splice_left_; }
  bool readIntoPipe(int pipe_fd, size_t length) override;
  void limitNextRead(size_t bytes) override { read_limit_once_ = bytes; }
  bool canReadIntoPipe() const override { return true; }
  size_t pipeInputPending() const override { return pipe_in_left_; }
  void cancelReadIntoPipe() override;
  size_t queuedBytes() const override;
  size_t unacknowledgedBytes() const override;
  void pauseReading(bool paused) override;
  void failOnPeerCloseWhilePaused() override;
  void unreadInput(Buffer& data) override;
  void shutdownWrite() override;
  void close() override;
  const std::string& peerAddress() const override { return peer_address_; }

  // The socket, -1 once closed. For socket options and tests; do not close it.
  int fd() const { return fd_; }
  bool closed() const { return fd_ < 0; }
  // Bytes read from / written to the socket so far.
  uint64_t bytesRead() const { return bytes_read_; }
  uint64_t bytesWritten() const { return bytes_written_; }

 private:
  void onSocketEvent(short events);
  // The pipe of a readIntoPipe() transfer takes bytes again.
  void onPipeWritable();
  void onSplicePipeReadable();
  void onScheduled();
  // Runs the loop-side work soon (next loop iteration).
  void schedule();
  // Delivers held input, EOF, and (when `read_socket`) what the socket has,
  // within the read budget.
  void processInput(bool read_socket);
  // Reads one chunk into input_. >0 bytes, 0 EOF, -1 would block, -2 failed
  // (the transport is closed and the owner told).
  long readChunk(size_t max);
  // One splice(2) of at most `max` bytes of a readIntoPipe() transfer. >0
  // bytes moved, 0 EOF, -1 would block (the socket is empty, or the pipe is
  // full and now watched), -2 failed (closed and reported), -3 the pipe
  // failed (the transfer ended and the owner was told).
  long spliceIn(size_t max);
  void endPipeInput();
  // Writes from the queue within the write budget, then shuts the write side
  // down if asked and the queue is empty.
  void flush();
  // One sendmsg(2) of output_ or one splice(2) of the pending payload, at
  // most `max` bytes. >0 bytes written, 0 the socket takes no more, -1
  // failed (`error` says why; nothing is closed or reported here).
  long writeStep(size_t max, std::string& error);
  // Closes the descriptor of a finished or dropped spliced payload.
  void endSplice();
  void updateWatcher();
  // Closes the socket and reports `detail` to the owner.
  void fail(const std::string& detail);

  int fd_;
  const std::string peer_address_;
  const RawSocketTransportOptions options_;
  TransportCallbacks* callbacks_ = nullptr;
  event::FdWatcherPtr watcher_;
  event::TimerPtr scheduled_;
  std::unique_ptr<PausedPeerCheck> peer_check_;  // active while paused

  Buffer input_;   // read or handed back, not yet delivered
  Buffer output_;  // queued, not yet written
  // A spliced payload not yet written: splice_left_ bytes still in the pipe
  // splice_fd_ (ours once the writeFromPipe() call returned), then
  // output_after_, what was queued behind it.
  int splice_fd_ = -1;
  bool splice_fd_owned_ = false;
  size_t splice_left_ = 0;
  // The pipe held less than the payload still promised (another reader took
  // some): the rest waits for the pipe to be readable, not the socket
  // writable.
  bool splice_pipe_empty_ = false;
  event::FdWatcherPtr splice_pipe_watcher_;
  Buffer output_after_;
  // A readIntoPipe() transfer: pipe_in_left_ bytes still to move into our
  // descriptor pipe_in_fd_.
  int pipe_in_fd_ = -1;
  size_t pipe_in_left_ = 0;
  bool pipe_in_blocked_ = false;  // the pipe is full; waiting for writability
  event::FdWatcherPtr pipe_in_watcher_;
  // The most bytes the next read may take (limitNextRead()); 0 for no limit.
  size_t read_limit_once_ = 0;
  bool sigpipe_ignored_ = false;
  event::Dispatcher& dispatcher_;
  // A failure met inside writeFromPipe(), reported from the loop.
  std::string pending_error_;

  bool started_ = false;
  bool read_paused_ = false;
  bool fail_on_peer_close_ = false;  // while paused (failOnPeerCloseWhilePaused)
  bool peer_eof_ = false;  // the socket read 0
  bool eof_delivered_ = false;
  bool write_blocked_ = false;  // the kernel refused more; waiting for writability
  bool shutdown_requested_ = false;
  bool write_shut_ = false;

  uint64_t bytes_read_ = 0;
  uint64_t bytes_written_ = 0;
};

}  // namespace crisp::stream
