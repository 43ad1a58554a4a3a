"""profile="tensorrt": the ONNX graph passes the TensorRT 10 operator check (MaxPool without
Indices, no scatter) and still matches eager autograd, ties in max-pool windows included."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import make_input, mixed_relu_net

import gradvis_export as gv
from gradvis_export.exporter.tensorrt import TENSORRT10_OPS, tensorrt_problems

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def run(path: Path, x: torch.Tensor, target: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy(), "target": target.numpy()})


def assert_matches_eager(explainer, path: Path, shape, integer: bool = False) -> None:
    for batch, seed in ((1, 5), (3, 6)):
        x = make_input((batch, *shape[1:]), seed=seed)
        if integer:  # many ties inside each pooling window
            x = x.round().clamp(0, 2)
        target = torch.tensor([i % 2 - 1 for i in range(batch)])
        want = explainer(x, target)
        for got, w, name in zip(run(path, x, target), want, want._fields):
            w = w.numpy()
            atol = 1e-4 * float(np.abs(w).max()) + 1e-6
            np.testing.assert_allclose(got, w, rtol=1e-4, atol=atol, err_msg=name)


def check_graph(path: Path) -> None:
    model = onnx.load(str(path))
    assert tensorrt_problems(model) == []
    ops = {n.op_type for n in model.graph.node}
    assert ops <= TENSORRT10_OPS
    assert not ops & {"ScatterND", "ScatterElements", "Scatter"}
    assert all(len(n.output) == 1 for n in model.graph.node if n.op_type == "MaxPool")


def test_guided_backprop_through_max_pool_2d(tmp_path):
    spec = mixed_relu_net()
    explainer = gv.GuidedBackprop(spec.model)
    x = make_input(spec.input_shape)
    plain = gv.export(explainer, x, tmp_path / "plain.onnx", check=False)
    # the check sees what the default export has: MaxPool's Indices feeding a scatter
    problems = tensorrt_problems(onnx.load(str(plain)))
    assert any("Indices" in p for p in problems), problems
    path = gv.export(explainer, x, tmp_path / "trt.onnx", profile="tensorrt")
    check_graph(path)
    meta = onnx.load(str(path)).metadata_props
    assert '"profile": "tensorrt"' in next(p.value for p in meta if p.key == "gradvis")
    assert_matches_eager(explainer, path, spec.input_shape)


class Pool3d(nn.Module):
    """A small video net with the pytorchvideo ResNet stem's pooling (kernel 1x3x3, stride
    1x2x2, padding 0x1x1) between two ReLU convolutions."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv3d(3, 6, 3, padding=1)
        self.pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.conv2 = nn.Conv3d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        return self.fc(torch.relu(self.conv2(x)).mean((2, 3, 4)))


def test_max_pool_3d(tmp_path):
    """3-D pooling: the rewritten graph against eager and against the default export's
    ScatterElements on fresh inputs."""
    explainer = gv.GuidedBackprop(Pool3d().eval())
    shape = (2, 3, 4, 15, 15)  # odd size: a trailing row no stride-2 window starts on
    x = make_input(shape)
    plain = gv.export(explainer, x, tmp_path / "plain.onnx", check=False)
    path = gv.export(explainer, x, tmp_path / "trt.onnx", profile="tensorrt")
    check_graph(path)
    assert_matches_eager(explainer, path, shape)
    for batch, seed in ((1, 7), (3, 8)):
        xs = make_input((batch, *shape[1:]), seed=seed)
        target = torch.full((batch,), -1)
        for got, want in zip(run(path, xs, target), run(plain, xs, target)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


class TiedPool(nn.Module):
    """Overlapping 3x3 / stride 2 / padding 1 max pool on integer-valued activations: windows
    with several equal maxima, where only the first (row-major) gets the gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.fc = nn.Linear(3 * 5 * 5, 4)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


def test_ties_go_to_the_first_maximum(tmp_path):
    torch.manual_seed(0)
    model = TiedPool().eval()
    explainer = gv.HiResCAM(model, "conv", normalize=False)  # G * A: position-sensitive
    x = make_input((2, 3, 9, 9)).round().clamp(0, 2)
    path = gv.export(explainer, x, tmp_path / "tied.onnx", profile="tensorrt")
    check_graph(path)
    assert_matches_eager(explainer, path, (2, 3, 9, 9), integer=True)


def test_profile_errors(tmp_path):
    spec = mixed_relu_net()
    explainer = gv.GradCAM(spec.model, spec.target_layer)
    x = make_input(spec.input_shape)
    with pytest.raises(ValueError, match="applies to ONNX"):
        gv.export(explainer, x, tmp_path / "a.pt", profile="tensorrt")
    with pytest.raises(ValueError, match="unknown profile"):
        gv.export(explainer, x, tmp_path / "a.onnx", profile="coreml")
    assert not list(tmp_path.iterdir())
