"""The C++ library through the pybind11 bridge: exceptions keep their messages, one explainer
serves 8 Python threads at once (GIL released), and 10 000 calls do not grow memory; the same
for the library's optional ONNX Runtime backend."""

from __future__ import annotations

import gc
import sys
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime_cases as rc

import gradvis_export as gv
import gradvis_runtime

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def test_cpp_exceptions_keep_their_message(tmp_path):
    from gradvis_runtime import _cpp

    with pytest.raises(FileNotFoundError, match="no artifact at '/nonexistent.pt'"):
        _cpp.Explainer("/nonexistent.pt")
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FileNotFoundError, match="cannot load .* as an AOTInductor package"):
        _cpp.Explainer(str(bad))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    if _cpp.has_onnxruntime:  # .ci/run builds it (tests/test_runtime_backends.py requires it)
        with pytest.raises(FileNotFoundError, match="cannot load .* as an ONNX model"):
            _cpp.Explainer(str(bad))
    else:
        with pytest.raises(RuntimeError, match="no ONNX Runtime backend.*-DONNXRUNTIME_ROOT"):
            _cpp.Explainer(str(bad))
    ex = _cpp.Explainer(str(rc.artifact("net2d", "torchscript")))
    x, target = rc.sample("net2d", 2, 0)
    with pytest.raises(ValueError, match=r"the input has dtype Double; this artifact takes Float"):
        ex.run([x.astype(np.float64), target])
    with pytest.raises(ValueError, match=r"has shape \(2, 3, 32, 31\); this artifact takes"):
        ex.run([x[..., :31], target])
    with pytest.raises(ValueError, match="'target' must hold integers"):
        ex.run([x, target.astype(np.float32)])
    with pytest.raises(ValueError, match="expected 2 inputs, got 1"):
        ex.run([x])
    # non-contiguous NumPy input is copied, not misread
    wide = np.ascontiguousarray(np.concatenate([x, x], axis=3))[..., ::2]
    got = ex.run([wide, target])
    want = rc.eager("net2d", np.ascontiguousarray(wide), target)
    np.testing.assert_allclose(got[1], want["heatmap"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "aoti", "onnx"])
def test_eight_threads_one_explainer(fmt):
    if fmt == "onnx":
        rc.require_cpp_onnx()
    rt = gradvis_runtime.load(rc.artifact("net2d", fmt), backend="cpp", threads=1)
    samples = [rc.sample("net2d", 1 + i % 3, 100 + i) for i in range(8)]
    wants = [rc.eager("net2d", x, t) for x, t in samples]
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        for _ in range(10):
            x, t = samples[i]
            try:
                rc.assert_close(rt.run(x, t), wants[i], f"thread {i}")
            except AssertionError as error:
                errors.append(str(error))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]


class Tiny(nn.Module):
    """A few-thousand-FLOP net so that 10 000 calls take seconds."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.mark.parametrize("suffix", [".pt", ".onnx"])
def test_ten_thousand_calls_do_not_grow_memory(tmp_path, suffix):
    """Also for ONNX Runtime's outputs, which the returned arrays own until they are freed."""
    if suffix == ".onnx":
        rc.require_cpp_onnx()
    model = Tiny().eval()
    x = torch.randn(2, 3, 8, 8)
    path = gv.export(gv.GradCAM(model, "conv"), x, tmp_path / f"tiny{suffix}")
    rt = gradvis_runtime.load(path, backend="cpp", threads=1)
    xs = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    process = psutil.Process()
    for _ in range(1000):  # warm up: allocator pools, the graph executor's plan
        rt.run(xs)
    gc.collect()
    before = process.memory_info().rss
    for _ in range(10_000):
        out = rt.run(xs)
    gc.collect()
    after = process.memory_info().rss
    assert out["heatmap"].shape == (1, 8, 8)
    assert after <= before * 1.05, f"RSS grew from {before / 2**20:.1f} to {after / 2**20:.1f} MiB"
