// The optional ONNX Runtime backend of gradvis::Explainer (compiled only when CMake is given
// ONNXRUNTIME_ROOT): an Ort::Session that takes and returns at::Tensor, so the Explainer's
// input checks and outputs are the same for .onnx, .pt and .pt2 artifacts.
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

namespace gradvis {

class OnnxSession {
 public:
  // Throws Ort::Exception when ONNX Runtime cannot load the file.
  OnnxSession(const std::string& path, int num_threads);
  ~OnnxSession();

  // The model's custom metadata entry `key` ("" when absent).
  std::string metadata(const std::string& key) const;

  // Runs the graph on the inputs named `names` (the graph's inputs that ONNX Runtime kept;
  // others are dropped) and returns the outputs named `outputs`, in that order.  The input
  // tensors must be contiguous CPU tensors; they are read in place, not copied.  Safe to call
  // from several threads at once (Ort::Session::Run is).
  std::vector<at::Tensor> run(const std::vector<std::string>& names,
                              const std::vector<at::Tensor>& inputs,
                              const std::vector<std::string>& outputs) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gradvis
