"""Coverage-guided fuzzing (atheris) of artifact loading: `gradvis_runtime.load(..., trust=True)`
of damaged ONNX files, TorchScript files (.pt: a zip of pickles and code) and AOTInductor
packages (.pt2: a zip holding a shared library that is dlopened), each mutated from a small
exported explainer, then one `run`.

The first input byte picks the format (the seed corpus holds one seed per format behind its
byte), so one bounded run covers all three; `--format=onnx|torchscript|aoti` fuzzes one format
alone (seeds without the byte).

Allowed: `ValueError` from `load` (the documented "not a valid artifact / damaged metadata"
errors: `load` turns every parse failure into one, and refuses a .pt / .pt2 whose zip members
fail their CRC-32 before torch reads it); from `run`, the `ValueError` of its input checks and
the runtime's own run-time errors for a file that loads but cannot run: onnxruntime's
(RuntimeError subclasses from its pybind module) and torch's (`RuntimeError`,
`torch.jit.Error`).  Anything else, a crash or a hang fails the run.

    python tests/fuzz/fuzz_artifact.py -max_total_time=60 -timeout=20
    python tests/fuzz/fuzz_artifact.py --format=aoti -max_total_time=60 -timeout=20

The .pt2 seed is the runtime tests' 2-D net (tests/runtime_cases.py, 2 MB): from
$GRADVIS_ARTIFACT_DIR when it was compiled there, else compiled first (about a minute).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import atheris
import numpy as np
import onnxruntime
import torch
from torch import nn

with atheris.instrument_imports(include=["gradvis_runtime"]):
    import gradvis_runtime

FORMATS = ("onnx", "torchscript", "aoti")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "aoti": ".pt2"}
PREFIX = "gradvis-fuzz-artifact-"


def sweep_stale_scratch() -> None:
    """libFuzzer ends the process with exit(), which skips Python's atexit: each run removes
    the scratch folders (seeds, corpus) of earlier runs whose process is gone and which no one
    touched for 10 minutes (a running fuzzer changes its folder at every input)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*-*"):
        try:
            if time.time() - folder.stat().st_mtime < 600:
                continue
            os.kill(int(folder.name[len(PREFIX) :].split("-")[0]), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):  # not ours, gone, or a live process of another user
            pass


sweep_stale_scratch()
SCRATCH = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"))
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)  # when Python ends it after all
RUN = SCRATCH / "run"  # one input's file and AOTInductor's extracted files, removed after it
os.environ["TMPDIR"] = str(RUN)  # where AOTInductor (C++) extracts a package
_rng = np.random.default_rng(0)
X = {  # the tiny net's input, and the runtime tests' 2-D net's for the .pt2 seed
    "onnx": _rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
    "torchscript": _rng.standard_normal((1, 3, 8, 8)).astype(np.float32),
    "aoti": _rng.standard_normal((1, 3, 32, 32)).astype(np.float32),
}
ORT_ERRORS = tuple(
    getattr(onnxruntime.capi.onnxruntime_pybind11_state, name)
    for name in ("Fail", "InvalidArgument", "RuntimeException", "InvalidGraph", "NotImplemented")
    if hasattr(onnxruntime.capi.onnxruntime_pybind11_state, name)
)
RUN_ERRORS = {
    "onnx": ORT_ERRORS,
    "torchscript": (RuntimeError, torch.jit.Error),
    "aoti": (RuntimeError, torch.jit.Error),
}
ONLY: str | None = None  # --format: every input is a file of this format


def seed(fmt: str) -> bytes:
    """One good artifact of the format, loaded once here (so that the first fuzz input does not
    pay for torch's imports) and checked to run."""
    if fmt == "aoti":  # compiling takes a minute: the runtime tests' package, made once
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        import runtime_cases as rc

        path = rc.artifact("net2d", "aoti")
    else:
        import gradvis_export as gv

        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4, 3),
        ).eval()  # fmt: skip
        path = SCRATCH / f"seed{SUFFIX[fmt]}"
        gv.export(gv.GradCAM(model, "1"), torch.randn(2, 3, 8, 8), path, format=fmt)
    out = gradvis_runtime.load(path, threads=1, trust=True).run(X[fmt])
    assert np.isfinite(out["heatmap"]).all(), f"the {fmt} seed does not run"
    return path.read_bytes()


def test_one_input(data: bytes) -> None:
    if ONLY is not None:
        fmt = ONLY
    elif data:
        fmt, data = FORMATS[data[0] % len(FORMATS)], data[1:]
    else:
        return
    RUN.mkdir(exist_ok=True)
    target = RUN / f"input{SUFFIX[fmt]}"
    target.write_bytes(data)
    try:
        runtime = gradvis_runtime.load(target, threads=1, trust=True)
    except ValueError:
        return
    finally:
        shutil.rmtree(RUN, ignore_errors=True)  # the runtime holds what it loaded
    try:
        runtime.run(X[fmt])
    except ValueError:
        pass
    except RUN_ERRORS[fmt]:
        pass


def main() -> None:
    global ONLY
    args = [a for a in sys.argv if not a.startswith("--format=")]
    chosen = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--format=")]
    if chosen:
        if chosen[-1] not in FORMATS:
            raise SystemExit(f"--format must be one of {', '.join(FORMATS)}")
        ONLY = chosen[-1]
    folder = SCRATCH / "corpus"
    folder.mkdir()
    RUN.mkdir()  # TMPDIR while the seeds are made and loaded
    longest = 0
    for i, fmt in enumerate(FORMATS):
        if ONLY in (None, fmt):
            data = (b"" if ONLY else bytes([i])) + seed(fmt)
            (folder / fmt).write_bytes(data)
            longest = max(longest, len(data))
    if not any(a.startswith("-max_len=") for a in args):
        # libFuzzer would cut inputs at 1 MB, and every .pt2 (2 MB, its zip directory at the
        # end) would be a truncated file
        args.append(f"-max_len={longest + 4096}")
    atheris.Setup([*args, str(folder)], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
