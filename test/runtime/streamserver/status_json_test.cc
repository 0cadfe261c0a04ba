#include "source/runtime/streamserver/status_json.h"

#include <gtest/gtest.h>

#include "source/session/remotecommand.h"

namespace crisp::streamserver {
namespace {

using session::ExitStatus;
using session::RemoteCommandVersion;

session::ExecSpec spec(session::Operation op) {
  session::ExecSpec s;
  s.operation = op;
  s.container_id = "c";
  s.command = {"sh", "-c", "exit 3"};
  return s;
}

// What crisp writes for the status it read must be what the runtime wrote.
void expectRoundTrip(session::Operation op, const ExitStatus& status) {
  const std::string wire = session::errorStreamPayload(RemoteCommandVersion::kV4, spec(op), status);
  const ExitStatus read = exitStatusFromJson(wire, op);
  EXPECT_EQ(session::errorStreamPayload(RemoteCommandVersion::kV4, spec(op), read), wire);
}

TEST(StatusJsonTest, ReadsWhatTheKubeletsLibraryWrites) {
  expectRoundTrip(session::Operation::kExec, ExitStatus::success());
  expectRoundTrip(session::Operation::kExec, ExitStatus::exited(3));
  expectRoundTrip(session::Operation::kExec, ExitStatus::exited(255));
  expectRoundTrip(session::Operation::kExec, ExitStatus::error("no such file \"x\"\n<&>"));
  expectRoundTrip(session::Operation::kAttach, ExitStatus::error("container gone"));
}

TEST(StatusJsonTest, ExitCodeAndMessage) {
  const ExitStatus s = exitStatusFromJson(
      R"({"metadata":{},"status":"Failure","message":"command terminated with non-zero exit )"
      R"(code: error executing command [false], exit code 1","reason":"NonZeroExitCode",)"
      R"("details":{"causes":[{"reason":"ExitCode","message":"1"}]}})",
      session::Operation::kExec);
  EXPECT_EQ(s.kind, ExitStatus::Kind::kNonZeroExit);
  EXPECT_EQ(s.exit_code, 1);
  EXPECT_EQ(s.message, "error executing command [false], exit code 1");
}

TEST(StatusJsonTest, ExitCodeOutOfRangeIsAnError) {
  const ExitStatus s = exitStatusFromJson(
      R"({"status":"Failure","message":"m","reason":"NonZeroExitCode",)"
      R"("details":{"causes":[{"reason":"ExitCode","message":"300"}]}})",
      session::Operation::kExec);
  EXPECT_EQ(s.kind, ExitStatus::Kind::kError);
  EXPECT_EQ(s.message, "m");
}

TEST(StatusJsonTest, GarbageIsAnErrorNamingIt) {
  const ExitStatus s = exitStatusFromJson("not json", session::Operation::kExec);
  EXPECT_EQ(s.kind, ExitStatus::Kind::kError);
  EXPECT_NE(s.message.find("not json"), std::string::npos);
}

TEST(StatusJsonTest, StatusMessageOfABody) {
  EXPECT_EQ(statusMessage(R"( {"kind":"Status","message":"nope","code":403} )"), "nope");
  EXPECT_EQ(statusMessage("404 page not found\n"), std::nullopt);
  EXPECT_EQ(statusMessage("{broken"), std::nullopt);
}

}  // namespace
}  // namespace crisp::streamserver
