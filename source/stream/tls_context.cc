#include "source/stream/tls_context.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include "source/common/file.h"
#include "source/common/logger.h"

namespace crisp::stream {
namespace {

// The ALPN protocols served, in order of preference: a client offering both
// gets HTTP/2, as from Go's servers.
constexpr std::string_view kAlpnProtocols[] = {"h2", "http/1.1"};

// PEM files larger than this are not certificates or keys.
constexpr size_t kMaxPemBytes = 1 << 20;

// The reasons OpenSSL queued since the last ERR_clear_error(), oldest first,
// each once; the queue ends empty.
std::string takeOpensslErrors() {
  std::vector<std::string> reasons;
  while (const unsigned long e = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(e);
    std::string text = reason != nullptr ? reason : absl::StrCat("error ", e);
    bool seen = false;
    for (const std::string& r : reasons) {
      seen |= (r == text);
    }
    if (!seen) {
      reasons.push_back(std::move(text));
    }
  }
  return reasons.empty() ? "unknown OpenSSL error" : absl::StrJoin(reasons, "; ");
}

// True when the newest queued error says the PEM input simply ended.
bool pemEnded() {
  const unsigned long e = ERR_peek_last_error();
  return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

// Refuses every pass phrase: an encrypted key must fail to load, never prompt
// on a terminal.
int noPassphrase(char*, int, int, void*) { return -1; }

absl::StatusOr<std::string> readPemFile(const std::string& path) {
  return readSmallFile(path, kMaxPemBytes, "PEM file");
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

// Every certificate in a PEM text, in order. Fails with "<path>: ..." when
// one is malformed or there is none.
absl::StatusOr<std::vector<X509Ptr>> readCertificates(const std::string& path,
                                                      const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) {
    return absl::ResourceExhaustedError(absl::StrCat(path, ": ", takeOpensslErrors()));
  }
  std::vector<X509Ptr> certs;
  for (;;) {
    X509* cert = certs.empty() ? PEM_read_bio_X509_AUX(bio.get(), nullptr, noPassphrase, nullptr)
                               : PEM_read_bio_X509(bio.get(), nullptr, noPassphrase, nullptr);
    if (cert == nullptr) {
      break;
    }
    certs.emplace_back(cert);
  }
  if (pemEnded() && !certs.empty()) {
    ERR_clear_error();
    return certs;
  }
  const std::string reason = takeOpensslErrors();
  if (certs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": no PEM certificate found (", reason, ")"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": certificate ", certs.size() + 1, " is malformed (", reason, ")"));
}

std::string certificateSerial(X509* cert) {
  const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
  BIGNUM* bn = ASN1_INTEGER_to_BN(serial, nullptr);
  if (bn == nullptr) {
    ERR_clear_error();
    return "?";
  }
  char* hex = BN_bn2hex(bn);
  std::string out = hex != nullptr ? hex : "?";
  OPENSSL_free(hex);
  BN_free(bn);
  return out;
}

std::string bioText(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
}

std::string timeText(const ASN1_TIME* time) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || ASN1_TIME_print(bio.get(), time) != 1) {
    ERR_clear_error();
    return "?";
  }
  return bioText(bio.get());
}

int selectAlpnCallback(SSL*, const unsigned char** out, unsigned char* out_len,
                       const unsigned char* in, unsigned int in_len, void*) {
  const std::string_view offer(reinterpret_cast<const char*>(in), in_len);
  for (const std::string_view served : kAlpnProtocols) {
    size_t i = 0;
    while (i < offer.size()) {
      const size_t len = static_cast<unsigned char>(offer[i]);
      if (len == 0 || i + 1 + len > offer.size()) {
        return SSL_TLSEXT_ERR_ALERT_FATAL;  // malformed offer
      }
      if (offer.substr(i + 1, len) == served) {
        *out = in + i + 1;
        *out_len = static_cast<unsigned char>(len);
        return SSL_TLSEXT_ERR_OK;
      }
      i += 1 + len;
    }
  }
  // RFC 7301, 3.2: no protocol in common is a no_application_protocol alert.
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

}  // namespace

std::optional<std::string> selectAlpnProtocol(std::string_view client_offer) {
  const unsigned char* out = nullptr;
  unsigned char out_len = 0;
  if (selectAlpnCallback(
          nullptr, &out, &out_len, reinterpret_cast<const unsigned char*>(client_offer.data()),
          static_cast<unsigned int>(client_offer.size()), nullptr) != SSL_TLSEXT_ERR_OK) {
    return std::nullopt;
  }
  return std::string(reinterpret_cast<const char*>(out), out_len);
}

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::load(const TlsFiles& files) {
  // Errors of earlier, unrelated calls on this thread must not be blamed here.
  ERR_clear_error();
  absl::StatusOr<std::string> cert_pem = readPemFile(files.cert_file);
  if (!cert_pem.ok()) {
    return cert_pem.status();
  }
  absl::StatusOr<std::string> key_pem = readPemFile(files.key_file);
  if (!key_pem.ok()) {
    return key_pem.status();
  }
  std::optional<std::string> ca_pem;
  if (!files.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = readPemFile(files.client_ca_file);
    if (!ca.ok()) {
      return ca.status();
    }
    ca_pem = std::move(*ca);
  }

  absl::StatusOr<std::vector<X509Ptr>> chain = readCertificates(files.cert_file, *cert_pem);
  if (!chain.ok()) {
    return chain.status();
  }
  std::unique_ptr<EVP_PKEY, PkeyFree> key;
  {
    BioPtr bio(BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())));
    if (bio) {
      key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, noPassphrase, nullptr));
    }
    if (!key) {
      const std::string reason = takeOpensslErrors();
      // Both the PKCS#8 and the traditional OpenSSL form say so in the text.
      if (key_pem->find("ENCRYPTED") != std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat(
            files.key_file, ": the private key is encrypted; crisp needs it unencrypted"));
      }
      return absl::InvalidArgumentError(
          absl::StrCat(files.key_file, ": cannot read a PEM private key (", reason, ")"));
    }
  }

  std::unique_ptr<SSL_CTX, CtxFree> ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot create a TLS context: ", takeOpensslErrors()));
  }
  SSL_CTX* c = ctx.get();
  const auto setupError = [](const char* what) {
    return absl::InternalError(absl::StrCat("TLS setup: ", what, ": ", takeOpensslErrors()));
  };
  if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) != 1) {
    return setupError("protocol versions");
  }
  if (SSL_CTX_set_cipher_list(c, kTls12Ciphers) != 1) {
    return setupError("cipher list");
  }
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                             SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(c, 0);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  // Writes are retried from a buffer that may move (Buffer::linearize) and
  // may complete in part; idle connections give their I/O buffers back.
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
  static constexpr unsigned char kSessionContext[] = "crisp-stream";
  SSL_CTX_set_session_id_context(c, kSessionContext, sizeof(kSessionContext) - 1);
  SSL_CTX_set_alpn_select_cb(c, selectAlpnCallback, nullptr);

  X509* leaf = chain->front().get();
  if (SSL_CTX_use_certificate(c, leaf) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(files.cert_file, ": the certificate cannot be used: ", takeOpensslErrors()));
  }
  for (size_t i = 1; i < chain->size(); ++i) {
    if (SSL_CTX_add1_chain_cert(c, (*chain)[i].get()) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(files.cert_file, ": chain certificate ", i + 1,
                                                     " cannot be used: ", takeOpensslErrors()));
    }
  }
  if (SSL_CTX_use_PrivateKey(c, key.get()) != 1 || SSL_CTX_check_private_key(c) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(files.key_file, ": the private key does not match the certificate in ",
                     files.cert_file, " (", takeOpensslErrors(), ")"));
  }

  bool verifies_clients = false;
  if (ca_pem.has_value()) {
    absl::StatusOr<std::vector<X509Ptr>> cas = readCertificates(files.client_ca_file, *ca_pem);
    if (!cas.ok()) {
      return cas.status();
    }
    X509_STORE* store = SSL_CTX_get_cert_store(c);
    for (const X509Ptr& ca : *cas) {
      // add_client_CA tells clients which issuers are accepted.
      if (X509_STORE_add_cert(store, ca.get()) != 1 || SSL_CTX_add_client_CA(c, ca.get()) != 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            files.client_ca_file, ": a CA certificate cannot be used: ", takeOpensslErrors()));
      }
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    verifies_clients = true;
  }

  std::shared_ptr<TlsContext> out(new TlsContext());
  out->ctx_ = ctx.release();
  out->verifies_clients_ = verifies_clients;
  out->serial_ = certificateSerial(leaf);
  BioPtr name(BIO_new(BIO_s_mem()));
  if (name &&
      X509_NAME_print_ex(name.get(), X509_get_subject_name(leaf), 0, XN_FLAG_RFC2253) >= 0) {
    out->subject_ = bioText(name.get());
  }
  out->not_after_ = timeText(X509_get0_notAfter(leaf));
  ERR_clear_error();
  return std::shared_ptr<const TlsContext>(std::move(out));
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

bool TlsContextHolder::FileStamp::operator==(const FileStamp& other) const {
  return device == other.device && inode == other.inode && size == other.size &&
         mtime_ns == other.mtime_ns;
}

TlsContextHolder::TlsContextHolder(TlsFiles files) : files_(std::move(files)) {}

absl::StatusOr<std::unique_ptr<TlsContextHolder>> TlsContextHolder::create(TlsFiles files) {
  std::unique_ptr<TlsContextHolder> holder(new TlsContextHolder(std::move(files)));
  // Stamped before reading: a change in between is seen at the next check.
  std::vector<FileStamp> stamps = holder->stampFiles();
  absl::StatusOr<TlsContextPtr> ctx = TlsContext::load(holder->files_);
  if (!ctx.ok()) {
    return ctx.status();
  }
  holder->current_ = std::move(*ctx);
  holder->last_stamps_ = std::move(stamps);
  holder->generation_ = 1;
  const TlsContext& c = *holder->current_;
  CRISP_LOG(kStream, info,
            "TLS: serving certificate \"{}\" (serial {}, valid until {}) from {}; client "
            "certificates {}{}",
            c.subject(), c.serial(), c.notAfter(), holder->files_.cert_file,
            c.verifiesClients() ? "required, CA file " : "not requested",
            c.verifiesClients() ? holder->files_.client_ca_file : "");
  return holder;
}

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::loadClient(
    const std::string& ca_file) {
  ERR_clear_error();
  absl::StatusOr<std::string> ca_pem = readPemFile(ca_file);
  if (!ca_pem.ok()) {
    return ca_pem.status();
  }
  absl::StatusOr<std::vector<X509Ptr>> cas = readCertificates(ca_file, *ca_pem);
  if (!cas.ok()) {
    return cas.status();
  }
  std::unique_ptr<SSL_CTX, CtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot create a TLS context: ", takeOpensslErrors()));
  }
  SSL_CTX* c = ctx.get();
  if (SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION) != 1) {
    return absl::InternalError(absl::StrCat("TLS setup: protocol versions: ", takeOpensslErrors()));
  }
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
  X509_STORE* store = SSL_CTX_get_cert_store(c);
  for (const X509Ptr& ca : *cas) {
    if (X509_STORE_add_cert(store, ca.get()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(ca_file, ": a CA certificate cannot be used: ", takeOpensslErrors()));
    }
  }
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  std::shared_ptr<TlsContext> context(new TlsContext());
  context->ctx_ = ctx.release();
  context->client_ = true;
  return std::shared_ptr<const TlsContext>(std::move(context));
}

TlsContextPtr TlsContextHolder::current() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return current_;
}

uint64_t TlsContextHolder::generation() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return generation_;
}

std::vector<TlsContextHolder::FileStamp> TlsContextHolder::stampFiles() const {
  std::vector<FileStamp> stamps;
  for (const std::string* path : {&files_.cert_file, &files_.key_file, &files_.client_ca_file}) {
    FileStamp stamp;
    struct stat st;
    // stat, not lstat: a symlink swapped to new content (as Kubernetes
    // updates mounted secrets) is a change.
    if (!path->empty() && ::stat(path->c_str(), &st) == 0) {
      stamp.device = static_cast<uint64_t>(st.st_dev);
      stamp.inode = static_cast<uint64_t>(st.st_ino);
      stamp.size = static_cast<int64_t>(st.st_size);
      stamp.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    }
    stamps.push_back(stamp);
  }
  return stamps;
}

absl::Status TlsContextHolder::reload() {
  std::lock_guard<std::mutex> one_at_a_time(reload_mutex_);
  std::vector<FileStamp> stamps = stampFiles();
  absl::StatusOr<TlsContextPtr> ctx = TlsContext::load(files_);
  TlsContextPtr previous;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    last_stamps_ = std::move(stamps);
    previous = current_;
    if (ctx.ok()) {
      current_ = *ctx;
      ++generation_;
    }
  }
  if (!ctx.ok()) {
    CRISP_LOG(kStream, error,
              "TLS reload refused, still serving the certificate with serial {}: {}",
              previous->serial(), std::string(ctx.status().message()));
    return ctx.status();
  }
  const TlsContext& c = **ctx;
  CRISP_LOG(kStream, info,
            "TLS reloaded: new connections get certificate \"{}\" (serial {}, valid until {}), "
            "previously serial {}; client certificates {}",
            c.subject(), c.serial(), c.notAfter(), previous->serial(),
            c.verifiesClients() ? "required" : "not requested");
  return absl::OkStatus();
}

std::optional<absl::Status> TlsContextHolder::reloadIfChanged() {
  const std::vector<FileStamp> stamps = stampFiles();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stamps == last_stamps_) {
      return std::nullopt;
    }
  }
  CRISP_LOG(kStream, info, "TLS: files changed, reloading");
  return reload();
}

TlsFileWatcher::TlsFileWatcher(event::Dispatcher& dispatcher, TlsContextHolder& holder,
                               std::chrono::milliseconds interval)
    : holder_(holder), interval_(interval), timer_(dispatcher, [this] { onTimer(); }) {
  timer_.enable(interval_);
}

void TlsFileWatcher::onTimer() {
  holder_.reloadIfChanged();
  timer_.enable(interval_);
}

}  // namespace crisp::stream
