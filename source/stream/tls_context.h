#pragma once

// TLS settings of the stream server: the certificate, its key and the CA that
// client certificates must chain to, loaded into an OpenSSL SSL_CTX, and the
// holder that swaps a freshly loaded context in without touching connections
// already established.
//
//   auto holder = TlsContextHolder::create({"/etc/crisp/tls.crt", "/etc/crisp/tls.key", ""});
//   if (!holder.ok()) { ...the status names the file and OpenSSL's reason... }
//   TlsContextPtr ctx = (*holder)->current();   // per accepted connection, any thread
//   (*holder)->reload();                        // SIGHUP; keeps the old context on failure
//   TlsFileWatcher watcher(control_dispatcher, **holder, std::chrono::seconds(5));
//
// What a context enforces:
// - TLS 1.2 and 1.3 only. TLS 1.2 is limited to ECDHE key exchange with
//   AES-GCM or ChaCha20-Poly1305 (kTls12Ciphers); TLS 1.3 uses OpenSSL's
//   default suites (all AEAD). No renegotiation, no compression, no session
//   resumption (every connection makes a full handshake, so a reload never
//   meets an old session).
// - With a client CA file, every client must present a certificate that
//   chains to one of its CAs; the handshake fails otherwise. Without one, no
//   client certificate is asked for.
// - ALPN: the protocols served are chosen in one place, selectAlpnProtocol():
//   "h2" first, then "http/1.1"; a client that offers ALPN with neither gets
//   the no_application_protocol alert (RFC 7301, 3.2). A client that sends no
//   ALPN is served by the preface it sends (HTTP/1.1, or HTTP/2 with prior
//   knowledge).
//
// Reloading: the files are read again into a new SSL_CTX; only when the whole
// set loads (certificate chain, key matching it, CA file) does it replace the
// current one, atomically, for connections accepted afterwards. A connection
// keeps the context it was accepted with until it ends. A set that fails to
// load is refused with one log line naming the file and the error, and the
// previous context stays.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#include "source/common/dispatcher.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace crisp::stream {

// The cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults).
inline constexpr char kTls12Ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// The files a context is loaded from, all PEM.
struct TlsFiles {
  // The server certificate, optionally followed by its intermediates.
  std::string cert_file;
  // The private key of the first certificate in cert_file; not encrypted.
  std::string key_file;
  // CA certificates that client certificates must chain to. Empty: clients
  // are not asked for a certificate.
  std::string client_ca_file;
};

// Picks the protocol to serve from a client's ALPN offer, given in its wire
// form (each name preceded by its length byte). nullopt when nothing offered
// is served, or the offer is malformed.
std::optional<std::string> selectAlpnProtocol(std::string_view client_offer);

// One loaded SSL_CTX. Immutable once loaded; share it with shared_ptr.
class TlsContext {
 public:
  // Reads `files` and builds a server context. Failures name the file and
  // say what is wrong with it (OpenSSL's reason where OpenSSL found it):
  // "/etc/crisp/tls.key: the private key does not match the certificate in
  // /etc/crisp/tls.crt". Thread-safe.
  static absl::StatusOr<std::shared_ptr<const TlsContext>> load(const TlsFiles& files);
  // A client context (crisp connecting to a runtime's stream server): the
  // server's certificate must chain to a CA in `ca_file` (PEM); the name is
  // checked per connection (TlsTransportOptions::server_name). Fails as
  // load() does.
  static absl::StatusOr<std::shared_ptr<const TlsContext>> loadClient(const std::string& ca_file);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  // The context for SSL_new(). Owned by this object.
  SSL_CTX* raw() const { return ctx_; }
  bool verifiesClients() const { return verifies_clients_; }
  // True for a context made by loadClient().
  bool isClient() const { return client_; }
  // Facts about the leaf certificate, for logs and tests: the serial number
  // in upper-case hex, the subject as an RFC 2253 string, and the end of its
  // validity as OpenSSL prints it ("Jan  2 15:04:05 2030 GMT").
  const std::string& serial() const { return serial_; }
  const std::string& subject() const { return subject_; }
  const std::string& notAfter() const { return not_after_; }

 private:
  TlsContext() = default;

  SSL_CTX* ctx_ = nullptr;
  bool verifies_clients_ = false;
  bool client_ = false;
  std::string serial_;
  std::string subject_;
  std::string not_after_;
};

using TlsContextPtr = std::shared_ptr<const TlsContext>;

// The current context of a server and its reloading. Every method is
// thread-safe: workers call current() on accept while the control loop
// reloads.
class TlsContextHolder {
 public:
  // Loads `files` once; fails as TlsContext::load does.
  static absl::StatusOr<std::unique_ptr<TlsContextHolder>> create(TlsFiles files);
  TlsContextHolder(const TlsContextHolder&) = delete;
  TlsContextHolder& operator=(const TlsContextHolder&) = delete;

  // The context for a new connection. Never null.
  TlsContextPtr current() const;

  // Loads the files again. On success the new context is current from now on
  // and the log says so; on failure the log line names the file and the
  // error, the current context stays, and the status says the same.
  absl::Status reload();

  // Reloads when any of the files changed (device, inode, size or
  // modification time differ from what the last load, good or bad, saw), so
  // a broken file is reported once, not at every check. nullopt when nothing
  // changed; the result of reload() otherwise.
  std::optional<absl::Status> reloadIfChanged();

  const TlsFiles& files() const { return files_; }
  // Successful loads so far, the first included.
  uint64_t generation() const;

 private:
  // What stat(2) says about one file; all zero when it cannot be stat'ed.
  struct FileStamp {
    uint64_t device = 0;
    uint64_t inode = 0;
    int64_t size = 0;
    int64_t mtime_ns = 0;
    bool operator==(const FileStamp& other) const;
  };

  explicit TlsContextHolder(TlsFiles files);
  std::vector<FileStamp> stampFiles() const;

  const TlsFiles files_;
  mutable std::mutex mutex_;
  TlsContextPtr current_;               // guarded by mutex_
  std::vector<FileStamp> last_stamps_;  // guarded by mutex_
  uint64_t generation_ = 0;             // guarded by mutex_
  std::mutex reload_mutex_;             // one reload at a time
};

// Checks a holder's files for changes every `interval` on `dispatcher` and
// reloads them (TlsContextHolder::reloadIfChanged). Create, use and destroy
// it on the dispatcher's thread (or before its loop runs); the holder must
// outlive it.
class TlsFileWatcher {
 public:
  TlsFileWatcher(event::Dispatcher& dispatcher, TlsContextHolder& holder,
                 std::chrono::milliseconds interval);

 private:
  void onTimer();

  TlsContextHolder& holder_;
  const std::chrono::milliseconds interval_;
  event::Timer timer_;
};

}  // namespace crisp::stream
