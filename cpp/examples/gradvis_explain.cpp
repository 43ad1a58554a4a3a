// gradvis_explain: explain raw frames with an exported artifact and write the heatmaps.
//
//   gradvis_explain ARTIFACT FRAMES.raw HEATMAPS.raw [--target N] [--threads N]
//
// FRAMES.raw holds the input's bytes, C order, in the artifact's dtype and layout (e.g. float32
// (B, 3, T, H, W), or uint8 (B, T, H, W, 3) for an artifact with in-graph preprocessing); B
// follows from the file size.  HEATMAPS.raw receives the float32 heatmaps (B, [T,] H, W); the
// program prints each sample's predicted class and the heatmap's shape.
#include <gradvis/gradvis.h>

#include <ATen/ops/argmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/full.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

int usage() {
  std::cerr << "usage: gradvis_explain ARTIFACT FRAMES.raw HEATMAPS.raw [--target N] "
               "[--threads N]\n";
  return 2;
}

at::Tensor read_frames(const std::string& path, const gradvis::InputSpec& spec) {
  std::ifstream file(path, std::ios::binary | std::ios::ate);
  if (!file) throw gradvis::FileError("no frame file at '" + path + "'");
  const auto bytes = static_cast<int64_t>(file.tellg());
  std::vector<int64_t> shape = spec.shape;
  int64_t per_sample = static_cast<int64_t>(c10::elementSize(spec.dtype));
  for (std::size_t i = 1; i < shape.size(); ++i) per_sample *= shape[i];
  if (bytes == 0 || bytes % per_sample != 0)
    throw gradvis::InputError("'" + path + "' has " + std::to_string(bytes) +
                              " bytes, not a whole number of samples of " +
                              std::to_string(per_sample) + " bytes (" +
                              c10::toString(spec.dtype) + ")");
  shape[0] = bytes / per_sample;
  at::Tensor frames = at::empty(shape, at::TensorOptions().dtype(spec.dtype));
  file.seekg(0);
  file.read(static_cast<char*>(frames.data_ptr()), bytes);
  return frames;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage();
  std::string artifact = argv[1], frames_path = argv[2], out_path = argv[3];
  int64_t target = -1;
  gradvis::Options options;
  for (int i = 4; i < argc; i += 2) {
    std::string flag = argv[i];
    if (i + 1 >= argc) return usage();
    if (flag == "--target") {
      target = std::stoll(argv[i + 1]);
    } else if (flag == "--threads") {
      options.num_threads = std::stoi(argv[i + 1]);
    } else {
      return usage();
    }
  }
  try {
    gradvis::Explainer explainer(artifact, options);
    const auto& meta = explainer.metadata();
    at::Tensor frames = read_frames(frames_path, meta.inputs.front());
    at::Tensor targets = at::full({frames.size(0)}, target, at::TensorOptions().dtype(at::kLong));
    gradvis::Outputs out = explainer.run(frames, targets);
    at::Tensor heatmap = out["heatmap"].to(at::kFloat).contiguous();
    std::ofstream file(out_path + ".tmp", std::ios::binary);
    file.write(static_cast<const char*>(heatmap.data_ptr()),
               static_cast<std::streamsize>(heatmap.nbytes()));
    file.close();
    if (!file || std::rename((out_path + ".tmp").c_str(), out_path.c_str()) != 0)
      throw gradvis::Error("cannot write '" + out_path + "'");
    std::cout << meta.method << " heatmap " << heatmap.sizes() << " float32 -> " << out_path
              << "\n";
    if (meta.outputs.front() == "logits") {
      at::Tensor predicted = at::argmax(out["logits"], 1);
      for (int64_t i = 0; i < predicted.size(0); ++i)
        std::cout << "sample " << i << ": class " << predicted[i].item<int64_t>() << "\n";
    }
  } catch (const gradvis::Error& error) {
    std::cerr << "gradvis_explain: " << error.what() << "\n";
    return 2;
  }
  return 0;
}
