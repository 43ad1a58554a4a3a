"""The export guard: a written artifact is run on fresh inputs of two other batch sizes and
must match eager, and its maps must change with the input (a constant-folded heatmap would
not).  With precision="fp16" the comparison uses the half-precision tolerance and reports the
errors it measured."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import fx

from gradvis_export.core.explainer import Explainer, Inputs, each_input, first_input
from gradvis_export.errors import ExportError
from gradvis_export.exporter.formats import Format
from gradvis_export.exporter.precision import (
    FP16_TOLERANCE,
    check_fp16,
    output_errors,
    pin_near_ties,
)
from gradvis_export.exporter.trace import example_inputs

#: feeds by graph input name -> outputs in the artifact's order
Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def open_artifact(fmt: Format, path: Path) -> Runner:
    """The artifact at `path`, opened by its format's loader (gradvis_runtime), as a runner."""
    runtime = fmt.load(path)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        outputs = runtime.run(**feeds)
        return [outputs[name] for name in runtime.output_names]

    return run


def graph_runner(gm: fx.GraphModule, names: list[str]) -> Runner:
    """The traced graph itself, run in torch (the float16 arithmetic of an fp16 graph)."""

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in gm(*(torch.from_numpy(feeds[n]) for n in names))]

    return run


def close(got: np.ndarray, want: np.ndarray, rtol: float) -> bool:
    """Equal up to rounding, elementwise; or, for piecewise outputs, nearly everywhere.

    A guided gradient is piecewise: a ReLU input within rounding of zero can open on one
    runtime and stay closed on the other (seen on ResNet-50 at 224x224: 157 of 451,584
    elements).  A few such elements are accepted; a broad drift is not.
    """
    if got.shape != want.shape or not np.isfinite(got).all():
        return False
    scale = float(np.abs(want).max()) if want.size else 0.0
    bad = np.abs(got - want) > rtol * scale + 1e-6
    if not bad.any():
        return True
    relative = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))
    return bad.mean() <= 1e-3 and relative <= 1e-2


def guard_samples(
    explainer: Explainer, example_input: Inputs, precision: str = "fp32"
) -> list[tuple[Inputs, dict[str, torch.Tensor]]]:
    """The guard's fresh inputs: batch 3, then batch 1 (seeded, like the example in scale), each
    with its target's inputs (with `precision="fp16"`, near-tie argmax targets pinned)."""
    generator = torch.Generator().manual_seed(1234)
    samples = []
    for batch, seed in ((3, 1234), (1, 4321)):
        x = explainer.random_input(example_input, batch, generator)
        inputs = example_inputs(explainer, x, seed=seed)
        if precision == "fp16":
            inputs = pin_near_ties(explainer, x, inputs)
        samples.append((x, inputs))
    return samples


def check_artifact(
    explainer: Explainer,
    example_input: Inputs,
    path: Path,
    fmt: Format,
    outputs: list[str],
    rtol: float = 1e-3,
    precision: str = "fp32",
    half_graph: fx.GraphModule | None = None,
) -> dict[str, object]:
    """The guard (see the module docstring); returns the fp16 errors (`fp16_error` of the
    contract's extra), or {} for fp32.

    With `precision="fp16"` the comparison with the fp32 eager explainer uses FP16_TOLERANCE
    (and refuses non-finite outputs and maps constant where eager's are not).  `half_graph`
    (ONNX) is the float16 graph itself, run in torch too: onnxruntime's CPU provider computes a
    float16 graph in float32, so the artifact's own error there understates float16 arithmetic."""
    names = list(explainer.input_names_for(example_input))
    data_names = names[: len(each_input(example_input))]
    run = open_artifact(fmt, path)
    half = precision == "fp16"
    label = f"{fmt.name} artifact"
    runs = {label: run}
    if half_graph is not None:
        runs["float16 graph"] = graph_runner(half_graph, names)
    measured: dict[str, list] = {name: [] for name in runs}
    results = []
    for x, inputs in guard_samples(explainer, example_input, precision):
        batch = len(first_input(x))
        want = [o.numpy() for o in explainer(x, **inputs)]
        feeds = {
            **{name: t.numpy() for name, t in zip(data_names, each_input(x))},
            **{k: v.numpy() for k, v in inputs.items()},
        }
        got = run(feeds)
        if half:
            for what, runner in runs.items():
                values = got if runner is run else runner(feeds)
                for name, g, w in zip(outputs, values, want):
                    check_fp16(what, name, g, w, batch)
                measured[what].append((values, want))
            results.append((got, want))
            continue
        for name, g, w in zip(outputs, got, want):
            if not close(np.asarray(g), w, rtol):
                diff = float(np.abs(np.asarray(g) - w).max()) if np.shape(g) == w.shape else None
                raise ExportError(
                    f"the {fmt.name} artifact's output {name!r} differs from eager at batch "
                    f"{batch} (max abs diff {diff}, shape {np.shape(g)} vs {w.shape})"
                )
        results.append((got, want))
    (got_a, want_a), (got_b, want_b) = results
    for name, a, b, eager_a, eager_b in zip(outputs, got_a, got_b, want_a, want_b):
        # Only where eager itself changes with the input (a normalised map with one hot spot
        # can legitimately be the same for two inputs).
        if np.array_equal(a[:1], b[:1]) and not np.array_equal(eager_a[:1], eager_b[:1]):
            raise ExportError(
                f"the artifact's {name!r} is the same for two different inputs while eager's "
                "differs: the heatmap was constant-folded"
            )
    if not half:
        return {}
    samples = sum(len(w[0]) for _, w in measured[label]) if outputs else 0

    def report(pairs: list) -> dict[str, dict[str, float]]:
        return {
            name: output_errors([g[i] for g, _ in pairs], [w[i] for _, w in pairs])
            for i, name in enumerate(outputs)
        }

    error: dict[str, object] = {
        **report(measured[label]),
        "reference": "fp32 eager explainer",
        "measured_on": fmt.runtime_name(),
        "samples": samples,
        "tolerance": dict(FP16_TOLERANCE),
    }
    if half_graph is not None:
        error["half_arithmetic"] = {
            **report(measured["float16 graph"]),
            "measured_on": f"the same float16 graph in torch {torch.__version__} on the CPU",
        }
        error["note"] = (
            "onnxruntime's CPU provider has float16 kernels for almost none of these operators "
            "and runs the graph in float32 (casts inserted, float16 weights widened), so the "
            "artifact's error above understates a float16 engine's (TensorRT, CUDA); "
            "half_arithmetic is the float16 arithmetic of the same graph"
        )
    return error


def log_fp16(path: Path, error: dict[str, object]) -> None:
    def summary(errors: dict[str, object]) -> str:
        return "; ".join(
            f"{name}: max abs {value['max_abs']:.3g}, relative L2 {value['rel_l2']:.3g}"
            for name, value in errors.items()
            if isinstance(value, dict) and "max_abs" in value
        )

    half = error.get("half_arithmetic")
    logging.getLogger("gradvis_export").info(
        "fp16 export %s vs fp32 eager (%s samples, %s): %s%s",
        path,
        error["samples"],
        error["measured_on"],
        summary(error),
        f" (float16 arithmetic of the same graph: {summary(half)})" if half else "",
    )
