"""gradvis_export: explainers that ship inside the exported model."""

from ._version import __version__
from .errors import ExportError, GradvisError, InputError, LayerError
from .explainers import (
    BaseCAM,
    Explainer,
    ExplainerOutput,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    GuidedGradCAMOutput,
)
from .exporter import export

__all__ = [
    "BaseCAM",
    "Explainer",
    "ExplainerOutput",
    "ExportError",
    "GradCAM",
    "GradvisError",
    "GuidedBackprop",
    "GuidedGradCAM",
    "GuidedGradCAMOutput",
    "InputError",
    "LayerError",
    "__version__",
    "export",
]
