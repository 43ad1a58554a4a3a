#include "json.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>

namespace gradvis::json {

namespace {

// The grammar and the error wording of Python's json module (json.decoder / json.scanner).
class Parser {
 public:
  explicit Parser(const std::string& text) : text_(text) {}

  Value document() {
    skip_space();
    Value value = parse_value();
    skip_space();
    if (pos_ != text_.size()) fail("Extra data");
    return value;
  }

 private:
  const std::string& text_;
  std::size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const { fail_at(what, pos_); }

  [[noreturn]] void fail_at(const std::string& what, std::size_t at) const {
    std::size_t line = 1, line_start = 0;
    for (std::size_t i = 0; i < at && i < text_.size(); ++i)
      if (text_[i] == '\n') ++line, line_start = i + 1;
    throw std::runtime_error(what + ": line " + std::to_string(line) + " column " +
                             std::to_string(at - line_start + 1) + " (char " +
                             std::to_string(at) + ")");
  }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\r' || text_[pos_] == '\t'))
      ++pos_;
  }

  bool at(char c) const { return pos_ < text_.size() && text_[pos_] == c; }

  bool starts(const std::string& word) const { return text_.compare(pos_, word.size(), word) == 0; }

  Value parse_value() {
    Value value;
    if (at('"')) {
      value.kind = Value::Kind::String;
      value.string = parse_string();
    } else if (at('{')) {
      parse_object(value);
    } else if (at('[')) {
      parse_array(value);
    } else if (starts("null")) {
      pos_ += 4;
    } else if (starts("true") || starts("false")) {
      value.kind = Value::Kind::Bool;
      value.boolean = text_[pos_] == 't';
      pos_ += value.boolean ? 4 : 5;
    } else if (!parse_number(value)) {
      double special = 0;
      if (starts("NaN")) {
        special = std::numeric_limits<double>::quiet_NaN(), pos_ += 3;
      } else if (starts("Infinity")) {
        special = std::numeric_limits<double>::infinity(), pos_ += 8;
      } else if (starts("-Infinity")) {
        special = -std::numeric_limits<double>::infinity(), pos_ += 9;
      } else {
        fail("Expecting value");
      }
      value.kind = Value::Kind::Float;
      value.number = special;
    }
    return value;
  }

  void parse_object(Value& value) {
    value.kind = Value::Kind::Object;
    ++pos_;
    skip_space();
    if (at('}')) {
      ++pos_;
      return;
    }
    while (true) {
      if (!at('"')) fail("Expecting property name enclosed in double quotes");
      std::string key = parse_string();
      skip_space();
      if (!at(':')) fail("Expecting ':' delimiter");
      ++pos_;
      skip_space();
      Value member = parse_value();
      bool repeated = false;
      for (auto& [name, old] : value.object)
        if (name == key) old = std::move(member), repeated = true;
      if (!repeated) value.object.emplace_back(std::move(key), std::move(member));
      skip_space();
      if (at('}')) {
        ++pos_;
        return;
      }
      if (!at(',')) fail("Expecting ',' delimiter");
      ++pos_;
      skip_space();
    }
  }

  void parse_array(Value& value) {
    value.kind = Value::Kind::Array;
    ++pos_;
    skip_space();
    if (at(']')) {
      ++pos_;
      return;
    }
    while (true) {
      value.array.push_back(parse_value());
      skip_space();
      if (at(']')) {
        ++pos_;
        return;
      }
      if (!at(',')) fail("Expecting ',' delimiter");
      ++pos_;
      skip_space();
    }
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)? at pos_; false (pos_ unchanged) if none.
  bool parse_number(Value& value) {
    auto digit = [&](std::size_t i) {
      return i < text_.size() && text_[i] >= '0' && text_[i] <= '9';
    };
    std::size_t end = pos_ + (at('-') ? 1 : 0);
    if (!digit(end)) return false;
    if (text_[end] == '0') {
      ++end;
    } else {
      while (digit(end)) ++end;
    }
    bool integral = true;
    if (end < text_.size() && text_[end] == '.' && digit(end + 1)) {
      integral = false;
      for (++end; digit(end);) ++end;
    }
    if (end < text_.size() && (text_[end] == 'e' || text_[end] == 'E')) {
      std::size_t exponent = end + 1;
      if (exponent < text_.size() && (text_[exponent] == '+' || text_[exponent] == '-'))
        ++exponent;
      if (digit(exponent)) {
        integral = false;
        for (end = exponent; digit(end);) ++end;
      }
    }
    const char* first = text_.data() + pos_;
    const char* last = text_.data() + end;
    pos_ = end;
    if (std::from_chars(first, last, value.number).ec != std::errc())  // out of double's range
      value.number = std::strtod(std::string(first, last).c_str(), nullptr);  // +-inf or +-0
    if (!integral) {
      value.kind = Value::Kind::Float;
      return true;
    }
    value.kind = Value::Kind::Int;
    if (std::from_chars(first, last, value.integer).ec != std::errc()) {  // beyond int64_t
      value.integer = *first == '-' ? std::numeric_limits<int64_t>::min()
                                    : std::numeric_limits<int64_t>::max();
      value.string.assign(first, last);
    }
    return true;
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  // The 4 hex digits of a \u escape whose 'u' is at `u`; -1 if they are not hex digits.
  long hex4(std::size_t u) const {
    if (u + 5 > text_.size()) return -1;
    unsigned code = 0;
    auto result = std::from_chars(text_.data() + u + 1, text_.data() + u + 5, code, 16);
    return result.ptr == text_.data() + u + 5 ? static_cast<long>(code) : -1;
  }

  std::string parse_string() {
    const std::size_t start = pos_++;  // the opening quote
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail_at("Unterminated string starting at", start);
      char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (static_cast<unsigned char>(c) < 0x20) fail("Invalid control character at");
      if (c != '\\') {
        out += c;
        ++pos_;
        continue;
      }
      if (pos_ + 1 >= text_.size()) fail_at("Unterminated string starting at", start);
      char e = text_[pos_ + 1];
      switch (e) {
        case '"': case '\\': case '/': out += e; break;
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          long code = hex4(pos_ + 1);
          if (code < 0) fail("Invalid \\uXXXX escape");
          pos_ += 4;
          if (code >= 0xD800 && code < 0xDC00 && pos_ + 3 < text_.size() &&
              text_[pos_ + 2] == '\\' && text_[pos_ + 3] == 'u') {
            long low = hex4(pos_ + 3);
            if (low >= 0xDC00 && low < 0xE000) {
              code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
              pos_ += 6;
            }
          }
          append_utf8(out, static_cast<unsigned>(code));
          break;
        }
        default: fail("Invalid \\escape");
      }
      pos_ += 2;
    }
  }
};

// Python's repr(float): the shortest digits that read back the same, positional for
// 1e-4 <= |x| < 1e16 (with ".0" when whole), else d.ddde+XX.
std::string float_text(double x) {
  if (std::isnan(x)) return "NaN";
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  char buffer[64];
  auto end = std::to_chars(buffer, buffer + sizeof buffer, std::fabs(x),
                           std::chars_format::scientific).ptr;
  std::string text(buffer, end);  // d[.ddd]e[+-]XX
  auto e = text.find('e');
  std::string digits = text.substr(0, 1) + (e > 1 ? text.substr(2, e - 2) : "");
  int exponent = std::stoi(text.substr(e + 1));
  std::string out = std::signbit(x) ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out += digits.substr(0, 1) + (digits.size() > 1 ? "." + digits.substr(1) : "");
    std::string power = std::to_string(std::abs(exponent));
    return out + (exponent < 0 ? "e-" : "e+") + (power.size() < 2 ? "0" : "") + power;
  }
  if (exponent < 0) return out + "0." + std::string(-exponent - 1, '0') + digits;
  auto whole = static_cast<std::size_t>(exponent) + 1;
  if (digits.size() <= whole) return out + digits + std::string(whole - digits.size(), '0') + ".0";
  return out + digits.substr(0, whole) + "." + digits.substr(whole);
}

// The next code point of UTF-8 `text` at `i` (advanced); a stray byte stands for itself.
unsigned next_code_point(const std::string& text, std::size_t& i) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned lead = byte(i);
  int extra = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
  if (extra == 0 || i + extra >= text.size()) {
    ++i;
    return lead;
  }
  unsigned code = lead & (0x3F >> extra);
  for (int k = 1; k <= extra; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) {
      ++i;
      return lead;
    }
    code = (code << 6) | (byte(i + k) & 0x3F);
  }
  i += extra + 1;
  return code;
}

void dump_string(const std::string& text, std::string& out) {
  out += '"';
  char escape[16];
  for (std::size_t i = 0; i < text.size();) {
    unsigned code = next_code_point(text, i);
    switch (code) {
      case '"': out += "\\\""; continue;
      case '\\': out += "\\\\"; continue;
      case '\n': out += "\\n"; continue;
      case '\r': out += "\\r"; continue;
      case '\t': out += "\\t"; continue;
      case '\b': out += "\\b"; continue;
      case '\f': out += "\\f"; continue;
      default: break;
    }
    if (code >= 0x20 && code < 0x7F) {
      out += static_cast<char>(code);
    } else if (code < 0x10000) {
      std::snprintf(escape, sizeof escape, "\\u%04x", code);
      out += escape;
    } else {  // a surrogate pair
      code -= 0x10000;
      std::snprintf(escape, sizeof escape, "\\u%04x\\u%04x", 0xD800 + (code >> 10),
                    0xDC00 + (code & 0x3FF));
      out += escape;
    }
  }
  out += '"';
}

void dump_value(const Value& value, std::string& out) {
  switch (value.kind) {
    case Value::Kind::Null: out += "null"; return;
    case Value::Kind::Bool: out += value.boolean ? "true" : "false"; return;
    case Value::Kind::Int:
      out += value.string.empty() ? std::to_string(value.integer) : value.string;
      return;
    case Value::Kind::Float: out += float_text(value.number); return;
    case Value::Kind::String: dump_string(value.string, out); return;
    case Value::Kind::Array:
      out += '[';
      for (std::size_t i = 0; i < value.array.size(); ++i) {
        if (i) out += ", ";
        dump_value(value.array[i], out);
      }
      out += ']';
      return;
    case Value::Kind::Object:
      out += '{';
      for (std::size_t i = 0; i < value.object.size(); ++i) {
        if (i) out += ", ";
        dump_string(value.object[i].first, out);
        out += ": ";
        dump_value(value.object[i].second, out);
      }
      out += '}';
      return;
  }
}

}  // namespace

const Value* Value::find(const std::string& key) const {
  for (const auto& [name, member] : object)
    if (name == key) return &member;
  return nullptr;
}

Value parse(const std::string& text) { return Parser(text).document(); }

std::string dump(const Value& value) {
  std::string out;
  dump_value(value, out);
  return out;
}

}  // namespace gradvis::json
