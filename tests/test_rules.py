"""Each export rule computes what the backward op it replaces computes (aten as the reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradvis_export.core.maps import resize_linear
from gradvis_export.rules import activations, decompositions, explanation

aten = torch.ops.aten


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()) + 1e-7)


CONV_CASES = [
    # (dims, in_ch, out_ch, size, kernel, stride, padding, dilation, groups)
    (2, 3, 8, 11, 3, 1, 1, 1, 1),
    (2, 4, 6, 10, 5, 1, 0, 1, 2),
    (2, 6, 6, 9, 3, 1, 1, 2, 6),  # depthwise, dilated
    (2, 3, 8, 13, 7, 2, 3, 1, 1),  # resnet stem
    (2, 4, 8, 10, 3, 2, 1, 1, 1),  # even size, stride 2 (needs output padding)
    (2, 4, 8, 9, 1, 2, 0, 1, 1),  # 1x1 downsample
    (2, 8, 8, 12, 3, 2, 1, 1, 8),  # strided depthwise
    (2, 2, 3, 7, 1, 1, 2, 1, 1),  # padding larger than the kernel reach
    (3, 3, 4, 7, (1, 3, 3), (1, 2, 2), (0, 1, 1), 1, 1),
    (3, 4, 4, 6, (3, 3, 3), 1, 1, 1, 4),  # depthwise 3-D (X3D)
    (3, 3, 5, 8, (5, 1, 1), 1, (2, 0, 0), 1, 1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_convolution_backward_input_grad(case):
    dims, cin, cout, size, kernel, stride, padding, dilation, groups = case
    torch.manual_seed(0)
    x = torch.randn(2, cin, *([size] * dims))
    conv = F.conv2d if dims == 2 else F.conv3d
    kernel = kernel if isinstance(kernel, tuple) else (kernel,) * dims
    w = torch.randn(cout, cin // groups, *kernel)
    y = conv(x, w, None, stride, padding, dilation, groups)
    g = torch.randn_like(y)

    def expand(v):
        return list(v) if isinstance(v, tuple) else [v] * dims

    args = (
        g,
        x,
        w,
        None,
        expand(stride),
        expand(padding),
        expand(dilation),
        False,
        [0] * dims,
        groups,
    )
    want = aten.convolution_backward.default(*args, [True, False, False])[0]
    got = decompositions.convolution_backward(*args, [True, False, False])[0]
    close(got, want)


POOL_CASES = [
    ((2, 3, 9, 9), (3, 3), (2, 2), (1, 1), False, True, None),
    ((2, 3, 10, 7), (3, 2), (2, 2), (1, 0), True, False, None),
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0), False, True, 3),
    ((2, 2, 4, 6, 6), (4, 2, 2), (1, 1, 1), (0, 0, 0), False, True, None),  # X3D head pool
    ((2, 2, 5, 7, 7), (3, 3, 3), (2, 2, 2), (1, 1, 1), True, False, None),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: str(c[0]) + str(c[4:]))
def test_avg_pool_backward(case):
    shape, kernel, stride, padding, ceil, include_pad, divisor = case
    torch.manual_seed(1)
    x = torch.randn(shape)
    pool = F.avg_pool2d if len(shape) == 4 else F.avg_pool3d
    y = pool(x, kernel, stride, padding, ceil, include_pad, divisor)
    g = torch.randn_like(y)
    op = aten.avg_pool2d_backward.default if len(shape) == 4 else aten.avg_pool3d_backward.default
    args = (g, x, list(kernel), list(stride), list(padding), ceil, include_pad, divisor)
    close(decompositions._avg_pool_backward(*args), op(*args))


@pytest.mark.parametrize(
    "shape,out",
    [
        ((2, 3, 7, 5), (3, 2)),
        ((2, 3, 2, 2), (7, 7)),
        ((2, 3, 5, 6, 7), (2, 3, 4)),
        ((2, 3, 4, 4, 4), (1, 1, 1)),
    ],
)
def test_adaptive_avg_pool_forward_and_backward(shape, out):
    torch.manual_seed(2)
    x = torch.randn(shape)
    pool = F.adaptive_avg_pool2d if len(shape) == 4 else F.adaptive_avg_pool3d
    y = pool(x, out)
    close(decompositions._adaptive_avg_pool(x, list(out)), y)
    g = torch.randn_like(y)
    op = (
        aten._adaptive_avg_pool2d_backward.default
        if len(shape) == 4
        else aten._adaptive_avg_pool3d_backward.default
    )
    close(decompositions._adaptive_avg_pool_backward(g, x), op(g, x))


@pytest.mark.parametrize(
    "shape,kernel,stride,padding,ceil",
    [
        ((2, 3, 9, 9), [3, 3], [2, 2], [1, 1], False),
        ((2, 3, 8, 7), [2, 2], [2, 2], [0, 0], True),
        ((2, 3, 4, 9, 9), [1, 3, 3], [1, 2, 2], [0, 1, 1], False),
        ((2, 2, 5, 6, 6), [3, 3, 3], [2, 2, 2], [1, 1, 1], True),
    ],
)
def test_max_pool_backward(shape, kernel, stride, padding, ceil):
    torch.manual_seed(3)
    x = torch.randn(shape)
    if len(shape) == 4:
        y, idx = aten.max_pool2d_with_indices.default(x, kernel, stride, padding, [1, 1], ceil)
        op = aten.max_pool2d_with_indices_backward.default
    else:
        y, idx = aten.max_pool3d_with_indices.default(x, kernel, stride, padding, [1, 1, 1], ceil)
        op = aten.max_pool3d_with_indices_backward.default
    g = torch.randn_like(y)
    args = (g, x, kernel, stride, padding, [1] * len(kernel), ceil, idx)
    close(decompositions._max_pool_backward(*args), op(*args))


@pytest.mark.parametrize(
    "mode,align", [("bilinear", False), ("bilinear", True), ("trilinear", False), ("nearest", None)]
)
@pytest.mark.parametrize("scale", [None, 2.0])
def test_upsample_backward(mode, align, scale):
    torch.manual_seed(4)
    shape = (2, 3, 4, 5, 6) if mode == "trilinear" else (2, 3, 5, 6)
    x = torch.randn(shape, requires_grad=True)
    kwargs = {"scale_factor": scale} if scale else {"size": tuple(s * 2 + 1 for s in shape[2:])}
    y = F.interpolate(x, mode=mode, align_corners=align, **kwargs)
    g = torch.randn_like(y)
    (want,) = torch.autograd.grad(y, x, g)
    out_size, in_size = list(y.shape[2:]), list(x.shape)
    scales = [scale] * (len(shape) - 2) if scale else [None] * (len(shape) - 2)
    if mode == "nearest":
        got = decompositions._upsample_nearest_backward(g, out_size, in_size, *scales)
    else:
        got = decompositions._upsample_linear_backward(g, out_size, in_size, align, *scales)
    close(got, want)


def test_guided_relu_rule_is_springenberg():
    torch.manual_seed(5)
    x = torch.randn(4, 7, requires_grad=True)
    g = torch.randn(4, 7)
    mode = explanation.RuleMode(explanation.guided_rules("relu"))
    with mode:
        (got,) = torch.autograd.grad(torch.relu(x), x, g)
    want = g * (x > 0) * (g > 0)
    close(got, want)
    assert mode.applied[aten.threshold_backward.default] == 1


def test_guided_rule_on_silu_is_derivative_times_relu_of_grad():
    torch.manual_seed(6)
    x = torch.randn(5, 3, requires_grad=True)
    g = torch.randn(5, 3)
    with explanation.RuleMode(explanation.guided_rules("all")):
        (got,) = torch.autograd.grad(F.silu(x), x, g)
    s = torch.sigmoid(x.detach())
    close(got, torch.relu(g) * (s * (1 + x.detach() * (1 - s))))


def test_rule_mode_reports_activations_it_does_not_rewrite():
    x = torch.randn(3, requires_grad=True)
    mode = explanation.RuleMode(explanation.guided_rules("relu"))
    with mode:
        torch.autograd.grad(torch.sigmoid(F.gelu(x)).sum(), x)
    assert not mode.applied
    assert set(mode.activations) == {"gelu", "sigmoid"}


def test_unknown_activation_name_lists_choices():
    with pytest.raises(ValueError, match="choose from .*relu"):
        activations.activation_names("swishy")


@pytest.mark.parametrize("shape,out", [((2, 3, 7, 5), (3, 2)), ((2, 2, 4, 5, 6), (2, 3, 2))])
def test_adaptive_max_pool_backward(shape, out):
    torch.manual_seed(7)
    x = torch.randn(shape, requires_grad=True)
    pool = F.adaptive_max_pool2d if len(shape) == 4 else F.adaptive_max_pool3d
    y, idx = pool(x, out, return_indices=True)
    g = torch.randn_like(y)
    (want,) = torch.autograd.grad(y, x, g)
    close(decompositions._adaptive_max_pool_backward(g, x.detach(), idx), want)


@pytest.mark.parametrize(
    "shape,padding",
    [((2, 3, 9), [2, 1]), ((2, 3, 6, 5), [1, 2, 3, 0]), ((2, 2, 4, 5, 6), [1, 1, 0, 2, 2, 1])],
)
def test_replication_pad_backward(shape, padding):
    torch.manual_seed(8)
    x = torch.randn(shape, requires_grad=True)
    y = F.pad(x, padding, mode="replicate")
    g = torch.randn_like(y)
    (want,) = torch.autograd.grad(y, x, g)
    close(decompositions._replication_pad_backward(g, x.detach(), padding), want)


@pytest.mark.parametrize(
    "shape,size",
    [
        ((2, 7, 7), (224, 224)),
        ((2, 13, 5, 5), (13, 160, 160)),
        ((3, 4, 2, 2), (8, 64, 64)),
        ((2, 5, 6), (5, 13)),
    ],
)
def test_resize_linear_is_bilinear_or_trilinear(shape, size):
    torch.manual_seed(9)
    maps = torch.randn(shape)
    mode = "bilinear" if len(size) == 2 else "trilinear"
    want = F.interpolate(maps[:, None], size=size, mode=mode, align_corners=False)[:, 0]
    close(resize_linear(maps, size), want)


def test_threshold_backward_as_mask():
    torch.manual_seed(10)
    x, g = torch.randn(4, 9), torch.randn(4, 9)
    for threshold in (0.0, 0.3):
        want = aten.threshold_backward.default(g, x, threshold)
        close(decompositions._threshold_backward(g, x, threshold), want)


def test_common_subexpressions_are_merged_and_values_kept():
    from torch.fx.experimental.proxy_tensor import make_fx

    from gradvis_export.exporter.passes import eliminate_common_subexpressions

    def f(x):
        a = torch.relu(x) * 2  # computed twice, as a chunked explainer's prefix is
        b = torch.relu(x) * 2
        noise = torch.rand_like(x)  # random: two draws must stay two draws
        return a + b + noise - torch.rand_like(x)

    gm = make_fx(f)(torch.randn(3))
    ops = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    eliminate_common_subexpressions(gm)
    after = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert ops.count(torch.ops.aten.relu.default) == 2
    assert after.count(torch.ops.aten.relu.default) == 1
    assert after.count(torch.ops.aten.mul.Tensor) == 1
    assert after.count(torch.ops.aten.rand_like.default) == 2
    x = torch.randn(3)
    torch.manual_seed(0)
    want = f(x)
    torch.manual_seed(0)
    torch.testing.assert_close(gm(x), want)
