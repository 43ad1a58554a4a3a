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
import torch.nn.functional as F
from torch import nn

from .errors import InputError, LayerError
from .mode import is_tracing


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


def qkv(block: nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The query, key and value tokens (B, N, D) of an open_clip block's self-attention."""
    attn = block.attn
    return F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v over `heads` heads of width d = D / heads: (B, Nq, D),
    before the output projection (heads=1 is the Grad-ECLIP authors' full-width recomputation).
    q may hold fewer tokens than k and v (only the class token's query, say)."""
    b, n, d = q.shape
    width = d // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, t.shape[1], heads, width).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-2, -1) * (width**-0.5)
    if mask is not None:
        scores = scores + mask
    return (scores.softmax(dim=-1) @ split(v)).transpose(1, 2).reshape(b, n, d)


def check_clip_tower(visual: nn.Module) -> nn.Module:
    """The open_clip ViT image tower of `visual`, or a clear error naming what does not fit."""
    if not isinstance(visual, nn.Module):
        raise InputError(f"expected an open_clip CLIP model, got {type(visual).__name__}")
    visual = getattr(visual, "visual", visual)
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None or not hasattr(visual, "class_embedding") or not hasattr(visual, "conv1"):
        raise InputError(
            f"Grad-ECLIP needs a ViT image tower (open_clip VisionTransformer); this model's is "
            f"{type(visual).__name__}. ResNet CLIPs have no class-token attention: use GradCAM "
            "with EmbeddingSimilarityTarget on a layer of model.visual instead"
        )
    last = blocks[-1]
    attn = getattr(last, "attn", None)
    if not isinstance(attn, nn.MultiheadAttention) or attn.in_proj_weight is None:
        raise InputError(
            f"Grad-ECLIP supports blocks with nn.MultiheadAttention (open_clip's default block); "
            f"the last block's attention is {type(attn).__name__}"
        )
    if (
        getattr(visual, "attn_pool", None) is not None
        or getattr(visual, "pool_type", "tok") != "tok"
    ):
        raise InputError(
            "Grad-ECLIP explains the class token: the image tower must pool with its class "
            "token (pool_type 'tok', no attentional pooler)"
        )
    if not getattr(visual.transformer, "batch_first", True):
        raise InputError("image towers that are not batch-first are not supported")
    return visual
