#include <gradvis/gradvis.h>

#include <ATen/ops/randn.h>
#include <ATen/ops/tensor.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  try {
    gradvis::Explainer explainer(argv[1]);  // a .pt or .pt2 (or .onnx) from gv.export
    std::vector<int64_t> shape = explainer.spec().map_spec().shape;  // {-1, 3, H, W} for BCHW
    shape[0] = 2;  // any batch size
    at::Tensor x = at::randn(shape);
    at::Tensor target = at::tensor({int64_t{3}, int64_t{-1}});  // class 3; argmax
    gradvis::Outputs out = explainer.run(x, target);
    std::cout << out["logits"].sizes() << " " << out["heatmap"].sizes() << "\n";
  } catch (const gradvis::Error& error) {  // missing file, wrong shape or dtype, ...
    std::cerr << error.what() << "\n";
    return 1;
  }
}
