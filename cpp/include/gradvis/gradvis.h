// gradvis: run exported explainers (TorchScript .pt, AOTInductor .pt2) from C++ on LibTorch,
// and ONNX (.onnx) artifacts on ONNX Runtime when the library is built with it
// (-DONNXRUNTIME_ROOT=...; see has_onnxruntime()).
//
//   gradvis::Explainer explainer("gradcam.pt2");
//   gradvis::Outputs out = explainer.run(frames, target);   // out["logits"], out["heatmap"]
//   explainer.spec().map_spec().shape   // {-1, 3, 16, 224, 224}: B (any), C, T, H, W
//
// This header is C++17; LibTorch's own headers (torch 2.13+) need C++20 to compile.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
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

// The version of the artifact contract this library reads (contract.py's CONTRACT_VERSION).
constexpr int kContractVersion = 1;
// The key the contract record is stored under in every format (ONNX metadata_props, the
// TorchScript extra file gradvis.json, the AOTInductor package's metadata).
constexpr const char* kMetadataKey = "gradvis";

// The artifact's contract record is missing, of a newer version, or has a malformed field.
class ContractError : public Error {
 public:
  using Error::Error;
};

// One graph input.  In these specs an empty string or std::nullopt is the record's null.
struct InputSpec {
  std::string name;
  std::string role;  // "data" (what the model sees) or "target" (what is explained)
  c10::ScalarType dtype = c10::ScalarType::Float;
  std::string dtype_name;      // as recorded: "float32", "int64", "uint8", ...
  std::vector<int64_t> shape;  // shape[0] == -1: "B", any batch size
  std::string layout;          // "BCHW", "BCTHW", "BHWC", "BTHWC"; empty: not image data
  bool has_default = false;    // what a target input left out takes; none: required
  double default_value = 0.0;
  std::string doc;

  // Takes uint8 RGB frames as a decoder gives them (BHWC, BTHWC).
  bool uint8() const;
  bool is_video() const;  // BCTHW, BTHWC
  // Frames per clip of a video input.
  std::optional<int64_t> clip_len() const;
  // (height, width) of the frames of an image / clip input.
  std::optional<std::pair<int64_t, int64_t>> frame_size() const;
};

// One graph output.
struct OutputSpec {
  std::string name;
  c10::ScalarType dtype = c10::ScalarType::Float;
  std::string dtype_name;
  std::vector<int64_t> shape;  // shape[0] == -1: the batch
  std::string meaning;
};

// How frames become the model's input: a uint8 artifact (`in_graph`) scales to [0, 1] and
// normalises with mean / std itself; a float one expects the caller to (mean / std when given).
struct Preprocess {
  bool in_graph = false;
  std::optional<std::vector<double>> mean, std;  // both or neither
  std::optional<double> overlay_alpha;
};

// The artifact's contract: the typed, versioned record gv.export stores in it (key "gradvis"),
// parsed and checked once at load.  runtime/gradvis_runtime/contract.py defines it.
struct ArtifactSpec {
  int contract = kContractVersion;
  std::string gradvis_version;
  std::string format;  // "onnx", "torchscript" or "aoti"
  std::string method;  // e.g. "gradcam"
  std::vector<std::string> layers;
  std::string target_type;  // target["type"], e.g. "ClassTarget"
  std::string target_json;  // the whole target object, as JSON
  std::vector<InputSpec> inputs;  // graph order
  std::vector<OutputSpec> outputs;
  std::string map_input;  // the data input the maps are given on
  Preprocess preprocess;
  std::optional<std::vector<std::string>> class_names;
  std::optional<int64_t> num_classes;  // valid targets: -1 (argmax) and 0..num_classes-1
  std::string precision;  // "fp32" or "fp16"
  std::string profile;    // "tensorrt", "onnxruntime-cpu"; empty: none
  std::string options_json;  // the method's own settings, as JSON
  std::string extra_json;    // user fields, measurements, as JSON
  std::string json;          // the whole record, as stored

  // Throws InputError naming the artifact's inputs when it has none called `name`.
  const InputSpec& input(const std::string& name) const;
  std::vector<InputSpec> data_inputs() const;    // role "data", graph order
  std::vector<InputSpec> target_inputs() const;  // role "target", graph order
  std::vector<std::string> output_names() const;
  const InputSpec& map_spec() const;  // input(map_input)
  // Those of map_spec().
  const std::string& layout() const;
  bool uint8() const;
  bool is_video() const;
  std::optional<int64_t> clip_len() const;
  std::optional<std::pair<int64_t, int64_t>> frame_size() const;
};

// Parses and checks a stored contract record as contract.py's reader does; `where` (the file)
// starts every message.  Throws ContractError (one line naming the field and the fix).  Blank
// text is a missing record.
ArtifactSpec parse_contract(const std::string& json_text, const std::string& where);

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

  // An artifact with one data input.  `target`: int64 (B,), -1 = argmax; an undefined tensor =
  // the argmax class of every sample.
  Outputs run(const at::Tensor& input, const at::Tensor& target = at::Tensor()) const;
  // An artifact with one data input, and the target's inputs by name ("target", "mask",
  // "reference", "box", "label"); missing ones take their recorded default.
  Outputs run(const at::Tensor& input, const std::map<std::string, at::Tensor>& inputs) const;
  // Any artifact: `data` are its data inputs (role "data") in graph order, all of one batch
  // size; `inputs` its target inputs by name, as above.
  Outputs run(const std::vector<at::Tensor>& data,
              const std::map<std::string, at::Tensor>& inputs = {}) const;
  // Every graph input in the contract's order (undefined tensors: the targets' defaults) ->
  // the outputs in the contract's order (used by the Python bridge).
  std::vector<at::Tensor> run_positional(const std::vector<at::Tensor>& inputs) const;

  const ArtifactSpec& spec() const;
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
