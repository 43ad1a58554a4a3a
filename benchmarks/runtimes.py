"""The `runtimes` suite of benchmarks/latency.py: one Grad-CAM artifact per model on every
runtime, batch 1, side by side in one process.

Rows: onnxruntime, TorchScript and AOTInductor through `gradvis_runtime.load`; the C++ library
timed inside C++ (`_cpp.Explainer.benchmark`: the call alone, GIL released; .pt, .pt2 and, when
it was built with ONNX Runtime, .onnx); the same C++
library through the pybind11 bridge (`load(path, backend="cpp").run`: input checks in Python,
NumPy in and out); and eager PyTorch.  Round-robin rounds as in the other suites; medians.
The bridge's overhead = bridge / C++ call - 1 (target <= 5 %).

    python benchmarks/latency.py --suite runtimes --models resnet50 --keep /tmp/gv-art --reuse
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

#: bridge / C++ call: at most
BRIDGE_TARGET = 1.05
RUNTIME_REPEATS = {"resnet50": 20, "x3d_s": 10}
#: after an onnxruntime call: longer than its workers spin before they sleep
SPIN_PAUSE_S = 0.05


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1e3


def runtimes_suite(
    args: argparse.Namespace,
    workdir: Path,
    cases: list,
    warmup: int,
    log: Callable[[str], None],
) -> tuple[list[str], dict[str, object]]:
    """Time every runtime on each case (latency_cases.py's ModelCase); returns report lines and data."""
    lines: list[str] = []
    data: dict[str, object] = {}
    for case in cases:
        case_lines, data[case.name] = time_case(args, workdir, case, warmup, log)
        lines += case_lines
        gc.collect()
    return lines, data


def time_case(
    args: argparse.Namespace, workdir: Path, case, warmup: int, log: Callable[[str], None]
) -> tuple[list[str], dict[str, object]]:
    """Export one case's Grad-CAM in the three formats and time it on every runtime."""
    import gradvis_export as gv
    import gradvis_runtime
    from gradvis_runtime import _cpp

    lines: list[str] = []
    explainer = gv.GradCAM(case.model, case.target_layer)
    x = case.x.numpy()
    target = np.array([-1], dtype=np.int64)
    runs: dict[str, Callable[[], object]] = {}
    paths = {}
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt"), ("aoti", ".pt2")):
        path = workdir / f"runtimes_{case.name}_gradcam{suffix}"
        if not (args.reuse and path.exists()):
            log(f"runtimes: exporting {case.name} Grad-CAM as {fmt}")
            start = time.perf_counter()
            gv.export(explainer, case.x, path, format=fmt, check=not args.no_check)
            log(f"runtimes: {path.name} in {time.perf_counter() - start:.0f} s")
        paths[fmt] = path
    for fmt, backend in (("onnx", "onnxruntime"), ("torchscript", "torchscript"), ("aoti", "aoti")):
        rt = gradvis_runtime.load(paths[fmt], backend=backend, threads=args.threads)
        runs[backend] = lambda rt=rt: rt.run(x, target)
    native_formats = ["torchscript", "aoti"] + (["onnx"] if _cpp.has_onnxruntime else [])
    for fmt in native_formats:
        bridge = gradvis_runtime.load(paths[fmt], backend="cpp", threads=args.threads)
        runs[f"bridge_{fmt}"] = lambda rt=bridge: rt.run(x, target)
        native = _cpp.Explainer(str(paths[fmt]), args.threads)
        runs[f"cpp_{fmt}"] = lambda ex=native: ex.benchmark([x, target], 1)[0]

    def eager() -> object:
        return explainer(case.x, torch.from_numpy(target))

    runs["eager"] = eager
    samples: dict[str, list[float]] = {name: [] for name in runs}
    repeats = args.repeats or RUNTIME_REPEATS.get(case.name, 10)
    log(f"runtimes: {case.name}: {warmup} warm-up call(s), {repeats} rounds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for call in runs.values():
            for _ in range(max(1, warmup)):
                call()
        names = list(runs)
        # ONNX Runtime's workers spin for a while after each call; a pause (not timed) after
        # each of its three sessions (Python, C++, bridge) keeps the next row off their cores
        spinning = {"onnxruntime", "cpp_onnx", "bridge_onnx"}
        for r in range(repeats):
            gc.collect()
            gc.disable()
            try:
                shift = r % len(names)
                for name in names[shift:] + names[:shift]:
                    if name.startswith("cpp_"):
                        samples[name].append(runs[name]())  # timed inside C++
                    else:
                        samples[name].append(_timed(runs[name]))
                    if name in spinning:
                        time.sleep(SPIN_PAUSE_S)
            finally:
                gc.enable()
    med = {name: statistics.median(v) for name, v in samples.items()}
    labels = {
        "onnxruntime": "onnxruntime (gradvis_runtime)",
        "torchscript": "TorchScript (gradvis_runtime)",
        "aoti": "AOTInductor (gradvis_runtime)",
        "cpp_torchscript": "C++ gradvis::Explainer, .pt",
        "bridge_torchscript": "bridge load(backend='cpp'), .pt",
        "cpp_aoti": "C++ gradvis::Explainer, .pt2",
        "bridge_aoti": "bridge load(backend='cpp'), .pt2",
        "cpp_onnx": "C++ gradvis::Explainer, .onnx",
        "bridge_onnx": "bridge load(backend='cpp'), .onnx",
        "eager": "eager PyTorch (autograd)",
    }
    lines += [
        f"{case.title}: Grad-CAM on every runtime, batch 1, {args.threads} threads, "
        f"{repeats} round-robin rounds",
        f"{'runtime':36s} {'median ms':>10s} {'x onnxruntime':>14s}",
    ]
    for name, label in labels.items():
        if name not in med:  # a C++ library built without ONNX Runtime
            continue
        lines.append(f"{label:36s} {med[name]:10.2f} {med[name] / med['onnxruntime']:14.2f}")
    verdicts = {}
    for fmt in native_formats:
        ratio = med[f"bridge_{fmt}"] / med[f"cpp_{fmt}"]
        paired = statistics.median(
            b / c for b, c in zip(samples[f"bridge_{fmt}"], samples[f"cpp_{fmt}"])
        )
        ok = ratio <= BRIDGE_TARGET
        verdicts[fmt] = ok
        lines.append(
            f"bridge overhead ({fmt}): {100 * (ratio - 1):+.1f} % (paired {100 * (paired - 1):+.1f} %)"
            f" target <= {100 * (BRIDGE_TARGET - 1):.0f} %: {'PASS' if ok else 'MISS'}"
        )
    lines.append("")
    return lines, {
        "median_ms": med,
        "samples_ms": samples,
        "repeats": repeats,
        "bridge_ok": verdicts,
    }
