// ONNX Runtime behind gradvis::Explainer, through ONNX Runtime's C++ API (header-only over its
// stable C API: headers of an older release work with a newer libonnxruntime).  Inputs are
// handed over without a copy; outputs stay in ONNX Runtime's buffers, owned by the returned
// tensors.
#include "onnx_session.h"

#include <ATen/ops/from_blob.h>
#include <onnxruntime_cxx_api.h>

#include <stdexcept>

namespace gradvis {

namespace {

// ONNX Runtime wants one environment per process; it lives until the process ends.
Ort::Env& environment() {
  static Ort::Env env(ORT_LOGGING_LEVEL_ERROR, "gradvis");
  return env;
}

ONNXTensorElementDataType element_type(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
    case c10::ScalarType::Half: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case c10::ScalarType::Double: return ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE;
    case c10::ScalarType::Long: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64;
    case c10::ScalarType::Int: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case c10::ScalarType::Byte: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case c10::ScalarType::Bool: return ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL;
    default:
      throw std::invalid_argument(std::string("ONNX Runtime inputs of dtype ") +
                                  c10::toString(type) + " are not supported");
  }
}

c10::ScalarType scalar_type(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return c10::ScalarType::Float;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return c10::ScalarType::Half;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return c10::ScalarType::Double;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return c10::ScalarType::Long;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return c10::ScalarType::Int;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return c10::ScalarType::Byte;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return c10::ScalarType::Bool;
    default:
      throw std::runtime_error("the graph returned an output of an unsupported element type " +
                               std::to_string(static_cast<int>(type)));
  }
}

}  // namespace

struct OnnxSession::Impl {
  Ort::Session session{nullptr};
  Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<std::string> graph_inputs;  // the exporter drops inputs the graph does not use
};

OnnxSession::OnnxSession(const std::string& path, int num_threads)
    : impl_(std::make_unique<Impl>()) {
  Ort::SessionOptions options;
  if (num_threads > 0) options.SetIntraOpNumThreads(num_threads);
  options.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
  impl_->session = Ort::Session(environment(), path.c_str(), options);
  Ort::AllocatorWithDefaultOptions allocator;
  for (std::size_t i = 0; i < impl_->session.GetInputCount(); ++i)
    impl_->graph_inputs.emplace_back(impl_->session.GetInputNameAllocated(i, allocator).get());
}

OnnxSession::~OnnxSession() = default;

std::string OnnxSession::metadata(const std::string& key) const {
  Ort::AllocatorWithDefaultOptions allocator;
  Ort::ModelMetadata meta = impl_->session.GetModelMetadata();
  Ort::AllocatedStringPtr value = meta.LookupCustomMetadataMapAllocated(key.c_str(), allocator);
  return value ? std::string(value.get()) : std::string();
}

std::vector<at::Tensor> OnnxSession::run(const std::vector<std::string>& names,
                                         const std::vector<at::Tensor>& inputs,
                                         const std::vector<std::string>& outputs) const {
  std::vector<const char*> input_names;
  std::vector<Ort::Value> values;
  for (std::size_t i = 0; i < names.size(); ++i) {
    bool used = false;
    for (const auto& name : impl_->graph_inputs) used = used || name == names[i];
    if (!used) continue;
    const at::Tensor& t = inputs[i];
    std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
    values.push_back(Ort::Value::CreateTensor(impl_->cpu, const_cast<void*>(t.data_ptr()),
                                              t.nbytes(), shape.data(), shape.size(),
                                              element_type(t.scalar_type())));
    input_names.push_back(names[i].c_str());
  }
  std::vector<const char*> output_names;
  for (const auto& name : outputs) output_names.push_back(name.c_str());
  std::vector<Ort::Value> results =
      impl_->session.Run(Ort::RunOptions{nullptr}, input_names.data(), values.data(),
                         values.size(), output_names.data(), output_names.size());
  std::vector<at::Tensor> tensors;
  for (auto& result : results) {
    auto info = result.GetTensorTypeAndShapeInfo();
    c10::ScalarType type = scalar_type(info.GetElementType());
    std::vector<int64_t> shape = info.GetShape();
    void* data = const_cast<void*>(result.GetTensorRawData());
    auto* owner = new Ort::Value(std::move(result));  // freed with the tensor
    tensors.push_back(at::from_blob(
        data, shape, [owner](void*) { delete owner; }, at::TensorOptions().dtype(type)));
  }
  return tensors;
}

}  // namespace gradvis
