"""open_clip models built offline, prompt encoding, and text-side token relevance (eager).

Nothing here downloads: architectures come from open_clip's bundled configs (or a config dict),
weights are seeded random or read from a checkpoint file the user passes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradvis_export.errors import InputError
from gradvis_export.methods.eclip import attend, check_clip_tower, qkv

#: A CLIP small enough for tests and demos: ViT 64x64 images, 16-px patches, 3 blocks.
TINY_CLIP_CONFIG: dict[str, object] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 3, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
}


def _open_clip():
    try:
        import open_clip
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "CLIP support needs open_clip: pip install 'gradvis[clip]' (open_clip_torch, ftfy)"
        ) from None
    return open_clip


def build_clip(
    name: str | dict = "ViT-B-32", checkpoint: str | os.PathLike | None = None, seed: int = 0
) -> nn.Module:
    """An open_clip CLIP in eval mode, without network access.

    `name` is an open_clip architecture ("ViT-B-32", ...) or a config dict like
    `TINY_CLIP_CONFIG`; weights are random (seeded) unless `checkpoint` names a local file.
    """
    open_clip = _open_clip()
    if checkpoint is not None and not os.path.isfile(checkpoint):
        raise FileNotFoundError(
            f"checkpoint {str(checkpoint)!r} does not exist; pass the path of a local open_clip "
            "state dict (nothing is downloaded)"
        )
    torch.manual_seed(seed)
    if isinstance(name, dict):
        config = dict(name)
        model = open_clip.CLIP(
            embed_dim=config.pop("embed_dim"),
            vision_cfg=config.pop("vision_cfg"),
            text_cfg=config.pop("text_cfg"),
            **config,
        )
        if checkpoint is not None:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state))
    else:
        if name not in open_clip.list_models():
            raise InputError(
                f"unknown open_clip architecture {name!r}; choose one of open_clip.list_models(), "
                "e.g. 'ViT-B-32', or pass a config dict"
            )
        model = open_clip.create_model(
            name, pretrained=str(checkpoint) if checkpoint is not None else None
        )
    return model.eval()


def preprocess_images(clip_model: nn.Module, images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (B, H, W, 3) or (H, W, 3) -> the model's input (B, 3, S, S): shorter side
    resized to S (bicubic, antialiased), centre crop, CLIP mean/std normalisation."""
    open_clip = _open_clip()
    frames = torch.as_tensor(np.asarray(images))
    if frames.dim() == 3:
        frames = frames[None]
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise InputError(
            f"images must be uint8 RGB (B, H, W, 3) or (H, W, 3), got {tuple(frames.shape)} "
            f"{frames.dtype}"
        )
    visual = check_clip_tower(clip_model)
    size = int(visual.image_size[0])
    x = frames.permute(0, 3, 1, 2).float() / 255
    h, w = x.shape[2:]
    scale = size / min(h, w)
    shape = (max(size, round(h * scale)), max(size, round(w * scale)))
    x = F.interpolate(x, size=shape, mode="bicubic", align_corners=False, antialias=True)
    top, left = (shape[0] - size) // 2, (shape[1] - size) // 2
    x = x[:, :, top : top + size, left : left + size].clamp(0, 1)
    mean = torch.tensor(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
    std = torch.tensor(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
    return (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def tokenize(clip_model: nn.Module, prompts: str | Sequence[str]) -> torch.Tensor:
    """Token ids (B, context_length) from open_clip's bundled BPE tokenizer (offline)."""
    open_clip = _open_clip()
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError("prompts must be a string or a non-empty list of strings")
    length = int(getattr(clip_model, "context_length", 77))
    return open_clip.tokenize(list(prompts), context_length=length)


@torch.no_grad()
def encode_prompts(clip_model: nn.Module, prompts: str | Sequence[str]) -> torch.Tensor:
    """Unit-norm text embeddings (B, D) of `prompts`: the `text_embedding` input of GradECLIP."""
    if not hasattr(clip_model, "encode_text"):
        raise InputError(
            f"{type(clip_model).__name__} has no encode_text; pass an open_clip CLIP model"
        )
    return F.normalize(clip_model.encode_text(tokenize(clip_model, prompts)).float(), dim=-1)


def _text_blocks(clip_model: nn.Module) -> nn.ModuleList:
    transformer = getattr(clip_model, "transformer", None)
    blocks = getattr(transformer, "resblocks", None)
    if blocks is None or not hasattr(clip_model, "token_embedding"):
        raise InputError(
            f"{type(clip_model).__name__} has no open_clip text tower (transformer.resblocks, "
            "token_embedding); pass an open_clip CLIP model"
        )
    if not getattr(transformer, "batch_first", True):
        raise InputError("text towers that are not batch-first are not supported")
    return blocks


def text_token_relevance(
    clip_model: nn.Module,
    prompt: str,
    image_embedding: torch.Tensor,
    layers: int = 8,
    mode: str = "native",
) -> list[tuple[str, float]]:
    """Grad-ECLIP's text side: how much each word piece of `prompt` makes it match the image.

    For each of the last `layers` text blocks: g = d cos(image, text) / d (attention output at
    the EOS token), w_i = min-max over the tokens up to EOS of cos(q_EOS, k_i), relevance_i =
    w_i * (g . v_i); summed over the blocks, ReLU, tokens between start and EOS, divided by the
    sum.  `mode` as in GradECLIP ("native": the model's heads; "reference": one head).  Eager.
    """
    if mode not in ("native", "reference"):
        raise InputError(f"mode must be 'native' or 'reference', got {mode!r}")
    blocks = _text_blocks(clip_model)
    open_clip = _open_clip()
    tokens = tokenize(clip_model, prompt)
    image_embedding = torch.as_tensor(image_embedding, dtype=torch.float32).reshape(1, -1)
    projection = getattr(clip_model, "text_projection", None)
    width = projection.out_features if isinstance(projection, nn.Linear) else None
    if isinstance(projection, torch.Tensor):
        width = projection.shape[-1]
    if width is not None and image_embedding.shape[1] != width:
        raise InputError(
            f"image_embedding has {image_embedding.shape[1]} dimensions; this model's embeddings "
            f"have {width}"
        )
    eos = int(tokens.argmax(dim=-1))
    explained = range(max(0, len(blocks) - layers), len(blocks))
    with torch.enable_grad():
        x = clip_model.token_embedding(tokens) + clip_model.positional_embedding
        mask = clip_model.attn_mask
        kept = []
        for index, block in enumerate(blocks):
            if index not in explained:
                x = block(x, attn_mask=mask)
                continue
            q, k, v = qkv(block, block.ln_1(x))
            heads = 1 if mode == "reference" else block.attn.num_heads
            o = attend(q, k, v, heads, mask).requires_grad_(True)
            kept.append((q.detach(), k.detach(), v.detach(), o))
            x = x + block.ls_1(block.attn.out_proj(o))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        x = clip_model.ln_final(x)
        text = x[torch.arange(1), tokens.argmax(dim=-1)]
        if isinstance(projection, nn.Linear):
            text = projection(text)
        elif projection is not None:
            text = text @ projection
        score = F.cosine_similarity(text, image_embedding, dim=1).sum()
        grads = torch.autograd.grad(score, [o for *_, o in kept])
    relevance = torch.zeros(eos + 1)
    for (q, k, v, _), g in zip(kept, grads):
        r = F.cosine_similarity(q[0, eos][None], k[0, : eos + 1], dim=-1)
        w = (r - r.min()) / (r.max() - r.min()).clamp_min(1e-12)
        relevance += w * (v[0, : eos + 1] @ g[0, eos])
    relevance = torch.relu(relevance)[1:eos]
    total = relevance.sum()
    relevance = relevance / total if total > 0 else relevance
    decoder = open_clip.tokenizer._tokenizer
    words = [decoder.decode([int(t)]).strip() for t in tokens[0, 1:eos]]
    return list(zip(words, relevance.tolist()))


__all__ = [
    "TINY_CLIP_CONFIG",
    "build_clip",
    "check_clip_tower",
    "encode_prompts",
    "preprocess_images",
    "text_token_relevance",
    "tokenize",
]
