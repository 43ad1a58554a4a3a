"""profile="onnxruntime-cpu": depthwise 3-D convolutions on small frames become per-tap depthwise
2-D ones; the rewrite equals torch's conv3d, and the artifact equals eager."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradvis_export as gv
import gradvis_runtime
from gradvis_export.exporter.ort_cpu import (
    MAX_PIXELS,
    depthwise_conv3d_by_frames,
    split_depthwise_conv3d,
)
from gradvis_export.exporter.passes import GRAPH_PASSES, run_passes
from gradvis_export.exporter.trace import trace

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


@pytest.mark.parametrize(
    "kernel, stride, padding",
    [
        ((3, 3, 3), (1, 1, 1), (1, 1, 1)),
        ((3, 3, 3), (1, 2, 2), (1, 1, 1)),
        ((3, 3, 3), (2, 1, 1), (1, 1, 1)),
        ((5, 1, 1), (1, 1, 1), (2, 0, 0)),  # X3D's temporal stem convolution
        ((3, 3, 3), (1, 1, 1), (0, 0, 0)),
        ((2, 3, 1), (1, 1, 2), (0, 1, 0)),
    ],
)
def test_by_frames_equals_conv3d(kernel, stride, padding):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 7, 9, 8, generator=gen)
    weight = torch.randn(6, 1, *kernel, generator=gen)
    bias = torch.randn(6, generator=gen)
    want = F.conv3d(x, weight, bias, stride, padding, 1, 6)
    got = depthwise_conv3d_by_frames(x, weight, bias, list(stride), list(padding))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


class VideoNet(nn.Module):
    """X3D's pattern: pointwise, depthwise 3x3x3 (small and large frames), pointwise, head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 8, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.big = nn.Conv3d(8, 8, 3, padding=1, groups=8)  # 40x40 frames: kept
        self.down = nn.Conv3d(8, 16, 1, stride=(1, 4, 4))
        self.small = nn.Conv3d(16, 16, 3, padding=1, groups=16)  # 10x10 frames: split
        self.act = nn.SiLU()
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.big(self.act(self.stem(x))))
        x = self.act(self.small(self.act(self.down(x))))
        return self.head(x.mean(dim=(2, 3, 4)))


def video_net() -> nn.Module:
    torch.manual_seed(0)
    return VideoNet().eval()


def depthwise_convs(model: onnx.ModelProto) -> list[int]:
    """The rank of each depthwise Conv's weight (5 = 3-D, 4 = 2-D)."""
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    ranks = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1 and node.input[1] in shapes:
            ranks.append(len(shapes[node.input[1]]))
    return ranks


def test_the_pass_splits_only_small_frames():
    assert 10 * 10 <= MAX_PIXELS < 40 * 40
    explainer = gv.EigenCAM(video_net(), "small")
    x = torch.randn(2, 3, 4, 80, 80)
    gm = run_passes(trace(explainer, x), GRAPH_PASSES)  # as gv.export does
    target = torch.tensor([-1, 2])
    before = [o.clone() for o in gm(x, target)]
    convs = [n for n in gm.graph.nodes if n.target is torch.ops.aten.convolution.default]
    split = split_depthwise_conv3d(gm)
    left = [n for n in split.graph.nodes if n.target is torch.ops.aten.convolution.default]
    assert len(convs) - len(left) == 1  # `small` (10x10), not `big` (40x40)
    for got, want in zip(split(x, target), before, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_profile_artifact_matches_eager(tmp_path, method):
    model = video_net()
    explainer = (gv.GradCAM if method == "gradcam" else gv.EigenCAM)(model, "small")
    example = torch.randn(2, 3, 4, 80, 80)
    path = gv.export(explainer, example, tmp_path / "cpu.onnx", profile="onnxruntime-cpu")
    plain = gv.export(explainer, example, tmp_path / "plain.onnx")
    assert 5 in depthwise_convs(onnx.load(str(plain)))
    ranks = depthwise_convs(onnx.load(str(path)))
    assert 4 in ranks and ranks.count(5) < depthwise_convs(onnx.load(str(plain))).count(5)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, seed in ((1, 3), (3, 4)):  # not the traced example's batch or values
        x = torch.randn(batch, 3, 4, 80, 80, generator=torch.Generator().manual_seed(seed))
        target = torch.tensor([-1, 1, 4][:batch])
        want = explainer(x, target)
        got = session.run(None, {"input": x.numpy(), "target": target.numpy()})
        for g, w, name in zip(got, want, want._fields):
            w = w.numpy()
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4 * np.abs(w).max(), err_msg=name)
    assert gradvis_runtime.load(path).spec.profile == "onnxruntime-cpu"


def test_profile_is_onnx_only(tmp_path):
    explainer = gv.GradCAM(video_net(), "small")
    with pytest.raises(ValueError, match="applies to ONNX"):
        gv.export(
            explainer, torch.randn(2, 3, 4, 80, 80), tmp_path / "a.pt", profile="onnxruntime-cpu"
        )
    assert not list(tmp_path.iterdir())


def test_cli_export_with_the_profile_matches_eager(tmp_path, capsys):
    """`gradvis export --profile onnxruntime-cpu` on X3D-XS (every depthwise conv on <= 16x16
    frames: all split) against the eager explainer of the same seeded model."""
    from gradvis_export.apps import cli, models

    out = tmp_path / "x3d.onnx"
    args = ["--model", "x3d_xs", "--num-classes", "3", "--size", "32", "--clip-len", "4"]
    code = cli.main(["export", *args, "--profile", "onnxruntime-cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert depthwise_convs(onnx.load(str(out))).count(5) == 0
    runtime = gradvis_runtime.load(out)
    assert runtime.spec.profile == "onnxruntime-cpu"
    eager = gv.GradCAM(models.build("x3d_xs", 3, 4, 32), "blocks.4")
    for batch in (1, 3):
        x = torch.randn(batch, 3, 4, 32, 32, generator=torch.Generator().manual_seed(batch))
        want = eager(x, torch.full((batch,), -1)).heatmap.numpy()
        got = runtime.run(x.numpy())["heatmap"]
        np.testing.assert_allclose(got, want, atol=1e-4)
