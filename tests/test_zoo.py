"""Model-zoo compatibility matrix: torchvision classifiers and pytorchvideo models.

Each architecture (tests/zoo_models.py: seeded random init, small inputs) is explained with
the default target layer (`gradvis_export.core.layers.default_layer`; the layer the rule must give
is written in the zoo by hand), and checked against the independent references of
tests/zoo_checks.py (plain autograd Grad-CAM, guided backprop through a TorchFunctionMode).
Exports go to ONNX (onnxruntime) and TorchScript from a batch-2 example and are compared with
eager here, on fresh inputs at batch 1 and 3.

* The fast subset (always run): per architecture, the three explainers against the
  references in eager mode, and guided Grad-CAM — whose outputs hold the Grad-CAM map (`cam`)
  and the guided gradient (`guided`) as well — exported to both formats.
* `--zoo` (marker `zoo`): every architecture x method as its own row, each method exported.
  `python benchmarks/zoo.py` runs the same rows and writes docs/ZOO.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guided_reference import GuidedMode
from zoo_checks import (
    METHODS,
    Mismatch,
    check_eager,
    check_export,
    compare,
    explainer_for,
    reference_guided,
    targets_for,
)
from zoo_models import ZOO, make_inputs

import gradvis_export as gv
from gradvis_export.core.layers import default_layer

torch.set_num_threads(int(os.environ.get("GRADVIS_TEST_THREADS", "1")))

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

FAST = [name for name, entry in ZOO.items() if entry.fast]
ROWS = [(name, method) for name in ZOO for method in METHODS]


def assert_non_trivial(spread: dict[str, float], label: str) -> None:
    """A map that is constant for every sample would make the comparison prove nothing."""
    flat = [name for name, value in spread.items() if value <= 0]
    assert not flat, f"{label}: {flat} constant on every sample; choose other targets or inputs"


def test_fast_subset_spans_images_and_video():
    videos = [name for name in FAST if ZOO[name].video]
    assert len(FAST) >= 12 and len(videos) >= 3 and len(FAST) - len(videos) >= 6


@pytest.mark.parametrize("name", FAST)
def test_fast_subset(name, tmp_path):
    entry = ZOO[name]
    model = entry.build()
    for method in METHODS:
        spread = check_eager(entry, model, explainer_for(method, model), method)
        assert_non_trivial(spread, f"{name} {method}")
    explainer = explainer_for("guided-gradcam", model)
    for fmt in ("onnx", "torchscript"):
        check_export(entry, explainer, fmt, tmp_path, check=False)


@pytest.mark.zoo
@pytest.mark.parametrize("name,method", ROWS, ids=[f"{n}-{m}" for n, m in ROWS])
def test_matrix_row(name, method, tmp_path):
    entry = ZOO[name]
    model = entry.build()
    explainer = explainer_for(method, model)
    assert_non_trivial(check_eager(entry, model, explainer, method), f"{name} {method}")
    for fmt in ("onnx", "torchscript"):
        check_export(entry, explainer, fmt, tmp_path, check=True)


# ----------------------------------------------------------------------- default layer


def test_default_layer_leaves_the_model_as_it_was():
    entry = ZOO["resnet18"]
    model = entry.build()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hooks = [(m._forward_hooks.copy(), m._forward_pre_hooks.copy()) for m in model.modules()]
    choice = default_layer(model, make_inputs(entry, 1, seed=0))
    assert choice == ("layer4", None)
    assert not model.training
    assert [(m._forward_hooks, m._forward_pre_hooks) for m in model.modules()] == hooks
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_default_layer_error_names_the_fix():
    """A model without a spatial map (it flattens the image first) gets a LayerError."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    with pytest.raises(gv.LayerError, match="pass the target layer explicitly"):
        gv.GradCAM(model)(torch.randn(2, 3, 8, 8))


def test_explicit_layer_is_kept():
    entry = ZOO["resnet18"]
    model = entry.build()
    explainer = gv.GradCAM(model, "layer3")
    explainer(make_inputs(entry, 1, seed=0))
    assert [name for name, _ in explainer.layers] == ["layer3"]
    assert explainer.options()["default_layer"] is False


def test_default_layer_before_the_first_call_is_a_clear_error():
    explainer = gv.GradCAM(ZOO["resnet18"].build())
    with pytest.raises(gv.LayerError, match="chosen on the first eager call"):
        _ = explainer.target_layers


# ----------------------------------------------------------------------- multi-input


@pytest.fixture(scope="module")
def slowfast():
    entry = ZOO["slowfast"]
    return entry, entry.build()


def test_slowfast_pathway_choice(slowfast):
    """The maps are on the fast pathway by default; pathway=0 gives the slow one."""
    entry, model = slowfast
    x, target = make_inputs(entry, 2, seed=5), targets_for(2)
    fast = gv.GuidedBackprop(model, activations="all")(x, target).heatmap
    slow = gv.GuidedBackprop(model, activations="all", pathway=0)(x, target).heatmap
    assert fast.shape == x[1].shape and slow.shape == x[0].shape
    want = reference_guided(entry, model, x, target)  # the reference's own pick: fast
    torch.testing.assert_close(fast, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    xs = [t.detach().requires_grad_(True) for t in x]  # the slow pathway's guided gradient
    with torch.enable_grad(), GuidedMode("all"):
        logits = model(list(xs))
    classes = torch.where(target < 0, logits.argmax(1), target)
    (grad,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), xs[0])
    torch.testing.assert_close(slow, grad, rtol=1e-4, atol=1e-4 * float(grad.abs().max()))
    cam = gv.GradCAM(model, pathway=0)(x, target).heatmap
    assert cam.shape == (2, *x[0].shape[2:])


def test_multi_input_errors_name_the_fix(slowfast):
    entry, model = slowfast
    x = make_inputs(entry, 2, seed=6)
    with pytest.raises(gv.InputError, match="batch sizes"):
        gv.GradCAM(model)([x[0], x[1][:1]])
    with pytest.raises(gv.InputError, match="pathway=2 but the model takes 2 inputs"):
        gv.GradCAM(model, pathway=2)(x)
    with pytest.raises(gv.InputError, match="masks one input tensor"):
        gv.ScoreCAM(model, "blocks.4")(x)
    with pytest.raises(gv.InputError, match="empty"):
        gv.GradCAM(model)([])
    single = ZOO["resnet18"].build()
    with pytest.raises(gv.InputError, match="multi-input list of 2 tensors"):
        gv.GradCAM(single, "layer4")([torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)])


def test_multi_input_export_metadata(slowfast, tmp_path):
    import onnx

    from gradvis_runtime import ArtifactSpec

    entry, model = slowfast
    path = gv.export(gv.GradCAM(model), make_inputs(entry, 2, seed=7), tmp_path / "sf.onnx")
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input_0", "input_1", "target"]
    spec = ArtifactSpec.from_json({p.key: p.value for p in proto.metadata_props}["gradvis"])
    assert spec.input_names == ["input_0", "input_1", "target"]
    assert [s.role for s in spec.inputs] == ["data", "data", "target"]
    assert spec.map_input == "input_1"
    assert spec.map_spec.shape == ("B", 3, 8, 64, 64) and spec.clip_len == 8
    assert spec.input("input_0").shape == ("B", 3, 2, 64, 64)
    assert spec.layers == ("blocks.4",) and spec.options["default_layer"] is True


def test_mismatch_is_reported():
    """The comparison the matrix relies on fails on a wrong map."""
    want = torch.rand(2, 8, 8).numpy()
    with pytest.raises(Mismatch):
        compare(want * 1.01, want, "scaled")
    compare(want + 1e-6, want, "rounding")
    # isolated flips (a ReLU input within rounding of 0): up to 1 in 1,000 elements
    big = torch.rand(100, 100).numpy()
    flipped = big.copy()
    flipped.flat[::2000] += 0.01  # 5 of 10,000
    compare(flipped, big, "five flips")
    flipped.flat[::500] += 0.01  # 20 of 10,000
    with pytest.raises(Mismatch, match="20 of 10000"):
        compare(flipped, big, "twenty flips")
