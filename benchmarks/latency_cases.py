"""What benchmarks/latency.py measures: its constants and targets, the model cases, and the
methods of each suite (names from the registry, `gv.METHODS`).

The registry is read lazily (`captum_methods()`, `cam_methods()`): latency.py chooses which
gradvis_export to import (this checkout's, or the installed one with --installed) before it.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import torch
from torch import nn

MODELS = ("resnet50", "x3d_s")
DEFAULT_REPEATS = {"resnet50": 20, "x3d_s": 10}
QUICK_REPEATS = {"resnet50": 5, "x3d_s": 3}
#: the captum suite, by registry name (its methods are the registered ones listed here)
LABELS = {
    "plain": "plain inference",
    "gradcam": "Grad-CAM",
    "guided": "guided backprop",
    "guided-gradcam": "guided Grad-CAM",
}
CAPTUM_LABELS = {
    "plain": "plain inference (eager)",
    "gradcam": "LayerGradCam + upsample",
    "guided": "GuidedBackprop",
    "guided-gradcam": "GuidedGradCam",
}
#: explainer -> max allowed (explainer latency / plain latency) on the same runtime
TARGET_VS_PLAIN = {"gradcam": 1.10, "guided": 2.5, "guided-gradcam": 2.7}
#: min allowed (captum eager latency / exported explainer latency)
TARGET_VS_CAPTUM = 2.0
SUITES = ("captum", "cam", "clip", "runtimes")
#: Grad-ECLIP on CLIP ViT-B/32 (random weights) / the bare image encoder, both on onnxruntime
CLIP_TARGET_VS_PLAIN = 1.3
CLIP_REPEATS, CLIP_QUICK_REPEATS = 20, 5

#: what the registry cannot know of each CAM method: pytorch-grad-cam's class and our label.
#: It must cover exactly the registry's CAM family (`cam_methods()` checks).  None: pytorch-grad-cam
#: has no such method (no eager baseline to time against).
CAM_TABLE = {
    "gradcam": ("GradCAM", "Grad-CAM"),
    "gradcam++": ("GradCAMPlusPlus", "Grad-CAM++"),
    "xgradcam": ("XGradCAM", "XGrad-CAM"),
    "hirescam": ("HiResCAM", "HiResCAM"),
    "gradcam-elementwise": ("GradCAMElementWise", "Grad-CAM element-wise"),
    "layercam": ("LayerCAM", "LayerCAM"),
    "eigencam": ("EigenCAM", "EigenCAM"),
    "eigengradcam": ("EigenGradCAM", "EigenGradCAM"),
    "scorecam": ("ScoreCAM", "ScoreCAM"),
    "ablationcam": ("AblationCAM", "AblationCAM"),
    "reciprocam": (None, "ReciproCAM"),
}
#: --quick's CAM methods (one per code path: gradient, principal component, chunked)
QUICK_CAM_METHODS = ("gradcam", "eigengradcam", "ablationcam")
#: gradient CAM method / plain inference on onnxruntime: at most
CAM_TARGET_VS_PLAIN = 1.15
#: pytorch-grad-cam eager / our onnxruntime artifact: at least (every method)
CAM_TARGET_VS_PGC = 3.0
#: (runtime, method) of the CAM suite timed apart with --slow-repeats rounds: K full forwards.
#: Not ReciproCAM: its |S| copies (49 on ResNet-50, 325 on X3D-S) run only the head when the
#: output depends on the input only through the layer, as on both benchmark models.
SLOW_CAM = {("onnxruntime", "scorecam"), ("eager", "scorecam"), ("eager", "ablationcam")}
RUNTIMES = ("onnxruntime", "torchscript", "eager")
SEED = 0

T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# ----------------------------------------------------------------------------------------
# methods (from the registry)
# ----------------------------------------------------------------------------------------
@cache
def captum_methods() -> tuple[str, ...]:
    """The captum suite's explainers: the registered methods that captum has (TARGET_VS_PLAIN's
    keys), in registry order."""
    import gradvis_export as gv

    tables = {"LABELS": LABELS, "CAPTUM_LABELS": CAPTUM_LABELS}
    for title, table in tables.items():
        if set(table) - {"plain"} != set(TARGET_VS_PLAIN):
            raise AssertionError(f"{title} and TARGET_VS_PLAIN list different methods")
    unknown = set(TARGET_VS_PLAIN) - set(gv.METHODS)
    if unknown:
        raise AssertionError(f"not in gv.METHODS: {sorted(unknown)}")
    return tuple(name for name in gv.METHODS if name in TARGET_VS_PLAIN)


@dataclass(frozen=True)
class CamMethod:
    name: str  # the registry's public name (--methods, artifact names)
    gv_class: str  # gradvis_export class
    pgc_class: str | None  # pytorch_grad_cam class (None: it has none)
    label: str
    gradient: bool  # a "gradient method" (cls.uses_gradients): held to CAM_TARGET_VS_PLAIN
    chunked: bool  # takes chunk_size (ScoreCAM, AblationCAM, ReciproCAM)


@cache
def cam_methods() -> dict[str, CamMethod]:
    """The CAM suite's methods: the registry's CAM family (gv.BaseCAM subclasses), in registry
    order, with CAM_TABLE's pytorch-grad-cam class and label."""
    import gradvis_export as gv
    from gradvis_export.methods.perturbation import ChunkedCAM

    family = {name: cls for name, cls in gv.METHODS.items() if issubclass(cls, gv.BaseCAM)}
    if set(CAM_TABLE) != set(family):
        raise AssertionError(
            f"CAM_TABLE does not cover the registry's CAM family: missing "
            f"{sorted(set(family) - set(CAM_TABLE))}, not registered "
            f"{sorted(set(CAM_TABLE) - set(family))}"
        )
    stray = (set(QUICK_CAM_METHODS) | {name for _, name in SLOW_CAM}) - set(family)
    if stray:
        raise AssertionError(f"QUICK_CAM_METHODS / SLOW_CAM name unknown methods {sorted(stray)}")
    return {
        name: CamMethod(
            name,
            cls.__name__,
            *CAM_TABLE[name],
            gradient=cls.uses_gradients,
            chunked=issubclass(cls, ChunkedCAM),
        )
        for name, cls in family.items()
    }


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
    #: chunk_size of our ScoreCAM / AblationCAM (channels per batched forward), ReciproCAM
    #: (positions per batched forward)
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
    # copies of layer4's output runs only avgpool + fc; ReciproCAM: its 7x7 = 49 masked copies
    # in one chunk, through avgpool + fc too.
    return ModelCase(
        "resnet50",
        "ResNet-50 (1x3x224x224)",
        model,
        x,
        "layer4",
        "bilinear",
        chunk_sizes={"scorecam": 128, "ablationcam": 512, "reciprocam": 49},
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
    # chunk of 192 ablated copies of blocks.4's output through the head (blocks.5); ReciproCAM
    # masks its 13x5x5 = 325 positions, in 5 chunks of 65 copies through the head.
    return ModelCase(
        "x3d_s",
        "X3D-S (1x3x13x160x160)",
        model,
        x,
        "blocks.4",
        "trilinear",
        note,
        chunk_sizes={"scorecam": 64, "ablationcam": 192, "reciprocam": 65},
        unchecked_cam=("scorecam",),
    )


BUILDERS: dict[str, Callable[[], ModelCase]] = {
    "resnet50": build_resnet50,
    "x3d_s": build_x3d_s,
}
