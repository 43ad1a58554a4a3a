"""Transformer support: token sequences as grids, attention that traces, open_clip tower checks.

A ViT layer outputs tokens (B, prefix + H*W, D); the CAM family needs (B, D, H, W).  `TokenGrid`
is that reshape (class token dropped), applied to activations and gradients alike (it is linear).
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
