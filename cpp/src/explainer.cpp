// gradvis::Explainer: loads a TorchScript, AOTInductor or (when built with ONNX Runtime) ONNX
// artifact with its metadata, checks every run's inputs against that metadata and runs the
// graph under c10::InferenceMode.
#include "gradvis/gradvis.h"

#include <ATen/Parallel.h>
#include <ATen/ops/full.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "json.h"
#ifdef GRADVIS_WITH_ONNXRUNTIME
#include "onnx_session.h"
#endif

#ifndef GRADVIS_VERSION
#define GRADVIS_VERSION "unknown"
#endif

namespace gradvis {

namespace {

constexpr const char* kMetadataKey = "gradvis";

std::string lower_suffix(const std::string& path) {
  auto slash = path.find_last_of("/\\");
  auto dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string suffix = path.substr(dot);
  std::transform(suffix.begin(), suffix.end(), suffix.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return suffix;
}

c10::ScalarType dtype_of(const std::string& name) {
  if (name == "float32") return c10::ScalarType::Float;
  if (name == "float16") return c10::ScalarType::Half;
  if (name == "float64") return c10::ScalarType::Double;
  if (name == "int64") return c10::ScalarType::Long;
  if (name == "int32") return c10::ScalarType::Int;
  if (name == "uint8") return c10::ScalarType::Byte;
  if (name == "bool") return c10::ScalarType::Bool;
  throw Error("the artifact's metadata names an unsupported dtype '" + name + "'");
}

std::string shape_text(c10::IntArrayRef shape) {
  std::ostringstream out;
  out << "(";
  for (std::size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << (shape.size() == 1 ? ",)" : ")");
  return out.str();
}

std::string spec_shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "(";
  for (std::size_t i = 0; i < shape.size(); ++i)
    out << (i ? ", " : "") << (shape[i] < 0 ? std::string("B") : std::to_string(shape[i]));
  out << (shape.size() == 1 ? ",)" : ")");
  return out.str();
}

// The first line of a c10::Error, without LibTorch's C++ backtrace.
std::string short_message(const std::exception& error) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&error);
  std::string text = c10_error ? c10_error->what_without_backtrace() : error.what();
  auto newline = text.find('\n');
  return newline == std::string::npos ? text : text.substr(0, newline);
}

Metadata parse_metadata(const std::string& text, const std::string& path) {
  json::Value root;
  try {
    root = json::parse(text);
  } catch (const std::exception& error) {
    throw Error("the gradvis metadata of '" + path + "' is unreadable (" + error.what() +
                "); export the artifact again with gradvis_export");
  }
  Metadata meta;
  meta.json = text;
  meta.method = root["method"].str();
  meta.format = root["format"].str();
  meta.input_layout = root["input_layout"].str();
  meta.gradvis_version = root["gradvis_version"].str();
  for (const auto& name : root["outputs"].array) meta.outputs.push_back(name.str());
  const json::Value& specs = root["input_specs"];
  for (const auto& name_value : root["inputs"].array) {
    InputSpec spec;
    spec.name = name_value.str();
    const json::Value& entry = specs[spec.name];
    if (entry.is_null())
      throw Error("the metadata of '" + path + "' has no spec for its input '" + spec.name +
                  "'; export the artifact again with gradvis_export");
    spec.dtype = dtype_of(entry["dtype"].str("float32"));
    for (const auto& dim : entry["shape"].array)
      spec.shape.push_back(dim.kind == json::Value::Kind::Number
                               ? static_cast<int64_t>(dim.number)
                               : -1);  // "B"
    const json::Value& fallback = entry["default"];
    if (fallback.kind == json::Value::Kind::Number || fallback.kind == json::Value::Kind::Bool) {
      spec.has_default = true;
      spec.default_value = fallback.kind == json::Value::Kind::Bool ? fallback.boolean
                                                                     : fallback.number;
    }
    spec.doc = entry["doc"].str();
    meta.inputs.push_back(std::move(spec));
  }
  if (meta.inputs.empty() || meta.inputs.front().name != "input" || meta.outputs.empty())
    throw Error("the metadata of '" + path +
                "' lists no inputs or outputs; export the artifact again with gradvis_export");
  return meta;
}

}  // namespace

const InputSpec& Metadata::input(const std::string& name) const {
  for (const auto& spec : inputs)
    if (spec.name == name) return spec;
  std::string names;
  for (const auto& spec : inputs) names += (names.empty() ? "" : ", ") + spec.name;
  throw InputError("this artifact has no input '" + name + "'; its inputs are " + names);
}

const at::Tensor& Outputs::operator[](const std::string& name) const {
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return tensors[i];
  std::string known;
  for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
  throw Error("no output named '" + name + "'; the outputs are " + known);
}

struct Explainer::Impl {
  std::string path;
  Metadata metadata;
  // Exactly one is set.  All are safe for concurrent calls: TorchScript's graph executor
  // locks its own plan cache, AOTInductor's container hands each call a free runner, and
  // ONNX Runtime's Session::Run is thread-safe.
  std::unique_ptr<torch::jit::Module> script;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> aoti;
#ifdef GRADVIS_WITH_ONNXRUNTIME
  std::unique_ptr<OnnxSession> onnx;
#endif

  at::Tensor check_input(const at::Tensor& x) const;
  at::Tensor check_extra(const InputSpec& spec, const at::Tensor& value, int64_t batch) const;
  std::vector<at::Tensor> call(std::vector<at::Tensor> inputs) const;
};

at::Tensor Explainer::Impl::check_input(const at::Tensor& x) const {
  const InputSpec& spec = metadata.inputs.front();
  if (!x.defined()) throw InputError("the input tensor is undefined");
  if (x.scalar_type() != spec.dtype)
    throw InputError(std::string("the input has dtype ") + c10::toString(x.scalar_type()) +
                     "; this artifact takes " + c10::toString(spec.dtype) +
                     " (convert with .to(" + c10::toString(spec.dtype) + "))");
  bool same = x.dim() == static_cast<int64_t>(spec.shape.size());
  for (std::size_t i = 1; same && i < spec.shape.size(); ++i) same = x.size(i) == spec.shape[i];
  if (!same)
    throw InputError("the input has shape " + shape_text(x.sizes()) + "; this artifact takes " +
                     spec_shape_text(spec.shape) + " (" + metadata.input_layout +
                     ", B = any batch size)");
  if (x.size(0) < 1) throw InputError("the input has batch size 0; pass at least one sample");
  if (!x.device().is_cpu())
    throw InputError("the input is on " + x.device().str() + "; these artifacts run on the CPU");
  return x.contiguous();
}

at::Tensor Explainer::Impl::check_extra(const InputSpec& spec, const at::Tensor& value,
                                        int64_t batch) const {
  std::vector<int64_t> shape = spec.shape;
  if (!shape.empty()) shape[0] = batch;
  if (!value.defined()) {
    if (!spec.has_default)
      throw InputError("this artifact needs the input '" + spec.name + "': " + spec.doc);
    return at::full(shape, spec.default_value, at::TensorOptions().dtype(spec.dtype));
  }
  bool spec_integral = c10::isIntegralType(spec.dtype, /*includeBool=*/true);
  if (spec_integral && c10::isFloatingType(value.scalar_type()))
    throw InputError("'" + spec.name + "' must hold integers (" + c10::toString(spec.dtype) +
                     "), got " + c10::toString(value.scalar_type()));
  if (!spec_integral && !c10::isFloatingType(value.scalar_type()))
    throw InputError("'" + spec.name + "' must be floating point (" + c10::toString(spec.dtype) +
                     "), got " + c10::toString(value.scalar_type()));
  if (value.sizes() != c10::IntArrayRef(shape))
    throw InputError("'" + spec.name + "' has shape " + shape_text(value.sizes()) +
                     "; expected " + shape_text(shape) +
                     (spec.name == "target" ? " (one class per sample, -1 = argmax)" : ""));
  if (!value.device().is_cpu())
    throw InputError("'" + spec.name + "' is on " + value.device().str() +
                     "; these artifacts run on the CPU");
  return value.to(spec.dtype).contiguous();
}

std::vector<at::Tensor> Explainer::Impl::call(std::vector<at::Tensor> inputs) const {
  c10::InferenceMode guard;
  try {
    if (aoti) return aoti->run(inputs);
#ifdef GRADVIS_WITH_ONNXRUNTIME
    if (onnx) {
      std::vector<std::string> names;
      for (const auto& spec : metadata.inputs) names.push_back(spec.name);
      return onnx->run(names, inputs, metadata.outputs);
    }
#endif
    std::vector<c10::IValue> args(inputs.begin(), inputs.end());
    c10::IValue result = script->forward(std::move(args));
    std::vector<at::Tensor> outputs;
    if (result.isTuple()) {
      for (const auto& item : result.toTupleRef().elements()) outputs.push_back(item.toTensor());
    } else if (result.isTensor()) {
      outputs.push_back(result.toTensor());
    } else {
      for (const auto& item : result.toListRef()) outputs.push_back(item.toTensor());
    }
    return outputs;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    throw Error("running '" + path + "' failed: " + short_message(error));
  }
}

Explainer::Explainer(const std::string& path, const Options& options)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  if (!std::ifstream(path).good()) throw FileError("no artifact at '" + path + "'");
  if (options.num_threads > 0) at::set_num_threads(options.num_threads);
  std::string suffix = lower_suffix(path);
  std::string text;
  try {
    if (suffix == ".pt2") {
      impl_->aoti = std::make_unique<torch::inductor::AOTIModelPackageLoader>(
          path, "model", false, static_cast<std::size_t>(std::max(1, options.aoti_runners)));
      auto meta = impl_->aoti->get_metadata();
      auto found = meta.find(kMetadataKey);
      if (found != meta.end()) text = found->second;
    } else if (suffix == ".pt" || suffix == ".ts" || suffix == ".torchscript") {
      torch::jit::ExtraFilesMap extra{{std::string(kMetadataKey) + ".json", ""}};
      impl_->script = std::make_unique<torch::jit::Module>(
          torch::jit::load(path, c10::Device(c10::kCPU), extra));
      impl_->script->eval();
      text = extra.begin()->second;
    } else if (suffix == ".onnx") {
#ifdef GRADVIS_WITH_ONNXRUNTIME
      impl_->onnx = std::make_unique<OnnxSession>(path, options.num_threads);
      text = impl_->onnx->metadata(kMetadataKey);
#else
      throw Error("'" + path +
                  "' is an ONNX artifact, and this build of the gradvis library has no ONNX "
                  "Runtime backend: configure it with -DONNXRUNTIME_ROOT=<ONNX Runtime SDK>, or "
                  "run the file with onnxruntime (gradvis_runtime's backend='onnxruntime')");
#endif
    } else {
      throw Error("cannot tell the format of '" + path +
                  "': the C++ library runs TorchScript (.pt), AOTInductor (.pt2) and, when built "
                  "with ONNX Runtime, ONNX (.onnx) artifacts");
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& error) {
    throw FileError("cannot load '" + path + "' as " +
                    (suffix == ".pt2"    ? "an AOTInductor package"
                     : suffix == ".onnx" ? "an ONNX model"
                                         : "a TorchScript module") +
                    ": " + short_message(error));
  }
  if (text.empty())
    throw Error("'" + path +
                "' has no gradvis metadata; export it with gradvis_export (gv.export)");
  impl_->metadata = parse_metadata(text, path);
}

Explainer::~Explainer() = default;
Explainer::Explainer(Explainer&&) noexcept = default;
Explainer& Explainer::operator=(Explainer&&) noexcept = default;

Outputs Explainer::run(const at::Tensor& input, const at::Tensor& target) const {
  std::map<std::string, at::Tensor> inputs;
  if (target.defined()) inputs["target"] = target;
  return run(input, inputs);
}

Outputs Explainer::run(const at::Tensor& input,
                       const std::map<std::string, at::Tensor>& inputs) const {
  const Metadata& meta = impl_->metadata;
  for (const auto& [name, value] : inputs) {
    if (name == "input")
      throw InputError("pass the input as the first argument, not by the name 'input'");
    meta.input(name);  // throws on an unknown name
  }
  std::vector<at::Tensor> feeds{impl_->check_input(input)};
  for (std::size_t i = 1; i < meta.inputs.size(); ++i) {
    auto found = inputs.find(meta.inputs[i].name);
    at::Tensor value = found == inputs.end() ? at::Tensor() : found->second;
    feeds.push_back(impl_->check_extra(meta.inputs[i], value, input.size(0)));
  }
  Outputs outputs;
  outputs.names = meta.outputs;
  outputs.tensors = impl_->call(std::move(feeds));
  if (outputs.tensors.size() != outputs.names.size())
    throw Error("'" + impl_->path + "' returned " + std::to_string(outputs.tensors.size()) +
                " outputs; its metadata lists " + std::to_string(outputs.names.size()));
  return outputs;
}

std::vector<at::Tensor> Explainer::run_positional(const std::vector<at::Tensor>& inputs) const {
  const Metadata& meta = impl_->metadata;
  if (inputs.size() != meta.inputs.size())
    throw InputError("expected " + std::to_string(meta.inputs.size()) + " inputs, got " +
                     std::to_string(inputs.size()));
  std::map<std::string, at::Tensor> named;
  for (std::size_t i = 1; i < inputs.size(); ++i) named[meta.inputs[i].name] = inputs[i];
  return run(inputs.front(), named).tensors;
}

const Metadata& Explainer::metadata() const { return impl_->metadata; }
const std::string& Explainer::path() const { return impl_->path; }

const char* version() { return GRADVIS_VERSION; }

bool has_onnxruntime() {
#ifdef GRADVIS_WITH_ONNXRUNTIME
  return true;
#else
  return false;
#endif
}

}  // namespace gradvis
