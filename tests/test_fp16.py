"""`gv.export(..., precision="fp16")`: float16 weights and activations inside the artifact, a
float32 interface outside, and the error against fp32 recorded in the contract.

Two seeded random nets with Grad-CAM: MixedReLUNet (2-D, 3x32x32, tests/models.py) and a small
3-D CNN defined here (3x4x32x32; AvgPool3d, which has no float16 CPU kernel in torch, and SiLU),
each exported once per format (ONNX, TorchScript, AOTInductor) from a batch-2 example.  The
references are eager fp32: Grad-CAM written here with autograd, and the explainer itself.
"""

from __future__ import annotations

import atexit
import functools
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import make_input, mixed_relu_net

import gradvis_export as gv
import gradvis_runtime
from gradvis_export.exporter import api, guard
from gradvis_export.exporter import precision as fp16

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

FORMATS = ["onnx", "torchscript", "aoti"]
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "aoti": ".pt2"}
SHAPES = {"net2d": (2, 3, 32, 32), "net3d": (2, 3, 4, 32, 32)}
CLASSES = {"net2d": 7, "net3d": 5}
# The test's half-precision tolerance against fp32 (the guard's own, FP16_TOLERANCE, is looser:
# it must pass any model that survives float16 and refuse broken ones).  Heatmaps are in [0, 1].
HEATMAP_MAX_ABS, HEATMAP_REL_L2 = 0.05, 0.02
LOGITS_REL = 5e-3  # max abs diff / largest |logit|


class TinyVideoNet(nn.Module):
    """Conv3d-BN-ReLU, AvgPool3d (1,2,2), Conv3d-BN-SiLU (`block`, (B,16,4,8,8)), mean, Linear."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU())
        self.pool = nn.AvgPool3d((1, 2, 2))
        self.block = nn.Sequential(
            nn.Conv3d(8, 16, 3, stride=(1, 2, 2), padding=1), nn.BatchNorm3d(16), nn.SiLU()
        )
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.pool(self.stem(x))).mean(dim=(2, 3, 4)))


def tiny_video_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyVideoNet(CLASSES["net3d"])
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.8 + 0.6)
    return model.eval()


@functools.cache
def model(case: str) -> nn.Module:
    return mixed_relu_net().model if case == "net2d" else tiny_video_net()


@functools.cache
def explainer(case: str) -> gv.GradCAM:
    return gv.GradCAM(model(case), "block")


@functools.cache
def folder() -> Path:
    path = Path(tempfile.mkdtemp(prefix="gradvis-fp16-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def example(case: str) -> torch.Tensor:
    return make_input(SHAPES[case], seed=0)


@functools.cache
def artifact(case: str, fmt: str, precision: str = "fp16") -> Path:
    """Exported (and guarded by gv.export) once per test session."""
    path = folder() / f"{case}_{precision}{SUFFIX[fmt]}"
    gv.export(explainer(case), example(case), path, format=fmt, precision=precision)
    return path


def load(path: Path) -> gradvis_runtime.Explainer:
    return gradvis_runtime.load(path, threads=2)


def reference_gradcam(case: str, x: torch.Tensor, target: torch.Tensor):
    """Grad-CAM by hand: autograd on the fp32 model, a forward hook on `block`."""
    net = model(case)
    seen = {}
    hook = net.block.register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
    try:
        logits = net(x)
    finally:
        hook.remove()
    classes = torch.where(target < 0, logits.argmax(dim=1), target)
    score = logits.gather(1, classes[:, None]).sum()
    (grad,) = torch.autograd.grad(score, seen["a"])
    act = seen["a"].detach()
    spatial = tuple(range(2, act.dim()))
    cam = torch.relu((grad.mean(dim=spatial, keepdim=True) * act).sum(dim=1, keepdim=True))
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    cam = F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)[:, 0]
    flat = cam.flatten(1)
    low, high = flat.amin(dim=1), flat.amax(dim=1)
    shape = (-1,) + (1,) * (cam.dim() - 1)
    span = (high - low).view(shape)
    cam = torch.where(span > 0, (cam - low.view(shape)) / span.clamp_min(1e-30), 0.0)
    return logits.detach().numpy(), cam.numpy()


def fresh(case: str, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An input that is neither the example nor one of the guard's, with explicit classes and
    one -1 (argmax) per batch."""
    x = make_input((batch, *SHAPES[case][1:]), seed=seed).numpy()
    target = np.array([(seed + i) % CLASSES[case] for i in range(batch)], np.int64)
    target[-1] = -1
    return x, target


def relative_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(SHAPES))
def test_fp16_artifact_matches_fp32(case, fmt):
    rt = load(artifact(case, fmt))
    assert rt.spec.precision == "fp16"
    for batch, seed in ((1, 31), (3, 32)):
        x, target = fresh(case, batch, seed)
        ref_logits, ref_heatmap = reference_gradcam(case, torch.from_numpy(x), torch.tensor(target))
        top = np.sort(ref_logits, axis=1)[:, -2:]
        # the -1 sample is not a near tie (else float16 could explain another class)
        assert top[-1, 1] - top[-1, 0] > 0.01 * np.abs(ref_logits[-1]).max()
        eager = explainer(case)(torch.from_numpy(x), torch.from_numpy(target))
        # the fp32 eager explainer is the hand-written Grad-CAM
        np.testing.assert_allclose(eager.heatmap.detach().numpy(), ref_heatmap, atol=1e-5)
        out = rt.run(x, target)
        # the interface stayed float32 in, float32 out
        assert out["logits"].dtype == np.float32 and out["heatmap"].dtype == np.float32
        assert out["heatmap"].shape == ref_heatmap.shape
        label = f"{case} {fmt} batch {batch}"
        assert np.isfinite(out["heatmap"]).all(), label
        heat = np.abs(out["heatmap"] - ref_heatmap).max()
        assert heat <= HEATMAP_MAX_ABS, f"{label}: heatmap max abs diff {heat}"
        assert relative_l2(out["heatmap"], ref_heatmap) <= HEATMAP_REL_L2, label
        logits = np.abs(out["logits"] - ref_logits).max() / np.abs(ref_logits).max()
        assert logits <= LOGITS_REL, f"{label}: logits relative diff {logits}"
        # not bit-identical to fp32: the arithmetic really is half precision somewhere
        assert heat > 0 or np.abs(out["logits"] - ref_logits).max() > 0


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(SHAPES))
def test_reported_error_is_the_measured_error(case, fmt):
    """The contract's fp16_error, recomputed here on the guard's inputs (gv's guard_samples)
    against the fp32 eager explainer with the artifact loaded by gradvis_runtime."""
    rt = load(artifact(case, fmt))
    reported = rt.spec.extra["fp16_error"]
    assert reported["reference"] == "fp32 eager explainer"
    assert reported["samples"] == 4
    assert reported["tolerance"] == fp16.FP16_TOLERANCE
    got, want = {"logits": [], "heatmap": []}, {"logits": [], "heatmap": []}
    for x, inputs in guard.guard_samples(explainer(case), example(case), "fp16"):
        out = rt.run(x.numpy(), inputs["target"].numpy())
        eager = explainer(case)(x, **inputs)
        for name in got:
            got[name].append(out[name].ravel())
            want[name].append(getattr(eager, name).detach().numpy().ravel())
    for name in got:
        g, w = np.concatenate(got[name]), np.concatenate(want[name])
        max_abs = float(np.abs(g - w).max())
        mine = {
            "max_abs": max_abs,
            "max_rel": max_abs / float(np.abs(w).max()),
            "rel_l2": relative_l2(g, w),
        }
        for key, value in mine.items():
            # same inputs, same artifact; only thread scheduling may differ from the export's run
            assert reported[name][key] == pytest.approx(value, rel=1e-2, abs=1e-6), (
                f"{case} {fmt} {name} {key}: reported {reported[name][key]}, measured {value}"
            )
            assert value <= fp16.FP16_TOLERANCE.get(key, np.inf)
    if fmt == "onnx":  # onnxruntime's CPU provider upcasts; the float16 arithmetic is reported
        half = reported["half_arithmetic"]
        assert "float16" in reported["note"]
        for name in ("logits", "heatmap"):
            assert half[name]["rel_l2"] <= fp16.FP16_TOLERANCE["rel_l2"]
            assert half[name]["rel_l2"] > 0


@pytest.mark.parametrize("case", list(SHAPES))
def test_weights_are_half(case):
    # ONNX: the float initializers are float16, half the bytes of the fp32 artifact's
    def float_bytes(path: Path) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for init in onnx.load(str(path)).graph.initializer:
            size = onnx.numpy_helper.to_array(init).nbytes
            sizes[init.data_type] = sizes.get(init.data_type, 0) + size
        return sizes

    half, full = float_bytes(artifact(case, "onnx")), float_bytes(artifact(case, "onnx", "fp32"))
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert half.get(f32, 0) < 0.01 * full[f32]  # a few scalars at most
    assert half[f16] == pytest.approx(full[f32] / 2, rel=0.05)
    inputs = {
        i.name: i.type.tensor_type.elem_type for i in onnx.load(artifact(case, "onnx")).graph.input
    }
    outputs = {
        o.name: o.type.tensor_type.elem_type for o in onnx.load(artifact(case, "onnx")).graph.output
    }
    assert inputs == {"input": f32, "target": onnx.TensorProto.INT64}
    assert outputs == {"logits": f32, "heatmap": f32}

    # TorchScript: every floating tensor the module holds is float16
    module = torch.jit.load(str(artifact(case, "torchscript")))
    held = [t for _, t in module.named_buffers() if t.is_floating_point()]
    assert held and {t.dtype for t in held} == {torch.float16}

    # AOTInductor: the package's constants are declared float16
    with zipfile.ZipFile(artifact(case, "aoti")) as package:
        (wrapper,) = [n for n in package.namelist() if n.endswith("wrapper.cpp")]
        code = package.read(wrapper).decode()
    dtypes = re.findall(r"constants_info_\[\d+\]\.dtype = cached_torch_dtype_(\w+);", code)
    assert dtypes and set(dtypes) == {"float16"}

    for fmt in FORMATS:
        spec = load(artifact(case, fmt)).spec
        assert spec.input("input").dtype == "float32" and spec.input("target").dtype == "int64"


@pytest.mark.parametrize("bad", ["fp8", "FP16", "half", 16, None, torch.float16])
def test_bad_precision_is_a_value_error(bad, tmp_path):
    with pytest.raises(ValueError, match="precision .*'fp32'.*'fp16'"):
        gv.export(explainer("net2d"), example("net2d"), tmp_path / "a.onnx", precision=bad)
    assert not list(tmp_path.iterdir())


def test_guard_refuses_a_broken_fp16_artifact(monkeypatch, tmp_path):
    """A float16 graph whose heatmap turned NaN (or constant) is refused; no file appears."""
    real = api.half_precision

    def broken(nan: bool):
        def convert(gm, args):
            half = real(gm, args)
            out = next(n for n in half.graph.nodes if n.op == "output")
            logits, heatmap = out.args[0]
            aten = torch.ops.aten
            with half.graph.inserting_before(out):
                spoiled = half.graph.call_function(aten.mul.Tensor, (heatmap, 0.0))
                if nan:  # 0 / 0
                    spoiled = half.graph.call_function(aten.div.Tensor, (spoiled, spoiled))
            out.args = ((logits, spoiled),)
            half.recompile()
            return half

        return convert

    for nan, message in ((True, "not finite"), (False, "constant for sample")):
        monkeypatch.setattr(api, "half_precision", broken(nan))
        path = tmp_path / "broken.pt"
        with pytest.raises(gv.ExportError, match=message):
            gv.export(explainer("net2d"), example("net2d"), path, precision="fp16")
        assert not list(tmp_path.iterdir())


def test_guard_tolerance():
    want = np.linspace(0, 1, 64, dtype=np.float32).reshape(2, 32)
    assert fp16.check_fp16("x", "heatmap", want + 1e-3, want, 2)["max_abs"] < 2e-3
    with pytest.raises(gv.ExportError, match="half-precision tolerance"):
        fp16.check_fp16("x", "heatmap", want[::-1].copy(), want, 2)


def test_check_false_records_no_error(tmp_path):
    path = gv.export(
        explainer("net2d"), example("net2d"), tmp_path / "a.pt", precision="fp16", check=False
    )
    spec = load(path).spec
    assert spec.precision == "fp16" and spec.extra["fp16_error"] is None


def test_tensorrt_profile_in_fp16(tmp_path):
    """Guided backprop through a max-pool: the TensorRT profile's rewrite of its backward gets
    float16 constants where it meets float16 tensors, and the graph runs in onnxruntime."""
    guided = gv.GuidedBackprop(model("net2d"))
    path = gv.export(
        guided, example("net2d"), tmp_path / "g.onnx", profile="tensorrt", precision="fp16"
    )
    graph = onnx.load(str(path)).graph
    assert not [n for n in graph.node if n.op_type == "ScatterElements"]
    rewritten = {i.data_type for i in graph.initializer if i.name.startswith("gv_trt")}
    assert onnx.TensorProto.FLOAT16 in rewritten
    spec = load(path).spec
    assert spec.profile == "tensorrt" and spec.precision == "fp16"
    assert spec.extra["fp16_error"]["heatmap"]["rel_l2"] <= fp16.FP16_TOLERANCE["rel_l2"]
