"""Coverage-guided fuzzing (atheris) of artifact loading: `gradvis_runtime.load` of damaged
ONNX files (mutated from a small exported explainer), then one `run`.

Allowed: `ValueError` (the documented "not a valid artifact / damaged metadata / wrong input"
errors; ONNX Runtime's own parse and shape errors are turned into it by `load`), and ONNX
Runtime's run-time errors for a graph that loads but cannot run (RuntimeError subclasses
from onnxruntime).  Anything else, a crash or a hang fails the run.

    python tests/fuzz/fuzz_artifact.py -max_total_time=60 -timeout=20
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np
import onnxruntime
import torch
from torch import nn

with atheris.instrument_imports(include=["gradvis_runtime"]):
    import gradvis_runtime

SCRATCH = Path(tempfile.mkdtemp(prefix="gradvis-fuzz-"))
TARGET = SCRATCH / "input.onnx"
X = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
ORT_ERRORS = tuple(
    getattr(onnxruntime.capi.onnxruntime_pybind11_state, name)
    for name in ("Fail", "InvalidArgument", "RuntimeException", "InvalidGraph", "NotImplemented")
    if hasattr(onnxruntime.capi.onnxruntime_pybind11_state, name)
)


def seed_corpus(folder: Path) -> None:
    import gradvis_export as gv

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()  # fmt: skip
    gv.export(gv.GradCAM(model, "1"), torch.randn(2, 3, 8, 8), folder / "gradcam.onnx")


def test_one_input(data: bytes) -> None:
    TARGET.write_bytes(data)
    try:
        runtime = gradvis_runtime.load(TARGET, threads=1)
        runtime.run(X)
    except ValueError:
        pass
    except ORT_ERRORS:
        pass


def main() -> None:
    folder = SCRATCH / "corpus"
    folder.mkdir()
    seed_corpus(folder)
    atheris.Setup([*sys.argv, str(folder)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
