"""Explainers on a visible taxonomy, one file per family, every one "forward + a rule set + a
combination formula":

* `cam`: the CAM family, one base (`BaseCAM`) and a short subclass per channel weighting;
* `eigen`: EigenCAM / EigenGradCAM (the first principal component, in-graph);
* `perturbation`: ScoreCAM / AblationCAM (extra forward passes, batched in the graph);
* `reciprocam`: ReciproCAM / ViT-ReciproCAM (masked copies of the layer's output, forward only);
* `guided`: guided backprop and guided Grad-CAM (the guided rule set);
* `eclip`: Grad-ECLIP for CLIP ViTs (not in the registry: it takes a CLIP model and a text).

`METHODS` (the registry) maps each public name to its class, in this order.
"""

# ruff: noqa: I001 - the import order below is the registry's order (taxonomy, then CLI)
from gradvis_export.methods.cam import (
    BaseCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from gradvis_export.methods.eigen import EigenCAM, EigenGradCAM
from gradvis_export.methods.perturbation import AblationCAM, ScoreCAM
from gradvis_export.methods.reciprocam import ReciproCAM
from gradvis_export.methods.guided import GuidedBackprop, GuidedGradCAM
from gradvis_export.methods.eclip import GradECLIP, ImageTextTarget
from gradvis_export.methods.registry import METHODS, make_explainer, method_class

__all__ = [
    "METHODS",
    "AblationCAM",
    "BaseCAM",
    "EigenCAM",
    "EigenGradCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GradECLIP",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "ImageTextTarget",
    "LayerCAM",
    "ReciproCAM",
    "ScoreCAM",
    "XGradCAM",
    "make_explainer",
    "method_class",
]
