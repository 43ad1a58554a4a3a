"""Transformer support: token sequences as grids, attention that traces, open_clip tower checks.

A ViT layer outputs tokens (B, prefix + H*W, D); the CAM family needs (B, D, H, W).  `TokenGrid`
is that reshape (class token dropped), applied to activations and gradients alike (it is linear);
for the methods that replace the layer's output with altered copies, `TokenGrid.mask_tokens`
places a grid mask back on the tokens (ReciproCAM: positions) and `TokenGrid.mask_channels` a
channel mask (AblationCAM: channel k of the grid is feature k of the tokens).
Attention is traced with the math SDPA backend so its backward becomes plain matmul/softmax ops.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from gradvis_export.core.mode import is_tracing
from gradvis_export.errors import LayerError


class TokenGrid:
    """(B, prefix + H*W, D) tokens -> (B, D, H, W); the first `prefix` tokens (class) dropped.

    `grid` = (H, W), or (T, H, W) for video tokens (B, prefix + T*H*W, D) -> (B, D, T, H, W);
    None means a square 2-D grid, inferred from the token count.  `batch_first=False` for
    (L, B, D) layouts (older open_clip / OpenAI CLIP).
    """

    def __init__(
        self,
        grid: tuple[int, ...] | None = None,
        prefix: int = 1,
        batch_first: bool = True,
    ) -> None:
        if grid is not None and (len(grid) not in (2, 3) or min(int(g) for g in grid) < 1):
            raise LayerError(f"grid is (H, W) or (T, H, W) of positive sizes, got {grid!r}")
        self.grid = tuple(int(g) for g in grid) if grid is not None else None
        self.prefix = int(prefix)
        self.batch_first = batch_first

    def grid_of(self, tokens: int) -> tuple[int, ...]:
        patches = tokens - self.prefix
        if self.grid is not None:
            if math.prod(self.grid) != patches:
                raise LayerError(
                    f"the layer has {patches} patch tokens (after {self.prefix} prefix token(s)), "
                    f"which is not a {'x'.join(map(str, self.grid))} grid; pass the right grid"
                )
            return self.grid
        side = math.isqrt(max(patches, 0))
        if side * side != patches or patches == 0:
            raise LayerError(
                f"the layer has {patches} patch tokens (after {self.prefix} prefix token(s)), not "
                "a square grid; pass TokenGrid(grid=(H, W)) or the right prefix"
            )
        return side, side

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() != 3:
            raise LayerError(
                f"TokenGrid expects a token layer output (B, tokens, D); got shape {tuple(t.shape)}"
            )
        if not self.batch_first:
            t = t.transpose(0, 1)
        grid = self.grid_of(t.shape[1])
        patches = t[:, self.prefix :]
        return patches.transpose(1, 2).reshape(t.shape[0], t.shape[2], *grid)

    def mask_tokens(self, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The inverse placement: tokens whose patch tokens are scaled by a grid mask.

        `t` is the layer's output (B, prefix + H*W, D) ((L, B, D) if not batch_first), `mask`
        (M, *grid) with B a multiple of M; copy b of the tokens gets mask[b % M] (samples
        repeated M times in a row, each copy its own mask; M = 1: one mask for all).  The prefix
        tokens (class) are kept unchanged, so a masked layer output still feeds the rest of the
        model as tokens (ViT-ReciproCAM's masked copies).
        """
        if t.dim() != 3:
            raise LayerError(
                f"TokenGrid expects a token layer output (B, tokens, D); got shape {tuple(t.shape)}"
            )
        batch_dim = 0 if self.batch_first else 1
        grid = self.grid_of(t.shape[1 - batch_dim])
        if tuple(mask.shape[1:]) != tuple(grid):
            raise LayerError(
                f"the mask has shape {tuple(mask.shape)}; the layer's patch tokens form a "
                f"{'x'.join(map(str, grid))} grid, so the mask must be (M, {', '.join(map(str, grid))})"
            )
        copies = mask.shape[0]
        # (M, prefix + H*W): 1 for the prefix tokens, the mask for the patches (row-major, as
        # __call__ lays them out)
        weights = torch.nn.functional.pad(mask.flatten(1).to(t.dtype), (self.prefix, 0), value=1.0)
        if self.batch_first:  # (B, M, N, D) * (M, N, 1)
            return (t.unflatten(0, (-1, copies)) * weights.unsqueeze(-1)).flatten(0, 1)
        # (N, B, M, D) * (N, 1, M, 1)
        return (t.unflatten(1, (-1, copies)) * weights.t()[:, None, :, None]).flatten(1, 2)

    def mask_channels(self, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The channel-wise placement: tokens whose features are scaled by a channel mask.

        Channel k of the grid (`__call__`) is feature k of the patch tokens.  `t` is the layer's
        output (B, prefix + H*W, D) ((L, B, D) if not batch_first), `mask` (M, D) with B a
        multiple of M; copy b of the tokens gets mask[b % M] (samples repeated M times in a row,
        as in `mask_tokens`).  The mask scales feature k of every token, the prefix (class)
        tokens included: pytorch-grad-cam's AblationCAM with a reshape_transform (its
        AblationLayerVit) ablates channel k of the grid the same way, on all the tokens of the
        layer's output, so an ablated feature cannot reach the head through the class token.
        """
        if t.dim() != 3:
            raise LayerError(
                f"TokenGrid expects a token layer output (B, tokens, D); got shape {tuple(t.shape)}"
            )
        batch_dim = 0 if self.batch_first else 1
        self.grid_of(t.shape[1 - batch_dim])  # the token count must fold into the grid
        if mask.dim() != 2 or mask.shape[1] != t.shape[2]:
            raise LayerError(
                f"the mask has shape {tuple(mask.shape)}; the layer's tokens have {t.shape[2]} "
                f"features, so the mask must be (M, {t.shape[2]})"
            )
        copies = mask.shape[0]
        mask = mask.to(t.dtype)
        if self.batch_first:  # (B, M, N, D) * (M, 1, D)
            return (t.unflatten(0, (-1, copies)) * mask.unsqueeze(1)).flatten(0, 1)
        # (N, B, M, D) * (M, D)
        return (t.unflatten(1, (-1, copies)) * mask).flatten(1, 2)

    def metadata(self) -> dict[str, object]:
        return {"type": "TokenGrid", "grid": self.grid, "prefix": self.prefix}


@contextlib.contextmanager
def math_attention() -> Iterator[None]:
    """While tracing for export, F.scaled_dot_product_attention runs its math backend: plain
    ops with an exportable backward.  Eager calls keep the fast kernels (same values to ~1e-6)."""
    if not is_tracing():
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        yield
