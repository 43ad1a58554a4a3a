"""Exported artifacts (ONNX in onnxruntime, TorchScript in torch.jit.load) vs eager.

Each artifact is exported from a batch-2 example and run on fresh inputs at batch 1 and 3 with
per-sample targets; eager itself is checked against independent references in
test_reference.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import MODEL_FACTORIES, make_input

import gradvis_export as gv

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# Grad-CAM and the guided methods on every model; the rest of the registry's CAM family on
# the quick nets (CAM_MODELS)
METHODS = [n for n, cls in gv.METHODS.items() if n == "gradcam" or cls.takes_activations]
CAM_METHODS = [
    n for n, cls in gv.METHODS.items() if issubclass(cls, gv.BaseCAM) and n not in METHODS
]
NO_RELU = {"efficientnet_b0"}


def make_explainer(method: str, name: str, spec) -> gv.Explainer:
    cls = gv.METHODS[method]
    return gv.make_explainer(
        method,
        spec.model,
        spec.target_layer if cls.takes_layer else None,
        activations=("all" if name in NO_RELU else "relu") if cls.takes_activations else None,
    )


# 2-D and 3-D nets whose exports are quick; chunk sizes that split their layers' channels
# (24 and 256) into three chunks with an uneven last one.
CAM_MODELS = {"mixed_relu_net": 10, "slow_resnet": 100}
# ReciproCAM chunks positions: resnet18's layer4 (2x2) in chunks of 3 and 1, slow_resnet's
# 4x4x4 in one.  Not mixed_relu_net: a copy keeps one of 64 positions of a map that feeds an
# average pool, so its class probabilities differ by < 1e-4 between positions and the
# normalised maps would compare the runtimes' float rounding.
RECIPROCAM_MODELS = {"resnet18": 3, "slow_resnet": 100}
CHUNKED = ("scorecam", "ablationcam", "reciprocam")


def cam_models(method: str) -> dict[str, int]:
    return RECIPROCAM_MODELS if method == "reciprocam" else CAM_MODELS


def run_onnx(path: Path, x: torch.Tensor, target: torch.Tensor) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input", "target"]
    return session.run(None, {"input": x.numpy(), "target": target.numpy()})


def run_torchscript(path: Path, x: torch.Tensor, target: torch.Tensor) -> list[np.ndarray]:
    module = torch.jit.load(str(path))
    with torch.inference_mode():
        return [o.numpy() for o in module(x, target)]


def assert_matches(got: list[np.ndarray], want, label: str) -> None:
    assert len(got) == len(want), label
    for name, g, w in zip(want._fields, got, want):
        w = w.numpy()
        assert g.shape == w.shape, f"{label} {name}: shape {g.shape} vs {w.shape}"
        scale = float(np.abs(w).max())
        np.testing.assert_allclose(
            g, w, rtol=1e-4, atol=1e-4 * scale + 1e-6, err_msg=f"{label} output {name!r}"
        )


def targets_for(batch: int) -> torch.Tensor:
    # class 3 gives a non-zero map on every test net (see test_reference.py)
    return torch.tensor([-1, 3, 3][:batch], dtype=torch.long)


def exported_match_eager(explainer, spec, tmp_path) -> list:
    """Export from a batch-2 example to ONNX and TorchScript; both match eager at batch 1 and 3
    (asserted here); returns eager's outputs for further checks."""
    example = make_input((2, *spec.input_shape[1:]), seed=100)
    onnx_path = gv.export(explainer, example, tmp_path / "explainer.onnx", check=False)
    ts_path = gv.export(explainer, example, tmp_path / "explainer.pt", check=False)
    outputs = []
    for batch in (1, 3):
        x = make_input((batch, *spec.input_shape[1:]), seed=batch)
        target = targets_for(batch)
        want = explainer(x, target)
        assert_matches(run_onnx(onnx_path, x, target), want, f"onnx b={batch}")
        assert_matches(run_torchscript(ts_path, x, target), want, f"torchscript b={batch}")
        outputs.append(want)
    return outputs


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", list(MODEL_FACTORIES))
def test_artifacts_match_eager_on_other_batch_sizes(tmp_path, name, method):
    spec = MODEL_FACTORIES[name]()
    explainer = make_explainer(method, name, spec)
    for want in exported_match_eager(explainer, spec, tmp_path):
        heat = want.heatmap.abs().flatten(1).amax(1)
        assert bool((heat > 0).all()), "a zero heatmap proves nothing: pick other targets"


@pytest.mark.parametrize(
    "name, method", [(name, method) for method in CAM_METHODS for name in cam_models(method)]
)
def test_cam_family_artifacts_match_eager(tmp_path, name, method):
    spec = MODEL_FACTORIES[name]()
    cls = gv.METHODS[method]
    chunked = {"chunk_size": cam_models(method)[name]} if method in CHUNKED else {}
    explainer = cls(spec.model, spec.target_layer, **chunked)
    for want in exported_match_eager(explainer, spec, tmp_path):
        spread = want.heatmap.flatten(1)
        assert bool((spread.amax(1) > spread.amin(1)).all()), "a constant heatmap proves nothing"


def test_export_refuses_training_mode_and_keeps_model(tmp_path):
    spec = MODEL_FACTORIES["resnet18"]()
    spec.model.train()
    with pytest.raises(gv.ExportError, match="model.eval"):
        gv.export(
            gv.GradCAM(spec.model, "layer4"), make_input(spec.input_shape), tmp_path / "a.onnx"
        )
    assert spec.model.training
    assert list(tmp_path.iterdir()) == []


def test_x3d_guided_all_with_swish_exports(tmp_path):
    """The Swish adapter (a temporary forward hook) is traced into the artifact too."""
    spec = MODEL_FACTORIES["x3d"]()
    explainer = gv.GuidedBackprop(spec.model, activations="all")
    example = make_input((2, *spec.input_shape[1:]), seed=100)
    path = gv.export(explainer, example, tmp_path / "x3d_guided_all.onnx", check=False)
    for batch in (1, 3):
        x = make_input((batch, *spec.input_shape[1:]), seed=batch)
        target = targets_for(batch)
        assert_matches(run_onnx(path, x, target), explainer(x, target), f"onnx b={batch}")
