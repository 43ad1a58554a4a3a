// The artifact contract's reader: parse_contract checks a stored record field by field, rule
// for rule as runtime/gradvis_runtime/contract.py's _Reader does (the same order, so the same
// first problem), with messages of the same wording, and builds the ArtifactSpec.
#include "gradvis/gradvis.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <iterator>

#include "json.h"

namespace gradvis {

namespace {

using json::Value;

constexpr const char* kBatch = "B";
const std::vector<std::string> kFormats{"onnx", "torchscript", "aoti"};
const std::vector<std::string> kDtypes{"float32", "float16", "float64", "int64",
                                       "int32",   "uint8",   "bool"};
const std::vector<std::string> kLayouts{"BCHW", "BCTHW", "BHWC", "BTHWC"};
const std::vector<std::string> kRoles{"data", "target"};
const std::vector<std::string> kPrecisions{"fp32", "fp16"};
const std::vector<std::string> kProfiles{"tensorrt", "onnxruntime-cpu"};

c10::ScalarType scalar_type(const std::string& dtype) {
  if (dtype == "float32") return c10::ScalarType::Float;
  if (dtype == "float16") return c10::ScalarType::Half;
  if (dtype == "float64") return c10::ScalarType::Double;
  if (dtype == "int64") return c10::ScalarType::Long;
  if (dtype == "int32") return c10::ScalarType::Int;
  if (dtype == "uint8") return c10::ScalarType::Byte;
  return c10::ScalarType::Bool;  // the last of kDtypes
}

std::string joined(const std::vector<std::string>& items) {
  std::string text;
  for (const auto& item : items) text += (text.empty() ? "" : ", ") + item;
  return text;
}

// Python's repr() of a str: single quotes unless it holds ' and no ", control characters
// escaped.
std::string repr(const std::string& text) {
  char quote = text.find('\'') != std::string::npos && text.find('"') == std::string::npos
                   ? '"'
                   : '\'';
  std::string out(1, quote);
  char escape[8];
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    auto next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
    if (c == '\\' || c == static_cast<unsigned char>(quote)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7F) {
      std::snprintf(escape, sizeof escape, "\\x%02x", c);
      out += escape;
    } else if (c == 0xC2 && next >= 0x80 && next <= 0xA0) {  // U+0080..U+00A0
      std::snprintf(escape, sizeof escape, "\\x%02x", next);
      out += escape;
      ++i;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + quote;
}

// contract.py's _show: a str's repr, else its JSON, cut to 40 characters.
std::string show(const Value* value) {
  std::string text = value == nullptr                       ? "null"
                     : value->kind == Value::Kind::String ? repr(value->string)
                                                           : json::dump(*value);
  std::size_t characters = 0, cut = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) continue;  // inside a character
    if (characters == 37) cut = i;
    ++characters;
  }
  return characters <= 40 ? text : text.substr(0, cut) + "...";
}

// The JSON kinds a field may have, in the order contract.py names them.
enum Kinds : unsigned { kInt = 1, kFloat = 2, kString = 4, kList = 8, kObject = 16, kBool = 32 };

std::string kind_names(unsigned kinds) {
  static const std::pair<unsigned, const char*> names[] = {
      {kInt, "an integer"}, {kFloat, "a number"},   {kString, "a string"},
      {kList, "a list"},    {kObject, "an object"}, {kBool, "true / false"}};
  std::string text;
  for (const auto& [kind, name] : names)
    if (kinds & kind) text += (text.empty() ? "" : " or ") + std::string(name);
  return text;
}

bool is_kind(const Value& value, unsigned kinds) {
  switch (value.kind) {
    case Value::Kind::Int: return kinds & kInt;
    case Value::Kind::Float: return kinds & kFloat;
    case Value::Kind::String: return kinds & kString;
    case Value::Kind::Array: return kinds & kList;
    case Value::Kind::Object: return kinds & kObject;
    case Value::Kind::Bool: return kinds & kBool;
    case Value::Kind::Null: return false;
  }
  return false;
}

bool is_number(const Value& value) {
  return value.kind == Value::Kind::Int || value.kind == Value::Kind::Float;
}

class Reader {
 public:
  explicit Reader(std::string where) : prefix_(where.empty() ? "" : where + ": ") {}

  ArtifactSpec spec(const Value& record) const;

 private:
  std::string prefix_;

  ContractError fail(const std::string& field, const std::string& problem) const {
    return ContractError(prefix_ + "the gradvis contract's field '" + field + "' " + problem +
                         "; export the artifact again with gradvis_export");
  }

  // record[key], checked to be of `kinds`; nullptr for an optional field absent or null.
  const Value* get(const Value& record, const std::string& key, const std::string& path,
                   unsigned kinds, bool optional = false) const {
    const Value* value = record.find(key);
    if (value == nullptr) {
      if (optional) return nullptr;
      throw fail(path, "is missing");
    }
    if (value->kind == Value::Kind::Null && optional) return nullptr;
    if (value->kind == Value::Kind::Bool && !(kinds & kBool))  // JSON true is not a number here
      throw fail(path, std::string("is ") + (value->boolean ? "True" : "False") + ", not " +
                           kind_names(kinds));
    if (!is_kind(*value, kinds))
      throw fail(path, "is " + show(value) + ", not " + kind_names(kinds));
    return value;
  }

  // A string field that is one of `choices`; "" for an optional field absent or null.
  std::string choice(const Value& record, const std::string& key, const std::string& path,
                     const std::vector<std::string>& choices, bool optional = false) const {
    const Value* value = get(record, key, path, kString, optional);
    if (value == nullptr) return "";
    if (std::find(choices.begin(), choices.end(), value->string) == choices.end())
      throw fail(path, "is " + repr(value->string) + ", not one of " + joined(choices));
    return value->string;
  }

  std::string text(const Value& record, const std::string& key, const std::string& path,
                   bool optional = false) const {
    const Value* value = get(record, key, path, kString, optional);
    return value == nullptr ? "" : value->string;
  }

  std::vector<int64_t> shape(const Value* value, const std::string& path) const {
    if (value == nullptr || value->kind != Value::Kind::Array || value->array.empty())
      throw fail(path, "is " + show(value) + ", not a list of sizes starting with 'B'");
    const Value& first = value->array.front();
    if (first.kind != Value::Kind::String || first.string != kBatch)
      throw fail(path + "[0]", "is " + show(&first) + ", not 'B' (the batch)");
    std::vector<int64_t> sizes{-1};
    for (std::size_t i = 1; i < value->array.size(); ++i) {
      const Value& size = value->array[i];
      if (size.kind != Value::Kind::Int || size.integer < 1)
        throw fail(path + "[" + std::to_string(i) + "]",
                   "is " + show(&size) + ", not a positive size");
      sizes.push_back(size.integer);
    }
    return sizes;
  }

  std::vector<std::string> names(const Value* value, const std::string& path) const {
    bool ok = value != nullptr && value->kind == Value::Kind::Array &&
              std::all_of(value->array.begin(), value->array.end(),
                          [](const Value& v) { return v.kind == Value::Kind::String; });
    if (!ok) throw fail(path, "is " + show(value) + ", not a list of names");
    std::vector<std::string> out;
    for (const auto& v : value->array) out.push_back(v.string);
    return out;
  }

  std::optional<std::vector<double>> floats(const Value& record, const std::string& key,
                                            const std::string& path) const {
    const Value* value = get(record, key, path, kList, true);
    if (value == nullptr) return std::nullopt;
    if (value->array.empty() || !std::all_of(value->array.begin(), value->array.end(), is_number))
      throw fail(path, "is " + show(value) + ", not a list of numbers");
    std::vector<double> out;
    for (const auto& v : value->array) out.push_back(v.number);
    return out;
  }

  std::vector<InputSpec> inputs(const Value& items) const;
  std::vector<OutputSpec> outputs(const Value& items) const;
};

ArtifactSpec Reader::spec(const Value& record) const {
  if (record.kind != Value::Kind::Object)
    throw fail("", "record is " + show(&record) + ", not a JSON object");
  if (record.find("contract") == nullptr) {
    const Value* version = record.find("gradvis_version");
    std::string made = version != nullptr && version->kind == Value::Kind::String
                           ? "gradvis " + version->string
                           : "an older gradvis";
    throw ContractError(prefix_ + "the artifact was exported by " + made +
                        ", before artifact contracts (no field 'contract'): export it again "
                        "with this gradvis (contract version " +
                        std::to_string(kContractVersion) + ")");
  }
  const Value& version = *get(record, "contract", "contract", kInt);
  if (version.number > kContractVersion)
    throw ContractError(prefix_ + "the artifact's contract version " + json::dump(version) +
                        " (field 'contract') is newer than this runtime's (" +
                        std::to_string(kContractVersion) +
                        "): upgrade gradvis_runtime, or export the artifact with the gradvis "
                        "that matches it");
  if (version.number < 1)
    throw fail("contract", "is " + json::dump(version) + ", not a version (1 or more)");

  ArtifactSpec spec;
  spec.contract = static_cast<int>(version.integer);
  spec.inputs = inputs(*get(record, "inputs", "inputs", kList));
  spec.outputs = outputs(*get(record, "outputs", "outputs", kList));
  spec.map_input = text(record, "map_input", "map_input");
  std::vector<std::string> data;
  for (const auto& input : spec.inputs)
    if (input.role == "data") data.push_back(input.name);
  if (std::find(data.begin(), data.end(), spec.map_input) == data.end())
    throw fail("map_input",
               "is " + repr(spec.map_input) + ", not a data input (" + joined(data) + ")");

  const Value& pre = *get(record, "preprocess", "preprocess", kObject);
  spec.preprocess.in_graph = get(pre, "in_graph", "preprocess.in_graph", kBool)->boolean;
  spec.preprocess.mean = floats(pre, "mean", "preprocess.mean");
  spec.preprocess.std = floats(pre, "std", "preprocess.std");
  if (const Value* alpha =
          get(pre, "overlay_alpha", "preprocess.overlay_alpha", kInt | kFloat, true))
    spec.preprocess.overlay_alpha = alpha->number;
  if (spec.preprocess.mean.has_value() != spec.preprocess.std.has_value())
    throw fail("preprocess.std", "must be given with preprocess.mean");

  if (const Value* count = get(record, "num_classes", "num_classes", kInt, true)) {
    if (count->integer < 1)
      throw fail("num_classes", "is " + json::dump(*count) + ", not a positive count");
    spec.num_classes = count->integer;
  }
  const Value* class_names = record.find("class_names");
  if (class_names != nullptr && class_names->kind != Value::Kind::Null) {
    spec.class_names = names(class_names, "class_names");
    if (spec.num_classes && static_cast<int64_t>(spec.class_names->size()) != *spec.num_classes)
      throw fail("class_names", "has " + std::to_string(spec.class_names->size()) +
                                    " names for " + std::to_string(*spec.num_classes) +
                                    " classes");
  }
  const Value& target = *get(record, "target", "target", kObject);
  const Value* type = target.find("type");
  if (type == nullptr || type->kind != Value::Kind::String)
    throw fail("target.type", "is " + show(type) + ", not a target name");
  spec.target_type = type->string;
  spec.target_json = json::dump(target);

  spec.gradvis_version = text(record, "gradvis_version", "gradvis_version");
  spec.format = choice(record, "format", "format", kFormats);
  spec.method = text(record, "method", "method");
  spec.layers = names(get(record, "layers", "layers", kList), "layers");
  spec.precision = choice(record, "precision", "precision", kPrecisions);
  spec.profile = choice(record, "profile", "profile", kProfiles, true);
  spec.options_json = json::dump(*get(record, "options", "options", kObject));
  spec.extra_json = json::dump(*get(record, "extra", "extra", kObject));
  return spec;
}

std::vector<InputSpec> Reader::inputs(const Value& items) const {
  std::vector<InputSpec> specs;
  for (std::size_t i = 0; i < items.array.size(); ++i) {
    const Value& item = items.array[i];
    const std::string path = "inputs[" + std::to_string(i) + "]";
    if (item.kind != Value::Kind::Object) throw fail(path, "is " + show(&item) + ", not an object");
    InputSpec spec;
    spec.role = choice(item, "role", path + ".role", kRoles);
    spec.layout = choice(item, "layout", path + ".layout", kLayouts, true);
    spec.shape = shape(item.find("shape"), path + ".shape");
    spec.dtype_name = choice(item, "dtype", path + ".dtype", kDtypes);
    spec.dtype = scalar_type(spec.dtype_name);
    if (!spec.layout.empty()) {
      const std::size_t rank = spec.layout.size();
      if (spec.shape.size() != rank)
        throw fail(path + ".shape", "has rank " + std::to_string(spec.shape.size()) +
                                        ", but layout " + spec.layout + " is rank " +
                                        std::to_string(rank));
      const bool uint8 = spec.layout.back() == 'C';
      if (uint8 != (spec.dtype_name == "uint8"))
        throw fail(path + ".dtype", "is " + spec.dtype_name + ", but layout " + spec.layout +
                                        " takes " +
                                        (uint8 ? "uint8 frames" : "floating-point planes"));
    }
    if (const Value* fallback = get(item, "default", path + ".default", kInt | kFloat, true)) {
      spec.has_default = true;
      spec.default_value = fallback->number;
    }
    spec.name = text(item, "name", path + ".name");
    spec.doc = text(item, "doc", path + ".doc", true);
    specs.push_back(std::move(spec));
  }
  std::vector<std::string> names;
  for (const auto& spec : specs) names.push_back(spec.name);
  std::vector<std::string> sorted = names;
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
    std::string list;
    for (const auto& name : names) list += (list.empty() ? "" : ", ") + repr(name);
    throw fail("inputs", "names [" + list + "] are not unique");
  }
  if (std::none_of(specs.begin(), specs.end(), [](const InputSpec& s) { return s.role == "data"; }))
    throw fail("inputs", "has no data input (role 'data')");
  return specs;
}

std::vector<OutputSpec> Reader::outputs(const Value& items) const {
  std::vector<OutputSpec> specs;
  for (std::size_t i = 0; i < items.array.size(); ++i) {
    const Value& item = items.array[i];
    const std::string path = "outputs[" + std::to_string(i) + "]";
    if (item.kind != Value::Kind::Object) throw fail(path, "is " + show(&item) + ", not an object");
    OutputSpec spec;
    spec.name = text(item, "name", path + ".name");
    spec.dtype_name = choice(item, "dtype", path + ".dtype", kDtypes);
    spec.dtype = scalar_type(spec.dtype_name);
    spec.shape = shape(item.find("shape"), path + ".shape");
    spec.meaning = text(item, "meaning", path + ".meaning", true);
    specs.push_back(std::move(spec));
  }
  if (specs.empty()) throw fail("outputs", "is empty");
  return specs;
}

}  // namespace

ArtifactSpec parse_contract(const std::string& json_text, const std::string& where) {
  const std::string prefix = where.empty() ? "" : where + ": ";
  if (std::all_of(json_text.begin(), json_text.end(),
                  [](unsigned char c) { return std::isspace(c); }))
    throw ContractError(prefix + "the artifact has no gradvis contract (no '" + kMetadataKey +
                        "' record): export it with gradvis_export (gv.export)");
  Value record;
  try {
    record = json::parse(json_text);
  } catch (const std::runtime_error& error) {
    throw ContractError(prefix + "the gradvis contract is not valid JSON (" + error.what() +
                        "); the file is damaged: export it again");
  }
  ArtifactSpec spec = Reader(where).spec(record);
  spec.json = json_text;
  return spec;
}

bool InputSpec::uint8() const { return layout == "BHWC" || layout == "BTHWC"; }

bool InputSpec::is_video() const { return layout == "BCTHW" || layout == "BTHWC"; }

std::optional<int64_t> InputSpec::clip_len() const {
  if (layout == "BCTHW") return shape[2];
  if (layout == "BTHWC") return shape[1];
  return std::nullopt;
}

std::optional<std::pair<int64_t, int64_t>> InputSpec::frame_size() const {
  const std::size_t rank = shape.size();
  if (layout == "BCHW" || layout == "BCTHW")
    return std::make_pair(shape[rank - 2], shape[rank - 1]);
  if (layout == "BHWC" || layout == "BTHWC")
    return std::make_pair(shape[rank - 3], shape[rank - 2]);
  return std::nullopt;
}

const InputSpec& ArtifactSpec::input(const std::string& name) const {
  for (const auto& spec : inputs)
    if (spec.name == name) return spec;
  std::vector<std::string> names;
  for (const auto& spec : inputs) names.push_back(spec.name);
  throw InputError("this artifact has no input '" + name + "'; its inputs are " + joined(names));
}

std::vector<InputSpec> ArtifactSpec::data_inputs() const {
  std::vector<InputSpec> specs;
  std::copy_if(inputs.begin(), inputs.end(), std::back_inserter(specs),
               [](const InputSpec& s) { return s.role == "data"; });
  return specs;
}

std::vector<InputSpec> ArtifactSpec::target_inputs() const {
  std::vector<InputSpec> specs;
  std::copy_if(inputs.begin(), inputs.end(), std::back_inserter(specs),
               [](const InputSpec& s) { return s.role == "target"; });
  return specs;
}

std::vector<std::string> ArtifactSpec::output_names() const {
  std::vector<std::string> names;
  for (const auto& spec : outputs) names.push_back(spec.name);
  return names;
}

const InputSpec& ArtifactSpec::map_spec() const { return input(map_input); }
const std::string& ArtifactSpec::layout() const { return map_spec().layout; }
bool ArtifactSpec::uint8() const { return map_spec().uint8(); }
bool ArtifactSpec::is_video() const { return map_spec().is_video(); }
std::optional<int64_t> ArtifactSpec::clip_len() const { return map_spec().clip_len(); }
std::optional<std::pair<int64_t, int64_t>> ArtifactSpec::frame_size() const {
  return map_spec().frame_size();
}

}  // namespace gradvis
