"""EigenCAM and EigenGradCAM: the first principal component, computed in-graph.

ONNX has no SVD.  The first right singular vector v of the centred (positions x channels)
matrix M is the top eigenvector of the Gram matrix; repeated squaring of the normalised Gram
matrix is 2^n power iterations in n matrix products, then two plain power steps refine it.
All fixed-size matrix products: it exports anywhere and never branches on data.

Sign convention (SVD leaves it open; pytorch-grad-cam keeps whatever LAPACK returns): v is
chosen with sum_k v_k >= 0, i.e. the map correlates positively with the channel-summed
activation — regions where the layer fires as a whole come out positive, then survive the ReLU.
"""

from __future__ import annotations

import torch

from gradvis_export.methods.cam import BaseCAM
from gradvis_export.methods.registry import register

SQUARINGS = 12  # 4096 power iterations: (l2 / l1)^4096 is negligible unless l1 ~ l2


def principal_projection(features: torch.Tensor, squarings: int = SQUARINGS) -> torch.Tensor:
    """(B, K, *S) -> (B, *S): projection of the centred positions x channels matrix on its
    first right singular vector, with sum(v) >= 0."""
    b, k = features.shape[:2]
    m = features.flatten(2).transpose(1, 2)  # (B, N, K)
    m = torch.nan_to_num(m - m.mean(dim=1, keepdim=True))
    n = m.shape[1]
    by_positions = n < k  # power-iterate the smaller Gram matrix
    gram = m @ m.transpose(1, 2) if by_positions else m.transpose(1, 2) @ m
    size = gram.shape[1]

    def scaled(a: torch.Tensor) -> torch.Tensor:
        return a / a.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-30)

    power = scaled(gram)
    for _ in range(squarings):
        power = scaled(power @ power)
    # power ~ c u u^T: its column with the largest diagonal entry is along u.
    diag = torch.diagonal(power, dim1=1, dim2=2)
    pick = diag.argmax(dim=1, keepdim=True) == torch.arange(size, device=diag.device)
    vec = (power @ pick.to(power.dtype).unsqueeze(2)).squeeze(2)
    for _ in range(2):
        vec = (gram @ vec.unsqueeze(2)).squeeze(2)
        vec = vec / vec.norm(dim=1, keepdim=True).clamp_min(1e-30)
    v = (m.transpose(1, 2) @ vec.unsqueeze(2)).squeeze(2) if by_positions else vec
    v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
    sign = torch.where(v.sum(dim=1, keepdim=True) < 0, -1.0, 1.0).to(v.dtype)
    projection = (m @ (v * sign).unsqueeze(2)).squeeze(2)
    return projection.view(b, *features.shape[2:])


@register
class EigenCAM(BaseCAM):
    """Muhammad & Yeasin: the first principal component of the activations (no gradient)."""

    method = "eigencam"
    uses_gradients = False

    def layer_map(self, activation, grad, ctx):
        return principal_projection(activation)


@register
class EigenGradCAM(BaseCAM):
    """EigenCAM of the gradient-weighted activations G * A (class-discriminative)."""

    method = "eigengradcam"

    def layer_map(self, activation, grad, ctx):
        return principal_projection(grad * activation)
