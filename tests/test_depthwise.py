"""The training-time depthwise Conv3d backward against torch's own autograd of F.conv3d."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradvis_export.apps import models
from gradvis_export.apps.depthwise import DepthwiseConv3d, fast_depthwise, is_depthwise

CASES = [  # kernel, stride, padding, input shape (N, C, T, H, W)
    ((3, 3, 3), (1, 1, 1), (1, 1, 1), (2, 4, 5, 7, 6)),  # X3D's stage convolution
    ((3, 3, 3), (1, 2, 2), (1, 1, 1), (2, 4, 5, 7, 6)),  # ... the first of a stage (odd sides)
    ((3, 3, 3), (1, 2, 2), (1, 1, 1), (1, 3, 4, 8, 10)),  # ... even sides
    ((5, 1, 1), (1, 1, 1), (2, 0, 0), (2, 3, 6, 4, 4)),  # X3D's temporal stem
    ((3, 3, 3), (2, 2, 2), (0, 1, 1), (1, 3, 6, 8, 9)),  # asymmetric padding, stride in time
    ((2, 4, 3), (1, 3, 2), (1, 2, 0), (2, 2, 5, 11, 7)),  # even kernels, stride 3
]


@pytest.mark.parametrize("kernel, stride, padding, shape", CASES)
def test_gradients_match_autograd_of_conv3d(kernel, stride, padding, shape):
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(shape[1], 1, *kernel, dtype=torch.float64, requires_grad=True)
    ours = DepthwiseConv3d.apply(x, w, stride, padding)
    reference = F.conv3d(x, w, None, stride, padding, 1, shape[1])
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference)
    grad = torch.randn_like(reference)
    got = torch.autograd.grad(ours, (x, w), grad)
    want = torch.autograd.grad(reference, (x, w), grad)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # and against finite differences, to the second derivative (a loss on gradients)
    assert torch.autograd.gradcheck(
        lambda a, b: DepthwiseConv3d.apply(a, b, stride, padding), (x, w)
    )
    assert torch.autograd.gradgradcheck(
        lambda a, b: DepthwiseConv3d.apply(a, b, stride, padding), (x, w)
    )


def test_fast_depthwise_gives_x3d_the_same_gradients_and_restores_it():
    torch.manual_seed(0)
    model = models.build("x3d_xs", 3, 4, 48, spatial_strides=(2, 2, 2, 1)).double().train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    x = torch.randn(2, 3, 4, 48, 48, dtype=torch.float64)
    target = torch.tensor([0, 2])

    def gradients():
        model.zero_grad()
        loss = F.cross_entropy(model(x), target)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    plain_loss, plain = gradients()
    with fast_depthwise(model) as count:
        assert count == sum(is_depthwise(m) for m in model.modules()) > 10
        fast_loss, fast = gradients()
    torch.testing.assert_close(fast_loss, plain_loss)
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    # afterwards every layer is a plain nn.Conv3d again (nothing patched is left on it)
    assert not any("forward" in vars(m) for m in model.modules())
