#include "source/runtime/embedded/main_process.h"

#include "absl/strings/str_cat.h"

#include "source/common/logger.h"

namespace crisp::runtime {

void AttachLink::post(std::function<void()> fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (dispatcher_ != nullptr) {
    dispatcher_->post(std::move(fn));
  }
}

void AttachLink::disconnect() {
  std::lock_guard<std::mutex> lock(mutex_);
  dispatcher_ = nullptr;
}

bool MainHandle::post(std::function<void(MainProcess*)> fn) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (host_ == nullptr) {
    return false;
  }
  host_->post([self = shared_from_this(), fn = std::move(fn)] { fn(self->main); });
  return true;
}

void MainHandle::setHost(event::Dispatcher* host) {
  std::lock_guard<std::mutex> lock(mutex_);
  host_ = host;
}

MainProcess::MainProcess(event::Dispatcher& host, std::string container_id, SpawnedProcess process,
                         bool stdin_open, std::function<void(int)> on_finished)
    : container_id_(std::move(container_id)),
      on_finished_(std::move(on_finished)),
      child_(host, std::move(process), *this, stdin_open) {}

MainProcess::~MainProcess() {
  const session::ExitStatus status = session::ExitStatus::error(
      absl::StrCat("container \"", container_id_, "\" was stopped by crisp"));
  for (const auto& link : sinks_) {
    link->post([link, status] {
      if (link->session != nullptr) {
        link->session->deliverExit(status);
      }
    });
  }
}

void MainProcess::attach(std::shared_ptr<AttachLink> link,
                         std::optional<session::TerminalSize> initial) {
  if (child_.finished()) {
    const session::ExitStatus status = session::ExitStatus::error(
        absl::StrCat("container \"", container_id_, "\" is not running"));
    link->post([link, status] {
      if (link->session != nullptr) {
        link->session->deliverExit(status);
      }
    });
    return;
  }
  if (initial.has_value()) {
    child_.resize(*initial);
  }
  sinks_.push_back(std::move(link));
}

void MainProcess::detach(const std::shared_ptr<AttachLink>& link) {
  for (auto it = sinks_.begin(); it != sinks_.end(); ++it) {
    if (*it == link) {
      sinks_.erase(it);
      break;
    }
  }
}

void MainProcess::writeStdin(const std::shared_ptr<AttachLink>& link,
                             std::shared_ptr<const std::string> bytes) {
  if (!child_.stdinOpen()) {
    ack(link, bytes->size());
    return;
  }
  stdin_owners_.emplace_back(link, bytes->size());
  Buffer data;
  data.add(*bytes);
  child_.writeStdin(data);
}

void MainProcess::ack(const std::shared_ptr<AttachLink>& link, size_t bytes) {
  link->post([link, bytes] {
    if (link->session != nullptr) {
      link->session->ackStdin(bytes);
    }
  });
}

void MainProcess::onChildOutput(bool is_stderr, Buffer& data) {
  if (sinks_.empty()) {
    data.drain(data.length());
    return;
  }
  // One copy shared by every attached session; each session's loop turns it
  // into its own Buffer.
  auto bytes = std::make_shared<const std::string>(data.toString());
  for (const auto& link : sinks_) {
    if (is_stderr ? !link->want_stderr : !link->want_stdout) {
      continue;
    }
    link->post([link, bytes, is_stderr] {
      if (link->session != nullptr) {
        link->session->deliverOutput(is_stderr, *bytes);
      }
    });
  }
}

void MainProcess::onChildStdinConsumed(size_t bytes) {
  // Attribute consumed bytes to their sessions in queue order, one
  // acknowledgement per session.
  std::vector<std::pair<std::shared_ptr<AttachLink>, size_t>> acks;
  while (bytes > 0 && !stdin_owners_.empty()) {
    auto& [weak, count] = stdin_owners_.front();
    const size_t taken = std::min(bytes, count);
    bytes -= taken;
    count -= taken;
    if (auto link = weak.lock()) {
      if (!acks.empty() && acks.back().first == link) {
        acks.back().second += taken;
      } else {
        acks.emplace_back(std::move(link), taken);
      }
    }
    if (count == 0) {
      stdin_owners_.pop_front();
    }
  }
  for (const auto& [link, n] : acks) {
    ack(link, n);
  }
}

void MainProcess::onChildFinished(int exit_code, const std::optional<std::string>& exec_failure) {
  CRISP_LOG(kRuntime, info, "container {}: main process {} ended with code {}{}", container_id_,
            child_.pid(), exit_code, exec_failure.has_value() ? " (" + *exec_failure + ")" : "");
  // kubelet's attach reports Success when the stream ends normally; the exit
  // code of the main process is not part of an attach.
  for (const auto& link : sinks_) {
    link->post([link] {
      if (link->session != nullptr) {
        link->session->deliverExit(session::ExitStatus::success());
      }
    });
  }
  sinks_.clear();
  // Stdin of a finished process is gone: release the sessions' counts.
  for (auto& [weak, count] : stdin_owners_) {
    if (auto link = weak.lock()) {
      ack(link, count);
    }
  }
  stdin_owners_.clear();
  on_finished_(exit_code);
}

AttachSession::AttachSession(event::Dispatcher& dispatcher, std::shared_ptr<MainHandle> main,
                             const session::ExecSpec& spec, bool container_tty,
                             bool container_stdin, std::optional<session::TerminalSize> initial,
                             session::ExecCallbacks& callbacks)
    : callbacks_(callbacks),
      main_(std::move(main)),
      link_(std::make_shared<AttachLink>(dispatcher, spec.stdout || (container_tty && spec.stderr),
                                         spec.stderr && !container_tty)),
      tty_(container_tty),
      stdin_enabled_(container_stdin && spec.stdin),
      id_(log::nextId()) {
  link_->session = this;
  if (!tty_) {
    initial.reset();
  }
  const bool posted = main_->post([link = link_, initial](MainProcess* main) {
    if (main != nullptr) {
      main->attach(link, initial);
      return;
    }
    link->post([link] {
      if (link->session != nullptr) {
        link->session->deliverExit(session::ExitStatus::error("container is not running"));
      }
    });
  });
  if (!posted) {
    link_->post([link = link_] {
      if (link->session != nullptr) {
        link->session->deliverExit(session::ExitStatus::error("container runtime stopped"));
      }
    });
  }
  CRISP_LOG(kRuntime, debug, "[A{}] attach to {}", id_, spec.container_id);
}

AttachSession::~AttachSession() {
  *alive_ = false;
  link_->session = nullptr;
  link_->disconnect();
  if (!done_) {
    main_->post([link = link_](MainProcess* main) {
      if (main != nullptr) {
        main->detach(link);
      }
    });
  }
}

void AttachSession::writeStdin(Buffer& data) {
  if (!stdin_enabled_ || stdin_closed_ || done_ || data.empty()) {
    data.drain(data.length());
    return;
  }
  auto bytes = std::make_shared<const std::string>(data.toString());
  stdin_in_flight_ += bytes->size();
  if (stdin_in_flight_ > kStdinHighWatermark) {
    above_high_watermark_ = true;
  }
  main_->post([link = link_, bytes](MainProcess* main) {
    if (main != nullptr) {
      main->writeStdin(link, bytes);
    }
  });
}

void AttachSession::ackStdin(size_t bytes) {
  stdin_in_flight_ -= std::min(bytes, stdin_in_flight_);
  if (above_high_watermark_ && stdin_in_flight_ < kStdinHighWatermark / 2) {
    above_high_watermark_ = false;
    callbacks_.onStdinDrained();
  }
}

void AttachSession::resize(session::TerminalSize size) {
  if (!tty_ || done_) {
    return;
  }
  main_->post([size](MainProcess* main) {
    if (main != nullptr) {
      main->resize(size);
    }
  });
}

void AttachSession::pauseOutput(bool paused) {
  paused_ = paused;
  if (paused) {
    drop_logged_ = false;
  } else if (!pending_.empty() || pending_exit_.has_value()) {
    scheduleFlush();
  }
}

void AttachSession::scheduleFlush() {
  if (flush_scheduled_) {
    return;
  }
  flush_scheduled_ = true;
  link_->post([link = link_] {
    if (link->session != nullptr) {
      link->session->flushPending();
    }
  });
}

void AttachSession::deliverOutput(bool is_stderr, const std::string& bytes) {
  if (done_ || pending_exit_.has_value()) {
    return;
  }
  if (paused_ || !pending_.empty()) {
    if (pending_bytes_ + bytes.size() > kPausedOutputLimit) {
      if (!drop_logged_) {
        drop_logged_ = true;
        CRISP_LOG(kRuntime, warn,
                  "[A{}] attached client is not reading; dropping container output beyond {} "
                  "bytes",
                  id_, kPausedOutputLimit);
      }
      return;
    }
    pending_bytes_ += bytes.size();
    pending_.emplace_back(is_stderr, bytes);
    return;
  }
  Buffer data;
  data.add(bytes);
  if (is_stderr) {
    callbacks_.onStderr(data);
  } else {
    callbacks_.onStdout(data);
  }
}

void AttachSession::deliverExit(const session::ExitStatus& status) {
  if (done_ || pending_exit_.has_value()) {
    return;
  }
  if (paused_ || !pending_.empty()) {
    pending_exit_ = status;
    return;
  }
  done_ = true;
  CRISP_LOG(kRuntime, debug, "[A{}] attach ended", id_);
  callbacks_.onExit(status);
}

void AttachSession::flushPending() {
  flush_scheduled_ = false;
  std::weak_ptr<bool> alive = alive_;
  while (!paused_ && !pending_.empty()) {
    auto [is_stderr, bytes] = std::move(pending_.front());
    pending_.pop_front();
    pending_bytes_ -= bytes.size();
    Buffer data;
    data.add(bytes);
    if (is_stderr) {
      callbacks_.onStderr(data);
    } else {
      callbacks_.onStdout(data);
    }
    if (alive.expired()) {
      return;
    }
  }
  if (!paused_ && pending_.empty() && pending_exit_.has_value() && !done_) {
    done_ = true;
    const session::ExitStatus status = *pending_exit_;
    callbacks_.onExit(status);
  }
}

}  // namespace crisp::runtime
