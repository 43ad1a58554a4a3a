// gradvis_explain: explain raw frames or a video file with an exported artifact and write the
// heatmaps.
//
//   gradvis_explain ARTIFACT FRAMES.raw HEATMAPS.raw [--target N] [--threads N]
//   gradvis_explain ARTIFACT VIDEO HEATMAPS.raw [--stride N] [--batch N] [--mean M --std S] ...
//
// The artifact has one data input.  FRAMES.raw (or .bin) holds its bytes, C order, in its
// dtype and layout (e.g. float32 (B, 3, T, H, W), or uint8 (B, T, H, W, 3) for an artifact with
// in-graph preprocessing); B follows from the file size.  Any other file is read as a video through
// OpenCV (when the program was built with it): frames resized to the artifact's size (area
// interpolation), cut into clips of the artifact's length, a new clip every --stride frames
// (default: the clip length), the last clip ending on the last frame (a video shorter than a
// clip repeats its last frame); an image artifact takes every frame.  uint8 artifacts get the
// frames as they are; float ones get (RGB / 255 - mean) / std, per channel (--mean / --std,
// default 0.45 / 0.225, pytorchvideo's).  Clips run --batch at a time (default 8).
// HEATMAPS.raw receives the float32 heatmaps (B, [T,] H, W); the program prints each sample's
// predicted class and the heatmap's shape.
#include <gradvis/gradvis.h>

#include <ATen/ops/argmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/full.h>
#include <ATen/ops/stack.h>
#include <ATen/ops/tensor.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#ifdef GRADVIS_WITH_OPENCV
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>
#endif

namespace {

int usage() {
  std::cerr << "usage: gradvis_explain ARTIFACT FRAMES.raw|VIDEO HEATMAPS.raw [--target N] "
               "[--threads N] [--stride N] [--batch N] [--mean M] [--std S]\n";
  return 2;
}

struct VideoOptions {
  int64_t stride = 0;  // 0: the clip length
  int64_t batch = 8;
  std::vector<double> mean{0.45, 0.45, 0.45}, std{0.225, 0.225, 0.225};
};

std::vector<double> channels(const std::string& text) {
  std::vector<double> values;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    values.push_back(std::stod(text.substr(start, comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (values.size() == 1) values.assign(3, values.front());
  if (values.size() != 3) throw gradvis::InputError("--mean / --std take 1 or 3 values");
  return values;
}

bool is_raw(const std::string& path) {
  auto dot = path.find_last_of('.');
  std::string suffix = dot == std::string::npos ? "" : path.substr(dot);
  return suffix == ".raw" || suffix == ".bin";
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

// (B, T, H, W, 3) uint8 RGB clips -> the artifact's input (its layout and dtype)
at::Tensor to_input(const at::Tensor& clips, const std::string& layout,
                    const VideoOptions& options) {
  bool image = layout == "BHWC" || layout == "BCHW";
  at::Tensor x = image ? clips.squeeze(1) : clips;
  if (layout == "BTHWC" || layout == "BHWC") return x.contiguous();
  at::Tensor mean = at::tensor(options.mean, at::kFloat), std = at::tensor(options.std, at::kFloat);
  x = x.to(at::kFloat).div(255.0).sub(mean).div(std);  // channels last: over (..., 3)
  return (image ? x.permute({0, 3, 1, 2}) : x.permute({0, 4, 1, 2, 3})).contiguous();
}

#ifdef GRADVIS_WITH_OPENCV
// Streams the video's frames (resized RGB, (H, W, 3) uint8) into clips of `length` frames and
// hands them to `run` in batches, with the first frame of each clip; memory stays at a batch.
int64_t read_video(const std::string& path, int64_t length, int64_t height, int64_t width,
                   const VideoOptions& options,
                   const std::function<void(const at::Tensor&, const std::vector<int64_t>&)>& run) {
  cv::VideoCapture capture(path);
  if (!capture.isOpened())
    throw gradvis::FileError("cannot open '" + path + "' as a video (OpenCV found no decoder " +
                             "for it, or the file is missing)");
  const int64_t stride = options.stride > 0 ? options.stride : length;
  std::vector<at::Tensor> frames;  // frames[i] is frame `first + i`
  std::vector<at::Tensor> clips;
  std::vector<int64_t> starts;
  int64_t first = 0, total = 0, next = 0, last_end = 0;
  auto emit = [&](int64_t start) {
    std::vector<at::Tensor> clip;
    for (int64_t t = start; t < start + length; ++t)
      clip.push_back(frames[std::min(t, total - 1) - first]);  // short video: repeat the last
    clips.push_back(at::stack(clip));
    starts.push_back(start);
    last_end = start + length;
    if (static_cast<int64_t>(clips.size()) == options.batch) {
      run(at::stack(clips), starts);
      clips.clear();
      starts.clear();
    }
  };
  cv::Mat bgr, rgb, sized;
  while (capture.read(bgr)) {
    cv::cvtColor(bgr, rgb, bgr.channels() == 1 ? cv::COLOR_GRAY2RGB : cv::COLOR_BGR2RGB);
    if (rgb.rows != height || rgb.cols != width)
      cv::resize(rgb, sized, cv::Size(static_cast<int>(width), static_cast<int>(height)), 0, 0,
                 cv::INTER_AREA);
    else
      sized = rgb;
    frames.push_back(at::from_blob(sized.data, {height, width, 3}, at::kByte).clone());
    ++total;
    while (next + length <= total) {
      emit(next);
      next += stride;
    }
    // keep the last `length` frames (the final clip may start before `next`)
    while (static_cast<int64_t>(frames.size()) > length && first < next) {
      frames.erase(frames.begin());
      ++first;
    }
  }
  if (total == 0) throw gradvis::InputError("'" + path + "' has no frames");
  if (last_end < total) emit(std::max<int64_t>(total - length, 0));
  if (!clips.empty()) run(at::stack(clips), starts);
  if (total < length)
    std::cout << "note: the video has " << total << " frames, fewer than a clip (" << length
              << "): its last frame is repeated\n";
  return total;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) return usage();
  std::string artifact = argv[1], frames_path = argv[2], out_path = argv[3];
  int64_t target = -1;
  gradvis::Options options;
  VideoOptions video;
  try {
    for (int i = 4; i < argc; i += 2) {
      std::string flag = argv[i];
      if (i + 1 >= argc) return usage();
      if (flag == "--target") {
        target = std::stoll(argv[i + 1]);
      } else if (flag == "--threads") {
        options.num_threads = std::stoi(argv[i + 1]);
      } else if (flag == "--stride") {
        video.stride = std::stoll(argv[i + 1]);
      } else if (flag == "--batch") {
        video.batch = std::max<int64_t>(1, std::stoll(argv[i + 1]));
      } else if (flag == "--mean") {
        video.mean = channels(argv[i + 1]);
      } else if (flag == "--std") {
        video.std = channels(argv[i + 1]);
      } else {
        return usage();
      }
    }
    gradvis::Explainer explainer(artifact, options);
    const gradvis::ArtifactSpec& spec = explainer.spec();
    if (spec.data_inputs().size() != 1)
      throw gradvis::InputError("gradvis_explain runs artifacts with one data input; '" +
                                artifact + "' takes " +
                                std::to_string(spec.data_inputs().size()) +
                                " (run it through gradvis::Explainer::run with a vector of them)");
    std::ofstream file(out_path + ".tmp", std::ios::binary);
    std::vector<int64_t> shape;  // of all the heatmaps written
    int64_t samples = 0;
    auto run = [&](const at::Tensor& input, const std::vector<int64_t>& starts) {
      at::Tensor targets =
          at::full({input.size(0)}, target, at::TensorOptions().dtype(at::kLong));
      gradvis::Outputs out = explainer.run(input, targets);
      at::Tensor heatmap = out["heatmap"].to(at::kFloat).contiguous();
      file.write(static_cast<const char*>(heatmap.data_ptr()),
                 static_cast<std::streamsize>(heatmap.nbytes()));
      shape = heatmap.sizes().vec();
      if (spec.outputs.front().name == "logits") {
        at::Tensor predicted = at::argmax(out["logits"], 1);
        for (int64_t i = 0; i < predicted.size(0); ++i) {
          std::cout << "sample " << samples + i;
          if (!starts.empty()) std::cout << " (from frame " << starts[i] << ")";
          std::cout << ": class " << predicted[i].item<int64_t>() << "\n";
        }
      }
      samples += input.size(0);
    };
    if (is_raw(frames_path)) {
      run(read_frames(frames_path, spec.map_spec()), {});
    } else {
#ifdef GRADVIS_WITH_OPENCV
      const auto frame = spec.frame_size();
      if (!frame)
        throw gradvis::InputError("videos need an artifact that takes frames (BCTHW, BTHWC, "
                                  "BCHW or BHWC); this one's input '" + spec.map_input +
                                  "' has no image layout");
      const int64_t length = spec.clip_len().value_or(1);
      if (length == 1) video.stride = 1;  // an image model explains every frame
      int64_t frames = read_video(frames_path, length, frame->first, frame->second, video,
                                  [&](const at::Tensor& clips, const std::vector<int64_t>& s) {
                                    run(to_input(clips, spec.layout(), video), s);
                                  });
      std::cout << frames << " frames -> " << samples << (length > 1 ? " clips" : " frames")
                << "\n";
#else
      throw gradvis::InputError("'" + frames_path + "' is not a raw frame file (.raw, .bin), and "
                                "this gradvis_explain was built without OpenCV, so it reads no "
                                "video: install OpenCV's C++ library (e.g. Debian's "
                                "libopencv-videoio-dev) and build it again");
#endif
    }
    file.close();
    if (!file || std::rename((out_path + ".tmp").c_str(), out_path.c_str()) != 0)
      throw gradvis::Error("cannot write '" + out_path + "'");
    shape[0] = samples;
    std::cout << spec.method << " heatmap " << c10::IntArrayRef(shape) << " float32 -> "
              << out_path << "\n";
  } catch (const gradvis::Error& error) {
    std::remove((out_path + ".tmp").c_str());
    std::cerr << "gradvis_explain: " << error.what() << "\n";
    return 2;
  } catch (const std::exception& error) {  // e.g. a flag's value that is not a number
    std::remove((out_path + ".tmp").c_str());
    std::cerr << "gradvis_explain: " << error.what() << "\n";
    return usage();
  }
  return 0;
}
