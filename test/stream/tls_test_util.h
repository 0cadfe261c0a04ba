#pragma once

// Test helpers for TLS: certificates made at test time with the OpenSSL API
// (a CA and the certificates it issues, expired ones included), a temporary
// directory for the PEM files, and a blocking OpenSSL client whose every
// wait is bounded, to play the peer of the stream server.
//
//   testing::TestCa ca("test CA");
//   testing::LeafSpec spec;
//   spec.serial = 7;
//   testing::TestCertificate server = ca.issue(spec);
//   testing::TempDir dir;
//   std::string cert = dir.write("server.crt", server.cert_pem);
//
//   testing::TlsClientOptions options;
//   options.ca_pem = ca.certPem();
//   testing::TlsTestClient client(fd, options);
//   EXPECT_EQ(client.handshake(), "");   // empty: success; otherwise OpenSSL's reason

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "test/common/temp_dir.h"

typedef struct evp_pkey_st EVP_PKEY;
typedef struct x509_st X509;
typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace crisp::stream::testing {

// A certificate and its private key, in PEM.
struct TestCertificate {
  std::string cert_pem;
  std::string key_pem;
  std::string serial;   // upper-case hex, as TlsContext::serial() prints it
  std::string subject;  // RFC 2253
};

// What to put in an issued certificate.
struct LeafSpec {
  std::string common_name = "localhost";
  std::string organization;  // empty: none
  std::vector<std::string> dns_names = {"localhost"};
  std::vector<std::string> ip_addresses = {"127.0.0.1"};
  bool client = false;  // extended key usage clientAuth instead of serverAuth
  uint64_t serial = 2;
  // Validity, in seconds relative to now.
  long valid_from = -3600;
  long valid_until = 24 * 3600;
};

// A self-signed CA with an EC P-256 key.
class TestCa {
 public:
  explicit TestCa(const std::string& common_name, uint64_t serial = 1);
  ~TestCa();
  TestCa(const TestCa&) = delete;
  TestCa& operator=(const TestCa&) = delete;

  const std::string& certPem() const { return cert_pem_; }
  // A certificate signed by this CA, for a fresh P-256 key.
  TestCertificate issue(const LeafSpec& spec) const;

 private:
  EVP_PKEY* key_ = nullptr;
  X509* cert_ = nullptr;
  std::string cert_pem_;
};

// `key_pem`'s key written encrypted with `passphrase` (AES-256-CBC).
std::string encryptedKeyPem(const std::string& key_pem, const std::string& passphrase);

// A directory of the test's own, for certificate and key files.
using ::crisp::testing::TempDir;

// A connected loopback TCP pair {client, server}, both blocking. A non-zero
// `client_receive_buffer` / `server_send_buffer` is set (SO_RCVBUF /
// SO_SNDBUF) before the handshake, so that the window and segment size are
// agreed for it: a receive buffer shrunk after the handshake can end below
// the sender's segment size, and the sender then waits for its zero-window
// probes (seconds, doubling) before each segment.
std::pair<int, int> loopbackPair(int client_receive_buffer = 0, int server_send_buffer = 0);

struct TlsClientOptions {
  // Verify the server against this CA; empty: no verification.
  std::string ca_pem;
  // With ca_pem: the IP address the server certificate must name.
  std::string verify_ip;
  // A client certificate to present; empty: none.
  std::string cert_pem;
  std::string key_pem;
  // Protocol versions (TLS1_1_VERSION, ...); 0 = library default.
  int min_version = 0;
  int max_version = 0;
  // Security level 0, so that TLS 1.0/1.1 and weak ciphers can be offered.
  bool allow_legacy = false;
  // TLS 1.2 cipher list; empty = library default.
  std::string ciphers;
  // ALPN protocols to offer; empty: no ALPN extension.
  std::vector<std::string> alpn;
};

// A blocking TLS client over a connected socket it owns. Reads and writes
// wait at most kTimeout each; any failure is kept in error().
class TlsTestClient {
 public:
  static constexpr std::chrono::milliseconds kTimeout{5000};

  TlsTestClient(int fd, const TlsClientOptions& options);
  ~TlsTestClient();
  TlsTestClient(const TlsTestClient&) = delete;
  TlsTestClient& operator=(const TlsTestClient&) = delete;

  // Runs the handshake: "" on success, the failure text otherwise
  // ("certificate verify failed (certificate has expired)", ...).
  std::string handshake();
  // Sends every byte; false on failure (see error()).
  bool write(std::string_view data);
  // Exactly `n` bytes; nullopt on failure, close or timeout.
  std::optional<std::string> readExactly(size_t n);
  // Everything up to the server's close_notify; nullopt if the connection
  // ends any other way.
  std::optional<std::string> readToCloseNotify();
  // Reads until something fails and returns what: for a handshake the
  // server refuses after this side considered it done (TLS 1.3 client
  // certificates). "" if data arrived instead.
  std::string readFailure();
  // Sends `out` while reading `in_len` bytes, both at once (non-blocking
  // internally), so neither side's buffers can fill up and stall the other.
  std::optional<std::string> exchange(std::string_view out, size_t in_len,
                                      std::chrono::milliseconds timeout);
  // Sends close_notify.
  bool closeNotify();
  // Closes the socket without close_notify; with `reset` as a TCP reset.
  void abort(bool reset);

  // After a handshake: the server certificate's serial (upper-case hex),
  // the ALPN protocol, the version ("TLSv1.3") and cipher names.
  std::string serverSerial() const;
  std::string alpn() const;
  std::string version() const;
  std::string cipher() const;
  const std::string& error() const { return error_; }
  int fd() const { return fd_; }

 private:
  // Records the failure of the SSL call that returned `ret`.
  void recordFailure(int ret);

  int fd_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string error_;
};

// "Serial Number" of a PEM certificate, upper-case hex.
std::string serialOf(const std::string& cert_pem);

}  // namespace crisp::stream::testing
