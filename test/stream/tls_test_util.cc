#include "test/stream/tls_test_util.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

namespace crisp::stream::testing {
namespace {

std::string opensslErrors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    const std::string text = reason != nullptr ? reason : "error " + std::to_string(e);
    if (out.find(text) == std::string::npos) {
      out += out.empty() ? text : "; " + text;
    }
  }
  return out;
}

// Certificate making cannot fail in a sane test environment; if it does, the
// test binary stops with OpenSSL's reason.
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tls_test_util: %s failed: %s\n", what, opensslErrors().c_str());
    std::abort();
  }
}

EVP_PKEY* newKey() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  check(key != nullptr, "EC key generation");
  return key;
}

std::string bioString(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
}

std::string pemOf(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  check(bio != nullptr && PEM_write_bio_X509(bio, cert) == 1, "PEM_write_bio_X509");
  std::string out = bioString(bio);
  BIO_free(bio);
  return out;
}

std::string keyPem(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  check(bio != nullptr &&
            PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
        "PEM_write_bio_PrivateKey");
  std::string out = bioString(bio);
  BIO_free(bio);
  return out;
}

std::string serialHex(X509* cert) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  check(bn != nullptr, "ASN1_INTEGER_to_BN");
  char* hex = BN_bn2hex(bn);
  std::string out = hex;
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

std::string subjectText(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  check(bio != nullptr &&
            X509_NAME_print_ex(bio, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0,
        "X509_NAME_print_ex");
  std::string out = bioString(bio);
  BIO_free(bio);
  return out;
}

void addExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  check(ext != nullptr, "X509V3_EXT_conf_nid");
  check(X509_add_ext(cert, ext, -1) == 1, "X509_add_ext");
  X509_EXTENSION_free(ext);
}

void addNameEntry(X509_NAME* name, const char* field, const std::string& value) {
  check(X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                   reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                   0) == 1,
        "X509_NAME_add_entry_by_txt");
}

// A certificate with everything but extensions and the signature.
X509* newCertificate(EVP_PKEY* key, uint64_t serial, long from, long until,
                     const std::string& organization, const std::string& common_name) {
  X509* cert = X509_new();
  check(cert != nullptr, "X509_new");
  check(X509_set_version(cert, X509_VERSION_3) == 1, "X509_set_version");
  check(ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert), serial) == 1, "serial");
  check(X509_gmtime_adj(X509_getm_notBefore(cert), from) != nullptr, "notBefore");
  check(X509_gmtime_adj(X509_getm_notAfter(cert), until) != nullptr, "notAfter");
  check(X509_set_pubkey(cert, key) == 1, "X509_set_pubkey");
  X509_NAME* name = X509_get_subject_name(cert);
  if (!organization.empty()) {
    addNameEntry(name, "O", organization);
  }
  addNameEntry(name, "CN", common_name);
  return cert;
}

// OpenSSL's socket BIO writes with write(2): a peer that is gone raises
// SIGPIPE. This client blocks it for its own thread while it calls OpenSSL
// and swallows one that came, so that the process-wide disposition stays as
// it is (the server side under test must not need it ignored).
class NoSigpipe {
 public:
  NoSigpipe() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set_, &old_);
  }
  ~NoSigpipe() {
    sigset_t pending;
    sigemptyset(&pending);
    if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE) == 1) {
      const timespec zero{};
      sigtimedwait(&set_, nullptr, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  NoSigpipe(const NoSigpipe&) = delete;
  NoSigpipe& operator=(const NoSigpipe&) = delete;

 private:
  sigset_t set_;
  sigset_t old_;
};

void setTimeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

}  // namespace

TestCa::TestCa(const std::string& common_name, uint64_t serial) {
  key_ = newKey();
  cert_ = newCertificate(key_, serial, -24 * 3600, 10 * 24 * 3600, "crisp tests", common_name);
  check(X509_set_issuer_name(cert_, X509_get_subject_name(cert_)) == 1, "issuer");
  addExtension(cert_, cert_, NID_basic_constraints, "critical,CA:TRUE");
  addExtension(cert_, cert_, NID_key_usage, "critical,keyCertSign,cRLSign");
  addExtension(cert_, cert_, NID_subject_key_identifier, "hash");
  addExtension(cert_, cert_, NID_authority_key_identifier, "keyid:always");
  check(X509_sign(cert_, key_, EVP_sha256()) > 0, "X509_sign");
  cert_pem_ = pemOf(cert_);
}

TestCa::~TestCa() {
  X509_free(cert_);
  EVP_PKEY_free(key_);
}

TestCertificate TestCa::issue(const LeafSpec& spec) const {
  EVP_PKEY* key = newKey();
  X509* cert = newCertificate(key, spec.serial, spec.valid_from, spec.valid_until,
                              spec.organization, spec.common_name);
  check(X509_set_issuer_name(cert, X509_get_subject_name(cert_)) == 1, "issuer");
  addExtension(cert, cert_, NID_basic_constraints, "critical,CA:FALSE");
  addExtension(cert, cert_, NID_key_usage, "critical,digitalSignature");
  addExtension(cert, cert_, NID_ext_key_usage, spec.client ? "clientAuth" : "serverAuth");
  std::string san;
  for (const std::string& dns : spec.dns_names) {
    san += (san.empty() ? "DNS:" : ",DNS:") + dns;
  }
  for (const std::string& ip : spec.ip_addresses) {
    san += (san.empty() ? "IP:" : ",IP:") + ip;
  }
  if (!san.empty()) {
    addExtension(cert, cert_, NID_subject_alt_name, san);
  }
  addExtension(cert, cert_, NID_subject_key_identifier, "hash");
  addExtension(cert, cert_, NID_authority_key_identifier, "keyid:always");
  check(X509_sign(cert, key_, EVP_sha256()) > 0, "X509_sign");
  TestCertificate out;
  out.cert_pem = pemOf(cert);
  out.key_pem = keyPem(key);
  out.serial = serialHex(cert);
  out.subject = subjectText(cert);
  X509_free(cert);
  EVP_PKEY_free(key);
  return out;
}

std::string encryptedKeyPem(const std::string& key_pem, const std::string& passphrase) {
  BIO* in = BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
  check(key != nullptr, "PEM_read_bio_PrivateKey");
  BIO_free(in);
  BIO* out = BIO_new(BIO_s_mem());
  std::string pass = passphrase;
  check(PEM_write_bio_PrivateKey(out, key, EVP_aes_256_cbc(),
                                 reinterpret_cast<unsigned char*>(pass.data()),
                                 static_cast<int>(pass.size()), nullptr, nullptr) == 1,
        "PEM_write_bio_PrivateKey (encrypted)");
  std::string pem = bioString(out);
  BIO_free(out);
  EVP_PKEY_free(key);
  return pem;
}

std::string serialOf(const std::string& cert_pem) {
  BIO* bio = BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  check(cert != nullptr, "PEM_read_bio_X509");
  std::string out = serialHex(cert);
  X509_free(cert);
  return out;
}

std::pair<int, int> loopbackPair(int client_receive_buffer, int server_send_buffer) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  // The accepted socket inherits the listener's buffer sizes.
  if (listener < 0 ||
      (server_send_buffer > 0 && ::setsockopt(listener, SOL_SOCKET, SO_SNDBUF, &server_send_buffer,
                                              sizeof(server_send_buffer)) != 0) ||
      ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listener, 1) != 0 ||
      ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    std::perror("loopback listener");
    std::abort();
  }
  const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client_receive_buffer > 0 &&
      ::setsockopt(client, SOL_SOCKET, SO_RCVBUF, &client_receive_buffer,
                   sizeof(client_receive_buffer)) != 0) {
    std::perror("SO_RCVBUF");
    std::abort();
  }
  if (::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::perror("connect");
    std::abort();
  }
  const int server = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(listener);
  return {client, server};
}

TlsTestClient::TlsTestClient(int fd, const TlsClientOptions& options) : fd_(fd) {
  setTimeouts(fd_, kTimeout);
  ctx_ = SSL_CTX_new(TLS_client_method());
  check(ctx_ != nullptr, "SSL_CTX_new");
  if (options.allow_legacy) {
    SSL_CTX_set_security_level(ctx_, 0);
    check(SSL_CTX_set_cipher_list(ctx_, "DEFAULT:@SECLEVEL=0") == 1, "legacy ciphers");
  }
  if (!options.ciphers.empty()) {
    check(SSL_CTX_set_cipher_list(ctx_, options.ciphers.c_str()) == 1, "cipher list");
  }
  if (options.min_version != 0) {
    check(SSL_CTX_set_min_proto_version(ctx_, options.min_version) == 1, "min version");
  }
  if (options.max_version != 0) {
    check(SSL_CTX_set_max_proto_version(ctx_, options.max_version) == 1, "max version");
  }
  if (!options.ca_pem.empty()) {
    BIO* bio = BIO_new_mem_buf(options.ca_pem.data(), static_cast<int>(options.ca_pem.size()));
    while (X509* ca = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
      check(X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx_), ca) == 1, "X509_STORE_add_cert");
      X509_free(ca);
    }
    ERR_clear_error();
    BIO_free(bio);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  }
  if (!options.cert_pem.empty()) {
    BIO* bio = BIO_new_mem_buf(options.cert_pem.data(), static_cast<int>(options.cert_pem.size()));
    X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    bio = BIO_new_mem_buf(options.key_pem.data(), static_cast<int>(options.key_pem.size()));
    EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
    BIO_free(bio);
    check(cert != nullptr && key != nullptr && SSL_CTX_use_certificate(ctx_, cert) == 1 &&
              SSL_CTX_use_PrivateKey(ctx_, key) == 1,
          "client certificate");
    X509_free(cert);
    EVP_PKEY_free(key);
  }
  if (!options.alpn.empty()) {
    std::string wire;
    for (const std::string& p : options.alpn) {
      wire += static_cast<char>(p.size());
      wire += p;
    }
    check(SSL_CTX_set_alpn_protos(ctx_, reinterpret_cast<const unsigned char*>(wire.data()),
                                  static_cast<unsigned int>(wire.size())) == 0,
          "alpn");
  }
  ssl_ = SSL_new(ctx_);
  check(ssl_ != nullptr && SSL_set_fd(ssl_, fd_) == 1, "SSL_new");
  if (!options.verify_ip.empty()) {
    check(X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), options.verify_ip.c_str()) == 1,
          "verify ip");
  }
  SSL_set_connect_state(ssl_);
}

TlsTestClient::~TlsTestClient() {
  SSL_free(ssl_);
  SSL_CTX_free(ctx_);
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

void TlsTestClient::recordFailure(int ret) {
  const int saved_errno = errno;
  const int err = SSL_get_error(ssl_, ret);
  std::string text = opensslErrors();
  if (err == SSL_ERROR_ZERO_RETURN) {
    text = "close_notify";
  } else if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    text = "timed out";
  } else if (text.empty()) {
    text = saved_errno != 0 ? std::strerror(saved_errno) : "connection closed";
  }
  const long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    text += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
  }
  error_ = text;
}

std::string TlsTestClient::handshake() {
  NoSigpipe no_sigpipe;
  ERR_clear_error();
  errno = 0;
  const int ret = SSL_connect(ssl_);
  if (ret == 1) {
    return "";
  }
  recordFailure(ret);
  return error_;
}

bool TlsTestClient::write(std::string_view data) {
  NoSigpipe no_sigpipe;
  size_t done = 0;
  while (done < data.size()) {
    ERR_clear_error();
    errno = 0;
    size_t n = 0;
    const int ret = SSL_write_ex(ssl_, data.data() + done, data.size() - done, &n);
    if (ret != 1) {
      recordFailure(ret);
      return false;
    }
    done += n;
  }
  return true;
}

std::optional<std::string> TlsTestClient::readExactly(size_t n) {
  NoSigpipe no_sigpipe;
  std::string out;
  char buf[16384];
  while (out.size() < n) {
    ERR_clear_error();
    errno = 0;
    size_t got = 0;
    const int ret = SSL_read_ex(ssl_, buf, std::min(sizeof(buf), n - out.size()), &got);
    if (ret != 1) {
      recordFailure(ret);
      return std::nullopt;
    }
    out.append(buf, got);
  }
  return out;
}

std::optional<std::string> TlsTestClient::readToCloseNotify() {
  NoSigpipe no_sigpipe;
  std::string out;
  char buf[16384];
  for (;;) {
    ERR_clear_error();
    errno = 0;
    size_t got = 0;
    const int ret = SSL_read_ex(ssl_, buf, sizeof(buf), &got);
    if (ret == 1) {
      out.append(buf, got);
      continue;
    }
    if (SSL_get_error(ssl_, ret) == SSL_ERROR_ZERO_RETURN) {
      return out;
    }
    recordFailure(ret);
    return std::nullopt;
  }
}

std::string TlsTestClient::readFailure() {
  NoSigpipe no_sigpipe;
  char buf[1024];
  ERR_clear_error();
  errno = 0;
  size_t got = 0;
  const int ret = SSL_read_ex(ssl_, buf, sizeof(buf), &got);
  if (ret == 1) {
    return "";
  }
  recordFailure(ret);
  return error_;
}

std::optional<std::string> TlsTestClient::exchange(std::string_view out, size_t in_len,
                                                   std::chrono::milliseconds timeout) {
  NoSigpipe no_sigpipe;
  const int flags = fcntl(fd_, F_GETFL, 0);
  fcntl(fd_, F_SETFL, flags | O_NONBLOCK);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string in;
  size_t sent = 0;
  char buf[65536];
  std::optional<std::string> result;
  for (;;) {
    if (sent == out.size() && in.size() >= in_len) {
      result = std::move(in);
      break;
    }
    bool progress = false;
    short want = 0;
    bool failed = false;
    if (sent < out.size()) {
      ERR_clear_error();
      errno = 0;
      size_t n = 0;
      const int ret =
          SSL_write_ex(ssl_, out.data() + sent, std::min<size_t>(out.size() - sent, 65536), &n);
      if (ret == 1) {
        sent += n;
        progress = true;
      } else {
        const int err = SSL_get_error(ssl_, ret);
        if (err == SSL_ERROR_WANT_WRITE) {
          want |= POLLOUT;
        } else if (err == SSL_ERROR_WANT_READ) {
          want |= POLLIN;
        } else {
          recordFailure(ret);
          failed = true;
        }
      }
    }
    if (!failed && in.size() < in_len) {
      ERR_clear_error();
      errno = 0;
      size_t got = 0;
      const int ret = SSL_read_ex(ssl_, buf, sizeof(buf), &got);
      if (ret == 1) {
        in.append(buf, got);
        progress = true;
      } else {
        const int err = SSL_get_error(ssl_, ret);
        if (err == SSL_ERROR_WANT_READ) {
          want |= POLLIN;
        } else if (err == SSL_ERROR_WANT_WRITE) {
          want |= POLLOUT;
        } else {
          recordFailure(ret);
          failed = true;
        }
      }
    }
    if (failed) {
      break;
    }
    if (progress) {
      continue;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      error_ = "exchange timed out: sent " + std::to_string(sent) + ", received " +
               std::to_string(in.size());
      break;
    }
    pollfd p{fd_, want, 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
  fcntl(fd_, F_SETFL, flags);
  return result;
}

bool TlsTestClient::closeNotify() {
  NoSigpipe no_sigpipe;
  ERR_clear_error();
  const int ret = SSL_shutdown(ssl_);
  if (ret < 0) {
    recordFailure(ret);
    return false;
  }
  return true;
}

void TlsTestClient::abort(bool reset) {
  if (fd_ < 0) {
    return;
  }
  if (reset) {
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  ::close(fd_);
  fd_ = -1;
}

std::string TlsTestClient::serverSerial() const {
  X509* cert = SSL_get0_peer_certificate(ssl_);
  return cert != nullptr ? serialHex(cert) : "";
}

std::string TlsTestClient::alpn() const {
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl_, &data, &len);
  return data != nullptr ? std::string(reinterpret_cast<const char*>(data), len) : "";
}

std::string TlsTestClient::version() const { return SSL_get_version(ssl_); }

std::string TlsTestClient::cipher() const {
  const char* name = SSL_get_cipher_name(ssl_);
  return name != nullptr ? name : "";
}

}  // namespace crisp::stream::testing
