"""`precision="fp16"`: the forward-only graph with its weights and activations in float16
behind a float32 interface (a graph pass), and the half-precision guard's measures.

Why a pass and not `model.half()`: the explanation's own arithmetic (channel weights ~1e-4,
min-max normalisation, epsilons) does not survive float16, so the precision is chosen op by
op on the traced graph (see `half_precision`)."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import fx

from gradvis_export.core.explainer import Explainer, Inputs
from gradvis_export.errors import ExportError
from gradvis_export.exporter.checks import check_forward_only
from gradvis_export.exporter.passes import drop_detach, drop_unused_attributes, fold_constants
from gradvis_export.exporter.trace import fake_inputs, name_inputs

PRECISIONS = ("fp32", "fp16")
#: The fp16 guard, per output against the fp32 eager explainer over the guard's samples:
#: relative L2 error ||fp16 - fp32|| / ||fp32|| and largest difference relative to the output's
#: largest magnitude.  Half rounding alone gives ~1e-3; a ReLU whose input is within rounding of
#: zero, or a max-pool window with a near tie, can switch (a piecewise map such as a guided
#: gradient moves by a few per cent); a broken graph gives ~1.
FP16_TOLERANCE = {"rel_l2": 0.1, "max_rel": 0.5}
_aten = torch.ops.aten
# Run in float16 (see _HalfInterpreter._half_product): the bulk of the arithmetic and weights.
_HALF_OPS = {_aten.convolution, _aten.mm, _aten.addmm, _aten.bmm, _aten.baddbmm}
# Run in float32: exponentials, roots, long sums (a float16 sum overflows at 65504), softmax
# and the normalisations whose statistics half precision loses.
_FLOAT_OPS = {
    _aten._softmax,
    _aten._log_softmax,
    _aten.exp,
    _aten.expm1,
    _aten.log,
    _aten.log1p,
    _aten.log2,
    _aten.pow,
    _aten.reciprocal,
    _aten.rsqrt,
    _aten.sqrt,
    _aten.sum,
    _aten.cumsum,
    _aten.prod,
    _aten.var,
    _aten.std,
    _aten.var_mean,
    _aten.norm,
    _aten.linalg_vector_norm,
    _aten.native_layer_norm,
    _aten.native_group_norm,
}
_HALF_NORMAL_MIN, _HALF_MAX = 2.0**-14, 65504.0


def _is_float(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype in (torch.float32, torch.float16)


def _scalar_outside_half(op: torch._ops.OpOverload, args: tuple, kwargs: dict) -> bool:
    """A float argument float16 cannot hold (an epsilon like 1e-8 becomes 0, 1e5 becomes inf).
    An op's own `eps` / `momentum` (batch norm: applied in float inside the kernel) aside."""
    from torch.utils._pytree import tree_flatten

    schema = op._schema.arguments
    given = [*zip(schema, args), *((a, kwargs[a.name]) for a in schema if a.name in kwargs)]
    for arg, value in given:
        if arg.name in ("eps", "momentum"):
            continue
        for v in tree_flatten(value)[0]:
            if isinstance(v, float) and np.isfinite(v) and v != 0.0:
                if not _HALF_NORMAL_MIN <= abs(v) <= _HALF_MAX:
                    return True
    return False


# A tensor whose calibrated largest magnitude is below this (gradients, mostly) keeps float32
# between ops: float16's normal range ends at 2**-14, so 10 binades below its largest value
# would already be subnormal.  A float16 product of one is computed on a power-of-two scaled
# copy (largest value ~1) and scaled back in float32.
_SMALL, _LARGE = 2.0**-4, 2.0**12


def _peaks(gm: fx.GraphModule, args: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Largest magnitude of every floating value of the fp32 graph on the example (calibration)."""
    peaks: dict[str, float] = {}

    class Measure(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            out = super().run_node(n)
            values = [
                t for t in (out if isinstance(out, (tuple, list)) else (out,)) if _is_float(t)
            ]
            if values and n.op in ("placeholder", "call_function"):
                peaks[n.name] = max(float(v.abs().max()) if v.numel() else 0.0 for v in values)
            return out

    with torch.inference_mode():
        Measure(gm).run(*(a.clone() for a in args))
    return peaks


def _power_of_two(peak: float) -> float:
    return 2.0 ** -round(float(np.log2(peak))) if peak > 0 else 1.0


class _HalfInterpreter(fx.Interpreter):
    """Runs the forward-only graph with the precision policy of `half_precision` (under make_fx,
    which records the casts it inserts)."""

    def __init__(self, gm: fx.GraphModule, peaks: dict[str, float], float_ops: set) -> None:
        super().__init__(gm)
        self.peaks, self.float_ops = peaks, float_ops

    def run_node(self, n: fx.Node) -> object:
        self.node = n
        out = super().run_node(n)
        if n.op == "placeholder" or any(i in self.live for i in n.all_input_nodes):
            self.live.add(n)  # computed from the inputs (not a weight)
        return out

    def run(self, *args: object) -> object:
        self.live: set[fx.Node] = set()
        return super().run(*args)

    def _peak(self, arg: object) -> float | None:
        if isinstance(arg, fx.Node) and arg in self.live:
            return self.peaks.get(arg.name)
        return None

    def call_function(self, target, args, kwargs):  # noqa: ANN001 - fx.Interpreter's signature
        from torch.utils._pytree import tree_flatten

        if not isinstance(target, torch._ops.OpOverload) or not any(
            _is_float(t) for t in tree_flatten((args, kwargs))[0]
        ):
            return target(*args, **kwargs)
        packet, node = target.overloadpacket, self.node
        peak = self.peaks.get(node.name)
        if target._schema.is_mutable:  # in place: the written tensor keeps its dtype
            want = args[0].dtype if _is_float(args[0]) else None
        elif packet in _HALF_OPS and packet not in self.float_ops:
            return self._half_product(target, args, kwargs)
        elif (
            packet in _FLOAT_OPS
            or packet in self.float_ops
            or packet.__name__.startswith(("linalg_", "_linalg_"))
            or _scalar_outside_half(target, args, kwargs)
            or (peak is not None and (peak > _LARGE or 0 < peak < _SMALL))
        ):
            want = torch.float32
        else:  # the widest of the computed inputs; weights follow them
            dtypes = {
                self.env[i].dtype
                for i in node.all_input_nodes
                if i in self.live and _is_float(self.env[i])
            }
            want = torch.float32 if torch.float32 in dtypes else next(iter(dtypes), None)
        args, kwargs = _cast((args, kwargs), want)
        return target(*args, **kwargs)

    def _half_product(self, target, args, kwargs):  # noqa: ANN001
        """A convolution / matrix product in float16; computed operands outside float16's
        comfortable range are scaled by a power of two first when the op is linear in them
        (no bias), else the op runs in float32."""
        node, packet = self.node, target.overloadpacket
        if packet is _aten.convolution:
            linear = (0, 1) if node.args[2] is None else ()
        else:
            linear = (0, 1) if packet in (_aten.mm, _aten.bmm) else ()
        args = list(args)
        scale = 1.0
        for i, arg in enumerate(node.args):
            peak = self._peak(arg)
            if peak is None or _SMALL <= peak <= _LARGE or peak == 0:
                continue
            if i not in linear:
                return target(*_cast((args, kwargs), torch.float32)[0], **kwargs)
            factor = _power_of_two(peak)
            args[i] = _aten.mul.Tensor(_aten._to_copy.default(args[i], dtype=torch.float32), factor)
            scale *= factor
        out_peak = self.peaks.get(node.name, 0.0) * scale
        if out_peak > _LARGE:  # keep the float16 result well below 65504
            if not linear or scale == 1.0:
                return target(*_cast((args, kwargs), torch.float32)[0], **kwargs)
            factor = _power_of_two(out_peak)
            args[linear[0]] = _aten.mul.Tensor(
                _aten._to_copy.default(args[linear[0]], dtype=torch.float32), factor
            )
            scale *= factor
        args, kwargs = _cast((tuple(args), kwargs), torch.float16)
        out = target(*args, **kwargs)
        if scale == 1.0:
            return out
        return _aten.mul.Tensor(_aten._to_copy.default(out, dtype=torch.float32), 1.0 / scale)

    def output(self, target, args, kwargs):  # noqa: ANN001
        out = super().output(target, args, kwargs)
        return tuple(o.float() if _is_float(o) else o for o in out)


def _cast(tree: object, dtype: torch.dtype | None) -> object:
    from torch.utils._pytree import tree_map

    if dtype is None:
        return tree
    return tree_map(
        lambda t: (
            _aten._to_copy.default(t, dtype=dtype) if _is_float(t) and t.dtype != dtype else t
        ),
        tree,
    )


def half_precision(gm: fx.GraphModule, args: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """The forward-only graph with its weights and activations in float16 and the same
    interface (float32 in and out, int64 targets): casts at the edges and around each op.

    Convolutions and matrix products run in float16 (their weights are stored in float16);
    exponentials, roots, sums, softmax and layer/group norm in float32; an op with a float
    argument outside float16's normal range (an epsilon like 1e-8) in float32; every other op
    in the widest dtype of its computed inputs (so the normalisation of a map that reached
    float32 stays there).  Calibrated on `args` (example values of the graph's inputs): a value
    whose largest magnitude is below 2**-4 (the gradients of a backward pass) stays float32
    between ops, and a convolution / product of it runs in float16 on a copy scaled by a power of
    two (as loss scaling does in mixed-precision training).  An op with no float16 kernel in
    this torch (e.g. avg_pool3d on the CPU) runs in float32.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    names = tuple(n.name for n in gm.graph.nodes if n.op == "placeholder")
    peaks = _peaks(gm, args)
    float_ops: set = set()
    for _ in range(16):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            half = make_fx(
                lambda *tensors: _HalfInterpreter(gm, peaks, float_ops).run(*tensors),
                tracing_mode="symbolic",
                _allow_non_fake_inputs=True,
            )(*fake_inputs(list(args), names))
        name_inputs(half, names)
        drop_detach(half)
        fold_constants(half)  # the weights' casts: float16 weights in the file
        _cast_constants_before_views(half)
        missing = _missing_half_kernel(half, args)
        if missing is None or missing in float_ops:
            break
        float_ops.add(missing)
    return check_forward_only(half)


def _missing_half_kernel(gm: fx.GraphModule, args: tuple[torch.Tensor, ...]):
    """The op of the first node that has no float16 kernel here (None: the graph runs)."""

    class Probe(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            try:
                return super().run_node(n)
            except (NotImplementedError, RuntimeError) as error:
                if "Half" in str(error) and isinstance(n.target, torch._ops.OpOverload):
                    raise _NoHalfKernel(n.target.overloadpacket) from error
                raise

    try:
        with torch.inference_mode():
            Probe(gm).run(*(a.clone() for a in args))
    except _NoHalfKernel as missing:
        return missing.op
    return None


class _NoHalfKernel(Exception):
    def __init__(self, op: object) -> None:
        super().__init__(f"no float16 kernel for {op}")
        self.op = op  # (fx.Interpreter rewrites the message in args)


_VIEWS = {
    _aten.view.default,
    _aten._unsafe_view.default,
    _aten.reshape.default,
    _aten.expand.default,
    _aten.permute.default,
    _aten.unsqueeze.default,
    _aten.squeeze.dim,
    _aten.t.default,
}


def _cast_constants_before_views(gm: fx.GraphModule) -> fx.GraphModule:
    """`cast(expand(view(constant)))` -> `expand(view(cast constant))`: a constant (e.g. an
    interpolation matrix) expanded by the symbolic batch cannot be folded, so its cast would run
    on every call and the file would keep it in float32."""

    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        if node.target is not _aten._to_copy.default or set(node.kwargs) != {"dtype"}:
            continue
        chain, source = [], node.args[0]
        while isinstance(source, fx.Node) and source.target in _VIEWS and len(source.users) == 1:
            chain.append(source)
            source = source.args[0]
        if not chain or not isinstance(source, fx.Node) or source.op != "get_attr":
            continue
        value = getattr(gm, source.target, None)
        if not _is_float(value):
            continue
        name = f"_cast_constant_{count}"
        count += 1
        gm.register_buffer(name, value.to(node.kwargs["dtype"]).contiguous())
        with graph.inserting_before(node):
            current = graph.get_attr(name)
            for view in reversed(chain):
                current = graph.call_function(view.target, (current, *view.args[1:]), view.kwargs)
        node.replace_all_uses_with(current)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    drop_unused_attributes(gm)
    gm.recompile()
    return gm


def onnx_fp16_fixup(model) -> None:  # noqa: ANN001 - onnx.ModelProto
    """Give the float32 constants the TensorRT profile's max-pool rewrite adds the dtype of the
    tensors they meet (float16 in a half-precision graph)."""
    import onnx
    from onnx import numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    types.update({t.name: t.data_type for t in model.graph.initializer})
    inits = {t.name: t for t in model.graph.initializer if t.name.startswith("gv_trt")}
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            init = inits.get(name)
            if init is None or init.data_type != onnx.TensorProto.FLOAT:
                continue
            others = [types.get(o) for j, o in enumerate(node.input) if j != i and o not in inits]
            if onnx.TensorProto.FLOAT16 in others:
                value = numpy_helper.to_array(init).astype(np.float16)
                init.CopyFrom(numpy_helper.from_array(value, name))


def pin_near_ties(
    explainer: Explainer, x: Inputs, inputs: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """For the fp16 guard: a sample whose class is -1 (argmax) while its two best logits are
    within 1 % of the largest gets its eager argmax class: half rounding may pick the other one,
    and the two explain different classes (not an error of the artifact)."""
    from gradvis_export.core.targets import ClassTarget

    if not isinstance(explainer.target, ClassTarget) or "target" not in inputs:
        return inputs
    with torch.no_grad():
        logits = explainer.target.logits(explainer.run_model(explainer.model_input(x)))
    if logits.shape[1] < 2:
        return inputs
    top = logits.topk(2, dim=1).values
    near = (top[:, 0] - top[:, 1]) <= 1e-2 * logits.abs().amax(dim=1)
    target = inputs["target"]
    pinned = torch.where((target < 0) & near, logits.argmax(dim=1), target)
    return {**inputs, "target": pinned}


def output_errors(got: list[np.ndarray], want: list[np.ndarray]) -> dict[str, float]:
    """max_abs, max_rel (max_abs over the largest |want|) and rel_l2 of one output over the
    guard's samples (the batches concatenated)."""
    g = np.concatenate([np.asarray(a, np.float64).ravel() for a in got])
    w = np.concatenate([np.asarray(a, np.float64).ravel() for a in want])
    diff = np.abs(g - w)
    max_abs = float(diff.max()) if diff.size else 0.0
    return {
        "max_abs": max_abs,
        "max_rel": max_abs / max(float(np.abs(w).max()), 1e-30) if w.size else 0.0,
        "rel_l2": float(np.linalg.norm(g - w) / max(float(np.linalg.norm(w)), 1e-30)),
    }


def check_fp16(
    label: str, name: str, got: np.ndarray, want: np.ndarray, batch: int
) -> dict[str, float]:
    """The fp16 guard on one output of one batch; raises ExportError on a broken output."""
    got = np.asarray(got)
    if got.shape != want.shape:
        raise ExportError(
            f"the {label}'s output {name!r} has shape {got.shape}, eager's {want.shape}"
        )
    if not np.isfinite(got).all():
        raise ExportError(
            f"the {label}'s output {name!r} is not finite at batch {batch} (NaN or inf: a value "
            "outside float16's range); export with precision='fp32'"
        )
    if name != "logits" and got.ndim > 1:
        flat_g, flat_w = got.reshape(len(got), -1), want.reshape(len(want), -1)
        flat = (np.ptp(flat_g, axis=1) == 0) & (np.ptp(flat_w, axis=1) > 0)
        if flat.any():
            raise ExportError(
                f"the {label}'s output {name!r} is constant for sample(s) "
                f"{np.flatnonzero(flat).tolist()} at batch {batch} while eager's is not "
                "(float16 underflow?); export with precision='fp32'"
            )
    error = output_errors([got], [want])
    if error["rel_l2"] > FP16_TOLERANCE["rel_l2"] or error["max_rel"] > FP16_TOLERANCE["max_rel"]:
        raise ExportError(
            f"the {label}'s output {name!r} differs from fp32 eager at batch {batch} beyond the "
            f"half-precision tolerance (relative L2 {error['rel_l2']:.3g} > "
            f"{FP16_TOLERANCE['rel_l2']} or max/scale {error['max_rel']:.3g} > "
            f"{FP16_TOLERANCE['max_rel']}); this model does not survive float16: export with "
            "precision='fp32'"
        )
    return error
