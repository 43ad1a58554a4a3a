"""ONNX artifacts on onnxruntime (no torch): TensorRT / CUDA / CPU providers as available."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradvis_runtime.backends import Opened
from gradvis_runtime.contract import METADATA_KEY


def open_onnx(
    path: Path,
    providers: list[str] | None,
    threads: int | None,
    session_config: dict[str, str] | None = None,
) -> Opened:
    """onnxruntime with the asked providers, else TensorRT / CUDA / CPU as available."""
    import onnxruntime as ort

    try:
        import onnx
    except ImportError:  # the checker is optional: the runtime needs only onnxruntime
        onnx = None
    if onnx is not None:  # a damaged or hand-edited graph is refused before onnxruntime parses it
        onnx.checker.check_model(str(path))
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    for key, value in (session_config or {}).items():
        options.add_session_config_entry(str(key), str(value))
    options.log_severity_level = 3
    available = ort.get_available_providers()
    chosen = providers or [
        p
        for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
        if p in available
    ]
    session = ort.InferenceSession(str(path), options, providers=chosen)
    record = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return session.run(None, feeds)

    return record, run
