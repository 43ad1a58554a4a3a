// A small JSON reader for the artifact metadata (no dependency beyond the standard library).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace gradvis::json {

struct Value {
  enum class Kind { Null, Bool, Number, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  bool is_null() const { return kind == Kind::Null; }
  // The member `key` of an object, or a null value when absent.
  const Value& operator[](const std::string& key) const;
  std::string str(const std::string& fallback = "") const;
};

// Throws std::runtime_error naming the offset of the first syntax error.
Value parse(const std::string& text);

}  // namespace gradvis::json
