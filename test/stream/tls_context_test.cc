#include "source/stream/tls_context.h"

#include <memory>
#include <sstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include "source/common/logger.h"

#include "test/stream/spdy_test_client.h"
#include "test/stream/tls_test_util.h"

namespace crisp::stream {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string text(const absl::Status& status) { return std::string(status.message()); }

std::string alpnWire(std::initializer_list<std::string> protocols) {
  std::string wire;
  for (const std::string& p : protocols) {
    wire += static_cast<char>(p.size());
    wire += p;
  }
  return wire;
}

// Collects what the stream logger writes while it lives.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    log::get(log::Component::kStream).sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = log::get(log::Component::kStream).sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

class TlsContextTest : public ::testing::Test {
 protected:
  TlsContextTest() : ca_("crisp test CA") {
    testing::LeafSpec spec;
    spec.common_name = "crisp";
    spec.organization = "crisp tests";
    spec.serial = 0xA1;
    first_ = ca_.issue(spec);
    spec.serial = 0xB2;
    second_ = ca_.issue(spec);
  }

  // Writes `cert` as the served files and returns them.
  TlsFiles write(const testing::TestCertificate& cert, bool with_ca = false) {
    TlsFiles files;
    files.cert_file = dir_.write("tls.crt", cert.cert_pem);
    files.key_file = dir_.write("tls.key", cert.key_pem);
    if (with_ca) {
      files.client_ca_file = dir_.write("ca.crt", ca_.certPem());
    }
    return files;
  }

  testing::TempDir dir_;
  testing::TestCa ca_;
  testing::TestCertificate first_;
  testing::TestCertificate second_;
};

TEST(SelectAlpnTest, PrefersH2ThenHttp11) {
  EXPECT_EQ(selectAlpnProtocol(alpnWire({"h2", "http/1.1"})), "h2");
  EXPECT_EQ(selectAlpnProtocol(alpnWire({"http/1.1", "h2"})), "h2");
  EXPECT_EQ(selectAlpnProtocol(alpnWire({"http/1.1"})), "http/1.1");
  EXPECT_EQ(selectAlpnProtocol(alpnWire({"h2"})), "h2");
  EXPECT_EQ(selectAlpnProtocol(alpnWire({"h2c", "spdy/3.1"})), std::nullopt);
  EXPECT_EQ(selectAlpnProtocol(alpnWire({"http/1.0", "spdy/3.1"})), std::nullopt);
  EXPECT_EQ(selectAlpnProtocol(""), std::nullopt);
  // A length byte running past the end.
  EXPECT_EQ(selectAlpnProtocol(std::string("\x09http/1.1", 9)), std::nullopt);
  EXPECT_EQ(selectAlpnProtocol(std::string("\x00", 1)), std::nullopt);
}

TEST_F(TlsContextTest, LoadsTheCertificateAndDescribesIt) {
  absl::StatusOr<TlsContextPtr> ctx = TlsContext::load(write(first_));
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  EXPECT_EQ((*ctx)->serial(), "A1");
  EXPECT_EQ((*ctx)->subject(), "CN=crisp,O=crisp tests");
  EXPECT_THAT((*ctx)->notAfter(), HasSubstr("GMT"));
  EXPECT_FALSE((*ctx)->verifiesClients());
  EXPECT_NE((*ctx)->raw(), nullptr);

  ctx = TlsContext::load(write(first_, true));
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  EXPECT_TRUE((*ctx)->verifiesClients());
}

TEST_F(TlsContextTest, LoadsACertificateChain) {
  TlsFiles files = write(first_);
  // The leaf followed by an intermediate (here the CA itself) is accepted.
  dir_.write("tls.crt", first_.cert_pem + ca_.certPem());
  absl::StatusOr<TlsContextPtr> ctx = TlsContext::load(files);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  EXPECT_EQ((*ctx)->serial(), "A1");
}

TEST_F(TlsContextTest, ErrorsNameTheFileAndTheReason) {
  TlsFiles files = write(first_);
  TlsFiles missing = files;
  missing.cert_file = dir_.path() + "/nope.crt";
  absl::StatusOr<TlsContextPtr> ctx = TlsContext::load(missing);
  EXPECT_EQ(ctx.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(text(ctx.status()), missing.cert_file + ": cannot open: No such file or directory");

  dir_.write("garbage.crt", "not a certificate\n");
  TlsFiles garbage = files;
  garbage.cert_file = dir_.path() + "/garbage.crt";
  ctx = TlsContext::load(garbage);
  EXPECT_EQ(ctx.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(text(ctx.status()), garbage.cert_file + ": no PEM certificate found (no start line)");

  TlsFiles mismatch = files;
  mismatch.key_file = dir_.write("other.key", second_.key_pem);
  ctx = TlsContext::load(mismatch);
  EXPECT_THAT(text(ctx.status()),
              StartsWith(mismatch.key_file +
                         ": the private key does not match the certificate in " + files.cert_file));
  EXPECT_THAT(text(ctx.status()), HasSubstr("(key values mismatch)"));

  TlsFiles bad_key = files;
  bad_key.key_file =
      dir_.write("bad.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
  ctx = TlsContext::load(bad_key);
  EXPECT_THAT(text(ctx.status()),
              StartsWith(bad_key.key_file + ": cannot read a PEM private key ("));

  TlsFiles empty_ca = files;
  empty_ca.client_ca_file = dir_.write("empty-ca.crt", "");
  ctx = TlsContext::load(empty_ca);
  EXPECT_THAT(text(ctx.status()),
              StartsWith(empty_ca.client_ca_file + ": no PEM certificate found"));
}

TEST_F(TlsContextTest, EncryptedKeyIsRefusedWithoutAPrompt) {
  TlsFiles files = write(first_);
  dir_.write("tls.key", testing::encryptedKeyPem(first_.key_pem, "secret"));
  absl::StatusOr<TlsContextPtr> ctx = TlsContext::load(files);
  ASSERT_FALSE(ctx.ok());
  EXPECT_EQ(text(ctx.status()),
            files.key_file + ": the private key is encrypted; crisp needs it unencrypted");
}

TEST_F(TlsContextTest, ReloadSwapsForNewConnectionsAndKeepsTheOldOnFailure) {
  const TlsFiles files = write(first_);
  absl::StatusOr<std::unique_ptr<TlsContextHolder>> holder = TlsContextHolder::create(files);
  ASSERT_TRUE(holder.ok()) << holder.status();
  TlsContextHolder& h = **holder;
  const TlsContextPtr old_ctx = h.current();
  EXPECT_EQ(old_ctx->serial(), "A1");
  EXPECT_EQ(h.generation(), 1u);

  write(second_);
  EXPECT_TRUE(h.reload().ok());
  EXPECT_EQ(h.current()->serial(), "B2");
  EXPECT_EQ(h.generation(), 2u);
  // Whoever holds the old context keeps a working one.
  EXPECT_EQ(old_ctx->serial(), "A1");
  EXPECT_NE(old_ctx->raw(), h.current()->raw());

  LogCapture log;
  dir_.write("tls.key", "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n");
  const absl::Status status = h.reload();
  EXPECT_THAT(text(status), StartsWith(files.key_file + ": cannot read a PEM private key"));
  EXPECT_EQ(h.current()->serial(), "B2");
  EXPECT_EQ(h.generation(), 2u);
  EXPECT_THAT(log.text(), HasSubstr("TLS reload refused, still serving the certificate with serial "
                                    "B2: " +
                                    files.key_file + ": cannot read a PEM private key"));
}

TEST_F(TlsContextTest, CreateFailsOnABrokenSet) {
  TlsFiles files = write(first_);
  files.key_file = dir_.write("other.key", second_.key_pem);
  absl::StatusOr<std::unique_ptr<TlsContextHolder>> holder = TlsContextHolder::create(files);
  EXPECT_THAT(text(holder.status()), HasSubstr("the private key does not match"));
}

TEST_F(TlsContextTest, ReloadIfChangedSeesEachChangeOnce) {
  const TlsFiles files = write(first_, true);
  auto holder = TlsContextHolder::create(files);
  ASSERT_TRUE(holder.ok()) << holder.status();
  TlsContextHolder& h = **holder;
  EXPECT_EQ(h.reloadIfChanged(), std::nullopt);

  // A broken key: reported once, not at every check.
  dir_.write("tls.key", "garbage");
  std::optional<absl::Status> result = h.reloadIfChanged();
  ASSERT_TRUE(result.has_value());
  EXPECT_FALSE(result->ok());
  EXPECT_EQ(h.reloadIfChanged(), std::nullopt);
  EXPECT_EQ(h.current()->serial(), "A1");

  // The rotation completes: the pair loads.
  write(second_, true);
  result = h.reloadIfChanged();
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->ok()) << *result;
  EXPECT_EQ(h.current()->serial(), "B2");
  EXPECT_EQ(h.reloadIfChanged(), std::nullopt);

  // The CA file counts as well.
  dir_.write("ca.crt", ca_.certPem() + ca_.certPem());
  result = h.reloadIfChanged();
  ASSERT_TRUE(result.has_value());
  EXPECT_TRUE(result->ok()) << *result;
  EXPECT_EQ(h.generation(), 3u);
}

TEST_F(TlsContextTest, WatcherReloadsChangedFilesOnItsLoop) {
  const TlsFiles files = write(first_);
  auto holder = TlsContextHolder::create(files);
  ASSERT_TRUE(holder.ok()) << holder.status();
  TlsContextHolder& h = **holder;
  testing::LoopThread loop;
  std::unique_ptr<TlsFileWatcher> watcher;
  loop.run([&] {
    watcher = std::make_unique<TlsFileWatcher>(loop.dispatcher(), h, std::chrono::milliseconds(20));
    return 0;
  });
  write(second_);
  EXPECT_TRUE(loop.waitUntil([&] { return h.generation() == 2; }));
  EXPECT_EQ(h.current()->serial(), "B2");
  loop.run([&] {
    watcher.reset();
    return 0;
  });
}

}  // namespace
}  // namespace crisp::stream
