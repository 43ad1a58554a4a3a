"""The TensorRT export profile: keep an ONNX graph to what the TensorRT 10 ONNX parser builds.

Two parts, both on the ONNX model after export:

* `rewrite_max_pool_backward`: the max-pool backward the exporter writes as MaxPool's `Indices`
  output + ScatterElements(add) (neither usable by TensorRT: the parser rejects `Indices`)
  becomes a comparison of each window offset with the pooled maximum (first maximum in
  row-major window order, PyTorch's tie rule) and one grouped ConvTranspose per offset that puts
  the gradient back in place.  Same numbers as the scatter.
* `tensorrt_problems`: every node checked against `TENSORRT10_OPS` (the operators the
  onnx-tensorrt parser documents as supported) and its restrictions that matter here: MaxPool
  without `Indices`, Conv / ConvTranspose weights that are initializers, no ScatterND /
  ScatterElements (the profile keeps scatters out: a one-hot product serves).
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: ONNX operators the TensorRT 10 ONNX parser supports (onnx-tensorrt docs/operators.md), less
#: the scatters this profile keeps out on purpose.
TENSORRT10_OPS = frozenset(
    """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
    BatchNormalization Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose
    Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand
    EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
    GlobalMaxPool Greater GreaterOrEqual GroupNormalization GRU HardSigmoid HardSwish Identity If
    InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax
    Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean Min Mish Mod Mul Neg
    NonMaxSuppression Not Or Pad Pow PRelu QuantizeLinear RandomNormal RandomNormalLike
    RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
    Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Selu Shape Shrink Sigmoid
    Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum
    Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor""".split()
)


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _shape(model: onnx.ModelProto, name: str) -> list[int | None]:
    for info in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        if info.name == name:
            dims = info.type.tensor_type.shape.dim
            return [d.dim_value if d.HasField("dim_value") else None for d in dims]
    raise KeyError(name)


def tensorrt_problems(model: onnx.ModelProto) -> list[str]:
    """What the TensorRT 10 ONNX parser (or this profile) would refuse, one line per problem."""
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    problems = []
    for node in model.graph.node:
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        if node.op_type not in TENSORRT10_OPS:
            problems.append(f"{where}: not in the TensorRT 10 ONNX parser's operator list")
        elif node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1] in used:
            problems.append(f"{where}: uses the Indices output, which TensorRT does not support")
        elif node.op_type in ("Conv", "ConvTranspose") and node.input[1] not in constants:
            problems.append(f"{where}: its weight is computed, TensorRT needs an initializer")
    return problems


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _pool_of(indices: str, producers: dict[str, onnx.NodeProto]) -> onnx.NodeProto | None:
    """The MaxPool whose Indices output the scatter's indices come from (through the
    exporter's Reshape / Sub / Flatten chain)."""
    seen = [indices]
    while seen:
        node = producers.get(seen.pop())
        if node is None:
            continue
        if node.op_type == "MaxPool" and len(node.output) > 1:
            return node
        if node.op_type in ("Reshape", "Sub", "Flatten", "Cast", "Unsqueeze", "Squeeze"):
            seen.append(node.input[0])
    return None


def rewrite_max_pool_backward(model: onnx.ModelProto) -> int:
    """Replace each ScatterElements(add) fed by a MaxPool's Indices (in place); returns how
    many were replaced.  Shapes come from ONNX shape inference (all static but the batch)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    producers = _producers(model)
    graph = model.graph
    done = 0
    for scatter in [n for n in graph.node if n.op_type == "ScatterElements"]:
        if _attrs(scatter).get("reduction", b"none") not in (b"add", "add"):
            continue
        pool = _pool_of(scatter.input[1], producers)
        data = producers.get(scatter.input[0])
        if pool is None or data is None or data.op_type != "ConstantOfShape":
            continue
        fill = _attrs(data).get("value")
        if fill is not None and numpy_helper.to_array(fill).any():
            continue  # scatter onto non-zero data: not a max-pool backward
        new = _compare_backward(inferred, pool, scatter, f"gv_trt{done}")
        if new is None:
            continue
        nodes, inits = new
        index = list(graph.node).index(scatter)
        graph.node.remove(scatter)
        for offset, node in enumerate(nodes):
            graph.node.insert(index + offset, node)
        graph.initializer.extend(inits)
        done += 1
    if done:
        _drop_dead(model)
    return done


def _compare_backward(model, pool, scatter, prefix):
    """Nodes computing the scatter's output from the pool's input X, its output Y and the
    gradient, or None when the pooling's geometry is not one this rewrite handles."""
    a = _attrs(pool)
    x_name, y_name = pool.input[0], pool.output[0]
    x_shape, y_shape = _shape(model, x_name), _shape(model, y_name)
    rank = len(x_shape) - 2
    channels, spatial, pooled = x_shape[1], x_shape[2:], y_shape[2:]
    if (
        channels is None
        or None in spatial
        or None in pooled
        or a.get("auto_pad", b"NOTSET")
        not in (
            b"NOTSET",
            "NOTSET",
        )
    ):
        return None
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * rank))
    dilations = list(a.get("dilations", [1] * rank))
    pads = list(a.get("pads", [0] * (2 * rank)))
    begin = pads[:rank]
    need = [(k - 1) * d + s * (o - 1) + 1 for k, d, s, o in zip(kernel, dilations, strides, pooled)]
    pad_end = [max(0, n - b - h) for n, b, h in zip(need, begin, spatial)]
    # ConvTranspose back to the input's size: trailing rows no window reached come from
    # output_padding (must stay below the stride or the dilation)
    conv_end, out_pad = [], []
    for n, b, h, s, d in zip(need, begin, spatial, strides, dilations):
        end = n - b - h
        conv_end.append(max(0, end))
        out_pad.append(max(0, -end))
        if out_pad[-1] and out_pad[-1] >= max(s, d):
            return None

    def name(s: str) -> str:
        return f"{prefix}_{s}"

    nodes, inits = [], []
    inits.append(numpy_helper.from_array(np.zeros(2 * (rank + 2), np.int64), name("zero_pads")))
    pad_vector = np.array([0, 0, *begin, 0, 0, *pad_end], np.int64)
    inits.append(numpy_helper.from_array(pad_vector, name("pads")))
    inits.append(numpy_helper.from_array(np.array(-np.inf, np.float32), name("neg_inf")))
    nodes.append(helper.make_node("Pad", [x_name, name("pads"), name("neg_inf")], [name("xpad")]))
    nodes.append(helper.make_node("Shape", [y_name], [name("yshape")]))
    nodes.append(helper.make_node("Reshape", [scatter.input[2], name("yshape")], [name("grad")]))
    inits.append(numpy_helper.from_array(np.arange(2, 2 + rank, dtype=np.int64), name("axes")))
    inits.append(numpy_helper.from_array(np.array(strides, np.int64), name("steps")))
    taken, total = None, None
    for i, offset in enumerate(itertools.product(*(range(k) for k in kernel))):
        starts = [o * d for o, d in zip(offset, dilations)]
        ends = [st + s * (p - 1) + 1 for st, s, p in zip(starts, strides, pooled)]
        inits.append(numpy_helper.from_array(np.array(starts, np.int64), name(f"starts{i}")))
        inits.append(numpy_helper.from_array(np.array(ends, np.int64), name(f"ends{i}")))
        nodes.append(
            helper.make_node(
                "Slice",
                [name("xpad"), name(f"starts{i}"), name(f"ends{i}"), name("axes"), name("steps")],
                [name(f"win{i}")],
            )
        )
        nodes.append(helper.make_node("Equal", [name(f"win{i}"), y_name], [name(f"eq{i}")]))
        hit = name(f"eq{i}")
        if taken is not None:  # only the first maximum in window order gets the gradient
            nodes.append(helper.make_node("Not", [taken], [name(f"free{i}")]))
            nodes.append(helper.make_node("And", [hit, name(f"free{i}")], [name(f"first{i}")]))
            nodes.append(helper.make_node("Or", [taken, hit], [name(f"taken{i}")]))
            hit, taken = name(f"first{i}"), name(f"taken{i}")
        else:
            taken = hit
        nodes.append(
            helper.make_node("Where", [hit, name("grad"), name("zero")], [name(f"part{i}")])
        )
        weight = np.zeros((channels, 1, *kernel), np.float32)
        weight[(slice(None), 0, *offset)] = 1.0
        inits.append(numpy_helper.from_array(weight, name(f"w{i}")))
        nodes.append(
            helper.make_node(
                "ConvTranspose",
                [name(f"part{i}"), name(f"w{i}")],
                [name(f"back{i}")],
                group=channels,
                kernel_shape=kernel,
                strides=strides,
                dilations=dilations,
                pads=[*begin, *conv_end],
                output_padding=out_pad,
            )
        )
        if total is None:
            total = name(f"back{i}")
        else:
            nodes.append(helper.make_node("Add", [total, name(f"back{i}")], [name(f"sum{i}")]))
            total = name(f"sum{i}")
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), name("zero")))
    nodes.append(helper.make_node("Shape", [scatter.input[0]], [name("flat_shape")]))
    nodes.append(helper.make_node("Reshape", [total, name("flat_shape")], [scatter.output[0]]))
    return nodes, inits


def _drop_dead(model: onnx.ModelProto) -> None:
    """Remove nodes (and MaxPool Indices outputs) nothing uses any more."""
    graph = model.graph
    while True:
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output if o)]
        for node in graph.node:
            if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1] not in used:
                del node.output[1:]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
