"""Artifacts shared by the runtime tests and the C++ test's fixtures (tests/cpp_fixtures.py).

Two cases: a 2-D net (MixedReLUNet, 3x32x32) and X3D-XS (random init, 3x4x64x64), both with
Grad-CAM; each exported once per format from a batch-2 example.  Exports go to
$GRADVIS_ARTIFACT_DIR when set (so .ci/run compiles the AOTInductor packages once for pytest and
CTest) or else to a temporary folder for this process.  The expected outputs always come from
the eager explainer, never from an artifact.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from models import make_input, mixed_relu_net, x3d

import gradvis_export as gv

CASES = {"net2d": mixed_relu_net, "x3d": x3d}
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "aoti": ".pt2"}
CLASS_NAMES = {"net2d": [f"class{i}" for i in range(7)], "x3d": ["a", "b", "c", "d", "e"]}


def require_cpp_option(available: bool, message: str) -> None:
    """The C++ build's optional parts (the ONNX Runtime backend, OpenCV video input in
    gradvis_explain) are built only when their SDKs are found: skip a test of a missing one,
    unless GRADVIS_REQUIRE_CPP_OPTIONS=1 (.ci/run sets it, and installs both), where its
    absence fails the test."""
    import pytest

    if available:
        return
    if os.environ.get("GRADVIS_REQUIRE_CPP_OPTIONS") == "1":
        pytest.fail(message)
    pytest.skip(message)


CPP_ONNX_MISSING = (
    "the C++ library was built without ONNX Runtime (python cpp/onnxruntime_sdk.py SDK, "
    "then reinstall with GRADVIS_ONNXRUNTIME_ROOT=SDK)"
)


def require_cpp_onnx() -> None:
    from gradvis_runtime import _cpp

    require_cpp_option(_cpp.has_onnxruntime, CPP_ONNX_MISSING)


def cpp_onnx_available() -> bool:
    """For tests that cover more than the optional backend: whether to include it (absent and
    required by GRADVIS_REQUIRE_CPP_OPTIONS=1: the test fails)."""
    from gradvis_runtime import _cpp

    if not _cpp.has_onnxruntime and os.environ.get("GRADVIS_REQUIRE_CPP_OPTIONS") == "1":
        import pytest

        pytest.fail(CPP_ONNX_MISSING)
    return bool(_cpp.has_onnxruntime)


@functools.cache
def artifact_dir() -> Path:
    given = os.environ.get("GRADVIS_ARTIFACT_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        return Path(given)
    path = Path(tempfile.mkdtemp(prefix="gradvis-runtime-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def explainer(case: str) -> gv.GradCAM:
    spec = CASES[case]()
    return gv.GradCAM(spec.model, spec.target_layer)


_SHAPES = {"net2d": (2, 3, 32, 32), "x3d": (2, 3, 4, 64, 64)}


@functools.cache
def artifact(case: str, fmt: str) -> Path:
    """The case's artifact in `fmt`, exported (and checked by gv.export) once."""
    path = artifact_dir() / f"{case}{SUFFIX[fmt]}"
    if not path.exists():
        x = make_input(_SHAPES[case], seed=0)
        gv.export(
            explainer(case),
            x,
            path,
            format=fmt,
            metadata={"class_names": CLASS_NAMES[case]},
            check=False,  # every test compares with eager itself, at batch 1 and 3
        )
    return path


def sample(case: str, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fresh input (not the export's example) and per-sample targets with -1 = argmax."""
    x = make_input((batch, *_SHAPES[case][1:]), seed=seed).numpy()
    classes = len(CLASS_NAMES[case])
    target = np.array([(seed + i) % classes if i % 2 == 0 else -1 for i in range(batch)])
    return x, target.astype(np.int64)


def eager(case: str, x: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """The reference: the eager explainer (autograd) on the same input."""
    out = explainer(case)(torch.from_numpy(x), torch.from_numpy(target))
    return {name: value.detach().numpy() for name, value in zip(out._fields, out)}


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], label: str) -> None:
    """rtol 1e-4 per element, with an absolute floor of 1e-4 of the output's largest value."""
    assert list(got) == list(want), f"{label}: outputs {list(got)} vs {list(want)}"
    for name, w in want.items():
        g = np.asarray(got[name])
        assert g.shape == w.shape, f"{label} {name}: shape {g.shape} vs {w.shape}"
        atol = 1e-4 * float(np.abs(w).max()) + 1e-6
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=atol, err_msg=f"{label} {name}")
