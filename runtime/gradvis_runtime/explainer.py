"""`Explainer`: a loaded artifact whose `run` checks and completes the inputs, then calls its
backend.  The checks live here so every backend reports bad input the same way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: A backend's call: feeds by graph input name -> outputs in the artifact's order.
Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


class Explainer:
    """A loaded artifact: `run(input, target=None, **inputs)` gives its named outputs as NumPy
    arrays."""

    def __init__(self, path: Path, backend: str, metadata: dict[str, Any], runner: Runner) -> None:
        self.path = path
        self.backend = backend
        self.metadata = metadata
        self._run = runner

    @property
    def input_names(self) -> list[str]:
        return list(self.metadata.get("inputs", ["input", "target"]))

    @property
    def output_names(self) -> list[str]:
        return list(self.metadata.get("outputs", []))

    def feeds(
        self,
        input: np.ndarray,  # noqa: A002 - the artifact's input name
        target: np.ndarray | int | None = None,
        **inputs: np.ndarray | float | int | None,
    ) -> dict[str, np.ndarray]:
        """The checked, complete graph inputs of one call (defaults filled in)."""
        dtype = self.metadata.get("input_specs", {}).get("input", {}).get("dtype", "float32")
        x = np.asarray(input)
        if dtype == "uint8" and x.dtype != np.uint8:
            raise ValueError(f"this artifact takes uint8 frames, got {x.dtype}")
        if dtype != "uint8" and x.dtype.kind not in "fiu":
            raise ValueError(f"the input must be a numeric array, got dtype {x.dtype}")
        x = np.ascontiguousarray(x.astype(dtype, copy=False))
        shape = self.metadata.get("input_shape")
        if shape and (x.ndim != len(shape) or list(x.shape[1:]) != list(shape[1:])):
            raise ValueError(
                f"input has shape {x.shape}; this artifact takes {tuple(shape)} "
                f"({self.metadata.get('input_layout', '')}, B = any batch size)"
            )
        if x.shape[0] < 1:
            raise ValueError("input has batch size 0; pass at least one sample")
        names = self.input_names
        given = {"target": target, **inputs}
        unknown = sorted(k for k, v in given.items() if k not in names and v is not None)
        if unknown:
            raise ValueError(
                f"this artifact has no input {unknown[0]!r}; its inputs are {', '.join(names)}"
            )
        feeds = {"input": x}
        for name in names[1:]:
            feeds[name] = self._feed(name, given.get(name), x.shape[0])
        return feeds

    def run(
        self,
        input: np.ndarray,  # noqa: A002 - the artifact's input name
        target: np.ndarray | int | None = None,
        **inputs: np.ndarray | float | int | None,
    ) -> dict[str, np.ndarray]:
        """Run the artifact.  `target` (class per sample, -1 = argmax) and the other inputs of
        the artifact's target (`mask`, `reference`, `box`, `label`) go by name; an input left out
        takes its default (-1 for classes, 1 for a mask) or, without one, raises."""
        outputs = self._run(self.feeds(input, target, **inputs))
        names = self.output_names or [f"output_{i}" for i in range(len(outputs))]
        return dict(zip(names, outputs))

    def _feed(self, name: str, value: object, batch: int) -> np.ndarray:
        spec = self.metadata.get("input_specs", {}).get(name, {})
        dtype = np.dtype(spec.get("dtype", "int64"))
        shape = [batch, *spec.get("shape", ["B"])[1:]]
        if value is None:
            default = spec.get("default", -1 if name == "target" else None)
            if default is None:
                raise ValueError(f"this artifact needs the input {name!r}: {spec.get('doc', '')}")
            return np.full(shape, default, dtype=dtype)
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

    def __repr__(self) -> str:
        return f"gradvis_runtime.Explainer({str(self.path)!r}, backend={self.backend!r})"
