// CTest: gradvis::Explainer against eager PyTorch outputs written by tests/cpp_fixtures.py
// (TorchScript and AOTInductor artifacts, batch sizes other than the export's, artifacts with
// one data input and with several), through every run overload, the same runs from 8 threads on
// one explainer, and the error messages for bad input.  With a build on ONNX Runtime, the same
// on the ONNX artifacts (manifest_onnx.txt).  Artifacts whose contract is missing, newer or
// malformed are refused naming the field (contract.txt), and parse_contract is checked on
// records written here.
//
//   gradvis_test FIXTURE_DIR [MANIFEST]
//
// FIXTURE_DIR/MANIFEST (default manifest.txt), one line per item:
//   run ARTIFACT                        -- a new case on this artifact
//   input NAME FILE DTYPE D0 D1 ...     -- a graph input of the case (raw C-order bytes); data
//                                          or target as the artifact's contract says
//   output NAME FILE D0 D1 ...          -- an expected float32 output
//   refuse ARTIFACT FIELD               -- loading it throws gradvis::ContractError naming
//                                          'FIELD' (FIELD gradvis: the record is missing)
#include <gradvis/gradvis.h>

#include <ATen/ATen.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Case {
  std::string artifact;
  std::map<std::string, at::Tensor> inputs;
  std::vector<std::pair<std::string, at::Tensor>> outputs;
};

struct Refusal {
  std::string artifact, field;
};

struct Manifest {
  std::vector<Case> cases;
  std::vector<Refusal> refusals;
};

int passed = 0, failed = 0;

void check(bool ok, const std::string& what) {
  (ok ? passed : failed) += 1;
  std::cout << (ok ? "ok     " : "FAILED ") << what << "\n";
}

at::Tensor read_raw(const std::string& path, c10::ScalarType dtype,
                    const std::vector<int64_t>& shape) {
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(dtype));
  std::ifstream file(path, std::ios::binary);
  file.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.nbytes()));
  if (!file) throw std::runtime_error("cannot read fixture " + path);
  return t;
}

Manifest read_manifest(const std::string& dir, const std::string& file_name) {
  std::ifstream file(dir + "/" + file_name);
  if (!file)
    throw std::runtime_error("no " + dir + "/" + file_name + ": run tests/cpp_fixtures.py");
  Manifest manifest;
  std::string line;
  while (std::getline(file, line)) {
    std::istringstream words(line);
    std::string kind, name, path, dtype;
    words >> kind;
    if (kind == "run") {
      Case c;
      words >> c.artifact;
      c.artifact = dir + "/" + c.artifact;
      manifest.cases.push_back(c);
      continue;
    }
    if (kind == "refuse") {
      Refusal refusal;
      words >> refusal.artifact >> refusal.field;
      refusal.artifact = dir + "/" + refusal.artifact;
      manifest.refusals.push_back(refusal);
      continue;
    }
    words >> name >> path;
    if (kind == "input") words >> dtype;
    std::vector<int64_t> shape;
    for (int64_t d; words >> d;) shape.push_back(d);
    if (kind == "input") {
      auto type = dtype == "int64" ? at::kLong : dtype == "uint8" ? at::kByte : at::kFloat;
      manifest.cases.back().inputs[name] = read_raw(dir + "/" + path, type, shape);
    } else if (kind == "output") {
      manifest.cases.back().outputs.emplace_back(name,
                                                 read_raw(dir + "/" + path, at::kFloat, shape));
    }
  }
  return manifest;
}

// allclose with rtol 1e-4 and an absolute floor of 1e-4 of the output's largest magnitude
bool close(const at::Tensor& got, const at::Tensor& want, double* worst) {
  if (got.sizes() != want.sizes()) return false;
  at::Tensor g = got.to(at::kFloat), w = want.to(at::kFloat);
  double scale = at::abs(w).max().item<double>();
  at::Tensor excess = at::abs(g - w) - (1e-4 * at::abs(w) + 1e-4 * scale + 1e-6);
  *worst = at::abs(g - w).max().item<double>();
  return excess.max().item<double>() <= 0;
}

// The run overloads: run(input, targets) (one data input), run({data...}, targets) and
// run_positional(every input).
enum class Call { Single, Vector, Positional };

const char* call_name(Call call) {
  return call == Call::Single ? "run(input)" : call == Call::Vector ? "run({data})"
                                                                     : "run_positional";
}

gradvis::Outputs run_case(const gradvis::Explainer& explainer, const Case& c, Call call) {
  const gradvis::ArtifactSpec& spec = explainer.spec();
  auto given = [&](const std::string& name) {
    auto found = c.inputs.find(name);
    return found == c.inputs.end() ? at::Tensor() : found->second;
  };
  if (call == Call::Positional) {
    std::vector<at::Tensor> all;
    for (const auto& input : spec.inputs) all.push_back(given(input.name));
    gradvis::Outputs out;
    out.names = spec.output_names();
    out.tensors = explainer.run_positional(all);
    return out;
  }
  std::vector<at::Tensor> data;
  std::map<std::string, at::Tensor> targets;
  for (const auto& input : spec.inputs) {
    if (input.role == "data")
      data.push_back(given(input.name));
    else if (c.inputs.count(input.name))
      targets[input.name] = given(input.name);
  }
  return call == Call::Single ? explainer.run(data.front(), targets) : explainer.run(data, targets);
}

bool matches(const gradvis::Explainer& explainer, const Case& c, Call call,
             std::string* detail) {
  gradvis::Outputs out = run_case(explainer, c, call);
  bool ok = true;
  std::ostringstream text;
  for (const auto& [name, want] : c.outputs) {
    double worst = 0;
    bool same = close(out[name], want, &worst);
    ok = ok && same;
    text << " " << name << " max|diff|=" << worst;
  }
  *detail = text.str();
  return ok;
}

template <class E>
void expect_error(const std::function<void()>& call, const std::string& needle,
                  const std::string& what) {
  try {
    call();
    check(false, what + " (no exception)");
  } catch (const E& error) {
    bool ok = std::string(error.what()).find(needle) != std::string::npos;
    check(ok, what + ": " + error.what());
  } catch (const std::exception& error) {
    check(false, what + " (wrong exception type: " + error.what() + ")");
  }
}

// A ContractError of one line that starts with `where` and holds `needle`.
void expect_refusal(const std::function<void()>& call, const std::string& where,
                    const std::string& needle, const std::string& what) {
  try {
    call();
    check(false, what + " (no exception)");
  } catch (const gradvis::ContractError& error) {
    std::string message = error.what();
    bool ok = message.find('\n') == std::string::npos && message.find(where) != std::string::npos &&
              message.find(needle) != std::string::npos;
    check(ok, what + ": " + message);
  } catch (const std::exception& error) {
    check(false, what + " (wrong exception type: " + error.what() + ")");
  }
}

at::Tensor zeros_like_spec(const gradvis::InputSpec& spec, int64_t batch) {
  std::vector<int64_t> shape = spec.shape;
  shape[0] = batch;
  return at::zeros(shape, at::TensorOptions().dtype(spec.dtype));
}

void check_single_input_errors(const gradvis::Explainer& explainer) {
  const gradvis::InputSpec& spec = explainer.spec().map_spec();
  at::Tensor x = zeros_like_spec(spec, 2);
  expect_error<gradvis::InputError>(
      [&] { explainer.run(at::zeros({2, 3}, at::TensorOptions().dtype(spec.dtype))); },
      "this artifact takes", "wrong input shape");
  expect_error<gradvis::InputError>([&] { explainer.run(x.to(at::kDouble)); }, "dtype",
                                    "wrong input dtype");
  expect_error<gradvis::InputError>(
      [&] { explainer.run(x, at::zeros({3}, at::TensorOptions().dtype(at::kLong))); }, "target",
      "wrong target shape");
  expect_error<gradvis::InputError>(
      [&] { explainer.run(x, std::map<std::string, at::Tensor>{{"mask2", at::zeros({2})}}); },
      "no input 'mask2'", "unknown input name");
  expect_error<gradvis::InputError>(
      [&] { explainer.run(x, std::map<std::string, at::Tensor>{{spec.name, x}}); },
      "is a data input", "a data input passed by name");
}

void check_multi_input_errors(const gradvis::Explainer& explainer) {
  const std::vector<gradvis::InputSpec> data = explainer.spec().data_inputs();
  std::vector<at::Tensor> good, uneven;
  for (std::size_t i = 0; i < data.size(); ++i) {
    good.push_back(zeros_like_spec(data[i], 2));
    uneven.push_back(zeros_like_spec(data[i], i == 0 ? 2 : 3));
  }
  expect_error<gradvis::InputError>([&] { explainer.run(good.back()); },
                                    "pass a vector of them in that order",
                                    "multi-input artifact through run(input)");
  expect_error<gradvis::InputError>(
      [&] { explainer.run(std::vector<at::Tensor>{good.front()}); }, "got a vector of 1",
      "too few data inputs");
  expect_error<gradvis::InputError>([&] { explainer.run(uneven); }, "batch sizes",
                                    "data inputs of different batch sizes");
  std::vector<at::Tensor> wrong = good;
  wrong.back() = wrong.back().narrow(1, 0, 1).contiguous();
  expect_error<gradvis::InputError>([&] { explainer.run(wrong); },
                                    "the input '" + data.back().name + "' has shape",
                                    "wrong shape of one data input");
}

void check_refusals(const std::vector<Refusal>& refusals) {
  for (const auto& refusal : refusals) {
    bool onnx = refusal.artifact.size() > 5 &&
                refusal.artifact.compare(refusal.artifact.size() - 5, 5, ".onnx") == 0;
    if (onnx && !gradvis::has_onnxruntime()) {
      std::cout << "skip   " << refusal.artifact << " (a build without ONNX Runtime)\n";
      continue;
    }
    std::string needle =
        refusal.field == "gradvis" ? "no gradvis contract" : "'" + refusal.field + "'";
    expect_refusal([&] { gradvis::Explainer explainer(refusal.artifact); }, refusal.artifact,
                   needle, "refuses " + refusal.artifact);
  }
}

std::string replaced(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  if (at == std::string::npos) throw std::logic_error("the test record has no " + from);
  return text.replace(at, from.size(), to);
}

// parse_contract on records written here: every field read, and refusals naming the field.
void check_parse_contract() {
  const std::string record =
      R"({"contract": 1, "gradvis_version": "0.2.0", "format": "onnx", "method": "gradcam", )"
      R"("layers": ["slow", "fast"], "target": {"type": "ClassTarget"}, "inputs": [)"
      R"({"name": "input_0", "role": "data", "dtype": "uint8", "shape": ["B", 4, 8, 6, 3], )"
      R"("layout": "BTHWC", "default": null, "doc": ""}, )"
      R"({"name": "input_1", "role": "data", "dtype": "float32", "shape": ["B", 3, 2, 8, 6], )"
      R"("layout": "BCTHW", "default": null, "doc": ""}, )"
      R"({"name": "target", "role": "target", "dtype": "int64", "shape": ["B"], )"
      R"("layout": null, "default": -1, "doc": "class per sample"}], )"
      R"("outputs": [{"name": "logits", "dtype": "float32", "shape": ["B", 3], "meaning": "m"}, )"
      R"({"name": "heatmap", "dtype": "float16", "shape": ["B", 4, 8, 6], "meaning": ""}], )"
      R"("map_input": "input_0", "preprocess": {"in_graph": true, "mean": [0.45, 0.5, 1], )"
      R"("std": [0.25, 0.25, 0.25], "overlay_alpha": 0.5}, "class_names": ["a", "b", "c"], )"
      R"("num_classes": 3, "precision": "fp16", "profile": "onnxruntime-cpu", )"
      R"("options": {"normalize": true}, "extra": {"k": [1, 2.5e-07, "\u00e9"]}})";
  gradvis::ArtifactSpec spec = gradvis::parse_contract(record, "a.onnx");
  const auto& in = spec.inputs;
  check(spec.contract == 1 && spec.gradvis_version == "0.2.0" && spec.format == "onnx" &&
            spec.method == "gradcam" && spec.layers == std::vector<std::string>{"slow", "fast"} &&
            spec.target_type == "ClassTarget" && spec.target_json == R"({"type": "ClassTarget"})" &&
            spec.json == record,
        "parse_contract: the record's fields");
  check(in.size() == 3 && in[0].name == "input_0" && in[0].role == "data" &&
            in[0].dtype == at::kByte && in[0].dtype_name == "uint8" &&
            in[0].shape == std::vector<int64_t>{-1, 4, 8, 6, 3} && in[0].layout == "BTHWC" &&
            in[0].uint8() && in[0].is_video() && in[0].clip_len() == 4 &&
            in[0].frame_size() == std::make_pair(int64_t{8}, int64_t{6}) && !in[0].has_default &&
            in[1].clip_len() == 2 && in[1].frame_size() == std::make_pair(int64_t{8}, int64_t{6}) &&
            !in[1].uint8() && in[2].role == "target" && in[2].dtype == at::kLong &&
            in[2].layout.empty() && in[2].has_default && in[2].default_value == -1 &&
            in[2].doc == "class per sample" && !in[2].clip_len() && !in[2].frame_size(),
        "parse_contract: the inputs");
  check(spec.outputs.size() == 2 && spec.outputs[1].name == "heatmap" &&
            spec.outputs[1].dtype == at::kHalf &&
            spec.outputs[1].shape == std::vector<int64_t>{-1, 4, 8, 6} &&
            spec.outputs[0].meaning == "m" &&
            spec.output_names() == std::vector<std::string>{"logits", "heatmap"},
        "parse_contract: the outputs");
  check(spec.map_input == "input_0" && spec.map_spec().name == "input_0" &&
            spec.layout() == "BTHWC" && spec.uint8() && spec.is_video() && spec.clip_len() == 4 &&
            spec.data_inputs().size() == 2 && spec.target_inputs().size() == 1 &&
            spec.target_inputs().front().name == "target",
        "parse_contract: the map input and the helpers");
  check(spec.preprocess.in_graph && spec.preprocess.mean == std::vector<double>{0.45, 0.5, 1} &&
            spec.preprocess.std == std::vector<double>{0.25, 0.25, 0.25} &&
            spec.preprocess.overlay_alpha == 0.5 &&
            spec.class_names == std::vector<std::string>{"a", "b", "c"} &&
            spec.num_classes == 3 && spec.precision == "fp16" &&
            spec.profile == "onnxruntime-cpu" && spec.options_json == R"({"normalize": true})" &&
            spec.extra_json == R"({"k": [1, 2.5e-07, "\u00e9"]})",
        "parse_contract: preprocessing, classes, precision, options, extra");
  expect_error<gradvis::InputError>([&] { spec.input("mask"); },
                                    "no input 'mask'; its inputs are input_0, input_1, target",
                                    "ArtifactSpec::input of an unknown name");

  auto refuses = [](const std::string& text, const std::string& needle, const std::string& what) {
    expect_refusal([&] { gradvis::parse_contract(text, "a.onnx"); }, "a.onnx: ", needle,
                   "parse_contract refuses " + what);
  };
  refuses(replaced(record, R"("contract": 1)", R"("contract": 2)"),
          "a.onnx: the artifact's contract version 2 (field 'contract') is newer than this "
          "runtime's (1): upgrade gradvis_runtime",
          "a newer contract");
  refuses(replaced(record, R"("contract": 1, )", ""),
          "exported by gradvis 0.2.0, before artifact contracts (no field 'contract')",
          "a record without a contract version");
  refuses(replaced(record, R"("method": "gradcam", )", ""),
          "a.onnx: the gradvis contract's field 'method' is missing; export the artifact again "
          "with gradvis_export",
          "a missing field");
  refuses(replaced(record, R"("dtype": "uint8")", R"("dtype": "float33")"),
          "field 'inputs[0].dtype' is 'float33', not one of float32, float16, float64, int64, "
          "int32, uint8, bool",
          "a bad dtype");
  refuses(replaced(record, R"("shape": ["B", 3])", R"("shape": [3, 3])"),
          "field 'outputs[0].shape[0]' is 3, not 'B' (the batch)", "a shape without the batch");
  refuses(replaced(record, R"("layout": "BCTHW")", R"("layout": "BCHW")"),
          "field 'inputs[1].shape' has rank 5, but layout BCHW is rank 4",
          "a layout of another rank");
  refuses(replaced(record, R"("num_classes": 3)", R"("num_classes": true)"),
          "field 'num_classes' is True, not an integer", "a boolean count");
  refuses(replaced(record, R"("map_input": "input_0")", R"("map_input": "target")"),
          "field 'map_input' is 'target', not a data input (input_0, input_1)",
          "a map input that is no data input");
  refuses("{", "a.onnx: the gradvis contract is not valid JSON (", "a damaged record");
  refuses(" ", "a.onnx: the artifact has no gradvis contract (no 'gradvis' record)",
          "an empty record");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: gradvis_test FIXTURE_DIR [MANIFEST]\n";
    return 2;
  }
  Manifest manifest;
  try {
    manifest = read_manifest(argv[1], argc > 2 ? argv[2] : "manifest.txt");
  } catch (const std::exception& error) {
    std::cerr << error.what() << "\n";
    return 1;
  }
  const std::vector<Case>& cases = manifest.cases;
  std::map<std::string, std::shared_ptr<gradvis::Explainer>> explainers;
  for (const auto& c : cases) {
    if (!explainers.count(c.artifact))
      explainers[c.artifact] = std::make_shared<gradvis::Explainer>(c.artifact);
    const gradvis::Explainer& explainer = *explainers[c.artifact];
    int64_t batch = c.inputs.at(explainer.spec().map_input).size(0);
    std::vector<Call> calls{Call::Vector, Call::Positional};
    if (explainer.spec().data_inputs().size() == 1) calls.push_back(Call::Single);
    for (Call call : calls) {
      std::string detail;
      bool ok = matches(explainer, c, call, &detail);
      check(ok, c.artifact + " batch " + std::to_string(batch) + " " + call_name(call) +
                    " vs eager:" + detail);
    }
  }

  // 8 threads, one explainer per artifact, each thread running every case of it 5 times
  for (const auto& [path, explainer] : explainers) {
    std::atomic<int> wrong{0}, runs{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t)
      threads.emplace_back([&, t] {
        for (int r = 0; r < 5; ++r)
          for (std::size_t i = 0; i < cases.size(); ++i) {
            const Case& c = cases[(i + t) % cases.size()];
            if (c.artifact != path) continue;
            std::string detail;
            try {
              if (!matches(*explainer, c, Call::Vector, &detail)) ++wrong;
            } catch (const std::exception&) {
              ++wrong;
            }
            ++runs;
          }
      });
    for (auto& thread : threads) thread.join();
    check(wrong == 0 && runs > 0, path + ": 8 threads, " + std::to_string(runs.load()) +
                                      " concurrent runs, " + std::to_string(wrong.load()) +
                                      " wrong");
  }

  // errors name the problem
  expect_error<gradvis::FileError>([] { gradvis::Explainer("/nonexistent/model.pt2"); },
                                   "no artifact at", "missing file");
  bool single = false, multi = false;
  for (const auto& [path, explainer] : explainers) {
    bool several = explainer->spec().data_inputs().size() > 1;
    if (several && !multi) check_multi_input_errors(*explainer);
    if (!several && !single) check_single_input_errors(*explainer);
    (several ? multi : single) = true;
  }
  check_refusals(manifest.refusals);
  check_parse_contract();

  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 && passed > 0 ? 0 : 1;
}
