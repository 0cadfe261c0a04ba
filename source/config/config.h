#pragma once

// Config: crisp's settings, loaded from one YAML file and checked completely
// before anything starts. docs/configuration.md describes every key.
//
//   absl::StatusOr<config::Config> c = config::loadFile("/etc/crisp/crisp.yaml");
//   if (!c.ok()) { print c.status().message(); exit(1); }
//
// A value is a plain struct; every field has its default here. Loading either
// returns a Config that passed every check, or INVALID_ARGUMENT whose message
// holds one line per problem, each as `<file>:<line>: <key>: <what is wrong>`,
// for example `crisp.yaml:12: stream.listen: expected host:port, got "abc"`.
// Unknown keys are errors. Loading touches no socket; it reads the file and
// the user database (for runtime.embedded.containers[].user).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "source/config/host_port.h"

namespace crisp::config {

// Who runs the exec sessions of the runtime behind cri.upstream.
enum class CriBackend {
  kStreamServer,  // the runtime's own stream server (every runtime)
  kContainerd,    // crisp, through containerd's task API on cri.upstream
};

struct CriConfig {
  std::string listen;                   // unix socket path; required
  std::optional<std::string> upstream;  // unix socket path; absent = embedded runtime
  CriBackend backend = CriBackend::kStreamServer;  // only with upstream
  uint32_t socket_mode = 0660;          // permission bits of the listening socket
  std::optional<uint32_t> socket_gid;   // group of the socket (cri.socket_group); absent = crisp's
};

// TLS on the stream server (docs/configuration.md, "stream.tls").
struct TlsConfig {
  std::string cert_file;       // PEM server certificate, intermediates may follow; absolute path
  std::string key_file;        // PEM private key of cert_file, not encrypted; absolute path
  std::string client_ca_file;  // PEM CAs client certificates must chain to; empty = none asked
};

struct StreamConfig {
  HostPort listen{"127.0.0.1", 10350, HostKind::kIpv4};  // an IP address; port 0 = any
  std::string advertise;  // http(s) base URL handed out; empty = from the listener
  uint32_t workers = 1;
  std::chrono::milliseconds stream_creation_timeout{std::chrono::seconds(30)};
  std::chrono::milliseconds stream_idle_timeout{std::chrono::hours(4)};
  uint32_t max_header_bytes = 16384;
  std::chrono::milliseconds header_timeout{std::chrono::seconds(10)};
  uint32_t max_sessions = 10000;
  std::optional<TlsConfig> tls;  // absent = plain HTTP
  // Largest SPDY frame payload (DATA at most 16 MiB - 1, the wire limit;
  // control frames at most 64 KiB) and WebSocket message accepted.
  uint32_t max_frame_bytes = 16 * 1024 * 1024;
  // Streams open at once on one HTTP/2 connection (SETTINGS_MAX_CONCURRENT_STREAMS).
  uint32_t max_concurrent_streams = 250;
  // After SIGTERM, how long running sessions may go on before crisp ends them.
  std::chrono::milliseconds drain_grace_period{std::chrono::seconds(30)};
};

// The audit log: one JSON line per session start and end.
struct AuditConfig {
  std::string path;  // absolute file path; empty = standard output
  uint32_t max_bytes = 100 * 1024 * 1024;  // rotate the file beyond this size
  uint32_t max_files = 5;                  // rotated files kept (path.1 ... path.N)
};

// Recordings of TTY sessions as asciicast v2 files.
struct RecordingConfig {
  std::string dir;                         // absolute directory; required
  uint32_t max_bytes = 10 * 1024 * 1024;   // per recording; it ends when reached
  uint32_t retention_count = 1000;         // recordings kept (0 = no count limit)
  std::chrono::milliseconds retention_age{0};  // older recordings removed (0 = no age limit)
  bool input = false;                      // also record "i" (input) events
};

struct CacheConfig {
  std::chrono::milliseconds ttl{std::chrono::minutes(1)};
  uint32_t shards = 16;
  uint32_t max_in_flight = 1000;
};

struct AdminConfig {
  std::optional<HostPort> listen;  // absent = no admin endpoint
};

struct LogConfig {
  // One of trace, debug, info, warn, error, critical, off (spdlog's names).
  std::string level = "info";
};

struct ContainerConfig {
  std::string id;                    // required, unique, [a-zA-Z0-9_.-]+
  std::string name;                  // defaults to id
  std::vector<std::string> command;  // the main process; required, not empty
  std::string working_dir = "/";
  std::vector<std::string> env;  // KEY=value
  std::string user;              // name or numeric uid; empty = crisp's own user
  bool tty = false;
  bool stdin = false;
  std::string image = "host";
  // The network namespace port-forward connects in (absolute path of a
  // namespace file, e.g. /run/netns/x or /proc/<pid>/ns/net); empty: crisp's.
  std::string network_namespace;
};

struct EmbeddedRuntimeConfig {
  std::vector<ContainerConfig> containers;
};

// How crisp reaches the runtime's stream server when cri.upstream is set.
struct StreamServerClientConfig {
  std::string ca_file;  // PEM CAs for https stream URLs; absolute path; empty = https refused
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  std::chrono::milliseconds upgrade_timeout{std::chrono::seconds(10)};
};

// With cri.backend containerd.
struct ContainerdRuntimeConfig {
  // Where exec sessions make the FIFOs containerd's shim opens (one private
  // subdirectory each); created 0700 at start. Absolute path.
  std::string fifo_dir = "/run/crisp/exec-fifos";
};

struct RuntimeConfig {
  EmbeddedRuntimeConfig embedded;
  StreamServerClientConfig stream_server;
  ContainerdRuntimeConfig containerd;
};

struct Config {
  CriConfig cri;
  StreamConfig stream;
  CacheConfig cache;
  AdminConfig admin;
  LogConfig log;
  RuntimeConfig runtime;
  std::optional<AuditConfig> audit;          // absent = no audit log
  std::optional<RecordingConfig> recording;  // absent = no recordings
  std::string source;  // the file name the values came from
};

// Reads and checks the file at `path`; errors name it as given. A file that
// cannot be read gives the errno's status code (NOT_FOUND, PERMISSION_DENIED,
// ...); content errors give INVALID_ARGUMENT. Thread-safe.
absl::StatusOr<Config> loadFile(const std::string& path);

// As loadFile, with `text` as the content and `name` used in messages.
absl::StatusOr<Config> loadString(const std::string& text, const std::string& name);

}  // namespace crisp::config
