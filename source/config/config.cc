#include "source/config/config.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "yaml-cpp/depthguard.h"
#include "yaml-cpp/eventhandler.h"
#include "yaml-cpp/yaml.h"

#include "source/common/file.h"

namespace crisp::config {
namespace {

using std::chrono::milliseconds;

constexpr size_t kMaxFileBytes = 1 << 20;
constexpr size_t kMaxUnixPathBytes = sizeof(sockaddr_un::sun_path) - 1;

constexpr const char* kLogLevels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};

// One key of a mapping, with where it was written.
struct Field {
  YAML::Node key;
  YAML::Node value;
  std::string path;  // dotted, from the top: "stream.listen", "runtime.embedded.containers[0].id"
  int key_line = 0;
};

std::string quoted(std::string_view s) { return absl::StrCat("\"", std::string(s), "\""); }

int lineOf(const YAML::Node& node, int fallback) {
  if (!node.IsDefined()) {
    return fallback;
  }
  const YAML::Mark mark = node.Mark();
  return mark.line >= 0 ? mark.line + 1 : fallback;
}

const char* describeType(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    case YAML::NodeType::Scalar:
      return "a single value";
    default:
      return "nothing";
  }
}

// `text` with control characters and bytes outside ASCII written as \n, \t or
// \xNN, everything else as it is.
std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte == '\n') {
      out += "\\n";
    } else if (byte == '\t') {
      out += "\\t";
    } else if (byte < 0x20 || byte >= 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(byte, absl::kZeroPad2));
    } else {
      out += c;
    }
  }
  return out;
}

// Collects every problem of one file, each with its location.
class Loader {
 public:
  explicit Loader(std::string name) : name_(std::move(name)) {}

  // Keys and values from the file reach messages as they were written; control
  // characters and bytes outside printable ASCII are shown escaped (\n, \x1b),
  // so every problem stays on one line of its own and a terminal shows it as is.
  void error(int line, const std::string& path, const std::string& message) {
    std::string text = absl::StrCat(name_, ":", line, ": ");
    if (!path.empty()) {
      absl::StrAppend(&text, printable(path), ": ");
    }
    absl::StrAppend(&text, printable(message));
    errors_.emplace_back(line, std::move(text));
  }

  // A problem with a field's value: reported on the value's line, or on the
  // key's line when there is no value to point at.
  void error(const Field& field, const std::string& message) {
    const int line = field.value.IsNull() ? field.key_line : lineOf(field.value, field.key_line);
    error(line, field.path, message);
  }

  void error(const Field& field, const YAML::Node& at, const std::string& path,
             const std::string& message) {
    error(lineOf(at, field.key_line), path, message);
  }

  bool ok() const { return errors_.empty(); }

  // Every problem, one per line, in the order of the file.
  absl::Status status() const {
    std::vector<std::pair<int, std::string>> sorted = errors_;
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    std::string text;
    for (const auto& [line, message] : sorted) {
      if (!text.empty()) {
        text += '\n';
      }
      text += message;
    }
    return absl::InvalidArgumentError(text);
  }

  const std::string& name() const { return name_; }

 private:
  const std::string name_;
  std::vector<std::pair<int, std::string>> errors_;  // line, message
};

// A mapping with a fixed set of keys. Unknown, duplicate and non-string keys
// are reported when it is read; take() hands out the known keys present.
class Mapping {
 public:
  Mapping(Loader& loader, const YAML::Node& node, std::string path, int line,
          std::vector<std::string> known)
      : loader_(loader), path_(std::move(path)), line_(line) {
    if (!node.IsDefined() || node.IsNull()) {
      return;  // an empty section: every key takes its default
    }
    if (!node.IsMap()) {
      loader_.error(lineOf(node, line_), path_,
                    absl::StrCat("expected a mapping, got ", describeType(node)));
      valid_ = false;
      return;
    }
    for (const auto& pair : node) {
      const YAML::Node key = pair.first;
      const YAML::Node value = pair.second;
      const int key_line = lineOf(key, line_);
      if (!key.IsScalar()) {
        loader_.error(key_line, path_, "keys must be plain names");
        continue;
      }
      const std::string name = key.Scalar();
      const std::string key_path = childPath(name);
      bool is_known = false;
      for (const std::string& k : known) {
        is_known |= (k == name);
      }
      if (!is_known) {
        loader_.error(
            key_line, key_path,
            absl::StrCat("unknown key (expected one of: ", absl::StrJoin(known, ", "), ")"));
        continue;
      }
      auto [entry, inserted] = fields_.try_emplace(name, Field{key, value, key_path, key_line});
      if (!inserted) {
        loader_.error(key_line, key_path,
                      absl::StrCat("duplicate key (first at line ", entry->second.key_line, ")"));
      }
    }
  }

  // False when the node was not a mapping at all (already reported).
  bool valid() const { return valid_; }
  int line() const { return line_; }

  const Field* get(std::string_view key) const {
    auto it = fields_.find(std::string(key));
    return it == fields_.end() ? nullptr : &it->second;
  }

  // Reports a missing required key; returns the field otherwise.
  const Field* require(std::string_view key, const char* what = "key") const {
    const Field* field = get(key);
    if (field == nullptr && valid_) {
      loader_.error(line_, childPath(key), absl::StrCat("required ", what, " is missing"));
    }
    return field;
  }

  std::string childPath(std::string_view key) const {
    return path_.empty() ? std::string(key) : absl::StrCat(path_, ".", std::string(key));
  }

 private:
  Loader& loader_;
  const std::string path_;
  const int line_;
  bool valid_ = true;
  std::map<std::string, Field> fields_;
};

// The text of a single-value field, or nullopt after reporting why not.
std::optional<std::string> scalar(Loader& loader, const Field& field, const std::string& what) {
  if (field.value.IsNull()) {
    loader.error(field, absl::StrCat("missing value, expected ", what));
    return std::nullopt;
  }
  if (!field.value.IsScalar()) {
    loader.error(field, absl::StrCat("expected ", what, ", got ", describeType(field.value)));
    return std::nullopt;
  }
  return field.value.Scalar();
}

bool allDigits(std::string_view s) {
  if (s.empty()) {
    return false;
  }
  for (char c : s) {
    if (c < '0' || c > '9') {
      return false;
    }
  }
  return true;
}

void readUint(Loader& loader, const Mapping& map, std::string_view key, uint64_t min, uint64_t max,
              uint32_t& out) {
  const Field* field = map.get(key);
  if (field == nullptr) {
    return;
  }
  const std::string what = absl::StrCat("an integer from ", min, " to ", max);
  std::optional<std::string> text = scalar(loader, *field, what);
  if (!text) {
    return;
  }
  uint64_t value = 0;
  if (!allDigits(*text) || text->size() > 10 || !absl::SimpleAtoi(*text, &value) || value < min ||
      value > max) {
    loader.error(*field, absl::StrCat("expected ", what, ", got ", quoted(*text)));
    return;
  }
  out = static_cast<uint32_t>(value);
}

void readBool(Loader& loader, const Mapping& map, std::string_view key, bool& out) {
  const Field* field = map.get(key);
  if (field == nullptr) {
    return;
  }
  std::optional<std::string> text = scalar(loader, *field, "true or false");
  if (!text) {
    return;
  }
  if (*text == "true" || *text == "True" || *text == "TRUE") {
    out = true;
  } else if (*text == "false" || *text == "False" || *text == "FALSE") {
    out = false;
  } else {
    loader.error(*field, absl::StrCat("expected true or false, got ", quoted(*text)));
  }
}

void readString(Loader& loader, const Mapping& map, std::string_view key, bool allow_empty,
                std::string& out) {
  const Field* field = map.get(key);
  if (field == nullptr) {
    return;
  }
  std::optional<std::string> text = scalar(loader, *field, "a string");
  if (!text) {
    return;
  }
  if (!allow_empty && text->empty()) {
    loader.error(*field, "must not be empty");
    return;
  }
  out = std::move(*text);
}

// A duration written with its unit: "500ms", "30s", "1m", "4h", "1h30m".
void readDuration(Loader& loader, const Mapping& map, std::string_view key, absl::Duration min,
                  absl::Duration max, milliseconds& out) {
  const Field* field = map.get(key);
  if (field == nullptr) {
    return;
  }
  const std::string what = "a duration such as 500ms, 30s, 1m or 4h";
  std::optional<std::string> text = scalar(loader, *field, what);
  if (!text) {
    return;
  }
  absl::Duration d;
  // absl also takes a bare "0" and "inf"; neither is a useful setting here.
  if (!absl::ParseDuration(*text, &d) || allDigits(*text) || d == absl::InfiniteDuration() ||
      d == -absl::InfiniteDuration()) {
    loader.error(*field, absl::StrCat("expected ", what, ", got ", quoted(*text)));
    return;
  }
  if (d < min || d > max) {
    loader.error(*field, absl::StrCat("must be from ", absl::FormatDuration(min), " to ",
                                      absl::FormatDuration(max), ", got ", quoted(*text)));
    return;
  }
  if (d != absl::Milliseconds(absl::ToInt64Milliseconds(d))) {
    loader.error(*field,
                 absl::StrCat("must be a whole number of milliseconds, got ", quoted(*text)));
    return;
  }
  out = milliseconds(absl::ToInt64Milliseconds(d));
}

std::optional<HostPort> readListen(Loader& loader, const Field& field) {
  std::optional<std::string> text = scalar(loader, field, "host:port");
  if (!text) {
    return std::nullopt;
  }
  absl::StatusOr<HostPort> address = parseHostPort(*text);
  if (!address.ok()) {
    loader.error(field, absl::StrCat("expected host:port, got ", quoted(*text), " (",
                                     std::string(address.status().message()), ")"));
    return std::nullopt;
  }
  if (!address->isIp()) {
    loader.error(field, absl::StrCat("expected an IP address and port, got ", quoted(*text),
                                     " (host names are not resolved here)"));
    return std::nullopt;
  }
  return *address;
}

std::optional<std::string> readSocketPath(Loader& loader, const Field& field) {
  std::optional<std::string> text = scalar(loader, field, "a unix socket path");
  if (!text) {
    return std::nullopt;
  }
  if (text->empty() || text->front() != '/') {
    loader.error(field, absl::StrCat("expected an absolute unix socket path, got ", quoted(*text)));
    return std::nullopt;
  }
  if (text->find('\0') != std::string::npos) {
    loader.error(field, "path contains a NUL byte");
    return std::nullopt;
  }
  if (text->size() > kMaxUnixPathBytes) {
    loader.error(field, absl::StrCat("unix socket path is ", text->size(), " bytes long; at most ",
                                     kMaxUnixPathBytes, " fit"));
    return std::nullopt;
  }
  return text;
}

void readSocketMode(Loader& loader, const Mapping& map, uint32_t& out) {
  const Field* field = map.get("socket_mode");
  if (field == nullptr) {
    return;
  }
  const std::string what = "an octal mode such as \"0660\"";
  std::optional<std::string> text = scalar(loader, *field, what);
  if (!text) {
    return;
  }
  uint32_t mode = 0;
  bool valid = !text->empty() && text->size() <= 4;
  for (char c : *text) {
    valid &= (c >= '0' && c <= '7');
    mode = mode * 8 + static_cast<uint32_t>(c - '0');
  }
  if (!valid || mode > 0777) {
    loader.error(*field, absl::StrCat("expected ", what, " (at most 0777), got ", quoted(*text)));
    return;
  }
  out = mode;
}

// An http:// or https:// base URL: scheme, host, optional port and path.
void readAdvertise(Loader& loader, const Mapping& map, std::string& out) {
  const Field* field = map.get("advertise");
  if (field == nullptr) {
    return;
  }
  std::optional<std::string> text = scalar(loader, *field, "an http:// or https:// URL");
  if (!text) {
    return;
  }
  const auto fail = [&](const std::string& why) {
    loader.error(*field, absl::StrCat("expected an http:// or https:// URL, got ", quoted(*text),
                                      " (", why, ")"));
  };
  std::string_view rest = *text;
  if (rest.substr(0, 7) == "http://") {
    rest.remove_prefix(7);
  } else if (rest.substr(0, 8) == "https://") {
    rest.remove_prefix(8);
  } else {
    fail("the scheme must be http or https");
    return;
  }
  const std::string_view authority = rest.substr(0, rest.find('/'));
  if (rest.find_first_of("?#") != std::string_view::npos) {
    fail("no query or fragment allowed");
    return;
  }
  if (authority.find('@') != std::string_view::npos) {
    fail("no user information allowed");
    return;
  }
  if (authority.empty()) {
    fail("missing host");
    return;
  }
  // With a port the authority is host:port; without, add one to reuse the parser.
  const bool has_port = authority.back() != ']' && authority.find(':') != std::string_view::npos;
  absl::StatusOr<HostPort> address =
      parseHostPort(has_port ? std::string(authority) : absl::StrCat(std::string(authority), ":1"));
  if (!address.ok()) {
    fail(std::string(address.status().message()));
    return;
  }
  if (has_port && address->port == 0) {
    fail("port 0 cannot be connected to");
    return;
  }
  for (char c : rest) {
    if (static_cast<unsigned char>(c) <= ' ' || static_cast<unsigned char>(c) >= 0x7f) {
      fail("spaces and control or non-ASCII characters must be percent-encoded");
      return;
    }
  }
  out = std::move(*text);
}

// stream.tls: the PEM files of the stream server's TLS. Whether they load is
// checked when crisp starts (they may be written between --check-config and
// the start, and are read again on reload).
void readAbsolutePath(Loader& loader, const Field& field, std::string& out) {
  std::optional<std::string> text = scalar(loader, field, "an absolute path");
  if (!text) {
    return;
  }
  if (text->empty() || text->front() != '/' || text->find('\0') != std::string::npos) {
    loader.error(field, absl::StrCat("expected an absolute path, got ", quoted(*text)));
    return;
  }
  out = std::move(*text);
}

// recording.retention: a count of recordings ("100") or an age ("168h").
void readRetention(Loader& loader, const Field& field, RecordingConfig& out) {
  const std::string what = "a number of recordings (100) or an age (168h)";
  std::optional<std::string> text = scalar(loader, field, what);
  if (!text) {
    return;
  }
  uint64_t count = 0;
  if (allDigits(*text)) {
    if (text->size() > 7 || !absl::SimpleAtoi(*text, &count) || count < 1 || count > 1000000) {
      loader.error(field, absl::StrCat("expected a count from 1 to 1000000, got ", quoted(*text)));
      return;
    }
    out.retention_count = static_cast<uint32_t>(count);
    out.retention_age = milliseconds(0);
    return;
  }
  absl::Duration d;
  if (!absl::ParseDuration(*text, &d) || d < absl::Seconds(1) || d > absl::Hours(24 * 3650)) {
    loader.error(field, absl::StrCat("expected ", what, " (an age from 1s to 87600h), got ",
                                     quoted(*text)));
    return;
  }
  out.retention_age = milliseconds(absl::ToInt64Milliseconds(d));
  out.retention_count = 0;
}

void readTls(Loader& loader, const Field& field, StreamConfig& stream) {
  Mapping tls(loader, field.value, field.path, field.key_line,
              {"cert_file", "key_file", "client_ca_file"});
  if (!tls.valid()) {
    return;
  }
  if (field.value.IsNull()) {
    loader.error(field, "expected a mapping with cert_file and key_file, got nothing");
    return;
  }
  bool ok = true;
  const auto readPath = [&](const Field* path_field, std::string& out) {
    if (path_field == nullptr) {
      ok = false;
      return;
    }
    std::optional<std::string> text = scalar(loader, *path_field, "an absolute file path");
    if (!text || text->empty() || text->front() != '/' || text->find('\0') != std::string::npos) {
      if (text) {
        loader.error(*path_field,
                     absl::StrCat("expected an absolute file path, got ", quoted(*text)));
      }
      ok = false;
      return;
    }
    out = std::move(*text);
  };
  TlsConfig out;
  readPath(tls.require("cert_file"), out.cert_file);
  readPath(tls.require("key_file"), out.key_file);
  if (const Field* ca = tls.get("client_ca_file")) {
    readPath(ca, out.client_ca_file);
  }
  if (ok) {
    stream.tls = std::move(out);
  }
}

void readLogLevel(Loader& loader, const Mapping& map, std::string& out) {
  const Field* field = map.get("level");
  if (field == nullptr) {
    return;
  }
  const std::string what = absl::StrCat("one of ", absl::StrJoin(kLogLevels, ", "));
  std::optional<std::string> text = scalar(loader, *field, what);
  if (!text) {
    return;
  }
  for (const char* level : kLogLevels) {
    if (*text == level) {
      out = *text;
      return;
    }
  }
  loader.error(*field, absl::StrCat("expected ", what, ", got ", quoted(*text)));
}

// A list of strings; nullopt after reporting a problem.
std::optional<std::vector<std::string>> readStringList(Loader& loader, const Field& field) {
  if (!field.value.IsSequence()) {
    loader.error(field,
                 absl::StrCat("expected a list of strings, got ", describeType(field.value)));
    return std::nullopt;
  }
  std::vector<std::string> out;
  bool ok = true;
  for (size_t i = 0; i < field.value.size(); ++i) {
    const YAML::Node item = field.value[i];
    if (!item.IsScalar()) {
      loader.error(field, item, absl::StrCat(field.path, "[", i, "]"),
                   absl::StrCat("expected a string, got ", describeType(item)));
      ok = false;
      continue;
    }
    out.push_back(item.Scalar());
  }
  if (!ok) {
    return std::nullopt;
  }
  return out;
}

bool isContainerId(std::string_view id) {
  if (id.empty()) {
    return false;
  }
  for (char c : id) {
    const bool valid = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                       c == '_' || c == '.' || c == '-';
    if (!valid) {
      return false;
    }
  }
  return true;
}

// Empty when the user exists; the reason otherwise.
std::string checkUser(const std::string& user) {
  if (allDigits(user)) {
    uint64_t uid = 0;
    if (user.size() > 10 || !absl::SimpleAtoi(user, &uid) || uid >= 0xffffffffULL) {
      return absl::StrCat("uid ", user, " is out of range");
    }
    return "";  // a numeric uid needs no entry in the user database
  }
  long size = sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(size > 0 ? static_cast<size_t>(size) : 16384);
  for (;;) {
    passwd entry;
    passwd* found = nullptr;
    const int rc = getpwnam_r(user.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (rc == ERANGE && buffer.size() < (1u << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (rc != 0) {
      return absl::StrCat("cannot look up user ", quoted(user), ": ", std::strerror(rc));
    }
    if (found == nullptr) {
      return absl::StrCat("user ", quoted(user), " does not exist on this host");
    }
    return "";
  }
}

// The gid of `group` (a name or a number), or the reason it is not one.
absl::StatusOr<uint32_t> lookUpGroup(const std::string& group) {
  if (allDigits(group)) {
    uint64_t gid = 0;
    if (group.size() > 10 || !absl::SimpleAtoi(group, &gid) || gid >= 0xffffffffULL) {
      return absl::InvalidArgumentError(absl::StrCat("gid ", group, " is out of range"));
    }
    return static_cast<uint32_t>(gid);
  }
  long size = sysconf(_SC_GETGR_R_SIZE_MAX);
  std::vector<char> buffer(size > 0 ? static_cast<size_t>(size) : 16384);
  for (;;) {
    struct group entry;
    struct group* found = nullptr;
    const int rc = getgrnam_r(group.c_str(), &entry, buffer.data(), buffer.size(), &found);
    if (rc == ERANGE && buffer.size() < (1u << 20)) {
      buffer.resize(buffer.size() * 2);
      continue;
    }
    if (rc != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot look up group ", quoted(group), ": ", std::strerror(rc)));
    }
    if (found == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("group ", quoted(group), " does not exist on this host"));
    }
    return static_cast<uint32_t>(entry.gr_gid);
  }
}

void readSocketGroup(Loader& loader, const Mapping& map, std::optional<uint32_t>& out) {
  const Field* field = map.get("socket_group");
  if (field == nullptr) {
    return;
  }
  std::optional<std::string> text = scalar(loader, *field, "a group name or numeric gid");
  if (!text) {
    return;
  }
  absl::StatusOr<uint32_t> gid = lookUpGroup(*text);
  if (!gid.ok()) {
    loader.error(*field, std::string(gid.status().message()));
    return;
  }
  out = *gid;
}

void readContainer(Loader& loader, const Field& list, const YAML::Node& node, size_t index,
                   std::map<std::string, int>& ids, std::vector<ContainerConfig>& out) {
  const std::string path = absl::StrCat(list.path, "[", index, "]");
  const int line = lineOf(node, list.key_line);
  Mapping map(loader, node, path, line,
              {"id", "name", "command", "working_dir", "env", "user", "tty", "stdin", "image",
               "network_namespace"});
  if (!map.valid()) {
    return;
  }
  if (node.IsNull()) {
    loader.error(line, path, "expected a mapping with at least id and command, got nothing");
    return;
  }
  ContainerConfig c;
  if (const Field* id = map.require("id")) {
    if (std::optional<std::string> text = scalar(loader, *id, "a container id")) {
      if (!isContainerId(*text)) {
        loader.error(
            *id, absl::StrCat("expected letters, digits, '_', '.' or '-', got ", quoted(*text)));
      } else if (auto [first, fresh] = ids.try_emplace(*text, lineOf(id->value, line)); !fresh) {
        loader.error(*id, absl::StrCat("duplicate container id ", quoted(*text), " (first at line ",
                                       first->second, ")"));
      } else {
        c.id = *text;
      }
    }
  }
  c.name = c.id;
  readString(loader, map, "name", false, c.name);
  if (const Field* command = map.require("command")) {
    if (std::optional<std::vector<std::string>> argv = readStringList(loader, *command)) {
      if (argv->empty()) {
        loader.error(*command, "must hold at least the program to run");
      } else if (argv->front().empty()) {
        loader.error(*command, command->value[0], command->path + "[0]",
                     "the program must not be empty");
      } else {
        c.command = std::move(*argv);
      }
    }
  }
  if (const Field* dir = map.get("working_dir")) {
    if (std::optional<std::string> text = scalar(loader, *dir, "an absolute path")) {
      if (text->empty() || text->front() != '/') {
        loader.error(*dir, absl::StrCat("expected an absolute path, got ", quoted(*text)));
      } else {
        c.working_dir = *text;
      }
    }
  }
  if (const Field* env = map.get("env")) {
    if (std::optional<std::vector<std::string>> vars = readStringList(loader, *env)) {
      for (size_t i = 0; i < vars->size(); ++i) {
        const std::string& var = (*vars)[i];
        const size_t eq = var.find('=');
        if (eq == std::string::npos || eq == 0) {
          loader.error(*env, env->value[i], absl::StrCat(env->path, "[", i, "]"),
                       absl::StrCat("expected KEY=value, got ", quoted(var)));
        }
      }
      c.env = std::move(*vars);
    }
  }
  if (const Field* user = map.get("user")) {
    if (std::optional<std::string> text = scalar(loader, *user, "a user name or numeric uid")) {
      if (!text->empty()) {
        if (std::string problem = checkUser(*text); !problem.empty()) {
          loader.error(*user, problem);
        }
      }
      c.user = *text;
    }
  }
  readBool(loader, map, "tty", c.tty);
  readBool(loader, map, "stdin", c.stdin);
  readString(loader, map, "image", false, c.image);
  if (const Field* netns = map.get("network_namespace")) {
    // Whether the file is a network namespace is checked when the runtime
    // starts: it may be made between --check-config and the start.
    if (std::optional<std::string> text = scalar(loader, *netns, "an absolute path")) {
      if (text->empty() || text->front() != '/') {
        loader.error(*netns, absl::StrCat("expected an absolute path, got ", quoted(*text)));
      } else {
        c.network_namespace = *text;
      }
    }
  }
  out.push_back(std::move(c));
}

void readStreamServerClient(Loader& loader, const Field& field, StreamServerClientConfig& out) {
  Mapping map(loader, field.value, field.path, field.key_line,
              {"ca_file", "connect_timeout", "upgrade_timeout"});
  if (const Field* ca = map.get("ca_file")) {
    std::optional<std::string> text = scalar(loader, *ca, "an absolute file path");
    if (text && (text->empty() || text->front() != '/')) {
      loader.error(*ca, absl::StrCat("expected an absolute file path, got ", quoted(*text)));
    } else if (text) {
      out.ca_file = *text;
    }
  }
  readDuration(loader, map, "connect_timeout", absl::Milliseconds(10), absl::Minutes(10),
               out.connect_timeout);
  readDuration(loader, map, "upgrade_timeout", absl::Milliseconds(10), absl::Minutes(10),
               out.upgrade_timeout);
}

void readRuntime(Loader& loader, const Field& field, Config& config) {
  Mapping runtime(loader, field.value, field.path, field.key_line,
                  {"embedded", "stream_server", "containerd"});
  if (const Field* stream_server = runtime.get("stream_server")) {
    readStreamServerClient(loader, *stream_server, config.runtime.stream_server);
  }
  if (const Field* containerd_field = runtime.get("containerd")) {
    Mapping containerd(loader, containerd_field->value, containerd_field->path,
                       containerd_field->key_line, {"fifo_dir"});
    if (const Field* fifo_dir = containerd.get("fifo_dir")) {
      readAbsolutePath(loader, *fifo_dir, config.runtime.containerd.fifo_dir);
    }
  }
  const Field* embedded_field = runtime.get("embedded");
  if (embedded_field == nullptr) {
    return;
  }
  Mapping embedded(loader, embedded_field->value, embedded_field->path, embedded_field->key_line,
                   {"containers"});
  const Field* containers = embedded.get("containers");
  if (containers == nullptr || containers->value.IsNull()) {
    return;
  }
  if (!containers->value.IsSequence()) {
    loader.error(*containers,
                 absl::StrCat("expected a list, got ", describeType(containers->value)));
    return;
  }
  if (config.cri.upstream && containers->value.size() > 0) {
    loader.error(containers->key_line, containers->path,
                 "only used by the embedded runtime, but cri.upstream is set");
    return;
  }
  std::map<std::string, int> ids;
  for (size_t i = 0; i < containers->value.size(); ++i) {
    readContainer(loader, *containers, containers->value[i], i, ids,
                  config.runtime.embedded.containers);
  }
}

void readConfig(Loader& loader, const YAML::Node& root, Config& config) {
  Mapping top(loader, root, "", lineOf(root, 1),
              {"cri", "stream", "cache", "admin", "log", "runtime", "audit", "recording"});
  if (!top.valid()) {
    return;
  }

  if (const Field* cri_field = top.require("cri", "section")) {
    Mapping cri(loader, cri_field->value, cri_field->path, cri_field->key_line,
                {"listen", "upstream", "backend", "socket_mode", "socket_group"});
    if (const Field* listen = cri.require("listen")) {
      if (std::optional<std::string> path = readSocketPath(loader, *listen)) {
        config.cri.listen = *path;
      }
    }
    if (const Field* upstream = cri.get("upstream")) {
      if (std::optional<std::string> path = readSocketPath(loader, *upstream)) {
        if (*path == config.cri.listen) {
          loader.error(*upstream, "same path as cri.listen");
        } else {
          config.cri.upstream = *path;
        }
      }
    }
    if (const Field* backend = cri.get("backend")) {
      const char* what = "one of stream-server, containerd";
      if (std::optional<std::string> text = scalar(loader, *backend, what)) {
        if (*text == "stream-server") {
          config.cri.backend = CriBackend::kStreamServer;
        } else if (*text == "containerd") {
          config.cri.backend = CriBackend::kContainerd;
          if (!config.cri.upstream) {
            loader.error(*backend, "containerd needs cri.upstream (containerd's socket)");
          }
        } else {
          loader.error(*backend, absl::StrCat("expected ", what, ", got ", quoted(*text)));
        }
      }
    }
    readSocketMode(loader, cri, config.cri.socket_mode);
    readSocketGroup(loader, cri, config.cri.socket_gid);
  }

  if (const Field* stream_field = top.get("stream")) {
    Mapping stream(
        loader, stream_field->value, stream_field->path, stream_field->key_line,
        {"listen", "advertise", "workers", "stream_creation_timeout", "stream_idle_timeout",
         "max_header_bytes", "header_timeout", "max_sessions", "max_frame_bytes", "tls",
         "max_concurrent_streams", "drain_grace_period"});
    if (const Field* listen = stream.get("listen")) {
      if (std::optional<HostPort> address = readListen(loader, *listen)) {
        config.stream.listen = *address;
      }
    }
    readAdvertise(loader, stream, config.stream.advertise);
    readUint(loader, stream, "workers", 1, 64, config.stream.workers);
    readDuration(loader, stream, "stream_creation_timeout", absl::Milliseconds(100), absl::Hours(1),
                 config.stream.stream_creation_timeout);
    readDuration(loader, stream, "stream_idle_timeout", absl::Seconds(1), absl::Hours(168),
                 config.stream.stream_idle_timeout);
    readUint(loader, stream, "max_header_bytes", 1024, 1 << 20, config.stream.max_header_bytes);
    readDuration(loader, stream, "header_timeout", absl::Milliseconds(100), absl::Minutes(10),
                 config.stream.header_timeout);
    readUint(loader, stream, "max_sessions", 1, 1000000, config.stream.max_sessions);
    readUint(loader, stream, "max_frame_bytes", 4096, 256u << 20, config.stream.max_frame_bytes);
    readUint(loader, stream, "max_concurrent_streams", 1, 10000,
             config.stream.max_concurrent_streams);
    readDuration(loader, stream, "drain_grace_period", absl::ZeroDuration(), absl::Hours(1),
                 config.stream.drain_grace_period);
    if (const Field* tls = stream.get("tls")) {
      readTls(loader, *tls, config.stream);
    }
    if (const Field* advertise = stream.get("advertise");
        advertise != nullptr && config.stream.tls &&
        config.stream.advertise.rfind("http://", 0) == 0) {
      loader.error(*advertise, "an http:// URL, but stream.tls is set: clients must use https://");
    }
  }

  if (const Field* cache_field = top.get("cache")) {
    Mapping cache(loader, cache_field->value, cache_field->path, cache_field->key_line,
                  {"ttl", "shards", "max_in_flight"});
    readDuration(loader, cache, "ttl", absl::Milliseconds(100), absl::Hours(1), config.cache.ttl);
    readUint(loader, cache, "shards", 1, 1024, config.cache.shards);
    readUint(loader, cache, "max_in_flight", 1, 10000000, config.cache.max_in_flight);
  }

  if (const Field* admin_field = top.get("admin")) {
    Mapping admin(loader, admin_field->value, admin_field->path, admin_field->key_line, {"listen"});
    if (const Field* listen = admin.get("listen")) {
      if (std::optional<HostPort> address = readListen(loader, *listen)) {
        if (address->port != 0 && *address == config.stream.listen) {
          loader.error(*listen, "same address as stream.listen");
        } else {
          config.admin.listen = *address;
        }
      }
    }
  }

  if (const Field* log_field = top.get("log")) {
    Mapping log(loader, log_field->value, log_field->path, log_field->key_line, {"level"});
    readLogLevel(loader, log, config.log.level);
  }

  if (const Field* runtime_field = top.get("runtime")) {
    readRuntime(loader, *runtime_field, config);
  }

  if (const Field* audit_field = top.get("audit")) {
    Mapping audit(loader, audit_field->value, audit_field->path, audit_field->key_line,
                  {"path", "max_bytes", "max_files"});
    AuditConfig out;
    if (const Field* path = audit.get("path")) {
      readAbsolutePath(loader, *path, out.path);
    }
    readUint(loader, audit, "max_bytes", 4096, 1u << 30, out.max_bytes);
    readUint(loader, audit, "max_files", 1, 1000, out.max_files);
    config.audit = out;
  }

  if (const Field* recording_field = top.get("recording")) {
    Mapping recording(loader, recording_field->value, recording_field->path,
                      recording_field->key_line, {"dir", "max_bytes", "retention", "input"});
    RecordingConfig out;
    if (const Field* dir = recording.require("dir")) {
      readAbsolutePath(loader, *dir, out.dir);
    }
    readUint(loader, recording, "max_bytes", 1024, 1u << 30, out.max_bytes);
    if (const Field* retention = recording.get("retention")) {
      readRetention(loader, *retention, out);
    }
    readBool(loader, recording, "input", out.input);
    config.recording = out;
  }
}

// Where the first `most` documents of `text` start. Documents are counted with
// yaml-cpp's event parser and a cap: its LoadAll() never ends on some inputs
// (a flow mapping followed by a comma yields empty documents forever).
std::vector<YAML::Mark> documentStarts(const std::string& text, size_t most) {
  class StartRecorder : public YAML::EventHandler {
   public:
    std::vector<YAML::Mark> starts;
    void OnDocumentStart(const YAML::Mark& mark) override { starts.push_back(mark); }
    void OnDocumentEnd() override {}
    void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
    void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
    void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  const std::string&) override {}
    void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                         YAML::EmitterStyle::value) override {}
    void OnSequenceEnd() override {}
    void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                    YAML::EmitterStyle::value) override {}
    void OnMapEnd() override {}
  };
  std::istringstream in(text);
  YAML::Parser parser(in);
  StartRecorder recorder;
  while (recorder.starts.size() < most && parser.HandleNextDocument(recorder)) {
  }
  return recorder.starts;
}

}  // namespace

absl::StatusOr<Config> loadString(const std::string& text, const std::string& name) {
  Loader loader(name);
  Config config;
  config.source = name;
  // yaml-cpp reports problems by throwing; nothing it throws leaves this function.
  try {
    const std::vector<YAML::Mark> starts = documentStarts(text, 2);
    if (starts.size() > 1) {
      loader.error(starts[1].line >= 0 ? starts[1].line + 1 : 1, "",
                   "a config file holds one YAML document; a second one starts here");
    } else {
      readConfig(loader, YAML::Load(text), config);
    }
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp's own text for this one is "bad file".
    loader.error(e.mark.line >= 0 ? e.mark.line + 1 : 1, "",
                 absl::StrCat("syntax error at column ", e.mark.column + 1,
                              ": lists or mappings nested too deeply"));
  } catch (const YAML::ParserException& e) {
    loader.error(e.mark.line >= 0 ? e.mark.line + 1 : 1, "",
                 absl::StrCat("syntax error at column ", e.mark.column + 1, ": ", e.msg));
  } catch (const YAML::Exception& e) {
    loader.error(e.mark.line >= 0 ? e.mark.line + 1 : 1, "", e.msg);
  } catch (const std::exception& e) {
    loader.error(1, "", absl::StrCat("cannot load: ", e.what()));
  }
  if (!loader.ok()) {
    return loader.status();
  }
  return config;
}

absl::StatusOr<Config> loadFile(const std::string& path) {
  absl::StatusOr<std::string> text = readSmallFile(path, kMaxFileBytes, "config file");
  if (!text.ok()) {
    return text.status();
  }
  return loadString(*text, path);
}

}  // namespace crisp::config
