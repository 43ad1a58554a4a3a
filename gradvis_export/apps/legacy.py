"""The seed tool's interface, kept for its users: GradVis(model).compute_grad(input_tensor, path).

It writes the clip's frames with the heatmap overlaid (PNG per frame) and an MP4 of them.
New code should use the explainers and `gradvis explain` directly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gradvis_export.apps.models import RECORDED_LAYER
from gradvis_export.core.explainer import Explainer
from gradvis_export.errors import InputError


class GradVis:
    """GradVis(model).compute_grad(input_tensor=clip, path=outdir) -> outdir with overlays."""

    def __init__(
        self,
        model: nn.Module,
        method: str = "gradcam",
        layer: str | None = None,
        fps: float = 8.0,
        alpha: float = 0.5,
    ) -> None:
        self.model, self.method, self.layer = model, method, layer
        self.fps, self.alpha = fps, alpha
        #: the explainer the last `compute_grad` ran (its `target_layers`: the layer it read)
        self.explainer: Explainer | None = None

    def compute_grad(
        self, input_tensor: torch.Tensor, path: str | os.PathLike, target: int | None = None
    ) -> Path:
        from gradvis_export.apps.explain import cli_explainer
        from gradvis_export.apps.video.encode import mp4_writer
        from gradvis_export.apps.video.overlay import overlay

        clip = input_tensor if input_tensor.dim() == 5 else input_tensor[None]
        if clip.dim() != 5:
            raise InputError(
                f"input_tensor has shape {tuple(input_tensor.shape)}; expected a clip (C,T,H,W) "
                "or (1,C,T,H,W)"
            )
        out_dir = Path(path)
        out_dir.mkdir(parents=True, exist_ok=True)
        # the layer given, else the one the model's training recorded (a shipped model), else
        # the library's rule (`gradvis_export.core.layers.default_layer`, on the first call)
        layer = self.layer or getattr(self.model, RECORDED_LAYER, None)
        explainer = self.explainer = cli_explainer(self.method, self.model, layer)
        result = explainer(clip[:1].float(), target)
        heat = result.cam if hasattr(result, "cam") else result.heatmap
        heat = heat[0].abs().amax(0) if heat.dim() == 5 else heat[0]  # (T, H, W)
        heat = (heat / heat.max().clamp_min(1e-12)).numpy()
        # each frame min-max scaled as a whole (one min and max over its channels, not one per
        # channel), so the colours keep their balance: (C, T, H, W), reduced over C, H, W
        frames = clip[0].float()
        low = frames.amin(dim=(0, 2, 3), keepdim=True)
        high = frames.amax(dim=(0, 2, 3), keepdim=True)
        frames = ((frames - low) / (high - low).clamp_min(1e-12) * 255).round().byte()
        frames = frames.permute(1, 2, 3, 0).numpy()  # (T, H, W, C)
        if frames.shape[-1] == 1:
            frames = np.repeat(frames, 3, axis=-1)
        images = [overlay(f[..., :3], h, self.alpha) for f, h in zip(frames, heat)]
        from PIL import Image

        for t, image in enumerate(images):
            Image.fromarray(image).save(out_dir / f"frame_{t:04d}.png")
        h, w = images[0].shape[:2]
        with mp4_writer(out_dir / "overlay.mp4", self.fps, w + w % 2, h + h % 2) as write:
            for image in images:
                write(np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge"))
        return out_dir
