"""Targets: eager heatmaps vs. a plain-autograd Grad-CAM with the score written out in the test,
and exported artifacts (ONNX in onnxruntime, TorchScript) vs. eager on fresh inputs.

The reference never calls gradvis_export: a forward hook reads the layer output, the score is
computed from the model output by the formulas below, `torch.autograd.grad` gives dScore/dA.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import MODEL_FACTORIES, make_input

import gradvis_export as gv

torch.set_num_threads(int(os.environ.get("GRADVIS_TEST_THREADS", "1")))

pytestmark = [
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


# --------------------------------------------------------------------------- models
class TinyDetector(nn.Module):
    """Anchor-free dense detector: one box and C class scores per cell of an 8x8 grid on a
    64x64 image; raw head outputs (boxes (B,64,4) x1y1x2y2 in pixels, scores (B,64,C))."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, 2, 1),
            nn.ReLU(),
        )
        self.box_head = nn.Conv2d(32, 4, 1)
        self.cls_head = nn.Conv2d(32, classes, 1)
        centers = (torch.arange(8, dtype=torch.float32) + 0.5) * 8
        cy, cx = torch.meshgrid(centers, centers, indexing="ij")
        self.register_buffer("cx", cx.clone())
        self.register_buffer("cy", cy.clone())

    def forward(self, x):
        f = self.backbone(x)
        d = self.box_head(f)
        cx = self.cx + d[:, 0] * 8
        cy = self.cy + d[:, 1] * 8
        w = 16 * torch.exp(d[:, 2].clamp(max=3))
        h = 16 * torch.exp(d[:, 3].clamp(max=3))
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1).flatten(1, 2)
        scores = self.cls_head(f).flatten(2).transpose(1, 2)
        return boxes, scores


def detector():
    torch.manual_seed(0)
    return TinyDetector().eval()


def embedder():
    """resnet18 trunk with a 32-d embedding head (re-identification style)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=32)
    return model.eval()


def segmenter():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=4
        )
    return model.eval()


# --------------------------------------------------------------------------- reference
def reference_gradcam(model, layer_name, x, score_fn):
    """Plain autograd Grad-CAM for an arbitrary per-sample score, normalised per sample
    (a constant map gives NaN here: tests pick targets whose maps are not constant)."""
    layer = dict(model.named_modules())[layer_name]
    grabbed = {}
    handle = layer.register_forward_hook(lambda _m, _i, o: grabbed.__setitem__("a", o))
    try:
        with torch.enable_grad():
            out = model(x)
            scores = score_fn(out)
            (grad,) = torch.autograd.grad(scores.sum(), grabbed["a"])
    finally:
        handle.remove()
    a = grabbed["a"]
    weights = grad.mean(dim=tuple(range(2, grad.dim())), keepdim=True)
    return finish((weights * a).sum(dim=1), x)


def finish(layer_map, x):
    """ReLU, upsample to the input (bilinear / trilinear), min-max per sample."""
    cam = torch.relu(layer_map.detach()).unsqueeze(1)
    mode = "bilinear" if x.dim() == 4 else "trilinear"
    cam = F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)[:, 0]
    flat = cam.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    shape = (-1,) + (1,) * (cam.dim() - 1)
    return ((cam - low.view(shape)) / (high - low).view(shape)).detach()


def layer_output(model, layer_name, x):
    grabbed = {}
    layer = dict(model.named_modules())[layer_name]
    handle = layer.register_forward_hook(lambda _m, _i, o: grabbed.__setitem__("a", o))
    with torch.no_grad():
        model(x)
    handle.remove()
    return layer, grabbed["a"]


def reference_scorecam(model, layer_name, x, score_fn):
    """Per sample, per channel: the score of model(x * M_k), M_k the min-max scaled mask
    (bilinear, align_corners=True); weights = softmax over channels."""
    _, a = layer_output(model, layer_name, x)
    weights = torch.zeros(a.shape[:2])
    with torch.no_grad():
        for b in range(x.shape[0]):
            for k in range(a.shape[1]):
                m = F.interpolate(
                    a[b : b + 1, k : k + 1], size=x.shape[2:], mode="bilinear", align_corners=True
                )
                m = (m - m.min()) / (m.max() - m.min() + 1e-8)
                weights[b, k] = score_fn(model(x[b : b + 1] * m), b)
    weights = torch.softmax(weights, dim=1)
    return (weights[:, :, None, None] * a).sum(dim=1)


def reference_ablation(model, layer_name, x, score_fn):
    """Per sample, per channel: (y - y with channel k zeroed) / y."""
    layer, a = layer_output(model, layer_name, x)
    weights = torch.zeros(a.shape[:2])
    with torch.no_grad():
        for b in range(x.shape[0]):
            y = score_fn(model(x[b : b + 1]), b)
            for k in range(a.shape[1]):

                def zero(_m, _i, out, k=k):
                    out = out.clone()
                    out[:, k] = 0
                    return out

                handle = layer.register_forward_hook(zero)
                weights[b, k] = (y - score_fn(model(x[b : b + 1]), b)) / y
                handle.remove()
    return (weights[:, :, None, None] * a).sum(dim=1)


def softmax_score(classes):
    def score(out):
        p = torch.exp(out) / torch.exp(out).sum(dim=1, keepdim=True)
        return p[torch.arange(len(classes)), classes]

    return score


def masked_score(classes, mask):
    def score(out):
        logits = out["out"]
        return torch.stack([(logits[b, int(c)] * mask[b]).sum() for b, c in enumerate(classes)])

    return score


def cosine_score(reference):
    def score(out):
        dot = (out * reference).sum(dim=1)
        return dot / (out.norm(dim=1) * reference.norm(dim=1))

    return score


def detection_score(box, label, threshold=0.5):
    """Loops over every prediction: IoU >= threshold -> IoU * score of the label."""

    def score(out):
        boxes, scores = out
        total = []
        for b in range(boxes.shape[0]):
            s = boxes.new_zeros(())
            bx = box[b]
            for n in range(boxes.shape[1]):
                p = boxes[b, n]
                iw = (torch.minimum(bx[2], p[2]) - torch.maximum(bx[0], p[0])).clamp(min=0)
                ih = (torch.minimum(bx[3], p[3]) - torch.maximum(bx[1], p[1])).clamp(min=0)
                inter = iw * ih
                union = (bx[2] - bx[0]) * (bx[3] - bx[1]) + (p[2] - p[0]) * (p[3] - p[1]) - inter
                iou = inter / union
                if iou.item() >= threshold:
                    cls = scores[b, n].max() if int(label[b]) < 0 else scores[b, n, int(label[b])]
                    s = s + iou * cls
            total.append(s)
        return torch.stack(total)

    return score


def near_boxes(model, x, jitter=1.0, seed=0):
    """Boxes close to one prediction of each sample, so that some predictions overlap them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        boxes, _ = model(x)
    pick = torch.randint(0, boxes.shape[1], (x.shape[0],), generator=g)
    return boxes[torch.arange(x.shape[0]), pick] + jitter * torch.randn(x.shape[0], 4, generator=g)


def close(actual, expected, atol=1e-4):
    actual = torch.as_tensor(np.asarray(actual))
    expected = torch.as_tensor(np.asarray(expected))
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=1e-4)


# --------------------------------------------------------------------------- eager
def test_softmax_target_vs_reference():
    spec = MODEL_FACTORIES["resnet18"]()
    x = make_input(spec.input_shape, seed=3)
    classes = torch.tensor([2, 6])
    out = gv.GradCAM(spec.model, "layer3", target=gv.SoftmaxTarget())(x, classes)
    close(out.heatmap, reference_gradcam(spec.model, "layer3", x, softmax_score(classes)))
    # -1 resolves to the argmax of the logits (a constant map is all zero, documented)
    argmax = out.logits.argmax(1)
    auto = gv.GradCAM(spec.model, "layer3", target=gv.SoftmaxTarget())(x, -1)
    want = reference_gradcam(spec.model, "layer3", x, softmax_score(argmax))
    close(auto.heatmap, torch.nan_to_num(want, nan=0.0))


def test_raw_output_target_vs_reference():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=1).eval()  # a binary / regression head
    x = make_input((2, 3, 64, 64), seed=4)
    out = gv.GradCAM(model, "layer3", target=gv.RawOutputTarget())(x)
    close(out.heatmap, reference_gradcam(model, "layer3", x, lambda o: o[:, 0]))


def test_segmentation_target_vs_reference():
    model = segmenter()
    x = make_input((2, 3, 64, 64), seed=5)
    mask = torch.zeros(2, 64, 64)
    mask[0, 10:30, 20:50] = 1
    mask[1, 40:, :] = 1
    classes = torch.tensor([1, 3])
    cam = gv.GradCAM(model, "backbone.16", target=gv.SegmentationTarget())
    out = cam(x, classes, mask=mask)
    assert out._fields == ("out", "heatmap")
    close(out.heatmap, reference_gradcam(model, "backbone.16", x, masked_score(classes, mask)))
    # -1: the class with the largest sum over the mask
    with torch.no_grad():
        best = (model(x)["out"] * mask[:, None]).sum((2, 3)).argmax(1)
    auto = cam(x, mask=mask.bool())
    close(auto.heatmap, reference_gradcam(model, "backbone.16", x, masked_score(best, mask)))


def test_embedding_target_vs_reference():
    model = embedder()
    x = make_input((2, 3, 64, 64), seed=6)
    reference = torch.randn(2, 32, generator=torch.Generator().manual_seed(1))
    out = gv.GradCAM(model, "layer3", target=gv.EmbeddingSimilarityTarget())(x, reference)
    close(out.heatmap, reference_gradcam(model, "layer3", x, cosine_score(reference)))


@pytest.mark.parametrize("labels", [[0, 2], [-1, 1]])
def test_detection_target_vs_reference(labels):
    model = detector()
    x = make_input((2, 3, 64, 64), seed=7)
    box = near_boxes(model, x)
    label = torch.tensor(labels)
    with torch.no_grad():
        assert detection_score(box, label)(model(x)).abs().min() > 0, "no overlap: weak test"
    out = gv.GradCAM(model, "backbone.5", target=gv.DetectionTarget())(x, box=box, label=label)
    assert out._fields == ("boxes", "scores", "heatmap")
    close(out.heatmap, reference_gradcam(model, "backbone.5", x, detection_score(box, label)))


def test_chunked_methods_take_any_target():
    """ScoreCAM with the detection target and AblationCAM with the embedding target: every
    masked / ablated forward is scored with its own sample's box or reference embedding."""
    model = detector()
    x = make_input((2, 3, 64, 64), seed=8)
    box, label = near_boxes(model, x, seed=8), torch.tensor([1, -1])
    score = detection_score(box, label)
    out = gv.ScoreCAM(model, "backbone.5", target=gv.DetectionTarget(), chunk_size=12)(
        x, box=box, label=label
    )

    def one(out, b):  # sample b's score of a batch-1 output
        return detection_score(box[b : b + 1], label[b : b + 1])(out)[0]

    assert score(model(x)).abs().min() > 0
    close(out.heatmap, finish(reference_scorecam(model, "backbone.5", x, one), x))

    model = embedder()
    reference = torch.randn(2, 32, generator=torch.Generator().manual_seed(2))
    out = gv.AblationCAM(model, "layer4", target=gv.EmbeddingSimilarityTarget(), chunk_size=200)(
        x, reference
    )

    def cosine(out, b):
        return cosine_score(reference[b : b + 1])(out)[0]

    close(out.heatmap, finish(reference_ablation(model, "layer4", x, cosine), x))


def test_target_input_errors():
    spec = MODEL_FACTORIES["resnet18"]()
    x = make_input(spec.input_shape)
    with pytest.raises(gv.InputError, match="needs the input 'reference'"):
        gv.GradCAM(embedder(), "layer4", target=gv.EmbeddingSimilarityTarget())(x)
    with pytest.raises(gv.InputError, match=r"reference must be \(B, 32\)"):
        gv.GradCAM(embedder(), "layer4", target=gv.EmbeddingSimilarityTarget())(
            x, torch.zeros(2, 31)
        )
    with pytest.raises(gv.InputError, match="unknown input 'mask'.*'target'"):
        gv.GradCAM(spec.model, "layer4")(x, mask=torch.ones(2, 4, 4))
    with pytest.raises(gv.InputError, match=r"mask must be \(B, 64, 64\)"):
        gv.GradCAM(segmenter(), "backbone.16", target=gv.SegmentationTarget())(
            x, mask=torch.ones(2, 32, 32)
        )
    with pytest.raises(gv.InputError, match="SegmentationTarget needs dense class scores"):
        gv.GradCAM(spec.model, "layer4", target=gv.SegmentationTarget())(x)
    with pytest.raises(gv.InputError, match=r"box has shape \(2, 3\); expected \(B, 4\)"):
        gv.GradCAM(detector(), "backbone.5", target=gv.DetectionTarget())(x, box=torch.zeros(2, 3))
    with pytest.raises(TypeError, match="gradvis target"):
        gv.GradCAM(spec.model, "layer4", target=3)


# --------------------------------------------------------------------------- export
CASES = {
    # name: (model factory, layer, target, input shape, fresh target inputs for (model, x, seed))
    "softmax": (
        lambda: MODEL_FACTORIES["resnet18"]().model,
        "layer4",
        gv.SoftmaxTarget,
        (2, 3, 64, 64),
        lambda m, x, s: {"target": torch.arange(x.shape[0]) % 10 - (s % 2)},
    ),
    "segmentation": (
        segmenter,
        "backbone.16",
        gv.SegmentationTarget,
        (2, 3, 64, 64),
        lambda m, x, s: {
            "target": torch.arange(x.shape[0]) % 4,
            "mask": (
                torch.rand(x.shape[0], 64, 64, generator=torch.Generator().manual_seed(s)) > 0.3
            ).float(),
        },
    ),
    "embedding": (
        embedder,
        "layer4",
        gv.EmbeddingSimilarityTarget,
        (2, 3, 64, 64),
        lambda m, x, s: {
            "reference": torch.randn(x.shape[0], 32, generator=torch.Generator().manual_seed(s))
        },
    ),
    "detection": (
        detector,
        "backbone.5",
        gv.DetectionTarget,
        (2, 3, 64, 64),
        lambda m, x, s: {"box": near_boxes(m, x, seed=s), "label": torch.arange(x.shape[0]) % 3},
    ),
}
CASES["raw"] = (
    lambda: (torch.manual_seed(0), torchvision.models.resnet18(num_classes=1).eval())[1],
    "layer4",
    gv.RawOutputTarget,
    (2, 3, 64, 64),
    lambda m, x, s: {},
)
# a chunked method: its masked forwards repeat the target's inputs per sample in the graph
CASES["detection-scorecam"] = CASES["detection"]
METHOD = {
    "detection-scorecam": lambda model, layer, target: gv.ScoreCAM(
        model, layer, target=target, chunk_size=12
    )
}


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("case", list(CASES))
def test_target_exports_match_eager(case, fmt, tmp_path):
    factory, layer, target_cls, shape, fresh = CASES[case]
    model = factory()
    explainer = METHOD.get(case, gv.GradCAM)(model, layer, target=target_cls())
    names = list(explainer.input_names)
    assert names == ["input", *(spec.name for spec in target_cls.specs)]
    path = gv.export(
        explainer, make_input(shape, seed=11), tmp_path / f"{case}.{fmt[:4]}", format=fmt
    )
    if fmt == "onnx":
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == names
        batch_dims = {i.shape[0] for i in session.get_inputs()}
        assert len(batch_dims) == 1 and isinstance(batch_dims.pop(), str)  # one symbolic batch

        def run(feeds):
            return session.run(None, feeds)
    else:
        module = torch.jit.load(str(path))

        def run(feeds):
            with torch.inference_mode():
                return [o.numpy() for o in module(*(torch.from_numpy(feeds[n]) for n in names))]

    for batch, seed in ((1, 21), (3, 22)):
        x = make_input((batch, *shape[1:]), seed=seed)
        inputs = fresh(model, x, seed)
        want = explainer(x, **inputs)
        got = run({"input": x.numpy(), **{k: v.numpy() for k, v in inputs.items()}})
        assert len(got) == len(want)
        for g, w in zip(got, want):
            close(g, w.numpy(), atol=2e-4)


def test_runtime_takes_named_target_inputs(tmp_path):
    import gradvis_runtime

    model = detector()
    explainer = gv.GradCAM(model, "backbone.5", target=gv.DetectionTarget())
    path = gv.export(explainer, make_input((2, 3, 64, 64)), tmp_path / "det.onnx")
    rt = gradvis_runtime.load(path, threads=1)
    assert rt.input_names == ["input", "box", "label"]
    x = make_input((3, 3, 64, 64), seed=5)
    box = near_boxes(model, x, seed=5)
    result = rt.run(x.numpy(), box=box.numpy())  # label left out: -1, the best class
    want = explainer(x, box=box)
    assert list(result) == ["boxes", "scores", "heatmap"]
    close(result["heatmap"], want.heatmap.numpy(), atol=2e-4)
    with pytest.raises(ValueError, match="needs the input 'box'"):
        rt.run(x.numpy())
    with pytest.raises(ValueError, match="no input 'mask'"):
        rt.run(x.numpy(), box=box.numpy(), mask=np.ones(3))
