"""Explainers: forward + a rule set + a combination formula."""

from .base import Explainer, ExplainerOutput, GuidedGradCAMOutput
from .eigencam import EigenCAM, EigenGradCAM
from .gradcam import (
    BaseCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from .guided import GuidedBackprop, GuidedGradCAM
from .scorecam import AblationCAM, ScoreCAM

__all__ = [
    "AblationCAM",
    "BaseCAM",
    "EigenCAM",
    "EigenGradCAM",
    "Explainer",
    "ExplainerOutput",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "GuidedGradCAMOutput",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
]
