#include "source/stream/http_version_sniffer.h"

#include <algorithm>
#include <string>

#include "source/stream/http2_connection.h"

namespace crisp::stream {

HttpVersionSniffer::HttpVersionSniffer(event::Dispatcher& dispatcher, TransportPtr transport,
                                       std::chrono::milliseconds timeout, Done done)
    : transport_(std::move(transport)),
      done_(std::move(done)),
      deadline_(dispatcher, [this] { finish(Result::kTimeout); }) {
  deadline_.enable(timeout);
  transport_->setCallbacks(*this);
  transport_->start();
}

HttpVersionSniffer::~HttpVersionSniffer() = default;

TransportPtr HttpVersionSniffer::releaseTransport() { return std::move(transport_); }

void HttpVersionSniffer::onTransportData(Buffer& data) {
  seen_.move(data);
  if (finished_) {
    return;
  }
  const std::string alpn = transport_->alpnProtocol();
  if (alpn == "h2") {
    finish(Result::kHttp2);
    return;
  }
  if (!alpn.empty()) {
    finish(Result::kHttp1);
    return;
  }
  const size_t n = std::min(seen_.length(), kHttp2ClientPreface.size());
  std::string head(n, '\0');
  seen_.copyOut(head.data(), n);
  if (head != kHttp2ClientPreface.substr(0, n)) {
    finish(Result::kHttp1);
  } else if (n == kHttp2ClientPreface.size()) {
    finish(Result::kHttp2);
  }
}

void HttpVersionSniffer::onTransportEof() { finish(Result::kClosed); }

void HttpVersionSniffer::onTransportError(const std::string&) { finish(Result::kClosed); }

void HttpVersionSniffer::finish(Result result) {
  if (finished_) {
    return;
  }
  finished_ = true;
  deadline_.disable();
  if (result == Result::kHttp1 || result == Result::kHttp2) {
    transport_->pauseReading(true);
    transport_->unreadInput(seen_);
  } else {
    transport_->close();
  }
  done_(*this, result);
}

}  // namespace crisp::stream
