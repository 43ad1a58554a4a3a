"""Graph passes on the traced explainer: plain functions from graph module to graph module, run
as an explicit list (`GRAPH_PASSES`, by `run_passes`), each testable alone.  None changes
what the graph computes; they make it smaller and faster on every runtime."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import fx
from torch._ops import OpOverload

GraphPass = Callable[[fx.GraphModule], fx.GraphModule]


def eliminate_common_subexpressions(gm: fx.GraphModule) -> fx.GraphModule:
    """Merge nodes computing the same pure op on the same arguments.

    ScoreCAM / AblationCAM chunks re-run the model's unchanged prefix once per chunk; after
    this pass the artifact computes it once.
    """
    seen: dict[tuple, fx.Node] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or not isinstance(node.target, OpOverload):
            continue
        schema = node.target._schema
        if schema.is_mutable or torch.Tag.nondeterministic_seeded in node.target.tags:
            continue
        try:
            key = (node.target, _hashable(node.args), _hashable(node.kwargs))
            hash(key)
        except TypeError:
            continue
        if key in seen:
            node.replace_all_uses_with(seen[key])
            gm.graph.erase_node(node)
        else:
            seen[key] = node
    gm.recompile()
    return gm


def _hashable(value: object) -> object:
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(_hashable(v) for v in value))
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return str(value)
    return value


def drop_detach(gm: fx.GraphModule) -> fx.GraphModule:
    """`detach` is an alias in a graph that no autograd will ever see: remove it."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten.detach.default:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.recompile()
    return gm


def fold_constants(gm: fx.GraphModule) -> fx.GraphModule:
    """Evaluate every node that depends on constants only (e.g. flipped conv weights) once.

    onnxruntime folds these itself; TorchScript would recompute them on every call.
    """
    env: dict[fx.Node, object] = {}
    count = 0
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "get_attr":
            env[node] = getattr(gm, node.target)
        elif node.op == "call_function" and isinstance(node.target, OpOverload):
            inputs = node.all_input_nodes
            if inputs and all(i in env for i in inputs) and not node.target._schema.is_mutable:
                args = fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
                value = node.target(*args, **kwargs)
                if isinstance(value, torch.Tensor):
                    env[node] = value
                    name = f"_folded_{count}"
                    count += 1
                    gm.register_buffer(name, value.detach().contiguous().clone())
                    with graph.inserting_before(node):
                        new = graph.get_attr(name)
                    new.meta = dict(node.meta)
                    node.replace_all_uses_with(new)
                    graph.erase_node(node)
                    env[new] = value
    graph.eliminate_dead_code()
    drop_unused_attributes(gm)
    gm.recompile()
    return gm


def drop_unused_attributes(gm: fx.GraphModule) -> None:
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name in list(dict(gm.named_buffers(recurse=False))) + list(
        dict(gm.named_parameters(recurse=False))
    ):
        if name not in used:
            delattr(gm, name)
    for name, value in list(vars(gm).items()):
        if (
            isinstance(value, torch.Tensor)
            and name.startswith("_tensor_constant")
            and name not in used
        ):
            delattr(gm, name)


def _value(arg: object) -> object:
    return arg.meta.get("val") if isinstance(arg, fx.Node) else arg


def _same_order_as_contiguous(size: list, stride: list) -> bool:
    """True if (size, stride) walks memory like a contiguous tensor of `size` (size-1 dims aside)."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    expected = 1
    for dim_size, dim_stride in reversed(list(zip(size, stride))):
        if statically_known_true(dim_size == 1):
            continue
        if not statically_known_true(dim_stride == expected):
            return False
        expected = expected * dim_size
    return True


def simplify_as_strided(gm: fx.GraphModule) -> fx.GraphModule:
    """Turn `as_strided` calls that only re-view a contiguous tensor into `view`.

    Autograd writes the backward of a strided view (adaptive pooling of a channels-last tensor
    does one) with as_strided, which ONNX cannot express; when sizes and strides describe the
    contiguous order, a view is the same thing.
    """
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    aten = torch.ops.aten
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in (
            aten.as_strided.default,
            aten.as_strided_.default,
        ):
            continue
        source, size, stride = node.args[:3]
        offset = node.args[3] if len(node.args) > 3 else node.kwargs.get("storage_offset", 0)
        value = _value(source)
        sizes = [_value(s) for s in size]
        strides = [_value(s) for s in stride]
        if (
            not isinstance(value, torch.Tensor)
            or not value.is_contiguous()
            or not statically_known_true(_value(offset) in (0, None) or _value(offset) == 0)
            or not _same_order_as_contiguous(sizes, strides)
        ):
            continue
        numel = 1
        for dim_size in sizes:
            numel = numel * dim_size
        if not statically_known_true(value.numel() == numel):
            continue
        with gm.graph.inserting_before(node):
            view = gm.graph.call_function(aten.view.default, (source, list(size)))
        view.meta = dict(node.meta)
        node.replace_all_uses_with(view)
        gm.graph.erase_node(node)
    _fold_full_copies(gm)
    gm.graph.lint()
    gm.recompile()
    return gm


def _fold_full_copies(gm: fx.GraphModule) -> None:
    """`buf = new_zeros(n); view(buf).copy_(src)` overwrites all of buf: use a view of src instead."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    aten = torch.ops.aten
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not aten.copy_.default:
            continue
        dest, src = node.args[:2]
        if not (isinstance(dest, fx.Node) and dest.target is aten.view.default):
            continue
        buffer = dest.args[0]
        if not (
            isinstance(buffer, fx.Node)
            and buffer.target in (aten.new_zeros.default, aten.zeros.default)
        ):
            continue
        dest_val, src_val, buf_val = _value(dest), _value(src), _value(buffer)
        if (
            dest_val.shape != src_val.shape
            or src_val.dtype != buf_val.dtype
            or not statically_known_true(dest_val.numel() == buf_val.numel())
        ):
            continue
        with gm.graph.inserting_after(node):
            whole = gm.graph.call_function(
                aten.view.default,
                (
                    src,
                    list(buffer.args[1])
                    if buffer.target is aten.new_zeros.default
                    else list(buffer.args[0]),
                ),
            )
        whole.meta = dict(buffer.meta)
        keep = (dest, whole)
        buffer.replace_all_uses_with(whole, delete_user_cb=lambda user, keep=keep: user not in keep)
        gm.graph.erase_node(node)
        if not dest.users:
            gm.graph.erase_node(dest)
        if not buffer.users:
            gm.graph.erase_node(buffer)


def fold_channel_scales(gm: fx.GraphModule) -> fx.GraphModule:
    """Fold a constant per-channel scale of a convolution's input into its weight.

    In a backward pass every eval-mode BatchNorm becomes `grad * (gamma / sigma)` right before
    the adjoint convolution of the layer below; scaling the weight once saves one pass over
    each gradient tensor at run time.
    """
    aten = torch.ops.aten
    count = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target is not aten.convolution.default:
            continue
        scaled, weight_node = node.args[0], node.args[1]
        if not (
            isinstance(scaled, fx.Node)
            and scaled.target is aten.mul.Tensor
            and len(scaled.users) == 1
            and isinstance(weight_node, fx.Node)
            and weight_node.op == "get_attr"
            and len(weight_node.users) == 1
        ):
            continue
        lhs, rhs = scaled.args
        data, scale_node = (lhs, rhs) if _is_constant(gm, rhs) else (rhs, lhs)
        if not (_is_constant(gm, scale_node) and isinstance(data, fx.Node)):
            continue
        scale, weight = getattr(gm, scale_node.target), getattr(gm, weight_node.target)
        channels = _value(data).shape[1]
        spatial = weight.dim() - 2
        if scale.numel() != channels or tuple(scale.shape[-spatial:]) != (1,) * spatial:
            continue
        transposed, groups = node.args[6], node.args[8]
        scale = scale.reshape(-1)
        if transposed:  # weight (in, out/groups, *k): input channels on dim 0
            new_weight = weight * scale.view(-1, *([1] * (spatial + 1)))
        else:  # weight (out, in/groups, *k): input channel c is group c // (in/groups)
            per_group = weight.shape[1]
            grouped = weight.reshape(
                groups, weight.shape[0] // groups, per_group, *weight.shape[2:]
            )
            new_weight = (grouped * scale.view(groups, 1, per_group, *([1] * spatial))).reshape(
                weight.shape
            )
        name = f"_scaled_weight_{count}"
        count += 1
        gm.register_buffer(name, new_weight.contiguous())
        with gm.graph.inserting_before(node):
            new_node = gm.graph.get_attr(name)
        new_node.meta = dict(weight_node.meta)
        node.args = (data, new_node, *node.args[2:])
        gm.graph.erase_node(scaled)
    gm.graph.eliminate_dead_code()
    drop_unused_attributes(gm)
    gm.recompile()
    return gm


def _is_constant(gm: fx.GraphModule, arg: object) -> bool:
    return (
        isinstance(arg, fx.Node)
        and arg.op == "get_attr"
        and isinstance(getattr(gm, arg.target, None), torch.Tensor)
    )


#: What every export runs on the traced graph, in order.
GRAPH_PASSES: tuple[GraphPass, ...] = (
    simplify_as_strided,
    drop_detach,
    fold_constants,
    fold_channel_scales,
    eliminate_common_subexpressions,
)


def run_passes(gm: fx.GraphModule, passes: Sequence[GraphPass]) -> fx.GraphModule:
    """Apply `passes` in order."""
    for graph_pass in passes:
        gm = graph_pass(gm)
    return gm
