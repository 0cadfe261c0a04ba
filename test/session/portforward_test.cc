#include "source/session/portforward.h"

#include <string>

#include <gtest/gtest.h>

namespace crisp::session {
namespace {

TEST(PortForwardTest, ParsesPortsAsTheKubeletDoes) {
  EXPECT_EQ(parsePort("8080").value(), 8080);
  EXPECT_EQ(parsePort("1").value(), 1);
  EXPECT_EQ(parsePort("65535").value(), 65535);
  EXPECT_EQ(parsePort("0080").value(), 80);
  EXPECT_EQ(parsePort("000000000000000000000000022").value(), 22);
}

TEST(PortForwardTest, RejectsBadPortsWithTheKubeletsReason) {
  struct Case {
    std::string value;
    std::string message;
  };
  for (const Case& c : {
           Case{"", "\"port\" header is required"},
           Case{"0", "port \"0\" must be > 0"},
           Case{"00", "port \"00\" must be > 0"},
           Case{"65536", "unable to parse \"65536\" as a port: value out of range"},
           Case{"99999999999999999999",
                "unable to parse \"99999999999999999999\" as a port: "
                "value out of range"},
           Case{"-1", "unable to parse \"-1\" as a port: invalid syntax"},
           Case{"+80", "unable to parse \"+80\" as a port: invalid syntax"},
           Case{" 80", "unable to parse \" 80\" as a port: invalid syntax"},
           Case{"80 ", "unable to parse \"80 \" as a port: invalid syntax"},
           Case{"8_0", "unable to parse \"8_0\" as a port: invalid syntax"},
           Case{"0x50", "unable to parse \"0x50\" as a port: invalid syntax"},
           Case{"99999x", "unable to parse \"99999x\" as a port: invalid syntax"},
           Case{std::string("80\0", 3),
                "unable to parse \"" + std::string("80\0", 3) + "\" as a port: invalid syntax"},
       }) {
    absl::StatusOr<uint16_t> port = parsePort(c.value);
    ASSERT_FALSE(port.ok()) << c.value;
    EXPECT_EQ(port.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(port.status().message()), c.message);
  }
}

TEST(PortForwardTest, StreamTypesAreExact) {
  EXPECT_EQ(parsePortStreamType("error"), PortStreamType::kError);
  EXPECT_EQ(parsePortStreamType("data"), PortStreamType::kData);
  for (const char* bad : {"", "Error", "DATA", "stdout", "data ", "err"}) {
    EXPECT_FALSE(parsePortStreamType(bad).has_value()) << bad;
  }
  EXPECT_STREQ(portStreamTypeName(PortStreamType::kError), "error");
  EXPECT_STREQ(portStreamTypeName(PortStreamType::kData), "data");
}

TEST(PortForwardTest, ErrorStreamTexts) {
  EXPECT_EQ(forwardingError(8080, "sandbox-1", "boom"),
            "error forwarding port 8080 to pod sandbox-1, uid : boom");
  EXPECT_EQ(streamTimeoutError("12", "7"), "(conn=12, request=7) timed out waiting for streams");
  EXPECT_EQ(duplicateStreamError("3", PortStreamType::kError),
            "error processing stream for request 3: error stream already assigned");
  EXPECT_EQ(duplicateStreamError("3", PortStreamType::kData),
            "error processing stream for request 3: data stream already assigned");
}

TEST(PortForwardTest, OnlyFailuresToConnectAreReportedAsText) {
  EXPECT_TRUE(writesErrorText(PortError::Kind::kRefused));
  EXPECT_TRUE(writesErrorText(PortError::Kind::kConnectFailed));
  EXPECT_FALSE(writesErrorText(PortError::Kind::kConnectionLost));
}

TEST(PortForwardTest, ConnectResultsAndMetrics) {
  EXPECT_EQ(connectResultOf(PortError::Kind::kRefused), PortConnectResult::kRefused);
  EXPECT_EQ(connectResultOf(PortError::Kind::kConnectFailed), PortConnectResult::kError);
  EXPECT_STREQ(portConnectResultName(PortConnectResult::kOk), "ok");
  EXPECT_STREQ(portConnectResultName(PortConnectResult::kRefused), "refused");
  EXPECT_STREQ(portConnectResultName(PortConnectResult::kError), "error");

  PortForwardMetrics& m = PortForwardMetrics::get();
  const uint64_t refused = m.refused.value();
  m.result(PortConnectResult::kRefused).inc();
  EXPECT_EQ(m.refused.value(), refused + 1);
  const std::string text = stats::registry().renderPrometheus();
  EXPECT_NE(text.find("crisp_portforward_connections_total{result=\"refused\"} " +
                      std::to_string(refused + 1)),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# TYPE crisp_portforward_connections_active gauge"), std::string::npos);
}

}  // namespace
}  // namespace crisp::session
