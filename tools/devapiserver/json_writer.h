#pragma once

// A small streaming JSON writer for the API objects the development API
// server returns. It only writes; commas and quoting are handled here, the
// caller is responsible for a sensible nesting (object keys before values).
//
//   JsonWriter w;
//   w.beginObject();
//   w.key("kind").string("Pod");
//   w.key("items").beginArray().endArray();
//   w.endObject();
//   std::string body = w.take();

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace crisp::devapi {

class JsonWriter {
 public:
  JsonWriter& beginObject();
  JsonWriter& endObject();
  JsonWriter& beginArray();
  JsonWriter& endArray();
  JsonWriter& key(absl::string_view name);
  JsonWriter& string(absl::string_view value);
  JsonWriter& number(int64_t value);
  JsonWriter& boolean(bool value);
  // Writes `json` unchanged as one value; it must be a complete JSON value.
  JsonWriter& raw(absl::string_view json);

  // The text written so far; the writer is empty afterwards.
  std::string take();

 private:
  void beforeValue();

  std::string out_;
  // One entry per open object or array: whether it already holds an element.
  std::vector<bool> has_element_;
  bool after_key_ = false;
};

// `value` as a JSON string literal, quotes included. Control characters are
// escaped; other bytes are copied (the input is expected to be UTF-8).
std::string jsonQuote(absl::string_view value);

}  // namespace crisp::devapi
