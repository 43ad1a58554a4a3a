// A small JSON reader and writer for the artifact contract (no dependency beyond the standard
// library).  It reads what Python's json.loads reads (integers apart from other numbers, NaN and
// Infinity included, objects in their text's order) and writes what json.dumps writes, so that
// the C++ contract reader can quote a stored value as runtime/gradvis_runtime/contract.py does.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace gradvis::json {

struct Value {
  // Int: a number written without fraction or exponent; Float: any other.
  enum class Kind { Null, Bool, Int, Float, String, Array, Object };
  Kind kind = Kind::Null;
  bool boolean = false;
  int64_t integer = 0;  // Int, clamped to int64_t's range
  double number = 0.0;  // Int and Float
  std::string string;   // String; for an Int beyond int64_t, its digits
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;  // in the text's order; a repeated key
                                                      // keeps its first place and last value

  // The member `key` of an object; nullptr when absent or when this is not an object.
  const Value* find(const std::string& key) const;
};

// Throws std::runtime_error (one line: what, line, column and offset) at the first syntax error.
Value parse(const std::string& text);

// The value as Python's json.dumps(value) writes it (", " and ": " separators, ASCII only).
std::string dump(const Value& value);

}  // namespace gradvis::json
