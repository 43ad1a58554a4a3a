"""Latency of exported explainers vs. plain inference and vs. captum (CPU, batch 1).

For each model this exports the bare model (ONNX via ``torch.onnx.export(dynamo=True)``,
TorchScript via ``torch.jit.trace``) and the three gradvis explainers (Grad-CAM, guided
backprop, guided Grad-CAM; ONNX and TorchScript via ``gv.export``), loads the explainer
artifacts through ``gradvis_runtime.load``, builds captum's eager equivalents, and times
all variants side by side in one process:

* every variant gets ``--warmup`` untimed calls first;
* then ``repeats`` rounds; in each round every variant is called once (round-robin), so
  machine noise hits all variants alike.  Within a round the variants are grouped by
  runtime (onnxruntime, TorchScript, eager) so the thread pools of the two libraries hand
  over only twice per round; the order inside a group rotates from round to round.

The reported number is the median wall time of one call, in milliseconds.  Ratios:
explainer / plain inference on the same runtime, and captum eager / exported explainer
(ratio of the medians, which the PASS/MISS verdicts use, and the median of the per-round
ratios, "paired").

Setup notes:

* onnxruntime sessions (the explainers' through ``gradvis_runtime.load(path, threads=N)``,
  the bare model's built with the same options) use ``intra_op_num_threads=N``; torch uses
  ``torch.set_num_threads(N)``.  ``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (see below).
* The bare-model ONNX uses the exporter's default ``optimize=True``; gv.export's own
  ``optimize=False`` would leave the bare ResNet-50 ~1.8x slower (an easy baseline).
* An explainer artifact that fails only gv.export's comparison with eager is re-exported
  with ``check=False`` and timed anyway, marked ``*`` (``--strict`` skips it instead).
* captum's GuidedBackprop hooks nn.ReLU modules only: fine for ResNet-50, and for X3D it
  matches gradvis ``activations="relu"`` (X3D's Swish/Sigmoid are guided by neither).

    python benchmarks/latency.py                        # both models, full repeats
    python benchmarks/latency.py --models resnet50 --quick
    python benchmarks/latency.py --keep /tmp/gv-art --reuse --json out.json

Progress goes to stderr; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# libgomp (torch's OpenMP) spin-waits at every barrier by default; on a 2-core machine shared
# with other work, 2 spinning threads make each ResNet-50 forward ~20x slower (2.5 s instead
# of ~0.1 s here).  Threads that sleep when idle give compute-bound numbers.  Set before torch
# loads OpenMP; an OMP_WAIT_POLICY already in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

#: the checkout this script lives in; its gradvis_export / gradvis_runtime are the ones measured
#: (not whatever an editable install elsewhere points to), unless --installed
REPO = Path(__file__).resolve().parent.parent

MODELS = ("resnet50", "x3d_s")
DEFAULT_REPEATS = {"resnet50": 20, "x3d_s": 10}
QUICK_REPEATS = {"resnet50": 5, "x3d_s": 3}
EXPLAINERS = ("gradcam", "guided_backprop", "guided_gradcam")
LABELS = {
    "plain": "plain inference",
    "gradcam": "Grad-CAM",
    "guided_backprop": "guided backprop",
    "guided_gradcam": "guided Grad-CAM",
}
CAPTUM_LABELS = {
    "plain": "plain inference (eager)",
    "gradcam": "LayerGradCam + upsample",
    "guided_backprop": "GuidedBackprop",
    "guided_gradcam": "GuidedGradCam",
}
#: explainer -> max allowed (explainer latency / plain latency) on the same runtime
TARGET_VS_PLAIN = {"gradcam": 1.10, "guided_backprop": 2.5, "guided_gradcam": 2.7}
#: min allowed (captum eager latency / exported explainer latency)
TARGET_VS_CAPTUM = 2.0
RUNTIMES = ("onnxruntime", "torchscript", "eager")
SEED = 0

_T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def quiet():
    """Silence exporter chatter (prints, warnings, info logs) while exporting."""
    from gradvis_export.exporter import quiet as exporter_quiet

    return exporter_quiet()


# ----------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------
@dataclass
class ModelCase:
    name: str
    title: str
    model: nn.Module
    x: torch.Tensor
    target_layer: str
    interpolate_mode: str
    note: str = ""


def build_resnet50() -> ModelCase:
    import torchvision

    torch.manual_seed(SEED)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))
    return ModelCase("resnet50", "ResNet-50 (1x3x224x224)", model, x, "layer4", "bilinear")


def build_x3d_s() -> ModelCase:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytorchvideo.models.x3d import create_x3d

        torch.manual_seed(SEED)
        model = create_x3d(
            input_clip_length=13,
            input_crop_size=160,
            model_num_class=400,
            head_activation=None,
        ).eval()
    x = torch.randn(1, 3, 13, 160, 160, generator=torch.Generator().manual_seed(SEED))
    relus = sum(isinstance(m, nn.ReLU) for m in model.modules())
    others = sorted(
        {
            type(m).__name__
            for m in model.modules()
            if type(m).__name__ in ("Swish", "Sigmoid", "SiLU", "Hardswish")
        }
    )
    note = (
        f"captum's GuidedBackprop only hooks nn.ReLU modules: here {relus} nn.ReLU "
        f"(all modules, all hooked); {', '.join(others)} are not guided by captum. "
        "gradvis runs with activations='relu' (ReLU family only; SwishFunction's backward "
        "is left plain by both), so both compute the same guided gradient (identical "
        "on the small test X3D). The TorchScript baseline traces a copy whose Swish "
        "modules compute x * sigmoid(x) directly: torch.jit.trace cannot record the "
        "Python autograd Function SwishFunction."
    )
    return ModelCase("x3d_s", "X3D-S (1x3x13x160x160)", model, x, "blocks.4", "trilinear", note)


BUILDERS: dict[str, Callable[[], ModelCase]] = {
    "resnet50": build_resnet50,
    "x3d_s": build_x3d_s,
}


# ----------------------------------------------------------------------------------------
# variants
# ----------------------------------------------------------------------------------------
@dataclass
class Variant:
    method: str  # "plain" or one of EXPLAINERS
    runtime: str  # one of RUNTIMES
    label: str
    call: Callable[[], object]
    samples: list[float] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.runtime}/{self.method}"


def onnx_session(path: Path, threads: int):
    """An onnxruntime session set up like gradvis_runtime.load(path, threads=threads)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_plain_onnx(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    """The bare model through the dynamo ONNX exporter with its defaults (onnxscript
    optimizer on), a dynamic batch and opset 20 like gv.export's artifacts.

    With optimize=False (what gv.export passes) the bare torchvision ResNet-50 keeps a
    runtime-built zero bias on every Conv, which stops onnxruntime from fusing Conv+BN and
    makes the baseline ~1.8x slower: an unfairly easy baseline.
    """
    batch = torch.export.Dim("batch", min=1, max=4096)
    x2 = x.repeat(2, *([1] * (x.dim() - 1)))
    with quiet():
        onnx_program = torch.onnx.export(
            model,
            (x2,),
            input_names=["input"],
            output_names=["logits"],
            dynamo=True,
            opset_version=20,
            dynamic_shapes=({0: batch},),
        )
    onnx_program.save(str(path))


class TraceableSwish(nn.Module):
    """x * sigmoid(x): pytorchvideo's Swish forward, without its custom autograd Function."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def traceable(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of `model` that torch.jit.trace takes, and how many modules were swapped.

    torch.jit.trace cannot record a Python autograd Function (pytorchvideo's SwishFunction:
    "Could not export Python function call 'SwishFunction'"); the copy computes the same
    forward ops with plain tensor ops (the ops gv.export's trace records for it too).
    """
    import copy

    from pytorchvideo.layers.swish import Swish

    swapped = 0
    clone = copy.deepcopy(model)
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Swish):
                setattr(parent, name, TraceableSwish())
                swapped += 1
    return clone.eval(), swapped


def export_plain_torchscript(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    """torch.jit.trace of the bare model (of its traceable copy if it uses Swish)."""
    model, swapped = traceable(model)
    if swapped:
        log(
            f"torch.jit.trace: {swapped} pytorchvideo Swish modules replaced by "
            "x * sigmoid(x) (SwishFunction is a Python autograd Function)"
        )
    with quiet(), torch.no_grad():
        traced = torch.jit.trace(model, (x,))
        torch.jit.save(traced, str(path))


def make_explainer(method: str, model: nn.Module, target_layer: str):
    import gradvis_export as gv

    if method == "gradcam":
        return gv.GradCAM(model, target_layer=target_layer)
    if method == "guided_backprop":
        return gv.GuidedBackprop(model, activations="relu")
    if method == "guided_gradcam":
        return gv.GuidedGradCAM(model, target_layer=target_layer)
    raise ValueError(method)


def describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def build_variants(
    case: ModelCase,
    workdir: Path,
    args: argparse.Namespace,
    errors: dict[str, str],
    check_failed: dict[str, str],
) -> tuple[list[Variant], dict[str, float]]:
    """Export, load and wrap every variant of `case`.  Export failures go to `errors`;
    explainer artifacts that failed only gv.export's comparison with eager are re-exported
    unchecked, timed, and listed in `check_failed`."""
    from captum.attr import GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam

    import gradvis_export as gv
    import gradvis_runtime

    model, x, threads = case.model, case.x, args.threads
    x_np = x.numpy().copy()
    with torch.inference_mode():
        logits = model(x)
    target = int(logits.argmax(dim=1)[0])
    t_np = np.array([target], dtype=np.int64)
    export_seconds: dict[str, float] = {}
    variants: list[Variant] = []

    def artifact(method: str, suffix: str) -> Path:
        return workdir / f"{case.name}_{method}{suffix}"

    def produce(key: str, path: Path, make: Callable[[Path], None]) -> bool:
        """Run make(tmp) and move tmp to `path` once it succeeded (so --reuse only ever
        finds complete artifacts); a failure is recorded in `errors`."""
        if args.reuse and path.is_file():
            log(f"{case.name}: reusing {path}")
            return True
        log(f"{case.name}: exporting {key} -> {path.name} ...")
        start = time.perf_counter()
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        try:
            make(tmp)
            os.replace(tmp, path)
        except Exception as error:  # report and go on with the other variants
            errors[key] = describe(error)
            log(
                f"{case.name}: export {key} FAILED after "
                f"{time.perf_counter() - start:.1f}s: {describe(error)}"
            )
            if args.verbose:
                traceback.print_exc()
            return False
        finally:
            tmp.unlink(missing_ok=True)
        export_seconds[key] = time.perf_counter() - start
        log(f"{case.name}: exported {key} in {export_seconds[key]:.1f}s")
        return True

    # --- plain inference baselines -----------------------------------------------------
    path = artifact("plain", ".onnx")
    if produce("onnxruntime/plain", path, lambda p: export_plain_onnx(model, x, p)):
        session = onnx_session(path, threads)
        got = session.run(None, {"input": x_np})[0]
        if not np.allclose(
            got, logits.numpy(), rtol=1e-3, atol=1e-3 * float(np.abs(logits.numpy()).max())
        ):
            log(f"{case.name}: WARNING plain ONNX logits differ from eager")
        variants.append(
            Variant(
                "plain",
                "onnxruntime",
                LABELS["plain"],
                lambda s=session: s.run(None, {"input": x_np}),
            )
        )

    path_ts = artifact("plain", ".pt")
    if produce("torchscript/plain", path_ts, lambda p: export_plain_torchscript(model, x, p)):
        with quiet():
            module = torch.jit.load(str(path_ts))

        def run_ts_plain(m=module):
            with torch.inference_mode():
                return m(torch.from_numpy(x_np)).numpy()

        variants.append(Variant("plain", "torchscript", LABELS["plain"], run_ts_plain))

    # --- exported explainers ------------------------------------------------------------
    for method in EXPLAINERS:
        for runtime, suffix in (("onnxruntime", ".onnx"), ("torchscript", ".pt")):
            key = f"{runtime}/{method}"
            path_e = artifact(method, suffix)
            explainer = make_explainer(method, model, case.target_layer)

            def make(p: Path, e=explainer, check: bool = not args.no_check) -> None:
                with quiet():
                    gv.export(e, x, p, check=check)

            # an artifact that failed gv.export's check is kept apart (never reused as checked)
            path_u = artifact(method, ".unchecked" + suffix)
            if args.reuse and not path_e.is_file() and path_u.is_file():
                check_failed[key] = (
                    "export check failed in an earlier run (unchecked artifact reused)"
                )
                log(f"{case.name}: reusing {path_u} (export check failed earlier)")
                path_e = path_u
            elif not produce(key, path_e, make):
                # the artifact was written but differs from eager: time it anyway (marked *),
                # unless --strict; any other failure leaves the row empty
                if args.strict or "differs from eager" not in errors.get(key, ""):
                    continue
                check_failed[key] = errors.pop(key)
                log(f"{case.name}: timing {key} exported with check=False instead (marked *)")
                if not produce(key, path_u, lambda p, make=make: make(p, check=False)):
                    continue
                path_e = path_u
            providers = ["CPUExecutionProvider"] if runtime == "onnxruntime" else None
            with quiet():
                rt = gradvis_runtime.load(path_e, threads=threads, providers=providers)
            out = rt.run(x_np, t_np)
            heat = out.get("heatmap")
            if heat is None or not np.isfinite(heat).all():
                log(f"{case.name}: WARNING {key} heatmap missing or not finite")
            variants.append(
                Variant(
                    method,
                    runtime,
                    LABELS[method],
                    lambda r=rt: r.run(x_np, t_np),
                )
            )

    # --- eager: torch plain and captum ------------------------------------------------------
    def run_eager_plain():
        with torch.inference_mode():
            return model(x)

    variants.append(Variant("plain", "eager", CAPTUM_LABELS["plain"], run_eager_plain))

    layer = dict(model.named_modules())[case.target_layer]
    layer_gc = LayerGradCam(model, layer)
    size = tuple(x.shape[2:])

    def run_captum_gradcam():
        attr = layer_gc.attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(attr, size, interpolate_mode=case.interpolate_mode)

    gbp = GuidedBackprop(model)

    def run_captum_guided():
        return gbp.attribute(x, target=target)

    ggc = GuidedGradCam(model, layer)

    def run_captum_guided_gradcam():
        return ggc.attribute(x, target=target, interpolate_mode=case.interpolate_mode)

    for method, fn in (
        ("gradcam", run_captum_gradcam),
        ("guided_backprop", run_captum_guided),
        ("guided_gradcam", run_captum_guided_gradcam),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn()
        for text in dict.fromkeys(str(w.message) for w in caught):
            log(f"{case.name}: captum {method} warning: {text}")
        if out.numel() == 0 or not torch.isfinite(out).all():
            log(f"{case.name}: WARNING captum {method} returned an empty/non-finite map")
        variants.append(Variant(method, "eager", "captum " + CAPTUM_LABELS[method], fn))
    return variants, export_seconds


# ----------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------
def measure(variants: list[Variant], repeats: int, warmup: int, name: str) -> None:
    log(f"{name}: warm-up ({warmup} call(s) per variant, {len(variants)} variants)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v in variants:
            for _ in range(warmup):
                v.call()
        groups = [[v for v in variants if v.runtime == rt] for rt in RUNTIMES]
        groups = [g for g in groups if g]
        for r in range(repeats):
            gc.collect()
            gc.disable()
            try:
                for group in groups:
                    shift = r % len(group)
                    for v in group[shift:] + group[:shift]:
                        start = time.perf_counter()
                        v.call()
                        v.samples.append((time.perf_counter() - start) * 1e3)
            finally:
                gc.enable()
            if (r + 1) % max(1, repeats // 5) == 0 or r + 1 == repeats:
                log(f"{name}: round {r + 1}/{repeats}")


def stats(samples: list[float]) -> dict[str, float]:
    q = np.percentile(samples, [25, 50, 75])
    return {
        "median_ms": float(statistics.median(samples)),
        "p25_ms": float(q[0]),
        "p75_ms": float(q[2]),
        "min_ms": float(min(samples)),
        "n": len(samples),
    }


# ----------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------
def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def paired_ratio(a: Variant, b: Variant) -> float:
    """Median over rounds of a's time / b's time in the same round (less sensitive to load
    that changes between rounds than the ratio of the medians)."""
    return float(statistics.median(x / y for x, y in zip(a.samples, b.samples)))


def model_report(
    case: ModelCase,
    variants: list[Variant],
    errors: dict[str, str],
    check_failed: dict[str, str],
    export_seconds: dict[str, float],
) -> tuple[list[str], dict]:
    by_key = {v.key: v for v in variants if v.samples}
    med = {k: stats(v.samples)["median_ms"] for k, v in by_key.items()}

    def mark(key: str) -> str:
        return "*" if key in check_failed else ""

    lines = [f"== {case.title}, target layer {case.target_layer!r} =="]
    header = f"{'runtime':<12} {'variant':<32} {'median ms':>10} {'p25-p75 ms':>17} {'x plain':>8}"
    lines += [header, "-" * len(header)]
    for runtime in RUNTIMES:
        for method in ("plain", *EXPLAINERS):
            key = f"{runtime}/{method}"
            label = CAPTUM_LABELS[method] if runtime == "eager" else LABELS[method]
            if runtime == "eager" and method != "plain":
                label = "captum " + label
            label += mark(key)
            if key not in by_key:
                why = errors.get(key, "not run").splitlines()[0]
                lines.append(f"{runtime:<12} {label:<32} {'--':>10}   ({why[:90]})")
                continue
            s = stats(by_key[key].samples)
            base = med.get(f"{runtime}/plain")
            ratio = f"{s['median_ms'] / base:7.2f}x" if base else f"{'--':>8}"
            spread = f"{s['p25_ms']:.1f}-{s['p75_ms']:.1f}"
            lines.append(f"{runtime:<12} {label:<32} {s['median_ms']:10.1f} {spread:>17} {ratio}")

    lines += ["", "targets (ratio of medians; paired = median of per-round ratios):"]
    ratios = []

    def target_line(name: str, num: str, den: str, limit: float, at_most: bool) -> None:
        sign = "<=" if at_most else ">="
        if num not in by_key or den not in by_key:
            lines.append(f"  {name:<60} {'--':>7}  ({sign} {limit:.2f}x)  n/a")
            ratios.append(
                {
                    "name": name,
                    "ratio": None,
                    "paired_ratio": None,
                    "target": f"{sign} {limit}",
                    "verdict": "n/a",
                }
            )
            return
        value = med[num] / med[den]
        paired = paired_ratio(by_key[num], by_key[den])
        ok = value <= limit if at_most else value >= limit
        lines.append(
            f"  {name:<60} {value:6.2f}x  ({sign} {limit:.2f}x)  {verdict(ok)}"
            f"   paired {paired:.2f}x"
        )
        ratios.append(
            {
                "name": name,
                "ratio": value,
                "paired_ratio": paired,
                "target": f"{sign} {limit}",
                "verdict": verdict(ok),
                "unchecked_artifact": bool(mark(num) or mark(den)),
            }
        )

    for method in EXPLAINERS:
        for runtime in ("onnxruntime", "torchscript"):
            key = f"{runtime}/{method}"
            target_line(
                f"{LABELS[method]}{mark(key)} / plain inference ({runtime})",
                key,
                f"{runtime}/plain",
                TARGET_VS_PLAIN[method],
                at_most=True,
            )
    for method in EXPLAINERS:
        for runtime in ("onnxruntime", "torchscript"):
            key = f"{runtime}/{method}"
            target_line(
                f"captum {CAPTUM_LABELS[method]} / {LABELS[method]}{mark(key)} ({runtime})",
                f"eager/{method}",
                key,
                TARGET_VS_CAPTUM,
                at_most=False,
            )
    info = [
        f"plain {runtime} / eager = {med[f'{runtime}/plain'] / med['eager/plain']:.2f}x"
        for runtime in ("onnxruntime", "torchscript")
        if f"{runtime}/plain" in med and "eager/plain" in med
    ]
    if info:
        lines.append("  (info: " + "; ".join(info) + ")")
    if check_failed:
        lines.append(
            "export check failures (the artifact re-exported with check=False is "
            "timed instead, marked *):"
        )
        for key, text in check_failed.items():
            lines.append(f"  {key}: {text}")
    if errors:
        lines.append("export failures:")
        for key, text in errors.items():
            first, *rest = text.splitlines()
            more = f" [+{len(rest)} more lines in --json]" if rest else ""
            lines.append(f"  {key}: {first}{more}")
    if case.note:
        lines.append(f"note: {case.note}")

    data = {
        "title": case.title,
        "target_layer": case.target_layer,
        "input_shape": list(case.x.shape),
        "variants": {
            k: {
                "runtime": v.runtime,
                "method": v.method,
                "label": v.label,
                "unchecked_artifact": k in check_failed,
                **stats(v.samples),
                "samples_ms": [round(t, 3) for t in v.samples],
            }
            for k, v in by_key.items()
        },
        "ratios": ratios,
        "export_errors": errors,
        "export_check_failures": check_failed,
        "export_seconds": {k: round(t, 1) for k, t in export_seconds.items()},
        "note": case.note,
    }
    return lines, data


def code_under_test() -> dict[str, str]:
    """Where gradvis_export / gradvis_runtime were imported from, and that tree's git state
    (imported here, once, so a checkout edited during the run does not mix versions)."""
    import subprocess

    import gradvis_export
    import gradvis_runtime

    root = Path(gradvis_export.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "gradvis_export", "runtime"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        git = f"commit {head}" + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        git = "not a git checkout"
    return {
        "gradvis_export": str(Path(gradvis_export.__file__).parent),
        "gradvis_runtime": str(Path(gradvis_runtime.__file__).parent),
        "version": gradvis_export.__version__,
        "git": git,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per model (default: resnet50 20, x3d_s 10)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds (resnet50 5, x3d_s 3) and 1 warm-up call"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed calls per variant before timing (default 3)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="intra-op threads for onnxruntime and torch (default 2)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="write the artifacts to this folder (default: a temporary one)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="with --keep: reuse artifacts already in the folder"
    )
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip gv.export's artifact-vs-eager check (faster exports)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="do not time explainer artifacts whose export check failed (default: re-export "
        "them with check=False, time them and mark them *)",
    )
    parser.add_argument(
        "--installed",
        action="store_true",
        help="measure the installed gradvis_export / gradvis_runtime instead of this checkout's",
    )
    parser.add_argument("--verbose", action="store_true", help="tracebacks of failed exports")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if args.reuse and args.keep is None:
        parser.error("--reuse needs --keep DIR")
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)

    if not args.installed:
        sys.path[:0] = [str(REPO), str(REPO / "runtime")]
    torch.set_num_threads(args.threads)
    import captum
    import onnxruntime

    code = code_under_test()
    log(f"measuring {code['gradvis_export']} (gradvis {code['version']}, {code['git']})")

    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gv-bench-")))
        log(f"artifacts in {workdir}")

        results: dict[str, dict] = {}
        for name in names:
            repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)[name]
            log(f"{name}: building the model")
            case = BUILDERS[name]()
            errors: dict[str, str] = {}
            check_failed: dict[str, str] = {}
            variants, export_seconds = build_variants(case, workdir, args, errors, check_failed)
            load_before = os.getloadavg()
            measure(variants, repeats, warmup, name)
            load_after = os.getloadavg()
            lines, data = model_report(case, variants, errors, check_failed, export_seconds)
            data["repeats"], data["warmup"] = repeats, warmup
            data["loadavg_1_5_15"] = {"before": load_before, "after": load_after}
            lines.append(
                f"load average (1/5/15 min) before timing "
                f"{'/'.join(f'{v:.2f}' for v in load_before)}, after "
                f"{'/'.join(f'{v:.2f}' for v in load_after)}"
            )
            lines.insert(
                1,
                f"{repeats} round-robin rounds, {warmup} warm-up call(s) per variant, "
                f"{args.threads} threads, batch 1",
            )
            results[name] = data
            print("\n".join(lines) + "\n", flush=True)
            del variants, case
            gc.collect()

    meta = {
        "threads": args.threads,
        "batch": 1,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "captum": captum.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "export_check": not args.no_check,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        "code_under_test": code,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    footer = (
        f"median of one call, batch 1, {args.threads} threads; torch {meta['torch']}, "
        f"onnxruntime {meta['onnxruntime']}, captum {meta['captum']}; "
        f"{meta['cpu_count']} CPUs; OMP_WAIT_POLICY={meta['OMP_WAIT_POLICY']}\n"
        f"gradvis {code['version']} from {code['gradvis_export']} ({code['git']})"
    )
    print(footer)
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "models": results}, indent=2))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
