"""Public API behaviour: side-effect freedom, clear errors, the export guard."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import MODEL_FACTORIES, make_input

import gradvis_export as gv
from gradvis_export.exporter import guard

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def model_state(model: nn.Module) -> dict:
    """Everything an explainer must leave as it found it."""
    return {
        "modules": [(name, id(m), type(m)) for name, m in model.named_modules()],
        "hooks": [
            (
                name,
                dict(m._forward_hooks),
                dict(m._forward_pre_hooks),
                dict(m._backward_hooks),
                dict(getattr(m, "_backward_pre_hooks", {})),
            )
            for name, m in model.named_modules()
        ],
        "requires_grad": [(name, p.requires_grad) for name, p in model.named_parameters()],
        "grads": [p.grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "inplace": [getattr(m, "inplace", None) for m in model.modules()],
        "params": [p.detach().clone() for p in model.parameters()],
    }


def assert_same_state(before: dict, after: dict) -> None:
    for key in before:
        if key == "params":
            assert all(torch.equal(a, b) for a, b in zip(before[key], after[key])), key
        else:
            assert before[key] == after[key], key


@pytest.mark.parametrize("frozen", [False, True], ids=["trainable", "frozen"])
def test_build_run_export_leave_the_model_unchanged(tmp_path, frozen):
    spec = MODEL_FACTORIES["resnet18"]()
    model = spec.model
    if frozen:  # a deployed model often has requires_grad=False everywhere
        model.requires_grad_(False)
    before = model_state(model)
    x = make_input(spec.input_shape, seed=3)
    for explainer in (
        gv.GradCAM(model, "layer4"),
        gv.GuidedBackprop(model),
        gv.GuidedGradCAM(model, model.layer4),
    ):
        out = explainer(x)
        assert out.heatmap.abs().sum() > 0
        gv.export(explainer, x, tmp_path / f"{explainer.method}.pt")
    assert_same_state(before, model_state(model))


def test_side_effect_free_with_functional_and_inplace_relu(tmp_path):
    spec = MODEL_FACTORIES["mixed_relu_net"]()
    before = model_state(spec.model)
    x = make_input(spec.input_shape, seed=4)
    explainer = gv.GuidedGradCAM(spec.model, spec.target_layer)
    explainer(x)
    gv.export(explainer, x, tmp_path / "ggc.onnx")
    assert_same_state(before, model_state(spec.model))


def test_unknown_layer_names_the_closest():
    spec = MODEL_FACTORIES["resnet18"]()
    with pytest.raises(gv.LayerError, match=r"no layer named 'layer5'.*'layer4'"):
        gv.GradCAM(spec.model, "layer5")
    with pytest.raises(gv.LayerError, match="not part of the model"):
        gv.GradCAM(spec.model, nn.Conv2d(1, 1, 1))


@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 2, 3, 4, 5, 6), (8,)])
def test_wrong_rank_names_the_layouts(shape):
    spec = MODEL_FACTORIES["resnet18"]()
    with pytest.raises(gv.InputError, match=r"\(B,C,H,W\).*\(B,C,T,H,W\)"):
        gv.GradCAM(spec.model, "layer4")(torch.randn(shape))


def test_integer_input_is_refused():
    spec = MODEL_FACTORIES["resnet18"]()
    with pytest.raises(gv.InputError, match="floating-point"):
        gv.GradCAM(spec.model, "layer4")(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


@pytest.mark.parametrize("target", [[10, 0], [-2, 1]])
def test_target_out_of_range_in_eager(target):
    spec = MODEL_FACTORIES["resnet18"]()  # 10 classes
    with pytest.raises(gv.InputError, match=r"out of range.*10 classes"):
        gv.GradCAM(spec.model, "layer4")(make_input(spec.input_shape), torch.tensor(target))


def test_target_of_wrong_shape():
    spec = MODEL_FACTORIES["resnet18"]()
    with pytest.raises(gv.InputError, match=r"expected \(2,\)"):
        gv.GradCAM(spec.model, "layer4")(make_input(spec.input_shape), torch.tensor([1, 2, 3]))


def test_out_of_range_target_in_an_artifact_gives_a_zero_heatmap(tmp_path):
    """Documented: the artifact does not raise; the out-of-range sample's heatmap is zero."""
    import onnxruntime as ort

    spec = MODEL_FACTORIES["resnet18"]()
    x = make_input(spec.input_shape, seed=5)
    path = gv.export(gv.GradCAM(spec.model, "layer4"), x, tmp_path / "cam.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, heatmap = session.run(None, {"input": x.numpy(), "target": np.array([99, 3])})
    assert np.all(heatmap[0] == 0)
    assert heatmap[1].max() == pytest.approx(1.0)
    with torch.no_grad():
        np.testing.assert_allclose(logits, spec.model(x).numpy(), rtol=1e-4, atol=1e-5)


class TwoHeads(nn.Module):
    """`unused` runs but the logits do not depend on it; `never` is never called."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.unused = nn.Conv2d(3, 4, 3, padding=1)
        self.never = nn.Conv2d(3, 4, 3)
        self.head = nn.Linear(4, 5)

    def forward(self, x):
        self.unused(x)
        return self.head(F.relu(self.features(x)).mean((2, 3)))


def test_layer_the_output_does_not_depend_on():
    model = TwoHeads().eval()
    with pytest.raises(gv.LayerError, match="does not depend on layer 'unused'"):
        gv.GradCAM(model, "unused")(torch.randn(2, 3, 8, 8))
    with pytest.raises(gv.LayerError, match="'never' did not run"):
        gv.GradCAM(model, "never")(torch.randn(2, 3, 8, 8))


def test_guided_backprop_without_the_chosen_activations_names_what_the_model_has():
    spec = MODEL_FACTORIES["efficientnet_b0"]()  # SiLU + sigmoid gates, no ReLU
    x = make_input(spec.input_shape)
    with pytest.raises(ValueError, match=r"none of the activations relu.*silu.*activations='all'"):
        gv.GuidedBackprop(spec.model, activations="relu")(x)
    out = gv.GuidedBackprop(spec.model, activations="all")(x)
    plain = x.clone().requires_grad_()
    logits = spec.model(plain)
    (grad,) = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), plain)
    assert (out.heatmap - grad).abs().max() > 0.01 * grad.abs().max()  # the rule changed it


def test_all_zero_gradient_gives_zero_maps_not_nan():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # every ReLU closed: all gradients are zero
    x = torch.randn(2, 3, 8, 8)
    for explainer in (gv.GradCAM(model, "0"), gv.GuidedGradCAM(model, "0")):
        out = explainer(x)
        assert torch.isfinite(out.heatmap).all()
        assert (out.heatmap == 0).all()


def test_inference_mode_is_refused_clearly():
    spec = MODEL_FACTORIES["resnet18"]()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        gv.GradCAM(spec.model, "layer4")(make_input(spec.input_shape))


def test_export_format_errors(tmp_path):
    spec = MODEL_FACTORIES["resnet18"]()
    cam = gv.GradCAM(spec.model, "layer4")
    x = make_input(spec.input_shape)
    with pytest.raises(ValueError, match="use .onnx or .pt"):
        gv.export(cam, x, tmp_path / "cam.bin")
    with pytest.raises(ValueError, match="unknown export format"):
        gv.export(cam, x, tmp_path / "cam.bin", format="tflite")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gv.export(cam, x, tmp_path / "missing" / "cam.onnx")
    assert list(tmp_path.iterdir()) == []


def test_guard_rejects_an_artifact_with_a_constant_heatmap(tmp_path, monkeypatch):
    """A constant-folded heatmap (captum#1778) must not be written out."""
    spec = MODEL_FACTORIES["resnet18"]()
    cam = gv.GradCAM(spec.model, "layer4")
    real_runner = guard.open_artifact

    def constant_heatmap(fmt, path):
        run = real_runner(fmt, path)
        fixed = {}

        def wrapped(feeds):
            logits, heatmap = run(feeds)
            fixed.setdefault("h", heatmap[:1])
            return [logits, np.repeat(fixed["h"], feeds["input"].shape[0], axis=0)]

        return wrapped

    monkeypatch.setattr(guard, "open_artifact", constant_heatmap)
    with pytest.raises(gv.ExportError, match="differs from eager|same for two different inputs"):
        gv.export(cam, make_input(spec.input_shape), tmp_path / "cam.onnx")
    assert list(tmp_path.iterdir()) == []


def test_exported_metadata_and_runtime(tmp_path):
    import gradvis_runtime

    spec = MODEL_FACTORIES["x3d"]()
    x = make_input(spec.input_shape, seed=7)
    cam = gv.GradCAM(spec.model, spec.target_layer)
    path = gv.export(cam, x, tmp_path / "x3d_cam.onnx")
    rt = gradvis_runtime.load(path, threads=1)
    assert rt.spec.method == "gradcam"
    assert rt.spec.layers == ("blocks.4",)
    assert rt.spec.layout == "BCTHW"
    x1 = make_input((1, *spec.input_shape[1:]), seed=8)
    out = rt.run(x1.numpy(), [3])
    want = cam(x1, torch.tensor([3]))
    np.testing.assert_allclose(out["heatmap"], want.heatmap.numpy(), atol=1e-4)
    assert out["heatmap"].shape == (1, *spec.input_shape[2:])
    with pytest.raises(ValueError, match="this artifact takes"):
        rt.run(np.zeros((1, 3, 4, 32, 32), dtype=np.float32))


class Warp(nn.Module):
    """A fixed spatial warp (grid_sample): its backward has no forward rewrite yet."""

    def __init__(self) -> None:
        super().__init__()
        theta = torch.tensor([[[0.9, 0.1, 0.0], [-0.1, 0.9, 0.0]]])
        self.register_buffer("grid", F.affine_grid(theta, [1, 4, 8, 8], align_corners=False))

    def forward(self, x):
        return F.grid_sample(x, self.grid.expand(x.shape[0], -1, -1, -1), align_corners=False)


def test_export_names_the_op_and_layer_it_cannot_rewrite(tmp_path):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        Warp(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    before = model_state(model)
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(gv.ExportError, match=r"grid_sampler_2d_backward.*layer\(s\) '2'"):
        gv.export(gv.GuidedBackprop(model), x, tmp_path / "warp.onnx")
    assert list(tmp_path.iterdir()) == []
    assert_same_state(before, model_state(model))


def test_guard_tolerates_a_few_flipped_relu_gates_but_not_drift():
    from gradvis_export.exporter.guard import close as _close

    rng = np.random.default_rng(0)
    want = rng.normal(size=(3, 3, 64, 64)).astype(np.float32)
    flipped = want.copy()
    # 0.05 % of the elements off by 1 % of the maximum (measured on ResNet-50: 0.035 %, 0.36 %)
    flipped.flat[rng.choice(want.size, 20, replace=False)] += 0.01 * np.abs(want).max()
    assert _close(flipped, want, 1e-3)
    drifted = want * 1.01
    assert not _close(drifted, want, 1e-3)
    many = want.copy()
    many.flat[rng.choice(want.size, want.size // 100, replace=False)] += 0.01 * np.abs(want).max()
    assert not _close(many, want, 1e-3)
    assert not _close(want[:2], want, 1e-3)
    assert not _close(np.full_like(want, np.nan), want, 1e-3)


def test_targets_example_runs(tmp_path):
    """The README's targets example (examples/targets.py) runs as shipped."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "examples" / "targets.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "('boxes', 'scores', 'heatmap')" in done.stdout
    assert (tmp_path / "detection_eigengradcam.onnx").is_file()


def test_seed_gradvis_interface_writes_overlays(tmp_path):
    """GradVis(model).compute_grad(input_tensor, path): one PNG per frame + an MP4; the PNGs
    are the clip (each frame min-max scaled over all its channels) blended with the eager
    Grad-CAM of the layer the library's one default-layer rule picks
    (gradvis_export.core.layers.default_layer)."""
    from PIL import Image

    from gradvis_export.apps.video.overlay import colormap

    spec = MODEL_FACTORIES["x3d"]()
    clip = make_input((3, 4, 64, 64), seed=9)
    out = gv.GradVis(spec.model).compute_grad(input_tensor=clip, path=tmp_path / "vis")
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"frame_{t:04d}.png" for t in range(4)] + ["overlay.mp4"]
    heat = gv.GradCAM(spec.model)(clip[None]).heatmap[0]  # the library's default-layer rule
    heat = (heat / heat.max()).numpy()
    frames = clip.permute(1, 0, 2, 3).numpy()  # (T, C, H, W): one min and max per frame
    for t in range(4):
        frame = frames[t]
        frame = ((frame - frame.min()) / (frame.max() - frame.min()) * 255).round()
        frame = frame.transpose(1, 2, 0)
        weight = 0.5 * heat[t][..., None]  # opacity alpha * map
        want = (1 - weight) * frame + weight * colormap(heat[t]) * 255
        got = np.asarray(Image.open(out / f"frame_{t:04d}.png")).astype(np.float32)
        assert np.abs(got - want).max() <= 1.0


def test_seed_gradvis_scales_each_frame_as_a_whole(tmp_path):
    """Channels of different ranges keep their ratio (no per-channel min-max, which shifts the
    colours): red in [0, 1], green in [0, 0.5], blue in [0, 0.25] of each frame's range, and
    frame t is (t + 1) times brighter (each frame has its own min and max).  alpha=0: the PNG
    is the scaled frame itself."""
    from PIL import Image

    spec = MODEL_FACTORIES["x3d"]()
    base = torch.rand(4, 64, 64, generator=torch.Generator().manual_seed(3))
    base[:, 0, 0], base[:, 0, 1] = 0.0, 1.0  # each frame spans exactly [0, 1] in red
    gain = torch.arange(1, 5, dtype=torch.float32)[:, None, None]
    clip = torch.stack([base, 0.5 * base, 0.25 * base]) * gain - 0.3  # (C, T, H, W)
    out = gv.GradVis(spec.model, alpha=0.0).compute_grad(clip, tmp_path / "vis")
    for t in range(4):
        got = np.asarray(Image.open(out / f"frame_{t:04d}.png")).astype(np.float64)
        want = torch.stack([base[t], 0.5 * base[t], 0.25 * base[t]], dim=-1).numpy() * 255
        assert np.abs(got - want).max() <= 0.51  # rounding to uint8 (float32 ties)
        red, green, blue = got[..., 0].sum(), got[..., 1].sum(), got[..., 2].sum()
        assert green / red == pytest.approx(0.5, rel=0.01)
        assert blue / red == pytest.approx(0.25, rel=0.01)


def test_seed_gradvis_uses_the_shipped_models_recorded_layer(tmp_path):
    """A model from models.build("carlights") carries the layer its training recorded (in the
    checkpoint's metadata); GradVis reads that one, not the default-layer rule's choice."""
    from gradvis_export.apps import models

    meta = models.shipped_meta("carlights")
    model = models.build("carlights")
    recorded = meta["layer"]
    assert getattr(model, models.RECORDED_LAYER) == recorded
    clip = make_input((3, int(meta["clip_len"]), int(meta["size"]), int(meta["size"])), seed=4)
    rule = gv.GradCAM(model)
    rule(clip[None])
    assert rule.target_layers != (recorded,)  # else this test could not tell them apart
    seed = gv.GradVis(model)
    seed.compute_grad(clip, tmp_path / "vis")
    assert seed.explainer.target_layers == (recorded,)
    given = gv.GradVis(model, layer=rule.target_layers[0])  # an explicit layer still wins
    given.compute_grad(clip, tmp_path / "given")
    assert given.explainer.target_layers == rule.target_layers
