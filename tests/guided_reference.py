"""Guided backprop written independently of gradvis_export, for the references of
tests/test_reference.py and tests/zoo_checks.py.

A `TorchFunctionMode` routes every activation call (module, functional, torch.* and Tensor.*
spellings, in place or not) through an autograd Function whose backward is the activation's
own derivative times ReLU(incoming gradient) -- for ReLU: pass only where input > 0 and
gradient > 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class GuidedActivation(torch.autograd.Function):
    """y = fn(x); dx = vjp_fn(x, relu(dy)) -- derivative times ReLU(incoming grad)."""

    @staticmethod
    def forward(ctx, x, fn):
        ctx.fn = fn
        ctx.save_for_backward(x.detach().clone())  # clone: x may be overwritten in place
        return fn(x.detach())

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            (gx,) = torch.autograd.grad(ctx.fn(xx), xx, grad_out.clamp(min=0))
        return gx, None


def _arg(args, kwargs, pos, name, default):
    return kwargs[name] if name in kwargs else args[pos] if len(args) > pos else default


def _relu6(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh(x, 0.0, 6.0)


def relu_rules() -> dict:
    """callable -> (args, kwargs) -> (out-of-place function or None, in place?): ReLU, ReLU6."""

    def hardtanh(a, k):
        low, high = _arg(a, k, 1, "min_val", -1.0), _arg(a, k, 2, "max_val", 1.0)
        if (low, high) == (0.0, 6.0):  # nn.ReLU6 is Hardtanh(0, 6)
            return _relu6, bool(_arg(a, k, 3, "inplace", False))
        return None, False

    return {
        F.relu: lambda a, k: (torch.relu, bool(_arg(a, k, 1, "inplace", False))),
        torch.relu: lambda a, k: (torch.relu, False),
        torch.Tensor.relu: lambda a, k: (torch.relu, False),
        torch.relu_: lambda a, k: (torch.relu, True),
        torch.Tensor.relu_: lambda a, k: (torch.relu, True),
        F.relu6: lambda a, k: (_relu6, bool(_arg(a, k, 1, "inplace", False))),
        F.hardtanh: hardtanh,
    }


def other_rules() -> dict:
    """The other activations (SiLU, GELU, hard-swish / -sigmoid, leaky ReLU, ELU, Mish,
    sigmoid), for activations="all"."""

    def plain(fn, pos=1):
        return lambda a, k: (fn, bool(_arg(a, k, pos, "inplace", False)))

    def gelu(a, k):
        approximate = _arg(a, k, 1, "approximate", "none")
        return (lambda t: F.gelu(t, approximate=approximate)), False

    def leaky(a, k):
        slope = _arg(a, k, 1, "negative_slope", 0.01)
        return (lambda t: F.leaky_relu(t, slope)), bool(_arg(a, k, 2, "inplace", False))

    def elu(a, k):
        alpha = _arg(a, k, 1, "alpha", 1.0)
        return (lambda t: F.elu(t, alpha)), bool(_arg(a, k, 2, "inplace", False))

    return {
        F.silu: plain(F.silu),
        F.gelu: gelu,
        F.hardswish: plain(F.hardswish),
        F.hardsigmoid: plain(F.hardsigmoid),
        F.leaky_relu: leaky,
        F.elu: elu,
        F.mish: plain(F.mish),
        torch.sigmoid: lambda a, k: (torch.sigmoid, False),
        torch.Tensor.sigmoid: lambda a, k: (torch.sigmoid, False),
        torch.sigmoid_: lambda a, k: (torch.sigmoid, True),
        torch.Tensor.sigmoid_: lambda a, k: (torch.sigmoid, True),
    }


class GuidedMode(TorchFunctionMode):
    """Route activations through GuidedActivation while active; `hits` counts them."""

    def __init__(self, activations: str = "relu") -> None:
        super().__init__()
        assert activations in ("relu", "all")
        self.rules = relu_rules()
        if activations == "all":
            self.rules.update(other_rules())
        self.hits = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        rule = self.rules.get(func)
        if rule is not None:
            fn, inplace = rule(args, kwargs)
            if fn is not None:
                self.hits += 1
                y = GuidedActivation.apply(args[0], fn)
                if inplace:
                    args[0].copy_(y)
                    return args[0]
                return y
        return func(*args, **kwargs)
