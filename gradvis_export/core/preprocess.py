"""Preprocessing inside the artifact: uint8 camera frames in, the model's normalised layout out.

A C++ or in-car caller then hands the artifact frames exactly as a decoder produces them:
(B, T, H, W, 3) uint8 for video, (B, H, W, 3) for images.  The layout change, the scaling to
[0, 1] and mean / std are graph operations.  With `overlay=alpha` the artifact also returns
the frames with the heatmap drawn on them (`overlay`, uint8, the frames' shape), so the caller
needs no colormap code either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from gradvis_export.core.explainer import Explainer, output_type
from gradvis_export.core.maps import normalize_per_sample, overlay_tensor
from gradvis_export.errors import InputError


class UInt8Input(Explainer):
    """Wrap an explainer so that it takes uint8 RGB frames; everything else is the explainer's.

    `overlay=alpha` adds the output `overlay`: the input frames blended with the colormapped
    map (opacity alpha * map, as `gradvis_export.apps.video.overlay.overlay`).  The map is the CAM
    (`cam` for guided Grad-CAM), or for guided backprop the gradient's magnitude per pixel
    scaled to [0, 1] per sample.
    """

    def __init__(
        self,
        explainer: Explainer,
        mean: Sequence[float] = (0.45, 0.45, 0.45),
        std: Sequence[float] = (0.225, 0.225, 0.225),
        overlay: float | None = None,
    ) -> None:
        if not isinstance(explainer, Explainer):
            raise TypeError(f"UInt8Input wraps a gradvis explainer, got {type(explainer).__name__}")
        super().__init__(explainer.model, explainer.target)
        self.explainer = explainer
        self.method = explainer.method
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32))
        if self.mean.shape != (3,) or self.std.shape != (3,) or bool((self.std <= 0).any()):
            raise InputError("mean and std need 3 values (R, G, B), std > 0")
        if overlay is not None and not 0.0 <= float(overlay) <= 1.0:
            raise InputError(f"overlay is the heatmap's opacity in [0, 1], got {overlay}")
        self.alpha = None if overlay is None else float(overlay)

    def validate_input(self, x: object) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
            raise InputError(
                f"this explainer takes uint8 frames, got {getattr(x, 'dtype', type(x).__name__)}"
            )
        if x.dim() not in (4, 5) or x.shape[-1] != 3:
            raise InputError(
                f"frames have shape {tuple(x.shape)}; expected (B,T,H,W,3) video or (B,H,W,3) "
                "images, RGB last"
            )
        return x

    def random_input(self, like: torch.Tensor, batch: int, generator: torch.Generator):
        return torch.randint(0, 256, (batch, *like.shape[1:]), generator=generator).to(torch.uint8)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(B,[T,]H,W,3) uint8 -> (B,3,[T,]H,W) float32: /255, (x - mean) / std."""
        x = (frames.to(torch.float32) / 255.0 - self.mean) / self.std
        return x.movedim(-1, 1)

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.preprocess(x)

    def forward(self, frames: torch.Tensor, *args: object, **kwargs: object) -> NamedTuple:
        out = self.explainer(self.preprocess(self.validate_input(frames)), *args, **kwargs)
        if self.alpha is None:
            return out

        if "cam" in out._fields:
            heat = out.cam
        elif out.heatmap.dim() == frames.dim():  # guided backprop: (B, 3, [T,] H, W)
            heat = normalize_per_sample(out.heatmap.abs().amax(dim=1))
        else:
            heat = out.heatmap
        drawn = overlay_tensor(frames, heat, self.alpha)
        return output_type((*out._fields, "overlay"))(*out, drawn)

    @property
    def target_layers(self) -> tuple[str, ...]:
        return self.explainer.target_layers

    def options(self) -> dict[str, object]:
        return self.explainer.options()

    def output_meanings(self, names: tuple[str, ...]) -> dict[str, str]:
        return {**self.explainer.output_meanings(names), **super().output_meanings(("overlay",))}

    def in_graph_preprocessing(self) -> tuple[tuple[float, ...], tuple[float, ...], float | None]:
        return tuple(self.mean.tolist()), tuple(self.std.tolist()), self.alpha
