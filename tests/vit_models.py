"""The small seeded ViTs of the token-layer tests (test_vit, test_reciprocam,
test_ablation_tokens): random weights, never downloaded, in eval mode.

* `tiny_vit`: torchvision's VisionTransformer, 28 px images in 7 px patches (a 4x4 grid of
  patch tokens after one class token), 2 blocks of width 32, 5 classes; its layers output
  (B, 17, 32) tokens.
* `SequenceFirstViT`: the same shape of network with blocks that take (L, B, D) tokens
  (`nn.TransformerEncoderLayer(batch_first=False)`), the layout of older open_clip / OpenAI CLIP
  towers (`TokenGrid(batch_first=False)`).
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

VIT_IMAGE = (3, 28, 28)
VIT_LAYER = "encoder.layers.encoder_layer_0"
VIT_GRID = 4  # 28 px / 7 px patches


def tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=28, patch_size=7, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=5,
    )  # fmt: skip
    torch.nn.init.normal_(model.heads.head.weight)  # torchvision starts it at zero
    return model.eval()


class SequenceFirstViT(nn.Module):
    """Patch embedding, a class token and position embeddings, 2 post-norm blocks on (L, B, D)
    tokens, the class token's LayerNorm and a linear head."""

    def __init__(self, dim: int = 32, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.patches = nn.Conv2d(3, dim, kernel_size=7, stride=7)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim) * 0.5)
        self.position = nn.Parameter(torch.randn(VIT_GRID * VIT_GRID + 1, 1, dim) * 0.5)
        self.blocks = nn.Sequential(
            *(nn.TransformerEncoderLayer(dim, 2, 64, dropout=0.0) for _ in range(2))
        )  # batch_first=False: (L, B, D)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        nn.init.normal_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).permute(2, 0, 1)  # (H*W, B, D), row-major
        prefix = self.class_token.expand(1, x.shape[0], -1)
        tokens = self.blocks(torch.cat([prefix, tokens]) + self.position)
        return self.head(self.norm(tokens[0]))


def sequence_first_vit() -> nn.Module:
    return SequenceFirstViT().eval()
