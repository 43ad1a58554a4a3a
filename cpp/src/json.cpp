#include "json.h"

#include <cstdlib>
#include <stdexcept>

namespace gradvis::json {

namespace {

const Value kNull;

class Parser {
 public:
  explicit Parser(const std::string& text) : text_(text) {}

  Value document() {
    Value value = parse_value();
    skip_space();
    if (pos_ != text_.size()) fail("trailing characters");
    return value;
  }

 private:
  const std::string& text_;
  std::size_t pos_ = 0;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("invalid JSON at offset " + std::to_string(pos_) + ": " + what);
  }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\r' || text_[pos_] == '\t'))
      ++pos_;
  }

  char peek() {
    skip_space();
    if (pos_ >= text_.size()) fail("unexpected end");
    return text_[pos_];
  }

  void expect(const char* word) {
    for (const char* c = word; *c; ++c, ++pos_)
      if (pos_ >= text_.size() || text_[pos_] != *c) fail(std::string("expected ") + word);
  }

  Value parse_value() {
    Value value;
    switch (peek()) {
      case '{':
        value.kind = Value::Kind::Object;
        ++pos_;
        if (peek() == '}') {
          ++pos_;
          return value;
        }
        while (true) {
          if (peek() != '"') fail("expected a string key");
          std::string key = parse_string();
          if (peek() != ':') fail("expected ':'");
          ++pos_;
          value.object[key] = parse_value();
          char c = peek();
          ++pos_;
          if (c == '}') return value;
          if (c != ',') fail("expected ',' or '}'");
        }
      case '[':
        value.kind = Value::Kind::Array;
        ++pos_;
        if (peek() == ']') {
          ++pos_;
          return value;
        }
        while (true) {
          value.array.push_back(parse_value());
          char c = peek();
          ++pos_;
          if (c == ']') return value;
          if (c != ',') fail("expected ',' or ']'");
        }
      case '"':
        value.kind = Value::Kind::String;
        value.string = parse_string();
        return value;
      case 't':
        expect("true");
        value.kind = Value::Kind::Bool;
        value.boolean = true;
        return value;
      case 'f':
        expect("false");
        value.kind = Value::Kind::Bool;
        return value;
      case 'n':
        expect("null");
        return value;
      case 'N':
        expect("NaN");
        value.kind = Value::Kind::Number;
        value.number = std::strtod("nan", nullptr);
        return value;
      default: {
        const char* begin = text_.c_str() + pos_;
        char* end = nullptr;
        value.number = std::strtod(begin, &end);
        if (end == begin) fail("unexpected character");
        pos_ += static_cast<std::size_t>(end - begin);
        value.kind = Value::Kind::Number;
        return value;
      }
    }
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

  unsigned hex4() {
    if (pos_ + 4 > text_.size()) fail("short \\u escape");
    unsigned code = std::stoul(text_.substr(pos_, 4), nullptr, 16);
    pos_ += 4;
    return code;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= text_.size()) fail("unterminated string");
      char c = text_[pos_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) fail("unterminated escape");
      char e = text_[pos_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          unsigned code = hex4();
          if (code >= 0xD800 && code < 0xDC00 && pos_ + 6 <= text_.size() &&
              text_[pos_] == '\\' && text_[pos_ + 1] == 'u') {
            pos_ += 2;
            unsigned low = hex4();
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          append_utf8(out, code);
          break;
        }
        default: out += e;  // \" \\ \/
      }
    }
  }
};

}  // namespace

const Value& Value::operator[](const std::string& key) const {
  if (kind != Kind::Object) return kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : it->second;
}

std::string Value::str(const std::string& fallback) const {
  return kind == Kind::String ? string : fallback;
}

Value parse(const std::string& text) { return Parser(text).document(); }

}  // namespace gradvis::json
