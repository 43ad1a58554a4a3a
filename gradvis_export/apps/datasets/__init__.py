"""Procedurally generated datasets with ground truth for explanations (nothing is downloaded)."""

from gradvis_export.apps.datasets.carlights import (
    CLASS_NAMES,
    CarClip,
    make_batch,
    make_clip,
    make_sequence,
)

__all__ = ["CLASS_NAMES", "CarClip", "make_batch", "make_clip", "make_sequence"]
