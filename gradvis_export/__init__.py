"""gradvis_export: explainers that ship inside the exported model."""

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
from .exporter import export
from .targets import (
    ClassTarget,
    DetectionTarget,
    EmbeddingSimilarityTarget,
    RawOutputTarget,
    SegmentationTarget,
    SoftmaxTarget,
    Target,
)

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
    "GradvisError",
    "GuidedBackprop",
    "GuidedGradCAM",
    "GuidedGradCAMOutput",
    "HiResCAM",
    "InputError",
    "LayerCAM",
    "LayerError",
    "RawOutputTarget",
    "ScoreCAM",
    "SegmentationTarget",
    "SoftmaxTarget",
    "Target",
    "XGradCAM",
    "__version__",
    "export",
]
