"""`Explainer`: a loaded artifact whose `run` checks and completes the inputs against the
artifact's contract, then calls its backend.  The checks live here so every backend reports
bad input the same way."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradvis_runtime.backends import Runner
from gradvis_runtime.contract import ArtifactSpec, InputSpec

Array = np.ndarray


class Explainer:
    """A loaded artifact: `run(input, target=None, **inputs)` gives its named outputs as NumPy
    arrays.  `spec` is its contract (`ArtifactSpec`); `metadata` the same as a JSON object."""

    def __init__(self, path: Path, backend: str, spec: ArtifactSpec, runner: Runner) -> None:
        self.path = path
        self.backend = backend
        self.spec = spec
        self._run = runner
        # read off the spec once: every call needs them
        self.input_names: list[str] = spec.input_names
        self.output_names: list[str] = spec.output_names
        self._data_specs = spec.data_inputs
        self._target_specs = spec.target_inputs

    @property
    def metadata(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def feeds(
        self,
        input: Array | Sequence[Array] | None = None,  # noqa: A002 - the artifact's input name
        target: Array | int | None = None,
        **inputs: Array | float | int | None,
    ) -> dict[str, Array]:
        """The checked, complete graph inputs of one call (defaults filled in)."""
        data = self._data(input, inputs)
        batch = _batch(data)
        given = {"target": target, **inputs}
        names = self.input_names
        unknown = sorted(k for k, v in given.items() if k not in names and v is not None)
        if unknown:
            raise ValueError(
                f"this artifact has no input {unknown[0]!r}; its inputs are {', '.join(names)}"
            )
        feeds = dict(data)
        for spec in self._target_specs:
            feeds[spec.name] = _target_feed(spec, given.get(spec.name), batch)
        return {name: feeds[name] for name in names}

    def run(
        self,
        input: Array | Sequence[Array] | None = None,  # noqa: A002 - the artifact's input name
        target: Array | int | None = None,
        **inputs: Array | float | int | None,
    ) -> dict[str, Array]:
        """Run the artifact.

        The data: one array (`rt.run(x)`), or for a multi-input artifact a list in the graph's
        order (`rt.run([x0, x1])`) or each by name (`rt.run(input_0=x0, input_1=x1)`).
        `target` (class per sample, -1 = argmax) and the other inputs of the artifact's target
        (`mask`, `reference`, `box`, `label`) go by name; one left out takes its default (-1
        for classes, 1 for a mask) or, without one, raises."""
        outputs = self._run(self.feeds(input, target, **inputs))
        return dict(zip(self.output_names, outputs))

    def _data(self, input: object, named: dict[str, object]) -> dict[str, Array]:
        """The data inputs by name, each checked against its spec (`named` loses them)."""
        specs = self._data_specs
        names = [s.name for s in specs]
        given: dict[str, object] = {}
        if isinstance(input, (list, tuple)):
            if len(input) != len(specs):
                raise ValueError(
                    f"this artifact takes {len(specs)} data input(s) ({', '.join(names)}); got "
                    f"a list of {len(input)}"
                )
            given.update(zip(names, input))
        elif input is not None:
            if len(specs) > 1:
                raise ValueError(
                    f"this artifact takes {len(specs)} data inputs ({', '.join(names)}): pass a "
                    f"list in that order, rt.run([{', '.join(names)}], ...), or name each, "
                    f"rt.run({', '.join(f'{n}=...' for n in names)})"
                )
            given[names[0]] = input
        for name in names:
            if named.get(name) is not None:
                if name in given:
                    raise ValueError(f"the input {name!r} is given twice")
                given[name] = named.pop(name)
            named.pop(name, None)
        missing = [n for n in names if given.get(n) is None]
        if missing:
            raise ValueError(
                f"this artifact needs the data input(s) {', '.join(missing)} (its data inputs: "
                f"{', '.join(names)})"
            )
        return {spec.name: _data_feed(spec, given[spec.name], len(specs) > 1) for spec in specs}

    def __repr__(self) -> str:
        return f"gradvis_runtime.Explainer({str(self.path)!r}, backend={self.backend!r})"


def _data_feed(spec: InputSpec, value: object, named: bool) -> Array:
    what = f"input {spec.name!r}" if named else "input"
    x = np.asarray(value)
    if spec.dtype == "uint8" and x.dtype != np.uint8:
        raise ValueError(f"this artifact takes uint8 frames, got {x.dtype}")
    if spec.dtype != "uint8" and x.dtype.kind not in "fiu":
        raise ValueError(f"the {what} must be a numeric array, got dtype {x.dtype}")
    x = np.ascontiguousarray(x.astype(spec.dtype, copy=False))
    if x.ndim != len(spec.shape) or list(x.shape[1:]) != list(spec.shape[1:]):
        raise ValueError(
            f"{what} has shape {x.shape}; this artifact takes {tuple(spec.shape)} "
            f"({spec.layout or ''}, B = any batch size)"
        )
    if x.shape[0] < 1:
        raise ValueError(f"{what} has batch size 0; pass at least one sample")
    return x


def _batch(data: dict[str, Array]) -> int:
    batches = {name: int(x.shape[0]) for name, x in data.items()}
    if len(set(batches.values())) > 1:
        raise ValueError(
            f"the data inputs have batch sizes {batches}; every input holds the same samples, "
            "so the batch sizes must be equal"
        )
    return next(iter(batches.values()))


def _target_feed(spec: InputSpec, value: object, batch: int) -> Array:
    dtype = np.dtype(spec.dtype)
    shape = [batch, *spec.shape[1:]]
    name = spec.name
    if value is None:
        if spec.default is None:
            raise ValueError(f"this artifact needs the input {name!r}: {spec.doc}")
        return np.full(shape, spec.default, dtype=dtype)
    array = np.asarray(value)
    if dtype.kind in "iu" and array.dtype.kind == "f":
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    array = array.astype(dtype, copy=False)
    if array.ndim == 0:
        array = np.full(shape, array, dtype=dtype)
    if list(array.shape) != shape:
        raise ValueError(
            f"{name} has shape {array.shape}; expected {tuple(shape)}"
            + (", -1 = argmax" if name == "target" else "")
        )
    return np.ascontiguousarray(array)
