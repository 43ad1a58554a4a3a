"""The backends behind `gradvis_runtime.load`.  Each opens an artifact and returns its stored
contract record (JSON text) and a runner: feeds by graph input name -> outputs in order.

`onnxruntime` needs no torch; `libtorch` (TorchScript, AOTInductor, the C++ library) imports it
when it opens a file."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: A backend's call: feeds by graph input name, in the graph's order (the contract's, as
#: `Explainer.feeds` gives them) -> outputs in the artifact's order.
Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]
#: What opening an artifact gives: its contract record (None: it has none) and its runner.
Opened = tuple[str | None, Runner]

BACKENDS = ("onnxruntime", "torchscript", "aoti", "cpp")
#: the backend each format opens with by default
DEFAULT_BACKEND = {"onnx": "onnxruntime", "torchscript": "torchscript", "aoti": "aoti"}
