"""ReciproCAM (and ViT-ReciproCAM): the map is the class probability of spatially masked copies
of the layer's output, run through the rest of the model.  Forward passes only, batched in
chunks like AblationCAM, so it exports as plain forward operators.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradvis_export.core.layers import LayerSpec, replace_output
from gradvis_export.core.maps import constant
from gradvis_export.core.targets import ClassTarget, SoftmaxTarget, Target
from gradvis_export.errors import InputError, LayerError
from gradvis_export.methods.cam import LayerContext
from gradvis_export.methods.perturbation import ChunkedCAM, chunks, repeat_samples
from gradvis_export.methods.registry import register

#: the paper's 3x3 Gaussian-like kernel (separable: [1/4, 1/2, 1/4] in each direction)
GAUSSIAN_3X3 = ((1 / 16, 1 / 8, 1 / 16), (1 / 8, 1 / 4, 1 / 8), (1 / 16, 1 / 8, 1 / 16))


def position_masks(
    sizes: Sequence[int], start: int, stop: int, gaussian: bool, dtype: torch.dtype
) -> torch.Tensor:
    """(stop - start, *sizes): the mask of each position s in [start, stop) (row-major).

    One-hot at s; with `gaussian`, GAUSSIAN_3X3 centred on s, cut at the borders (no
    renormalisation).  For a video map (T, H, W) the kernel is spatial: nonzero only in s's
    frame.  A constant, built from the shape alone (nothing of it is traced).
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) not in (2, 3):
        raise LayerError(
            f"ReciproCAM masks (H, W) or (T, H, W) positions; the layer's map has {len(sizes)} "
            "spatial dims"
        )

    def build() -> torch.Tensor:
        hit = torch.arange(start, stop).unsqueeze(1) == torch.arange(math.prod(sizes))
        masks = hit.to(dtype).view(stop - start, 1, *sizes)
        if gaussian:
            kernel = torch.tensor(GAUSSIAN_3X3, dtype=dtype)
            if len(sizes) == 2:
                masks = F.conv2d(masks, kernel.view(1, 1, 3, 3), padding=1)
            else:
                masks = F.conv3d(masks, kernel.view(1, 1, 1, 3, 3), padding=(0, 1, 1))
        return masks[:, 0]

    return constant(build)


@register
class ReciproCAM(ChunkedCAM):
    """Byun & Lee, ReciproCAM (arXiv 2209.14074); ViT-ReciproCAM (arXiv 2310.02588).

    With A the layer's map (B, K, *S): for every position s, a copy of A masked at s (one-hot,
    or with `gaussian` the 3x3 kernel GAUSSIAN_3X3 centred on s, the same mask for every
    channel; video: per frame) replaces the layer's output, the rest of the model runs on the
    |S| copies (`chunk_size` copies per batched forward), and the map at s is the softmax
    probability of the target class (a `ClassTarget`: the paper's score).  Any other target
    (detection, segmentation, embedding...) scores each copy with its own score instead.
    ReLU, upsampling and normalisation are BaseCAM's.  No gradients.

    When the output depends on the input only through the layer (`only_through_layer`), the
    input is not repeated: the copies run only the part after the layer.  A token layer
    (`reshape=TokenGrid()`, which the default layer of a ViT gets) is masked on its patch grid,
    the prefix (class) tokens kept unchanged (ViT-ReciproCAM), via `TokenGrid.mask_tokens`.

    The arguments are ChunkedCAM's (model, target_layer, normalize, target, chunk_size,
    reshape=: a TokenGrid or None, checked there) and `gaussian`.
    """

    method = "reciprocam"
    replaces_layer_output = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec | Sequence[LayerSpec] | None = None,
        normalize: bool = True,
        target: Target | None = None,
        chunk_size: int = 32,
        *,
        gaussian: bool = True,
        reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(
            model, target_layer, normalize, target, chunk_size, reshape=reshape
        )  # fmt: skip
        if not isinstance(gaussian, bool):
            raise InputError(f"gaussian must be True or False, got {gaussian!r}")
        self.gaussian = gaussian
        # the paper's score: the class probability (softmax of the same logits)
        self._probability = (
            SoftmaxTarget(self.target.key) if isinstance(self.target, ClassTarget) else None
        )

    def copy_scores(self, output: object, ctx: LayerContext, copies: int) -> torch.Tensor:
        """(B * copies) outputs -> (B, copies): the class probability, else the target's score."""
        if self._probability is None:
            return self.chunk_scores(output, ctx, copies)
        classes = repeat_samples(ctx.inputs["target"], copies)  # resolved: no -1 left
        return self._probability(output, classes).view(-1, copies)

    def layer_map(self, activation, grad, ctx):
        x = ctx.x.detach()
        grid = self.reshape  # None or a TokenGrid (checked; the default layer sets a TokenGrid)
        sizes = tuple(activation.shape[2:])
        layout = self.layout(activation)
        suffix_only = self.only_through_layer(x, ctx.index, layout)
        _, layer = self.layers[ctx.index]
        scores = []
        with torch.no_grad():
            for start, stop in chunks(math.prod(sizes), self.chunk_size):
                copies = stop - start
                masks = position_masks(sizes, start, stop, self.gaussian, activation.dtype)
                if masks.device != activation.device:
                    masks = masks.to(activation.device)

                def mask(out: torch.Tensor, masks=masks, copies=copies) -> torch.Tensor:
                    if not layout.holds(out):
                        return out  # another call of a shared module: not the one read
                    if suffix_only:
                        out = repeat_samples(out, copies, layout.batch_dim)
                    if grid is not None:
                        return grid.mask_tokens(out, masks)
                    return (out.unflatten(0, (-1, copies)) * masks.unsqueeze(1)).flatten(0, 1)

                with replace_output(layer, mask):
                    output = self.model(x if suffix_only else repeat_samples(x, copies))
                scores.append(self.copy_scores(output, ctx, copies))
        return torch.cat(scores, dim=1).view(-1, *sizes)

    def options(self) -> dict[str, object]:
        return {**super().options(), "gaussian": self.gaussian}
