#pragma once

// Metrics of crisp's CRI gRPC front, declared in one list (CRISP_CRI_METRICS) and
// reached through criMetrics(). Label values:
//   method: the short method name for /runtime.v1.RuntimeService/* and
//           /runtime.v1.ImageService/* ("Version", "ListContainers"), the full path
//           for any other well-formed path, "invalid" for anything else (so that a
//           bad client cannot create unbounded label values with junk paths);
//   code:   the gRPC code name ("OK", "NOT_FOUND", "CANCELLED", ...).

#include <string>
#include <string_view>

#include "absl/status/status.h"

#include "source/admin/metrics.h"

namespace crisp::cri {

// COUNTER(member, metric name, help, label names...)
#define CRISP_CRI_METRICS(COUNTER)                                                          \
  COUNTER(calls_total, "crisp_cri_calls_total",                                             \
          "CRI gRPC calls answered by the front, by method and gRPC status code", "method", \
          "code")

struct CriMetrics {
#define CRISP_CRI_DECLARE_FAMILY(member, name, help, ...) stats::Family& member;
  CRISP_CRI_METRICS(CRISP_CRI_DECLARE_FAMILY)
#undef CRISP_CRI_DECLARE_FAMILY
};

// The process-wide CRI metrics, registered on first use. Thread-safe.
CriMetrics& criMetrics();

// The method label for a request path (see above).
std::string callMetricMethod(std::string_view path);

// Counts one finished call in crisp_cri_calls_total. Thread-safe.
void recordCall(std::string_view path, absl::StatusCode code);

}  // namespace crisp::cri
