"""The contract an exported artifact carries (`gradvis_runtime.ArtifactSpec`), built from the
explainer, its example and its first eager output."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

from gradvis_export._version import __version__
from gradvis_export.core.explainer import Explainer, Inputs, each_input
from gradvis_runtime import ArtifactSpec, InputSpec, OutputSpec, Preprocess

#: Fields of `gv.export(..., metadata=...)` that are contract fields; every other key is kept
#: in the contract's `extra`.
USER_FIELDS = ("class_names", "mean", "std")


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def layout_of(x: torch.Tensor) -> str | None:
    """BCHW / BCTHW float planes, BHWC / BTHWC uint8 RGB frames."""
    if x.dim() not in (4, 5):
        return None
    if x.dtype == torch.uint8:
        return "BHWC" if x.dim() == 4 else "BTHWC"
    return "BCHW" if x.dim() == 4 else "BCTHW"


def batch_shape(t: torch.Tensor) -> tuple[int | str, ...]:
    return ("B", *(int(s) for s in t.shape[1:]))


def user_fields(metadata: Mapping[str, object] | None) -> dict[str, object]:
    """`metadata=` checked: JSON-serialisable, no clash with the contract's own fields."""
    import json

    extra = dict(metadata or {})
    try:
        json.dumps(extra)
    except TypeError as error:
        raise ValueError(f"metadata must be JSON-serialisable: {error}") from error
    reserved = sorted(set(extra) & (set(ArtifactSpec.__dataclass_fields__) - set(USER_FIELDS)))
    if reserved:
        raise ValueError(
            f"metadata key {reserved[0]!r} is a field of the artifact contract, which gv.export "
            "fills in itself; give your field another name"
        )
    names = extra.get("class_names")
    if names is not None and (
        not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)
    ):
        raise ValueError(f"metadata class_names must be a list of strings, got {names!r}")
    for key in ("mean", "std"):
        value = extra.get(key)
        if value is not None and (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, (int, float)) for v in value)
        ):
            raise ValueError(f"metadata {key} must be a list of numbers (per channel)")
    return extra


def artifact_spec(
    explainer: Explainer,
    x: Inputs,
    inputs: dict[str, torch.Tensor],
    first: NamedTuple,
    fmt: str,
    precision: str,
    profile: str | None,
    user: dict[str, object],
) -> ArtifactSpec:
    """The record of an artifact traced from `x` (with the target's `inputs`), whose eager
    output on one sample was `first`."""
    tensors = each_input(x)
    names = list(explainer.input_names_for(x))
    shown = explainer.map_input(x)
    data = [
        InputSpec(name, "data", dtype_name(t.dtype), batch_shape(t), layout_of(t))
        for name, t in zip(names, tensors)
    ]
    targets = [
        InputSpec(
            spec.name,
            "target",
            dtype_name(spec.dtype),
            batch_shape(inputs[spec.name]),
            None,
            spec.default,
            spec.doc,
        )
        for spec in explainer.target.specs
    ]
    meanings = explainer.output_meanings(first._fields)
    outputs = [
        OutputSpec(name, dtype_name(value.dtype), batch_shape(value), meanings.get(name, ""))
        for name, value in zip(first._fields, first)
    ]
    with torch.no_grad():
        one = [t[:1] for t in x] if isinstance(x, list) else x[:1]
        output = explainer.run_model(explainer.model_input(one))
    in_graph = explainer.in_graph_preprocessing()
    user = dict(user)
    mean, std = user.pop("mean", None), user.pop("std", None)
    if in_graph is not None:
        if mean is not None or std is not None:
            raise ValueError(
                "metadata mean / std describe a float artifact's normalisation; this one "
                "normalises inside the graph (UInt8Input(mean=..., std=...)): drop them"
            )
        preprocess = Preprocess(True, *in_graph)
    else:
        if (mean is None) != (std is None):
            raise ValueError("metadata mean and std go together: give both or neither")
        preprocess = Preprocess(
            False,
            None if mean is None else tuple(map(float, mean)),
            None if std is None else tuple(map(float, std)),
        )
    names_given = user.pop("class_names", None)
    num_classes = explainer.target.num_classes(output)
    class_names = None if names_given is None else tuple(names_given)
    if class_names is not None and num_classes is not None and len(class_names) != num_classes:
        raise ValueError(
            f"metadata class_names has {len(class_names)} names but the model has "
            f"{num_classes} classes"
        )
    return ArtifactSpec(
        format=fmt,
        method=explainer.method,
        inputs=(*data, *targets),
        outputs=tuple(outputs),
        map_input=names[[t is shown for t in tensors].index(True)],
        layers=tuple(explainer.target_layers),
        target=explainer.target.metadata(),
        preprocess=preprocess,
        class_names=class_names,
        num_classes=num_classes,
        precision=precision,
        profile=profile,
        options=explainer.options(),
        extra={"torch_version": torch.__version__, **user},
        gradvis_version=__version__,
    )
