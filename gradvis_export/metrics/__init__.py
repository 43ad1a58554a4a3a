"""Faithfulness metrics of explanation maps, as plain functions on torch tensors.

Localisation: `pointing_game`, `energy_in_box`.  Perturbation: `deletion_auc`,
`insertion_auc` (RISE), `road`, `road_combined` (ROAD).  Explainer-level: `adcc`.  Each takes
images (B,C,H,W) with maps (B,H,W) or video (B,C,T,H,W) with maps (B,T,H,W) (ROAD: images
only); a signed map with a channel axis is reduced by `saliency`.  Results are per sample.
"""

from gradvis_export.metrics.coherency import ADCCResult, adcc
from gradvis_export.metrics.imputation import (
    RoadResult,
    linear_impute,
    noisy_linear_impute,
    road,
    road_combined,
)
from gradvis_export.metrics.localisation import box_mask, energy_in_box, pointing_game
from gradvis_export.metrics.perturbation import (
    Curve,
    baseline_input,
    blurred,
    deletion_auc,
    insertion_auc,
)
from gradvis_export.metrics.saliency import saliency

__all__ = [
    "ADCCResult",
    "Curve",
    "RoadResult",
    "adcc",
    "baseline_input",
    "blurred",
    "box_mask",
    "deletion_auc",
    "energy_in_box",
    "insertion_auc",
    "linear_impute",
    "noisy_linear_impute",
    "pointing_game",
    "road",
    "road_combined",
    "saliency",
]
