#include "source/stream/http1_route.h"

#include <string>

#include <gtest/gtest.h>

namespace crisp::stream {
namespace {

using session::Operation;

TEST(Http1RouteTest, MatchesTheThreeRoutes) {
  auto r = matchStreamRoute("/exec/AbCd-_12");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->operation, Operation::kExec);
  EXPECT_EQ(r->token, "AbCd-_12");
  r = matchStreamRoute("/attach/x");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->operation, Operation::kAttach);
  r = matchStreamRoute("/portforward/0123456789abcdefghijkl");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->operation, Operation::kPortForward);
  EXPECT_EQ(r->token, "0123456789abcdefghijkl");
}

TEST(Http1RouteTest, RejectsEverythingElse) {
  for (const char* path : {
           "",
           "/",
           "exec/tok",
           "/exec",
           "/exec/",
           "/exec/tok/",
           "/exec/tok/more",
           "//exec/tok",
           "/exec//tok",
           "/exec/../attach/tok",
           "/exec/./tok",
           "/exec/..",
           "/attach/%2e%2e",
           "/exec%2Ftok",
           "/exec/a%2Fb",
           "/exec/a%2fb",
           "/exec/a%5Cb",
           "/exec/a\\b",
           "/Exec/tok",
           "/execute/tok",
           "/portforward/tok=",
           "/exec/tok tok",
       }) {
    EXPECT_FALSE(matchStreamRoute(path).has_value()) << path;
  }
}

TEST(Http1RouteTest, TokenLengthIsBounded) {
  EXPECT_TRUE(matchStreamRoute("/exec/" + std::string(kMaxRouteTokenLength, 'a')).has_value());
  EXPECT_FALSE(matchStreamRoute("/exec/" + std::string(kMaxRouteTokenLength + 1, 'a')).has_value());
}

}  // namespace
}  // namespace crisp::stream
