#include "source/runtime/streamserver/status_json.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

#include "source/runtime/streamserver/status.pb.h"

namespace crisp::streamserver {
namespace {

// The prefixes the kubelet's streaming library puts before the runtime's own
// text; crisp's adapters put them back (session::errorStreamPayload()).
constexpr std::string_view kNonZeroPrefix = "command terminated with non-zero exit code: ";
constexpr std::string_view kExecPrefix = "error executing command in container: ";
constexpr std::string_view kAttachPrefix = "error attaching to container: ";

std::optional<Status> parseStatus(std::string_view json) {
  Status status;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  if (!google::protobuf::util::JsonStringToMessage(
           google::protobuf::StringPiece(json.data(), json.size()), &status, options)
           .ok()) {
    return std::nullopt;
  }
  return status;
}

std::string withoutPrefix(const std::string& text, std::string_view prefix) {
  return text.compare(0, prefix.size(), prefix.data(), prefix.size()) == 0
             ? text.substr(prefix.size())
             : text;
}

}  // namespace

session::ExitStatus exitStatusFromJson(std::string_view json, session::Operation operation) {
  std::optional<Status> status = parseStatus(json);
  if (!status.has_value() || status->status().empty()) {
    std::string shown(json.substr(0, 200));
    return session::ExitStatus::error("the runtime's stream server wrote an error status crisp "
                                      "cannot read: " +
                                      shown);
  }
  if (status->status() == "Success") {
    return session::ExitStatus::success();
  }
  if (status->reason() == "NonZeroExitCode") {
    for (const StatusCause& cause : status->details().causes()) {
      uint32_t code = 0;
      if (cause.reason() == "ExitCode" && absl::SimpleAtoi(cause.message(), &code) && code <= 255) {
        session::ExitStatus exited = session::ExitStatus::exited(static_cast<int>(code));
        exited.message = withoutPrefix(status->message(), kNonZeroPrefix);
        return exited;
      }
    }
  }
  // The kubelet's library puts the runtime's own text, behind its prefix, in
  // the first cause of an InternalError; crisp's adapters add the rest again.
  const std::string_view prefix =
      operation == session::Operation::kAttach ? kAttachPrefix : kExecPrefix;
  std::string text = status->message();
  if (!status->details().causes().empty()) {
    const std::string& cause = status->details().causes(0).message();
    if (cause.compare(0, prefix.size(), prefix.data(), prefix.size()) == 0) {
      text = cause;
    }
  }
  text = withoutPrefix(text, prefix);
  if (text.empty()) {
    text = "the runtime's stream server reported a failure (" + status->reason() + ")";
  }
  return session::ExitStatus::error(std::move(text));
}

std::optional<std::string> statusMessage(std::string_view body) {
  const absl::string_view trimmed =
      absl::StripAsciiWhitespace(absl::string_view(body.data(), body.size()));
  if (trimmed.empty() || trimmed.front() != '{') {
    return std::nullopt;
  }
  std::optional<Status> status = parseStatus(std::string_view(trimmed.data(), trimmed.size()));
  if (!status.has_value() || status->message().empty()) {
    return std::nullopt;
  }
  return status->message();
}

}  // namespace crisp::streamserver
