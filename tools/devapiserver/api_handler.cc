#include "tools/devapiserver/api_handler.h"

#include <chrono>
#include <ctime>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

#include "tools/devapiserver/json_writer.h"

namespace crisp::devapi {
namespace {

constexpr absl::string_view kNamespace = "default";
constexpr absl::string_view kStdinAnnotation = "crisp.dev/stdin";
constexpr absl::string_view kTtyAnnotation = "crisp.dev/tty";
// What /version reports: a recent release, so that no kubectl 1.27-1.33 warns about skew
// beyond what it would against a real cluster of that release.
constexpr absl::string_view kVersionMajor = "1";
constexpr absl::string_view kVersionMinor = "33";
constexpr absl::string_view kGitVersion = "v1.33.0-crisp-devapiserver";

HttpResponse jsonResponse(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.headers.emplace_back("Content-Type", "application/json");
  r.headers.emplace_back("Cache-Control", "no-cache, private");
  r.body = std::move(body);
  return r;
}

HttpResponse notFound(absl::string_view kind, absl::string_view name) {
  return statusResponse(404, "NotFound", absl::StrCat(kind, " \"", name, "\" not found"), name,
                        kind);
}

HttpResponse resourceNotFound() {
  return statusResponse(404, "NotFound", "the server could not find the requested resource");
}

HttpResponse methodNotAllowed() {
  return statusResponse(405, "MethodNotAllowed",
                        "the server does not allow this method on the requested resource");
}

HttpResponse badRequest(absl::string_view message) {
  return statusResponse(400, "BadRequest", message);
}

// The HTTP status and Status reason for a failed runtime call.
HttpResponse runtimeError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kNotFound:
      return statusResponse(404, "NotFound", status.message());
    case absl::StatusCode::kInvalidArgument:
      return statusResponse(400, "BadRequest", status.message());
    case absl::StatusCode::kResourceExhausted: {
      HttpResponse r = statusResponse(429, "TooManyRequests", status.message());
      r.headers.emplace_back("Retry-After", "60");
      return r;
    }
    default:
      return statusResponse(500, "InternalError", status.message());
  }
}

std::string rfc3339(int64_t unix_ns) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ns / 1000000000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool annotationIsFalse(const PodInfo& pod, absl::string_view key) {
  const auto it = pod.annotations.find(std::string(key));
  return it != pod.annotations.end() && absl::EqualsIgnoreCase(it->second, "false");
}

// Query flags: the apiserver style (stdin=true) and the kubelet style (input=1).
std::optional<bool> queryFlag(const QueryList& query, absl::string_view name,
                              absl::string_view kubelet_name) {
  std::optional<bool> result;
  for (const auto& [key, value] : query) {
    if (key == name || key == kubelet_name) {
      result = value == "1" || absl::EqualsIgnoreCase(value, "true");
    }
  }
  return result;
}

std::vector<std::string> queryValues(const QueryList& query, absl::string_view name) {
  std::vector<std::string> out;
  for (const auto& [key, value] : query) {
    if (key == name) {
      out.push_back(value);
    }
  }
  return out;
}

const std::string* queryValue(const QueryList& query, absl::string_view name) {
  for (const auto& [key, value] : query) {
    if (key == name) {
      return &value;
    }
  }
  return nullptr;
}

// The running container of that name, else the most recently created one.
const PodInfo* findPod(const std::vector<PodInfo>& pods, absl::string_view name) {
  const PodInfo* best = nullptr;
  for (const PodInfo& pod : pods) {
    if (pod.name != name) {
      continue;
    }
    if (best == nullptr) {
      best = &pod;
      continue;
    }
    const bool running = pod.state == ContainerState::kRunning;
    const bool best_running = best->state == ContainerState::kRunning;
    if ((running && !best_running) ||
        (running == best_running && pod.created_at_ns > best->created_at_ns)) {
      best = &pod;
    }
  }
  return best;
}

// Every distinct pod name once, chosen as findPod() does, in the runtime's order.
std::vector<const PodInfo*> distinctPods(const std::vector<PodInfo>& pods) {
  std::vector<const PodInfo*> out;
  for (const PodInfo& pod : pods) {
    const PodInfo* chosen = findPod(pods, pod.name);
    bool seen = false;
    for (const PodInfo* p : out) {
      seen = seen || p == chosen;
    }
    if (!seen) {
      out.push_back(chosen);
    }
  }
  return out;
}

// An equality-based label selector: "a=b,c==d,e!=f,g,!h".
class LabelSelector {
 public:
  static std::optional<LabelSelector> parse(absl::string_view text) {
    LabelSelector selector;
    for (absl::string_view term : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
      term = absl::StripAsciiWhitespace(term);
      Requirement req;
      if (absl::ConsumePrefix(&term, "!")) {
        req.op = Op::kNotExists;
        req.key = std::string(absl::StripAsciiWhitespace(term));
      } else if (const size_t ne = term.find("!="); ne != absl::string_view::npos) {
        req.op = Op::kNotEquals;
        req.key = std::string(absl::StripAsciiWhitespace(term.substr(0, ne)));
        req.value = std::string(absl::StripAsciiWhitespace(term.substr(ne + 2)));
      } else if (const size_t eq = term.find('='); eq != absl::string_view::npos) {
        req.op = Op::kEquals;
        absl::string_view value = term.substr(eq + 1);
        absl::ConsumePrefix(&value, "=");
        req.key = std::string(absl::StripAsciiWhitespace(term.substr(0, eq)));
        req.value = std::string(absl::StripAsciiWhitespace(value));
      } else {
        req.op = Op::kExists;
        req.key = std::string(term);
      }
      if (req.key.empty() || absl::StrContains(req.key, " ") || absl::StrContains(req.key, "(") ||
          absl::StrContains(req.value, "(")) {
        return std::nullopt;
      }
      selector.requirements_.push_back(std::move(req));
    }
    return selector;
  }

  bool matches(const std::map<std::string, std::string>& labels) const {
    for (const Requirement& req : requirements_) {
      const auto it = labels.find(req.key);
      const bool has = it != labels.end();
      switch (req.op) {
        case Op::kEquals:
          if (!has || it->second != req.value) {
            return false;
          }
          break;
        case Op::kNotEquals:
          if (has && it->second == req.value) {
            return false;
          }
          break;
        case Op::kExists:
          if (!has) {
            return false;
          }
          break;
        case Op::kNotExists:
          if (has) {
            return false;
          }
          break;
      }
    }
    return true;
  }

 private:
  enum class Op { kEquals, kNotEquals, kExists, kNotExists };
  struct Requirement {
    Op op = Op::kExists;
    std::string key;
    std::string value;
  };
  std::vector<Requirement> requirements_;
};

struct PodView {
  const char* phase;
  std::string status_text;  // the STATUS column
  bool ready;
};

PodView viewOf(const PodInfo& pod) {
  switch (pod.state) {
    case ContainerState::kRunning:
      return {"Running", "Running", true};
    case ContainerState::kCreated:
      return {"Pending", "ContainerCreating", false};
    case ContainerState::kExited:
      return pod.exit_code == 0 ? PodView{"Succeeded", "Completed", false}
                                : PodView{"Failed", "Error", false};
    case ContainerState::kUnknown:
      break;
  }
  return {"Unknown", "Unknown", false};
}

void writeStringMap(JsonWriter& w, absl::string_view name,
                    const std::map<std::string, std::string>& map) {
  if (map.empty()) {
    return;
  }
  w.key(name).beginObject();
  for (const auto& [k, v] : map) {
    w.key(k).string(v);
  }
  w.endObject();
}

void writeObjectMeta(JsonWriter& w, const PodInfo& pod) {
  w.key("metadata").beginObject();
  w.key("name").string(pod.name);
  w.key("namespace").string(kNamespace);
  w.key("uid").string(pod.container_id);
  w.key("resourceVersion").string("1");
  if (pod.created_at_ns > 0) {
    w.key("creationTimestamp").string(rfc3339(pod.created_at_ns));
  }
  writeStringMap(w, "labels", pod.labels);
  writeStringMap(w, "annotations", pod.annotations);
  w.endObject();
}

void writePod(JsonWriter& w, const PodInfo& pod, const std::string& node_name,
              bool with_type_meta) {
  const PodView view = viewOf(pod);
  w.beginObject();
  if (with_type_meta) {
    w.key("kind").string("Pod");
    w.key("apiVersion").string("v1");
  }
  writeObjectMeta(w, pod);

  w.key("spec").beginObject();
  w.key("containers").beginArray().beginObject();
  w.key("name").string(pod.name);
  w.key("image").string(pod.image);
  w.key("resources").beginObject().endObject();
  w.key("stdin").boolean(!annotationIsFalse(pod, kStdinAnnotation));
  w.key("tty").boolean(!annotationIsFalse(pod, kTtyAnnotation));
  w.endObject().endArray();
  w.key("restartPolicy").string("Never");
  w.key("nodeName").string(node_name);
  w.endObject();

  w.key("status").beginObject();
  w.key("phase").string(view.phase);
  w.key("conditions").beginArray();
  for (const char* type : {"Initialized", "Ready", "ContainersReady", "PodScheduled"}) {
    const bool ok = view.ready || absl::string_view(type) == "Initialized" ||
                    absl::string_view(type) == "PodScheduled";
    w.beginObject();
    w.key("type").string(type);
    w.key("status").string(ok ? "True" : "False");
    w.endObject();
  }
  w.endArray();
  if (pod.created_at_ns > 0) {
    w.key("startTime").string(rfc3339(pod.created_at_ns));
  }
  w.key("containerStatuses").beginArray().beginObject();
  w.key("name").string(pod.name);
  w.key("state").beginObject();
  switch (pod.state) {
    case ContainerState::kRunning:
      w.key("running").beginObject();
      if (pod.started_at_ns > 0) {
        w.key("startedAt").string(rfc3339(pod.started_at_ns));
      }
      w.endObject();
      break;
    case ContainerState::kCreated:
      w.key("waiting").beginObject().key("reason").string("ContainerCreating").endObject();
      break;
    case ContainerState::kExited:
      w.key("terminated").beginObject();
      w.key("exitCode").number(pod.exit_code);
      w.key("reason").string(view.status_text);
      w.endObject();
      break;
    case ContainerState::kUnknown:
      break;
  }
  w.endObject();
  w.key("ready").boolean(view.ready);
  w.key("restartCount").number(0);
  w.key("image").string(pod.image);
  w.key("imageID").string("");
  w.key("containerID").string(absl::StrCat("cri://", pod.container_id));
  w.key("started").boolean(pod.state == ContainerState::kRunning);
  w.endObject().endArray();
  w.endObject();

  w.endObject();
}

// The Table version the client accepts, "v1" or "v1beta1"; empty when it wants no table.
std::string acceptedTableVersion(const HttpRequest& request) {
  const std::string* accept = request.header("Accept");
  if (accept == nullptr) {
    return "";
  }
  for (absl::string_view media : absl::StrSplit(*accept, ',')) {
    bool is_table = false;
    bool meta_group = false;
    std::string version;
    for (absl::string_view param : absl::StrSplit(media, ';')) {
      param = absl::StripAsciiWhitespace(param);
      if (param == "as=Table") {
        is_table = true;
      } else if (param == "g=meta.k8s.io") {
        meta_group = true;
      } else if (absl::ConsumePrefix(&param, "v=")) {
        version = std::string(param);
      }
    }
    if (is_table && meta_group && (version == "v1" || version == "v1beta1")) {
      return version;
    }
  }
  return "";
}

}  // namespace

HttpResponse statusResponse(int code, absl::string_view reason, absl::string_view message,
                            absl::string_view name, absl::string_view kind) {
  JsonWriter w;
  w.beginObject();
  w.key("kind").string("Status");
  w.key("apiVersion").string("v1");
  w.key("metadata").beginObject().endObject();
  w.key("status").string("Failure");
  w.key("message").string(message);
  w.key("reason").string(reason);
  w.key("details").beginObject();
  if (!name.empty()) {
    w.key("name").string(name);
  }
  if (!kind.empty()) {
    w.key("kind").string(kind);
  }
  w.endObject();
  w.key("code").number(code);
  w.endObject();
  return jsonResponse(code, w.take());
}

std::string humanDuration(int64_t seconds) {
  if (seconds < -1) {
    return "<invalid>";
  }
  if (seconds < 0) {
    return "0s";
  }
  if (seconds < 120) {
    return absl::StrCat(seconds, "s");
  }
  const int64_t minutes = seconds / 60;
  if (minutes < 10) {
    return seconds % 60 == 0 ? absl::StrCat(minutes, "m")
                             : absl::StrCat(minutes, "m", seconds % 60, "s");
  }
  if (minutes < 180) {
    return absl::StrCat(minutes, "m");
  }
  const int64_t hours = minutes / 60;
  if (hours < 8) {
    return minutes % 60 == 0 ? absl::StrCat(hours, "h")
                             : absl::StrCat(hours, "h", minutes % 60, "m");
  }
  if (hours < 48) {
    return absl::StrCat(hours, "h");
  }
  const int64_t days = hours / 24;
  if (hours < 24 * 8) {
    return hours % 24 == 0 ? absl::StrCat(days, "d") : absl::StrCat(days, "d", hours % 24, "h");
  }
  if (days < 365 * 2) {
    return absl::StrCat(days, "d");
  }
  const int64_t years = days / 365;
  if (years < 8) {
    return days % 365 == 0 ? absl::StrCat(years, "y") : absl::StrCat(years, "y", days % 365, "d");
  }
  return absl::StrCat(years, "y");
}

ApiHandler::ApiHandler(PodSource& pods, ApiOptions options)
    : pods_(pods), options_(std::move(options)), start_ns_(nowNs()) {}

int64_t ApiHandler::nowNs() const {
  if (options_.now_ns) {
    return options_.now_ns();
  }
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

HandlerResult ApiHandler::handle(const HttpRequest& request) {
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(request.path, '/', absl::SkipEmpty())) {
    parts.push_back(percentDecode(part));
  }
  const bool is_get = request.method == "GET" || request.method == "HEAD";

  if (parts.size() == 1 && (parts[0] == "healthz" || parts[0] == "livez" || parts[0] == "readyz")) {
    HttpResponse r;
    r.headers.emplace_back("Content-Type", "text/plain; charset=utf-8");
    r.body = "ok";
    return r;
  }
  if (parts.size() == 1 && parts[0] == "version") {
    if (!is_get) {
      return methodNotAllowed();
    }
    JsonWriter w;
    w.beginObject();
    w.key("major").string(kVersionMajor);
    w.key("minor").string(kVersionMinor);
    w.key("gitVersion").string(kGitVersion);
    w.key("gitCommit").string("");
    w.key("gitTreeState").string("clean");
    w.key("buildDate").string("1970-01-01T00:00:00Z");
    w.key("goVersion").string("");
    w.key("compiler").string("");
    w.key("platform").string("linux/amd64");
    w.endObject();
    return jsonResponse(200, w.take());
  }
  if (parts.size() == 1 && parts[0] == "api") {
    if (!is_get) {
      return methodNotAllowed();
    }
    // Aggregated discovery is not offered: whatever the Accept header asks for,
    // the legacy APIVersions document with Content-Type application/json makes
    // client-go fall back to per-group-version discovery.
    JsonWriter w;
    w.beginObject();
    w.key("kind").string("APIVersions");
    w.key("versions").beginArray().string("v1").endArray();
    w.key("serverAddressByClientCIDRs").beginArray().beginObject();
    w.key("clientCIDR").string("0.0.0.0/0");
    w.key("serverAddress").string(options_.server_address);
    w.endObject().endArray();
    w.endObject();
    return jsonResponse(200, w.take());
  }
  if (parts.size() == 1 && parts[0] == "apis") {
    if (!is_get) {
      return methodNotAllowed();
    }
    return jsonResponse(200, R"({"kind":"APIGroupList","apiVersion":"v1","groups":[]})");
  }
  if (parts.size() >= 2 && parts[0] == "api" && parts[1] == "v1") {
    return handleApiV1(request, parts);
  }
  return resourceNotFound();
}

HandlerResult ApiHandler::handleApiV1(const HttpRequest& request,
                                      const std::vector<std::string>& parts) {
  const bool is_get = request.method == "GET" || request.method == "HEAD";
  const QueryList query = parseQuery(request.query);
  const std::string* watch = queryValue(query, "watch");
  if (watch != nullptr && (*watch == "1" || absl::EqualsIgnoreCase(*watch, "true"))) {
    return statusResponse(405, "MethodNotAllowed",
                          "watch is not supported by the development API server");
  }

  // /api/v1
  if (parts.size() == 2) {
    if (!is_get) {
      return methodNotAllowed();
    }
    JsonWriter w;
    w.beginObject();
    w.key("kind").string("APIResourceList");
    w.key("groupVersion").string("v1");
    w.key("resources").beginArray();
    struct Resource {
      const char* name;
      const char* singular;
      bool namespaced;
      const char* kind;
      std::vector<const char*> verbs;
      std::vector<const char*> short_names;
    };
    const Resource resources[] = {
        {"namespaces", "namespace", false, "Namespace", {"get", "list"}, {"ns"}},
        {"pods", "pod", true, "Pod", {"get", "list"}, {"po"}},
        {"pods/attach", "", true, "PodAttachOptions", {"create", "get"}, {}},
        {"pods/exec", "", true, "PodExecOptions", {"create", "get"}, {}},
        {"pods/portforward", "", true, "PodPortForwardOptions", {"create", "get"}, {}},
    };
    for (const Resource& r : resources) {
      w.beginObject();
      w.key("name").string(r.name);
      w.key("singularName").string(r.singular);
      w.key("namespaced").boolean(r.namespaced);
      w.key("kind").string(r.kind);
      w.key("verbs").beginArray();
      for (const char* verb : r.verbs) {
        w.string(verb);
      }
      w.endArray();
      if (!r.short_names.empty()) {
        w.key("shortNames").beginArray();
        for (const char* s : r.short_names) {
          w.string(s);
        }
        w.endArray();
      }
      if (absl::string_view(r.name) == "pods") {
        w.key("categories").beginArray().string("all").endArray();
      }
      w.endObject();
    }
    w.endArray();
    w.endObject();
    return jsonResponse(200, w.take());
  }

  // /api/v1/pods: every namespace, that is "default".
  if (parts.size() == 3 && parts[2] == "pods") {
    return is_get ? listPods(request, true, kNamespace, nullptr) : methodNotAllowed();
  }
  if (parts[2] != "namespaces") {
    return resourceNotFound();
  }

  // /api/v1/namespaces[/NS]
  if (parts.size() <= 4) {
    if (!is_get) {
      return methodNotAllowed();
    }
    if (parts.size() == 4 && parts[3] != kNamespace) {
      return notFound("namespaces", parts[3]);
    }
    const std::string created = rfc3339(start_ns_);
    const auto write_namespace = [&created](JsonWriter& w, bool with_type_meta) {
      w.beginObject();
      if (with_type_meta) {
        w.key("kind").string("Namespace");
        w.key("apiVersion").string("v1");
      }
      w.key("metadata").beginObject();
      w.key("name").string(kNamespace);
      w.key("resourceVersion").string("1");
      w.key("creationTimestamp").string(created);
      w.endObject();
      w.key("spec").beginObject().key("finalizers").beginArray().string("kubernetes");
      w.endArray().endObject();
      w.key("status").beginObject().key("phase").string("Active").endObject();
      w.endObject();
    };
    JsonWriter w;
    if (parts.size() == 4) {
      write_namespace(w, true);
    } else {
      w.beginObject();
      w.key("kind").string("NamespaceList");
      w.key("apiVersion").string("v1");
      w.key("metadata").beginObject().key("resourceVersion").string("1").endObject();
      w.key("items").beginArray();
      write_namespace(w, false);
      w.endArray();
      w.endObject();
    }
    return jsonResponse(200, w.take());
  }

  if (parts[4] != "pods") {
    return resourceNotFound();
  }
  const std::string& ns = parts[3];
  if (parts.size() == 5) {
    return is_get ? listPods(request, false, ns, nullptr) : methodNotAllowed();
  }
  if (ns != kNamespace) {
    return notFound("pods", parts[5]);
  }
  if (parts.size() == 6) {
    return is_get ? getPod(request, parts[5]) : methodNotAllowed();
  }
  if (parts.size() == 7 &&
      (parts[6] == "exec" || parts[6] == "attach" || parts[6] == "portforward")) {
    if (request.method != "GET" && request.method != "POST") {
      return methodNotAllowed();
    }
    return streamSubresource(request, parts[5], parts[6]);
  }
  return resourceNotFound();
}

HttpResponse ApiHandler::listPods(const HttpRequest& request, bool all_namespaces,
                                  absl::string_view ns, const std::string* only_name) {
  const QueryList query = parseQuery(request.query);
  std::optional<LabelSelector> selector = LabelSelector::parse("");
  if (const std::string* text = queryValue(query, "labelSelector")) {
    selector = LabelSelector::parse(*text);
    if (!selector) {
      return badRequest(absl::StrCat("unable to parse requirement: only equality-based label ",
                                     "selectors are supported here: \"", *text, "\""));
    }
  }
  std::optional<std::string> name_field;
  if (only_name != nullptr) {
    name_field = *only_name;
  }
  bool other_namespace = false;
  if (const std::string* text = queryValue(query, "fieldSelector")) {
    for (absl::string_view term : absl::StrSplit(*text, ',', absl::SkipEmpty())) {
      absl::string_view value = term;
      if (absl::ConsumePrefix(&value, "metadata.name")) {
        if (!absl::ConsumePrefix(&value, "=")) {
          return badRequest(absl::StrCat("field selector not supported: \"", term, "\""));
        }
        absl::ConsumePrefix(&value, "=");
        name_field = std::string(value);
      } else if (absl::ConsumePrefix(&value, "metadata.namespace")) {
        if (!absl::ConsumePrefix(&value, "=")) {
          return badRequest(absl::StrCat("field selector not supported: \"", term, "\""));
        }
        absl::ConsumePrefix(&value, "=");
        other_namespace = other_namespace || value != kNamespace;
      } else {
        return badRequest(absl::StrCat("field label not supported: \"", term, "\""));
      }
    }
  }

  std::vector<const PodInfo*> selected;
  absl::StatusOr<std::vector<PodInfo>> pods;
  if ((all_namespaces || ns == kNamespace) && !other_namespace) {
    pods = pods_.listPods();
    if (!pods.ok()) {
      return runtimeError(pods.status());
    }
    for (const PodInfo* pod : distinctPods(*pods)) {
      if (selector->matches(pod->labels) && (!name_field || *name_field == pod->name)) {
        selected.push_back(pod);
      }
    }
  }

  const std::string table_version = acceptedTableVersion(request);
  JsonWriter w;
  if (table_version.empty()) {
    w.beginObject();
    w.key("kind").string("PodList");
    w.key("apiVersion").string("v1");
    w.key("metadata").beginObject().key("resourceVersion").string("1").endObject();
    w.key("items").beginArray();
    for (const PodInfo* pod : selected) {
      writePod(w, *pod, options_.node_name, false);
    }
    w.endArray();
    w.endObject();
    return jsonResponse(200, w.take());
  }

  // A meta.k8s.io Table with the columns the apiserver's pod printer uses.
  const std::string* include = queryValue(query, "includeObject");
  const std::string include_object = include == nullptr ? "Metadata" : *include;
  const int64_t now = nowNs();
  w.beginObject();
  w.key("kind").string("Table");
  w.key("apiVersion").string(absl::StrCat("meta.k8s.io/", table_version));
  w.key("metadata").beginObject().key("resourceVersion").string("1").endObject();
  w.key("columnDefinitions").beginArray();
  struct Column {
    const char* name;
    const char* format;
    const char* description;
    int priority;
  };
  const Column columns[] = {
      {"Name", "name", "Name must be unique within a namespace.", 0},
      {"Ready", "", "The aggregate readiness state of this pod for accepting traffic.", 0},
      {"Status", "", "The aggregate status of the containers in this pod.", 0},
      {"Restarts", "", "The number of times the containers in this pod have been restarted.", 0},
      {"Age", "", "CreationTimestamp of the pod.", 0},
      {"IP", "", "IP address allocated to the pod.", 1},
      {"Node", "", "Name of the node the pod is assigned to.", 1},
      {"Nominated Node", "", "Name of the node the pod is nominated to.", 1},
      {"Readiness Gates", "", "Readiness gates of the pod.", 1},
  };
  for (const Column& c : columns) {
    w.beginObject();
    w.key("name").string(c.name);
    w.key("type").string("string");
    w.key("format").string(c.format);
    w.key("description").string(c.description);
    w.key("priority").number(c.priority);
    w.endObject();
  }
  w.endArray();
  w.key("rows").beginArray();
  for (const PodInfo* pod : selected) {
    const PodView view = viewOf(*pod);
    w.beginObject();
    w.key("cells").beginArray();
    w.string(pod->name);
    w.string(view.ready ? "1/1" : "0/1");
    w.string(view.status_text);
    w.string("0");
    w.string(pod->created_at_ns > 0 ? humanDuration((now - pod->created_at_ns) / 1000000000)
                                    : "<unknown>");
    w.string("<none>");
    w.string(options_.node_name);
    w.string("<none>");
    w.string("<none>");
    w.endArray();
    if (include_object == "Object") {
      w.key("object");
      writePod(w, *pod, options_.node_name, true);
    } else if (include_object != "None") {
      w.key("object").beginObject();
      w.key("kind").string("PartialObjectMetadata");
      w.key("apiVersion").string("meta.k8s.io/v1");
      writeObjectMeta(w, *pod);
      w.endObject();
    }
    w.endObject();
  }
  w.endArray();
  w.endObject();
  return jsonResponse(200, w.take());
}

HttpResponse ApiHandler::getPod(const HttpRequest& request, absl::string_view name) {
  absl::StatusOr<std::vector<PodInfo>> pods = pods_.listPods();
  if (!pods.ok()) {
    return runtimeError(pods.status());
  }
  const PodInfo* pod = findPod(*pods, name);
  if (pod == nullptr) {
    return notFound("pods", name);
  }
  if (!acceptedTableVersion(request).empty()) {
    // The table of one pod is the list table restricted to that name.
    const std::string only_name(name);
    return listPods(request, false, kNamespace, &only_name);
  }
  JsonWriter w;
  writePod(w, *pod, options_.node_name, true);
  return jsonResponse(200, w.take());
}

HandlerResult ApiHandler::streamSubresource(const HttpRequest& request, absl::string_view name,
                                            absl::string_view subresource) {
  const QueryList query = parseQuery(request.query);
  absl::StatusOr<std::vector<PodInfo>> pods = pods_.listPods();
  if (!pods.ok()) {
    return runtimeError(pods.status());
  }
  const PodInfo* found = findPod(*pods, name);
  if (found == nullptr) {
    return notFound("pods", name);
  }
  const PodInfo pod = *found;

  absl::StatusOr<std::string> url;
  if (subresource == "portforward") {
    std::vector<int32_t> ports;
    for (const char* key : {"ports", "port"}) {
      for (const std::string& value : queryValues(query, key)) {
        for (absl::string_view text : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
          int32_t port = 0;
          if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port) || port <= 0 ||
              port > 65535) {
            return badRequest(absl::StrCat("invalid port \"", text, "\""));
          }
          ports.push_back(port);
        }
      }
    }
    if (!request.upgrade) {
      return badRequest("Upgrade request required");
    }
    url = pods_.portForward(pod.sandbox_id, ports);
  } else {
    if (const std::string* container = queryValue(query, "container");
        container != nullptr && !container->empty() && *container != pod.name) {
      return badRequest(absl::StrCat("container ", *container, " is not valid for pod ", pod.name));
    }
    StreamOptions options;
    options.stdin = queryFlag(query, "stdin", "input").value_or(false);
    // Like PodExecOptions and PodAttachOptions: stdout and stderr default to true.
    options.stdout = queryFlag(query, "stdout", "output").value_or(true);
    options.stderr = queryFlag(query, "stderr", "error").value_or(true);
    options.tty = queryFlag(query, "tty", "tty").value_or(false);
    if (options.tty) {
      // A terminal merges stderr into stdout; the kubelet drops the stream too.
      options.stderr = false;
    }
    if (!options.stdin && !options.stdout && !options.stderr) {
      return badRequest("you must specify at least 1 of stdin, stdout, stderr");
    }
    if (subresource == "exec") {
      options.command = queryValues(query, "command");
      if (options.command.empty()) {
        return badRequest("you must specify at least one command for the container");
      }
    }
    if (!request.upgrade) {
      return badRequest("Upgrade request required");
    }
    url = subresource == "exec" ? pods_.exec(pod.container_id, options)
                                : pods_.attach(pod.container_id, options);
  }
  if (!url.ok()) {
    return runtimeError(url.status());
  }
  return ProxyTarget{*std::move(url)};
}

}  // namespace crisp::devapi
