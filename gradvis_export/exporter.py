"""`gv.export`: explainer -> one forward-only artifact (ONNX, TorchScript or AOTInductor),
checked against eager."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import fx

from ._version import __version__
from .errors import ExportError, GradvisError
from .explainers.base import Explainer, Inputs, each_input, first_input
from .precision import (
    FP16_TOLERANCE,
    PRECISIONS,
    check_fp16,
    half_precision,
    onnx_fp16_fixup,
    output_errors,
    pin_near_ties,
)
from .trace import check_forward_only, example_batch, example_inputs, scriptable, trace

FORMATS = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".pt2": "aoti",
}
METADATA_KEY = "gradvis"
#: export profiles (ONNX only): None, then what each one targets
PROFILES = (None, "tensorrt", "onnxruntime-cpu")


def _format_of(path: Path, format: str | None) -> str:
    if format is not None:
        fmt = format.lower()
        if fmt not in {"onnx", "torchscript", "aoti"}:
            raise ValueError(
                f"unknown export format {format!r}; choose 'onnx', 'torchscript' or 'aoti'"
            )
        if fmt == "aoti" and path.suffix.lower() != ".pt2":
            raise ValueError(
                f"an AOTInductor package must end in .pt2, got {str(path)!r}; rename it"
            )
        return fmt
    if path.suffix.lower() in FORMATS:
        return FORMATS[path.suffix.lower()]
    raise ValueError(
        f"cannot tell the export format from the suffix of {str(path)!r}; use .onnx or .pt "
        "(.pt2 for AOTInductor), or pass format='onnx' / 'torchscript' / 'aoti'"
    )


def input_specs(
    explainer: Explainer, x: Inputs, inputs: dict[str, torch.Tensor]
) -> dict[str, dict[str, object]]:
    """Each graph input's dtype, shape ("B" = any batch), default and meaning."""
    specs = {
        name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": ["B", *map(int, t.shape[1:])]}
        for name, t in zip(explainer.input_names_for(x), each_input(x))
    }
    for spec in explainer.target.specs:
        value = inputs[spec.name]
        specs[spec.name] = {
            "dtype": str(spec.dtype).removeprefix("torch."),
            "shape": ["B", *map(int, value.shape[1:])],
            "default": spec.default,
            "doc": spec.doc,
        }
    return specs


def _float(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    return x.float() if x.is_floating_point() else x


def _layout(x: torch.Tensor) -> str:
    if x.dtype == torch.uint8:
        return "BHWC" if x.dim() == 4 else "BTHWC"
    return "BCHW" if x.dim() == 4 else "BCTHW"


def _clip_len(x: torch.Tensor) -> int | None:
    """Frames per clip of a video input (None for images)."""
    if x.dim() != 5:
        return None
    return int(x.shape[1] if x.dtype == torch.uint8 else x.shape[2])


def artifact_metadata(
    explainer: Explainer,
    example_input: Inputs,
    inputs: dict[str, torch.Tensor],
    outputs: list[str],
    fmt: str,
) -> dict[str, object]:
    """What the artifact records about itself (read back by gradvis_runtime).

    A multi-input artifact records `map_input` (the input its maps are given on) and the
    layout, shape and clip length of that input."""
    names = list(explainer.input_names_for(example_input))
    shown = explainer.map_input(example_input)
    multi = (
        {"map_input": names[[t is shown for t in example_input].index(True)]}
        if isinstance(example_input, list)
        else {}
    )
    return {
        **explainer.metadata(),
        "format": fmt,
        "gradvis_version": __version__,
        "torch_version": torch.__version__,
        "inputs": names,
        "input_specs": input_specs(explainer, example_input, inputs),
        "outputs": outputs,
        **multi,
        "input_layout": _layout(shown),
        "input_shape": ["B", *[int(s) for s in shown.shape[1:]]],
        "clip_len": _clip_len(shown),
        "dynamic_axes": {name: [0] for name in names},
        "out_of_range": "a class outside [0, classes) (other than -1) gives a zero heatmap",
    }


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' progress prints and deprecation warnings."""
    names = ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _save_onnx(
    gm: fx.GraphModule,
    args: tuple[torch.Tensor, ...],
    names: list[str],
    outputs: list[str],
    path: Path,
    metadata: dict[str, object],
    opset: int,
    profile: str | None = None,
    half: bool = False,
) -> None:
    import onnx

    if profile == "onnxruntime-cpu":
        from .ort_cpu import split_depthwise_conv3d

        gm = split_depthwise_conv3d(gm)
    with quiet():
        program = _dynamic_program(gm, args)
        onnx_program = torch.onnx.export(
            program,
            args,
            input_names=names,
            output_names=outputs,
            dynamo=True,
            opset_version=opset,
            optimize=True,
            verify=False,
        )
    model = onnx_program.model_proto
    if profile == "tensorrt":
        from .tensorrt import rewrite_max_pool_backward, tensorrt_problems

        if rewrite_max_pool_backward(model) and half:
            onnx_fp16_fixup(model)
        problems = tensorrt_problems(model)
        if problems:
            raise ExportError(
                "the graph has operators the TensorRT profile cannot keep ("
                + "; ".join(problems[:5])
                + "); export without profile='tensorrt' for onnxruntime"
            )
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _save_torchscript(gm: fx.GraphModule, path: Path, metadata: dict[str, object]) -> None:
    gm = scriptable(gm)
    with quiet():
        module = torch.jit.script(gm)
        torch.jit.save(
            module, str(path), _extra_files={f"{METADATA_KEY}.json": json.dumps(metadata)}
        )


def _dynamic_program(gm: fx.GraphModule, args: tuple[torch.Tensor, ...]):
    """`torch.export` of the traced graph with a dynamic batch on every input."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    return torch.export.export(
        gm, args, dynamic_shapes=tuple({0: batch} for _ in args), strict=False
    )


def _save_aoti(
    gm: fx.GraphModule,
    args: tuple[torch.Tensor, ...],
    path: Path,
    metadata: dict[str, object],
) -> None:
    """AOTInductor package (.pt2); the metadata JSON rides in the package's metadata map
    (`AOTIModelPackageLoader::get_metadata()["gradvis"]` in C++)."""
    with quiet():
        program = _dynamic_program(gm, args)
        torch._inductor.aoti_compile_and_package(
            program,
            package_path=str(path),
            inductor_configs={"aot_inductor.metadata": {METADATA_KEY: json.dumps(metadata)}},
        )


def load_aoti(path: Path):
    """The compiled model of a .pt2 package (callable on tensors, `get_metadata()`)."""
    import torch._inductor.package

    with quiet():
        return torch._inductor.package.load_package(str(path))


Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def _runner(path: Path, fmt: str, names: list[str]) -> Runner:
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, min(2, os.cpu_count() or 1))
        options.log_severity_level = 3
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda feeds: session.run(None, feeds)
    if fmt == "aoti":
        compiled = load_aoti(path)

        def run_aoti(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
            with torch.inference_mode():
                return [o.numpy() for o in compiled(*(torch.from_numpy(feeds[n]) for n in names))]

        return run_aoti
    with quiet():
        module = torch.jit.load(str(path))

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in module(*(torch.from_numpy(feeds[n]) for n in names))]

    return run


def _close(got: np.ndarray, want: np.ndarray, rtol: float) -> bool:
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
    fmt: str,
    outputs: list[str],
    rtol: float = 1e-3,
    precision: str = "fp32",
    half_graph: fx.GraphModule | None = None,
) -> dict[str, object]:
    """The guard: the artifact matches eager on two fresh inputs of other batch sizes, and its
    heatmaps change with the input (a constant-folded heatmap would not).

    With `precision="fp16"` the comparison with the fp32 eager explainer uses FP16_TOLERANCE
    (and refuses non-finite outputs and maps constant where eager's are not); the errors are
    returned (`fp16_error` of the metadata).  `half_graph` (ONNX) is the float16 graph itself,
    run in torch too: onnxruntime's CPU provider computes a float16 graph in float32, so the
    artifact's own error there understates float16 arithmetic."""
    names = list(explainer.input_names_for(example_input))
    data_names = names[: len(each_input(example_input))]
    run = _runner(path, fmt, names)
    half = precision == "fp16"
    runs = {f"{fmt} artifact": run}
    if half_graph is not None:
        runs["float16 graph"] = _graph_runner(half_graph, names)
    measured: dict[str, list] = {label: [] for label in runs}
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
            for label, runner in runs.items():
                values = got if runner is run else runner(feeds)
                for name, g, w in zip(outputs, values, want):
                    check_fp16(label, name, g, w, batch)
                measured[label].append((values, want))
            results.append((got, want))
            continue
        for name, g, w in zip(outputs, got, want):
            if not _close(np.asarray(g), w, rtol):
                diff = float(np.abs(np.asarray(g) - w).max()) if np.shape(g) == w.shape else None
                raise ExportError(
                    f"the {fmt} artifact's output {name!r} differs from eager at batch {batch} "
                    f"(max abs diff {diff}, shape {np.shape(g)} vs {w.shape})"
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
    samples = sum(len(w[0]) for _, w in measured[f"{fmt} artifact"]) if outputs else 0

    def report(pairs: list) -> dict[str, dict[str, float]]:
        return {
            name: output_errors([g[i] for g, _ in pairs], [w[i] for _, w in pairs])
            for i, name in enumerate(outputs)
        }

    error: dict[str, object] = {
        **report(measured[f"{fmt} artifact"]),
        "reference": "fp32 eager explainer",
        "measured_on": _runtime_name(fmt),
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


def _rewrite_metadata(path: Path, fmt: str, metadata: dict[str, object], gm: fx.GraphModule):
    """Replace the metadata JSON inside a written artifact (to add what the guard measured)."""
    text = json.dumps(metadata)
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path))
        for entry in model.metadata_props:
            if entry.key == METADATA_KEY:
                entry.value = text
        onnx.save(model, str(path))
    elif fmt == "torchscript":
        _save_torchscript(gm, path, metadata)
    else:  # the package's *_metadata.json (what AOTIModelPackageLoader::get_metadata reads)
        import zipfile

        rewritten = path.with_name(path.name + ".meta")
        try:
            with zipfile.ZipFile(path) as src, zipfile.ZipFile(rewritten, "w") as dst:
                for info in src.infolist():
                    data = src.read(info)
                    if info.filename.endswith("_metadata.json"):
                        entries = json.loads(data)
                        if METADATA_KEY in entries:
                            entries[METADATA_KEY] = text
                            data = json.dumps(entries).encode()
                    dst.writestr(info, data)
            os.replace(rewritten, path)
        finally:
            if rewritten.exists():
                rewritten.unlink()


def _log_fp16(path: Path, error: dict[str, object]) -> None:
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


def _graph_runner(gm: fx.GraphModule, names: list[str]) -> Runner:
    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [o.numpy() for o in gm(*(torch.from_numpy(feeds[n]) for n in names))]

    return run


def _runtime_name(fmt: str) -> str:
    if fmt == "onnx":
        import onnxruntime as ort

        return f"onnxruntime {ort.__version__} CPUExecutionProvider"
    what = "AOTInductor" if fmt == "aoti" else "TorchScript"
    return f"{what}, torch {torch.__version__}, CPU"


def export(
    explainer: Explainer,
    example_input: Inputs,
    path: str | os.PathLike,
    format: str | None = None,
    *,
    opset: int = 20,
    check: bool = True,
    metadata: dict[str, object] | None = None,
    profile: str | None = None,
    precision: str = "fp32",
) -> Path:
    """Trace `explainer` into a forward-only graph and write it as one artifact.

    Inputs of the artifact: `input` (float, example's shape with a dynamic batch) — or, for a
    multi-input model whose example is a list of tensors (SlowFast's [slow, fast]), `input_0`,
    `input_1`, ... in the list's order — then the target's (`target` int64 (B,), -1 = argmax, for the default ClassTarget; `mask`,
    `reference`, `box`, `label` for the others).  Outputs: the fields of the explainer's output
    (`logits`, `heatmap`, ...).  With `check`, the artifact is run against eager before it is kept; the
    file appears only when everything passed.  `format="aoti"` writes an AOTInductor package
    (.pt2, tens of seconds to compile; tied to this CPU's ISA and torch version).  `metadata`
    adds JSON-serialisable fields to what the artifact records (e.g. `class_names`, `mean`,
    `std`); gradvis_runtime reads them back as `rt.metadata`.  `profile="tensorrt"` (ONNX only)
    keeps the graph to operators the TensorRT 10 ONNX parser supports (max-pool backward
    without MaxPool's Indices output, no scatter) and refuses the export otherwise;
    `profile="onnxruntime-cpu"` (ONNX only) rewrites what onnxruntime's CPU provider runs slowly
    (`gradvis_export.ort_cpu`: X3D's depthwise 3-D convolutions on small frames).

    `precision="fp16"` stores the weights and computes the activations in float16 inside the
    artifact (see `half_precision`: exponentials, sums, softmax, normalisations and epsilons
    stay float32) while its interface stays float32 in and out.  The guard then compares with
    the fp32 eager explainer within FP16_TOLERANCE, and the artifact's metadata records
    `fp16_error` (per output max_abs, max_rel, rel_l2 over the guard's 4 fresh samples; None
    with `check=False`), also logged at INFO on the `gradvis_export` logger.  For ONNX it also
    holds `half_arithmetic`, the same graph run in torch float16: onnxruntime's CPU provider
    runs a float16 graph in float32, so the artifact's own error there understates a float16
    engine's (TensorRT, CUDA).
    """
    if not isinstance(explainer, Explainer):
        raise TypeError(f"export takes a gradvis explainer, got {type(explainer).__name__}")
    path = Path(path)
    fmt = _format_of(path, format)
    if profile not in PROFILES:
        raise ValueError(
            f"unknown profile {profile!r}; choose one of {', '.join(map(repr, PROFILES[1:]))}"
        )
    if profile and fmt != "onnx":
        raise ValueError(f"profile={profile!r} applies to ONNX exports; use a .onnx file")
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose 'fp32' (default) or 'fp16'")
    example_input = explainer.validate_input(example_input)
    example_input = (
        [_float(t) for t in example_input]
        if isinstance(example_input, list)
        else _float(example_input)
    )
    if explainer.model.training:
        raise ExportError(
            "the model is in training mode (dropout, batch statistics); call "
            "model.eval() before exporting"
        )
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"the output folder {str(path.parent)!r} does not exist")

    x = example_batch(example_input)
    inputs = example_inputs(explainer, x)
    # eager once, on one sample (ScoreCAM's is K forwards): checks the inputs, fills caches
    # (and chooses a default target layer)
    one = [t[:1] for t in x] if isinstance(x, list) else x[:1]
    first = explainer(one, **{name: value[:1] for name, value in inputs.items()})
    outputs = list(first._fields)
    try:
        gm = check_forward_only(trace(explainer, example_input), explainer.model, example_input)
    except GradvisError:
        raise
    except Exception as error:  # a torch internal failure: say where it happened
        raise ExportError(
            f"tracing {type(explainer).__name__} failed: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from error
    extra = dict(metadata or {})
    try:
        json.dumps(extra)
    except TypeError as error:
        raise ValueError(f"metadata must be JSON-serialisable: {error}") from error
    metadata = {**artifact_metadata(explainer, example_input, inputs, outputs, fmt), **extra}
    if profile:
        metadata["profile"] = profile
    metadata["precision"] = precision
    half = precision == "fp16"
    if half:
        try:
            gm = half_precision(gm, (*each_input(x), *inputs.values()))
        except GradvisError:
            raise
        except Exception as error:
            raise ExportError(
                f"converting the graph to float16 failed: {type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}; export with precision='fp32'"
            ) from error
        metadata["fp16_error"] = None  # measured by the guard below

    handle, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent or "."
    )
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        try:
            args = (*each_input(x), *inputs.values())
            if fmt == "onnx":
                names = list(explainer.input_names_for(x))
                _save_onnx(gm, args, names, outputs, tmp, metadata, opset, profile, half)
            elif fmt == "aoti":
                _save_aoti(gm, args, tmp, metadata)
            else:
                _save_torchscript(gm, tmp, metadata)
        except GradvisError:
            raise
        except Exception as error:
            raise ExportError(
                f"writing the {fmt} artifact failed: {type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}"
            ) from error
        if check:
            error = check_artifact(
                explainer,
                example_input,
                tmp,
                fmt,
                outputs,
                precision=precision,
                half_graph=gm if half and fmt == "onnx" else None,
            )
            if half:
                metadata["fp16_error"] = error
                _rewrite_metadata(tmp, fmt, metadata, gm)
                _log_fp16(path, error)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
