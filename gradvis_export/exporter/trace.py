"""Tracing an explainer into one aten graph of forward operators (the forward and its
rewritten backward), with a symbolic batch.  The graph passes and checks that follow are in
`passes` and `checks`; `gv.export` runs them as an explicit list."""

from __future__ import annotations

import warnings

import torch
from torch import fx
from torch.fx.experimental.proxy_tensor import make_fx

from gradvis_export.core.explainer import Explainer, Inputs, each_input, first_input
from gradvis_export.core.mode import tracing
from gradvis_export.rules.decompositions import export_rules


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


def trace(
    explainer: Explainer, x: Inputs, inputs: dict[str, torch.Tensor] | None = None
) -> fx.GraphModule:
    """Record forward and rewritten backward of `explainer(x, **inputs)` as one aten graph
    whose placeholders are named `explainer.input_names_for(x)`.

    `x` is batched to at least 2 samples (`example_batch`: a batch-1 trace would fix the batch
    to 1); `inputs` are the target's for that batch (`example_inputs(explainer, x)` when not
    given).  A multi-input
    list becomes one graph input per tensor (`input_0`, `input_1`, ...).  The batch dimension
    stays symbolic; the export rules make every backward op a forward one.  The graph is as
    recorded: `gv.export` runs `passes.GRAPH_PASSES` and `checks` on it.
    """
    multi = isinstance(x, (list, tuple))
    tensors = example_batch([t.detach() for t in each_input(x)])
    x = tensors if multi else tensors[0]
    inputs = example_inputs(explainer, x) if inputs is None else inputs
    names = explainer.input_names_for(x)
    count = len(tensors)

    def run(*values: torch.Tensor):
        given = list(values[:count]) if multi else values[0]
        return tuple(explainer(given, **dict(zip(names[count:], values[count:]))))

    with tracing(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = make_fx(
            run,
            decomposition_table=export_rules(),
            tracing_mode="symbolic",
            _allow_non_fake_inputs=True,
        )(*fake_inputs([*tensors, *inputs.values()], names))
    return name_inputs(gm, names)


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
