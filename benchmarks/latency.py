"""Latency of exported explainers vs. plain inference and vs. eager libraries (CPU, batch 1).

Two suites per model, each timed side by side in one process:

* ``captum``: the bare model (ONNX via ``torch.onnx.export(dynamo=True)``, TorchScript via
  ``torch.jit.trace``) and three gradvis explainers (Grad-CAM, guided backprop, guided
  Grad-CAM; ONNX and TorchScript via ``gv.export``) against captum's eager equivalents.
* ``cam``: the CAM family (Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, Grad-CAM element-wise,
  LayerCAM, EigenCAM, EigenGradCAM, ScoreCAM, AblationCAM) exported to ONNX and run on
  onnxruntime, against the bare model on onnxruntime and against pytorch-grad-cam's eager
  classes on the same input, target layer and explicit class target.

Explainer artifacts are loaded through ``gradvis_runtime.load``.  Timing:

* every variant gets ``--warmup`` untimed calls first;
* then ``repeats`` rounds; in each round every variant is called once (round-robin), so
  machine noise hits all variants alike.  Within a round the variants are grouped by
  runtime (onnxruntime, TorchScript, eager) so the thread pools of the two libraries hand
  over only twice per round; the order inside a group rotates from round to round.
* CAM suite, slow variants (ours ScoreCAM: ceil(K / chunk_size) batched forwards, K forwards in
  all; pytorch-grad-cam's ScoreCAM and AblationCAM: K forwards in batches of 16 / 32, the
  latter's with the target layer swapped for its cached, ablated output) take from seconds to
  minutes per call: they are timed apart, after the others, with
  ``--slow-repeats`` round-robin rounds (default 1) after ``--slow-warmup`` warm-up calls
  (default 0, for ours and pytorch-grad-cam alike: a first call's one-off costs are small
  against K forwards; on this machine our ScoreCAM's first and second calls differed by less
  than the noise, 145 s / 139 s on ResNet-50, 31 s / 39 s on X3D-S).  ``--skip-slow`` leaves
  them out.

The reported number is the median wall time of one call, in milliseconds.  Ratios:
explainer / plain inference on the same runtime, and eager library / exported explainer
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
* pytorch-grad-cam runs with its defaults (ScoreCAM ``batch_size`` 16, AblationCAM
  ``batch_size`` 32, no smoothing); each of its CAM objects gets its own copy of the model,
  since it leaves forward hooks on the target layer that would otherwise fire in every other
  variant's forward.  Its progress bars are off (``TQDM_DISABLE=1``).
* Our ScoreCAM / AblationCAM use the model's ``chunk_size`` (channels per batched forward,
  ``ModelCase.chunk_sizes``).  ScoreCAM is exported with ``check=False`` (marked +): the guard
  would run eager ScoreCAM, K forwards per sample, at batches 3 and 1 (minutes for either
  model here, on top of the eager batch-2 call gv.export makes before tracing); the tests cover
  those artifacts.  The "agree" columns compare our heatmap with pytorch-grad-cam's on the
  benchmark input (Pearson r, max abs difference; both maps in [0, 1]).

    python benchmarks/latency.py                        # both models, both suites
    python benchmarks/latency.py --models resnet50 --quick
    python benchmarks/latency.py --suite cam --methods gradcam,scorecam --slow-repeats 2
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
# pytorch-grad-cam's ScoreCAM / AblationCAM draw tqdm progress bars (read when tqdm loads).
os.environ.setdefault("TQDM_DISABLE", "1")

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
SUITES = ("captum", "cam", "clip", "runtimes")
#: Grad-ECLIP on CLIP ViT-B/32 (random weights) / the bare image encoder, both on onnxruntime
CLIP_TARGET_VS_PLAIN = 1.3
CLIP_REPEATS, CLIP_QUICK_REPEATS = 20, 5


@dataclass(frozen=True)
class CamMethod:
    name: str  # key (--methods, artifact names)
    gv_class: str  # gradvis_export class
    pgc_class: str  # pytorch_grad_cam class
    label: str
    gradient: bool  # a "gradient method": held to CAM_TARGET_VS_PLAIN
    chunked: bool = False  # takes chunk_size (ScoreCAM, AblationCAM)


CAM_METHODS = {
    m.name: m
    for m in (
        CamMethod("gradcam", "GradCAM", "GradCAM", "Grad-CAM", True),
        CamMethod("gradcampp", "GradCAMPlusPlus", "GradCAMPlusPlus", "Grad-CAM++", True),
        CamMethod("xgradcam", "XGradCAM", "XGradCAM", "XGrad-CAM", True),
        CamMethod("hirescam", "HiResCAM", "HiResCAM", "HiResCAM", True),
        CamMethod(
            "gradcam_elementwise",
            "GradCAMElementWise",
            "GradCAMElementWise",
            "Grad-CAM element-wise",
            True,
        ),
        CamMethod("layercam", "LayerCAM", "LayerCAM", "LayerCAM", True),
        CamMethod("eigencam", "EigenCAM", "EigenCAM", "EigenCAM", False),
        CamMethod("eigengradcam", "EigenGradCAM", "EigenGradCAM", "EigenGradCAM", True),
        CamMethod("scorecam", "ScoreCAM", "ScoreCAM", "ScoreCAM", False, chunked=True),
        CamMethod("ablationcam", "AblationCAM", "AblationCAM", "AblationCAM", False, chunked=True),
    )
}
#: --quick's CAM methods (one per code path: gradient, principal component, chunked)
QUICK_CAM_METHODS = ("gradcam", "eigengradcam", "ablationcam")
#: gradient CAM method / plain inference on onnxruntime: at most
CAM_TARGET_VS_PLAIN = 1.15
#: pytorch-grad-cam eager / our onnxruntime artifact: at least (every method)
CAM_TARGET_VS_PGC = 3.0
#: (runtime, method) of the CAM suite timed apart with --slow-repeats rounds: K full forwards
SLOW_CAM = {("onnxruntime", "scorecam"), ("eager", "scorecam"), ("eager", "ablationcam")}
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
    #: chunk_size of our ScoreCAM / AblationCAM (channels per batched forward)
    chunk_sizes: dict[str, int] = field(default_factory=dict)
    #: CAM methods exported with check=False (the export guard would cost minutes)
    unchecked_cam: tuple[str, ...] = ()


def build_resnet50() -> ModelCase:
    import torchvision

    torch.manual_seed(SEED)
    model = torchvision.models.resnet50(weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))
    # layer4 has K = 2048 channels.  ScoreCAM: 16 batched forwards of 128 masked inputs.
    # AblationCAM: the output depends on x only through layer4, so each chunk of 512 ablated
    # copies of layer4's output runs only avgpool + fc.
    return ModelCase(
        "resnet50",
        "ResNet-50 (1x3x224x224)",
        model,
        x,
        "layer4",
        "bilinear",
        chunk_sizes={"scorecam": 128, "ablationcam": 512},
        unchecked_cam=("scorecam",),
    )


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
    # blocks.4 has K = 192 channels: ScoreCAM in 3 batched forwards of 64, AblationCAM in one
    # chunk of 192 ablated copies of blocks.4's output through the head (blocks.5).
    return ModelCase(
        "x3d_s",
        "X3D-S (1x3x13x160x160)",
        model,
        x,
        "blocks.4",
        "trilinear",
        note,
        chunk_sizes={"scorecam": 64, "ablationcam": 192},
        unchecked_cam=("scorecam",),
    )


BUILDERS: dict[str, Callable[[], ModelCase]] = {
    "resnet50": build_resnet50,
    "x3d_s": build_x3d_s,
}


# ----------------------------------------------------------------------------------------
# variants
# ----------------------------------------------------------------------------------------
@dataclass
class Variant:
    method: str  # "plain" or one of EXPLAINERS / CAM_METHODS
    runtime: str  # one of RUNTIMES
    label: str
    call: Callable[[], object]
    samples: list[float] = field(default_factory=list)
    #: timed apart with --slow-repeats rounds (CAM suite: K full forwards per call)
    slow: bool = False
    #: warm-up calls, when not --warmup
    warmup: int | None = None
    #: what the last call returned
    last: object = None
    #: wall times of the warm-up calls of a slow variant
    warmup_ms: list[float] = field(default_factory=list)

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


def export_plain_onnx(
    model: nn.Module, x: torch.Tensor, path: Path, profile: str | None = None
) -> None:
    """The bare model through the dynamo ONNX exporter with its defaults (onnxscript
    optimizer on), a dynamic batch and opset 20 like gv.export's artifacts.

    With optimize=False (what gv.export passes) the bare torchvision ResNet-50 keeps a
    runtime-built zero bias on every Conv, which stops onnxruntime from fusing Conv+BN and
    makes the baseline ~1.8x slower: an unfairly easy baseline.  With `profile=
    "onnxruntime-cpu"` the bare model gets the profile's rewrite too (on its aten graph), so
    that the explainers' ratio to it stays like for like.
    """
    batch = torch.export.Dim("batch", min=1, max=4096)
    x2 = x.repeat(2, *([1] * (x.dim() - 1)))
    if profile == "onnxruntime-cpu":
        from gradvis_export.ort_cpu import split_depthwise_conv3d

        with quiet():
            program = torch.export.export(model, (x2,), dynamic_shapes=({0: batch},))
            model = split_depthwise_conv3d(program.run_decompositions().module())
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


@dataclass
class Exports:
    """Where one model's artifacts go, and what exporting them gave (per suite)."""

    case: ModelCase
    workdir: Path
    args: argparse.Namespace
    errors: dict[str, str] = field(default_factory=dict)
    check_failed: dict[str, str] = field(default_factory=dict)
    #: exported with check=False on purpose (not a failed check)
    unchecked: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def path(self, stem: str, suffix: str) -> Path:
        profile = f"_{self.args.profile}" if self.args.profile and suffix.endswith(".onnx") else ""
        return self.workdir / f"{self.case.name}_{stem}{profile}{suffix}"

    def produce(self, key: str, path: Path, make: Callable[[Path], None]) -> bool:
        """Run make(tmp) and move tmp to `path` once it succeeded (so --reuse only ever
        finds complete artifacts); a failure is recorded in `errors`.  An artifact written
        earlier in this run (by the other suite) is reused even without --reuse."""
        name = self.case.name
        if path.is_file() and (self.args.reuse or path in PRODUCED):
            log(f"{name}: reusing {path}")
            return True
        log(f"{name}: exporting {key} -> {path.name} ...")
        start = time.perf_counter()
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        try:
            make(tmp)
            os.replace(tmp, path)
        except Exception as error:  # report and go on with the other variants
            self.errors[key] = describe(error)
            log(
                f"{name}: export {key} FAILED after "
                f"{time.perf_counter() - start:.1f}s: {describe(error)}"
            )
            if self.args.verbose:
                traceback.print_exc()
            return False
        finally:
            tmp.unlink(missing_ok=True)
        PRODUCED.add(path)
        self.seconds[key] = time.perf_counter() - start
        log(f"{name}: exported {key} in {self.seconds[key]:.1f}s")
        return True

    def explainer(self, key: str, stem: str, suffix: str, explainer, check: bool = True):
        """gv.export(explainer) to <model>_<stem><suffix>; the path, or None on failure.

        An artifact that fails only gv.export's comparison with eager is re-exported with
        check=False to <stem>.unchecked<suffix> and listed in `check_failed` (unless --strict);
        it is kept apart, so it is never reused as a checked one."""
        import gradvis_export as gv

        x, args = self.case.x, self.args

        def make(p: Path, check: bool = check and not args.no_check) -> None:
            with quiet():
                profile = args.profile if p.suffix == ".onnx" else None
                gv.export(explainer, x, p, check=check, profile=profile)

        path = self.path(stem, suffix)
        path_u = self.path(stem, ".unchecked" + suffix)
        if args.reuse and not path.is_file() and path_u.is_file():
            self.check_failed[key] = (
                "export check failed in an earlier run (unchecked artifact reused)"
            )
            log(f"{self.case.name}: reusing {path_u} (export check failed earlier)")
            return path_u
        if self.produce(key, path, make):
            return path
        # the artifact was written but differs from eager: time it anyway (marked *), unless
        # --strict; any other failure leaves the row empty
        if args.strict or "differs from eager" not in self.errors.get(key, ""):
            return None
        self.check_failed[key] = self.errors.pop(key)
        log(f"{self.case.name}: timing {key} exported with check=False instead (marked *)")
        if not self.produce(key, path_u, lambda p: make(p, check=False)):
            return None
        return path_u

    def plain_onnx(self, logits: torch.Tensor):
        """The bare model's onnxruntime session (checked against eager logits), or None."""
        case = self.case
        path = self.path("plain", ".onnx")
        if not self.produce(
            "onnxruntime/plain",
            path,
            lambda p: export_plain_onnx(case.model, case.x, p, self.args.profile),
        ):
            return None
        session = onnx_session(path, self.args.threads)
        got = session.run(None, {"input": case.x.numpy()})[0]
        want = logits.numpy()
        if not np.allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max())):
            log(f"{case.name}: WARNING plain ONNX logits differ from eager")
        return session


#: artifacts written in this run (a second suite reuses them without --reuse)
PRODUCED: set[Path] = set()


def plain_onnx_variant(ex, logits, x_np) -> list[Variant]:
    """The bare model on onnxruntime (both suites' baseline), if it exported."""
    session = ex.plain_onnx(logits)
    if session is None:
        return []
    return [
        Variant("plain", "onnxruntime", LABELS["plain"], lambda: session.run(None, {"input": x_np}))
    ]


def build_variants(ex: Exports) -> list[Variant]:
    """Export, load and wrap every variant of the captum suite.  Export failures go to
    `ex.errors`; explainer artifacts that failed only gv.export's comparison with eager are
    re-exported unchecked, timed, and listed in `ex.check_failed`."""
    from captum.attr import GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam

    import gradvis_runtime

    case, args = ex.case, ex.args
    model, x, threads = case.model, case.x, args.threads
    x_np = x.numpy().copy()
    with torch.inference_mode():
        logits = model(x)
    target = int(logits.argmax(dim=1)[0])
    t_np = np.array([target], dtype=np.int64)
    variants: list[Variant] = []

    # --- plain inference baselines -----------------------------------------------------
    variants += plain_onnx_variant(ex, logits, x_np)

    path_ts = ex.path("plain", ".pt")
    if ex.produce("torchscript/plain", path_ts, lambda p: export_plain_torchscript(model, x, p)):
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
            explainer = make_explainer(method, model, case.target_layer)
            path_e = ex.explainer(key, method, suffix, explainer)
            if path_e is None:
                continue
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
    return variants


def layer_channels(model: nn.Module, layer_name: str, x: torch.Tensor) -> int:
    """K: the number of channels the target layer outputs."""
    shapes = []
    handle = dict(model.named_modules())[layer_name].register_forward_hook(
        lambda module, args, out: shapes.append(tuple(out.shape))
    )
    try:
        with torch.inference_mode():
            model(x)
    finally:
        handle.remove()
    return shapes[0][1]


def build_cam_variants(ex: Exports, methods: list[str]) -> tuple[list[Variant], dict[str, str]]:
    """The CAM suite: plain inference and our artifacts on onnxruntime, plain inference and
    pytorch-grad-cam eager; and what each chunked method computes (for the report).

    pytorch-grad-cam variants that raise on the benchmark input go to `ex.errors` as
    "pytorch-grad-cam cannot run" (slow ones are tried in their first timed call)."""
    import copy

    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    import gradvis_export as gv
    import gradvis_runtime

    case, args = ex.case, ex.args
    model, x, threads = case.model, case.x, args.threads
    x_np = x.numpy().copy()
    with torch.inference_mode():
        logits = model(x)
    target = int(logits.argmax(dim=1)[0])
    t_np = np.array([target], dtype=np.int64)
    channels = layer_channels(model, case.target_layer, x)
    variants: list[Variant] = []
    work: dict[str, str] = {}

    variants += plain_onnx_variant(ex, logits, x_np)

    # --- our artifacts on onnxruntime ----------------------------------------------------
    for name in methods:
        method = CAM_METHODS[name]
        key = f"onnxruntime/{name}"
        slow = ("onnxruntime", name) in SLOW_CAM
        if slow and args.skip_slow:
            ex.errors[key] = "skipped (--skip-slow)"
            continue
        kwargs = {}
        stem = "gradcam" if name == "gradcam" else f"cam_{name}"  # the captum suite's Grad-CAM
        if method.chunked:
            kwargs["chunk_size"] = chunk = case.chunk_sizes.get(name, 32)
            stem += f"_c{chunk}"
        explainer = getattr(gv, method.gv_class)(
            model, case.target_layer, normalize=True, target=None, **kwargs
        )
        if method.chunked:
            n = -(-channels // chunk)
            batches = f"{n} batched {'forward' if name == 'scorecam' else 'pass'}" + (
                ("s" if name == "scorecam" else "es") if n > 1 else ""
            )
        if name == "scorecam":
            work[name] = f"{channels} masked forwards of the whole model, in {batches} of {chunk}"
        elif name == "ablationcam":
            suffix = explainer.only_through_layer(x, 0)
            what = (
                f"the part after {case.target_layer!r} only (the output depends on x only "
                "through it)"
                if suffix
                else "the whole model"
            )
            work[name] = (
                f"{channels} ablations of {case.target_layer!r}, in {batches} of {chunk} through {what}"
            )
        check = name not in case.unchecked_cam
        path = ex.explainer(key, stem, ".onnx", explainer, check=check)
        if path is None:
            continue
        if not check:
            ex.unchecked[key] = (
                "exported with check=False: gv.export's guard would run eager "
                f"{method.gv_class} at batches 3 and 1"
            )
        with quiet():
            rt = gradvis_runtime.load(path, threads=threads, providers=["CPUExecutionProvider"])
        variant = Variant(
            name, "onnxruntime", method.label, lambda r=rt: r.run(x_np, t_np), slow=slow
        )
        if slow:
            variant.warmup = args.slow_warmup
        else:
            variant.last = variant.call()
            heat = variant.last.get("heatmap")
            if heat is None or not np.isfinite(heat).all():
                log(f"{case.name}: WARNING {key} heatmap missing or not finite")
        variants.append(variant)

    # --- eager: torch plain and pytorch-grad-cam -------------------------------------------
    def run_eager_plain():
        with torch.inference_mode():
            return model(x)

    variants.append(Variant("plain", "eager", CAPTUM_LABELS["plain"], run_eager_plain))
    targets = [ClassifierOutputTarget(target)]
    for name in methods:
        method = CAM_METHODS[name]
        key = f"eager/{name}"
        slow = ("eager", name) in SLOW_CAM
        if slow and args.skip_slow:
            ex.errors[key] = "skipped (--skip-slow)"
            continue
        # its own model copy: pytorch-grad-cam leaves hooks on the target layer
        own = copy.deepcopy(model).eval()
        layer = dict(own.named_modules())[case.target_layer]
        cam = getattr(pytorch_grad_cam, method.pgc_class)(model=own, target_layers=[layer])

        def run_pgc(cam=cam):
            return cam(input_tensor=x, targets=targets)

        variant = Variant(name, "eager", "pgc " + method.pgc_class, run_pgc, slow=slow)
        if slow:
            variant.warmup = args.slow_warmup  # the first call tells whether it runs at all
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    variant.last = run_pgc()
            except Exception as error:
                ex.errors[key] = f"pytorch-grad-cam cannot run: {describe(error)}"
                log(f"{case.name}: {key}: {ex.errors[key]}")
                continue
        variants.append(variant)
    return variants, work


# ----------------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------------
def measure(variants: list[Variant], repeats: int, warmup: int, name: str) -> None:
    log(f"{name}: warm-up ({warmup} call(s) per variant, {len(variants)} variants)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v in variants:
            for _ in range(warmup if v.warmup is None else v.warmup):
                v.last = v.call()
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
                        out = v.call()
                        v.samples.append((time.perf_counter() - start) * 1e3)
                        v.last = out
            finally:
                gc.enable()
            if (r + 1) % max(1, repeats // 5) == 0 or r + 1 == repeats:
                log(f"{name}: round {r + 1}/{repeats}")


def measure_slow(
    variants: list[Variant], repeats: int, name: str, errors: dict[str, str]
) -> list[Variant]:
    """Time the slow variants: each one's own warm-up, then `repeats` round-robin rounds
    (onnxruntime first, the order rotating inside each runtime).  A variant whose call raises
    is dropped and its error recorded; returns the variants that ran."""
    alive = list(variants)

    def attempt(v: Variant, timed: bool) -> None:
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = v.call()
        except Exception as error:
            who = "pytorch-grad-cam cannot run" if v.runtime == "eager" else "the run failed"
            errors[v.key] = f"{who}: {describe(error)}"
            log(f"{name}: {v.key}: {errors[v.key]}")
            alive.remove(v)
            return
        seconds = time.perf_counter() - start
        v.last = out
        (v.samples if timed else v.warmup_ms).append(seconds * 1e3)
        log(f"{name}: {v.key} {'timed' if timed else 'warm-up'} call {seconds:.1f}s")

    if not variants:
        return []
    log(f"{name}: slow variants: {', '.join(v.key for v in variants)} ({repeats} round(s))")
    for v in variants:
        for _ in range(v.warmup or 0):
            if v in alive:
                attempt(v, timed=False)
    for r in range(repeats):
        for rt in RUNTIMES:
            group = [v for v in alive if v.runtime == rt]
            if not group:
                continue
            shift = r % len(group)
            for v in group[shift:] + group[:shift]:
                gc.collect()
                attempt(v, timed=True)
    return alive


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


def agreement(ours: object, theirs: object) -> tuple[float, float] | None:
    """Pearson r and max abs difference of our heatmap and pytorch-grad-cam's."""
    if not isinstance(ours, dict) or "heatmap" not in ours or theirs is None:
        return None
    a = np.asarray(ours["heatmap"], dtype=np.float64)
    b = np.asarray(theirs, dtype=np.float64)
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    if a.std() == 0 or b.std() == 0:
        r = float("nan")
    else:
        r = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return r, float(np.abs(a - b).max())


def cam_report(
    case: ModelCase,
    variants: list[Variant],
    ex: Exports,
    methods: list[str],
    work: dict[str, str],
    rounds: tuple[int, int, int, int],
) -> tuple[list[str], dict]:
    """The CAM suite's table, targets and notes; `rounds` = (repeats, warm-up, slow repeats, slow warm-up)."""
    repeats, warmup, slow_repeats, slow_warmup = rounds
    by_key = {v.key: v for v in variants if v.samples}
    last = {v.key: v.last for v in variants}
    med = {k: stats(v.samples)["median_ms"] for k, v in by_key.items()}
    errors = ex.errors

    def mark(key: str) -> str:
        return ("*" if key in ex.check_failed else "") + ("+" if key in ex.unchecked else "")

    def paired(a: str, b: str) -> float | None:
        """Per-round ratio, only for variants timed in the same rounds."""
        if by_key[a].slow != by_key[b].slow:
            return None
        return paired_ratio(by_key[a], by_key[b])

    def show(value: float | None, width: int) -> str:
        return f"{value:{width - 1}.2f}x" if value is not None else f"{'--':>{width}}"

    lines = [
        f"== {case.title}, target layer {case.target_layer!r}: CAM family, "
        "onnxruntime artifact vs pytorch-grad-cam (eager) ==",
        f"{repeats} round-robin rounds, {warmup} warm-up call(s) per variant; slow variants "
        f"(p25-p75 column 'slow n=...'): timed apart, {slow_repeats} round(s) after "
        f"{slow_warmup} warm-up call(s); {ex.args.threads} threads, batch 1",
    ]
    header = (
        f"{'method':<26} {'ours ms':>9} {'p25-p75':>13} {'x plain':>8}  "
        f"{'pgc ms':>9} {'p25-p75':>13} {'x plain':>8}  {'pgc/ours':>8} {'paired':>7}  "
        f"{'agree r':>7} {'max|d|':>7}"
    )
    lines += [header, "-" * len(header)]

    def cell(key: str) -> tuple[str, str, str]:
        if key not in by_key:
            return f"{'--':>9}", f"{'':>13}", f"{'':>8}"
        s = stats(by_key[key].samples)
        base = med.get(f"{key.split('/')[0]}/plain")
        spread = f"{s['p25_ms']:.1f}-{s['p75_ms']:.1f}"
        if by_key[key].slow:
            spread = f"slow n={s['n']}"
        ratio = f"{s['median_ms'] / base:7.2f}x" if base else f"{'--':>8}"
        return f"{s['median_ms']:9.1f}", f"{spread:>13}", ratio

    table = []
    for name in ("plain", *methods):
        ours, theirs = f"onnxruntime/{name}", f"eager/{name}"
        label = LABELS["plain"] if name == "plain" else CAM_METHODS[name].label
        label += mark(ours) or mark(theirs)
        a, b = cell(ours), cell(theirs)
        row = {"method": name, "label": label}
        if ours in by_key and theirs in by_key:
            speedup = med[theirs] / med[ours]
            per_round = paired(theirs, ours)
            ratio = f"{speedup:7.2f}x {show(per_round, 7)}"
            row.update(pgc_over_ours=speedup, paired=per_round)
        else:
            ratio = f"{'--':>8} {'':>7}"
        agree = agreement(last.get(ours), last.get(theirs)) if name != "plain" else None
        close = f"{agree[0]:7.4f} {agree[1]:7.4f}" if agree else ""
        if agree:
            row.update(agree_r=agree[0], agree_max_abs_diff=agree[1])
        lines.append(f"{label:<26} {a[0]} {a[1]} {a[2]}  {b[0]} {b[1]} {b[2]}  {ratio}  {close}")
        table.append(row)
    lines.append(
        "(ours: onnxruntime, x plain = / the bare model on onnxruntime; pgc: pytorch-grad-cam "
        "eager, x plain = / eager torch inference; plain row: eager / onnxruntime)"
    )

    lines += ["", "targets (ratio of medians; paired = median of per-round ratios):"]
    ratios = []

    def why(key: str) -> str:
        return errors.get(key, "not run").splitlines()[0][:110]

    def target_line(name: str, num: str, den: str, limit: float | None, at_most: bool) -> None:
        sign = "<=" if at_most else ">="
        goal = f"({sign} {limit:.2f}x)" if limit is not None else "(info)"
        entry = {"name": name, "target": f"{sign} {limit}" if limit is not None else None}
        if num not in by_key or den not in by_key:
            missing = num if num not in by_key else den
            lines.append(f"  {name:<52} {'--':>8}  {goal:<11} n/a: {missing}: {why(missing)}")
            ratios.append({**entry, "ratio": None, "verdict": "n/a", "why": why(missing)})
            return
        value = med[num] / med[den]
        per_round = paired(num, den)
        result = "" if limit is None else verdict(value <= limit if at_most else value >= limit)
        tail = f"paired {per_round:.2f}x" if per_round is not None else "(slow: timed apart)"
        lines.append(f"  {name:<52} {value:8.2f}x  {goal:<11} {result:<4}  {tail}")
        ratios.append(
            {**entry, "ratio": value, "paired_ratio": per_round, "verdict": result or "info"}
        )

    for name in methods:
        method = CAM_METHODS[name]
        key = f"onnxruntime/{name}"
        target_line(
            f"{method.label}{mark(key)} / plain inference (onnxruntime)",
            key,
            "onnxruntime/plain",
            CAM_TARGET_VS_PLAIN if method.gradient else None,
            at_most=True,
        )
    for name in methods:
        method = CAM_METHODS[name]
        target_line(
            f"pgc {method.pgc_class} / {method.label}{mark(f'onnxruntime/{name}')}",
            f"eager/{name}",
            f"onnxruntime/{name}",
            CAM_TARGET_VS_PGC,
            at_most=False,
        )
    if "onnxruntime/plain" in med and "eager/plain" in med:
        lines.append(
            "  (info: plain inference eager / onnxruntime = "
            f"{med['eager/plain'] / med['onnxruntime/plain']:.2f}x)"
        )
    for name, text in work.items():
        lines.append(f"{CAM_METHODS[name].label}: {text}")
    for v in variants:
        if v.warmup_ms:
            times = ", ".join(f"{t / 1e3:.1f}s" for t in v.warmup_ms)
            lines.append(f"{v.key}: warm-up call {times} (not in the median)")
        if v.runtime == "onnxruntime" and isinstance(v.last, dict):
            heat = v.last.get("heatmap")
            if heat is None or not np.isfinite(heat).all():
                lines.append(f"WARNING {v.key}: heatmap missing or not finite")
    for title, table_ in (
        ("export check failures (re-exported with check=False, timed, marked *)", ex.check_failed),
        ("exported unchecked on purpose (marked +)", ex.unchecked),
        ("not timed", errors),
    ):
        if table_:
            lines.append(f"{title}:")
            for key, text in table_.items():
                first, *rest = text.splitlines()
                more = f" [+{len(rest)} more lines in --json]" if rest else ""
                lines.append(f"  {key}: {first[:200]}{more}")

    data = {
        "title": case.title,
        "target_layer": case.target_layer,
        "input_shape": list(case.x.shape),
        "chunk_sizes": case.chunk_sizes,
        "repeats": repeats,
        "warmup": warmup,
        "slow_repeats": slow_repeats,
        "slow_warmup": slow_warmup,
        "variants": {
            k: {
                "runtime": v.runtime,
                "method": v.method,
                "label": v.label,
                "slow": v.slow,
                **stats(v.samples),
                "samples_ms": [round(t, 3) for t in v.samples],
            }
            for k, v in by_key.items()
        },
        "table": table,
        "ratios": ratios,
        "work": work,
        "errors": errors,
        "export_check_failures": ex.check_failed,
        "exported_unchecked": ex.unchecked,
        "export_seconds": {k: round(t, 1) for k, t in ex.seconds.items()},
    }
    return lines, data


# ----------------------------------------------------------------------------------------
# clip suite: Grad-ECLIP vs the bare CLIP image encoder
# ----------------------------------------------------------------------------------------
def clip_suite(args: argparse.Namespace, workdir: Path, repeats: int, warmup: int):
    """CLIP ViT-B/32 (open_clip architecture, seeded random weights), batch 1, 224x224:
    the bare image encoder and Grad-ECLIP in both modes, all on onnxruntime."""
    import gradvis_export as gv
    import gradvis_runtime
    from gradvis_export.clip import build_clip, encode_prompts

    log("clip: building ViT-B/32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_clip("ViT-B-32", seed=SEED)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))
    text = encode_prompts(model, ["a car with its left indicator on"]).numpy()
    x_np = x.numpy()
    errors: dict[str, str] = {}
    plain = workdir / "clip_vit_b32_plain.onnx"
    if not (args.reuse and plain.exists()):
        log("clip: exporting the bare image encoder")
        export_plain_onnx(model.visual, x, plain)
    session = onnx_session(plain, args.threads)
    variants = [
        Variant(
            "plain",
            "onnxruntime",
            "image encoder (plain inference)",
            lambda: session.run(None, {"input": x_np}),
        )
    ]
    for mode in ("native", "reference"):
        path = workdir / f"clip_vit_b32_gradeclip_{mode}.onnx"
        try:
            if not (args.reuse and path.exists()):
                log(f"clip: exporting Grad-ECLIP ({mode})")
                gv.export(gv.GradECLIP(model, mode=mode), x, path, check=not args.no_check)
        except Exception as error:  # report it, time the rest
            errors[mode] = describe(error)
            continue
        art = gradvis_runtime.load(path, threads=args.threads)
        variants.append(
            Variant(
                f"gradeclip_{mode}",
                "onnxruntime",
                f"Grad-ECLIP ({mode})",
                lambda art=art: art.run(x_np, text_embedding=text),
            )
        )
    load_before = os.getloadavg()
    measure(variants, repeats, warmup, "clip")
    load_after = os.getloadavg()
    base = statistics.median(variants[0].samples)
    lines = [
        "CLIP ViT-B/32 (1x3x224x224, random weights): Grad-ECLIP vs the bare image encoder, "
        "onnxruntime",
        f"{repeats} round-robin rounds, {warmup} warm-up call(s) per variant, "
        f"{args.threads} threads, batch 1",
        f"{'variant':34s} {'median ms':>10s} {'x plain':>8s} {'paired':>8s}",
    ]
    data: dict[str, object] = {"variants": {}, "errors": errors}
    for v in variants:
        med = statistics.median(v.samples)
        paired = paired_ratio(v, variants[0])
        lines.append(f"{v.label:34s} {med:10.1f} {med / base:8.2f} {paired:8.2f}")
        data["variants"][v.key] = {**stats(v.samples), "vs_plain": med / base}
    for v in variants[1:]:
        ratio = statistics.median(v.samples) / base
        lines.append(
            f"target {v.label} <= {CLIP_TARGET_VS_PLAIN}x plain: {ratio:.2f}x "
            f"{verdict(ratio <= CLIP_TARGET_VS_PLAIN)}"
        )
    for mode, error in errors.items():
        lines.append(f"Grad-ECLIP ({mode}) not timed: {error}")
    lines.append(f"load average (1/5/15 min) {loads(load_before, load_after)}")
    data["loadavg_1_5_15"] = {"before": load_before, "after": load_after}
    return lines, data


def fmt_load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.2f}" for v in load)


def loads(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    return f"before timing {fmt_load(before)}, after {fmt_load(after)}"


def pgc_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grad-cam")
    except PackageNotFoundError:
        return "unknown"


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
        "--quick",
        action="store_true",
        help="smoke run: fewer rounds (resnet50 5, x3d_s 3), 1 warm-up call, --skip-slow, CAM "
        f"methods {','.join(QUICK_CAM_METHODS)} unless --methods",
    )
    parser.add_argument(
        "--suite",
        default="all",
        choices=("all", *SUITES),
        help="captum: Grad-CAM / guided backprop vs captum (ONNX + TorchScript); cam: the CAM "
        "family on onnxruntime vs pytorch-grad-cam; clip: Grad-ECLIP on CLIP ViT-B/32 vs its "
        "image encoder (ignores --models); runtimes: one Grad-CAM on onnxruntime, TorchScript, "
        "AOTInductor, the C++ library and its Python bridge (benchmarks/runtimes.py); all "
        "(default): the four",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help=f"CAM suite: comma-separated subset of {','.join(CAM_METHODS)} (default: all)",
    )
    parser.add_argument(
        "--skip-slow",
        action="store_true",
        help="CAM suite: leave out the K-forward variants (our ScoreCAM, pytorch-grad-cam's "
        "ScoreCAM and AblationCAM)",
    )
    parser.add_argument(
        "--slow-repeats",
        type=int,
        default=1,
        help="CAM suite: timed rounds of the slow variants (default 1; pytorch-grad-cam's "
        "ScoreCAM on ResNet-50 takes minutes per call)",
    )
    parser.add_argument(
        "--slow-warmup",
        type=int,
        default=0,
        help="CAM suite: warm-up calls of each slow variant (default 0)",
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
    parser.add_argument(
        "--profile",
        choices=["onnxruntime-cpu"],
        default=None,
        help="export every ONNX artifact (explainers and the bare model) with this gv.export "
        "profile (onnxruntime-cpu: X3D's depthwise 3-D convolutions as 2-D ones)",
    )
    parser.add_argument("--verbose", action="store_true", help="tracebacks of failed exports")
    args = parser.parse_args(argv)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    if args.reuse and args.keep is None:
        parser.error("--reuse needs --keep DIR")
    suites = SUITES if args.suite == "all" else (args.suite,)
    if args.methods is None:
        args.methods = ",".join(QUICK_CAM_METHODS if args.quick else CAM_METHODS)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in CAM_METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(CAM_METHODS)}")
    if args.quick:
        args.skip_slow = True
    if args.slow_repeats < 1 or args.slow_warmup < 0:
        parser.error("--slow-repeats must be >= 1, --slow-warmup >= 0")
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)

    if not args.installed:
        sys.path[:0] = [str(REPO), str(REPO / "runtime")]
    torch.set_num_threads(args.threads)
    import captum
    import onnxruntime
    import pytorch_grad_cam

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
        cam_results: dict[str, dict] = {}
        for name in names if {"captum", "cam"} & set(suites) else []:
            repeats = args.repeats or (QUICK_REPEATS if args.quick else DEFAULT_REPEATS)[name]
            log(f"{name}: building the model")
            case = BUILDERS[name]()
            if "captum" in suites:
                ex = Exports(case, workdir, args)
                variants = build_variants(ex)
                load_before = os.getloadavg()
                measure(variants, repeats, warmup, name)
                load_after = os.getloadavg()
                lines, data = model_report(case, variants, ex.errors, ex.check_failed, ex.seconds)
                data["repeats"], data["warmup"] = repeats, warmup
                data["loadavg_1_5_15"] = {"before": load_before, "after": load_after}
                lines.append(f"load average (1/5/15 min) {loads(load_before, load_after)}")
                lines.insert(
                    1,
                    f"{repeats} round-robin rounds, {warmup} warm-up call(s) per variant, "
                    f"{args.threads} threads, batch 1",
                )
                results[name] = data
                print("\n".join(lines) + "\n", flush=True)
                del variants, ex
                gc.collect()
            if "cam" in suites:
                ex = Exports(case, workdir, args)
                variants, work = build_cam_variants(ex, methods)
                fast = [v for v in variants if not v.slow]
                load_before = os.getloadavg()
                measure(fast, repeats, warmup, f"{name} CAM")
                load_fast = os.getloadavg()
                slow = measure_slow(
                    [v for v in variants if v.slow], args.slow_repeats, f"{name} CAM", ex.errors
                )
                load_after = os.getloadavg()
                lines, data = cam_report(
                    case,
                    fast + slow,
                    ex,
                    methods,
                    work,
                    (repeats, warmup, args.slow_repeats, args.slow_warmup),
                )
                lines.append(
                    f"load average (1/5/15 min) {loads(load_before, load_fast)}"
                    + (f", after the slow variants {fmt_load(load_after)}" if slow else "")
                )
                data["loadavg_1_5_15"] = {
                    "before": load_before,
                    "after_fast": load_fast,
                    "after": load_after,
                }
                cam_results[name] = data
                print("\n".join(lines) + "\n", flush=True)
                del variants, fast, slow, ex
                gc.collect()
            del case
            gc.collect()
        clip_results: dict[str, object] = {}
        if "clip" in suites:
            repeats = args.repeats or (CLIP_QUICK_REPEATS if args.quick else CLIP_REPEATS)
            lines, clip_results = clip_suite(args, workdir, repeats, warmup)
            print("\n".join(lines) + "\n", flush=True)
        runtime_results: dict[str, object] = {}
        if "runtimes" in suites:  # one Grad-CAM per model on every runtime (benchmarks/runtimes.py)
            from runtimes import runtimes_suite

            cases = [BUILDERS[name]() for name in names]
            lines, runtime_results = runtimes_suite(args, workdir, cases, warmup, log)
            print("\n".join(lines) + "\n", flush=True)

    meta = {
        "threads": args.threads,
        "batch": 1,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "captum": captum.__version__,
        "pytorch_grad_cam": getattr(pytorch_grad_cam, "__version__", pgc_version()),
        "suites": list(suites),
        "cam_methods": methods if "cam" in suites else [],
        "skip_slow": args.skip_slow,
        "slow_repeats": args.slow_repeats,
        "slow_warmup": args.slow_warmup,
        "wall_seconds": round(time.perf_counter() - _T0, 1),
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
        f"onnxruntime {meta['onnxruntime']}, captum {meta['captum']}, pytorch-grad-cam "
        f"{meta['pytorch_grad_cam']}; "
        f"{meta['cpu_count']} CPUs; OMP_WAIT_POLICY={meta['OMP_WAIT_POLICY']}\n"
        f"gradvis {code['version']} from {code['gradvis_export']} ({code['git']}); "
        f"whole run {meta['wall_seconds'] / 60:.1f} min"
    )
    print(footer)
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "models": results,
                    "cam": cam_results,
                    "clip": clip_results,
                    "runtimes": runtime_results,
                },
                indent=2,
            )
        )
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
