"""gradvis_export: explainers that ship inside the exported model."""

import os as _os

# libgomp spin-waits at every barrier by default; on a busy 2-core machine that makes each
# eager forward many times slower.  Sleeping idle threads, unless the user chose otherwise
# (no effect if OpenMP was already loaded, e.g. torch imported first).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from gradvis_export import metrics as metrics  # gv.metrics: the faithfulness metrics
from gradvis_export._version import __version__
from gradvis_export.apps.legacy import GradVis
from gradvis_export.core.explainer import Explainer, ExplainerOutput, GuidedGradCAMOutput
from gradvis_export.core.preprocess import UInt8Input
from gradvis_export.core.targets import (
    ClassTarget,
    DetectionTarget,
    EmbeddingSimilarityTarget,
    RawOutputTarget,
    SegmentationTarget,
    SoftmaxTarget,
    Target,
)
from gradvis_export.core.tokens import TokenGrid
from gradvis_export.errors import ExportError, GradvisError, InputError, LayerError
from gradvis_export.exporter.api import export
from gradvis_export.methods import (
    METHODS,
    AblationCAM,
    BaseCAM,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GradECLIP,
    GuidedBackprop,
    GuidedGradCAM,
    HiResCAM,
    ImageTextTarget,
    LayerCAM,
    ReciproCAM,
    ScoreCAM,
    XGradCAM,
    make_explainer,
)

__all__ = [
    "METHODS",
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
    "ReciproCAM",
    "ScoreCAM",
    "SegmentationTarget",
    "SoftmaxTarget",
    "Target",
    "TokenGrid",
    "UInt8Input",
    "XGradCAM",
    "__version__",
    "export",
    "make_explainer",
]
