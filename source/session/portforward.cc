#include "source/session/portforward.h"

#include "absl/strings/str_cat.h"

namespace crisp::session {

absl::StatusOr<uint16_t> parsePort(std::string_view value_view) {
  // The system abseil's StrCat takes no std::string_view.
  const std::string value(value_view);
  if (value.empty()) {
    return absl::InvalidArgumentError("\"port\" header is required");
  }
  uint32_t port = 0;
  bool too_large = false;
  for (char c : value) {
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(
          absl::StrCat("unable to parse \"", value, "\" as a port: invalid syntax"));
    }
    port = port * 10 + static_cast<uint32_t>(c - '0');
    if (port > 65535) {
      // Keep scanning: a later non-digit is a syntax error, reported first
      // as the kubelet's parser does.
      too_large = true;
      port = 65536;
    }
  }
  if (too_large) {
    return absl::InvalidArgumentError(
        absl::StrCat("unable to parse \"", value, "\" as a port: value out of range"));
  }
  if (port == 0) {
    return absl::InvalidArgumentError(absl::StrCat("port \"", value, "\" must be > 0"));
  }
  return static_cast<uint16_t>(port);
}

const char* portStreamTypeName(PortStreamType t) {
  return t == PortStreamType::kError ? "error" : "data";
}

std::optional<PortStreamType> parsePortStreamType(std::string_view value) {
  if (value == "error") {
    return PortStreamType::kError;
  }
  if (value == "data") {
    return PortStreamType::kData;
  }
  return std::nullopt;
}

std::string forwardingError(uint16_t port, std::string_view pod_sandbox_id,
                            std::string_view error) {
  return absl::StrCat("error forwarding port ", port, " to pod ", std::string(pod_sandbox_id),
                      ", uid : ", std::string(error));
}

std::string portErrorText(uint16_t port, std::string_view pod_sandbox_id,
                          const PortError& error) {
  if (error.kind == PortError::Kind::kRuntimeReported) {
    return error.message;
  }
  return forwardingError(port, pod_sandbox_id, error.message);
}

std::string streamTimeoutError(std::string_view connection, std::string_view request_id) {
  return absl::StrCat("(conn=", std::string(connection), ", request=", std::string(request_id),
                      ") timed out waiting for streams");
}

std::string duplicateStreamError(std::string_view request_id, PortStreamType type) {
  return absl::StrCat("error processing stream for request ", std::string(request_id), ": ",
                      portStreamTypeName(type), " stream already assigned");
}

bool writesErrorText(PortError::Kind kind) { return kind != PortError::Kind::kConnectionLost; }

const char* portConnectResultName(PortConnectResult r) {
  switch (r) {
    case PortConnectResult::kOk:
      return "ok";
    case PortConnectResult::kRefused:
      return "refused";
    case PortConnectResult::kError:
      return "error";
  }
  return "error";
}

PortConnectResult connectResultOf(PortError::Kind kind) {
  return kind == PortError::Kind::kRefused ? PortConnectResult::kRefused
                                           : PortConnectResult::kError;
}

stats::Counter& PortForwardMetrics::result(PortConnectResult r) {
  switch (r) {
    case PortConnectResult::kOk:
      return ok;
    case PortConnectResult::kRefused:
      return refused;
    case PortConnectResult::kError:
      return error;
  }
  return error;
}

PortForwardMetrics& PortForwardMetrics::get() {
  static PortForwardMetrics* metrics = [] {
    auto& registry = stats::registry();
#define CRISP_PORTFORWARD_COUNTER_FAMILY(field, name, help, labels) \
  stats::Family& field = registry.family(name, help, stats::Kind::kCounter, labels);
#define CRISP_PORTFORWARD_GAUGE_FAMILY(field, name, help, labels) \
  stats::Family& field = registry.family(name, help, stats::Kind::kGauge, labels);
    CRISP_PORTFORWARD_METRICS(CRISP_PORTFORWARD_COUNTER_FAMILY, CRISP_PORTFORWARD_GAUGE_FAMILY)
#undef CRISP_PORTFORWARD_COUNTER_FAMILY
#undef CRISP_PORTFORWARD_GAUGE_FAMILY
#define CRISP_PORTFORWARD_FAMILY_NAME(field, name, help, labels) field,
    return new PortForwardMetrics{
        CRISP_PORTFORWARD_METRICS(CRISP_PORTFORWARD_FAMILY_NAME, CRISP_PORTFORWARD_FAMILY_NAME)
            connections_total.counter({"ok"}),
        connections_total.counter({"refused"}), connections_total.counter({"error"}),
        connections_active.gauge(), spliced_bytes_total.counter({})};
#undef CRISP_PORTFORWARD_FAMILY_NAME
  }();
  return *metrics;
}

}  // namespace crisp::session
