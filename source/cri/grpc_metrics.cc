#include "source/cri/grpc_metrics.h"

#include "source/cri/grpc_common.h"

namespace crisp::cri {
namespace {

constexpr std::string_view kKnownServices[] = {"/runtime.v1.RuntimeService/",
                                               "/runtime.v1.ImageService/"};
constexpr size_t kMaxPathLabelBytes = 128;

bool isPathChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == '-';
}

// "/" service "/" method, both non-empty, from a small alphabet.
bool isWellFormedPath(std::string_view path) {
  if (path.size() < 4 || path.size() > kMaxPathLabelBytes || path[0] != '/') {
    return false;
  }
  const size_t slash = path.find('/', 1);
  if (slash == std::string_view::npos || slash == 1 || slash + 1 == path.size()) {
    return false;
  }
  for (size_t i = 1; i < path.size(); ++i) {
    if (i != slash && !isPathChar(path[i])) {
      return false;
    }
  }
  return true;
}

}  // namespace

CriMetrics& criMetrics() {
  static CriMetrics* metrics = [] {
#define CRISP_CRI_MAKE_FAMILY(member, name, help, ...) \
  stats::registry().family(name, help, stats::Kind::kCounter, {__VA_ARGS__}),
    return new CriMetrics{CRISP_CRI_METRICS(CRISP_CRI_MAKE_FAMILY)};
#undef CRISP_CRI_MAKE_FAMILY
  }();
  return *metrics;
}

std::string callMetricMethod(std::string_view path) {
  if (!isWellFormedPath(path)) {
    return "invalid";
  }
  for (std::string_view service : kKnownServices) {
    if (path.substr(0, service.size()) == service) {
      return std::string(path.substr(service.size()));
    }
  }
  return std::string(path);
}

void recordCall(std::string_view path, absl::StatusCode code) {
  criMetrics().calls_total.counter({callMetricMethod(path), std::string(grpcCodeName(code))}).inc();
}

}  // namespace crisp::cri
