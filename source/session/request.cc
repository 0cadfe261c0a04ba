#include "source/session/request.h"

namespace crisp::session {

const char* operationName(Operation op) {
  switch (op) {
    case Operation::kExec:
      return "exec";
    case Operation::kAttach:
      return "attach";
    case Operation::kPortForward:
      return "portforward";
  }
  return "unknown";
}

}  // namespace crisp::session
