"""Explainers: forward + a rule set + a combination formula."""

from .base import Explainer, ExplainerOutput
from .gradcam import BaseCAM, GradCAM
from .guided import GuidedBackprop, GuidedGradCAM, GuidedGradCAMOutput

__all__ = [
    "BaseCAM",
    "Explainer",
    "ExplainerOutput",
    "GradCAM",
    "GuidedBackprop",
    "GuidedGradCAM",
    "GuidedGradCAMOutput",
]
