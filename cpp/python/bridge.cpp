// gradvis_runtime._cpp: the C++ library for Python.  NumPy arrays go in without a copy (when
// C-contiguous) and come out without one (the array owns the output tensor); the GIL is
// released while C++ runs; gradvis errors become Python exceptions with the same message
// (ContractError -> gradvis_runtime.contract.ContractError, a ValueError; InputError ->
// ValueError, FileError -> FileNotFoundError, Error -> RuntimeError).
#include <gradvis/gradvis.h>

#include <ATen/ops/from_blob.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

c10::ScalarType scalar_type(const py::dtype& dtype) {
  switch (dtype.char_()) {
    case 'f': return c10::ScalarType::Float;
    case 'd': return c10::ScalarType::Double;
    case 'e': return c10::ScalarType::Half;
    case 'B': return c10::ScalarType::Byte;
    case 'b': return c10::ScalarType::Char;
    case 'i': return c10::ScalarType::Int;
    case 'l': case 'q': return c10::ScalarType::Long;
    case '?': return c10::ScalarType::Bool;
    default:
      throw gradvis::InputError("arrays of dtype " + std::string(py::str(dtype)) +
                                " are not supported; use float32, int64 or uint8");
  }
}

py::dtype numpy_dtype(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float: return py::dtype::of<float>();
    case c10::ScalarType::Double: return py::dtype::of<double>();
    case c10::ScalarType::Long: return py::dtype::of<int64_t>();
    case c10::ScalarType::Int: return py::dtype::of<int32_t>();
    case c10::ScalarType::Byte: return py::dtype::of<uint8_t>();
    case c10::ScalarType::Bool: return py::dtype::of<bool>();
    case c10::ScalarType::Half: return py::dtype("float16");
    default: throw gradvis::Error(std::string("unsupported output dtype ") + c10::toString(type));
  }
}

// A tensor viewing the array's memory (the array must outlive it).
at::Tensor as_tensor(const py::array& array) {
  std::vector<int64_t> shape(array.shape(), array.shape() + array.ndim());
  return at::from_blob(const_cast<void*>(array.data()), shape,
                       at::TensorOptions().dtype(scalar_type(array.dtype())));
}

// An array owning the (contiguous) tensor through a capsule.
py::array as_array(const at::Tensor& tensor) {
  auto* owned = new at::Tensor(tensor.contiguous());
  py::capsule owner(owned, [](void* p) { delete static_cast<at::Tensor*>(p); });
  std::vector<py::ssize_t> shape(owned->sizes().begin(), owned->sizes().end());
  return py::array(numpy_dtype(owned->scalar_type()), shape, owned->data_ptr(), owner);
}

class PyExplainer {
 public:
  PyExplainer(const std::string& path, int num_threads) {
    gradvis::Options options;
    options.num_threads = num_threads;
    py::gil_scoped_release release;
    explainer_ = std::make_unique<gradvis::Explainer>(path, options);
  }

  // All graph inputs, in the contract's order -> the outputs, in the contract's order.
  py::list run(const std::vector<py::object>& inputs) const {
    std::vector<py::array> arrays;  // keeps the contiguous copies alive during the call
    std::vector<at::Tensor> tensors;
    for (const auto& item : inputs) {
      arrays.push_back(py::array::ensure(item, py::array::c_style));
      if (!arrays.back()) throw gradvis::InputError("every input must be a NumPy array");
      tensors.push_back(as_tensor(arrays.back()));
    }
    std::vector<at::Tensor> outputs;
    {
      py::gil_scoped_release release;
      outputs = explainer_->run_positional(tensors);
    }
    py::list result;
    for (const auto& t : outputs) result.append(as_array(t));
    return result;
  }

  // Wall time (ms) of each of `repeats` C++ calls on these inputs, timed in C++ with the GIL
  // released: the reference the bridge's overhead is measured against.
  std::vector<double> benchmark(const std::vector<py::array>& inputs, int repeats) const {
    std::vector<at::Tensor> tensors;
    for (const auto& array : inputs) tensors.push_back(as_tensor(array));
    std::vector<double> times;
    py::gil_scoped_release release;
    for (int i = 0; i < repeats; ++i) {
      auto start = std::chrono::steady_clock::now();
      auto outputs = explainer_->run_positional(tensors);
      times.push_back(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
              .count());
    }
    return times;
  }

  // The C++ library's own parse of the contract's inputs: (name, role, dtype, shape with -1 =
  // batch, layout or None, default or None).
  py::list input_specs() const {
    py::list specs;
    for (const auto& spec : explainer_->spec().inputs) {
      py::object layout = spec.layout.empty() ? py::object(py::none()) : py::str(spec.layout);
      py::object fallback = spec.has_default ? py::object(py::float_(spec.default_value))
                                             : py::object(py::none());
      specs.append(
          py::make_tuple(spec.name, spec.role, spec.dtype_name, spec.shape, layout, fallback));
    }
    return specs;
  }

  std::string metadata_json() const { return explainer_->spec().json; }
  std::string path() const { return explainer_->path(); }

 private:
  std::unique_ptr<gradvis::Explainer> explainer_;
};

// gradvis_runtime.contract.ContractError (ValueError should the package not import).
py::object contract_error_type() {
  try {
    return py::module_::import("gradvis_runtime.contract").attr("ContractError");
  } catch (const py::error_already_set&) {
    return py::reinterpret_borrow<py::object>(PyExc_ValueError);
  }
}

}  // namespace

PYBIND11_MODULE(_cpp, m) {
  m.doc() = "gradvis C++ runtime (gradvis::Explainer) for gradvis_runtime.load(backend='cpp')";
  py::register_exception_translator([](std::exception_ptr error) {
    try {
      if (error) std::rethrow_exception(error);
    } catch (const gradvis::ContractError& e) {
      py::set_error(contract_error_type(), e.what());
    } catch (const gradvis::InputError& e) {
      py::set_error(PyExc_ValueError, e.what());
    } catch (const gradvis::FileError& e) {
      py::set_error(PyExc_FileNotFoundError, e.what());
    } catch (const gradvis::Error& e) {
      py::set_error(PyExc_RuntimeError, e.what());
    }
  });
  py::class_<PyExplainer>(m, "Explainer")
      .def(py::init<const std::string&, int>(), py::arg("path"), py::arg("num_threads") = 0)
      .def("run", &PyExplainer::run, py::arg("inputs"),
           "Run with every graph input (NumPy arrays, contract order); returns the outputs.")
      .def("benchmark", &PyExplainer::benchmark, py::arg("inputs"), py::arg("repeats") = 1,
           "Milliseconds per C++ call, timed inside C++ (inputs: C-contiguous arrays).")
      .def_property_readonly("metadata_json", &PyExplainer::metadata_json)
      .def_property_readonly("input_specs", &PyExplainer::input_specs)
      .def_property_readonly("path", &PyExplainer::path);
  m.attr("version") = gradvis::version();
  m.attr("has_onnxruntime") = gradvis::has_onnxruntime();
}
