"""`gv.export`: explainer -> one forward-only artifact (ONNX, TorchScript or AOTInductor),
checked against eager.  The steps, in order: validate -> trace -> graph passes and checks ->
precision and profile passes -> write (the format's module) -> guard -> rename into place."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from gradvis_export.core.explainer import Explainer, Inputs, each_input
from gradvis_export.errors import ExportError, GradvisError
from gradvis_export.exporter.checks import check_forward_only, check_input_used
from gradvis_export.exporter.formats import format_for
from gradvis_export.exporter.guard import check_artifact, log_fp16
from gradvis_export.exporter.passes import GRAPH_PASSES, run_passes
from gradvis_export.exporter.precision import PRECISIONS, half_precision
from gradvis_export.exporter.profiles import profile_passes
from gradvis_export.exporter.spec import artifact_spec, user_fields
from gradvis_export.exporter.trace import example_batch, example_inputs, trace


def _float(x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    return x.float() if x.is_floating_point() else x


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


@contextlib.contextmanager
def _torch_failure(what: str) -> Iterator[None]:
    """A torch internal failure in the block becomes an ExportError saying where it happened."""
    try:
        yield
    except GradvisError:
        raise
    except Exception as error:
        raise ExportError(f"{what} failed: {_first_line(error)}") from error


def _reserve(path: Path) -> tuple[Path, int]:
    """A new empty file next to `path` to write the artifact under, and its mode.

    Created as `open()` creates a file (0o666 less the umask, or the folder's default ACL), not
    with `mkstemp`'s 0o600: the artifact is meant to be read by others (a Triton container, a
    colleague).  The mode is given back to the file before the rename, since a format's writer
    may replace the file rather than fill it."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            return tmp, stat.S_IMODE(os.fstat(handle).st_mode)
        finally:
            os.close(handle)
    raise FileExistsError(f"no free temporary name next to {str(path)!r}")


class _Stages:
    """Sends one line per stage of `export` to `progress` as the stage starts, prefixed by the
    seconds since the export began (the next line's time minus this one's is the stage's)."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress, self.start = progress, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, stage: str) -> None:
        if self.progress is not None:
            self.progress(f"[{self.elapsed():5.1f} s] {stage}")


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"


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
    progress: Callable[[str], None] | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Trace `explainer` into a forward-only graph and write it as one artifact.

    Inputs of the artifact: `input` (float, example's shape with a dynamic batch) — or, for a
    multi-input model whose example is a list of tensors (SlowFast's [slow, fast]), `input_0`,
    `input_1`, ... in the list's order — then the target's (`target` int64 (B,), -1 = argmax,
    for the default ClassTarget; `mask`, `reference`, `box`, `label` for the others).
    Outputs: the fields of the explainer's output (`logits`, `heatmap`, ...).  The artifact
    carries its contract (`gradvis_runtime.ArtifactSpec`: inputs with roles, dtypes, shapes and
    layouts, outputs, method, layers, target, preprocessing, classes, precision, profile).

    With `check`, the artifact is run against eager before it is kept; the file appears only
    when everything passed.  `format="aoti"` writes an AOTInductor package (.pt2, tens of
    seconds to compile; tied to this CPU's ISA and torch version).  `metadata`: `class_names`
    (one per class), `mean` / `std` (the normalisation a float artifact's caller applies after
    scaling frames to [0, 1]) fill those contract fields; any other JSON-serialisable field is
    kept in the contract's `extra`.  `class_names=[...]` is the same as `metadata=
    {"class_names": [...]}` (one name per class, in class order; give one of the two): the
    runtimes, `gradvis info` and the video job's labels read them.  `profile="tensorrt"` (ONNX only) keeps the graph to
    operators the TensorRT 10 ONNX parser supports (max-pool backward without MaxPool's Indices
    output, no scatter) and refuses the export otherwise; `profile="onnxruntime-cpu"` (ONNX
    only) rewrites what onnxruntime's CPU provider runs slowly (`gradvis_export.exporter.ort_cpu`:
    X3D's depthwise 3-D convolutions on small frames).

    `precision="fp16"` stores the weights and computes the activations in float16 inside the
    artifact (see `half_precision`: exponentials, sums, softmax, normalisations and epsilons
    stay float32) while its interface stays float32 in and out.  The guard then compares with
    the fp32 eager explainer within FP16_TOLERANCE, and the contract's `extra["fp16_error"]`
    records per output max_abs, max_rel, rel_l2 over the guard's 4 fresh samples (None with
    `check=False`), also logged at INFO on the `gradvis_export` logger.  For ONNX it also holds
    `half_arithmetic`, the same graph run in torch float16: onnxruntime's CPU provider runs a
    float16 graph in float32, so the artifact's own error there understates a float16
    engine's (TensorRT, CUDA).

    `progress` (default None: silent) is called with one short line per stage as it starts,
    prefixed by the seconds since the export began, so a caller can show what the tens of
    seconds go to: "[  0.0 s] running the explainer once (eager, batch 1)", "tracing forward and
    backward", "graph passes and checks (N nodes)", then "converting to float16" / "<profile>
    profile passes" when asked, "writing <format> (N nodes)", "checking the artifact against
    eager (batch 3 and 1)" with `check`, and last "wrote <path> (<size>) in <seconds> s".

    The file gets the mode `open()` would give it (0o666 less the umask), whatever the format.
    """
    stages = _Stages(progress)
    # validate
    if class_names is not None:
        if metadata is not None and "class_names" in metadata:
            raise ValueError("class names given twice: as class_names= and in metadata=")
        metadata = {**(metadata or {}), "class_names": list(class_names)}
    if not isinstance(explainer, Explainer):
        raise TypeError(f"export takes a gradvis explainer, got {type(explainer).__name__}")
    path = Path(path)
    fmt = format_for(path, format)
    profile_passes(profile)  # an unknown name is refused here
    if profile and fmt.name != "onnx":
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
    user = user_fields(metadata)

    stages("running the explainer once (eager, batch 1)")
    # eager once, on one sample (ScoreCAM's is K forwards): checks the inputs, fills caches
    # (and chooses a default target layer); the example's batch and target inputs are drawn
    # once, here, for the trace and the written graph alike
    x = example_batch(example_input)
    inputs = example_inputs(explainer, x)
    one = [t[:1] for t in x] if isinstance(x, list) else x[:1]
    first = explainer(one, **{name: value[:1] for name, value in inputs.items()})
    outputs = list(first._fields)
    spec = artifact_spec(explainer, x, inputs, first, fmt.name, precision, profile, user)
    half = precision == "fp16"
    if half:
        spec = spec.replace(extra={**spec.extra, "fp16_error": None})  # the guard measures it

    # trace, then the graph passes and checks (the progress lines outside: a caller's error
    # there is not a torch failure)
    stages("tracing forward and backward")
    with _torch_failure(f"tracing {type(explainer).__name__}"):
        gm = trace(explainer, x, inputs)
    stages(f"graph passes and checks ({len(gm.graph.nodes)} nodes)")
    with _torch_failure(f"tracing {type(explainer).__name__}"):
        gm = run_passes(gm, GRAPH_PASSES)
    check_input_used(gm, tuple(spec.input_names[: len(each_input(x))]))
    check_forward_only(gm, explainer.model, example_input)
    args = (*each_input(x), *inputs.values())
    if half:
        stages("converting to float16")
        try:
            gm = half_precision(gm, args)
        except GradvisError:
            raise
        except Exception as error:
            raise ExportError(
                f"converting the graph to float16 failed: {_first_line(error)}; export with "
                "precision='fp32'"
            ) from error
    if profile:
        stages(f"{profile} profile passes")
    gm = run_passes(gm, profile_passes(profile).graph)

    # write under a temporary name, guard, rename into place (with the mode open() gives)
    tmp, mode = _reserve(path)
    try:
        compiling = " (AOTInductor compiles: tens of seconds)" if fmt.name == "aoti" else ""
        stages(f"writing {fmt.name} ({len(gm.graph.nodes)} nodes){compiling}")
        try:
            written = fmt.write(gm, args, spec, tmp, opset)
        except GradvisError:
            raise
        except Exception as error:
            raise ExportError(
                f"writing the {fmt.name} artifact failed: {_first_line(error)}"
            ) from error
        if check:
            stages("checking the artifact against eager (batch 3 and 1)")
            error = check_artifact(
                explainer,
                example_input,
                tmp,
                fmt,
                outputs,
                precision=precision,
                half_graph=gm if half and fmt.name == "onnx" else None,
            )
            if half:
                written.rewrite(spec.replace(extra={**spec.extra, "fp16_error": error}))
                log_fp16(path, error)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    stages(f"wrote {path} ({_size(path)}) in {stages.elapsed():.1f} s")
    return path
