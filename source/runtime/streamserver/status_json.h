#pragma once

// Reads what a runtime's stream server writes as a metav1.Status JSON document
// (the v4 error stream, the body of a refused upgrade) back into crisp's terms.

#include <optional>
#include <string>
#include <string_view>

#include "source/session/request.h"
#include "source/session/runtime.h"

namespace crisp::streamserver {

// The ExitStatus for a v4 error-stream document, such that crisp's own
// adapters write the same Status again:
//   "status":"Success"                          -> success
//   reason NonZeroExitCode, cause ExitCode "N"  -> exited(N), with the message
//                                                  minus the "command terminated
//                                                  with non-zero exit code: " prefix
//   any other failure                           -> error(text), where text is the
//                                                  first cause's message when it
//                                                  has the exec/attach prefix,
//                                                  minus that prefix; else the
//                                                  Status message
// A document that is not a Status is an error naming it.
session::ExitStatus exitStatusFromJson(std::string_view json, session::Operation operation);

// The `message` of a Status document, nullopt when `body` is not one.
std::optional<std::string> statusMessage(std::string_view body);

}  // namespace crisp::streamserver
