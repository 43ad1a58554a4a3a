"""Tracing an explainer into one graph of forward operators, and the graph passes on it.

Each pass is a plain function from graph module to graph module (or a check that raises),
testable alone.
"""

from __future__ import annotations

import warnings

import torch
from torch import fx
from torch._ops import OpOverload, OpOverloadPacket
from torch._subclasses.fake_tensor import FakeTensor
from torch.fx.experimental.proxy_tensor import make_fx

from .errors import ExportError
from .explainers.base import Explainer, Inputs, each_input, first_input
from .mode import tracing
from .rules import export_rules


def example_batch(x: Inputs, batch: int = 2) -> Inputs:
    """An example with at least `batch` samples: a batch-1 trace would fix the batch size to 1."""
    if isinstance(x, (list, tuple)):
        return [example_batch(t, batch) for t in x]
    if x.shape[0] >= batch:
        return x
    reps = -(-batch // x.shape[0])
    return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch]


def example_inputs(explainer: Explainer, x: Inputs, seed: int = 0) -> dict[str, torch.Tensor]:
    """Values of the target's inputs (`target`, `mask`, ...) for `x`, drawn from the target."""
    names = explainer.target.input_names
    if not names:
        return {}
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        output = explainer.run_model(explainer.model_input(x))
    batch = first_input(x).shape[0]
    return {name: explainer.target.example(name, batch, x, output, generator) for name in names}


def trace(explainer: Explainer, example_input: Inputs) -> fx.GraphModule:
    """Record forward and rewritten backward of `explainer(input, *target inputs)` as one aten
    graph whose placeholders are named `explainer.input_names_for(example_input)`.

    A multi-input list becomes one graph input per tensor (`input_0`, `input_1`, ...).  The
    batch dimension stays symbolic; rules make every backward op a forward one.
    """
    x = example_batch([t.detach() for t in each_input(example_input)])
    multi = isinstance(example_input, (list, tuple))
    x = x if multi else x[0]
    extra = example_inputs(explainer, x)
    names = explainer.input_names_for(x)
    count = len(each_input(x))

    def run(*tensors: torch.Tensor):
        given = list(tensors[:count]) if multi else tensors[0]
        return tuple(explainer(given, **dict(zip(names[count:], tensors[count:]))))

    with tracing(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = make_fx(
            run,
            decomposition_table=export_rules(),
            tracing_mode="symbolic",
            _allow_non_fake_inputs=True,
        )(*fake_inputs([*each_input(x), *extra.values()], names))
    name_inputs(gm, names)
    simplify_as_strided(gm)
    drop_detach(gm)
    fold_constants(gm)
    fold_channel_scales(gm)
    eliminate_common_subexpressions(gm)
    check_input_used(gm, names[:count])
    return gm


def fake_inputs(tensors: list[torch.Tensor], names: tuple[str, ...]) -> list[torch.Tensor]:
    """Fake inputs whose batch is symbolic and whose other dims are fixed.

    With every dim symbolic, shape expressions of the spatial sizes grow until simple patterns
    (a view that covers a whole buffer) can no longer be proved; artifacts have fixed C,T,H,W.
    One symbol for all batches: every input is per sample.
    """
    from torch._dynamo.source import ConstantSource
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

    mode = FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True)

    def fake(t: torch.Tensor, name: str) -> torch.Tensor:
        dims = [DimDynamic.DYNAMIC] + [DimDynamic.STATIC] * (t.dim() - 1)
        return mode.from_tensor(
            t,
            source=ConstantSource(name),
            symbolic_context=StatelessSymbolicContext(dynamic_sizes=dims),
        )

    fakes = [fake(t, name) for t, name in zip(tensors, names)]
    batch = fakes[0].shape[0]
    for f, name in zip(fakes[1:], names[1:]):
        # Tie every input's batch to the input's: they are equal by contract.
        torch._check(f.shape[0] == batch, lambda name=name: f"{name} batch")
    return fakes


def name_inputs(gm: fx.GraphModule, names: tuple[str, ...]) -> fx.GraphModule:
    """Give the graph's placeholders the artifact's input names."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for node, name in zip(placeholders, names):
        node.name = name
        node.target = name
    gm.recompile()
    return gm


def check_input_used(gm: fx.GraphModule, names: tuple[str, ...] = ("input",)) -> None:
    """The data placeholders (`input`, or `input_0`, ...) must feed the graph, or the artifact
    ignores an input."""
    for node in gm.graph.nodes:
        if node.op == "placeholder" and node.name in names and not node.users:
            what = "its input" if names == ("input",) else f"its input {node.name!r}"
            raise ExportError(f"the traced graph does not use {what}: the model ignored it")


def _op_name(target: object) -> str:
    if isinstance(target, (OpOverload, OpOverloadPacket)):
        return str(target)
    return getattr(target, "__name__", str(target))


def backward_ops(gm: fx.GraphModule) -> list[str]:
    """Names of backward operators left in the graph (none may reach an artifact)."""
    return sorted(
        {
            _op_name(n.target)
            for n in gm.graph.nodes
            if n.op == "call_function" and "backward" in _op_name(n.target)
        }
    )


def fake_constants(gm: fx.GraphModule) -> list[str]:
    """Attributes of the graph that are FakeTensors (a rule built a constant under fake mode)."""
    found = []
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = getattr(gm, node.target, None)
            if isinstance(value, FakeTensor):
                found.append(node.target)
    return found


def forward_op_of(backward_op: str) -> str:
    """'aten.grid_sampler_2d_backward.default' -> 'grid_sampler_2d'."""
    name = backward_op.split(".")[1] if backward_op.count(".") >= 1 else backward_op
    return name.removesuffix("_backward")


def layers_calling(model: torch.nn.Module, x: Inputs, op_names: set[str]) -> dict[str, list[str]]:
    """Which layers of `model` call the aten ops `op_names` in a forward on `x`."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.module_tracker import ModuleTracker

    found: dict[str, list[str]] = {}
    tracker = ModuleTracker()
    root = f"{type(model).__name__}."

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = func.overloadpacket.__name__
            if name in op_names:
                layers = found.setdefault(name, [])
                for parent in sorted(tracker.parents - {"Global"}, key=len)[-1:]:
                    name = parent.removeprefix(root)  # the tracker prefixes the root class
                    if name not in layers:
                        layers.append(name)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), tracker, Record(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model(list(x) if isinstance(x, (list, tuple)) else x)  # a fresh list: models write in it
    return found


def check_forward_only(
    gm: fx.GraphModule, model: torch.nn.Module | None = None, example: Inputs | None = None
) -> fx.GraphModule:
    """Raise ExportError if a backward op or a fake constant is left in the graph.

    Given the model and an example, the error names the layers whose forward op it is.
    """
    left = backward_ops(gm)
    if left:
        where = ""
        if model is not None and example is not None:
            forward = {forward_op_of(op) for op in left}
            layers = sorted(
                {
                    layer
                    for names in layers_calling(model, example, forward).values()
                    for layer in names
                }
            )
            if layers:
                where = f" (the backward of layer(s) {', '.join(repr(n) for n in layers)})"
        raise ExportError(
            f"the traced graph still holds backward operator(s) {', '.join(left)}{where}: no rule "
            "rewrites them into forward operators yet. Choose a target layer or model without "
            "them, or report the layer type so a rule can be added"
        )
    fakes = fake_constants(gm)
    if fakes:
        raise ExportError(
            f"the traced graph holds FakeTensor constants {fakes}: a rule built a "
            "constant under fake mode"
        )
    return gm


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


def scriptable(gm: fx.GraphModule) -> fx.GraphModule:
    """Rewrite the graph so `torch.jit.script` takes it.

    TorchScript cannot call `aten.<op>.<overload>` objects: each becomes its overload packet;
    the symbolic-shape helpers (sym_float, sym_int, ...) become Python builtins.
    """
    builtins = {torch.sym_float: float, torch.sym_int: int, torch.sym_max: max, torch.sym_min: min}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if isinstance(node.target, OpOverload):
            node.target = node.target.overloadpacket
        elif node.target in builtins:
            node.target = builtins[node.target]
    gm.recompile()
    return gm
