"""gradvis_export: explainers that ship inside the exported model."""

import os as _os

# libgomp spin-waits at every barrier by default; on a busy 2-core machine that makes each
# eager forward many times slower.  Sleeping idle threads, unless the user chose otherwise
# (no effect if OpenMP was already loaded, e.g. torch imported first).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__
from .errors import ExportError, GradvisError, InputError, LayerError
from .explainers import (
    AblationCAM,
    BaseCAM,
    EigenCAM,
    EigenGradCAM,
    Explainer,
    ExplainerOutput,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GuidedBackprop,
    GuidedGradCAM,
    GuidedGradCAMOutput,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from .explainers.eclip import GradECLIP, ImageTextTarget
from .exporter import export
from .legacy import GradVis
from .preprocess import UInt8Input
from .targets import (
    ClassTarget,
    DetectionTarget,
    EmbeddingSimilarityTarget,
    RawOutputTarget,
    SegmentationTarget,
    SoftmaxTarget,
    Target,
)
from .tokens import TokenGrid

__all__ = [
    "AblationCAM",
    "BaseCAM",
    "ClassTarget",
    "DetectionTarget",
    "EigenCAM",
    "EigenGradCAM",
    "EmbeddingSimilarityTarget",
    "Explainer",
    "ExplainerOutput",
    "ExportError",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GradECLIP",
    "GradVis",
    "GradvisError",
    "GuidedBackprop",
    "GuidedGradCAM",
    "GuidedGradCAMOutput",
    "HiResCAM",
    "ImageTextTarget",
    "InputError",
    "LayerCAM",
    "LayerError",
    "RawOutputTarget",
    "ScoreCAM",
    "SegmentationTarget",
    "SoftmaxTarget",
    "Target",
    "TokenGrid",
    "UInt8Input",
    "XGradCAM",
    "__version__",
    "export",
]
