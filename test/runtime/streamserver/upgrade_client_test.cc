#include "source/runtime/streamserver/upgrade_client.h"

#include <gtest/gtest.h>

namespace crisp::streamserver {
namespace {

TEST(ParseUrlTest, KubeletStyleUrls) {
  auto u = parseUrl("http://127.0.0.1:43127/exec/AbCd-_12");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 43127);
  EXPECT_EQ(u->authority, "127.0.0.1:43127");
  EXPECT_EQ(u->target, "/exec/AbCd-_12");

  u = parseUrl("https://[::1]:10010/base/portforward/x?y=1");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->hostPort(), "[::1]:10010");
  EXPECT_EQ(u->target, "/base/portforward/x?y=1");

  u = parseUrl("HTTPS://node.example");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/");
}

TEST(ParseUrlTest, Refusals) {
  for (const char* bad : {"", "ftp://x/", "http://", "http://:80/", "http://h:0/", "http://h:70000/",
                          "http://user@h/", "http://[::1/", "http://h:x/"}) {
    EXPECT_FALSE(parseUrl(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace crisp::streamserver
