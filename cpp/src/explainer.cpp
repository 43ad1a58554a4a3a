// gradvis::Explainer: loads a TorchScript, AOTInductor or (when built with ONNX Runtime) ONNX
// artifact and its contract (contract.cpp), checks every run's inputs against the contract and
// runs the graph under c10::InferenceMode.
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

#ifdef GRADVIS_WITH_ONNXRUNTIME
#include "onnx_session.h"
#endif

#ifndef GRADVIS_VERSION
#define GRADVIS_VERSION "unknown"
#endif

namespace gradvis {

namespace {

std::string lower_suffix(const std::string& path) {
  auto slash = path.find_last_of("/\\");
  auto dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string suffix = path.substr(dot);
  std::transform(suffix.begin(), suffix.end(), suffix.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return suffix;
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

std::string joined(const std::vector<std::string>& names) {
  std::string text;
  for (const auto& name : names) text += (text.empty() ? "" : ", ") + name;
  return text;
}

std::vector<std::string> names_of(const std::vector<InputSpec>& specs) {
  std::vector<std::string> names;
  for (const auto& spec : specs) names.push_back(spec.name);
  return names;
}

}  // namespace

const at::Tensor& Outputs::operator[](const std::string& name) const {
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return tensors[i];
  throw Error("no output named '" + name + "'; the outputs are " + joined(names));
}

struct Explainer::Impl {
  std::string path;
  ArtifactSpec spec;
  // Read off the spec once at load: every run needs them.
  std::vector<std::string> input_names, data_names, output_names;
  // Exactly one is set.  All are safe for concurrent calls: TorchScript's graph executor
  // locks its own plan cache, AOTInductor's container hands each call a free runner, and
  // ONNX Runtime's Session::Run is thread-safe.
  std::unique_ptr<torch::jit::Module> script;
  std::unique_ptr<torch::inductor::AOTIModelPackageLoader> aoti;
#ifdef GRADVIS_WITH_ONNXRUNTIME
  std::unique_ptr<OnnxSession> onnx;
#endif

  at::Tensor check_data(const InputSpec& input, const at::Tensor& x, bool named) const;
  at::Tensor check_target(const InputSpec& input, const at::Tensor& value, int64_t batch) const;
  Outputs run(const std::vector<at::Tensor>& data,
              const std::map<std::string, at::Tensor>& targets) const;
  std::vector<at::Tensor> call(std::vector<at::Tensor> inputs) const;
};

// `named`: the artifact has several data inputs, so the messages say which one.
at::Tensor Explainer::Impl::check_data(const InputSpec& input, const at::Tensor& x,
                                       bool named) const {
  const std::string what = named ? "the input '" + input.name + "'" : "the input";
  if (!x.defined()) throw InputError(what + " is undefined");
  if (x.scalar_type() != input.dtype)
    throw InputError(what + " has dtype " + c10::toString(x.scalar_type()) +
                     "; this artifact takes " + c10::toString(input.dtype) + " (convert with .to(" +
                     c10::toString(input.dtype) + "))");
  bool same = x.dim() == static_cast<int64_t>(input.shape.size());
  for (std::size_t i = 1; same && i < input.shape.size(); ++i) same = x.size(i) == input.shape[i];
  if (!same)
    throw InputError(what + " has shape " + shape_text(x.sizes()) + "; this artifact takes " +
                     spec_shape_text(input.shape) + " (" +
                     (input.layout.empty() ? "" : input.layout + ", ") + "B = any batch size)");
  if (x.size(0) < 1) throw InputError(what + " has batch size 0; pass at least one sample");
  if (!x.device().is_cpu())
    throw InputError(what + " is on " + x.device().str() + "; these artifacts run on the CPU");
  return x.contiguous();
}

at::Tensor Explainer::Impl::check_target(const InputSpec& input, const at::Tensor& value,
                                         int64_t batch) const {
  std::vector<int64_t> shape = input.shape;
  shape[0] = batch;
  if (!value.defined()) {
    if (!input.has_default)
      throw InputError("this artifact needs the input '" + input.name + "': " + input.doc);
    return at::full(shape, input.default_value, at::TensorOptions().dtype(input.dtype));
  }
  bool integral = c10::isIntegralType(input.dtype, /*includeBool=*/true);
  if (integral && c10::isFloatingType(value.scalar_type()))
    throw InputError("'" + input.name + "' must hold integers (" + input.dtype_name + "), got " +
                     c10::toString(value.scalar_type()));
  if (!integral && !c10::isFloatingType(value.scalar_type()))
    throw InputError("'" + input.name + "' must be floating point (" + input.dtype_name +
                     "), got " + c10::toString(value.scalar_type()));
  if (value.sizes() != c10::IntArrayRef(shape))
    throw InputError("'" + input.name + "' has shape " + shape_text(value.sizes()) +
                     "; expected " + shape_text(shape) +
                     (input.name == "target" ? " (one class per sample, -1 = argmax)" : ""));
  if (!value.device().is_cpu())
    throw InputError("'" + input.name + "' is on " + value.device().str() +
                     "; these artifacts run on the CPU");
  return value.to(input.dtype).contiguous();
}

// The graph's inputs in contract order: `data` checked against the data inputs, the target
// inputs from `targets` or their defaults.
Outputs Explainer::Impl::run(const std::vector<at::Tensor>& data,
                             const std::map<std::string, at::Tensor>& targets) const {
  if (data.size() != data_names.size())
    throw InputError("this artifact takes " + std::to_string(data_names.size()) +
                     " data input(s) (" + joined(data_names) + "); got a vector of " +
                     std::to_string(data.size()));
  for (const auto& entry : targets)
    if (spec.input(entry.first).role == "data")  // throws on an unknown name
      throw InputError("'" + entry.first +
                       "' is a data input: pass it among the data tensors, not by name");
  std::vector<at::Tensor> feeds(spec.inputs.size());
  std::vector<std::pair<std::string, int64_t>> batches;
  for (std::size_t i = 0, k = 0; i < spec.inputs.size(); ++i) {
    if (spec.inputs[i].role != "data") continue;
    feeds[i] = check_data(spec.inputs[i], data[k++], data_names.size() > 1);
    batches.emplace_back(spec.inputs[i].name, feeds[i].size(0));
  }
  const int64_t batch = batches.front().second;
  for (const auto& entry : batches)
    if (entry.second != batch) {
      std::string sizes;
      for (const auto& [name, size] : batches)
        sizes += (sizes.empty() ? "'" : ", '") + name + "': " + std::to_string(size);
      throw InputError("the data inputs have batch sizes {" + sizes +
                       "}; every input holds the same samples, so the batch sizes must be equal");
    }
  for (std::size_t i = 0; i < spec.inputs.size(); ++i) {
    if (spec.inputs[i].role == "data") continue;
    auto found = targets.find(spec.inputs[i].name);
    feeds[i] = check_target(spec.inputs[i], found == targets.end() ? at::Tensor() : found->second,
                            batch);
  }
  Outputs outputs;
  outputs.names = output_names;
  outputs.tensors = call(std::move(feeds));
  if (outputs.tensors.size() != outputs.names.size())
    throw Error("'" + path + "' returned " + std::to_string(outputs.tensors.size()) +
                " outputs; its contract lists " + std::to_string(outputs.names.size()));
  return outputs;
}

std::vector<at::Tensor> Explainer::Impl::call(std::vector<at::Tensor> inputs) const {
  c10::InferenceMode guard;
  try {
    if (aoti) return aoti->run(inputs);
#ifdef GRADVIS_WITH_ONNXRUNTIME
    if (onnx) {
      return onnx->run(input_names, inputs, output_names);
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
  impl_->spec = parse_contract(text, path);
  impl_->input_names = names_of(impl_->spec.inputs);
  impl_->data_names = names_of(impl_->spec.data_inputs());
  impl_->output_names = impl_->spec.output_names();
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
  const std::vector<std::string>& data = impl_->data_names;
  if (data.size() > 1) {
    const std::string names = joined(data);
    throw InputError("this artifact takes " + std::to_string(data.size()) + " data inputs (" +
                     names + "): pass a vector of them in that order, run({" + names +
                     "}, ...)");
  }
  return impl_->run({input}, inputs);
}

Outputs Explainer::run(const std::vector<at::Tensor>& data,
                       const std::map<std::string, at::Tensor>& inputs) const {
  return impl_->run(data, inputs);
}

std::vector<at::Tensor> Explainer::run_positional(const std::vector<at::Tensor>& inputs) const {
  const ArtifactSpec& spec = impl_->spec;
  if (inputs.size() != spec.inputs.size())
    throw InputError("expected " + std::to_string(spec.inputs.size()) + " inputs, got " +
                     std::to_string(inputs.size()) + " (the graph's inputs: " +
                     joined(impl_->input_names) + ")");
  std::vector<at::Tensor> data;
  std::map<std::string, at::Tensor> targets;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (spec.inputs[i].role == "data")
      data.push_back(inputs[i]);
    else
      targets[spec.inputs[i].name] = inputs[i];
  }
  return impl_->run(data, targets).tensors;
}

const ArtifactSpec& Explainer::spec() const { return impl_->spec; }
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
