// CTest: gradvis::Explainer against eager PyTorch outputs written by tests/cpp_fixtures.py
// (TorchScript and AOTInductor artifacts, batch sizes other than the export's), the same runs
// from 8 threads on one explainer, and the error messages for bad input.  With a build on ONNX
// Runtime, the same on the ONNX artifacts (manifest_onnx.txt).
//
//   gradvis_test FIXTURE_DIR [MANIFEST]
//
// FIXTURE_DIR/MANIFEST (default manifest.txt), one line per item:
//   run ARTIFACT                        -- a new case on this artifact
//   input NAME FILE DTYPE D0 D1 ...     -- a graph input of the case (raw C-order bytes)
//   output NAME FILE D0 D1 ...          -- an expected float32 output
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
  std::vector<std::pair<std::string, at::Tensor>> inputs;
  std::vector<std::pair<std::string, at::Tensor>> outputs;
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

std::vector<Case> read_manifest(const std::string& dir, const std::string& name) {
  std::ifstream file(dir + "/" + name);
  if (!file) throw std::runtime_error("no " + dir + "/" + name + ": run tests/cpp_fixtures.py");
  std::vector<Case> cases;
  std::string line;
  while (std::getline(file, line)) {
    std::istringstream words(line);
    std::string kind, name, path, dtype;
    words >> kind;
    if (kind == "run") {
      Case c;
      words >> c.artifact;
      c.artifact = dir + "/" + c.artifact;
      cases.push_back(c);
      continue;
    }
    words >> name >> path;
    if (kind == "input") words >> dtype;
    std::vector<int64_t> shape;
    for (int64_t d; words >> d;) shape.push_back(d);
    if (kind == "input") {
      auto type = dtype == "int64" ? at::kLong : dtype == "uint8" ? at::kByte : at::kFloat;
      cases.back().inputs.emplace_back(name, read_raw(dir + "/" + path, type, shape));
    } else if (kind == "output") {
      cases.back().outputs.emplace_back(name, read_raw(dir + "/" + path, at::kFloat, shape));
    }
  }
  return cases;
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

bool matches(const gradvis::Explainer& explainer, const Case& c, std::string* detail) {
  std::map<std::string, at::Tensor> extra;
  for (std::size_t i = 1; i < c.inputs.size(); ++i) extra[c.inputs[i].first] = c.inputs[i].second;
  gradvis::Outputs out = explainer.run(c.inputs.front().second, extra);
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

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: gradvis_test FIXTURE_DIR [MANIFEST]\n";
    return 2;
  }
  std::vector<Case> cases;
  try {
    cases = read_manifest(argv[1], argc > 2 ? argv[2] : "manifest.txt");
  } catch (const std::exception& error) {
    std::cerr << error.what() << "\n";
    return 1;
  }
  std::map<std::string, std::shared_ptr<gradvis::Explainer>> explainers;
  for (const auto& c : cases) {
    if (!explainers.count(c.artifact))
      explainers[c.artifact] = std::make_shared<gradvis::Explainer>(c.artifact);
    std::string detail;
    bool ok = matches(*explainers[c.artifact], c, &detail);
    check(ok, c.artifact + " batch " + std::to_string(c.inputs.front().second.size(0)) +
                  " vs eager:" + detail);
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
              if (!matches(*explainer, c, &detail)) ++wrong;
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
  const auto& first = *explainers.begin()->second;
  const auto& spec = first.metadata().inputs.front();
  std::vector<int64_t> shape = spec.shape;
  shape[0] = 2;
  expect_error<gradvis::FileError>([] { gradvis::Explainer("/nonexistent/model.pt2"); },
                                   "no artifact at", "missing file");
  expect_error<gradvis::InputError>(
      [&] { first.run(at::zeros({2, 3}, at::TensorOptions().dtype(spec.dtype))); },
      "this artifact takes", "wrong input shape");
  expect_error<gradvis::InputError>(
      [&] { first.run(at::zeros(shape, at::TensorOptions().dtype(at::kDouble))); }, "dtype",
      "wrong input dtype");
  expect_error<gradvis::InputError>(
      [&] {
        first.run(at::zeros(shape, at::TensorOptions().dtype(spec.dtype)),
                  at::zeros({3}, at::TensorOptions().dtype(at::kLong)));
      },
      "target", "wrong target shape");
  expect_error<gradvis::InputError>(
      [&] {
        first.run(at::zeros(shape, at::TensorOptions().dtype(spec.dtype)),
                  std::map<std::string, at::Tensor>{{"mask2", at::zeros({2})}});
      },
      "no input 'mask2'", "unknown input name");

  std::cout << passed << " passed, " << failed << " failed\n";
  return failed == 0 && passed > 0 ? 0 : 1;
}
