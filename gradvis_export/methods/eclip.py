"""Grad-ECLIP (Zhao et al., ICML 2024): which image regions make CLIP match a text embedding.

Explained score: s = cos(image embedding, text_embedding), the text embedding being a graph
input, so one artifact serves every prompt.  In the last image block, with q, k, v the class
query and the tokens' keys and values and o the attention output at the class token:

    g   = ds/do                       channel weights (D,)
    w_i = min-max_i cos(q, k_i)       spatial weights over the patches
    H_i = ReLU(w_i * sum_c g_c v_ic)  over the patches (class token excluded)

then reshaped to the patch grid, min-max normalised and bilinearly upsampled to the image.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from gradvis_export.core.explainer import Explainer, check_input
from gradvis_export.core.maps import normalize_per_sample, resize_linear
from gradvis_export.core.targets import InputSpec, Target
from gradvis_export.core.tokens import math_attention
from gradvis_export.errors import InputError
from gradvis_export.methods.backward import gradients

MODES = ("native", "reference")


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


class ImageTextTarget(Target):
    """Cosine similarity of the image embedding (B,D) with `text_embedding` (B,D)."""

    specs = (
        InputSpec(
            "text_embedding",
            torch.float32,
            None,
            "float (B, D): the prompt's CLIP text embedding (gradvis_export.apps.clip.encode_prompts)",
            2,
        ),
    )

    def check(self, output, inputs):
        d, text = output.shape[1], inputs["text_embedding"]
        if text.dim() != 2 or text.shape[1] != d:
            raise InputError(
                f"text_embedding has shape {tuple(text.shape)}; the model's image embedding has "
                f"{d} dimensions, so text_embedding must be (B, {d}) — encode the prompt with the "
                "same CLIP model (gradvis_export.apps.clip.encode_prompts)"
            )

    def forward(self, output: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(output, text_embedding, dim=1, eps=1e-8)

    def example(self, name, batch, x, output, generator):
        return torch.randn((batch, output.shape[1]), generator=generator)


class GradECLIP(Explainer):
    """Grad-ECLIP for an open_clip ViT CLIP: forward(image, text_embedding) ->
    (image_embedding, similarity, heatmap).

    mode="native": the last block's attention is the model's own multi-head attention, so the
    explained score is exactly the model's similarity; sum_c g_c v_ic is then the head-summed
    gradient of the score w.r.t. the class token's attention row.
    mode="reference": the authors' recomputation of the last block's attention with one head
    over the full width (scale 1/sqrt(D)); the explained score then differs from the model's.
    In both modes the `similarity` output is the model's own.  `project_qk=True` passes q and k
    through the block's output projection before their cosine (the authors' evaluation script;
    their notebook, and the default here, use the raw q and k).
    """

    method = "grad-eclip"

    def __init__(
        self, clip_model: nn.Module, mode: str = "native", project_qk: bool = False
    ) -> None:
        if mode not in MODES:
            raise InputError(f"mode must be one of {MODES}, got {mode!r}")
        visual = check_clip_tower(clip_model)
        super().__init__(visual, ImageTextTarget())
        self.mode = mode
        self.project_qk = bool(project_qk)
        self.image_size = tuple(int(s) for s in visual.image_size)
        self.grid = tuple(int(s) for s in visual.grid_size)

    def validate_input(self, x: object) -> torch.Tensor:
        x = check_input(x)
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.image_size:
            h, w = self.image_size
            raise InputError(
                f"the image batch has shape {tuple(x.shape)}; this CLIP takes (B, 3, {h}, {w}) — "
                f"resize and crop to {h}x{w} and normalise as the model's preprocessing does"
            )
        return x

    def forward_context(self) -> contextlib.AbstractContextManager:
        return math_attention()

    def _head(self, tokens: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """Rest of the last block and the pooling for the class token: (B,1,D) -> (B,E)."""
        visual, block = self.model, self.model.transformer.resblocks[-1]
        x = tokens[:, :1] + block.ls_1(block.attn.out_proj(attended))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj if visual.proj is not None else pooled

    def explain(self, x: torch.Tensor, inputs: dict[str, torch.Tensor]) -> NamedTuple:
        visual = self.model
        blocks = visual.transformer.resblocks
        last = blocks[-1]
        with torch.no_grad():  # the gradient starts at the last attention: record nothing before
            tokens = visual._embeds(x)
            for block in blocks[:-1]:
                tokens = block(tokens)
            q, k, v = qkv(last, last.ln_1(tokens))
            native = attend(q[:, :1], k, v, last.attn.num_heads)
            single = attend(q[:, :1], k, v, 1) if self.mode == "reference" else None
        attended = (native if single is None else single).requires_grad_(True)
        embedding = self._head(tokens, native)
        similarity = self.scores(embedding, inputs)
        if single is None:
            explained = similarity
        else:
            explained = self.target(self._head(tokens, attended), **inputs)
        (grad,), _ = gradients(explained.sum(), [attended], ["the last block's attention"])
        channel = grad[:, 0]  # (B, D)
        query, keys = q[:, :1], k[:, 1:]
        if self.project_qk:
            query, keys = last.attn.out_proj(query), last.attn.out_proj(keys)
        spatial = normalize_per_sample(F.cosine_similarity(query, keys, dim=-1, eps=1e-8))  # (B, N)
        evidence = (v[:, 1:] * channel.unsqueeze(1)).sum(dim=-1)  # (B, N)
        patches = torch.relu(spatial * evidence).reshape(-1, *self.grid)
        heatmap = resize_linear(normalize_per_sample(patches), self.image_size)
        return self.outputs(
            {"image_embedding": embedding, "similarity": similarity}, heatmap=heatmap
        )

    meanings = {
        "image_embedding": "the image tower's embedding (B, E)",
        "similarity": "cosine similarity of the image and text embeddings (B,)",
        "heatmap": "the Grad-ECLIP map at the image's size, in [0, 1] per sample",
    }

    @property
    def target_layers(self) -> tuple[str, ...]:
        return (f"transformer.resblocks.{len(self.model.transformer.resblocks) - 1}",)

    def options(self) -> dict[str, object]:
        return {
            **super().options(),
            "mode": self.mode,
            "project_qk": self.project_qk,
            "embed_dim": int(self.model.output_dim),
            "grid": list(self.grid),
        }
