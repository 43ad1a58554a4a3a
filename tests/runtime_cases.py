"""Artifacts shared by the runtime tests and the C++ test's fixtures (tests/cpp_fixtures.py).

Three cases, all with Grad-CAM: a 2-D net (MixedReLUNet, 3x32x32), X3D-XS (random init,
3x4x64x64) and a SlowFast-style two-pathway net (TwoPathwayNet: a list of a 3x2x32x32 and a
3x8x32x32 clip, graph inputs input_0 and input_1); each exported once per format from a
batch-2 example.  Exports go to
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
from models import make_input, mixed_relu_net, two_pathway, x3d

import gradvis_export as gv

#: (format of the file, backend that runs it): every way gradvis_runtime runs an artifact
RUNS = [
    ("onnx", "onnxruntime"),
    ("torchscript", "torchscript"),
    ("aoti", "aoti"),
    ("torchscript", "cpp"),
    ("aoti", "cpp"),
    ("onnx", "cpp"),  # the C++ library's optional ONNX Runtime backend
]
CASES = {"net2d": mixed_relu_net, "x3d": x3d, "twopath": two_pathway}
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "aoti": ".pt2"}
CLASS_NAMES = {
    "net2d": [f"class{i}" for i in range(7)],
    "x3d": ["a", "b", "c", "d", "e"],
    "twopath": ["v", "w", "x", "y", "z"],
}


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


#: the example's shape, or the shapes of a multi-input case's list
_SHAPES = {
    "net2d": (2, 3, 32, 32),
    "x3d": (2, 3, 4, 64, 64),
    "twopath": ((2, 3, 2, 32, 32), (2, 3, 8, 32, 32)),
}


def multi(case: str) -> bool:
    return isinstance(_SHAPES[case][0], tuple)


def _input(case: str, batch: int, seed: int):
    """The case's input at `batch`: one tensor, or the list of a multi-input case."""
    if multi(case):
        return [make_input((batch, *s[1:]), seed=seed + i) for i, s in enumerate(_SHAPES[case])]
    return make_input((batch, *_SHAPES[case][1:]), seed=seed)


@functools.cache
def artifact(case: str, fmt: str) -> Path:
    """The case's artifact in `fmt`, exported (and checked by gv.export) once."""
    path = artifact_dir() / f"{case}{SUFFIX[fmt]}"
    if not path.exists():
        x = _input(case, 2, seed=0)
        gv.export(
            explainer(case),
            x,
            path,
            format=fmt,
            metadata={"class_names": CLASS_NAMES[case]},
            check=False,  # every test compares with eager itself, at batch 1 and 3
        )
    return path


def sample(case: str, batch: int, seed: int):
    """A fresh input (not the export's example; a list of arrays for a multi-input case) and
    per-sample targets with -1 = argmax."""
    x = _input(case, batch, seed)
    x = [t.numpy() for t in x] if isinstance(x, list) else x.numpy()
    classes = len(CLASS_NAMES[case])
    target = np.array([(seed + i) % classes if i % 2 == 0 else -1 for i in range(batch)])
    return x, target.astype(np.int64)


def eager(case: str, x, target: np.ndarray) -> dict[str, np.ndarray]:
    """The reference: the eager explainer (autograd) on the same input."""
    given = [torch.from_numpy(t) for t in x] if isinstance(x, list) else torch.from_numpy(x)
    out = explainer(case)(given, torch.from_numpy(target))
    return {name: value.detach().numpy() for name, value in zip(out._fields, out)}


def assert_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], label: str) -> None:
    """rtol 1e-4 per element, with an absolute floor of 1e-4 of the output's largest value."""
    assert list(got) == list(want), f"{label}: outputs {list(got)} vs {list(want)}"
    for name, w in want.items():
        g = np.asarray(got[name])
        assert g.shape == w.shape, f"{label} {name}: shape {g.shape} vs {w.shape}"
        atol = 1e-4 * float(np.abs(w).max()) + 1e-6
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=atol, err_msg=f"{label} {name}")
