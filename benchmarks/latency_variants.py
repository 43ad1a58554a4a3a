"""What benchmarks/latency.py times, exported and loaded: the bare models (ONNX, TorchScript),
the Exports helper (export once, check, reuse, fall back to unchecked artifacts), and the
variants of each suite (captum, cam, clip)."""

from __future__ import annotations

import argparse
import os
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from latency_cases import (
    CAPTUM_LABELS,
    LABELS,
    SEED,
    SLOW_CAM,
    ModelCase,
    cam_methods,
    captum_methods,
    describe,
    log,
)
from latency_measure import Variant
from torch import nn


def quiet():
    """Silence exporter chatter (prints, warnings, info logs) while exporting."""
    from gradvis_export.exporter.formats import quiet as exporter_quiet

    return exporter_quiet()


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
        from gradvis_export.exporter.ort_cpu import split_depthwise_conv3d

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


def captum_explainer(method: str, model: nn.Module, target_layer: str):
    """The captum suite's explainer `method`: the target layer for the methods that read one,
    activations="relu" for the guided ones (what captum's GuidedBackprop guides)."""
    import gradvis_export as gv

    cls = gv.METHODS[method]
    return gv.make_explainer(
        method,
        model,
        target_layer if cls.takes_layer else None,
        activations="relu" if cls.takes_activations else None,
    )


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


def benchmark_input(case: ModelCase) -> tuple[np.ndarray, torch.Tensor, int, np.ndarray]:
    """The case's input as NumPy, its eager logits, the class explained (their argmax) and
    that class as the artifacts' target input."""
    x_np = case.x.numpy().copy()
    with torch.inference_mode():
        logits = case.model(case.x)
    target = int(logits.argmax(dim=1)[0])
    return x_np, logits, target, np.array([target], dtype=np.int64)


def eager_plain_variant(model: nn.Module, x: torch.Tensor) -> Variant:
    """The bare model in eager torch (both suites' eager baseline)."""

    def run_eager_plain():
        with torch.inference_mode():
            return model(x)

    return Variant("plain", "eager", CAPTUM_LABELS["plain"], run_eager_plain)


def build_variants(ex: Exports) -> list[Variant]:
    """Export, load and wrap every variant of the captum suite.  Export failures go to
    `ex.errors`; explainer artifacts that failed only gv.export's comparison with eager are
    re-exported unchecked, timed, and listed in `ex.check_failed`."""
    from captum.attr import GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam

    import gradvis_runtime

    case, args = ex.case, ex.args
    model, x, threads = case.model, case.x, args.threads
    x_np, logits, target, t_np = benchmark_input(case)
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
    for method in captum_methods():
        for runtime, suffix in (("onnxruntime", ".onnx"), ("torchscript", ".pt")):
            key = f"{runtime}/{method}"
            explainer = captum_explainer(method, model, case.target_layer)
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
    variants.append(eager_plain_variant(model, x))

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

    captum_runs = {
        "gradcam": run_captum_gradcam,
        "guided": run_captum_guided,
        "guided-gradcam": run_captum_guided_gradcam,
    }
    for method in captum_methods():
        fn = captum_runs[method]
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
    x_np, logits, target, t_np = benchmark_input(case)
    channels = layer_channels(model, case.target_layer, x)
    variants: list[Variant] = []
    work: dict[str, str] = {}

    variants += plain_onnx_variant(ex, logits, x_np)

    # --- our artifacts on onnxruntime ----------------------------------------------------
    for name in methods:
        method = cam_methods()[name]
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
        explainer = gv.make_explainer(
            name, model, case.target_layer, normalize=True, target=None, **kwargs
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
    variants.append(eager_plain_variant(model, x))
    targets = [ClassifierOutputTarget(target)]
    for name in methods:
        method = cam_methods()[name]
        if method.pgc_class is None:
            continue  # not in pytorch-grad-cam (ReciproCAM): ours alone
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
# clip suite: Grad-ECLIP vs the bare CLIP image encoder
# ----------------------------------------------------------------------------------------
def build_clip_variants(
    args: argparse.Namespace, workdir: Path
) -> tuple[list[Variant], dict[str, str]]:
    """CLIP ViT-B/32 (open_clip architecture, seeded random weights), batch 1, 224x224:
    the bare image encoder and Grad-ECLIP in both modes, all on onnxruntime; and the modes
    that did not export."""
    import gradvis_export as gv
    import gradvis_runtime
    from gradvis_export.apps.clip import build_clip, encode_prompts

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
    return variants, errors
