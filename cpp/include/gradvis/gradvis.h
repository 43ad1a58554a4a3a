// gradvis: run exported explainers (TorchScript .pt, AOTInductor .pt2) from C++ on LibTorch,
// and ONNX (.onnx) artifacts on ONNX Runtime when the library is built with it
// (-DONNXRUNTIME_ROOT=...; see has_onnxruntime()).
//
//   gradvis::Explainer explainer("gradcam.pt2");
//   gradvis::Outputs out = explainer.run(frames, target);   // out["logits"], out["heatmap"]
//
// This header is C++17; LibTorch's own headers (torch 2.13+) need C++20 to compile.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace gradvis {

// Every error the library throws; the message says what is wrong and what to do.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The artifact file is missing or unreadable.
class FileError : public Error {
 public:
  using Error::Error;
};

// A run's input has the wrong shape, dtype or name.
class InputError : public Error {
 public:
  using Error::Error;
};

// One graph input as recorded at export: dtype, shape (-1 = the batch) and default.
struct InputSpec {
  std::string name;
  c10::ScalarType dtype = c10::ScalarType::Float;
  std::vector<int64_t> shape;  // shape[0] == -1: any batch size
  bool has_default = false;
  double default_value = 0.0;
  std::string doc;
};

// What the artifact records about itself (written by gradvis_export at export time).
struct Metadata {
  std::string method;           // e.g. "GradCAM"
  std::string format;           // "torchscript", "aoti" or "onnx"
  std::string input_layout;     // "BCHW", "BCTHW", "BHWC", "BTHWC"
  std::string gradvis_version;
  std::vector<InputSpec> inputs;     // graph order: "input" first, then the target's
  std::vector<std::string> outputs;  // e.g. {"logits", "heatmap"}
  std::string json;                  // the whole record, as exported

  const InputSpec& input(const std::string& name) const;
};

// The outputs of one run, by name, in the artifact's order.
struct Outputs {
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;

  const at::Tensor& operator[](const std::string& name) const;
  std::size_t size() const { return tensors.size(); }
};

struct Options {
  int num_threads = 0;     // > 0: at::set_num_threads (process-wide) and, for an .onnx file,
                           // ONNX Runtime's intra-op threads; 0: the runtimes' defaults
  int aoti_runners = 1;    // AOTInductor: model copies that can run at the same time
};

// A loaded artifact.  `run` is const and safe to call from several threads at once.
class Explainer {
 public:
  explicit Explainer(const std::string& path, const Options& options = Options());
  ~Explainer();
  Explainer(Explainer&&) noexcept;
  Explainer& operator=(Explainer&&) noexcept;

  // `target`: int64 (B,), -1 = argmax; an undefined tensor = the argmax class of every sample.
  Outputs run(const at::Tensor& input, const at::Tensor& target = at::Tensor()) const;
  // The target's inputs by name ("target", "mask", "reference", "box", "label"); missing ones
  // take their recorded default.
  Outputs run(const at::Tensor& input, const std::map<std::string, at::Tensor>& inputs) const;
  // Every graph input in the metadata's order, already complete (used by the Python bridge).
  std::vector<at::Tensor> run_positional(const std::vector<at::Tensor>& inputs) const;

  const Metadata& metadata() const;
  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The library's version (the gradvis version it was built with).
const char* version();

// Whether this build runs .onnx artifacts (built against an ONNX Runtime SDK).
bool has_onnxruntime();

}  // namespace gradvis
